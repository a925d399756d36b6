"""Sweeps: the Dask cluster run equals the local run; the content-hash cache never serves stale."""

import json

import pytest
from starc.sweep import engine
from starc.sweep.points import evaluate_point

POINTS = engine.expand_grid(preset=["attacc-hbm3-5.2"], model=["smollm2-135m"],
                            context=[512, 768], seed=[3], layers=[3], steps=[1],
                            policies=[["dense", "starc-row"]], budgets=[[128, 256]])


def counting_evaluator(point):
    with open(point["log"], "a") as f:
        f.write(json.dumps(point["context"]) + "\n")
    return {"context": point["context"], "twice": 2 * point["context"]}


def test_grid_expansion_is_the_cartesian_product():
    pts = engine.expand_grid(a=[1, 2], b=["x", "y", "z"])
    assert len(pts) == 6 and pts[0] == {"a": 1, "b": "x"} and pts[-1] == {"a": 2, "b": "z"}


def test_cache_hits_and_misses(tmp_path):
    log = tmp_path / "log"
    pts = [{"context": c, "log": str(log)} for c in (1, 2, 3)]
    r1 = engine.run_points(pts, counting_evaluator, cache_dir=tmp_path / "c", workers=1,
                           progress=False)
    r2 = engine.run_points(pts, counting_evaluator, cache_dir=tmp_path / "c", workers=1,
                           progress=False)
    assert r1 == r2 == [{"context": c, "twice": 2 * c} for c in (1, 2, 3)]
    assert log.read_text().split() == ["1", "2", "3"]  # second run served from the cache
    # a damaged cache entry is recomputed, not trusted
    victim = next((tmp_path / "c").glob("*.json"))
    victim.write_text("{not json")
    engine.run_points(pts, counting_evaluator, cache_dir=tmp_path / "c", workers=1,
                      progress=False)
    assert len(log.read_text().split()) == 4


def test_key_depends_on_point_and_code(monkeypatch):
    k1 = engine.point_key({"a": 1}, "ev")
    assert k1 == engine.point_key({"a": 1}, "ev")
    assert k1 != engine.point_key({"a": 2}, "ev")
    monkeypatch.setattr(engine, "code_fingerprint", lambda: "other code")
    assert k1 != engine.point_key({"a": 1}, "ev")


@pytest.mark.slow
def test_dask_cluster_run_equals_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    local = engine.run_points(POINTS, evaluate_point, cache_dir=tmp_path / "local", workers=1,
                              progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = engine.run_points(POINTS, evaluate_point, cache_dir=tmp_path / "dask",
                                   scheduler=client, progress=False)
    assert [r["rows"] for r in remote] == [r["rows"] for r in local]
    assert len(local[0]["rows"]) == 4  # 2 policies x 2 budgets

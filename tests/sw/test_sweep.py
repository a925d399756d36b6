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


def _row(policy, context, cycles, nj, attacc_nj=None, model="m"):
    return {"preset": "p", "model": model, "context": context, "policy": policy, "budget": 1024,
            "cycles": cycles, "energy_nJ": nj, "attacc_energy_nJ": attacc_nj or nj}


def test_reductions_are_per_point_and_pooled():
    from starc.sweep.points import reductions, reductions_by_point, reductions_pooled
    rows = [_row("dense", 2048, 1000, 100), _row("sparq", 2048, 500, 80),
            _row("starc", 2048, 400, 40),
            _row("dense", 4096, 3000, 300), _row("sparq", 4096, 1500, 160),
            _row("starc", 4096, 600, 120)]
    with pytest.raises(ValueError, match="several sweep points"):
        reductions(rows)
    per = reductions_by_point(rows)
    assert [(r["context"], r["variant"], r["budget"]) for r in per] == [
        (2048, "starc", 1024), (4096, "starc", 1024)]
    assert per[0]["latency_vs_tokenwise"] == pytest.approx(0.2)
    assert per[0]["energy_vs_dense"] == pytest.approx(0.6)
    assert per[1]["latency_vs_dense"] == pytest.approx(0.8)
    assert per[0]["attacc_energy_vs_tokenwise"] == pytest.approx(0.5)
    pooled = reductions_pooled(rows)
    assert len(pooled) == 1 and pooled[0]["context"] == "sum 2048+4096"
    assert pooled[0]["latency_vs_tokenwise"] == pytest.approx(1 - 1000 / 2000)
    assert pooled[0]["energy_vs_dense"] == pytest.approx(1 - 160 / 400)
    # one context per model: nothing pooled
    assert reductions_pooled(rows[:3]) == []


def test_missing_baselines_are_said_not_dropped():
    from starc.sweep.points import reduction_notes, reductions_by_point
    # no sparq, and B = 512 instead of 1024: the table keeps the dense reductions, the
    # token-wise ones are empty with the reason
    rows = [{**_row(p, 2048, c, e), "budget": 512}
            for p, c, e in (("dense", 1000, 100), ("starc", 1200, 50))]
    (red,) = reductions_by_point(rows)
    assert red["budget"] == 512 and red["latency_vs_dense"] == pytest.approx(-0.2)
    assert red["latency_vs_tokenwise"] is None
    assert "sparq is not among the policies" in red["latency_vs_tokenwise_undefined"]
    notes = " ".join(reduction_notes(rows, [red]))
    assert "sparq" in notes and "negative" in notes.lower() and "B = 1024" in notes
    # no STARC variant at all: said
    none = [_row("dense", 2048, 1000, 100), _row("sparq", 2048, 500, 80)]
    assert reductions_by_point(none) == []
    assert "none of the STARC variants" in reduction_notes(none, [])[0]


def test_plot_sweep_handles_several_points():
    from starc.sweep.points import plot_sweep
    rows = [_row(p, c, 100.0 * (i + 1), 10.0 * (i + 1)) for c in (2048, 4096)
            for i, p in enumerate(("dense", "sparq", "starc", "starc-row"))]
    for r in rows:
        r["mass_recall"] = 1.0 if r["policy"] == "dense" else 0.9
    figs = plot_sweep(rows)
    assert {"reductions_vs_papers", "breakdown", "pareto"} <= set(figs)
    # one facet per context: the cost plots never show only the last point
    titles = [ax.get_title() for ax in figs["pareto"].axes]
    assert any("L = 2048" in t for t in titles) and any("L = 4096" in t for t in titles)


def test_sweep_points_from_kv_files(tmp_path):
    import argparse

    from starc.kv import save_kv, synthetic_kv
    from starc.sweep.cli import sweep_points
    path = save_kv(synthetic_kv(n_layers=3, prefill_len=300, decode_steps=1, seed=1),
                   tmp_path / "a.npz")
    args = argparse.Namespace(presets=["attacc-hbm3-5.2"], kv=[path], seed=0, objective="energy",
                              cost_programs=4, policies=["dense", "starc"], budgets=[128],
                              models=["smollm2-135m"], contexts=[1], layers=4, steps=2)
    (pt,) = sweep_points(args)
    assert pt["context"] == 300 and pt["kv"] == str(path.resolve())
    assert len(pt["kv_sha256"]) == 64 and pt["objective"] == "energy" and pt["cost_programs"] == 4
    res = evaluate_point(pt)
    assert {r["policy"] for r in res["rows"]} == {"dense", "starc"}
    assert all(r["context"] == 300 for r in res["rows"])


def test_plots_show_selection_and_take_mass_budgets():
    from starc import config
    from starc.kv import synthetic_kv
    from starc.planner.evaluate import EvalOptions, evaluate
    from starc.sweep.points import plot_sweep
    c = synthetic_kv(n_layers=3, prefill_len=1200, decode_steps=1, seed=0)
    res = evaluate(c, config.load(), EvalOptions(policies=("dense", "starc-row"),
                                                 budgets=(256, "p0.9"), cost_programs=4))
    figs = plot_sweep([{**r, "preset": "p", "model": "m", "context": 1200} for r in res.rows],
                      planner="planner: x")
    cyc, en = figs["breakdown"].axes[:2]
    for ax in (cyc, en):
        labels = [c.get_label() for c in ax.containers]
        assert "selection" in labels and "95 % interval" in labels, labels
        assert [t.get_text() for t in ax.get_xticklabels()] == ["dense", "starc-row"]
    assert "planner: x" in figs["breakdown"].get_suptitle()
    # the Pareto plot takes the mass budget as one more point of starc-row
    (ax,) = [a for a in figs["pareto"].axes if a.get_xlabel() == "cycles (tCK)"]
    series = {c.get_label(): c for c in ax.containers}
    xs = series["starc-row"].lines[0].get_xdata()
    assert len(xs) == 2 and ax.get_ylabel() == "mass_recall (fraction)"
    want = sorted(r["cycles"] for r in res.rows if r["policy"] == "starc-row")
    assert sorted(xs) == pytest.approx(want)

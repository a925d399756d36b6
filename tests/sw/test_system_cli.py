"""`starc system` and `starc sweep --system`: tables, JSON, report folders, the content-hash
cache, errors that say what to do, and a Dask run equal to the local one."""

from __future__ import annotations

import csv
import json

import pytest
from starc.cli import main

SMALL = ["--model", "smollm2-135m", "--batch", "2", "--lin", "900", "--lout", "40",
         "--steps", "2", "--stacks", "1", "--gpus", "1", "--streams", "2",
         "--policies", "dense", "starc", "--budget", "256", "--workers", "1", "--no-progress"]


def test_system_json_and_cache(tmp_path, capsys):
    args = ["system", *SMALL, "--cache-dir", str(tmp_path / "c"), "--json"]
    assert main(args) == 0
    a = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in a["steps"]] == [10, 30]
    assert {(r["policy"], r["mapping"]) for r in a["summary"]} == \
        {("dense", "attacc"), ("starc", "attacc")}
    for r in a["summary"]:
        steps = [x for s in a["steps"] for x in s["rows"] if x["policy"] == r["policy"]]
        assert r["token_us"] == pytest.approx(sum(x["token_us"] for x in steps) / 2)
    (red,) = a["reductions"]
    d, s = ({r["policy"]: r for r in a["summary"]}[p] for p in ("dense", "starc"))
    assert red["latency_vs_dense"] == pytest.approx(1 - s["token_us"] / d["token_us"])
    # the second run is served from the cache: the same figures
    assert main(args) == 0
    b = json.loads(capsys.readouterr().out)
    assert b["summary"] == a["summary"]


def test_system_table_and_report(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STARC_PLOT_FORMATS", raising=False)   # every format (the default)
    out = tmp_path / "rep"
    assert main(["system", *SMALL, "--mappings", "attacc", "replicate", "--cache-dir",
                 str(tmp_path / "c"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "per generated token" in text and "gpu_over_pim" in text and "KV capacity" in text
    assert text.count("Columns (") == 3                  # a glossary line under every table
    for f in ("README.md", "system.json", "steps.csv", "summary.csv", "trajectory.png",
              "trajectory.svg", "breakdown.png", "breakdown.pdf"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader((out / "steps.csv").read_text().splitlines()))
    assert len(rows) == 2 * 2 * 2          # steps x policies x mappings
    assert "replicate" in (out / "README.md").read_text()


def test_every_output_column_is_a_registered_metric(tmp_path, capsys):
    from starc.glossary import get
    from starc.report import flatten
    from starc.system.cli import table_rows
    assert main(["system", *SMALL, "--cache-dir", str(tmp_path / "c"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    rows = [r for s in res["steps"] for r in s["rows"]] + res["summary"] + res["reductions"]
    rows += [r for t in table_rows(res).values() for r in t]
    for r in rows:
        for k in flatten(r):
            get(k)                                   # raises UnknownMetric


def test_kv_that_does_not_fit_is_one_error_with_the_missing_amount(capsys):
    code = main(["system", "--model", "mistral-7b", "--batch", "64", "--stacks", "4",
                 "--gpus", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "does not fit" in err and "rows per bank missing" in err and "use at least" in err


@pytest.mark.parametrize("extra, what", [
    (["--steps", "50"], "only 40 decode steps"),
    (["--stacks", "3", "--gpus", "2"], "split evenly"),
    (["--kv", "/nonexistent.npz"], "No such file"),
])
def test_bad_options_are_one_line(extra, what, capsys):
    code = main(["system", *SMALL, *extra])      # later options win
    err = capsys.readouterr().err
    assert code == 2 and what in err and err.count("\n") == 1, err


def test_sweep_system_grid(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "--system", "--models", "smollm2-135m", "--batch", "1", "2",
                 "--lin", "900", "--lout", "40", "--sampled-steps", "1", "--stacks", "1",
                 "--gpus", "1", "--streams", "2", "--policies", "dense", "starc",
                 "--budgets", "256", "--workers", "1", "--cache-dir", str(tmp_path / "c"),
                 "-o", str(out)]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert sorted({r["batch"] for r in rows}) == ["1", "2"]
    assert (out / "trajectory_2.png").is_file()


@pytest.mark.slow
def test_dask_run_equals_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    from starc.sweep import engine
    from starc.sweep.system import plan_points, system_point
    conf = {"preset": "attacc-hbm3-5.2", "overrides": [], "model": "smollm2-135m", "batch": 2,
            "lin": 900, "lout": 40, "stacks": 1, "gpus": 1, "gpu": "h100-sxm",
            "mappings": ["attacc"], "policies": ["dense", "quest"], "budget": 256,
            "schedule": "sequential", "objective": "cycles", "streams": 2, "seed": 0, "kv": []}
    points = plan_points(conf, [5, 25])
    local = engine.run_points(points, system_point, cache_dir=tmp_path / "l", workers=1,
                              progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = engine.run_points(points, system_point, cache_dir=tmp_path / "d",
                                   scheduler=client, progress=False)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in local] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in remote]

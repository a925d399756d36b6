"""One question, one answer: `starc eval` and `starc sweep` give the demo's table back on the same
cache, digit for digit (the same defaults: policies, planner objective, cost sampling, compile
options), and the cost-sampling rule with its intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from starc import cli, config
from starc.demo import evaluate_demo
from starc.kv import load_kv, save_kv, synthetic_kv
from starc.planner import sampling
from starc.planner.table import COLUMNS, cells

CFG = config.load()


def _json(capsys, argv):
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_demo_eval_and_sweep_agree_digit_for_digit(tmp_path, capsys):
    # 1 sparse layer x 4 query heads x 3 steps = 12 plans per cell: every plan is timed
    path = save_kv(synthetic_kv(n_layers=3, n_q_heads=4, n_kv_heads=2, prefill_len=900,
                                decode_steps=3, seed=7), tmp_path / "kv.npz")
    B = 256
    demo = evaluate_demo(load_kv(path, CFG), CFG, B)
    ev = _json(capsys, ["eval", str(path), "--budgets", str(B), "--json",
                        "-o", str(tmp_path / "ev")])
    sw = _json(capsys, ["sweep", "--kv", str(path), "--budgets", str(B), "--json", "--workers",
                        "1", "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "sw")])
    assert demo.meta["planner"] == ev["meta"]["planner"]
    assert demo.meta["sampling"] == ev["meta"]["sampling"] == "all 12 plans per cell timed"
    tables = [[cells(r) for r in rows] for rows in (demo.rows, ev["rows"], sw["rows"])]
    assert tables[0] == tables[1] == tables[2]
    assert [r[0] for r in tables[0]] == ["dense", "oracle", "quest", "sparq", "streaming",
                                         "starc", "starc-row"]
    for a, b, c in zip(demo.rows, ev["rows"], sw["rows"], strict=True):
        for k, v in a.items():
            assert b[k] == v and c[k] == v, (a["policy"], k, v, b[k], c[k])
    # the eval table prints the same cells under the same names (headers, and the glossary
    # line under the table defines each)
    assert cli.main(["eval", str(path), "--budgets", str(B), "-o", str(tmp_path / "ev2")]) == 0
    out = capsys.readouterr().out
    for name in COLUMNS:
        assert name in out
    for row in tables[1]:
        assert all(x in out for x in row)


def test_sampling_rule():
    s = sampling.cost_sample(sampling.ALL_UP_TO)
    assert s.exact and s.n == sampling.ALL_UP_TO
    s = sampling.cost_sample(1000, None, seed=3)
    assert s.n == sampling.SAMPLE_N and not s.exact
    assert np.array_equal(s.indices, sampling.cost_sample(1000, None, seed=3).indices)
    assert np.unique(s.indices).size == s.n and s.indices.max() < 1000
    assert not np.array_equal(s.indices, sampling.cost_sample(1000, None, seed=4).indices)
    assert sampling.cost_sample(1000, -1).exact and sampling.cost_sample(1000, 5).n == 5
    assert "95 % interval" in s.describe() and "128 of 1000" in s.describe()
    with pytest.raises(ValueError, match="cost_programs must be"):
        sampling.cost_sample(10, -2)


def test_interval_covers_the_population_mean():
    """The 95 % interval of a sampled mean covers the population mean about 95 % of the time
    (finite-population t interval; 400 seeded draws of 40 from a skewed population of 300)."""
    rng = np.random.default_rng(0)
    pop = rng.gamma(2.0, 500.0, size=300)
    hits = 0
    for seed in range(400):
        idx = sampling.cost_sample(pop.size, 40, seed).indices
        m, h = sampling.mean_ci95(pop[idx], pop.size)
        hits += abs(m - pop.mean()) <= h
    assert 0.92 <= hits / 400 <= 0.985, hits / 400
    m, h = sampling.mean_ci95(pop, pop.size)
    assert m == pytest.approx(pop.mean()) and h == 0.0


@pytest.mark.parametrize("n", [2, 3, 7, 40, 129, 1000])
def test_interval_half_width_is_scipy_stats_t(n):
    """The half-width is the t interval of ``scipy.stats`` (``t.interval``, an independent
    route) with the finite-population correction, to the last bit of the quantile."""
    from scipy import stats

    rng = np.random.default_rng(n)
    x = rng.normal(3.0, 2.0, size=n)
    N = 5 * n
    m, h = sampling.mean_ci95(x, N)
    se = x.std(ddof=1) / np.sqrt(n) * np.sqrt((N - n) / (N - 1))
    lo, hi = stats.t.interval(0.95, n - 1, loc=m, scale=se)
    assert m == x.mean() and h == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert h == float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n)
                      * np.sqrt((N - n) / (N - 1)))


def test_sampled_cells_agree_too(tmp_path, capsys):
    """More plans than the rule times whole: the seeded sample and its intervals are the same
    in the demo's evaluation, `starc eval` and `starc sweep`."""
    path = save_kv(synthetic_kv(n_layers=4, n_q_heads=9, n_kv_heads=3, prefill_len=300,
                                decode_steps=8, seed=8), tmp_path / "kv.npz")
    demo = evaluate_demo(load_kv(path, CFG), CFG, 64)
    ev = _json(capsys, ["eval", str(path), "--budgets", "64", "--json", "-o",
                        str(tmp_path / "ev")])
    sw = _json(capsys, ["sweep", "--kv", str(path), "--budgets", "64", "--json", "--workers",
                        "1", "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "sw")])
    assert demo.meta["cost_N"] == 144 and demo.meta["cost_n"] == sampling.SAMPLE_N
    assert ev["meta"]["sampling"] == demo.meta["sampling"]
    assert sw["sampling"] == [demo.meta["sampling"]]
    assert [cells(r) for r in demo.rows] == [cells(r) for r in ev["rows"]] == [
        cells(r) for r in sw["rows"]]
    for a, b, c in zip(demo.rows, ev["rows"], sw["rows"], strict=True):
        assert a == {k: b[k] for k in a} == {k: c[k] for k in a}
        if a["policy"] != "dense":
            assert a["cycles_ci95"] > 0 and a["cost_n"] == sampling.SAMPLE_N

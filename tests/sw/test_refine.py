"""Row-aligned clustering options measured in docs/compiler.md ("Better rows"): the Sinkhorn
balanced assignment (``assign='sinkhorn'``) and the selection-aware refinement learnt from
prefill queries (``refine``). Placement invariants as for every compile (every token placed
exactly once, equal full rows, a bit-exact image), and the kernels against their contracts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import config
from starc.compiler import CompileError, CompileOptions, compile_kv
from starc.compiler.cluster import assign_rule, refine_rows, row_mass_objective, sinkhorn_potentials
from starc.kv import synthetic_kv
from test_compiler import _check_invariants

CFG = config.load()


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), size=st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_sinkhorn_assign_capacities_and_bound(seed, k, size):
    """Exact capacities; the column potentials shift every assignment's total by the same
    constant, so the optimum stays the optimum and the greedy rounding's bound holds on the
    shifted costs."""
    from scipy.optimize import linear_sum_assignment
    rng = np.random.default_rng(seed)
    n = k * size
    cost = rng.standard_normal((2, n, k)).astype(np.float32)
    caps = np.full((2, k), size)
    labels = assign_rule(cost, caps, "sinkhorn")
    shifted = cost - sinkhorn_potentials(cost, caps)[:, None, :]
    for b in range(2):
        assert (np.bincount(labels[b], minlength=k) == size).all(), f"seed={seed}"
        rep = np.repeat(cost[b], size, axis=1)
        r, cc = linear_sum_assignment(rep)
        opt = rep[r, cc].sum()
        got = cost[b][np.arange(n), labels[b]].sum()
        assert got >= opt - 1e-3, f"seed={seed}"
        spread = shifted[b].max() - shifted[b].min()
        assert got <= opt + n * spread / 2 + 1e-3, f"seed={seed}"


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), size=st.integers(1, 5))
@settings(max_examples=30, deadline=None)
def test_exact_assign_is_the_optimum(seed, k, size):
    from scipy.optimize import linear_sum_assignment
    rng = np.random.default_rng(seed)
    n = k * size
    cost = rng.standard_normal((2, n, k)).astype(np.float32)
    caps = np.full((2, k), size)
    labels = assign_rule(cost, caps, "exact")
    greedy = assign_rule(cost, caps, "greedy")
    for b in range(2):
        assert (np.bincount(labels[b], minlength=k) == size).all(), f"seed={seed}"
        rep = np.repeat(cost[b], size, axis=1)
        r, cc = linear_sum_assignment(rep)
        got = cost[b][np.arange(n), labels[b]].sum()
        assert got == pytest.approx(rep[r, cc].sum(), abs=1e-3), f"seed={seed}"
        assert got <= cost[b][np.arange(n), greedy[b]].sum() + 1e-3, f"seed={seed}"


def test_assign_rule_names():
    with pytest.raises(ValueError, match="assign must be one of greedy, sinkhorn, exact"):
        assign_rule(np.zeros((1, 2, 2), np.float32), np.array([[1, 1]]), "auction")


@given(seed=st.integers(0, 10_000), k=st.integers(2, 12), size=st.sampled_from([2, 4, 8]),
       rows=st.integers(1, 6), steps=st.integers(0, 4))
@settings(max_examples=30, deadline=None)
def test_refine_rows_keeps_sizes_and_never_loses_mass(seed, k, size, rows, steps):
    rng = np.random.default_rng(seed)
    n, d = k * size, 8
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((20, d)).astype(np.float32)
    lg = q @ x.T
    A = np.exp(lg - lg.max(1, keepdims=True))
    A = (A / A.sum(1, keepdims=True)).astype(np.float32)
    lab0 = rng.permutation(np.repeat(np.arange(k), size))
    lab, hist = refine_rows(x, x, lab0.copy(), k, q, A, rows=rows, iters=steps)
    assert (np.bincount(lab, minlength=k) == size).all(), f"seed={seed}"
    assert len(hist) <= steps + 1
    assert all(b > a for a, b in zip(hist, hist[1:], strict=False)), f"seed={seed}"
    got = row_mass_objective(A, lab, x, q, k, rows)[0]
    assert got == pytest.approx(hist[-1]) and got >= row_mass_objective(A, lab0, x, q, k,
                                                                        rows)[0] - 1e-6


@given(seed=st.integers(0, 10_000), prefill=st.integers(300, 1400), steps=st.integers(1, 40),
       d=st.sampled_from([64, 128]), metric=st.sampled_from(["unit", "query"]),
       assign=st.sampled_from(["greedy", "sinkhorn", "exact"]), refine=st.integers(0, 2),
       n_qp=st.integers(1, 40))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_refined_placement_invariants(seed, prefill, steps, d, metric, assign, refine, n_qp):
    """The new placements keep every invariant of the compile: every token placed exactly once
    at every context, equal full rows, a bijective token map, a bit-exact image; centroids are
    the mean raw keys of the (moved) members in the query metric."""
    c = synthetic_kv(n_layers=3, n_q_heads=4, n_kv_heads=2, head_dim=d, prefill_len=prefill,
                     decode_steps=steps, seed=seed, prefill_queries=n_qp)
    ck = compile_kv(c, CFG, CompileOptions(mode="row-aligned", seed=seed, metric=metric,
                                           assign=assign, refine=refine, window=512))
    assert ck.options.get("assign", "greedy") == assign
    assert ck.options.get("refine", 0) == refine
    _check_invariants(ck, seed)
    for hm in ck.iter_heads():
        if hm.positional or metric != "query":
            continue
        K = ck.cache.k[hm.layer][:, hm.head].astype(np.float64)
        for ci in range(hm.n_clusters):
            pos = hm.slot_pos[hm.cl_start[ci]:hm.cl_start[ci] + hm.cl_size[ci]]
            assert np.allclose(hm.centroid[ci], K[pos].mean(0), atol=1e-3), f"seed={seed}"


def test_defaults_leave_the_options_unchanged_and_errors():
    c = synthetic_kv(n_layers=3, n_q_heads=4, n_kv_heads=2, prefill_len=600, decode_steps=2,
                     seed=1, prefill_queries=16)
    ck = compile_kv(c, CFG, CompileOptions(mode="row-aligned"))
    assert "assign" not in ck.options and "refine" not in ck.options
    with pytest.raises(CompileError, match="assign must be one of greedy, sinkhorn, exact"):
        compile_kv(c, CFG, CompileOptions(assign="auction"))
    with pytest.raises(CompileError, match="refine must be a non-negative integer"):
        compile_kv(c, CFG, CompileOptions(refine=-1))
    with pytest.raises(CompileError, match="assign and refine apply to row-aligned mode"):
        compile_kv(c, CFG, CompileOptions(mode="artifact", assign="sinkhorn"))
    c0 = synthetic_kv(n_layers=3, n_q_heads=4, n_kv_heads=2, prefill_len=600, decode_steps=2,
                      seed=1)
    with pytest.raises(CompileError, match="refine learns from prefill queries"):
        compile_kv(c0, CFG, CompileOptions(refine=1))

"""GQA-shared STARC selection (starc.planner.gqa)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import config
from starc.compiler import CompileOptions, compile_kv
from starc.kv import synthetic_kv
from starc.planner.gqa import group_scores, select_starc_shared
from starc.planner.policies import select_starc

CFG = config.load()
CACHE = synthetic_kv(n_layers=3, n_q_heads=6, n_kv_heads=2, prefill_len=900, decode_steps=3,
                     seed=4, prefill_queries=16)
CK = compile_kv(CACHE, CFG, CompileOptions(mode="row-aligned"))


def test_group_scores_are_mean_mass_shares():
    rng = np.random.default_rng(2)
    q, c = rng.standard_normal((3, 8)), rng.standard_normal((5, 8))
    sizes = np.array([4, 1, 7, 2, 3])
    got = group_scores(q, c, sizes)
    want = np.zeros(5)
    for h in range(3):            # float64 reference, one head at a time
        w = sizes * np.exp(c @ q[h] / np.sqrt(8))
        want += w / w.sum() / 3
    assert np.allclose(got, want) and np.isclose(got.sum(), 1.0)


@given(B=st.integers(40, 1200), step=st.integers(0, 2), kh=st.integers(0, 1))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_shared_selection_is_one_set_of_exactly_b_tokens(B, step, kh):
    g = CACHE.meta.group_size
    n = CACHE.meta.prefill_len + step + 1
    hm = CK.head(2, kh)
    q = CACHE.q[2][step, kh * g:(kh + 1) * g].astype(np.float32)
    sel = select_starc_shared(q, hm, n, B)
    pos = sel.positions[0]
    assert all(np.array_equal(p, pos) for p in sel.positions)
    assert pos.size == min(B, n) and np.unique(pos).size == pos.size
    assert pos.min() >= 0 and pos.max() < n
    e = hm.clustered_end(n)
    if n - e + hm.sink_end <= B:                      # sinks and recent tokens always in
        assert set(range(e, n)) <= set(pos.tolist())
        assert set(range(hm.sink_end)) <= set(pos.tolist())


def test_one_query_head_is_per_head_starc():
    """With one query head and equal cluster sizes, the mean mass share orders clusters as the
    centroid score does: the shared rule is per-head STARC."""
    n = CACHE.meta.prefill_len + 1
    hm = CK.head(2, 1)
    assert (hm.cl_size == hm.cl_size[0]).all()
    for j in range(CACHE.meta.group_size):
        q = CACHE.q[2][0, 3 + j:4 + j].astype(np.float32)
        for B in (128, 512):
            a = select_starc_shared(q, hm, n, B).positions[0]
            b = select_starc(q, hm, n, B).positions[0]
            assert np.array_equal(a, b), (j, B)

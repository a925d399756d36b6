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


def _float64_attention(layer, step, q_head, kv_head, n, selected):
    q = CACHE.q[layer][step, q_head].astype(np.float16).astype(np.float64)
    K = CACHE.k[layer][:n, kv_head].astype(np.float16).astype(np.float64)[selected]
    V = CACHE.v[layer][:n, kv_head].astype(np.float16).astype(np.float64)[selected]
    lg = K @ q / np.sqrt(K.shape[1])
    p = np.exp(lg - lg.max())
    return (p / p.sum()) @ V


def test_registry_policy_runs_one_program_per_kv_head():
    """`starc-row-gqa`: one plan for the group; its program (the heads' centroid scans over
    rows opened once, a read-back per head, then the shared attention) is legal per the
    independent checker, computes every query head's attention over the shared selection
    (float64 reference, FP16 bound), reads each head's centroid scores back as the scan
    computes them (float64 q . c), ranks clusters by the group's mean mass share of those
    scores, writes every query and opens every centroid row and every attention row once for
    the group, and takes fewer cycles than the heads' one-query programs one after the
    other."""
    from starc.golden import check, functional, timing
    from starc.isa import Op
    from starc.metrics import step_cost
    from starc.planner import Planner, registry
    from starc.planner.selection import host_scores

    spec = registry.get("starc-row-gqa")
    assert spec.multi_query and spec.shared and spec.layout == "row-aligned"
    layer, step, kh, B = 2, 2, 1, 300
    pl = Planner(CK, "starc-row-gqa", B)
    plans = pl.plan(step, layer, kh)
    n, g = plans[0].n_ctx, CACHE.meta.group_size
    assert len(plans) == g and all(sp.rows is plans[0].rows for sp in plans)
    prog, wdata, n_sel = pl.group_program(plans)
    s = timing.schedule(prog, CFG)
    check.check(s.program, s.issue, CFG)
    hm = CK.head(layer, kh)
    res = functional.execute(prog, wdata, CK.channel_image(hm.channel, n, [layer]), CFG,
                             CACHE.meta.head_dim)
    assert res.heads == g
    for k, sp in enumerate(plans):
        o = _float64_attention(layer, step, sp.q_head, kh, n, sp.selected)
        err = np.linalg.norm(res.outputs_bits[k].view(np.float16) - o) / np.linalg.norm(o)
        assert err < 2e-3, f"head {k}: relative error {err:.2e} against float64"
    # the read-back scores: one RDSB per head, the group ranks by its mean mass share of them
    avail = hm.clusters_at(n)
    assert len(res.host_scores) == g
    shares = []
    for k, (sp, read) in enumerate(zip(plans, res.host_scores, strict=True)):
        # bit for bit what the head's own one-query scan reads back
        one, w1, _ = pl.step_program(sp)
        alone = functional.execute(one, w1, CK.channel_image(hm.channel, n, [layer]), CFG,
                                   CACHE.meta.head_dim)
        assert np.array_equal(read, alone.host_scores[0]), k
        got = host_scores(pl.selection(sp), read)
        q = CACHE.q[layer][step, sp.q_head].astype(np.float16).astype(np.float64)
        ref = hm.centroid[avail].astype(np.float16).astype(np.float64) @ q / np.sqrt(q.size)
        assert np.abs(got - ref).max() <= 1e-5 * (1 + np.abs(ref).max()), k
        w = hm.cl_size[avail] * np.exp(got - got.max())
        shares.append(w / w.sum())
    score = np.mean(shares, axis=0)
    clustered = plans[0].selected[plans[0].selected < hm.clustered_end(n)]
    chosen = np.isin(hm.cl_start[avail], [hm.pos_slot[p] for p in clustered])
    assert chosen.any() and (~chosen).any()
    assert score[~chosen].max() <= score[chosen].min() * (1 + 1e-4)
    # the centroid rows open once for the group's scans, every attention row once for the
    # group (key and value phase)
    scan = pl.selection(plans[0]).scans[0].rows.rounds
    acts_sel = int(np.isin(prog[:n_sel]["op"], [int(Op.ACTAB), int(Op.ACTBG)]).sum())
    assert acts_sel == sum(1 if rd.actab else len(rd.groups) for rd in scan)
    att = prog[n_sel:]
    # every query is written once (the scan leaves it in the head's GEMV buffer)
    assert int((prog["op"] == int(Op.WRGB)).sum()) == g * CACHE.meta.head_dim // 16
    acts = int(np.isin(att["op"], [int(Op.ACTAB), int(Op.ACTBG)]).sum())
    rounds = plans[0].rows.rounds
    assert acts == 2 * sum(1 if rd.actab else len(rd.groups) for rd in rounds)
    one = sum(step_cost(*pl.step_program(sp)[::2], CFG, 64, sp.selected.size).cycles
              for sp in plans)
    assert step_cost(prog, n_sel, CFG, 64, plans[0].selected.size).cycles < one

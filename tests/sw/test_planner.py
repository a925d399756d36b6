"""Decode planner: policies against brute-force references, row plans, and programs checked by the
golden timing checker and the bit-exact functional model against float64 attention."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starc import config
from starc.compiler import CompileOptions, compile_kv
from starc.golden import check, functional, programs, timing
from starc.isa import MoveFlag, Op
from starc.kv import synthetic_kv
from starc.planner import Planner
from starc.planner import policies as pol
from starc.planner.rounds import plan_rows

CFG = config.load()


@pytest.fixture(scope="module")
def cache():
    return synthetic_kv(n_layers=3, prefill_len=1500, decode_steps=70, seed=11)


@pytest.fixture(scope="module")
def compiled(cache):
    return {m: compile_kv(cache, CFG, CompileOptions(mode=m))
            for m in ("dense", "artifact", "row-aligned")}


# ---- policies against brute force ----------------------------------------------------------------
@given(seed=st.integers(0, 10_000), n=st.integers(5, 400), B=st.integers(1, 300))
@settings(max_examples=60, deadline=None)
def test_oracle_streaming_quest_sparq_vs_brute_force(seed, n, B):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((3, 16)).astype(np.float32)
    K = rng.standard_normal((n, 16)).astype(np.float32)
    if n <= B:
        for f in (pol.select_oracle, pol.select_quest, pol.select_streaming):
            assert all(np.array_equal(p, np.arange(n)) for p in f(q, K, B).positions)
        return
    s = q @ K.T
    for h, p in enumerate(pol.select_oracle(q, K, B).positions):
        assert p.size == B and np.min(s[h, p]) >= np.max(np.delete(s[h], p)), f"seed={seed}"
    sinks = min(4, B)
    want = sorted(set(range(sinks)) | set(range(n - (B - sinks), n)))
    assert pol.select_streaming(q, K, B).positions[0].tolist() == want
    # Quest: brute-force page scores, current page forced in
    pages = [np.arange(i, min(i + 16, n)) for i in range(0, n, 16)]
    for h, got in enumerate(pol.select_quest(q, K, B).positions):
        sc = [sum(max(q[h, j] * K[pg, j].min(), q[h, j] * K[pg, j].max()) for j in range(16))
              for pg in pages]
        sc[-1] = np.inf
        keep = min(max(3, B // 16), len(pages))
        top = sorted(range(len(pages)), key=lambda i: -sc[i])[:keep]
        assert set(got.tolist()) == set(np.concatenate([pages[i] for i in top]).tolist()), \
            f"seed={seed}"
    sp = pol.select_sparq(q, K, B, r=4, recent=min(8, B))
    p0 = sp.positions[0]
    assert p0.size == B and all(np.array_equal(p0, p) for p in sp.positions)
    assert set(range(n - min(8, B), n)) <= set(p0.tolist())
    assert np.all((sp.alpha > 0) & (sp.alpha <= 1 + 1e-6))


def _starc_brute(hm, q, n, B):
    e = hm.clustered_end(n)
    sinks = list(range(min(hm.sink_end, e, B)))
    if len(sinks) + n - e >= B:
        return sinks + list(range(n - (B - len(sinks)), n))
    recent = sinks + list(range(e, n))
    budget = B - len(recent)
    cl = [c for c in range(hm.n_clusters) if hm.seg_ready[hm.cl_seg[c]] <= n]
    score = {c: float(np.float32(q @ hm.centroid[c]) / np.float32(8.0)) for c in cl}
    order = sorted(cl, key=lambda c: (-score[c], cl.index(c)))
    out: list[int] = []
    for c in order:
        toks = hm.slot_pos[hm.cl_start[c]:hm.cl_start[c] + hm.cl_size[c]].tolist()
        if len(out) + len(toks) <= budget:
            out += toks
        else:
            out += toks[:budget - len(out)]
            break
    return sorted(out + recent)


@pytest.mark.parametrize("mode", ["artifact", "row-aligned"])
def test_starc_selection_vs_brute_force(compiled, cache, mode):
    hm = compiled[mode].head(2, 1)
    for step in (0, 37, 69):
        n = 1500 + step + 1
        q = cache.q[2][step, 3:6].astype(np.float32)
        for B in (20, 64, 256, 1000):
            sel = pol.select_starc(q, hm, n, B)
            for h in range(3):
                assert sel.positions[h].tolist() == _starc_brute(hm, q[h], n, B), (step, B, h)
                assert sel.positions[h].size == B
                got = set(sel.positions[h].tolist())
                assert set(range(min(hm.sink_end, B))) <= got
                if hm.sink_end + n - hm.clustered_end(n) < B:
                    assert set(range(hm.clustered_end(n), n)) <= got
    assert hm.sink_end == (32 if mode == "row-aligned" else 0)


def test_small_context_is_dense(compiled):
    pl = Planner(compiled["row-aligned"], "starc-row", 4096)
    for sp in pl.plan(3, 2, 0):
        assert np.array_equal(sp.selected, np.arange(sp.n_ctx))


def test_dense_layers_stay_dense(compiled):
    pl = Planner(compiled["artifact"], "starc", 256)
    assert all(sp.selected.size == sp.n_ctx for sp in pl.plan(0, 0, 0))
    assert all(sp.selected.size == 256 for sp in pl.plan(0, 2, 0))


def test_policy_layout_mismatch_is_refused(compiled):
    with pytest.raises(ValueError, match="policy 'starc-row' needs a 'row-aligned' compilation, "
                                         "this one is 'artifact'; compile with --mode "
                                         "row-aligned"):
        Planner(compiled["artifact"], "starc-row", 512)
    with pytest.raises(ValueError, match="budget must be a positive integer, not 0"):
        Planner(compiled["dense"], "quest", 0)


# ---- row plans -----------------------------------------------------------------------------------
def _check_rows(sp, G=16):
    rp = sp.rows
    seen = set()
    for rd in rp.rounds:
        assert np.unique(rd.groups).size == rd.groups.size, "two rows of one group in a round"
        if rd.actab:
            assert rd.groups.size == G and (rd.rows == rd.rows[0]).all()
        for g, r in zip(rd.groups.tolist(), rd.rows.tolist(), strict=True):
            if (g, r) in seen and rp.n_dummy == 0:
                raise AssertionError(f"row {(g, r)} opened twice")
            seen.add((g, r))
    loc = sp.located
    need = set(zip(loc.group.tolist(), loc.row.tolist(), strict=True))
    assert need <= seen
    bits = sum(bin(int(m)).count("1") for rd in rp.rounds for m in rd.masks)
    assert bits == sp.selected.size == rp.n_valid


@pytest.mark.parametrize("policy,mode", [("starc", "artifact"), ("starc-row", "row-aligned"),
                                         ("quest", "dense"), ("sparq", "dense"),
                                         ("oracle", "dense")])
def test_row_plans_and_command_counts(compiled, policy, mode):
    pl = Planner(compiled[mode], policy, 512)
    for sp in pl.plan(69, 2, 2):
        _check_rows(sp)
        prog, wdata = pl.program(sp)
        ops = prog["op"]
        n_items = sum(len(rd.groups) for rd in sp.rows.rounds)
        score_mv = (ops == Op.MVSB) & ((prog["col"] & MoveFlag.VALUE) == 0)
        assert int(score_mv.sum()) == n_items
        assert int((ops == Op.MVGB).sum()) == n_items
        assert int((ops == Op.WRGB).sum()) == 4 and wdata.shape == (4, 16)
        assert prog["arg"][ops == Op.SFM].tolist() == [sp.selected.size]
        assert int(((ops == Op.MVSB) & ((prog["col"] & MoveFlag.VALUE) != 0)).sum()) == \
            2 * sp.rows.groups_touched().size
        assert int((ops == Op.ACTAB).sum()) + int((ops == Op.ACTBG).sum()) == \
            2 * sum(1 if rd.actab else len(rd.groups) for rd in sp.rows.rounds)


@pytest.mark.parametrize("preset", ["attacc-hbm3-5.2", "samsung-hbm2-pim"])
def test_dense_policy_program_equals_reference_dense_program(preset):
    # samsung-hbm2-pim has two banks per PU: each MAC names its bank of the pair (bank field)
    cfg = config.load(preset)
    c = synthetic_kv(n_layers=3, n_q_heads=3, n_kv_heads=1, prefill_len=2047, decode_steps=1)
    ck = compile_kv(c, cfg, CompileOptions(mode="dense"))
    pl = Planner(ck, "dense", 4096)
    sp = pl.plan(0, 2, 0)[0]
    prog, _ = pl.program(sp)
    hm = ck.head(2, 0)
    prog["row"][np.isin(prog["op"], [int(Op.ACTAB), int(Op.ACTBG)])] -= hm.row_base
    assert np.array_equal(prog, programs.dense_program(cfg, 2048, 64,
                                                       value_row_base=hm.n_krows))


def test_gqa_union_covers_every_head(compiled):
    pl = Planner(compiled["row-aligned"], "starc-row", 512)
    plans = pl.plan(10, 2, 1)
    u = pl.union_rows(plans)
    assert u.n_dummy == 0
    assert u.n_blocks >= max(p.rows.n_blocks - p.rows.n_dummy for p in plans)
    assert u.n_blocks <= sum(p.rows.n_blocks - p.rows.n_dummy for p in plans)
    assert u.n_valid == np.unique(np.concatenate([p.selected for p in plans])).size


# ---- programs through the golden models ----------------------------------------------------------
@pytest.mark.parametrize("policy,mode,objective", [("starc", "artifact", "energy"),
                                                   ("starc-row", "row-aligned", "energy"),
                                                   ("starc-row", "row-aligned", "cycles"),
                                                   ("quest", "dense", "cycles"),
                                                   ("sparq", "dense", "energy")])
def test_programs_are_legal_and_compute_sparse_attention(compiled, cache, policy, mode,
                                                         objective):
    ck = compiled[mode]
    pl = Planner(ck, policy, 512, objective=objective)
    step, layer, kvh = 69, 2, 1
    sp = pl.plan(step, layer, kvh)[2]
    prog, wdata = pl.program(sp)
    s = timing.schedule(prog, CFG)
    check.check(s.program, s.issue, CFG)
    hm = ck.head(layer, kvh)
    res = functional.execute(prog, wdata, ck.channel_image(hm.channel, sp.n_ctx, [layer]), CFG,
                             64)
    assert int(res.valid.sum()) == sp.selected.size
    q = cache.q[layer][step, sp.q_head].astype(np.float16).astype(np.float64)
    K = cache.k[layer][:sp.n_ctx, kvh].astype(np.float64)[sp.selected]
    V = cache.v[layer][:sp.n_ctx, kvh].astype(np.float64)[sp.selected]
    lg = K @ q / 8
    p = np.exp(lg - lg.max())
    o = (p / p.sum()) @ V
    err = np.linalg.norm(res.output - o) / np.linalg.norm(o)
    assert err < 2e-3, f"{policy}: relative error {err:.2e} against float64"


def test_cycles_objective_trades_activations_for_cycles(compiled):
    ck = compiled["row-aligned"]
    a = Planner(ck, "starc-row", 1024, objective="energy")
    b = Planner(ck, "starc-row", 1024, objective="cycles")
    sa, sb = a.plan(5, 2, 0)[0], b.plan(5, 2, 0)[0]
    assert sb.rows.n_blocks >= sa.rows.n_blocks and sb.rows.n_dummy == \
        sb.rows.n_blocks - sa.rows.n_blocks
    ca = timing.schedule(a.program(sa)[0], CFG).total_cycles
    cb = timing.schedule(b.program(sb)[0], CFG).total_cycles
    assert cb <= ca


def test_row_aligned_activation_target(compiled):
    """Row-aligned STARC at B = 1024 opens at most 1.15 x B token slots per query head."""
    pl = Planner(compiled["row-aligned"], "starc-row", 1024, objective="energy")
    for step in (0, 40, 69):
        for kvh in range(3):
            for sp in pl.plan(step, 2, kvh):
                slots = sp.rows.n_blocks * 32
                assert slots <= 1.15 * 1024, (step, kvh, slots)
                assert sp.rows.n_valid == 1024


def test_plan_rows_empty():
    z = np.zeros(0, np.int64)
    from starc.address import Geometry
    rp = plan_rows(z, z, z, z, Geometry(CFG, 64), cfg=CFG)
    assert rp.rounds == [] and rp.n_blocks == 0

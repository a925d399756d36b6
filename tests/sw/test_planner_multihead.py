"""Sparse steps of several heads on one channel (docs/multihead.md): the planner's plans of a GQA
group's query heads in one overlapped program, and a shared plan run once per head; through the
golden timing model, its independent checker and the bit-exact functional model, against the
single-head programs and float64 attention."""

from __future__ import annotations

import numpy as np
import pytest
from starc import config
from starc.compiler import CompileOptions, compile_kv
from starc.golden import check, functional, programs, timing
from starc.isa import Op, head_of
from starc.kv import synthetic_kv
from starc.planner import Planner
from starc.planner.multihead import shared_program, step_program
from starc.planner.program import query_words

CFG = config.load()
STEP, LAYER, KVH = 69, 2, 1


@pytest.fixture(scope="module")
def cache():
    return synthetic_kv(n_layers=3, prefill_len=1500, decode_steps=70, seed=11)


@pytest.fixture(scope="module")
def compiled(cache):
    return compile_kv(cache, CFG, CompileOptions(mode="row-aligned"))


@pytest.fixture(scope="module")
def planner(compiled):
    return Planner(compiled, "starc-row", 512)


def _attention64(cache, sp, selected: np.ndarray, q_head: int) -> np.ndarray:
    q = cache.q[LAYER][STEP, q_head].astype(np.float16).astype(np.float64)
    K = cache.k[LAYER][:sp.n_ctx, KVH].astype(np.float64)[selected]
    V = cache.v[LAYER][:sp.n_ctx, KVH].astype(np.float64)[selected]
    lg = K @ q / np.sqrt(K.shape[1])
    p = np.exp(lg - lg.max())
    return (p / p.sum()) @ V


def _run(compiled, prog: np.ndarray, wdata: np.ndarray, n_ctx: int):
    s = timing.schedule(prog, CFG)
    check.check(s.program, s.issue, CFG)
    hm = compiled.head(LAYER, KVH)
    return s, functional.execute(prog, wdata, compiled.channel_image(hm.channel, n_ctx, [LAYER]),
                                 CFG, 64)


def test_group_step_is_each_heads_attention(planner, compiled, cache):
    """The query heads of one KV head (each with its own selection) in one overlapped program:
    legal, each head's output bit-exact with its own one-head program and within the FP16 bound
    of float64 attention over its selection; H x the commands of one head, each naming its
    head."""
    plans = planner.plan(STEP, LAYER, KVH)
    assert len(plans) == 3
    prog, wdata = step_program(planner, plans)
    _, res = _run(compiled, prog, wdata, plans[0].n_ctx)
    assert res.heads == 3
    for k, sp in enumerate(plans):
        one, w1 = step_program(planner, [sp])
        _, r1 = _run(compiled, one, w1, sp.n_ctx)
        assert np.array_equal(res.outputs_bits[k], r1.output_bits), f"head {k}"
        assert int((res.valid & (res.entry_head == k)).sum()) == sp.selected.size == \
            int(((one["op"] == int(Op.SFM)) * one["arg"]).sum())
        o = _attention64(cache, sp, sp.selected, sp.q_head)
        err = np.linalg.norm(res.outputs_bits[k].view(np.float16) - o) / np.linalg.norm(o)
        assert err < 2e-3, f"head {k}: relative error {err:.2e} against float64"
        mine = np.array([head_of(c) == k for c in prog])
        for op in (Op.WRGB, Op.MVSB, Op.MVGB, Op.SFM):
            assert int((mine & (prog["op"] == int(op))).sum()) == int((one["op"] == int(op)).sum())


def test_shared_plan_opens_rows_once(planner, compiled, cache):
    """A GQA group with one shared selection (the union of the heads' plans): every row opens
    once for the whole group, every head computes attention over the union."""
    plans = planner.plan(STEP, LAYER, KVH)
    union = planner.union_rows(plans)
    sel = np.unique(np.concatenate([p.selected for p in plans]))
    hm = compiled.head(LAYER, KVH)
    geo = planner.geo
    prog = shared_program(union, [k * geo.d // geo.lanes for k in range(len(plans))], geo, CFG,
                          krow_base=hm.row_base, vrow_base=hm.row_base + hm.n_krows)
    wdata = np.concatenate([query_words(cache.q[LAYER][STEP, sp.q_head], geo.d, geo.lanes)
                            for sp in plans])
    _, res = _run(compiled, prog, wdata, plans[0].n_ctx)
    acts = int(np.isin(prog["op"], [int(Op.ACTAB), int(Op.ACTBG)]).sum())
    assert acts == 2 * sum(1 if rd.actab else len(rd.groups) for rd in union.rounds)
    for k, sp in enumerate(plans):
        o = _attention64(cache, sp, sel, sp.q_head)
        err = np.linalg.norm(res.outputs_bits[k].view(np.float16) - o) / np.linalg.norm(o)
        assert err < 2e-3, f"head {k}: relative error {err:.2e} against float64"


def test_dense_plan_is_the_dense_program_of_one_head(compiled):
    """A dense step through the multi-head path computes what the dense reference computes."""
    pl = Planner(compile_kv(synthetic_kv(n_layers=3, n_q_heads=2, n_kv_heads=1,
                                         prefill_len=1023, decode_steps=1, seed=3), CFG,
                            CompileOptions(mode="dense")), "dense", 4096)
    sp = pl.plan(0, 2, 0)[0]
    prog, _ = step_program(pl, [sp])
    ref, _ = pl.program(sp)
    assert programs.command_counts(prog, CFG) == programs.command_counts(ref, CFG)


def test_bad_head_sets(planner, compiled):
    plans = planner.plan(STEP, LAYER, KVH)
    other = planner.plan(STEP, LAYER, 0)
    with pytest.raises(ValueError, match="sit on channels"):
        step_program(planner, [plans[0], other[0]])
    with pytest.raises(ValueError, match="1 to 8 heads"):
        step_program(planner, plans * 3)
    with pytest.raises(ValueError, match="1 to 8 heads"):
        step_program(planner, [])

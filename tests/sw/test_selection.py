"""Selection passes as PIM programs: the scores the RDSB reads back are the policy's scores (up to
the PIM's FP16 rounding), the host's ranking from them keeps the policy's choice, the attention
part computes exactly what the attention-only program computes, and RDSB's timing, checker and
energy rules."""

from __future__ import annotations

import numpy as np
import pytest
from starc import config
from starc.compiler import compile_kv
from starc.golden import check, energy, functional, timing
from starc.golden.timing import ProgramError, rdsb_transfer
from starc.isa import MoveFlag, Op, make_program
from starc.kv import synthetic_kv
from starc.planner import Planner, registry
from starc.planner.selection import host_scores

CFG = config.load()
WITH_PASS = [p for p, s in registry.REGISTRY.items() if s.selection != "none"]


@pytest.fixture(scope="module")
def setup():
    c = synthetic_kv(n_layers=3, n_q_heads=6, n_kv_heads=2, prefill_len=1700, decode_steps=70,
                     seed=9)
    return c, {p: compile_kv(c, CFG, registry.compile_options(p)) for p in WITH_PASS}


def _reference(policy, c, ck, sp, pl):
    """Float64 scores of the vectors the pass scans, in their index order."""
    d = c.meta.head_dim
    q = c.q[sp.layer][sp.step, sp.q_head].astype(np.float16).astype(np.float64)
    K = c.k[sp.layer][:sp.n_ctx, sp.kv_head].astype(np.float16).astype(np.float64)
    hm = ck.head(sp.layer, sp.kv_head)
    kind = registry.get(policy).selection
    if kind == "centroids":
        cent = hm.centroid[hm.clusters_at(sp.n_ctx)].astype(np.float16).astype(np.float64)
        return cent @ q / np.sqrt(d)
    if kind == "page-bounds":
        P = -(-sp.n_ctx // 16) - 1
        pg = K[:16 * P].reshape(P, 16, d)
        return np.maximum(q * pg.min(1), q * pg.max(1)).sum(1) / np.sqrt(d)
    if kind == "r-channels":
        r = pl.params.r(d)
        keep = np.argsort(-np.abs(q), kind="stable")[:r]
        qq = np.zeros(d)
        qq[keep] = q[keep]
        return K[:sp.n_ctx - min(64, pl.B)] @ qq / np.sqrt(d)
    return K @ q / np.sqrt(d)


@pytest.mark.parametrize("policy", WITH_PASS)
def test_pass_reads_the_policys_scores_and_keeps_the_attention(setup, policy):
    c, cks = setup
    ck = cks[policy]
    pl = Planner(ck, policy, 300)
    step, layer, kvh = 69, 2, 1
    sp = pl.plan(step, layer, kvh)[1]
    sel = pl.selection(sp)
    assert sel is not None and sel.kind == registry.get(policy).selection
    prog, wdata, n_sel = pl.step_program(sp)
    assert prog["op"][n_sel - 2] == Op.RDSB and prog["op"][n_sel - 1] == Op.BAR
    assert int(prog["arg"][n_sel - 2]) == sel.n_read
    s = timing.schedule(prog, CFG)
    check.check(s.program, s.issue, CFG)
    hm = ck.head(layer, kvh)
    image = ck.channel_image(hm.channel, sp.n_ctx, [layer])
    res = functional.execute(prog, wdata, image, CFG, 64)
    (read,) = res.host_scores
    assert read.size == sel.n_read
    got = host_scores(sel, read)
    ref = _reference(policy, c, ck, sp, pl)
    # the reference takes the same FP16 query and vectors; q / sqrt(d) = q / 8 is exact, so the
    # PIM's scores differ from float64 only by the FP32 sums (measured: below 3e-6)
    tol = 1e-5 * (1 + np.abs(ref).max())
    assert np.abs(got - ref).max() <= tol, (policy, np.abs(got - ref).max(), tol)
    # the policy's choice survives the PIM's rounding: nothing it left out scores clearly higher
    # (a multi-query policy ranks by the whole group's scores: tests/sw/test_gqa.py)
    if sel.kind == "centroids" and not registry.get(policy).multi_query:
        avail = hm.clusters_at(sp.n_ctx)
        chosen = np.isin(hm.cl_start[avail], [hm.pos_slot[p] for p in sp.selected
                                              if p < hm.clustered_end(sp.n_ctx)])
        if chosen.any() and (~chosen).any():
            assert got[~chosen].max() <= got[chosen].min() + 2 * tol
    # the attention part computes what the attention-only program computes
    att, wd = pl.program(sp)
    alone = functional.execute(att, wd, image, CFG, 64)
    assert np.array_equal(res.output_bits, alone.output_bits)
    assert int(res.valid[res.entry_sfm >= 0].sum()) == sp.selected.size


def test_adaptive_pass_reads_the_always_attended_scores(setup):
    from starc.planner import policies as pol
    from starc.planner.selection import scan_scores
    c, cks = setup
    ck = cks["starc-row"]
    pl = Planner(ck, "starc-row", "t0.002")
    sp = pl.plan(69, 2, 1)[2]
    sel = pl.selection(sp)
    assert len(sel.scans) == 2
    prog, wdata, n_sel = pl.step_program(sp)
    assert int((prog["op"][:n_sel] == Op.WRGB).sum()) == 4        # one query, written once
    hm = ck.head(2, 1)
    res = functional.execute(prog, wdata, ck.channel_image(hm.channel, sp.n_ctx, [2]), CFG, 64)
    cent, always = scan_scores(sel, res.host_scores[0])
    a = pol.always_attended(hm, sp.n_ctx, pl.B)
    q = c.q[2][69, sp.q_head].astype(np.float16).astype(np.float64)
    ref = c.k[2][a, 1].astype(np.float16).astype(np.float64) @ q / 8
    assert np.abs(always - ref).max() <= 1e-5 * (1 + np.abs(ref).max())
    assert cent.size == hm.clusters_at(sp.n_ctx).size


def test_no_pass_where_nothing_was_scored(setup):
    c, cks = setup
    ck = cks["starc-row"]
    for policy, B in (("starc-row", 4096), ("starc-row", 10)):
        sp = Planner(ck, policy, B).plan(3, 2, 0)[0]
        assert Planner(ck, policy, B).selection(sp) is None
    sp = Planner(ck, "starc-row", 300).plan(3, 0, 0)[0]          # dense layer
    assert not sp.scored
    dense_ck = cks["quest"]
    for policy in ("dense", "streaming"):
        pl = Planner(dense_ck, policy, 300)
        sp = pl.plan(3, 2, 0)[0]
        prog, _, n_sel = pl.step_program(sp)
        assert n_sel == 0 and not (prog["op"] == Op.RDSB).any()


def test_rdsb_timing_checker_and_energy():
    tm = CFG.timing
    n = 100
    prog = make_program([(Op.RDSB, 0, 0, 0, 0, n), (Op.BAR,),
                         (Op.MVSB, 3, 0, int(MoveFlag.VALUE), 0, 0)])
    s = timing.schedule(prog, CFG)
    xfer = rdsb_transfer(CFG, n)
    # 400 bytes = 13 bursts of 32 B over 2 pseudo-channels: 7 x tBL
    assert xfer == 7 * tm.tBL
    assert s.issue[1] == s.issue[0] + tm.CL + xfer              # BAR waits for the data
    check.check(s.program, s.issue, CFG)
    bad = s.issue.copy()
    bad[2] = bad[0] + xfer - 1
    bad[1] = bad[2] - 1
    with pytest.raises(check.TimingViolation, match="RDSB"):
        check.check(s.program, bad, CFG)
    e = energy.account(prog, CFG, 64)
    assert e.counts.readback_bytes == 4 * n
    ee = CFG.energy
    assert e.breakdown["host_io"] == pytest.approx(4 * n * (8 * ee.io_pj_per_bit
                                                            + ee.sram_pj_per_byte))


def test_rdsb_count_must_match():
    prog = make_program([(Op.WRGB, 0, 0, 0, 0, 0), (Op.ACTAB, 0, 0, 0, 0, 0),
                         (Op.MACAB, 0, 0, 0, 0, 0), (Op.MACAB, 0, 0, 1, 0, 0), (Op.PREA,),
                         (Op.MVSB, 0, 0, 0, 0, 0b101), (Op.RDSB, 0, 0, 0, 0, 3)])
    wd = np.zeros((4, 16), np.uint16)
    with pytest.raises(ProgramError, match="RDSB n=3 but the softmax buffer holds 2"):
        functional.execute(prog, wd, {}, CFG, 64)
    prog["arg"][-1] = 2
    res = functional.execute(prog, wd, {}, CFG, 64)
    assert [x.size for x in res.host_scores] == [2]

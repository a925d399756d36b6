# amaranth: UnusedElaboratable=no
"""Fast tier: the controller (and the bank array's checker) under amaranth.sim on tiny programs,
every issue cycle against starc.golden.timing.schedule."""


from __future__ import annotations

import random

import numpy as np
import pytest
from _rule_programs import rule_programs
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator
from starc import rules
from starc.golden.programs import dense_program, stream_program
from starc.isa import Op, encode, make_program
from starc.rules import RULES
from starc_hw.bank import VIOLATIONS, BankArray
from starc_hw.channel import Channel
from starc_hw.controller import DECISION_CLOCKS, Controller, Fault
from starc_hw.feeder import FedChannel
from starc_sim.programs import SHORT_REFRESH, SMALL, TINY, load_config, random_program
from starc_sim.scoreboard import (
    Issued,
    IssueScoreboard,
    ScoreboardError,
    bank_violations,
    decode_issue,
    expected_issues,
)

CFG = load_config(None, {**TINY, **SHORT_REFRESH})
W = 48


def simulate(prog: np.ndarray, *, cfg=CFG, refresh: bool = True, idle: float = 0.0,
             backpressure: float = 0.0, seed: int = 0, perturb: int | None = None,
             heads: int = 1) -> tuple[IssueScoreboard, dict[str, int]]:
    """Run ``prog`` through a Channel (controller + bank array) in amaranth.sim."""
    expected, sched = expected_issues(prog, cfg, refresh=refresh)
    sb = IssueScoreboard(expected, seed=seed, perturb=perturb)
    dut = Channel(cfg=cfg, refresh=refresh, cycle_width=W, heads=heads)
    rng = random.Random(seed)
    words = [encode(c) for c in prog]
    n_wr = int(np.isin(prog["op"], [int(Op.WR), int(Op.WRGB)]).sum())  # one data beat each
    out: dict[str, int] = {}

    async def source(ctx) -> None:
        for w in words:
            while idle and rng.random() < idle:
                await ctx.tick()
            ctx.set(dut.cmd.valid, 1)
            ctx.set(dut.cmd.payload.as_value(), w)
            await ctx.tick().until(dut.cmd.ready)
            ctx.set(dut.cmd.valid, 0)

    async def wdata(ctx) -> None:
        for k in range(n_wr):
            ctx.set(dut.wdata.valid, 1)
            ctx.set(dut.wdata.payload, k + 1)
            await ctx.tick().until(dut.wdata.ready)
            ctx.set(dut.wdata.valid, 0)

    async def sink(ctx) -> None:
        limit = 20 * (sched.total_cycles + 50 * len(expected))
        for _ in range(limit):
            ready = not (backpressure and rng.random() < backpressure)
            ctx.set(dut.issue.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.issue.valid,
                                                            dut.issue.payload.as_value())
            if valid and ready:
                sb.observe(decode_issue(payload, W))
                if sb.done:
                    break
        await ctx.tick()
        out["complete"] = ctx.get(dut.complete)
        out["total"] = sched.total_cycles
        out["violations"] = ctx.get(dut.violations.as_value())
        out["violation_count"] = ctx.get(dut.violation_count)
        out["fault"] = ctx.get(dut.fault.as_value())

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(wdata, background=True)
    sim.add_testbench(sink)
    sim.run()
    return sb, out


def _check(prog: np.ndarray, **kw) -> dict[str, int]:
    sb, out = simulate(prog, **kw)
    sb.check()
    assert out["fault"] == 0
    assert out["complete"] == out["total"]
    _, s = expected_issues(prog, kw.get("cfg", CFG), refresh=kw.get("refresh", True))
    want = bank_violations(s.program, s.issue, kw.get("cfg", CFG))
    flags = VIOLATIONS.from_bits(out["violations"])
    assert {n for n, _ in VIOLATIONS if getattr(flags, n)} == set(want) - {"commands"}
    assert out["violation_count"] == want.get("commands", 0)
    return out


def test_stream_rows() -> None:
    _check(stream_program(CFG, 2))


def test_dense_small() -> None:
    _check(dense_program(CFG, 96, 64), idle=0.2, backpressure=0.2, seed=3)


def test_dense_two_heads_overlapped() -> None:
    """Two heads in the overlapped order (docs/multihead.md): the per-head rows (query,
    softmax, value accumulators) keep one register per head, every issue cycle and binding
    rule as in the golden model. A controller with one head's registers runs the program
    (heads are not looked at) but not at the golden model's cycles."""
    prog = dense_program(CFG, 96, 64, heads=2)
    _check(prog, idle=0.1, backpressure=0.1, seed=5, heads=2)
    sb, _ = simulate(prog, heads=1)
    with pytest.raises(ScoreboardError):
        sb.check()


def test_refresh_is_inserted() -> None:
    # a long softmax and a barrier put the second row after 2 tREFI: overdue refreshes
    prog = make_program([(Op.ACTAB, 0, 0, 0, 1), (Op.MACAB,), (Op.PREA,),
                         (Op.SFM, 0, 0, 0, 0, 20000), (Op.BAR,),
                         (Op.ACTAB, 0, 0, 0, 2), (Op.PREA,)])
    _, s = expected_issues(prog, CFG)
    assert s.refreshes >= 2
    _check(prog)


@pytest.mark.parametrize("seed", [11, 12])
def test_random_program(seed: int) -> None:
    _check(random_program(CFG, 120, seed, explicit_ref=seed % 2 == 0), idle=0.3,
           backpressure=0.3, seed=seed)


def test_without_refresh() -> None:
    _check(random_program(CFG, 80, 5), refresh=False)


def test_scoreboard_fails_on_perturbed_cycle() -> None:
    with pytest.raises(ScoreboardError, match="issue #4"):
        sb, _ = simulate(stream_program(CFG, 1), perturb=4)
        sb.check()


def test_fault_on_closed_bank() -> None:
    dut = Controller(cfg=CFG)
    prog = make_program([(Op.ACTBG, 1, 0, 0, 3), (Op.MACAB,), (Op.PREA,)])
    seen: list[int] = []

    async def tb(ctx) -> None:
        ctx.set(dut.issue.ready, 1)
        for c in prog:
            ctx.set(dut.cmd.valid, 1)
            ctx.set(dut.cmd.payload.as_value(), encode(c))
            for _ in range(100):
                _, _, ready, valid = await ctx.tick().sample(dut.cmd.ready, dut.issue.valid)
                if valid:
                    seen.append(1)
                if ready:
                    break
        for _ in range(10):
            await ctx.tick()
        assert ctx.get(dut.fault) == Fault.CLOSED
        assert ctx.get(dut.issued) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_fed_channel_repeats_program() -> None:
    """FedChannel (the bench top) runs a loaded program twice at the golden model's cycles."""
    prog = dense_program(CFG, 64, 64)
    s = expected_issues(np.tile(prog, 2), CFG)[1]
    dut = FedChannel(cfg=CFG, depth=256)
    got: dict[str, int] = {}

    async def tb(ctx) -> None:
        ctx.set(dut.load.valid, 1)
        for c in prog:
            ctx.set(dut.load.payload.as_value(), encode(c))
            await ctx.tick()
        ctx.set(dut.load.valid, 0)
        ctx.set(dut.repeat, 2)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(4 * s.total_cycles):
            _, _, done = await ctx.tick().sample(dut.done)
            if done:
                break
        got.update(complete=ctx.get(dut.complete), issued=ctx.get(dut.issued),
                   fault=ctx.get(dut.fault.as_value()), done=ctx.get(dut.done))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == {"complete": s.total_cycles, "issued": len(s.issue), "fault": 0, "done": 1}


def test_parameters_are_validated() -> None:
    with pytest.raises(TypeError, match="Configuration must be a starc.config.Config, not 3"):
        Controller(cfg=3)
    with pytest.raises(ValueError, match="Cycle width must be an integer from 24 to 64, not 8"):
        Controller(cfg=CFG, cycle_width=8)
    with pytest.raises(TypeError, match="Refresh must be a bool, not 1"):
        Controller(cfg=CFG, refresh=1)
    with pytest.raises(ValueError, match="Rows per bank must be a positive power of two, not 3"):
        BankArray(cfg=CFG, rows=3)
    with pytest.raises(ValueError, match="Program depth must be a positive integer, not 0"):
        FedChannel(cfg=CFG, depth=0)


def test_every_rule_binds_in_the_rtl() -> None:
    """Each row's directed program (tests/_rule_programs.py) on the controller: every issue
    cycle and binding rule equal to the golden model's, the last one the row's id. One
    simulation per configuration; the channel is reset between programs."""
    by_config: dict[str, list[tuple[int, np.ndarray]]] = {}
    overrides: dict[str, dict] = {}
    for rid, (over, cmds) in rule_programs(SMALL).items():
        key = repr(sorted(over.items()))
        overrides[key] = over
        by_config.setdefault(key, []).append((rid, make_program(cmds)))
    assert len({rid for runs in by_config.values() for rid, _ in runs}) == len(RULES) + 1
    for key, runs in by_config.items():
        cfg = load_config(None, overrides[key])
        got = _run_with_resets(cfg, [prog for _, prog in runs])
        for (rid, prog), issued in zip(runs, got, strict=True):
            assert issued == expected_issues(prog, cfg)[0], rules.rule_name(rid)
            assert issued[-1].rule == rid, rules.rule_name(rid)


async def _host_clock(ctx, dut, words: list[int], k: int) -> tuple[int, Issued | None]:  # noqa: ANN001
    """One clock of a host that offers command word ``k`` of ``words`` (none past the end):
    the next word's index (``k + 1`` when the controller took it) and the command issued in
    that clock, if any."""
    ctx.set(dut.cmd.valid, k < len(words))
    if k < len(words):
        ctx.set(dut.cmd.payload.as_value(), words[k])
    _, _, ready, valid, payload = await ctx.tick().sample(
        dut.cmd.ready, dut.issue.valid, dut.issue.payload.as_value())
    return k + int(bool(ready) and k < len(words)), decode_issue(payload, W) if valid else None


def _run_with_resets(cfg, progs: list[np.ndarray]) -> list[list[Issued]]:
    """Each program on one Channel in amaranth.sim, the channel reset before each: the issued
    commands of every program."""
    rst = Signal()
    dut = Channel(cfg=cfg, cycle_width=W)
    top = ResetInserter(rst)(dut)
    out: list[list[Issued]] = []

    async def tb(ctx) -> None:
        ctx.set(dut.issue.ready, 1)
        ctx.set(dut.wdata.valid, 1)
        for prog in progs:
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            n = len(expected_issues(prog, cfg)[0])
            got: list[Issued] = []
            words = [encode(c) for c in prog]
            k = 0
            for _ in range(50 * len(words) + 2000):
                k, issued = await _host_clock(ctx, dut, words, k)
                if issued is not None:
                    got.append(issued)
                if len(got) == n:
                    break
            out.append(got)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return out


def test_bank_timestamps_forget_the_program_before_a_reset() -> None:
    """A reset forgets every family's latest events (the ages go back to "long ago"). A
    program leaves every bank's ACT, PRE, RD and WR entries at late cycles, the channel is
    reset, and a second program reads each of them first (ACT after the stale PRE, PRE after
    the stale ACT, RD and WR): its issue cycles are the golden model's from cycle 0, which
    stale entries would delay."""
    cfg = load_config(None, SMALL)
    org = cfg.org
    banks = [(g, b) for g in range(org.groups_per_channel) for b in range(org.banks_per_group)]
    first = [c for _ in range(3) for g, b in banks
             for c in ((Op.ACTPB, g, b), (Op.WR, g, b), (Op.RD, g, b), (Op.PREPB, g, b))]
    second = [c for g, b in banks[:4] for c in ((Op.ACTPB, g, b), (Op.PREPB, g, b))]
    second += [(Op.ACTPB, 0, 0), (Op.RD, 0, 0), (Op.WR, 0, 0), (Op.PREPB, 0, 0)]
    progs = [make_program(first), make_program(second)]
    got = _run_with_resets(cfg, progs)
    for prog, issued in zip(progs, got, strict=True):
        assert issued == expected_issues(prog, cfg)[0]
    assert got[0][-1].cycle > 500 > got[1][-1].cycle


@pytest.mark.parametrize("fold", [1, 3])
def test_clocks_per_decision_and_step(fold: int) -> None:
    """The controller's clock contract (docs/rtl.md): with ``step`` high on every clock a
    command costs DECISION_CLOCKS clocks beyond its emulated cycles; with ``step`` once every
    ``fold >= 3`` clocks the decisions hide inside the emulated cycles. Cycles and rules stay the
    golden model's either way."""
    prog = dense_program(CFG, 64, 64)
    expected, sched = expected_issues(prog, CFG)
    sb = IssueScoreboard(expected)
    dut = Channel(cfg=CFG, cycle_width=W, stepped=True)
    words = [encode(c) for c in prog]
    clocks = {"n": 0}

    async def tb(ctx) -> None:
        ctx.set(dut.issue.ready, 1)
        ctx.set(dut.wdata.valid, 1)
        k = 0
        for clk in range(10 * fold * (sched.total_cycles + 10 * len(words))):
            ctx.set(dut.step, clk % fold == 0)
            k, issued = await _host_clock(ctx, dut, words, k)
            if issued is not None:
                sb.observe(issued)
                if sb.done:
                    clocks["n"] = clk + 1
                    break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    sb.check()
    last = int(sched.issue[-1])
    n = len(sched.issue)
    if fold == 1:
        assert clocks["n"] <= last + 1 + DECISION_CLOCKS * n + 2
        assert clocks["n"] >= last + DECISION_CLOCKS * n  # the counter stood still meanwhile
    else:
        assert fold * last <= clocks["n"] <= fold * (last + 1) + DECISION_CLOCKS + 2


def test_board_build_key_covers_the_controller() -> None:
    """The Verilator build folder of a board top (starc_fpga.top) is keyed by the digest of every
    gateware source it imports, so a changed controller is rebuilt, never reused stale."""
    from starc_sim.runner import _import_closure

    names = {p.name for p in _import_closure(["starc_fpga.top"])}
    assert {"controller.py", "bank.py", "channel.py", "layouts.py", "rules.py"} <= names

# amaranth: UnusedElaboratable=no
"""starc_hw.bank.BankArray's timing checker against the independent model of
``starc_sim.scoreboard.bank_violations``: seeded random streams of every bank command (all
scopes, REF included) at cycle stamps close enough to break every rule now and then. After each
command the sticky flags and the violation count (three clocks late) equal the model's for the
commands so far, with and without the block RAM stage; after a reset halfway (the cycle stamps
start again near 0) those of the commands since the reset."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator
from starc.isa import Op, encode, make_program
from starc_hw.bank import VIOLATIONS, BankArray
from starc_hw.sizes import size
from starc_sim.scoreboard import bank_violations

OPS = [Op.ACTAB, Op.ACTBG, Op.ACTPB, Op.ACTPB, Op.PREA, Op.PREBG, Op.PREPB, Op.PREPB, Op.MACAB,
       Op.MACBG, Op.RD, Op.RD, Op.WR, Op.WR, Op.REF]


def _stream(cfg: Any, rng: random.Random, n: int) -> tuple[np.ndarray, list[int]]:
    org, tm = cfg.org, cfg.timing
    DISTANCES = [tm.tRC, tm.tRP, tm.tRFC, tm.tRAS, tm.tRTP_L, tm.tRCD, tm.tCCD_L,
                 cfg.distances()["wr_to_pre"]]
    cmds, stamps, t = [], [], rng.randrange(0, 3)
    for _ in range(n):
        op = rng.choice(OPS)
        cmds.append((op, rng.randrange(org.groups_per_channel),
                     rng.randrange(org.banks_per_group), rng.randrange(4), rng.randrange(4), 0))
        # mostly within the rules' distances (4 .. 455 cycles), sometimes far beyond them
        # (a step of 0 to 7, one of up to 80 or 600, one next to a rule's distance, or a jump)
        t += rng.choice([rng.randrange(8), rng.randrange(8), rng.randrange(80),
                         rng.randrange(600), rng.choice(DISTANCES) + rng.randrange(-1, 2), 5000])
        stamps.append(t)
    return make_program(cmds), stamps


AT = 160   # the reset, before this command


@pytest.mark.parametrize("name,stage,seed", [("small", False, 1), ("medium", False, 2),
                                             ("medium", True, 3), ("tiny", False, 4)])
def test_checker_flags_equal_the_model(name: str, stage: bool, seed: int) -> None:
    sz = size(name)
    cfg = sz.config()
    rng = random.Random(seed)
    prog, stamps = _stream(cfg, rng, 160)
    prog2, stamps2 = _stream(cfg, rng, 100)   # after the reset
    prog, stamps = np.concatenate([prog, prog2]), stamps + stamps2
    dut = BankArray(cfg=cfg, rows=sz.rows, cycle_width=32, bram_stage=stage)
    rst = Signal()
    top = ResetInserter(rst)(dut)
    got: list[tuple[int, int]] = []

    async def bench(ctx: Any) -> None:
        for k in range(len(prog)):
            if k == AT:
                ctx.set(rst, 1)
                await ctx.tick()
                ctx.set(rst, 0)
            ctx.set(dut.cmd.valid, 1)
            ctx.set(dut.cmd.payload.cmd.as_value(), encode(prog[k]))
            ctx.set(dut.cmd.payload.cycle, stamps[k])
            await ctx.tick()
            ctx.set(dut.cmd.valid, 0)
            await ctx.tick().repeat(2)
            got.append((ctx.get(dut.violations.as_value()), ctx.get(dut.violation_count)))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    names = [n for n, _ in VIOLATIONS]
    flagged = 0
    for k, (flags, count) in enumerate(got):
        k0 = AT if k >= AT else 0
        want = bank_violations(prog[k0:k + 1], np.array(stamps[k0:k + 1]), cfg)
        f = VIOLATIONS.from_bits(flags)
        assert {n for n in names if getattr(f, n)} == set(want) - {"commands"}, k
        assert count == want.get("commands", 0), k
        flagged += count if k in (AT - 1, len(got) - 1) else 0
    assert flagged > 20   # the stream breaks rules often enough to test the checker

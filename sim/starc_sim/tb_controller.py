"""cocotb tests of the channel (controller + bank array): every issue cycle against the golden
timing model, the cycle count, the bank array's timing flags and RD data.

Run through ``tests/test_rtl_controller.py`` (which builds the model and sets ``STARC_TB_CONFIG``);
``STARC_PERTURB=<index>`` adds one cycle to that expected issue, which must fail the run.
"""

from __future__ import annotations

import random
from typing import Any

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, with_timeout
from starc.config import Config
from starc.golden.programs import dense_program, stream_program
from starc.isa import Op, encode, make_program
from starc_hw.controller import Fault

from starc_sim.channel_tb import reset, run_program, tb_config
from starc_sim.programs import random_program
from starc_sim.scoreboard import bank_violations, expected_issues
from starc_sim.streams import StreamSink, StreamSource


def _head_dim(cfg: Config) -> int:
    """The largest head dimension the organisation holds (128 on the default preset)."""
    for d in (128, 64, 32):
        b = d // (2 * cfg.org.elements_per_column)
        if 0 < b <= cfg.org.banks_per_group and cfg.org.banks_per_group % b == 0:
            return d
    raise ValueError("no head dimension fits this organisation")


def _dense_len(cfg: Config) -> int:
    # two and a half all-bank rows of keys (and of values): partial last row, MVSB/MVGB overlap
    return cfg.tokens_per_group_row(_head_dim(cfg)) * cfg.org.groups_per_channel * 5 // 2


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], backpressure=[0.0, 0.3])
async def dense(dut: Any, idle: float, backpressure: float) -> None:
    """Dense attention program (golden.programs.dense_program) with idle/backpressure."""
    cfg = tb_config().cfg
    await run_program(dut, dense_program(cfg, _dense_len(cfg), _head_dim(cfg)), idle=idle,
                      backpressure=backpressure)


@cocotb.test()
async def stream(dut: Any) -> None:
    """Whole rows at peak (ACTAB, every column MACAB at tCCD_AB, PREA), host at full rate."""
    cfg = tb_config().cfg
    await run_program(dut, stream_program(cfg, 3))


@cocotb.test()
@cocotb.parametrize(variant=[0, 1, 2, 3])
async def random_programs(dut: Any, variant: int) -> None:
    """Seeded random legal programs (per-group rounds, per-bank RD/WR, moves, softmax, barriers)
    long enough to cross tREFI several times, with idle and backpressure insertion."""
    cfg = tb_config().cfg
    seed = int(cocotb.RANDOM_SEED) * 16 + variant
    dut._log.info("program seed %d", seed)
    prog = random_program(cfg, 400, seed)
    await run_program(dut, prog, idle=0.2 * (variant % 2), backpressure=0.2 * (variant // 2))


@cocotb.test()
async def random_explicit_refresh(dut: Any) -> None:
    """Random programs with explicit REF commands: the controller matches the golden model; the
    bank checker flags what the golden rule lets through (tRFC after an explicit REF)."""
    cfg = tb_config().cfg
    seed = int(cocotb.RANDOM_SEED) * 16 + 7
    dut._log.info("program seed %d", seed)
    await run_program(dut, random_program(cfg, 400, seed, explicit_ref=True), idle=0.1,
                      backpressure=0.1)


@cocotb.test()
async def golden_gaps(dut: Any) -> None:
    """Directed: the two sequences the golden rule once issued too early for a DRAM bank
    (RD -> MAC of the same bank one cycle apart, tCCD; explicit REF -> ACT, tRFC). The rule now
    spaces both, so the bank array's independent checker must flag nothing, and the controller
    must still follow the golden model exactly."""
    cfg = tb_config().cfg
    prog = make_program([
        (Op.ACTBG, 0, 0, 0, 1), (Op.RD, 0, 0, 1), (Op.MACBG, 0, 0, 2), (Op.PREA,),
        (Op.REF,), (Op.ACTAB, 0, 0, 0, 2), (Op.PREA,),
    ])
    _, s = expected_issues(prog, cfg, refresh=tb_config().refresh)
    want = bank_violations(s.program, s.issue, cfg)
    assert not {"tCCD", "tRFC"} & set(want), f"golden rule regressed: model predicts {want}"
    await run_program(dut, prog, expect_flags=want)


@cocotb.test()
async def fault_stops(dut: Any) -> None:
    """An illegal command (MACAB while only one group is open) stops the controller with
    Fault.CLOSED after issuing what came before it."""
    await reset(dut)
    cfg = tb_config().cfg
    rng = random.Random(int(cocotb.RANDOM_SEED))
    prog = make_program([(Op.ACTBG, 0, 0, 0, 3), (Op.MACAB,), (Op.PREA,)])
    src = StreamSource(dut, "cmd", dut.clk, rng=rng)
    StreamSink(dut, "issue", dut.clk, rng=rng)
    src.send(encode(c) for c in prog)
    expected = Fault.CLOSED.value if cfg.org.groups_per_channel > 1 else Fault.NONE.value
    for _ in range(200):
        await with_timeout(ClockCycles(dut.clk, 1), 1, "us")
        await ReadOnly()
        if dut.fault.value.to_unsigned():
            break
    assert dut.fault.value.to_unsigned() == expected, f"fault {dut.fault.value}"
    assert dut.issued.value.to_unsigned() == 1, f"issued {dut.issued.value}"

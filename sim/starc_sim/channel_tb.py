"""Testbench of :class:`starc_hw.channel.Channel` (controller + bank array) under cocotb.

:class:`ChannelTB` wires the drivers (program and write-data streams, with idle insertion), the
monitors (issued-command stream with backpressure, RD data) and the scoreboards (issue cycles
against :func:`starc.golden.timing.schedule`, RD data against a memory model, the bank array's
timing flags against :func:`starc_sim.scoreboard.bank_violations`).

The configuration comes from the environment (``STARC_TB_CONFIG``, JSON written by
:func:`tb_env`), so that the pytest side that built the model and the cocotb side agree.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Any

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Event, FallingEdge, ReadOnly, with_timeout
from starc.config import Config
from starc.isa import Op, encode
from starc_hw.bank import VIOLATIONS

from starc_sim.programs import load_config
from starc_sim.scoreboard import (
    Issued,
    IssueScoreboard,
    bank_violations,
    decode_issue,
    expected_issues,
)
from starc_sim.streams import CLOCK_NS, StreamSink, StreamSource, start_and_reset

__all__ = ["ChannelTB", "TbConfig", "run_program", "tb_config", "tb_env"]



@dataclass(frozen=True)
class TbConfig:
    """What the model was built with (mirrors the build parameters)."""

    preset: str | None
    overrides: dict[str, Any]
    rows: int = 4
    refresh: bool = True
    cycle_width: int = 48

    @property
    def cfg(self) -> Config:
        return load_config(self.preset, self.overrides)


def tb_env(tc: TbConfig) -> dict[str, str]:
    """Environment for a cocotb run of a model built from ``tc``."""
    return {"STARC_TB_CONFIG": json.dumps(tc.__dict__)}


def tb_config() -> TbConfig:
    raw = os.environ.get("STARC_TB_CONFIG")
    if raw is None:
        raise RuntimeError("STARC_TB_CONFIG is not set: run the cocotb module through "
                           "starc_sim.runner with extra_env=tb_env(...)")
    return TbConfig(**json.loads(raw))


def _perturb() -> int | None:
    v = os.environ.get("STARC_PERTURB")
    return int(v) if v else None


def expected_reads(prog: np.ndarray, cfg: Config, rows: int, wdata: list[int]
                   ) -> list[tuple[int, int, int, int]]:
    """(group, bank, col, data) of every RD, from a dictionary model of the bank storage."""
    BPG, NB = cfg.org.banks_per_group, cfg.org.banks_per_channel
    open_row = [0] * NB
    store: dict[tuple[int, int, int], int] = {}
    out = []
    k = 0
    for c in prog:
        op, g, b = int(c["op"]), int(c["group"]), int(c["bank"])
        row, col = int(c["row"]) % rows, int(c["col"])
        if op == Op.ACTAB:
            open_row = [row] * NB
        elif op == Op.ACTBG:
            open_row[g * BPG:(g + 1) * BPG] = [row] * BPG
        elif op == Op.ACTPB:
            open_row[g * BPG + b] = row
        elif op == Op.WR:
            store[(g * BPG + b, open_row[g * BPG + b], col)] = wdata[k]
            k += 1
        elif op == Op.WRGB:
            k += 1  # a query chunk: consumed from the same stream, not stored in a bank
        elif op == Op.RD:
            out.append((g, b, col, store.get((g * BPG + b, open_row[g * BPG + b], col), 0)))
    return out


class ChannelTB:
    """Drivers, monitors and scoreboards around one ``Channel`` DUT (after reset)."""

    def __init__(self, dut: Any, tc: TbConfig, *, idle: float, backpressure: float,
                 seed: int) -> None:
        self.dut = dut
        self.tc = tc
        self.cfg = tc.cfg
        self.seed = seed
        self.label = f"run seed {os.environ.get('COCOTB_RANDOM_SEED')}, test seed {seed}"
        self.column_bits = self.cfg.org.column_bytes * 8
        self.cmd = StreamSource(dut, "cmd", dut.clk, idle=idle, rng=random.Random(seed))
        self.wdata = StreamSource(dut, "wdata", dut.clk, idle=idle,
                                  rng=random.Random(seed + 1))
        self.issues = StreamSink(dut, "issue", dut.clk, backpressure=backpressure,
                                 rng=random.Random(seed + 2), on_item=self._on_issue)
        self.reads: list[tuple[int, int, int, int]] = []
        self._done = Event()
        self.sb: IssueScoreboard | None = None
        cocotb.start_soon(self._watch_reads())

    def _on_issue(self, word: int) -> None:
        assert self.sb is not None
        self.sb.observe(decode_issue(word, self.tc.cycle_width))
        if self.sb.done:
            self._done.set()

    async def _watch_reads(self) -> None:
        dut = self.dut
        bits = self.column_bits
        while True:
            await FallingEdge(dut.clk)
            await ReadOnly()
            if dut.rdata_valid.value == 1:
                w = dut.rdata.value.to_unsigned()
                self.reads.append((w & 31, (w >> 5) & 7, (w >> 8) & 63,
                                   (w >> 14) & ((1 << bits) - 1)))

    async def run(self, prog: np.ndarray, *, expect_flags: dict[str, int] | None = None
                  ) -> list[Issued]:
        """Run ``prog`` and check everything; returns the observed issues."""
        cfg, tc = self.cfg, self.tc
        expected, sched = expected_issues(prog, cfg, refresh=tc.refresh)
        total = sched.total_cycles
        self.sb = IssueScoreboard(expected, seed=self.label, perturb=_perturb())
        rng = random.Random(self.seed + 3)
        n_beats = int(np.isin(prog["op"], [int(Op.WR), int(Op.WRGB)]).sum())
        wdata = [rng.getrandbits(self.column_bits) for _ in range(n_beats)]
        self.cmd.send(encode(c) for c in prog)
        self.wdata.send(wdata)
        # Generous: every DRAM cycle plus host stalls of up to ~30 clocks per command.
        timeout_us = (total + 30 * len(expected) + 1000) * CLOCK_NS / 1000
        try:
            await with_timeout(self._done.wait(), timeout_us, "us")
        except TimeoutError:
            self.sb.check()
            raise AssertionError(f"timeout after {timeout_us} us ({self.label})") from None
        await with_timeout(ClockCycles(self.dut.clk, 3), 1, "us")
        await ReadOnly()
        self.sb.check()
        dut = self.dut
        where = f"({self.label})"
        assert dut.fault.value.to_unsigned() == 0, f"controller fault {dut.fault.value} {where}"
        complete = dut.complete.value.to_unsigned()
        assert complete == total, f"complete {complete} != golden total {total} {where}"
        # bank array timing checker against its Python model
        want = expect_flags
        if want is None:
            want = bank_violations(sched.program, sched.issue, cfg)
        flags = VIOLATIONS.from_bits(dut.violations.value.to_unsigned())
        got = {name for name, _ in VIOLATIONS if getattr(flags, name)}
        assert got == set(want) - {"commands"}, \
            f"bank checker flagged {sorted(got)}, model predicts {want} {where}"
        count = dut.violation_count.value.to_unsigned()
        assert count == want.get("commands", 0), \
            f"bank checker counted {count} violating commands, model {want} {where}"
        reads = expected_reads(prog, cfg, tc.rows, wdata)
        assert self.reads == reads, f"RD data differs from the memory model {where}"
        return self.sb.observed


async def reset(dut: Any) -> None:
    await start_and_reset(dut, cmd__valid=0, wdata__valid=0, issue__ready=0)


async def run_program(dut: Any, prog: np.ndarray, *, idle: float = 0.0,
                      backpressure: float = 0.0, expect_flags: dict[str, int] | None = None
                      ) -> list[Issued]:
    """Reset, then run ``prog`` on the DUT with full checking. Logs the seed first."""
    seed = int(cocotb.RANDOM_SEED)
    dut._log.info("run seed %s (STARC_SEED / COCOTB_RANDOM_SEED), test seed %d, %d commands, "
                  "idle %.2f, backpressure %.2f", os.environ.get("COCOTB_RANDOM_SEED"), seed,
                  len(prog), idle, backpressure)
    await reset(dut)
    tb = ChannelTB(dut, tb_config(), idle=idle, backpressure=backpressure, seed=seed)
    return await tb.run(prog, expect_flags=expect_flags)

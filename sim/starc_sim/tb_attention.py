"""cocotb testbench of :class:`starc_hw.attention.AttentionChannel`: one decode step, end to end.

Run through :func:`starc_sim.cosim.run_scenario` (which writes the bundle and sets the
environment). The test:

1. loads the memory image through WR commands (every issue cycle checked against the golden
   schedule of the load program), then pulses ``restart`` (time and datapath state to zero, bank
   storage kept);
2. runs the step program with random idle cycles on the command and data streams and random
   backpressure on the issue stream (``STARC_TB_IDLE``, ``STARC_TB_BACKPRESSURE``);
3. checks, against the golden model: every issue cycle, every score beat entering the softmax
   buffer (group, valid mask, FP32 bits), every probability beat an MVGB delivers (group, FP16
   bits), the output (FP16 bits and the accumulator), the cycle count (``complete`` = the golden
   total), that every datapath result was produced by the golden completion cycle, and that no
   contract flag, controller fault or bank timing violation was raised.

It writes ``STARC_TB_RESULT`` (JSON) before asserting, so a caller can report a disagreement.
``STARC_TB_PERTURB`` (``output`` / ``cycles`` / ``score``) corrupts one golden value first: the
scoreboard must then fail (tests/test_rtl_attention.py checks that it does).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, ReadOnly, with_timeout
from starc.isa import Op, encode
from starc_hw.attention import DP_ERRORS
from starc_hw.bank import VIOLATIONS

from starc_sim.cosim import ModelSpec, _words
from starc_sim.scoreboard import Issued, IssueScoreboard, decode_issue
from starc_sim.streams import StreamSink, StreamSource

CLOCK_NS = 10


def _spec() -> ModelSpec:
    return ModelSpec(**json.loads(os.environ["STARC_TB_SPEC"]))


def _expected(full: np.ndarray, issue: np.ndarray, inserted: np.ndarray) -> list[Issued]:
    return [Issued(encode(c), int(t), bool(ins))
            for c, t, ins in zip(full, issue.tolist(), inserted.tolist(), strict=True)]


def _data_beats(prog: np.ndarray, wdata: np.ndarray) -> list[int]:
    words = _words(wdata)
    return [words[int(c["arg"])] for c in prog if int(c["op"]) in (Op.WR, Op.WRGB)]


class Monitor:
    """Samples the datapath strobes every clock (they cannot be stalled)."""

    def __init__(self, dut: Any, slots: int) -> None:
        self.dut = dut
        self.S = slots
        self.scores: list[tuple[int, int, list[int]]] = []
        self.probs: list[tuple[int, list[int]]] = []
        self.last_cycle = -1     # emulated cycle of the last datapath activity
        self.active = False
        self._task = cocotb.start_soon(self._run())

    def _split(self, v: int, width: int) -> list[int]:
        mask = (1 << width) - 1
        return [(v >> (width * i)) & mask for i in range(self.S)]

    async def _run(self) -> None:
        dut, S = self.dut, self.S
        gbits = len(dut.score_beat) - S - 32 * S
        while True:
            await FallingEdge(dut.clk)
            await ReadOnly()
            if not self.active:
                continue
            cyc = dut.cycle.value.to_unsigned()
            if dut.busy.value == 1 or dut.score_valid.value == 1 or dut.prob_valid.value == 1:
                self.last_cycle = max(self.last_cycle, cyc)
            if dut.score_valid.value == 1:
                w = dut.score_beat.value.to_unsigned()
                g = w & ((1 << gbits) - 1)
                mask = (w >> gbits) & ((1 << S) - 1)
                self.scores.append((g, mask, self._split(w >> (gbits + S), 32)))
            if dut.prob_valid.value == 1:
                w = dut.prob_beat.value.to_unsigned()
                probs_at = len(dut.prob_beat) - 16 * S
                g = w & ((1 << gbits) - 1)
                self.probs.append((g, self._split(w >> probs_at, 16)))


async def _run_program(dut: Any, cmd: StreamSource, wdata: StreamSource, prog: np.ndarray,
                       beats: list[int], sb: IssueScoreboard, done: Event, total: int,
                       label: str) -> None:
    cmd.send(encode(c) for c in prog)
    wdata.send(beats)
    timeout_us = (total + 40 * len(prog) + 2000) * CLOCK_NS / 1000
    try:
        await with_timeout(done.wait(), timeout_us, "us")
    except TimeoutError:
        sb.check()
        raise AssertionError(f"{label}: timeout after {timeout_us} us") from None


@cocotb.test()
async def scenario(dut: Any) -> None:
    spec = _spec()
    cfg = spec.cfg
    S = cfg.tokens_per_bank_row()
    bundle = np.load(os.environ["STARC_TB_BUNDLE"])
    result_path = os.environ["STARC_TB_RESULT"]
    idle = float(os.environ.get("STARC_TB_IDLE", "0") or 0)
    bp = float(os.environ.get("STARC_TB_BACKPRESSURE", "0") or 0)
    perturb = os.environ.get("STARC_TB_PERTURB", "")
    seed = int(cocotb.RANDOM_SEED)
    label = f"seed {seed} (COCOTB_RANDOM_SEED={os.environ.get('COCOTB_RANDOM_SEED')})"
    dut._log.info("attention scenario: %d load + %d step commands, idle %.2f, backpressure "
                  "%.2f, %s", len(bundle["load_prog"]), len(bundle["prog"]), idle, bp, label)

    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    dut.restart.value = 0
    dut.cmd__valid.value = 0
    dut.wdata__valid.value = 0
    dut.issue__ready.value = 0
    await with_timeout(ClockCycles(dut.clk, 3), 1, "us")
    dut.rst.value = 0
    await FallingEdge(dut.clk)

    rng = random.Random(seed)
    mon = Monitor(dut, S)
    sb_holder: dict[str, Any] = {}
    done = Event()

    def on_issue(word: int) -> None:
        sb = sb_holder["sb"]
        sb.observe(decode_issue(word, spec.cycle_width))
        if sb.done:
            done.set()

    # 1. the image, through WR commands, at full speed
    cmd = StreamSource(dut, "cmd", dut.clk, idle=0.0, rng=random.Random(seed + 1))
    wdata = StreamSource(dut, "wdata", dut.clk, idle=0.0, rng=random.Random(seed + 2))
    sink = StreamSink(dut, "issue", dut.clk, backpressure=0.0, rng=random.Random(seed + 3),
                      on_item=on_issue)
    sb_holder["sb"] = IssueScoreboard(_expected(bundle["load_full"], bundle["load_issue"],
                                                bundle["load_inserted"]), seed=label)
    await _run_program(dut, cmd, wdata, bundle["load_prog"],
                       _data_beats(bundle["load_prog"], bundle["load_wdata"]),
                       sb_holder["sb"], done, int(bundle["load_total"]), "image load")
    await ClockCycles(dut.clk, 2)
    await ReadOnly()
    sb_holder["sb"].check()
    assert dut.violations.value.to_unsigned() == 0, f"bank timing violation in the load {label}"
    assert dut.fault.value.to_unsigned() == 0, f"controller fault during the load {label}"

    # 2. restart: time and datapath state to zero, storage kept
    for src in (cmd, wdata):
        src._task.cancel()
    sink._task.cancel()
    await FallingEdge(dut.clk)
    dut.cmd__valid.value = 0
    dut.wdata__valid.value = 0
    dut.issue__ready.value = 0
    dut.restart.value = 1
    await FallingEdge(dut.clk)
    dut.restart.value = 0
    done.clear()

    # 3. the step, with idle cycles and backpressure
    total = int(bundle["total"])
    if perturb == "cycles":
        total += 1
    issue = bundle["issue"].copy()
    sb_holder["sb"] = IssueScoreboard(_expected(bundle["full"], issue, bundle["inserted"]),
                                      seed=label)
    cmd = StreamSource(dut, "cmd", dut.clk, idle=idle, rng=random.Random(rng.random()))
    wdata = StreamSource(dut, "wdata", dut.clk, idle=idle, rng=random.Random(rng.random()))
    sink = StreamSink(dut, "issue", dut.clk, backpressure=bp, rng=random.Random(rng.random()),
                      on_item=on_issue)
    mon.active = True
    await _run_program(dut, cmd, wdata, bundle["prog"],
                       _data_beats(bundle["prog"], bundle["wdata"]), sb_holder["sb"], done,
                       total, "step")
    # let the datapath drain (bounded), then read the results
    for _ in range(total + 200):
        await FallingEdge(dut.clk)
        await ReadOnly()
        if dut.busy.value == 0 and \
                dut.cycle.value.to_unsigned() >= dut.complete.value.to_unsigned():
            break
    await ClockCycles(dut.clk, 2)
    await ReadOnly()

    d = spec.head_dim
    out_fp16 = dut.out_fp16.value.to_unsigned()
    out_bits = [(out_fp16 >> (16 * i)) & 0xFFFF for i in range(d)]
    accw = len(dut.out_acc) // d
    acc_v = dut.out_acc.value.to_unsigned()
    out_acc = [(acc_v >> (accw * i)) & ((1 << accw) - 1) for i in range(d)]
    want_out = [int(x) for x in bundle["out_bits"]]
    if perturb == "output":
        want_out[0] ^= 1
    want_acc = [int(x) for x in bundle["out_acc"]]
    complete = dut.complete.value.to_unsigned()

    mismatches: list[str] = []
    try:
        sb_holder["sb"].check()
        issues_equal = True
    except AssertionError as e:
        issues_equal = False
        mismatches.append(f"issue: {e}")
    want_scores = [(int(g), int(mk), [int(x) for x in row]) for g, mk, row in
                   zip(bundle["score_group"], bundle["score_mask"], bundle["score_bits"],
                       strict=True)]
    if perturb == "score" and want_scores:
        g, mk, row = want_scores[0]
        want_scores[0] = (g, mk, [row[0] ^ 1, *row[1:]])
    if mon.scores != want_scores:
        n = min(len(mon.scores), len(want_scores))
        first = next((i for i in range(n) if mon.scores[i] != want_scores[i]), n)
        mismatches.append(f"score beats: {len(mon.scores)} from the RTL, {len(want_scores)} "
                          f"golden; first difference at beat {first}")
    want_probs = [(int(g), [int(x) for x in row]) for g, row in
                  zip(bundle["prob_group"], bundle["prob_bits"], strict=True)]
    if mon.probs != want_probs:
        n = min(len(mon.probs), len(want_probs))
        first = next((i for i in range(n) if mon.probs[i] != want_probs[i]), n)
        mismatches.append(f"probability beats: {len(mon.probs)} from the RTL, "
                          f"{len(want_probs)} golden; first difference at beat {first}")
    if out_bits != want_out:
        bad = [i for i in range(d) if out_bits[i] != want_out[i]]
        mismatches.append(f"output FP16 differs in {len(bad)} of {d} dims, first dim {bad[0]}: "
                          f"RTL {out_bits[bad[0]]:#06x}, golden {want_out[bad[0]]:#06x}")
    acc_golden = want_acc if accw == 32 else None
    if acc_golden is not None and out_acc != acc_golden:
        mismatches.append("output accumulator (FP32 bits) differs")
    if complete != total:
        mismatches.append(f"cycle count: RTL {complete}, golden {total}")
    if mon.last_cycle > total:
        mismatches.append(f"a datapath result came at emulated cycle {mon.last_cycle}, after the "
                          f"golden completion {total}")
    flags = DP_ERRORS.from_bits(dut.dp_error.value.to_unsigned())
    raised = [name for name, _ in DP_ERRORS if getattr(flags, name)]
    if raised:
        mismatches.append(f"datapath contract flags: {raised}")
    if dut.fault.value.to_unsigned():
        mismatches.append(f"controller fault {dut.fault.value}")
    vflags = VIOLATIONS.from_bits(dut.violations.value.to_unsigned())
    vraised = [name for name, _ in VIOLATIONS if getattr(vflags, name)]
    if vraised:
        mismatches.append(f"bank timing violations: {vraised}")

    result = {
        "bit_exact": out_bits == want_out and mon.scores == want_scores
        and mon.probs == want_probs and (acc_golden is None or out_acc == acc_golden),
        "cycles_equal": complete == total and issues_equal,
        "issues_equal": issues_equal,
        "rtl_cycles": complete, "golden_cycles": total, "last_result_cycle": mon.last_cycle,
        "output_rtl": out_bits, "output_golden": want_out,
        "score_beats": len(mon.scores), "prob_beats": len(mon.probs),
        "mismatches": mismatches,
    }
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, result_path)
    assert not mismatches, f"RTL differs from the golden model ({label}): " + "; ".join(mismatches)
    dut._log.info("bit-exact, %d cycles = golden (%d score beats, %d probability beats)",
                  complete, len(mon.scores), len(mon.probs))

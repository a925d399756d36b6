"""cocotb testbench of the attention channel (:class:`starc_hw.attention_sim.AttentionSim`): one
decode step, end to end, against the golden model.

Run through :func:`starc_sim.cosim.run_scenario` (which writes the bundle and sets the
environment). Two tests, one checker:

``scenario`` (the fast path: no testbench code on any clock)
    1. the memory image goes into the bank memories by simulator access (``STARC_TB_LOAD =
       backdoor``), or through WR commands streamed from the harness's memories
       (``STARC_TB_LOAD = wr``: every issue cycle of the load checked against the golden schedule
       of the load program, then ``restart``: time and datapath state to zero, storage kept);
    2. the step program and its query beats go into the harness's stimulus memories (one word
       per clock through ``ld_*``), ``start``; the harness streams them with seeded idle cycles
       and backpressure (``STARC_TB_IDLE``, ``STARC_TB_BACKPRESSURE``) and captures every issued
       command, score beat and probability beat; the test waits for ``done`` (every expected
       command and beat, the datapath idle) in chunks of simulated time, writing the progress;
    3. the captures are read back (``rd_*``) and checked.

``scenario_host`` (a host on every clock)
    The harness's ``host`` mode: Python stream drivers and monitors (``starc_sim.streams``) on
    the channel's ports every clock, the image through WR commands. Slower by an order of
    magnitude; kept as the check that the channel works with an external host, and as the
    baseline of bench/bench_cosim.py.

The checks, against the golden model: every issue (command and cycle), every score beat entering
the softmax buffer (group, valid mask, FP32 bits), every probability beat an MVGB delivers (group,
FP16 bits), the output (FP16 bits and the accumulator), the cycle count (``complete`` = the
golden total), that every datapath result came by the golden completion cycle, and that no
contract flag, controller fault or bank timing violation was raised.

It writes ``STARC_TB_RESULT`` (JSON) before asserting, so a caller can report a disagreement.
``STARC_TB_PERTURB`` (``output`` / ``cycles`` / ``score``) corrupts one golden value first: the
scoreboard must then fail (tests/rtl/test_rtl_attention.py checks that it does).
"""

from __future__ import annotations

import functools
import json
import os
import random
import time
from typing import Any

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import (
    ClockCycles,
    Event,
    FallingEdge,
    First,
    ReadOnly,
    RisingEdge,
    Timer,
    with_timeout,
)
from starc.isa import Op, encode

from starc_sim.cosim import ModelSpec, _words, harness_constants
from starc_sim.scoreboard import Issued, IssueScoreboard, decode_issue
from starc_sim.streams import CLOCK_NS, StreamSink, StreamSource, start_and_reset

#: Simulated clocks between two progress reports of ``scenario`` (one Python wake-up each).
PROGRESS_CLOCKS = 20000

Score = tuple  # group, valid mask, FP32 bits per slot (, head: a model of several heads)
Prob = tuple   # group, FP16 bits per slot (, head)


@functools.lru_cache(maxsize=1)
def _hw() -> dict[str, Any]:
    """The gateware's flag fields and memory selectors, from ``STARC_TB_HW`` (set by the host,
    so that the simulator's Python does not import Amaranth: about a second per run), else
    computed here."""
    text = os.environ.get("STARC_TB_HW", "")
    return json.loads(text) if text else harness_constants()


def _raised(value: int, fields: list[list[Any]]) -> list[str]:
    """Names of the flag fields ``[name, offset, width]`` that are non-zero in ``value``."""
    return [str(n) for n, off, w in fields if (value >> int(off)) & ((1 << int(w)) - 1)]


def _spec() -> ModelSpec:
    return ModelSpec(**json.loads(os.environ["STARC_TB_SPEC"]))


def _expected(full: np.ndarray, issue: np.ndarray, inserted: np.ndarray,
              rule: np.ndarray) -> list[Issued]:
    """The golden issues: command, cycle, inserted, binding rule."""
    return [Issued(encode(c), int(t), bool(ins), int(r))
            for c, t, ins, r in zip(full, issue.tolist(), inserted.tolist(), rule.tolist(),
                                    strict=True)]


def _data_beats(prog: np.ndarray, wdata: np.ndarray) -> list[int]:
    words = _words(wdata)
    return [words[int(c["arg"])] for c in prog if int(c["op"]) in (Op.WR, Op.WRGB)]


def _split(v: int, width: int, n: int) -> list[int]:
    mask = (1 << width) - 1
    return [(v >> (width * i)) & mask for i in range(n)]


class BeatFormat:
    """Unpacks the channel's ``score_beat`` ({group, mask, scores[, head]}) and ``prob_beat``
    ({group, set, slot, probs[, head]}) words, LSB first. ``heads`` > 1: the beats end with the
    head (docs/multihead.md), and the tuples carry it last."""

    def __init__(self, score_width: int, prob_width: int, slots: int, heads: int = 1) -> None:
        self.S = slots
        self.hbits = (heads - 1).bit_length()
        self.gbits = score_width - slots - 32 * slots - self.hbits
        self.probs_at = prob_width - 16 * slots - self.hbits

    def score(self, w: int) -> Score:
        S, gb = self.S, self.gbits
        out = (w & ((1 << gb) - 1), (w >> gb) & ((1 << S) - 1), _split(w >> (gb + S), 32, S))
        return out + ((w >> (gb + S + 32 * S),) if self.hbits else ())

    def prob(self, w: int) -> Prob:
        out = (w & ((1 << self.gbits) - 1), _split(w >> self.probs_at, 16, self.S))
        return out + ((w >> (self.probs_at + 16 * self.S),) if self.hbits else ())


class Monitor:
    """Samples the datapath strobes every clock (host mode; they cannot be stalled)."""

    def __init__(self, dut: Any, fmt: BeatFormat) -> None:
        self.dut = dut
        self.fmt = fmt
        self.scores: list[Score] = []
        self.probs: list[Prob] = []
        self.last_cycle = 0      # emulated cycle of the last datapath activity
        self.active = False
        self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            await ReadOnly()
            if not self.active:
                continue
            cyc = dut.cycle.value.to_unsigned()
            if dut.busy.value == 1 or dut.score_valid.value == 1 or dut.prob_valid.value == 1:
                self.last_cycle = max(self.last_cycle, cyc)
            if dut.score_valid.value == 1:
                self.scores.append(self.fmt.score(dut.score_beat.value.to_unsigned()))
            if dut.prob_valid.value == 1:
                self.probs.append(self.fmt.prob(dut.prob_beat.value.to_unsigned()))


class Context:
    """What both tests share: the bundle, the expectations, the label with the seed."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.spec = _spec()
        self.cfg = self.spec.cfg
        self.bundle = np.load(os.environ["STARC_TB_BUNDLE"])
        self.result_path = os.environ["STARC_TB_RESULT"]
        self.progress_path = os.environ.get("STARC_TB_PROGRESS", "")
        self.idle = float(os.environ.get("STARC_TB_IDLE", "0") or 0)
        self.bp = float(os.environ.get("STARC_TB_BACKPRESSURE", "0") or 0)
        self.perturb = os.environ.get("STARC_TB_PERTURB", "")
        self.seed = int(cocotb.RANDOM_SEED)
        self.label = f"seed {self.seed} (COCOTB_RANDOM_SEED={os.environ.get('COCOTB_RANDOM_SEED')})"
        self.fmt = BeatFormat(len(dut.score_beat), len(dut.prob_beat),
                              self.cfg.tokens_per_bank_row(), self.spec.heads)
        self.total = int(self.bundle["total"]) + (self.perturb == "cycles")
        #: Where the test's time goes: per phase, wall seconds and simulated clocks.
        self.phases: dict[str, dict[str, float]] = {}
        self._phase: tuple[str, float, float] | None = None

    def phase(self, name: str | None) -> None:
        """End the current phase (adding its wall seconds and clocks) and start ``name``."""
        now, clk = time.perf_counter(), get_sim_time(unit="ns") / CLOCK_NS
        if self._phase is not None:
            what, t0, c0 = self._phase
            rec = self.phases.setdefault(what, {"seconds": 0.0, "clocks": 0.0})
            rec["seconds"] += now - t0
            rec["clocks"] += clk - c0
        self._phase = None if name is None else (name, now, clk)

    def step_expected(self) -> list[Issued]:
        b = self.bundle
        return _expected(b["full"], b["issue"], b["inserted"], b["rule"])

    def timeout_clocks(self, prog: np.ndarray, total: int) -> int:
        """Generous: every DRAM cycle plus host stalls of up to ~40 clocks per command."""
        return total + 40 * len(prog) + 2000

    def progress(self, what: str, **kw: Any) -> None:
        if not self.progress_path:
            return
        tmp = self.progress_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"phase": what, "time": time.time(), **kw}, f)
        os.replace(tmp, self.progress_path)


async def _reset(dut: Any, host: bool) -> None:
    await start_and_reset(dut, host=int(host), restart=0, start=0, ld_en=0, cmd__valid=0,
                          wdata__valid=0, issue__ready=0)


# ---- the fast path ---------------------------------------------------------------------------

def _bank_memories(dut: Any, n: int) -> list[Any]:
    """``BankArray``'s memories (public by the build's control file). Verilator registers only
    the scopes that hold public signals, so they are looked up by their path below the top."""
    out = []
    for i in range(n):
        mem = dut._get(f"dut.channel.banks.mem_{i}")
        if mem is None:
            raise RuntimeError(f"bank memory dut.channel.banks.mem_{i} is not visible: build the "
                               f"model with starc_sim.cosim.ATTENTION_VLT")
        out.append(mem)
    return out


def backdoor_image(dut: Any, ctx: Context) -> int:
    """Write the memory image straight into the bank memories (address ``row * columns + col``,
    as starc_hw.bank.BankArray stores it). Returns the words written."""
    b, cfg = ctx.bundle, ctx.cfg
    C, BPG = cfg.org.columns_per_row, cfg.org.banks_per_group
    mems = _bank_memories(dut, cfg.org.banks_per_channel)
    rows = ctx.spec.rows
    n = 0
    for (g, bank, r), data in zip(b["image_addr"].tolist(), b["image_data"], strict=True):
        mem = mems[g * BPG + bank]
        base = (r % rows) * C
        for c, word in enumerate(_words(data)):
            mem[base + c].value = word
            n += 1
    return n


async def load_words(dut: Any, sel: str, words: list[int]) -> None:
    """Write ``words`` into a stimulus memory of the harness, one per clock."""
    dut.ld_sel.value = int(_hw()["loads"][sel])
    for i, w in enumerate(words):
        dut.ld_addr.value = i
        dut.ld_data.value = w
        dut.ld_en.value = 1
        await FallingEdge(dut.clk)
    dut.ld_en.value = 0


async def read_captures(dut: Any, sel: str, n: int) -> list[int]:
    """The first ``n`` entries of a capture memory (its read port is combinational)."""
    dut.rd_sel.value = int(_hw()["captures"][sel])
    out = []
    for i in range(n):
        dut.rd_addr.value = i
        await Timer(1, "step")
        out.append(dut.rd_data.value.to_unsigned())
    return out


async def run_bulk(ctx: Context, prog: np.ndarray, wdata: np.ndarray, expected: list[Issued],
                   n_scores: int, n_probs: int, total: int, what: str, *, idle: float,
                   bp: float, seed: int) -> tuple[list[Issued], list[Score], list[Prob], int]:
    """Stream ``prog`` from the harness and wait for ``done``; return the captured issues,
    score beats, probability beats and the last datapath cycle."""
    dut = ctx.dut
    beats = _data_beats(prog, wdata)
    ctx.phase(f"{what}: stimulus load")
    await load_words(dut, "program", [encode(c) for c in prog])
    await load_words(dut, "wdata", beats)
    dut.n_cmds.value = len(prog)
    dut.n_wdata.value = len(beats)
    dut.idle.value = min(65535, round(idle * 65536))
    dut.backpressure.value = min(65535, round(bp * 65536))
    dut.seed.value = seed & 0xFFFFFFFF
    dut.expect_issues.value = len(expected)
    dut.expect_scores.value = n_scores
    dut.expect_probs.value = n_probs
    ctx.phase(f"{what}: run")
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    limit = ctx.timeout_clocks(prog, total)
    waited = 0
    t0 = time.perf_counter()
    while True:
        chunk = min(PROGRESS_CLOCKS, limit - waited)
        if chunk <= 0:
            raise AssertionError(f"{what}: timeout after {limit} clocks ({ctx.label}): "
                                 f"{dut.issues_seen.value.to_unsigned()} of {len(expected)} "
                                 f"commands issued, {dut.scores_seen.value.to_unsigned()} of "
                                 f"{n_scores} score beats, {dut.probs_seen.value.to_unsigned()} "
                                 f"of {n_probs} probability beats, busy {dut.busy.value}")
        fired = await First(RisingEdge(dut.done), Timer(chunk * CLOCK_NS, "ns"))
        if dut.done.value == 1:
            break
        waited += chunk
        del fired
        ctx.progress(what, cycle=dut.cycle.value.to_unsigned(), total=total,
                     seconds=time.perf_counter() - t0)
    await ReadOnly()
    ctx.phase(f"{what}: capture read-back")
    n_issues = dut.issues_seen.value.to_unsigned()
    ns, npb = dut.scores_seen.value.to_unsigned(), dut.probs_seen.value.to_unsigned()
    last = dut.last_cycle.value.to_unsigned()
    await FallingEdge(dut.clk)
    cw = ctx.spec.cycle_width
    issues = [decode_issue(w, cw) for w in await read_captures(dut, "issue", n_issues)]
    scores = [ctx.fmt.score(w) for w in await read_captures(dut, "score", ns)]
    probs = [ctx.fmt.prob(w) for w in await read_captures(dut, "prob", npb)]
    ctx.phase(None)
    return issues, scores, probs, last


@cocotb.test()
async def scenario(dut: Any) -> None:
    """The fast path (module doc)."""
    ctx = Context(dut)
    b = ctx.bundle
    mode = os.environ.get("STARC_TB_LOAD", "backdoor")
    dut._log.info("attention scenario: %d step commands, image by %s, idle %.2f, backpressure "
                  "%.2f, %s", len(b["prog"]), mode, ctx.idle, ctx.bp, ctx.label)
    await _reset(dut, host=False)
    rng = random.Random(ctx.seed)
    load_errors: list[str] = []
    if mode == "backdoor":
        ctx.phase("image load: backdoor")
        backdoor_image(dut, ctx)
        ctx.phase(None)
    elif mode == "wr":
        if len(b["load_prog"]):
            want = _expected(b["load_full"], b["load_issue"], b["load_inserted"],
                             b["load_rule"])
            issues, _, _, _ = await run_bulk(ctx, b["load_prog"], b["load_wdata"], want, 0, 0,
                                             int(b["load_total"]), "image load", idle=0.0,
                                             bp=0.0, seed=rng.getrandbits(32))
            sb = IssueScoreboard(want, seed=ctx.label)
            for it in issues:
                sb.observe(it)
            try:
                sb.check()
            except AssertionError as e:
                load_errors.append(f"image load issues: {e}")
            if dut.violations.value.to_unsigned() or dut.fault.value.to_unsigned():
                load_errors.append("bank timing violation or controller fault in the image load")
        dut.restart.value = 1
        await FallingEdge(dut.clk)
        dut.restart.value = 0
    else:
        raise ValueError(f"STARC_TB_LOAD must be backdoor or wr, not {mode!r}")
    want = ctx.step_expected()
    issues, scores, probs, last = await run_bulk(
        ctx, b["prog"], b["wdata"], want, len(b["score_group"]), len(b["prob_group"]),
        ctx.total, "step", idle=ctx.idle, bp=ctx.bp, seed=rng.getrandbits(32))
    sb = IssueScoreboard(want, seed=ctx.label)
    for it in issues:
        sb.observe(it)
    await ClockCycles(dut.clk, 2)
    await ReadOnly()
    finish(ctx, sb, scores, probs, last, load_errors)


# ---- the host-driven path --------------------------------------------------------------------

async def _run_program(dut: Any, cmd: StreamSource, wdata: StreamSource, prog: np.ndarray,
                       beats: list[int], sb: IssueScoreboard, done: Event, limit: int,
                       label: str) -> None:
    if not len(prog):
        return
    cmd.send(encode(c) for c in prog)
    wdata.send(beats)
    timeout_us = limit * CLOCK_NS / 1000
    try:
        await with_timeout(done.wait(), timeout_us, "us")
    except TimeoutError:
        sb.check()
        raise AssertionError(f"{label}: timeout after {timeout_us} us") from None


@cocotb.test()
async def scenario_host(dut: Any) -> None:
    """The host-driven run (module doc): four coroutines on every clock."""
    ctx = Context(dut)
    b, label = ctx.bundle, ctx.label
    dut._log.info("attention scenario (host): %d load + %d step commands, idle %.2f, "
                  "backpressure %.2f, %s", len(b["load_prog"]), len(b["prog"]), ctx.idle, ctx.bp,
                  label)
    await _reset(dut, host=True)
    rng = random.Random(ctx.seed)
    mon = Monitor(dut, ctx.fmt)
    holder: dict[str, Any] = {}
    done = Event()

    def on_issue(word: int) -> None:
        sb = holder["sb"]
        sb.observe(decode_issue(word, ctx.spec.cycle_width))
        if sb.done:
            done.set()

    # 1. the image, through WR commands, at full speed
    cmd = StreamSource(dut, "cmd", dut.clk, idle=0.0, rng=random.Random(ctx.seed + 1))
    wdata = StreamSource(dut, "wdata", dut.clk, idle=0.0, rng=random.Random(ctx.seed + 2))
    sink = StreamSink(dut, "issue", dut.clk, backpressure=0.0, rng=random.Random(ctx.seed + 3),
                      on_item=on_issue)
    holder["sb"] = IssueScoreboard(_expected(b["load_full"], b["load_issue"],
                                             b["load_inserted"], b["load_rule"]), seed=label)
    ctx.phase("image load: WR, host")
    await _run_program(dut, cmd, wdata, b["load_prog"],
                       _data_beats(b["load_prog"], b["load_wdata"]), holder["sb"], done,
                       ctx.timeout_clocks(b["load_prog"], int(b["load_total"])), "image load")
    await ClockCycles(dut.clk, 2)
    await ReadOnly()
    holder["sb"].check()
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
    holder["sb"] = IssueScoreboard(ctx.step_expected(), seed=label)
    cmd = StreamSource(dut, "cmd", dut.clk, idle=ctx.idle, rng=random.Random(rng.random()))
    wdata = StreamSource(dut, "wdata", dut.clk, idle=ctx.idle, rng=random.Random(rng.random()))
    sink = StreamSink(dut, "issue", dut.clk, backpressure=ctx.bp,
                      rng=random.Random(rng.random()), on_item=on_issue)
    mon.active = True
    ctx.phase("step: run, host")
    await _run_program(dut, cmd, wdata, b["prog"], _data_beats(b["prog"], b["wdata"]),
                       holder["sb"], done, ctx.timeout_clocks(b["prog"], ctx.total), "step")
    # let the datapath drain: every expected beat has arrived and nothing is in flight (bounded:
    # a missing beat fails below, it does not hang)
    n_scores, n_probs = len(b["score_group"]), len(b["prob_group"])
    for _ in range(ctx.total + 200):
        await FallingEdge(dut.clk)
        await ReadOnly()
        if dut.busy.value == 0 and len(mon.scores) >= n_scores and len(mon.probs) >= n_probs:
            break
    ctx.phase(None)
    await ClockCycles(dut.clk, 2)
    await ReadOnly()
    finish(ctx, holder["sb"], mon.scores, mon.probs, mon.last_cycle, [])


# ---- the checks ------------------------------------------------------------------------------

def finish(ctx: Context, sb: IssueScoreboard, scores: list[Score], probs: list[Prob],
           last_cycle: int, errors: list[str]) -> None:
    """Compare everything with the golden model, write the result file, then assert."""
    dut, b, spec = ctx.dut, ctx.bundle, ctx.spec
    d, total = spec.head_dim * spec.heads, ctx.total      # every head's output, head-major
    out_fp16 = dut.out_fp16.value.to_unsigned()
    out_bits = _split(out_fp16, 16, d)
    accw = len(dut.out_acc) // d
    out_acc = _split(dut.out_acc.value.to_unsigned(), accw, d)
    want_out = [int(x) for x in b["out_bits"]]
    if ctx.perturb == "output":
        want_out[0] ^= 1
    want_acc = [int(x) for x in b["out_acc"]]
    complete = dut.complete.value.to_unsigned()

    mismatches = list(errors)
    try:
        sb.check()
        issues_equal = True
    except AssertionError as e:
        issues_equal = False
        mismatches.append(f"issue: {e}")
    hs = spec.heads > 1      # the beats carry their head
    want_scores: list[Score] = [(int(g), int(mk), [int(x) for x in row]) + ((int(h),) if hs
                                                                            else ())
                                for g, mk, row, h in
                                zip(b["score_group"], b["score_mask"], b["score_bits"],
                                    b["score_head"], strict=True)]
    if ctx.perturb == "score" and want_scores:
        g, mk, row, *h = want_scores[0]
        want_scores[0] = (g, mk, [row[0] ^ 1, *row[1:]], *h)
    if scores != want_scores:
        n = min(len(scores), len(want_scores))
        first = next((i for i in range(n) if scores[i] != want_scores[i]), n)
        mismatches.append(f"score beats: {len(scores)} from the RTL, {len(want_scores)} "
                          f"golden; first difference at beat {first}")
    want_probs: list[Prob] = [(int(g), [int(x) for x in row]) + ((int(h),) if hs else ())
                              for g, row, h in zip(b["prob_group"], b["prob_bits"],
                                                   b["prob_head"], strict=True)]
    if probs != want_probs:
        n = min(len(probs), len(want_probs))
        first = next((i for i in range(n) if probs[i] != want_probs[i]), n)
        mismatches.append(f"probability beats: {len(probs)} from the RTL, "
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
    if last_cycle > total:
        mismatches.append(f"a datapath result came at emulated cycle {last_cycle}, after the "
                          f"golden completion {total}")
    raised = _raised(dut.dp_error.value.to_unsigned(), _hw()["dp_errors"])
    if raised:
        mismatches.append(f"datapath contract flags: {raised}")
    if dut.fault.value.to_unsigned():
        mismatches.append(f"controller fault {dut.fault.value}")
    vraised = _raised(dut.violations.value.to_unsigned(), _hw()["violations"])
    if vraised:
        mismatches.append(f"bank timing violations: {vraised}")

    result = {
        "bit_exact": out_bits == want_out and scores == want_scores
        and probs == want_probs and (acc_golden is None or out_acc == acc_golden),
        "cycles_equal": complete == total and issues_equal,
        "issues_equal": issues_equal,
        "rtl_cycles": complete, "golden_cycles": total, "last_result_cycle": last_cycle,
        # head 0's output; every head's (head-major) with a model of several heads
        "output_rtl": out_bits[:spec.head_dim], "output_golden": want_out[:spec.head_dim],
        "outputs_rtl": out_bits, "outputs_golden": want_out,
        "score_beats": len(scores), "prob_beats": len(probs),
        "mismatches": mismatches, "phases": ctx.phases,
    }
    tmp = ctx.result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, ctx.result_path)
    assert not mismatches, f"RTL differs from the golden model ({ctx.label}): " + \
        "; ".join(mismatches)
    dut._log.info("bit-exact, %d cycles = golden (%d score beats, %d probability beats)",
                  complete, len(scores), len(probs))


# ---- a program without the datapath check --------------------------------------------------

@cocotb.test()
async def program(dut: Any) -> None:
    """A program (``STARC_TB_BUNDLE``: ``prog``, ``wdata``, the golden schedule and the bank
    checker's expected flags) streamed from the harness: every issue, the cycle count, no fault,
    and the bank timing flags the Python model predicts. For programs whose datapath effects
    are not modelled (random command mixes, ``starc rtl regress``)."""
    ctx = Context(dut)
    b = ctx.bundle
    await _reset(dut, host=False)
    want = _expected(b["full"], b["issue"], b["inserted"], b["rule"])
    issues, _, _, _ = await run_bulk(ctx, b["prog"], b["wdata"], want, 0, 0, ctx.total,
                                     "program", idle=ctx.idle, bp=ctx.bp,
                                     seed=random.Random(ctx.seed).getrandbits(32))
    sb = IssueScoreboard(want, seed=ctx.label)
    for it in issues:
        sb.observe(it)
    await ClockCycles(dut.clk, 2)
    await ReadOnly()
    mismatches = []
    try:
        sb.check()
    except AssertionError as e:
        mismatches.append(f"issue: {e}")
    complete = dut.complete.value.to_unsigned()
    if complete != ctx.total:
        mismatches.append(f"cycle count: RTL {complete}, golden {ctx.total}")
    if dut.fault.value.to_unsigned():
        mismatches.append(f"controller fault {dut.fault.value}")
    got = sorted(_raised(dut.violations.value.to_unsigned(), _hw()["violations"]))
    want_flags = sorted(json.loads(str(b["violations"])))
    if got != want_flags:
        mismatches.append(f"bank checker flagged {got}, its model {want_flags}")
    result = {"bit_exact": True, "cycles_equal": complete == ctx.total and not mismatches,
              "issues_equal": not any(m.startswith("issue") for m in mismatches),
              "rtl_cycles": complete, "golden_cycles": ctx.total, "mismatches": mismatches}
    tmp = ctx.result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, ctx.result_path)
    assert not mismatches, f"RTL differs from the golden model ({ctx.label}): " + \
        "; ".join(mismatches)

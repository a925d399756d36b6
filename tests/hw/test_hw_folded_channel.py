# amaranth: UnusedElaboratable=no
"""starc_hw.folded.channel under amaranth.sim: a compiled KV cache loaded through WR commands and
a decode step run on the FPGA-shaped attention channel at several folds and lanes per clock;
every issue cycle equals starc.golden.timing.schedule, the output starc.golden.functional's bit
for bit, no datapath flag; the emulated clock advances at most once per `fold` clocks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from _simbench import Bench
from amaranth.sim import SimulatorContext
from starc.golden import functional, timing
from starc.golden.programs import dense_program
from starc.isa import Op, encode
from starc_hw.folded.channel import EmulatedClock, FoldedAttentionChannel
from starc_hw.sizes import size

SEED = 7373
SIZE = size("pim-tiny")
CFG = SIZE.config()
_benches: dict[tuple[int, int], Bench] = {}


def bench(fold: int, lpc: int) -> Bench:
    if (fold, lpc) not in _benches:
        _benches[fold, lpc] = Bench(FoldedAttentionChannel(
            cfg=CFG, head_dim=SIZE.head_dim, lanes_per_clock=lpc, fold=fold, rows=SIZE.rows,
            max_entries=SIZE.max_entries, cycle_width=32))
    return _benches[fold, lpc]


@dataclass
class Run:
    issues: list[tuple[int, int, int]] = field(default_factory=list)   # (word, cycle, inserted)
    clocks: int = 0
    complete: int = 0
    out: list[int] = field(default_factory=list)
    out_acc: list[int] = field(default_factory=list)
    dp_error: int = 0
    violations: int = 0
    fault: int = 0
    stalls: int = 0


def step_inputs(tokens: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """A seeded synthetic KV cache compiled for the size (dense layout): image, step program,
    query words."""
    from starc.compiler import compile as cc
    from starc.kv import synthetic_kv

    d = SIZE.head_dim
    cache = synthetic_kv(n_layers=1, n_q_heads=1, n_kv_heads=1, head_dim=d,
                         prefill_len=tokens - 1, decode_steps=1, seed=seed)
    compiled = cc.compile_kv(cache, CFG, cc.CompileOptions(mode="dense"))
    addr, rows = compiled.image()
    image = {(int(g), int(b), int(r)): rows[i]
             for i, (c, g, b, r) in enumerate(addr.tolist()) if c == 0}
    hm = compiled.head(0, 0)
    q = (cache.q[0][0, 0].astype(np.float32) / np.sqrt(d)).astype(np.float16)
    wdata = q.view(np.uint16).reshape(-1, CFG.org.elements_per_column)
    prog = dense_program(CFG, tokens, d, value_row_base=hm.row_base + hm.n_krows)
    return image, prog, wdata


def columns(rows: np.ndarray) -> list[int]:
    return [int.from_bytes(r.astype("<u2").tobytes(), "little") for r in rows]


def drive(fold: int, lpc: int, programs: list[tuple[np.ndarray, np.ndarray]], *,
          seed: int, idle: float = 0.1, backpressure: float = 0.1) -> Run:
    """Run each program (``restart`` between them) with random host idles and issue
    backpressure; return what the last one did."""
    dut = bench(fold, lpc).dut
    rng = np.random.default_rng(seed)
    run = Run()

    async def job(ctx: SimulatorContext) -> None:
        last_cycle = None
        for k, (prog, wdata) in enumerate(programs):
            if k:
                ctx.set(dut.restart, 1)
                await ctx.tick()
                ctx.set(dut.restart, 0)
            words = [encode(c) for c in prog]
            beats = columns(np.array([wdata[int(c["arg"])] for c in prog
                                      if int(c["op"]) in (Op.WR, Op.WRGB)]).reshape(
                -1, CFG.pu.lanes)) if len(wdata) else []
            sent = taken = 0
            run.issues, run.clocks, last_cycle = [], 0, None
            for clock in range(400_000):
                host = rng.random() >= idle
                ctx.set(dut.cmd.valid, sent < len(words) and host)
                if sent < len(words):
                    ctx.set(dut.cmd.payload.as_value(), words[sent])
                ctx.set(dut.wdata.valid, taken < len(beats) and host)
                if taken < len(beats):
                    ctx.set(dut.wdata.payload, beats[taken])
                ctx.set(dut.issue.ready, rng.random() >= backpressure)
                _, _, cr, cv, wr, wv, iv, ir, ip, cyc = await ctx.tick().sample(
                    dut.cmd.ready, dut.cmd.valid, dut.wdata.ready, dut.wdata.valid,
                    dut.issue.valid, dut.issue.ready, dut.issue.payload, dut.cycle)
                sent += bool(cr and cv)
                taken += bool(wr and wv)
                if iv and ir:
                    run.issues.append((ip.cmd.as_bits(), int(ip.cycle), int(ip.inserted)))
                # the emulated clock never advances by more than one per `fold` clocks
                if last_cycle is not None and cyc != last_cycle:
                    assert cyc == last_cycle + 1, f"seed {seed}: cycle jumped"
                last_cycle = cyc
                run.clocks = clock + 1
                done = sent == len(words) and not ctx.get(dut.busy) \
                    and len([x for x in run.issues if not x[2]]) == len(words)
                if done:
                    break
            else:
                raise AssertionError(f"seed {seed}: program {k} did not finish")
        run.complete = ctx.get(dut.complete)
        run.out = [ctx.get(dut.out_fp16[i]) for i in range(SIZE.head_dim)]
        for i in range(SIZE.head_dim):
            ctx.set(dut.out_addr, i)
            await ctx.tick()
            run.out_acc.append(ctx.get(dut.out_data))
        run.dp_error = ctx.get(dut.dp_error.as_value())
        run.violations = ctx.get(dut.violation_count)
        run.fault = int(ctx.get(dut.fault).value)
        run.stalls = ctx.get(dut.stalls)

    bench(fold, lpc).run(job)
    return run


@pytest.mark.parametrize(("fold", "lpc"), [(2, 1), pytest.param(1, 4, marks=pytest.mark.slow)])
def test_decode_step(fold: int, lpc: int) -> None:
    from starc_sim.cosim import load_program

    image, prog, wdata = step_inputs(48, SEED)
    load, load_data = load_program(image, CFG)
    # the step twice: a restart must leave nothing of the first in the second
    run = drive(fold, lpc, [(load, load_data), (prog, wdata), (prog, wdata)], seed=SEED + fold)
    sched = timing.schedule(prog, CFG)
    golden = [(encode(c), int(t), int(x)) for c, t, x in
              zip(sched.program, sched.issue.tolist(), sched.inserted.tolist(), strict=True)]
    assert run.issues == golden, f"seed {SEED}: the issue trace differs from the golden schedule"
    assert run.complete == sched.total_cycles
    res = functional.execute(prog, wdata, image, CFG, SIZE.head_dim)
    assert run.out == res.output_bits.tolist(), f"seed {SEED}: output differs"
    assert run.out_acc == res.output_acc.tolist(), f"seed {SEED}: accumulator differs"
    assert (run.dp_error, run.violations, run.fault) == (0, 0, 0)
    # the emulated clock: at least `fold` clocks per DRAM cycle
    assert run.clocks >= fold * sched.total_cycles


def test_emulated_clock() -> None:
    dut = EmulatedClock(fold=3)
    ticks: list[tuple[int, int]] = []

    async def job(ctx: SimulatorContext) -> None:
        for _ in range(9):
            ticks.append((ctx.get(dut.tick), ctx.get(dut.tick_q)))
            await ctx.tick()

    Bench(dut).run(job)
    assert [t for t, _ in ticks] == [1, 0, 0] * 3
    assert [q for _, q in ticks][1:] == [1, 0, 0] * 2 + [1, 0]
    with pytest.raises(ValueError, match="Fold must be a positive integer, not 0"):
        EmulatedClock(fold=0)

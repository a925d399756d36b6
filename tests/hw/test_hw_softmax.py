# amaranth: UnusedElaboratable=no
"""starc_hw.softmax.SoftmaxUnit in amaranth.sim: probabilities bit-exact with
starc.numerics.softmax, first read-out exactly sfm_cycles(n) after SFM."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from _simbench import Bench
from amaranth.hdl import Cat, ClockDomain, DomainRenamer, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from amaranth.sim import SimulatorContext
from starc import config
from starc import numerics as nm
from starc.golden.timing import sfm_cycles
from starc.numerics import FP16, FP32
from starc_hw.attention import falling_edge_domain, gate_clock
from starc_hw.softmax import MIN_LATENCY, SoftmaxUnit

SEED = 5150


def make(lanes: int, latency: int, entries: int, beats: int) -> SoftmaxUnit:
    cfg = config.load(overrides={"pu.sfm_lanes": lanes, "pu.sfm_latency": latency})
    return SoftmaxUnit(cfg=cfg, entries=entries, beats=beats)


class GatedTwin(wiring.Component):
    """Two copies of a unit on the same inputs: the ports are the free-running copy's; the other
    runs on a clock gated by its own ``active`` (latched on the falling edge, as
    ``AttentionChannel(clock_gating=True)`` gates it). ``differ`` (sticky) flags any cycle in
    which an output of the two differs (the probabilities only where ``rd.valid``); ``off``
    counts the cycles the gated copy's clock was off."""

    def __init__(self, unit: Callable[[], SoftmaxUnit]) -> None:
        self.free, self.gated = unit(), unit()
        members = dict(self.free.signature.members)
        super().__init__({**members, "differ": Out(1), "off": Out(16)})

    @property
    def lanes(self) -> int:
        return self.free.lanes

    def cycles(self, n: int) -> int:
        return self.free.cycles(n)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        free, gated = self.free, self.gated
        m.submodules.free = free
        m.submodules.gated = DomainRenamer("g")(gated)
        # the attention channel's own gate (starc_hw.attention.gate_clock), open until the
        # first falling edge latches the enable, as the channel's softmax gate is
        falling_edge_domain(m)
        m.domains.g = ClockDomain(local=True)
        en = gate_clock(m, "g", gated.active | ResetSignal(), name="en", init=1, reset=True)
        for unit in (free, gated):
            m.d.comb += [unit.wr.valid.eq(self.wr.valid), unit.wr.payload.eq(self.wr.payload),
                         unit.start.valid.eq(self.start.valid),
                         unit.start.payload.eq(self.start.payload),
                         unit.rd.ready.eq(self.rd.ready)]
        m.d.comb += [self.wr.ready.eq(free.wr.ready), self.start.ready.eq(free.start.ready),
                     self.rd.valid.eq(free.rd.valid), self.rd.payload.eq(free.rd.payload),
                     self.busy.eq(free.busy), self.error.eq(free.error),
                     self.active.eq(free.active)]
        outs = [(free.wr.ready, gated.wr.ready), (free.start.ready, gated.start.ready),
                (free.rd.valid, gated.rd.valid), (free.busy, gated.busy),
                (free.error, gated.error)]
        differ = Cat(*[a != b for a, b in outs]).any() | (
            free.rd.valid & (free.rd.payload.as_value() != gated.rd.payload.as_value()))
        m.d.sync += [self.differ.eq(self.differ | differ), self.off.eq(self.off + ~en)]
        return m


UNITS = {
    "l4": lambda: make(4, MIN_LATENCY, 64, 32),
    "l4-gated": lambda: GatedTwin(lambda: make(4, MIN_LATENCY, 64, 32)),
    "l4-slow": lambda: make(4, MIN_LATENCY + 13, 64, 32),
    "l16": lambda: make(16, MIN_LATENCY, 128, 16),
}
_benches: dict[str, Bench] = {}


def bench(name: str) -> Bench:
    if name not in _benches:
        _benches[name] = Bench(UNITS[name]())
    return _benches[name]


@dataclass
class Step:
    """One softmax: its beats (scores, mask, group) and the n given to SFM."""

    scores: np.ndarray                  # [beats, lanes] FP32 bits
    masks: list[int]
    tags: list[int]
    n: int | None = None
    t0: int = -1
    first_valid: int = -1
    popped: list[tuple[list[int], int]] = field(default_factory=list)

    @property
    def valid(self) -> np.ndarray:
        lanes = self.scores.shape[1]
        return np.array([[(m >> i) & 1 for i in range(lanes)] for m in self.masks], bool)

    @property
    def count(self) -> int:
        return int(self.valid.sum())


def random_step(rng: np.random.Generator, lanes: int, beats: int, *, scale: float = 4.0,
                density: float = 0.7) -> Step:
    scores = nm.to_bits(rng.normal(0, scale, (beats, lanes)), FP32)
    masks = [int(sum(1 << i for i in range(lanes) if rng.random() < density))
             for _ in range(beats)]
    return Step(scores, masks, [int(t) for t in rng.integers(0, 16, beats)])


def run(name: str, steps: list[Step], *, seed: int = SEED, ready: float = 1.0,
        limit: int = 3000, after: Callable[[SimulatorContext], Awaitable[None]] | None = None,
        offer: float = 1.0) -> dict[str, list[int]]:
    """Drive the steps cycle by cycle; return per-cycle busy / error traces. ``offer``: the
    share of cycles in which a waiting beat or SFM is offered (idle cycles between them);
    ``after`` runs one cycle after the last read-out."""
    dut = bench(name).dut
    rng = np.random.default_rng(seed)
    lanes = dut.lanes
    trace: dict[str, list[int]] = {"busy": [], "error": []}

    async def job(ctx: SimulatorContext) -> None:
        w_step, w_beat, s_step = 0, 0, 0        # next beat to write, next SFM to start
        r_step = 0                              # step being read out
        for cycle in range(limit):
            # the beats of a step are written once the previous step has started
            if w_step < len(steps) and w_step <= s_step and not steps[w_step].masks:
                w_step += 1
            now = offer >= 1.0 or bool(rng.random() < offer)
            writing = w_step < len(steps) and w_step <= s_step and now
            if writing:
                st = steps[w_step]
                ctx.set(dut.wr.payload, {"scores": [int(x) for x in st.scores[w_beat]],
                                         "mask": st.masks[w_beat], "tag": st.tags[w_beat]})
            ctx.set(dut.wr.valid, writing)
            starting = (s_step < len(steps) and w_step > s_step) and now
            if starting:
                st = steps[s_step]
                ctx.set(dut.start.payload, st.count if st.n is None else st.n)
            ctx.set(dut.start.valid, starting)
            take = bool(rng.random() < ready)
            ctx.set(dut.rd.ready, take)
            if writing and ctx.get(dut.wr.ready):
                w_beat += 1
                if w_beat == len(steps[w_step].masks):
                    w_step, w_beat = w_step + 1, 0
            if starting and ctx.get(dut.start.ready):
                steps[s_step].t0 = cycle
                s_step += 1
            while r_step < len(steps) and len(steps[r_step].popped) == len(steps[r_step].masks):
                r_step += 1
            if ctx.get(dut.rd.valid):
                st = steps[r_step]
                if st.first_valid < 0:
                    st.first_valid = cycle
                if take:
                    word = ctx.get(dut.rd.payload.as_value())
                    probs = [(word >> (16 * i)) & 0xFFFF for i in range(lanes)]
                    st.popped.append((probs, word >> (16 * lanes)))
            trace["busy"].append(ctx.get(dut.busy))
            trace["error"].append(ctx.get(dut.error))
            if r_step == len(steps) and s_step == len(steps):
                if after is not None:
                    await ctx.tick()
                    await after(ctx)
                return
            await ctx.tick()
        raise AssertionError(f"seed {seed}: timeout after {limit} cycles")

    bench(name).run(job)
    return trace


def check(steps: list[Step], unit: SoftmaxUnit, seed: int) -> None:
    for k, st in enumerate(steps):
        want = nm.softmax(st.scores.ravel(), st.valid.ravel()).p.reshape(st.scores.shape)
        got = np.array([p for p, _ in st.popped], dtype=np.uint16).reshape(st.scores.shape)
        assert [t for _, t in st.popped] == st.tags, f"seed {seed}: step {k} groups"
        bad = np.argwhere(got != want)
        assert not len(bad), (f"seed {seed}: step {k} beat {bad[0][0]} lane {bad[0][1]}: got "
                              f"{got[tuple(bad[0])]:#06x}, want {want[tuple(bad[0])]:#06x}")
        assert st.first_valid >= st.t0 + unit.cycles(st.count)


def test_cycles_match_the_contract() -> None:
    unit = bench("l4").dut
    cfg = config.load(overrides={"pu.sfm_lanes": 4, "pu.sfm_latency": MIN_LATENCY})
    for n in (0, 1, 4, 5, 64):
        assert unit.cycles(n) == sfm_cycles(cfg, n)


@pytest.mark.parametrize("name", ["l4", "l4-slow", "l16"])
def test_one_softmax(name: str) -> None:
    unit = bench(name).dut
    lanes = unit.lanes
    rng = np.random.default_rng(SEED)
    st = random_step(rng, lanes, 6 if lanes < 16 else 3)
    trace = run(name, [st])
    check([st], unit, SEED)
    # exact: read-out from t0 + sfm_cycles(n); busy in between
    assert st.first_valid == st.t0 + unit.cycles(st.count)
    assert trace["busy"][st.t0 + 1:st.first_valid] == [1] * (unit.cycles(st.count) - 1)
    assert trace["busy"][st.first_valid] == 0 and not any(trace["error"])


def test_back_to_back_with_backpressure() -> None:
    """Three softmaxes; each step's scores are written while the previous one runs; read-out
    ready 60 % of the cycles."""
    unit = bench("l4").dut
    for seed in (SEED, SEED + 1):
        rng = np.random.default_rng(seed)
        steps = [random_step(rng, 4, int(rng.integers(1, 12)), scale=float(s))
                 for s in (0.5, 8.0, 40.0)]
        run("l4", steps, seed=seed, ready=0.6)
        check(steps, unit, seed)
    # a step read out without waiting: first probabilities exactly on time
    rng = np.random.default_rng(SEED + 2)
    steps = [random_step(rng, 4, 3), random_step(rng, 4, 7)]
    run("l4", steps)
    check(steps, unit, SEED + 2)
    for st in steps:
        assert st.first_valid == st.t0 + unit.cycles(st.count)


def test_full_buffer() -> None:
    """Every entry valid: 16 rows, the largest softmax of the buffer."""
    unit = bench("l4").dut
    rng = np.random.default_rng(SEED)
    st = random_step(rng, 4, 16, density=1.0)
    run("l4", [st])
    check([st], unit, SEED)
    assert st.first_valid == st.t0 + unit.cycles(64)


def test_special_values() -> None:
    unit = bench("l4").dut
    f = lambda *v: nm.to_bits(np.array(v, dtype=np.float32), FP32)  # noqa: E731
    inf, nan = np.inf, np.nan
    steps = [
        Step(np.stack([f(1, nan, 2, 3), f(0, 0, 0, 0)]), [0b1111, 0b0011], [1, 2]),
        Step(np.stack([f(1, nan, 2, 3)]), [0b1101], [3]),                    # NaN not valid
        Step(np.stack([f(-inf, 4, -inf, 1e30), f(3e38, -3e38, -0.0, 0.0)]), [0b1111, 0b1111],
             [4, 5]),
        Step(np.stack([f(inf, 1, 2, 3)]), [0b0111], [6]),
        Step(np.stack([f(-inf, -inf, 0, 0)]), [0b0011], [7]),
        Step(np.stack([f(9, 9, 9, 9), f(1, 1, 1, 1)]), [0, 0], [8, 9]),        # n = 0
        Step(np.stack([f(5, 6, 7, 8)]), [0b0100], [10]),                       # one entry
        Step(f(-1e-40, -0.0, 1e-40, 2e-45).reshape(1, 4), [0b1111], [11]),    # subnormal scores
    ]
    run("l4", steps)
    check(steps, unit, SEED)
    assert steps[0].popped[0][0][:3] == [FP16.nan] * 3
    assert steps[5].popped[0][0] == [0] * 4
    assert steps[6].popped[0][0] == [0, 0, 0x3C00, 0]


def test_empty_softmax_and_error_flag() -> None:
    unit = bench("l4").dut
    rng = np.random.default_rng(SEED)
    empty = Step(np.zeros((0, 4), np.uint32), [], [])
    st = random_step(rng, 4, 2)
    trace = run("l4", [empty, st])
    assert trace["busy"][empty.t0 + 1:empty.t0 + unit.cycles(0)] == [1] * (unit.cycles(0) - 1)
    assert trace["busy"][empty.t0 + unit.cycles(0)] == 0
    check([st], unit, SEED)
    wrong = random_step(rng, 4, 2)
    wrong.n = wrong.count + 1
    trace = run("l4", [wrong])
    assert trace["error"][wrong.t0] == 0 and trace["error"][wrong.t0 + 1] == 1


def test_a_clock_gated_by_active_changes_no_output() -> None:
    """``active`` low means no register changes: a copy clocked only while it is high gives the
    same outputs, cycle for cycle, through back-to-back softmaxes with backpressure, an empty
    one, special values and a wrong ``n`` (and its clock is off for a good part of the time)."""
    twin = bench("l4-gated").dut
    for seed in (SEED, SEED + 1, SEED + 2):
        rng = np.random.default_rng(seed)
        empty = Step(np.zeros((0, 4), np.uint32), [], [])
        steps = [random_step(rng, 4, int(rng.integers(1, 12)), scale=float(s))
                 for s in (0.5, 8.0, 40.0)]
        wrong = random_step(rng, 4, 2)
        wrong.n = wrong.count + 1
        steps = [steps[0], empty, steps[1], wrong, steps[2]]
        seen: dict[str, int] = {}

        async def probe(ctx: SimulatorContext, seen: dict[str, int] = seen) -> None:
            seen["differ"] = ctx.get(twin.differ)
            seen["off"] = ctx.get(twin.off)

        run("l4-gated", steps, seed=seed, ready=0.5, after=probe, offer=0.1)
        check([st for st in steps if st is not wrong and st.masks], twin, seed)
        assert seen["differ"] == 0, f"seed {seed}: the gated copy's outputs differ"
        assert seen["off"] > 20, f"seed {seed}: the gated clock was off {seen['off']} cycles"


def test_parameter_messages() -> None:
    cfg = config.load(overrides={"pu.sfm_latency": MIN_LATENCY})
    with pytest.raises(ValueError, match=rf"^pu.sfm_latency must be at least {MIN_LATENCY} for "
                                         r"this softmax unit \(pipeline fill, reciprocal and "
                                         r"read-out\), not 16$"):
        SoftmaxUnit(cfg=config.load(overrides={"pu.sfm_latency": 16}), entries=64, beats=8)
    with pytest.raises(ValueError, match=r"^pu.sfm_passes must be 3 \(max; exp and sum; "
                                         r"normalise\) for this softmax unit, not 2$"):
        SoftmaxUnit(cfg=cfg.replace(pu=dataclasses.replace(cfg.pu, sfm_passes=2)), entries=64,
                    beats=8)
    with pytest.raises(ValueError, match=r"^Entries must be a positive power of two, not 48$"):
        SoftmaxUnit(cfg=cfg, entries=48, beats=8)
    with pytest.raises(ValueError, match=r"^Entries must be a multiple of pu.sfm_lanes \(16\), "
                                         r"not 8$"):
        SoftmaxUnit(cfg=cfg, entries=8, beats=8)
    with pytest.raises(ValueError, match=r"^Beats must be a positive power of two, not 0$"):
        SoftmaxUnit(cfg=cfg, entries=64, beats=0)
    lanes3 = config.load(overrides={"pu.sfm_latency": MIN_LATENCY, "pu.sfm_lanes": 3})
    with pytest.raises(ValueError, match=r"^pu.sfm_lanes must be a power of two of at least 2 "
                                         r"for this softmax unit, not 3$"):
        SoftmaxUnit(cfg=lanes3, entries=64, beats=8)
    with pytest.raises(TypeError, match=r"^Configuration must be a starc.config.Config"):
        SoftmaxUnit(cfg=None, entries=64, beats=8)  # type: ignore[arg-type]

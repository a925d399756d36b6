# amaranth: UnusedElaboratable=no
"""starc_hw.folded.softmax.FoldedSoftmax in amaranth.sim: one entry per clock in and out,
probabilities bit-exact with starc.numerics.softmax; several softmaxes back to back through the
two buffers, with backpressure on the read-out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from _simbench import Bench
from amaranth.sim import SimulatorContext
from starc import config
from starc import numerics as nm
from starc.numerics import FP32
from starc_hw.folded.softmax import FoldedSoftmax

SEED = 6262
SLOTS = 16
_benches: dict[int, Bench] = {}


def bench(entries: int = 64) -> Bench:
    if entries not in _benches:
        _benches[entries] = Bench(FoldedSoftmax(cfg=config.load(), entries=entries,
                                                beats=2 * entries // SLOTS))
    return _benches[entries]


@dataclass
class Step:
    """One softmax: its beats (scores, mask, group) and the n given to SFM."""

    scores: np.ndarray                  # [beats, 16] FP32 bits
    masks: list[int]
    tags: list[int]
    n: int | None = None
    t0: int = -1
    ready_at: int = -1
    popped: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def valid(self) -> np.ndarray:
        return np.array([[(m >> i) & 1 for i in range(SLOTS)] for m in self.masks], bool)

    @property
    def count(self) -> int:
        return int(self.valid.sum())


def random_step(rng: np.random.Generator, beats: int, *, scale: float = 4.0,
                density: float = 0.7) -> Step:
    scores = nm.to_bits(rng.normal(0, scale, (beats, SLOTS)), FP32)
    masks = [int(sum(1 << i for i in range(SLOTS) if rng.random() < density))
             for _ in range(beats)]
    return Step(scores, masks, [int(t) for t in rng.integers(0, 16, beats)])


def run(steps: list[Step], *, entries: int = 64, seed: int = SEED, ready: float = 1.0,
        limit: int = 6000) -> None:
    """Write each step's entries (one per clock), start it, read its probabilities out."""
    dut = bench(entries).dut
    rng = np.random.default_rng(seed)

    async def job(ctx: SimulatorContext) -> None:
        w_step, w_entry, s_step, r_step = 0, 0, 0, 0
        for cycle in range(limit):
            while w_step < len(steps) and not steps[w_step].masks:
                w_step += 1
            # a step's entries are written once the previous step has started
            writing = w_step < len(steps) and w_step <= s_step
            if writing:
                st = steps[w_step]
                beat, s = divmod(w_entry, SLOTS)
                ctx.set(dut.wr.payload, {"score": int(st.scores[beat, s]),
                                         "valid": (st.masks[beat] >> s) & 1, "index": s,
                                         "tag": st.tags[beat]})
            ctx.set(dut.wr.valid, writing)
            starting = s_step < len(steps) and (w_step > s_step)
            if starting:
                st = steps[s_step]
                ctx.set(dut.start.payload, st.count if st.n is None else st.n)
            ctx.set(dut.start.valid, starting)
            take = bool(rng.random() < ready)
            ctx.set(dut.rd.ready, take)
            if writing and ctx.get(dut.wr.ready):
                w_entry += 1
                if w_entry == SLOTS * len(steps[w_step].masks):
                    w_step, w_entry = w_step + 1, 0
            if starting and ctx.get(dut.start.ready):
                steps[s_step].t0 = cycle
                s_step += 1
            while r_step < len(steps) and len(steps[r_step].popped) == SLOTS * len(
                    steps[r_step].masks):
                r_step += 1
            if r_step < len(steps) and steps[r_step].ready_at < 0 and ctx.get(dut.ready):
                steps[r_step].ready_at = cycle
            if ctx.get(dut.rd.valid) and take:
                p = ctx.get(dut.rd.payload)
                steps[r_step].popped.append((p.prob, p.index, p.tag, p.last))
            if r_step == len(steps) and s_step == len(steps):
                assert not ctx.get(dut.error), f"seed {seed}: error flag"
                await ctx.tick()
                await ctx.tick()
                assert not ctx.get(dut.busy), f"seed {seed}: busy after the last read-out"
                return
            await ctx.tick()
        raise AssertionError(f"seed {seed}: timeout after {limit} cycles")

    bench(entries).run(job)


def check(steps: list[Step], seed: int) -> None:
    for k, st in enumerate(steps):
        want = nm.softmax(st.scores.ravel(), st.valid.ravel()).p
        got = np.array([p for p, *_ in st.popped], dtype=np.uint16)
        assert [i for _, i, _, _ in st.popped] == list(range(SLOTS)) * len(st.masks)
        assert [t for _, _, t, _ in st.popped] == [t for t in st.tags for _ in range(SLOTS)]
        assert [x for *_, x in st.popped] == [int(i == SLOTS - 1) for i in range(SLOTS)] * len(
            st.masks)
        bad = np.flatnonzero(got != want)
        assert not len(bad), (f"seed {seed}: step {k} entry {bad[0]}: got {got[bad[0]]:#06x}, "
                              f"want {want[bad[0]]:#06x}")


@pytest.mark.parametrize("beats", [1, 3])
def test_one_softmax(beats: int) -> None:
    rng = np.random.default_rng(SEED + beats)
    st = random_step(rng, beats)
    run([st])
    check([st], SEED)
    # the documented clock count, from start to the first probability readable
    assert st.ready_at - st.t0 == bench().dut.clocks(st.count)


def test_back_to_back_with_backpressure() -> None:
    """Four softmaxes: each step written while the previous one runs or waits to be read out;
    read-out ready 60 % of the clocks."""
    for seed in (SEED, SEED + 1):
        rng = np.random.default_rng(seed)
        steps = [random_step(rng, int(rng.integers(1, 5)), scale=float(s))
                 for s in (0.5, 8.0, 40.0, 1.0)]
        run(steps, seed=seed, ready=0.6)
        check(steps, seed)


def test_full_buffer() -> None:
    """Every entry valid: the largest softmax one buffer holds."""
    rng = np.random.default_rng(SEED)
    st = random_step(rng, 4, density=1.0)
    run([st])
    check([st], SEED)


def test_special_values() -> None:
    f = lambda *v: nm.to_bits(np.array(v * 4, dtype=np.float32), FP32)  # noqa: E731
    inf, nan = np.inf, np.nan
    steps = [
        Step(np.stack([f(1, nan, 2, 3), f(0, 0, 0, 0)]), [0xFFFF, 0x0033], [1, 2]),
        Step(np.stack([f(1, nan, 2, 3)]), [0xDDDD], [3]),                    # NaN not valid
        Step(np.stack([f(-inf, 4, -inf, 1e30), f(3e38, -3e38, -0.0, 0.0)]), [0xFFFF, 0xFFFF],
             [4, 5]),
        Step(np.stack([f(inf, 1, 2, 3)]), [0x7777], [6]),
        Step(np.stack([f(-inf, -inf, 0, 0)]), [0x3333], [7]),
        Step(np.stack([f(9, 9, 9, 9), f(1, 1, 1, 1)]), [0, 0], [8, 9]),        # n = 0
        Step(np.stack([f(-1e-40, 1e-45, -0.0, 0.0)]), [0xFFFF], [10]),         # subnormals
    ]
    run(steps)
    check(steps, SEED)
    dut = bench().dut
    assert steps[0].ready_at - steps[0].t0 == dut.clocks(steps[0].count, nan=True)
    assert steps[5].ready_at - steps[5].t0 == dut.clocks(0)


@pytest.mark.parametrize("n_given", [3, 0])
def test_wrong_count_is_flagged(n_given: int) -> None:
    dut = bench().dut
    rng = np.random.default_rng(SEED)
    st = random_step(rng, 1, density=1.0)
    st.n = n_given
    with pytest.raises(AssertionError, match="error flag"):
        run([st])
    assert dut is bench().dut

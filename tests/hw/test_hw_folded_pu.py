# amaranth: UnusedElaboratable=no
"""starc_hw.folded.pu.FoldedPU in amaranth.sim: random MACs at the highest rate the PU accepts,
query and probability writes, clears; every score and accumulator register read back and
compared with starc.numerics (the fixed pairwise tree, FP32 / FP16 accumulation)."""

from __future__ import annotations

import numpy as np
import pytest
from _fpref import interesting16
from _simbench import Bench
from amaranth.sim import SimulatorContext
from starc import config
from starc import numerics as nm
from starc_hw.folded.pu import SCORE, VALUE, FoldedPU, PUTiming

SEED = 5151
WRGB_RATE = 0.1


def make_cfg(preset: str = "attacc-hbm3-5.2", **over: object) -> config.Config:
    return config.load(preset, overrides=dict(over) or None)


CASES = {
    "attacc-l1": (make_cfg(), 1),
    "attacc-l2": (make_cfg(), 2),
    "attacc-l4": (make_cfg(), 4),
    "attacc-l16": (make_cfg(), 16),
    "samsung-fp16-l2": (make_cfg("samsung-hbm2-pim"), 2),
    "small-l1": (make_cfg(**{"organisation.column_bytes": 8, "pu.lanes": 4}), 1),
}
_benches: dict[str, Bench] = {}


def bench(name: str) -> Bench:
    if name not in _benches:
        cfg, lpc = CASES[name]
        _benches[name] = Bench(FoldedPU(cfg=cfg, lanes_per_clock=lpc))
    return _benches[name]


class Model:
    """The PU's registers as starc.numerics computes them, in program order."""

    def __init__(self, cfg: config.Config, bank_slice: int) -> None:
        self.ar = nm.arith(cfg.pu.acc_format)  # type: ignore[arg-type]
        ln, slots = cfg.pu.lanes, cfg.tokens_per_bank_row()
        self.bank_slice = bank_slice
        self.q = np.zeros((2, ln), np.uint16)
        self.probs = np.zeros((2, slots), np.uint16)
        self.scores = np.zeros((2, slots), self.ar.dtype)
        self.acc = np.zeros((2, ln), self.ar.dtype)

    def mac(self, data: np.ndarray, col: int, value: bool, buf: int) -> None:
        h, s, ar = col & 1, col >> 1, self.ar
        if value:
            scale = np.full(len(data), self.probs[buf, s], np.uint16).view(np.float16)
            self.acc[h] = ar.add(self.acc[h], ar.product(scale, data.view(np.float16)))
        else:
            dot = ar.tree(ar.product(data.view(np.float16), self.q[h].view(np.float16)))
            self.scores[buf, s] = ar.add(self.scores[buf, s], dot) if h else dot

    def bits(self) -> tuple[list[int], list[int]]:
        fmt = self.ar.fmt
        return ([int(x) for x in nm.to_bits(self.scores, fmt).ravel()],
                [int(x) for x in nm.to_bits(self.acc, fmt).ravel()])


def column_data(rng: np.random.Generator, lanes: int, special: float) -> np.ndarray:
    x = rng.normal(0, 1, lanes) * 2.0 ** rng.integers(-14, 8, lanes)
    d = x.astype(np.float16).view(np.uint16)
    pick = rng.random(lanes) < special
    d[pick] = interesting16(rng, lanes)[pick]
    return d


async def read_back(ctx: SimulatorContext, dut: FoldedPU, cfg: config.Config
                    ) -> tuple[list[int], list[int]]:
    """Every score and accumulator register through the move ports (the PU is idle)."""
    slots, lpc = cfg.tokens_per_bank_row(), dut.lanes_per_clock
    k = cfg.pu.lanes // lpc
    w = nm.arith(cfg.pu.acc_format).fmt.width  # type: ignore[arg-type]
    scores = []
    for buf in range(2):
        for s in range(slots):
            ctx.set(dut.score_addr, {"buf": buf, "slot": s})
            await ctx.tick()
            scores.append(ctx.get(dut.score_data))
    acc = []
    for h in range(2):
        for j in range(k):
            ctx.set(dut.acc_addr, {"h": h, "beat": j})
            await ctx.tick()
            word = ctx.get(dut.acc_data.as_value())
            acc += [(word >> (w * i)) & ((1 << w) - 1) for i in range(lpc)]
    return scores, acc


def random_run(name: str, seed: int, macs: int, *, special: float = 0.02, rate: float = 0.7,
               value_share: float = 0.4) -> None:
    cfg, lpc = CASES[name]
    dut = bench(name).dut
    rng = np.random.default_rng(seed)
    ln, slots = cfg.pu.lanes, cfg.tokens_per_bank_row()
    bank_slice = int(rng.integers(0, cfg.org.banks_per_group))
    model = Model(cfg, bank_slice)

    async def job(ctx: SimulatorContext) -> None:
        ctx.set(dut.bank_slice, bank_slice)
        done = checks = 0
        accept = ctx.get(dut.accept)        # for the next clock, as the channel sees it
        while done < macs:
            value = bool(rng.random() < value_share)
            mac = bool(rng.random() < rate) and bool(accept >> int(value) & 1)
            ctx.set(dut.mac.valid, mac)
            if mac:
                data = column_data(rng, ln, special)
                col = int(rng.integers(0, cfg.org.columns_per_row))
                buf = int(rng.integers(0, 2))
                ctx.set(dut.mac.payload, {"data": [int(x) for x in data], "col": col,
                                          "value": value, "buf": buf})
                model.mac(data, col, value, buf)
                done += 1
            wrgb = rng.random() < WRGB_RATE and bool(ctx.get(dut.qfree))
            ctx.set(dut.wrgb.valid, wrgb)
            if wrgb:
                chunk = int(rng.integers(0, 2 * cfg.org.banks_per_group))
                qdata = column_data(rng, ln, special)
                ctx.set(dut.wrgb.payload, {"chunk": chunk, "data": [int(x) for x in qdata]})
                if chunk >> 1 == bank_slice:
                    model.q[chunk & 1] = qdata
            prob = rng.random() < 0.2
            ctx.set(dut.prob.valid, prob)
            if prob:
                slot, index = int(rng.integers(0, 2)), int(rng.integers(0, slots))
                p = np.float16(rng.random()).view(np.uint16)
                ctx.set(dut.prob.payload, {"slot": slot, "index": index, "data": int(p)})
                model.probs[slot, index] = p     # a MAC strobing now read the old value
            accept = ctx.get(dut.accept)
            await ctx.tick()
            for sig in (dut.mac.valid, dut.wrgb.valid, dut.prob.valid):
                ctx.set(sig, 0)
            # now and then (and at the end): wait for idle, compare everything, maybe clear
            if done == macs or rng.random() < 0.01:
                for _ in range(200):
                    if ctx.get(dut.idle):
                        break
                    await ctx.tick()
                await ctx.tick()                  # idle: reads in the next clock see all
                assert ctx.get(dut.idle), f"seed {seed}, {name}: not idle after 200 clocks"
                got, want = await read_back(ctx, dut, cfg), model.bits()
                bad = [(what, i, hex(a), hex(b)) for what, g, x in zip(("score", "acc"), got,
                                                                        want, strict=True)
                       for i, (a, b) in enumerate(zip(g, x, strict=True)) if a != b]
                assert not bad, (f"seed {seed}, {name}: registers differ after {done} MACs "
                                 f"(register, index, PU, model): {bad[:4]}")
                checks += 1
                clear = int(rng.integers(0, 4))
                ctx.set(dut.acc_clear, clear)
                await ctx.tick()
                ctx.set(dut.acc_clear, 0)
                accept = ctx.get(dut.accept)
                for h in range(2):
                    if clear >> h & 1:
                        model.acc[h] = 0
        assert not ctx.get(dut.error), f"seed {seed}, {name}: the PU flagged a MAC too early"
        assert checks >= 1

    bench(name).run(job)


@pytest.mark.parametrize("name", list(CASES))
def test_random_operations(name: str) -> None:
    """Random MACs of both phases at up to the accepted rate, query / probability writes and
    clears: every register equals starc.numerics' (the pairwise tree over folded lanes)."""
    random_run(name, SEED, 60)


@pytest.mark.parametrize("name", ["attacc-l1", "attacc-l4"])
def test_back_to_back(name: str) -> None:
    """MACs at exactly the accepted rate (read-modify-write hazards at their closest), score
    MACs only, then value MACs only."""
    random_run(name, SEED + 1, 40, special=0.0, rate=1.0, value_share=0.0)
    random_run(name, SEED + 2, 40, special=0.0, rate=1.0, value_share=1.0)


def test_timing() -> None:
    t = PUTiming(lanes=16, lanes_per_clock=1, mul_latency=4, add_latency=6)
    # 16 beats; products from clock 6; 4 upper levels: the root 6 + 15 + 4 x 6 = 45
    assert (t.beats, t.product, t.root) == (16, 6, 45)
    # two adders: upper level 1, and the accumulate adder, which also takes upper levels 2 to 4
    # at their own clocks: level l's pair i when its second operand arrives,
    # 6 + 2^l (i + 1) - 1 + (l - 1) x 6, then the accumulate at the root
    assert t.adders == 2
    assert t.shared_adds == (15, 19, 23, 27, 25, 33, 39, 45)
    # the next score MAC's first shared add comes after this one's last: 45 - 15 + 1
    assert t.ii[SCORE][SCORE] == 31 and t.ii[VALUE][VALUE] == 16
    # the accumulate adder is busy late in a score MAC and early in a value MAC
    assert t.ii[SCORE][VALUE] == 45 - 6 + 1
    assert t.drain == (45 + 6 + 1, 6 + 6 + 16)
    full = PUTiming(lanes=16, lanes_per_clock=16, mul_latency=4, add_latency=6)
    assert full.beats == 1 and full.root == 6 + 4 * 6 and full.ii[SCORE][SCORE] == 8


def test_parameters() -> None:
    with pytest.raises(ValueError, match="Lanes per clock must be a power of two dividing "
                                         "pu.lanes \\(16\\), not 3"):
        FoldedPU(cfg=make_cfg(), lanes_per_clock=3)
    with pytest.raises(TypeError, match="Configuration must be a starc.config.Config"):
        FoldedPU(cfg="attacc", lanes_per_clock=1)  # type: ignore[arg-type]

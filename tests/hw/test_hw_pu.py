# amaranth: UnusedElaboratable=no
"""starc_hw.pu.BankPU in amaranth.sim: every register, every cycle, against starc.numerics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from _fpref import interesting16
from _simbench import Bench
from amaranth.sim import SimulatorContext
from starc import config
from starc import numerics as nm
from starc_hw.pu import BankPU, pipeline_stages

SEED = 4242
SMALL = {"organisation.column_bytes": 8, "pu.lanes": 4}   # 4 lanes: quick to build


def make_cfg(preset: str = "attacc-hbm3-5.2", **over: object) -> config.Config:
    return config.load(preset, overrides=dict(over) or None)


CONFIGS = {
    "attacc": make_cfg(),
    "samsung-fp16": make_cfg("samsung-hbm2-pim"),
    "small-p1": make_cfg(**SMALL, **{"pu.mac_pipeline": 1}),
    "small-p7": make_cfg(**SMALL, **{"pu.mac_pipeline": 7}),
    "small-fp16-p2": make_cfg(**SMALL, **{"pu.mac_pipeline": 2, "pu.acc_format": "fp16"}),
    "small-heads3": make_cfg(**SMALL, **{"pu.mac_pipeline": 3}),
}
#: heads per PU of a configuration (docs/multihead.md; default 1)
HEADS = {"small-heads3": 3}
_benches: dict[str, Bench] = {}


def bench(name: str) -> Bench:
    if name not in _benches:
        _benches[name] = Bench(BankPU(cfg=CONFIGS[name], heads=HEADS.get(name, 1)))
    return _benches[name]


@dataclass
class Model:
    """The PU's registers as starc.numerics computes them, updated at the cycle the gateware
    must update them."""

    cfg: config.Config
    bank_slice: int
    heads: int = 1
    pending: dict[int, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ar = nm.arith(self.cfg.pu.acc_format)  # type: ignore[arg-type]
        ln, slots = self.cfg.pu.lanes, self.cfg.tokens_per_bank_row()
        self.q = np.zeros((2 * self.heads, ln), np.uint16)     # [2 head + h]
        self.probs = np.zeros((2, slots), np.uint16)
        self.scores = np.zeros((2, slots), self.ar.dtype)
        self.acc = np.zeros((2 * self.heads, ln), self.ar.dtype)

    def mac(self, cycle: int, data: np.ndarray, col: int, value: bool, buf: int,
            head: int = 0) -> None:
        h, s, ar = col & 1, col >> 1, self.ar
        if value:
            scale = np.full(len(data), self.probs[buf, s], np.uint16).view(np.float16)
            prod = ar.product(scale, data.view(np.float16))
            self.pending[cycle + self.cfg.pu.mac_pipeline - 1] = ("acc", 2 * head + h, prod)
        else:
            dot = ar.tree(ar.product(data.view(np.float16),
                                     self.q[2 * head + h].view(np.float16)))
            self.pending[cycle + self.cfg.pu.mac_pipeline - 1] = ("score", h, buf, s, dot)

    def end_of_cycle(self, cycle: int) -> None:
        op = self.pending.pop(cycle, None)
        if op is None:
            return
        if op[0] == "acc":
            _, h, prod = op
            self.acc[h] = self.ar.add(self.acc[h], prod)
        else:
            _, h, buf, s, dot = op
            self.scores[buf, s] = self.ar.add(self.scores[buf, s], dot) if h else dot

    def bits(self) -> tuple[list[int], list[int]]:
        fmt = self.ar.fmt
        return ([int(x) for x in nm.to_bits(self.scores, fmt).ravel()],
                [int(x) for x in nm.to_bits(self.acc, fmt).ravel()])


def unpack(word: int, width: int, n: int) -> list[int]:
    return [(word >> (width * i)) & ((1 << width) - 1) for i in range(n)]


def column_data(rng: np.random.Generator, lanes: int, special: float) -> np.ndarray:
    x = rng.normal(0, 1, lanes) * 2.0 ** rng.integers(-14, 8, lanes)
    d = x.astype(np.float16).view(np.uint16)
    pick = rng.random(lanes) < special
    d[pick] = interesting16(rng, lanes)[pick]
    return d


def random_run(name: str, seed: int, cycles: int, *, special: float = 0.02,
               mac_rate: float = 0.7) -> None:
    cfg = CONFIGS[name]
    dut = bench(name).dut
    rng = np.random.default_rng(seed)
    ln, slots, P = cfg.pu.lanes, cfg.tokens_per_bank_row(), cfg.pu.mac_pipeline
    w = nm.arith(cfg.pu.acc_format).fmt.width  # type: ignore[arg-type]
    bank_slice = int(rng.integers(0, cfg.org.banks_per_group))
    H = HEADS.get(name, 1)
    model = Model(cfg, bank_slice, H)
    hf = (lambda v: {"head": v}) if H > 1 else (lambda v: {})
    value_busy_until = -1

    async def job(ctx: SimulatorContext) -> None:
        nonlocal value_busy_until
        ctx.set(dut.bank_slice, bank_slice)
        for cycle in range(cycles + P):
            scores = unpack(ctx.get(dut.scores.as_value()), w, 2 * slots)
            acc = unpack(ctx.get(dut.acc.as_value()), w, 2 * H * ln)
            want = model.bits()
            assert (scores, acc) == want, f"seed {seed}, {name}: cycle {cycle} registers differ"
            live = cycle < cycles
            # MAC
            mac = live and rng.random() < mac_rate
            ctx.set(dut.mac.valid, mac)
            if mac:
                data = column_data(rng, ln, special)
                col = int(rng.integers(0, cfg.org.columns_per_row))
                value, buf = bool(rng.random() < 0.4), int(rng.integers(0, 2))
                head = int(rng.integers(0, H))
                ctx.set(dut.mac.payload, {"data": [int(x) for x in data], "col": col,
                                          "value": value, "buf": buf, **hf(head)})
                model.mac(cycle, data, col, value, buf, head)
                if value:
                    value_busy_until = cycle + P - 1
            # GEMV buffer writes (seen by MACs from the next cycle on)
            wrgb = live and rng.random() < 0.15
            ctx.set(dut.wrgb.valid, wrgb)
            chunk, qdata = int(rng.integers(0, 2 * cfg.org.banks_per_group)), column_data(
                rng, ln, special)
            qhead = int(rng.integers(0, H))
            ctx.set(dut.wrgb.payload, {"chunk": chunk, "data": [int(x) for x in qdata],
                                       **hf(qhead)})
            prob = live and rng.random() < 0.15
            ctx.set(dut.prob.valid, prob)
            slot = int(rng.integers(0, 2))
            pdata = rng.random(slots).astype(np.float16).view(np.uint16)
            ctx.set(dut.prob.payload, {"slot": slot, "data": [int(x) for x in pdata]})
            # a value move clears a half, never while a value MAC is in its last stage
            clear = 0
            if live and rng.random() < 0.05 and value_busy_until < cycle:
                clear = int(rng.integers(1, 1 << (2 * H)))
            ctx.set(dut.acc_clear, clear)
            model.end_of_cycle(cycle)
            for h in range(2 * H):
                if clear >> h & 1:
                    model.acc[h] = 0
            if wrgb and chunk >> 1 == bank_slice:
                model.q[2 * qhead + (chunk & 1)] = qdata
            if prob:
                model.probs[slot] = pdata
            await ctx.tick()

    bench(name).run(job)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_operations(name: str) -> None:
    """Random MACs (both phases, both sets / slots, every column), query and probability writes
    and clears; the registers match the model in every cycle, so each MAC lands exactly
    ``pu.mac_pipeline`` cycles after its operands."""
    random_run(name, SEED, 100 if name.startswith("small") else 60)


def test_back_to_back_dense() -> None:
    """A MAC every cycle, no specials: the full-throughput case of MACBG streams."""
    random_run("attacc", SEED + 1, 40, special=0.0, mac_rate=1.0)


def test_latency_is_exact() -> None:
    """One score MAC into an empty PU: the register is 0 for P cycles, the dot product after."""
    cfg = CONFIGS["attacc"]
    dut = bench("attacc").dut
    seen: list[int] = []

    async def job(ctx: SimulatorContext) -> None:
        ctx.set(dut.bank_slice, 0)
        ctx.set(dut.wrgb.valid, 1)
        ctx.set(dut.wrgb.payload, {"chunk": 0, "data": [0x3C00] * cfg.pu.lanes})
        await ctx.tick()
        ctx.set(dut.wrgb.valid, 0)
        ctx.set(dut.mac.valid, 1)
        ctx.set(dut.mac.payload, {"data": [0x4000] * cfg.pu.lanes, "col": 6, "value": 0,
                                  "buf": 1})
        for _ in range(cfg.pu.mac_pipeline + 2):
            seen.append(ctx.get(dut.scores[1][3]))
            await ctx.tick()
            ctx.set(dut.mac.valid, 0)

    bench("attacc").run(job)
    P = cfg.pu.mac_pipeline
    assert seen == [0] * P + [0x42000000] * 2, seen        # 16 x (1 x 2) = 32.0


def test_pipeline_stages() -> None:
    assert pipeline_stages(6, 4) == [0, 0, 1, 2, 2, 3]
    assert pipeline_stages(6, 6) == [0, 1, 2, 3, 4, 5]
    assert pipeline_stages(6, 1) == [0] * 6
    assert pipeline_stages(4, 7) == [0, 1, 2, 6]


def test_parameter_message() -> None:
    with pytest.raises(TypeError, match=r"^Configuration must be a starc.config.Config, not "
                                        r"'attacc'$"):
        BankPU(cfg="attacc")  # type: ignore[arg-type]

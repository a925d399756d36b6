# amaranth: UnusedElaboratable=no
"""The clock-gated bank PU (``AttentionChannel(clock_gating=True)``: :class:`PUShell`
``registered``, its input registers and PU on the clock of :func:`gate_pu`) against the same
shell always clocked, in amaranth.sim: the same score and accumulator registers in every cycle,
through random beats of every kind, accumulator clears and idle gaps of every length (the gate
closes and opens again), with the gated clock off for a good part of the time. (That the
registered shell lands every result in the cycle the channel without gating does is checked by
every co-simulation test against the golden model.)"""

from __future__ import annotations

import numpy as np
import pytest
from _fpref import interesting16
from _simbench import Bench
from amaranth.hdl import ClockDomain, DomainRenamer, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from amaranth.sim import SimulatorContext
from starc import config
from starc_hw.attention import PUShell, falling_edge_domain, gate_pu

SEED = 31337
CONFIGS = {
    # 4 lanes (quick to simulate); the shortest pipeline gating allows, and a longer one
    "p2": {"organisation.column_bytes": 8, "pu.lanes": 4, "pu.mac_pipeline": 2},
    "p4": {"organisation.column_bytes": 8, "pu.lanes": 4, "pu.mac_pipeline": 4},
    "p3-fp16": {"organisation.column_bytes": 8, "pu.lanes": 4, "pu.mac_pipeline": 3,
                "pu.acc_format": "fp16"},
}


class GatedPUTwin(wiring.Component):
    """The registered shell always clocked (``free``) and clock-gated (``gated``) on the same
    inputs. ``differ`` (sticky) flags a cycle in which their scores or accumulators differ;
    ``off`` counts the cycles the gated clock was off."""

    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.free = PUShell(cfg=cfg, registered=True)
        self.gated = PUShell(cfg=cfg, registered=True)
        inputs = {n: m for n, m in self.free.signature.members.items()
                  if n not in PUShell.OUTPUTS}
        super().__init__({**inputs, "differ": Out(1), "off": Out(16)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        falling_edge_domain(m)
        m.domains.g = ClockDomain("g", local=True)
        m.submodules.free = free = self.free
        m.submodules.gated = gated = DomainRenamer("g")(self.gated)
        ports = {n: getattr(self, n) for n in self.signature.members
                 if n not in ("differ", "off")}
        for unit in (free, self.gated):
            m.d.comb += [getattr(unit, n).eq(v) for n, v in ports.items()]
        rst = Signal(reset_less=True)   # as the channel: the PU's reset one register later
        m.d.sync += rst.eq(ResetSignal())
        m.d.comb += ResetSignal("g").eq(rst)
        on = gate_pu(m, m, "pu", ports, ResetSignal(), rst, "g", self.cfg.pu.mac_pipeline)
        differ = ((free.scores.as_value() != self.gated.scores.as_value())
                  | (free.acc.as_value() != self.gated.acc.as_value()))
        m.d.sync += [self.differ.eq(self.differ | differ), self.off.eq(self.off + ~on)]
        return m


_benches: dict[str, Bench] = {}


def bench(name: str) -> Bench:
    if name not in _benches:
        _benches[name] = Bench(GatedPUTwin(config.load(overrides=CONFIGS[name])))
    return _benches[name]


def _stimulus(cfg: config.Config, rng: np.random.Generator, cycles: int) -> list[dict]:
    """Per cycle the inputs: one beat (MAC in either phase, query chunk, probabilities), an
    accumulator clear, or nothing; bursts and idle gaps of 0 to 3 x the pipeline, and now and
    then a clear alone between two gaps longer than the pipeline (the gate opens for the clear
    only). A clear never meets a value MAC still in the pipeline (BankPU's rule)."""
    lanes, slots = cfg.pu.lanes, cfg.tokens_per_bank_row()
    cols, bpg = cfg.org.columns_per_row, cfg.org.banks_per_group
    P = cfg.pu.mac_pipeline
    out: list[dict] = []
    last_value = -100
    while len(out) < cycles:
        for _ in range(int(rng.integers(1, 12))):            # a burst
            kind = rng.choice(["mac", "value", "value", "wrgb", "prob", "clear", "none"])
            t = len(out)
            d: dict = {}
            if kind in ("mac", "value"):
                d = {"mac_valid": 1, "mac": {
                    "data": [int(x) for x in interesting16(rng, lanes)],
                    "col": int(rng.integers(0, cols)), "value": int(kind == "value"),
                    "buf": int(rng.integers(0, 2))}}
                if kind == "value":
                    last_value = t
            elif kind == "wrgb":
                d = {"wrgb_valid": 1, "wrgb": {"chunk": int(rng.integers(0, 2 * bpg)),
                                               "data": [int(x) for x in interesting16(rng, lanes)]}}
            elif kind == "prob":
                d = {"prob_valid": 1, "prob": {"slot": int(rng.integers(0, 2)),
                                               "data": [int(x) for x in interesting16(rng, slots)]}}
            elif kind == "clear" and t - last_value > P + 1:
                d = {"acc_clear": int(rng.integers(1, 4))}
            out.append(d)
        out.extend({} for _ in range(int(rng.integers(0, 3 * P + 1))))   # a gap
        if rng.random() < 0.3:                                # a clear alone
            out.extend({} for _ in range(P + 2))
            out.append({"acc_clear": int(rng.integers(1, 4))})
            out.extend({} for _ in range(P + 2))
            last_value = -100
    return out[:cycles]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_gated_pu_equals_an_always_clocked_one(name: str) -> None:
    twin = bench(name).dut
    cfg = twin.cfg
    for seed in (SEED, SEED + 1):
        rng = np.random.default_rng(seed)
        stim = _stimulus(cfg, rng, 500)
        seen: dict[str, int] = {}

        async def job(ctx: SimulatorContext) -> None:
            ctx.set(twin.bank_slice, int(rng.integers(0, cfg.org.banks_per_group)))
            for d in stim:
                for port in ("mac_valid", "wrgb_valid", "prob_valid", "acc_clear"):
                    ctx.set(getattr(twin, port), d.get(port, 0))
                for port in ("mac", "wrgb", "prob"):
                    if port in d:
                        ctx.set(getattr(twin, port), d[port])
                await ctx.tick()
            await ctx.tick().repeat(3 * cfg.pu.mac_pipeline)
            seen["differ"], seen["off"] = ctx.get(twin.differ), ctx.get(twin.off)

        bench(name).run(job)
        assert seen["differ"] == 0, f"{name}, seed {seed}: the gated PU's registers differ"
        assert seen["off"] > 50, f"{name}, seed {seed}: the gated clock was off {seen['off']} " \
                                 "cycles only"

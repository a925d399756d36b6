"""Simulation harness of the FP units: every unit of :mod:`starc_hw.fp` the PUs and moves use,
side by side on shared operands, for checking at volume under Verilator
(``starc_sim.numerics_check``)."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from starc.numerics import FP16, FP32

from . import fp

__all__ = ["FPUnits"]


class FPUnits(wiring.Component):
    """The FP units on two FP16 and two FP32 operands, combinational.

    Members
    -------
    a16, b16 : In(16)
    a32, b32 : In(32)
    mul32 : Out(32)
        ``a16 * b16`` exact in FP32 (:func:`starc_hw.fp.mul16`, the PU multiplier).
    mul16 : Out(16)
        ``a16 * b16`` rounded once to FP16 (the multiplier of ``pu.acc_format = "fp16"``).
    add32, add16 : Out
        ``a32 + b32`` in FP32 and ``a16 + b16`` in FP16 (:func:`starc_hw.fp.add`).
    narrow : Out(16)
        ``a32`` rounded to FP16 (:func:`starc_hw.fp.narrow`).
    widen : Out(32)
        ``a16`` in FP32 (:func:`starc_hw.fp.widen`).
    """

    def __init__(self) -> None:
        super().__init__({"a16": In(16), "b16": In(16), "a32": In(32), "b32": In(32),
                          "mul32": Out(32), "mul16": Out(16), "add32": Out(32), "add16": Out(16),
                          "narrow": Out(16), "widen": Out(32)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        p = fp.mul16(m, self.a16, self.b16)
        m.d.comb += [
            self.mul32.eq(p),
            self.mul16.eq(fp.narrow(m, p)),
            self.add32.eq(fp.add(m, FP32, self.a32, self.b32)),
            self.add16.eq(fp.add(m, FP16, self.a16, self.b16)),
            self.narrow.eq(fp.narrow(m, self.a32)),
            self.widen.eq(fp.widen(m, self.a16)),
        ]
        return m

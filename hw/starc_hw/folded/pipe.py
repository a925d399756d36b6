"""Pipelined floating-point operations for the FPGA-shaped datapath: the units of
:mod:`starc_hw.fp` (bit-exact with :mod:`starc.numerics`) with a register after every step and
on the output, so that no clock holds more than one step of an FP32 add (docs/fpga.md measures
the result: one step per clock clears 50 MHz on the ECP5).

Every function adds logic to a module and returns a registered result that is valid exactly
``*_LATENCY`` clocks after its operands; nothing stalls (a pipeline of the folded datapath never
waits: the emulated clock does, docs/fpga.md).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value
from starc.numerics import FP32, FloatFormat

from .. import fp

__all__ = ["ADD_CUTS", "ADD_LATENCY", "MUL_CUTS", "NARROW_CUTS", "NARROW_LATENCY", "add",
           "delay", "mul", "mul_latency", "narrow", "reg"]

#: Registers inside the adder: after each of the first five of its six steps (order, align,
#: add, count, normalise | round).
ADD_CUTS = (1, 2, 3, 4, 5)
#: Registers inside the FP16 multiplier: after unpack, after the 11 x 11 product (the DSP
#: block's output register), after the leading-zero count.
MUL_CUTS = (1, 2, 3)
#: Registers inside FP32 -> FP16: after unpack, after the shift.
NARROW_CUTS = (1, 2)

#: Clocks from operands to the registered result.
ADD_LATENCY = len(ADD_CUTS) + 1
NARROW_LATENCY = len(NARROW_CUTS) + 1
_MUL_LATENCY = len(MUL_CUTS) + 1


def mul_latency(fmt: FloatFormat) -> int:
    """Clocks of :func:`mul` for the accumulation format (FP16 adds the rounding)."""
    return _MUL_LATENCY + (0 if fmt == FP32 else NARROW_LATENCY)


def reg(m: Module, v: Value, name: str, *, domain: str = "sync") -> Signal:
    """``v`` one clock later."""
    r = Signal(Value.cast(v).shape(), name=name)
    m.d[domain] += r.eq(v)
    return r


def delay(m: Module, v: Value, n: int, name: str) -> Value:
    """``v`` ``n`` clocks later (a shift register; ``n = 0``: ``v`` itself)."""
    for i in range(n):
        v = reg(m, v, f"{name}_d{i + 1}")
    return v


def add(m: Module, fmt: FloatFormat, a: Value, b: Value, name: str) -> Signal:
    """``a + b`` in ``fmt`` (:func:`starc_hw.fp.add`), :data:`ADD_LATENCY` clocks later."""
    return reg(m, fp.add(m, fmt, a, b, cuts=ADD_CUTS), name)


def narrow(m: Module, a: Value, name: str) -> Signal:
    """FP32 -> FP16 (:func:`starc_hw.fp.narrow`), :data:`NARROW_LATENCY` clocks later."""
    return reg(m, fp.narrow(m, a, cuts=NARROW_CUTS), name)


def mul(m: Module, fmt: FloatFormat, a: Value, b: Value, name: str) -> Signal:
    """FP16 x FP16 in the accumulation format ``fmt`` (exact FP32, or rounded once to FP16),
    :func:`mul_latency` clocks later."""
    p = reg(m, fp.mul16(m, a, b, cuts=MUL_CUTS), name)
    return p if fmt == FP32 else narrow(m, p, f"{name}_h")

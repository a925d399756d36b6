"""A tiny stream adder: proves the Amaranth -> Verilog -> Verilator -> cocotb flow end to end."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamAdder"]


class StreamAdder(wiring.Component):
    """Adds the two operands of each input transfer; one registered output per input.

    Members
    -------
    i : In(stream.Signature(StructLayout({"a": width, "b": width})))
        Operand pairs.
    o : Out(stream.Signature(width + 1))
        Sums, in input order, one cycle after the input transfer at the earliest.
    count : Out(32)
        Number of sums delivered so far (wraps).

    Latency 1 cycle; full throughput when ``o.ready`` stays high; ``o.valid`` never depends on
    ``o.ready``.
    """

    def __init__(self, *, width: int = 16) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
            raise TypeError(f"Width must be a positive integer, not {width!r}")
        self._width = width
        layout = data.StructLayout({"a": width, "b": width})
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(width + 1)),
            "count": Out(32),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        full = Signal()
        m.d.comb += [self.o.valid.eq(full), self.i.ready.eq(~full | self.o.ready)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [full.eq(0), self.count.eq(self.count + 1)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [full.eq(1), self.o.payload.eq(self.i.payload.a + self.i.payload.b)]
        return m

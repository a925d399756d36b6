"""Asynchronous serial port, 8N1: a receiver and a transmitter with ``lib.stream`` byte ports.

The bit period is ``divisor`` clock cycles (:func:`divisor_for` picks it from a clock frequency
and a baud rate). A frame is one start bit (0), eight data bits LSB first and one stop bit (1); the
line idles high. docs/fpga.md shows where the two blocks sit in the board top.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "UARTRx", "UARTTx", "divisor_for"]

#: Smallest bit period in clock cycles: the receiver needs a start-bit half period of two cycles.
MIN_DIVISOR = 4


def _check_divisor(divisor: object) -> int:
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"Divisor must be an integer of at least {MIN_DIVISOR}, not {divisor!r}")
    if divisor >= 1 << 24:
        raise ValueError(f"Divisor must be below 2**24, not {divisor!r}")
    return divisor


def divisor_for(clk_hz: float, baud: float, *, tolerance: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``, rounded to the nearest integer.

    Raises :class:`ValueError` when the rounding error of the bit period exceeds ``tolerance``
    (2 %: a receiver samples the stop bit 9.5 periods after the start edge, so the error budget
    of both ends together is about 5 %) or the divisor would be below :data:`MIN_DIVISOR`.
    """
    if not clk_hz > 0:
        raise ValueError(f"Clock frequency must be positive, not {clk_hz!r}")
    if not baud > 0:
        raise ValueError(f"Baud rate must be positive, not {baud!r}")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"Baud rate {baud:g} is too high for a {clk_hz:g} Hz clock: the bit "
                         f"period must be at least {MIN_DIVISOR} cycles")
    error = abs(clk_hz / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"Baud rate {baud:g} is {error:.1%} off with a divisor of {divisor} at "
                         f"{clk_hz:g} Hz (at most {tolerance:.0%} allowed)")
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Bit period in clock cycles (at least :data:`MIN_DIVISOR`).

    Members
    -------
    rx : In(1, init=1)
        The serial line (asynchronous to the clock: two synchronising flip-flops follow).
    o : Out(stream.Signature(8))
        Received bytes. A byte is offered from the middle of its stop bit on and stays until
        taken; a serial line cannot wait, so a byte that completes while the previous one is
        still offered is dropped and sets :attr:`overrun`.
    overrun : Out(1)
        Sticky: a byte was dropped.
    frame_error : Out(1)
        Sticky: a stop bit was 0 (that byte is dropped).
    clear : In(1)
        Clears both sticky flags.

    Each bit is sampled once, in its middle (``divisor // 2`` cycles after the start edge, then
    every ``divisor`` cycles); a start bit that is no longer low in its middle is a glitch and
    ignored.
    """

    def __init__(self, *, divisor: int) -> None:
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "overrun": Out(1),
            "frame_error": Out(1),
            "clear": In(1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform: object) -> Module:
        m = Module()
        d = self._divisor
        sync1 = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]

        timer = Signal(range(d))
        bits = Signal(range(10))
        shift = Signal(8)
        tick = timer == 0
        with m.If(~tick):
            m.d.sync += timer.eq(timer - 1)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.clear):
            m.d.sync += [self.overrun.eq(0), self.frame_error.eq(0)]

        with m.FSM():
            with m.State("IDLE"), m.If(~line):
                m.d.sync += timer.eq(d // 2 - 1)
                m.next = "START"
            with m.State("START"), m.If(tick):
                with m.If(line):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"), m.If(tick):
                m.d.sync += [shift.eq(Cat(shift[1:], line)), timer.eq(d - 1),
                             bits.eq(bits + 1)]
                with m.If(bits == 7):
                    m.next = "STOP"
            with m.State("STOP"), m.If(tick):
                with m.If(~line):
                    m.d.sync += self.frame_error.eq(1)
                with m.Elif(self.o.valid & ~self.o.ready):
                    m.d.sync += self.overrun.eq(1)
                with m.Else():
                    m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Bit period in clock cycles (at least :data:`MIN_DIVISOR`).

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; a byte is taken when the line is idle and sent at once (ten bit periods:
        start, data LSB first, stop). ``i.ready`` is high exactly when the transmitter is idle.
    tx : Out(1, init=1)
        The serial line (registered; high when idle).
    """

    def __init__(self, *, divisor: int) -> None:
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform: object) -> Module:
        m = Module()
        d = self._divisor
        shift = Signal(10, init=0x3FF)   # the bits still to send, LSB first; all ones when idle
        left = Signal(range(11))
        timer = Signal(range(d))
        m.d.comb += self.i.ready.eq(left == 0)
        m.d.sync += self.tx.eq(shift[0])
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shift.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                         left.eq(10), timer.eq(d - 1)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [shift.eq(Cat(shift[1:], Const(1, 1))), left.eq(left - 1),
                             timer.eq(d - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m

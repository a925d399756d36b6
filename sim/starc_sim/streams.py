"""cocotb drivers and monitors for Amaranth ``lib.stream`` ports (flattened to ``<name>__valid``,
``<name>__ready``, ``<name>__payload`` in the generated Verilog).

Both sides drive at the falling edge and sample after ``ReadOnly()``, which gives the same results
on Verilator and Icarus. The source inserts random idle cycles, the sink random backpressure; both
use a seeded :class:`random.Random` so a failing run repeats with the printed seed.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, ReadOnly, with_timeout

__all__ = ["CLOCK_NS", "StreamSink", "StreamSource", "start_and_reset"]

#: The period of the testbenches' clock, in simulated nanoseconds (one FPGA / RTL clock; its
#: value is a label only: every testbench counts clocks, never nanoseconds).
CLOCK_NS = 10


async def start_and_reset(dut: Any, **quiet: int) -> None:
    """Start ``dut.clk`` (cocotb's C++ clock, :data:`CLOCK_NS`), hold ``rst`` for three clocks
    with each input named in ``quiet`` at its value (``cmd__valid=0``, ...), release it and
    return at the next falling edge, where the testbenches drive."""
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    for name, value in quiet.items():
        getattr(dut, name).value = value
    await with_timeout(ClockCycles(dut.clk, 3), 1, "us")
    dut.rst.value = 0
    await FallingEdge(dut.clk)


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), not {p!r}")


class StreamSource:
    """Drives ``<prefix>__valid`` / ``__payload`` from a queue of integers.

    ``idle`` is the probability of holding ``valid`` low for a cycle when a word is waiting.
    ``valid`` never depends on ``ready``; once raised, ``valid`` and ``payload`` hold until the
    transfer (the ``lib.stream`` rules).
    """

    def __init__(self, dut: Any, prefix: str, clk: Any, *, idle: float = 0.0,
                 rng: random.Random | None = None) -> None:
        _check_probability("idle", idle)
        self._valid = getattr(dut, f"{prefix}__valid")
        self._payload = getattr(dut, f"{prefix}__payload")
        self._ready = getattr(dut, f"{prefix}__ready")
        self._clk = clk
        self._idle = idle
        self._rng = rng or random.Random(0)
        self._queue: deque[int] = deque()
        self._empty = Event()
        self._empty.set()
        self.sent = 0
        self._valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send(self, words: Iterable[int]) -> None:
        self._queue.extend(int(w) for w in words)
        if self._queue:
            self._empty.clear()

    async def wait_empty(self, timeout_us: float) -> None:
        """Wait until every queued word has been transferred (fails after ``timeout_us``)."""
        await with_timeout(self._empty.wait(), timeout_us, "us")

    async def _run(self) -> None:
        holding = taken = False
        queue, rng, idle = self._queue, self._rng, self._idle
        while True:
            await FallingEdge(self._clk)
            if taken:
                queue.popleft()
                self.sent += 1
                holding = False
            if not holding:
                if queue and not (idle and rng.random() < idle):
                    self._payload.value = queue[0]
                    self._valid.value = 1
                    holding = True
                else:
                    self._valid.value = 0
                    if not queue:
                        self._empty.set()
            await ReadOnly()
            taken = holding and self._ready.value == 1


class StreamSink:
    """Accepts transfers on ``<prefix>__*`` with random backpressure and hands each payload (an
    int) to ``on_item`` (or stores it in :attr:`items`). ``backpressure`` is the probability of
    holding ``ready`` low for a cycle."""

    def __init__(self, dut: Any, prefix: str, clk: Any, *, backpressure: float = 0.0,
                 rng: random.Random | None = None,
                 on_item: Callable[[int], None] | None = None) -> None:
        _check_probability("backpressure", backpressure)
        self._valid = getattr(dut, f"{prefix}__valid")
        self._payload = getattr(dut, f"{prefix}__payload")
        self._ready = getattr(dut, f"{prefix}__ready")
        self._clk = clk
        self._bp = backpressure
        self._rng = rng or random.Random(0)
        self._on_item = on_item
        self.items: list[int] = []
        self.cycles = 0
        self._ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        bp, rng = self._bp, self._rng
        while True:
            await FallingEdge(self._clk)
            ready = not (bp and rng.random() < bp)
            self._ready.value = int(ready)
            await ReadOnly()
            self.cycles += 1
            if ready and self._valid.value == 1:
                word = self._payload.value.to_unsigned()
                if self._on_item is None:
                    self.items.append(word)
                else:
                    self._on_item(word)

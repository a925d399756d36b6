"""cocotb tests of :class:`starc_hw.smoke.StreamAdder` (proves the cocotb + Verilator setup)."""

from __future__ import annotations

import os
import random
from typing import Any

import cocotb
from cocotb.triggers import ClockCycles, with_timeout

from starc_sim.streams import StreamSink, StreamSource, start_and_reset

WIDTH = int(os.environ.get("STARC_SMOKE_WIDTH", "16"))


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.5], backpressure=[0.0, 0.5])
async def sums(dut: Any, idle: float, backpressure: float) -> None:
    """Random operand pairs in, their sums out, in order, with idle and backpressure insertion."""
    seed = cocotb.RANDOM_SEED
    rng = random.Random(seed)
    dut._log.info("seed %d", seed)
    await start_and_reset(dut)
    pairs = [(rng.getrandbits(WIDTH), rng.getrandbits(WIDTH)) for _ in range(200)]
    src = StreamSource(dut, "i", dut.clk, idle=idle, rng=rng)
    sink = StreamSink(dut, "o", dut.clk, backpressure=backpressure, rng=rng)
    src.send(a | (b << WIDTH) for a, b in pairs)
    await src.wait_empty(timeout_us=100)
    await with_timeout(ClockCycles(dut.clk, 10), 1, "us")
    expected = [a + b for a, b in pairs]
    assert sink.items == expected, f"sums differ (seed {seed})"
    assert dut.count.value.to_unsigned() == len(pairs), f"count wrong (seed {seed})"

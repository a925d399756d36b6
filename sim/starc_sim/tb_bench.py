"""cocotb module of bench/bench_rtl.py: load a program into a FedChannel, run it without Python in
the loop, and report DRAM cycles, issued commands and wall time (JSON in ``STARC_BENCH_OUT``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, with_timeout

from starc_sim.streams import CLOCK_NS, start_and_reset


@cocotb.test()
async def bench(dut: Any) -> None:
    """Run the program in ``STARC_BENCH_PROGRAM`` (hex words) ``STARC_BENCH_REPEAT`` times."""
    words = [int(x, 16) for x in Path(os.environ["STARC_BENCH_PROGRAM"]).read_text().split()]
    repeat = int(os.environ.get("STARC_BENCH_REPEAT", "1"))
    expect_cycles = int(os.environ.get("STARC_BENCH_CYCLES", "1000000"))
    await start_and_reset(dut, load__valid=0, start=0)
    t_load = time.perf_counter()
    dut.load__valid.value = 1
    for w in words:  # load.ready stays high until start
        dut.load__payload.value = w
        await FallingEdge(dut.clk)
    dut.load__valid.value = 0
    dut.repeat.value = repeat
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    t0, c0 = time.perf_counter(), time.process_time()
    clocks0 = cocotb.utils.get_sim_time("ns") / CLOCK_NS
    timeout_us = (2 * expect_cycles + 10 * len(words) * repeat + 1000) * CLOCK_NS / 1000
    await with_timeout(RisingEdge(dut.done), timeout_us, "us")
    await ReadOnly()
    t1, c1 = time.perf_counter(), time.process_time()
    clocks = cocotb.utils.get_sim_time("ns") / CLOCK_NS - clocks0
    out = {
        "load_seconds": t0 - t_load,
        "run_seconds": t1 - t0,
        "run_cpu_seconds": c1 - c0,
        "clocks": clocks,
        "cycle": dut.cycle.value.to_unsigned(),
        "complete": dut.complete.value.to_unsigned(),
        "issued": dut.issued.value.to_unsigned(),
        "fault": dut.fault.value.to_unsigned(),
        "violation_count": dut.violation_count.value.to_unsigned(),
    }
    Path(os.environ["STARC_BENCH_OUT"]).write_text(json.dumps(out))
    dut._log.info("bench: %s", out)

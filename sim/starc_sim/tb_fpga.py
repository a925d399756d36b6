"""cocotb tests of the FPGA board top (``starc_fpga.top.ChannelSystem``: UART, host link,
channel; on a ``pim-*`` size the channel carries the attention datapath and its output is checked
too).

The host driver of ``fpga/driver.py`` runs unchanged in a :func:`cocotb.task.bridge` thread and
talks to the design through :class:`starc_sim.uart_model.UartModel` at the UART pins. Run through
``tests/test_fpga_cosim.py``, which builds the model and sets ``STARC_FPGA_TB`` (JSON: size name,
divisor, decode-step parameters).
"""

from __future__ import annotations

import json
import os
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles
from starc_fpga.driver import HostDriver, LinkError, decode_step_selftest
from starc_fpga.top import board_config, board_size
from starc_hw.hostlink import Opcode, StatusFlag, frame

from starc_sim.streams import CLOCK_NS
from starc_sim.uart_model import BridgeTransport, UartModel, serve_socket


def _params() -> dict[str, Any]:
    raw = os.environ.get("STARC_FPGA_TB")
    if raw is None:
        raise RuntimeError("STARC_FPGA_TB is not set: run through tests/test_fpga_cosim.py")
    return json.loads(raw)


async def _start(dut: Any) -> tuple[dict[str, Any], UartModel, BridgeTransport]:
    p = _params()
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    uart = UartModel(dut.rx, dut.tx, bit_ns=p["divisor"] * CLOCK_NS)
    # the longest silence of the device: a status poll while a long command waits
    transport = BridgeTransport(uart, timeout_us=p.get("timeout_us", 20_000))
    return p, uart, transport


@cocotb.test()
async def decode_step(dut: Any) -> None:
    """Compiled image load, dense decode step (issue trace), read-back: all against golden."""
    p, uart, transport = await _start(dut)
    cfg = board_config(board_size(p["size"]))

    def scenario() -> dict[str, Any]:
        drv = HostDriver(transport, cfg=cfg)
        info = drv.connect()
        dut._log.info("board: %s", info)
        return decode_step_selftest(drv, cfg, head_dim=p["head_dim"], tokens=p["tokens"],
                                    seed=p["seed"], readback=p["readback"],
                                    log=dut._log.info)

    summary = await bridge(scenario)()
    dut._log.info("summary: %s", summary)
    record = os.environ.get("STARC_FPGA_RECORD")
    if record:          # the step's cycles, datapath waits and co-simulation wall time
        keep = ("step_cycles", "stall_cycles", "step_commands", "tokens", "head_dim")
        data = {k: summary[k] for k in keep if k in summary}
        data["cosim_seconds"] = summary["step_seconds"]
        tmp = record + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, record)
    assert uart.frame_errors == 0, f"{uart.frame_errors} bytes from the design had a 0 stop bit"


@cocotb.test()
async def link_errors(dut: Any) -> None:
    """Bad checksum, wrong length, unknown opcode and garbage are dropped and counted; the link
    recovers with zero bytes; a wrong configuration is refused."""
    p, uart, transport = await _start(dut)
    cfg = board_config(board_size(p["size"]))

    def scenario() -> None:
        drv = HostDriver(transport, cfg=cfg)
        drv.connect()
        st = drv.status()
        assert st.link_errors == 0 and st.idle, st
        bad_sum = bytearray(frame(Opcode.STATUS))
        bad_sum[-1] ^= 0x55
        transport.write(bytes(bad_sum))                       # 1: checksum
        transport.write(frame(Opcode.TRACE, b"\x01\x02"))     # 2: length (skipped)
        transport.write(frame(0x42, b"\x00" * 3))             # 3: unknown opcode (skipped)
        transport.write(bytes([0x01, 0xFF, 0xFF]))            # 4: length beyond any payload
        drv.resync()
        st = drv.status()
        assert st.link_errors == 4, f"expected 4 dropped frames, status {st}"
        assert not st.flags & StatusFlag.TRACE, st
        drv.reset()
        assert drv.status().link_errors == 0
        other = board_config(board_size("medium"))
        try:
            HostDriver(transport, cfg=other).connect()
        except LinkError as e:
            assert "another configuration" in str(e), e
        else:
            raise AssertionError("a driver for another configuration was not refused")

    await bridge(scenario)()


@cocotb.test()
async def serve(dut: Any) -> None:
    """The board's serial port as a TCP server (``STARC_FPGA_TB["port"]``) for host software
    that connects with ``socket://127.0.0.1:PORT`` (``starc fpga run``); ends when it
    disconnects."""
    p, uart, _ = await _start(dut)
    counts = await serve_socket(uart, int(p["port"]))
    dut._log.info("served %s", counts)
    assert counts["to_device"] > 0, "no host connected"
    assert uart.frame_errors == 0, f"{uart.frame_errors} bytes from the design had a 0 stop bit"

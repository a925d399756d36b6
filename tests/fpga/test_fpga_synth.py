# amaranth: UnusedElaboratable=no
"""Synthesis smoke test of the open FPGA flow: YoWASP Yosys ``synth_ecp5`` for the ULX3S on the
board's UART + host link, with a loopback in place of the channel (the full board top takes
minutes to synthesise; ``starc fpga build`` and ``bench/bench_fpga.py`` cover it).

Skipped, with the reason, only when the YoWASP tools are not installed or cannot run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import io, wiring
from starc.isa import Op
from starc_fpga.build import ToolchainError, synthesize, tool_env
from starc_fpga.top import BOARD_SIZES, board_config
from starc_hw.hostlink import HostLink
from starc_hw.uart import UARTRx, UARTTx

pytestmark = pytest.mark.slow


class LoopbackLink(wiring.Component):
    """UART + HostLink on the ULX3S pins; each command "issues" at once at a free-running cycle
    count, a RD returns the last write data: enough to keep all of the link through synthesis."""

    def __init__(self) -> None:
        self._cfg = board_config(BOARD_SIZES["small"])
        super().__init__({})

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        m.submodules.rx = rx = UARTRx(divisor=25)
        m.submodules.tx = tx = UARTTx(divisor=25)
        m.submodules.link = link = HostLink(cfg=self._cfg, rows=8, cycle_width=32)
        wiring.connect(m, rx.o, link.rx)
        wiring.connect(m, link.tx, tx.i)
        cycle = Signal(32)
        last = Signal.like(link.wdata.payload)
        m.d.sync += cycle.eq(cycle + 1)
        fire = link.issue.valid & link.issue.ready
        m.d.comb += [
            link.issue.valid.eq(link.cmd.valid), link.cmd.ready.eq(link.issue.ready),
            link.issue.payload.cmd.eq(link.cmd.payload), link.issue.payload.cycle.eq(cycle),
            link.wdata.ready.eq(1), link.cycle.eq(cycle), link.complete.eq(cycle),
        ]
        with m.If(link.wdata.valid):
            m.d.sync += last.eq(link.wdata.payload)
        with m.If(fire):
            m.d.sync += link.issued.eq(link.issued + 1)
        m.d.sync += [link.rdata_valid.eq(fire & (link.cmd.payload.op == Op.RD)),
                     link.rdata.group.eq(link.cmd.payload.group),
                     link.rdata.bank.eq(link.cmd.payload.bank),
                     link.rdata.col.eq(link.cmd.payload.col), link.rdata.data.eq(last)]
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rxb = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = txb = io.Buffer("o", uart.tx)
        m.d.comb += [rx.rx.eq(rxb.i), txb.o.eq(tx.tx)]
        return m


@pytest.fixture(scope="module")
def toolchain() -> dict[str, str]:
    try:
        env = tool_env()
    except ToolchainError as e:
        pytest.skip(f"YoWASP toolchain not installed: {e}")
    try:
        subprocess.run([env["YOSYS"], "-V"], env=env, check=True, capture_output=True,
                       timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"YoWASP Yosys cannot run here: {e}")
    return env


def test_synth_ecp5_link(toolchain: dict[str, str], tmp_path: Path) -> None:
    cells, seconds = synthesize(LoopbackLink(), tmp_path)
    stat = json.loads((tmp_path / "top.stat.json").read_text())
    assert "design" in stat or "modules" in stat
    luts = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
    assert luts > 300, cells
    assert cells.get("TRELLIS_FF", 0) > 300, cells
    assert cells.get("DP16KD", 0) >= 1, cells      # the 512-byte receive FIFO
    assert cells.get("TRELLIS_IO", 0) >= 2, cells  # the UART pins survived
    print(f"synth_ecp5 of the UART + host link: {luts} LUT, {cells.get('TRELLIS_FF')} FF, "
          f"{cells.get('DP16KD')} DP16KD in {seconds:.1f} s")


class _ArrayRegister(wiring.Component):
    """A register of a ``lib.data`` array: Amaranth names its element wires ``q[0]``, ``q[1]``."""

    def __init__(self) -> None:
        from amaranth.lib import data

        super().__init__({"d": wiring.In(data.ArrayLayout(16, 4)),
                          "q": wiring.Out(data.ArrayLayout(16, 4))})

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        m.d.sync += self.q.eq(self.d)
        return m


def test_build_hides_bracket_wires(toolchain: dict[str, str], tmp_path: Path) -> None:
    """Yosys 0.70's ABC9 reintegration names bit i of a port ``x`` ``x[i]``, the same name
    Amaranth gives element i of an array signal ``x`` (docs/fpga.md, pim-smol): the build's
    commands after reading the design leave no wire whose name ends in ``]``."""
    from amaranth.back import rtlil
    from starc_fpga.build import YOSYS_AFTER_READ

    (tmp_path / "t.il").write_text(rtlil.convert(_ArrayRegister(), emit_src=False))
    script = ["read_rtlil t.il", "select -assert-min 4 w:*]", *YOSYS_AFTER_READ,
              "select -assert-none w:*]", "select -assert-min 2 w:q w:d"]
    proc = subprocess.run([toolchain["YOSYS"], "-q", "-p", "; ".join(script)], cwd=tmp_path,
                          env=toolchain, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class _BanksInside(wiring.Component):
    """A bank array as the board has it, a submodule named ``banks``, next to a memory of
    another module (a FIFO-like one) that must keep its read-old collision."""

    def __init__(self) -> None:
        from starc_hw.bank import BankArray
        from starc_hw.layouts import issue_layout

        self._banks = BankArray(cfg=board_config(BOARD_SIZES["tiny"]), rows=8, cycle_width=32)
        super().__init__({"cmd": wiring.In(issue_layout(32)), "valid": wiring.In(1),
                          "wdata": wiring.In(64), "rd": wiring.Out(64), "other": wiring.Out(8)})

    def elaborate(self, platform: Any) -> Module:
        from amaranth.lib.memory import Memory

        m = Module()
        m.submodules.banks = banks = self._banks
        m.d.comb += [banks.cmd.payload.eq(self.cmd), banks.cmd.valid.eq(self.valid),
                     banks.wdata.eq(self.wdata), self.rd.eq(banks.rdata.payload.data)]
        m.submodules.other = mem = Memory(shape=8, depth=16, init=[])
        rp, wp = mem.read_port(), mem.write_port()
        m.d.comb += [rp.addr.eq(self.wdata[:4]), wp.addr.eq(self.wdata[:4]),
                     wp.data.eq(self.wdata[4:12]), wp.en.eq(self.wdata[12]),
                     self.other.eq(rp.data)]
        return m


def test_build_declares_bank_memory_collisions_undefined(toolchain: dict[str, str],
                                                         tmp_path: Path) -> None:
    """The build's commands after reading mark the bank array's read ports (and only those)
    ``COLLISION_X_MASK`` 1, so Yosys adds no read-old emulation to its block RAM
    (``starc_fpga.build.BANK_MEMORY_READS``, docs/fpga.md)."""
    from amaranth.back import rtlil
    from starc_fpga.build import YOSYS_AFTER_READ

    (tmp_path / "t.il").write_text(rtlil.convert(_BanksInside(), emit_src=False))
    script = ["read_rtlil t.il", "select -assert-count 3 t:$memrd_v2",
              "select -assert-none t:$memrd_v2 r:COLLISION_X_MASK=1'1 %i", *YOSYS_AFTER_READ,
              "select -assert-count 2 t:$memrd_v2 r:COLLISION_X_MASK=1'1 %i",
              "select -assert-count 2 *.banks/t:$memrd_v2 r:COLLISION_X_MASK=1'1 %i"]
    proc = subprocess.run([toolchain["YOSYS"], "-q", "-p", "; ".join(script)], cwd=tmp_path,
                          env=toolchain, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr

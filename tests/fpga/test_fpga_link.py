# amaranth: UnusedElaboratable=no
"""Fast tier: the UART and the host link under amaranth.sim, the link's frame format, and the host
driver's pure-Python parts (docs/fpga.md)."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from starc.isa import Op, decode, encode
from starc_fpga.driver import HostDriver, load_program
from starc_fpga.top import BOARD_SIZES, ULX3STop, board_config, board_size, pll_params
from starc_hw.hostlink import (
    HostLink,
    LinkFormat,
    Opcode,
    StatusFlag,
    checksum,
    config_id,
    frame,
)
from starc_hw.sizes import Size
from starc_hw.uart import UARTRx, UARTTx, divisor_for

CFG = board_config(BOARD_SIZES["small"])
FMT = LinkFormat(column_bytes=CFG.org.column_bytes, cycle_width=32)


# ---- UART --------------------------------------------------------------------------------------
def test_divisor_for() -> None:
    assert divisor_for(25e6, 1_000_000) == 25
    assert divisor_for(25e6, 115200) == 217
    with pytest.raises(ValueError, match="too high for a 2.5e\\+07 Hz clock"):
        divisor_for(25e6, 12_500_000)
    with pytest.raises(ValueError, match="is 4.2% off with a divisor of 8"):
        divisor_for(25e6, 3_000_000)
    with pytest.raises(ValueError, match="Baud rate must be positive, not 0"):
        divisor_for(25e6, 0)


@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
def test_uart_divisor_is_validated(cls: type) -> None:
    with pytest.raises(ValueError, match="Divisor must be an integer of at least 4, not 3"):
        cls(divisor=3)
    with pytest.raises(ValueError, match="Divisor must be an integer of at least 4, not True"):
        cls(divisor=True)


@pytest.mark.parametrize("divisor", [4, 5, 9])
def test_uart_loopback(divisor: int) -> None:
    """Bytes through UARTTx -> line -> UARTRx arrive unchanged, in order, with a slow reader."""
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80] + [rng.randrange(256) for _ in range(10)]
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=divisor)
    m.submodules.rx = rx = UARTRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got: list[int] = []

    async def send(ctx: Any) -> None:
        for b in data:
            ctx.set(tx.i.payload, b)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)

    async def recv(ctx: Any) -> None:
        while len(got) < len(data):
            ready = rng.random() < 0.3   # the reader is slower than a bit, faster than a byte
            ctx.set(rx.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid and ready:
                got.append(payload)
        assert not ctx.get(rx.overrun) and not ctx.get(rx.frame_error)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send, background=True)
    sim.add_testbench(recv)
    sim.run_until(1e-6 * 12 * divisor * len(data) * 2)
    assert got == data


def test_uart_rx_flags() -> None:
    """A 0 stop bit sets frame_error; a byte nobody takes before the next one sets overrun."""
    d = 4
    rx = UARTRx(divisor=d)

    async def line(ctx: Any) -> None:
        async def byte(value: int, stop: int) -> None:
            for bit in (0, *((value >> i) & 1 for i in range(8)), stop):
                ctx.set(rx.rx, bit)
                await ctx.tick().repeat(d)
            ctx.set(rx.rx, 1)
            await ctx.tick().repeat(d)

        ctx.set(rx.o.ready, 0)
        await byte(0x5A, stop=0)
        assert ctx.get(rx.frame_error) and not ctx.get(rx.o.valid)
        await byte(0x12, stop=1)
        assert ctx.get(rx.o.valid) and ctx.get(rx.o.payload) == 0x12
        await byte(0x34, stop=1)
        assert ctx.get(rx.overrun) and ctx.get(rx.o.payload) == 0x12
        ctx.set(rx.clear, 1)
        await ctx.tick()
        ctx.set(rx.clear, 0)
        assert not ctx.get(rx.overrun) and not ctx.get(rx.frame_error)

    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(line)
    sim.run()


# ---- frame format ------------------------------------------------------------------------------
def test_frame_and_checksum() -> None:
    f = frame(Opcode.SYNC, b"\x07")
    assert f == bytes([0x05, 0x01, 0x00, 0x07, checksum([0x05, 0x01, 0x00, 0x07])])
    assert sum(f) % 256 == 0
    with pytest.raises(ValueError, match="Opcode must be a byte, not 256"):
        frame(256)


def test_link_format_round_trip() -> None:
    word = encode((Op.WR, 1, 1, 31, 5, 17))
    f = FMT.pack(Opcode.ISSUE, {"cmd": word, "cycle": 0xDEADBEEF, "inserted": 1})
    assert f[0] == Opcode.ISSUE and f[1] | f[2] << 8 == FMT.payload_bytes(Opcode.ISSUE) == 14
    p = FMT.unpack(Opcode.ISSUE, f[3:-1])
    assert p.cmd.as_bits() == word and p.cycle == 0xDEADBEEF and p.inserted == 1
    assert decode(p.cmd.as_bits()) == (Op.WR, 1, 1, 31, 5, 17)
    with pytest.raises(ValueError, match="TRACE.enable = 256 does not fit in 8 bits"):
        FMT.pack(Opcode.TRACE, {"enable": 256})
    with pytest.raises(ValueError, match="SYNC payload must be 1 bytes, not 2"):
        FMT.unpack(Opcode.SYNC, b"\x00\x00")
    with pytest.raises(ValueError, match="Column bytes must be a positive integer, not 0"):
        LinkFormat(column_bytes=0, cycle_width=32)


def test_hostlink_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="Table depth must be a power of two from 2 to 1024, "
                                         "not 24"):
        HostLink(cfg=CFG, rows=8, cycle_width=32, table_depth=24)
    with pytest.raises(ValueError, match="Receive FIFO depth must be a power of two from 16 to "
                                         "4096, not 8"):
        HostLink(cfg=CFG, rows=8, cycle_width=32, rx_depth=8)
    with pytest.raises(TypeError, match="Configuration must be a starc.config.Config, not None"):
        HostLink(cfg=None, rows=8, cycle_width=32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Rows must be an integer from 1 to 65535, not 0"):
        HostLink(cfg=CFG, rows=0, cycle_width=32)


# ---- host link under amaranth.sim ---------------------------------------------------------------
async def feed_bytes(ctx: Any, dut: Any, data: bytes) -> None:
    """Drive ``data`` into the link's ``rx`` stream, one byte per accepted transfer."""
    for b in data:
        ctx.set(dut.rx.payload, b)
        ctx.set(dut.rx.valid, 1)
        await ctx.tick().until(dut.rx.ready)
    ctx.set(dut.rx.valid, 0)


class LinkBench:
    """HostLink with a stand-in channel: takes every command, records commands, write data and the
    bytes the link sends; ``drive`` runs alongside (issue / RD data / status inputs)."""

    def __init__(self, *, table_depth: int = 8, head_dim: int = 0) -> None:
        self.dut = HostLink(cfg=CFG, rows=8, cycle_width=32, table_depth=table_depth,
                            rx_depth=64, head_dim=head_dim)
        self.cmds: list[int] = []
        self.wdata: list[int] = []
        self.tx: list[int] = []

    def run(self, data: bytes, cycles: int,
            drive: Callable[[Any], Any] | None = None) -> dict[str, int]:
        dut = self.dut
        out: dict[str, int] = {}

        async def feed(ctx: Any) -> None:
            await feed_bytes(ctx, dut, data)

        async def watch(ctx: Any) -> None:
            ctx.set(dut.cmd.ready, 1)
            ctx.set(dut.wdata.ready, 1)
            ctx.set(dut.tx.ready, 1)
            for _ in range(cycles):
                _, _, *v = await ctx.tick().sample(
                    dut.cmd.valid, dut.cmd.payload.as_value(), dut.wdata.valid,
                    dut.wdata.payload, dut.tx.valid, dut.tx.payload)
                if v[0]:
                    self.cmds.append(v[1])
                if v[2]:
                    self.wdata.append(v[3])
                if v[4]:
                    self.tx.append(v[5])
            out["link_errors"] = ctx.get(dut.link_errors)
            out["trace"] = ctx.get(dut.trace)

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(feed, background=True)
        if drive is not None:
            sim.add_testbench(drive, background=True)
        sim.add_testbench(watch)
        sim.run()
        return out

    def frames(self) -> list[tuple[Opcode, bytes]]:
        out, b = [], bytes(self.tx)
        while b:
            n = b[1] | b[2] << 8
            assert sum(b[:n + 4]) % 256 == 0, "bad checksum from the link"
            out.append((Opcode(b[0]), b[3:3 + n]))
            b = b[n + 4:]
        return out


def test_hostlink_commands_and_side_table() -> None:
    """TABLE then CMD: the command goes out unchanged; a WR takes its side-table entry with it,
    and the entry can be rewritten at once for the next WR."""
    bench = LinkBench()
    wr1 = encode((Op.WR, 1, 0, 3, 0, 5))
    wr2 = encode((Op.WR, 0, 1, 4, 0, 5))
    act = encode((Op.ACTAB, 0, 0, 0, 2))
    data = (FMT.pack(Opcode.TABLE, {"index": 5, "data": 0x1111222233334444})
            + FMT.pack(Opcode.CMD, {"cmd": act}) + FMT.pack(Opcode.CMD, {"cmd": wr1})
            + FMT.pack(Opcode.TABLE, {"index": 5, "data": 0x5555666677778888})
            + FMT.pack(Opcode.CMD, {"cmd": wr2}))
    out = bench.run(data, 200)
    assert bench.cmds == [act, wr1, wr2]
    assert bench.wdata == [0x1111222233334444, 0x5555666677778888]
    assert out["link_errors"] == 0 and bench.tx == []


def test_hostlink_drops_bad_frames() -> None:
    bench = LinkBench()
    good = FMT.pack(Opcode.CMD, {"cmd": encode((Op.PREA,))})
    bad_sum = bytearray(good)
    bad_sum[5] ^= 1
    data = (bytes(bad_sum) + frame(Opcode.CMD, b"\x00" * 8) + frame(0x33, b"\x01\x02")
            + bytes([Opcode.TABLE, 0xFF, 0x7F]) + bytes(8) + good)
    out = bench.run(data, 300)
    assert out["link_errors"] == 4
    assert bench.cmds == [encode((Op.PREA,))]


def test_hostlink_replies_and_results() -> None:
    """SYNC / STATUS / INFO replies, ISSUE frames while tracing, RDATA frames for RD data."""
    bench = LinkBench()
    dut = bench.dut
    issue_word = encode((Op.RD, 1, 1, 7))

    async def drive(ctx: Any) -> None:
        ctx.set(dut.cycle, 1234)
        ctx.set(dut.complete, 1300)
        ctx.set(dut.issued, 42)
        ctx.set(dut.violation_count, 3)
        ctx.set(dut.cmd.ready, 1)
        await ctx.tick().until(dut.trace)
        ctx.set(dut.issue.payload.cmd.as_value(), issue_word)
        ctx.set(dut.issue.payload.cycle, 777)
        ctx.set(dut.issue.valid, 1)
        await ctx.tick().until(dut.issue.ready)
        ctx.set(dut.issue.valid, 0)
        ctx.set(dut.rdata.as_value(), 0)
        ctx.set(dut.rdata.group, 1)
        ctx.set(dut.rdata.bank, 1)
        ctx.set(dut.rdata.col, 7)
        ctx.set(dut.rdata.data, 0xCAFE)
        ctx.set(dut.rdata_valid, 1)
        await ctx.tick()
        ctx.set(dut.rdata_valid, 0)

    data = (FMT.pack(Opcode.SYNC, {"seq": 9}) + frame(Opcode.INFO)
            + FMT.pack(Opcode.TRACE, {"enable": 1}) + bytes(40) + frame(Opcode.STATUS))
    bench.run(data, 800, drive)
    frames = bench.frames()
    ops = [op for op, _ in frames]
    assert ops == [Opcode.SYNC_REPLY, Opcode.INFO_REPLY, Opcode.ISSUE, Opcode.RDATA,
                   Opcode.STATUS_REPLY], ops
    assert frames[0][1] == b"\x09"
    info = FMT.unpack(Opcode.INFO_REPLY, frames[1][1])
    assert info.config_id == config_id(CFG) and info.groups == 2 and info.columns == 32
    assert info.wdata_ops == 1 << Op.WR and info.rows == 8
    issue = FMT.unpack(Opcode.ISSUE, frames[2][1])
    assert issue.cmd.as_bits() == issue_word and issue.cycle == 777 and issue.inserted == 0
    rd = FMT.unpack(Opcode.RDATA, frames[3][1])
    assert (rd.group, rd.bank, rd.col, rd.data) == (1, 1, 7, 0xCAFE)
    st = FMT.unpack(Opcode.STATUS_REPLY, frames[4][1])
    assert (st.cycle, st.complete, st.issued, st.violation_count) == (1234, 1300, 42, 3)
    assert StatusFlag(st.flags) == StatusFlag.IDLE | StatusFlag.TRACE


def test_hostlink_reset_waits_for_the_command_and_pulses_once() -> None:
    """RESET: the link's error counter is cleared, and the channel reset is one pulse that comes
    only after the previous command was taken (here held back 60 clocks by the channel)."""
    dut = HostLink(cfg=CFG, rows=8, cycle_width=32, table_depth=8, rx_depth=64)
    good = FMT.pack(Opcode.CMD, {"cmd": encode((Op.PREA,))})
    bad = bytearray(good)
    bad[5] ^= 1
    data = bytes(bad) + good + frame(Opcode.RESET)
    seen: dict[str, Any] = {"pulses": [], "taken": None, "errors_before": None}

    async def feed(ctx: Any) -> None:
        await feed_bytes(ctx, dut, data)

    async def watch(ctx: Any) -> None:
        ctx.set(dut.tx.ready, 1)
        for t in range(300):
            ctx.set(dut.cmd.ready, int(t >= 60))
            if t == 59:
                seen["errors_before"] = ctx.get(dut.link_errors)
            _, _, valid, ready, pulse, clear = await ctx.tick().sample(
                dut.cmd.valid, dut.cmd.ready, dut.channel_reset, dut.rx_clear)
            if valid and ready:
                seen["taken"] = t
            if pulse:
                assert clear, "rx_clear pulses with channel_reset"
                seen["pulses"].append(t)
        seen["errors_after"] = ctx.get(dut.link_errors)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(watch)
    sim.run()
    assert seen["errors_before"] == 1 and seen["errors_after"] == 0
    assert seen["taken"] == 60
    assert len(seen["pulses"]) == 1 and seen["pulses"][0] > seen["taken"], seen


@pytest.mark.parametrize("d", [4, 64])
def test_hostlink_output_and_busy(d: int) -> None:
    """OUTPUT is answered with the datapath's output (dimension i in bytes 2i, 2i + 1), sent a
    byte at a time, and its flags; a busy datapath keeps STATUS from reporting IDLE. d 64 is the
    pim-smol width (a 1032-bit payload)."""
    bench = LinkBench(head_dim=d)
    dut = bench.dut
    fmt = LinkFormat(column_bytes=CFG.org.column_bytes, cycle_width=32, head_dim=d)
    values = [0x3C00, 0x8001, 0x7BFF, 0xFC00]     # 1.0, -subnormal, max, -inf
    seed = 1200 + d
    rng = np.random.default_rng(seed)
    values += [int(v) for v in rng.integers(0, 1 << 16, d - len(values))]

    async def drive(ctx: Any) -> None:
        ctx.set(dut.cmd.ready, 1)
        ctx.set(dut.out, sum(v << (16 * i) for i, v in enumerate(values)))
        ctx.set(dut.dp_error, 0x5)
        ctx.set(dut.busy, 1)

    data = frame(Opcode.OUTPUT) + frame(Opcode.STATUS)
    bench.run(data, 600 + 2 * 2 * d, drive)
    frames = bench.frames()
    assert [op for op, _ in frames] == [Opcode.OUTPUT_REPLY, Opcode.STATUS_REPLY]
    assert len(frames[0][1]) == 2 * d + 1
    assert list(np.frombuffer(frames[0][1][:2 * d], "<u2")) == values, f"seed {seed}"
    out = fmt.unpack(Opcode.OUTPUT_REPLY, frames[0][1])
    assert out.dp_error == 0x5
    st = fmt.unpack(Opcode.STATUS_REPLY, frames[1][1])
    assert not StatusFlag(st.flags) & StatusFlag.IDLE
    info = HostLink(cfg=CFG, rows=8, cycle_width=32, head_dim=d).info()
    assert info["head_dim"] == d
    assert FMT.payload_bytes(Opcode.OUTPUT_REPLY) == 1      # no datapath: flags only
    with pytest.raises(ValueError, match="Head dimension must be an integer from 0 to 4095"):
        LinkFormat(column_bytes=8, cycle_width=32, head_dim=-1)


# ---- board top and driver (pure Python parts) -------------------------------------------------
def test_board_sizes() -> None:
    for name, size in BOARD_SIZES.items():
        cfg = board_config(size)
        assert cfg.org.banks_per_channel == size.banks
        assert cfg.pu.lanes == size.lanes and cfg.org.columns_per_row == 32, name
    with pytest.raises(ValueError, match="Unknown board size 'huge'; choose one of tiny, "
                                         "small, small-wide, medium, large, full, pim-tiny, "
                                         "pim-mid, pim-smol, pim-large"):
        board_size("huge")
    with pytest.raises(ValueError, match="Unknown board size 'pim-small'"):
        board_size("pim-small")          # a size of the table, but not a board design
    with pytest.raises(TypeError, match="Size must be a starc_hw.sizes.Size, not 'small'"):
        ULX3STop(size="small")  # type: ignore[arg-type]
    assert [k for k, v in BOARD_SIZES.items() if v.place] == [
        "tiny", "small", "small-wide", "medium", "large", "full", "pim-tiny", "pim-mid",
        "pim-smol"]
    from starc_fpga.build import build
    with pytest.raises(ValueError, match="Size 'pim-large' does not fit the LFE5U-85F: synthesis "
                                         "only \\(--no-pnr\\); the placed sizes are tiny, "
                                         "small, small-wide, medium, large, full, pim-tiny, "
                                         "pim-mid, pim-smol"):
        build("pim-large")
    assert isinstance(BOARD_SIZES["small"], Size)


def test_load_program() -> None:
    lanes = CFG.pu.lanes
    rng = np.random.default_rng(0)
    image = {(g, b, r): rng.integers(0, 1 << 16, (32, lanes), dtype=np.uint16)
             for g, b, r in [(1, 0, 3), (0, 1, 3), (0, 0, 1)]}
    prog, wdata = load_program(image, groups=2, banks_per_group=2, columns=32, lanes=lanes,
                               rows=8)
    ops = prog["op"].tolist()
    assert ops.count(Op.ACTAB) == 2 and ops.count(Op.PREA) == 2 and ops.count(Op.WR) == 96
    assert prog[0]["row"] == 1 and prog[34]["row"] == 3
    from starc.golden import functional
    res = functional.execute(prog, wdata, {}, CFG, 16)
    for key, rows in image.items():
        assert np.array_equal(res.image[key], rows)
    with pytest.raises(ValueError, match=r"image row \(0, 0, 8\): the board stores rows 0..7"):
        load_program({(0, 0, 8): image[(0, 0, 1)]}, groups=2, banks_per_group=2, columns=32,
                     lanes=lanes, rows=8)


def test_driver_needs_a_transport() -> None:
    with pytest.raises(TypeError, match="Transport must have read\\(n\\) and write\\(data\\) "
                                        "methods, not 3"):
        HostDriver(3)  # type: ignore[arg-type]


def test_ulx3s_build_plan(tmp_path: Any) -> None:
    """The board top elaborates for the ULX3S (no deprecated platform use): PLL, UART pins, the
    oscillator's constraint and the PLL's output frequency (nextpnr derives its constraint)."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    top = ULX3STop(size=BOARD_SIZES["small"])
    assert top.divisor == 25 and top.clock_hz == 6.25e6
    plan = ULX3S_85F_Platform().build(top, name="top", do_build=False)
    plan.extract(tmp_path)
    lpf = (tmp_path / "top.lpf").read_text()
    for pin in ("M1", "L4", "G2", "B2"):     # uart rx, uart tx, clk25, led 0
        assert f'SITE "{pin}"' in lpf, pin
    assert 'FREQUENCY PORT "clk25_0__io" 25000000' in lpf
    # the system clock's constraint is nextpnr's, derived from the PLL's pin frequencies
    assert "FREQUENCY NET" not in lpf
    il = (tmp_path / "top.il").read_text()
    assert "EHXPLLL" in il
    assert 'attribute \\FREQUENCY_PIN_CLKOP "6.25"' in il


def test_pll_params() -> None:
    assert pll_params(25e6, 6.25e6) == {"CLKI_DIV": 4, "CLKFB_DIV": 1, "CLKOP_DIV": 64}
    assert pll_params(25e6, 10e6) == {"CLKI_DIV": 5, "CLKFB_DIV": 2, "CLKOP_DIV": 40}
    with pytest.raises(ValueError, match="The PLL cannot make 8 MHz from 25 MHz; nearest: "
                                         "8.3333, 7.1429, 9.375, 6.25 MHz"):
        pll_params(25e6, 8e6)
    with pytest.raises(ValueError, match="Baud rate 1e\\+06 is 4.2% off with a divisor of 6 "
                                         "at 6.25e\\+06 Hz"):
        ULX3STop(size=BOARD_SIZES["small"], baud=1_000_000)


def test_wdata_ops_match_the_channel() -> None:
    """The link hands one side-table entry to the channel for exactly the commands the channel
    waits for write data on (starc_fpga.top.WDATA_OPS): a WR / WRGB does not issue without its
    beat."""
    from starc_fpga.top import WDATA_OPS
    from starc_hw.channel import Channel

    def issued(prog: list[tuple[int, ...]], beats: int) -> list[int]:
        dut = Channel(cfg=CFG, rows=8, cycle_width=32)
        ops: list[int] = []

        async def tb(ctx: Any) -> None:
            ctx.set(dut.issue.ready, 1)
            ctx.set(dut.wdata.valid, beats > 0)
            sent = taken = 0
            for _ in range(200):
                if sent < len(prog):
                    ctx.set(dut.cmd.valid, 1)
                    ctx.set(dut.cmd.payload.as_value(), encode(prog[sent]))
                else:
                    ctx.set(dut.cmd.valid, 0)
                _, _, cr, iv, ip, wr = await ctx.tick().sample(
                    dut.cmd.ready, dut.issue.valid, dut.issue.payload.cmd.op, dut.wdata.ready)
                sent += bool(cr and sent < len(prog))
                if iv:
                    ops.append(ip)
                if wr:
                    taken += 1
                    ctx.set(dut.wdata.valid, taken < beats)

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(tb)
        sim.run()
        return ops

    prog = [(Op.WRGB, 0, 0, 1, 0, 0), (Op.ACTAB, 0, 0, 0, 1), (Op.WR, 1, 0, 3, 0, 0),
            (Op.PREA,)]
    assert set(WDATA_OPS) == {Op.WR, Op.WRGB}
    assert issued(prog, 0) == []                          # WRGB waits for its beat
    assert issued(prog[1:], 0) == [Op.ACTAB]              # ... and so does WR
    assert issued(prog, 2) == [Op.WRGB, Op.ACTAB, Op.WR, Op.PREA]


def test_cli_registers_fpga_build(capsys: Any) -> None:
    import argparse

    from starc_fpga.cli import cmd_fpga_build, register

    parser = argparse.ArgumentParser(prog="starc")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["fpga", "build", "--size", "medium", "--no-pnr", "--json",
                              "--router", "router2", "--clock-mhz", "10"])
    assert args.func is cmd_fpga_build
    assert (args.size, args.no_pnr, args.json, args.router, args.clock_mhz) == \
        ("medium", True, True, "router2", 10.0)
    # an impossible baud rate is a one-line error before any tool runs (6.25 MHz / 1 Mbaud)
    args = parser.parse_args(["fpga", "build", "--clock-mhz", "6.25", "--baud", "1000000"])
    assert cmd_fpga_build(args) == 2
    assert "starc: error: Baud rate 1e+06 is 4.2% off" in capsys.readouterr().err


def test_board_runner_without_a_board(capsys: Any) -> None:
    """``starc fpga run`` with nothing at the port: one line naming it, exit 2, no traceback;
    a channel-only size is not offered (it has no output to check)."""
    from starc.cli import main

    with socket.socket() as s:                 # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["fpga", "run", "--port", f"socket://127.0.0.1:{port}", "--size", "pim-tiny",
               "--timeout", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("starc: error:")]
    assert rc == 2 and len(errors) == 1 and "cannot open the serial port" in errors[0], err
    assert "Traceback" not in err
    assert main(["fpga", "run", "--port", "/dev/null", "--size", "small"]) == 2
    assert "invalid choice: 'small'" in capsys.readouterr().err


def test_failed_tool_names_itself_and_its_log(tmp_path: Any) -> None:
    """A failing tool run: one ToolchainError naming the stage, the tool and the log it wrote
    (Yosys: top.rpt), with the log's error line."""
    import os

    from starc_fpga.build import ToolchainError, _run

    (tmp_path / "top.rpt").write_text("2.46 ABC9\nERROR: Assert failed in rtlil.cc:3091.\n")
    with pytest.raises(ToolchainError, match=r"synth \(yosys\) failed \(exit 1\); log "
                                             r".*top\.rpt:\n  ERROR: Assert failed"):
        _run(["false"], tmp_path, dict(os.environ), tmp_path / "synth.log", "synth (yosys)",
             "yosys")

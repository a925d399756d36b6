"""Host link: the framing protocol between a host and a PIM channel over a byte stream (a UART).

A frame is ``opcode`` (1 byte), ``length`` (2 bytes, little endian: the payload bytes), the
payload, and a checksum byte that makes the sum of every byte of the frame 0 modulo 256. Payloads
are :mod:`amaranth.lib.data` layouts packed LSB first (multi-byte fields little endian); the same
layouts pack and unpack on the host (:class:`LinkFormat`), so the gateware and the driver
(``fpga/driver.py``) share one definition. docs/fpga.md has the frame table and the flow-control
rule.

Host to device: ``CMD`` (one packed command word, :data:`starc.isa.COMMAND_FIELDS`), ``TABLE``
(one entry of the write-data side table), ``RESET``, ``TRACE``, ``SYNC``, ``STATUS``, ``INFO``,
``OUTPUT``, ``NOP``. Device to host: ``ISSUE`` (an issued command and its cycle, when tracing),
``RDATA`` (the data of a RD), and the replies ``SYNC_REPLY``, ``STATUS_REPLY``, ``INFO_REPLY``,
``OUTPUT_REPLY`` (the attention datapath's output, on a build that has one).
"""

from __future__ import annotations

import enum
import json
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from amaranth.hdl import Array, Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import Op

from .layouts import COMMAND, issue_layout, read_data_layout

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "HostLink",
    "LinkFormat",
    "Opcode",
    "StatusFlag",
    "checksum",
    "config_id",
    "frame",
]

#: ``INFO_REPLY.magic``: the bytes ``b"SPIM"``.
MAGIC = int.from_bytes(b"SPIM", "little")
PROTOCOL_VERSION = 3  # 2: OUTPUT / OUTPUT_REPLY, INFO_REPLY.head_dim; 3: STATUS_REPLY.stalls


class Opcode(enum.IntEnum):
    """Frame opcodes; device-to-host frames have bit 7 set, a reply is its request | 0x80."""

    NOP = 0x00           #: nothing (zero bytes resynchronise the link, docs/fpga.md)
    CMD = 0x01           #: one command word for the channel
    TABLE = 0x02         #: write one entry of the write-data side table
    RESET = 0x03         #: reset the channel (bank storage keeps its contents)
    TRACE = 0x04         #: enable (1) or disable (0) ISSUE frames
    SYNC = 0x05          #: answered once every earlier frame has been taken from the receive FIFO
    STATUS = 0x06        #: ask for a STATUS_REPLY
    INFO = 0x07          #: ask for an INFO_REPLY
    OUTPUT = 0x08        #: ask for an OUTPUT_REPLY
    ISSUE = 0x81         #: an issued command with its DRAM cycle
    RDATA = 0x82         #: the data of one RD
    SYNC_REPLY = 0x85
    STATUS_REPLY = 0x86
    INFO_REPLY = 0x87
    OUTPUT_REPLY = 0x88  #: the attention output (FP16 per dimension) and the datapath flags


class StatusFlag(enum.IntFlag):
    """``STATUS_REPLY.flags``."""

    IDLE = 0x01           #: no command pending anywhere; every earlier ISSUE / RDATA frame sent
    TRACE = 0x02          #: ISSUE frames are on
    RX_OVERRUN = 0x04     #: sticky: a received byte was dropped (receive FIFO full)
    RX_FRAME_ERROR = 0x08  #: sticky: a byte had a 0 stop bit
    RDATA_OVERFLOW = 0x10  #: sticky: RD data was lost (never happens with a conforming channel)


#: Requests the device answers with ``request | 0x80``.
REPLIES = {Opcode.SYNC: Opcode.SYNC_REPLY, Opcode.STATUS: Opcode.STATUS_REPLY,
           Opcode.INFO: Opcode.INFO_REPLY, Opcode.OUTPUT: Opcode.OUTPUT_REPLY}

#: Fixed layout of ``INFO_REPLY`` (the one frame a host reads before it knows the build).
INFO_LAYOUT = data.StructLayout({
    "magic": 32,
    "version": 8,
    "groups": 8,
    "banks_per_group": 8,
    "columns": 8,
    "column_bytes": 8,
    "rows": 16,             # rows stored per bank (row addresses wrap)
    "cycle_width": 8,
    "table_depth": 16,
    "rx_depth": 16,
    "wdata_ops": 32,        # bit o set: a command of opcode o takes one side-table entry
    "config_id": 32,        # config_id() of the channel's Config
    "divisor": 16,          # UART bit period in clock cycles (0: not a UART build)
    "head_dim": 16,         # d of the attention datapath (0: none; OUTPUT_REPLY.out is empty)
})


def checksum(data_bytes: Iterable[int]) -> int:
    """The byte that makes the sum of ``data_bytes`` and itself 0 modulo 256."""
    return -sum(data_bytes) & 0xFF


def frame(op: int, payload: bytes = b"") -> bytes:
    """One complete frame: opcode, length (little endian), payload, checksum."""
    if not 0 <= op <= 0xFF:
        raise ValueError(f"Opcode must be a byte, not {op!r}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"Payload must be at most 65535 bytes, not {len(payload)}")
    head = bytes([op, len(payload) & 0xFF, len(payload) >> 8]) + payload
    return head + bytes([checksum(head)])


def config_id(cfg: Config) -> int:
    """CRC-32 of the configuration (every preset value): ``INFO_REPLY.config_id``."""
    text = json.dumps(cfg.as_dict(), sort_keys=True, default=str)
    return zlib.crc32(text.encode())


class LinkFormat:
    """Payload layouts of every frame for one build (column width and cycle width).

    Parameters
    ----------
    column_bytes : int
        Bytes of one column access (``organisation.column_bytes``).
    cycle_width : int
        Width of the channel's cycle counter; carried in ``ceil(cycle_width / 8)`` bytes.
    head_dim : int
        d of the attention datapath (``OUTPUT_REPLY.out``: d FP16 values); 0 without one.
    """

    def __init__(self, *, column_bytes: int, cycle_width: int, head_dim: int = 0) -> None:
        if isinstance(column_bytes, bool) or not isinstance(column_bytes, int) \
                or column_bytes <= 0:
            raise ValueError(f"Column bytes must be a positive integer, not {column_bytes!r}")
        if isinstance(cycle_width, bool) or not isinstance(cycle_width, int) \
                or not 1 <= cycle_width <= 64:
            raise ValueError(f"Cycle width must be an integer from 1 to 64, not {cycle_width!r}")
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) \
                or not 0 <= head_dim < 1 << 12:
            raise ValueError(f"Head dimension must be an integer from 0 to 4095, not "
                             f"{head_dim!r}")
        self.column_bytes = column_bytes
        self.cycle_width = cycle_width
        self.head_dim = head_dim
        col = 8 * column_bytes
        cyc = 8 * (-(-cycle_width // 8))
        empty = data.StructLayout({})
        self.layouts: dict[Opcode, data.StructLayout] = {
            Opcode.NOP: empty,
            Opcode.CMD: data.StructLayout({"cmd": COMMAND}),
            Opcode.TABLE: data.StructLayout({"index": 16, "data": col}),
            Opcode.RESET: empty,
            Opcode.TRACE: data.StructLayout({"enable": 8}),
            Opcode.SYNC: data.StructLayout({"seq": 8}),
            Opcode.STATUS: empty,
            Opcode.INFO: empty,
            Opcode.ISSUE: data.StructLayout({"cmd": COMMAND, "cycle": cyc, "inserted": 8}),
            Opcode.RDATA: data.StructLayout({"group": 8, "bank": 8, "col": 8, "data": col}),
            Opcode.SYNC_REPLY: data.StructLayout({"seq": 8}),
            Opcode.STATUS_REPLY: data.StructLayout({
                "cycle": cyc, "complete": cyc, "issued": 32, "violation_count": 32,
                "fault": 8, "violations": 16, "flags": 8, "link_errors": 16, "frames": 32,
                "stalls": 32,
            }),
            Opcode.INFO_REPLY: INFO_LAYOUT,
            Opcode.OUTPUT: empty,
            # out: dimension i in bits 16 i .. 16 i + 15; dp_error: starc_hw.attention.DP_ERRORS
            Opcode.OUTPUT_REPLY: data.StructLayout({"out": 16 * head_dim, "dp_error": 8}),
        }
        for op, layout in self.layouts.items():
            assert layout.size % 8 == 0, (op, layout.size)

    def payload_bytes(self, op: Opcode) -> int:
        return self.layouts[op].size // 8

    def max_payload(self, *, to_device: bool) -> int:
        return max(self.payload_bytes(op) for op in self.layouts if (op < 0x80) == to_device)

    def pack(self, op: Opcode, fields: Mapping[str, Any] | None = None) -> bytes:
        """The complete frame of ``op`` with the payload ``fields`` (missing fields are 0; a
        field of a nested layout, such as a command word, takes its packed integer)."""
        layout = self.layouts[op]
        bits = 0
        for name, value in (fields or {}).items():
            f = layout[name]
            v = value.as_bits() if isinstance(value, data.Const) else int(value)
            if not 0 <= v < 1 << f.width:
                raise ValueError(f"{op.name}.{name} = {v} does not fit in {f.width} bits")
            bits |= v << f.offset
        return frame(op, bits.to_bytes(layout.size // 8, "little"))

    def unpack(self, op: Opcode, payload: bytes) -> data.Const:
        """The payload of a received ``op`` frame as a ``data.Const`` (fields by attribute)."""
        n = self.payload_bytes(op)
        if len(payload) != n:
            raise ValueError(f"{op.name} payload must be {n} bytes, not {len(payload)}")
        return self.layouts[op].from_bits(int.from_bytes(payload, "little"))


def _log2(n: int) -> int:
    return n.bit_length() - 1


def _check_pow2(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or value > high \
            or value & (value - 1):
        raise ValueError(f"{name} must be a power of two from {low} to {high}, not {value!r}")
    return value


class HostLink(wiring.Component):
    """Bridges the byte stream of a serial port and the streams of a PIM channel.

    Received bytes go through a receive FIFO (``rx_depth`` bytes) to the frame parser. A frame is
    acted upon only once its checksum has been checked; a frame with a bad checksum, a length
    other than its opcode's, or an unknown opcode is dropped and counted (``link_errors``). Frames
    act in the order received:

    * ``CMD`` puts its command word on :attr:`cmd`; if the opcode takes write data (``wdata_ops``,
      WR by default) the side-table entry ``arg mod table_depth`` is copied to :attr:`wdata` at
      the same time, so later ``TABLE`` frames may reuse the entry at once.
    * ``TABLE`` writes a side-table entry; ``TRACE`` switches ``ISSUE`` frames on or off.
    * ``RESET`` waits until the previous command has been taken by the channel, then clears the
      link's error counters and sticky flags and, one clock later (from a register), pulses
      :attr:`channel_reset` for one cycle (which also empties the write-data FIFO). No frame can
      act in between: the next frame's command leaves at least four clocks later.
    * ``SYNC`` / ``STATUS`` / ``INFO`` / ``OUTPUT`` queue a reply (one at a time; the parser
      waits).

    The transmitter sends, with this priority: a queued reply (a ``STATUS_REPLY`` is a snapshot of
    the status inputs taken when its first byte goes out; an ``OUTPUT_REPLY`` reads :attr:`out`
    a byte at a time), ``RDATA``, ``ISSUE``.

    Parameters
    ----------
    cfg : Config
        The channel's configuration (column width, organisation, ``config_id`` for ``INFO``).
    rows : int
        Rows stored per bank, reported in ``INFO``.
    cycle_width : int
        Width of the channel's cycle counter.
    table_depth : int
        Entries of the write-data side table (power of two, 2 .. 1024).
    rx_depth : int
        Bytes of the receive FIFO (power of two, 16 .. 4096). A host keeps at most this many
        bytes unacknowledged (docs/fpga.md, "Flow control").
    wdata_ops : tuple of Op
        Opcodes whose commands take one write-data entry (the channel's contract).
    divisor : int
        The UART bit period, only reported in ``INFO`` (0: unknown).
    head_dim : int
        d of the channel's attention datapath (0: none): the width of :attr:`out`.

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes (ready while the receive FIFO has room).
    tx : Out(stream.Signature(8))
        Bytes to send.
    cmd : Out(stream.Signature(COMMAND))
        To the channel's command stream.
    wdata : Out(stream.Signature(column_bits))
        To the channel's write-data stream, one entry per command of ``wdata_ops``.
    issue : In(stream.Signature(issue_layout(cycle_width)))
        The channel's issued commands. Accepted only while the RD-data FIFO has room for two
        entries, so a channel that answers a RD one cycle after it issued never loses data; with
        tracing on, each is sent as an ``ISSUE`` frame (the channel waits for the serial port: its
        emulated time stands still, so the schedule does not change).
    rdata : In(read_data_layout(column_bits))
    rdata_valid : In(1)
        RD data strobe of the channel (cannot be stalled).
    cycle, complete, issued, fault, violations, violation_count : In
        The channel's status, reported in ``STATUS_REPLY``.
    stalls : In(32)
        Emulated cycles a command waited for the datapath (``STATUS_REPLY.stalls``; 0 on a
        channel without one).
    out : In(16 * max(head_dim, 1))
        The attention output (FP16 per dimension), sent in ``OUTPUT_REPLY`` a byte at a time, each
        read as it goes out (no buffer as wide as the output): settled once the channel is idle
        (``STATUS_REPLY`` ``IDLE``), which is when a host asks for it.
    dp_error : In(8)
        The datapath's sticky flags, sent in ``OUTPUT_REPLY``.
    busy : In(1)
        The datapath still has results on the way: ``STATUS_REPLY`` is not ``IDLE``.
    rx_overrun, rx_frame_error : In(1)
        Sticky flags of the UART receiver, reported in ``STATUS_REPLY``.
    rx_clear : Out(1)
        Pulses with :attr:`channel_reset`, to clear the receiver's flags.
    channel_reset : Out(1)
        One-cycle pulse per ``RESET`` frame, straight from a register.
    trace : Out(1)
        ``ISSUE`` frames are on.
    link_errors : Out(16)
        Dropped frames (saturating).
    """

    def __init__(self, *, cfg: Config, rows: int, cycle_width: int, table_depth: int = 32,
                 rx_depth: int = 512, wdata_ops: tuple[Op, ...] = (Op.WR,),
                 divisor: int = 0, head_dim: int = 0) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows < 1 << 16:
            raise ValueError(f"Rows must be an integer from 1 to 65535, not {rows!r}")
        self._table_depth = _check_pow2("Table depth", table_depth, 2, 1024)
        self._rx_depth = _check_pow2("Receive FIFO depth", rx_depth, 16, 4096)
        if not isinstance(wdata_ops, tuple) or not all(isinstance(o, Op) for o in wdata_ops):
            raise TypeError(f"Write-data opcodes must be a tuple of starc.isa.Op, not "
                            f"{wdata_ops!r}")
        if isinstance(divisor, bool) or not isinstance(divisor, int) \
                or not 0 <= divisor < 1 << 16:
            raise ValueError(f"Divisor must be an integer from 0 to 65535, not {divisor!r}")
        self._fmt = LinkFormat(column_bytes=cfg.org.column_bytes, cycle_width=cycle_width,
                               head_dim=head_dim)
        self._head_dim = head_dim
        self._cfg = cfg
        self._rows = rows
        self._cw = cycle_width
        self._wdata_ops = wdata_ops
        self._divisor = divisor
        col = cfg.org.column_bytes * 8
        self.rdata_layout = read_data_layout(col)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "cmd": Out(stream.Signature(COMMAND)),
            "wdata": Out(stream.Signature(col)),
            "issue": In(stream.Signature(issue_layout(cycle_width))),
            "rdata": In(self.rdata_layout),
            "rdata_valid": In(1),
            "cycle": In(cycle_width),
            "complete": In(cycle_width),
            "issued": In(32),
            "fault": In(8),
            "violations": In(16),
            "violation_count": In(32),
            "stalls": In(32),
            "out": In(16 * max(head_dim, 1)),
            "dp_error": In(8),
            "busy": In(1),
            "rx_overrun": In(1),
            "rx_frame_error": In(1),
            "rx_clear": Out(1),
            "channel_reset": Out(1),
            "trace": Out(1),
            "link_errors": Out(16),
        })

    @property
    def format(self) -> LinkFormat:
        return self._fmt

    def info(self) -> dict[str, int]:
        """The fields of this build's ``INFO_REPLY``."""
        org = self._cfg.org
        return {
            "magic": MAGIC, "version": PROTOCOL_VERSION, "groups": org.groups_per_channel,
            "banks_per_group": org.banks_per_group, "columns": org.columns_per_row,
            "column_bytes": org.column_bytes, "rows": self._rows, "cycle_width": self._cw,
            "table_depth": self._table_depth, "rx_depth": self._rx_depth,
            "wdata_ops": sum(1 << int(o) for o in self._wdata_ops),
            "config_id": config_id(self._cfg), "divisor": self._divisor,
            "head_dim": self._head_dim,
        }

    def elaborate(self, platform: object) -> Module:  # noqa: C901 - one parser, one FSM
        m = Module()
        fmt = self._fmt
        L = fmt.layouts
        col_bits = self._cfg.org.column_bytes * 8
        max_rx = fmt.max_payload(to_device=True)
        # OUTPUT_REPLY is sent a byte at a time from its inputs (no buffer as wide as d x 16 bits:
        # Yosys 0.70's opt passes assert on a 1029-bit load multiplexer of a shared buffer)
        max_tx = max(fmt.payload_bytes(o) for o in fmt.layouts
                     if o >= 0x80 and o != Opcode.OUTPUT_REPLY)

        # a register: the pulse leaves in the clock after the RESET frame's EXEC, so the frame
        # parser's decoding (opcode, checksum) is not in the same clock as the reset's fan-out
        # (the LSR input of every channel flip-flop: about 14000 in pim-mid)
        reset_pulse = Signal()
        m.d.sync += reset_pulse.eq(0)
        m.d.comb += [self.channel_reset.eq(reset_pulse), self.rx_clear.eq(reset_pulse)]

        # ---- receive FIFO -----------------------------------------------------------------
        m.submodules.rx_fifo = rx_fifo = SyncFIFOBuffered(width=8, depth=self._rx_depth)
        wiring.connect(m, wiring.flipped(self.rx), rx_fifo.w_stream)
        byte = rx_fifo.r_data
        have = rx_fifo.r_rdy
        take = Signal()
        m.d.comb += rx_fifo.r_en.eq(take)

        # ---- write-data side table and FIFO -----------------------------------------------
        m.submodules.table = table = Memory(shape=col_bits, depth=self._table_depth, init=[])
        t_rd = table.read_port()
        t_wr = table.write_port()
        wfifo = SyncFIFOBuffered(width=col_bits, depth=4)
        m.submodules.wdata_fifo = ResetInserter(reset_pulse)(wfifo)
        wiring.connect(m, wfifo.r_stream, wiring.flipped(self.wdata))

        # ---- RD data FIFO ------------------------------------------------------------------
        rdepth = 8
        m.submodules.rdata_fifo = rfifo = SyncFIFOBuffered(width=self.rdata_layout.size,
                                                           depth=rdepth)
        m.d.comb += [rfifo.w_en.eq(self.rdata_valid), rfifo.w_data.eq(self.rdata)]
        rdata_overflow = Signal()
        with m.If(self.rdata_valid & ~rfifo.w_rdy):
            m.d.sync += rdata_overflow.eq(1)
        room = rfifo.level <= rdepth - 2
        rd_inflight = Signal()
        m.d.sync += rd_inflight.eq(self.issue.valid & self.issue.ready)

        # ---- frame parser ------------------------------------------------------------------
        op = Signal(8)
        length = Signal(16)
        count = Signal(16)
        rsum = Signal(8)
        buf = Signal(8 * max_rx)
        errors = Signal(16)
        frames = Signal(32)
        reply_valid = Signal()
        reply_op = Signal(8)
        reply_seq = Signal(8)
        m.d.comb += self.link_errors.eq(errors)

        def payload(o: Opcode) -> data.View:
            n = fmt.payload_bytes(o)
            return data.View(L[o], buf[8 * (max_rx - n):])

        def count_error() -> None:
            with m.If(errors != 0xFFFF):
                m.d.sync += errors.eq(errors + 1)

        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += self.cmd.valid.eq(0)

        cmd_word = payload(Opcode.CMD).cmd
        needs_data = Signal()
        m.d.comb += needs_data.eq(Cat(*[cmd_word.op == int(o) for o in self._wdata_ops]).any()
                                  if self._wdata_ops else 0)
        lg_t = _log2(self._table_depth)
        m.d.comb += [t_rd.addr.eq(cmd_word.arg[:lg_t]),
                     t_wr.addr.eq(payload(Opcode.TABLE).index[:lg_t]),
                     t_wr.data.eq(payload(Opcode.TABLE).data),
                     wfifo.w_data.eq(t_rd.data)]

        new_length = Cat(length[:8], byte)
        expected = Signal(16)
        known = Signal()
        with m.Switch(op):
            for o in Opcode:
                if o < 0x80:
                    with m.Case(o):
                        m.d.comb += [expected.eq(fmt.payload_bytes(o)), known.eq(1)]

        with m.FSM(name="rx_fsm"):
            with m.State("OP"):
                m.d.comb += take.eq(have)
                with m.If(have):
                    m.d.sync += [op.eq(byte), rsum.eq(byte)]
                    m.next = "LEN0"
            with m.State("LEN0"):
                m.d.comb += take.eq(have)
                with m.If(have):
                    m.d.sync += [length[:8].eq(byte), rsum.eq(rsum + byte)]
                    m.next = "LEN1"
            with m.State("LEN1"):
                m.d.comb += take.eq(have)
                with m.If(have):
                    m.d.sync += [length.eq(new_length), rsum.eq(rsum + byte), count.eq(0)]
                    with m.If(known & (new_length == expected)):
                        with m.If(new_length == 0):
                            m.next = "SUM"
                        with m.Else():
                            m.next = "BODY"
                    with m.Elif(new_length <= max_rx):
                        m.next = "SKIP"
                    with m.Else():
                        count_error()
                        m.next = "OP"
            with m.State("BODY"):
                m.d.comb += take.eq(have)
                with m.If(have):
                    m.d.sync += [buf.eq(Cat(buf[8:], byte)), rsum.eq(rsum + byte),
                                 count.eq(count + 1)]
                    with m.If(count + 1 == length):
                        m.next = "SUM"
            with m.State("SUM"):
                m.d.comb += take.eq(have)
                with m.If(have):
                    with m.If((rsum + byte)[:8] == 0):
                        m.d.sync += frames.eq(frames + 1)
                        m.next = "EXEC"
                    with m.Else():
                        count_error()
                        m.next = "OP"
            with m.State("SKIP"):
                # the payload and the checksum of a frame that is dropped anyway
                m.d.comb += take.eq(have)
                with m.If(have):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == length):
                        count_error()
                        m.next = "OP"
            with m.State("EXEC"), m.Switch(op):
                with m.Case(Opcode.CMD), m.If(~self.cmd.valid & wfifo.w_rdy):
                    m.d.sync += [self.cmd.payload.eq(cmd_word), self.cmd.valid.eq(1)]
                    with m.If(needs_data):
                        m.next = "WPUSH"
                    with m.Else():
                        m.next = "OP"
                with m.Case(Opcode.TABLE):
                    m.d.comb += t_wr.en.eq(1)
                    m.next = "OP"
                with m.Case(Opcode.RESET), m.If(~self.cmd.valid):
                    m.d.sync += [reset_pulse.eq(1), errors.eq(0), rdata_overflow.eq(0)]
                    m.next = "OP"
                with m.Case(Opcode.TRACE):
                    m.d.sync += self.trace.eq(payload(Opcode.TRACE).enable[0])
                    m.next = "OP"
                with m.Case(Opcode.SYNC, Opcode.STATUS, Opcode.INFO, Opcode.OUTPUT), \
                        m.If(~reply_valid):
                    m.d.sync += [reply_valid.eq(1), reply_op.eq(op | 0x80),
                                 reply_seq.eq(payload(Opcode.SYNC).seq)]
                    m.next = "OP"
                with m.Default():
                    m.next = "OP"
            with m.State("WPUSH"):
                m.d.comb += wfifo.w_en.eq(1)
                m.next = "OP"

        # ---- transmitter -------------------------------------------------------------------
        tx_op = Signal(8)
        tx_len = Signal(16)
        tx_buf = Signal(8 * max_tx)
        tx_left = Signal(16)
        tx_sum = Signal(8)
        tx_out = Signal()                   # the frame is OUTPUT_REPLY: bytes from out_bytes
        out_bytes = [self.dp_error]
        if self._head_dim:
            out_bytes = [self.out[8 * i:8 * i + 8] for i in range(2 * self._head_dim)] + out_bytes
        out_idx = Signal(range(len(out_bytes)))
        out_byte = Array(out_bytes)[out_idx]
        tx_fire = self.tx.valid & self.tx.ready
        with m.If(tx_fire):
            m.d.sync += tx_sum.eq(tx_sum + self.tx.payload)

        # An issued command to trace waits one clock in a register before the transmitter loads
        # its ISSUE frame, so the issue handshake (the controller's decision and the datapath's
        # readiness) ends at this register, not at the transmitter's frame registers across the
        # device (pim-mid's routed critical path with the split scaling step: the handshake ->
        # the UART transmitter's enable -> tx_left -> tx_buf, 20.67 ns, 18.25 ns of routing).
        issue_q = Signal(self.issue.payload.shape())
        issue_q_valid = Signal()

        idle = Signal()
        m.d.comb += idle.eq(~self.cmd.valid & self.cmd.ready & ~self.issue.valid & ~rd_inflight
                            & ~issue_q_valid & ~rfifo.r_rdy & ~wfifo.r_rdy & ~self.busy)
        flags = Signal(8)
        m.d.comb += flags.eq(Cat(idle, self.trace, self.rx_overrun, self.rx_frame_error,
                                 rdata_overflow))

        status = Signal(L[Opcode.STATUS_REPLY])
        m.d.comb += [
            status.cycle.eq(self.cycle), status.complete.eq(self.complete),
            status.issued.eq(self.issued), status.violation_count.eq(self.violation_count),
            status.fault.eq(self.fault), status.violations.eq(self.violations),
            status.flags.eq(flags), status.link_errors.eq(errors), status.frames.eq(frames),
            status.stalls.eq(self.stalls),
        ]
        info = L[Opcode.INFO_REPLY].const(self.info())
        sync_reply = Signal(L[Opcode.SYNC_REPLY])
        m.d.comb += sync_reply.seq.eq(reply_seq)
        issue = Signal(L[Opcode.ISSUE])
        m.d.comb += [issue.cmd.eq(issue_q.cmd), issue.cycle.eq(issue_q.cycle),
                     issue.inserted.eq(issue_q.inserted)]
        rdata_in = data.View(self.rdata_layout, rfifo.r_data)
        rdata = Signal(L[Opcode.RDATA])
        m.d.comb += [rdata.group.eq(rdata_in.group), rdata.bank.eq(rdata_in.bank),
                     rdata.col.eq(rdata_in.col), rdata.data.eq(rdata_in.data)]

        # ready does not depend on valid: the transmitter is free for an ISSUE frame (no reply,
        # no RD data, no ISSUE frame before it); an issued command then leaves on valid & ready,
        # into the register, and its frame is loaded in the next clock before anything else
        tx_idle = Signal()
        can_issue = Signal()
        m.d.comb += [can_issue.eq(tx_idle & ~reply_valid & ~rfifo.r_rdy & ~issue_q_valid),
                     self.issue.ready.eq(room & (~self.trace | can_issue))]
        with m.If(self.trace & self.issue.valid & self.issue.ready):
            m.d.sync += [issue_q.eq(self.issue.payload), issue_q_valid.eq(1)]

        def load(o: Opcode, value: Any) -> None:
            n = fmt.payload_bytes(o)
            m.d.sync += [tx_op.eq(o), tx_len.eq(n), tx_left.eq(n), tx_sum.eq(0),
                         tx_out.eq(o == Opcode.OUTPUT_REPLY), out_idx.eq(0)]
            if value is not None:
                m.d.sync += tx_buf.eq(value)

        with m.FSM(name="tx_fsm"):
            with m.State("IDLE"):
                m.d.comb += tx_idle.eq(1)
                with m.If(issue_q_valid):
                    m.d.sync += issue_q_valid.eq(0)
                    load(Opcode.ISSUE, issue.as_value())
                    m.next = "OP"
                with m.Elif(reply_valid):
                    m.d.sync += reply_valid.eq(0)
                    with m.Switch(reply_op):
                        with m.Case(Opcode.STATUS_REPLY):
                            load(Opcode.STATUS_REPLY, status.as_value())
                        with m.Case(Opcode.INFO_REPLY):
                            load(Opcode.INFO_REPLY, info.as_value())
                        with m.Case(Opcode.OUTPUT_REPLY):
                            load(Opcode.OUTPUT_REPLY, None)
                        with m.Default():
                            load(Opcode.SYNC_REPLY, sync_reply.as_value())
                    m.next = "OP"
                with m.Elif(rfifo.r_rdy):
                    m.d.comb += rfifo.r_en.eq(1)
                    load(Opcode.RDATA, rdata.as_value())
                    m.next = "OP"
            with m.State("OP"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_op)]
                with m.If(self.tx.ready):
                    m.next = "LEN0"
            with m.State("LEN0"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_len[:8])]
                with m.If(self.tx.ready):
                    m.next = "LEN1"
            with m.State("LEN1"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_len[8:])]
                with m.If(self.tx.ready):
                    with m.If(tx_left == 0):
                        m.next = "SUM"
                    with m.Else():
                        m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.eq(Mux(tx_out, out_byte, tx_buf[:8]))]
                with m.If(self.tx.ready):
                    m.d.sync += [tx_buf.eq(tx_buf >> 8), tx_left.eq(tx_left - 1),
                                 out_idx.eq(out_idx + 1)]
                    with m.If(tx_left == 1):
                        m.next = "SUM"
            with m.State("SUM"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(-tx_sum)]
                with m.If(self.tx.ready):
                    m.next = "IDLE"
        return m

"""Host driver of the board's link protocol (docs/fpga.md), over any byte transport.

A transport is any object with ``read(n) -> bytes`` (blocking until ``n`` bytes came, or raising
on a timeout) and ``write(data)``: a serial port object for a real ULX3S, or the cocotb UART
model's transport in simulation (:mod:`starc_sim.tb_fpga`). The driver uses the frame layouts of
:mod:`starc_hw.hostlink`, so host and gateware share one definition.

:class:`HostDriver` loads a memory image through WR commands, runs programs (with the write-data
side table filled on the way), collects the issue trace and RD data, and polls the status.
:func:`decode_step_selftest` is the end-to-end check: a compiled memory image, a dense decode step
and a read-back, each compared with the golden model (timing cycle for cycle, data bit for bit).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from starc.config import Config
from starc.isa import PROGRAM_DTYPE, Op, decode, encode, make_program
from starc_hw.hostlink import (
    MAGIC,
    PROTOCOL_VERSION,
    LinkFormat,
    Opcode,
    StatusFlag,
    config_id,
    frame,
)

__all__ = [
    "DeviceInfo",
    "HostDriver",
    "LinkError",
    "Run",
    "SerialTransport",
    "Status",
    "Transport",
    "check_step",
    "decode_step_selftest",
    "load_program",
]

#: Zero bytes that bring a parser back to frame boundaries from anywhere (docs/fpga.md).
RESYNC_BYTES = 80


class Transport(Protocol):
    def read(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> Any: ...


class LinkError(RuntimeError):
    """The device answered something the protocol does not allow (or nothing at all)."""


class SerialTransport:
    """A serial port as a :class:`Transport`: any pyserial URL, so ``/dev/ttyUSB0`` reaches a
    ULX3S's FTDI port and ``socket://127.0.0.1:PORT`` a co-simulated board
    (:mod:`starc_sim.tb_fpga`'s ``serve`` test) through the same code.

    ``read(n)`` returns fewer than ``n`` bytes only after ``timeout_s`` without them (the driver
    then raises :class:`LinkError`).
    """

    def __init__(self, url: str, *, baud: int, timeout_s: float = 5.0) -> None:
        import serial

        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=timeout_s)
        except (serial.SerialException, ValueError, OSError) as e:
            raise LinkError(f"cannot open the serial port {url!r}: {e}") from None
        self.url = url

    def read(self, n: int) -> bytes:
        return bytes(self._port.read(n))

    def write(self, data: bytes) -> int:
        return int(self._port.write(data) or 0)

    def close(self) -> None:
        self._port.close()


@dataclass(frozen=True)
class DeviceInfo:
    """``INFO_REPLY`` of a build."""

    version: int
    groups: int
    banks_per_group: int
    columns: int
    column_bytes: int
    rows: int
    cycle_width: int
    table_depth: int
    rx_depth: int
    wdata_ops: frozenset[Op]
    config_id: int
    divisor: int
    head_dim: int = 0   #: d of the board's attention datapath (0: none)

    @property
    def lanes(self) -> int:
        return self.column_bytes // 2


@dataclass(frozen=True)
class Status:
    """``STATUS_REPLY``."""

    cycle: int
    complete: int
    issued: int
    violation_count: int
    fault: int
    violations: int
    flags: StatusFlag
    link_errors: int
    frames: int
    #: emulated cycles a command waited for the datapath (FPGA clocks: ``fold`` each)
    stalls: int = 0

    @property
    def idle(self) -> bool:
        return bool(self.flags & StatusFlag.IDLE)


@dataclass(frozen=True)
class Issue:
    """One ``ISSUE`` frame: the command word, its DRAM cycle, inserted by the controller."""

    word: int
    cycle: int
    inserted: bool


@dataclass
class Run:
    """What one :meth:`HostDriver.run` saw."""

    program: np.ndarray                 #: the program as sent (side-table indices remapped)
    status: Status
    issues: list[Issue] = field(default_factory=list)
    reads: list[tuple[int, int, int, NDArray[np.uint16]]] = field(default_factory=list)
    seconds: float = 0.0


class HostDriver:
    """The host end of the link.

    Parameters
    ----------
    transport : Transport
        Byte transport to the board.
    cfg : Config, optional
        The channel configuration; :meth:`connect` then checks that the build was made from it.
    """

    def __init__(self, transport: Transport, *, cfg: Config | None = None) -> None:
        if not (callable(getattr(transport, "read", None))
                and callable(getattr(transport, "write", None))):
            raise TypeError(f"Transport must have read(n) and write(data) methods, not "
                            f"{transport!r}")
        self._t = transport
        self._cfg = cfg
        self.info: DeviceInfo | None = None
        self._fmt: LinkFormat | None = None
        self._seq = 0
        self._unacked: deque[int] = deque()
        self._since_sync = 0
        self._window = 0
        self._replies: deque[tuple[Opcode, bytes]] = deque()
        self.issues: list[Issue] = []
        self.reads: list[tuple[int, int, int, NDArray[np.uint16]]] = []
        self.bytes_sent = 0
        self.bytes_received = 0

    # ---- framing --------------------------------------------------------------------------
    @property
    def format(self) -> LinkFormat:
        if self._fmt is None:
            raise LinkError("not connected: call connect() first")
        return self._fmt

    def _write(self, data: bytes) -> None:
        self._t.write(data)
        self.bytes_sent += len(data)

    def _read_exact(self, n: int) -> bytes:
        data = self._t.read(n)
        if len(data) != n:
            raise LinkError(f"expected {n} bytes from the device, got {len(data)} (timeout?)")
        self.bytes_received += n
        return data

    def _read_frame(self) -> tuple[Opcode, bytes]:
        head = self._read_exact(3)
        n = head[1] | head[2] << 8
        rest = self._read_exact(n + 1)
        if (sum(head) + sum(rest)) & 0xFF:
            raise LinkError(f"bad checksum in a frame with opcode {head[0]:#04x}")
        try:
            op = Opcode(head[0])
        except ValueError:
            raise LinkError(f"unknown opcode {head[0]:#04x} from the device") from None
        if op < 0x80:
            raise LinkError(f"the device sent a host-to-device opcode {op.name}")
        return op, rest[:-1]

    def _pump(self) -> None:
        """Read one frame: results are collected, replies queued."""
        op, payload = self._read_frame()
        if op is Opcode.ISSUE:
            p = self.format.unpack(op, payload)
            self.issues.append(Issue(int(p.cmd.as_bits()), int(p.cycle), bool(p.inserted)))
        elif op is Opcode.RDATA:
            p = self.format.unpack(op, payload)
            data = np.frombuffer(int(p.data).to_bytes(self.format.column_bytes, "little"),
                                 dtype="<u2").copy()
            self.reads.append((int(p.group), int(p.bank), int(p.col), data))
        else:
            self._replies.append((op, payload))

    def _reply(self, op: Opcode) -> bytes:
        while True:
            while self._replies:
                got, payload = self._replies.popleft()
                if got is op:
                    return payload
                if got is not Opcode.SYNC_REPLY:
                    raise LinkError(f"unexpected {got.name} while waiting for {op.name}")
                self._ack(payload)
            self._pump()

    def _ack(self, payload: bytes) -> None:
        seq = payload[0]
        if not self._unacked or self._unacked[0] != seq:
            raise LinkError(f"SYNC reply {seq} out of order (waiting for "
                            f"{list(self._unacked)})")
        self._unacked.popleft()

    def _send(self, data: bytes) -> None:
        """Send with flow control: at most ``rx_depth`` bytes not yet taken by the parser."""
        if self._window and self._since_sync + len(data) > self._window:
            self._emit_sync()
            while len(self._unacked) > 1:
                self._wait_ack()
        self._write(data)
        self._since_sync += len(data)

    def _emit_sync(self) -> None:
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        self._unacked.append(seq)
        self._write(self.format.pack(Opcode.SYNC, {"seq": seq}))
        self._since_sync = 0

    def _wait_ack(self) -> None:
        target = self._unacked[0]
        while self._unacked and self._unacked[0] == target:
            if self._replies:
                op, payload = self._replies.popleft()
                if op is not Opcode.SYNC_REPLY:
                    raise LinkError(f"unexpected {op.name} while waiting for a SYNC reply")
                self._ack(payload)
            else:
                self._pump()

    def sync(self) -> None:
        """Wait until the device has taken every frame sent so far from its receive FIFO."""
        self._emit_sync()
        while self._unacked:
            self._wait_ack()

    # ---- requests -------------------------------------------------------------------------
    def resync(self) -> None:
        """Bring the device's parser back to a frame boundary (zero bytes are NOP frames)."""
        self._write(bytes(RESYNC_BYTES))

    def connect(self) -> DeviceInfo:
        """Resynchronise, read ``INFO`` and check it (and the configuration, if given)."""
        self.resync()
        self._write(frame(Opcode.INFO))
        while True:
            op, payload = self._read_frame()
            if op is Opcode.INFO_REPLY:
                break
        fmt0 = LinkFormat(column_bytes=2, cycle_width=8)  # INFO's layout does not depend on it
        p = fmt0.unpack(Opcode.INFO_REPLY, payload)
        if p.magic != MAGIC:
            raise LinkError(f"not a starc-pim board (magic {p.magic:#010x})")
        if p.version != PROTOCOL_VERSION:
            raise LinkError(f"protocol version {p.version}, this driver speaks "
                            f"{PROTOCOL_VERSION}")
        ops = frozenset(o for o in Op if p.wdata_ops >> int(o) & 1)
        info = DeviceInfo(version=p.version, groups=p.groups, banks_per_group=p.banks_per_group,
                          columns=p.columns, column_bytes=p.column_bytes, rows=p.rows,
                          cycle_width=p.cycle_width, table_depth=p.table_depth,
                          rx_depth=p.rx_depth, wdata_ops=ops, config_id=p.config_id,
                          divisor=p.divisor, head_dim=p.head_dim)
        if self._cfg is not None and config_id(self._cfg) != info.config_id:
            raise LinkError(f"the board was built for another configuration (config id "
                            f"{info.config_id:#010x}, {self._cfg.name} is "
                            f"{config_id(self._cfg):#010x})")
        self.info = info
        self._fmt = LinkFormat(column_bytes=info.column_bytes, cycle_width=info.cycle_width,
                               head_dim=info.head_dim)
        sync_bytes = len(self._fmt.pack(Opcode.SYNC, {"seq": 0}))
        self._window = info.rx_depth // 2 - sync_bytes
        return info

    def status(self) -> Status:
        self._send(frame(Opcode.STATUS))
        p = self.format.unpack(Opcode.STATUS_REPLY, self._reply(Opcode.STATUS_REPLY))
        return Status(cycle=p.cycle, complete=p.complete, issued=p.issued,
                      violation_count=p.violation_count, fault=p.fault,
                      violations=p.violations, flags=StatusFlag(p.flags),
                      link_errors=p.link_errors, frames=p.frames, stalls=p.stalls)

    def output(self) -> tuple[NDArray[np.uint16], int]:
        """The attention datapath's output (FP16 bit patterns, one per dimension) and its sticky
        error flags (:data:`starc_hw.attention.DP_ERRORS`). The output is that of the last
        decode step since the last :meth:`reset`."""
        info = self._need_info()
        if not info.head_dim:
            raise LinkError("this board has no attention datapath (INFO head_dim 0): build a "
                            "size with head_dim, e.g. --size pim-tiny")
        self._send(frame(Opcode.OUTPUT))
        p = self.format.unpack(Opcode.OUTPUT_REPLY, self._reply(Opcode.OUTPUT_REPLY))
        raw = int(p.out).to_bytes(2 * info.head_dim, "little")
        return np.frombuffer(raw, dtype="<u2").astype(np.uint16), int(p.dp_error)

    def reset(self) -> None:
        """Reset the channel (cycle 0, banks closed; bank storage keeps its contents)."""
        self._send(frame(Opcode.RESET))

    def set_trace(self, on: bool) -> None:
        self._send(self.format.pack(Opcode.TRACE, {"enable": int(on)}))

    def write_table(self, index: int, data: NDArray[np.uint16]) -> None:
        """Side-table entry ``index``: one column of FP16 bit patterns (``lanes`` of them)."""
        info = self._need_info()
        col = np.ascontiguousarray(np.asarray(data, dtype=np.uint16))
        if col.shape != (info.lanes,):
            raise ValueError(f"a side-table entry holds {info.lanes} FP16 values, not shape "
                             f"{col.shape}")
        if not 0 <= index < info.table_depth:
            raise ValueError(f"side-table index {index} outside 0..{info.table_depth - 1}")
        value = int.from_bytes(col.astype("<u2").tobytes(), "little")
        self._send(self.format.pack(Opcode.TABLE, {"index": index, "data": value}))

    def send_command(self, word: int) -> None:
        self._send(self.format.pack(Opcode.CMD, {"cmd": word}))

    def _need_info(self) -> DeviceInfo:
        if self.info is None:
            raise LinkError("not connected: call connect() first")
        return self.info

    # ---- programs -------------------------------------------------------------------------
    def run(self, prog: np.ndarray, wdata: NDArray | None = None, *, trace: bool = True,
            timeout_s: float = 60.0, poll: Callable[[], None] | None = None) -> Run:
        """Send ``prog`` (fill the side table from ``wdata`` on the way), wait until the channel
        is idle, return the issue trace (if ``trace``), the RD data and the final status.

        ``wdata``: FP16 bit patterns ``[n, lanes]``, addressed by the ``arg`` of WR and WRGB
        (golden-model semantics). If every index fits the side table, the entries are written
        once and ``arg`` is kept; otherwise each such command gets the next entry of a ring and
        its ``arg`` is rewritten (:attr:`Run.program` is what was sent).
        """
        info = self._need_info()
        if prog.dtype != PROGRAM_DTYPE:
            raise ValueError(f"program must have dtype starc.isa.PROGRAM_DTYPE, not {prog.dtype}")
        table = np.zeros((0, info.lanes), np.uint16) if wdata is None else \
            _as_bits(np.asarray(wdata))
        if table.ndim != 2 or table.shape[1] != info.lanes:
            raise ValueError(f"wdata must have shape [n, {info.lanes}], not {table.shape}")
        data_ops = (int(Op.WR), int(Op.WRGB))
        uses = np.isin(prog["op"], data_ops)
        if uses.any() and int(prog["arg"][uses].max()) >= len(table):
            raise ValueError(f"the program reads wdata[{int(prog['arg'][uses].max())}] but "
                             f"wdata has {len(table)} rows")
        sent = prog.copy()
        ring = len(table) > info.table_depth
        self.issues, self.reads = [], []
        t0 = time.perf_counter()
        self.set_trace(trace)
        if not ring:
            needed = sorted(set(prog["arg"][uses].tolist()))
            for i in needed:
                self.write_table(i, table[i])
        slot = 0
        for i, cmd in enumerate(prog):
            if ring and uses[i]:
                self.write_table(slot, table[int(cmd["arg"])])
                sent[i]["arg"] = slot
                slot = (slot + 1) % info.table_depth
            self.send_command(encode(sent[i]))
        status = self.wait_idle(timeout_s=timeout_s, poll=poll)
        if trace:
            self.set_trace(False)
        return Run(program=sent, status=status, issues=self.issues, reads=self.reads,
                   seconds=time.perf_counter() - t0)

    def wait_idle(self, *, timeout_s: float = 60.0,
                  poll: Callable[[], None] | None = None) -> Status:
        """Poll ``STATUS`` until the channel is idle or stopped on a fault."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status()
            if st.idle or st.fault:
                return st
            if time.monotonic() > deadline:
                raise LinkError(f"the channel is not idle after {timeout_s} s: {st}")
            if poll is not None:
                poll()

    def load_image(self, image: Mapping[tuple[int, int, int], NDArray], *,
                   timeout_s: float = 120.0) -> Run:
        """Write a memory image ``(group, bank, row) -> [columns, lanes]`` into the banks with
        real commands (:func:`load_program`), issue trace off. Checks that nothing failed."""
        info = self._need_info()
        prog, wdata = load_program(image, groups=info.groups, banks_per_group=info.banks_per_group,
                                   columns=info.columns, lanes=info.lanes, rows=info.rows)
        run = self.run(prog, wdata, trace=False, timeout_s=timeout_s)
        _check_clean(run.status, "image load")
        return run


def _as_bits(a: NDArray) -> NDArray[np.uint16]:
    if a.dtype == np.float16:
        return a.view(np.uint16)
    if a.dtype != np.uint16:
        raise ValueError(f"data must be FP16 bit patterns (uint16) or float16, not {a.dtype}")
    return a


def _check_clean(st: Status, what: str) -> None:
    problems = []
    if st.fault:
        problems.append(f"controller fault {st.fault}")
    if st.violation_count:
        problems.append(f"{st.violation_count} DRAM timing violations (flags {st.violations:#x})")
    if st.link_errors:
        problems.append(f"{st.link_errors} dropped frames")
    bad = st.flags & (StatusFlag.RX_OVERRUN | StatusFlag.RX_FRAME_ERROR
                      | StatusFlag.RDATA_OVERFLOW)
    if bad:
        problems.append(f"link flags {bad!r}")
    if problems:
        raise LinkError(f"{what}: " + "; ".join(problems))


def load_program(image: Mapping[tuple[int, int, int], NDArray], *, groups: int,
                 banks_per_group: int, columns: int, lanes: int, rows: int
                 ) -> tuple[np.ndarray, NDArray[np.uint16]]:
    """The WR program that writes ``image`` and its write data: per row ``r`` (ascending),
    ``ACTAB r``, one WR per (group, bank, column) of the image in that row, ``PREA``."""
    by_row: dict[int, list[tuple[int, int, NDArray[np.uint16]]]] = {}
    for (g, b, r), arr in image.items():
        a = _as_bits(np.asarray(arr))
        if not (0 <= g < groups and 0 <= b < banks_per_group):
            raise ValueError(f"image row {(g, b, r)}: no bank {b} in group {g} on this board")
        if not 0 <= r < rows:
            raise ValueError(f"image row {(g, b, r)}: the board stores rows 0..{rows - 1}")
        if a.shape != (columns, lanes):
            raise ValueError(f"image row {(g, b, r)} has shape {a.shape}, not "
                             f"({columns}, {lanes})")
        by_row.setdefault(int(r), []).append((int(g), int(b), a))
    cmds: list[tuple[int, ...]] = []
    data: list[NDArray[np.uint16]] = []
    for r in sorted(by_row):
        cmds.append((Op.ACTAB, 0, 0, 0, r))
        for g, b, a in sorted(by_row[r], key=lambda x: (x[0], x[1])):
            for c in range(columns):
                cmds.append((Op.WR, g, b, c, 0, len(data)))
                data.append(a[c])
        cmds.append((Op.PREA,))
    wdata = np.array(data, dtype=np.uint16).reshape(-1, lanes)
    return make_program(cmds), wdata


# ---- end-to-end check against the golden model ----------------------------------------------
class MismatchError(AssertionError):
    """The board disagreed with the golden model."""


def check_step(drv: HostDriver, cfg: Config, *, image: Mapping[tuple[int, int, int], NDArray],
               prog: np.ndarray, wdata: NDArray, head_dim: int,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Load ``image`` through WR commands, run the decode-step program ``prog`` (query words
    ``wdata``) with the issue trace on, and compare with the golden model: every issue (command,
    cycle, inserted refresh) and the cycle count with :func:`starc.golden.timing.schedule`; on a
    board with the attention datapath the output (``OUTPUT``) with
    :func:`starc.golden.functional.execute` bit for bit, and no datapath flag. Returns a summary
    (wall times included); raises :class:`MismatchError`."""
    from starc.golden import functional, timing

    info = drv.info or drv.connect()
    if config_id(cfg) != info.config_id:
        raise LinkError("the board was built for another configuration")
    summary: dict[str, Any] = {"head_dim": head_dim, "image_rows": len(image)}
    drv.reset()
    t0 = time.perf_counter()
    load = drv.load_image(image)
    summary["load_commands"] = len(load.program)
    summary["load_seconds"] = time.perf_counter() - t0
    log(f"image: {len(image)} bank rows, {len(load.program)} commands, "
        f"{summary['load_seconds']:.1f} s")
    drv.reset()
    run = drv.run(prog, wdata, trace=True)
    _check_clean(run.status, "decode step")
    sched = timing.schedule(run.program, cfg)
    golden = [Issue(encode(c), int(t), bool(x))
              for c, t, x in zip(sched.program, sched.issue.tolist(), sched.inserted.tolist(),
                                 strict=True)]
    errors = [f"issue #{i}: board {_describe(a)}, golden {_describe(b)}"
              for i, (a, b) in enumerate(zip(run.issues, golden, strict=False)) if a != b]
    if len(run.issues) != len(golden):
        errors.append(f"{len(run.issues)} issues from the board, {len(golden)} in the golden "
                      f"schedule")
    if run.status.complete != sched.total_cycles:
        errors.append(f"cycle count: board {run.status.complete}, golden {sched.total_cycles}")
    if errors:
        raise MismatchError("decode step differs from the golden timing model:\n  "
                            + "\n  ".join(errors[:20]))
    summary.update(step_commands=len(prog), step_issues=len(run.issues),
                   step_cycles=sched.total_cycles, refreshes=int(sched.inserted.sum()),
                   step_seconds=run.seconds, stall_cycles=run.status.stalls,
                   issues_equal=True, cycles_equal=True)
    log(f"decode step: {len(prog)} commands, {len(run.issues)} issues, "
        f"{sched.total_cycles} cycles, all equal to the golden schedule ({run.seconds:.2f} s)")
    if info.head_dim:
        if info.head_dim != head_dim:
            raise ValueError(f"the board's attention datapath is built for d {info.head_dim}, "
                             f"not {head_dim}")
        out, dp_error = drv.output()
        gold_out = functional.execute(prog, wdata, image, cfg, head_dim).output_bits
        if dp_error:
            raise MismatchError(f"attention datapath error flags {dp_error:#x}")
        if not np.array_equal(out, gold_out):
            bad = np.flatnonzero(out != gold_out)
            raise MismatchError(f"attention output differs from the golden functional model in "
                                f"{len(bad)} of {head_dim} dimensions, first {int(bad[0])}: "
                                f"board {int(out[bad[0]]):#06x}, golden "
                                f"{int(gold_out[bad[0]]):#06x}")
        summary["output"] = out.tolist()
        summary["bit_exact"] = True
        log(f"attention output: {head_dim} FP16 values equal to the golden functional model "
            f"bit for bit")
    return summary


def decode_step_selftest(drv: HostDriver, cfg: Config, *, head_dim: int, tokens: int,
                         seed: int = 0, readback: int = 24,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compile a seeded synthetic KV cache (dense layout), load it through WR commands, run one
    dense decode step with the issue trace on, read ``readback`` random columns back, and
    compare everything with the golden model (:func:`check_step`; the RD data with
    :func:`starc.golden.functional.execute`). Returns a summary; raises :class:`MismatchError`.
    """
    from starc.compiler import compile as cc
    from starc.golden import functional
    from starc.golden.programs import dense_program
    from starc.kv import synthetic_kv

    cache = synthetic_kv(n_layers=1, n_q_heads=1, n_kv_heads=1, head_dim=head_dim,
                         prefill_len=tokens - 1, decode_steps=1, seed=seed)
    compiled = cc.compile_kv(cache, cfg, cc.CompileOptions(mode="dense"))
    addr, rows = compiled.image()
    keep = addr[:, 0] == 0
    image = {(int(g), int(b), int(r)): rows[i]
             for i, (_, g, b, r) in enumerate(addr[keep].tolist())}
    hm = compiled.head(0, 0)
    # the query of the decode step, pre-scaled by 1/sqrt(d) and rounded to FP16 on the host
    q = (cache.q[0][0, 0].astype(np.float32) / np.sqrt(head_dim)).astype(np.float16)
    wdata = q.view(np.uint16).reshape(-1, cfg.org.elements_per_column)
    prog = dense_program(cfg, tokens, head_dim, value_row_base=hm.row_base + hm.n_krows)
    summary = check_step(drv, cfg, image=image, prog=prog, wdata=wdata, head_dim=head_dim,
                         log=log)
    summary["tokens"] = tokens

    rng = np.random.default_rng(seed)
    keys = sorted(image)
    picks = [keys[i] for i in rng.integers(0, len(keys), readback)]
    cmds: list[tuple[int, ...]] = []
    for g, b, r in picks:
        cmds += [(Op.ACTPB, g, b, 0, r), (Op.RD, g, b, int(rng.integers(cfg.org.columns_per_row))),
                 (Op.PREPB, g, b)]
    rd_prog = make_program(cmds)
    drv.reset()
    rd = drv.run(rd_prog, trace=False)
    _check_clean(rd.status, "read-back")
    gold = functional.execute(rd_prog, np.zeros((1, cfg.org.elements_per_column), np.uint16),
                              image, cfg, head_dim)
    got = np.array([d for *_, d in rd.reads], dtype=np.uint16).reshape(-1, gold.reads.shape[1])
    where = [(int(rd_prog[i]["group"]), int(rd_prog[i]["bank"]), int(rd_prog[i]["col"]))
             for i in gold.read_index]
    if [r[:3] for r in rd.reads] != where or not np.array_equal(got, gold.reads):
        raise MismatchError(f"read-back differs from the golden functional model: board "
                            f"{[r[:3] for r in rd.reads]} {got.tolist()}, golden {where} "
                            f"{gold.reads.tolist()}")
    summary["readback_columns"] = len(rd.reads)
    log(f"read-back: {len(rd.reads)} columns equal to the golden functional model")
    return summary


def _describe(item: Issue) -> str:
    op, g, b, col, row, arg = decode(item.word)
    tag = " (inserted)" if item.inserted else ""
    return f"{Op(op).name} g={g} b={b} col={col} row={row} arg={arg}{tag} @ {item.cycle}"

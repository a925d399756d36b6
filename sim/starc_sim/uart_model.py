"""A UART at the pins, for cocotb: drives the design's receive line, decodes its transmit line.

:class:`UartModel` is the host's serial port: bytes given to :meth:`UartModel.send` go out on
``rx`` (8N1, ``bit_ns`` per bit, back to back), bytes the design sends on ``tx`` are decoded by
sampling the middle of each bit and queued for :meth:`UartModel.receive`. A 0 stop bit from the
design is counted in :attr:`UartModel.frame_errors`.

:class:`BridgeTransport` gives the host driver (``fpga/driver.py``, blocking ``read(n)`` /
``write(data)``) access to the model from a :func:`cocotb.task.bridge` thread.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from typing import Any

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.task import bridge, resume
from cocotb.triggers import Event, First, Timer, with_timeout

__all__ = ["BridgeTransport", "UartModel", "serve_socket"]


class UartModel:
    """Host side of an 8N1 serial line.

    Parameters
    ----------
    rx : handle
        The design's receive input (driven here).
    tx : handle
        The design's transmit output (decoded here).
    bit_ns : float
        Bit period in ns (the design's divisor times its clock period).
    """

    def __init__(self, rx: Any, tx: Any, *, bit_ns: float) -> None:
        if not bit_ns > 0:
            raise ValueError(f"Bit period must be positive, not {bit_ns!r}")
        self._rx = rx
        self._tx = tx
        self._bit_ns = bit_ns
        self._out: deque[int] = deque()
        self._out_ready = Event()
        self._in: deque[int] = deque()
        self._in_ready = Event()
        self.frame_errors = 0
        self.sent = 0
        self.received = 0
        self._rx.value = 1
        self._tasks = [cocotb.start_soon(self._drive()), cocotb.start_soon(self._decode())]

    def send(self, data: bytes) -> None:
        """Queue bytes for the design (returns at once)."""
        self._out.extend(data)
        if self._out:
            self._out_ready.set()

    async def receive(self, n: int, timeout_us: float) -> bytes:
        """The next ``n`` bytes from the design; fails after ``timeout_us`` of simulated time."""
        while len(self._in) < n:
            self._in_ready.clear()
            await with_timeout(self._in_ready.wait(), timeout_us, "us")
        return bytes(self._in.popleft() for _ in range(n))

    def take(self) -> bytes:
        """Every byte received from the design so far (without waiting)."""
        out = bytes(self._in)
        self._in.clear()
        return out

    async def _drive(self) -> None:
        # one wakeup per run of equal bits, not per bit
        while True:
            while not self._out:
                self._out_ready.clear()
                await self._out_ready.wait()
            byte = self._out.popleft()
            bits = (0, *((byte >> i) & 1 for i in range(8)), 1)
            i = 0
            while i < 10:
                j = i
                while j < 10 and bits[j] == bits[i]:
                    j += 1
                self._rx.value = bits[i]
                await Timer(self._bit_ns * (j - i), unit="ns")
                i = j
            self.sent += 1

    async def _decode(self) -> None:
        # one wakeup per edge of the line: the level in the middle of bit i is the level after
        # the last edge before it
        bit = self._bit_ns
        while True:
            await self._tx.falling_edge
            t0 = get_sim_time("ns")
            stop_mid = t0 + 9.5 * bit
            edges: list[tuple[float, int]] = [(t0, 0)]
            while True:
                now = get_sim_time("ns")
                fired = await First(self._tx.value_change, Timer(stop_mid - now, unit="ns"))
                if isinstance(fired, Timer):
                    break
                edges.append((get_sim_time("ns"), int(self._tx.value)))

            def level(t: float, edges: list[tuple[float, int]] = edges) -> int:
                v = 1
                for te, ve in edges:
                    if te <= t:
                        v = ve
                return v

            if level(t0 + 0.5 * bit) != 0:
                continue            # a glitch, not a start bit
            byte = sum(level(t0 + (i + 1.5) * bit) << i for i in range(8))
            if level(stop_mid) != 1:
                self.frame_errors += 1
                continue
            self._in.append(byte)
            self.received += 1
            self._in_ready.set()


class BridgeTransport:
    """Blocking ``read`` / ``write`` on a :class:`UartModel`, for code running in a
    :func:`cocotb.task.bridge` thread (the host driver). ``read`` lets simulated time pass;
    ``write`` only queues, so a burst of writes costs no simulator round trip."""

    def __init__(self, uart: UartModel, *, timeout_us: float) -> None:
        self._uart = uart
        self._timeout_us = timeout_us
        self._read = resume(self._aread)

    async def _aread(self, n: int) -> bytes:
        return await self._uart.receive(n, self._timeout_us)

    def read(self, n: int) -> bytes:
        return self._read(n)

    def write(self, data: bytes) -> int:
        self._uart.send(bytes(data))
        return len(data)


async def serve_socket(uart: UartModel, port: int, *, step_us: float = 20.0,
                       accept_timeout_s: float = 120.0) -> dict[str, int]:
    """A TCP server on ``127.0.0.1:port`` that is the board's serial port: the bytes of one
    client go to the design's receive line, the design's bytes to the client, until the client
    disconnects; clients that connect and send nothing are probes, and the server waits for the
    next one (pyserial's ``socket://127.0.0.1:PORT`` URL is such a client, so the host
    software that talks to a real ULX3S talks to the simulation unchanged).

    Simulated time advances ``step_us`` per exchange, whether or not bytes flow, so a host that
    waits for a reply sees the design answer. Returns byte counts."""

    async def advance() -> bytes:
        await Timer(step_us, unit="us")
        return uart.take()

    run_for = resume(advance)

    def _exchange(conn: socket.socket, counts: dict[str, int]) -> None:
        while True:
            try:
                data = conn.recv(1 << 16)
            except BlockingIOError:
                data = None
            except ConnectionResetError:
                return
            if data == b"":
                return
            if data:
                uart.send(data)
                counts["to_device"] += len(data)
            out = run_for()
            if out:
                conn.setblocking(True)
                conn.sendall(out)
                conn.setblocking(False)
                counts["from_device"] += len(out)
            elif not data:
                time.sleep(0.0005)

    @bridge
    def loop() -> dict[str, int]:
        counts = {"to_device": 0, "from_device": 0}
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", port))
            srv.listen(1)
            srv.settimeout(accept_timeout_s)
            while not counts["to_device"]:       # a client that sends nothing is a probe
                conn, _ = srv.accept()
                with conn:
                    conn.setblocking(False)
                    _exchange(conn, counts)
        return counts

    return await loop()

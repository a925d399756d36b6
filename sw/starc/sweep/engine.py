"""Design-space sweep engine: a grid of points, a content-hash cache, local or Dask execution.

A *point* is a JSON-serialisable dict (preset, overrides, context length, budget, policy, ...).
Its cache key is the SHA-256 of the canonical JSON of the point **and** of a fingerprint of the
`starc` source code and preset files, so a result is reused only when both the question and the
code that answers it are unchanged: nothing stale is ever reused.

Execution: local processes by default (``concurrent.futures.ProcessPoolExecutor``), or a Dask
cluster when a scheduler address is given (``distributed.Client(address)``), for users who outgrow
one machine. Results are identical either way (the evaluator is a pure function of the point).
Before a Dask client is made, :func:`probe_scheduler` connects with a timeout and checks the
peer's handshake, so a wrong address fails in seconds with one line instead of hanging.
Cache entries are written atomically with :func:`starc.outputs.write_atomic` (temporaries of
killed runs are removed by the next run); an interrupted run stops its worker processes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["code_fingerprint", "expand_grid", "point_key", "run_points", "default_cache_dir",
           "probe_scheduler", "SchedulerError"]

#: Seconds to wait for a Dask scheduler to accept and answer (connect, handshake, workers);
#: ``STARC_DASK_TIMEOUT`` overrides it.
def _dask_timeout() -> float:
    try:
        t = float(os.environ.get("STARC_DASK_TIMEOUT", "5"))
    except ValueError:
        return 5.0
    return t if 0.1 <= t <= 600 else 5.0


DASK_TIMEOUT_S = _dask_timeout()


class SchedulerError(OSError):
    """The Dask scheduler address cannot be used; the message says why."""

Evaluator = Callable[[dict[str, Any]], dict[str, Any]]


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 over every .py and .toml file of the installed `starc` package."""
    import starc
    root = Path(starc.__file__).parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def point_key(point: dict[str, Any], evaluator_name: str) -> str:
    blob = json.dumps({"point": point, "evaluator": evaluator_name, "code": code_fingerprint()},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("STARC_CACHE_DIR", Path.home() / ".cache" / "starc-pim")) / "sweep"


def expand_grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Cartesian product of the axes, in a stable order."""
    names = list(axes)
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(axes[n] for n in names))]


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    from starc.outputs import strict_json, write_atomic
    write_atomic(path, strict_json(data, indent=None, sort_keys=True))


def _load(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None  # a damaged cache entry is recomputed, never trusted


def run_points(points: Iterable[dict[str, Any]], evaluator: Evaluator, *,
               evaluator_name: str | None = None, cache_dir: Path | None = None,
               workers: int | None = None, scheduler: str | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate every point (cached by content hash); return results in the points' order.

    ``scheduler``: a Dask scheduler address (``tcp://host:8786``) or a ``distributed.Client``;
    ``None`` runs on local processes (``workers`` of them, default: CPU count; 1 runs in-process).
    """
    from starc.outputs import clean_stale
    points = list(points)
    name = evaluator_name or f"{evaluator.__module__}.{evaluator.__qualname__}"
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise NotADirectoryError(20, "the sweep cache must be a folder, this is a file", str(cache))
    clean_stale(cache)
    keys = [point_key(p, name) for p in points]
    results: list[dict[str, Any] | None] = [None] * len(points)
    todo = []
    for i, k in enumerate(keys):
        hit = _load(cache / f"{k}.json")
        if hit is not None and hit.get("point") == points[i]:
            results[i] = hit["result"]
        else:
            todo.append(i)

    def store(i: int, res: dict[str, Any]) -> None:
        results[i] = res
        _write_atomic(cache / f"{keys[i]}.json", {"point": points[i], "result": res})

    bar = _Progress(len(todo), enabled=progress and bool(todo))
    if todo:
        if scheduler is not None:
            _run_dask(points, todo, evaluator, scheduler, store, bar)
        elif (workers or os.cpu_count() or 1) <= 1 or len(todo) == 1:
            for i in todo:
                store(i, evaluator(points[i]))
                bar.advance()
        else:
            ex = ProcessPoolExecutor(max_workers=min(workers or os.cpu_count() or 1, len(todo)))
            try:
                futs = {ex.submit(evaluator, points[i]): i for i in todo}
                for f in as_completed(futs):
                    store(futs[f], f.result())
                    bar.advance()
            except BaseException:
                _stop_pool(ex)
                bar.close()
                raise
            ex.shutdown()
    bar.close()
    return [r for r in results if r is not None]


def _stop_pool(ex: ProcessPoolExecutor) -> None:
    """Stop a pool now (interrupt, error): cancel what has not started, end running workers."""
    procs = list(getattr(ex, "_processes", {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


def probe_scheduler(address: str, timeout: float | None = None) -> None:
    """Connect to a ``tcp://HOST:PORT`` Dask scheduler and read its handshake (the first message
    a Dask TCP peer sends: an 8-byte length, then frames whose first is a msgpack map with
    ``pickle-protocol``). Raises :class:`SchedulerError` within about ``timeout`` seconds."""
    timeout = DASK_TIMEOUT_S if timeout is None else timeout
    if not address.startswith("tcp://"):
        return              # other transports: distributed's own timeout applies
    hostport = address[len("tcp://"):].rstrip("/")
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    what = f"Dask scheduler {address}"
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except TimeoutError:
        raise SchedulerError(f"{what}: no answer to the connection within {timeout:g} s (wrong "
                             f"host or port, or a firewall)") from None
    except socket.gaierror as e:
        raise SchedulerError(f"{what}: unknown host {host!r} ({e.strerror})") from None
    except OSError as e:
        raise SchedulerError(f"{what}: cannot connect ({e.strerror or e}); is `dask scheduler` "
                             f"running there?") from None
    try:
        sock.settimeout(timeout)
        head = _recv_exact(sock, 8, what, timeout)
        (n,) = struct.unpack("<Q", head)
        if not 8 < n <= 1 << 16:
            raise SchedulerError(f"{what}: the service there does not speak the Dask protocol "
                                 f"(its first message announces {n} bytes); check the port")
        body = _recv_exact(sock, n, what, timeout)
        (nframes,) = struct.unpack("<Q", body[:8])
        if not 1 <= nframes <= 16 or 8 * (1 + nframes) > n:
            raise SchedulerError(f"{what}: the service there does not speak the Dask protocol; "
                                 f"check the port")
        lens = struct.unpack(f"<{nframes}Q", body[8:8 + 8 * nframes])
        first = body[8 + 8 * nframes:8 + 8 * nframes + lens[0]]
        import msgpack
        try:
            info = msgpack.unpackb(first, raw=False)
        except Exception:
            info = None
        if not isinstance(info, dict) or "pickle-protocol" not in info:
            raise SchedulerError(f"{what}: the service there does not speak the Dask protocol "
                                 f"(no handshake); check the port")
    finally:
        sock.close()


def _recv_exact(sock: socket.socket, n: int, what: str, timeout: float) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise SchedulerError(f"{what}: connected, but no Dask handshake within {timeout:g} s "
                                 f"(not a Dask scheduler?)") from None
        except OSError as e:
            raise SchedulerError(f"{what}: connection failed ({e.strerror or e})") from None
        if not chunk:
            raise SchedulerError(f"{what}: the service closed the connection without a Dask "
                                 f"handshake (not a Dask scheduler?)")
        buf += chunk
    return buf


def _run_dask(points: list[dict[str, Any]], todo: list[int], evaluator: Evaluator,
              scheduler: Any, store: Callable[[int, dict[str, Any]], None], bar: _Progress
              ) -> None:
    from distributed import Client
    from distributed import as_completed as das_completed
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        probe_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout=DASK_TIMEOUT_S)
        except (OSError, TimeoutError) as e:
            raise SchedulerError(f"Dask scheduler {scheduler}: {e}") from None
    try:
        if client is not scheduler:
            try:
                client.wait_for_workers(1, timeout=DASK_TIMEOUT_S)
            except TimeoutError:
                raise SchedulerError(f"Dask scheduler {scheduler}: no worker joined within "
                                     f"{DASK_TIMEOUT_S:g} s; start workers (`dask worker "
                                     f"{scheduler}`)") from None
        futs = client.map(evaluator, [points[i] for i in todo], pure=False)
        index = {f.key: i for f, i in zip(futs, todo, strict=True)}
        for f in das_completed(futs):
            store(index[f.key], f.result())
            bar.advance()
    finally:
        if client is not scheduler:
            client.close()


class _Progress:
    def __init__(self, total: int, *, enabled: bool) -> None:
        self._p = None
        if enabled:
            from rich.progress import Progress
            self._p = Progress(transient=True)
            self._p.start()
            self._task = self._p.add_task("sweep", total=total)

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()

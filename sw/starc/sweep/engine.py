"""Design-space sweep engine: a grid of points, a content-hash cache, local or Dask execution.

A *point* is a JSON-serialisable dict (preset, overrides, context length, budget, policy, ...).
Its cache key is the SHA-256 of the canonical JSON of the point **and** of a fingerprint of the
`starc` source code and preset files, so a result is reused only when both the question and the
code that answers it are unchanged: nothing stale is ever reused.

Execution: local processes by default (``concurrent.futures.ProcessPoolExecutor``), or a Dask
cluster when a scheduler address is given (``distributed.Client(address)``), for users who outgrow
one machine. Results are identical either way (the evaluator is a pure function of the point).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["code_fingerprint", "expand_grid", "point_key", "run_points", "default_cache_dir"]

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    points = list(points)
    name = evaluator_name or f"{evaluator.__module__}.{evaluator.__qualname__}"
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
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
            with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as ex:
                futs = {ex.submit(evaluator, points[i]): i for i in todo}
                for f in as_completed(futs):
                    store(futs[f], f.result())
                    bar.advance()
    bar.close()
    return [r for r in results if r is not None]


def _run_dask(points: list[dict[str, Any]], todo: list[int], evaluator: Evaluator,
              scheduler: Any, store: Callable[[int, dict[str, Any]], None], bar: _Progress
              ) -> None:
    from distributed import Client
    from distributed import as_completed as das_completed
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
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

"""Self-contained report folders: JSON, CSV, plots (PNG, SVG, PDF) and a Markdown summary, written
atomically.

A report is assembled in a temporary sibling folder and swapped into place when complete, under
the output rules of :mod:`starc.outputs` (docs/reliability.md): a reader never sees a half-written
report, and a folder starc did not write is never replaced.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from starc.outputs import OutputDir, strict_json, write_atomic

__all__ = ["ReportWriter", "csv_cell", "flatten", "write_csv_atomic", "write_json_atomic"]


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns (for CSV)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = strict_json(v, indent=None)
        else:
            out[key] = v
    return out


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="") if "b" not in mode else io.BytesIO()
    write(buf)
    write_atomic(path, buf.getvalue())


def write_json_atomic(path: Path, obj: Any) -> None:
    """Strict JSON (no NaN / Infinity), written atomically."""
    write_atomic(path, strict_json(obj, indent=2) + "\n")


def csv_cell(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return ""            # undefined: an empty cell, never "nan" / "inf"
    return v


def write_csv_atomic(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    flat = [{k: csv_cell(v) for k, v in flatten(r).items()} for r in rows]
    cols: list[str] = []
    for r in flat:
        cols.extend(k for k in r if k not in cols)

    def write(f: Any) -> None:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(flat)
    _atomic_write(path, write)


class ReportWriter:
    """Collect files in a temporary sibling folder; on a clean exit of the ``with`` block it
    becomes ``dest`` (:class:`starc.outputs.OutputDir`: checked when constructed, so construct
    it before the expensive work)."""

    def __init__(self, dest: Path, *, command: str = "report", inputs: Any = (),
                 force: bool = False) -> None:
        self.dest = Path(dest)
        self.out = OutputDir(self.dest, command=command, inputs=inputs, force=force)
        self.files: list[str] = []
        self._ctx: Any = None
        self.tmp: Path | None = None

    def path(self, name: str) -> Path:
        if self.tmp is None:
            raise RuntimeError("ReportWriter: use it as a context manager")
        self.files.append(name)
        return self.tmp / name

    def json(self, name: str, obj: Any) -> None:
        write_json_atomic(self.path(name), obj)

    def csv(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        write_csv_atomic(self.path(name), rows)

    def text(self, name: str, text: str) -> None:
        write_atomic(self.path(name), text)

    def figure(self, name: str, fig: Any) -> None:
        """``name``.png, .svg and .pdf, or the formats ``STARC_PLOT_FORMATS`` names
        (:func:`starc.plots.save`; ``name`` may end in .png)."""
        from starc.plots import plot_formats, save

        stem = name.removesuffix(".png")
        formats = plot_formats()
        for fmt in formats:
            self.path(f"{stem}.{fmt}")
        save(fig, self.tmp / stem, formats)

    def __enter__(self) -> ReportWriter:
        self._ctx = self.out.build()
        self.tmp = self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        ctx, self._ctx = self._ctx, None
        return ctx.__exit__(*exc)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"
        return str(x)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"

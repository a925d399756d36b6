"""The comparison table ``starc eval``, ``starc sweep`` and ``starc demo`` print: one column list,
one number format, one title, so the same cache gives the same table digit for digit.

Columns are metric names of the registry (:mod:`starc.glossary`): the header is the name, the
same as the JSON key and the CSV column, and a glossary line under the table defines every
column. Every row carries its cost relative to the dense and the token-wise (``sparq``) baseline
of the same point (:func:`add_baseline_ratios`); a missing baseline leaves those cells empty with
the reason in the row (``<name>_undefined``) and in a note under the table.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from starc.glossary import CI_FAMILY, glossary_line, header

__all__ = ["BASELINES", "COLUMNS", "CI_METRICS", "add_baseline_ratios", "baseline_notes", "cell",
           "cells", "print_rows", "title"]

#: the columns of the comparison table (metric names); every row also has the metrics the table
#: leaves out (JSON, CSV: docs/metrics.md)
COLUMNS: tuple[str, ...] = (
    "policy", "budget", "slots_per_head", "slots_over_B", "occupancy", "rounds",
    "cycles", "cycles_ci95", "cycles_x_dense", "cycles_x_tokenwise", "selection_cycles",
    "energy_nJ", "energy_x_dense", "energy_x_tokenwise", "attacc_energy_nJ", "ratio_to_floor",
    "mass_recall", "topk_recall", "rel_error",
)

#: cost metrics whose mean carries a 95 % interval (``<metric>_ci95``) when plans are sampled
CI_METRICS = CI_FAMILY

#: baseline name in the ratio columns -> (policy, does it depend on the budget)
BASELINES: dict[str, tuple[str, bool]] = {"dense": ("dense", False), "tokenwise": ("sparq", True)}
_RATIOS = (("cycles", "cycles"), ("energy", "energy_nJ"))


def _point(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row.get("preset"), row.get("model"), row.get("context"), row.get("kv"))


def add_baseline_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``cycles_x_dense``, ``energy_x_dense``, ``cycles_x_tokenwise`` and
    ``energy_x_tokenwise`` to every row (in place; also returned): the row's mean over the
    baseline's mean on the same point (preset, model, context) and, for the token-wise baseline,
    the same budget. Dense does not depend on B, so any budget's dense row of the point serves.
    Without a baseline the value is ``None`` with ``<name>_undefined`` saying why."""
    from starc.outputs import undefined

    by: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        by.setdefault((*_point(r), r["policy"], r["budget"]), r)
        by.setdefault((*_point(r), r["policy"], None), r)
    present = {r["policy"] for r in rows}
    for r in rows:
        for name, (pol, per_budget) in BASELINES.items():
            base = by.get((*_point(r), pol, r["budget"] if per_budget else None))
            for what, col in _RATIOS:
                key = f"{what}_x_{name}"
                r.pop(f"{key}_undefined", None)
                if base is not None and base.get(col) and r.get(col) is not None \
                        and math.isfinite(float(base[col])) and math.isfinite(float(r[col])):
                    r[key] = float(r[col]) / float(base[col])
                elif pol not in present:
                    undefined(r, key, f"no {pol} row: {pol} is not among the policies")
                elif base is None:
                    undefined(r, key, f"no {pol} row at budget {r['budget']} ({pol} takes token "
                                      f"budgets only)" if per_budget else f"no {pol} row")
                else:
                    undefined(r, key, f"{pol}'s {col} is not available")
    return rows


def baseline_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The notes a table prints when a baseline column is empty (one per distinct reason)."""
    notes: list[str] = []
    for name in BASELINES:
        reasons = sorted({r[f"{w}_x_{name}_undefined"] for r in rows for w, _ in _RATIOS
                          if r.get(f"{w}_x_{name}_undefined")})
        for why in reasons:
            notes.append(f"*_x_{name} empty where {why}.")
    return notes


def cell(x: Any) -> str:
    """One table cell: integers and large values with thousands separators, three significant
    digits otherwise, ``-`` for a missing value."""
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) or float(x).is_integer() and abs(x) >= 100:
        return f"{int(round(x)):,}"
    ax = abs(float(x))
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 1 or ax == 0:
        return f"{x:.3g}" if ax < 10 else f"{x:.1f}"
    return f"{x:.3f}" if ax >= 0.01 else f"{x:.2e}"


def cells(row: dict[str, Any], columns: Sequence[str] = COLUMNS) -> list[str]:
    return [cell(row.get(k, float("nan"))) for k in columns]


def title(meta: dict[str, Any], *, what: str | None = None) -> str:
    """The table title: the cache, the preset, the planner setting and the cost sampling."""
    head = what or (f"{meta['model']}: d = {meta['head_dim']}, {meta['n_q_heads']} query / "
                    f"{meta['n_kv_heads']} KV heads, prefill {meta['prefill_len']}, steps "
                    f"{meta['steps']}, layers {meta['layers']}")
    return (f"{head}, {meta['preset']}; {meta['planner']}; costs per layer and query head on one "
            f"channel, selection included; {meta['sampling']}; group row = "
            f"{meta['tokens_per_group_row']} token slots")


def print_rows(title_text: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
               notes: Sequence[str] = (), glossary: bool = True,
               left: Callable[[str], bool] | None = None, wrap: Sequence[str] = ()) -> None:
    """A rich table that is never truncated (the console is made as wide as it needs), headed by
    the metric names (broken after underscores where a column is narrower than its name), with
    the glossary line and ``notes`` under it. Columns in ``wrap`` (free text) wrap at 64
    characters. Output that is not a terminal is laid out by :mod:`starc.plaintable` (the same
    text, without loading rich)."""
    from starc import plaintable

    is_left = left or (lambda k: k in ("policy", "preset", "model", "variant", "task"))
    widths = [min(64, max([8] + [len(r[i]) for r in rows])) if k in wrap else
              max([8] + [len(r[i]) for r in rows]) for i, k in enumerate(columns)]
    heads = [header(k, w) for k, w in zip(columns, widths, strict=True)]
    need = 4 + sum(3 + max([w] + [len(x) for x in h.split("\n")])
                   for w, h in zip(widths, heads, strict=True))
    text = plaintable.render(title_text, heads, rows, [is_left(k) for k in columns],
                             [64 if k in wrap else None for k in columns],
                             max(plaintable.console_width(), need),
                             glossary_line(columns, notes=notes) if glossary else None)
    if text is not None:
        sys.stdout.write(text)
        sys.stdout.flush()      # as rich does: a later stderr line comes after the table
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    console = Console(width=max(console.width, need))
    t = Table(title=Text(title_text), title_justify="left")
    for key, head in zip(columns, heads, strict=True):
        t.add_column(Text(head), justify="left" if is_left(key) else "right",
                     no_wrap=key not in wrap, max_width=64 if key in wrap else None)
    for r in rows:
        t.add_row(*(Text(x) for x in r))     # literal text: "[...]" is not rich markup
    console.print(t)
    if glossary:
        Console(width=min(console.width, 120)).print(
            Text(glossary_line(columns, notes=notes), style="dim"))

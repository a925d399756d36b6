"""The comparison table ``starc eval``, ``starc sweep`` and ``starc demo`` print: one column list,
one number format, one title, so the same cache gives the same table digit for digit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["COLUMNS", "CI_METRICS", "cell", "cells", "print_rows", "title"]

#: (row key, header) of the comparison table
COLUMNS: tuple[tuple[str, str], ...] = (
    ("policy", "policy"),
    ("budget", "B"),
    ("slots_per_head", "slots/qh"),
    ("slots_over_B", "/B"),
    ("slices16_per_head", "rows16 x16"),
    ("rows", "rows/qh"),
    ("oracle_rows", "oracle rows"),
    ("union_slots", "GQA union"),
    ("occupancy", "occup."),
    ("rounds", "rounds"),
    ("cycles", "cycles"),
    ("cycles_ci95", "+-95%"),
    ("selection_cycles", "sel. cycles"),
    ("ns", "ns"),
    ("energy_nJ", "nJ"),
    ("selection_energy_nJ", "sel. nJ"),
    ("attacc_energy_nJ", "AttAcc nJ"),
    ("ratio_to_floor", "x floor"),
    ("mass_recall", "mass rec."),
    ("topk_recall", "top-k rec."),
    ("rel_error", "rel. err"),
)

#: cost metrics whose mean carries a 95 % interval (``<metric>_ci95``) when plans are sampled
CI_METRICS = ("cycles", "selection_cycles", "attention_cycles", "ns", "energy_nJ",
              "selection_energy_nJ", "attacc_energy_nJ", "ratio_to_floor")


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


def cells(row: dict[str, Any], columns: Sequence[tuple[str, str]] = COLUMNS) -> list[str]:
    return [cell(row.get(k, float("nan"))) for k, _ in columns]


def title(meta: dict[str, Any], *, what: str | None = None) -> str:
    """The table title: the cache, the preset, the planner setting and the cost sampling."""
    head = what or (f"{meta['model']}: d = {meta['head_dim']}, {meta['n_q_heads']} query / "
                    f"{meta['n_kv_heads']} KV heads, prefill {meta['prefill_len']}, steps "
                    f"{meta['steps']}, layers {meta['layers']}")
    return (f"{head}, {meta['preset']}; {meta['planner']}; costs per layer and query head on one "
            f"channel, selection included (sel.: its part); {meta['sampling']}; slots: "
            f"activated group-row token slots (group row = {meta['tokens_per_group_row']} "
            f"tokens)")


def print_rows(title_text: str, columns: Sequence[tuple[str, str]],
               rows: Sequence[Sequence[str]]) -> None:
    """A rich table that is never truncated (the console is made as wide as it needs)."""
    from rich.console import Console
    from rich.table import Table

    need = 4 + sum(3 + max([len(h)] + [len(r[i]) for r in rows])
                   for i, (_, h) in enumerate(columns))
    console = Console()
    console = Console(width=max(console.width, need))
    t = Table(title=title_text, title_justify="left")
    for key, head in columns:
        t.add_column(head, justify="left" if key in ("policy", "preset", "model") else "right",
                     no_wrap=True)
    for r in rows:
        t.add_row(*r)
    console.print(t)

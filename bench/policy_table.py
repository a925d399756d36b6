"""The closing table of the policies: recall, slots and cycles per (policy, budget), from the
``eval.json`` files ``starc eval`` writes (docs/reproduction.md, "Every policy at B = 256 / 1024 /
2048").

One Markdown table per file: attention-mass recall, top-k hit rate (k = B), token slots of the
group rows a query head's selection opens (``slots_per_head``) and with the dummy rows of filled
rounds (``activated_slots``), the GQA union per KV head, cycles (DRAM tCK of the file's preset,
selection pass included, with the 95 % interval of the cost sample) and the selection pass's
part. ``dense`` does not depend on B and is printed once.

Usage: ``python bench/policy_table.py results/closing/*/eval.json [--budgets 256 1024 2048]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

COLUMNS = ("policy", "B", "mass recall", "top-k hit", "slots / head", "activated slots",
           "GQA union slots", "cycles", "+-95 %", "selection cycles")


def _num(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def table(doc: dict, budgets: list[str] | None) -> list[str]:
    m = doc["meta"]
    rows = doc["rows"]
    sampling = m["sampling"] if isinstance(m["sampling"], str) else "; ".join(m["sampling"])
    title = (f"{m.get('model') or 'cache'}: d {m['head_dim']}, {m['n_q_heads']} query / "
             f"{m['n_kv_heads']} KV heads, prefill {m['prefill_len']}, layers {m['layers']}, "
             f"steps {m['steps']}, {m['preset']}; {m['planner']}; {sampling}")
    out = [title, "", "| " + " | ".join(COLUMNS) + " |",
           "|---|---:|" + "---:|" * (len(COLUMNS) - 2)]
    seen_dense = False
    for r in rows:
        b = str(r["budget"])
        if budgets and b not in budgets:
            continue
        if r["policy"] == "dense":
            if seen_dense:
                continue
            seen_dense, b = True, "-"
        out.append("| " + " | ".join([
            r["policy"], b, _num(r, "mass_recall", ".4f"), _num(r, "topk_recall", ".3f"),
            _num(r, "slots_per_head", ",.0f"), _num(r, "activated_slots", ",.0f"),
            _num(r, "union_slots", ",.0f"), _num(r, "cycles", ",.0f"),
            _num(r, "cycles_ci95", ",.0f"), _num(r, "selection_cycles", ",.0f")]) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="eval.json files of starc eval")
    ap.add_argument("--budgets", nargs="+", default=None,
                    help="budgets to print (default: every budget in the file)")
    args = ap.parse_args(argv)
    for i, f in enumerate(args.files):
        try:
            doc = json.loads(f.read_text())
            lines = table(doc, args.budgets)
        except (OSError, ValueError, KeyError) as e:
            print(f"{f}: not an eval.json of starc eval ({e}); run starc eval ... -o FOLDER "
                  f"and pass FOLDER/eval.json", file=sys.stderr)
            return 2
        if i:
            print()
        print(f"{f}: " + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mass-adaptive selection against a fixed budget and the row oracle (docs/planner.md).

For each cache (real SmolLM2 KV files given with ``--kv``, and seeded synthetic GQA caches):

1. fixed ``B`` (default 1024): mean attention-mass recall R and mean activated rows (group rows
   holding a selected token, per query head, layer and step);
2. each adaptive mode over a grid, mass targets ``p`` (top-p) and mass thresholds ``t`` (every
   row worth a share t): mean recall, mean rows, and the *row oracle* (per plan, the fewest
   group rows of the same layout whose exact attention mass reaches that plan's recall);
3. each mode's rows at recall R, interpolated linearly between the two grid points around R,
   and the oracle's rows there.

Targets: adaptive rows <= 0.5 x the fixed budget's rows at equal recall, and <= 1.3 x the row
oracle's. Both are printed as ratios, with the wall time and ``uptime``. No cycles are timed
(``cost_programs = 0``): rows and recall do not need the golden model.

    .venv/bin/python bench/bench_adaptive.py --kv kv4096.npz          # + synthetic caches
    .venv/bin/python bench/bench_adaptive.py --synthetic-only --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from typing import Any

import numpy as np
from starc import config
from starc.kv import load_kv, synthetic_kv
from starc.planner.evaluate import EvalOptions, evaluate

GRIDS = {
    "top-p": [f"p{p:g}" for p in (0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)],
    "threshold": [f"t{t:g}" for t in (0.01, 0.005, 0.003, 0.002, 0.0015, 0.001, 0.0007, 0.0005,
                                      0.0003, 0.0002, 0.0001)],
}
SYNTHETIC = {
    "synthetic SmolLM2 shape (GQA 3:1, d 64, 8K)": dict(n_layers=6, n_q_heads=9, n_kv_heads=3,
                                                         head_dim=64, prefill_len=8192),
    "synthetic GQA 4:1, d 128, 8K": dict(n_layers=4, n_q_heads=16, n_kv_heads=4, head_dim=128,
                                          prefill_len=8192),
}


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Linear interpolation of y at x over points sorted by x (clamped at the ends)."""
    o = np.argsort(xs)
    return float(np.interp(x, np.asarray(xs)[o], np.asarray(ys)[o]))


def measure(name: str, cache: Any, cfg: Any, policy: str, B: int,
            floor: int, cap: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    budgets = [B, *(b for grid in GRIDS.values() for b in grid)]
    res = evaluate(cache, cfg, EvalOptions(policies=(policy,), budgets=tuple(budgets),
                                           cost_programs=0, mass_floor=floor, mass_cap=cap))
    by = {r["budget"]: r for r in res.rows}
    fixed = by[B]
    R = fixed["mass_recall"]
    out = {
        "cache": name, "policy": policy, "B": B, "plans_per_cell": res.meta["plans_per_policy"],
        "floor": floor, "cap": cap,
        "fixed": {"mass_recall": R, "rows": fixed["rows"], "oracle_rows": fixed["oracle_rows"],
                  "topk_recall": fixed["topk_recall"], "tokens": fixed["selected"]},
        "modes": {}, "seconds": 0.0,
    }
    for mode, grid in GRIDS.items():
        pts = [by[b] for b in grid]
        rec = [r["mass_recall"] for r in pts]
        rows_at = _interp(R, rec, [r["rows"] for r in pts])
        oracle_at = _interp(R, rec, [r["oracle_rows"] for r in pts])
        out["modes"][mode] = {
            "grid": [{"budget": b, "mass_recall": r["mass_recall"], "rows": r["rows"],
                      "oracle_rows": r["oracle_rows"], "tokens": r["selected"],
                      "topk_recall": r["topk_recall"]} for b, r in zip(grid, pts, strict=True)],
            "rows_at_R": rows_at, "oracle_rows_at_R": oracle_at,
            "ratio_vs_fixed": rows_at / fixed["rows"], "ratio_vs_oracle": rows_at / oracle_at,
            "reachable": min(rec) <= R <= max(rec)}
    out["seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kv", nargs="*", default=[], help="real KV files (starc kv extract)")
    ap.add_argument("--synthetic-only", action="store_true")
    ap.add_argument("--policy", default="starc-row")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--floor", type=int, default=128)
    ap.add_argument("--cap", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2, help="decode steps of the synthetic caches")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cfg = config.load()
    load = os.getloadavg()
    results = []
    for path in ([] if a.synthetic_only else a.kv):
        results.append(measure(f"real {os.path.basename(path)}", load_kv(path, cfg), cfg,
                               a.policy, a.budget, a.floor, a.cap))
    for name, shape in SYNTHETIC.items():
        cache = synthetic_kv(decode_steps=a.steps, seed=0, **shape)
        results.append(measure(name, cache, cfg, a.policy, a.budget, a.floor, a.cap))
    if a.json:
        print(json.dumps({"load_before": load, "results": results}, indent=1))
        return
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for r in results:
        f = r["fixed"]
        print(f"\n{r['cache']}: {r['policy']}, {r['plans_per_cell']} plans per cell, floor "
              f"{r['floor']}, cap {r['cap']}, {r['seconds']:.0f} s")
        print(f"  fixed B = {r['B']}: mass recall {f['mass_recall']:.4f}, top-k hit "
              f"{f['topk_recall']:.3f}, {f['rows']:.1f} rows ({f['tokens']:.0f} tokens), row "
              f"oracle at its recall {f['oracle_rows']:.1f}")
        for mode, m in r["modes"].items():
            print(f"  {mode}: budget  recall  top-k   rows   oracle  tokens")
            for g in m["grid"]:
                print(f"    {g['budget']:<8} {g['mass_recall']:.4f}  {g['topk_recall']:.3f}  "
                      f"{g['rows']:6.1f}  {g['oracle_rows']:6.1f}  {g['tokens']:6.0f}")
            flag = "" if m["reachable"] else "  (recall outside the grid: clamped)"
            print(f"    at recall {f['mass_recall']:.4f}: {m['rows_at_R']:.1f} rows, oracle "
                  f"{m['oracle_rows_at_R']:.1f}; / fixed = {m['ratio_vs_fixed']:.2f} (target "
                  f"<= 0.5), / oracle = {m['ratio_vs_oracle']:.2f} (target <= 1.3){flag}")
    print("\n" + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()

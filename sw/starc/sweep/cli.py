"""`starc sweep`: presets x models x context lengths x budgets x policies, cached, parallel."""

from __future__ import annotations

import argparse
from pathlib import Path

from starc.planner.evaluate import DEFAULT_BUDGETS, DEFAULT_POLICIES
from starc.report import ReportWriter, markdown_table
from starc.sweep.engine import expand_grid, run_points
from starc.sweep.points import MODEL_SHAPES, evaluate_point, plot_sweep, reductions


def register(sub: argparse._SubParsersAction) -> None:
    from starc.cli import add_json_arg
    p = sub.add_parser(
        "sweep", help="design-space sweep (cached by content hash; local processes or Dask)",
        description="Evaluate every policy at every budget for each (preset, model shape, "
                    "context length) on seeded synthetic caches. Results are cached by a hash of "
                    "the point and of the code, so nothing stale is reused.")
    p.add_argument("--presets", nargs="+", default=["attacc-hbm3-5.2"])
    p.add_argument("--models", nargs="+", default=["smollm2-135m"], choices=sorted(MODEL_SHAPES))
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--budgets", type=int, nargs="+", default=list(DEFAULT_BUDGETS))
    p.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES))
    p.add_argument("--layers", type=int, default=4,
                   help="layers of the synthetic cache (0-1 dense; default 4 keeps sweeps fast)")
    p.add_argument("--steps", type=int, default=2, help="decode steps per cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="local processes (default: CPUs)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (tcp://host:8786) to run on a cluster instead")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("-o", "--out", type=Path, default=Path("results/sweep"),
                   help="report folder (JSON, CSV, PNG, Markdown)")
    add_json_arg(p)
    p.set_defaults(func=_run)


def sweep_points(args: argparse.Namespace) -> list[dict]:
    return expand_grid(preset=args.presets, model=args.models, context=args.contexts,
                       seed=[args.seed], layers=[args.layers], steps=[args.steps],
                       policies=[list(args.policies)], budgets=[list(args.budgets)])


def _run(args: argparse.Namespace) -> int:
    from starc.cli import print_json, print_table
    points = sweep_points(args)
    results = run_points(points, evaluate_point, workers=args.workers, scheduler=args.scheduler,
                         cache_dir=args.cache_dir)
    rows = [r for res in results for r in res["rows"]]
    with ReportWriter(args.out) as rep:
        rep.json("sweep.json", {"points": points, "rows": rows})
        rep.csv("sweep.csv", rows)
        for name, fig in plot_sweep(rows).items():
            rep.figure(name, fig)
        md = ["# starc sweep\n", markdown_table(
            ["preset", "model", "L", "policy", "B", "slots/qh", "cycles", "nJ", "mass recall"],
            [(r["preset"], r["model"], r["context"], r["policy"], r["budget"],
              r.get("slots_per_head"), r.get("cycles"), r.get("energy_nJ"),
              r.get("mass_recall")) for r in rows])]
        red = reductions(rows)
        if red:
            md.append("\n## Reductions at B = 1024\n")
            md.append(markdown_table(["metric", "value"], [(k, v) for k, v in red.items()]))
        rep.text("README.md", "".join(md))
    if args.json:
        print_json({"report": str(args.out), "rows": rows})
        return 0
    print_table("sweep", ["preset", "model", "L", "policy", "B", "slots/qh", "cycles", "nJ",
                          "mass rec."],
                [(r["preset"], r["model"], r["context"], r["policy"], r["budget"],
                  r.get("slots_per_head"), r.get("cycles"), r.get("energy_nJ"),
                  r.get("mass_recall")) for r in rows])
    print(f"report written to {args.out}/")
    return 0

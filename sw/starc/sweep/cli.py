"""`starc sweep`: presets x models x context lengths x budgets x policies, cached, parallel."""

from __future__ import annotations

import argparse
from pathlib import Path

from starc.planner.evaluate import DEFAULT_BUDGETS
from starc.planner.registry import DEFAULT_POLICIES, POLICIES
from starc.report import ReportWriter, markdown_table
from starc.sweep.engine import expand_grid, run_points
from starc.sweep.points import (
    MODEL_SHAPES,
    evaluate_point,
    plot_sweep,
    reductions_by_point,
    reductions_pooled,
)


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
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(DEFAULT_POLICIES),
                   help=f"policies (default: {' '.join(DEFAULT_POLICIES)})")
    p.add_argument("--layers", type=int, default=4,
                   help="layers of the synthetic cache (0-1 dense; default 4 keeps sweeps fast)")
    p.add_argument("--steps", type=int, default=2, help="decode steps per cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kv", type=Path, nargs="+", default=None, metavar="FILE",
                   help="real KV files (starc kv extract) instead of synthetic caches: one point "
                        "per file and preset; --models, --contexts, --layers, --steps are ignored")
    p.add_argument("--fill", choices=["never", "auto"], default="never",
                   help="planner fill (see `starc eval --help`): auto opens idle groups on a "
                        "dummy row so a round can use MACAB")
    p.add_argument("--cost-programs", type=int, default=8,
                   help="programs timed per policy and budget (-1: all; default 8)")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: CPUs)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (tcp://host:8786) to run on a cluster instead")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("-o", "--out", type=Path, default=Path("results/sweep"),
                   help="report folder (JSON, CSV, PNG, Markdown)")
    add_json_arg(p)
    p.set_defaults(func=_run)


def _kv_entry(path: Path) -> dict:
    """Point fields of a KV file: its path, content hash, model name and prefill length."""
    import hashlib

    from starc.kv import load_kv
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    meta = load_kv(path).meta
    return {"kv": str(path.resolve()), "kv_sha256": h.hexdigest(), "model": meta.model,
            "context": meta.prefill_len}


def sweep_points(args: argparse.Namespace) -> list[dict]:
    extra = {}
    if getattr(args, "fill", "never") != "never":
        extra["fill"] = [args.fill]
    if getattr(args, "cost_programs", 8) != 8:
        extra["cost_programs"] = [args.cost_programs]
    if getattr(args, "kv", None):
        return [{"preset": pre, **_kv_entry(path), "seed": args.seed,
                 "policies": list(args.policies), "budgets": list(args.budgets),
                 **{k: v[0] for k, v in extra.items()}}
                for path in args.kv for pre in args.presets]
    return expand_grid(preset=args.presets, model=args.models, context=args.contexts,
                       seed=[args.seed], layers=[args.layers], steps=[args.steps],
                       policies=[list(args.policies)], budgets=[list(args.budgets)], **extra)


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
        red_head, red_rows = _reduction_table(rows)
        if red_rows:
            md.append("\n## Reductions at B = 1024\n\n"
                      "Latency = cycles; energy = explicit per-activation energy; AttAcc energy = "
                      "the AttAcc-compatible per-byte figure. Token-wise = `sparq`. L = `sum ...`: "
                      "each policy's costs summed over those contexts first.\n\n")
            md.append(markdown_table(red_head, red_rows))
        rep.text("README.md", "".join(md))
    if args.json:
        print_json({"report": str(args.out), "rows": rows,
                    "reductions": reductions_by_point(rows) + reductions_pooled(rows)})
        return 0
    print_table("sweep", ["preset", "model", "L", "policy", "B", "slots/qh", "cycles", "nJ",
                          "mass rec."],
                [(r["preset"], r["model"], r["context"], r["policy"], r["budget"],
                  r.get("slots_per_head"), r.get("cycles"), r.get("energy_nJ"),
                  r.get("mass_recall")) for r in rows])
    red_head, red_rows = _reduction_table(rows)
    if red_rows:
        print_table("reductions at B = 1024 (token-wise = sparq)", red_head, red_rows)
    print(f"report written to {args.out}/")
    return 0


_RED_COLS = [("latency_vs_tokenwise", "lat. vs tw"), ("energy_vs_tokenwise", "E vs tw"),
             ("attacc_energy_vs_tokenwise", "AttAcc E vs tw"),
             ("latency_vs_dense", "lat. vs dense"), ("energy_vs_dense", "E vs dense"),
             ("attacc_energy_vs_dense", "AttAcc E vs dense")]


def _reduction_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """One line per (point, STARC variant): reductions at B = 1024 as percentages; then, per
    (preset, model) with several contexts, the reductions of the costs summed over them."""
    head = ["preset", "model", "L", "variant"] + [h for _, h in _RED_COLS]
    out = []
    for red in reductions_by_point(rows) + reductions_pooled(rows):
        for star in ("starc", "starc-row"):
            vals = [red.get(f"{star}_{k}") for k, _ in _RED_COLS]
            if any(v is not None for v in vals):
                out.append([red["preset"], red["model"], red["context"], star] +
                           ["-" if v is None else f"{100 * v:.1f} %" for v in vals])
    return head, out

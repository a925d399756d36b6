"""`starc sweep`: presets x models x context lengths x budgets x policies, cached, parallel."""

from __future__ import annotations

import argparse
from pathlib import Path

from starc.glossary import glossary_line
from starc.planner.cli import add_cost_args, add_mass_args, budget_arg
from starc.planner.evaluate import DEFAULT_BUDGETS
from starc.planner.registry import DEFAULT_POLICIES, POLICIES
from starc.planner.rounds import OBJECTIVES, add_objective_arg, setting
from starc.planner.table import COLUMNS, baseline_notes, cells, print_rows
from starc.report import ReportWriter, markdown_table
from starc.sweep.engine import expand_grid, run_points
from starc.sweep.points import (
    MODEL_SHAPES,
    REDUCTION_METRICS,
    evaluate_point,
    plot_sweep,
    reduction_notes,
    reductions_by_point,
    reductions_pooled,
)
from starc.sweep.quality import add_sweep_args, run_sweep
from starc.sweep.system import add_sweep_args as add_system_sweep_args
from starc.sweep.system import run_system_sweep


def register(sub: argparse._SubParsersAction) -> None:
    from starc.argtypes import dask_address, int_range
    from starc.cli import add_force_arg, add_json_arg
    p = sub.add_parser(
        "sweep", help="design-space sweep (cached by content hash; local processes or Dask)",
        description="Evaluate every policy at every budget for each (preset, model shape, "
                    "context length) on seeded synthetic caches. Results are cached by a hash of "
                    "the point and of the code, so nothing stale is reused.")
    p.add_argument("--presets", nargs="+", default=["attacc-hbm3-5.2"],
                   help="preset names or .toml files (default attacc-hbm3-5.2)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SEC.KEY=V[,V...]",
                   help="override a preset field of every preset, e.g. --set timing.tCCD_AB=4; "
                        "comma-separated values make a grid (--set timing.tCCD_AB=4,6: one point "
                        "per value; several --set: every combination); repeatable")
    p.add_argument("--models", nargs="+", default=["smollm2-135m"], choices=sorted(MODEL_SHAPES))
    p.add_argument("--contexts", type=int_range(1), nargs="+", default=None,
                   help="context lengths (default 2048 4096; with --accuracy 1024 2048)")
    p.add_argument("--budgets", type=budget_arg, nargs="+", default=None,
                   help=f"budgets (default {' '.join(map(str, DEFAULT_BUDGETS))}; with "
                        "--accuracy 128 256 512)")
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(DEFAULT_POLICIES),
                   help=f"policies (default: {' '.join(DEFAULT_POLICIES)})")
    p.add_argument("--layers", type=int_range(3, 4096), default=4,
                   help="layers of the synthetic cache, at least 3 (0-1 dense; default 4 keeps "
                        "sweeps fast)")
    p.add_argument("--steps", type=int_range(1, 1 << 16), default=2,
                   help="decode steps per cache")
    p.add_argument("--seed", type=int_range(0, (1 << 63) - 1), default=0)
    p.add_argument("--kv", type=Path, nargs="+", default=None, metavar="FILE",
                   help="real KV files (starc kv extract) instead of synthetic caches: one point "
                        "per file and preset; --models, --contexts, --layers, --steps are ignored")
    add_objective_arg(p)
    add_cost_args(p)
    add_mass_args(p)
    p.add_argument("--workers", type=int_range(1, 1024), default=None,
                   help="local processes (default: CPUs)")
    p.add_argument("--scheduler", type=dask_address, default=None,
                   help="Dask scheduler address (tcp://host:8786) to run on a cluster instead; "
                        "checked within a few seconds")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="folder of cached point results (default ~/.cache/starc-pim/sweep)")
    p.add_argument("-o", "--out", type=Path, default=Path("results/sweep"),
                   help="report folder (JSON, CSV, PNG, Markdown)")
    add_force_arg(p)
    add_sweep_args(p)
    add_system_sweep_args(p)
    add_json_arg(p)
    p.set_defaults(func=_run)


def _kv_entry(path: Path) -> dict:
    """Point fields of a KV file: its path, content hash, model name and prefill length."""
    import hashlib

    from starc.kv import load_kv
    h = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(file.relative_to(path).as_posix().encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    meta = load_kv(path).meta
    return {"kv": str(path.resolve()), "kv_sha256": h.hexdigest(), "model": meta.model,
            "context": meta.prefill_len}


def sweep_points(args: argparse.Namespace) -> list[dict]:
    extra = {}
    if getattr(args, "objective", OBJECTIVES[0]) != OBJECTIVES[0]:
        extra["objective"] = [args.objective]
    if getattr(args, "cost_programs", None) is not None:
        extra["cost_programs"] = [args.cost_programs]
    if getattr(args, "host_cycles", 0):
        extra["host_cycles"] = [args.host_cycles]
    from starc.planner.budget import DEFAULT_CAP, DEFAULT_FLOOR
    if getattr(args, "mass_floor", DEFAULT_FLOOR) != DEFAULT_FLOOR:
        extra["mass_floor"] = [args.mass_floor]
    if getattr(args, "mass_cap", DEFAULT_CAP) != DEFAULT_CAP:
        extra["mass_cap"] = [args.mass_cap]
    grid = override_grid(getattr(args, "overrides", None) or [])
    if grid != [[]]:
        extra["overrides"] = grid
    if getattr(args, "kv", None):
        return [{"preset": pre, **_kv_entry(path), "seed": args.seed,
                 "policies": list(args.policies), "budgets": list(args.budgets),
                 **{k: v[0] for k, v in extra.items() if k != "overrides"},
                 **({"overrides": ov} if ov else {})}
                for path in args.kv for pre in args.presets for ov in grid]
    return expand_grid(preset=args.presets, model=args.models, context=args.contexts,
                       seed=[args.seed], layers=[args.layers], steps=[args.steps],
                       policies=[list(args.policies)], budgets=[list(args.budgets)], **extra)


def override_grid(sets: list[str]) -> list[list[str]]:
    """``--set`` options with comma-separated values -> every combination, each a list of
    ``section.field=value`` overrides (``[[]]`` without ``--set``). Raises UserError for a
    malformed option or a field given twice."""
    import itertools

    from starc.cli import UserError
    axes: list[list[str]] = []
    seen: set[str] = set()
    for o in sets:
        if "=" not in o:
            raise UserError(f"--set {o!r} must look like section.field=value[,value...], e.g. "
                            f"timing.tCCD_AB=4,6")
        key, vals = (x.strip() for x in o.split("=", 1))
        if key in seen:
            raise UserError(f"--set {key} given twice; list its values in one option "
                            f"({key}=a,b,...)")
        seen.add(key)
        values = [v.strip() for v in vals.split(",")]
        if any(not v for v in values):
            raise UserError(f"--set {o!r}: an empty value in the list")
        axes.append([f"{key}={v}" for v in values])
    return [list(c) for c in itertools.product(*axes)]


def _check(args: argparse.Namespace) -> None:
    """Everything checkable before the first point runs (raises)."""
    from starc import config
    from starc.cli import UserError
    from starc.kv import KVMeta, check_capacity
    from starc.outputs import check_not_input
    from starc.sweep.engine import default_cache_dir
    cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise UserError(f"--cache-dir {cache}: a file, not a folder")
    check_not_input(args.out, [cache])
    cfgs = []
    for pre in args.presets:
        for ov in override_grid(args.overrides):
            try:
                cfgs.append(config.load(pre, ov or None))
            except config.ConfigError as e:
                raise UserError(f"{pre}{' with --set ' + ' '.join(ov) if ov else ''}: {e}") \
                    from None
    if args.kv:
        from starc.kv import load_kv
        for f in args.kv:
            meta = load_kv(f).meta
            if meta.decode_steps < 1:
                raise UserError(f"--kv {f}: no decode steps, so no queries to evaluate")
            if meta.n_layers < 3:
                raise UserError(f"--kv {f}: {meta.n_layers} layers, all dense (layers 0-1); a "
                                f"sweep needs a sparse layer")
            for cfg in cfgs:
                check_capacity(meta, cfg)
                _check_layout(cfg, meta.head_dim)
        return
    for cfg in cfgs:
        for model in args.models:
            shape = MODEL_SHAPES[model]
            _check_layout(cfg, shape["head_dim"])
            for ctx in args.contexts:
                meta = KVMeta(model=model, n_layers=args.layers, n_q_heads=shape["n_q_heads"],
                              n_kv_heads=shape["n_kv_heads"], head_dim=shape["head_dim"],
                              prefill_len=ctx, decode_steps=args.steps)
                check_capacity(meta, cfg)
                nbytes = 4 * meta.n_layers * meta.head_dim * (
                    2 * meta.context_len * meta.n_kv_heads + meta.decode_steps * meta.n_q_heads)
                if nbytes > SYNTHETIC_MAX_BYTES:
                    raise UserError(f"{model} at context {ctx} with {args.layers} layers would "
                                    f"take {nbytes / 2**30:.1f} GiB; use fewer layers or a "
                                    f"shorter context")


def _check_layout(cfg, head_dim: int) -> None:
    """The planner's layout must hold the head size (raises UserError naming legal values)."""
    from starc.address import Geometry, check_geometry
    from starc.cli import UserError
    from starc.config import ConfigError
    try:
        check_geometry(Geometry(cfg, head_dim))
    except (ValueError, ConfigError) as e:
        raise UserError(f"preset {cfg.name}: {e}") from None


#: Largest synthetic cache of one point (bytes of K, V and Q in float32 while building).
SYNTHETIC_MAX_BYTES = 8 << 30


def _run(args: argparse.Namespace) -> int:
    from starc.cli import print_json
    if args.system:
        return run_system_sweep(args)
    if args.accuracy or args.perplexity:
        if any(isinstance(b, str) for b in args.budgets or ()):
            from starc.cli import UserError
            raise UserError("mass budgets (p0.95) apply to the cost sweep; --accuracy and "
                            "--perplexity take token budgets")
        return run_sweep(args)
    args.contexts = args.contexts or [2048, 4096]
    args.budgets = args.budgets or list(DEFAULT_BUDGETS)
    from starc.sweep.engine import probe_scheduler
    rep = ReportWriter(args.out, command="sweep", force=args.force,
                       inputs=[*(args.kv or []), *(p for p in args.presets
                                                   if p.endswith(".toml"))])
    _check(args)
    if args.scheduler:
        probe_scheduler(args.scheduler)
    points = sweep_points(args)
    results = run_points(points, evaluate_point, workers=args.workers, scheduler=args.scheduler,
                         cache_dir=args.cache_dir)
    rows = [r for res in results for r in res["rows"]]
    reds = reductions_by_point(rows) + reductions_pooled(rows)
    red_notes = reduction_notes(rows, reds)
    planner = setting(args.objective)
    samplings = sorted({res["meta"].get("sampling", "?") for res in results})
    title = _title(args, results)
    with rep:
        rep.json("sweep.json", {"points": points, "rows": rows, "reductions": reds,
                                "planner": planner, "sampling": samplings})
        rep.csv("sweep.csv", rows)
        if reds:
            rep.csv("reductions.csv", reds)
        for name, fig in plot_sweep(rows, planner=planner, sampling=samplings).items():
            rep.figure(name, fig)
        md = [f"# starc sweep\n\n{title}\n\n",
              markdown_table(list(_COLUMNS), [cells(r, _COLUMNS) for r in rows]),
              "\n" + glossary_line(_COLUMNS, notes=baseline_notes(rows)) + "\n",
              "\n![Pareto: recall against latency and energy](pareto.png)\n"]
        md.append("\n## Reductions\n\n")
        if reds:
            head, red_rows = _reduction_table(reds)
            md += [markdown_table(head, red_rows), "\n" + glossary_line(
                head, notes=["L = `sum ...`: each policy's costs summed over those contexts "
                             "first.", *red_notes]) + "\n"]
        else:
            md.append(" ".join(red_notes) + "\n")
        rep.text("README.md", "".join(md))
    if args.json:
        print_json({"report": str(args.out), "planner": planner, "sampling": samplings,
                    "rows": rows, "reductions": reds})
        return 0
    print_rows(title, _COLUMNS, [cells(r, _COLUMNS) for r in rows], notes=baseline_notes(rows))
    if reds:
        head, red_rows = _reduction_table(reds)
        print_rows(f"reductions 1 - variant / baseline (token-wise = sparq), {planner}; "
                   f"from the costs above ({'; '.join(samplings)})", head,
                   red_rows, notes=["context `sum ...`: costs summed over those contexts first.",
                                    *red_notes])
    else:
        print(" ".join(red_notes))
    print(f"report written to {args.out}/")
    return 0


_COLUMNS = ("preset", "model", "context", *COLUMNS)


def _title(args: argparse.Namespace, results: list[dict]) -> str:
    """The sweep's table title: the planner setting and each point's cost sampling."""
    samplings = sorted({res["meta"].get("sampling", "?") for res in results})
    return (f"sweep, {setting(args.objective)}; costs per layer and query head on one channel, "
            f"selection included; " + "; ".join(samplings))


#: the reductions table's columns after the point and the variant
_RED_SHOWN = ("latency_vs_tokenwise", "energy_vs_tokenwise", "attacc_energy_vs_tokenwise",
              "latency_vs_dense", "energy_vs_dense", "attacc_energy_vs_dense",
              "attention_latency_vs_tokenwise", "attention_latency_vs_dense")
assert set(_RED_SHOWN) <= set(REDUCTION_METRICS)


def _reduction_table(reds: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One line per (point, budget, STARC variant): the reductions as percentages (``-``: the
    baseline is missing; the notes say why)."""
    head = ["preset", "model", "context", "budget", "variant", *_RED_SHOWN]
    out = []
    for red in reds:
        out.append([str(red["preset"]), str(red["model"]), str(red["context"]),
                    str(red["budget"]), red["variant"]] +
                   ["-" if red.get(k) is None else f"{100 * red[k]:.1f} %" for k in _RED_SHOWN])
    return head, out

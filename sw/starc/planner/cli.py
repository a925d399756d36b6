"""``starc eval``: compare selection policies on a KV file, an artifact folder or a synthetic
cache; print the comparison table (:mod:`starc.planner.table`) and write ``eval.json`` +
``eval.csv``.

The input options (synthetic cache, compile options, dense layers) are the compiler's
(:mod:`starc.compiler.cli`); the planner options (policies, budgets, ``--objective``, the cost
sampling) are the planner's, with the defaults ``starc sweep`` and ``starc demo`` use.
Expected errors propagate to the boundary in :func:`starc.cli.main` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

__all__ = ["add_cost_args", "add_mass_args", "budget_arg", "cmd_eval", "register",
           "rows_to_csv"]


def budget_arg(text: str) -> int | str:
    """A ``--budgets`` value: a token count (``1024``) or a mass target (``p0.95``)."""
    from starc.argtypes import BIG
    from starc.planner.budget import parse_budget
    try:
        label = parse_budget(text).label
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if isinstance(label, int) and label > BIG:
        raise argparse.ArgumentTypeError(f"a token budget must be <= {BIG}, not {text!r}")
    return label


def add_mass_args(p: argparse.ArgumentParser) -> None:
    """The floor and cap of mass budgets (p0.95): the same in eval and sweep."""
    from starc.argtypes import int_range
    from starc.planner.budget import DEFAULT_CAP, DEFAULT_FLOOR
    p.add_argument("--mass-floor", type=int_range(1), default=DEFAULT_FLOOR,
                   help=f"mass budgets: attend at least this many tokens (default "
                        f"{DEFAULT_FLOOR})")
    p.add_argument("--mass-cap", type=int_range(1), default=DEFAULT_CAP,
                   help=f"mass budgets: attend at most this many tokens (default {DEFAULT_CAP})")


def add_cost_args(p: argparse.ArgumentParser) -> None:
    """``--cost-programs`` and ``--host-cycles``: the same meaning in eval and sweep."""
    from starc.argtypes import int_range
    from starc.planner.sampling import ALL_UP_TO, SAMPLE_N
    p.add_argument("--cost-programs", type=int_range(-1), default=None,
                   help=f"plans timed per policy and budget (default: every plan when a cell "
                        f"has at most {ALL_UP_TO}, else a seeded sample of {SAMPLE_N} with 95 %% "
                        f"intervals; -1: every plan; k: a sample of k)")
    p.add_argument("--host-cycles", type=int_range(0), default=0,
                   help="cycles the host takes to choose after a selection read-back (default "
                        "0: not modelled)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``starc`` sub-command parser."""
    from starc.argtypes import int_range
    from starc.cli import add_force_arg, add_json_arg, add_preset_args
    from starc.compiler.cli import add_compile_args, add_synthetic_args
    from starc.planner.evaluate import DEFAULT_BUDGETS
    from starc.planner.registry import DEFAULT_POLICIES, POLICIES
    from starc.planner.rounds import add_objective_arg

    pe = subparsers.add_parser(
        "eval", help="compare selection policies: quality, rows, occupancy, cycles, energy",
        description="Evaluate dense, oracle, Quest, SparQ, StreamingLLM and STARC policies on a "
                    "KV file, a compiled artifact folder or a synthetic cache. Costs are per "
                    "layer, per query head, on the KV head's channel, selection pass included; "
                    "GQA union rows per KV head are reported beside them.")
    pe.add_argument("input", nargs="?", type=Path,
                    help="KV file or artifact folder; or --synthetic")
    pe.add_argument("--policies", nargs="+", choices=POLICIES, default=list(DEFAULT_POLICIES),
                    help=f"policies (default: {' '.join(DEFAULT_POLICIES)})")
    pe.add_argument("--budgets", nargs="+", type=budget_arg, default=list(DEFAULT_BUDGETS),
                    help="token budgets B (default 256 512 1024 2048), or mass targets such as "
                         "p0.95: as many tokens as the estimated attention mass needs (policies "
                         "that adapt: oracle and the STARC variants)")
    add_mass_args(pe)
    pe.add_argument("--eval-steps", type=int_range(0), nargs="+", default=None,
                    help="decode steps to evaluate (default all)")
    pe.add_argument("--eval-layers", type=int_range(0), nargs="+", default=None,
                    help="layers to evaluate, none of them in --dense-layers (default: all not "
                         "in --dense-layers)")
    add_cost_args(pe)
    pe.add_argument("--sparq-r", type=int_range(1, 4096), default=None,
                    help="SparQ channels r, 1 .. head_dim (default d/4)")
    add_objective_arg(pe)
    pe.add_argument("--out", "-o", type=Path, default=Path("eval-results"),
                    help="folder for eval.json and eval.csv (default ./eval-results)")
    add_force_arg(pe)
    add_preset_args(pe)
    add_compile_args(pe)
    add_synthetic_args(pe)
    add_json_arg(pe)
    pe.set_defaults(func=cmd_eval)


def _load_input(args: argparse.Namespace, cfg: Any) -> tuple[Any, dict[str, Any]]:
    from starc.compiler.artifact import load_artifact
    from starc.compiler.cli import check_synthetic, source_arg, synthetic_cache
    from starc.kv import load_kv
    src = source_arg(args, "input")
    if args.synthetic:
        check_synthetic(args, cfg)
        return synthetic_cache(args), {}
    if (src / "manifest.json").is_file():
        ck = load_artifact(src, cfg)
        return ck.cache, {ck.mode: ck}
    return load_kv(src, cfg), {}


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    from starc.report import csv_cell
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in r.items()})
    return buf.getvalue()


def _check_eval(args: argparse.Namespace, meta: Any) -> None:
    """Options that need the cache's shape: layers, steps, SparQ r (raises UserError)."""
    from starc.cli import UserError
    from starc.compiler.cli import check_dense
    dense = sorted(set(args.dense_layers))
    check_dense(args, meta.n_layers)
    for l in args.eval_layers or ():
        if not 0 <= l < meta.n_layers:
            raise UserError(f"--eval-layers {l}: the cache has layers 0..{meta.n_layers - 1}")
        if l in dense:
            raise UserError(f"--eval-layers {l}: layer {l} is dense (--dense-layers "
                            f"{' '.join(map(str, dense))}), so every policy would run dense "
                            f"attention there; evaluate sparse layers, or drop {l} from "
                            f"--dense-layers")
    for s in args.eval_steps or ():
        if not 0 <= s < meta.decode_steps:
            raise UserError(f"--eval-steps {s}: the cache has decode steps "
                            f"0..{meta.decode_steps - 1}" if meta.decode_steps else
                            f"--eval-steps {s}: the cache has no decode steps")
    if args.sparq_r is not None and args.sparq_r > meta.head_dim:
        raise UserError(f"--sparq-r {args.sparq_r}: at most head_dim = {meta.head_dim} channels")


def cmd_eval(args: argparse.Namespace) -> int:
    from starc import outputs
    from starc.cli import preset_from_args, preset_inputs, print_json
    from starc.compiler import CompileOptions
    from starc.compiler.cli import (
        check_compilable,
        compile_options_from_args,
        resolve_dense_layers,
        source_arg,
        synthetic_meta,
    )
    from starc.planner.budget import parse_budget
    from starc.planner.evaluate import EvalOptions, evaluate
    from starc.planner.table import COLUMNS, baseline_notes, cells, print_rows, title
    src = source_arg(args, "input")
    resolve_dense_layers(args)
    out_dir = outputs.OutputDir(args.out, command="eval", force=args.force,
                                inputs=[src, *preset_inputs(args)])
    cfg = preset_from_args(args)
    if args.synthetic:
        _check_eval(args, synthetic_meta(args))
    cache, compiled = _load_input(args, cfg)
    _check_eval(args, cache.meta)
    # the layout options tune our row-aligned variant; the other modes keep their defaults
    copts: dict[str, CompileOptions] = {
        mode: CompileOptions(mode=mode, seed=args.seed, dense_layers=tuple(args.dense_layers))
        for mode in ("artifact", "global", "dense")}
    copts["row-aligned"] = compile_options_from_args(args, "row-aligned")
    check_compilable(cache.meta, cfg, copts["row-aligned"], args)
    opts = EvalOptions(policies=tuple(args.policies), budgets=tuple(args.budgets),
                       steps=tuple(args.eval_steps) if args.eval_steps else None,
                       layers=tuple(args.eval_layers) if args.eval_layers else None,
                       dense_layers=tuple(args.dense_layers),
                       cost_programs=args.cost_programs, sparq_r=args.sparq_r,
                       objective=args.objective, host_cycles=args.host_cycles,
                       mass_floor=args.mass_floor, mass_cap=args.mass_cap, seed=args.seed)
    res = evaluate(cache, cfg, opts, compiled=compiled, compile_options=copts)
    res.rows.sort(key=lambda r: (parse_budget(r["budget"]).sort_key(),
                                 list(args.policies).index(r["policy"])))
    doc = {"meta": res.meta, "rows": res.rows, "compile_stats": res.compile_stats}
    text = outputs.strict_json(doc, indent=1) + "\n"
    with out_dir.build() as tmp:
        (tmp / "eval.json").write_text(text, encoding="utf-8")
        (tmp / "eval.csv").write_text(rows_to_csv(res.rows), encoding="utf-8")
    if args.json:
        print_json(doc)
        return 0
    print_rows(title(res.meta), COLUMNS, [cells(r) for r in res.rows],
               notes=baseline_notes(res.rows))
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'eval.csv'}")
    return 0

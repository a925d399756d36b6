"""``starc compile`` and ``starc eval``.

- ``starc compile KV --mode M --out DIR``: cluster and place a KV cache (or ``--synthetic``),
  write the artifact folder, print the compile statistics.
- ``starc eval INPUT``: compare selection policies on a KV file, an artifact folder or a synthetic
  cache; print the comparison table and write ``eval.json`` + ``eval.csv``.

Handlers return exit codes: 0 on success, 2 on bad input (one line on stderr, no traceback;
expected errors propagate to the boundary in :func:`starc.cli.main`). Every option is range-checked
at parse time; the output folder, the options against the input's shape and the preset's capacity
are checked before any clustering or synthetic data generation (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

__all__ = ["cmd_compile", "cmd_eval", "register"]


def _add_synthetic_args(p: argparse.ArgumentParser) -> None:
    from starc.argtypes import int_range
    g = p.add_argument_group("synthetic cache (with --synthetic)")
    g.add_argument("--synthetic", action="store_true",
                   help="use a seeded synthetic cache instead of a file")
    g.add_argument("--layers", dest="syn_layers", type=int_range(1, 4096), default=4,
                   help="default 4")
    g.add_argument("--q-heads", dest="syn_q_heads", type=int_range(1, 4096), default=9,
                   help="default 9")
    g.add_argument("--kv-heads", dest="syn_kv_heads", type=int_range(1, 4096), default=3,
                   help="default 3")
    g.add_argument("--head-dim", dest="syn_head_dim", type=int_range(1, 4096), default=64,
                   help="default 64")
    g.add_argument("--prefill", dest="syn_prefill", type=int_range(1), default=4096,
                   help="default 4096")
    g.add_argument("--decode-steps", dest="syn_steps", type=int_range(0, 1 << 20), default=4,
                   help="decode steps (default 4)")
    g.add_argument("--data-seed", dest="syn_seed", type=int_range(0, (1 << 63) - 1), default=0,
                   help="seed of the synthetic cache (default 0)")


def _add_compile_args(p: argparse.ArgumentParser) -> None:
    from starc.argtypes import int_range
    from starc.compiler.placement import PLACEMENTS
    p.add_argument("--placement", choices=PLACEMENTS, default=None,
                   help="block placement (default: coselect for row-aligned, naive otherwise)")
    p.add_argument("--seed", type=int_range(0, (1 << 63) - 1), default=0,
                   help="clustering seed (default 0)")
    p.add_argument("--window", type=int_range(1, 1 << 24), default=None,
                   help="prefill clustering window in tokens (default: mode's)")
    p.add_argument("--buffer", type=int_range(1, 1 << 20), default=None,
                   help="recent-buffer length R (default 64; global 128)")
    p.add_argument("--cluster-tokens", type=int_range(1, 1 << 16), default=None,
                   help="tokens per cluster (default: artifact 16, row-aligned one group row, "
                        "global 32)")
    p.add_argument("--iters", type=int_range(1, 1000), default=None,
                   help="clustering iterations (1..1000)")
    p.add_argument("--sinks", type=int_range(0, 1 << 24), default=None,
                   help="first tokens kept unclustered and always attended (default: one group "
                        "row for row-aligned, 0 otherwise)")
    p.add_argument("--dense-layers", type=int_range(0, 4095), nargs="*", default=None,
                   help="layers kept dense (default 0 1; given layers must exist)")


def _synthetic_meta(args: argparse.Namespace) -> Any:
    """The meta of the synthetic cache the arguments ask for (checked before generating it)."""
    from starc.kv import KVError, KVMeta
    if args.syn_q_heads % args.syn_kv_heads:
        raise KVError(f"--q-heads ({args.syn_q_heads}) must be a multiple of --kv-heads "
                      f"({args.syn_kv_heads})")
    return KVMeta(model="synthetic", n_layers=args.syn_layers, n_q_heads=args.syn_q_heads,
                  n_kv_heads=args.syn_kv_heads, head_dim=args.syn_head_dim,
                  prefill_len=args.syn_prefill, decode_steps=args.syn_steps)


#: Largest synthetic cache generated on request (bytes of K, V and Q in float32 while building).
SYNTHETIC_MAX_BYTES = 8 << 30


def _check_synthetic(args: argparse.Namespace, cfg: Any) -> None:
    from starc.kv import KVError, check_capacity
    m = _synthetic_meta(args)
    check_capacity(m, cfg)
    nbytes = 4 * m.n_layers * m.head_dim * (2 * m.context_len * m.n_kv_heads
                                            + m.decode_steps * m.n_q_heads)
    if nbytes > SYNTHETIC_MAX_BYTES:
        raise KVError(f"the synthetic cache would take {nbytes / 2**30:.1f} GiB while it is "
                      f"generated (limit {SYNTHETIC_MAX_BYTES / 2**30:.0f} GiB); use fewer "
                      f"layers, heads, tokens or decode steps")


def _synthetic(args: argparse.Namespace) -> Any:
    from starc.kv import synthetic_kv
    return synthetic_kv(n_layers=args.syn_layers, n_q_heads=args.syn_q_heads,
                        n_kv_heads=args.syn_kv_heads, head_dim=args.syn_head_dim,
                        prefill_len=args.syn_prefill, decode_steps=args.syn_steps,
                        seed=args.syn_seed)


def _dense_layers(args: argparse.Namespace) -> None:
    """``--dense-layers`` as given (checked against the cache later), else the default 0 1
    (layers a small cache lacks are then simply absent)."""
    args.dense_given = args.dense_layers is not None
    if args.dense_layers is None:
        args.dense_layers = [0, 1]


def _check_dense(args: argparse.Namespace, n_layers: int) -> None:
    from starc.compiler.compile import CompileError
    bad = [l for l in args.dense_layers if not 0 <= l < n_layers]
    if bad and getattr(args, "dense_given", True):
        raise CompileError(f"--dense-layers {' '.join(map(str, bad))}: the cache has layers "
                           f"0..{n_layers - 1}")


def _options(args: argparse.Namespace, mode: str) -> Any:
    from starc.compiler import CompileOptions
    return CompileOptions(mode=mode, placement=args.placement, seed=args.seed,
                          window=args.window, buffer=args.buffer,
                          cluster_tokens=args.cluster_tokens, iters=args.iters,
                          sinks=args.sinks, dense_layers=tuple(args.dense_layers))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compile`` and ``eval`` to the ``starc`` sub-command parser."""
    from starc.argtypes import int_range
    from starc.cli import add_force_arg, add_json_arg, add_preset_args
    from starc.compiler.compile import MODES
    from starc.planner.evaluate import DEFAULT_BUDGETS
    from starc.planner.registry import DEFAULT_POLICIES, POLICIES
    from starc.planner.rounds import add_objective_arg

    pc = subparsers.add_parser(
        "compile", help="cluster and place a KV cache into a PIM memory image",
        description="Compile a KV cache (schema starc-kv/1) into an artifact folder: memory "
                    "image, cluster table, token map, statistics (docs/compiler.md).")
    pc.add_argument("kv", nargs="?", type=Path,
                    help="KV file (.npz, .safetensors or .npy directory); or --synthetic")
    pc.add_argument("--mode", choices=MODES, default="row-aligned",
                    help="clustering mode (default row-aligned)")
    pc.add_argument("--out", "-o", type=Path, required=True,
                    help="artifact folder to write (a new or empty folder, or one an earlier "
                         "`starc compile` wrote)")
    add_force_arg(pc)
    add_preset_args(pc)
    _add_compile_args(pc)
    _add_synthetic_args(pc)
    add_json_arg(pc)
    pc.set_defaults(func=cmd_compile)

    pe = subparsers.add_parser(
        "eval", help="compare selection policies: quality, rows, occupancy, cycles, energy",
        description="Evaluate dense, oracle, Quest, SparQ, StreamingLLM and STARC policies on a "
                    "KV file, a compiled artifact folder or a synthetic cache. Costs are per "
                    "layer, per query head, on the KV head's channel; GQA union rows per KV "
                    "head are reported beside them.")
    pe.add_argument("input", nargs="?", type=Path,
                    help="KV file or artifact folder; or --synthetic")
    pe.add_argument("--policies", nargs="+", choices=POLICIES, default=list(DEFAULT_POLICIES),
                    help=f"policies (default: {' '.join(DEFAULT_POLICIES)})")
    pe.add_argument("--budgets", nargs="+", type=int_range(1), default=list(DEFAULT_BUDGETS),
                    help="token budgets B (default 256 512 1024 2048)")
    pe.add_argument("--eval-steps", type=int_range(0), nargs="+", default=None,
                    help="decode steps to evaluate (default all)")
    pe.add_argument("--eval-layers", type=int_range(0), nargs="+", default=None,
                    help="layers to evaluate, none of them in --dense-layers (default: all not "
                         "in --dense-layers)")
    pe.add_argument("--cost-programs", type=int_range(-1), default=24,
                    help="programs timed per policy and budget (-1: all; default 24)")
    pe.add_argument("--sparq-r", type=int_range(1, 4096), default=None,
                    help="SparQ channels r, 1 .. head_dim (default d/4)")
    add_objective_arg(pe)
    pe.add_argument("--out", "-o", type=Path, default=Path("eval-results"),
                    help="folder for eval.json and eval.csv (default ./eval-results)")
    add_force_arg(pe)
    add_preset_args(pe)
    _add_compile_args(pe)
    _add_synthetic_args(pe)
    add_json_arg(pe)
    pe.set_defaults(func=cmd_eval)


def _check_compilable(meta: Any, cfg: Any, options: Any, args: argparse.Namespace) -> None:
    """Everything that can be said before compiling: the preset holds the cache, the planner can
    evaluate its geometry, the options fit the mode and the cache (raises)."""
    from starc.address import Geometry
    from starc.kv import check_capacity
    from starc.planner.program import check_geometry
    check_capacity(meta, cfg)
    geo = Geometry(cfg, meta.head_dim)
    check_geometry(geo)
    _check_dense(args, meta.n_layers)
    options.resolve(geo, meta.prefill_len)


def _source(args: argparse.Namespace, name: str) -> Any:
    from starc.cli import UserError
    path = getattr(args, name)
    if args.synthetic and path is not None:
        raise UserError(f"give a KV input ({path}) or --synthetic, not both")
    if not args.synthetic and path is None:
        raise UserError("give a KV file (or an artifact folder for eval), or --synthetic")
    return path


def cmd_compile(args: argparse.Namespace) -> int:
    from starc import outputs
    from starc.cli import preset_from_args, preset_inputs, print_json, print_table
    from starc.compiler import compile_kv
    from starc.compiler.artifact import save_artifact
    from starc.kv import load_kv
    kv = _source(args, "kv")
    _dense_layers(args)
    out_dir = outputs.OutputDir(args.out, command="compile", force=args.force,
                                inputs=[kv, *preset_inputs(args)])
    cfg = preset_from_args(args)
    opts = _options(args, args.mode)
    if args.synthetic:
        _check_synthetic(args, cfg)
        _check_compilable(_synthetic_meta(args), cfg, opts, args)
        cache = _synthetic(args)
    else:
        cache = load_kv(kv, cfg)
        _check_compilable(cache.meta, cfg, opts, args)
    ck = compile_kv(cache, cfg, opts)
    out = save_artifact(ck, args.out, out=out_dir)
    st = ck.stats
    if args.json:
        print_json({"artifact": str(out), "mode": ck.mode, "preset": cfg.name,
                    "options": {k: v for k, v in ck.options.items() if k != "threads"},
                    "stats": st})
        return 0
    m = cache.meta
    rows = [
        ("artifact", str(out)),
        ("input", f"{m.model}: {m.n_layers} layers x {m.n_kv_heads} KV heads x "
                  f"{m.context_len} tokens, d = {m.head_dim}"),
        ("mode / placement", f"{ck.mode} / {ck.options['placement']}"),
        ("clusters", f"{st['clusters']} (size {st['cluster_size_min']}..{st['cluster_size_max']},"
                     f" mean {st['cluster_size_mean']:.1f}, empty {st['empty_clusters']})"),
        ("mean cos(key, centroid)", "n/a (no clusters)" if st["mean_cos_to_centroid"] is None
         else f"{st['mean_cos_to_centroid']:.3f}"),
        ("iterations (mean)", f"{st['iters_mean']:.1f}"),
        ("recent buffer at the end", f"{st['final_buffer_tokens']} tokens"),
        ("padding slots", str(st["padding_slots"])),
        ("rows per bank used", f"{st['rows_per_bank_used']} of {cfg.org.rows_per_bank}"),
        ("time", f"{st['seconds_total']:.2f} s ({st['tokens_per_s']:,.0f} tokens/s; "
                 f"clustering {st['seconds_cluster']:.2f} s)"),
    ]
    print_table(f"starc compile ({cfg.name})", ["field", "value"], rows)
    return 0


def _load_input(args: argparse.Namespace, cfg: Any) -> tuple[Any, dict[str, Any]]:
    from starc.compiler.artifact import load_artifact
    from starc.kv import load_kv
    src = _source(args, "input")
    if args.synthetic:
        _check_synthetic(args, cfg)
        return _synthetic(args), {}
    if (src / "manifest.json").is_file():
        ck = load_artifact(src, cfg)
        return ck.cache, {ck.mode: ck}
    return load_kv(src, cfg), {}


def _num(x: Any) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, (int,)) or float(x).is_integer() and abs(x) >= 100:
        return f"{int(round(x)):,}"
    ax = abs(float(x))
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 1 or ax == 0:
        return f"{x:.3g}" if ax < 10 else f"{x:.1f}"
    return f"{x:.3f}" if ax >= 0.01 else f"{x:.2e}"


def print_comparison(title: str, rows: list[dict[str, Any]]) -> None:
    """The comparison table, never truncated: at least 200 columns wide."""
    from rich.console import Console
    from rich.table import Table

    from starc.planner.evaluate import COLUMNS
    console = Console()
    console = Console(width=max(console.width, 200))
    t = Table(title=title, title_justify="left")
    for key, head in COLUMNS:
        t.add_column(head, justify="left" if key == "policy" else "right", no_wrap=True)
    for r in rows:
        t.add_row(*[_num(r.get(k, float("nan"))) for k, _ in COLUMNS])
    console.print(t)


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    from starc.report import csv_cell
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in r.items()})
    return buf.getvalue()


def _check_eval(args: argparse.Namespace, meta: Any) -> None:
    """Options that need the cache's shape: layers, steps, SparQ r (raises ValueError)."""
    from starc.cli import UserError
    dense = sorted(set(args.dense_layers))
    _check_dense(args, meta.n_layers)
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
    from starc.planner.evaluate import EvalOptions, evaluate
    src = _source(args, "input")
    _dense_layers(args)
    out_dir = outputs.OutputDir(args.out, command="eval", force=args.force,
                                inputs=[src, *preset_inputs(args)])
    cfg = preset_from_args(args)
    if args.synthetic:
        _check_eval(args, _synthetic_meta(args))
    cache, compiled = _load_input(args, cfg)
    _check_eval(args, cache.meta)
    # the layout options tune our row-aligned variant; the other modes keep their defaults
    copts: dict[str, CompileOptions] = {
        mode: CompileOptions(mode=mode, seed=args.seed, dense_layers=tuple(args.dense_layers))
        for mode in ("artifact", "global", "dense")}
    copts["row-aligned"] = _options(args, "row-aligned")
    _check_compilable(cache.meta, cfg, copts["row-aligned"], args)
    opts = EvalOptions(policies=tuple(args.policies), budgets=tuple(args.budgets),
                       steps=tuple(args.eval_steps) if args.eval_steps else None,
                       layers=tuple(args.eval_layers) if args.eval_layers else None,
                       dense_layers=tuple(args.dense_layers),
                       cost_programs=args.cost_programs, sparq_r=args.sparq_r,
                       objective=args.objective, seed=args.seed)
    res = evaluate(cache, cfg, opts, compiled=compiled, compile_options=copts)
    res.rows.sort(key=lambda r: (r["budget"], list(args.policies).index(r["policy"])))
    doc = {"meta": res.meta, "rows": res.rows, "compile_stats": res.compile_stats}
    text = outputs.strict_json(doc, indent=1) + "\n"
    with out_dir.build() as tmp:
        (tmp / "eval.json").write_text(text, encoding="utf-8")
        (tmp / "eval.csv").write_text(rows_to_csv(res.rows), encoding="utf-8")
    if args.json:
        print_json(doc)
        return 0
    m = res.meta
    title = (f"{m['model']}: d = {m['head_dim']}, {m['n_q_heads']} query / {m['n_kv_heads']} KV "
             f"heads, prefill {m['prefill_len']}, steps {m['steps']}, layers {m['layers']}, "
             f"{m['preset']} (slots: activated group-row token slots per query head per layer; "
             f"cycles/energy: one layer, one query head; group row = "
             f"{m['tokens_per_group_row']} tokens; {m['planner']})")
    print_comparison(title, res.rows)
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'eval.csv'}")
    return 0

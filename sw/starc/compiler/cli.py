"""``starc compile`` and ``starc eval``.

- ``starc compile KV --mode M --out DIR``: cluster and place a KV cache (or ``--synthetic``),
  write the artifact folder, print the compile statistics.
- ``starc eval INPUT``: compare selection policies on a KV file, an artifact folder or a synthetic
  cache; print the comparison table and write ``eval.json`` + ``eval.csv``.

Handlers return exit codes: 0 on success, 2 on bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["cmd_compile", "cmd_eval", "register"]


def _errors() -> tuple[type[BaseException], ...]:
    from starc.compiler.artifact import ArtifactError
    from starc.compiler.compile import CompileError
    from starc.config import ConfigError
    from starc.kv import KVError
    return (ArtifactError, CompileError, ConfigError, KVError, ValueError)


def _fail(msg: str) -> int:
    print(f"starc: error: {msg}", file=sys.stderr)
    return 2


def _add_synthetic_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("synthetic cache (with --synthetic)")
    g.add_argument("--synthetic", action="store_true",
                   help="use a seeded synthetic cache instead of a file")
    g.add_argument("--layers", dest="syn_layers", type=int, default=4, help="default 4")
    g.add_argument("--q-heads", dest="syn_q_heads", type=int, default=9, help="default 9")
    g.add_argument("--kv-heads", dest="syn_kv_heads", type=int, default=3, help="default 3")
    g.add_argument("--head-dim", dest="syn_head_dim", type=int, default=64, help="default 64")
    g.add_argument("--prefill", dest="syn_prefill", type=int, default=4096, help="default 4096")
    g.add_argument("--decode-steps", dest="syn_steps", type=int, default=4,
                   help="decode steps (default 4)")
    g.add_argument("--data-seed", dest="syn_seed", type=int, default=0,
                   help="seed of the synthetic cache (default 0)")


def _add_compile_args(p: argparse.ArgumentParser) -> None:
    from starc.compiler.placement import PLACEMENTS
    p.add_argument("--placement", choices=PLACEMENTS, default=None,
                   help="block placement (default: coselect for row-aligned, naive otherwise)")
    p.add_argument("--seed", type=int, default=0, help="clustering seed (default 0)")
    p.add_argument("--window", type=int, default=None,
                   help="prefill clustering window in tokens (default: mode's)")
    p.add_argument("--buffer", type=int, default=None,
                   help="recent-buffer length R (default 64; global 128)")
    p.add_argument("--cluster-tokens", type=int, default=None,
                   help="tokens per cluster (default: artifact 16, row-aligned one group row, "
                        "global 32)")
    p.add_argument("--iters", type=int, default=None, help="clustering iterations")
    p.add_argument("--sinks", type=int, default=None,
                   help="first tokens kept unclustered and always attended (default: one group "
                        "row for row-aligned, 0 otherwise)")
    p.add_argument("--dense-layers", type=int, nargs="*", default=[0, 1],
                   help="layers kept dense (default 0 1)")


def _synthetic(args: argparse.Namespace) -> Any:
    from starc.kv import synthetic_kv
    return synthetic_kv(n_layers=args.syn_layers, n_q_heads=args.syn_q_heads,
                        n_kv_heads=args.syn_kv_heads, head_dim=args.syn_head_dim,
                        prefill_len=args.syn_prefill, decode_steps=args.syn_steps,
                        seed=args.syn_seed)


def _options(args: argparse.Namespace, mode: str) -> Any:
    from starc.compiler import CompileOptions
    return CompileOptions(mode=mode, placement=args.placement, seed=args.seed,
                          window=args.window, buffer=args.buffer,
                          cluster_tokens=args.cluster_tokens, iters=args.iters,
                          sinks=args.sinks, dense_layers=tuple(args.dense_layers))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compile`` and ``eval`` to the ``starc`` sub-command parser."""
    from starc.cli import add_json_arg, add_preset_args
    from starc.compiler.compile import MODES
    from starc.planner.evaluate import DEFAULT_BUDGETS
    from starc.planner.registry import DEFAULT_POLICIES, POLICIES

    pc = subparsers.add_parser(
        "compile", help="cluster and place a KV cache into a PIM memory image",
        description="Compile a KV cache (schema starc-kv/1) into an artifact folder: memory "
                    "image, cluster table, token map, statistics (docs/compiler.md).")
    pc.add_argument("kv", nargs="?", type=Path,
                    help="KV file (.npz, .safetensors or .npy directory); or --synthetic")
    pc.add_argument("--mode", choices=MODES, default="row-aligned",
                    help="clustering mode (default row-aligned)")
    pc.add_argument("--out", "-o", type=Path, required=True, help="artifact folder to write")
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
    pe.add_argument("--budgets", nargs="+", type=int, default=list(DEFAULT_BUDGETS),
                    help="token budgets B (default 256 512 1024 2048)")
    pe.add_argument("--eval-steps", type=int, nargs="+", default=None,
                    help="decode steps to evaluate (default all)")
    pe.add_argument("--eval-layers", type=int, nargs="+", default=None,
                    help="layers to evaluate (default: all not in --dense-layers)")
    pe.add_argument("--cost-programs", type=int, default=24,
                    help="programs timed per policy and budget (-1: all; default 24)")
    pe.add_argument("--sparq-r", type=int, default=None, help="SparQ channels r (default d/4)")
    pe.add_argument("--fill", choices=("never", "auto"), default="never",
                    help="auto: a round with enough open groups also opens the idle ones on a "
                         "dummy row so it can use MACAB (more activations, fewer cycles)")
    pe.add_argument("--out", "-o", type=Path, default=Path("eval-results"),
                    help="folder for eval.json and eval.csv (default ./eval-results)")
    add_preset_args(pe)
    _add_compile_args(pe)
    _add_synthetic_args(pe)
    add_json_arg(pe)
    pe.set_defaults(func=cmd_eval)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cmd_compile(args: argparse.Namespace) -> int:
    from starc.cli import preset_from_args, print_json, print_table
    from starc.compiler import compile_kv
    from starc.compiler.artifact import save_artifact
    from starc.kv import load_kv
    try:
        cfg = preset_from_args(args)
        if args.synthetic:
            cache = _synthetic(args)
        elif args.kv is None:
            return _fail("give a KV file to compile, or --synthetic")
        else:
            cache = load_kv(args.kv, cfg)
        ck = compile_kv(cache, cfg, _options(args, args.mode))
        out = save_artifact(ck, args.out)
    except _errors() as e:
        return _fail(str(e))
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
        ("mean cos(key, centroid)", f"{st['mean_cos_to_centroid']:.3f}"),
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
    if args.synthetic:
        return _synthetic(args), {}
    if args.input is None:
        raise ValueError("give a KV file or an artifact folder to evaluate, or --synthetic")
    if (args.input / "manifest.json").is_file():
        ck = load_artifact(args.input, cfg)
        return ck.cache, {ck.mode: ck}
    return load_kv(args.input, cfg), {}


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
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def cmd_eval(args: argparse.Namespace) -> int:
    from starc.cli import preset_from_args, print_json
    from starc.compiler import CompileOptions
    from starc.planner.evaluate import EvalOptions, evaluate
    try:
        cfg = preset_from_args(args)
        cache, compiled = _load_input(args, cfg)
        # the layout options tune our row-aligned variant; the other modes keep their defaults
        copts: dict[str, CompileOptions] = {
            mode: CompileOptions(mode=mode, seed=args.seed, dense_layers=tuple(args.dense_layers))
            for mode in ("artifact", "global", "dense")}
        copts["row-aligned"] = _options(args, "row-aligned")
        opts = EvalOptions(policies=tuple(args.policies), budgets=tuple(args.budgets),
                           steps=tuple(args.eval_steps) if args.eval_steps else None,
                           layers=tuple(args.eval_layers) if args.eval_layers else None,
                           dense_layers=tuple(args.dense_layers),
                           cost_programs=args.cost_programs, sparq_r=args.sparq_r,
                           fill=args.fill, seed=args.seed)
        res = evaluate(cache, cfg, opts, compiled=compiled, compile_options=copts)
    except _errors() as e:
        return _fail(str(e))
    res.rows.sort(key=lambda r: (r["budget"], list(args.policies).index(r["policy"])))
    doc = {"meta": res.meta, "rows": res.rows, "compile_stats": res.compile_stats}
    try:
        _write_atomic(args.out / "eval.json", json.dumps(doc, indent=1, default=float) + "\n")
        _write_atomic(args.out / "eval.csv", rows_to_csv(res.rows))
    except OSError as e:
        return _fail(f"cannot write results to {args.out}: {e}")
    if args.json:
        print_json(doc)
        return 0
    m = res.meta
    title = (f"{m['model']}: d = {m['head_dim']}, {m['n_q_heads']} query / {m['n_kv_heads']} KV "
             f"heads, prefill {m['prefill_len']}, steps {m['steps']}, layers {m['layers']}, "
             f"{m['preset']} (slots: activated group-row token slots per query head per layer; "
             f"cycles/energy: one layer, one query head; group row = "
             f"{m['tokens_per_group_row']} tokens; fill {m['fill']})")
    print_comparison(title, res.rows)
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'eval.csv'}")
    return 0

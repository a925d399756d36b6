"""``starc compile``, and the input options it shares with ``starc eval`` (starc.planner.cli).

- ``starc compile KV --mode M --out DIR``: cluster and place a KV cache (or ``--synthetic``),
  write the artifact folder, print the compile statistics.

Handlers return exit codes: 0 on success, 2 on bad input (one line on stderr, no traceback;
expected errors propagate to the boundary in :func:`starc.cli.main`). Every option is range-checked
at parse time; the output folder, the options against the input's shape and the preset's capacity
are checked before any clustering or synthetic data generation (docs/reliability.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_compile_args", "add_synthetic_args", "check_compilable", "check_dense",
           "check_synthetic", "cmd_compile", "compile_options_from_args", "register",
           "resolve_dense_layers", "source_arg", "synthetic_cache", "synthetic_meta"]


def add_synthetic_args(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--prefill-queries", dest="syn_qp", type=int_range(0, 1 << 20), default=256,
                   help="calibration queries at prefill positions (default 256; 0: none)")


def add_compile_args(p: argparse.ArgumentParser) -> None:
    from starc.argtypes import int_range
    from starc.compiler.compile import METRICS
    from starc.compiler.compiled import ROW_SCORES
    from starc.compiler.placement import PLACEMENTS
    p.add_argument("--placement", choices=PLACEMENTS, default=None,
                   help="block placement (default for row-aligned: queries when the cache has "
                        "prefill queries, else coselect; naive otherwise)")
    p.add_argument("--metric", choices=METRICS, default=None,
                   help="row-aligned clustering metric (default: query when the cache has "
                        "prefill queries, else unit)")
    p.add_argument("--row-scores", choices=tuple(ROW_SCORES), default=None,
                   help="row-aligned: how the host scores a cluster from the metadata its "
                        "selection pass scans (default centroid; docs/compiler.md, Row scores)")
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


def synthetic_meta(args: argparse.Namespace) -> Any:
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


def check_synthetic(args: argparse.Namespace, cfg: Any) -> None:
    from starc.kv import KVError, check_capacity
    m = synthetic_meta(args)
    check_capacity(m, cfg)
    nbytes = 4 * m.n_layers * m.head_dim * (2 * m.context_len * m.n_kv_heads
                                            + m.decode_steps * m.n_q_heads)
    if nbytes > SYNTHETIC_MAX_BYTES:
        raise KVError(f"the synthetic cache would take {nbytes / 2**30:.1f} GiB while it is "
                      f"generated (limit {SYNTHETIC_MAX_BYTES / 2**30:.0f} GiB); use fewer "
                      f"layers, heads, tokens or decode steps")


def synthetic_cache(args: argparse.Namespace) -> Any:
    from starc.kv import synthetic_kv
    return synthetic_kv(n_layers=args.syn_layers, n_q_heads=args.syn_q_heads,
                        n_kv_heads=args.syn_kv_heads, head_dim=args.syn_head_dim,
                        prefill_len=args.syn_prefill, decode_steps=args.syn_steps,
                        seed=args.syn_seed, prefill_queries=min(args.syn_qp, args.syn_prefill))


def resolve_dense_layers(args: argparse.Namespace) -> None:
    """``--dense-layers`` as given (checked against the cache later), else the default 0 1
    (layers a small cache lacks are then simply absent)."""
    args.dense_given = args.dense_layers is not None
    if args.dense_layers is None:
        args.dense_layers = [0, 1]


def check_dense(args: argparse.Namespace, n_layers: int) -> None:
    from starc.compiler.compile import CompileError
    bad = [l for l in args.dense_layers if not 0 <= l < n_layers]
    if bad and getattr(args, "dense_given", True):
        raise CompileError(f"--dense-layers {' '.join(map(str, bad))}: the cache has layers "
                           f"0..{n_layers - 1}")


def compile_options_from_args(args: argparse.Namespace, mode: str) -> Any:
    from starc.compiler import CompileOptions
    return CompileOptions(mode=mode, placement=args.placement, metric=args.metric,
                          seed=args.seed,
                          window=args.window, buffer=args.buffer,
                          cluster_tokens=args.cluster_tokens, iters=args.iters,
                          sinks=args.sinks, dense_layers=tuple(args.dense_layers),
                          row_scores=getattr(args, "row_scores", None))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compile`` to the ``starc`` sub-command parser."""
    from starc.cli import add_force_arg, add_json_arg, add_preset_args
    from starc.compiler.compile import MODES

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
    add_compile_args(pc)
    add_synthetic_args(pc)
    add_json_arg(pc)
    pc.set_defaults(func=cmd_compile)


def check_compilable(meta: Any, cfg: Any, options: Any, args: argparse.Namespace) -> None:
    """Everything that can be said before compiling: the preset holds the cache, the planner can
    evaluate its geometry, the options fit the mode and the cache (raises)."""
    from starc.address import Geometry, check_geometry
    from starc.kv import check_capacity
    check_capacity(meta, cfg)
    geo = Geometry(cfg, meta.head_dim)
    check_geometry(geo)
    check_dense(args, meta.n_layers)
    options.resolve(geo, meta.prefill_len)


def source_arg(args: argparse.Namespace, name: str) -> Any:
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
    kv = source_arg(args, "kv")
    resolve_dense_layers(args)
    out_dir = outputs.OutputDir(args.out, command="compile", force=args.force,
                                inputs=[kv, *preset_inputs(args)])
    cfg = preset_from_args(args)
    opts = compile_options_from_args(args, args.mode)
    if args.synthetic:
        check_synthetic(args, cfg)
        check_compilable(synthetic_meta(args), cfg, opts, args)
        cache = synthetic_cache(args)
    else:
        cache = load_kv(kv, cfg)
        check_compilable(cache.meta, cfg, opts, args)
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

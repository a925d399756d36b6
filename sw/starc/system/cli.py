"""``starc system``: a whole model's decode on HBM-PIM stacks, per generated token.

Plans one sweep point per sampled decode step (:mod:`starc.sweep.system`), evaluates them
through the sweep engine (content-hash cache, local processes or ``--scheduler`` Dask, progress
bar), prints the per-token tables (trajectory means) and, with ``-o``, writes a report folder
(JSON, CSV, PNG, README). docs/system.md describes the model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

__all__ = ["add_system_args", "config_from_args", "register", "run_system"]

DEFAULT_POLICIES = ("dense", "quest", "sparq", "starc", "starc-row")
#: AttAcc's DGX + AttAcc system (src/config.py make_pim_config: num_attacc 8, num_hbm 5): one
#: AttAcc device of five HBM-PIM stacks per GPU
STACKS_PER_GPU = 5


def add_system_args(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    """The options that define a system configuration (``many``: lists, for the sweep)."""
    from starc.argtypes import int_range
    from starc.planner.registry import POLICIES
    from starc.planner.rounds import add_objective_arg
    from starc.system.channel import SCHEDULES
    from starc.system.gpu import GPUS
    from starc.system.mapping import STRATEGIES
    from starc.system.shapes import SHAPES
    nargs = "+" if many else None
    g = p.add_argument_group("system (docs/system.md)")
    if not many:
        g.add_argument("--model", choices=sorted(SHAPES), default=None,
                       help="model shape (default mistral-7b; with --kv, the shape of the files)")
        g.add_argument("--budget", type=int_range(1), default=1024,
                       help="token budget B of the sparse policies (default 1024)")
        g.add_argument("--policies", nargs="+", choices=POLICIES, default=list(DEFAULT_POLICIES),
                       help=f"policies (default: {' '.join(DEFAULT_POLICIES)})")
        g.add_argument("--seed", type=int_range(0, (1 << 63) - 1), default=0)
        add_objective_arg(g)
    g.add_argument("--batch", type=int_range(1, 4096), nargs=nargs,
                   default=[16] if many else 16, help="batch size (default 16)")
    g.add_argument("--lin", type=int_range(1), default=2048,
                   help="prompt length Lin: the context of the first generated token (default "
                        "2048; with --kv, the files' prefill)")
    g.add_argument("--lout", type=int_range(1), default=24000,
                   help="tokens generated, Lout: the context grows to Lin + Lout (default "
                        "24000; with --kv, the files' decode steps)")
    g.add_argument("--steps", type=int_range(1, 4096), default=4, metavar="N",
                   help="decode steps sampled along the trajectory: the midpoints of N equal "
                        "bins (default 4)")
    g.add_argument("--stacks", type=int_range(1, 1 << 16), nargs=nargs, default=None,
                   help=f"HBM-PIM stacks (default {STACKS_PER_GPU} per GPU, AttAcc's system)")
    g.add_argument("--gpus", type=int_range(1, 1024), default=8,
                   help="GPUs (tensor parallel; AttAcc's attacc mapping splits heads over them; "
                        "the GPU baseline's bandwidth; default 8)")
    g.add_argument("--gpu", choices=sorted(GPUS), default="h100-sxm",
                   help="GPU of the baseline (default h100-sxm)")
    g.add_argument("--mappings", nargs="+", choices=STRATEGIES, default=["attacc"],
                   help="KV heads x batch onto stacks and channels (default attacc)")
    g.add_argument("--schedule", choices=sorted(SCHEDULES), default="overlapped",
                   help="channel program builder (sequential: one head per program, back to "
                        "back; overlapped: selection passes, then the heads' attention in the "
                        "overlapped multi-head order, docs/multihead.md; default overlapped)")
    g.add_argument("--streams", type=int_range(1, 1 << 20), default=16,
                   help="synthetic caches: distinct seeded head streams the instances read "
                        "(default 16)")
    g.add_argument("--kv", type=Path, nargs="+", default=None, metavar="FILE",
                   help="real KV files (starc kv extract) instead of synthetic streams; batch "
                        "entry b reads file b mod the number of files")


def register(sub: argparse._SubParsersAction) -> None:
    from starc.argtypes import dask_address, int_range
    from starc.cli import add_force_arg, add_json_arg, add_preset_args
    p = sub.add_parser(
        "system", help="a whole model's decode on HBM-PIM stacks: attention latency, energy and "
                       "breakdown per generated token, next to a GPU-only baseline",
        description="Maps KV heads x batch onto HBM-PIM stacks and channels, builds each "
                    "channel's program per layer from the policies' selections (real caches "
                    "with --kv, seeded synthetic ones otherwise), times and charges it on the "
                    "golden model, and reports per generated token: attention latency, energy "
                    "and their breakdowns, utilisation and the KV capacity, beside the same "
                    "token on HBM-bound GPUs. Scope: attention (what AttAcc offloads to PIM); "
                    "the fully connected layers on the GPUs are added for whole-model figures. "
                    "docs/system.md.")
    add_preset_args(p)
    add_system_args(p)
    p.add_argument("--workers", type=int_range(1, 1024), default=None,
                   help="local processes (default: CPUs)")
    p.add_argument("--scheduler", type=dask_address, default=None,
                   help="Dask scheduler address (tcp://host:8786) to run the steps on a cluster")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="folder of cached point results (default ~/.cache/starc-pim/sweep)")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="also write a report folder (JSON, CSV, PNG, README)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    add_force_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_run)


def _kv_entries(paths: list[Path]) -> tuple[list[dict[str, str]], Any]:
    """Point fields of the KV files (path and content hash) and their common meta."""
    from starc.cli import UserError
    from starc.kv import load_kv
    from starc.sweep.cli import _kv_entry
    entries, metas = [], []
    for f in paths:
        e = _kv_entry(f)
        entries.append({"path": e["kv"], "sha256": e["kv_sha256"]})
        metas.append(load_kv(f).meta)
    m0 = metas[0]
    for f, m in zip(paths, metas, strict=True):
        geo = (m.n_layers, m.n_q_heads, m.n_kv_heads, m.head_dim, m.prefill_len, m.decode_steps)
        if geo != (m0.n_layers, m0.n_q_heads, m0.n_kv_heads, m0.head_dim, m0.prefill_len,
                   m0.decode_steps):
            raise UserError(f"--kv {f}: its shape (layers, heads, KV heads, head size, prefill, "
                            f"decode steps) {geo} differs from {paths[0]}'s; give files of one "
                            f"model and trajectory")
        if m.decode_steps < 1:
            raise UserError(f"--kv {f}: no decode steps, so no queries to plan")
    return entries, m0


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The system configuration of ``starc system``'s arguments (checked; raises UserError)."""
    from starc import config as cfgmod
    from starc.cli import UserError
    from starc.system.shapes import SHAPES
    preset = args.preset or cfgmod.DEFAULT_PRESET
    cfg = cfgmod.load(preset, args.overrides or None)
    kv: list[dict[str, str]] = []
    model = args.model or "mistral-7b"
    lin, lout = args.lin, args.lout
    if args.kv:
        kv, meta = _kv_entries(args.kv)
        fits = [n for n, s in SHAPES.items()
                if (s.n_layers, s.n_q_heads, s.n_kv_heads, s.head_dim)
                == (meta.n_layers, meta.n_q_heads, meta.n_kv_heads, meta.head_dim)]
        if args.model is None:
            if not fits:
                raise UserError(f"--kv: no model shape has the files' {meta.n_layers} layers, "
                                f"{meta.n_q_heads} query / {meta.n_kv_heads} KV heads of size "
                                f"{meta.head_dim}; the shapes are {', '.join(SHAPES)}")
            model = fits[0]
        elif args.model not in fits:
            raise UserError(f"--model {args.model} does not match the --kv files ({meta.n_layers}"
                            f" layers, {meta.n_q_heads} query / {meta.n_kv_heads} KV heads of "
                            f"size {meta.head_dim})")
        lin, lout = meta.prefill_len, meta.decode_steps
    if args.steps > lout:
        raise UserError(f"--steps {args.steps}: the trajectory has only {lout} decode steps")
    stacks = args.stacks if args.stacks is not None else STACKS_PER_GPU * args.gpus
    try:
        cfg.banks_per_token(SHAPES[model].head_dim)
    except ValueError as e:
        raise UserError(f"{model}: head size {SHAPES[model].head_dim} does not fit preset "
                        f"{cfg.name!r}: {e}") from None
    return {"preset": preset, "overrides": list(args.overrides or []), "model": model,
            "batch": args.batch, "lin": lin, "lout": lout, "stacks": stacks, "gpus": args.gpus,
            "gpu": args.gpu, "mappings": list(dict.fromkeys(args.mappings)),
            "policies": list(dict.fromkeys(args.policies)), "budget": args.budget,
            "schedule": args.schedule, "objective": args.objective, "streams": args.streams,
            "seed": args.seed, "kv": kv}


def run_system(confs: list[dict[str, Any]], n_steps: int, *, workers: int | None = None,
               scheduler: str | None = None, cache_dir: Path | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate the sampled steps of every configuration (one sweep, so the steps of all of
    them share the workers); the capacity of each is checked before anything runs."""
    from starc import config as cfgmod
    from starc.sweep.engine import run_points
    from starc.sweep.system import plan_points, reductions, spec_of, summarize, system_point
    from starc.system.gpu import get as get_gpu
    from starc.system.workload import sampled_steps
    plans = []
    for conf in confs:
        cfg = cfgmod.load(conf["preset"], conf["overrides"] or None)
        points = plan_points(conf, sampled_steps(conf["lout"], n_steps))
        spec = spec_of(points[0])
        plans.append((conf, cfg, points, spec, spec.check(cfg)))
    t0 = time.perf_counter()
    results = run_points([p for _, _, pts, _, _ in plans for p in pts], system_point,
                         workers=workers, scheduler=scheduler, cache_dir=cache_dir,
                         progress=progress)
    wall = time.perf_counter() - t0
    out, at = [], 0
    for conf, cfg, points, spec, capacity in plans:
        res = results[at:at + len(points)]
        at += len(points)
        summary = summarize(res)
        m = spec.model
        kv_gib = m.kv_bytes_per_token() * conf["batch"] * spec.context_max / 2**30
        g = get_gpu(conf["gpu"])
        weights = 2 * sum(m.fc_params().values())
        out.append({
            "config": conf, "model": m.as_dict(), "preset": cfg.name,
            "tck_ns": cfg.timing.tCK_ns, "steps": res, "summary": summary,
            "reductions": reductions(summary), "capacity": capacity,
            "gpu_memory": {"weights_GB": weights / 1e9, "kv_GiB": kv_gib,
                           "gpu_GiB": conf["gpus"] * g.memory_bytes / 2**30,
                           "gpu_fits": weights + kv_gib * 2**30 <= conf["gpus"] * g.memory_bytes},
            "wall_s": wall, "point_seconds": [r["seconds"] for r in res]})
    return out


def _title(res: dict[str, Any]) -> str:
    c = res["config"]
    src = f"{len(c['kv'])} KV file(s)" if c["kv"] else f"{c['streams']} synthetic head streams"
    return (f"{c['model']}, batch {c['batch']}, context {c['lin']} -> {c['lin'] + c['lout']} "
            f"({len(res['steps'])} sampled step{'s' * (len(res['steps']) != 1)}), "
            f"{c['stacks']} stack{'s' * (c['stacks'] != 1)} of {res['preset']}, "
            f"{c['gpus']} x {c['gpu']}; B = {c['budget']}; schedule {c['schedule']}; {src}")


T_SHARES = ("selection", "mac_issue", "row_switch", "refresh", "data_movement", "softmax")
E_SHARES = ("selection", "activation", "column_access", "mac", "data_movement", "softmax",
            "host_io")
#: fraction columns, printed as percentages
_PCT = {"latency_vs_dense", "energy_vs_dense", "selection_share", "channel_util", "stack_util",
        "latency_vs_tokenwise", "energy_vs_tokenwise", "attacc_energy_vs_dense",
        *(f"token_t_share.{k}" for k in T_SHARES), *(f"token_e_share.{k}" for k in E_SHARES)}
COLUMNS_TOKEN = ("policy", "mapping", "token_us", "latency_vs_dense", "token_energy_mJ",
                 "energy_vs_dense", "selection_share", "channel_util", "stack_util",
                 "mass_recall", "selected", "gpu_dense_us", "gpu_over_pim", "model_us",
                 "gpu_model_us")
COLUMNS_SHARES = ("policy", "mapping", *(f"token_t_share.{k}" for k in T_SHARES),
                  *(f"token_e_share.{k}" for k in E_SHARES))
COLUMNS_REDUCTIONS = ("mapping", "variant", "latency_vs_tokenwise", "energy_vs_tokenwise",
                      "latency_vs_dense", "energy_vs_dense", "attacc_energy_vs_dense",
                      "pim_gain", "policy_speedup")


def table_rows(res: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows of the three tables, keyed by metric name (trajectory means)."""
    summ = sorted(res["summary"], key=lambda r: (r["mapping"], _order(r["policy"])))
    dense = {r["mapping"]: r for r in summ if r["policy"] == "dense"}
    token, shares = [], []
    for r in summ:
        d = dense.get(r["mapping"])
        token.append({**r, "latency_vs_dense": 1 - r["token_us"] / d["token_us"] if d else None,
                      "energy_vs_dense": 1 - r["token_energy_mJ"] / d["token_energy_mJ"]
                      if d else None})
        lat, en = r["token_cycles"] or 1, r["token_energy_mJ"] or 1
        shares.append({"policy": r["policy"], "mapping": r["mapping"],
                       **{f"token_t_share.{k}": r["token_t"].get(k, 0) / lat for k in T_SHARES},
                       **{f"token_e_share.{k}": r["token_e"].get(k, 0) / en for k in E_SHARES}})
    return {"token": token, "shares": shares, "reductions": res["reductions"]}


def _cells(row: dict[str, Any], columns: tuple[str, ...]) -> list[str]:
    from starc.planner.table import cell
    out = []
    for k in columns:
        v = row.get(k)
        out.append("-" if v is None else f"{100 * v:.1f} %" if k in _PCT else cell(v))
    return out


def tables(res: dict[str, Any]) -> list[tuple[str, tuple[str, ...], list[list[str]]]]:
    """The per-token tables (title, columns, formatted rows)."""
    rows = table_rows(res)
    title = _title(res)
    return [(f"per generated token, attention on the PIM (means over the sampled steps): "
             f"{title}", COLUMNS_TOKEN, [_cells(r, COLUMNS_TOKEN) for r in rows["token"]]),
            ("breakdown shares: of token_cycles (the slowest channel of each layer) and of "
             "token_energy_mJ (every channel)", COLUMNS_SHARES,
             [_cells(r, COLUMNS_SHARES) for r in rows["shares"]]),
            ("reductions with the selection passes paid for (trajectory means)",
             COLUMNS_REDUCTIONS, [_cells(r, COLUMNS_REDUCTIONS) for r in rows["reductions"]])]


def _order(p: str) -> int:
    from starc.planner.registry import POLICIES
    return POLICIES.index(p) if p in POLICIES else 99


def _footer(res: dict[str, Any]) -> list[str]:
    lines = []
    for mapping, cap in res["capacity"].items():
        lines.append(f"KV capacity ({mapping}): {cap['kv_GiB']:.1f} GiB of K and V at "
                     f"{res['config']['lin'] + res['config']['lout']} tokens "
                     f"({cap['replicas']} cop{'y' if cap['replicas'] == 1 else 'ies'}) in "
                     f"{cap['stacks_GiB']:.0f} GiB of stacks; busiest channel "
                     f"{cap['rows_needed_max']} of {cap['rows_per_bank']} rows per bank")
    gm = res["gpu_memory"]
    lines.append(f"GPU-only baseline memory: {gm['weights_GB']:.1f} GB of weights + "
                 f"{gm['kv_GiB']:.1f} GiB of KV at the end in {gm['gpu_GiB']:.0f} GiB: "
                 f"{'fits' if gm['gpu_fits'] else 'does NOT fit (its figures are bounds only)'}")
    lines.append("Scope: token_* is the attention on the PIM (every layer, every batch entry); "
                 "model_us adds the fully connected layers on the GPUs (weight-streaming bound; "
                 "no communication, norms or overlap). Cycles in tCK of the preset "
                 f"({res['tck_ns']:.4g} ns).")
    return lines


def write_report(rep: Any, results: list[dict[str, Any]], *, command: str = "system") -> None:
    """The report folder of one or more configurations: JSON, CSV (every sampled step, and the
    trajectory means), PNG (trajectory and breakdown per configuration) and a README."""
    from starc.glossary import glossary_line
    from starc.plots import system_breakdown, system_trajectory
    from starc.report import markdown_table
    many = len(results) > 1
    with rep:
        rep.json("system.json", results if many else results[0])
        cols = ("model", "batch", "stacks", "preset", "budget", "lin", "lout")
        rep.csv("steps.csv", [{**{k: res["config"][k] for k in cols}, **r}
                              for res in results for s in res["steps"] for r in s["rows"]])
        rep.csv("summary.csv", [{**{k: res["config"][k] for k in cols}, **r}
                                for res in results for r in res["summary"]])
        md = [f"# starc {command}\n\n"]
        for i, res in enumerate(results, 1):
            title = _title(res)
            sfx = f"_{i}" if many else ""
            rep.figure(f"trajectory{sfx}.png", system_trajectory(
                [r for s in res["steps"] for r in s["rows"]], setting=title))
            rep.figure(f"breakdown{sfx}.png", system_breakdown(res["summary"], setting=title))
            md += [f"## {title}\n\n" if many else f"{title}\n\n"]
            for t, c, rows in tables(res):
                md += [f"### {t.split(':')[0]}\n\n", markdown_table(c, rows), "\n",
                       glossary_line(c), "\n\n"]
            md += ["\n".join(f"- {x}" for x in _footer(res)), "\n\n",
                   f"![trajectory](trajectory{sfx}.png)\n\n![breakdown](breakdown{sfx}.png)"
                   f"\n\n"]
        rep.text("README.md", "".join(md))


def print_tables(res: dict[str, Any]) -> None:
    """The three tables with their glossary lines, then the capacity and scope lines."""
    from starc.planner.table import print_rows
    for t, cols, rows in tables(res):
        print_rows(t, cols, rows, left=lambda k: k in ("policy", "mapping", "variant"))
    for line in _footer(res):
        print(line)


def _run(args: argparse.Namespace) -> int:
    from starc.cli import print_json
    from starc.report import ReportWriter
    conf = config_from_args(args)
    rep = None
    if args.out is not None:
        rep = ReportWriter(args.out, command="system", force=args.force,
                           inputs=[*(args.kv or []), *(p for p in [args.preset] if p and
                                                       p.endswith(".toml"))])
    if args.scheduler:
        from starc.sweep.engine import probe_scheduler
        probe_scheduler(args.scheduler)
    (res,) = run_system([conf], args.steps, workers=args.workers, scheduler=args.scheduler,
                        cache_dir=args.cache_dir, progress=args.progress and not args.json)
    if rep is not None:
        write_report(rep, [res])
    if args.json:
        print_json(res)
        return 0
    print_tables(res)
    if rep is not None:
        print(f"report written to {args.out}/")
    return 0

"""System points: one sampled decode step of a whole-system configuration, as a sweep point.

``starc system`` and ``starc sweep --system`` plan one point per (configuration, sampled step)
(:func:`plan_points`); :func:`system_point` evaluates it (every policy and mapping of the
configuration at that step, :func:`starc.system.pertoken.evaluate_step`) through the sweep engine
(content-hash cache, local processes or a Dask cluster, progress bar). A worker keeps the head
streams and compiled layouts of the last configuration it saw, so the steps of one trajectory
compile once per worker. :func:`summarize` averages the sampled steps into per-token figures
over the trajectory (the steps are bin midpoints, :func:`starc.system.workload.sampled_steps`).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["POINT_FIELDS", "plan_points", "reductions", "summarize", "system_point"]

#: the fields of a system point (besides ``kind`` and ``step``)
POINT_FIELDS = ("preset", "overrides", "model", "batch", "lin", "lout", "stacks", "gpus", "gpu",
                "mappings", "policies", "budget", "schedule", "objective", "streams", "seed",
                "kv")

_STATE: dict[str, Any] = {}


def plan_points(config: dict[str, Any], steps: list[int]) -> list[dict[str, Any]]:
    """One point per sampled step of one configuration (a dict of :data:`POINT_FIELDS`)."""
    missing = [f for f in POINT_FIELDS if f not in config]
    if missing:
        raise ValueError(f"system configuration without {', '.join(missing)}")
    return [{"kind": "system", **{f: config[f] for f in POINT_FIELDS}, "step": int(s)}
            for s in steps]


def spec_of(point: dict[str, Any]) -> Any:
    from starc.system.pertoken import SystemSpec
    from starc.system.shapes import get
    return SystemSpec(model=get(point["model"]), batch=int(point["batch"]),
                      lin=int(point["lin"]), lout=int(point["lout"]),
                      stacks=int(point["stacks"]), gpus=int(point["gpus"]), gpu=point["gpu"],
                      policies=tuple(point["policies"]), budget=int(point["budget"]),
                      mappings=tuple(point["mappings"]), schedule=point["schedule"],
                      objective=point["objective"], streams=int(point["streams"]),
                      seed=int(point["seed"]),
                      kv=tuple(e["path"] for e in point.get("kv") or ()))


def _state(point: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(preset, head streams, channel costs) of the point's configuration, kept per process."""
    from starc import config
    from starc.system.channel import ChannelCosts
    from starc.system.shapes import get
    from starc.system.workload import Streams
    key = json.dumps({f: point[f] for f in ("preset", "overrides", "model", "lin", "lout",
                                            "streams", "seed", "kv", "objective")},
                     sort_keys=True)
    st = _STATE.get(key)
    if st is None:
        _STATE.clear()                   # one configuration at a time: bounded memory
        cfg = config.load(point["preset"], point.get("overrides") or None)
        m = get(point["model"])
        streams = Streams(cfg, head_dim=m.head_dim, group_size=m.group_size,
                          lin=int(point["lin"]), lout=int(point["lout"]),
                          seed=int(point["seed"]), streams=int(point["streams"]),
                          kv=[e["path"] for e in point.get("kv") or ()],
                          objective=point["objective"])
        st = _STATE[key] = (cfg, streams, ChannelCosts(cfg, m.head_dim))
    return st


def system_point(point: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one system point (a pure function of the point: seeded, so a Dask run equals a
    local one)."""
    import time

    from threadpoolctl import threadpool_limits

    from starc.system.pertoken import evaluate_step
    cfg, streams, costs = _state(point)
    spec = spec_of(point)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        res = evaluate_step(spec, cfg, int(point["step"]), streams, costs)
    streams.forget_steps()
    res["seconds"] = time.perf_counter() - t0
    return res


#: per-token metrics averaged over the sampled steps
_MEAN_KEYS = ("token_cycles", "token_us", "token_energy_mJ", "token_attacc_energy_mJ",
              "channel_util", "stack_util", "bank_activations", "selected", "union_tokens",
              "mass_recall", "gpu_dense_us", "gpu_dense_energy_mJ", "gpu_sparse_us",
              "gpu_sparse_energy_mJ", "fc_gpu_us", "fc_gpu_energy_mJ", "model_us",
              "gpu_model_us")


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trajectory means per (policy, mapping): every per-token figure averaged over the sampled
    steps (breakdowns too); ratios are taken of the means."""
    import numpy as np
    groups: dict[tuple[str, str], list[dict]] = {}
    for res in results:
        for r in res["rows"]:
            groups.setdefault((r["policy"], r["mapping"]), []).append(r)
    out = []
    for (policy, mapping), rs in groups.items():
        row: dict[str, Any] = {"policy": policy, "mapping": mapping, "sampled_steps": len(rs),
                               "n_ctx": [r["n_ctx"] for r in rs]}
        for k in _MEAN_KEYS:
            xs = [r[k] for r in rs if r.get(k) is not None]
            row[k] = float(np.mean(xs)) if xs else None
        for k in ("token_t", "token_e"):
            keys = list(dict.fromkeys(kk for r in rs for kk in r[k]))
            row[k] = {kk: float(np.mean([r[k].get(kk, 0) for r in rs])) for kk in keys}
        for k in ("channels_used", "channels", "stacks_used", "stacks", "replicas"):
            row[k] = rs[0][k]
        lat = row["token_us"]
        row["gpu_over_pim"] = row["gpu_dense_us"] / lat if lat else None
        row["selection_share"] = row["token_t"].get("selection", 0) / row["token_cycles"] \
            if row["token_cycles"] else 0.0
        out.append(row)
    return out


def reductions(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mapping and STARC variant: latency and energy reductions of the trajectory means
    against dense and against token-wise selection (``sparq``), selection included; PIM's gain
    (GPU-only dense over PIM dense) and the policy's (PIM dense over the variant)."""
    by = {(r["mapping"], r["policy"]): r for r in summary}
    out = []
    for mapping in sorted({r["mapping"] for r in summary}):
        for star in ("starc", "starc-row"):
            s = by.get((mapping, star))
            if s is None:
                continue
            row: dict[str, Any] = {"mapping": mapping, "variant": star}
            for base, name in (("sparq", "tokenwise"), ("dense", "dense")):
                b = by.get((mapping, base))
                if b is None:
                    continue
                row[f"latency_vs_{name}"] = 1 - s["token_us"] / b["token_us"]
                row[f"energy_vs_{name}"] = 1 - s["token_energy_mJ"] / b["token_energy_mJ"]
                row[f"attacc_energy_vs_{name}"] = 1 - s["token_attacc_energy_mJ"] / \
                    b["token_attacc_energy_mJ"]
            d = by.get((mapping, "dense"))
            if d is not None:
                row["pim_gain"] = d["gpu_dense_us"] / d["token_us"]
                row["policy_speedup"] = d["token_us"] / s["token_us"]
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# `starc sweep --system`


def add_sweep_args(p: Any) -> None:
    """The ``--system`` options of ``starc sweep`` (its --presets, --models, --budgets,
    --policies, --seed, --objective, --kv, --workers, --scheduler, --cache-dir and -o apply)."""
    from starc.argtypes import int_range
    from starc.system.channel import SCHEDULES
    from starc.system.gpu import GPUS
    from starc.system.mapping import STRATEGIES
    g = p.add_argument_group("whole-model decode on HBM-PIM stacks (docs/system.md)")
    g.add_argument("--system", action="store_true",
                   help="sweep the system model (`starc system`) over presets x models x "
                        "budgets x batch sizes x stack counts, each along its decode trajectory")
    g.add_argument("--batch", type=int_range(1, 4096), nargs="+", default=[16],
                   help="--system: batch sizes (default 16)")
    g.add_argument("--lin", type=int_range(1), default=2048,
                   help="--system: prompt length (default 2048)")
    g.add_argument("--lout", type=int_range(1), default=24000,
                   help="--system: tokens generated (default 24000)")
    g.add_argument("--sampled-steps", type=int_range(1, 4096), default=4, metavar="N",
                   help="--system: decode steps sampled along the trajectory (default 4)")
    g.add_argument("--stacks", type=int_range(1, 1 << 16), nargs="+", default=None,
                   help="--system: HBM-PIM stack counts (default 5 per GPU)")
    g.add_argument("--gpus", type=int_range(1, 1024), default=8,
                   help="--system: GPUs (default 8)")
    g.add_argument("--gpu", choices=sorted(GPUS), default="h100-sxm",
                   help="--system: GPU of the baseline (default h100-sxm)")
    g.add_argument("--mappings", nargs="+", choices=STRATEGIES, default=["attacc"],
                   help="--system: mappings (default attacc)")
    g.add_argument("--schedule", choices=sorted(SCHEDULES), default="overlapped",
                   help="--system: channel program builder (sequential or overlapped; default "
                        "overlapped)")
    g.add_argument("--streams", type=int_range(1, 1 << 20), default=16,
                   help="--system: distinct synthetic head streams (default 16)")


def run_system_sweep(args: Any) -> int:
    """``starc sweep --system``: every configuration of the grid, one report folder."""
    import itertools

    from starc.cli import UserError, print_json, print_table
    from starc.report import ReportWriter
    from starc.system.cli import STACKS_PER_GPU, config_from_args, run_system, tables
    from starc.system.cli import write_report as write_system_report
    budgets = args.budgets or [1024]
    if any(isinstance(b, str) for b in budgets):
        raise UserError("--system takes token budgets, not mass budgets (p0.95)")
    rep = ReportWriter(args.out, command="sweep --system", force=args.force,
                       inputs=[*(args.kv or []), *(p for p in args.presets
                                                   if p.endswith(".toml"))])
    if args.scheduler:
        from starc.sweep.engine import probe_scheduler
        probe_scheduler(args.scheduler)
    confs = []
    stacks = args.stacks or [STACKS_PER_GPU * args.gpus]
    for preset, model, budget, batch, n_stacks in itertools.product(
            args.presets, args.models, budgets, args.batch, stacks):
        ns = argparse_namespace(args, preset=preset, model=model, budget=budget, batch=batch,
                                stacks=n_stacks)
        confs.append(config_from_args(ns))
    results = run_system(confs, args.sampled_steps, workers=args.workers,
                         scheduler=args.scheduler, cache_dir=args.cache_dir,
                         progress=not args.json)
    write_system_report(rep, results, command="sweep --system")
    if args.json:
        print_json({"report": str(args.out), "results": results})
        return 0
    for res in results:
        for t, cols, rows in tables(res):
            print_table(t, cols, rows)
    print(f"report written to {args.out}/")
    return 0


def argparse_namespace(args: Any, **values: Any) -> Any:
    """The ``starc system`` arguments of one sweep configuration."""
    import argparse
    return argparse.Namespace(
        preset=values["preset"], overrides=[], model=values["model"], kv=args.kv,
        lin=args.lin, lout=args.lout, steps=args.sampled_steps, batch=values["batch"],
        stacks=values["stacks"], gpus=args.gpus, gpu=args.gpu, mappings=args.mappings,
        policies=args.policies, budget=values["budget"], schedule=args.schedule,
        objective=args.objective, streams=args.streams, seed=args.seed)

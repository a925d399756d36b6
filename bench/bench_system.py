"""The system model's speed (docs/system.md): one trajectory point and the STARC artifact's E4
trajectory.

Setting: Mistral-7B (32 layers, 8 KV heads, GQA 4:1, d 128), batch 16, Lin 2048, Lout 24000,
AttAcc's 8 GPUs x 5 stacks of the power-limited bank-level HBM3-PIM preset, B = 1024, the
policies dense, quest, sparq, starc and starc-row, 16 synthetic head streams.

1. **Point**: one sampled decode step (every policy, every layer, every channel), in this
   process, from nothing (head streams generated, layouts compiled: *cold*) and then a second
   step on the same streams (*warm*: planning, programs, scheduling only). Target: a cold point
   <= 60 s on 2 cores.
2. **Trajectory**: ``--steps`` sampled steps (default 10, the target's) through the sweep engine
   with ``--workers`` processes and an empty cache, as ``starc system --steps 10`` runs it.
   Target: <= 15 min on 2 cores. Beside it, the points' own evaluation seconds (measured in
   the workers, without generating and compiling the streams) summed, and their ratio to the
   wall time: what the workers overlap. A point's cost grows with its context (longer dense
   programs), so the warm point of part 1 (the second sampled step) is not a mean.

Prints the figures, the ratios and ``uptime`` before and after (the machine is shared).

    .venv/bin/python bench/bench_system.py                 # both parts
    .venv/bin/python bench/bench_system.py --point-only --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

POLICIES = ["dense", "quest", "sparq", "starc", "starc-row"]


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:                                      # pragma: no cover - no uptime binary
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def e4_config(mappings: list[str], schedule: str) -> dict[str, Any]:
    from starc import config as cfgmod
    return {"preset": cfgmod.DEFAULT_PRESET, "overrides": [], "model": "mistral-7b",
            "batch": 16, "lin": 2048, "lout": 24000, "stacks": 40, "gpus": 8,
            "gpu": "h100-sxm", "mappings": mappings, "policies": POLICIES, "budget": 1024,
            "schedule": schedule, "objective": "cycles", "streams": 16, "seed": 0, "kv": []}


def measure_point(conf: dict[str, Any], steps: list[int]) -> dict[str, Any]:
    from starc.sweep import system as sysmod
    pts = sysmod.plan_points(conf, steps[:2])
    sysmod._STATE.clear()
    t0 = time.perf_counter()
    cold = sysmod.system_point(pts[0])
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = sysmod.system_point(pts[-1])
    t_warm = time.perf_counter() - t0
    return {"cold_step": cold["step"], "cold_s": t_cold, "cold_eval_s": cold["seconds"],
            "warm_step": warm["step"], "warm_s": t_warm,
            "channel_programs": cold["channel_programs"]}


def measure_trajectory(conf: dict[str, Any], n_steps: int, workers: int) -> dict[str, Any]:
    from starc.system.cli import run_system
    with tempfile.TemporaryDirectory(prefix="bench-system-") as tmp:
        t0 = time.perf_counter()
        (res,) = run_system([conf], n_steps, workers=workers, cache_dir=Path(tmp),
                            progress=False)
        wall = time.perf_counter() - t0
    return {"steps": n_steps, "workers": workers, "wall_s": wall,
            "point_seconds": res["point_seconds"],
            "reductions": res["reductions"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="sampled steps of the trajectory")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--mappings", nargs="+", default=["attacc"])
    ap.add_argument("--schedule", default="overlapped",
                    help="channel schedule (default overlapped, starc system's)")
    ap.add_argument("--point-only", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from starc.system.workload import sampled_steps
    conf = e4_config(args.mappings, args.schedule)
    out: dict[str, Any] = {"setting": {k: conf[k] for k in ("model", "batch", "lin", "lout",
                                                            "stacks", "mappings", "policies",
                                                            "budget", "schedule")},
                           "cpus": os.cpu_count(), "uptime_before": _uptime()}
    steps = sampled_steps(conf["lout"], args.steps)
    out["point"] = p = measure_point(conf, steps)
    out["uptime_after_point"] = _uptime()
    if not args.point_only:
        out["trajectory"] = t = measure_trajectory(conf, args.steps, args.workers)
        t["points_s"] = sum(t["point_seconds"])
        t["points_over_wall"] = t["points_s"] / t["wall_s"]
    out["uptime_after"] = _uptime()
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    s = out["setting"]
    print(f"setting: {s['model']}, batch {s['batch']}, context {s['lin']} -> "
          f"{s['lin'] + s['lout']}, {s['stacks']} stacks, mappings {' '.join(s['mappings'])}, "
          f"schedule {s['schedule']}, B {s['budget']}, policies {' '.join(s['policies'])}")
    print(f"uptime before: {out['uptime_before']}")
    print(f"point (step {p['cold_step']}), cold: {p['cold_s']:.1f} s  (target <= 60 s: "
          f"{'met' if p['cold_s'] <= 60 else 'MISSED'}); {p['channel_programs']} distinct "
          f"channel programs")
    print(f"point (step {p['warm_step']}), warm: {p['warm_s']:.1f} s  (cold / warm "
          f"{p['cold_s'] / p['warm_s']:.1f} x: generating and compiling the head streams)")
    if "trajectory" in out:
        t = out["trajectory"]
        print(f"trajectory, {t['steps']} sampled steps, {t['workers']} workers: "
              f"{t['wall_s']:.1f} s = {t['wall_s'] / 60:.1f} min  (target <= 15 min: "
              f"{'met' if t['wall_s'] <= 900 else 'MISSED'}); per point "
              + " ".join(f"{x:.0f}" for x in t["point_seconds"]) + " s")
        print(f"  the points' evaluation seconds summed {t['points_s']:.1f} s; over the wall "
              f"time {t['points_over_wall']:.2f} x (each worker also generates and compiles "
              f"the streams once)")
    print(f"uptime after: {out['uptime_after']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Co-simulation speed of the attention channel under cocotb + Verilator: the old way and the new
way side by side in one run, with the golden model's time for the same step.

- **old**: the model built at ``-O0`` (build configuration ``O0``), a Python host on the ports
  every clock (four coroutines: two stream drivers, the issue sink, the datapath monitor) and the
  memory image through WR commands (``tb_attention.scenario_host``);
- **new**: the optimised build configuration (``starc_sim.cosim.COSIM_BUILD``), on the 16-bank
  model also ``flat`` (the PUs inlined), and, where it differs, the one the model's tests and the
  CLI use (``starc_sim.cosim.build_config``: ``quick`` for the full channel), each with its build
  time when built in the run; the harness's
  stimulus and capture memories with no Python on any clock, and the image by the backdoor
  (``tb_attention.scenario``).

For each policy it prints the simulated clocks, the simulation's wall time (the cocotb test
itself, from its results file), clocks per second, the end-to-end wall time of ``run_scenario``
(planning, bundle, simulator start, run, checks), the golden model's time for the step and the
speed-up of new over old. Also the build time of each model when it was built in this run, and
``uptime`` before and after.

    python bench/bench_cosim.py                        # 16-bank model: dense, starc-row, quest
    python bench/bench_cosim.py --full                 # the 64-bank full channel, d 128
    python bench/bench_cosim.py --context 1024         # a 1K-token head (the 5-second target)
    python bench/bench_cosim.py --configs O2 O3 fast   # build configurations, new way only
    python bench/bench_cosim.py --no-old --heads 1 2   # the model built for 1 and for 2 heads
    python bench/bench_cosim.py --no-old --configs fast --softmax-ungated  # softmax gating
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from starc.golden import functional, timing
from starc_sim.cosim import (
    COSIM_BUILD,
    COSIM_MODEL,
    FULL_MODEL,
    build_attention,
    build_config,
    planner_scenario,
    run_scenario,
    synthetic_cache,
)

CLOCK_NS = 10  # starc_sim.tb_attention.CLOCK_NS


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _sim_time(run_dir: Path) -> tuple[float, float]:
    """Simulated clocks and wall seconds of the cocotb test in ``run_dir``."""
    tc = ET.parse(run_dir / "results.xml").getroot().find(".//testcase")
    assert tc is not None
    props = {p.get("name"): p.get("value") for p in tc.iter("property")}
    return float(props["sim_time_duration"]) / CLOCK_NS, float(tc.get("time", "0"))


def _default_configs(spec) -> list[str]:  # noqa: ANN001
    """``fast`` (what the CLI and the demo build), the model's own configuration where it
    differs, and on the 16-bank model ``flat`` (the PUs inlined: the fastest simulation, the
    longest build; on the full channel its -O3 compile takes tens of minutes)."""
    own = build_config(spec)
    return ([COSIM_BUILD] + ([own] if own != COSIM_BUILD else [])
            + (["flat"] if spec != FULL_MODEL else []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", nargs="+", default=["dense", "starc-row", "quest"])
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--context", type=int, default=None,
                    help="tokens of the synthetic cache (default 500; 400 with --full)")
    ap.add_argument("--idle", type=float, default=0.0)
    ap.add_argument("--backpressure", type=float, default=0.0)
    ap.add_argument("--full", action="store_true",
                    help="the default preset's full channel (64 banks, 16 lanes, d 128)")
    ap.add_argument("--configs", nargs="+", default=None,
                    help="build configurations to measure the new way with (default: the "
                         f"optimised one, {COSIM_BUILD}, and the model's own, build_config); "
                         "the old way is always O0")
    ap.add_argument("--no-old", action="store_true", help="skip the old way")
    ap.add_argument("--softmax-ungated", action="store_true",
                    help="also measure each new configuration with the PUs gated and the "
                         "softmax unit not (the gating of the idle softmax unit, side by side)")
    ap.add_argument("--heads", nargs="+", type=int, default=None,
                    help="build the model for these head counts (ModelSpec.heads, "
                         "docs/multihead.md) and run the same one-head step on each, side by "
                         f"side (default: the model's, {COSIM_MODEL.heads})")
    args = ap.parse_args(argv)
    print(f"uptime before: {_uptime()}")
    spec = FULL_MODEL if args.full else COSIM_MODEL
    heads = args.heads or [spec.heads]
    if any(h < 1 for h in heads):
        ap.error(f"--heads takes head counts >= 1, not {heads}")
    specs = {h: dataclasses.replace(spec, heads=h) for h in heads}
    cache = synthetic_cache(spec, prefill_len=args.context)
    org = spec.cfg.org
    print(f"model: {org.banks_per_channel} banks, {spec.cfg.pu.lanes} lanes, d "
          f"{spec.head_dim}; cache {cache.meta.prefill_len} tokens; B = {args.budget}; idle "
          f"{args.idle}, backpressure {args.backpressure}")
    ways = [] if args.no_old else [("old", "O0", True, h) for h in heads]
    for c in args.configs or _default_configs(spec):
        if args.softmax_ungated:
            ways += [("new, softmax ungated", c, False, h) for h in heads]
        ways += [("new", c, False, h) for h in heads]
    models = {}
    for way, cfgname, _, h in ways:
        key = (way, cfgname, h)
        if key in models:
            continue
        t0 = time.perf_counter()
        m = build_attention(specs[h], config=cfgname,
                            softmax_gating=False if "ungated" in way else None)
        took = time.perf_counter() - t0
        models[key] = m
        built = "cached" if took < 30 else f"built in {took:.0f} s"
        print(f"build {cfgname}, {h} head(s), {way}: {m.build_dir.name} ({built})")
    print()
    print("test: the whole cocotb test (image, stimulus load, run, capture read-back); run: from "
          "start to done (the old way: the step's stream), simulator clocks; heads: the heads "
          "the model is built for (the step is one head's); run / base: the run's clocks/s over "
          "the first row of the policy (the old way if measured)")
    print("| policy | way | build | heads | step cmds | test clocks | test s | test clocks/s | "
          "run clocks | run s | run clocks/s | end-to-end s | golden ms | run / base |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    breakdown: list[tuple[str, str, str, dict]] = []
    for pol in args.policies:
        scn = planner_scenario(cache, spec, policy=pol, budget=args.budget)
        cfg = scn.spec.cfg
        g0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            timing.schedule(scn.prog, cfg)
            functional.execute(scn.prog, scn.wdata, scn.image, cfg, scn.spec.head_dim)
        golden_ms = (time.perf_counter() - g0) / reps * 1e3
        base_rate = None
        for way, cfgname, host, h in ways:
            t0 = time.perf_counter()
            res = run_scenario(dataclasses.replace(scn, spec=specs[h]), idle=args.idle,
                               backpressure=args.backpressure, model=models[way, cfgname, h],
                               host=host, quiet=True)
            e2e = time.perf_counter() - t0
            clocks, wall = _sim_time(Path(res.run_dir))
            rate = clocks / wall if wall else float("nan")
            run = next((v for k, v in res.phases.items() if k.startswith("step: run")),
                       {"clocks": float("nan"), "seconds": float("nan")})
            run_rate = run["clocks"] / run["seconds"] if run["seconds"] else float("nan")
            ok = "" if res.bit_exact and res.cycles_equal else " (DISAGREES)"
            ratio = "" if base_rate is None else f"{run_rate / base_rate:.3f}x"
            if base_rate is None:
                base_rate = run_rate
            print(f"| {pol}{ok} | {way} | {cfgname} | {h} | {res.commands} | {clocks:.0f} | "
                  f"{wall:.2f} | {rate:,.0f} | {run['clocks']:.0f} | {run['seconds']:.3f} | "
                  f"{run_rate:,.0f} | {e2e:.1f} | {golden_ms:.1f} | {ratio} |")
            breakdown.append((pol, way, f"{cfgname} {h}h",
                              {**res.phases, "_e2e": e2e, "_test": wall}))
    print()
    print("where the end-to-end time goes (seconds; outside the test: planning, bundle, "
          "simulator start and exit)")
    names = sorted({k for *_, ph in breakdown for k in ph if not k.startswith("_")})
    print("| policy | way | " + " | ".join(names) + " | rest of the test | outside the test |")
    print("|---|---|" + "---|" * (len(names) + 2))
    for pol, way, cfgname, ph in breakdown:
        secs = [ph[n]["seconds"] if n in ph else 0.0 for n in names]
        cells = " | ".join(f"{x:.3f}" for x in secs)
        print(f"| {pol} | {way} {cfgname} | {cells} | {ph['_test'] - sum(secs):.3f} | "
              f"{ph['_e2e'] - ph['_test']:.2f} |")
    print()
    print(f"uptime after: {_uptime()}")
    print(f"(pid {os.getpid()}; clocks include the image load where the way has one)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

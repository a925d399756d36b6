"""Simulated cycles per second of the attention channel under cocotb + Verilator, beside the
golden model on the same decode step.

For each policy: plans one step of the co-simulation's seeded synthetic cache
(``starc_sim.cosim.synthetic_cache``: 3 layers, 500 tokens, d 64 on the 16-bank model), runs it
on the RTL (image load through WR commands, then the step, every value checked) and prints the
simulated clocks (load + step), the wall time of the simulation, clocks per second, and the
golden model's time for the same step (timing schedule + bit-exact functional model), with the
ratio.

    python bench/bench_cosim.py                       # dense, starc-row, quest
    python bench/bench_cosim.py --full                # the default preset's 64-bank channel, d 128
    python bench/bench_cosim.py --policies dense --idle 0 --backpressure 0
"""

from __future__ import annotations

import argparse
import time
import xml.etree.ElementTree as ET

from starc.golden import functional, timing
from starc_sim.cosim import (
    COSIM_MODEL,
    FULL_MODEL,
    build_attention,
    planner_scenario,
    run_scenario,
    synthetic_cache,
)

CLOCK_NS = 10  # starc_sim.tb_attention.CLOCK_NS: one clock = one emulated DRAM cycle when no stall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", nargs="+", default=["dense", "starc-row", "quest"])
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--idle", type=float, default=0.0)
    ap.add_argument("--backpressure", type=float, default=0.0)
    ap.add_argument("--full", action="store_true",
                    help="the default preset's full channel (64 banks, 16 lanes, d 128; the model "
                         "of tests/test_rtl_attention.py::test_full_size_step)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    spec = FULL_MODEL if args.full else COSIM_MODEL
    cache = synthetic_cache(spec)
    model = build_attention(spec)
    org = spec.cfg.org
    print(f"model {model.build_dir.name} ({org.banks_per_channel} banks, {spec.cfg.pu.lanes} "
          f"lanes, d {spec.head_dim}): ready in {time.perf_counter() - t0:.0f} s (0 when cached)")
    print("| policy | step cmds | load cmds | clocks | sim wall s | clocks/s | golden ms | "
          "RTL / golden time |")
    print("|---|---|---|---|---|---|---|---|")
    for pol in args.policies:
        scn = planner_scenario(cache, spec, policy=pol, budget=args.budget)
        res = run_scenario(scn, idle=args.idle, backpressure=args.backpressure, model=model,
                           quiet=True)
        runs = sorted(model.build_dir.glob("runs/cosim-*/results.xml"),
                      key=lambda p: p.stat().st_mtime)
        tc = ET.parse(runs[-1]).getroot().find(".//testcase")
        assert tc is not None
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        sim_ns, wall = float(props["sim_time_duration"]), float(tc.get("time", "0"))
        clocks = sim_ns / CLOCK_NS
        cfg = scn.spec.cfg
        g0 = time.perf_counter()
        reps = 5
        for _ in range(reps):
            timing.schedule(scn.prog, cfg)
            functional.execute(scn.prog, scn.wdata, scn.image, cfg, scn.spec.head_dim)
        golden_s = (time.perf_counter() - g0) / reps
        ok = "" if res.bit_exact and res.cycles_equal else " (DISAGREES)"
        print(f"| {pol}{ok} | {res.commands} | {res.load_commands} | {clocks:.0f} | {wall:.1f} | "
              f"{clocks / wall:.0f} | {golden_s * 1e3:.1f} | {wall / golden_s:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

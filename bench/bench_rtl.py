"""Simulated DRAM cycles per second of the channel RTL under Verilator, beside the golden model.

Builds :class:`starc_hw.feeder.FedChannel` (program memory + controller + 64-bank array of the
default preset, or the small test organisation with ``--small``), loads a program, runs it
``--repeat`` times with no Python in the loop, and prints:

- RTL: DRAM cycles per second of wall time, clocks per second (equal unless the feeder stalls),
  issued commands per second;
- golden model (``starc.golden.timing.schedule`` on the same repeated program): commands per
  second, and the check that both give the same cycle count and command count.

    python bench/bench_rtl.py                 # full-size channel (first build takes minutes)
    python bench/bench_rtl.py --small --repeat 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from starc.golden.programs import dense_program, stream_program
from starc.golden.timing import schedule
from starc.isa import encode
from starc_hw.feeder import FedChannel
from starc_sim.programs import SHORT_REFRESH, SMALL, load_config
from starc_sim.runner import build_design


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true",
                    help="2x2x2x2 organisation with a short tREFI instead of the default preset")
    ap.add_argument("--program", choices=["stream", "dense"], default="stream",
                    help="stream: whole rows at peak (8 rows); dense: dense attention, L = 4 rows")
    ap.add_argument("--repeat", type=int, default=40, help="runs of the program (default 40)")
    ap.add_argument("--golden-runs", type=int, default=3, help="timing runs of the golden model")
    args = ap.parse_args(argv)
    if args.repeat <= 0:
        ap.error(f"--repeat must be a positive integer, not {args.repeat}")

    overrides = {**SMALL, **SHORT_REFRESH} if args.small else {}
    cfg = load_config(None, overrides)
    if args.program == "stream":
        prog = stream_program(cfg, 8)
    else:
        d = 128 if cfg.org.banks_per_group >= 4 else 64
        prog = dense_program(cfg, cfg.tokens_per_group_row(d) * cfg.org.groups_per_channel * 4, d)
    depth = max(4096, 1 << max(len(prog) - 1, 1).bit_length())  # one build for both programs
    rows = 1

    t = time.perf_counter()
    model = build_design(
        "fedchannel", lambda: FedChannel(cfg=cfg, depth=depth, rows=rows),
        params={"cfg": cfg.as_dict(), "depth": depth, "rows": rows}, internals=False)
    build_s = time.perf_counter() - t

    full = np.tile(prog, args.repeat)
    best = float("inf")
    for _ in range(args.golden_runs):
        t = time.perf_counter()
        s = schedule(full, cfg)
        best = min(best, time.perf_counter() - t)
    golden_cmds = len(s.issue)

    with tempfile.TemporaryDirectory() as tmp:
        pfile, ofile = Path(tmp) / "prog.hex", Path(tmp) / "out.json"
        pfile.write_text("\n".join(f"{encode(c):x}" for c in prog))
        model.run("starc_sim.tb_bench", testcase="bench", seed=1, extra_env={
            "STARC_BENCH_PROGRAM": str(pfile), "STARC_BENCH_OUT": str(ofile),
            "STARC_BENCH_REPEAT": str(args.repeat),
            "STARC_BENCH_CYCLES": str(s.total_cycles)})
        out = json.loads(ofile.read_text())

    org = cfg.org
    print(f"channel: {cfg.name}, {org.groups_per_channel} groups x {org.banks_per_group} banks "
          f"= {org.banks_per_channel} banks; program '{args.program}' ({len(prog)} commands) "
          f"x {args.repeat}; build/no-op check {build_s:.1f} s ({model.build_dir.name})")
    print(f"{'':24}{'DRAM cycles':>14}{'commands':>12}{'wall s':>10}{'cycles/s':>14}"
          f"{'commands/s':>14}")
    run_s = out["run_seconds"]
    print(f"{'RTL (Verilator)':24}{out['complete']:>14}{out['issued']:>12}{run_s:>10.3f}"
          f"{out['cycle'] / run_s:>14,.0f}{out['issued'] / run_s:>14,.0f}")
    print(f"{'golden timing model':24}{s.total_cycles:>14}{golden_cmds:>12}{best:>10.3f}"
          f"{s.total_cycles / best:>14,.0f}{golden_cmds / best:>14,.0f}")
    cpu = out["run_cpu_seconds"]
    print(f"RTL per CPU second (less sensitive to other load): {out['cycle'] / cpu:,.0f} cycles/s, "
          f"{out['issued'] / cpu:,.0f} commands/s")
    print(f"clocks {out['clocks']:.0f} for {out['cycle']} DRAM cycles; load "
          f"{out['load_seconds']:.2f} s; golden/RTL speed {run_s / best:.1f}x; "
          f"bank-checker violations {out['violation_count']}")
    ok = (out["complete"] == s.total_cycles and out["issued"] == golden_cmds
          and out["fault"] == 0)
    print("cycle count and command count equal to the golden model" if ok
          else "MISMATCH with the golden model")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

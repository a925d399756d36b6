"""FPGA place and route of the ULX3S board top for every size preset: LUT / FF / DSP / BRAM / Fmax.

Runs the full open flow (YoWASP Yosys synth_ecp5, nextpnr-ecp5 with --report, ecppack) for each
size of ``fpga.top.SIZES`` into ``build/fpga/<size>/`` and prints a Markdown table (the one in
docs/fpga.md). nextpnr uses router2 for every size (the default router1 takes much longer on the
large channel). Long: minutes per size; not part of the test suite.

    .venv/bin/python bench/bench_fpga.py                     # every size
    .venv/bin/python bench/bench_fpga.py --sizes small       # one size
    .venv/bin/python bench/bench_fpga.py --no-pnr            # synthesis only (no Fmax)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from fpga.build import BuildResult, build, format_table  # noqa: E402
from fpga.top import SIZES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    p.add_argument("--router", choices=["router1", "router2"], default="router2")
    p.add_argument("--no-pnr", action="store_true", help="synthesis only")
    p.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")
    args = p.parse_args(argv)
    results: list[BuildResult] = []
    for size in args.sizes:
        t0 = time.perf_counter()
        res = build(size, pnr=not args.no_pnr, router=args.router, seed=args.seed,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"{size}: {res.description}: {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
        results.append(res)
    print(format_table(results))
    out = _REPO / "build" / "fpga" / "bench.json"
    out.write_text(json.dumps([r.as_dict() for r in results], indent=1))
    print(f"(results in {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

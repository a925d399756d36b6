"""FPGA place and route of the ULX3S board top for every size preset: LUT / FF / DSP / BRAM / Fmax.

Runs the full open flow (YoWASP Yosys synth_ecp5, nextpnr-ecp5 with --report, ecppack) for each
board size (``starc_fpga.top.BOARD_SIZES``) into ``build/fpga/<size>/`` and prints a Markdown
table (the one in docs/fpga.md); sizes that do not fit the LFE5U-85F (``Size.place``:
``pim-large``) are synthesised only. nextpnr uses router2 for every size (the default router1
takes much longer on the large channel). Long: minutes per size; not part of the test suite.

    .venv/bin/python bench/bench_fpga.py                     # every size
    .venv/bin/python bench/bench_fpga.py --sizes small       # one size
    .venv/bin/python bench/bench_fpga.py --no-pnr            # synthesis only (no Fmax)
    .venv/bin/python bench/bench_fpga.py --table             # the table of the last builds
    .venv/bin/python bench/bench_fpga.py --units add pu-l1   # datapath blocks alone
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from starc_fpga.build import BuildResult, build, build_dir_for, build_unit, format_table
from starc_fpga.top import BOARD_SIZES

_REPO = Path(__file__).resolve().parents[1]


class _Op(wiring.Component):
    """One pipelined FP operation of starc_hw.folded.pipe between registers."""

    def __init__(self, op: str) -> None:
        self._op = op
        super().__init__({"a": In(32), "b": In(32), "y": Out(32)})

    def elaborate(self, platform: object) -> Module:
        from starc.numerics import FP32
        from starc_hw.folded import pipe

        m = Module()
        a, b = pipe.reg(m, self.a, "a"), pipe.reg(m, self.b, "b")
        if self._op == "add":
            m.d.comb += self.y.eq(pipe.add(m, FP32, a, b, "y"))
        else:
            m.d.comb += self.y.eq(pipe.mul(m, FP32, a[:16], b[:16], "y"))
        return m


def _unit(name: str) -> object:
    """The block a ``--units`` name measures."""
    from starc_hw.sizes import size

    if name in ("add", "mul"):
        return lambda: _Op(name)
    cfg = size("pim-tiny").config()
    if name.startswith("pu-l"):
        from starc_hw.folded.pu import FoldedPU

        return lambda: FoldedPU(cfg=cfg, lanes_per_clock=int(name[4:]))
    if name == "softmax":
        from starc_hw.folded.softmax import FoldedSoftmax

        return lambda: FoldedSoftmax(cfg=cfg, entries=64, beats=8)
    raise ValueError(f"unknown unit {name!r}")


UNITS = ("add", "mul", "pu-l1", "pu-l2", "pu-l4", "softmax")


def _print_tools(results: list[BuildResult]) -> None:
    for tools in {json.dumps(r.tools, sort_keys=True) for r in results if r.tools}:
        print("tools: " + ", ".join(f"{k} {v}" for k, v in sorted(json.loads(tools).items())))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=list(BOARD_SIZES),
                   default=list(BOARD_SIZES))
    p.add_argument("--router", choices=["router1", "router2"], default="router2")
    p.add_argument("--no-pnr", action="store_true", help="synthesis only")
    p.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")
    p.add_argument("--units", nargs="+", choices=UNITS, default=None,
                   help="build datapath blocks alone (resources, Fmax) instead of sizes")
    p.add_argument("--clock-mhz", type=float, default=50.0,
                   help="the PLL clock of the sizes and the clock nextpnr times them and --units "
                        "against (default 50)")
    p.add_argument("--table", action="store_true",
                   help="build nothing: print the table of the last builds (result.json)")
    args = p.parse_args(argv)
    results: list[BuildResult] = []
    if args.table:
        for size in args.sizes:
            f = build_dir_for(size) / "result.json"
            if f.is_file():
                d = json.loads(f.read_text())
                results.append(BuildResult(**{k: v for k, v in d.items()
                                              if k not in ("fmax", "timing_met",
                                                           "emulated_cycles_per_second")}))
        print(format_table(results))
        _print_tools(results)
        return 0
    if args.units:
        for name in args.units:
            t0 = time.perf_counter()
            res = build_unit(name, _unit(name), clock_hz=args.clock_mhz * 1e6,
                             pnr=not args.no_pnr, router=args.router, seed=args.seed,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
            print(f"unit {name}: {time.perf_counter() - t0:.0f} s, load {res.load}",
                  file=sys.stderr, flush=True)
            results.append(res)
        print(format_table(results))
        _print_tools(results)
        return 0
    for size in args.sizes:
        t0 = time.perf_counter()
        pnr = BOARD_SIZES[size].place and not args.no_pnr
        res = build(size, pnr=pnr, router=args.router, seed=args.seed,
                    clock_hz=args.clock_mhz * 1e6,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"{size}: {res.description}: {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
        results.append(res)
    print(format_table(results))
    _print_tools(results)
    out = _REPO / "build" / "fpga" / "bench.json"
    out.write_text(json.dumps([r.as_dict() for r in results], indent=1))
    print(f"(results in {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``starc fpga build``: build the ULX3S board top with the open toolchain, print its resources.

:func:`register` adds the ``fpga`` command group to the ``starc`` argparse entry point (the same
contract as ``starc.model.cli.register``). The handler returns an exit code: 0 on success, 1 when
the design does not meet the requested clock, 2 on a bad argument or a missing or failing tool
(one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["cmd_fpga_build", "register"]


def _group(subparsers: argparse._SubParsersAction, name: str, help_text: str
           ) -> argparse._SubParsersAction:
    """The sub-command action of group ``name``, created unless another module already did."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    sub = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    sub.required = True
    return sub


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fpga build`` to the ``starc`` sub-command parser."""
    from starc.argtypes import finite_float, int_range
    from starc_fpga.top import BOARD_SIZES, DEFAULT_BAUD, DEFAULT_CLOCK_HZ

    grp = _group(subparsers, "fpga", "FPGA prototype of one channel on a ULX3S (docs/fpga.md)")
    sizes = "; ".join(f"{k}: {v.describe()}" + ("" if v.place else " (synthesis only)")
                      for k, v in BOARD_SIZES.items())
    p = grp.add_parser(
        "build", help="synthesise, place and route the ULX3S board top; print resources and Fmax",
        description="Build the ULX3S (LFE5U-85F) board top (scaled channel + UART host link) "
                    "with YoWASP Yosys / nextpnr-ecp5 / ecppack into build/fpga/<size>/. "
                    f"Sizes: {sizes}.")
    p.add_argument("--size", choices=sorted(BOARD_SIZES), default="small",
                   help="channel size preset (default small)")
    p.add_argument("--no-pnr", action="store_true",
                   help="synthesis only: Yosys resource counts, no place and route, no Fmax")
    p.add_argument("--clock-mhz", type=finite_float(1.0, 1000.0), default=DEFAULT_CLOCK_HZ / 1e6,
                   help=f"system clock made by the PLL from the 25 MHz oscillator (default "
                        f"{DEFAULT_CLOCK_HZ / 1e6:g}; 25 uses the oscillator directly)")
    p.add_argument("--baud", type=int_range(300, 100_000_000), default=DEFAULT_BAUD,
                   help=f"UART baud rate (default {DEFAULT_BAUD}; clock / baud must be an "
                        f"integer within 2 %%)")
    p.add_argument("--router", choices=["router1", "router2"], default=None,
                   help="nextpnr router (router2 is much faster on large designs)")
    p.add_argument("--seed", type=int_range(0, (1 << 31) - 1), default=None,
                   help="nextpnr placement seed")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_fpga_build)


def cmd_fpga_build(args: argparse.Namespace) -> int:
    from starc_fpga.build import ToolchainError, build

    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr)

    try:
        res = build(args.size, pnr=not args.no_pnr, clock_hz=args.clock_mhz * 1e6,
                    baud=args.baud, router=args.router, seed=args.seed, log=log)
    except (ToolchainError, ValueError) as e:
        print(f"starc: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    else:
        print(_text(res))
    if res.timing_met is False:
        print(f"starc: error: timing not met: Fmax {res.fmax:.2f} MHz is below the "
              f"{res.clock_mhz:g} MHz clock; rebuild with a lower --clock-mhz", file=sys.stderr)
        return 1
    return 0


def _text(res: Any) -> str:
    lines = [f"ULX3S LFE5U-85F, size {res.size}: {res.description}",
             f"clock {res.clock_mhz:g} MHz, UART {res.baud} baud (divisor {res.divisor}), "
             f"build folder {res.build_dir}"]
    stage = "after place and route" if res.pnr else "after synthesis (Yosys cells)"
    lines.append(f"resources {stage}:")
    for k in ("LUT", "FF", "DSP", "BRAM"):
        u = res.resources.get(k, {})
        used, avail = u.get("used"), u.get("available")
        pct = f" ({100 * used / avail:.1f} %)" if avail else ""
        lines.append(f"  {k:5s} {used}" + (f" / {avail}{pct}" if avail else ""))
    if res.fmax_mhz:
        for clk, f in res.fmax_mhz.items():
            c = res.constraint_mhz.get(clk)
            ok = "met" if c is None or f >= c else "NOT met"
            lines.append(f"  Fmax  {f:.1f} MHz on {clk} (constraint {c:.1f} MHz, {ok})")
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
    lines.append(f"time: {secs}")
    if res.bitstream:
        lines.append(f"bitstream: {res.bitstream} (flash: openFPGALoader -b ulx3s "
                     f"{res.bitstream})")
    return "\n".join(lines)

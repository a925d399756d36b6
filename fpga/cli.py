"""``starc fpga build``: build the ULX3S board top with the open toolchain, print its resources.

:func:`register` adds the ``fpga`` command group to the ``starc`` argparse entry point (the same
contract as ``starc.model.cli.register``). The handler returns an exit code: 0 on success, 1 when
the design does not meet the requested clock, 2 on a bad argument or a missing or failing tool
(one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["cmd_fpga_build", "cmd_fpga_run", "register"]



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fpga build`` to the ``starc`` sub-command parser."""
    from starc.argtypes import finite_float, int_range, subcommand_group
    from starc.planner.registry import POLICIES
    from starc_fpga.top import BOARD_SIZES, DEFAULT_BAUD, DEFAULT_CLOCK_HZ, MEASURED_CLOCK_HZ

    grp = subcommand_group(subparsers, "fpga",
                           "FPGA prototype of one channel on a ULX3S (docs/fpga.md)")
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
    measured = ", ".join(f"{k} {v / 1e6:g}" for k, v in MEASURED_CLOCK_HZ.items())
    p.add_argument("--clock-mhz", type=finite_float(1.0, 1000.0), default=None,
                   help=f"system clock made by the PLL from the 25 MHz oscillator (default: the "
                        f"clock the size's measured build met, {measured}; "
                        f"{DEFAULT_CLOCK_HZ / 1e6:g} for the others; 25 uses the oscillator "
                        f"directly)")
    p.add_argument("--baud", type=int_range(300, 100_000_000), default=DEFAULT_BAUD,
                   help=f"UART baud rate (default {DEFAULT_BAUD}; clock / baud must be an "
                        f"integer within 2 %%)")
    p.add_argument("--router", choices=["router1", "router2"], default=None,
                   help="nextpnr router (router2 is much faster on large designs)")
    p.add_argument("--seed", type=int_range(0, (1 << 31) - 1), default=None,
                   help="nextpnr placement seed")
    p.add_argument("--resynthesize", action="store_true",
                   help="run Yosys even when the build folder holds a finished synthesis of the "
                        "same design, script, options and Yosys version (by default that one is "
                        "reused)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_fpga_build)

    attention = [k for k, v in BOARD_SIZES.items() if v.head_dim]
    p = grp.add_parser(
        "run", help="run a decode step on a board (or a co-simulated one) and compare it with "
                    "the golden model",
        description="Connect to a ULX3S built by `starc fpga build` over its serial port, load "
                    "the memory image of one planned decode step through WR commands, run the "
                    "step with the issue trace on, read the attention output, and compare every "
                    "issue cycle, the cycle count and the output bits with the golden model. "
                    "--port takes any pyserial URL: /dev/ttyUSB0 for the board, "
                    "socket://HOST:PORT for a co-simulated one. Exit 0: equal; 1: the board "
                    "differs; 2: bad argument or no link.")
    p.add_argument("--port", required=True,
                   help="serial port or pyserial URL (e.g. /dev/ttyUSB0, socket://127.0.0.1:7000)")
    p.add_argument("--size", choices=attention, default=attention[0],
                   help=f"the size the board was built for (default {attention[0]})")
    p.add_argument("--baud", type=int_range(1, 12_000_000), default=DEFAULT_BAUD,
                   help=f"UART baud rate of the build (default {DEFAULT_BAUD})")
    p.add_argument("--kv", default=None,
                   help="KV cache file (starc-kv/1, e.g. the demo's SmolLM2 cache); default: a "
                        "seeded synthetic cache with the size's head dimension")
    p.add_argument("--tokens", type=int_range(2, 1 << 16), default=64,
                   help="context length of the synthetic cache (default 64)")
    p.add_argument("--policy", default="dense", choices=POLICIES,
                   help="selection policy of the step (default dense)")
    p.add_argument("--budget", type=int_range(1), default=64,
                   help="token budget of a sparse policy (default 64)")
    p.add_argument("--layer", type=int_range(0), default=None, help="layer (default: the last)")
    p.add_argument("--kv-head", type=int_range(0), default=0, help="KV head (default 0)")
    p.add_argument("--step", type=int_range(0), default=0, help="decode step of the cache")
    p.add_argument("--seed", type=int_range(0, (1 << 32) - 1), default=0,
                   help="seed of the synthetic cache")
    p.add_argument("--timeout", type=finite_float(0.1, 3600.0), default=10.0,
                   help="seconds the board may stay silent (default 10)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_fpga_run)


def cmd_fpga_build(args: argparse.Namespace) -> int:
    from starc_fpga.build import ToolchainError, build

    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr)

    try:
        clock_hz = None if args.clock_mhz is None else args.clock_mhz * 1e6
        res = build(args.size, pnr=not args.no_pnr, clock_hz=clock_hz,
                    baud=args.baud, router=args.router, seed=args.seed, log=log,
                    reuse=not args.resynthesize)
    except (ToolchainError, ValueError) as e:
        print(f"starc: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        from starc.cli import print_json
        print_json(res.as_dict())
    else:
        print(_text(res))
    if res.timing_met is False:
        print(f"starc: error: timing not met: Fmax {res.fmax:.2f} MHz is below the "
              f"{res.clock_mhz:g} MHz clock; rebuild with a lower --clock-mhz", file=sys.stderr)
        return 1
    return 0


def cmd_fpga_run(args: argparse.Namespace) -> int:
    from starc.kv import KVError, load_kv, synthetic_kv
    from starc_fpga.driver import HostDriver, LinkError, MismatchError, SerialTransport, check_step
    from starc_fpga.top import CYCLE_WIDTH, board_config, board_size
    from starc_sim.cosim import ModelSpec, planner_scenario

    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    size = board_size(args.size)
    cfg = board_config(size)
    spec = ModelSpec(overrides=size.overrides(), head_dim=size.head_dim, rows=size.rows,
                     max_entries=size.max_entries, max_beats=size.max_beats,
                     cycle_width=CYCLE_WIDTH)
    try:
        if args.kv:
            cache = load_kv(args.kv)
        else:
            cache = synthetic_kv(n_layers=3, n_q_heads=3, n_kv_heads=1, head_dim=size.head_dim,
                                 prefill_len=args.tokens - 1, decode_steps=1, seed=args.seed)
        scn = planner_scenario(cache, spec, policy=args.policy, budget=args.budget,
                               layer=args.layer, kv_head=args.kv_head, step=args.step)
    except (ValueError, KVError, OSError, KeyError) as e:
        print(f"starc: error: {e}", file=sys.stderr)
        return 2
    transport = None
    try:
        transport = SerialTransport(args.port, baud=args.baud, timeout_s=args.timeout)
        # progress after the port opened: a port that cannot be opened is one error line
        log(f"{scn.label}: {len(scn.prog)} commands, {len(scn.image)} bank rows of the image")
        drv = HostDriver(transport, cfg=cfg)
        info = drv.connect()
        log(f"board on {args.port}: size {size.name}, d {info.head_dim}, divisor {info.divisor}")
        summary = check_step(drv, cfg, image=scn.image, prog=scn.prog, wdata=scn.wdata,
                             head_dim=size.head_dim, log=log)
    except MismatchError as e:
        print(f"starc: the board DIFFERS from the golden model: {e}", file=sys.stderr)
        return 1
    except LinkError as e:
        print(f"starc: error: {e}", file=sys.stderr)
        return 2
    finally:
        if transport is not None:
            transport.close()
    summary.update(size=size.name, port=args.port, scenario=scn.info,
                   emulated_cycles_per_second=summary["step_cycles"] / summary["step_seconds"])
    if args.json:
        from starc.cli import print_json
        print_json(summary)
    else:
        print(f"{scn.label} on the board: {summary['step_issues']} issues and "
              f"{summary['step_cycles']} cycles equal to the golden schedule; output "
              f"bit-exact ({summary['head_dim']} FP16 values); step {summary['step_seconds']:.2f} "
              f"s over the link")
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
    if res.fmax_mhz:
        lines.append(f"fold {res.fold} FPGA clocks per emulated DRAM cycle: "
                     f"{res.emulated_cycles_per_second / 1e6:.2f} M emulated cycles/s at Fmax")
    step = res.decode_step
    if step.get("board_seconds_at_fmax") is not None:
        lines.append(f"decode step ({step['step_cycles']} cycles, {step.get('stall_cycles', 0)} "
                     f"waiting for the datapath): {1e6 * step['board_seconds_at_fmax']:.1f} us "
                     f"on the board at Fmax (plus the UART), {step['cosim_seconds']:.1f} s in "
                     f"co-simulation")
    syn = res.synthesis
    if syn.get("reused"):
        lines.append(f"synthesis reused: the build folder's synthesis of {syn['finished']} had the "
                     f"same inputs (Yosys took {syn['seconds']:.1f} s then; --resynthesize runs "
                     f"it again)")
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
    lines.append(f"time: {secs} (load {res.load})")
    if res.bitstream:
        lines.append(f"bitstream: {res.bitstream} (flash: openFPGALoader -b ulx3s "
                     f"{res.bitstream})")
    return "\n".join(lines)

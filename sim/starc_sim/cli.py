"""``starc rtl verilog`` and ``starc rtl cosim``: the gateware from the command line.

``verilog`` writes the Verilog of the attention channel (or the channel without datapath) for a
preset and size; ``cosim`` runs one decode step of one query head on the Verilated attention
channel and prints its output, its cycle count and the agreement with the golden model.
Handlers return an exit code: 0 on success, 1 when the RTL disagrees with the golden model, 2 on
a bad argument (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _group(subparsers: argparse._SubParsersAction, name: str, help_text: str
           ) -> argparse._SubParsersAction:
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
    from starc.argtypes import int_range, power_of_two, probability
    from starc.cli import add_force_arg, add_preset_args
    from starc.planner.registry import POLICIES
    from starc_hw.sizes import SIZES

    grp = _group(subparsers, "rtl", "the Amaranth gateware: Verilog and co-simulation "
                                    "(docs/rtl.md)")
    p = grp.add_parser("verilog", help="write the Verilog of the attention channel",
                       description="Generate Verilog (no source locations) of the attention "
                                   "channel (controller, bank array, bank PUs, softmax, moves) "
                                   "or of the channel alone, for a preset and size.")
    add_preset_args(p)
    p.add_argument("--size", choices=list(SIZES), default="pim-small",
                   help="a size of the one size table (starc_hw.sizes, docs/fpga.md), shared "
                        "with `starc fpga build` (default pim-small: 16 banks x 16 lanes, d 64)")
    p.add_argument("--design", choices=["auto", "attention", "channel"], default="auto",
                   help="auto (default): the attention channel on a size with a head dimension, "
                        "else the channel")
    p.add_argument("--head-dim", type=int_range(1, 4096), default=None,
                   help="head dimension (default: the size's)")
    p.add_argument("--rows", type=power_of_two(1, 1 << 20), default=None,
                   help="rows per bank model, a power of two (default: the size's)")
    p.add_argument("--max-entries", type=int_range(1, 1 << 20), default=None,
                   help="softmax buffer entries (default: the size's)")
    p.add_argument("-o", "--output", default="attention.v", help="output file")
    add_force_arg(p)
    p.set_defaults(func=cmd_verilog)

    p = grp.add_parser("cosim", help="run one decode step on the RTL and compare with the "
                                     "golden model",
                       description="Compile a KV cache for the 16-bank co-simulation model (or, "
                                   "with --full, the default preset's 64-bank channel), plan "
                                   "one decode step of one query head, load the image through "
                                   "WR commands and run the step under Verilator; print the "
                                   "output, the cycle count and the agreement with the golden "
                                   "model.")
    p.add_argument("--kv", default=None,
                   help="KV cache file (safetensors/npz from `starc model extract`); default: "
                        "a seeded synthetic cache (3 layers, d 64, 500 tokens)")
    p.add_argument("--policy", default="starc-row", choices=POLICIES,
                   help="selection policy (default starc-row)")
    p.add_argument("--budget", type=int_range(1), default=256, help="token budget (default 256)")
    p.add_argument("--layer", type=int_range(0), default=None, help="layer (default: the last)")
    p.add_argument("--kv-head", type=int_range(0), default=0)
    p.add_argument("--step", type=int_range(0), default=0, help="decode step of the cache")
    p.add_argument("--idle", type=probability(), default=0.1,
                   help="probability of an idle cycle on the host streams, in [0, 1) "
                        "(default 0.1)")
    p.add_argument("--backpressure", type=probability(), default=0.1,
                   help="probability of backpressure on the issue stream, in [0, 1) "
                        "(default 0.1)")
    p.add_argument("--seed", type=int_range(0, (1 << 32) - 1), default=1,
                   help="testbench seed")
    p.add_argument("--waves", action="store_true",
                   help="dump waves (FST, in the run folder printed; a separate build)")
    p.add_argument("--full", action="store_true",
                   help="the default preset's full channel (64 banks, 16 lanes, d 128, 16 rows; "
                        "a build of about 4 minutes); the synthetic default cache gets d 128")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_cosim)


def _err(msg: str) -> int:
    print(f"starc: error: {msg}", file=sys.stderr)
    return 2


def cmd_verilog(args: argparse.Namespace) -> int:
    from starc import config as cfgmod
    from starc import outputs
    from starc_hw.sizes import make_design
    from starc_hw.sizes import size as get_size

    out_file = outputs.OutputFile(args.output, command="rtl verilog", force=args.force,
                                  inputs=[args.preset] if args.preset else [])

    from amaranth.back import verilog

    sz = get_size(args.size)
    overrides = [*(f"{k}={v}" for k, v in sz.overrides().items()), *args.overrides]
    try:
        cfg = cfgmod.load(args.preset, overrides)
        top = make_design(sz, cfg=cfg, design=args.design, head_dim=args.head_dim,
                          rows=args.rows, max_entries=args.max_entries, pu_instances=True)
    except (ValueError, cfgmod.ConfigError) as e:
        return _err(str(e))
    kind = "channel" if type(top).__name__ == "Channel" else "attention channel"
    print(f"generating Verilog of the {kind} ({args.size}: "
          f"{cfg.org.banks_per_channel} banks) ...", file=sys.stderr, flush=True)
    text = verilog.convert(top, name="top", emit_src=False)
    extra = getattr(top, "extra_verilog", None)
    if extra is not None:
        text += extra()
    out = Path(args.output)
    with out_file.build() as tmp:
        tmp.write_text(text)
    print(f"wrote {out} ({len(text) / 1e6:.1f} MB, top module `top`)")
    return 0


def cmd_cosim(args: argparse.Namespace) -> int:
    from starc.kv import KVError, load_kv

    from starc_sim.cosim import (
        COSIM_MODEL,
        FULL_MODEL,
        ModelSpec,
        planner_scenario,
        run_scenario,
        synthetic_cache,
    )
    from starc_sim.runner import RtlTestFailure

    base = FULL_MODEL if args.full else COSIM_MODEL
    try:
        cache = load_kv(args.kv) if args.kv else synthetic_cache(base)
        if cache.meta.head_dim == base.head_dim:
            spec = base
        elif args.full:
            raise ValueError(f"--full runs d {base.head_dim}; the cache has head_dim "
                             f"{cache.meta.head_dim}")
        else:
            spec = ModelSpec(head_dim=cache.meta.head_dim)
        scn = planner_scenario(cache, spec, policy=args.policy, budget=args.budget,
                               layer=args.layer, kv_head=args.kv_head, step=args.step)
    except (ValueError, KVError, OSError) as e:
        return _err(str(e))
    print(f"co-simulating {scn.label} ({len(scn.prog)} commands; building the model on first "
          f"use, minutes) ...", file=sys.stderr, flush=True)
    try:
        res = run_scenario(scn, idle=args.idle, backpressure=args.backpressure, seed=args.seed,
                           waves=args.waves)
        ok = True
        info: dict[str, Any] = res.as_dict()
    except RtlTestFailure as e:
        ok = False
        info = {"ran": True, "bit_exact": False, "cycles_equal": False, "error": str(e)}
    info["scenario"] = scn.info
    if args.json:
        print(json.dumps(info, indent=2))
    elif ok:
        out = " ".join(f"{x:04x}" for x in info["output_rtl"][:16])
        print(f"{scn.label}: {info['commands']} commands after a {info['load_commands']}-command "
              f"image load")
        print(f"output (FP16 bits, first 16 of {len(info['output_rtl'])}): {out} ...")
        print(f"outputs bit-exact with the golden model: {info['bit_exact']}")
        print(f"cycles (tCK): RTL {info['rtl_cycles']}, golden {info['golden_cycles']}, equal: "
              f"{info['cycles_equal']}; last datapath result at cycle "
              f"{info['last_result_cycle']}")
        print(f"wall time {info['seconds']:.1f} s")
    else:
        print(f"RTL DISAGREES with the golden model:\n{info['error']}", file=sys.stderr)
    return 0 if ok and info["bit_exact"] and info["cycles_equal"] else 1

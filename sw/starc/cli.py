"""`starc` command line. Every command prints a readable table, or JSON with ``--json``.

Subcommands live next to the code they drive; each module listed in ``_MODULES`` provides
``register(subparsers)``. Handlers return an exit code; user errors (bad presets, bad inputs) are
printed as one clear line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from starc import config as cfgmod

_MODULES = (
    "starc.model.cli",
    "starc.compiler.cli",
    "starc.sweep.cli",
    "starc.demo",
    "fpga.cli",
    "starc_sim.cli",
)


class UserError(Exception):
    """An error the user can act on; printed without a traceback."""


def add_preset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None,
                   help=f"preset name or .toml file (default {cfgmod.DEFAULT_PRESET}; "
                   f"`starc config list` shows the names)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SEC.KEY=V",
                   help="override one preset field, e.g. --set timing.tCCD_AB=4 (repeatable)")


def preset_from_args(args: argparse.Namespace) -> cfgmod.Config:
    return cfgmod.load(args.preset, args.overrides or None)


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def print_json(obj: Any) -> None:
    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        if hasattr(o, "item"):
            return o.item()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")
    print(json.dumps(obj, indent=2, default=default))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title)
    for c in columns:
        left = c in ("field", "policy", "name", "source", "value", "description")
        t.add_column(c, justify="left" if left else "right")
    for r in rows:
        t.add_row(*[_fmt(x) for x in r])
    Console(width=max(160, Console().width)).print(t)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x == 0 or math.isnan(x):
            return f"{x:g}"
        if abs(x) >= 1e4:
            return f"{x:.0f}"
        if abs(x) < 1e-2:
            return f"{x:.2e}"
        return f"{x:.4g}"
    return str(x)


# ---- config ------------------------------------------------------------------------------------
def _config_show(args: argparse.Namespace) -> int:
    cfg = cfgmod.load(args.target or args.preset, args.overrides or None)
    d = cfg.derived()
    if args.json:
        print_json({"name": cfg.name, "source": cfg.source, "config": cfg.as_dict(), "derived": d})
        return 0
    rows = [
        ("external bandwidth per stack", f"{d['external_bandwidth_GBps']:.1f} GB/s"),
        ("internal PIM bandwidth per stack", f"{d['internal_bandwidth_TBps']:.2f} TB/s"),
        ("all-bank row period (full row)",
         f"{d['row_period_cycles']} cycles = {d['row_period_ns']:.1f} ns"),
        ("streaming-efficiency ceiling", f"{100 * d['streaming_ceiling']:.1f} %"),
        ("refresh tax tRFC / tREFI",
         f"{100 * d['refresh_tax']:.2f} % (tRFC = {d['tRFC_cycles']} cycles)"),
        ("tokens per bank row", str(d["tokens_per_bank_row"])),
        ("banks per token (d = 128 / d = 64)",
         f"{d['banks_per_token_d128']} / {d['banks_per_token_d64']}"),
        ("banks per stack / per channel", f"{d['banks_per_stack']} / {d['banks_per_channel']}"),
        ("groups per channel", str(d["groups_per_channel"])),
        ("capacity per stack", f"{d['stack_GiB']:.0f} GiB"),
        ("clock", f"tCK = {cfg.timing.tCK_ns:.4g} ns (all cycle counts are in tCK)"),
    ]
    print_table(f"{cfg.name}: {cfg.description}", ["field", "value"], rows)
    return 0


def _config_list(args: argparse.Namespace) -> int:
    names = cfgmod.list_presets()
    if args.json:
        print_json([{"name": n, "description": cfgmod.load(n).description} for n in names])
        return 0
    print_table("presets", ["name", "description"],
                [(n, cfgmod.load(n).description) for n in names])
    return 0


# ---- timing ------------------------------------------------------------------------------------
def dense_cost_rows(cfg: cfgmod.Config, lengths: Sequence[int], head_dim: int
                    ) -> list[dict[str, Any]]:
    from starc.golden import energy, programs, timing
    out = []
    for L in lengths:
        prog = programs.dense_program(cfg, L, head_dim)
        s = timing.schedule(prog, cfg)
        e = energy.account(prog, cfg, head_dim)
        kv_bytes = 2 * L * head_dim * 2
        # floor: the bytes needed at the channel's internal PIM bandwidth
        ch_bw = cfg.pus_per_channel * cfg.org.column_bytes / cfg.timing.tCCD_AB  # B per cycle
        floor = kv_bytes / ch_bw
        out.append({"L": L, "commands": len(s.program), "cycles": s.total_cycles,
                    "ns": s.total_ns, "energy_nJ": e.total_pj / 1e3,
                    "attacc_energy_nJ": e.attacc_pj / 1e3, "floor_cycles": floor,
                    "ratio_to_floor": s.total_cycles / floor, "refreshes": s.refreshes,
                    "breakdown": s.breakdown})
    return out


def _timing_dense(args: argparse.Namespace) -> int:
    cfg = preset_from_args(args)
    rows = dense_cost_rows(cfg, args.lengths, args.head_dim)
    if args.json:
        print_json({"preset": cfg.name, "head_dim": args.head_dim, "rows": rows})
        return 0
    print_table(f"dense attention, one KV head on one channel, {cfg.name}, d = {args.head_dim}",
                ["L", "commands", "cycles", "ns", "energy nJ", "AttAcc-style nJ",
                 "ratio to floor", "refreshes"],
                [(r["L"], r["commands"], r["cycles"], r["ns"], r["energy_nJ"],
                  r["attacc_energy_nJ"], r["ratio_to_floor"], r["refreshes"]) for r in rows])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="starc",
        description="STARC clustered sparse attention on HBM-PIM: presets, compiler, planner, "
                    "golden model, RTL co-simulation and FPGA builds.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pc = sub.add_parser("config", help="hardware presets: list them, show derived figures")
    csub = pc.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    ps = csub.add_parser("show", help="derived figures of a preset (bandwidths, row period, ...)")
    ps.add_argument("target", nargs="?", default=None, help="preset name or .toml file")
    add_preset_args(ps)
    add_json_arg(ps)
    ps.set_defaults(func=_config_show)
    pl = csub.add_parser("list", help="the shipped presets")
    add_json_arg(pl)
    pl.set_defaults(func=_config_list)

    pt = sub.add_parser("timing", help="golden timing/energy model of reference programs")
    tsub = pt.add_subparsers(dest="timing_command", required=True, metavar="SUBCOMMAND")
    pd = tsub.add_parser("dense", help="dense attention cost table (one KV head, one channel)")
    add_preset_args(pd)
    pd.add_argument("--lengths", type=int, nargs="+",
                    default=[1024, 2048, 4096, 8192, 16384, 32768], help="context lengths")
    pd.add_argument("--head-dim", type=int, default=128, help="head dimension (default 128)")
    add_json_arg(pd)
    pd.set_defaults(func=_timing_dense)

    for mod in _MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        m.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (cfgmod.ConfigError, UserError) as e:
        print(f"starc: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        # input validation errors from the library are ValueError subclasses with clear messages
        print(f"starc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

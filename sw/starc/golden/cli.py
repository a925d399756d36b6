"""``starc timing dense``: the golden timing and energy model of dense attention programs.

- ``starc timing dense [--lengths L ...] [--head-dim D] [--heads-per-channel H]``: one row per
  context length: commands, cycles (tCK of the preset), energy, and the program against the
  bandwidth floor and the MAC-stream bound (:func:`dense_cost_rows`);
- ``--model attacc``: AttAcc's simulator reproduced cycle for cycle (docs/attacc.md).

Start-up (bench/bench_startup.py): the parser imports nothing here but the argument types; the
handler loads the golden model's program generator, schedule loop and energy count, which run on
command tuples without NumPy, and only for ``--model attacc`` the compatibility model.
Tables print through :func:`starc.planner.table.print_rows`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starc.config import Config

__all__ = ["dense_cost_rows", "register"]


def dense_cost_rows(cfg: Config, lengths: Sequence[int], head_dim: int,
                    heads: int = 1) -> list[dict[str, Any]]:
    """One row per context length: the dense program's cost (names of starc.glossary); with
    ``heads`` > 1, that many KV heads of L tokens each on the channel in the overlapped order
    (docs/multihead.md)."""
    from starc.cli import UserError
    from starc.golden import energy, programs, timing
    from starc.isa import COMMAND_FIELDS, Op
    mask_bits = dict(COMMAND_FIELDS)["arg"]
    tpgr = cfg.tokens_per_group_row(head_dim)      # raises for a head size the preset cannot hold
    if tpgr > mask_bits:
        raise UserError(f"--head-dim {head_dim} puts {tpgr} tokens in a group row of preset "
                        f"{cfg.name!r}, but a score move's valid mask (the {mask_bits}-bit arg "
                        f"field) covers {mask_bits}; use a head size of at least "
                        f"{head_dim * tpgr // mask_bits}")
    out = []
    actab = int(Op.ACTAB)
    for L in lengths:
        # command tuples, no program array: the command starts without NumPy (bench_startup)
        cmds = programs.dense_commands(cfg, L, head_dim, heads=heads)
        s = timing.totals(cmds, cfg)
        e = energy.account(cmds, cfg, head_dim)
        floor = cfg.floor_cycles(heads * L, head_dim)
        stream = cfg.mac_stream_cycles(sum(1 for c in cmds if c[0] == actab))
        out.append({"L": L, "commands": s.commands, "cycles": s.total_cycles,
                    "ns": s.total_ns, "energy_nJ": e.total_pj / 1e3,
                    "attacc_energy_nJ": e.attacc_pj / 1e3, "floor_cycles": floor,
                    "ratio_to_floor": s.total_cycles / floor, "mac_stream_cycles": stream,
                    "ratio_to_mac_stream": s.total_cycles / stream, "refreshes": s.refreshes,
                    **{f"t_{k}": v for k, v in s.breakdown.items()},
                    **{f"e_{k}": v / 1e3 for k, v in e.breakdown.items()}})
    return out


_DENSE_COLUMNS = ("L", "commands", "cycles", "ns", "energy_nJ", "attacc_energy_nJ",
                  "ratio_to_floor", "ratio_to_mac_stream", "refreshes")
_ATTACC_COLUMNS = ("L", "cycles", "ns", "command_counts.ACTAB", "command_counts.MACAB",
                   "command_counts.WRGB", "command_counts.MVSB", "command_counts.MVGB",
                   "refreshes", "stack_energy_nJ.total")


def _timing_dense(args: argparse.Namespace) -> int:
    from starc.cli import UserError, preset_from_args, print_json
    from starc.isa import MAX_HEADS
    from starc.planner.table import cells, print_rows
    cfg = preset_from_args(args)
    if args.model == "attacc":
        return _timing_dense_attacc(args, cfg)
    H = args.heads_per_channel
    if H > MAX_HEADS:
        raise UserError(f"--heads-per-channel {H}: a channel holds 1 to {MAX_HEADS} heads "
                        f"(the head index in the command's row field, docs/multihead.md)")
    rows_per_head = 2 * max(-(-L // (cfg.org.groups_per_channel
                                     * cfg.tokens_per_group_row(args.head_dim)))
                            for L in args.lengths)
    if H * rows_per_head > cfg.org.rows_per_bank:
        raise UserError(f"--heads-per-channel {H} at L = {max(args.lengths)}: the heads' keys "
                        f"and values need {H * rows_per_head} rows per bank, {cfg.name} has "
                        f"{cfg.org.rows_per_bank}; use fewer heads or shorter --lengths")
    rows = dense_cost_rows(cfg, args.lengths, args.head_dim, H)
    if args.json:
        print_json({"model": "ours", "preset": cfg.name, "head_dim": args.head_dim,
                    "heads_per_channel": H, "rows": rows})
        return 0
    what = ("one KV head on one channel" if H == 1 else
            f"{H} KV heads on one channel, overlapped (docs/multihead.md)")
    print_rows(f"dense attention, {what}, {cfg.name}, d = {args.head_dim}; cycles in tCK",
               _DENSE_COLUMNS, [cells(r, _DENSE_COLUMNS) for r in rows])
    return 0


def _timing_dense_attacc(args: argparse.Namespace, cfg: Config) -> int:
    from starc.cli import print_json
    from starc.golden import attacc
    from starc.planner.table import cells, print_rows
    from starc.report import flatten
    works = [attacc.Workload(L, args.head_dim, args.heads_per_channel) for L in args.lengths]
    attacc.check_preset(cfg)
    for w in works:
        attacc.trace(w)          # every option checked before the first (slower) run
    from rich.console import Console
    from rich.progress import track
    err = Console(stderr=True)
    todo = track(works, description="AttAcc compatibility model", transient=True,
                 console=err) if err.is_terminal else works
    rows = []
    for w in todo:
        d = attacc.simulate(cfg, w).as_dict()
        # the registry's names (starc.glossary): whole-stack figures say so
        d["command_counts"] = d.pop("commands")
        d["stack_energy_nJ"] = d.pop("energy_nJ")
        rows.append(d)
    if args.json:
        print_json({"model": "attacc", "preset": cfg.name, "head_dim": args.head_dim,
                    "heads_per_channel": args.heads_per_channel, "rows": rows})
        return 0
    print_rows(f"dense attention on AttAcc's simulator (compatibility model), {cfg.name}, "
               f"d = {args.head_dim}, {args.heads_per_channel} head(s) per channel x 16 "
               f"channels; whole stack; cycles end at the last issue",
               _ATTACC_COLUMNS, [cells(flatten(r), _ATTACC_COLUMNS) for r in rows])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from starc import argtypes
    from starc.cli import COMMANDS, add_json_arg, add_preset_args
    pt = sub.add_parser("timing", help=COMMANDS["timing"][1], description=COMMANDS["timing"][1])
    tsub = pt.add_subparsers(dest="timing_command", required=True, metavar="SUBCOMMAND")
    pd = tsub.add_parser("dense", help="dense attention cost table (KV heads on one channel)")
    add_preset_args(pd)
    pd.add_argument("--lengths", type=argtypes.int_range(1), nargs="+",
                    default=[1024, 2048, 4096, 8192, 16384, 32768], help="context lengths")
    pd.add_argument("--head-dim", type=argtypes.int_range(1, 4096), default=128,
                    help="head dimension (default 128)")
    pd.add_argument("--model", choices=("ours", "attacc"), default="ours",
                    help="ours: the RTL-exact golden model (default); attacc: AttAcc's "
                    "simulator reproduced cycle for cycle (docs/attacc.md)")
    pd.add_argument("--heads-per-channel", type=argtypes.int_range(1), default=1,
                    help="KV heads per channel (default 1); ours runs them in the "
                    "overlapped order (docs/multihead.md), attacc in AttAcc's")
    add_json_arg(pd)
    pd.set_defaults(func=_timing_dense)

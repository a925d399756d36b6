"""``starc config``: the hardware presets.

- ``starc config list``: the shipped presets;
- ``starc config show [PRESET] [--set SEC.KEY=V ...] [--raw]``: a preset's derived figures
  (bandwidths, row period, refresh tax, ...), or with ``--raw`` every field ``--set`` accepts with
  its value, origin and citation.

Start-up (bench/bench_startup.py): no NumPy on these paths; the glossary and the table printer
load in the handler.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _config_show(args: argparse.Namespace) -> int:
    from starc import config as cfgmod
    from starc.cli import print_json
    from starc.glossary import get
    from starc.planner.table import print_rows
    target = args.target or args.preset
    cfg = cfgmod.load(target, args.overrides or None)
    d = cfg.derived()
    if args.raw:
        fields = cfgmod.settable_fields(target, args.overrides or None)
        if args.json:
            print_json({"name": cfg.name, "source": cfg.source, "fields": fields})
            return 0
        print_rows(f"{cfg.name}: every field --set accepts (section.field=value); origin: where "
                   f"the value comes from; source: the preset file's citation",
                   ("key", "value", "origin", "source"),
                   [[f["key"], str(f["value"]), f["origin"], f["source"]] for f in fields],
                   glossary=False, left=lambda k: k != "value", wrap=("source",))
        return 0
    if args.json:
        print_json({"name": cfg.name, "source": cfg.source, "config": cfg.as_toml_dict(),
                    "derived": d})
        return 0
    shown = [
        ("external_bandwidth_GBps", f"{d['external_bandwidth_GBps']:.1f} GB/s"),
        ("internal_bandwidth_TBps", f"{d['internal_bandwidth_TBps']:.2f} TB/s"),
        ("row_period_cycles", f"{d['row_period_cycles']} cycles = {d['row_period_ns']:.1f} ns"),
        ("streaming_ceiling", f"{100 * d['streaming_ceiling']:.1f} %"),
        ("refresh_tax", f"{100 * d['refresh_tax']:.2f} % (tRFC_cycles = {d['tRFC_cycles']})"),
        ("tokens_per_bank_row", str(d["tokens_per_bank_row"])),
        ("banks_per_token_d128", str(d["banks_per_token_d128"])),
        ("banks_per_token_d64", str(d["banks_per_token_d64"])),
        ("banks_per_stack", str(d["banks_per_stack"])),
        ("banks_per_channel", str(d["banks_per_channel"])),
        ("groups_per_channel", str(d["groups_per_channel"])),
        ("stack_GiB", f"{d['stack_GiB']:.0f} GiB"),
    ]
    print_rows(f"{cfg.name}: {cfg.description}; tCK = {cfg.timing.tCK_ns:.4g} ns (every cycle "
               f"count is in tCK); `starc config show --raw` lists the preset's fields",
               ("name", "value", "definition"),
               [[k, v, get(k).short] for k, v in shown], glossary=False,
               left=lambda k: k != "value")
    return 0


def _config_list(args: argparse.Namespace) -> int:
    from starc import config as cfgmod
    from starc.cli import print_json, print_table
    names = cfgmod.list_presets()
    if args.json:
        print_json([{"name": n, "description": cfgmod.load(n).description} for n in names])
        return 0
    print_table("presets", ["name", "description"],
                [(n, cfgmod.load(n).description) for n in names])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from starc.cli import COMMANDS, add_json_arg, add_preset_args
    pc = sub.add_parser("config", help=COMMANDS["config"][1], description=COMMANDS["config"][1])
    csub = pc.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    ps = csub.add_parser("show", help="derived figures of a preset (bandwidths, row period, ...)")
    ps.add_argument("target", nargs="?", default=None, help="preset name or .toml file")
    ps.add_argument("--raw", action="store_true",
                    help="every field --set accepts, with its value, where it comes from "
                         "(the preset, --set, or the default) and the preset's citation")
    add_preset_args(ps)
    add_json_arg(ps)
    ps.set_defaults(func=_config_show)
    pl = csub.add_parser("list", help="the shipped presets")
    add_json_arg(pl)
    pl.set_defaults(func=_config_list)

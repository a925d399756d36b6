"""`starc` command line. Every command prints a readable table, or JSON with ``--json``.

Sub-commands live next to the code they drive; each module named in :data:`COMMANDS` provides
``register(subparsers)``. Only the module of the command being run is imported, so ``starc config
show`` never loads Amaranth, cocotb or the FPGA flow.

:func:`main` is the one error boundary (docs/reliability.md): exit 0 success, 1 a negative result
(the RTL disagrees, timing not met), 2 bad input (one ``starc: error: ...`` line), 3 a bug (one
line saying how to report it), 130 / 143 interrupted / terminated. ``--debug`` (anywhere on the
command line) or ``STARC_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from starc import argtypes, outputs
from starc import config as cfgmod

#: command -> (module providing ``register``, or None for the commands defined here; help)
COMMANDS: dict[str, tuple[str | None, str]] = {
    "config": (None, "hardware presets: list them, show derived figures"),
    "timing": (None, "golden timing/energy model of reference programs"),
    "kv": ("starc.model.cli", "KV-cache files (schema starc-kv/1)"),
    "model": ("starc.model.cli", "the SmolLM2 reference model"),
    "compile": ("starc.compiler.cli", "cluster and place a KV cache into a PIM memory image"),
    "eval": ("starc.planner.cli",
             "compare selection policies: quality, rows, occupancy, cycles, energy"),
    "sweep": ("starc.sweep.cli",
              "design-space sweep (cached by content hash; local processes or Dask)"),
    "eval-quality": ("starc.sweep.quality",
                     "end-task quality of policies on SmolLM2: pass key, RULER-style tasks, "
                     "perplexity, agreement, with confidence intervals"),
    "system": ("starc.system.cli", "a whole model's decode on HBM-PIM stacks: attention per "
               "generated token next to a GPU-only baseline"),
    "demo": ("starc.demo", "the main job end to end on an embedded default"),
    "rtl": ("starc_sim.cli", "the Amaranth gateware: Verilog and co-simulation (docs/rtl.md)"),
    "fpga": ("starc_fpga.cli", "FPGA prototype of one channel on a ULX3S (docs/fpga.md)"),
}

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3


class UserError(ValueError):
    """An error the user can act on; printed as one line without a traceback."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``starc: error: MESSAGE (see `PROG --help`)``."""

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # argparse drops a "--" given as an option's value (`--depth=--`) and then stores an
        # empty list instead of refusing it: refuse it
        if action.option_strings and "--" in arg_strings:
            raise argparse.ArgumentError(action, "expected a value, not '--'")
        return super()._get_values(action, arg_strings)

    def error(self, message: str) -> NoReturn:
        msg = re.sub(r"\s*\n\s*", " ", message).strip()
        self.exit(EXIT_USAGE, f"starc: error: {msg} (see `{self.prog} --help`)\n")


def add_force_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="replace an existing output written by another starc command, or "
                        "changed since (never a folder starc did not write)")


def add_preset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None,
                   help=f"preset name or .toml file (default {cfgmod.DEFAULT_PRESET}; "
                   f"`starc config list` shows the names)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SEC.KEY=V",
                   help="override one preset field, e.g. --set timing.tCCD_AB=4 (repeatable)")


def preset_from_args(args: argparse.Namespace) -> cfgmod.Config:
    return cfgmod.load(args.preset, args.overrides or None)


def preset_inputs(args: argparse.Namespace) -> list[str]:
    """The preset file among a command's inputs (an output must not overwrite it)."""
    pre = getattr(args, "preset", None)
    return [pre] if pre and (pre.endswith(".toml") or os.path.exists(pre)) else []


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def print_json(obj: Any) -> None:
    """Print ``obj`` as strict JSON (no NaN / Infinity; docs/reliability.md)."""
    print(outputs.strict_json(obj, indent=2))


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
    names = cfgmod.list_presets()
    if args.json:
        print_json([{"name": n, "description": cfgmod.load(n).description} for n in names])
        return 0
    print_table("presets", ["name", "description"],
                [(n, cfgmod.load(n).description) for n in names])
    return 0


# ---- timing ------------------------------------------------------------------------------------
def dense_cost_rows(cfg: cfgmod.Config, lengths: Sequence[int], head_dim: int,
                    heads: int = 1) -> list[dict[str, Any]]:
    """One row per context length: the dense program's cost (names of starc.glossary); with
    ``heads`` > 1, that many KV heads of L tokens each on the channel in the overlapped order
    (docs/multihead.md)."""
    from starc.golden import energy, programs, timing
    from starc.golden.attacc import mac_stream_bound
    from starc.isa import COMMAND_FIELDS, Op
    from starc.metrics import floor_cycles
    mask_bits = dict(COMMAND_FIELDS)["arg"]
    tpgr = cfg.tokens_per_group_row(head_dim)      # raises for a head size the preset cannot hold
    if tpgr > mask_bits:
        raise UserError(f"--head-dim {head_dim} puts {tpgr} tokens in a group row of preset "
                        f"{cfg.name!r}, but a score move's valid mask (the {mask_bits}-bit arg "
                        f"field) covers {mask_bits}; use a head size of at least "
                        f"{head_dim * tpgr // mask_bits}")
    out = []
    for L in lengths:
        prog = programs.dense_program(cfg, L, head_dim, heads=heads)
        s = timing.schedule(prog, cfg)
        e = energy.account(prog, cfg, head_dim)
        floor = floor_cycles(cfg, heads * L, head_dim)
        stream = mac_stream_bound(cfg, int((prog["op"] == int(Op.ACTAB)).sum()))
        out.append({"L": L, "commands": len(s.program), "cycles": s.total_cycles,
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


def _timing_dense_attacc(args: argparse.Namespace, cfg: cfgmod.Config) -> int:
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


def _add_builtin(sub: argparse._SubParsersAction, name: str) -> None:
    if name == "config":
        pc = sub.add_parser("config", help=COMMANDS["config"][1],
                            description=COMMANDS["config"][1])
        csub = pc.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
        ps = csub.add_parser("show",
                             help="derived figures of a preset (bandwidths, row period, ...)")
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
    elif name == "timing":
        pt = sub.add_parser("timing", help=COMMANDS["timing"][1],
                            description=COMMANDS["timing"][1])
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


def _command_word(argv: Sequence[str]) -> str | None:
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a
    return None


def _register(sub: argparse._SubParsersAction, module: str, command: str) -> None:
    try:
        m = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            raise UserError(f"`starc {command}` is not available: the {e.name!r} package is not "
                            f"installed (pip install -e . from the starc-pim checkout)") from None
        raise
    m.register(sub)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``starc`` parser. With ``argv``, only the module of its command is imported (the
    others get a placeholder that carries their help line); without, every command is loaded."""
    p = Parser(
        prog="starc",
        description="STARC clustered sparse attention on HBM-PIM: presets, compiler, planner, "
                    "golden model, RTL co-simulation and FPGA builds. Exit status: 0 success, "
                    "1 a negative result, 2 bad input, 3 a bug (docs/reliability.md).")
    p.add_argument("--debug", action="store_true",
                   help="show Python tracebacks with error messages (also STARC_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = set(COMMANDS) if argv is None else {_command_word(argv)}
    done: set[str] = set()
    for name, (module, _help) in COMMANDS.items():
        if name not in wanted or name in sub.choices:
            continue
        if module is None:
            _add_builtin(sub, name)
        elif module not in done:
            done.add(module)
            _register(sub, module, name)
    for name, (_module, help_text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_text, add_help=False)
    order = list(COMMANDS)
    sub._choices_actions.sort(key=lambda a: order.index(a.dest) if a.dest in order else 99)
    return p


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


def describe_error(e: BaseException) -> str:
    """The one-line message of an expected error."""
    if isinstance(e, OSError):
        what = e.strerror or str(e)
        if e.filename is not None and e.filename2 is not None:
            return f"{e.filename} -> {e.filename2}: {what}"
        if e.filename is not None:
            return f"{e.filename}: {what}"
        return _one_line(str(e)) or type(e).__name__
    if isinstance(e, UnicodeError):
        return _one_line(f"text that is not valid UTF-8 (or not encodable): {e}")
    if isinstance(e, MemoryError):
        return "out of memory: the input or an option asks for more memory than this machine " \
               "has; reduce it"
    return _one_line(str(e)) or type(e).__name__


def _expected() -> tuple[type[BaseException], ...]:
    # OverflowError is not here: inputs are range-checked first, so an overflow is a bug
    return (UserError, ValueError, OSError, MemoryError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``starc`` (see the module docstring for the exit codes)."""
    import traceback

    args_in = list(sys.argv[1:] if argv is None else argv)
    cut = args_in.index("--") if "--" in args_in else len(args_in)
    debug = "--debug" in args_in[:cut] or os.environ.get("STARC_DEBUG", "") not in ("", "0")
    args_in = [a for i, a in enumerate(args_in) if a != "--debug" or i >= cut]
    outputs.set_argv(args_in)
    with outputs.signals_handled():
        try:
            parser = build_parser(args_in)
            args = parser.parse_args(args_in)
            return int(args.func(args) or 0)
        except SystemExit as e:          # argparse: --help (0) or a usage error (2, one line)
            return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
        except KeyboardInterrupt:
            print("starc: interrupted", file=sys.stderr)
            return 130
        except outputs.Terminated as t:
            print("starc: terminated", file=sys.stderr)
            return 128 + t.signum
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141
        except _expected() as e:
            if debug:
                traceback.print_exc()
            print(f"starc: error: {describe_error(e)}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as e:
            if debug:
                traceback.print_exc()
            print(f"starc: internal error (a bug): {type(e).__name__}: {_one_line(str(e))}; "
                  f"please report it with the command line and the output of the same command "
                  f"with --debug", file=sys.stderr)
            return EXIT_BUG


if __name__ == "__main__":
    # `python -m starc.cli`: run the imported module, not this __main__ copy, so the error
    # classes that sub-command modules import from `starc.cli` are the ones `main` catches
    from starc.cli import main as _main
    sys.exit(_main())

"""`starc` command line. Every command prints a readable table, or JSON with ``--json``.

Sub-commands live next to the code they drive; each module named in :data:`COMMANDS` provides
``register(subparsers)`` (``starc config``: :mod:`starc.config_cli`, ``starc timing``:
:mod:`starc.golden.cli`). Only the module of the command being run is imported, and it imports
its implementation in the handler, so ``starc config show`` loads neither NumPy nor the golden
model, and no command loads Amaranth, cocotb or the FPGA flow unless it drives them
(bench/bench_startup.py measures it, tests/sw/test_startup.py keeps it).

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
from typing import TYPE_CHECKING, Any, NoReturn

from starc import outputs

if TYPE_CHECKING:
    from starc.config import Config

#: command -> (module providing ``register``, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("starc.config_cli", "hardware presets: list them, show derived figures"),
    "timing": ("starc.golden.cli", "golden timing/energy model of reference programs"),
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
    from starc.config import DEFAULT_PRESET
    p.add_argument("--preset", default=None,
                   help=f"preset name or .toml file (default {DEFAULT_PRESET}; "
                   f"`starc config list` shows the names)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SEC.KEY=V",
                   help="override one preset field, e.g. --set timing.tCCD_AB=4 (repeatable)")


def preset_from_args(args: argparse.Namespace) -> Config:
    from starc.config import load
    return load(args.preset, args.overrides or None)


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
        if module not in done:
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
    args_in = list(sys.argv[1:] if argv is None else argv)
    cut = args_in.index("--") if "--" in args_in else len(args_in)
    debug = "--debug" in args_in[:cut] or os.environ.get("STARC_DEBUG", "") not in ("", "0")
    args_in = [a for i, a in enumerate(args_in) if a != "--debug" or i >= cut]
    outputs.set_argv(args_in)
    with outputs.signals_handled():
        try:
            outputs.plot_formats()   # a bad STARC_PLOT_FORMATS fails before any work
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
                import traceback
                traceback.print_exc()
            print(f"starc: error: {describe_error(e)}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as e:
            if debug:
                import traceback
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

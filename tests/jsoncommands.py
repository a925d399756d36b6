"""Every leaf sub-command of `starc` with a small argument list that runs it to completion, for
the test that each one prints strict JSON alone on stdout with ``--json``
(tests/sw/test_json_outputs.py; the rtl and fpga tiers run theirs in tests/rtl and tests/fpga).
A new sub-command must be added here (the test compares this table with the parser)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

#: command words -> (tier, arguments); tiers as in tests/docsnippets.py, and two run by a test
#: of their own: "board" (tests/fpga/test_fpga_cosim.py), "regress" (tests/rtl/test_rtl_regress.py)
COMMANDS: dict[tuple[str, ...], tuple[str, list[str]]] = {
    ("config", "show"): ("sw", ["--set", "timing.tCCD_AB=4"]),
    ("config", "list"): ("sw", []),
    ("timing", "dense"): ("sw", ["--lengths", "1024", "2048"]),
    ("kv", "extract"): ("slow", ["--passkey-length", "256", "--decode-steps", "1",
                                 "--no-progress", "-o", "kv.npz"]),
    ("model", "generate"): ("slow", ["--prompt", "The capital of France is",
                                     "--max-new-tokens", "3"]),
    ("compile",): ("sw", ["--synthetic", "--layers", "3", "--prefill", "300",
                          "--decode-steps", "1", "-o", "art"]),
    ("eval",): ("sw", ["--synthetic", "--layers", "3", "--prefill", "300", "--decode-steps", "1",
                       "--budgets", "128", "--cost-programs", "2", "-o", "ev"]),
    ("sweep",): ("sw", ["--contexts", "300", "--layers", "3", "--steps", "1", "--budgets", "128",
                        "--policies", "dense", "starc", "--workers", "1", "--cache-dir", "cache",
                        "--cost-programs", "2", "-o", "sw"]),
    ("system",): ("sw", ["--model", "smollm2-135m", "--batch", "1", "--lin", "256", "--lout", "2",
                         "--steps", "1", "--budget", "64", "--policies", "dense", "starc-row",
                         "--workers", "1", "--cache-dir", "cache"]),
    ("eval-quality",): ("slow", ["--contexts", "256", "--budgets", "64", "--samples", "1",
                                 "--policies", "dense", "starc-row", "--no-perplexity",
                                 "--workers", "1", "--cache-dir", "cache", "-o", "q"]),
    ("demo",): ("slow", ["--context", "256", "--steps", "1", "--no-rtl", "--no-policy-decode",
                         "-o", "demo"]),
    ("rtl", "verilog"): ("sw", ["--size", "tiny", "-o", "tiny.v"]),
    ("rtl", "cosim"): ("rtl", ["--policy", "dense", "--prefill", "300"]),
    # the quick regression (5 scenarios); a grid given by options also runs every directed
    # program (about 50 simulator runs), which the JSON on stdout does not depend on. Its own
    # test runs it (tests/rtl/test_rtl_regress.py::test_quick_regression: strict JSON alone on
    # stdout, equal to the -o file, and the report's contents), so it runs once per suite
    ("rtl", "regress"): ("regress", ["--quick", "--numerics", "0", "--no-cache", "--workers", "2",
                                     "-o", "regress.json"]),
    ("fpga", "build"): ("fpga", ["--size", "tiny", "--no-pnr"]),
    # its JSON needs a board: tests/fpga/test_fpga_cosim.py::test_board_runner runs it against
    # the co-simulated board and parses its stdout
    ("fpga", "run"): ("board", []),
}


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every leaf sub-command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sp in subs[0].choices.items():
        yield from leaves(sp, (*path, name))


def _reject(name: str) -> None:
    raise ValueError(f"{name} in JSON output")


def strict_loads(text: str):
    """Parse ``text`` as one strict JSON document (no NaN / Infinity, nothing else around it)."""
    return json.loads(text, parse_constant=_reject)


def run_json(words: tuple[str, ...], args: list[str], cwd: Path):
    """Run ``starc WORDS ARGS --json`` in-process in ``cwd``; (exit code, stdout, stderr)."""
    import os

    from starc import cli

    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([*words, *args, "--json"])
    finally:
        os.chdir(old)
    return rc, out.getvalue(), err.getvalue()

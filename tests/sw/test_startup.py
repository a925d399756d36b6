"""Start-up of the light commands: `starc config show` and `starc timing dense` run from the
installed console script in a fresh process must not import the heavy or unrelated parts of the
project, nor rich when the output is not a terminal (starc.plaintable prints the table; the test's
output is a pipe). Imports are read from ``python -X importtime`` (every module the process
loads, transitively). No timed assertion: bench/bench_startup.py measures the time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: never on these paths: gateware, simulation, FPGA flow, plots, learning, distributed sweeps,
#: the SmolLM2 model, the compiler, the AttAcc compatibility model, the sweep engine
HEAVY = ("amaranth", "cocotb", "matplotlib", "sklearn", "scipy", "distributed", "dask", "gguf",
         "starc_hw", "starc_sim", "starc_fpga", "fpga", "starc.compiler", "starc.model",
         "starc.sweep", "starc.system", "starc.golden.attacc", "starc.golden.check",
         "starc.kv", "starc.report", "starc.plots", "starc.demo")


def _script() -> list[str]:
    """The installed `starc` console script, run by this interpreter (its own shebang names the
    same venv); ``-m starc.cli`` where the script is not installed."""
    script = Path(sys.executable).parent / "starc"
    return [str(script)] if script.is_file() else ["-m", "starc.cli"]


def imported(argv: list[str]) -> list[str]:
    """Every module a fresh ``starc ARGV`` process imports (it must exit 0)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    r = subprocess.run([sys.executable, "-X", "importtime", *_script(), *argv],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, f"starc {' '.join(argv)} exited {r.returncode}: {r.stderr[-2000:]}"
    mods = [line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
            if line.startswith("import time:") and "cumulative" not in line]
    assert "starc.cli" in mods, "importtime listed no starc module: the test reads nothing"
    return mods


def offending(mods: list[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in mods if any(m == b or m.startswith(b + ".") for b in banned))


def test_offending_catches_a_banned_module_and_its_submodules() -> None:
    assert offending(["amaranth.hdl", "numpy", "starc.golden.attacc", "starc.golden.timing",
                      "fpgalib"], ("amaranth", "starc.golden.attacc", "fpga")) == [
        "amaranth.hdl", "starc.golden.attacc"]


@pytest.mark.parametrize("argv, banned", [
    # derived figures: no NumPy, no golden model; output that is not a terminal: no rich
    (["config", "show"], (*HEAVY, "numpy", "rich", "starc.golden", "starc.rules", "starc.isa")),
    (["config", "show", "samsung-hbm2-pim", "--set", "timing.tRCD=20"],
     (*HEAVY, "numpy", "rich", "starc.golden")),
    (["config", "show", "--raw"], (*HEAVY, "numpy", "rich", "starc.golden")),
    (["config", "show", "--json"], (*HEAVY, "numpy", "rich", "starc.golden")),
    # the golden model on command tuples: no NumPy; the MAC-stream bound comes without the
    # AttAcc model
    (["timing", "dense"], (*HEAVY, "numpy", "rich")),
    (["timing", "dense", "--lengths", "1024", "--heads-per-channel", "2"],
     (*HEAVY, "numpy", "rich")),
    (["timing", "dense", "--lengths", "1024", "--json"], (*HEAVY, "numpy", "rich")),
    (["--help"], (*HEAVY, "numpy", "rich", "starc.golden", "starc.config")),
])
def test_light_commands_import_nothing_heavy(argv: list[str], banned: tuple[str, ...]) -> None:
    mods = imported(argv)
    assert offending(mods, banned) == [], (
        f"`starc {' '.join(argv)}` imports {offending(mods, banned)}: import them in the code "
        f"path that needs them (docs/reliability.md, start-up)")


def test_parser_of_one_command_loads_only_its_module() -> None:
    """`starc timing ...` registers `timing` alone; the other commands are placeholders."""
    mods = imported(["timing", "dense", "--lengths", "512", "--json"])
    from starc.cli import COMMANDS
    others = [m for m, _ in COMMANDS.values() if m != "starc.golden.cli"]
    assert offending(mods, tuple(others)) == []

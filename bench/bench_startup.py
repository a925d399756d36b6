"""Start-up time of `starc config show` and `starc timing dense` from a fresh process.

Measured side by side in the same run, interleaved so load changes hit every case alike, each a
fresh process running the installed console script (``.venv/bin/starc``), output to /dev/null:
- the two commands as shipped (the parser imports only the command being run, its handler only
  what the options ask for);
- ``eager``: the same command after importing every sub-command module first (Amaranth, the FPGA
  flow, cocotb helpers, the compiler, ...), what a parser that registers everything would cost;
- the floors: ``python -c pass``, and ``python -c "import numpy"`` for scale (`timing dense` runs
  the golden model on command tuples and imports no NumPy; tests/sw/test_startup.py checks).

Two bytecode conditions, side by side:
- ``source``: the environment as `make` sets it (``PYTHONDONTWRITEBYTECODE=1``, an editable install
  that never wrote ``__pycache__``): every project module is compiled from source in every process;
- ``cached``: bytecode of every module in a warmed ``PYTHONPYCACHEPREFIX`` (as after a regular
  ``pip install``, which writes bytecode).

Prints the median and minimum wall time and the median CPU time (user + system, less disturbed
by other processes) of each case, the ratios to the floors, `uptime` before and after, where the
time of `timing dense` goes inside the process (interpreter, project imports, schedule code
generation, model run, table), and the slowest imports of each command
(``python -X importtime``). Target: both commands <= 0.12 s on an idle machine.
``BENCH_REPS`` (default 15) sets the runs per case.

``--before DIR``: also run the commands of an older source tree beside (``DIR/sw`` first on
``PYTHONPATH``; e.g. ``git archive REV sw | tar -x -C DIR``), so a change is measured against its
base in the same run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (["config", "show"], ["timing", "dense"])
TARGET_S = 0.12
BIN = Path(sys.executable).parent
STARC = str(BIN / "starc")
EAGER = ("import sys, starc.cli as c; c.build_parser(); "
         "sys.exit(c.main(sys.argv[1:]))")

#: in-process split of `starc timing dense` (same work as the command, timestamps between parts)
SPLIT = r"""
import io, sys, time, contextlib
t = [time.perf_counter()]
import starc.cli, starc.config, starc.golden.cli, starc.golden.timing, starc.golden.programs
import starc.golden.energy, starc.planner.table, starc.plaintable, starc.glossary
t.append(time.perf_counter())
from starc.golden import programs, schedgen, timing, energy
from starc.golden.cli import _DENSE_COLUMNS, dense_cost_rows
from starc.planner.table import cells, print_rows
cfg = starc.config.load(None)
schedgen.compiled(cfg)
t.append(time.perf_counter())
rows = dense_cost_rows(cfg, [1024, 2048, 4096, 8192, 16384, 32768], 128)
t.append(time.perf_counter())
with contextlib.redirect_stdout(io.StringIO()):
    print_rows("dense", _DENSE_COLUMNS, [cells(r, _DENSE_COLUMNS) for r in rows])
t.append(time.perf_counter())
tp = ts = te = 0.0
for L in (1024, 2048, 4096, 8192, 16384, 32768):
    a = time.perf_counter(); p = programs.dense_commands(cfg, L, 128)
    b = time.perf_counter(); timing.totals(p, cfg)
    c = time.perf_counter(); energy.account(p, cfg, 128)
    tp += b - a; ts += c - b; te += time.perf_counter() - c
assert "numpy" not in sys.modules, "timing dense imported NumPy"
print(*[t[i + 1] - t[i] for i in range(len(t) - 1)], tp, ts, te)
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one fresh process."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.decode()[-500:]}")
    return dt, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def importtime(cmd: list[str], env: dict[str, str], top: int = 10) -> list[tuple[float, str]]:
    r = subprocess.run([sys.executable, "-X", "importtime", STARC, *cmd],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    rows, total = [], 0.0
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line[len("import time:"):].split("|")
        ms = int(cum_us) / 1e3
        if not name[1:].startswith(" "):        # a top-level import
            total += ms
        rows.append((ms, name.strip()))
    return [(total, "TOTAL of top-level imports")] + sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--before", type=Path, default=None,
                    help="an older source tree (with sw/) to measure beside")
    before = ap.parse_args().before
    if before is not None and not (before / "sw" / "starc" / "cli.py").is_file():
        raise SystemExit(f"--before {before}: no sw/starc/cli.py there")
    reps = int(os.environ.get("BENCH_REPS", "15"))
    if not Path(STARC).is_file():
        raise SystemExit(f"no console script {STARC}: run `make setup` first")
    print(f"uptime: {uptime()} ({os.cpu_count()} cores)")
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPYCACHEPREFIX", "PYTHONPROFILEIMPORTTIME")}
    cache = tempfile.TemporaryDirectory(prefix="starc-bench-pyc-")
    envs = {"source": {**base, "PYTHONDONTWRITEBYTECODE": "1"},
            "cached": {**{k: v for k, v in base.items() if k != "PYTHONDONTWRITEBYTECODE"},
                       "PYTHONPYCACHEPREFIX": cache.name}}
    py = sys.executable
    cases: dict[str, tuple[list[str], str]] = {
        "python -c pass": ([py, "-c", "pass"], "cached"),
        "python -c 'import numpy'": ([py, "-c", "import numpy"], "cached")}
    for cond in envs:
        for cmd in COMMANDS:
            cases[f"starc {' '.join(cmd)} [{cond}]"] = ([STARC, *cmd], cond)
    for cmd in COMMANDS:
        cases[f"eager starc {' '.join(cmd)} [cached]"] = ([py, "-c", EAGER, *cmd], "cached")
    if before is not None:
        old = str((before / "sw").resolve())
        for cond in list(envs):
            envs[f"before {cond}"] = {**envs[cond], "PYTHONPATH": os.pathsep.join(
                [old, *filter(None, [envs[cond].get("PYTHONPATH")])])}
            for cmd in COMMANDS:
                cases[f"before starc {' '.join(cmd)} [{cond}]"] = ([STARC, *cmd],
                                                                   f"before {cond}")
    for argv, cond in cases.values():      # warm the page cache and the bytecode cache
        run(argv, envs[cond])
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for k, (argv, cond) in cases.items():
            w, c = run(argv, envs[cond])
            wall[k].append(w)
            cpu[k].append(c)
    med = {k: statistics.median(v) for k, v in wall.items()}
    print(f"{reps} runs each, interleaved; a fresh process each; output to /dev/null")
    print(f"{'case':40s} {'wall median s':>14s} {'wall min s':>11s} {'CPU median s':>13s} "
          f"{'x pass':>7s}")
    floor = med["python -c pass"]
    for k in cases:
        print(f"{k:40s} {med[k]:14.3f} {min(wall[k]):11.3f} {statistics.median(cpu[k]):13.3f} "
              f"{med[k] / floor:7.1f}")
    numpy_s = med["python -c 'import numpy'"]
    for cmd in COMMANDS:
        name = " ".join(cmd)
        for cond in ("source", "cached"):
            m = med[f"starc {name} [{cond}]"]
            line = (f"starc {name} [{cond}]: median {m:.3f} s "
                    f"{'meets' if m <= TARGET_S else 'MISSES'} the {TARGET_S} s target; "
                    f"{m - floor:+.3f} s over `python -c pass`, {m - numpy_s:+.3f} s over "
                    f"`import numpy`")
            if cond == "cached":
                line += (f"; eager/shipped {med[f'eager starc {name} [cached]'] / m:.2f}")
            if before is not None:
                line += f"; before/now {med[f'before starc {name} [{cond}]'] / m:.2f}"
            print(line)
    parts = [[float(x) for x in subprocess.run([py, "-c", SPLIT], capture_output=True, text=True,
                                               env=envs["cached"], check=True).stdout.split()]
             for _ in range(7)]
    best = min(parts, key=lambda p: sum(p[:4]))     # the fastest run, its parts consistent
    names = ("project modules", "preset + schedule code generation",
             "model run (dense_cost_rows, 6 lengths)", "table (print_rows)",
             "  again: dense_commands, 6 lengths", "  again: timing.totals, 6 lengths",
             "  again: energy.account, 6 lengths")
    print("\nwhere `starc timing dense` spends its time inside the process [cached], the fastest "
          "of 7 (ms; interpreter start: `python -c pass` above):")
    for n, v in zip(names, best, strict=True):
        print(f"  {n:50s} {1e3 * v:7.1f}")
    for cmd in COMMANDS:
        for cond in ("source", "cached"):
            print(f"\nslowest imports of `starc {' '.join(cmd)}` [{cond}] (cumulative ms):")
            for ms, name in importtime(cmd, envs[cond]):
                print(f"  {ms:8.1f}  {name}")
    cache.cleanup()
    print(f"\nuptime: {uptime()}")


if __name__ == "__main__":
    main()

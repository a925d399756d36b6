"""Start-up time of `starc` sub-commands from a fresh process (issue 13 item 6).

Measured side by side in the same run, interleaved so load changes hit both alike:
- lazy: the `starc` command as shipped (only the module of the command being run is imported);
- eager: the same command after importing every sub-command module first (what `starc` did
  before lazy loading: Amaranth, the FPGA flow, cocotb helpers, the compiler, ...);
- floors: a bare `python -c pass` and `python -c "import numpy"`.

Prints the median and minimum wall time of each, the CPU time (user + system) of the child,
which other processes' load disturbs much less than wall time, the lazy/eager ratio, `uptime`,
and the ten slowest imports of each lazy command (`python -X importtime`). Target: `starc config
show` and `starc timing dense` <= 0.12 s on an idle machine. Both commands print their table (no
`--json`), as a user runs them.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = (["config", "show"], ["timing", "dense"])
EAGER = ("import sys, starc.cli as c; c.build_parser(); "
         "sys.exit(c.main(sys.argv[1:]))")
LAZY = "import sys, starc.cli as c; sys.exit(c.main(sys.argv[1:]))"
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def wall(argv: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one fresh process."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.decode()[-500:]}")
    return dt, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def importtime(argv: list[str], top: int = 10) -> list[tuple[float, str]]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", LAZY, *argv],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
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
    reps = int(os.environ.get("BENCH_REPS", "15"))
    py = sys.executable
    cases: dict[str, list[str]] = {"python -c pass": [py, "-c", "pass"],
                                   "python -c 'import numpy'": [py, "-c", "import numpy"]}
    for cmd in COMMANDS:
        name = " ".join(cmd[:2])
        cases[f"lazy  starc {name}"] = [py, "-c", LAZY, *cmd]
        cases[f"eager starc {name}"] = [py, "-c", EAGER, *cmd]
    for argv in cases.values():      # warm the page cache
        wall(argv)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    times: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for k, argv in cases.items():
            w, c = wall(argv)
            times[k].append(w)
            cpu[k].append(c)
    print(f"{reps} runs each, interleaved; a fresh process each")
    print(f"{'case':36s} {'wall median s':>14s} {'wall min s':>11s} {'CPU median s':>13s}")
    for k, ts in times.items():
        print(f"{k:36s} {statistics.median(ts):14.3f} {min(ts):11.3f} "
              f"{statistics.median(cpu[k]):13.3f}")
    for cmd in COMMANDS:
        name = " ".join(cmd[:2])
        lz, eg = times[f"lazy  starc {name}"], times[f"eager starc {name}"]
        verdict = "meets" if statistics.median(lz) <= 0.12 else "MISSES"
        lc, ec = cpu[f"lazy  starc {name}"], cpu[f"eager starc {name}"]
        print(f"starc {name}: lazy/eager wall {statistics.median(lz) / statistics.median(eg):.2f}"
              f", CPU {statistics.median(lc) / statistics.median(ec):.2f} (wall median "
              f"{statistics.median(lz):.3f} s {verdict} the 0.12 s target; min {min(lz):.3f} s; "
              f"CPU median {statistics.median(lc):.3f} s)")
    for cmd in COMMANDS:
        print(f"\nslowest imports of `starc {' '.join(cmd)}` (cumulative ms):")
        for ms, name in importtime(cmd):
            print(f"  {ms:8.1f}  {name.strip()}")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()

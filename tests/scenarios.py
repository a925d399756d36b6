"""Recorded scenarios: small end-to-end `starc` commands whose JSON output is stored in
tests/data/scenarios/ and must come back byte for byte (tests/sw/test_scenarios.py, the RTL ones
in tests/rtl/test_scenarios_rtl.py). Every number a change moves shows up as a diff there.

When a change of a number is intended, re-record and review the diff with the change:

    make record                       # every scenario of the sw tier; prints each diff
    make record NAMES="eval-default"  # some, by name
    make record RTL=1                 # the co-simulation ones (Verilator)
    git diff tests/data/scenarios/    # then read the diff; commit it with the change

(`make record` runs ``.venv/bin/python -m tests.record [NAME ...] [--rtl]``; ``--check``
compares only, ``--list`` lists the scenarios.)

A scenario runs in a fresh temporary folder (its current directory, also ``STARC_CACHE_DIR``),
in-process through :func:`starc.cli.main`, with ``--json``. The stored text is
:func:`canonical`: the fields that cannot repeat (wall times, load averages, git state, the
temporary folder's path, run folders) are dropped or replaced by ``<tmp>``, and floats are
written with 10 significant digits (so last-bit differences of a BLAS build do not count,
anything a reader would see does). An error (a key ending in ``error``) below 1e-12 is round-off
of float64 arithmetic (a dense step's ``rel_error`` is about 1e-16, and its digits follow the
BLAS kernel the processor gets: 8.6e-16 on one machine, 5.6e-16 on another): it is written as 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "scenarios"
RECORD_COMMAND = "make record"


def record_hint(name: str, rtl: bool = False) -> str:
    """The command that re-records scenario ``name`` (for failure messages)."""
    return f'{RECORD_COMMAND} NAMES="{name}"' + (" RTL=1" if rtl else "")

#: keys whose values cannot repeat between runs (wall times, rates, load, git state, run
#: folders), dropped wherever they occur; also every key starting with ``seconds`` or ending in
#: ``_seconds`` or ``_per_s``
VOLATILE = frozenset({"wall_s", "compute_s", "uptime", "git", "run_dir", "elapsed_s"})


def volatile(key: str) -> bool:
    return key in VOLATILE or key.startswith("seconds") or key.endswith(("_seconds", "_per_s"))
#: significant digits of a stored float
DIGITS = 10
#: an error (a key ending in ``error``) smaller than this is float64 round-off, stored as 0
ROUNDOFF = 1e-12


@dataclass(frozen=True)
class Scenario:
    name: str
    argv: tuple[str, ...]
    what: str
    setup: Callable[[Path], None] | None = None
    tier: str = "sw"                     # sw: tests/sw; rtl: needs Verilator (tests/rtl)

    @property
    def slow(self) -> bool:
        """A few seconds or more (a sweep writes plots; the model loads): `make test` only."""
        return self.argv[0] in ("sweep", "model", "kv", "system")

    @property
    def path(self) -> Path:
        return DATA / f"{self.name}.json"


def _kv(name: str, **kw: Any) -> Callable[[Path], None]:
    """Setup: a seeded synthetic KV cache as ``name`` (safetensors: the same bytes every time)."""
    def make(tmp: Path) -> None:
        from starc.kv import save_kv, synthetic_kv
        save_kv(synthetic_kv(**kw), tmp / name)
    return make


def _compiled(folder: str, mode: str) -> Callable[[Path], None]:
    """Setup: a compiled artifact of a small synthetic cache."""
    def make(tmp: Path) -> None:
        with _quiet():
            rc = _main(["compile", "--synthetic", "--layers", "3", "--prefill", "400",
                        "--decode-steps", "1", "--mode", mode, "-o", str(tmp / folder),
                        "--json"])
        if rc != 0:
            raise RuntimeError(f"setup: compile --mode {mode} failed ({rc})")
    return make


_SYN = ("--synthetic", "--layers", "3", "--q-heads", "4", "--kv-heads", "2", "--prefill", "600",
        "--decode-steps", "2")
_SW = ("--layers", "3", "--steps", "1", "--workers", "1", "--cache-dir", "cache")


def _s(name: str, what: str, *argv: str, **kw: Any) -> Scenario:
    return Scenario(name, tuple(argv), what, **kw)


SCENARIOS: tuple[Scenario, ...] = (
    # ---- presets
    _s("config-list", "the shipped presets", "config", "list", "--json"),
    _s("config-show-default", "derived figures of the default preset", "config", "show",
       "--json"),
    _s("config-show-npc", "derived figures without the power limit", "config", "show",
       "attacc-hbm3-5.2-npc", "--json"),
    _s("config-show-samsung", "Samsung HBM2-PIM", "config", "show", "samsung-hbm2-pim", "--json"),
    _s("config-show-jedec", "JEDEC HBM3 6400", "config", "show", "jedec-hbm3-6400", "--json"),
    _s("config-show-set", "an override", "config", "show", "--set", "timing.tCCD_AB=4",
       "--set", "pu.mac_pipeline=8", "--json"),
    _s("config-raw", "every settable field, its origin and citation", "config", "show", "--raw",
       "--set", "timing.tRCD=20", "--json"),
    # ---- golden timing and energy of dense programs
    _s("timing-dense", "dense program, d 128", "timing", "dense", "--lengths", "1024", "2048",
       "4096", "--json"),
    _s("timing-dense-d64", "dense program, d 64", "timing", "dense", "--lengths", "512", "2048",
       "--head-dim", "64", "--json"),
    _s("timing-dense-refresh", "a program long enough to refresh", "timing", "dense",
       "--lengths", "16384", "--json"),
    _s("timing-dense-npc", "no power limit", "timing", "dense", "--lengths", "2048",
       "--preset", "attacc-hbm3-5.2-npc", "--json"),
    _s("timing-dense-samsung", "Samsung HBM2-PIM", "timing", "dense", "--lengths", "1024",
       "--preset", "samsung-hbm2-pim", "--json"),
    _s("timing-dense-set", "an override", "timing", "dense", "--lengths", "1024", "--set",
       "timing.tRCD=25", "--json"),
    _s("timing-dense-2heads", "two heads per channel in our overlapped order", "timing",
       "dense", "--lengths", "1024", "--heads-per-channel", "2", "--json"),
    _s("attacc-timing", "AttAcc's simulator reproduced (one head per channel)", "timing",
       "dense", "--model", "attacc", "--lengths", "1024", "2048", "--json"),
    _s("attacc-timing-2heads", "AttAcc's overlapped schedule, 2 heads per channel", "timing",
       "dense", "--model", "attacc", "--lengths", "1024", "--heads-per-channel", "2", "--json"),
    _s("attacc-timing-npc", "AttAcc, no power limit", "timing", "dense", "--model", "attacc",
       "--lengths", "1024", "--preset", "attacc-hbm3-5.2-npc", "--json"),
    # ---- compiler
    _s("compile-row-aligned", "row-aligned clusters and placement", "compile", *_SYN, "--mode",
       "row-aligned", "-o", "art", "--json"),
    _s("compile-artifact", "the STARC artifact's clustering", "compile", *_SYN, "--mode",
       "artifact", "-o", "art", "--json"),
    _s("compile-global", "one k-means over the prefill", "compile", *_SYN, "--mode", "global",
       "-o", "art", "--json"),
    _s("compile-dense", "the positional layout", "compile", *_SYN, "--mode", "dense", "-o",
       "art", "--json"),
    _s("compile-d128", "head size 128", "compile", "--synthetic", "--layers", "3",
       "--head-dim", "128", "--prefill", "500", "--decode-steps", "1", "--mode", "row-aligned",
       "-o", "art", "--json"),
    # ---- the comparison (eval)
    _s("eval-default", "every default policy, two budgets", "eval", *_SYN, "--budgets", "128",
       "512", "-o", "ev", "--json"),
    _s("eval-energy-objective", "the planner's energy objective", "eval", *_SYN, "--budgets",
       "256", "--objective", "energy", "-o", "ev", "--json"),
    _s("eval-mass-budget", "a mass budget (p0.9) beside a token budget", "eval", *_SYN,
       "--budgets", "256", "p0.9", "-o", "ev", "--json"),
    _s("eval-missing-baselines", "no dense, no sparq: the ratios are undefined with reasons",
       "eval", *_SYN, "--budgets", "256", "--policies", "quest", "starc", "-o", "ev", "--json"),
    _s("eval-sampled", "a sampled cell with 95 % intervals", "eval", *_SYN, "--budgets", "256",
       "--cost-programs", "5", "-o", "ev", "--json"),
    _s("eval-npc-set", "a preset and an override", "eval", *_SYN, "--budgets", "256",
       "--preset", "attacc-hbm3-5.2-npc", "--set", "timing.tRCD=21", "-o", "ev", "--json"),
    _s("eval-d128", "head size 128 (16-token group rows)", "eval", "--synthetic", "--layers",
       "3", "--q-heads", "4", "--kv-heads", "1", "--head-dim", "128", "--prefill", "500",
       "--decode-steps", "1", "--budgets", "128", "-o", "ev", "--json"),
    _s("eval-artifact-folder", "eval of a compiled artifact folder", "eval", "art",
       "--policies", "dense", "starc", "--budgets", "128", "-o", "ev", "--json",
       setup=_compiled("art", "artifact")),
    _s("eval-kv-file", "eval of a KV file", "eval", "kv.safetensors", "--budgets", "128",
       "--policies", "dense", "sparq", "starc-row", "-o", "ev", "--json",
       setup=_kv("kv.safetensors", n_layers=3, n_q_heads=6, n_kv_heads=2, prefill_len=500,
                 decode_steps=1, seed=3)),
    # ---- sweeps
    _s("sweep-small", "one point, two budgets", "sweep", "--contexts", "512", "--budgets",
       "128", "256", "--policies", "dense", "sparq", "starc", "starc-row", *_SW, "-o", "sw",
       "--json"),
    _s("sweep-pooled", "two contexts: per point and pooled reductions at B = 1024", "sweep",
       "--contexts", "1100", "1300", "--budgets", "1024", "--policies", "dense", "sparq",
       "starc", *_SW, "-o", "sw", "--json"),
    _s("sweep-grid", "a --set grid", "sweep", "--contexts", "400", "--budgets", "128",
       "--policies", "dense", "starc-row", "--set", "timing.tCCD_AB=4,6", *_SW, "-o", "sw",
       "--json"),
    _s("sweep-mistral", "the Mistral-7B shape", "sweep", "--models", "mistral-7b",
       "--contexts", "600", "--budgets", "256", "--policies", "dense", "sparq", "starc-row",
       *_SW, "-o", "sw", "--json"),
    _s("sweep-kv", "a KV file through the sweep", "sweep", "--kv", "kv.safetensors",
       "--budgets", "128", "--policies", "dense", "starc", "--workers", "1", "--cache-dir",
       "cache", "-o", "sw", "--json",
       setup=_kv("kv.safetensors", n_layers=3, n_q_heads=4, n_kv_heads=2, prefill_len=450,
                 decode_steps=1, seed=9)),
    # ---- the system model (whole-model decode on HBM-PIM stacks)
    _s("system-smollm", "SmolLM2 shape, two mappings, two decode steps", "system", "--model",
       "smollm2-135m", "--batch", "2", "--lin", "256", "--lout", "4", "--steps", "2",
       "--budget", "64", "--policies", "dense", "sparq", "starc-row", "--mappings", "attacc",
       "balanced", "--workers", "1", "--cache-dir", "cache", "-o", "sys", "--json"),
    _s("sweep-system", "the system model through the sweep: two batch sizes", "sweep",
       "--system", "--models", "smollm2-135m", "--batch", "1", "2", "--lin", "256", "--lout", "2",
       "--sampled-steps", "1", "--budgets", "64", "--policies", "dense", "starc-row",
       "--workers", "1", "--cache-dir", "cache", "-o", "sw", "--json"),
    # ---- gateware
    _s("rtl-verilog-tiny", "Verilog of the tiny channel: ports, modules, lines", "rtl",
       "verilog", "--size", "tiny", "-o", "tiny.v", "--json"),
    # ---- the real model (SmolLM2-135M, seconds)
    _s("model-generate", "greedy continuation", "model", "generate", "--prompt",
       "The capital of France is", "--max-new-tokens", "4", "--json"),
    _s("kv-extract", "a pass-key KV cache from the model", "kv", "extract", "--passkey-length",
       "256", "--decode-steps", "1", "--no-progress", "-o", "kv.safetensors", "--json"),
    # ---- RTL co-simulation summaries (Verilator)
    _s("cosim-starc-row", "one decode step on the RTL against the golden model", "rtl", "cosim",
       "--json", tier="rtl"),
    _s("cosim-dense", "dense step on the RTL", "rtl", "cosim", "--policy", "dense",
       "--prefill", "300", "--json", tier="rtl"),
)


def get(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f"no scenario {name!r}; names: {', '.join(s.name for s in SCENARIOS)}")


def _main(argv: Sequence[str]) -> int:
    from starc import cli
    return cli.main(list(argv))


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def _in(folder: Path):
    old, old_env = Path.cwd(), os.environ.get("STARC_CACHE_DIR")
    os.chdir(folder)
    os.environ["STARC_CACHE_DIR"] = str(folder / "starc-cache")
    try:
        yield
    finally:
        os.chdir(old)
        if old_env is None:
            os.environ.pop("STARC_CACHE_DIR", None)
        else:
            os.environ["STARC_CACHE_DIR"] = old_env


def _canon(obj: Any, tmp: str) -> Any:
    if isinstance(obj, dict):
        return {k: 0.0 if (k.endswith("error") and isinstance(v, float) and abs(v) < ROUNDOFF)
                else _canon(v, tmp) for k, v in obj.items() if not volatile(k)}
    if isinstance(obj, list):
        return [_canon(v, tmp) for v in obj]
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError("a non-finite float in a JSON output")
        r = float(f"{obj:.{DIGITS}g}")
        return 0.0 if r == 0 else r
    if isinstance(obj, str) and tmp and tmp in obj:
        return obj.replace(tmp, "<tmp>")
    return obj


def _reject(name: str) -> None:
    raise ValueError(f"{name} in a JSON output (strict JSON has no NaN or Infinity)")


def canonical(text: str, tmp: Path) -> str:
    """The stored form of a JSON output (see the module docstring). ``text`` must be one strict
    JSON document: nothing else on stdout, no NaN or Infinity."""
    doc = json.loads(text, parse_constant=_reject)
    return json.dumps(_canon(doc, str(tmp.resolve())), indent=1, ensure_ascii=False) + "\n"


def run(scn: Scenario, tmp: Path) -> str:
    """Run ``scn`` in the empty folder ``tmp``; its canonical JSON output."""
    tmp = Path(tmp)
    with _in(tmp):
        if scn.setup is not None:
            scn.setup(tmp)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = _main(scn.argv)
    if rc != 0:
        raise RuntimeError(f"scenario {scn.name}: `starc {' '.join(scn.argv)}` exited {rc}: "
                           f"{err.getvalue().strip()[-2000:]}")
    return canonical(out.getvalue(), tmp)


def diff(old: str, new: str, name: str, limit: int = 80) -> str:
    import difflib
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"recorded/{name}",
                                      f"now/{name}", lineterm="", n=2))
    more = f"\n... {len(lines) - limit} more diff lines" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def record(names: Sequence[str] = (), *, rtl: bool = False, check: bool = False) -> int:
    """Re-record (or with ``check``, compare) scenarios; prints one line per scenario."""
    import tempfile

    chosen = [get(n) for n in names] if names else \
        [s for s in SCENARIOS if (s.tier == "rtl") == rtl]
    DATA.mkdir(parents=True, exist_ok=True)
    changed = 0
    for s in chosen:
        with tempfile.TemporaryDirectory(prefix=f"starc-scenario-{s.name}-") as t:
            text = run(s, Path(t))
        old = s.path.read_text(encoding="utf-8") if s.path.exists() else None
        state = "same" if old == text else ("new" if old is None else "CHANGED")
        print(f"{state:8} {s.name}: starc {' '.join(s.argv)}", flush=True)
        if state != "same":
            changed += 1
            if old is not None:
                print(diff(old, text, s.path.name, limit=40), flush=True)
            if not check:
                from starc.outputs import write_atomic
                write_atomic(s.path, text)
    if changed and not check:
        print(f"{changed} recorded output(s) written; review them with "
              f"`git diff tests/data/scenarios/` and commit them with the change")
    return 1 if (check and changed) else 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m tests.record",
                                description="Re-record the recorded scenarios (tests/scenarios.py)"
                                            " after an intended change of a number.")
    p.add_argument("names", nargs="*", help="scenario names (default: every one of the tier)")
    p.add_argument("--rtl", action="store_true", help="the co-simulation scenarios (Verilator)")
    p.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    p.add_argument("--list", action="store_true", help="list the scenarios")
    a = p.parse_args(argv)
    if a.list:
        for s in SCENARIOS:
            print(f"{s.name:28} [{s.tier}] {s.what}")
        return 0
    return record(a.names, rtl=a.rtl, check=a.check)


if __name__ == "__main__":
    sys.exit(main())

"""Reliability fuzz suite (docs/reliability.md): hundreds of bad and edge inputs through the real
`starc` CLI, each checked for the contract:

- a bad input exits 2 with exactly one ``starc: error:`` line on stderr, no traceback;
- a good input exits 0 with valid output (strict JSON, a complete output folder with its
  manifest);
- no file outside the case's declared outputs changes, and nothing changes at all when the
  command fails (a snapshot of the sandbox tree before and after: path, type, size, mtime, inode,
  and the bytes of small files);
- no temporaries are left (``.starc-tmp-*`` / ``.starc-old-*``), no case hangs.

Parse-level and loader cases run ``starc.cli.main(argv)`` in-process (fast); cases that need a
real process (signals, a closed stdout, non-UTF-8 argv) run ``python -m starc.cli``. Every case
is registered under a distinct key; the last test prints the summary line and checks the totals
(at least 300 distinct bad inputs, zero failures of any kind).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import cli
from starc.kv import save_kv, synthetic_kv

TMP_MARKERS = (".starc-tmp-", ".starc-old-")
CASE_TIMEOUT_S = 60.0


# ---- the registry of cases and outcomes -------------------------------------------------------
@dataclass
class Registry:
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    tests_run: set[str] = field(default_factory=set)

    def add(self, key: str, category: str, bad: bool, problems: list[str]) -> None:
        prev = self.cases.get(key)
        if prev is not None:           # the same input twice (hypothesis may repeat): keep both
            prev["problems"] += problems
            return
        self.cases[key] = {"category": category, "bad": bad, "problems": list(problems)}

    def summary(self) -> dict[str, Any]:
        c = list(self.cases.values())
        kinds = ("traceback", "accepted", "lost", "partial", "hang", "leftover", "lines",
                 "invalid output", "refused")

        def count(kind: str, bad: bool | None = None) -> int:
            return sum(1 for x in c if (bad is None or x["bad"] == bad)
                       and any(p.startswith(kind) for p in x["problems"]))
        out = {"cases": len(c), "bad": sum(x["bad"] for x in c),
               "good": sum(not x["bad"] for x in c),
               "bad_refused_cleanly": sum(x["bad"] and not x["problems"] for x in c),
               "good_ok": sum((not x["bad"]) and not x["problems"] for x in c)}
        out.update({k: count(k) for k in kinds})
        cats: dict[str, int] = {}
        for x in c:
            if x["bad"]:
                cats[x["category"]] = cats.get(x["category"], 0) + 1
        out["bad_by_category"] = dict(sorted(cats.items()))
        return out


REG = Registry()


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    s = REG.summary()
    line = (f"reliability fuzz: {s['cases']} distinct cases, {s['bad']} bad inputs "
            f"({s['bad_refused_cleanly']} handled per the contract), {s['good']} good inputs "
            f"({s['good_ok']} ok); tracebacks {s['traceback']}, bad inputs accepted "
            f"{s['accepted']}, user files lost or moved {s['lost']}, partial files "
            f"{s['partial']}, hangs {s['hang']}, leftovers {s['leftover']}; bad inputs by "
            f"category: {s['bad_by_category']}")
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    cap = request.config.pluginmanager.get_plugin("capturemanager")
    with cap.global_and_fixture_disabled() if cap else contextlib.nullcontext():
        if tr is not None:
            tr.write_line("")
            tr.write_line(line)
        else:  # pragma: no cover
            print(line)


# ---- sandbox snapshots ------------------------------------------------------------------------
#: SHA-1 of a small file by (path, size, mtime, inode, ctime): any write to a file changes its
#: ctime (which no process can set back), so an unchanged key is unchanged content; a snapshot
#: hashes only what changed since the last one.
_DIGESTS: dict[tuple[Any, ...], str] = {}


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    snap: dict[str, tuple[Any, ...]] = {}
    todo = [(str(root), "")]
    while todo:
        folder, prefix = todo.pop()
        with os.scandir(folder) as it:
            for e in it:
                rel = prefix + e.name
                st_ = e.stat(follow_symlinks=False)
                if stat.S_ISLNK(st_.st_mode):
                    snap[rel] = ("link", os.readlink(e.path))
                elif stat.S_ISDIR(st_.st_mode):
                    snap[rel] = ("dir", st_.st_mode)
                    todo.append((e.path, rel + "/"))
                else:
                    digest = None
                    if st_.st_size <= 1 << 16:
                        key = (e.path, st_.st_size, st_.st_mtime_ns, st_.st_ino, st_.st_ctime_ns)
                        digest = _DIGESTS.get(key)
                        if digest is None:
                            with open(e.path, "rb") as f:
                                digest = _DIGESTS[key] = hashlib.sha1(f.read()).hexdigest()
                    snap[rel] = ("file", st_.st_size, st_.st_mtime_ns, st_.st_ino, digest)
    return snap


def _under(rel: str, outs: Sequence[str]) -> bool:
    return any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in outs)


def strict_loads(text: str) -> Any:
    def bad(c: str) -> Any:
        raise ValueError(f"non-strict JSON constant {c}")
    return json.loads(text, parse_constant=bad)


def check_output_folder(folder: Path) -> list[str]:
    """A complete output folder: its manifest lists every file with its size; JSON is strict."""
    probs = []
    man_p = folder / "starc-output.json"
    if not man_p.is_file():
        return [f"partial: {folder.name} has no starc-output.json"]
    man = strict_loads(man_p.read_text())
    present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    present.pop("starc-output.json")
    if set(present) != set(man["files"]):
        probs.append(f"partial: files {sorted(set(present) ^ set(man['files']))} disagree with "
                     f"the manifest")
    for rel, p in present.items():
        info = man["files"].get(rel)
        if info and info["bytes"] != p.stat().st_size:
            probs.append(f"partial: {rel} size differs from the manifest")
        if rel.endswith(".json"):
            try:
                strict_loads(p.read_text())
            except ValueError as e:
                probs.append(f"invalid output: {rel}: {e}")
    return probs


# ---- running one case -------------------------------------------------------------------------
class _Hang(BaseException):
    pass


def _alarm(_s: int, _f: Any) -> None:
    raise _Hang()


@dataclass
class Result:
    rc: int | None
    out: str
    err: str
    seconds: float
    problems: list[str]


def run_case(root: Path, argv: Sequence[str], *, bad: bool, category: str,
             outputs: Sequence[str] = (), key: str | None = None, json_out: bool = False,
             allow_left: Sequence[str] = (), timeout: float = CASE_TIMEOUT_S,
             expect: str | None = None) -> Result:
    """Run ``starc ARGV`` in-process with ``root`` as the working directory; check the contract
    and register the case. ``outputs``: paths (relative to root) the command may write."""
    before = snapshot(root)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.perf_counter()
    rc: int | None
    hang = False
    try:
        os.chdir(root)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(list(argv))
    except _Hang:
        rc, hang = None, True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
    dt = time.perf_counter() - t0
    res = Result(rc, out.getvalue(), err.getvalue(), dt, [])
    res.problems = judge(root, before, res, bad=bad, outputs=outputs, json_out=json_out,
                         allow_left=allow_left, hang=hang, expect=expect)
    REG.add(key or "starc " + " ".join(map(str, argv)), category, bad, res.problems)
    return res


def judge(root: Path, before: dict[str, tuple[Any, ...]], res: Result, *, bad: bool,
          outputs: Sequence[str], json_out: bool, allow_left: Sequence[str], hang: bool,
          expect: str | None) -> list[str]:
    probs: list[str] = []
    if hang:
        return ["hang: no exit within the time limit"]
    if "Traceback" in res.err or res.rc == 3:
        probs.append(f"traceback: rc {res.rc}: {res.err.strip()[-300:]}")
    lines = [x for x in res.err.splitlines() if x.strip()]
    if bad:
        if res.rc == 0:
            probs.append("accepted: a bad input exited 0")
        elif res.rc != 2:
            probs.append(f"traceback: exit {res.rc}, expected 2")
        if res.rc == 2 and (len(lines) != 1 or not lines[0].startswith("starc: error: ")):
            probs.append(f"lines: expected one 'starc: error:' line, got {lines[:4]}")
        if expect and res.rc == 2 and expect not in res.err:
            probs.append(f"lines: the message lacks {expect!r}: {res.err.strip()}")
    elif res.rc != 0:
        probs.append(f"refused: a good input exited {res.rc}: {res.err.strip()[-300:]}")
    after = snapshot(root)
    for rel in sorted(set(before) | set(after)):
        if any(m in rel for m in TMP_MARKERS) and rel in after and \
                not any(a in rel for a in allow_left):
            probs.append(f"leftover: {rel}")
            continue
        if before.get(rel) == after.get(rel):
            continue
        if res.rc == 0 and _under(rel, outputs):
            continue
        if any(m in rel for m in TMP_MARKERS) and rel not in after:
            continue                   # a stale temporary of a dead process, removed: expected
        what = "removed" if rel not in after else "created" if rel not in before else "changed"
        probs.append(f"lost: {rel} {what} (outside the output, or by a failed command)")
    if res.rc == 0:
        if json_out:
            try:
                strict_loads(res.out)
            except ValueError as e:
                probs.append(f"invalid output: --json stdout: {e}")
        for o in outputs:
            p = root / o
            if p.is_dir() and (p / "starc-output.json").exists():
                probs += check_output_folder(p)
    return probs


def assert_clean(results: Sequence[tuple[Sequence[str], Result]]) -> None:
    bad = [(" ".join(map(str, a)), r.problems) for a, r in results if r.problems]
    assert not bad, f"{len(bad)} of {len(results)} cases broke the contract:\n" + "\n".join(
        f"  starc {a}: {p}" for a, p in bad[:30])


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny valid inputs: a KV cache in three containers, an artifact, a preset file."""
    from starc.compiler import CompileOptions, compile_kv
    from starc.compiler.artifact import save_artifact
    from starc.config import load
    root = tmp_path_factory.mktemp("fuzzbase")
    c = synthetic_kv(n_layers=3, n_q_heads=3, n_kv_heads=1, head_dim=64, prefill_len=256,
                     decode_steps=1, seed=3)
    save_kv(c, root / "kv.npz")
    save_kv(c, root / "kv.safetensors")
    save_kv(c, root / "kvdir")
    save_artifact(compile_kv(c, load(), CompileOptions(mode="row-aligned")), root / "art")
    from importlib import resources
    (root / "preset.toml").write_text(
        resources.files("starc").joinpath("presets", "attacc-hbm3-5.2.toml").read_text())
    (root / "notes.txt").write_text("a user's file\n")
    return root


@pytest.fixture
def box(base: Path, tmp_path: Path) -> Path:
    """A fresh sandbox with copies of the base inputs."""
    for p in base.iterdir():
        if p.is_dir():
            shutil.copytree(p, tmp_path / p.name)
        else:
            shutil.copy2(p, tmp_path / p.name)
    return tmp_path


def _track(request: pytest.FixtureRequest) -> None:
    REG.tests_run.add(request.node.originalname)


# ---- parse-level bad values -------------------------------------------------------------------
SYN = ["--synthetic", "--layers", "3", "--prefill", "64", "--q-heads", "1", "--kv-heads", "1",
       "--decode-steps", "1"]
INT_BAD = ["-1", "abc", "", "1.5", "nan", "inf", "1e400", "0x10", "99999999999999999999999"]
FLOAT_BAD = ["abc", "", "nan", "inf", "-inf", "1e400", "--"]

#: (base argv, option, extra bad values beyond the type's generic ones, kind)
OPTIONS: list[tuple[list[str], str, list[str], str]] = [
    (["timing", "dense"], "--lengths", ["0"], "int"),
    (["timing", "dense"], "--head-dim", ["0", "5000"], "int"),
    (["compile", *SYN, "--out", "o"], "--seed", [], "int"),
    (["compile", *SYN, "--out", "o"], "--window", ["0"], "int"),
    (["compile", *SYN, "--out", "o"], "--buffer", ["0"], "int"),
    (["compile", *SYN, "--out", "o"], "--cluster-tokens", ["0"], "int"),
    (["compile", *SYN, "--out", "o"], "--iters", ["0", "1001"], "int"),
    (["compile", *SYN, "--out", "o"], "--sinks", [], "int"),
    (["compile", *SYN, "--out", "o"], "--dense-layers", ["4096"], "int"),
    (["compile", "--synthetic", "--out", "o"], "--layers", ["0", "5000"], "int"),
    (["compile", "--synthetic", "--out", "o"], "--q-heads", ["0"], "int"),
    (["compile", "--synthetic", "--out", "o"], "--kv-heads", ["0"], "int"),
    (["compile", "--synthetic", "--out", "o"], "--head-dim", ["0"], "int"),
    (["compile", "--synthetic", "--out", "o"], "--prefill", ["0"], "int"),
    (["compile", "--synthetic", "--out", "o"], "--decode-steps", [], "int"),
    (["compile", "--synthetic", "--out", "o"], "--data-seed", [], "int"),
    (["eval", *SYN, "--out", "o"], "--budgets", ["0"], "int"),
    (["eval", *SYN, "--out", "o"], "--eval-steps", [], "int"),
    (["eval", *SYN, "--out", "o"], "--eval-layers", [], "int"),
    (["eval", *SYN, "--out", "o"], "--cost-programs", ["-2"], "int"),
    (["eval", *SYN, "--out", "o"], "--host-cycles", [], "int"),
    (["eval", *SYN, "--out", "o"], "--sparq-r", ["0", "-3", "5000"], "int"),
    (["sweep", "-o", "o"], "--contexts", ["0"], "int"),
    (["sweep", "-o", "o"], "--budgets", ["0"], "int"),
    (["sweep", "-o", "o"], "--layers", ["0", "1", "2"], "int"),
    (["sweep", "-o", "o"], "--steps", ["0"], "int"),
    (["sweep", "-o", "o"], "--seed", [], "int"),
    (["sweep", "-o", "o"], "--cost-programs", ["-2"], "int"),
    (["sweep", "-o", "o"], "--workers", ["0", "100000"], "int"),
    (["demo", "-o", "o"], "--context", ["0", "100", "9000"], "int"),
    (["demo", "-o", "o"], "--budget", ["0"], "int"),
    (["demo", "-o", "o"], "--steps", ["0", "65"], "int"),
    (["demo", "-o", "o"], "--seed", [], "int"),
    (["demo", "-o", "o"], "--depth", ["-0.1", "1.5"], "float"),
    (["kv", "extract", "--tokens", "1,2", "-o", "x.npz"], "--decode-steps", [], "int"),
    (["kv", "extract", "-o", "x.npz"], "--passkey-length", ["0"], "int"),
    (["kv", "extract", "--passkey-length", "300", "-o", "x.npz"], "--depth", ["1.01", "-1"],
     "float"),
    (["kv", "extract", "--passkey-length", "300", "-o", "x.npz"], "--seed", [], "int"),
    (["model", "generate", "--tokens", "1,2"], "--max-new-tokens", [], "int"),
    (["rtl", "verilog", "-o", "x.v"], "--head-dim", ["0"], "int"),
    (["rtl", "verilog", "-o", "x.v"], "--rows", ["0", "3", "100"], "int"),
    (["rtl", "verilog", "-o", "x.v"], "--max-entries", ["0"], "int"),
    (["rtl", "cosim"], "--budget", ["0"], "int"),
    (["rtl", "cosim"], "--layer", [], "int"),
    (["rtl", "cosim"], "--kv-head", [], "int"),
    (["rtl", "cosim"], "--step", [], "int"),
    (["rtl", "cosim"], "--seed", [], "int"),
    (["rtl", "cosim"], "--idle", ["2.0", "1.0", "-0.1"], "float"),
    (["rtl", "cosim"], "--backpressure", ["1.0", "7", "-1e-9"], "float"),
    (["fpga", "build"], "--clock-mhz", ["0", "-5", "2000"], "float"),
    (["fpga", "build"], "--baud", ["0", "10"], "int"),
    (["fpga", "build"], "--seed", [], "int"),
    (["timing", "dense"], "--heads-per-channel", ["0"], "int"),
    (["system"], "--batch", ["0", "100000"], "int"),
    (["system"], "--lin", ["0"], "int"),
    (["system"], "--lout", ["0"], "int"),
    (["system"], "--steps", ["0"], "int"),
    (["system"], "--stacks", ["0"], "int"),
    (["system"], "--gpus", ["0"], "int"),
    (["system"], "--streams", ["0"], "int"),
    (["system"], "--budget", ["0"], "int"),
    (["system"], "--workers", ["0", "100000"], "int"),
    (["sweep", "--system", "-o", "o"], "--batch", ["0"], "int"),
    (["sweep", "--system", "-o", "o"], "--sampled-steps", ["0"], "int"),
    (["sweep", "--system", "-o", "o"], "--stacks", ["0"], "int"),
    (["sweep", "--accuracy", "-o", "o"], "--samples", ["0"], "int"),
    (["sweep", "--accuracy", "-o", "o"], "--chunk", ["0"], "int"),
    (["sweep", "--perplexity", "-o", "o"], "--ppl-windows", ["0"], "int"),
    (["sweep", "--perplexity", "-o", "o"], "--ppl-score-len", ["0"], "int"),
    (["eval-quality", "-o", "o"], "--contexts", ["0", "63"], "int"),
    (["eval-quality", "-o", "o"], "--budgets", ["0"], "int"),
    (["eval-quality", "-o", "o"], "--seed", [], "int"),
    (["eval-quality", "-o", "o"], "--samples", ["0"], "int"),
    (["eval-quality", "-o", "o"], "--chunk", ["0"], "int"),
    (["eval-quality", "-o", "o"], "--ppl-windows", ["0"], "int"),
    (["eval-quality", "-o", "o"], "--ppl-score-len", ["0"], "int"),
    (["eval-quality", "-o", "o"], "--workers", ["0", "100000"], "int"),
    (["rtl", "regress"], "--budgets", ["0"], "int"),
    (["rtl", "regress"], "--prefills", ["0"], "int"),
    (["rtl", "regress"], "--seeds", [], "int"),
    (["rtl", "regress"], "--programs", [], "int"),
    (["rtl", "regress"], "--program-length", ["0"], "int"),
    (["rtl", "regress"], "--program", [], "int"),
    (["rtl", "regress"], "--numerics", [], "int"),
    (["rtl", "regress"], "--workers", ["0"], "int"),
    (["rtl", "regress"], "--idle", ["1.0", "2"], "float"),
    (["rtl", "regress"], "--backpressure", ["1.0", "-0.5"], "float"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--tokens", ["0", "100000000"], "int"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--budget", ["0"], "int"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--baud", ["0"], "int"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--layer", [], "int"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--kv-head", [], "int"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--step", [], "int"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--seed", [], "int"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--timeout", ["0", "-1"], "float"),
]

CHOICES: list[tuple[list[str], str]] = [
    (["compile", *SYN, "--out", "o"], "--mode"),
    (["compile", *SYN, "--out", "o"], "--placement"),
    (["eval", *SYN, "--out", "o"], "--policies"),
    (["eval", *SYN, "--out", "o"], "--objective"),
    (["sweep", "-o", "o"], "--models"),
    (["sweep", "-o", "o"], "--policies"),
    (["sweep", "-o", "o"], "--objective"),
    (["kv", "extract", "--tokens", "1,2", "-o", "x.npz"], "--dtype"),
    (["rtl", "verilog", "-o", "x.v"], "--size"),
    (["rtl", "verilog", "-o", "x.v"], "--design"),
    (["rtl", "cosim"], "--policy"),
    (["fpga", "build"], "--size"),
    (["fpga", "build"], "--router"),
    (["timing", "dense"], "--model"),
    (["system"], "--model"),
    (["system"], "--policies"),
    (["system"], "--objective"),
    (["system"], "--gpu"),
    (["system"], "--mappings"),
    (["system"], "--schedule"),
    (["sweep", "--system", "-o", "o"], "--mappings"),
    (["sweep", "--system", "-o", "o"], "--gpu"),
    (["sweep", "--accuracy", "-o", "o"], "--tasks"),
    (["eval-quality", "-o", "o"], "--policies"),
    (["eval-quality", "-o", "o"], "--tasks"),
    (["rtl", "regress"], "--policies"),
    (["rtl", "regress"], "--steps"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--size"),
    (["fpga", "run", "--port", "socket://127.0.0.1:1"], "--policy"),
]


def parse_level_cases() -> list[tuple[list[str], str]]:
    cases: list[tuple[list[str], str]] = []
    for argv, opt, extra, kind in OPTIONS:
        generic = INT_BAD if kind == "int" else FLOAT_BAD
        for v in dict.fromkeys(generic + extra):
            if opt == "--cost-programs" and v == "-1":
                continue                 # -1: every program (valid)
            cases.append(([*argv, f"{opt}={v}"], "option range/type"))
    for argv, opt in CHOICES:
        for v in ("foo", "", "DENSE"):
            cases.append(([*argv, opt, v], "unknown choice"))
    for argv in (["nosuch"], [], ["--bogus"], ["config"], ["config", "nosuch"],
                 ["timing"], ["kv"], ["rtl"], ["fpga"], ["model"], ["compile"],
                 ["compile", "--synthetic"], ["eval", "--bogus"], ["sweep", "--scheduler"],
                 ["sweep", "--scheduler", "http://x:1"], ["sweep", "--scheduler", "tcp://h:0"],
                 ["sweep", "--scheduler", "tcp://h:99999"], ["sweep", "--scheduler", "a b"],
                 ["kv", "extract", "-o", "x.npz"],
                 ["kv", "extract", "--prompt", "a", "--tokens", "1", "-o", "x.npz"],
                 ["model", "generate"], ["timing", "dense", "--lengths"],
                 ["config", "show", "--set"], ["demo", "--no-such"],
                 ["system", "--scheduler", "a b"], ["eval-quality", "--scheduler", "http://x:1"],
                 ["rtl", "regress", "--scheduler", "tcp://h:0"], ["fpga", "run"],
                 ["rtl", "nosuch"], ["fpga", "nosuch"], ["system", "--no-such"],
                 ["eval-quality", "--no-such"], ["rtl", "regress", "--steps", "2"]):
        cases.append((argv, "missing or unknown argument"))
    return cases


def test_parse_level_bad_values_are_one_line(box: Path, request: pytest.FixtureRequest) -> None:
    _track(request)
    results = []
    for argv, cat in parse_level_cases():
        results.append((argv, run_case(box, argv, bad=True, category=cat, timeout=20)))
    slow = [(a, r.seconds) for a, r in results if r.seconds > 2]
    assert not slow, f"parse-level errors must come before any work: {slow}"
    assert_clean(results)


def _option_actions() -> list[tuple[list[str], Any]]:
    """(sub-command path, argparse action) of every option of every sub-command."""
    import argparse

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from walk(sp, [*path, name])
            elif a.option_strings:
                yield path, a
    return list(walk(cli.build_parser(), []))


#: bad values every converter of a kind refuses, whatever its range
_UNIVERSAL = {"int": ["abc", "1.5", "nan", "1e400", "0x10", "99999999999999999999999", "-2"],
              "float": ["abc", "nan", "inf", "-inf", "1e400"],
              "budget_arg": ["0", "-1", "abc", "p0", "p1.5", "99999999999999999999999"],
              "address": ["a b", "http://x:1", "tcp://h:0", "tcp://h:99999"]}


def test_every_option_is_range_checked_at_parse_time(box: Path,
                                                     request: pytest.FixtureRequest) -> None:
    """Walk the parser of every sub-command (new ones included): no number option takes a bare
    ``int`` / ``float`` (whose range nobody checks before the work), and every typed option
    refuses the values bad for any range with one line naming the option."""
    _track(request)
    actions = _option_actions()
    bare = sorted({f"starc {' '.join(p)} {a.option_strings[-1]}" for p, a in actions
                   if a.type in (int, float) and a.choices is None})
    assert not bare, f"number options without a range check: {bare}"
    listed = {(" ".join(argv), opt) for argv, opt, _, _ in OPTIONS}
    results = []
    seen = set()
    for path, a in actions:
        kind = getattr(a.type, "__name__", None)
        vals = list(_UNIVERSAL.get(kind, []))
        if a.choices is not None and a.type is None:
            vals = ["foo", "", "DENSE"]
        elif a.choices is not None:
            vals = [v for v in vals + ["2"] if v not in map(str, a.choices)]
        if not vals or (" ".join(path), a.option_strings[-1]) in listed:
            continue
        opt = a.option_strings[-1]
        for v in vals:
            argv = [*path, f"{opt}={v}"]
            if tuple(argv) in seen or (opt == "--cost-programs" and v == "-1"):
                continue
            seen.add(tuple(argv))
            names = "/".join(a.option_strings)
            results.append((argv, run_case(box, argv, bad=True, category="option range/type",
                                           timeout=20, expect=f"argument {names}")))
    assert len(results) >= 100, len(results)
    slow = [(a, r.seconds) for a, r in results if r.seconds > 2]
    assert not slow, f"parse-level errors must come before any work: {slow}"
    assert_clean(results)


# ---- preset overrides and preset files ----------------------------------------------------------
OVERRIDES_BAD = [
    "timing.tCK_ns=inf", "timing.tCK_ns=nan", "timing.tCK_ns=-inf", "timing.tCK_ns=0",
    "timing.tCK_ns=-1", "timing.tCK_ns=1e-300", "timing.tRFC_ns=inf", "timing.tRFC_ns=nan",
    "timing.tRFC_ns=0", "timing.tRFC_ns=1e300", "timing.tRCD=0", "timing.tRCD=-4",
    "timing.tRCD=2.5", "timing.tRCD=abc", "timing.tRCD=", "timing.tRCD=inf",
    "timing.tRCD=99999999999999999999", "timing.tREFI=1", "timing.tRC=1", "timing.tCCD_L=1",
    "timing.tRRD_L=1", "timing.tBL=true", "energy.mac_pj=inf", "energy.mac_pj=nan",
    "energy.mac_pj=-1", "energy.mac_pj=1e300", "energy.act_pj_per_bit=abc",
    "energy.sfm_ops_per_element=-2", "organisation.channels=0", "organisation.sids=3",
    "organisation.bank_groups=64", "organisation.banks_per_group=16",
    "organisation.columns_per_row=128", "organisation.rows_per_bank=1048577",
    "organisation.column_bytes=3", "organisation.rows_per_bank=1e400", "pu.lanes=8",
    "pu.mult_format=fp32", "pu.acc_format=bf16", "pu.banks_per_pu=3", "pu.mac_pipeline=0",
    "timing.nosuch=1", "nosuch.x=1", "timing=1", "timing.a.b=1", "noequals", "=5",
    ".=1", "timing.tRCD==4",
]


def test_bad_overrides_are_refused_with_the_field(box: Path,
                                                  request: pytest.FixtureRequest) -> None:
    _track(request)
    results = []
    for ov in OVERRIDES_BAD:
        for cmd in (["config", "show"], ["timing", "dense", "--lengths", "1024"]):
            argv = [*cmd, "--set", ov]
            results.append((argv, run_case(box, argv, bad=True, category="preset override")))
    assert_clean(results)


def _preset_text(base: Path) -> str:
    return (base / "preset.toml").read_text()


def bad_preset_files(text: str) -> list[tuple[str, bytes]]:
    """Variants of a valid preset file that must be refused."""
    lines = text.splitlines()

    def without(sec: str) -> list[str]:
        i = next(k for k, ln in enumerate(lines) if ln.strip() == f"[{sec}]")
        j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("[")), len(lines))
        return lines[:i] + lines[j:]

    def top(extra: str, body: list[str]) -> bytes:
        first = next(k for k, ln in enumerate(body) if ln.startswith("["))
        return "\n".join(body[:first] + [extra] + body[first:]).encode()
    out: list[tuple[str, bytes]] = [
        ("empty", b""), ("not toml", b"this is [not toml\n"), ("binary", bytes(range(256))),
        ("latin-1", "name = 'caf\xe9'\n".encode("latin-1")),
        ("section is a number", top("timing = 5", without("timing"))),
        ("section is a string", top("energy = 'x'", without("energy"))),
        ("section is an array", top("pu = [1, 2]", without("pu"))),
        ("name not a string", "\n".join("name = 5" if ln.startswith("name ") else ln
                                         for ln in lines).encode()),
        ("unknown top key", ("bogus = 1\n" + text).encode()),
        ("tCK_ns inf", text.replace("tCK_ns", "tCK_ns = inf\n#", 1).encode()),
        ("tCK_ns nan", text.replace("tCK_ns", "tCK_ns = nan\n#", 1).encode()),
        ("tRFC_ns inf", text.replace("tRFC_ns", "tRFC_ns = inf\n#", 1).encode()),
        ("mac_pj inf", text.replace("mac_pj", "mac_pj = inf\n#", 1).encode()),
        ("array value", text.replace("tRCD", "tRCD = [1, 2]\n#", 1).encode()),
        ("table value", text.replace("tRCD", "tRCD = {a = 1}\n#", 1).encode()),
        ("date value", text.replace("tRCD", "tRCD = 1979-05-27\n#", 1).encode()),
    ]
    for sec in ("organisation", "timing", "pu", "energy"):
        out.append((f"missing [{sec}]", "\n".join(without(sec)).encode()))
    for key in ("tRCD", "tCK_ns", "lanes", "channels", "mac_pj"):
        kept = [ln for ln in lines if not ln.strip().startswith(f"{key} ")]
        out.append((f"missing {key}", "\n".join(kept).encode()))
    return out


def test_bad_preset_files_are_refused(box: Path, base: Path,
                                      request: pytest.FixtureRequest) -> None:
    _track(request)
    results = []
    for name, data in bad_preset_files(_preset_text(base)):
        f = box / "bad.toml"
        f.write_bytes(data)
        for cmd in (["config", "show", "bad.toml"], ["compile", *SYN, "--preset", "bad.toml",
                                                     "--out", "o"]):
            results.append((cmd, run_case(box, cmd, bad=True, category="preset file",
                                          key=f"{' '.join(cmd[:2])} preset file: {name}")))
        f.unlink()
    for argv in (["config", "show", "nosuch.toml"], ["config", "show", "no-such-preset"],
                 ["config", "show", "kvdir"], ["config", "show", "dir/"],
                 ["compile", *SYN, "--preset", "kvdir", "--out", "o"],
                 ["timing", "dense", "--preset", "nope"]):
        results.append((argv, run_case(box, argv, bad=True, category="preset file")))
    assert_clean(results)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sec=st.sampled_from(["timing", "energy", "organisation", "pu"]),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.integers(min_value=-2**70, max_value=2**70),
                       st.text(max_size=6)))
def test_hypothesis_overrides(box: Path, request: pytest.FixtureRequest, sec: str,
                              value: Any) -> None:
    """Any value for any field: exit 0 with a finite, strict-JSON result, or exit 2 with one line
    (never a traceback, never inf or nan in the output)."""
    _track(request)
    field_ = {"timing": "tCCD_AB", "energy": "mac_pj", "organisation": "rows_per_bank",
              "pu": "sfm_latency"}[sec]
    text = repr(value) if isinstance(value, float) else str(value)
    if "\x00" in text:
        return
    ov = f"{sec}.{field_}={text}"
    expect_ok = _override_ok(sec, value, text)
    argv = ["timing", "dense", "--lengths", "1024", "--json", "--set", ov]
    r = run_case(box, argv, bad=not expect_ok, category="preset override (hypothesis)",
                 json_out=True, timeout=30)
    assert not r.problems, (argv, r.problems)


def _override_ok(sec: str, value: Any, text: str) -> bool:
    """Whether the override is a valid preset value (an independent statement of the rules)."""
    try:
        v: Any = int(text, 10)
    except ValueError:
        try:
            v = float(text)
        except ValueError:
            return False
    if sec == "energy":
        return isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1e9
    if not isinstance(v, int) or not 0 < v < 2**31:
        return False
    if sec == "organisation":       # rows_per_bank: a power of two up to 2^20, enough rows
        return v & (v - 1) == 0 and 8 <= v <= 1 << 20   # L = 1024 at d = 128 needs 8 rows
    if sec == "timing":             # tCCD_AB
        return True
    return True                     # pu.sfm_latency


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.one_of(st.integers(-3, 70_000), st.sampled_from([10**7, 2**40]),
                                  st.text(max_size=4)), min_size=0, max_size=3),
       head_dim=st.one_of(st.sampled_from([32, 64, 128]), st.integers(-2, 300),
                          st.text(max_size=3)))
def test_hypothesis_timing_argv(box: Path, request: pytest.FixtureRequest, lengths: list[Any],
                                head_dim: Any) -> None:
    """Random `starc timing dense` argument vectors against an independent statement of what the
    default preset can hold (16 groups x 4 banks x 16 384 rows, 16 tokens per bank row; a score
    move's 32-bit mask covers at most 32 slots of a group row, so d = 32 (64 slots) is out)."""
    _track(request)
    texts = [str(x) for x in lengths]
    if any(t.startswith("-") and not t.lstrip("-").isdigit() or "\x00" in t for t in texts) \
            or "\x00" in str(head_dim):
        return
    argv = ["timing", "dense", "--json", f"--head-dim={head_dim}"]
    if texts:
        argv += ["--lengths", *texts]
    argv = [a for a in argv if a != ""] if texts else argv

    def as_int(t: str) -> int | None:
        try:
            return int(t.strip(), 10)
        except ValueError:
            return None
    d = as_int(str(head_dim))
    ls = [as_int(t) for t in texts] if texts else [1024, 2048, 4096, 8192, 16384, 32768]
    ok = "" not in texts and d is not None and d in (64, 128) and all(
        x is not None and 1 <= x <= 2**31 for x in ls)
    if ok:
        tpgr = 16 * (4 // (d // 32))                  # tokens per group row
        ok = all(2 * -(-x // (16 * tpgr)) <= 16384 for x in ls)   # key + value rows per bank
    r = run_case(box, argv, bad=not ok, category="argv (hypothesis)", json_out=True,
                 timeout=30, key="starc " + " ".join(argv))
    assert not r.problems, (argv, r.problems)
    if ok:
        rows = strict_loads(r.out)["rows"]
        assert [x["L"] for x in rows] == ls


# ---- KV files ---------------------------------------------------------------------------------
def _kv_arrays(base: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(base / "kv.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    return arrays, meta


def _write_npz(path: Path, arrays: dict[str, Any], meta: Any) -> None:
    with open(path, "wb") as fh:
        if meta is None:
            np.savez(fh, **arrays)
        else:
            np.savez(fh, meta=np.array(meta if isinstance(meta, str) else json.dumps(meta)),
                     **arrays)


META_BAD = {"n_layers": [0, -1, 4, "3", 3.0, None, True, 2**70, []],
            "n_q_heads": [0, 2, -3, "x", 1.5],
            "n_kv_heads": [0, 2, 4, None],
            "head_dim": [0, 32, 65, 128, "64"],
            "prefill_len": [0, -256, 255, 257, 10**12, None],
            "decode_steps": [-1, 2, 0, "1", 1.0],
            "schema": ["starc-kv/2", "", None, 1]}


def bad_kv_variants(arrays: dict[str, np.ndarray], meta: dict[str, Any]
                    ) -> list[tuple[str, dict[str, Any], Any]]:
    v: list[tuple[str, dict[str, Any], Any]] = []
    for key, vals in META_BAD.items():
        for val in vals:
            v.append((f"meta.{key}={val!r}", arrays, {**meta, key: val}))
        v.append((f"meta without {key}", arrays, {k: x for k, x in meta.items() if k != key}))
    v += [("meta is a list", arrays, [meta]), ("meta is not JSON", arrays, "{not json"),
          ("meta is a number", arrays, "5"), ("no meta", arrays, None)]
    for name in ("k_0", "v_1", "q_2"):
        a = arrays[name]
        v.append((f"{name} missing", {k: x for k, x in arrays.items() if k != name}, meta))
        v.append((f"{name} int32", {**arrays, name: a.astype(np.int32)}, meta))
        v.append((f"{name} float64", {**arrays, name: a.astype(np.float64)}, meta))
        v.append((f"{name} complex", {**arrays, name: a.astype(np.complex64)}, meta))
        v.append((f"{name} bool", {**arrays, name: a.astype(bool)}, meta))
        v.append((f"{name} rank 2", {**arrays, name: a.reshape(a.shape[0], -1)}, meta))
        v.append((f"{name} rank 4", {**arrays, name: a[..., None]}, meta))
        v.append((f"{name} one row short", {**arrays, name: a[:-1]}, meta))
        v.append((f"{name} head dim 32", {**arrays, name: a[..., :32]}, meta))
        v.append((f"{name} scalar", {**arrays, name: np.float16(1)}, meta))
        for bad, label in ((np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "-Inf"),
                           (1e6, "beyond FP16")):
            b = a.astype(np.float32).copy()
            b.flat[b.size // 2] = bad
            v.append((f"{name} with {label}", {**arrays, name: b}, meta))
    return v


def test_bad_kv_files_are_refused(box: Path, base: Path,
                                  request: pytest.FixtureRequest) -> None:
    _track(request)
    arrays, meta = _kv_arrays(base)
    results = []
    for i, (name, arr, m) in enumerate(bad_kv_variants(arrays, meta)):
        f = box / f"bad{i}.npz"
        _write_npz(f, arr, m)
        argv = ["compile", f.name, "--out", f"o{i}"]
        results.append((argv, run_case(box, argv, bad=True, category="KV file",
                                       key=f"compile KV: {name}")))
        f.unlink()
    raw = (base / "kv.npz").read_bytes()
    for name, data in (("empty file", b""), ("garbage", os.urandom(4096)),
                       ("truncated", raw[: len(raw) // 2]), ("zip header only", raw[:40]),
                       ("text", b"k_0,v_0\n1,2\n")):
        for suffix in (".npz", ".safetensors"):
            f = box / f"raw{suffix}"
            f.write_bytes(data)
            argv = ["eval", f.name, "--out", "ev"]
            results.append((argv, run_case(box, argv, bad=True, category="KV file",
                                           key=f"eval KV{suffix}: {name}")))
            f.unlink()
    for argv, label in ((["compile", "missing.npz", "--out", "o"], "missing file"),
                        (["compile", "notes.txt", "--out", "o"], "unknown container"),
                        (["compile", "kv.npz", "--synthetic", "--out", "o"], "both inputs"),
                        (["eval", "nosuchdir/", "--out", "o"], "missing folder"),
                        (["sweep", "--kv", "missing.npz", "-o", "o"], "sweep missing KV"),
                        (["sweep", "--kv", "notes.txt", "-o", "o"], "sweep foreign KV"),
                        (["rtl", "cosim", "--kv", "missing.npz"], "cosim missing KV"),
                        (["rtl", "cosim", "--kv", "notes.txt"], "cosim foreign KV")):
        results.append((argv, run_case(box, argv, bad=True, category="KV file",
                                       key=f"KV: {label}")))
    # a .npy folder without meta.json, with an unreadable array, with a bad meta.json
    d = box / "kvdir"
    (d / "meta.json").rename(d / "meta.bak")
    results.append((["compile", "kvdir"], run_case(box, ["compile", "kvdir", "--out", "o"],
                    bad=True, category="KV file", key="KV dir without meta.json")))
    (d / "meta.bak").rename(d / "meta.json")
    (d / "k_0.npy").write_bytes(b"garbage")
    results.append((["compile", "kvdir"], run_case(box, ["compile", "kvdir", "--out", "o"],
                    bad=True, category="KV file", key="KV dir with a garbage .npy")))
    assert_clean(results)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hypothesis_kv_files(box: Path, base: Path, request: pytest.FixtureRequest,
                             data: st.DataObject) -> None:
    """Random edits of a valid cache: the loader's verdict (accept or refuse) is checked against
    an independent statement of the schema, and the CLI keeps the contract either way."""
    _track(request)
    arrays, meta = _kv_arrays(base)
    name = data.draw(st.sampled_from(sorted(arrays)), label="tensor")
    edit = data.draw(st.sampled_from(["value", "dtype", "drop", "meta"]), label="edit")
    arr = dict(arrays)
    m = dict(meta)
    bad = True
    if edit == "value":
        x = data.draw(st.floats(width=32, allow_nan=True, allow_infinity=True), label="x")
        a = arr[name].astype(np.float32).copy()
        idx = data.draw(st.integers(0, a.size - 1), label="index")
        a.flat[idx] = x
        arr[name] = a
        bad = not (math.isfinite(x) and abs(x) <= 65504.0)
        what = f"{name}[{idx}]={x!r}"
    elif edit == "dtype":
        dt = data.draw(st.sampled_from(["float16", "float32", "float64", "int8", "int64",
                                        "uint16"]), label="dtype")
        arr[name] = arr[name].astype(dt)
        bad = dt not in ("float16", "float32")
        what = f"{name} as {dt}"
    elif edit == "drop":
        arr.pop(name)
        what = f"without {name}"
    else:
        key = data.draw(st.sampled_from(sorted(m)), label="key")
        val = data.draw(st.one_of(st.integers(-5, 600), st.text(max_size=3), st.none(),
                                  st.booleans()), label="val")
        m[key] = val
        bad = _meta_bad(meta, key, val)
        what = f"meta.{key}={val!r}"
    f = box / "h.npz"
    _write_npz(f, arr, m)
    argv = ["compile", "h.npz", "--out", "ho", "--force", "--json"]
    r = run_case(box, argv, bad=bad, category="KV file (hypothesis)", key=f"KV edit: {what}",
                 outputs=["ho"], json_out=True)
    f.unlink()
    shutil.rmtree(box / "ho", ignore_errors=True)
    assert not r.problems, (what, r.problems)


def _meta_bad(meta: dict[str, Any], key: str, val: Any) -> bool:
    if key == "schema":
        return val != "starc-kv/1"
    if key in ("model",) or key not in ("n_layers", "n_q_heads", "n_kv_heads", "head_dim",
                                        "prefill_len", "decode_steps"):
        return False                    # free-form metadata
    return val != meta[key] or isinstance(val, bool)


# ---- artifacts --------------------------------------------------------------------------------
def _rehash(art: Path, names: Sequence[str]) -> None:
    from starc.compiler.artifact import _manifest_digest, _sha256_file
    man = json.loads((art / "manifest.json").read_text())
    for n in names:
        man["files"][n]["sha256"] = _sha256_file(art / f"{n}.npy")
    man["digest"] = _manifest_digest(man)
    (art / "manifest.json").write_text(json.dumps(man))


def _edit_manifest(art: Path, fn: Any, redigest: bool = True) -> None:
    from starc.compiler.artifact import _manifest_digest
    man = json.loads((art / "manifest.json").read_text())
    man = fn(man)
    if redigest and isinstance(man, dict):
        man["digest"] = _manifest_digest(man)
    (art / "manifest.json").write_text(json.dumps(man))


def artifact_edits() -> list[tuple[str, Any]]:
    """Edits of a valid artifact folder; each must be refused by `starc eval ART`."""
    def arr_edit(name: str, fn: Any, rehash: bool = True) -> Any:
        def go(art: Path) -> None:
            a = np.load(art / f"{name}.npy")
            a = fn(a)
            np.save(art / f"{name}.npy", a)
            if rehash:
                _rehash(art, [name])
        return go

    def swap(a: np.ndarray, i: int = 0, j: int = 1) -> np.ndarray:
        a = a.copy()
        a[[i, j]] = a[[j, i]]
        return a

    def field_set(field_: str, value: Any, idx: int = 0) -> Any:
        def fn(a: np.ndarray) -> np.ndarray:
            a = a.copy()
            a[field_][idx] = value
            return a
        return fn

    edits: list[tuple[str, Any]] = [
        ("slot table entries swapped, hashes recomputed", arr_edit("slots", lambda a: swap(a, 5,
                                                                                          200))),
        ("slot table entry repeated", arr_edit("slots", lambda a: np.r_[a[:1], a[:-1]])),
        ("slot table position out of range", arr_edit("slots", field_set_flat(10**6))),
        ("slot table position -5", arr_edit("slots", field_set_flat(-5))),
        ("centroid row edited, hashes recomputed", arr_edit("centroids", lambda a: a + 0.5)),
        ("centroids truncated", arr_edit("centroids", lambda a: a[:-1])),
        ("centroids wrong width", arr_edit("centroids", lambda a: a[:, :32])),
        ("image row flipped", arr_edit("image_data", lambda a: a ^ np.uint16(1))),
        ("image rows swapped", arr_edit("image_data", lambda a: swap(a, 0, len(a) - 1))),
        ("image truncated", arr_edit("image_data", lambda a: a[:-1])),
        ("image as int32", arr_edit("image_data", lambda a: a.astype(np.int32))),
        ("image address edited", arr_edit("image_addr", lambda a: a + 1)),
        ("token map slot edited", arr_edit("tokens", field_set("slot", 15, 3))),
        ("token map row edited", arr_edit("tokens", field_set("row", 9999, 3))),
        ("token map position edited", arr_edit("tokens", field_set("position", 7, 0))),
        ("token map cluster edited", arr_edit("tokens", field_set("cluster", 3, 300))),
        ("cluster start edited", arr_edit("clusters", field_set("start", 10**6))),
        ("cluster size edited", arr_edit("clusters", field_set("size", 1))),
        ("cluster segment out of range", arr_edit("clusters", field_set("segment", 999))),
        ("clusters swapped", arr_edit("clusters", lambda a: swap(a, 0, 1))),
        ("block group out of range", arr_edit("blocks", field_set("group", 99))),
        ("block row negative", arr_edit("blocks", field_set("row", -1))),
        ("blocks swapped", arr_edit("blocks", lambda a: swap(a, 0, 1))),
        ("buffer group out of range", arr_edit("buffer", field_set("group", 99))),
        ("segment end edited", arr_edit("segments", field_set("end", 7))),
        ("head offsets edited", arr_edit("heads", field_set("block_off", 5, 1))),
        ("head count edited", arr_edit("heads", field_set("n_blocks", 10**6, 0))),
        ("head layer repeated", arr_edit("heads", field_set("layer", 0, 1))),
        ("head table truncated", arr_edit("heads", lambda a: a[:-1])),
        ("queries wrong shape", arr_edit("queries", lambda a: a[:, :, :1])),
        ("queries as float32", arr_edit("queries", lambda a: a.astype(np.float32))),
        ("array not rehashed", arr_edit("slots", lambda a: swap(a, 5, 200), rehash=False)),
    ]
    for key in ("schema", "preset", "config_hash", "input", "mode", "options", "geometry",
                "heads", "stats", "files", "digest"):
        edits.append((f"manifest without {key}", manifest_edit(
            lambda m, k=key: {x: y for x, y in m.items() if x != k}, redigest=key != "digest")))
        edits.append((f"manifest {key} = 5", manifest_edit(lambda m, k=key: {**m, k: 5},
                                                           redigest=key != "digest")))
    edits += [
        ("manifest not JSON", lambda art: (art / "manifest.json").write_text("{oops")),
        ("manifest is a list", lambda art: (art / "manifest.json").write_text("[1]")),
        ("manifest not UTF-8", lambda art: (art / "manifest.json").write_bytes(b"\xff\xfe")),
        ("manifest edited, digest stale", manifest_edit(lambda m: {**m, "mode": "global"},
                                                        redigest=False)),
        ("manifest mode unknown", manifest_edit(lambda m: {**m, "mode": "bogus"})),
        ("manifest input without meta", manifest_edit(
            lambda m: {**m, "input": {"hash": m["input"]["hash"]}})),
        ("manifest input meta broken", manifest_edit(
            lambda m: {**m, "input": {**m["input"], "meta": {**m["input"]["meta"],
                                                             "head_dim": 0}}})),
        ("manifest input hash changed", manifest_edit(
            lambda m: {**m, "input": {**m["input"], "hash": "0" * 64}})),
        ("manifest files entry missing", manifest_edit(
            lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "slots"}})),
        ("manifest head list short", manifest_edit(lambda m: {**m, "heads": m["heads"][:-1]})),
        ("manifest geometry changed", manifest_edit(
            lambda m: {**m, "geometry": {**m["geometry"], "tokens_per_group_row": 16}})),
        ("manifest preset unknown", manifest_edit(
            lambda m: {**m, "preset": "nosuch", "config_hash": "x"})),
        ("array file missing", lambda art: (art / "slots.npy").unlink()),
        ("array file garbage", lambda art: ((art / "tokens.npy").write_bytes(b"\x93NUMPY"),
                                            _rehash(art, ["tokens"]))),
        ("array file is a folder", lambda art: ((art / "blocks.npy").unlink(),
                                                (art / "blocks.npy").mkdir())),
    ]
    return edits


def field_set_flat(value: int) -> Any:
    def fn(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a.flat[7] = value
        return a
    return fn


def manifest_edit(fn: Any, redigest: bool = True) -> Any:
    return lambda art: _edit_manifest(art, fn, redigest)


def test_corrupted_artifacts_are_refused(box: Path, base: Path,
                                         request: pytest.FixtureRequest) -> None:
    _track(request)
    results = []
    for i, (name, edit) in enumerate(artifact_edits()):
        art = box / f"a{i}"
        shutil.copytree(base / "art", art)
        edit(art)
        argv = ["eval", art.name, "--budgets", "64", "--policies", "starc-row",
                "--cost-programs", "1", "--out", f"e{i}"]
        results.append((argv, run_case(box, argv, bad=True, category="artifact",
                                       key=f"artifact: {name}")))
        shutil.rmtree(art)
    assert_clean(results)


def test_head_dim_the_planner_cannot_evaluate_is_refused_at_compile(
        box: Path, request: pytest.FixtureRequest) -> None:
    _track(request)
    results = []
    for d in ("32", "48", "96"):
        argv = ["compile", "--synthetic", "--layers", "3", "--prefill", "64", "--head-dim", d,
                "--q-heads", "1", "--kv-heads", "1", "--out", "o"]
        results.append((argv, run_case(box, argv, bad=True, category="compile-time rule")))
    for argv in (["compile", *SYN, "--mode", "row-aligned", "--cluster-tokens", "20", "--out",
                  "o"],
                 ["compile", *SYN, "--mode", "artifact", "--window", "50", "--out", "o"],
                 ["compile", *SYN, "--dense-layers", "7", "--out", "o"],
                 ["compile", "--synthetic", "--q-heads", "5", "--kv-heads", "3", "--out", "o"],
                 ["compile", "--synthetic", "--prefill", "10000000", "--out", "o"],
                 ["compile", "--synthetic", "--layers", "4000", "--prefill", "4096", "--out", "o"],
                 ["compile", "--synthetic", "--q-heads", "4000", "--kv-heads", "1",
                  "--decode-steps", "100000", "--out", "o"],
                 ["eval", *SYN, "--eval-layers", "0", "--out", "o"],
                 ["eval", *SYN, "--eval-layers", "1", "--out", "o"],
                 ["eval", *SYN, "--eval-layers", "9", "--out", "o"],
                 ["eval", *SYN, "--eval-steps", "1", "--out", "o"],
                 ["eval", *SYN, "--sparq-r", "65", "--out", "o"],
                 ["eval", *SYN, "--dense-layers", "0", "1", "2", "--out", "o"],
                 ["eval", "--synthetic", "--decode-steps", "0", "--layers", "3", "--prefill",
                  "64", "--out", "o"],
                 ["timing", "dense", "--lengths", "100000000"],
                 ["timing", "dense", "--head-dim", "48"],
                 ["timing", "dense", "--head-dim", "512"],
                 ["sweep", "--contexts", "100000000", "-o", "o"],
                 ["sweep", "--presets", "nosuch", "-o", "o"],
                 ["sweep", "--models", "mistral-7b", "--layers", "4000", "-o", "o"],
                 ["rtl", "cosim", "--layer", "99"],
                 ["rtl", "cosim", "--kv-head", "5"],
                 ["rtl", "cosim", "--step", "50"],
                 ["rtl", "cosim", "--kv", "kv.npz", "--full"],
                 ["demo", "--set", "organisation.rows_per_bank=64", "-o", "o"],
                 ["kv", "extract", "--tokens", "1,x", "-o", "x.npz"],
                 ["kv", "extract", "--tokens", "1,99999999", "-o", "x.npz"],
                 ["kv", "extract", "--passkey", "123", "--tokens", "1", "-o", "x.npz"],
                 ["kv", "extract", "--text-file", "missing.txt", "-o", "x.npz"],
                 ["kv", "extract", "--tokens", "1", "-o", "x.txt"],
                 ["model", "generate", "--text-file", "missing.txt"],
                 ["model", "generate", "--tokens", "1", "--max-new-tokens", "9000"],
                 ["timing", "dense", "--heads-per-channel", "9"],
                 ["timing", "dense", "--model", "attacc", "--lengths", "100"],
                 ["timing", "dense", "--model", "attacc", "--heads-per-channel", "9"],
                 ["system", "--kv", "missing.npz"], ["system", "--kv", "notes.txt"],
                 ["system", "--lin", "100000000"], ["system", "--steps", "9", "--lout", "4"],
                 ["system", "--batch", "4096", "--lin", "32000"],
                 ["system", "--cache-dir", "notes.txt"],
                 ["sweep", "--system", "--kv", "missing.npz", "-o", "o"],
                 ["sweep", "--accuracy", "--budgets", "p0.9", "-o", "o"],
                 ["sweep", "--accuracy", "--presets", "attacc-hbm3-5.2", "attacc-hbm3-5.2",
                  "-o", "o"],
                 ["eval-quality", "--cache-dir", "notes.txt", "-o", "o"],
                 ["eval-quality", "--text", "missing.txt", "-o", "o"],
                 ["eval-quality", "--contexts", "100000", "-o", "o"],
                 ["eval-quality", "--contexts", "100000", "--no-perplexity", "-o", "o"],
                 ["rtl", "regress", "--scheduler", "tcp://127.0.0.1:1"],
                 ["fpga", "run", "--port", "nosuch-tty"],
                 ["fpga", "run", "--port", "socket://127.0.0.1:1"],
                 ["fpga", "run", "--port", "socket://127.0.0.1:1", "--kv", "missing.npz"],
                 ["fpga", "run", "--port", "socket://127.0.0.1:1", "--kv", "notes.txt"],
                 ["fpga", "run", "--port", "socket://127.0.0.1:1", "--layer", "99"]):
        results.append((argv, run_case(box, argv, bad=True, category="semantic check",
                                       timeout=30)))
    assert_clean(results)


# ---- output safety ----------------------------------------------------------------------------
def _own(box: Path, name: str, command: list[str]) -> None:
    r = run_case(box, [*command, "--out" if command[0] != "sweep" else "-o", name], bad=False,
                 category="good", outputs=[name, "sc"])
    assert not r.problems, r.problems


def test_outputs_are_never_clobbered(box: Path, request: pytest.FixtureRequest) -> None:
    _track(request)
    results = []
    comp = ["compile", "kv.npz"]
    ev = ["eval", "kv.npz", "--budgets", "64", "--policies", "starc-row", "--cost-programs", "1"]
    sw = ["sweep", "--contexts", "256", "--layers", "3", "--steps", "1", "--budgets", "64",
          "--policies", "starc-row", "--cost-programs", "1", "--workers", "1", "--cache-dir",
          "sc"]
    (box / "userdir").mkdir()
    (box / "userdir" / "data.csv").write_text("1,2\n")
    (box / "afile").write_text("x")
    os.symlink("nowhere", box / "dangling")
    os.symlink("userdir", box / "dirlink")
    (box / "empty").mkdir()
    _own(box, "compiled", comp)
    _own(box, "evald", ev)

    def case(argv: list[str], bad: bool, label: str, outputs: Sequence[str] = ()) -> None:
        results.append((argv, run_case(box, argv, bad=bad, category="output safety",
                                       key=f"output: {label}: {' '.join(argv)}",
                                       outputs=outputs)))
    for cmd, flag in ((comp, "--out"), (ev, "--out"), (sw, "-o"),
                      (["demo"], "-o"), (["kv", "extract", "--tokens", "1,2"], "-o")):
        name = " ".join(cmd[:1] if cmd[0] != "kv" else cmd[:2])
        for target, label in (("userdir", "non-empty folder starc did not write"),
                              ("afile", "a file where a folder goes"),
                              ("dangling", "a dangling symbolic link"),
                              ("dirlink", "a symbolic link to a folder"),
                              ("afile/sub", "below a file"), ("", "empty name"),
                              (".", "the current folder"), ("notes.txt/x", "below a file 2")):
            for force in ([], ["--force"]):
                case([*cmd, *force, flag, target], True, f"{name} {label}")
    # output = input, output inside input, input inside output
    case(["compile", "kvdir", "--out", "kvdir"], True, "compile onto its input")
    case(["compile", "kvdir", "--out", "kvdir/sub"], True, "compile inside its input")
    case(["eval", "art", "--out", "art"], True, "eval onto its input")
    case(["eval", "art", "--out", "art/x"], True, "eval inside its input")
    case(["compile", "kv.npz", "--out", "kv.npz"], True, "compile onto its input file")
    case(["compile", "compiled/../kv.npz", "--out", "kv.npz", "--force"], True,
         "compile onto its input (other spelling)")
    case(["compile", *SYN, "--preset", "compiled/p.toml", "--out", "compiled"], True,
         "preset inside the output")
    case(["sweep", *sw[1:], "-o", "sc"], True, "sweep report onto its cache")
    case(["sweep", *sw[1:-2], "--cache-dir", "evald/c", "-o", "evald", "--force"], True,
         "sweep cache inside its report")
    # another command's output, a changed output, an output with a user file in it
    case([*comp, "--out", "evald"], True, "compile onto eval's output without --force")
    case([*ev, "--out", "compiled"], True, "eval onto compile's output without --force")
    (box / "compiled" / "tokens.npy").touch()
    case([*comp, "--out", "compiled"], True, "compile onto its changed output")
    case([*comp, "--out", "compiled", "--force"], False, "compile --force onto its changed output",
         outputs=["compiled"])
    case([*comp, "--out", "compiled"], False, "compile onto its own output", outputs=["compiled"])
    case([*ev, "--out", "compiled", "--force"], False, "eval --force onto compile's output",
         outputs=["compiled"])
    (box / "evald" / "mine.txt").write_text("keep")
    case([*ev, "--out", "evald", "--force"], True, "eval --force onto its output holding a "
                                                    "user file")
    case([*comp, "--out", "empty"], False, "compile into an empty folder", outputs=["empty"])
    case([*comp, "--out", "new/deeper/out"], False, "compile into new folders",
         outputs=["new"])
    # single files: an existing file needs --force, a folder where a file goes is refused
    (box / "x.v").write_text("module user; endmodule\n")
    case(["rtl", "verilog", "-o", "x.v"], True, "rtl verilog onto an existing file")
    case(["rtl", "verilog", "-o", "userdir"], True, "rtl verilog onto a folder")
    case(["rtl", "verilog", "-o", "userdir/"], True, "rtl verilog onto a folder/")
    case(["rtl", "verilog", "-o", "afile/x.v"], True, "rtl verilog below a file")
    case(["rtl", "verilog", "-o", "dangling", "--size", "nosuch"], True, "rtl verilog bad size")
    case(["kv", "extract", "--tokens", "1", "-o", "kv.npz"], True, "kv extract onto a file")
    case(["kv", "extract", "--tokens", "1", "-o", "kvdir"], True, "kv extract onto a KV dir "
                                                                  "it did not write")
    case(["rtl", "regress", "-o", "x.v"], True, "rtl regress onto an existing file")
    case(["rtl", "regress", "-o", "userdir"], True, "rtl regress onto a folder")
    case(["rtl", "regress", "-o", "afile/r.json"], True, "rtl regress below a file")
    for cmd in (["system"], ["eval-quality"], ["sweep", "--system"], ["sweep", "--accuracy"]):
        for target, label in (("userdir", "non-empty folder starc did not write"),
                              ("afile", "a file where a folder goes"),
                              ("afile/sub", "below a file"), ("kv.npz", "onto an input"),
                              ("compiled", "another command's output")):
            case([*cmd, "-o", target], True, f"{' '.join(cmd)} {label}")
    (box / "d.npz").mkdir()
    case(["kv", "extract", "--tokens", "1", "-o", "d.npz"], True, "kv extract onto a folder "
                                                                  "named .npz")
    assert_clean(results)


def test_stale_temporaries_of_dead_processes_are_removed(box: Path,
                                                         request: pytest.FixtureRequest) -> None:
    _track(request)
    dead = _dead_pid()
    live = os.getpid()
    stale = box / f".starc-tmp-{dead}-0badf00d-out"
    stale.mkdir()
    (stale / "half.npy").write_bytes(b"x" * 100)
    (box / f".starc-tmp-{dead}-0badf00e-x.v").write_text("half")
    # an old output moved aside by a killed swap, its output missing: restored
    _own(box, "prev", ["compile", "kv.npz"])
    os.rename(box / "prev", box / f".starc-old-{dead}-0badf010-prev")
    keep = box / f".starc-tmp-{live}-0badf00f-out"     # a live process's: left alone
    keep.mkdir()
    r = run_case(box, ["compile", "kv.npz", "--out", "out"], bad=False, category="good",
                 outputs=["out", stale.name, f".starc-tmp-{dead}-0badf00e-x.v",
                          f".starc-old-{dead}-0badf010-prev", "prev"],
                 allow_left=[keep.name], key="stale temporaries of a dead process")
    assert not r.problems, r.problems
    assert not stale.exists() and not (box / f".starc-tmp-{dead}-0badf00e-x.v").exists()
    assert keep.exists(), "a live process's temporary was removed"
    assert (box / "prev" / "starc-output.json").is_file(), "the moved-aside output was not restored"
    keep.rmdir()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---- good inputs: exit 0, valid output ----------------------------------------------------------
def test_good_inputs_give_valid_output(box: Path, request: pytest.FixtureRequest) -> None:
    _track(request)
    results = []
    ev = ["--budgets", "64", "--policies", "dense", "starc-row", "sparq", "--cost-programs", "1"]
    for argv, outs in (
            (["config", "show", "--json"], []), (["config", "list", "--json"], []),
            (["config", "show", "preset.toml", "--json"], []),
            (["config", "show", "--set", "timing.tCK_ns=0.5", "--json"], []),
            (["timing", "dense", "--lengths", "1", "--json"], []),
            (["timing", "dense", "--lengths", "1024", "--head-dim", "64", "--json"], []),
            (["compile", "kv.safetensors", "--out", "c1", "--json"], ["c1"]),
            (["compile", "kvdir", "--mode", "artifact", "--out", "c2", "--json"], ["c2"]),
            (["compile", "kv.npz", "--mode", "dense", "--out", "c3", "--json"], ["c3"]),
            (["compile", *SYN, "--mode", "global", "--out", "c4", "--json"], ["c4"]),
            (["eval", "kv.npz", *ev, "--sparq-r", "1", "--out", "e1", "--json"], ["e1"]),
            (["eval", "kv.npz", *ev, "--sparq-r", "64", "--out", "e2", "--json"], ["e2"]),
            (["eval", "art", "--budgets", "64", "--policies", "starc-row", "--cost-programs",
              "0", "--out", "e3", "--json"], ["e3"]),
            (["eval", "kv.npz", *ev, "--eval-layers", "2", "--budgets", "100000", "--out", "e4",
              "--json"], ["e4"]),
            (["eval", "kv.npz", *ev, "--dense-layers", "--out", "e5", "--json"], ["e5"]),
            (["--debug", "config", "show", "--json"], []),
    ):
        results.append((argv, run_case(box, argv, bad=False, category="good", outputs=outs,
                                       json_out=True)))
    assert_clean(results)


def test_all_zero_queries_and_keys_give_finite_figures(box: Path,
                                                       request: pytest.FixtureRequest) -> None:
    """eval on all-zero q/k (and v) writes finite numbers (SparQ's temperature 0/0 was NaN)."""
    _track(request)
    results = []
    for what in ("q", "qk", "qkv", "v"):
        cc = synthetic_kv(n_layers=3, n_q_heads=3, n_kv_heads=1, head_dim=64, prefill_len=256,
                          decode_steps=1, seed=4)
        for t in what:
            for a in getattr(cc, t):
                a[...] = 0
        save_kv(cc, box / f"z{what}.npz")
        argv = ["eval", f"z{what}.npz", "--budgets", "64", "--cost-programs", "1", "--out",
                f"ez{what}", "--json"]
        r = run_case(box, argv, bad=False, category="good", outputs=[f"ez{what}"],
                     json_out=True, key=f"eval with all-zero {what}")
        results.append((argv, r))
        if r.rc == 0:
            rows = strict_loads(r.out)["rows"]
            assert all(isinstance(x["mass_recall"], float) for x in rows)
    assert_clean(results)


# ---- real processes: signals, argv bytes, closed stdout, Dask ----------------------------------
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def _proc(argv: Sequence[Any], cwd: Path, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "starc.cli", *map(os.fsencode, argv)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            start_new_session=True, **kw)


def run_proc(root: Path, argv: Sequence[Any], *, bad: bool, category: str, key: str,
             outputs: Sequence[str] = (), timeout: float = 60) -> Result:
    before = snapshot(root)
    t0 = time.perf_counter()
    p = _proc(argv, root)
    hang = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        hang = True
    res = Result(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                 time.perf_counter() - t0, [])
    res.problems = judge(root, before, res, bad=bad, outputs=outputs, json_out=False,
                         allow_left=(), hang=hang, expect=None)
    REG.add(key, category, bad, res.problems)
    return res


def test_real_process_edge_cases(box: Path, request: pytest.FixtureRequest) -> None:
    _track(request)
    results = []
    for argv, key in (
            ([b"model", b"generate", b"--prompt", b"caf\xe9"], "non-UTF-8 --prompt"),
            ([b"compile", b"k\xff.npz", b"--out", b"o"], "non-UTF-8 file name"),
            ([b"config", b"show", b"--set", b"timing.tRCD=\xff"], "non-UTF-8 override"),
            (["compile", "--synthetic", "--prefill", "10000000", "--out", "o"],
             "capacity before generation"),
            (["rtl", "cosim", "--idle", "2.0"], "cosim --idle 2.0 before any build"),
            (["rtl", "cosim", "--policy", "foo"], "cosim --policy foo"),
            # errors raised as starc.cli.UserError by sub-command modules (python -m starc.cli)
            (["sweep", "--cache-dir", "kv.npz", "-o", "s"], "sweep --cache-dir FILE"),
            (["eval", "kv.npz", "--eval-layers", "0", "--out", "e"], "eval a dense layer"),
            (["compile", "kv.npz", "--synthetic", "--out", "o"], "compile a file and --synthetic"),
    ):
        r = run_proc(box, argv, bad=True, category="real process", key=key, timeout=30)
        results.append((argv, r))
        assert r.seconds < 15, (key, r.seconds)
    # --debug shows the traceback of an expected error, then the one line
    p = _proc(["--debug", "config", "show", "--set", "timing.tRCD=0"], box)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and b"Traceback" in err and err.strip().splitlines()[-1].startswith(
        b"starc: error: timing.tRCD")
    # a closed stdout (`starc ... | head -0`) is not a traceback
    p = subprocess.Popen([sys.executable, "-m", "starc.cli", "config", "list"], cwd=box,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    p.stdout.close()
    err = p.stderr.read()
    p.wait(timeout=30)
    assert b"Traceback" not in err, err
    REG.add("stdout closed early", "real process", False,
            [] if b"Traceback" not in err else ["traceback: closed stdout"])
    assert_clean(results)


@contextlib.contextmanager
def fake_server(mode: str) -> Iterator[int]:
    """A TCP port that accepts and stays silent (``silent``), greets like SSH (``banner``), or
    sends an HTTP-like reply (``http``)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            conns.append(c)
            with contextlib.suppress(OSError):
                if mode == "banner":
                    c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                elif mode == "http":
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                elif mode == "huge":
                    c.sendall((2**62).to_bytes(8, "little") + b"x" * 64)
                elif mode == "close":
                    c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield port
    finally:
        stop.set()
        t.join()
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()
        srv.close()


def test_dask_scheduler_failures_are_fast_and_one_line(
        box: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    _track(request)
    from starc.sweep import engine
    monkeypatch.setattr(engine, "DASK_TIMEOUT_S", 1.5)
    results = []
    sw = ["sweep", "--contexts", "256", "--layers", "3", "--steps", "1", "--budgets", "64",
          "--policies", "starc-row", "--workers", "1", "--cache-dir", "sc", "-o", "o"]
    for mode in ("silent", "banner", "http", "huge", "close"):
        with fake_server(mode) as port:
            argv = [*sw, "--scheduler", f"tcp://127.0.0.1:{port}"]
            r = run_case(box, argv, bad=True, category="Dask scheduler",
                         key=f"sweep --scheduler: a {mode} service", timeout=20)
            results.append((argv, r))
            assert r.seconds < 5, (mode, r.seconds)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                     # nothing listens there now: refused
    argv = [*sw, "--scheduler", f"127.0.0.1:{port}"]
    results.append((argv, run_case(box, argv, bad=True, category="Dask scheduler",
                                   key="sweep --scheduler: a refused port", timeout=20)))
    argv = [*sw, "--scheduler", "tcp://no-such-host.invalid:8786"]
    results.append((argv, run_case(box, argv, bad=True, category="Dask scheduler",
                                   key="sweep --scheduler: an unknown host", timeout=20)))
    assert_clean(results)


# ---- kill tests ---------------------------------------------------------------------------------
def _tmp_entries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TMP_MARKERS)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_during(argv: Sequence[str], root: Path, sig: int, *, when: str,
                 timeout: float = 90) -> tuple[int, bytes]:
    """Start ``starc ARGV``; send ``sig`` to its process group when ``when`` is ``work`` (after
    0.8 s, and once the process has had 0.25 s of CPU: the signal handlers are installed after
    about 0.1 s of it, at the start of ``starc.cli.main``, which a loaded machine can push past
    0.8 s of wall time) or
    ``write`` (as soon as its temporary output exists). Returns (rc, stderr)."""
    p = _proc(argv, root)
    t0 = time.perf_counter()
    hit = False
    while p.poll() is None and time.perf_counter() - t0 < timeout:
        if (when == "work" and time.perf_counter() - t0 > 0.8
                and _cpu_seconds(p.pid) >= 0.25) or \
                (when == "write" and _tmp_entries(root)):
            os.killpg(p.pid, sig)
            hit = True
            break
        time.sleep(0.002)
    _, err = p.communicate(timeout=timeout)
    assert hit, f"the run ended before it could be killed ({when}): {err.decode()[-300:]}"
    return p.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
@pytest.mark.parametrize("what", ["compile", "sweep"])
def test_killed_runs_keep_the_previous_output(box: Path, request: pytest.FixtureRequest,
                                              sig: int, what: str) -> None:
    """SIGTERM / SIGKILL mid-run (while working, and while writing): the previous output is
    intact; SIGTERM leaves no temporary; after SIGKILL the next run removes the stale one."""
    _track(request)
    if what == "compile":
        argv = ["compile", "--synthetic", "--layers", "12", "--prefill", "4096", "--out", "out"]
        quick = ["compile", *SYN, "--out", "out"]
    else:
        argv = ["sweep", "--contexts", "2048", "--layers", "3", "--steps", "1", "--budgets",
                "256", "--policies", "dense", "starc-row", "--cost-programs", "2", "--workers",
                "2", "--cache-dir", "sc", "-o", "out"]
        quick = ["sweep", "--contexts", "256", "--layers", "3", "--steps", "1", "--budgets", "64",
                 "--policies", "starc-row", "--cost-programs", "1", "--workers", "1",
                 "--cache-dir", "sc", "-o", "out"]
    r = run_case(box, quick, bad=False, category="good", outputs=["out", "sc"],
                 key=f"kill test setup: {what}")
    assert not r.problems, r.problems
    prev = snapshot(box / "out")
    problems = []
    for when in ("work", "write"):
        shutil.rmtree(box / "sc", ignore_errors=True)        # so the sweep has work to do
        rc, err = _kill_during(argv, box, sig, when=when)
        if sig == signal.SIGTERM:
            if rc != 143 or err.strip().splitlines()[-1:] != [b"starc: terminated"] or \
                    b"Traceback" in err:
                problems.append(f"SIGTERM during {when}: rc {rc}, stderr {err[-300:]!r}")
            if _tmp_entries(box):
                problems.append(f"leftover: SIGTERM during {when} left {_tmp_entries(box)}")
        if snapshot(box / "out") != prev:
            problems.append(f"lost: the previous output changed after a kill during {when}")
        problems += check_output_folder(box / "out")
    # the next run finds and removes whatever a killed run left
    r = run_case(box, quick, bad=False, category="good", outputs=["out", "sc"],
                 key=f"run after a killed {what} ({signal.Signals(sig).name})")
    problems += r.problems
    if _tmp_entries(box) or (box / "sc").exists() and _tmp_entries(box / "sc"):
        problems.append(f"leftover: stale temporaries after the next run: {_tmp_entries(box)}")
    REG.add(f"kill {what} with {signal.Signals(sig).name} while working and while writing",
            "signal", True, problems)
    assert not problems, problems


# ---- the totals -------------------------------------------------------------------------------
def test_zz_totals(request: pytest.FixtureRequest) -> None:
    """The suite's verdict: every case kept the contract, and (when the whole module ran) at
    least 300 distinct bad inputs were tried."""
    s = REG.summary()
    broken = {k: v["problems"] for k, v in REG.cases.items() if v["problems"]}
    assert not broken, f"{len(broken)} cases broke the contract: {list(broken.items())[:10]}"
    all_tests = {n.originalname for n in request.session.items
                 if n.module is request.module and n.originalname != "test_zz_totals"}
    if all_tests <= REG.tests_run:
        assert s["bad"] >= 300, s

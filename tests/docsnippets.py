"""Runnable snippets of README.md and docs/*.md: found, checked and run by tests/sw/test_docs.py
(and tests/rtl/test_docs_rtl.py, tests/fpga/test_docs_fpga.py for their tiers).

Convention (docs/outputs.md, "Docs that cannot rot"): a fenced block whose info string is

- ``sh runnable`` runs every command of the block, in order, with bash in one fresh temporary
  folder (``starc`` is the checkout's; ``.venv``, ``bench`` and ``tests`` are linked into it); a
  line ending in ``\\`` continues on the next; ``#`` starts a comment; every command must exit 0;
- ``python runnable`` runs the block with the checkout's Python in such a folder; it must exit 0
  (a snippet that states a fact of the docs asserts it);
- a third word names the tier when the block needs more than Python: ``slow`` (the SmolLM2 model
  or a long run: in ``make test``, not ``make test-fast``), ``rtl`` (Verilator), ``fpga`` (Yosys).

A block whose real commands take long is preceded by a comment with its short version, which
runs instead::

    <!-- runnable short:
    starc kv extract --passkey-length 256 --decode-steps 1 -o kv.npz
    -->

A short version has one command per command of the block, each the same command (the words
before the first option) with every option the long one shows (values may differ, options that
shrink the work may be added); for Python, the same code with other numbers. So every command
and option the page shows runs.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
TIERS = ("sw", "slow", "rtl", "fpga")

_FENCE = re.compile(r"^(```+)\s*(\S*)\s*(.*)$")
_SHORT = re.compile(r"<!--\s*runnable short:\s*\n(.*?)-->\s*$", re.S)


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int                 # 1-based line of the opening fence
    lang: str                 # sh | python
    tier: str
    body: str
    short: str | None         # the short version that runs instead, if any

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def code(self) -> str:
        return self.short if self.short is not None else self.body


def snippets(pages: tuple[Path, ...] = PAGES) -> list[Snippet]:
    """Every runnable block of ``pages`` (see the module docstring)."""
    out = []
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = _FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            fence, lang, rest = m.groups()
            j = i + 1
            while j < len(lines) and not lines[j].startswith(fence):
                j += 1
            words = rest.split()
            if words and words[0] == "runnable":
                if lang not in ("sh", "python"):
                    raise ValueError(f"{page}:{i + 1}: runnable blocks are sh or python, not "
                                     f"{lang!r}")
                tier = words[1] if len(words) > 1 else "sw"
                if tier not in TIERS:
                    raise ValueError(f"{page}:{i + 1}: unknown tier {tier!r} ({TIERS})")
                before = "\n".join(lines[max(0, i - 40):i])
                k = before.rfind("<!-- runnable short:")      # the comment right before the block
                sm = _SHORT.match(before, k) if k >= 0 else None
                short = sm.group(1) if sm and before.rstrip().endswith("-->") else None
                out.append(Snippet(page, i + 1, lang, tier, "\n".join(lines[i + 1:j]) + "\n",
                                   None if short is None else short.strip() + "\n"))
            i = j + 1
    return out


def commands(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blanks dropped."""
    out, cur = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if cur:
            line = cur + " " + line.lstrip()
            cur = ""
        if line.endswith("\\"):
            cur = line[:-1].rstrip()
            continue
        code = _strip_comment(line).strip()
        if code:
            out.append(code)
    if cur.strip():
        out.append(cur.strip())
    return out


def _strip_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a shell comment (not inside quotes)."""
    in_s = in_d = False
    for k, ch in enumerate(line):
        if ch == "'" and not in_d:
            in_s = not in_s
        elif ch == '"' and not in_s:
            in_d = not in_d
        elif ch == "#" and not in_s and not in_d and (k == 0 or line[k - 1].isspace()):
            return line[:k]
    return line


def _head_and_options(cmd: str) -> tuple[list[str], set[str]]:
    toks = shlex.split(cmd)
    head = []
    for t in toks:
        if t.startswith("-"):
            break
        head.append(t)
    # the command words: program and sub-commands (lower-case words), not file arguments
    words = []
    for t in head:
        if words and ("/" in t or "." in t):
            break
        words.append(t)
    return words, {t.split("=", 1)[0] for t in toks if t.startswith("-")}


def check_short(s: Snippet) -> None:
    """Raise AssertionError if the short version of ``s`` does not follow the convention."""
    if s.short is None:
        return
    if s.lang == "sh":
        long, short = commands(s.body), commands(s.short)
        assert len(long) == len(short), (
            f"{s.id}: the short version has {len(short)} commands, the block {len(long)}")
        for lc, sc in zip(long, short, strict=True):
            lw, lo = _head_and_options(lc)
            sw, so = _head_and_options(sc)
            assert lw == sw, f"{s.id}: short `{sc}` is not the command `{' '.join(lw)}`"
            assert lo <= so, (f"{s.id}: short `{sc}` leaves out the options {sorted(lo - so)} of "
                              f"the block's `{lc}`")
    else:
        def shape(text: str) -> list[tuple[int, str]]:
            toks = tokenize.generate_tokens(io.StringIO(text).readline)
            return [(t.type, "N" if t.type == tokenize.NUMBER else t.string) for t in toks
                    if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT,
                                      tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)]
        assert shape(s.body) == shape(s.short), (
            f"{s.id}: the short version must be the block's code with other numbers")


def run(s: Snippet, tmp: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``s`` in the empty folder ``tmp``; raise AssertionError with the output on failure."""
    check_short(s)
    venv = Path(sys.executable).parent.parent
    for name, target in ((".venv", venv), ("bench", ROOT / "bench"), ("tests", ROOT / "tests")):
        if not (tmp / name).exists():
            (tmp / name).symlink_to(target)
    env = dict(os.environ)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["STARC_CACHE_DIR"] = str(tmp / "starc-cache")
    env.setdefault("MPLBACKEND", "Agg")
    if s.lang == "sh":
        script = "set -euo pipefail\n" + "\n".join(commands(s.code)) + "\n"
        argv = ["bash", "-c", script]
    else:
        (tmp / "snippet.py").write_text(s.code, encoding="utf-8")
        argv = [sys.executable, "snippet.py"]
    r = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    what = " (its short version)" if s.short else ""
    assert r.returncode == 0, (
        f"{s.id}: the {s.lang} snippet{what} failed (exit {r.returncode}):\n{s.code}"
        f"\n--- stdout (tail)\n{r.stdout[-3000:]}\n--- stderr (tail)\n{r.stderr[-3000:]}")
    return r

"""The comparison table as plain text, character for character what rich prints when the output
is not a terminal, without importing rich (its import and layout cost about 15 ms of a light
command's start-up: bench/bench_startup.py).

:func:`starc.planner.table.print_rows` builds one kind of table: rich's default box
(``HEAVY_HEAD``), one space of padding, a left-justified title over the table's width, columns
left- or right-justified, ``no_wrap`` except free-text columns that wrap at a maximum width, the
header row aligned to the bottom, and a paragraph under it wrapped at the console width (at most
120). :func:`render` lays that table out with rich's rules (rich 15: ``Table``,
``Text.wrap``, ``divide_line``) and returns ``None`` wherever it would not be sure to match:
output to a terminal (rich styles it: bold header, italic title, dim paragraph), rich's
environment switches (``FORCE_COLOR``, ``TTY_COMPATIBLE``), Jupyter, an output encoding other
than UTF-8 (rich draws ASCII boxes there), characters that are not exactly one cell wide, tabs,
a word wider than a wrapping column, or a table wider than the console. The caller then prints
with rich. tests/sw/test_plaintable.py compares the two on the real tables and on random ones.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from collections.abc import Sequence

__all__ = ["console_width", "render", "wrap"]

_WORD = re.compile(r"\s*\S+\s*")          # rich._wrap.re_word
_TRAILING_SPACE = re.compile(r"\s+$")     # rich.text._re_whitespace
#: rich's HEAVY_HEAD box: top, header row, header rule, body rows, bottom
_TOP, _HEAD, _RULE, _BODY, _BOTTOM = "┏━┳┓", "┃┃┃", "┡━╇┩", "│││", "└─┴┘"


#: code points outside ASCII taken as one cell: Latin-1 and Latin Extended, Greek and Cyrillic,
#: general punctuation to geometric shapes (units, arrows, math signs, box drawing); wide
#: (East Asian W / F), combining and format characters excluded (tests/sw/test_plaintable.py
#: checks the set against rich's cell widths)
_NARROW_BLOCKS = ((0x00A0, 0x0300), (0x0370, 0x0530), (0x2000, 0x2600))


def _one_cell(text: str) -> bool:
    """Every character of ``text`` (``\\n`` aside) takes one terminal cell in rich's measure."""
    for ch in set(text):
        if ch == "\n" or " " <= ch <= "~":
            continue
        c = ord(ch)
        if not any(a <= c < b for a, b in _NARROW_BLOCKS) or not ch.isprintable() \
                or unicodedata.category(ch)[0] in "MC" \
                or unicodedata.east_asian_width(ch) in ("W", "F"):
            return False
    return True


def _plain_output() -> bool:
    """rich would write plain text (no escape codes, UTF-8 box characters) to sys.stdout."""
    import builtins
    if any(k in os.environ for k in ("FORCE_COLOR", "TTY_COMPATIBLE")) \
            or hasattr(builtins, "get_ipython") or sys.platform == "win32":
        return False
    out = sys.stdout
    isatty = getattr(out, "isatty", None)
    try:
        if isatty is None or isatty():
            return False
    except ValueError:      # a closed file: let rich report it
        return False
    return (getattr(out, "encoding", None) or "utf-8").lower().startswith("utf")


def console_width() -> int:
    """The width ``rich.console.Console()`` takes: ``COLUMNS`` if it is a number, else the size
    of the first standard stream that is a terminal, else 80."""
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        return int(columns)
    width = None
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    return width or 80


def _divide(text: str, width: int, fold: bool) -> list[int]:
    """rich._wrap.divide_line for one-cell characters: the offsets to break ``text`` at."""
    breaks: list[int] = []
    offset = 0
    for m in _WORD.finditer(text):
        start, word = m.start(), m.group(0)
        length = len(word.rstrip())
        if width - offset >= length:
            offset += len(word)
        elif length > width:
            if fold:
                chunks = [word[i:i + width] for i in range(0, len(word), width)]
                for k, chunk in enumerate(chunks):
                    if start:
                        breaks.append(start)
                    if k == len(chunks) - 1:
                        offset = len(chunk)
                    else:
                        start += len(chunk)
            else:
                if start:
                    breaks.append(start)
                offset = len(word)
        elif offset and start:
            breaks.append(start)
            offset = len(word)
    return breaks


def _truncate(line: str, width: int, overflow: str) -> str:
    if len(line) > width:
        return line[:width - 1] + "…" if overflow == "ellipsis" else line[:width]
    return line


def wrap(text: str, width: int, *, justify: str = "default", overflow: str = "fold",
         no_wrap: bool = False) -> list[str]:
    """rich's ``Text.wrap`` for one-cell text without tabs: the lines of ``text`` at ``width``
    (``justify`` left / right pads them to it, ``default`` leaves them)."""
    out: list[str] = []
    for line in text.split("\n"):
        if no_wrap:
            pieces = [line]
        else:
            cuts = [0, *_divide(line, width, overflow == "fold"), len(line)]
            pieces = [line[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
            for i, p in enumerate(pieces):              # Text.rstrip_end
                m = _TRAILING_SPACE.search(p)
                if len(p) > width and m is not None:
                    pieces[i] = p[:len(p) - min(len(m.group(0)), len(p) - width)]
        if justify == "left":
            pieces = [_truncate(p, width, overflow).ljust(width) for p in pieces]
        elif justify == "right":
            pieces = [_truncate(p.rstrip(), width, overflow).rjust(width) for p in pieces]
        out.extend(_truncate(p, width, overflow) for p in pieces)
    return out


def _measure(text: str) -> int:
    lines = text.splitlines()
    return max(len(x) for x in lines) if lines else 0


def render(title: str, heads: Sequence[str], rows: Sequence[Sequence[str]],
           left: Sequence[bool], wrap_at: Sequence[int | None], console: int,
           paragraph: str | None = None) -> str | None:
    """The text rich prints for ``print_rows``' table (``None``: print with rich instead).

    ``heads`` are the header texts (lines separated by ``\\n``), ``left`` says per column whether
    it is left-justified, ``wrap_at`` the maximum width of a wrapping column (``None``: no wrap),
    ``console`` the console width, ``paragraph`` the text under the table (wrapped at
    ``min(console, 120)``)."""
    texts = [title, *heads, *(c for r in rows for c in r), paragraph or ""]
    if not _plain_output() or any("\t" in t for t in texts) or not _one_cell("".join(texts)):
        return None
    n = len(heads)
    cols = [[heads[i], *(r[i] for r in rows)] for i in range(n)]
    widths = []           # content widths (rich: padding included, minus 2)
    for i, cells in enumerate(cols):
        w = max(_measure(c) for c in cells)
        if wrap_at[i] is not None:
            w = min(w, wrap_at[i])
            if any(len(word) > w for c in cells for word in c.split()):
                return None       # rich would crop that word with an ellipsis
        widths.append(w)
    table_width = sum(w + 2 for w in widths) + n + 1
    if table_width > console:
        return None               # rich would shrink columns
    lines = wrap(title, table_width, justify="left") if title else []
    lines.append(_TOP[0] + _TOP[2].join(_TOP[1] * (w + 2) for w in widths) + _TOP[3])
    for k, row in enumerate(zip(*cols, strict=True)):
        cells = [wrap(c, widths[i], justify="left" if left[i] else "right", overflow="ellipsis",
                      no_wrap=wrap_at[i] is None) for i, c in enumerate(row)]
        height = max(len(c) for c in cells)
        blank = [" " * w for w in widths]
        if k == 0:            # the header row aligns to the bottom, the others to the top
            cells = [[blank[i]] * (height - len(c)) + c for i, c in enumerate(cells)]
        else:
            cells = [c + [blank[i]] * (height - len(c)) for i, c in enumerate(cells)]
        edge = _HEAD if k == 0 else _BODY
        for j in range(height):
            lines.append(edge[0] + edge[1].join(f" {c[j]} " for c in cells) + edge[2])
        if k == 0:
            lines.append(_RULE[0] + _RULE[2].join(_RULE[1] * (w + 2) for w in widths)
                         + _RULE[3])
    lines.append(_BOTTOM[0] + _BOTTOM[2].join(_BOTTOM[1] * (w + 2) for w in widths)
                 + _BOTTOM[3])
    if paragraph is not None:
        lines.extend(wrap(paragraph, min(console, 120)))
    return "".join(line + "\n" for line in lines)

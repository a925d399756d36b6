"""Argument types that check ranges at parse time (docs/reliability.md, "Validation before work").

Each factory returns a callable for ``argparse``'s ``type=``: it converts the text or raises
``argparse.ArgumentTypeError`` with a message saying what is allowed, which argparse turns into
one line naming the option. Light: no NumPy, so ``import starc.cli`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Any

__all__ = ["dask_address", "finite_float", "int_range", "power_of_two", "probability",
           "subcommand_group"]

#: Upper bound of plain counts (tokens, layers, steps ...): larger values are typos, and would
#: ask for more memory than any machine has before a later check could refuse them.
BIG = 1 << 31


def _named(fn: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    fn.__name__ = name
    return fn


def int_range(lo: int | None = 0, hi: int | None = BIG, *, what: str = "an integer"
              ) -> Callable[[str], int]:
    """An integer in ``[lo, hi]`` (either bound may be ``None``)."""
    def conv(text: str) -> int:
        try:
            v = int(text.strip(), 10)
        except (ValueError, AttributeError):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"must be {what} >= {lo}, not {text!r}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be {what} <= {hi}, not {text!r}")
        return v
    return _named(conv, "int")


def power_of_two(lo: int = 1, hi: int = BIG) -> Callable[[str], int]:
    base = int_range(lo, hi)

    def conv(text: str) -> int:
        v = base(text)
        if v & (v - 1):
            raise argparse.ArgumentTypeError(f"must be a power of two, not {text!r}")
        return v
    return _named(conv, "int")


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False) -> Callable[[str], float]:
    """A finite float in the range (bounds closed unless ``*_open``)."""
    def rng() -> str:
        a = "(" if lo_open else "["
        b = ")" if hi_open else "]"
        return f"{a}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}{b}"

    def conv(text: str) -> float:
        try:
            v = float(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
        bad = ((lo is not None and (v < lo or (lo_open and v == lo)))
               or (hi is not None and (v > hi or (hi_open and v == hi))))
        if bad:
            raise argparse.ArgumentTypeError(f"must lie in {rng()}, not {text!r}")
        return v
    return _named(conv, "float")


def probability() -> Callable[[str], float]:
    """A probability in [0, 1) (1 would stall a stream forever)."""
    return finite_float(0.0, 1.0, hi_open=True)


_ADDR = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)"
                   r"(?::(\d+))?/?$")


def dask_address(text: str) -> str:
    """``tcp://HOST:PORT`` (or ``HOST:PORT``, read as tcp)."""
    t = text.strip()
    if "://" not in t:
        t = "tcp://" + t
    m = _ADDR.match(t)
    if not m:
        raise argparse.ArgumentTypeError(f"must look like tcp://HOST:PORT, not {text!r}")
    if m.group(3) is not None and not 0 < int(m.group(3)) < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, not {m.group(3)}")
    if m.group(1) == "tcp" and m.group(3) is None:
        t = t.rstrip("/") + ":8786"
    return t


dask_address.__name__ = "address"


def subcommand_group(subparsers: argparse._SubParsersAction, name: str, help_text: str
                     ) -> argparse._SubParsersAction:
    """The sub-command action of the command group ``name`` (``starc rtl ...``, ``starc kv
    ...``), created unless another module already did: the packages that add commands to one
    group (the simulation, FPGA and model command lines) share it."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    sub = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    sub.required = True
    return sub

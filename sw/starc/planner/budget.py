"""Budgets: a fixed token count B, or a mass target p (mass-adaptive selection).

A fixed budget ``B`` attends at most B tokens per query head (recent ones included). A mass budget
``p`` (written ``p0.95``) lets the policy choose, per query head and step, as many tokens as it
needs for the estimated attention mass of its candidates to reach ``p`` (top-p over the scores
its selection pass returns, as the newest GPU methods do over pages), never fewer than ``floor``
and never more than ``cap`` tokens (docs/planner.md). Policies that support it are marked in the
registry (``Policy.adaptive``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_CAP", "DEFAULT_FLOOR", "Budget", "parse_budget"]

DEFAULT_FLOOR = 128   #: tokens a mass budget attends at least (sinks and recent ones included)
DEFAULT_CAP = 4096    #: tokens a mass budget attends at most


@dataclass(frozen=True)
class Budget:
    tokens: int | None = None        # fixed B
    mass: float | None = None        # target estimated mass p, 0 < p <= 1
    floor: int = DEFAULT_FLOOR
    cap: int = DEFAULT_CAP

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.mass is None):
            raise ValueError("a budget is a token count or a mass target, not both or neither")
        if self.tokens is not None and (isinstance(self.tokens, bool) or self.tokens <= 0):
            raise ValueError(f"budget must be a positive integer, not {self.tokens!r}")
        if self.mass is not None:
            if not (isinstance(self.mass, (int, float)) and math.isfinite(self.mass)
                    and 0 < self.mass <= 1):
                raise ValueError(f"mass target must be in (0, 1], not {self.mass!r}")
            if not 0 < self.floor <= self.cap:
                raise ValueError(f"mass budget: need 0 < floor ({self.floor}) <= cap "
                                 f"({self.cap})")

    @property
    def adaptive(self) -> bool:
        return self.mass is not None

    @property
    def limit(self) -> int:
        """The most tokens the budget lets a query head attend (B, or the cap)."""
        return self.tokens if self.tokens is not None else self.cap

    @property
    def label(self) -> int | str:
        """How tables and JSON name it: the integer B, or ``p0.95``."""
        return self.tokens if self.tokens is not None else f"p{self.mass:g}"

    def sort_key(self) -> tuple[int, float]:
        return (0, float(self.tokens)) if self.tokens is not None else (1, float(self.mass))


_MASS = re.compile(r"^p(0?\.\d+|1(\.0*)?)$")


def parse_budget(x: Any, *, floor: int = DEFAULT_FLOOR, cap: int = DEFAULT_CAP) -> Budget:
    """A budget from an int, a :class:`Budget`, or a string ``"1024"`` / ``"p0.95"``."""
    if isinstance(x, Budget):
        return x
    if isinstance(x, bool):
        raise ValueError(f"budget must be a positive integer or p<mass>, not {x!r}")
    if isinstance(x, int) or (hasattr(x, "dtype") and x.dtype.kind in "iu"):
        return Budget(tokens=int(x))
    if isinstance(x, str):
        s = x.strip()
        if s.isdigit():
            return Budget(tokens=int(s))
        if _MASS.match(s):
            return Budget(mass=float(s[1:]), floor=floor, cap=cap)
    raise ValueError(f"budget must be a positive integer (tokens) or p<mass> with a mass in "
                     f"(0, 1] such as p0.95, not {x!r}")

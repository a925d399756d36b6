"""Budgets: a fixed token count B, or a mass-adaptive budget.

A fixed budget ``B`` attends at most B tokens per query head (recent ones included). The adaptive
budgets let the policy choose, per query head and step, as many tokens as its estimate of the
attention mass says, never fewer than ``floor`` and never more than ``cap`` (docs/planner.md):

- a **mass target** ``p`` (written ``p0.95``): the fewest candidates (in descending estimated
  logit) whose estimated share of the mass reaches p: top-p over the scores the selection pass
  returns, as the newest GPU methods do over pages; every head gets the same recall;
- a **mass threshold** ``t`` (written ``t0.002``): every candidate row whose estimated share of
  the head's mass is at least t, so every head stops at the same marginal mass per row (the
  greedy solution of "most mean recall for the rows"): peaked heads take few rows, diffuse ones
  many.

Policies that adapt are marked in the registry (``Policy.adaptive``).
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
    threshold: float | None = None   # least estimated mass share per row, 0 < t <= 1

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.tokens, self.mass, self.threshold)) != 1:
            raise ValueError("a budget is one of a token count, a mass target or a mass "
                             "threshold")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float)) and
                                               math.isfinite(self.threshold) and
                                               0 < self.threshold <= 1):
            raise ValueError(f"mass threshold must be in (0, 1], not {self.threshold!r}")
        if self.threshold is not None and not 0 < self.floor <= self.cap:
            raise ValueError(f"mass budget: need 0 < floor ({self.floor}) <= cap ({self.cap})")
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
        return self.tokens is None

    @property
    def limit(self) -> int:
        """The most tokens the budget lets a query head attend (B, or the cap)."""
        return self.tokens if self.tokens is not None else self.cap

    @property
    def label(self) -> int | str:
        """How tables and JSON name it: the integer B, or ``p0.95``."""
        if self.tokens is not None:
            return self.tokens
        return f"p{self.mass:g}" if self.mass is not None else f"t{self.threshold:g}"

    def sort_key(self) -> tuple[int, float]:
        if self.tokens is not None:
            return (0, float(self.tokens))
        return (1, float(self.mass)) if self.mass is not None else (2, -float(self.threshold))


_MASS = re.compile(r"^p(0?\.\d+|1(\.0*)?)$")
_THRESHOLD = re.compile(r"^t(0?\.\d+(e-?\d+)?|\d(\.\d*)?e-?\d+|1(\.0*)?)$")


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
        if _THRESHOLD.match(s):
            return Budget(threshold=float(s[1:]), floor=floor, cap=cap)
    raise ValueError(f"budget must be a positive integer (tokens), p<mass> with a mass in "
                     f"(0, 1] such as p0.95, or t<share> with a share in (0, 1] such as t0.002, "
                     f"not {x!r}")

"""Decode planner: selection policies under a token budget, rows to activate, PIM programs.

The names below load on first use (PEP 562), so a light module of the package (``table``, which
``starc config show`` and ``starc timing dense`` print through) does not pull in NumPy, the
compiler and every policy.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Planner": "starc.planner.plan", "StepPlan": "starc.planner.plan",
         "Selection": "starc.planner.policies", "LAYOUT_OF": "starc.planner.registry",
         "POLICIES": "starc.planner.registry", "REGISTRY": "starc.planner.registry",
         "Policy": "starc.planner.registry"}

__all__ = ["LAYOUT_OF", "POLICIES", "REGISTRY", "Planner", "Policy", "Selection", "StepPlan"]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'starc.planner' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

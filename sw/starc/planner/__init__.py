"""Decode planner: selection policies under a token budget, rows to activate, PIM programs."""

from starc.planner.plan import LAYOUT_OF, Planner, StepPlan
from starc.planner.policies import POLICIES, Selection

__all__ = ["LAYOUT_OF", "POLICIES", "Planner", "Selection", "StepPlan"]

"""Decode planner: selection policies under a token budget, rows to activate, PIM programs."""

from starc.planner.plan import Planner, StepPlan
from starc.planner.policies import Selection
from starc.planner.registry import LAYOUT_OF, POLICIES, REGISTRY, Policy

__all__ = ["LAYOUT_OF", "POLICIES", "REGISTRY", "Planner", "Policy", "Selection", "StepPlan"]

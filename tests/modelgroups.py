"""The xdist group of a test that runs `starc` commands: the Verilator model they build.

``make test`` runs ``pytest -n 2 --dist loadgroup``: every test of one ``xdist_group`` runs on one
worker, so the model is built once, by that worker, and its other tests reuse it. A test that
builds a model outside its group would wait on the build lock (``starc_sim.runner``) while the
group's worker builds, holding the other worker idle; so the tests below that run the CLI (docs
snippets, the JSON commands, the recorded scenarios) join the group of the model they use.
"""

from __future__ import annotations

import re
import shlex

import pytest

#: ``starc_sim.cosim.COSIM_MODEL`` (16 banks): ``starc rtl cosim`` and ``rtl regress`` without
#: ``--full``, the demo's RTL check; tests/rtl/test_rtl_attention.py and test_rtl_regress.py.
COSIM_16 = "attention-16"
#: ``starc_sim.cosim.FULL_MODEL`` (64 banks): ``starc rtl cosim --full``.
COSIM_64 = "attention-64"
#: ``starc fpga build``: the board build folder of a size (``build/fpga/<size>/``) is the
#: checkout's, not the test's, so two tests building one size must not run at once.
FPGA_BUILD = "fpga-build"

_STARC = re.compile(r"(?:^|[\s;&|(])starc\s+(.*)")


def model_group(text: str) -> str | None:
    """The group of the model the ``starc`` commands of ``text`` (a shell block, or one command
    line) build, or None when they build none. Several models: the larger one's."""
    found: str | None = None
    for line in text.splitlines():
        m = _STARC.search(line.split("#", 1)[0])
        if not m:
            continue
        try:
            words = shlex.split(m.group(1))
        except ValueError:
            words = m.group(1).split()
        if words[:2] in (["rtl", "cosim"], ["rtl", "regress"]):
            if "--full" in words:
                return COSIM_64
            found = COSIM_16
        elif words[:1] == ["demo"] and "--no-rtl" not in words:
            found = COSIM_16
        elif words[:2] == ["fpga", "build"] and found is None:
            found = FPGA_BUILD
    return found


def group_marks(text: str) -> list[pytest.MarkDecorator]:
    """``[pytest.mark.xdist_group(<model>)]`` for :func:`model_group`, else ``[]``."""
    group = model_group(text)
    return [pytest.mark.xdist_group(group)] if group else []

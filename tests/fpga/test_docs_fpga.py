"""Docs that cannot rot, tier fpga: the snippets of README.md and docs/*.md marked `runnable fpga`
run (the convention is in tests/docsnippets.py and docs/outputs.md)."""

from __future__ import annotations

import pytest
from docsnippets import run, snippets
from modelgroups import group_marks

# Yosys synthesis, a minute or more: `make test`, not the fast tier
pytestmark = pytest.mark.slow

# `starc fpga build` writes the checkout's build/fpga/<size>/: one worker (tests/modelgroups.py)
HERE = [pytest.param(s, id=s.id, marks=group_marks(s.code)) for s in snippets()
        if s.tier == "fpga"]


@pytest.mark.parametrize("snippet", HERE)
def test_snippet_runs(snippet, tmp_path):
    run(snippet, tmp_path)

"""Docs that cannot rot, tier rtl: the snippets of README.md and docs/*.md marked `runnable rtl`
run (the convention is in tests/docsnippets.py and docs/outputs.md)."""

from __future__ import annotations

import pytest
from docsnippets import run, snippets
from modelgroups import group_marks

# a snippet that co-simulates runs on the worker of its model's group (tests/modelgroups.py)
HERE = [pytest.param(s, id=s.id, marks=group_marks(s.code)) for s in snippets()
        if s.tier == "rtl"]


@pytest.mark.parametrize("snippet", HERE)
def test_snippet_runs(snippet, tmp_path):
    run(snippet, tmp_path)

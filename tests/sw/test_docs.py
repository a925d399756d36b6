"""Docs that cannot rot: every snippet of README.md and docs/*.md marked runnable runs (the
convention is in tests/docsnippets.py and docs/outputs.md); the rtl and fpga tiers' snippets run
in tests/rtl/test_docs_rtl.py and tests/fpga/test_docs_fpga.py."""

from __future__ import annotations

import pytest
from docsnippets import PAGES, check_short, commands, run, snippets

ALL = snippets()
HERE = [pytest.param(s, id=s.id, marks=[pytest.mark.slow] if s.tier == "slow" else [])
        for s in ALL if s.tier in ("sw", "slow")]


def test_pages_have_runnable_snippets_and_short_versions_follow_the_rule():
    assert ALL, "no runnable snippet found"
    pages = {s.page.name for s in ALL}
    assert {"README.md", "reproduction.md", "numerics.md", "presets.md"} <= pages, pages
    for s in ALL:
        check_short(s)
        if s.lang == "sh":
            assert all(c.split()[0] in ("starc", ".venv/bin/python", "python", "cat", "test",
                                        "ls") for c in commands(s.code)), s.id


def test_fences_are_balanced():
    for page in PAGES:
        fences = [ln for ln in page.read_text(encoding="utf-8").splitlines()
                  if ln.startswith("```")]
        assert len(fences) % 2 == 0, page


@pytest.mark.parametrize("snippet", HERE)
def test_snippet_runs(snippet, tmp_path):
    run(snippet, tmp_path)

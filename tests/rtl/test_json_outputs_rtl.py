"""The RTL sub-commands print strict JSON alone on stdout with --json (tests/jsoncommands.py)."""

from __future__ import annotations

import pytest
from jsoncommands import COMMANDS, run_json, strict_loads
from modelgroups import group_marks

# each on the worker of the model it co-simulates (tests/modelgroups.py)
RTL = [pytest.param(w, a, id=" ".join(w), marks=group_marks(" ".join(("starc", *w, *a))))
       for w, (t, a) in COMMANDS.items() if t == "rtl"]


@pytest.mark.parametrize("words,args", RTL)
def test_json_on_stdout_is_strict(words, args, tmp_path, monkeypatch):
    monkeypatch.setenv("STARC_CACHE_DIR", str(tmp_path / "starc-cache"))
    rc, out, err = run_json(words, args, tmp_path)
    assert rc == 0, err[-3000:]
    doc = strict_loads(out)
    assert isinstance(doc, dict) and doc

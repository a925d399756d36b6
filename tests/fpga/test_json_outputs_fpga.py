"""`starc fpga build --json` prints strict JSON alone on stdout (tests/jsoncommands.py)."""

from __future__ import annotations

import pytest
from jsoncommands import COMMANDS, run_json, strict_loads
from modelgroups import FPGA_BUILD

# Yosys synthesis, a minute or more: `make test`, not the fast tier
pytestmark = pytest.mark.slow

# `starc fpga build` writes the checkout's build/fpga/<size>/: one worker (tests/modelgroups.py)
FPGA = [pytest.param(w, a, id=" ".join(w), marks=pytest.mark.xdist_group(FPGA_BUILD))
        for w, (t, a) in COMMANDS.items() if t == "fpga"]


@pytest.mark.parametrize("words,args", FPGA)
def test_json_on_stdout_is_strict(words, args, tmp_path, monkeypatch):
    monkeypatch.setenv("STARC_CACHE_DIR", str(tmp_path / "starc-cache"))
    rc, out, err = run_json(words, args, tmp_path)
    assert rc in (0, 1), err[-3000:]          # 1: built, but timing not met
    doc = strict_loads(out)
    assert isinstance(doc, dict) and doc

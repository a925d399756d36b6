"""Every sub-command prints JSON with --json: stdout is one strict JSON document (no NaN, no
Infinity, no other text). The table of commands is tests/jsoncommands.py; the rtl and fpga tiers'
commands run in tests/rtl/test_json_outputs_rtl.py and tests/fpga/test_json_outputs_fpga.py."""

from __future__ import annotations

import pytest
from jsoncommands import COMMANDS, leaves, run_json, strict_loads
from scenarios import SCENARIOS
from starc import cli


def _scenario_of(words):
    """A recorded scenario that runs ``words`` with --json (its test parses stdout strictly)."""
    return next((s for s in SCENARIOS if tuple(s.argv[:len(words)]) == words
                 and "--json" in s.argv), None)


# commands a recorded scenario runs are checked there (tests/sw/test_scenarios.py)
HERE = [pytest.param(w, a, id=" ".join(w), marks=[pytest.mark.slow] if t == "slow" else [])
        for w, (t, a) in COMMANDS.items() if t in ("sw", "slow") and _scenario_of(w) is None]


def test_every_sub_command_is_in_the_table_and_takes_json():
    found = {}
    for words, p in leaves(cli.build_parser()):
        found[words] = {s for a in p._actions for s in a.option_strings}
    assert set(found) == set(COMMANDS), (
        "sub-commands and tests/jsoncommands.py differ: add the new ones there",
        sorted(set(found) ^ set(COMMANDS)))
    for words, opts in found.items():
        assert "--json" in opts, f"`starc {' '.join(words)}` has no --json"
    covered = {w for w in COMMANDS if _scenario_of(w) is not None}
    assert {("config", "show"), ("timing", "dense"), ("eval",), ("sweep",)} <= covered


@pytest.mark.parametrize("words,args", HERE)
def test_json_on_stdout_is_strict(words, args, tmp_path, monkeypatch):
    monkeypatch.setenv("STARC_CACHE_DIR", str(tmp_path / "starc-cache"))
    rc, out, err = run_json(words, args, tmp_path)
    assert rc == 0, err
    doc = strict_loads(out)
    assert isinstance(doc, (dict, list)) and doc

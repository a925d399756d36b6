"""Recorded scenarios (tests/scenarios.py): each small end-to-end command's JSON output must equal
the stored one byte for byte. An intended change of a number is re-recorded with
`make record` and its diff reviewed with the change."""

from __future__ import annotations

import pytest
from scenarios import SCENARIOS, diff, record_hint, run

# sweeps (reports with plots) and the model take seconds each: `make test`, not `make test-fast`
SW = [pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.slow else [])
      for s in SCENARIOS if s.tier == "sw"]


def test_enough_scenarios_and_unique_names():
    assert len(SCENARIOS) >= 30 and len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    kinds = {s.argv[0] for s in SCENARIOS}
    assert {"config", "timing", "compile", "eval", "sweep", "rtl"} <= kinds


@pytest.mark.parametrize("scn", SW)
def test_recorded_output_is_unchanged(scn, tmp_path):
    assert scn.path.is_file(), (f"no recorded output for scenario {scn.name}: record it with "
                                f"`{record_hint(scn.name)}`")
    old = scn.path.read_text(encoding="utf-8")
    new = run(scn, tmp_path)
    assert new == old, (
        f"scenario {scn.name} (`starc {' '.join(scn.argv)}`) no longer gives its recorded "
        f"output. If the change is intended, re-record with `{record_hint(scn.name)}` (or every "
        f"scenario: `make record`) and "
        f"commit the diff of tests/data/scenarios/ with it; otherwise this is a regression.\n"
        + diff(old, new, scn.path.name))

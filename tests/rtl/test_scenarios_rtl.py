"""Recorded co-simulation summaries (tests/scenarios.py, tier rtl): one decode step on the
Verilated RTL; the summary must equal the stored one byte for byte. Re-record an intended change
with `make record RTL=1`."""

from __future__ import annotations

import pytest
from modelgroups import group_marks
from scenarios import SCENARIOS, diff, record_hint, run

# each on the worker of the model it co-simulates (tests/modelgroups.py)
RTL = [pytest.param(s, id=s.name, marks=group_marks(" ".join(("starc", *s.argv))))
       for s in SCENARIOS if s.tier == "rtl"]


@pytest.mark.parametrize("scn", RTL)
def test_recorded_cosim_summary_is_unchanged(scn, tmp_path):
    assert scn.path.is_file(), f"record it with `{record_hint(scn.name, rtl=True)}`"
    old = scn.path.read_text(encoding="utf-8")
    new = run(scn, tmp_path)
    assert new == old, (
        f"scenario {scn.name} (`starc {' '.join(scn.argv)}`) changed. If intended, re-record "
        f"with `{record_hint(scn.name, rtl=True)}` and commit the diff of "
        f"tests/data/scenarios/ with it; otherwise this is a regression.\n"
        + diff(old, new, scn.path.name))

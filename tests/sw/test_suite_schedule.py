"""make test's schedule (tests/suiteschedule.py): under ``pytest -n 2 --dist loadgroup`` every test
of an ``xdist_group`` runs on one worker (the group's model is built once), and the costliest
work unit (tests/durations.json) starts first. Runs a small pytest session of its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]

GROUPED = """
import pytest
pytestmark = [pytest.mark.xdist_group("model")]
@pytest.mark.parametrize("i", range(4))
def test_uses_model(i):
    pass
"""
SINGLE = """
import pytest
@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    pass
"""


@pytest.mark.slow  # two worker processes: seconds; a check of make test's own machinery
def test_groups_hold_and_the_costliest_unit_starts_first(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_single.py").write_text(SINGLE)
    costs = tmp_path / "durations.json"
    costs.write_text(json.dumps({"seconds": {"test_single.py::test_alone[4]": 100.0}}))
    env = {**os.environ, "PYTHONPATH": str(HERE), "STARC_TEST_DURATIONS": str(costs)}
    env.pop("PYTEST_ADDOPTS", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "suiteschedule", "-n", "2",
                          "--dist", "loadgroup", "-v", "-p", "no:cacheprovider", "-p",
                          "no:randomly", "--store-durations", str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED (\S+)", run.stdout)
    assert len(ran) == 10, run.stdout[-3000:]
    workers = {w for w, n in ran if "test_uses_model" in n}
    assert len(workers) == 1, ran                      # the group on one worker
    assert all(n.endswith("@model") for _, n in ran if "test_uses_model" in n), ran
    first = {}
    for w, n in ran:
        first.setdefault(w, n)
    assert "test_single.py::test_alone[4]" in first.values(), ran  # costliest first
    # --store-durations wrote the costs back, with each worker's share of the run
    doc = json.loads(costs.read_text())
    assert set(doc["workers"]) == {w for w, _ in ran} == {"gw0", "gw1"}, doc
    assert all(w["last_end"] > 0 and w["test_seconds"] >= 0 for w in doc["workers"].values())
    # and every run prints the same figures at the end (how the schedule balanced the workers)
    shown = dict(re.findall(r"^(gw\d): ([\d.]+) s of tests, its last test ended", run.stdout,
                            re.M))
    assert shown == {w: f"{doc['workers'][w]['test_seconds']:.1f}" for w in ("gw0", "gw1")}, \
        run.stdout[-1500:]


@pytest.mark.parametrize(("text", "group"), [
    ("starc rtl cosim --policy starc-row --budget 256", "attention-16"),
    ("starc rtl cosim --full", "attention-64"),
    ("starc demo --context 256 --no-rtl", None),
    ("starc demo", "attention-16"),
    ("starc fpga build --size tiny --no-pnr", "fpga-build"),
    ("starc fpga build --size tiny\nstarc rtl cosim", "attention-16"),
    ("starc eval kv.npz  # not starc rtl cosim", None),
])
def test_model_group_of_commands(text: str, group: str | None) -> None:
    """The xdist group a CLI test joins (tests/modelgroups.py): the Verilator model its commands
    build, or the board build folder `starc fpga build` writes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from modelgroups import model_group

    assert model_group(text) == group

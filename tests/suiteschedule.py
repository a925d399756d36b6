"""How ``make test`` (``pytest -n 2 --dist loadgroup``, pytest-xdist) spreads the suite over the
two workers: every ``xdist_group`` on one worker, the longest work first. tests/conftest.py
installs these hooks; ``-p suiteschedule`` loads them into another pytest session (its test).

**Groups that hold.** A Verilator model is built by the first test of its ``xdist_group``
(``attention-16``, ``channel``, ...) and reused by the group's other tests, on the same worker.
pytest-xdist 3.8 tells the controller a test's group by appending ``@<group>`` to its node id on
the worker (``item._nodeid``); pytest 9.2 keeps node ids in ``item._id``, so that write is lost
and ``--dist loadgroup`` hands out every test on its own, silently (pytest-dev/pytest-xdist#1386,
open; the fix #1388 is not released). Tests of one model then ran on both workers, and one of them
waited on the build lock (``starc_sim.runner``) while the other built. :func:`group_items` appends
the suffix the way pytest 9.2 stores ids, when xdist's own write did not take.

**Longest first.** xdist hands out work units (a group, or one test) in collection order, the
largest group first; a few units (a model's build inside its group's first test, the real-model
snippets) are most of the suite, and one of them started last sets the wall time. The scheduler
below hands them out by measured cost (tests/durations.json, written by
``pytest -n 2 --dist loadgroup --store-durations``): a free worker takes the costliest unit left;
a worker whose queued work is already long takes the cheapest ones as its look-ahead (xdist keeps
two or three tests queued on a worker so it always knows the next one; queued behind a long build,
a long unit would wait there while the other worker idles). A test missing from the file counts
:data:`DEFAULT_COST` seconds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

DURATIONS = Path(__file__).resolve().parent / "durations.json"
#: Seconds a test missing from :data:`DURATIONS` is expected to take.
DEFAULT_COST = 0.5
#: A worker whose queued work is estimated above this many seconds gets the cheapest units.
LONG = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-durations", action="store_true",
                     help="write tests/durations.json (seconds per test: the costs make test "
                          "schedules by) from this run")


def _group_of(item: pytest.Item) -> str | None:
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
             for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) or None


def bare(nodeid: str) -> str:
    """``nodeid`` without the ``@group`` suffix of a grouped test under ``--dist loadgroup``."""
    at, br = nodeid.rfind("@"), nodeid.rfind("]")
    return nodeid[:at] if at > br else nodeid


def group_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker under ``--dist loadgroup``: give every grouped test the ``@<group>``
    node-id suffix the controller groups by, where xdist's own write did not take."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        group = _group_of(item)
        if group is None or item.nodeid != bare(item.nodeid):
            continue
        item._id = coerce_node_id(f"{item.nodeid}@{group}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    group_items(config, items)


def _load_costs(path: Path = DURATIONS) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.get("seconds", {}).items()}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadgroup":
        return None
    # pytest-xdist is pinned (pyproject.toml): this overrides the one method of
    # LoadScopeScheduling that picks the next work unit, and reads its work queue.
    from xdist.scheduler import LoadGroupScheduling

    costs = _load_costs(Path(os.environ.get("STARC_TEST_DURATIONS", DURATIONS)))

    def cost(unit: dict[str, bool], pending_only: bool = False) -> float:
        return sum(costs.get(bare(n), DEFAULT_COST) for n, done in unit.items()
                   if not (pending_only and done))

    class LongestFirst(LoadGroupScheduling):
        def _assign_work_unit(self, node: Any) -> None:
            assert self.workqueue
            queued = sum(cost(u, pending_only=True)
                         for u in self.assigned_work.get(node, {}).values())
            pick = min if queued > LONG else max
            scope = pick(self.workqueue, key=lambda s: cost(self.workqueue[s]))
            work_unit = self.workqueue.pop(scope)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            collection = self.registered_collections[node]
            node.send_runtest_some([collection.index(n) for n, done in work_unit.items()
                                    if not done])

    return LongestFirst(config, log)


class _DurationRecorder:
    """Sums each test's setup, call and teardown time (on the controller under xdist) and each
    worker's summed test time and when (seconds after the session started) its last test ended:
    the critical path. Every run prints the workers' figures at the end (how well the schedule
    balanced them); with ``--store-durations`` it writes :data:`DURATIONS` too."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}
        self.start = time.monotonic()
        self.workers: dict[str, dict[str, float]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        key = bare(report.nodeid)
        self.seconds[key] = self.seconds.get(key, 0.0) + report.duration
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        w = self.workers.setdefault(getattr(gateway, "id", "main"),
                                    {"test_seconds": 0.0, "last_end": 0.0})
        w["test_seconds"] += report.duration
        w["last_end"] = time.monotonic() - self.start

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if len(self.workers) < 2:
            return
        terminalreporter.write_sep("-", "workers (tests/suiteschedule.py)")
        for name, w in sorted(self.workers.items()):
            terminalreporter.write_line(
                f"{name}: {w['test_seconds']:.1f} s of tests, its last test ended "
                f"{w['last_end']:.1f} s after the start")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.seconds or self.path is None:
            return
        kept = {k: round(v, 1) for k, v in sorted(self.seconds.items()) if v >= 1.0}
        doc = {"about": "seconds per test (>= 1 s) of one `pytest -n 2 --dist loadgroup "
                        "--store-durations` run on a fresh build folder: the costs make test "
                        "schedules by (tests/suiteschedule.py); per worker, its summed test "
                        "time and when its last test ended (seconds after the start)",
               "workers": {k: {n: round(v, 1) for n, v in w.items()}
                           for k, w in sorted(self.workers.items())},
               "seconds": kept}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(self.path)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    path = None
    if config.getoption("store_durations", False):
        path = Path(os.environ.get("STARC_TEST_DURATIONS", DURATIONS))
    config.pluginmanager.register(_DurationRecorder(path), "starc-durations")

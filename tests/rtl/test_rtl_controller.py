"""The channel RTL (controller + bank array) under cocotb + Verilator, cycle for cycle against the
golden timing model. One pytest item per cocotb test; one Verilator build per configuration."""

from __future__ import annotations

import os

import pytest
from starc_hw.channel import Channel
from starc_sim.channel_tb import TbConfig, tb_env
from starc_sim.programs import SHORT_REFRESH, SMALL
from starc_sim.runner import RtlModel, RtlTestFailure, build_design

pytestmark = [pytest.mark.rtl, pytest.mark.xdist_group("channel")]

TB = "starc_sim.tb_controller"
#: 2 PCs x 2 SIDs x 2 bank groups x 2 banks, short refresh interval: every scope, many REFs.
SMALL_TB = TbConfig(preset=None, overrides={**SMALL, **SHORT_REFRESH}, rows=4)
#: The default preset at full size (64 banks); one row of storage per bank keeps the build short.
FULL_TB = TbConfig(preset=None, overrides={}, rows=1)


def _build(tc: TbConfig, waves: bool = False) -> RtlModel:
    """The channel's model at C++ ``-O0`` (``quick``): the controller's large evaluation
    functions took 50 s of ``-Os`` compile against 28 s, and these tests' time is cocotb's, not
    the model's (docs/rtl.md, "The suite")."""
    cfg = tc.cfg
    return build_design(
        "channel", lambda: Channel(cfg=cfg, rows=tc.rows, refresh=tc.refresh,
                                   cycle_width=tc.cycle_width),
        params={"cfg": cfg.as_dict(), "rows": tc.rows, "refresh": tc.refresh,
                "cycle_width": tc.cycle_width}, waves=waves, internals=False, public_ports=True,
        config="quick")


@pytest.fixture(scope="session")
def small_channel() -> RtlModel:
    return _build(SMALL_TB, waves=bool(os.environ.get("STARC_WAVES")))


@pytest.fixture(scope="session")
def full_channel() -> RtlModel:
    return _build(FULL_TB)


def _run(model: RtlModel, tc: TbConfig, testcase: str, seed: int = 1,
         extra: dict[str, str] | None = None) -> None:
    model.run(TB, testcase=testcase, seed=seed, extra_env={**tb_env(tc), **(extra or {})})


@pytest.mark.parametrize("testcase", ["dense", "stream", "random_programs",
                                      "random_explicit_refresh", "golden_gaps", "fault_stops"])
def test_small(small_channel: RtlModel, testcase: str) -> None:
    _run(small_channel, SMALL_TB, testcase, seed=int(os.environ.get("STARC_SEED", "1")))


def test_scoreboard_catches_one_cycle(small_channel: RtlModel) -> None:
    """The same run with one expected issue cycle moved by +1 must fail."""
    _run(small_channel, SMALL_TB, "stream")
    with pytest.raises(RtlTestFailure, match="cocotb tests failed"):
        _run(small_channel, SMALL_TB, "stream", extra={"STARC_PERTURB": "37"})


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("STARC_RTL_FULL"),
                    reason="the 64-bank channel takes minutes to build; set STARC_RTL_FULL=1")
def test_full_size_dense(full_channel: RtlModel) -> None:
    """Dense attention (d = 128, 2.5 all-bank rows) on the default preset's full channel."""
    _run(full_channel, FULL_TB, "dense")

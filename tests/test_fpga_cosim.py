"""The whole FPGA board top (UART, host link, channel) under cocotb + Verilator, driven by the real
host driver through a UART model at the pins, compared with the golden model (docs/fpga.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starc_sim.runner import RtlModel, build_design

from fpga.top import ChannelSystem, board_config, board_size

pytestmark = pytest.mark.rtl

TB = "starc_sim.tb_fpga"
#: The small board size with a 4-cycle bit period (the fastest the receiver allows), a head of
#: 16 dimensions (two banks per token) and 48 tokens: two key rows, one of them partial.
PARAMS = {"size": "small", "divisor": 4, "head_dim": 16, "tokens": 48, "seed": 3,
          "readback": 24, "table_depth": 32, "rx_depth": 512}


@pytest.fixture(scope="session")
def board_model() -> RtlModel:
    size = board_size(PARAMS["size"])
    return build_design(
        "fpga_system",
        lambda: ChannelSystem(size=size, divisor=PARAMS["divisor"],
                              table_depth=PARAMS["table_depth"], rx_depth=PARAMS["rx_depth"]),
        params={"cfg": board_config(size).as_dict(), "size": size.name,
                "divisor": PARAMS["divisor"], "table_depth": PARAMS["table_depth"],
                "rx_depth": PARAMS["rx_depth"]},
        depends=(Path(__file__).resolve().parents[1] / "fpga" / "top.py",))


def _run(model: RtlModel, testcase: str) -> None:
    model.run(TB, testcase=testcase, seed=PARAMS["seed"],
              extra_env={"STARC_FPGA_TB": json.dumps(PARAMS)})


def test_decode_step(board_model: RtlModel) -> None:
    _run(board_model, "decode_step")


def test_link_errors(board_model: RtlModel) -> None:
    _run(board_model, "link_errors")

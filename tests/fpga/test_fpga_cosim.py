"""The whole FPGA board top (UART, host link, channel) under cocotb + Verilator, driven by the real
host driver through a UART model at the pins, compared with the golden model (docs/fpga.md).

Two board models: ``small`` (command front end and banks: the issue trace, cycle count and RD data
are checked) and ``pim-tiny`` (the whole attention datapath as well: the attention output read
through ``OUTPUT`` is checked bit for bit too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starc_fpga.top import ChannelSystem, board_config, board_size
from starc_sim.runner import RtlModel, build_design

pytestmark = pytest.mark.rtl

TB = "starc_sim.tb_fpga"
_REPO = Path(__file__).resolve().parents[2]
#: What the board model is generated from besides the channel (which the runner's source digest
#: follows from the size): the board top, the host link, the UART.
_DEPENDS = (_REPO / "fpga" / "top.py", _REPO / "hw" / "starc_hw" / "hostlink.py",
            _REPO / "hw" / "starc_hw" / "uart.py")
#: Per board size: a 4-cycle bit period (the fastest the receiver allows) and 48 tokens. small:
#: a head of 16 dimensions (two banks per token; two key rows, one of them partial). pim-tiny:
#: d 32 (one bank per token) through the attention datapath.
PARAMS = {
    "small": {"size": "small", "divisor": 4, "head_dim": 16, "tokens": 48, "seed": 3,
              "readback": 24, "table_depth": 32, "rx_depth": 512},
    "pim-tiny": {"size": "pim-tiny", "divisor": 4, "head_dim": 32, "tokens": 48, "seed": 3,
                 "readback": 8, "table_depth": 32, "rx_depth": 512},
}


@pytest.fixture(scope="module", params=list(PARAMS))
def board(request: pytest.FixtureRequest) -> tuple[RtlModel, dict]:
    p = PARAMS[request.param]
    size = board_size(p["size"])
    model = build_design(
        f"fpga_system_{size.name.replace('-', '_')}",
        lambda: ChannelSystem(size=size, divisor=p["divisor"], table_depth=p["table_depth"],
                              rx_depth=p["rx_depth"]),
        params={"cfg": board_config(size).as_dict(), "size": size.name,
                "head_dim": size.head_dim, "max_entries": size.max_entries,
                "divisor": p["divisor"], "table_depth": p["table_depth"],
                "rx_depth": p["rx_depth"]},
        depends=_DEPENDS, internals=False)
    return model, p


def _run(board: tuple[RtlModel, dict], testcase: str) -> None:
    model, p = board
    model.run(TB, testcase=testcase, seed=p["seed"], extra_env={"STARC_FPGA_TB": json.dumps(p)})


def test_decode_step(board: tuple[RtlModel, dict]) -> None:
    _run(board, "decode_step")


def test_link_errors(board: tuple[RtlModel, dict]) -> None:
    _run(board, "link_errors")

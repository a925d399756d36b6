"""The whole FPGA board top (UART, host link, channel) under cocotb + Verilator, driven by the real
host driver through a UART model at the pins, compared with the golden model (docs/fpga.md).

Two board models: ``small`` (command front end and banks: the issue trace, cycle count and RD data
are checked) and ``pim-tiny`` (the whole attention datapath as well: the attention output read
through ``OUTPUT`` is checked bit for bit too)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from starc_fpga.top import ChannelSystem, board_config, board_size
from starc_sim.runner import RtlModel, build_design

pytestmark = [pytest.mark.rtl, pytest.mark.xdist_group("fpga-board")]

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
#: The larger attention sizes (minutes each): only with STARC_FPGA_LARGE=1. Their runner test
#: runs a real SmolLM2 head step (the demo's cache, docs/fpga.md).
if os.environ.get("STARC_FPGA_LARGE", "") not in ("", "0"):
    PARAMS.update({name: {"size": name, "divisor": 4, "head_dim": 64, "tokens": 64, "seed": 3,
                          "readback": 8, "table_depth": 32, "rx_depth": 512}
                   for name in ("pim-mid", "pim-smol")})
#: The demo's SmolLM2 cache for the d-64 sizes: a 512-token pass-key prompt, one decode step.
SMOLLM2_CONTEXT = 512


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
        # the testbench touches the pins alone (clk, rst, rx, tx): only the ports visible; the
        # C++ unoptimised (build 37 s against 71 s for pim-tiny at -Os, its three tests 15 %
        # slower: 30 s less in all, 10 s for small; load 4)
        depends=_DEPENDS, internals=False, public_ports=True, config="quick")
    return model, p


def _run(board: tuple[RtlModel, dict], testcase: str) -> None:
    from starc_fpga.build import build_dir_for

    model, p = board
    out = build_dir_for(p["size"])
    out.mkdir(parents=True, exist_ok=True)
    # the step's record is what `starc fpga build` reports next to the board's time
    model.run(TB, testcase=testcase, seed=p["seed"],
              extra_env={"STARC_FPGA_TB": json.dumps(p),
                         "STARC_FPGA_RECORD": str(out / "cosim.json")})


def test_decode_step(board: tuple[RtlModel, dict]) -> None:
    _run(board, "decode_step")


def test_link_errors(board: tuple[RtlModel, dict]) -> None:
    _run(board, "link_errors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_board_runner(board: tuple[RtlModel, dict], capsys: pytest.CaptureFixture[str]) -> None:
    """``starc fpga run --port socket://...``, the board runner a ULX3S owner uses on the FTDI
    port, against the co-simulated board through pyserial: a planned sparse step and its
    output compared with the golden model by the command itself (exit 0 and its JSON)."""
    model, p = board
    if not board_size(p["size"]).head_dim:
        pytest.skip("starc fpga run checks an attention output: the channel-only board has none")
    port = _free_port()
    failure: list[BaseException] = []

    def simulate() -> None:
        try:
            model.run(TB, testcase="serve", seed=p["seed"],
                      extra_env={"STARC_FPGA_TB": json.dumps({**p, "port": port})})
        except BaseException as e:  # noqa: BLE001 - reported below, in the test's thread
            failure.append(e)

    sim = threading.Thread(target=simulate)
    sim.start()
    deadline = time.monotonic() + 300
    while True:                      # the simulator is up once its server accepts (a probe)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert sim.is_alive() and time.monotonic() < deadline, f"no server: {failure}"
            time.sleep(0.5)
    from starc.cli import main

    argv = ["fpga", "run", "--port", f"socket://127.0.0.1:{port}", "--size", p["size"],
            "--policy", "starc-row", "--json"]
    if p["head_dim"] == 64:          # SmolLM2-135M's head dimension: a real head step
        from starc.demo import extract_demo_kv

        kv, _, _ = extract_demo_kv(SMOLLM2_CONTEXT, 1, 0.5, 0)
        argv += ["--kv", str(kv), "--budget", "128"]
    else:
        argv += ["--tokens", "80", "--budget", "32"]
    rc = main(argv)
    sim.join(timeout=300)
    out = capsys.readouterr()
    assert not failure, failure
    assert rc == 0, out.err
    summary = json.loads(out.out)
    assert summary["issues_equal"] and summary["cycles_equal"] and summary["bit_exact"]
    assert summary["scenario"]["policy"] == "starc-row" and summary["step_cycles"] > 0

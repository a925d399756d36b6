# amaranth: UnusedElaboratable=no
"""``starc_sim.convert``: the Verilog every build uses is Amaranth's own, byte for byte.

``to_rtlil`` against ``amaranth.back.rtlil.convert`` on random memories (widths, depths, signed
and unsigned initial contents, zero and not), ``to_verilog`` against ``verilog.convert`` (and
``strip_zero_init`` of it) through Amaranth's Yosys on a design with every kind of memory the
shortcut treats apart. No Verilator build: Yosys only (a few seconds).
"""

from __future__ import annotations

from typing import Any

import pytest
from amaranth.hdl import Module, Shape, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.rtl]


class Memories(wiring.Component):
    """One read port per memory (every memory in its own submodule, as the harness has them),
    the read data OR-reduced onto one output."""

    def __init__(self, mems: list[tuple[Shape, int, list[int]]]) -> None:
        self._mems = mems
        abits = max(1, max(d for _, d, _ in mems).bit_length())
        super().__init__({"addr": In(abits), "data": Out(len(mems))})

    def elaborate(self, platform):  # noqa: ANN001, ANN201
        del platform
        m = Module()
        for i, (shape, depth, init) in enumerate(self._mems):
            mem = m.submodules[f"mem{i}"] = Memory(shape=shape, depth=depth, init=init)
            rd = mem.read_port()
            m.d.comb += rd.addr.eq(self.addr)
            m.d.comb += self.data[i].eq(rd.data.any())
        return m


@st.composite
def _memory(draw: st.DrawFn) -> tuple[Shape, int, list[int]]:
    width = draw(st.sampled_from([1, 3, 16, 19, 32, 33, 64]))
    sign = draw(st.booleans())
    shape = signed(width) if sign else unsigned(width)
    depth = draw(st.integers(1, 9))
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if sign else (0, (1 << width) - 1)
    init = draw(st.one_of(st.just([]), st.lists(st.integers(lo, hi), max_size=depth)))
    return shape, depth, init


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_memory(), min_size=1, max_size=4))
def test_rtlil_is_amaranths(mems) -> None:  # noqa: ANN001
    from amaranth.back import rtlil
    from starc_sim.convert import to_rtlil

    assert to_rtlil(Memories(mems), "top") == rtlil.convert(Memories(mems), name="top",
                                                             emit_src=False)


#: Zero memories Yosys writes in hex (stripped) and in decimal (32 bits: kept), one-bit and wide,
#: signed, memories with data, a zero memory behind one with data.
MIXED = [(unsigned(16), 8, []), (unsigned(32), 4, []), (unsigned(1), 3, [0, 0]),
         (unsigned(19), 5, [0, 0, 0, 0, 0]), (signed(16), 4, [-1, 0, 3]),
         (unsigned(256), 6, [1 << 200]), (unsigned(8), 2, [0, 42]), (signed(32), 3, [-7]),
         (unsigned(72), 16, [])]


@pytest.mark.parametrize("zero_init", [True, False])
def test_verilog_is_amaranths(zero_init: bool) -> None:
    from amaranth.back import verilog
    from starc_sim.convert import to_verilog
    from starc_sim.runner import setup_environment, strip_zero_init

    setup_environment()
    ours = to_verilog(Memories(MIXED), "top", zero_init=zero_init)
    theirs = verilog.convert(Memories(MIXED), name="top", emit_src=False)
    if not zero_init:
        assert theirs.count("initial begin") > strip_zero_init(theirs).count("initial begin") > 0
        theirs = strip_zero_init(theirs)
    assert ours == theirs


class WithExtra(Memories):
    """:class:`Memories` that instantiates nothing but names one more module (``extra_verilog``),
    itself with memories: the way the attention channel hands over its PU's and units' Verilog."""

    def extra_verilog(self) -> str:
        from amaranth.back import verilog

        return verilog.convert(Memories(MIXED[:3]), name="extra", emit_src=False)


@pytest.mark.parametrize("zero_init", [True, False])
def test_design_verilog_appends_the_extra_modules(zero_init: bool) -> None:
    """What builds and ``starc rtl verilog`` write: the design's Verilog, then its extra
    modules', both stripped of their all-zero initialisations with ``zero_init=False``; a design
    without ``extra_verilog`` is its own Verilog alone."""
    from starc_sim.convert import design_verilog, to_verilog
    from starc_sim.runner import setup_environment, strip_zero_init

    setup_environment()
    extra = WithExtra(MIXED[:3]).extra_verilog()
    assert "module extra" in extra and "initial begin" in extra
    ours = design_verilog(WithExtra(MIXED[:3]), "top", zero_init=zero_init)
    own = to_verilog(Memories(MIXED[:3]), "top", zero_init=zero_init)
    assert ours == own + (extra if zero_init else strip_zero_init(extra))
    assert design_verilog(Memories(MIXED[:3]), "top", zero_init=zero_init) == own


class Comb(wiring.Component):
    """Eight-bit signals, each a function of others (and maybe of itself, through other
    signals): ``ops[i] = (kind, a, b, c)`` names the operation and its operand signals."""

    KINDS = ("add", "xor", "part", "mux", "eq", "not", "slice", "shift")

    def __init__(self, ops: list[tuple[str, int, int, int]]) -> None:
        self._ops = ops
        super().__init__({"x": In(8), "y": Out(8)})

    def elaborate(self, platform):  # noqa: ANN001, ANN201
        from amaranth.hdl import Signal

        del platform
        m = Module()
        s = [Signal(8, name=f"s{i}") for i in range(len(self._ops))]
        src = [self.x, *s]
        for i, (kind, a, b, c) in enumerate(self._ops):
            m.d.comb += s[i].eq(_op(kind, src[a], src[b], src[c]))
        y = 0
        for v in s:
            y = y | v
        m.d.comb += self.y.eq(y)
        return m


def _op(kind: str, a: Any, b: Any, c: Any) -> Any:
    from amaranth.hdl import Cat, Mux

    if kind == "add":
        return a + b
    if kind == "xor":
        return a ^ b
    if kind == "part":
        return Cat(a.bit_select(b[:3], 4), c[:4])
    if kind == "mux":
        return Mux(a[0], b, c)
    if kind == "eq":
        return a == b
    if kind == "not":
        return ~a
    if kind == "slice":
        return Cat(a[4:], b[:4])
    return a << b[:2]


@st.composite
def _comb(draw: st.DrawFn) -> list[tuple[str, int, int, int]]:
    n = draw(st.integers(1, 6))
    # operands among x and every signal: a later or the same signal can close a loop
    return [(draw(st.sampled_from(Comb.KINDS)), draw(st.integers(0, n)),
             draw(st.integers(0, n)), draw(st.integers(0, n))) for _ in range(n)]


def _amaranths_check(ops: list[tuple[str, int, int, int]]) -> str | None:
    """Amaranth's own check on the netlist of ``Comb(ops)``: its error, or None."""
    from amaranth.hdl import _ir, _nir
    from starc_sim.convert import _ports

    design = Comb(ops)
    fragment = _ir.Fragment.get(design, None).prepare(ports=_ports(design), hierarchy=("top",))
    netlist = _nir.Netlist()
    _ir._emit_netlist(netlist, fragment, all_undef_to_ff=False)
    try:
        netlist.check_comb_cycles()
    except _nir.CombinationalCycle as e:
        return str(e)
    return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_comb())
def test_cycle_check_finds_what_amaranths_finds(ops) -> None:  # noqa: ANN001
    """``fast_cycle_check``: a design converts, or fails with Amaranth's own error, exactly as
    without it (loops through variable bit selects, adders, comparisons, muxes, slices)."""
    from amaranth.back import rtlil
    from amaranth.hdl._nir import CombinationalCycle
    from starc_sim.convert import fast_cycle_check

    want = _amaranths_check(ops)
    with fast_cycle_check():
        if want is None:
            rtlil.convert(Comb(ops), name="top", emit_src=False)
        else:
            with pytest.raises(CombinationalCycle) as err:
                rtlil.convert(Comb(ops), name="top", emit_src=False)
            assert str(err.value) == want


def test_cycle_check_finds_a_loop_through_a_variable_shift() -> None:
    from amaranth.hdl._nir import CombinationalCycle
    from starc_sim.convert import to_verilog

    loop = [("part", 0, 2, 0), ("add", 1, 0, 0)]  # s0 <- s1[s0 ...]: s1 <- s0 + x
    assert _amaranths_check(loop) is not None
    with pytest.raises(CombinationalCycle, match="Combinational cycle detected"):
        to_verilog(Comb(loop), "top")
    assert _amaranths_check([("part", 0, 0, 0), ("add", 1, 0, 0)]) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_comb())
def test_fast_netlist_writes_the_same_rtlil(ops) -> None:  # noqa: ANN001
    """``fast_netlist`` (netlist values without Amaranth's per-bit assertions, and the cycle
    check above): the same RTLIL text, or the same loop error, as Amaranth alone; Amaranth's own
    constructors are back in place afterwards."""
    from amaranth.back import rtlil
    from amaranth.hdl import _nir
    from amaranth.hdl._nir import CombinationalCycle
    from starc_sim.convert import fast_netlist

    own = (_nir.Value.__new__, _nir.Net.__dict__["from_cell"])
    want = _amaranths_check(ops)
    with fast_netlist():
        assert _nir.Value.__new__ is not own[0]
        if want is None:
            got = rtlil.convert(Comb(ops), name="top", emit_src=False)
        else:
            with pytest.raises(CombinationalCycle) as err:
                rtlil.convert(Comb(ops), name="top", emit_src=False)
            assert str(err.value) == want
    assert (_nir.Value.__new__, _nir.Net.__dict__["from_cell"]) == own
    if want is None:
        assert got == rtlil.convert(Comb(ops), name="top", emit_src=False)

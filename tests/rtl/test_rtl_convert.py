# amaranth: UnusedElaboratable=no
"""``starc_sim.convert``: the Verilog every build uses is Amaranth's own, byte for byte.

``to_rtlil`` against ``amaranth.back.rtlil.convert`` on random memories (widths, depths, signed
and unsigned initial contents, zero and not), ``to_verilog`` against ``verilog.convert`` (and
``strip_zero_init`` of it) through Amaranth's Yosys on a design with every kind of memory the
shortcut treats apart. No Verilator build: Yosys only (a few seconds).
"""

from __future__ import annotations

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

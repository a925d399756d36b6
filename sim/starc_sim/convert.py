"""Verilog of an Amaranth design for Verilator, the same text as ``amaranth.back.verilog.convert``
in a fraction of the time.

Where ``verilog.convert`` spends its time on the co-simulation models (docs/rtl.md, "Verilog
generation"): its RTLIL emitter writes each memory's initial contents as one constant built net by
net (``Net.from_const`` per bit, then a string per bit): the 16-bank model's bank, program and
capture memories hold 16.8 M bits, all zero, and that constant is 80 % of the emitter's time and
two thirds of the RTLIL text Yosys then parses, only for Yosys to write one ``initial`` line per
word, which :func:`starc_sim.runner.strip_zero_init` removes again from the co-simulation builds.

:func:`to_verilog` runs Amaranth's own steps (elaboration, netlist, the RTLIL emitter, the same
Yosys script through ``amaranth.back.verilog``) and changes only how a memory's initial contents
are written:

- ``zero_init=True``: the same ``$meminit_v2`` cell, its constant formatted word by word, so the
  RTLIL (and the Verilog) is the same text, byte for byte;
- ``zero_init=False``: a memory whose ``initial`` block ``strip_zero_init`` would remove (all
  words zero) gets no ``$meminit_v2`` cell, so Yosys writes none, and the Verilog is
  ``strip_zero_init`` of ``verilog.convert``'s, byte for byte; other memories keep theirs.

It uses Amaranth's internal RTLIL emitter (``amaranth.back.rtlil.ModuleEmitter``), so it is tied to
the pinned Amaranth (pyproject.toml); :data:`AMARANTH_VERSION` names the version it was checked
against, and any other version falls back to ``verilog.convert`` (plus ``strip_zero_init``).
tests/rtl/test_rtl_convert.py checks both promises on designs with zero, non-zero, signed and
empty memories, and the suite's models were compared whole (docs/rtl.md).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["AMARANTH_VERSION", "design_verilog", "fast_cycle_check", "fast_netlist", "to_rtlil",
           "to_verilog"]

#: The Amaranth release whose RTLIL emitter :func:`to_verilog` extends.
AMARANTH_VERSION = "0.5.10"


def _amaranth_version() -> str:
    from importlib.metadata import version

    return version("amaranth")


def _ports(design: Any) -> dict[str, Any]:
    """The ports ``verilog.convert`` gives a ``wiring.Component`` (its signature's members)."""
    from amaranth.hdl import _ast, _ir
    from amaranth.lib import wiring

    ports = {}
    for path, member, value in design.signature.flatten(design):
        if isinstance(value, _ast.ValueCastable):
            value = value.as_value()
        if isinstance(value, _ast.Value):
            flow = (_ir.PortDirection.Input if member.flow == wiring.In
                    else _ir.PortDirection.Output)
            ports["__".join(map(str, path))] = (value, flow)
    return ports


#: A memory name Yosys writes as it is (``write_verilog -norename``); others it escapes
#: (``\\name ``), and ``strip_zero_init`` does not match those.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _stripped(cell: Any) -> bool:
    """Whether ``strip_zero_init`` removes the ``initial`` block Yosys writes for the memory
    ``cell``: all words zero, written in hex (Yosys writes a 32-bit constant in decimal,
    ``32'd0``, which it leaves), under a plain name."""
    return (not any(cell.init) and cell.width != 32
            and _PLAIN_NAME.fullmatch(cell.name) is not None)


def _emitter_class(zero_init: bool) -> type:
    from amaranth.back import rtlil

    class Emitter(rtlil.ModuleEmitter):
        """Amaranth's module emitter with a memory's initial contents written word by word."""

        def emit_memory(self, cell_idx: int, cell: Any) -> None:
            bits = cell.width * cell.depth
            if bits == 0:
                super().emit_memory(cell_idx, cell)
                return
            if not zero_init and _stripped(cell):
                # no $meminit_v2 cell; its automatic name is used up all the same, so every later
                # cell keeps the name it has in verilog.convert's output
                self.builder._auto_name()
                return
            mask = (1 << cell.width) - 1
            # ModuleEmitter.sigspec of the nets (row >> bit) & 1, row-major, LSB first: one
            # constant chunk, written MSB first, i.e. the last word first, each word MSB first
            data = f"{bits}'" + "".join(format(row & mask, f"0{cell.width}b")
                                        for row in reversed(cell.init))
            self.builder.cell("$meminit_v2", ports={
                "ADDR": self.sigspec(),
                "DATA": data,
                "EN": self.sigspec(rtlil._nir.Value.ones(cell.width)),
            }, parameters={
                "MEMID": self.memories[cell_idx].memid,
                "ABITS": 0,
                "WIDTH": cell.width,
                "WORDS": cell.depth,
                "PRIORITY": 0,
            }, src_loc=cell.src_loc)

    return Emitter


def _has_comb_cycle(netlist: Any) -> bool:
    """Whether the graph ``Netlist.check_comb_cycles`` searches has a cycle, found on a smaller
    graph with the same cycles: a cell whose output bits all depend on the same inputs (a
    ``Part``, an arithmetic, shift or comparison ``Operator``, a ``Matches``, an asynchronous read
    port) is one node between its output bits and its inputs, instead of an edge from every
    output bit to every input (a 48-bit variable shift: 48 x 54 edges). Iterative depth-first
    search, each node once."""
    from amaranth.hdl import _nir

    uniform: dict[int, list[int]] = {}   # cell -> its inputs, for the cells above

    def cell_inputs(idx: int, cell: Any) -> list[int] | None:
        if idx in uniform:
            return uniform[idx]
        if isinstance(cell, (_nir.Part, _nir.Matches, _nir.AsyncReadPort)) or (
                isinstance(cell, _nir.Operator) and (
                    (len(cell.inputs) == 1 and cell.operator != "~")
                    or (len(cell.inputs) == 2 and cell.operator not in ("&", "|", "^")))):
            uniform[idx] = [n for n, _ in cell.comb_edges_to(0)]
            return uniform[idx]
        return None

    def successors(node: Any) -> Any:
        if isinstance(node, tuple):          # a uniform cell's node
            return iter(uniform[node[1]])
        net = _nir.Net(node) if not isinstance(node, _nir.Net) else node
        if net.is_const:
            return iter(())
        if net.is_late:
            return iter((netlist.connections[net],))
        cell = netlist.cells[net.cell]
        if cell_inputs(net.cell, cell) is not None:
            return iter((("cell", net.cell),))
        return (n for n, _ in cell.comb_edges_to(net.bit))

    state: dict[Any, int] = {}               # 1: on the search path, 2: done

    def search(root: Any) -> bool:
        if root in state:
            return False
        state[root] = 1
        stack = [(root, successors(root))]
        while stack:
            node, edges = stack[-1]
            for nxt in edges:
                seen = state.get(nxt)
                if seen == 1:
                    return True
                if seen is None:
                    state[nxt] = 1
                    stack.append((nxt, successors(nxt)))
                    break
            else:
                state[node] = 2
                stack.pop()
        return False

    for idx, cell in enumerate(netlist.cells):
        for net in cell.output_nets(idx):
            if search(net):
                return True
    return any(search(net) for value in netlist.signals.values() for net in value)


@contextlib.contextmanager
def fast_cycle_check() -> Iterator[None]:
    """Within: Amaranth's combinational-loop check (``Netlist.check_comb_cycles``, run by every
    ``build_netlist``) searches :func:`_has_comb_cycle`'s smaller graph first, and runs itself
    (which raises its own error naming the loop) only when that finds a cycle. On the bank PU's
    variable shifts Amaranth's search follows 100 M edges: 50 s of the 16-bank model's 65 s of
    Verilog generation (load 5). Nothing changes with another Amaranth release."""
    if _amaranth_version() != AMARANTH_VERSION:
        yield
        return
    from amaranth.hdl import _nir

    own = _nir.Netlist.check_comb_cycles

    def check_comb_cycles(self: Any) -> None:
        if _has_comb_cycle(self):
            own(self)

    _nir.Netlist.check_comb_cycles = check_comb_cycles
    try:
        yield
    finally:
        _nir.Netlist.check_comb_cycles = own


@contextlib.contextmanager
def fast_netlist() -> Iterator[None]:
    """Within: :func:`fast_cycle_check`, and Amaranth's netlist values built without the
    per-bit type assertions of its constructors (``_nir.Value(nets)`` asserts that every one of
    its nets is a ``Net``, ``Net.from_cell`` that its cell and bit are in range): on the
    two-head 4-bank model they were 10.4 M assertion calls, a third of the Verilog generation's
    time under a profiler. The values are the same tuples of the same nets, so the netlist and
    the Verilog are the same (tests/rtl/test_rtl_convert.py compares the text); the assertions
    only check Amaranth's own internal calls. Only with :data:`AMARANTH_VERSION`."""
    if _amaranth_version() != AMARANTH_VERSION:
        yield
        return
    from amaranth.hdl import _nir

    value_new = _nir.Value.__new__
    from_cell = _nir.Net.__dict__["from_cell"]
    net = _nir.Net

    def new(cls: Any, nets: Any = ()) -> Any:
        if isinstance(nets, net):
            return tuple.__new__(cls, (nets,))
        return tuple.__new__(cls, nets)

    def cell_net(cls: Any, cell: int, bit: int) -> Any:
        return cls((cell << 16) | bit)

    _nir.Value.__new__ = new
    _nir.Net.from_cell = classmethod(cell_net)
    try:
        with fast_cycle_check():
            yield
    finally:
        _nir.Value.__new__ = value_new
        _nir.Net.from_cell = from_cell


def to_rtlil(design: Any, name: str = "top", *, zero_init: bool = True) -> str:
    """The RTLIL ``amaranth.back.rtlil.convert(design, name=name, emit_src=False)`` writes for a
    ``wiring.Component`` (``zero_init=False``: without the ``$meminit_v2`` cells of the memories
    whose ``initial`` block ``strip_zero_init`` would remove), each memory's initial contents
    formatted word by word."""
    from amaranth.back import rtlil
    from amaranth.hdl import _ast, _ir

    with fast_netlist():
        fragment = _ir.Fragment.get(design, None)
        netlist = _ir.build_netlist(fragment, ports=_ports(design), name=name)
        empty = rtlil.EmptyModuleChecker(netlist)
        builder = rtlil.Design(emit_src=False)
        name_map = _ast.SignalDict()
        emitter = _emitter_class(zero_init)
        for idx, module in enumerate(netlist.modules):
            if empty.is_empty(idx):
                continue
            module_builder = builder.module(".".join(module.name), src_loc=module.src_loc)
            if idx == 0:
                module_builder.attribute("top", 1)
            emitter(module_builder, netlist, module, name_map, empty_checker=empty).emit()
        return str(builder)


def to_verilog(design: Any, name: str = "top", *, zero_init: bool = True) -> str:
    """``verilog.convert(design, name=name, emit_src=False)`` (``zero_init=False``:
    ``strip_zero_init`` of it) for a ``wiring.Component``, without building each memory's initial
    contents bit by bit: Amaranth's Yosys script on :func:`to_rtlil`."""
    from amaranth.back import verilog
    from amaranth.lib import wiring

    if (_amaranth_version() != AMARANTH_VERSION
            or not isinstance(getattr(design, "signature", None), wiring.Signature)):
        from starc_sim.runner import strip_zero_init

        text = verilog.convert(design, name=name, emit_src=False)
        return text if zero_init else strip_zero_init(text)
    return verilog._convert_rtlil_text(to_rtlil(design, name, zero_init=zero_init))


def design_verilog(design: Any, name: str = "top", *, zero_init: bool = True) -> str:
    """The whole Verilog of ``design``: :func:`to_verilog`'s text, then the modules the design
    instantiates by name, from its ``extra_verilog()`` when it has one (the attention channel's
    bank PU and FP units), converted under :func:`fast_netlist` (Amaranth's loop check took 50 s
    on the PU) and, with ``zero_init=False``, without their all-zero memory initialisations
    (``strip_zero_init``), like the design's own. What every build and ``starc rtl verilog``
    write."""
    text = to_verilog(design, name, zero_init=zero_init)
    extra = getattr(design, "extra_verilog", None)
    if extra is None:
        return text
    with fast_netlist():
        more = extra()
    if not zero_init:
        from starc_sim.runner import strip_zero_init

        more = strip_zero_init(more)
    return text + more

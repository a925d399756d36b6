"""One PIM channel: the command controller driving the bank array, with host streams.

::

    host cmd ──> Controller ──issue──> (host monitor)
                     │ fire
                     v
    host wdata ─> BankArray ──rdata──> host
                     └──column/column_valid/column_cmd──> processing units (PU interface)

The processing units (bank PUs, softmax) attach to the PU interface: each MAC's column, one cycle
after the command, per bank, together with the MAC command (``col``, ``arg``); data-movement
commands (WRGB, MVSB, MVGB, SFM) are visible on the issued-command stream.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import Op

from .bank import BankArray
from .controller import Controller
from .layouts import COMMAND, STATUS_NAMES, issue_layout, status_members

__all__ = ["Channel"]


class Channel(wiring.Component):
    """Controller + bank array of one channel.

    Parameters
    ----------
    cfg : Config
        The preset (after overrides).
    rows : int
        Rows stored per bank in the bank model (power of two; row addresses wrap).
    refresh : bool
        Refresh insertion in the controller.
    cycle_width : int
        Width of cycle counters and timestamps.
    stepped : bool
        Add the :attr:`step` input (the controller's emulated-time enable); without it the
        counter may advance on every clock.
    heads : int
        Heads the controller keeps per-head dependency state for (docs/multihead.md).
    bram_stage : bool
        The bank array's block RAM ports from registers / off the issue handshake
        (:class:`BankArray` ``bram_stage``; the board's folded channels).

    Members
    -------
    cmd : In(stream.Signature(COMMAND))
        The program.
    wdata : In(stream.Signature(column_bits))
        One beat per WR and per WRGB command, in program order; such a command does not issue
        before its data is there (the controller's emulated time waits, so the schedule does not
        change). WR data goes to the bank, WRGB data (a query chunk) to ``wrgb_data``.
    issue : Out(stream.Signature(issue_layout(cycle_width)))
        Every issued command with its cycle (see :class:`Controller`).
    rdata, rdata_valid : Out
        Data of each RD (group, bank, col, data), valid for the one cycle after it issued (a
        strobe: the host cannot stall it).
    column, column_valid, column_cmd : Out
        The PU interface (see :class:`BankArray`): each MAC's column per bank.
    wrgb_valid, wrgb_chunk, wrgb_data : Out
        The PU interface for the query: a WRGB's chunk index and data, in the cycle it issues.
    step : In(1)
        Only with ``stepped``: the emulated cycle counter may advance on this clock
        (:class:`Controller`, docs/rtl.md "The pipelined controller").
    cycle, complete, issued, fault, violations, violation_count : Out
        The status bundle (:func:`starc_hw.layouts.status_members`): the first four from the
        controller, the last two from the bank array's timing checker.
    """

    def __init__(self, *, cfg: Config, rows: int = 4, refresh: bool = True,
                 cycle_width: int = 48, stepped: bool = False, heads: int = 1,
                 bram_stage: bool = False) -> None:
        if not isinstance(stepped, bool):
            raise TypeError(f"Stepped must be a bool, not {stepped!r}")
        self._stepped = stepped
        self._ctrl = Controller(cfg=cfg, refresh=refresh, cycle_width=cycle_width, heads=heads)
        self._banks = BankArray(cfg=cfg, rows=rows, cycle_width=cycle_width,
                                bram_stage=bram_stage)
        bits = cfg.org.column_bytes * 8
        nb = cfg.org.banks_per_channel
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "wdata": In(stream.Signature(bits)),
            "issue": Out(stream.Signature(issue_layout(cycle_width))),
            "rdata": Out(self._banks.rdata.payload.shape()),
            "rdata_valid": Out(1),
            "column": Out(data.ArrayLayout(bits, nb)),
            "column_valid": Out(nb),
            "column_cmd": Out(COMMAND),
            "wrgb_valid": Out(1),
            "wrgb_chunk": Out(6),
            "wrgb_data": Out(bits),
            **status_members(cycle_width),
            **({"step": In(1, init=1)} if stepped else {}),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.ctrl = ctrl = self._ctrl
        m.submodules.banks = banks = self._banks
        wiring.connect(m, wiring.flipped(self.cmd), ctrl.cmd)
        if self._stepped:
            m.d.comb += ctrl.step.eq(self.step)
        op = ctrl.issue.payload.cmd.op
        # whether the controller's head command takes a data beat, decoded as it enters the head
        # (the controller loads its head on exactly this transfer); an inserted REF takes none
        head_data = Signal()
        with m.If(self.cmd.valid & ctrl.cmd.ready):
            m.d.sync += head_data.eq((self.cmd.payload.op == Op.WR)
                                     | (self.cmd.payload.op == Op.WRGB))
        needs_data = head_data & ~ctrl.issue.payload.inserted
        data_ok = ~needs_data | self.wdata.valid
        fire = ctrl.issue.valid & ctrl.issue.ready
        m.d.comb += [
            self.issue.valid.eq(ctrl.issue.valid & data_ok),
            self.issue.payload.eq(ctrl.issue.payload),
            ctrl.issue.ready.eq(self.issue.ready & data_ok),
            self.wdata.ready.eq(fire & needs_data),
            self.wrgb_valid.eq(fire & (op == Op.WRGB)),
            self.wrgb_chunk.eq(ctrl.issue.payload.cmd.col),
            self.wrgb_data.eq(self.wdata.payload),
            banks.cmd.valid.eq(fire),
            banks.cmd.payload.eq(ctrl.issue.payload),
            banks.wdata.eq(self.wdata.payload),
            *(getattr(self, k).eq(getattr(ctrl, k)) for k in STATUS_NAMES[:4]),
            *(getattr(self, k).eq(getattr(banks, k)) for k in STATUS_NAMES[4:]),
            self.column.eq(banks.column),
            self.column_valid.eq(banks.column_valid),
            self.column_cmd.eq(banks.column_cmd),
        ]
        m.d.comb += [self.rdata.eq(banks.rdata.payload), self.rdata_valid.eq(banks.rdata.valid)]
        return m

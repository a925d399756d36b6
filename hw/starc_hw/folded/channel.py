"""The attention channel with the FPGA-shaped datapath and the emulated DRAM clock.

::

    EmulatedClock ── tick (one clock in `fold`) ──┐
                                                  v
    host cmd ──> Channel (controller + bank array, its clock enabled by tick) ──issue──> host
                     │ the issue waits for dp_ready(command): the datapath takes it
                     │ column[i] (one clock after a MAC) ─ register ─> FoldedPU[i]
                     │ WRGB chunk ──────────────────────── register ─> FoldedPU[*].q
                     │ score MVSB ─> ScoreMove ─ entries ─> FoldedSoftmax ─> ProbMove <─ MVGB
                     │                                              │             │
                     │ SFM ──────────────────────────────────────────┘        FoldedPU[*].p
                     │ value MVSB ─> ValueMove ─> output accumulator ─> out_fp16
                     v

*Modelled time and FPGA clocks.* The controller's cycle counter is emulated DRAM time: it
advances by one on a clock with ``tick`` (every ``fold`` clocks) unless the controller waits for
its host, or the command it would issue waits for the datapath (:func:`dp_ready`: a PU still
busy with an earlier MAC, a move still reading, the softmax not finished). Every issue cycle,
hence every emulated timestamp, every bank timing check and every result, equals the golden
model's whatever the fold and whatever the datapath takes in FPGA clocks; only the wall time
per emulated cycle changes (docs/fpga.md).
"""

from __future__ import annotations

import inspect

from amaranth.hdl import Cat, EnableInserter, Module, Mux, ResetInserter, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import MacArg, MoveFlag, Op, bit

from .. import fp
from ..attention import DP_ERRORS, check_attention_config
from ..bank import VIOLATIONS
from ..channel import Channel
from ..controller import Fault
from ..layouts import COMMAND, issue_layout
from . import pipe
from .moves import ProbMove, ScoreMove, ValueMove
from .pu import SCORE, VALUE, FoldedPU
from .softmax import FoldedSoftmax

__all__ = ["EmulatedClock", "FoldedAttentionChannel", "FoldedChannel"]


class EmulatedClock(wiring.Component):
    """The emulated DRAM clock's strobe: ``tick`` is high in one FPGA clock of every ``fold``
    (always, with ``fold = 1``); ``tick_q`` is ``tick`` one clock later.

    Members
    -------
    tick, tick_q : Out(1)
    """

    def __init__(self, *, fold: int) -> None:
        if isinstance(fold, bool) or not isinstance(fold, int) or fold < 1:
            raise ValueError(f"Fold must be a positive integer, not {fold!r}")
        self._fold = fold
        super().__init__({"tick": Out(1), "tick_q": Out(1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        if self._fold == 1:
            m.d.comb += [self.tick.eq(1), self.tick_q.eq(1)]
            return m
        count = Signal(range(self._fold))
        m.d.sync += count.eq(Mux(count == self._fold - 1, 0, count + 1))
        m.d.comb += self.tick.eq(count == 0)
        m.d.sync += self.tick_q.eq(self.tick)
        return m


def _stepped() -> bool:
    """The channel has the controller's ``step`` input (the pipelined controller: the cycle
    counter advances only on a clock with ``step``; docs/rtl.md, "The pipelined controller")."""
    return "stepped" in inspect.signature(Channel.__init__).parameters


def _channel(cfg: Config, rows: int, refresh: bool, cycle_width: int) -> Channel:
    # the block RAM stage: no bank block RAM control input on the issue handshake (pim-smol's
    # critical path ran from the controller's decision into a block RAM's write enable)
    extra = {"stepped": True, "bram_stage": True} if _stepped() else {}
    return Channel(cfg=cfg, rows=rows, refresh=refresh, cycle_width=cycle_width, **extra)


def _gate(m: Module, ch: Channel, clk: EmulatedClock, *, cmd: object, wdata: object,
          issue: object, ready: Value) -> tuple[Value, Value]:
    """Run ``ch`` on emulated time and let an issue also wait for ``ready``. Returns the
    one-clock strobes ``(column_valid mask, rdata_valid)`` of the channel's outputs.

    With the controller's ``step`` input the emulated cycle counter advances only on a tick and
    the channel runs on every clock. Without it (the single-clock controller) the whole channel
    is clock-enabled by the tick (:class:`FoldedAttentionChannel` wraps it in an
    ``EnableInserter``): commands are taken and issued only on a tick, and the outputs it holds
    for the emulated cycle are strobes for the clock after the tick."""
    stepped = _stepped()
    en = 1 if stepped else clk.tick
    m.d.comb += [
        ch.cmd.valid.eq(cmd.valid),              # type: ignore[attr-defined]
        ch.cmd.payload.eq(cmd.payload),          # type: ignore[attr-defined]
        cmd.ready.eq(ch.cmd.ready & en),         # type: ignore[attr-defined]
        ch.wdata.valid.eq(wdata.valid),          # type: ignore[attr-defined]
        ch.wdata.payload.eq(wdata.payload),      # type: ignore[attr-defined]
        wdata.ready.eq(ch.wdata.ready),          # type: ignore[attr-defined]
        issue.valid.eq(ch.issue.valid & en & ready),   # type: ignore[attr-defined]
        issue.payload.eq(ch.issue.payload),      # type: ignore[attr-defined]
        ch.issue.ready.eq(issue.ready & en & ready),   # type: ignore[attr-defined]
    ]
    if stepped:
        m.d.comb += ch.step.eq(clk.tick)         # type: ignore[attr-defined]
        return ch.column_valid, ch.rdata_valid
    n = len(ch.column_valid)
    return ch.column_valid & Cat(*[clk.tick_q] * n), ch.rdata_valid & clk.tick_q


def _wrap(ch: Channel, clk: EmulatedClock) -> object:
    """The channel as elaborated: clock-enabled by the tick unless it has ``step``."""
    return ch if _stepped() else EnableInserter(clk.tick)(ch)


class FoldedChannel(wiring.Component):
    """:class:`starc_hw.channel.Channel` on emulated time: at least ``fold`` FPGA clocks per
    emulated DRAM cycle (the channel-only board sizes). Members as the channel's, ``rdata_valid``
    a one-clock strobe."""

    def __init__(self, *, cfg: Config, rows: int, fold: int, refresh: bool = True,
                 cycle_width: int = 48) -> None:
        self._ch = _channel(cfg, rows, refresh, cycle_width)
        self._clk = EmulatedClock(fold=fold)
        bits = cfg.org.column_bytes * 8
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "wdata": In(stream.Signature(bits)),
            "issue": Out(stream.Signature(issue_layout(cycle_width))),
            "rdata": Out(self._ch.rdata.shape()),
            "rdata_valid": Out(1),
            "cycle": Out(cycle_width),
            "complete": Out(cycle_width),
            "issued": Out(32),
            "fault": Out(Fault),
            "violations": Out(VIOLATIONS),
            "violation_count": Out(32),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.clock = clk = self._clk
        m.submodules.channel = _wrap(self._ch, clk)
        _, rdata_valid = _gate(m, self._ch, clk, cmd=self.cmd, wdata=self.wdata,
                               issue=self.issue, ready=1)
        c = self._ch
        m.d.comb += [
            self.rdata.eq(c.rdata), self.rdata_valid.eq(rdata_valid),
            self.cycle.eq(c.cycle), self.complete.eq(c.complete), self.issued.eq(c.issued),
            self.fault.eq(c.fault), self.violations.eq(c.violations),
            self.violation_count.eq(c.violation_count),
        ]
        return m


class FoldedAttentionChannel(wiring.Component):
    """One PIM channel computing one decode step of attention with the FPGA-shaped datapath.

    Parameters
    ----------
    cfg, head_dim, rows, max_entries, max_beats, refresh, cycle_width :
        As :class:`starc_hw.attention.AttentionChannel`.
    lanes_per_clock : int
        Lanes of a column each bank PU processes per FPGA clock.
    fold : int
        Minimum FPGA clocks per emulated DRAM cycle.

    Members
    -------
    cmd, wdata, issue, rdata, rdata_valid, cycle, complete, issued, fault, violations,
    violation_count, out_fp16, dp_error, busy, restart :
        As :class:`starc_hw.attention.AttentionChannel` (``rdata_valid`` a one-clock strobe).
    score_valid, score_entry : Out
        Strobe: an entry of a score move entering the softmax buffer (``group``, ``index``,
        ``valid``, ``score``).
    prob_valid, prob_entry : Out
        Strobe: a probability an MVGB writes (``group``, ``set``, ``slot``, ``index``,
        ``prob``).
    out_addr : In(range(head_dim))
    out_data : Out(acc width)
        The output accumulator at ``out_addr`` of the previous clock.
    stalls : Out(32)
        Ticks on which a command was ready to issue but waited for the datapath.
    """

    def __init__(self, *, cfg: Config, head_dim: int, lanes_per_clock: int, fold: int,
                 rows: int = 4, max_entries: int = 256, max_beats: int | None = None,
                 refresh: bool = True, cycle_width: int = 48) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        self._bpt, self._sets = check_attention_config(cfg, head_dim)
        self._cfg = cfg
        self._d = head_dim
        slots = cfg.tokens_per_bank_row()
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries <= 0:
            raise ValueError(f"max_entries must be a positive integer, not {max_entries!r}")
        self._entries = 1 << max(0, (max(max_entries, slots) - 1).bit_length())
        beats = max_beats if max_beats is not None else 2 * self._entries // slots
        self._beats = 1 << max(0, (beats - 1).bit_length())
        self._fmt = fp.acc_format(cfg.pu.acc_format)
        self._ch = _channel(cfg, rows, refresh, cycle_width)
        self._clk = EmulatedClock(fold=fold)
        self._pus = [FoldedPU(cfg=cfg, lanes_per_clock=lanes_per_clock)
                     for _ in range(cfg.org.banks_per_channel)]
        self._sfm = FoldedSoftmax(cfg=cfg, entries=self._entries, beats=self._beats)
        self._smove = ScoreMove(cfg=cfg, head_dim=head_dim)
        self._pmove = ProbMove(cfg=cfg, head_dim=head_dim)
        self._vmove = ValueMove(cfg=cfg, head_dim=head_dim, lanes_per_clock=lanes_per_clock)
        G = cfg.org.groups_per_channel
        bits = cfg.org.column_bytes * 8
        self.score_layout = data.StructLayout({"group": range(G), "index": range(slots),
                                               "valid": 1, "score": 32})
        self.prob_layout = data.StructLayout({"group": range(G), "set": range(max(2, self._sets)),
                                              "slot": 1, "index": range(slots), "prob": 16})
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "wdata": In(stream.Signature(bits)),
            "issue": Out(stream.Signature(issue_layout(cycle_width))),
            "rdata": Out(self._ch.rdata.shape()),
            "rdata_valid": Out(1),
            "score_valid": Out(1),
            "score_entry": Out(self.score_layout),
            "prob_valid": Out(1),
            "prob_entry": Out(self.prob_layout),
            "out_fp16": Out(data.ArrayLayout(16, head_dim)),
            "out_addr": In(range(head_dim)),
            "out_data": Out(self._fmt.width),
            "cycle": Out(cycle_width),
            "complete": Out(cycle_width),
            "issued": Out(32),
            "fault": Out(Fault),
            "violations": Out(VIOLATIONS),
            "violation_count": Out(32),
            "dp_error": Out(DP_ERRORS),
            "busy": Out(1),
            "stalls": Out(32),
            "restart": In(1),
        })

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def sets(self) -> int:
        return self._sets

    @property
    def pu_timing(self) -> object:
        return self._pus[0].timing

    def elaborate(self, platform: object) -> Module:  # noqa: C901 (one datapath, read in order)
        cfg = self._cfg
        org = cfg.org
        G, B = org.groups_per_channel, org.banks_per_group
        NB = G * B
        bpt = self._bpt
        bppu = cfg.pu.banks_per_pu
        top = Module()
        m = Module()
        top.submodules.glue = ResetInserter(self.restart)(m)
        top.submodules.clock = clk = ResetInserter(self.restart)(self._clk)
        top.submodules.channel = ResetInserter(self.restart)(_wrap(self._ch, clk))
        for name, sub in (("softmax", self._sfm), ("score_move", self._smove),
                          ("prob_move", self._pmove), ("value_move", self._vmove)):
            top.submodules[name] = ResetInserter(self.restart)(sub)
        for i, pu in enumerate(self._pus):
            top.submodules[f"pu{i}"] = ResetInserter(self.restart)(pu)
        ch, sfm, smove, pmove, vmove = self._ch, self._sfm, self._smove, self._pmove, self._vmove
        pus = self._pus
        err = self.dp_error

        # ---- the channel on emulated time; an issue waits for the datapath ---------------------
        ready = Signal()
        column_valid, rdata_valid = _gate(m, ch, clk, cmd=self.cmd, wdata=self.wdata,
                                          issue=self.issue, ready=ready)
        m.d.comb += [
            self.rdata.eq(ch.rdata), self.rdata_valid.eq(rdata_valid),
            self.cycle.eq(ch.cycle), self.complete.eq(ch.complete), self.issued.eq(ch.issued),
            self.fault.eq(ch.fault), self.violations.eq(ch.violations),
            self.violation_count.eq(ch.violation_count),
        ]
        head = ch.issue.payload.cmd
        fire = self.issue.valid & self.issue.ready
        with m.If(ch.issue.valid & clk.tick & self.issue.ready & ~ready):
            m.d.sync += self.stalls.eq(self.stalls + 1)     # an emulated cycle the datapath held
        vbit = (int(MacArg.VALUE)).bit_length() - 1
        bbit = (int(MacArg.BUF)).bit_length() - 1

        # ---- what each command needs from the datapath before it issues ------------------------
        # Computed from the head command and the datapath's state one clock ahead and
        # registered, so that no datapath logic sits in the controller's issue path; it holds
        # only if the head did not change and nothing issued in between (the datapath's state
        # turns busy only when a command issues).
        need = Signal()
        loaded_q = pipe.reg(m, self.cmd.valid & self.cmd.ready, "loaded_q")
        fired_q = pipe.reg(m, fire, "fired_q")
        m.d.comb += ready.eq(pipe.reg(m, need, "ready_q") & ~loaded_q & ~fired_q)
        phase = head.arg[vbit]
        grp = head.group
        in_group = [Signal(name=f"in_group{i}") for i in range(NB)]
        m.d.comb += [in_group[i].eq(grp == i // B) for i in range(NB)]
        # a MAC column in the register stage of the column bus (below) strobes its PU in the next
        # clock: until then that PU neither accepts another MAC nor is idle or free for a WRGB
        ccmd = ch.column_cmd
        pending = Signal(NB)
        for i in range(NB):
            sel = column_valid[i]
            if bppu > 1:
                sel = sel & (ccmd.bank == (i % B) % bppu)
            m.d.comb += pending[i].eq(sel)
        accept = Cat(*[Mux(phase, pu.accept[VALUE], pu.accept[SCORE]) for pu in pus]) & ~pending
        idle = Cat(*[pu.idle for pu in pus]) & ~pending
        qfree = Cat(*[pu.qfree for pu in pus]) & ~pending
        g_mask = Cat(*in_group)
        group_idle = (idle | ~g_mask).all()
        moves_off = ~smove.busy & ~vmove.reading & (~phase | ~pmove.busy)
        with m.Switch(head.op):
            with m.Case(Op.MACAB):
                m.d.comb += need.eq(accept.all() & moves_off)
            with m.Case(Op.MACBG):
                m.d.comb += need.eq((accept | ~g_mask).all() & moves_off)
            with m.Case(Op.WRGB):
                m.d.comb += need.eq(qfree.all())
            with m.Case(Op.MVSB):
                with m.If(head.col[bit(MoveFlag.VALUE)]):
                    m.d.comb += need.eq(group_idle & vmove.start.ready)
                with m.Else():
                    m.d.comb += need.eq(group_idle & smove.start.ready & sfm.wr.ready)
            with m.Case(Op.SFM):
                m.d.comb += need.eq(~smove.busy & sfm.can_start)
            with m.Case(Op.MVGB):
                m.d.comb += need.eq(sfm.ready & pmove.start.ready)
            with m.Default():
                m.d.comb += need.eq(1)

        # ---- processing units ------------------------------------------------------------------
        # A register stage on the column bus and on the query bus between the channel and the
        # PUs (the bank array's block RAM outputs and the write data fan out to the PUs across
        # the device; the stage lets the placer pull the PUs apart). It delays a MAC's strobe
        # and a WRGB's write by one FPGA clock, never an emulated cycle: a pending strobe holds
        # `accept`, `idle` and `qfree` (above), and a WRGB issues only when `qfree` held a clock
        # earlier and nothing issued in between, so the query is still free a clock later.
        mac_q = pipe.reg(m, Cat(pending, ccmd.col, ccmd.arg[vbit], ccmd.arg[bbit]), "mac_q")
        strobe_q, mac_col = mac_q[:NB], mac_q[NB:NB + len(ccmd.col)]
        mac_value, mac_buf = mac_q[NB + len(ccmd.col)], mac_q[NB + len(ccmd.col) + 1]
        wrgb_q = pipe.reg(m, Cat(ch.wrgb_valid, ch.wrgb_chunk, ch.wrgb_data), "wrgb_q")
        nchunk = len(ch.wrgb_chunk)
        for i, pu in enumerate(pus):
            b = i % B
            m.d.comb += [
                pu.bank_slice.eq(b % bpt),
                pu.mac.valid.eq(strobe_q[i]),
                pu.mac.payload.data.eq(pipe.reg(m, ch.column[i], f"column{i}_q")),
                pu.mac.payload.col.eq(mac_col),
                pu.mac.payload.value.eq(mac_value),
                pu.mac.payload.buf.eq(mac_buf),
                pu.wrgb.valid.eq(wrgb_q[0]),
                pu.wrgb.payload.chunk.eq(wrgb_q[1:1 + nchunk]),
                pu.wrgb.payload.data.eq(wrgb_q[1 + nchunk:]),
                pu.score_addr.eq(smove.score_addr),
                smove.score_data[i].eq(pu.score_data),
                pu.acc_addr.eq(vmove.acc_addr),
                vmove.acc_data[i].eq(pu.acc_data),
                pu.acc_clear.eq(vmove.acc_clear[i]),
                pu.prob.valid.eq(pmove.prob_valid[i]),
                pu.prob.payload.eq(pmove.prob),
            ]

        # ---- moves and softmax, started by their commands --------------------------------------
        is_op = {op: fire & (head.op == op) for op in (Op.MVSB, Op.SFM, Op.MVGB)}
        m.d.comb += [
            smove.start.valid.eq(is_op[Op.MVSB] & ~head.col[bit(MoveFlag.VALUE)]),
            smove.start.payload.group.eq(grp),
            smove.start.payload.buf.eq(head.col[bit(MoveFlag.BUF)]),
            smove.start.payload.mask.eq(head.arg[:32]),
            vmove.start.valid.eq(is_op[Op.MVSB] & head.col[bit(MoveFlag.VALUE)]),
            vmove.start.payload.group.eq(grp),
            vmove.start.payload.half.eq(head.col[bit(MoveFlag.HALF)]),
            sfm.start.valid.eq(is_op[Op.SFM]),
            sfm.start.payload.eq(head.arg[:32]),
            pmove.start.valid.eq(is_op[Op.MVGB]),
            pmove.start.payload.group.eq(grp),
            pmove.start.payload.slot.eq(head.col[bit(MoveFlag.BUF)]),
            pmove.pending.eq(sfm.ready),
            vmove.out_addr.eq(self.out_addr),
            self.out_data.eq(vmove.out_data),
            self.out_fp16.eq(vmove.out_fp16),
        ]
        wiring.connect(m, smove.out, sfm.wr)
        wiring.connect(m, sfm.rd, pmove.rd)

        # ---- monitors ---------------------------------------------------------------------------
        wr = sfm.wr.payload
        m.d.comb += [
            self.score_valid.eq(sfm.wr.valid & sfm.wr.ready),
            self.score_entry.group.eq(wr.tag), self.score_entry.index.eq(wr.index),
            self.score_entry.valid.eq(wr.valid), self.score_entry.score.eq(wr.score),
        ]
        pset = Signal(range(max(2, self._sets)))
        with m.If(pmove.start.valid & pmove.start.ready):
            m.d.sync += pset.eq(0)
        with m.Elif(sfm.rd.valid & sfm.rd.ready & sfm.rd.payload.last):
            m.d.sync += pset.eq(pset + 1)
        m.d.comb += [
            self.prob_valid.eq(sfm.rd.valid & sfm.rd.ready),
            self.prob_entry.group.eq(sfm.rd.payload.tag), self.prob_entry.set.eq(pset),
            self.prob_entry.slot.eq(pmove.prob.slot), self.prob_entry.index.eq(pmove.prob.index),
            self.prob_entry.prob.eq(pmove.prob.data),
        ]

        # ---- contract flags (all zero in a correct run) ----------------------------------------
        with m.If(Cat(*[pu.error for pu in pus]).any()):
            m.d.sync += err.move_overrun.eq(1)
        with m.If(smove.error):
            m.d.sync += err.buffer_full.eq(1)
        with m.If(sfm.error):
            m.d.sync += err.sfm_count.eq(1)
        with m.If(pmove.missing):
            m.d.sync += err.prob_missing.eq(1)
        with m.If(pmove.wrong_group):
            m.d.sync += err.prob_group.eq(1)
        m.d.comb += self.busy.eq(~idle.all() | smove.busy | pmove.busy | vmove.busy | sfm.busy)
        return top

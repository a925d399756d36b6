"""The command front end of one channel: issues a PIM program at the golden model's cycles.

:class:`Controller` takes the program as a stream of packed command words and issues each command
at the earliest cycle the scheduling rule of docs/commands.md allows, inserting refreshes, exactly
as :func:`starc.golden.timing.schedule` does (the tests compare every issue cycle). docs/rtl.md
describes the timestamp scheme and shows timing diagrams.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.golden.timing import mac_latency, move_spacing
from starc.isa import MacArg, MoveFlag, Op, bit

from .layouts import COMMAND, Fault, issue_layout

__all__ = ["Controller", "Fault"]


def _log2(n: int) -> int:
    return n.bit_length() - 1


class Controller(wiring.Component):
    """In-order PIM command issue at the earliest legal cycle (docs/commands.md, docs/rtl.md).

    The controller counts DRAM cycles in :attr:`cycle`. It keeps, for every kind of event the
    scheduling rule refers to, the cycle of the latest such event (ACT, PRE, column, write at
    channel, group and bank level; per-rank activations and the four-activation window; the row
    bus; the data path per pseudo-channel, rank and group; MAC, move and softmax completions). The
    command at the head of :attr:`cmd` issues in the first cycle ``t`` with ``t >= earliest``,
    where ``earliest`` is the maximum of those timestamps plus their minimum distances: the same
    formula as the golden model, so the issue cycles are equal.

    *Emulated time.* A DRAM cycle elapses on each clock except when the controller waits for its
    host: no command at the head of :attr:`cmd`, or an issued command not yet accepted on
    :attr:`issue`. Host-side idles and backpressure therefore never change the schedule; with a
    host that keeps up, every clock is one DRAM cycle.

    Parameters
    ----------
    cfg : Config
        Organisation (groups, banks per group, ranks) and timing of the channel.
    refresh : bool
        Insert refreshes (``timing.schedule(..., refresh=True)``).
    cycle_width : int
        Width of the cycle counter and of every timestamp register (24 .. 64).

    Members
    -------
    cmd : In(stream.Signature(COMMAND))
        The program, one packed command word per transfer (``starc.isa.encode``).
    issue : Out(stream.Signature(issue_layout(cycle_width)))
        Each issued command (program commands and inserted refreshes) with its issue cycle.
        Issued commands take effect in the DRAM when they transfer; a bank array watches
        ``issue.valid & issue.ready``.
    cycle : Out(cycle_width)
        The current DRAM cycle.
    complete : Out(cycle_width)
        Latest completion of the commands issued so far (the program's cycle count at the end).
    issued : Out(32)
        Number of issued commands, inserted refreshes included.
    fault : Out(Fault)
        Sticky; the controller stops at the first illegal command.
    """

    def __init__(self, *, cfg: Config, refresh: bool = True, cycle_width: int = 48) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        if not isinstance(refresh, bool):
            raise TypeError(f"Refresh must be a bool, not {refresh!r}")
        if isinstance(cycle_width, bool) or not isinstance(cycle_width, int) \
                or not 24 <= cycle_width <= 64:
            raise ValueError(f"Cycle width must be an integer from 24 to 64, not {cycle_width!r}")
        self._cfg = cfg
        self._refresh = refresh
        self._w = cycle_width
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "issue": Out(stream.Signature(issue_layout(cycle_width))),
            "cycle": Out(cycle_width),
            "complete": Out(cycle_width),
            "issued": Out(32),
            "fault": Out(Fault),
        })

    @property
    def cfg(self) -> Config:
        return self._cfg

    def elaborate(self, platform: object) -> Module:  # noqa: C901 - one rule, one place
        m = Module()
        cfg, org, tm, pu = self._cfg, self._cfg.org, self._cfg.timing, self._cfg.pu
        W = self._w
        S = signed(W)
        NEG = -(1 << (W - 2))  # "never": NEG + any distance is still before cycle 0

        G = org.groups_per_channel
        BPG = org.banks_per_group
        NB = G * BPG
        R = org.ranks_per_channel
        PC = org.pseudo_channels
        lg_bpg, lg_bgs, lg_sids = _log2(BPG), _log2(org.bank_groups), _log2(org.sids)

        tRCD, tRP, tRAS, tRC = tm.tRCD, tm.tRP, tm.tRAS, tm.tRC
        tRTP, tWRP = tm.tRTP_L, tm.tCWL + tm.tBL + tm.tWR
        tCCD_S, tCCD_L, tCCD_AB, tBL = tm.tCCD_S, tm.tCCD_L, tm.tCCD_AB, tm.tBL
        tRRD_S, tRRD_L, tFAW = tm.tRRD_S, tm.tRRD_L, tm.tFAW
        tREFI, tRFC, ROWC = tm.tREFI, tm.tRFC, tm.row_cmd_cycles
        tWTR_S = tm.tCWL + tm.tBL + tm.tWTR_S
        tWTR_L = tm.tCWL + tm.tBL + tm.tWTR_L
        tRTW = tm.CL + tm.tBL + 2 - tm.tCWL
        MACLAT = mac_latency(cfg)
        MV = pu.mv_cycles
        MOVE = move_spacing(cfg)

        def named(expr: Value, name: str) -> Signal:
            sig = Signal(S, name=name)
            m.d.comb += sig.eq(expr)
            return sig

        counter = iter(range(1 << 30))

        def vmax(*values: Value) -> Signal:
            """Maximum as a balanced comparator tree; every node is a signal so that no operand
            expression is duplicated in the netlist."""
            vals = [v if isinstance(v, Signal) else named(v, f"mx{next(counter)}")
                    for v in values]
            while len(vals) > 1:
                nxt = [named(Mux(x > y, x, y), f"mx{next(counter)}")
                       for x, y in zip(vals[0::2], vals[1::2], strict=False)]
                if len(vals) % 2:
                    nxt.append(vals[-1])
                vals = nxt
            return vals[0]

        def ts(name: str) -> Signal:
            return Signal(S, init=NEG, name=name)

        def tss(name: str, n: int) -> Array:
            return Array(Signal(S, init=NEG, name=f"{name}_{i}") for i in range(n))

        # ---- timestamp registers (the golden model's state, register for register) ----------
        act_all, act_allmax = ts("act_all"), ts("act_allmax")
        act_grp, act_grpmax, act_bank = tss("act_grp", G), tss("act_grpmax", G), tss("act_bank", NB)
        pre_all, pre_allmax = ts("pre_all"), ts("pre_allmax")
        pre_grp, pre_grpmax, pre_bank = tss("pre_grp", G), tss("pre_grpmax", G), tss("pre_bank", NB)
        col_all, col_allmax = ts("col_all"), ts("col_allmax")
        col_grp, col_grpmax, col_bank = tss("col_grp", G), tss("col_grpmax", G), tss("col_bank", NB)
        wr_allmax, wr_grpmax, wr_bank = ts("wr_allmax"), tss("wr_grpmax", G), tss("wr_bank", NB)
        rank_act = tss("rank_act", R)
        faw = [[ts(f"faw_{r}_{i}") for i in range(4)] for r in range(R)]  # newest first
        faw_oldest = Array(faw[r][3] for r in range(R))
        last_row = ts("last_row")
        last_ref = ts("last_ref")    # REF -> REF (tRFC)
        ref_block = ts("ref_block")  # inserted REF -> ACT (tRFC); see docs/rtl.md on explicit REF
        macab_t, macbg_any, macbg_grp = ts("macab_t"), ts("macbg_any"), tss("macbg_grp", G)
        d_all, d_allmax = ts("d_all"), ts("d_allmax")
        d_pc, d_rank, d_grp = tss("d_pc", PC), tss("d_rank", R), tss("d_grp", G)
        rd_grp, rd_rank = tss("rd_grp", G), tss("rd_rank", R)
        wrc_grp, wrc_rank = tss("wrc_grp", G), tss("wrc_rank", R)
        wrgb_done = ts("wrgb_done")
        mvgb_done = tss("mvgb_done", 2 * G)          # index 2 g + slot
        mvgb_done_all = tss("mvgb_done_all", 2)
        mac_set_all = tss("mac_set_all", 4)          # register set 0, 1 (score), 2 (value)
        mac_set_grp = tss("mac_set_grp", 4 * G)      # index 4 g + set
        mvsb_done, sfm_end = ts("mvsb_done"), ts("sfm_end")
        mvs_t, mvg_t = ts("mvs_t"), ts("mvg_t")      # last score MVSB, last MVGB (move_spacing)
        complete = Signal(S, init=0)
        next_due = Signal(S, init=tREFI if self._refresh else (1 << (W - 2)) - 1)
        refb = Signal(S, init=tREFI)  # next multiple of tREFI after the current cycle
        is_open = Signal(NB)

        now = Signal(S, init=0)
        prev = Signal(S, init=-1)
        head = Signal(COMMAND)
        head_valid = Signal()
        fault = Signal(Fault)

        # ---- decode the head command ---------------------------------------------------------
        op, g, b, col, arg = head.op, head.group, head.bank, head.col, head.arg
        bi = Cat(b[:lg_bpg], g)
        r = g >> lg_bgs
        pc = r >> lg_sids
        grp_bits = is_open.word_select(g, BPG)
        any_open = is_open.any()
        all_open = is_open.all()
        grp_all_open = grp_bits.all()
        grp_any_open = grp_bits.any()
        bank_open = is_open.bit_select(bi, 1)
        value = arg[_log2(int(MacArg.VALUE))]
        buf = arg[_log2(int(MacArg.BUF))]
        mac_set = Mux(value, 2, buf)
        mv_value, mv_buf = col[bit(MoveFlag.VALUE)], col[bit(MoveFlag.BUF)]
        mv_set = Mux(mv_value, 2, mv_buf)

        t0 = prev + 1
        row_bus = last_row + ROWC
        act_g = vmax(act_all, act_grpmax[g])
        act_b = vmax(act_all, act_grp[g], act_bank[bi])

        e = {}
        # column (MAC) commands
        e[Op.MACAB] = vmax(t0, act_allmax + tRCD, macab_t + tCCD_AB, macbg_any + tCCD_AB,
                            vmax(*rd_grp, *wrc_grp) + tCCD_L,
                            Mux(value, mvgb_done_all[buf], wrgb_done))
        e[Op.MACBG] = vmax(t0, act_g + tRCD, macab_t + tCCD_AB, macbg_any + tCCD_S,
                            macbg_grp[g] + tCCD_L, vmax(rd_grp[g], wrc_grp[g]) + tCCD_L,
                            Mux(value, mvgb_done[Cat(buf, g)], wrgb_done))
        # activations
        e_actab = vmax(t0, row_bus, ref_block, last_ref + tRFC, pre_allmax + tRP,
                       act_allmax + tRC, vmax(*rank_act) + tRRD_L, vmax(*faw_oldest) + tFAW)
        act_rank = vmax(t0, row_bus, ref_block, last_ref + tRFC, rank_act[r] + tRRD_S,
                        faw_oldest[r] + tFAW, act_g + tRRD_L)
        e[Op.ACTAB] = e_actab
        e[Op.ACTBG] = vmax(act_rank, vmax(pre_all, pre_grpmax[g]) + tRP, act_g + tRC)
        e[Op.ACTPB] = vmax(act_rank, vmax(pre_all, pre_grp[g], pre_bank[bi]) + tRP,
                            act_b + tRC)
        # precharges
        e[Op.PREA] = vmax(t0, row_bus, act_allmax + tRAS, col_allmax + tRTP,
                           wr_allmax + tWRP)
        e[Op.PREBG] = vmax(t0, row_bus, act_g + tRAS, vmax(col_all, col_grpmax[g]) + tRTP,
                            wr_grpmax[g] + tWRP)
        e[Op.PREPB] = vmax(t0, row_bus, act_b + tRAS,
                            vmax(col_all, col_grp[g], col_bank[bi]) + tRTP, wr_bank[bi] + tWRP)
        # data path
        d_base = vmax(t0, d_all + tCCD_L, d_pc[pc] + tBL, d_rank[r] + tCCD_S, d_grp[g] + tCCD_L)
        e[Op.MVSB] = vmax(d_base, vmax(mac_set_all[mv_set], mac_set_grp[Cat(mv_set[:2], g)])
                           + MACLAT, Mux(mv_value, t0, mvs_t + MOVE))
        e[Op.MVGB] = vmax(d_base, sfm_end, mvg_t + MOVE)
        rw_col = vmax(d_base, act_b + tRCD, macab_t + tCCD_AB, macbg_grp[g] + tCCD_L)
        e[Op.RD] = vmax(rw_col, wrc_grp[g] + tWTR_L, wrc_rank[r] + tWTR_S)
        e[Op.WR] = vmax(rw_col, rd_grp[g] + tRTW, rd_rank[r] + tRTW)
        e[Op.WRGB] = vmax(t0, d_allmax + tCCD_L)
        e[Op.SFM] = vmax(t0, d_allmax + tCCD_L, mvsb_done, sfm_end)
        # others
        e_ref = vmax(t0, row_bus, pre_allmax + tRP, act_allmax + tRC, last_ref + tRFC)
        e[Op.REF] = e_ref
        e[Op.BAR] = vmax(t0, complete)

        earliest = Signal(S)
        is_act = Signal()
        bad = Signal(Fault)
        with m.Switch(op):
            for o, expr in e.items():
                with m.Case(o):
                    m.d.comb += earliest.eq(expr)
        m.d.comb += is_act.eq((op == Op.ACTAB) | (op == Op.ACTBG) | (op == Op.ACTPB))

        # ---- legality (the golden model's ProgramError cases) -------------------------------
        g_bad = g >= G
        gb_bad = g_bad | (b >= BPG)
        with m.Switch(op):
            with m.Case(Op.ACTAB):
                m.d.comb += bad.eq(Mux(any_open, Fault.OPEN, Fault.NONE))
            with m.Case(Op.ACTBG):
                m.d.comb += bad.eq(Mux(g_bad, Fault.RANGE, Mux(grp_any_open, Fault.OPEN,
                                                                 Fault.NONE)))
            with m.Case(Op.ACTPB):
                m.d.comb += bad.eq(Mux(gb_bad, Fault.RANGE, Mux(bank_open, Fault.OPEN,
                                                                  Fault.NONE)))
            with m.Case(Op.PREBG, Op.MVSB, Op.MVGB):
                m.d.comb += bad.eq(Mux(g_bad, Fault.RANGE, Fault.NONE))
            with m.Case(Op.PREPB):
                m.d.comb += bad.eq(Mux(gb_bad, Fault.RANGE, Fault.NONE))
            with m.Case(Op.MACAB):
                m.d.comb += bad.eq(Mux(all_open, Fault.NONE, Fault.CLOSED))
            with m.Case(Op.MACBG):
                m.d.comb += bad.eq(Mux(g_bad, Fault.RANGE, Mux(grp_all_open, Fault.NONE,
                                                                 Fault.CLOSED)))
            with m.Case(Op.RD, Op.WR):
                m.d.comb += bad.eq(Mux(gb_bad, Fault.RANGE, Mux(bank_open, Fault.NONE,
                                                                  Fault.CLOSED)))
            with m.Case(Op.REF):
                m.d.comb += bad.eq(Mux(any_open, Fault.OPEN, Fault.NONE))
            with m.Case(Op.PREA, Op.WRGB, Op.SFM, Op.BAR):
                m.d.comb += bad.eq(Fault.NONE)
            with m.Default():
                m.d.comb += bad.eq(Fault.OPCODE)

        # ---- refresh insertion: before an activation at or after the due cycle, banks closed --
        need_ref = Signal()
        if self._refresh:
            m.d.comb += need_ref.eq(is_act & (earliest >= next_due) & ~any_open)
        when = Signal(S)
        m.d.comb += when.eq(Mux(need_ref, e_ref, earliest))

        # ---- handshakes and emulated time ---------------------------------------------------
        ok = head_valid & (fault == Fault.NONE) & (bad == Fault.NONE)
        fire = Signal()
        m.d.comb += [
            self.issue.valid.eq(ok & (now >= when)),
            fire.eq(self.issue.valid & self.issue.ready),
            self.cmd.ready.eq(~head_valid | (fire & ~need_ref)),
            self.issue.payload.cmd.eq(Mux(need_ref, Const(int(Op.REF), COMMAND.size), head)),
            self.issue.payload.cycle.eq(now),
            self.issue.payload.inserted.eq(need_ref),
            self.cycle.eq(now),
            self.complete.eq(complete),
            self.fault.eq(fault),
        ]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [head.eq(self.cmd.payload), head_valid.eq(1)]
        with m.Elif(fire & ~need_ref):
            m.d.sync += head_valid.eq(0)
        with m.If(head_valid & (fault == Fault.NONE) & (bad != Fault.NONE)):
            m.d.sync += fault.eq(bad)

        advance = ok & ~(self.issue.valid & ~self.issue.ready)
        with m.If(advance):
            m.d.sync += now.eq(now + 1)
            with m.If(now + 1 == refb):
                m.d.sync += refb.eq(refb + tREFI)

        # ---- state update on issue -----------------------------------------------------------
        # Written as one write enable per register (a one-hot decode of the command and its
        # group/bank/rank), which keeps the generated Verilog, and the Verilator build, small.
        t = now
        run = Signal()
        m.d.comb += run.eq(fire & ~need_ref)

        def when_op(*ops: Op) -> Signal:
            sig = Signal(name="is_" + "_".join(o.name.lower() for o in ops))
            m.d.comb += sig.eq(run & Cat(*(op == o for o in ops)).any())
            return sig

        def onehot(index: Value, n: int, name: str) -> list[Signal]:
            hits = [Signal(name=f"{name}_{i}") for i in range(n)]
            m.d.comb += [h.eq(index == i) for i, h in enumerate(hits)]
            return hits

        at_g, at_b = onehot(g, G, "at_g"), onehot(bi, NB, "at_b")
        at_r, at_pc = onehot(r, R, "at_r"), onehot(pc, PC, "at_pc")
        i_macab, i_macbg = when_op(Op.MACAB), when_op(Op.MACBG)
        i_actab, i_actbg, i_actpb = when_op(Op.ACTAB), when_op(Op.ACTBG), when_op(Op.ACTPB)
        i_prea, i_prebg, i_prepb = when_op(Op.PREA), when_op(Op.PREBG), when_op(Op.PREPB)
        i_mvsb, i_mvgb, i_rd, i_wr = when_op(Op.MVSB), when_op(Op.MVGB), when_op(Op.RD), \
            when_op(Op.WR)
        i_grpdata = when_op(Op.MVSB, Op.MVGB, Op.RD, Op.WR)
        i_alldata = when_op(Op.WRGB, Op.SFM)
        i_wrgb, i_sfm, i_ref = when_op(Op.WRGB), when_op(Op.SFM), when_op(Op.REF)
        i_act_rank = when_op(Op.ACTBG, Op.ACTPB)
        i_ref_any = Signal()
        m.d.comb += i_ref_any.eq(i_ref | (fire & need_ref))

        writes: dict[int, tuple[Signal, list[Value]]] = {}  # by id(): signals do not hash

        def upd(reg: Signal, cond: Value) -> None:
            writes.setdefault(id(reg), (reg, []))[1].append(cond)

        def upd_each(regs: Array, hits: list[Signal], cond: Value) -> None:
            for reg, hit in zip(regs, hits, strict=True):
                upd(reg, cond & hit)

        def upd_all(regs: Array, cond: Value) -> None:
            for reg in regs:
                upd(reg, cond)

        # MAC
        for x in (macab_t, col_all):
            upd(x, i_macab)
        upd(col_allmax, i_macab | i_macbg | i_rd)
        for k in range(3):
            upd(mac_set_all[k], i_macab & (mac_set == k))
        upd(macbg_any, i_macbg)
        upd_each(macbg_grp, at_g, i_macbg)
        upd_each(col_grp, at_g, i_macbg)
        upd_each(col_grpmax, at_g, i_macbg | i_rd)
        for gi in range(G):
            for k in range(3):
                upd(mac_set_grp[4 * gi + k], i_macbg & at_g[gi] & (mac_set == k))
        # activations
        upd(act_all, i_actab)
        upd(act_allmax, i_actab | i_actbg | i_actpb)
        upd_each(act_grp, at_g, i_actbg)
        upd_each(act_grpmax, at_g, i_actbg | i_actpb)
        upd_each(act_bank, at_b, i_actpb)
        upd(last_row, i_actab | i_actbg | i_actpb | i_prea | i_prebg | i_prepb | i_ref_any)
        for rr in range(R):
            upd(rank_act[rr], i_actab | (i_act_rank & at_r[rr]))
            upd(faw[rr][0], i_actab | (i_act_rank & at_r[rr]))
        # precharges
        upd(pre_all, i_prea)
        upd(pre_allmax, i_prea | i_prebg | i_prepb)
        upd_each(pre_grp, at_g, i_prebg)
        upd_each(pre_grpmax, at_g, i_prebg | i_prepb)
        upd_each(pre_bank, at_b, i_prepb)
        # data path
        upd(d_all, i_alldata)
        upd(d_allmax, i_alldata | i_grpdata)
        upd_each(d_pc, at_pc, i_grpdata)
        upd_each(d_rank, at_r, i_grpdata)
        upd_each(d_grp, at_g, i_grpdata)
        upd_all(d_pc, i_alldata)
        upd_all(d_rank, i_alldata)
        upd_all(d_grp, i_alldata)
        upd_each(rd_grp, at_g, i_rd)
        upd_each(rd_rank, at_r, i_rd)
        upd_each(col_bank, at_b, i_rd)
        upd_each(wrc_grp, at_g, i_wr)
        upd_each(wrc_rank, at_r, i_wr)
        upd_each(wr_bank, at_b, i_wr)
        upd_each(wr_grpmax, at_g, i_wr)
        upd(wr_allmax, i_wr)
        upd(last_ref, i_ref_any)

        for reg, conds in writes.values():
            with m.If(Cat(*conds).any()):
                m.d.sync += reg.eq(t)

        # registers written with other values than the issue cycle
        sfm_done = Signal(S)
        lanes = pu.sfm_lanes
        if lanes & (lanes - 1):
            chunks = (arg + (lanes - 1)) // lanes
        else:
            chunks = (arg + (lanes - 1)) >> _log2(lanes)
        m.d.comb += sfm_done.eq(t + pu.sfm_latency + pu.sfm_passes * chunks)
        with m.If(i_mvsb):
            m.d.sync += mvsb_done.eq(t + MV)
            with m.If(~mv_value):
                m.d.sync += mvs_t.eq(t)
        with m.If(i_mvgb):
            m.d.sync += mvg_t.eq(t)
        for gi in range(G):
            for sl in range(2):
                with m.If(i_mvgb & at_g[gi] & (mv_buf == sl)):
                    m.d.sync += mvgb_done[2 * gi + sl].eq(t + MV)
        for sl in range(2):
            with m.If(i_mvgb & (mv_buf == sl)):
                m.d.sync += mvgb_done_all[sl].eq(t + MV)
        with m.If(i_wrgb):
            m.d.sync += wrgb_done.eq(t + MV)
        with m.If(i_sfm):
            m.d.sync += sfm_end.eq(sfm_done)
        with m.If(fire & need_ref):
            m.d.sync += [next_due.eq(next_due + tREFI), ref_block.eq(t + tRFC)]
        if self._refresh:
            with m.If(i_ref & (refb > next_due)):
                m.d.sync += next_due.eq(refb)

        # open banks
        for i in range(NB):
            gi = i // BPG
            with m.If(i_actab | (i_actbg & at_g[gi]) | (i_actpb & at_b[i])):
                m.d.sync += is_open[i].eq(1)
            with m.If(i_prea | (i_prebg & at_g[gi]) | (i_prepb & at_b[i])):
                m.d.sync += is_open[i].eq(0)
        # the four-activation window: newest first
        for rr in range(R):
            with m.If(i_actab | (i_act_rank & at_r[rr])):
                m.d.sync += [faw[rr][i].eq(faw[rr][i - 1]) for i in range(1, 4)]

        # completion of the issued command, and the counters
        done = Signal(S)
        with m.Switch(Mux(need_ref, Op.REF, op)):
            with m.Case(Op.MACAB, Op.MACBG):
                m.d.comb += done.eq(t + MACLAT)
            with m.Case(Op.ACTAB, Op.ACTBG, Op.ACTPB, Op.PREA, Op.PREBG, Op.PREPB):
                m.d.comb += done.eq(t + ROWC)
            with m.Case(Op.MVSB, Op.MVGB, Op.WRGB):
                m.d.comb += done.eq(t + MV)
            with m.Case(Op.RD):
                m.d.comb += done.eq(t + tm.CL + tBL)
            with m.Case(Op.WR):
                m.d.comb += done.eq(t + tm.tCWL + tBL)
            with m.Case(Op.SFM):
                m.d.comb += done.eq(sfm_done)
            with m.Case(Op.REF):
                m.d.comb += done.eq(t + tRFC)
            with m.Case(Op.BAR):
                m.d.comb += done.eq(t + 1)
        with m.If(fire):
            m.d.sync += [prev.eq(t), self.issued.eq(self.issued + 1)]
            with m.If(done > complete):
                m.d.sync += complete.eq(done)
        return m

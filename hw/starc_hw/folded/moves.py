"""The moves of the folded attention datapath, one entry (or one lane) per FPGA clock, bit-exact
with ``starc_hw.attention`` (docs/commands.md, "Functional semantics"):

* :class:`ScoreMove` (score MVSB): for each token set ``j`` and slot ``s`` of the group, the
  fixed tree over the ``bpt`` banks of the set of ``score[buf][s]``, to the softmax buffer with
  its mask bit, set-major.
* :class:`ProbMove` (MVGB): the next ``sets x slots`` probabilities of the softmax into the
  group's banks, beat ``j`` to the banks of token set ``j``.
* :class:`ValueMove` (value MVSB): for each set ``j`` (ascending) and bank of the set, the 16
  accumulators ``acc[h]`` of the group added in FP32 to the channel output accumulator
  ``out[32 k + 16 h + l]``, then cleared; the FP16 output follows every add.

Each move starts when the channel lets its command issue (``start``) and works on fixed clocks
after that; the channel holds the emulated clock while a move it would disturb is running.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.numerics import FP16, FP32

from .. import fp
from . import pipe

__all__ = ["ProbMove", "ScoreMove", "ValueMove"]


def _geometry(cfg: Config, head_dim: int) -> tuple[int, int, int, int, int]:
    """``(groups, banks_per_group, banks_per_token, sets, slots)``."""
    B = cfg.org.banks_per_group
    bpt = cfg.banks_per_token(head_dim)
    return cfg.org.groups_per_channel, B, bpt, B // bpt, cfg.tokens_per_bank_row()


class ScoreMove(wiring.Component):
    """Score MVSB: the group's scores, summed over the banks of each token set, to the softmax.

    Members
    -------
    start : In(stream.Signature(StructLayout({"group", "buf", "mask"})))
        Ready while the move is idle.
    score_addr : Out(StructLayout({"buf", "slot"}))
        To every PU's score read port.
    score_data : In(ArrayLayout(width, banks))
        Every PU's score read data (one clock after ``score_addr``).
    out : Out(stream.Signature(StructLayout({"score", "valid", "index", "tag"})))
        Entries for :attr:`FoldedSoftmax.wr <starc_hw.folded.softmax.FoldedSoftmax.wr>`, one
        per clock (``slots x sets`` per move); the softmax must be ready (else ``error``).
    busy : Out(1)
    error : Out(1)
        Sticky: the softmax refused an entry.
    """

    def __init__(self, *, cfg: Config, head_dim: int) -> None:
        self._cfg = cfg
        self._fmt = fp.acc_format(cfg.pu.acc_format)
        G, B, bpt, sets, S = _geometry(cfg, head_dim)
        self._geo = (G, B, bpt, sets, S)
        super().__init__({
            "start": In(stream.Signature(data.StructLayout({
                "group": range(G), "buf": 1, "mask": 32}))),
            "score_addr": Out(data.StructLayout({"buf": 1, "slot": range(S)})),
            "score_data": In(data.ArrayLayout(self._fmt.width, G * B)),
            "out": Out(stream.Signature(data.StructLayout({
                "score": 32, "valid": 1, "index": range(S), "tag": range(G)}))),
            "busy": Out(1),
            "error": Out(1),
        })

    @property
    def latency(self) -> int:
        """Clocks from an entry's read address to the entry on :attr:`out`."""
        G, B, bpt, sets, S = self._geo
        return 2 + fp.tree_levels(bpt) * pipe.ADD_LATENCY + (self._fmt != FP32)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        G, B, bpt, sets, S = self._geo
        fmt = self._fmt
        n = sets * S
        group = Signal(range(G))
        buf = Signal()
        mask = Signal(32)
        e = Signal(range(n + 1))
        active = Signal()
        m.d.comb += self.start.ready.eq(~self.busy)
        with m.If(self.start.valid & self.start.ready):
            m.d.sync += [group.eq(self.start.payload.group), buf.eq(self.start.payload.buf),
                         mask.eq(self.start.payload.mask), e.eq(0), active.eq(1)]
        with m.Elif(active):
            m.d.sync += e.eq(e + 1)
            with m.If(e == n - 1):
                m.d.sync += active.eq(0)
        j = e // S if sets > 1 else 0
        m.d.comb += [self.score_addr.buf.eq(buf), self.score_addr.slot.eq(e % S)]
        # clock after the address: the data; registered with the entry's set and slot
        tag = data.StructLayout({"v": 1, "j": range(max(2, sets)), "s": range(S)})
        t1 = Signal(tag)
        m.d.sync += [t1.v.eq(active), t1.j.eq(j), t1.s.eq(e % S)]
        by_group = Array(Cat(*[self.score_data[g * B + b] for b in range(B)]) for g in range(G))
        row = Signal(fmt.width * B)
        m.d.comb += row.eq(by_group[group])
        parts = Array(Cat(*[row[fmt.width * (jj * bpt + k):fmt.width * (jj * bpt + k + 1)]
                            for k in range(bpt)]) for jj in range(sets))
        sel = pipe.reg(m, parts[t1.j], "sel")             # the set's bpt scores
        tq = pipe.reg(m, t1, "t2")
        vals = [sel[fmt.width * k:fmt.width * (k + 1)] for k in range(bpt)]
        lat = 0
        while len(vals) > 1:      # the fixed pairwise tree over the banks of the set
            nxt = [pipe.add(m, fmt, vals[i], vals[i + 1], f"bank_sum{lat}_{i}")
                   for i in range(0, len(vals) - 1, 2)]
            vals = nxt + ([pipe.delay(m, vals[-1], pipe.ADD_LATENCY, f"pass{lat}")]
                          if len(vals) % 2 else [])
            lat += pipe.ADD_LATENCY
        total = vals[0] if fmt == FP32 else pipe.reg(m, fp.widen(m, vals[0]), "wide")
        lat += fmt != FP32
        tq = data.View(tag, pipe.delay(m, tq, lat, "tq"))
        m.d.comb += [
            self.out.valid.eq(tq.v),
            self.out.payload.score.eq(total),
            self.out.payload.valid.eq(mask.bit_select(tq.j * S + tq.s, 1)),
            self.out.payload.index.eq(tq.s),
            self.out.payload.tag.eq(group),
            self.busy.eq(active | _tail(m, active, self.latency)),
        ]
        with m.If(self.out.valid & ~self.out.ready):
            m.d.sync += self.error.eq(1)
        return m


class ProbMove(wiring.Component):
    """MVGB: ``sets x slots`` probabilities from the softmax into the group's PUs.

    Members
    -------
    start : In(stream.Signature(StructLayout({"group", "slot"})))
        Ready while idle.
    rd : In(stream.Signature(...))
        :attr:`FoldedSoftmax.rd <starc_hw.folded.softmax.FoldedSoftmax.rd>`.
    pending : In(1)
        The softmax has probabilities waiting (``FoldedSoftmax.ready``).
    prob_valid : Out(banks)
        Bit i: write ``prob`` into PU i.
    prob : Out(StructLayout({"slot", "index", "data"}))
        The PUs' probability write port.
    busy : Out(1)
    missing, wrong_group : Out(1)
        Sticky: the softmax ran out of probabilities during a move; a probability of another
        group came (both are errors of the program, the golden model's ProgramError).
    """

    def __init__(self, *, cfg: Config, head_dim: int) -> None:
        self._cfg = cfg
        G, B, bpt, sets, S = _geometry(cfg, head_dim)
        self._geo = (G, B, bpt, sets, S)
        super().__init__({
            "start": In(stream.Signature(data.StructLayout({"group": range(G), "slot": 1}))),
            "rd": In(stream.Signature(data.StructLayout({
                "prob": 16, "index": range(S), "tag": range(G), "last": 1}))),
            "pending": In(1),
            "prob_valid": Out(G * B),
            "prob": Out(data.StructLayout({"slot": 1, "index": range(S), "data": 16})),
            "busy": Out(1),
            "missing": Out(1),
            "wrong_group": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        G, B, bpt, sets, S = self._geo
        n = sets * S
        group = Signal(range(G))
        slot = Signal()
        left = Signal(range(n + 1))
        j = Signal(range(max(2, sets)))
        m.d.comb += [self.start.ready.eq(left == 0), self.busy.eq(left != 0),
                     self.rd.ready.eq(left != 0)]
        take = self.rd.valid & self.rd.ready
        with m.If(self.start.valid & self.start.ready):
            m.d.sync += [group.eq(self.start.payload.group), slot.eq(self.start.payload.slot),
                         left.eq(n), j.eq(0)]
        with m.Elif(take):
            m.d.sync += left.eq(left - 1)
            with m.If(self.rd.payload.last):
                m.d.sync += j.eq(j + 1)
            with m.If(self.rd.payload.tag != group):
                m.d.sync += self.wrong_group.eq(1)
        with m.Elif((left != 0) & ~self.rd.valid & ~self.pending):
            m.d.sync += [left.eq(0), self.missing.eq(1)]
        for i in range(G * B):
            g, b = divmod(i, B)
            m.d.comb += self.prob_valid[i].eq(take & (group == g) & (j == b // bpt))
        m.d.comb += [self.prob.slot.eq(slot), self.prob.index.eq(self.rd.payload.index),
                     self.prob.data.eq(self.rd.payload.prob)]
        return m


class ValueMove(wiring.Component):
    """Value MVSB: the group's value accumulators into the channel output, one lane per clock.

    Members
    -------
    start : In(stream.Signature(StructLayout({"group", "half"})))
        Ready while no move reads the PUs.
    acc_addr : Out(StructLayout({"h", "beat"}))
        To every PU's accumulator read port.
    acc_data : In(ArrayLayout(ArrayLayout(width, lanes_per_clock), banks))
        Every PU's accumulator read data (one clock after ``acc_addr``).
    acc_clear : Out(ArrayLayout(2, banks))
        Per PU: clear ``acc[h]`` (with the move's last read).
    reading : Out(1)
        The move reads the PUs (MACs into them must wait).
    busy : Out(1)
        Reads or adds in flight.
    out_fp16 : Out(ArrayLayout(16, head_dim))
        The output accumulator rounded to FP16.
    out_addr : In(range(head_dim))
    out_data : Out(width)
        The output accumulator at ``out_addr`` (for tests; one clock later).
    """

    def __init__(self, *, cfg: Config, head_dim: int, lanes_per_clock: int) -> None:
        self._cfg = cfg
        self._d = head_dim
        self._lpc = lanes_per_clock
        self._fmt = fp.acc_format(cfg.pu.acc_format)
        G, B, bpt, sets, S = _geometry(cfg, head_dim)
        self._geo = (G, B, bpt, sets, S)
        k = cfg.pu.lanes // lanes_per_clock
        w = self._fmt.width
        super().__init__({
            "start": In(stream.Signature(data.StructLayout({"group": range(G), "half": 1}))),
            "acc_addr": Out(data.StructLayout({"h": 1, "beat": range(max(2, k))})),
            "acc_data": In(data.ArrayLayout(data.ArrayLayout(w, lanes_per_clock), G * B)),
            "acc_clear": Out(data.ArrayLayout(2, G * B)),
            "reading": Out(1),
            "busy": Out(1),
            "out_fp16": Out(data.ArrayLayout(16, head_dim)),
            "out_addr": In(range(head_dim)),
            "out_data": Out(w),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        G, B, bpt, sets, S = self._geo
        fmt, d, L = self._fmt, self._d, self._lpc
        lanes = self._cfg.pu.lanes
        w = fmt.width
        n = sets * bpt * lanes               # lanes moved: every bank of the group, set-major
        group = Signal(range(G))
        h = Signal()
        e = Signal(range(n + 1), init=n)            # n: idle
        m.d.comb += [self.start.ready.eq(~self.reading), self.reading.eq(e != n)]
        with m.If(self.start.valid & self.start.ready):
            m.d.sync += [group.eq(self.start.payload.group), h.eq(self.start.payload.half),
                         e.eq(0)]
        with m.Elif(e != n):
            m.d.sync += e.eq(e + 1)
        # e = (b * lanes + lane): bank b of the group (j * bpt + k), set-major, lane ascending
        b_idx = e // lanes
        lane = e % lanes
        m.d.comb += [self.acc_addr.h.eq(h), self.acc_addr.beat.eq(lane // L)]
        last_read = (e == n - 1)
        for i in range(G * B):
            g = i // B
            m.d.comb += self.acc_clear[i].eq(Mux(last_read & (group == g), 1 << h, 0))
        # one clock later: the data of bank b_idx, the lane's word
        tag = data.StructLayout({"v": 1, "b": range(max(2, B)), "l": range(lanes), "h": 1})
        t1 = Signal(tag)
        m.d.sync += [t1.v.eq(e != n), t1.b.eq(b_idx), t1.l.eq(lane), t1.h.eq(h)]
        by_bank = Array(Array(self.acc_data[g * B + b] for b in range(B)) for g in range(G))
        word = by_bank[group][t1.b]
        x = Signal(w)
        m.d.comb += x.eq(Array(word[i] for i in range(L))[t1.l % L] if L > 1 else word[0])
        dim = Signal(range(d))
        m.d.comb += dim.eq(32 * (t1.b % bpt) + 16 * t1.h + t1.l)
        # the output accumulator: read out[dim], add, write back (the same dim comes back only
        # after 16 bpt lanes, longer than the adder)
        omem = Memory(shape=w, depth=d, init=[])
        m.submodules.out_mem = omem
        o_rd, o_wr, o_dbg = omem.read_port(), omem.write_port(), omem.read_port()
        # valid bits: a reset (a new step) reads +0 without clearing the memory
        o_valid = Signal(d)
        rd_ok, dbg_ok = Signal(), Signal()
        m.d.comb += [o_rd.addr.eq(dim), o_dbg.addr.eq(self.out_addr),
                     self.out_data.eq(Mux(dbg_ok, o_dbg.data, 0))]
        m.d.sync += [rd_ok.eq(o_valid.bit_select(dim, 1)),
                     dbg_ok.eq(o_valid.bit_select(self.out_addr, 1))]
        xq = pipe.reg(m, x, "x")
        t2 = data.View(tag, pipe.reg(m, t1, "t2"))
        dim2 = pipe.reg(m, dim, "dim2")
        s = pipe.add(m, fmt, Mux(rd_ok, o_rd.data, 0), xq, "out_sum")
        done = pipe.delay(m, t2.v, pipe.ADD_LATENCY, "done")
        dim_w = pipe.delay(m, dim2, pipe.ADD_LATENCY, "dim_w")
        m.d.comb += [o_wr.en.eq(done), o_wr.addr.eq(dim_w), o_wr.data.eq(s)]
        with m.If(done):
            m.d.sync += o_valid.bit_select(dim_w, 1).eq(1)
        # the FP16 output follows each add
        if fmt == FP16:
            half, hv, hdim = s, done, dim_w
        else:
            half = pipe.narrow(m, s, "half")
            hv = pipe.delay(m, done, pipe.NARROW_LATENCY, "hv")
            hdim = pipe.delay(m, dim_w, pipe.NARROW_LATENCY, "hdim")
        out16 = Array(self.out_fp16[i] for i in range(d))
        with m.If(hv):
            m.d.sync += out16[hdim].eq(half)
        lat = 2 + pipe.ADD_LATENCY + (0 if fmt == FP16 else pipe.NARROW_LATENCY)
        m.d.comb += self.busy.eq(self.reading | _tail(m, self.reading, lat))
        return m


def _tail(m: Module, active: object, clocks: int) -> Signal:
    """High for ``clocks`` clocks after ``active`` falls (a pipeline draining)."""
    left = Signal(range(clocks + 1))
    with m.If(active):
        m.d.sync += left.eq(clocks)
    with m.Elif(left != 0):
        m.d.sync += left.eq(left - 1)
    return left != 0

"""Softmax unit: the channel's softmax buffer, exp / reciprocal / normalise datapath, read-out.

Bit-exact with :func:`starc.numerics.softmax` (docs/numerics.md, "Softmax"), and exact in cycles:
``sfm_cycles(n) = pu.sfm_latency + 3 * ceil(n / pu.sfm_lanes)`` (docs/commands.md), the formula
of :meth:`starc.config.PU.sfm_duration`, which the unit's deadline uses.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import MAX_HEADS
from starc.numerics import (
    EXP_FRAC_BITS,
    FP16,
    FP32,
    RECIP_BITS,
)

from . import fp

__all__ = ["SoftmaxUnit"]

#: Passes over the buffer: max; exp and sum; exp again and normalise.
PASSES = 3
#: Quotient bits the reciprocal divider produces per cycle.
DIV_BITS_PER_CYCLE = 2
_QBITS = RECIP_BITS + 2            # 26-bit quotient: 25 significant bits and the rounding bit
_DIV_CYCLES = -(-_QBITS // DIV_BITS_PER_CYCLE)

# Pipeline depths (cycles), from the read address of a buffer row:
_P1_DONE = 3                       # read, max tree, running max  -> m readable
_EXP_E = 7                         # read, subtract, 5 exp stages -> E of the row registered
_EXP_CUTS = (3, 4, 6, 8)           # the 4 registers inside fp.exp_fixed (+ its output register)
_P2_DONE = _EXP_E + 1              # + row sum into S             -> S readable
_RECIP = 1 + _DIV_CYCLES + 1       # normalise, divide, round     -> reciprocal readable
_P3_WRITE = _EXP_E + 1             # + multiply; round and write in the next cycle
_C2 = _P1_DONE - 1                 # pass 2 may read one cycle before m is needed
#: Smallest ``pu.sfm_latency`` this unit meets: the first probability can be read out
#: ``3 R + MIN_LATENCY`` cycles after SFM for R rows (pass 3 starts so that its multiply stage
#: meets the reciprocal).
MIN_LATENCY = (_C2 - 1) + _P2_DONE + _RECIP - _EXP_E + _P3_WRITE + 1


def _sum(values: list[Value]) -> Value:
    """Balanced adder tree (keeps expressions shallow)."""
    while len(values) > 1:
        values = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)] + \
                 ([values[-1]] if len(values) % 2 else [])
    return values[0]


def _popcount(v: Value) -> Value:
    return _sum([v[i] for i in range(len(v))])


def _prefix_counts(m: Module, mask: Value, name: str) -> list[Signal]:
    """``popcount(mask[:i])`` for each lane i, as signals."""
    out = [Signal(range(len(mask) + 1), name=f"{name}0")]
    for i in range(1, len(mask)):
        p = Signal(range(len(mask) + 1), name=f"{name}{i}")
        m.d.comb += p.eq(out[-1] + mask[i - 1])
        out.append(p)
    return out


def _or_tree(values: list[Value]) -> Value:
    while len(values) > 1:
        values = [values[i] | values[i + 1] for i in range(0, len(values) - 1, 2)] + \
                 ([values[-1]] if len(values) % 2 else [])
    return values[0]


def _key(x: Value) -> Value:
    """Unsigned key with the order of the FP32 values (``starc.numerics.max_key``)."""
    return Mux(x[31], ~x, x | 0x80000000)[:32]


def _power_of_two(name: str, value: object, multiple: int | None = None) -> int:
    if (isinstance(value, bool) or not isinstance(value, int) or value <= 0
            or value & (value - 1)):
        raise ValueError(f"{name} must be a positive power of two, not {value!r}")
    if multiple is not None and value % multiple:
        raise ValueError(f"{name} must be a multiple of pu.sfm_lanes ({multiple}), not {value}")
    return value


class SoftmaxUnit(wiring.Component):
    """The channel softmax unit with its double-buffered softmax buffer.

    Parameters
    ----------
    cfg : :class:`starc.config.Config`
        ``pu.sfm_lanes`` (lanes per cycle and entries per beat), ``pu.sfm_latency`` (at least
        :data:`MIN_LATENCY`), ``pu.sfm_passes`` (must be 3) and the group count.
    entries : int
        Valid entries one buffer holds (power of two, multiple of ``sfm_lanes``).
    beats : int
        Beats (score moves of one token set) one buffer holds (power of two).
    heads : int
        Heads with a buffer of their own (docs/multihead.md). With 1 (the default) the unit
        has two buffers that fill, run and read out in turn. With ``heads`` > 1 it has one buffer
        per head: a beat carries its ``head``, ``start`` names the head whose buffer it runs, and
        the read-out serves the head ``pop`` names (below), so several heads can fill while
        another head's softmax runs and a third's probabilities are read out.

    Members
    -------
    wr : In(stream.Signature(StructLayout({"scores", "mask", "tag"})))
        One beat of a score move: ``sfm_lanes`` FP32 scores, their valid mask and the group. The
        valid scores are packed densely into the filling buffer; ready while that buffer has room
        for a full beat and no softmax is starting.
    start : In(stream.Signature(32)); with ``heads`` > 1 In(stream.Signature({"n", "head"}))
        SFM with ``arg = n`` (the number of valid entries): softmax over the filling buffer (the
        head's buffer), which then closes; writes go to the other buffer once it is empty (with
        heads: to the head's buffer once it has been read out).
    rd : Out(stream.Signature(StructLayout({"probs", "tag"})))
        The probabilities (FP16) of the written beats, in write order and in their original lanes
        (0 where the mask was 0), with the beat's group. The first beat of an SFM started in cycle
        t is valid from cycle ``t + sfm_latency + 3 * ceil(n / sfm_lanes)`` exactly. With
        ``heads`` > 1 ``rd.ready`` is not used: ``rd.valid`` carries, two cycles after each
        ``pop``, that head's next beat.
    pop : In(stream.Signature(range(heads), always_ready=True)), only with ``heads`` > 1
        Read the next beat of head ``pop.payload``'s probabilities (its softmax must be done);
        it appears on ``rd`` two cycles later. ``missing`` flags a pop with no beat waiting.
    missing : Out(1), only with ``heads`` > 1
        Sticky: a pop found no probabilities of its head waiting.
    busy : Out(1)
        A softmax runs (from the cycle after ``start`` until the probabilities can be read).
    error : Out(1)
        Sticky: an SFM's ``n`` differed from the number of valid entries written.
    active : Out(1)
        The unit has work in this cycle: a register or an output it drives may change at the next
        clock edge (a beat or an SFM offered, a softmax running or its pipeline draining, a
        read-out that can move). While it is low no register changes at the edge and no
        internal value in a pipeline register or a read port is consumed later, so a clock
        gated by it (:class:`starc_hw.attention.AttentionChannel` ``clock_gating``, latched
        on the falling edge) gives the same outputs cycle for cycle; an idle unit then costs a
        simulator nothing.
    """

    def __init__(self, *, cfg: Config, entries: int, beats: int, heads: int = 1) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        if isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= MAX_HEADS:
            raise ValueError(f"heads must be an integer in 1..{MAX_HEADS}, not {heads!r}")
        self._heads = heads
        pu = cfg.pu
        if pu.sfm_passes != PASSES:
            raise ValueError(f"pu.sfm_passes must be {PASSES} (max; exp and sum; normalise) for "
                             f"this softmax unit, not {pu.sfm_passes}")
        if pu.sfm_latency < MIN_LATENCY:
            raise ValueError(f"pu.sfm_latency must be at least {MIN_LATENCY} for this softmax "
                             f"unit (pipeline fill, reciprocal and read-out), not "
                             f"{pu.sfm_latency}")
        if pu.sfm_lanes < 2 or pu.sfm_lanes & (pu.sfm_lanes - 1):
            raise ValueError(f"pu.sfm_lanes must be a power of two of at least 2 for this softmax "
                             f"unit, not {pu.sfm_lanes}")
        self._cfg = cfg
        self._lanes = pu.sfm_lanes
        self._entries = _power_of_two("Entries", entries, self._lanes)
        self._beats = _power_of_two("Beats", beats)
        ln, groups = self._lanes, cfg.org.groups_per_channel
        head = {"head": range(heads)} if heads > 1 else {}
        self.wr_layout = data.StructLayout({"scores": data.ArrayLayout(32, ln), "mask": ln,
                                            "tag": range(groups), **head})
        self.rd_layout = data.StructLayout({"probs": data.ArrayLayout(16, ln),
                                            "tag": range(groups)})
        members = {
            "wr": In(stream.Signature(self.wr_layout)),
            "start": In(stream.Signature(data.StructLayout({"n": 32, **head}) if heads > 1
                                         else 32)),
            "rd": Out(stream.Signature(self.rd_layout)),
            "busy": Out(1),
            "error": Out(1),
            "active": Out(1),
        }
        if heads > 1:
            members["pop"] = In(stream.Signature(range(heads), always_ready=True))
            members["missing"] = Out(1)
        super().__init__(members)

    @property
    def heads(self) -> int:
        return self._heads

    @property
    def lanes(self) -> int:
        return self._lanes

    def cycles(self, n: int) -> int:
        """``sfm_cycles(n)`` of docs/commands.md, which this unit meets exactly."""
        return self._cfg.sfm_cycles(n)

    def elaborate(self, platform: object) -> Module:  # noqa: C901 (one datapath, read in order)
        m = Module()
        ln = self._lanes
        lane_bits = (ln - 1).bit_length()
        rows = self._entries // ln
        row_bits = (rows - 1).bit_length()
        sum_width = EXP_FRAC_BITS + 1 + (self._entries - 1).bit_length() + 1
        FILL, RUN, READY = 0, 1, 2
        H = self._heads
        NBUF = 2 if H == 1 else H                   # buffers
        nbuf2 = 1 << (NBUF - 1).bit_length()        # the address space of the buffer index

        # ---- storage -----------------------------------------------------------------------------
        score_rd, score_wr, prob_rd, prob_wr = [], [], [], []
        for lane in range(ln):
            smem = Memory(shape=unsigned(32), depth=nbuf2 * rows, init=[])
            pmem = Memory(shape=unsigned(16), depth=nbuf2 * rows, init=[])
            m.submodules[f"score_mem{lane}"] = smem
            m.submodules[f"prob_mem{lane}"] = pmem
            score_rd.append(smem.read_port())
            score_wr.append(smem.write_port())
            prob_rd.append(pmem.read_port())
            prob_wr.append(pmem.write_port())
        desc_layout = data.StructLayout({"mask": ln, "tag": self.wr_layout["tag"].shape})
        dmem = Memory(shape=desc_layout, depth=nbuf2 * self._beats, init=[])
        m.submodules.desc_mem = dmem
        desc_rd, desc_wr = dmem.read_port(), dmem.write_port()

        state = Array(Signal(2, name=f"state{i}") for i in range(NBUF))
        count = Array(Signal(range(self._entries + 1), name=f"count{i}") for i in range(NBUF))
        nbeats = Array(Signal(range(self._beats + 1), name=f"nbeats{i}") for i in range(NBUF))
        fb = Signal(range(NBUF))    # buffer being filled (with heads: the beat's head)
        pb = Signal()               # buffer being read out (one head)
        rb = Signal(range(NBUF))    # buffer of the running softmax
        if H > 1:
            m.d.comb += fb.eq(self.wr.payload.head)

        # ---- writes: pack the valid scores of a beat densely -------------------------------------
        running = Signal()
        w = self.wr.payload
        m.d.comb += self.wr.ready.eq((state[fb] == FILL) & (count[fb] <= self._entries - ln)
                                     & (nbeats[fb] < self._beats))
        woff, wrow = count[fb][:lane_bits], count[fb] >> lane_bits
        prefix = _prefix_counts(m, w.mask, "wprefix")
        dest = []                                   # packed lane of each valid source lane
        for i in range(ln):
            di = Signal(range(ln), name=f"wdest{i}")
            m.d.comb += di.eq(woff + prefix[i])
            dest.append(di)
        wr_go = self.wr.valid & self.wr.ready
        for d in range(ln):
            sel = Signal(ln, name=f"wsel{d}")
            m.d.comb += sel.eq(Cat(*[w.mask[i] & (dest[i] == d) for i in range(ln)]))
            word = Signal(32, name=f"wword{d}")
            m.d.comb += word.eq(_or_tree([Mux(sel[i], w.scores[i], 0) for i in range(ln)]))
            m.d.comb += [
                score_wr[d].en.eq(wr_go & sel.any()),
                score_wr[d].addr.eq(Cat((wrow + (d < woff))[:row_bits], fb) if row_bits
                                    else fb),
                score_wr[d].data.eq(word),
            ]
        m.d.comb += [
            desc_wr.en.eq(wr_go),
            desc_wr.addr.eq(Cat(nbeats[fb][:(self._beats - 1).bit_length()], fb)
                            if self._beats > 1 else fb),
            desc_wr.data.mask.eq(w.mask),
            desc_wr.data.tag.eq(w.tag),
        ]
        with m.If(wr_go):
            m.d.sync += [count[fb].eq(count[fb] + _popcount(w.mask)),
                         nbeats[fb].eq(nbeats[fb] + 1)]

        # ---- start and the schedule of one softmax -----------------------------------------------
        t = Signal(range(self._cfg.pu.sfm_duration(rows) + 64))
        R = Signal(range(rows + 1))
        n = Signal(range(self._entries + 1))
        deadline = Signal.like(t)
        sb = self.start.payload.head if H > 1 else fb      # the buffer SFM runs
        start_n = self.start.payload.n if H > 1 else self.start.payload
        m.d.comb += [
            self.start.ready.eq(~running & (state[sb] == FILL) & ~self.wr.valid),
            self.busy.eq(running),
        ]
        with m.If(self.start.valid & self.start.ready):
            rows_used = (count[sb] + ln - 1) >> lane_bits
            m.d.sync += [
                running.eq(1), rb.eq(sb), state[sb].eq(RUN), t.eq(1),
                n.eq(count[sb]), R.eq(rows_used),
                deadline.eq(self._cfg.pu.sfm_duration(rows_used)),
            ]
            if H == 1:
                m.d.sync += fb.eq(Mux(state[~fb] == FILL, ~fb, fb))
            with m.If(start_n != count[sb]):
                m.d.sync += self.error.eq(1)
        with m.Else():
            with m.If(running):
                m.d.sync += t.eq(t + 1)
                with m.If(t + 1 == deadline):
                    m.d.sync += [running.eq(0), state[rb].eq(READY)]
            if H == 1:
                # the filling buffer moves on once the other one is empty
                with m.If((state[fb] != FILL) & (state[~fb] == FILL)):
                    m.d.sync += fb.eq(~fb)

        c2 = R + _C2
        d0 = 2 * R + _C2 - 1 + _P2_DONE
        c3 = d0 + _RECIP - _EXP_E
        in_p1 = running & (t >= 1) & (t < R + 1)
        in_p2 = running & (t >= c2) & (t < c2 + R)
        in_p3 = running & (t >= c3) & (t < c3 + R)
        row = Signal(range(rows + 1))
        m.d.comb += row.eq(Mux(in_p1, t - 1, Mux(in_p2, t - c2, t - c3)))
        for lane in range(ln):
            m.d.comb += score_rd[lane].addr.eq(Cat(row[:row_bits], rb) if row_bits else rb)
        lane_ok = Signal(ln)
        m.d.comb += lane_ok.eq(Cat(*[(row * ln + i) < n for i in range(ln)]))

        # ---- pass 1: max of the valid scores, NaN detection --------------------------------------
        p1_v, p1_ok = Signal(), Signal(ln)
        m.d.sync += [p1_v.eq(in_p1), p1_ok.eq(lane_ok)]
        keys = [Mux(p1_ok[i], _key(score_rd[i].data), 0) for i in range(ln)]
        nans = Cat(*[p1_ok[i] & (score_rd[i].data[23:31] == 0xFF) & score_rd[i].data[:23].any()
                     for i in range(ln)])
        while len(keys) > 1:
            keys = [Mux(keys[i] >= keys[i + 1], keys[i], keys[i + 1])
                    for i in range(0, len(keys) - 1, 2)] + ([keys[-1]] if len(keys) % 2 else [])
        row_key, row_nan, row_v = Signal(32), Signal(), Signal()
        m.d.sync += [row_key.eq(keys[0]), row_nan.eq(nans.any()), row_v.eq(p1_v)]
        m_key, any_nan = Signal(32), Signal()
        with m.If(self.start.valid & self.start.ready):
            m.d.sync += [m_key.eq(0), any_nan.eq(0)]
        with m.Elif(row_v):
            m.d.sync += [m_key.eq(Mux(row_key > m_key, row_key, m_key)),
                         any_nan.eq(any_nan | row_nan)]
        m_bits = Mux(m_key[31], m_key & 0x7FFFFFFF, ~m_key)[:32]
        nan_mode = any_nan | (m_bits[23:31] == 0xFF)

        # ---- passes 2 and 3: t = x - m, then the exponential (starc.numerics.exp_fixed) ----------
        def stage(values: dict[str, Value], mod: Module = m) -> dict[str, Signal]:
            regs = {k: Signal.like(v, name=f"sfm_{k}") for k, v in values.items()}
            mod.d.sync += [regs[k].eq(v) for k, v in values.items()]
            return regs

        neg_m = m_bits ^ 0x80000000
        ctl = stage({"v2": in_p2, "v3": in_p3, "ok": lane_ok, "row": row})
        lanes_E = []
        for lane in range(ln):
            lm = Module()                # one submodule per lane keeps simulation local
            m.submodules[f"exp{lane}"] = lm
            tt = stage({"t": fp.add(lm, FP32, score_rd[lane].data, neg_m)}, lm)["t"]
            E = fp.exp_fixed(lm, tt, cuts=_EXP_CUTS)
            lanes_E.append(stage({"E": E}, lm)["E"])
        for _ in range(_EXP_E - 1):
            ctl = stage(ctl)

        # pass 2 tail: S = sum of the valid E (exact)
        S = Signal(sum_width)
        row_sum = Signal(sum_width)
        m.d.comb += row_sum.eq(_sum([Mux(ctl["ok"][lane], lanes_E[lane], 0)
                                     for lane in range(ln)]))
        with m.If(self.start.valid & self.start.ready):
            m.d.sync += S.eq(0)
        with m.Elif(ctl["v2"]):
            m.d.sync += S.eq(S + row_sum)

        # reciprocal: Q = RNE(2^(b + 23) / S) by restoring division on the normalised S
        lz = fp.leading_zeros(m, S)
        b = Signal(range(sum_width + 1))
        Sn = Signal(sum_width)
        rem = Signal(sum_width + 1)
        quo = Signal(_QBITS)
        Q = Signal(RECIP_BITS + 1)
        with m.If(running & (t == d0)):
            m.d.sync += [b.eq(sum_width - lz), Sn.eq(S << lz), rem.eq(1 << (sum_width - 2)),
                         quo.eq(0)]
        with m.Elif(running & (t > d0) & (t <= d0 + _DIV_CYCLES)):
            r_: Value = rem
            q_: Value = quo
            for _ in range(DIV_BITS_PER_CYCLE):
                r2 = (r_ << 1)[:sum_width + 1]
                bit = r2 >= Sn
                r_ = Mux(bit, r2 - Sn, r2)[:sum_width + 1]
                q_ = Cat(bit, q_)[:_QBITS]
            m.d.sync += [rem.eq(r_), quo.eq(q_)]
        with m.Elif(running & (t == d0 + _DIV_CYCLES + 1)):
            m.d.sync += Q.eq((quo >> 1) + (quo[0] & (quo[1] | rem.any())))

        # pass 3 tail: p = fp16(E * r), one rounding (starc.numerics.round_scaled)
        ctl3 = stage({"v3": ctl["v3"], "row": ctl["row"]})
        for lane in range(ln):
            lm = Module()
            m.submodules[f"norm{lane}"] = lm
            prob = fp.scale_round16(lm, lanes_E[lane], Q, b, cuts=(1,))
            lm.d.comb += [
                prob_wr[lane].en.eq(ctl3["v3"]),
                prob_wr[lane].addr.eq(Cat(ctl3["row"][:row_bits], rb) if row_bits else rb),
                prob_wr[lane].data.eq(Mux(nan_mode, FP16.nan, prob)),
            ]
        written = t >= (3 * R + (c3 - 2 * R) + _P3_WRITE)

        if H == 1:
            moving = self._readout_in_turn(m, state, count, nbeats, pb, rb, running, written,
                                           prob_rd, desc_rd, FILL, READY)
            # the filling buffer moves on (the else branch of the start above)
            moving = moving | ((state[fb] != FILL) & (state[~fb] == FILL))
        else:
            moving = self._readout_per_head(m, state, count, nbeats, rb, running, written,
                                            prob_rd, desc_rd, FILL, READY)
        # ---- activity: the pipeline drains for _P3_WRITE + 1 cycles after the last pass-3 read
        # (the last probability is written before the end of ``running``; the tail is margin)
        tail = Signal(_P3_WRITE + 2)
        m.d.sync += tail.eq(Cat(running, tail[:-1]))
        m.d.comb += self.active.eq(self.wr.valid | self.start.valid | running | tail.any()
                                   | moving)
        return m

    def _readout_in_turn(self, m: Module, state: Array, count: Array, nbeats: Array, pb: Signal,
                         rb: Signal, running: Signal, written: Value, prob_rd: list,
                         desc_rd: object, FILL: int, READY: int) -> Value:
        """One head: the buffers are read out in the order they ran; the next beat is fetched
        ahead (descriptor stage, probability stage), so it is on ``rd`` as soon as it may be.
        Returns when the read-out's registers may change: a buffer is out of ``FILL`` and the
        read-out is not stalled (a beat waiting on ``rd`` that is not taken, with the next one
        fetched or none left to fetch)."""
        ln = self._lanes
        lane_bits = (ln - 1).bit_length()
        row_bits = (self._entries // ln - 1).bit_length()
        # ---- read-out: descriptor stage, probability stage ---------------------------------------
        fi = Signal(range(self._beats + 1))     # next descriptor to fetch
        popped = Signal(range(self._beats + 1))
        pos = Signal(range(self._entries + 1))  # packed position of the next beat to read
        dv, pv = Signal(), Signal()
        o_mask, o_tag = Signal(ln), Signal.like(self.rd.payload.tag)
        o_off = Signal(range(ln))
        prob_ok = (state[pb] == READY) | (running & (rb == pb) & written)
        take = self.rd.valid & self.rd.ready
        adv_p = ~pv | take
        load_p = adv_p & dv & prob_ok
        adv_d = ~dv | load_p
        fetch = adv_d & (state[pb] != FILL) & (fi < nbeats[pb])
        m.d.comb += [
            desc_rd.en.eq(adv_d),
            desc_rd.addr.eq(Cat(fi[:(self._beats - 1).bit_length()], pb)
                            if self._beats > 1 else pb),
        ]
        with m.If(adv_d):
            m.d.sync += dv.eq(fetch)
        with m.If(fetch):
            m.d.sync += fi.eq(fi + 1)
        poff, prow = pos[:lane_bits], pos >> lane_bits
        for lane in range(ln):
            m.d.comb += [
                prob_rd[lane].en.eq(adv_p),
                prob_rd[lane].addr.eq(Cat((prow + (lane < poff))[:row_bits], pb) if row_bits
                                      else pb),
            ]
        with m.If(adv_p):
            m.d.sync += pv.eq(load_p)
        with m.If(load_p):
            m.d.sync += [o_mask.eq(desc_rd.data.mask), o_tag.eq(desc_rd.data.tag),
                         o_off.eq(poff), pos.eq(pos + _popcount(desc_rd.data.mask))]
        oprefix = _prefix_counts(m, o_mask, "oprefix")
        lane_data = Array(prob_rd[d].data for d in range(ln))
        for i in range(ln):
            src = Signal(range(ln), name=f"osrc{i}")
            m.d.comb += [src.eq(o_off + oprefix[i]),
                         self.rd.payload.probs[i].eq(Mux(o_mask[i], lane_data[src], 0))]
        m.d.comb += [self.rd.payload.tag.eq(o_tag),
                     self.rd.valid.eq(pv & (state[pb] == READY))]
        with m.If(take):
            m.d.sync += popped.eq(popped + 1)
        # a read-out buffer is done after its last beat (or at once if it has none)
        last = (state[pb] == READY) & ((take & (popped + 1 == nbeats[pb])) | (nbeats[pb] == 0))
        with m.If(last):
            m.d.sync += [state[pb].eq(FILL), count[pb].eq(0), nbeats[pb].eq(0), pb.eq(~pb),
                         fi.eq(0), popped.eq(0), pos.eq(0)]
        # stalled: no register above changes (adv_p = load_p = fetch = take = last = 0); the
        # descriptor port may re-read, but what it reads is consumed only after a fetch
        stalled = pv & ~take & (dv | ~(fi < nbeats[pb])) & (nbeats[pb] != 0)
        return (state[pb] != FILL) & ~stalled

    def _readout_per_head(self, m: Module, state: Array, count: Array, nbeats: Array,
                          rb: Signal, running: Signal, written: Value, prob_rd: list,
                          desc_rd: object, FILL: int, READY: int) -> Value:
        """Several heads: ``pop`` names the head; its next descriptor is read in that cycle,
        the probabilities in the next, the beat is on ``rd`` in the one after. Returns when the
        read-out's registers may change: a pop, a beat in its two stages, a buffer over no
        beats to free (the ``c_*`` registers follow the ports every clock, but are read only
        with ``cv``)."""
        ln, H = self._lanes, self._heads
        lane_bits = (ln - 1).bit_length()
        row_bits = (self._entries // ln - 1).bit_length()
        beat_bits = (self._beats - 1).bit_length()
        fi = Array(Signal(range(self._beats + 1), name=f"fi{h}") for h in range(H))
        pos = Array(Signal(range(self._entries + 1), name=f"pos{h}") for h in range(H))
        popped = Array(Signal(range(self._beats + 1), name=f"popped{h}") for h in range(H))
        ph = self.pop.payload
        ok = ((state[ph] == READY) | (running & (rb == ph) & written)) & (fi[ph] < nbeats[ph])
        go = self.pop.valid & ok
        with m.If(self.pop.valid & ~ok):
            m.d.sync += self.missing.eq(1)
        m.d.comb += [desc_rd.en.eq(1),
                     desc_rd.addr.eq(Cat(fi[ph][:beat_bits], ph) if beat_bits else ph)]
        with m.If(go):
            m.d.sync += fi[ph].eq(fi[ph] + 1)
        # stage B: the descriptor is read; address the probabilities
        bv, bh = Signal(), Signal(range(H))
        m.d.sync += [bv.eq(go), bh.eq(ph)]
        d = desc_rd.data
        poff, prow = pos[bh][:lane_bits], pos[bh] >> lane_bits
        for lane in range(ln):
            m.d.comb += [
                prob_rd[lane].en.eq(1),
                prob_rd[lane].addr.eq(Cat((prow + (lane < poff))[:row_bits], bh) if row_bits
                                      else bh),
            ]
        cv, c_mask, c_tag = Signal(), Signal(ln), Signal.like(self.rd.payload.tag)
        c_off = Signal(range(ln))
        m.d.sync += [cv.eq(bv), c_mask.eq(d.mask), c_tag.eq(d.tag), c_off.eq(poff)]
        with m.If(bv):
            m.d.sync += [pos[bh].eq(pos[bh] + _popcount(d.mask)), popped[bh].eq(popped[bh] + 1)]
            with m.If(popped[bh] + 1 == nbeats[bh]):     # the head's last beat: buffer free
                m.d.sync += [state[bh].eq(FILL), count[bh].eq(0), nbeats[bh].eq(0),
                             fi[bh].eq(0), pos[bh].eq(0), popped[bh].eq(0)]
        # a softmax over no beats frees its buffer at once
        for h in range(H):
            with m.If((state[h] == READY) & (nbeats[h] == 0)):
                m.d.sync += state[h].eq(FILL)
        # stage C: the beat, back in its lanes
        cprefix = _prefix_counts(m, c_mask, "cprefix")
        lane_data = Array(prob_rd[k].data for k in range(ln))
        for i in range(ln):
            src = Signal(range(ln), name=f"csrc{i}")
            m.d.comb += [src.eq(c_off + cprefix[i]),
                         self.rd.payload.probs[i].eq(Mux(c_mask[i], lane_data[src], 0))]
        m.d.comb += [self.rd.payload.tag.eq(c_tag), self.rd.valid.eq(cv)]
        free = Cat(*[(state[h] == READY) & (nbeats[h] == 0) for h in range(H)]).any()
        return self.pop.valid | bv | cv | free

"""The softmax unit folded over FPGA clocks: one entry per clock through one shared exponential
and normalisation pipeline and one reciprocal, bit-exact with :func:`starc.numerics.softmax`
(docs/numerics.md, "Softmax") and with :class:`starc_hw.softmax.SoftmaxUnit`.

::

    wr (one entry / clock) ─> filling buffer: valid scores packed, running max, NaN flag,
                              one descriptor (mask, group) per beat of 16 entries
    start (SFM n) ─> pass 2: t = x - m, E = exp_fixed(t) -> the buffer (in place), S += E
                     reciprocal: Q = RNE(2^(b + 23) / S), one quotient bit per clock
                     pass 3: p = fp16(E Q 2^-(b+23)) -> the buffer (in place)
    rd (one entry / clock) <─ the finished buffer, beat by beat, expanded to the beat's lanes

The maximum is kept while the scores arrive, so the first pass of the reference unit costs
nothing here, and ``E`` is stored, so the exponential runs once per entry. Two buffers: scores
for the next softmax fill one while the other runs or is read out. The unit takes about
``2 n + 59`` FPGA clocks for ``n`` entries (:meth:`FoldedSoftmax.clocks`); the channel holds
the emulated clock while an MVGB waits for it, so the emulated cycles are the golden model's
(``sfm_cycles``) whatever that takes.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.numerics import EXP_FRAC_BITS, FP16, FP32, RECIP_BITS

from .. import fp
from . import pipe

__all__ = ["FoldedSoftmax"]

#: Registers inside the exponential (after each of its first eight steps) and inside the
#: normalisation (after each of its first three steps): one multiply or one shift per clock.
EXP_CUTS = tuple(range(1, fp.EXP_STEPS))
SCALE_CUTS = tuple(range(1, fp.SCALE_STEPS))
EXP_LATENCY = len(EXP_CUTS) + 1
SCALE_LATENCY = len(SCALE_CUTS) + 1
_QBITS = RECIP_BITS + 2     # quotient bits: 25 significant and the rounding bit


def _power_of_two(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 \
            or value & (value - 1):
        raise ValueError(f"{name} must be a positive power of two, not {value!r}")
    return value


def _key(x: object) -> object:
    """Unsigned key with the order of the FP32 values (``starc.numerics.max_key``)."""
    return Mux(x[31], ~x, x | 0x80000000)[:32]  # type: ignore[index]


class FoldedSoftmax(wiring.Component):
    """The channel's softmax unit, one entry per FPGA clock.

    Parameters
    ----------
    cfg : Config
        Slots per beat (``tokens_per_bank_row``) and the group count.
    entries : int
        Valid entries one buffer holds (power of two).
    beats : int
        Beats (16 entries of one token set) one buffer holds (power of two).

    Members
    -------
    wr : In(stream.Signature(StructLayout({"score", "valid", "index", "tag"})))
        One entry of a score move: FP32 ``score``, ``valid`` (its mask bit), ``index`` (token
        slot in the beat; the beat ends with index ``slots - 1``), ``tag`` (group). Ready while
        the filling buffer accepts writes.
    start : In(stream.Signature(32))
        SFM with ``arg = n``: softmax over the filling buffer; ready when :attr:`can_start`.
    rd : Out(stream.Signature(StructLayout({"prob", "index", "tag", "last"})))
        The probabilities of the oldest finished softmax, beat by beat in write order, one
        entry per transfer (``prob`` is 0 where the mask was 0), ``last`` on the beat's last.
    can_start : Out(1)
        An SFM may start in this clock (no softmax running, the filling buffer free).
    ready : Out(1)
        Probabilities are waiting to be read out.
    busy : Out(1)
        A softmax runs or its probabilities have not all been read out.
    error : Out(1)
        Sticky: an SFM's ``n`` differed from the valid entries written, or the buffer
        overflowed.
    """

    def __init__(self, *, cfg: Config, entries: int, beats: int) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        self._cfg = cfg
        self._entries = _power_of_two("Entries", entries)
        self._beats = _power_of_two("Beats", beats)
        slots, groups = cfg.tokens_per_bank_row(), cfg.org.groups_per_channel
        self.wr_layout = data.StructLayout({"score": 32, "valid": 1, "index": range(slots),
                                            "tag": range(groups)})
        self.rd_layout = data.StructLayout({"prob": 16, "index": range(slots),
                                            "tag": range(groups), "last": 1})
        super().__init__({
            "wr": In(stream.Signature(self.wr_layout)),
            "start": In(stream.Signature(32)),
            "rd": Out(stream.Signature(self.rd_layout)),
            "can_start": Out(1),
            "ready": Out(1),
            "busy": Out(1),
            "error": Out(1),
        })

    def clocks(self, n: int, *, nan: bool = False) -> int:
        """FPGA clocks from ``start`` (clock 0) to the clock the probabilities of ``n`` entries
        can be read (``nan``: the NaN case, no exponential and no division)."""
        e_lat = 2 + pipe.ADD_LATENCY + EXP_LATENCY
        s_lat = 2 + SCALE_LATENCY
        if n == 0 or nan:                      # straight to pass 3 in clock 2
            return 2 + n + 1 + s_lat + 2
        norm = (n + 2) + (e_lat + 2)           # pass 2 reads clocks 1 .. n, then drains
        p3 = norm + 1 + _QBITS + 1             # division, rounding
        return p3 + n + 1 + s_lat + 2

    def elaborate(self, platform: object) -> Module:  # noqa: C901 (one datapath, read in order)
        m = Module()
        slots = self._cfg.tokens_per_bank_row()
        N, B = self._entries, self._beats
        abits, dbits = (N - 1).bit_length(), (B - 1).bit_length()
        sum_width = EXP_FRAC_BITS + 1 + abits + 1
        FILL, RUN, READY = 0, 1, 2

        # ---- per-buffer storage and state -------------------------------------------------------
        mems, descs = [], []
        for i in range(2):
            mem = Memory(shape=32, depth=N, init=[])
            desc = Memory(shape=data.StructLayout({"mask": slots,
                                                   "tag": self.wr_layout["tag"].shape}),
                          depth=B, init=[])
            m.submodules[f"buf{i}"] = mem
            m.submodules[f"desc{i}"] = desc
            mems.append((mem.write_port(), mem.read_port()))
            descs.append((desc.write_port(), desc.read_port(domain="comb")))
        state = Array(Signal(2, name=f"state{i}") for i in range(2))
        count = Array(Signal(range(N + 1), name=f"count{i}") for i in range(2))
        nbeats = Array(Signal(range(B + 1), name=f"nbeats{i}") for i in range(2))
        mkey = Array(Signal(32, name=f"mkey{i}") for i in range(2))
        nan = Array(Signal(name=f"nan{i}") for i in range(2))
        fb = Signal()           # buffer being filled
        pb = Signal()           # buffer being read out
        rb = Signal()           # buffer of the running softmax
        running = Signal()

        # ---- fill: one entry per clock ----------------------------------------------------------
        w = self.wr.payload
        mask = Signal(slots)
        m.d.comb += self.wr.ready.eq(state[fb] == FILL)
        put = self.wr.valid & self.wr.ready
        put_score = put & w.valid
        full = count[fb] == N
        with m.If(put_score & full):
            m.d.sync += self.error.eq(1)
        with m.If(put_score & ~full):
            m.d.sync += [count[fb].eq(count[fb] + 1),
                         mkey[fb].eq(Mux(_key(w.score) > mkey[fb], _key(w.score), mkey[fb])),
                         nan[fb].eq(nan[fb] | ((w.score[23:31] == 0xFF) & w.score[:23].any()))]
        last_entry = put & (w.index == slots - 1)
        with m.If(put):
            m.d.sync += mask.eq(Mux(last_entry, 0, mask | (w.valid << w.index)))
        with m.If(last_entry):
            with m.If(nbeats[fb] == B):
                m.d.sync += self.error.eq(1)
            with m.Else():
                m.d.sync += nbeats[fb].eq(nbeats[fb] + 1)

        # ---- start ------------------------------------------------------------------------------
        n = Signal(range(N + 1))
        m_bits = Signal(32)
        nan_mode = Signal()
        m.d.comb += [self.can_start.eq(~running & (state[fb] == FILL) & ~self.wr.valid),
                     self.start.ready.eq(self.can_start)]
        go = self.start.valid & self.start.ready
        mk = mkey[fb]
        with m.If(go):
            mb = Mux(mk[31], mk & 0x7FFFFFFF, ~mk)[:32]
            m.d.sync += [
                running.eq(1), rb.eq(fb), state[fb].eq(RUN), n.eq(count[fb]), m_bits.eq(mb),
                nan_mode.eq(nan[fb] | (mb[23:31] == 0xFF)),
                fb.eq(Mux(state[~fb] == FILL, ~fb, fb)),
            ]
            with m.If(self.start.payload != count[fb]):
                m.d.sync += self.error.eq(1)
        with m.Elif((state[fb] != FILL) & (state[~fb] == FILL)):
            m.d.sync += fb.eq(~fb)           # the filling buffer moves on once the other is free

        # ---- the run: pass 2, reciprocal, pass 3 -------------------------------------------------
        P2, P2_DRAIN, NORM, DIV, ROUND, P3, P3_DRAIN, DONE = range(8)
        phase = Signal(range(8))
        i = Signal(range(N + 1))
        wait = Signal(range(64))
        with m.If(go):
            m.d.sync += [phase.eq(P2), i.eq(0)]
        # reads of the running buffer (pass 2: scores, pass 3: numerators)
        rd_en = running & (((phase == P2) & ~nan_mode) | (phase == P3)) & (i < n)
        # the block RAM's output is registered once more: its clock-to-output is a third of a
        # 20 ns clock on the ECP5
        rd_data = pipe.reg(m, Mux(rb, mems[1][1].data, mems[0][1].data), "rd_data")
        t = fp.add(m, FP32, rd_data, m_bits ^ 0x80000000, cuts=pipe.ADD_CUTS)
        t = pipe.reg(m, t, "t")
        E = pipe.reg(m, fp.exp_fixed(m, t, cuts=EXP_CUTS), "E")
        e_lat = 2 + pipe.ADD_LATENCY + EXP_LATENCY       # read, subtract, exponential
        p2_valid = pipe.delay(m, rd_en & (phase == P2), e_lat, "p2v")
        p2_addr = pipe.delay(m, i, e_lat, "p2a")
        S = Signal(sum_width)
        with m.If(go):
            m.d.sync += S.eq(0)
        with m.Elif(p2_valid):
            m.d.sync += S.eq(S + E)
        # reciprocal: normalise S, then one bit of the restoring division per clock
        lz = Signal(range(sum_width + 1))
        b = Signal(range(sum_width + 1))
        Sn = Signal(sum_width)
        rem = Signal(sum_width + 1)
        quo = Signal(_QBITS)
        Q = Signal(RECIP_BITS + 1)
        lz_now = fp.leading_zeros(m, S)
        Qb = Signal(len(b))
        # pass 3
        q_in = Signal(31)
        m.d.comb += q_in.eq(rd_data)
        prob = pipe.reg(m, fp.scale_round16(m, q_in, Q, Qb, cuts=SCALE_CUTS), "prob")
        s_lat = 2 + SCALE_LATENCY
        p3_valid = pipe.delay(m, rd_en & (phase == P3), s_lat, "p3v")
        p3_addr = pipe.delay(m, i, s_lat, "p3a")

        with m.If(running & ~go), m.Switch(phase):
            with m.Case(P2):
                with m.If(nan_mode | (n == 0)):
                    m.d.sync += [phase.eq(P3), i.eq(0)]
                with m.Elif(i < n):
                    m.d.sync += i.eq(i + 1)
                with m.Else():
                    m.d.sync += [phase.eq(P2_DRAIN), wait.eq(e_lat + 1)]
            with m.Case(P2_DRAIN):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += [phase.eq(NORM), lz.eq(lz_now)]
            with m.Case(NORM):
                m.d.sync += [b.eq(sum_width - lz), Sn.eq(S << lz),
                             rem.eq(1 << (sum_width - 2)), quo.eq(0), phase.eq(DIV),
                             wait.eq(_QBITS - 1)]
            with m.Case(DIV):
                r2 = (rem << 1)[:sum_width + 1]
                bit = r2 >= Sn
                m.d.sync += [rem.eq(Mux(bit, r2 - Sn, r2)[:sum_width + 1]),
                             quo.eq(Cat(bit, quo)[:_QBITS]), wait.eq(wait - 1)]
                with m.If(wait == 0):
                    m.d.sync += phase.eq(ROUND)
            with m.Case(ROUND):
                m.d.sync += [Q.eq((quo >> 1) + (quo[0] & (quo[1] | rem.any()))), Qb.eq(b),
                             phase.eq(P3), i.eq(0)]
            with m.Case(P3):
                with m.If(i < n):
                    m.d.sync += i.eq(i + 1)
                with m.Else():
                    m.d.sync += [phase.eq(P3_DRAIN), wait.eq(s_lat + 1)]
            with m.Case(P3_DRAIN):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += [phase.eq(DONE), running.eq(0), state[rb].eq(READY)]

        # ---- read-out: descriptor, then the packed probabilities expanded to the lanes ---------
        beat = Signal(range(B + 1))
        idx = Signal(range(slots))
        pos = Signal(range(N + 1))
        out_valid = Signal()
        o_index, o_tag, o_last, o_masked = (Signal(range(slots)), Signal.like(self.rd.payload.tag),
                                            Signal(), Signal())
        dmask = Mux(pb, descs[1][1].data.mask, descs[0][1].data.mask)
        dtag = Mux(pb, descs[1][1].data.tag, descs[0][1].data.tag)
        have = (state[pb] == READY) & (beat < nbeats[pb])
        advance = ~out_valid | self.rd.ready
        bit_now = dmask.bit_select(idx, 1)
        with m.If(advance):
            m.d.sync += out_valid.eq(have)
            with m.If(have):
                m.d.sync += [o_index.eq(idx), o_tag.eq(dtag), o_last.eq(idx == slots - 1),
                             o_masked.eq(bit_now), pos.eq(pos + bit_now),
                             idx.eq(Mux(idx == slots - 1, 0, idx + 1)),
                             beat.eq(beat + (idx == slots - 1))]
        ro_en = advance & have
        m.d.comb += [
            self.rd.valid.eq(out_valid),
            self.rd.payload.index.eq(o_index), self.rd.payload.tag.eq(o_tag),
            self.rd.payload.last.eq(o_last),
            self.rd.payload.prob.eq(Mux(o_masked, Mux(pb, mems[1][1].data, mems[0][1].data)[:16],
                                        0)),
            self.ready.eq((state[pb] == READY) & (beat < nbeats[pb])),
            self.busy.eq(running | (state[0] != FILL) | (state[1] != FILL) | out_valid),
        ]
        # the buffer is free after its last beat has left (or at once if it has none)
        done_ro = (state[pb] == READY) & (beat == nbeats[pb]) & (~out_valid | self.rd.ready)
        with m.If(done_ro):
            m.d.sync += [state[pb].eq(FILL), count[pb].eq(0), nbeats[pb].eq(0), mkey[pb].eq(0),
                         nan[pb].eq(0), pb.eq(~pb), beat.eq(0), idx.eq(0), pos.eq(0)]

        # ---- memory ports -----------------------------------------------------------------------
        for k in range(2):
            wp, rp = mems[k]
            dwp, drp = descs[k]
            filling = state[k] == FILL
            mine = running & (rb == k)
            m.d.comb += [
                wp.en.eq(Mux(filling, put_score & ~full & (fb == k),
                             mine & (p2_valid | p3_valid))),
                wp.addr.eq(Mux(filling, count[k], Mux(p2_valid, p2_addr, p3_addr))),
                wp.data.eq(Mux(filling, w.score,
                               Mux(p2_valid, E, Mux(nan_mode, FP16.nan, prob)))),
                rp.en.eq(Mux(mine, rd_en, ro_en & (pb == k))),
                rp.addr.eq(Mux(mine, i, pos)),
                dwp.en.eq(last_entry & (fb == k) & (nbeats[k] != B)),
                dwp.addr.eq(nbeats[k][:max(1, dbits)]),
                dwp.data.mask.eq(mask | (w.valid << w.index)),
                dwp.data.tag.eq(w.tag),
                drp.addr.eq(beat[:max(1, dbits)]),
            ]
        return m

"""The bank PU folded over FPGA clocks: ``lanes_per_clock`` FP16 multipliers, one column in
``lanes / lanes_per_clock`` clocks, bit-exact with :class:`starc_hw.pu.BankPU`.

::

    MAC strobe ─> column latch, q / p ─> beat j: the lowest L lanes ──> L multipliers (DSP)
                  (the column shifts down L lanes per beat, the query half rotates L lanes)
        score:  lane tree over the L products (pipelined adders) ─> beat sum u_j
                upper tree over u_0 .. u_(k-1), in pairs, a "left" register per level:
                level 1 on an adder of its own, the levels from 2 on on the accumulate adder
                ─> root ─> accumulate: score[buf][s] = root (h = 0) or score + root (h = 1)
        value:  acc[h][lanes of beat j] += products (the L adders of the lane tree and the
                accumulate adder, one lane each)

No beat multiplexer selects the operands: beat j's are always the lowest ``L`` lanes of the
latched column (shifted down by ``L`` lanes per beat) and of the query half (rotated by ``L``
lanes per beat it feeds, so back in place after the ``k`` beats of a MAC). A wide multiplexer
per operand (16:1 over the column, 32:1 over the query at one lane per clock) was most of the
logic in pim-mid's congested routing region (docs/fpga.md).

The fixed pairwise tree of docs/commands.md is kept exactly: a beat covers ``L`` adjacent lanes
(a subtree of the 16-lane tree), and the upper levels pair beat sums ``(u_2i, u_2i+1)`` in order,
so every add is the one of the full-width tree, in FP32 with one rounding each. The accumulate
adder is the one FP32 accumulation path shared by all folded lanes in the value phase; in the
score phase it also does the upper levels from 2 on, whose adds come at distinct clocks
(:attr:`PUTiming.shared_adds`: level 2 adds every 4 clocks, level 3 every 8, ...), so a PU
has ``L + 1`` adders (2 at one lane per clock) instead of one per tree level. The price is the
spacing of score MACs, :attr:`PUTiming.ii`: a score MAC's first shared add comes after the
previous one's last (31 clocks at one lane per clock instead of 16).

The PU never stalls: a MAC's work happens at fixed clocks after its strobe (:class:`PUTiming`),
and :attr:`FoldedPU.accept` / :attr:`FoldedPU.idle` tell the channel when the next MAC may come
and when every register is written (the channel holds the emulated clock until then).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from starc.config import Config

from .. import fp
from . import pipe

__all__ = ["FoldedPU", "PUTiming", "SCORE", "VALUE"]

SCORE, VALUE = 0, 1


def _log2(n: int) -> int:
    return n.bit_length() - 1


@dataclass(frozen=True)
class PUTiming:
    """When a folded PU does what, in FPGA clocks after a MAC's strobe (clock 0: ``mac.valid``,
    the column from the bank). Derived from the lanes, the lanes per clock and the pipeline
    depths of :mod:`starc_hw.folded.pipe`.

    ``ii[p][n]``: clocks from a MAC of phase ``p`` (:data:`SCORE` / :data:`VALUE`) to the
    earliest strobe of a MAC of phase ``n`` (no adder, memory port or register is used twice in
    one clock, and a read-modify-write sees the previous write). ``drain[p]``: the first clock a
    read of the score / accumulator storage sees every result of a MAC of phase ``p``.
    """

    lanes: int
    lanes_per_clock: int
    mul_latency: int
    add_latency: int
    ii: tuple[tuple[int, int], tuple[int, int]] = field(init=False)
    drain: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        k, La = self.beats, self.add_latency
        use: list[dict[str, tuple[int, int]]] = [{}, {}]
        P0, root = self.product, self.root
        for p in (SCORE, VALUE):
            use[p]["beat"] = (1, k)
        for lv in range(1, self.lane_levels + 1):
            use[SCORE][f"tree{lv}"] = (P0 + (lv - 1) * La, P0 + (lv - 1) * La + k - 1)
            use[VALUE][f"tree{lv}"] = (P0, P0 + k - 1)
        if self.upper_levels >= 1:
            t = P0 + self.lane_levels * La
            use[SCORE]["upper1"] = (t, t + k - 1)
        # the accumulate adder also does the upper levels from 2 on, at their own clocks
        shared = self.shared_adds
        if len(set(shared)) != len(shared):
            raise ValueError(f"the upper tree levels' adds collide on the shared adder at "
                             f"{shared} (add latency {La}); use another lanes_per_clock")
        use[SCORE]["acc_add"] = (min(shared), root)
        use[VALUE]["acc_add"] = (P0, P0 + k - 1)
        use[SCORE]["score_wr"] = (root, root + La)
        use[VALUE]["acc_rd"] = (P0 - 1, P0 + k - 2)
        use[VALUE]["acc_wr"] = (P0 + La, P0 + La + k - 1)
        ii = [[k, k], [k, k]]
        for p in (SCORE, VALUE):
            for n in (SCORE, VALUE):
                for r, (_, last) in use[p].items():
                    if r in use[n]:
                        ii[p][n] = max(ii[p][n], last - use[n][r][0] + 1)
                if p == n:          # read-modify-write: the next read after the last write
                    ii[p][n] = max(ii[p][n], La + 2)
        object.__setattr__(self, "ii", (tuple(ii[0]), tuple(ii[1])))
        object.__setattr__(self, "drain", (root + La + 1, P0 + La + k))

    @property
    def beats(self) -> int:
        """Clocks of one column: ``lanes / lanes_per_clock``."""
        return self.lanes // self.lanes_per_clock

    @property
    def lane_levels(self) -> int:
        return _log2(self.lanes_per_clock)

    @property
    def upper_levels(self) -> int:
        return _log2(self.beats)

    @property
    def product(self) -> int:
        """Clock of beat 0's products (beat j: + j)."""
        return 2 + self.mul_latency

    def add_clock(self, level: int, pair: int) -> int:
        """Clock of upper tree level ``level``'s add of beat-sum pair ``pair`` (1-based level;
        the add starts when the pair's second operand arrives)."""
        base = self.product + self.lane_levels * self.add_latency
        return base + (1 << level) * (pair + 1) - 1 + (level - 1) * self.add_latency

    @property
    def shared_adds(self) -> tuple[int, ...]:
        """Clocks of a score MAC's adds on the accumulate adder: the upper levels from 2 on,
        then the accumulate at the root (every one distinct: the adder takes one per clock)."""
        adds = [self.add_clock(lv, i) for lv in range(2, self.upper_levels + 1)
                for i in range(self.beats >> lv)]
        return (*adds, self.root)

    @property
    def adders(self) -> int:
        """FP adders of the PU: the lane tree's, upper level 1's, the accumulate adder."""
        return self.lanes_per_clock - 1 + (1 if self.upper_levels else 0) + 1

    @property
    def root(self) -> int:
        """Clock of a score MAC's tree sum (the accumulate adds it in that clock)."""
        return (self.product + self.lane_levels * self.add_latency + self.beats - 1
                + self.upper_levels * self.add_latency)


class FoldedPU(wiring.Component):
    """The processing unit of one bank, ``lanes_per_clock`` lanes per FPGA clock.

    Parameters
    ----------
    cfg : Config
        Lanes, slots and accumulation format (``pu.mac_pipeline`` is the emulated contract; this
        unit's clocks are :attr:`timing`).
    lanes_per_clock : int
        Power of two dividing ``pu.lanes``.

    Members
    -------
    mac : In(stream.Signature(mac_layout, always_ready=True))
        A MAC strobe, as :class:`starc_hw.pu.BankPU`'s (column ``data``, ``col``, ``value``,
        ``buf``); only when :attr:`accept` allows its phase.
    wrgb : In(stream.Signature(wrgb_layout, always_ready=True))
        Query chunk, as BankPU's; only while :attr:`qfree`.
    prob : In(stream.Signature(StructLayout({"slot", "index", "data"}), always_ready=True))
        One probability (FP16) into probability slot ``slot``, token slot ``index``.
    bank_slice : In(range(banks_per_group))
    score_addr : In(StructLayout({"buf", "slot"}))
    score_data : Out(width)
        Score register ``score_addr`` of the previous clock (for the score move; while idle).
    acc_addr : In(StructLayout({"h", "beat"}))
    acc_data : Out(ArrayLayout(width, lanes_per_clock))
        Accumulators ``acc[h][beat L + i]`` of the previous clock's ``acc_addr`` (while idle).
    acc_clear : In(2)
        Bit h: ``acc[h] = 0`` from the next clock on (a value move, after its reads).
    accept : Out(2)
        Bit p: a MAC of phase p may strobe in the next clock.
    idle : Out(1)
        A read of the score / accumulator storage in the next clock sees every MAC's result.
    qfree : Out(1)
        A WRGB may write the query in this clock (no MAC reads it any more, none strobes now).
    error : Out(1)
        Sticky: a MAC strobed while :attr:`accept` forbade it.
    """

    def __init__(self, *, cfg: Config, lanes_per_clock: int) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        lanes = cfg.pu.lanes
        lpc = lanes_per_clock
        if isinstance(lpc, bool) or not isinstance(lpc, int) or lpc <= 0 or lpc & (lpc - 1) \
                or lanes % lpc:
            raise ValueError(f"Lanes per clock must be a power of two dividing pu.lanes "
                             f"({lanes}), not {lpc!r}")
        if lanes & (lanes - 1):
            raise ValueError(f"pu.lanes must be a power of two for the folded PU, not {lanes}")
        self._cfg = cfg
        self._fmt = fp.acc_format(cfg.pu.acc_format)
        self._lpc = lpc
        self.timing = PUTiming(lanes=lanes, lanes_per_clock=lpc,
                               mul_latency=pipe.mul_latency(self._fmt),
                               add_latency=pipe.ADD_LATENCY)
        slots = cfg.tokens_per_bank_row()
        bpg = cfg.org.banks_per_group
        w = self._fmt.width
        k = self.timing.beats
        self.mac_layout = data.StructLayout({
            "data": data.ArrayLayout(16, lanes), "col": range(cfg.org.columns_per_row),
            "value": 1, "buf": 1})
        self.wrgb_layout = data.StructLayout({"chunk": range(2 * bpg),
                                              "data": data.ArrayLayout(16, lanes)})
        self.prob_layout = data.StructLayout({"slot": 1, "index": range(slots), "data": 16})
        self.score_addr_layout = data.StructLayout({"buf": 1, "slot": range(slots)})
        self.acc_addr_layout = data.StructLayout({"h": 1, "beat": range(max(2, k))})
        super().__init__({
            "mac": In(stream.Signature(self.mac_layout, always_ready=True)),
            "wrgb": In(stream.Signature(self.wrgb_layout, always_ready=True)),
            "prob": In(stream.Signature(self.prob_layout, always_ready=True)),
            "bank_slice": In(range(bpg)),
            "score_addr": In(self.score_addr_layout),
            "score_data": Out(w),
            "acc_addr": In(self.acc_addr_layout),
            "acc_data": Out(data.ArrayLayout(w, lpc)),
            "acc_clear": In(2),
            "accept": Out(2),
            "idle": Out(1),
            "qfree": Out(1),
            "error": Out(1),
        })

    @property
    def lanes_per_clock(self) -> int:
        return self._lpc

    def elaborate(self, platform: object) -> Module:  # noqa: C901 (one datapath, read in order)
        m = Module()
        cfg, fmt, tm = self._cfg, self._fmt, self.timing
        lanes, L, k = cfg.pu.lanes, self._lpc, tm.beats
        S = cfg.tokens_per_bank_row()
        w = fmt.width
        La = tm.add_latency
        P0, root_t = tm.product, tm.root

        # ---- MAC bookkeeping: distance to the last strobe (saturating), its phase ---------------
        horizon = max(max(max(r) for r in tm.ii), max(tm.drain), k) + 1
        since = Signal(range(horizon + 1), init=horizon)
        last = Signal()
        strobe = self.mac.valid
        with m.If(strobe):
            m.d.sync += [since.eq(1), last.eq(self.mac.payload.value)]
        with m.Elif(since != horizon):
            m.d.sync += since.eq(since + 1)
        # the same in the next clock
        nxt = Mux(strobe, 1, Mux(since == horizon, horizon, since + 1))
        nlast = Mux(strobe, self.mac.payload.value, last)

        def ii(prev: Value, n: int) -> Value:
            return Mux(prev, tm.ii[VALUE][n], tm.ii[SCORE][n])

        m.d.comb += [
            self.accept.eq(Cat(nxt >= ii(nlast, SCORE), nxt >= ii(nlast, VALUE))),
            self.idle.eq(nxt >= Mux(nlast, tm.drain[VALUE], tm.drain[SCORE])),
            self.qfree.eq(~strobe & (since >= k)),
        ]
        with m.If(strobe & (since < Mux(self.mac.payload.value, ii(last, VALUE),
                                        ii(last, SCORE)))):
            m.d.sync += self.error.eq(1)

        # ---- operands: query, probabilities, the latched column --------------------------------
        q = [Signal(data.ArrayLayout(16, lanes), name=f"q{h}") for h in range(2)]
        wq = self.wrgb.payload
        q_write = self.wrgb.valid & (wq.chunk >> 1 == self.bank_slice)

        pmem = Memory(shape=16, depth=2 * S, init=[])
        m.submodules.prob_mem = pmem
        p_wr, p_rd = pmem.write_port(), pmem.read_port()
        p_valid = Signal(2 * S)
        pw = self.prob.payload
        m.d.comb += [p_wr.en.eq(self.prob.valid), p_wr.addr.eq(Cat(pw.index, pw.slot)),
                     p_wr.data.eq(pw.data)]
        with m.If(self.prob.valid):
            m.d.sync += p_valid.bit_select(Cat(pw.index, pw.slot), 1).eq(1)

        mp = self.mac.payload
        col = Signal(data.ArrayLayout(16, lanes))
        ctx_value, ctx_h = Signal(), Signal()
        p_ok = Signal()
        m.d.comb += [p_rd.addr.eq(Cat(mp.col[1:], mp.buf)), p_rd.en.eq(strobe)]
        with m.If(strobe):
            m.d.sync += [ctx_value.eq(mp.value), ctx_h.eq(mp.col[0]),
                         p_ok.eq(p_valid.bit_select(Cat(mp.col[1:], mp.buf), 1))]
        scale = Mux(p_ok, p_rd.data, 0)

        # beats 0 .. k-1 in clocks 1 .. k
        beat = Signal(range(k + 1))
        beating = Signal()
        with m.If(strobe):
            m.d.sync += [beat.eq(0), beating.eq(1)]
        with m.Elif(beating):
            m.d.sync += beat.eq(beat + 1)
            with m.If(beat == k - 1):
                m.d.sync += beating.eq(0)
        # No beat multiplexers: a beat's operands are always the lowest L lanes. The latched
        # column shifts down by L lanes per beat; the query half a score MAC reads rotates by L
        # lanes per beat, so after the k beats it is back in place (a WRGB writes the query only
        # while no MAC reads it, `qfree`, and the write takes precedence over the last rotation).
        # (one enable per register and a two-way choice under it, so that synthesis puts the
        # hold on the flip-flops' clock enable: one LUT per bit)
        with m.If(strobe):
            m.d.sync += col.eq(mp.data)
        if k > 1:
            with m.Elif(beating):
                m.d.sync += col.as_value().eq(col.as_value() >> (16 * L))
        for h in range(2):
            we = q_write & (wq.chunk[0] == h)
            rotate = beating & ~ctx_value & (ctx_h == h) if k > 1 else 0
            with m.If(we | rotate):
                m.d.sync += q[h].eq(Mux(we, wq.data.as_value(),
                                        q[h].as_value().rotate_right(16 * L)))
        a_word = Signal(16 * L)
        b_word = Signal(16 * L)
        m.d.comb += [a_word.eq(col.as_value()[:16 * L]),
                     b_word.eq(Mux(ctx_value, Cat(*[scale] * L),
                                   Mux(ctx_h, q[1].as_value()[:16 * L],
                                       q[0].as_value()[:16 * L])))]
        # operand stage (clock 2 + j): registered
        a_reg = pipe.reg(m, a_word, "op_a")
        b_reg = pipe.reg(m, b_word, "op_b")
        tag_layout = data.StructLayout({"valid": 1, "value": 1, "h": 1, "beat": range(max(2, k))})
        tag0 = Signal(tag_layout)
        m.d.sync += [tag0.valid.eq(beating), tag0.value.eq(ctx_value), tag0.h.eq(ctx_h),
                     tag0.beat.eq(beat)]

        # ---- multipliers: products of beat j valid in clock P0 + j ------------------------------
        prods = [pipe.mul(m, fmt, a_reg[16 * i:16 * (i + 1)], b_reg[16 * i:16 * (i + 1)],
                          f"prod{i}") for i in range(L)]
        tags = [tag0]
        for i in range(P0 - 2):
            tags.append(pipe.reg(m, tags[-1], f"tag{i + 1}"))
        tag_p = data.View(tag_layout, tags[P0 - 2])          # at clock P0 + j
        tag_pm1 = data.View(tag_layout, tags[P0 - 3])        # one clock earlier
        vbeat = tag_p.valid & tag_p.value
        sbeat = tag_p.valid & ~tag_p.value

        # ---- accumulator storage (value phase) --------------------------------------------------
        amem = Memory(shape=data.ArrayLayout(w, L), depth=2 * max(2, k), init=[])
        m.submodules.acc_mem = amem
        a_rd, a_wr = amem.read_port(), amem.write_port()
        a_valid = Signal(2 * max(2, k))
        a_rd_valid = Signal()
        rmw_read = tag_pm1.valid & tag_pm1.value
        rd_addr = Mux(rmw_read, Cat(tag_pm1.beat, tag_pm1.h),
                      Cat(self.acc_addr.beat, self.acc_addr.h))
        m.d.comb += a_rd.addr.eq(rd_addr)
        m.d.sync += a_rd_valid.eq(a_valid.bit_select(rd_addr, 1))
        acc_word = [Mux(a_rd_valid, a_rd.data[i], 0) for i in range(L)]
        m.d.comb += self.acc_data.eq(Cat(*acc_word))

        # ---- lane tree (score) / lane accumulates (value): the first L - 1 adders ---------------
        value_ops = [(acc_word[i], prods[i]) for i in range(L)]
        nodes: list[Value] = list(prods)
        lane_out: list[Value] = []          # adder outputs in lane order (value phase)
        adder = 0
        for lv in range(1, tm.lane_levels + 1):
            nxt = []
            for i in range(0, len(nodes), 2):
                va, vb = value_ops[adder]
                s = pipe.add(m, fmt, Mux(vbeat, va, nodes[i]), Mux(vbeat, vb, nodes[i + 1]),
                             f"lane{lv}_{i // 2}")
                nxt.append(s)
                lane_out.append(s)
                adder += 1
            nodes = nxt
        beat_sum = nodes[0]                 # valid in P0 + lane_levels La + j (score beats)
        sb = sbeat
        for i in range(tm.lane_levels * La):
            sb = pipe.reg(m, sb, f"sbeat{i}")

        # ---- the accumulate adder, shared (operands selected below) --------------------------
        sh_a, sh_b = Signal(w, name="acc_a"), Signal(w, name="acc_b")
        acc_sum = pipe.add(m, fmt, sh_a, sh_b, "acc")

        # ---- upper tree over the beat sums, in pairs: level 1 on an adder of its own, the
        # levels from 2 on on the accumulate adder at their own clocks (PUTiming.shared_adds:
        # distinct, so one add per clock; a level's result is the adder's output La clocks on)
        node, node_valid = beat_sum, sb
        shared_ops: list[tuple[Value, Value, Value]] = []     # (go, left, right)
        for lv in range(1, tm.upper_levels + 1):
            left = Signal(w, name=f"left{lv}")
            odd = Signal(name=f"odd{lv}")
            with m.If(node_valid):
                m.d.sync += odd.eq(~odd)
                with m.If(~odd):
                    m.d.sync += left.eq(node)
            go = node_valid & odd
            if lv == 1:
                node = pipe.add(m, fmt, left, node, f"upper{lv}")
            else:
                shared_ops.append((go, left, node))
                node = acc_sum
            node_valid = pipe.delay(m, go, La, f"upper{lv}_v")
        root, root_valid = node, node_valid       # clock root_t

        # ---- score storage and the accumulate --------------------------------------------------
        smem = Memory(shape=w, depth=2 * S, init=[])
        m.submodules.score_mem = smem
        s_rd, s_wr = smem.read_port(), smem.write_port()
        s_valid = Signal(2 * S)
        # contexts of the score MACs in flight (pushed at the strobe, popped at the root)
        depth = max(2, -(-(root_t + La + 1) // tm.ii[SCORE][SCORE]) + 1)
        cq = Array(Signal(data.StructLayout({"h": 1, "addr": range(2 * S)}), name=f"ctx{i}")
                   for i in range(depth))
        cw, cr = Signal(range(depth)), Signal(range(depth))
        ccount = Signal(range(depth + 1))
        push = strobe & ~mp.value
        with m.If(push):
            m.d.sync += [cq[cw].h.eq(mp.col[0]), cq[cw].addr.eq(Cat(mp.col[1:], mp.buf)),
                         cw.eq(Mux(cw == depth - 1, 0, cw + 1))]
        with m.If(root_valid):
            m.d.sync += cr.eq(Mux(cr == depth - 1, 0, cr + 1))
        m.d.sync += ccount.eq(ccount + push - root_valid)
        head = cq[cr]
        s_rd_addr = Mux(ccount != 0, head.addr, Cat(self.score_addr.slot, self.score_addr.buf))
        s_rd_valid = Signal()
        m.d.comb += s_rd.addr.eq(s_rd_addr)
        m.d.sync += s_rd_valid.eq(s_valid.bit_select(s_rd_addr, 1))
        score_now = Mux(s_rd_valid, s_rd.data, 0)
        m.d.comb += self.score_data.eq(score_now)

        # the accumulate adder: score + root (score MACs with h = 1), acc + product (value,
        # the last lane of the beat), and the upper tree levels from 2 on
        va, vb = value_ops[L - 1]
        op_a, op_b = Mux(vbeat, va, score_now), Mux(vbeat, vb, root)
        for go, left, right in shared_ops:
            op_a, op_b = Mux(go, left, op_a), Mux(go, right, op_b)
        m.d.comb += [sh_a.eq(op_a), sh_b.eq(op_b)]
        lane_out.append(acc_sum)
        h_add = root_valid & head.h
        add_addr = pipe.delay(m, head.addr, La, "acc_addr")
        add_done = pipe.delay(m, h_add, La, "acc_v")
        direct = root_valid & ~head.h
        m.d.comb += [
            s_wr.en.eq(direct | add_done),
            s_wr.addr.eq(Mux(add_done, add_addr, head.addr)),
            s_wr.data.eq(Mux(add_done, acc_sum, root)),
        ]
        with m.If(s_wr.en):
            m.d.sync += s_valid.bit_select(s_wr.addr, 1).eq(1)

        # value results: the L adders' outputs, La clocks after the beat's products
        vdone = pipe.delay(m, vbeat, La, "vdone")
        vaddr = pipe.delay(m, Cat(tag_p.beat, tag_p.h), La, "vaddr")
        m.d.comb += [a_wr.en.eq(vdone), a_wr.addr.eq(vaddr), a_wr.data.eq(Cat(*lane_out))]
        clear_mask = Cat(*[self.acc_clear[h] for h in range(2) for _ in range(max(2, k))])
        set_mask = Signal.like(a_valid)
        with m.If(vdone):
            m.d.comb += set_mask.eq(1 << vaddr)
        m.d.sync += a_valid.eq((a_valid & ~clear_mask) | set_mask)
        return m

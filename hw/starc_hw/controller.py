"""The command front end of one channel: issues a PIM program at the golden model's cycles.

:class:`Controller` takes the program as a stream of packed command words and issues each command
at the earliest cycle the scheduling rule of docs/commands.md allows, inserting refreshes, exactly
as :func:`starc.golden.timing.schedule` does, and reports the same binding rule for each (the
tests compare every issue cycle and rule). Its constraint logic is generated from the rules table
(:data:`starc.rules.RULES`, :data:`starc.rules.PLAN`): one *term* per row, compared in registers
with the cycles elapsed since the decision, so no combinational maximum over the constraints
exists (docs/rtl.md, "The pipelined controller"). Its state is relative: per family instance
the *age* of the latest event (cycles since it, saturating at the largest distance a row reads
from the family), so every term is a few bits wide and the cycle counter feeds nothing but the
issue stream and the refresh due date.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import MAX_HEADS, Op, Scope
from starc.rules import (
    COMPLETION,
    DYNAMIC_DISTANCES,
    IN_ORDER,
    PLAN,
    RULES,
    Family,
    Key,
    KeyBit,
    KeyHead,
    KeyIf,
    Test,
)

from .layouts import COMMAND, RULE_BITS, Fault, issue_layout

__all__ = ["DECISION_CLOCKS", "Controller", "Fault"]

#: FPGA clocks a command spends at the head before its first comparison with the cycle counter
#: (DECIDE: terms; COMPARE: distances to the counter). The cycle counter stands still meanwhile.
DECISION_CLOCKS = 2

#: Terms compared with one copy of the elapsed count (``el_c<k>``, ``el_p1_c<k>``): a single
#: counter fanned out to every term's comparator was more than half of `small`'s critical path
#: (docs/fpga.md "Critical paths"), so each group of this many terms compares with a copy of its
#: own (registers with the count's updates: equal to it, saturated at the copy's width, in every
#: clock).
TERMS_PER_COUNTER = 8

_DECIDE, _COMPARE, _WAIT = 0, 1, 2
_LEVELS = (Scope.CHANNEL, Scope.PSEUDO_CHANNEL, Scope.RANK, Scope.GROUP, Scope.BANK)


def _log2(n: int) -> int:
    return n.bit_length() - 1


def _pick(values: list[Value], index: Value) -> Value:
    """``values[index]``; the list is padded to every value the index can take (with its last
    element, never selected in a legal program) so that the multiplexer is complete."""
    if len(values) == 1:
        return values[0]
    n = 1 << len(index)
    assert n >= len(values), (n, len(values))
    return Array(values + [values[-1]] * (n - len(values)))[index]


@dataclass
class _Slot:
    """One term: the cycle a row (or, for a window row read above its level, one instance of it)
    allows the head command at; ``app_head`` / ``app_ref``: whether it applies to the head
    command / to a REF inserted before it."""

    rule: int
    value: Value
    app_head: Value
    app_ref: Value
    for_act: bool


class Controller(wiring.Component):
    """In-order PIM command issue at the earliest legal cycle (docs/commands.md, docs/rtl.md).

    The controller counts emulated DRAM cycles in :attr:`cycle`. For every family of the rules
    plan it keeps the age of the latest event per instance (channel, pseudo-channel, rank, group,
    bank, key: cycles since the event, saturating at one more than the largest distance a row
    reads from the family, which every row reads as "long ago"); an issued command resets every
    instance it is related to, and every counter advance ages them all. A command at the head of
    :attr:`cmd` is decided in :data:`DECISION_CLOCKS` clocks (DECIDE: per row, the row's
    distance minus the family's age at the head's instance, the cycles until the row allows the
    command; COMPARE: each of them to the cycles elapsed since DECIDE) and then issues in the
    first emulated cycle in which every term it is subject to has been reached; the golden
    model's formula, so the issue cycles and binding rules are equal.

    *Emulated time.* The cycle counter advances by one on a clock with :attr:`step` high, except
    while the controller waits: for its host (no command at the head, or an issued command not
    accepted on :attr:`issue`), for a decision (the two decision clocks), or after a fault. At
    most one command issues per emulated cycle. Host idles, backpressure and slow ``step`` never
    change the schedule.

    Parameters
    ----------
    cfg : Config
        Organisation (groups, banks per group, ranks) and timing of the channel.
    refresh : bool
        Insert refreshes (``timing.schedule(..., refresh=True)``).
    cycle_width : int
        Width of the cycle counter, of the issue stream's cycle and of the dynamic rows' state
        (24 .. 64); the ages are as wide as their families' distances need.
    heads : int
        Heads the channel holds state for (docs/multihead.md; default 1). The rows keyed by
        head (``starc.rules.HEAD``, the value accumulators' register set ``2 + h``) keep one
        register per head; a command's head is the low ``ceil(log2(heads))`` bits of its row
        field (one head: not looked at; the datapath flags a head out of range).

    Members
    -------
    cmd : In(stream.Signature(COMMAND))
        The program, one packed command word per transfer (``starc.isa.encode``).
    issue : Out(stream.Signature(issue_layout(cycle_width)))
        Each issued command (program commands and inserted refreshes) with its issue cycle and
        binding rule id (``starc.rules``; equal to ``Schedule.rule``). Issued commands take
        effect in the DRAM when they transfer; a bank array watches ``issue.valid &
        issue.ready``.
    step : In(1, init=1)
        The emulated cycle counter may advance on this clock (a folded datapath that needs
        several FPGA clocks per emulated cycle pulses it once per emulated cycle).
    cycle : Out(cycle_width)
        The current DRAM cycle.
    complete : Out(cycle_width)
        Latest completion of the commands issued so far (the program's cycle count at the end).
    issued : Out(32)
        Number of issued commands, inserted refreshes included.
    fault : Out(Fault)
        Sticky; the controller stops at the first illegal command.
    """

    def __init__(self, *, cfg: Config, refresh: bool = True, cycle_width: int = 48,
                 heads: int = 1) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        if not isinstance(refresh, bool):
            raise TypeError(f"Refresh must be a bool, not {refresh!r}")
        if isinstance(cycle_width, bool) or not isinstance(cycle_width, int) \
                or not 24 <= cycle_width <= 64:
            raise ValueError(f"Cycle width must be an integer from 24 to 64, not {cycle_width!r}")
        if isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= MAX_HEADS:
            raise ValueError(f"heads must be an integer in 1..{MAX_HEADS}, not {heads!r}")
        self._cfg = cfg
        self._heads = heads
        self._refresh = refresh
        self._w = cycle_width
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "issue": Out(stream.Signature(issue_layout(cycle_width))),
            "step": In(1, init=1),
            "cycle": Out(cycle_width),
            "complete": Out(cycle_width),
            "issued": Out(32),
            "fault": Out(Fault),
        })

    @property
    def cfg(self) -> Config:
        return self._cfg

    def elaborate(self, platform: object) -> Module:
        return _Builder(self).m


class _Builder:
    """Builds the controller's module from the rules plan (one instance per elaboration)."""

    def __init__(self, ctrl: Controller) -> None:
        self.c = ctrl
        self.m = m = Module()
        cfg, org = ctrl.cfg, ctrl.cfg.org
        self.cfg = cfg
        self.W = W = ctrl._w
        self.S = S = signed(W)
        self.dist = cfg.distances()
        G, BPG = org.groups_per_channel, org.banks_per_group
        self.count = {Scope.CHANNEL: 1, Scope.PSEUDO_CHANNEL: org.pseudo_channels,
                      Scope.RANK: org.ranks_per_channel, Scope.GROUP: G, Scope.BANK: G * BPG}
        self.G, self.BPG, self.NB = G, BPG, G * BPG

        # ---- the head command and the phase of its decision --------------------------------
        self.head = head = Signal(COMMAND)
        self.head_valid = Signal()
        self.phase = Signal(2, init=_DECIDE)
        self.now = Signal(S, init=0)
        self.adv = Signal()                  # the counter advances in this clock
        self.spent = Signal()      # a command issued at `now`; the counter has not moved since
        self.fault = Signal(Fault)
        self.is_open = Signal(self.NB)
        op, g = head.op, head.group
        lg_bpg, lg_bgs, lg_sids = _log2(BPG), _log2(org.bank_groups), _log2(org.sids)
        lg_g = _log2(G)
        # the head's instance at each level, exactly log2(instances) bits wide (0 for one)
        self.index = {Scope.CHANNEL: Const(0, 0),
                      Scope.PSEUDO_CHANNEL: g[lg_bgs + lg_sids:lg_g],
                      Scope.RANK: g[lg_bgs:lg_g], Scope.GROUP: g[:lg_g],
                      Scope.BANK: Cat(head.bank[:lg_bpg], g[:lg_g])}
        self.is_op = {o: Signal(name=f"head_{o.name.lower()}") for o in Op if o != Op.NOP}
        for o, s in self.is_op.items():
            m.d.comb += s.eq(op == o)

        self.registers()
        self.slots = self.make_slots()
        self.decide()
        self.compare_and_wait()
        self.writes()

    # ---- helpers ----------------------------------------------------------------------------
    def any_op(self, ops: object) -> Value:
        sigs = [self.is_op[o] for o in sorted(ops)]  # type: ignore[type-var]
        return Cat(*sigs).any() if sigs else Const(0)

    def field_test(self, t: Test | None) -> Value:
        if t is None:
            return Const(1)
        f = self.head.col if t.field == "col" else self.head.arg
        bit = f[_log2(t.flag)]
        return bit if t.is_set else ~bit

    def key_value(self, key: Key, ops: object) -> Value:
        """The head's value of ``key`` (for the opcodes in ``ops``)."""
        H = self.c._heads
        hb = (H - 1).bit_length()

        def expr(e: KeyBit | KeyIf | KeyHead) -> Value:
            if isinstance(e, KeyHead):
                return e.base + self.head.row[:hb] if hb else Const(e.base)
            f = self.head.col if e.field == "col" else self.head.arg
            if isinstance(e, KeyBit):
                return f[_log2(e.flag)]
            return Mux(f[_log2(e.flag)], expr(e.then) if isinstance(e.then, KeyHead) else e.then,
                       expr(e.other))

        out: Value = Const(0, range(key.size_at(H)))
        for o in sorted(ops):  # type: ignore[type-var]
            out = Mux(self.is_op[o], expr(key.expr(o)), out)
        return out

    def keys_index(self, keys: tuple[Key, ...], ops: object) -> Value:
        """The head's combined key index (mixed radix, first key most significant), exactly as
        wide as the number of key combinations needs."""
        if not keys:
            return Const(0, 0)
        H = self.c._heads
        total = 1
        for k in keys:
            total *= k.size_at(H)
        idx = Signal(range(total), name="key_" + "_".join(k.name for k in keys))
        expr: Value = Const(0)
        for k in keys:
            expr = expr * k.size_at(H) + self.key_value(k, ops)
        self.m.d.comb += idx.eq(expr)
        return idx

    def age(self, f: Family, name: str) -> Signal:
        """An age register of family ``f``: cycles since its latest event, saturating at
        ``self.cap[f.index]`` (its reset value: no event since the reset)."""
        cap = self.cap[f.index]
        return Signal(range(cap + 1), init=cap, name=name)

    def aged(self, f: Family, v: Value) -> Value:
        """``v`` one counter advance older (when the counter advances in this clock)."""
        cap = self.cap[f.index]
        return Mux(self.adv & (v != cap), v + 1, v)

    # ---- family registers: ages ---------------------------------------------------------
    def levels_of(self, f: Family) -> list[Scope]:
        """Read levels kept in registers: a level below every write level holds its ancestor's
        value, so it is read there."""
        top = max(f.write_levels.values())
        return sorted({min(lv, top) for lv in f.read_levels.values()})

    def registers(self) -> None:
        self.fam: dict[int, dict[Scope, list[list[Signal]]]] = {}
        self.dyn: dict[int, list[Signal]] = {}   # one register per key value
        self.win: dict[int, list[list[Signal]]] = {}
        # an age saturates one above the largest distance read from its family: a row whose
        # distance has passed reads a term below 0, which no issue cycle reaches (the counter
        # is at `t0 - 1` or `t0` when a head is decided), exactly as the event's own cycle
        self.cap = {f.index: 1 + max(self.dist[RULES[r - 1].distance] for r in f.rules)
                    for f in PLAN.families if f.value is None}
        for f in PLAN.families:
            name = f.name
            K = f.key_size_at(self.c._heads)
            if f.value is not None:
                # the cycles until the latest ``t + d(event)``, relative like the ages; -1 for
                # "reached" (a term of 0 could bind at the in-order bound)
                self.dyn[f.index] = [Signal(self.S, init=-1, name=f"f_{name}" + (
                    f"_{k}" if K > 1 else "")) for k in range(K)]
                continue
            if f.nth > 1:
                n = self.count[f.level]
                self.win[f.index] = [[self.age(f, f"f_{name}_{q}_{k}") for k in range(f.nth)]
                                     for q in range(n)]  # newest first
                continue
            self.fam[f.index] = {
                lv: [[self.age(f, f"f_{name}_{int(lv)}_{q}_{k}") for k in range(K)]
                     for q in range(self.count[lv])]
                for lv in self.levels_of(f)}

    def read(self, f: Family, level: Scope, key: Value) -> Value:
        lv = min(level, max(f.write_levels.values()))
        regs = self.fam[f.index][lv]
        return _pick([_pick(row, key) for row in regs], self.index[lv])

    # ---- terms ------------------------------------------------------------------------------
    def make_slots(self) -> list[_Slot]:
        slots: list[_Slot] = []
        for rid, rule in enumerate(RULES, start=1):
            f = PLAN.family_of[rid]
            later = rule.later
            app = self.any_op(later.ops) & self.field_test(later.test)
            for_act = bool(later.ops & {Op.ACTAB, Op.ACTBG, Op.ACTPB})
            has_ref = Op.REF in later.ops
            if f.value is not None:
                value = _pick(self.dyn[f.index], self.keys_index(f.keys, later.ops))
                slots.append(_Slot(rid, value, app, Const(int(has_ref)), for_act))
                continue
            d = self.dist[rule.distance]
            if f.nth > 1:
                # the nth-latest event per instance of the window's level; a command above that
                # level (ACTAB over ranks) is subject to every instance: one slot each
                oldest = [ring[-1] for ring in self.win[f.index]]
                above = [o for o in sorted(later.ops) if f.read_levels[o] < f.level]
                if any(f.read_levels[o] != Scope.CHANNEL for o in above):
                    raise ValueError(f"rule {rid}: a window read between two levels")
                own = _pick(oldest, self.index[f.level])
                first = Mux(self.any_op(above), oldest[0], own) if above else own
                slots.append(_Slot(rid, d - first, app, Const(0), for_act))
                for q in range(1, len(oldest) if above else 1):
                    slots.append(_Slot(rid, d - oldest[q], self.any_op(above) & app, Const(0),
                                       for_act))
                continue
            by_level: dict[Scope, list[Op]] = {}
            for o in sorted(later.ops):
                by_level.setdefault(f.read_levels[o], []).append(o)
            key = self.keys_index(f.keys, later.ops)
            value: Value | None = None
            for lv, ops in sorted(by_level.items()):
                v = self.read(f, lv, key)
                value = v if value is None else Mux(self.any_op(ops), v, value)
            assert value is not None
            shared_ref = has_ref and set(by_level) == {Scope.CHANNEL}
            slots.append(_Slot(rid, d - value, app, Const(int(shared_ref)), for_act))
            if has_ref and not shared_ref:
                v = self.read(f, Scope.CHANNEL, Const(0, 0))
                slots.append(_Slot(rid, d - v, Const(0), Const(1), False))
        return slots

    # ---- DECIDE: terms, legality, what the head writes ---------------------------------------
    def decide(self) -> None:
        m, n = self.m, len(self.slots)
        # term k: the cycles from the decision's counter until row k allows the command
        self.term = [Signal(s.value.shape(), name=f"term{k}_r{s.rule}")
                     for k, s in enumerate(self.slots)]
        self.t0 = Signal()     # the in-order bound, likewise: 1 until the counter leaves the
        #                        previous issue's cycle, then 0
        self.app_h = Signal(n)
        self.app_r = Signal(n)
        self.bad = Signal(Fault)
        # the head's dynamic distances (starc.rules.DYNAMIC_DISTANCES), registered in COMPARE
        self.dyn_d = {name: Signal(self.W, name=f"dist_{name}") for name in DYNAMIC_DISTANCES}
        decide = (self.phase == _DECIDE) & self.head_valid & (self.fault == Fault.NONE)
        self.decide_en = decide
        self.dynamic_operands()
        with m.If(self.phase == _COMPARE):
            m.d.sync += [reg.eq(self.dynamic(name)) for name, reg in self.dyn_d.items()]
        with m.If(decide):
            m.d.sync += [t.eq(s.value) for t, s in zip(self.term, self.slots, strict=True)]
            m.d.sync += self.t0.eq(self.spent)
            m.d.sync += [self.app_h.eq(Cat(*(s.app_head for s in self.slots))),
                         self.app_r.eq(Cat(*(s.app_ref for s in self.slots)))]
            m.d.sync += self.bad.eq(self.legality())
            m.d.sync += self.phase.eq(_COMPARE)

    def dynamic_operands(self) -> None:
        """The head's ``ceil(n / sfm_lanes)`` and ``ceil(ceil(4 n / column_bytes) / PCs)``,
        registered in DECIDE, so the dynamic distances (registered in COMPARE: the first issue
        that writes them is in WAIT) take two clocks, not one."""
        pu, org, arg = self.cfg.pu, self.cfg.org, self.head.arg

        def ceil_div(x: Value, d: int) -> Value:
            return (x + (d - 1)) >> _log2(d) if d & (d - 1) == 0 else (x + (d - 1)) // d

        chunks = ceil_div(arg, pu.sfm_lanes)
        bursts = ceil_div(ceil_div(arg * 4, org.column_bytes), org.pseudo_channels)
        self.sfm_chunks = Signal(chunks.shape(), name="sfm_chunks")
        self.rdsb_bursts = Signal(bursts.shape(), name="rdsb_bursts")
        with self.m.If(self.decide_en):
            self.m.d.sync += [self.sfm_chunks.eq(chunks), self.rdsb_bursts.eq(bursts)]

    def sfm_cycles(self) -> Value:
        return self.cfg.pu.sfm_duration(self.sfm_chunks)

    def rdsb_transfer(self) -> Value:
        """``Config.rdsb_transfer(arg)``: tBL x ceil(ceil(4 n / column_bytes) / PCs)."""
        return self.dist["tBL"] * self.rdsb_bursts

    def dynamic(self, name: str, op: Op | None = None) -> Value:
        """The head command's value of a dynamic distance (``op``: as that opcode)."""
        if op is not None:
            if name == "completion":
                return self.dynamic(COMPLETION[op], op)
            if name == "buffer_busy":
                if op == Op.SFM:
                    return self.sfm_cycles()
                return self.dist["CL"] + self.rdsb_transfer() if op == Op.RDSB else Const(0)
            if name == "rdsb_transfer":
                return self.rdsb_transfer() if op == Op.RDSB else Const(0)
            return Const(self.dist[name])
        out: Value = Const(0)
        for o in COMPLETION:
            out = Mux(self.is_op[o], self.dynamic(name, o), out)
        return out

    def legality(self) -> Value:
        """The golden model's ProgramError cases (``Fault``), for the head command."""
        head, open_ = self.head, self.is_open
        G, BPG = self.G, self.BPG
        g_bad = head.group >= G
        gb_bad = g_bad | (head.bank >= BPG)
        grp_bits = open_.word_select(self.index[Scope.GROUP], BPG)
        bank_open = open_.bit_select(self.index[Scope.BANK], 1)
        any_open, all_open = open_.any(), open_.all()
        F = Fault
        cases = [
            (Op.ACTAB, Mux(any_open, F.OPEN, F.NONE)),
            (Op.ACTBG, Mux(g_bad, F.RANGE, Mux(grp_bits.any(), F.OPEN, F.NONE))),
            (Op.ACTPB, Mux(gb_bad, F.RANGE, Mux(bank_open, F.OPEN, F.NONE))),
            (Op.PREA, Const(F.NONE.value, 3)),
            (Op.PREBG, Mux(g_bad, F.RANGE, F.NONE)),
            (Op.PREPB, Mux(gb_bad, F.RANGE, F.NONE)),
            (Op.MACAB, Mux(all_open, F.NONE, F.CLOSED)),
            (Op.MACBG, Mux(g_bad, F.RANGE, Mux(grp_bits.all(), F.NONE, F.CLOSED))),
            (Op.RD, Mux(gb_bad, F.RANGE, Mux(bank_open, F.NONE, F.CLOSED))),
            (Op.WR, Mux(gb_bad, F.RANGE, Mux(bank_open, F.NONE, F.CLOSED))),
            (Op.WRGB, Const(F.NONE.value, 3)),
            (Op.MVSB, Mux(g_bad, F.RANGE, F.NONE)),
            (Op.MVGB, Mux(g_bad, F.RANGE, F.NONE)),
            (Op.SFM, Const(F.NONE.value, 3)),
            (Op.REF, Mux(any_open, F.OPEN, F.NONE)),
            (Op.BAR, Const(F.NONE.value, 3)),
            (Op.RDSB, Const(F.NONE.value, 3)),
        ]
        out: Value = Const(F.OPCODE.value, 3)
        for o, v in cases:
            out = Mux(self.is_op[o], v, out)
        return out

    # ---- COMPARE and WAIT: distances to the counter, issue ----------------------------------
    def compare_and_wait(self) -> None:
        m, c, S = self.m, self.c, self.S
        n = len(self.slots)
        self.sat_h, self.sat_r = Signal(), Signal()
        hit_reg = Signal(n)        # the term equals the counter (registered)
        self.need_ref = Signal()
        self.next_due = Signal(S, init=self.cfg.timing.tREFI if c._refresh
                               else (1 << (self.W - 2)) - 1)
        self.refb = Signal(S, init=self.cfg.timing.tREFI)  # next multiple of tREFI after now
        compare = self.phase == _COMPARE
        wait = self.phase == _WAIT
        ok = self.fault == Fault.NONE
        sel_sat = Mux(self.need_ref, self.sat_r, self.sat_h)

        # the counter: advances on `step`, never past a cycle the head might still issue in.
        # `stay_off` is the advance without an issue in this clock (only registers feed it); an
        # issue (`fire`, the late handshake) adds its own advance and reaches no comparison.
        self.fire = fire = Signal()
        stay_off = Signal()
        adv = self.adv
        m.d.comb += [
            stay_off.eq(c.step & ok & (self.spent | (wait & self.head_valid & ~sel_sat))),
            adv.eq(stay_off | (c.step & ok & fire)),
        ]
        now_p1 = Signal(S, init=1)   # now + 1, kept beside the counter (no adder in a compare)
        with m.If(adv):
            m.d.sync += [self.now.eq(now_p1), now_p1.eq(now_p1 + 1)]
        terms = [*self.term, self.t0]
        # the cycles elapsed since DECIDE (the counter of DECIDE is the terms' origin), in
        # copies: a wide pair for the dynamic rows' terms, narrow saturating ones for the rest
        wide = [k for k, s in enumerate(self.slots) if PLAN.family_of[s.rule].value is not None]
        narrow = [k for k in range(len(terms)) if k not in wide]
        nw = max(terms[k].shape().width for k in narrow)
        copies = {}
        groups = [narrow[i:i + TERMS_PER_COUNTER] for i in range(0, len(narrow),
                                                                 TERMS_PER_COUNTER)]
        for j, ks in enumerate(groups):
            pair = self.elapsed_copy(adv, nw, f"c{j}")
            copies.update(dict.fromkeys(ks, pair))
        if wide:
            pair = self.elapsed_copy(adv, self.W, "wide")
            copies.update(dict.fromkeys(wide, pair))
        with m.If(adv & (now_p1 == self.refb)):
            m.d.sync += self.refb.eq(self.refb + self.cfg.timing.tREFI)
        with m.If(fire & ~adv):
            m.d.sync += self.spent.eq(1)
        with m.Elif(adv):
            m.d.sync += self.spent.eq(0)

        # sat and the hit bits, registered, for the counter of the next clock: every term is
        # compared with both values the elapsed count can take (`e`, `e + 1`), register to
        # register, and `stay_off` only selects. In WAIT the terms stand still, so this tracks
        # the counter; in COMPARE it is the first comparison. After an issue the values are
        # not used (the next head is decided again).
        def copy(k: int) -> tuple[Signal, Signal]:
            return copies[k]

        le_now = Cat(*(t <= copy(k)[0] for k, t in enumerate(terms)))
        le_p1 = Cat(*(t <= copy(k)[1] for k, t in enumerate(terms)))
        eq_now = Cat(*(t == copy(k)[0] for k, t in enumerate(self.term)))
        eq_p1 = le_p1[:n] & ~le_now[:n]     # t <= now + 1 and not t <= now

        def sat_of(reached: Value, app: Value) -> Value:
            return reached[n] & (reached[:n] | ~app).all()

        m.d.sync += [
            self.sat_h.eq(Mux(stay_off, sat_of(le_p1, self.app_h), sat_of(le_now, self.app_h))),
            self.sat_r.eq(Mux(stay_off, sat_of(le_p1, self.app_r), sat_of(le_now, self.app_r))),
            hit_reg.eq(Mux(stay_off, eq_p1, eq_now)),
        ]
        any_open = self.is_open.any()
        # the refresh due date relative to the decision's counter, clamped (in DECIDE) to one
        # beyond the activations' terms on either side, which keeps every comparison exact
        act_terms = [t for t, s in zip(self.term, self.slots, strict=True) if s.for_act]
        aw = max(t.shape().width for t in act_terms)
        lo, hi = -(1 << (aw - 1)) - 1, 1 << (aw - 1)
        due = Signal(range(lo, hi + 1), name="due")
        until_due = self.next_due - self.now
        with m.If(self.decide_en):
            m.d.sync += due.eq(Mux(until_due > hi, hi, Mux(until_due < lo, lo, until_due)))
        ge_due = Cat(*(t >= due for t in act_terms))
        act_mask = Cat(*(self.app_h[k] for k, s in enumerate(self.slots) if s.for_act))
        is_act = Cat(self.is_op[Op.ACTAB], self.is_op[Op.ACTBG], self.is_op[Op.ACTPB]).any()
        with m.If(compare):
            if c._refresh:
                m.d.sync += self.need_ref.eq(is_act & ~any_open & (
                    (self.t0 >= due) | (ge_due & act_mask).any()))
            else:
                m.d.sync += self.need_ref.eq(0)
            with m.If(self.bad != Fault.NONE):
                m.d.sync += self.fault.eq(self.bad)
            with m.Else():
                m.d.sync += self.phase.eq(_WAIT)

        # the issue stream and the head register
        issue = c.issue
        ref_word = Const(int(Op.REF), COMMAND.size)
        m.d.comb += [
            issue.valid.eq(wait & self.head_valid & ok & sel_sat & ~self.spent),
            fire.eq(issue.valid & issue.ready),
            issue.payload.cmd.eq(Mux(self.need_ref, ref_word, self.head)),
            issue.payload.cycle.eq(self.now),
            issue.payload.inserted.eq(self.need_ref),
            issue.payload.rule.eq(self.priority(hit_reg & Mux(self.need_ref, self.app_r,
                                                              self.app_h))),
            c.cmd.ready.eq(~self.head_valid | (fire & ~self.need_ref)),
            c.cycle.eq(self.now),
            c.fault.eq(self.fault),
        ]
        with m.If(c.cmd.valid & c.cmd.ready):
            m.d.sync += [self.head.eq(c.cmd.payload), self.head_valid.eq(1)]
        with m.Elif(fire & ~self.need_ref):
            m.d.sync += self.head_valid.eq(0)
        with m.If(fire):
            m.d.sync += [self.phase.eq(_DECIDE), c.issued.eq(c.issued + 1)]

    def elapsed_copy(self, adv: Value, width: int, name: str) -> tuple[Signal, Signal]:
        """A copy of the elapsed-cycles pair (``e``, ``e + 1``: counter advances since DECIDE,
        the DECIDE clock's own included), ``width`` bits, saturating at its largest value (above
        every term compared with it, so the comparisons stay exact); each copy from its own
        registers, so no synthesis pass merges two, and ``keep`` keeps their names in the
        netlist (``TERMS_PER_COUNTER``)."""
        top = (1 << width) - 1
        e = Signal(width, name=f"el_{name}", attrs={"keep": 1})
        p1 = Signal(width, init=1, name=f"el_p1_{name}", attrs={"keep": 1})
        with self.m.If(self.decide_en):
            self.m.d.sync += [e.eq(adv), p1.eq(adv + 1)]
        with self.m.Elif(adv):
            self.m.d.sync += [e.eq(p1), p1.eq(Mux(p1 == top, top, p1 + 1))]
        return e, p1

    def priority(self, bits: Value) -> Value:
        """The rule of the first set bit (slots are in table order), else IN_ORDER: a balanced
        tree of (any, rule) pairs, the left operand winning."""
        nodes = [(bits[k], Const(s.rule, RULE_BITS)) for k, s in enumerate(self.slots)]
        while len(nodes) > 1:
            nxt = []
            for a, b in zip(nodes[0::2], nodes[1::2], strict=False):
                nxt.append((a[0] | b[0], Mux(a[0], a[1], b[1])))
            if len(nodes) % 2:
                nxt.append(nodes[-1])
            nodes = nxt
        v, rid = nodes[0]
        return Mux(v, rid, IN_ORDER)

    # ---- the issued command's effect --------------------------------------------------------
    def enable(self, head_cond: Value, on_ref: bool, name: str) -> Value:
        """Write enable of a register: the command that fires writes it. Whether the head command
        does is decided in DECIDE (registered), whether an inserted REF does is known (``on_ref``),
        so `fire` is one gate away from every enable."""
        bit = Signal(name=f"we_{name}")
        with self.m.If(self.decide_en):
            self.m.d.sync += bit.eq(head_cond)
        if on_ref:
            return self.fire & (self.need_ref | bit)
        return self.fire & ~self.need_ref & bit

    def node_hit(self, op: Op, lam: Scope, lv: Scope, q: int) -> Value:
        """The head command (an ``op`` event written at level ``lam``) touches instance ``q`` of
        level ``lv``."""
        if lv <= lam:
            return self.index[lv] == q
        ancestor = q // (self.count[lv] // self.count[lam])
        return self.index[lam] == ancestor

    def writes(self) -> None:
        m, S, adv = self.m, self.S, self.adv
        now, ref = self.now, self.need_ref

        def head_in(f: Family, cond: object) -> Value:
            terms = [self.is_op[o] & cond(o) for o in sorted(f.earlier.ops)]  # type: ignore
            return Cat(*terms).any() & self.field_test(f.earlier.test)

        for f in PLAN.families:
            on_ref = Op.REF in f.earlier.ops
            if f.value is not None:
                # the latest `t + d(event)`, as cycles from `now`: the larger of the register
                # and the issued command's distance, one less when the counter advances
                # (never below -1, "reached")
                dyn = self.dyn_d[f.value]
                cand = Signal(S, name=f"cand_{f.name}")
                m.d.comb += cand.eq(Mux(ref, self.dist["tRFC"], dyn)
                                    if f.value == "completion" else dyn)
                regs = self.dyn[f.index]
                key = self.keys_index(f.keys, f.earlier.ops) if len(regs) > 1 else Const(0, 0)
                for kv, reg in enumerate(regs):
                    cond = head_in(f, lambda o: Const(1))
                    if len(regs) > 1:
                        cond = cond & (key == kv)
                    en = self.enable(cond, on_ref, f.name + (f"_{kv}" if len(regs) > 1 else ""))
                    new = Mux(en & (cand > reg), cand, reg)
                    m.d.sync += reg.eq(Mux(adv & (new >= 0), new - 1, new))
                if f.value == "completion":
                    # the program's cycle count, absolute: one register beside the relative one
                    assert len(regs) == 1, "the completion family has no keys"
                    comp = Signal(S, init=-1, name="complete")
                    with m.If(en & (now + cand > comp)):
                        m.d.sync += comp.eq(now + cand)
                    self.comp_abs = comp
                continue
            if f.nth > 1:
                for q, ring in enumerate(self.win[f.index]):
                    en = self.enable(head_in(f, lambda o, q=q, f=f: self.node_hit(
                        o, f.write_levels[o], f.level, q)), on_ref, f"{f.name}_{q}")
                    with m.If(en):
                        m.d.sync += [ring[0].eq(adv)] + [
                            ring[k].eq(self.aged(f, ring[k - 1])) for k in range(1, f.nth)]
                    with m.Else():
                        m.d.sync += [r.eq(self.aged(f, r)) for r in ring]
                continue
            ops = [o for o in sorted(f.earlier.ops) if o != Op.REF]
            key = self.keys_index(f.keys, ops) if ops else Const(0, 0)
            for lv, nodes in self.fam[f.index].items():
                for q, regs in enumerate(nodes):
                    for kv, reg in enumerate(regs):
                        cond = head_in(f, lambda o, lv=lv, q=q, f=f: self.node_hit(
                            o, f.write_levels[o], lv, q))
                        if f.keys:
                            cond = cond & (key == kv)
                        # the event's cycle is `now`: its age in the next clock is the advance
                        with m.If(self.enable(cond, on_ref, f"{f.name}_{int(lv)}_{q}_{kv}")):
                            m.d.sync += reg.eq(adv)
                        with m.Else():
                            m.d.sync += reg.eq(self.aged(f, reg))

        # open banks
        at_g, at_b = self.index[Scope.GROUP], self.index[Scope.BANK]
        for i in range(self.NB):
            gi = i // self.BPG
            opens = self.is_op[Op.ACTAB] | (self.is_op[Op.ACTBG] & (at_g == gi)) \
                | (self.is_op[Op.ACTPB] & (at_b == i))
            closes = self.is_op[Op.PREA] | (self.is_op[Op.PREBG] & (at_g == gi)) \
                | (self.is_op[Op.PREPB] & (at_b == i))
            with m.If(self.enable(opens, False, f"open_{i}")):
                m.d.sync += self.is_open[i].eq(1)
            with m.If(self.enable(closes, False, f"close_{i}")):
                m.d.sync += self.is_open[i].eq(0)

        # refresh bookkeeping
        tREFI = self.cfg.timing.tREFI
        with m.If(self.fire & ref):
            m.d.sync += self.next_due.eq(self.next_due + tREFI)
        if self.c._refresh:
            explicit_ref = self.enable(self.is_op[Op.REF], False, "explicit_ref")
            with m.If(explicit_ref & (self.refb > self.next_due)):
                m.d.sync += self.next_due.eq(self.refb)

        # the program's cycle count: the completion family's absolute twin (never before 0)
        comp = getattr(self, "comp_abs", None)
        assert comp is not None, "the rules table has no completion row"
        m.d.comb += self.c.complete.eq(Mux(comp[-1], 0, comp))

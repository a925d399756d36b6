"""Programs of several heads on one channel: the overlapped order (docs/multihead.md).

A program is a sequence of **rounds** (activation commands, one or more **passes**, precharge
commands). A pass is the MACs of one head over the open rows, in the score or the value phase,
as a list of *MAC slots* (the MACs of one column); a move may go into the gap after each slot.
:func:`emit` lays the rounds out in the order given and places every move of every head in those
gaps:

============================  ==========================================  ======================
move                          may go from (estimated cycle)                must precede
============================  ==========================================  ======================
WRGB of head k                program start (k = 0) / head k - 1's first   head k's first score
                              score pass                                   pass
score MVSBs of a pass         its last MAC + mac_latency                   the next score pass
                                                                           writing its register set
SFM of head k                 head k's last score MVSB + mv_cycles, the    (its MVGBs)
                              previous SFM's end
MVGBs of head k's first       its SFM + sfm_cycles(n)                      that pass
value pass
MVGBs of value pass p + 1     the start of value pass p                    pass p + 1
value MVSBs of head k         its last value MAC + mac_latency             (the end)
============================  ==========================================  ======================

Cycles are *estimated* from the slot spacing the caller gives and the row switch between rounds;
the golden timing model decides the real ones (a move placed early only waits). Moves go in
queue order, the first whose estimated cycle has come; one per gap, two when more are ready than
gaps remain in the round. A move still waiting when the pass it must precede starts is placed
before that pass (before the round's activation if the pass opens the round), together with the
earlier moves it depends on. Register sets (score) and probability slots (value) alternate per
pass across all heads; the head index goes into the ``row`` field of every command that names
one (:data:`starc.isa.HEAD_OPS`).

With one head this gives exactly the single-head program (:func:`starc.golden.programs.
dense_program` and the planner's attention program).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starc.config import Config
from starc.isa import MAX_HEADS, MacArg, MoveFlag, Op, program_from_commands

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Cmd", "HeadWork", "Pass", "Round", "emit", "emit_commands", "overlapped_order"]

Cmd = tuple[int, int, int, int, int, int]   # op, group, bank, col, row, arg


@dataclass
class Pass:
    """The MACs of one head over the open rows of a round.

    ``slots``: per MAC slot, the MAC commands (``arg`` without ``MacArg.BUF`` / ``VALUE``, row 0:
    :func:`emit` sets the register set or slot, the phase and the head); ``dt``: the cycles a slot
    takes (the spacing to the next MAC, e.g. tCCD_AB). ``groups`` / ``masks``: the groups the
    round opened for this head with their valid-slot masks (score moves and, in the value phase,
    the groups whose probabilities the pass needs)."""

    head: int
    value: bool
    slots: list[list[Cmd]]
    dt: list[int]
    groups: list[int]
    masks: list[int]


@dataclass
class Round:
    act: list[Cmd]
    passes: list[Pass]
    pre: list[Cmd]


@dataclass
class HeadWork:
    """What a head needs besides its passes: its query words (WRGB data indices, one per chunk),
    the valid entries of its softmax, and the groups whose value accumulators move out at the
    end (both halves each, in this order)."""

    query: list[int]
    n_valid: int
    out_groups: list[int]


@dataclass
class _Item:
    cmd: Cmd
    ready: float                      # estimated cycle from which it may go
    #: (item, delay): goes only after ``item``, and ``delay`` estimated cycles after it
    after: list[tuple[_Item, int]] = field(default_factory=list)
    deadline: int = -1                # global pass index it must precede (-1: none)
    after_pass: int = -1              # global pass index whose MACs must have started
    kind: tuple[int, int, int] = (0, 0, 0)   # (op, head, value move?): same-kind moves keep
    #                                           their queue order
    seq: int = 0
    at: float | None = None           # estimated cycle it was placed


def overlapped_order(heads: int) -> list[tuple[int, bool]]:
    """The phase order of ``heads`` heads with their own rows: ``(head, value phase?)`` for
    S_0, S_1, V_0, S_2, V_1, ..., S_{H-1}, V_{H-2}, V_{H-1}."""
    if heads < 1:
        raise ValueError(f"heads must be at least 1, not {heads}")
    out = [(0, False)]
    for k in range(heads - 1):
        out += [(k + 1, False), (k, True)]
    return out + [(heads - 1, True)]


def emit(rounds: list[Round], heads: dict[int, HeadWork], cfg: Config, *,
         compact: bool = False, max_per_gap: int = 2) -> np.ndarray:
    """The program array of :func:`emit_commands`."""
    return program_from_commands(emit_commands(rounds, heads, cfg, compact=compact,
                                               max_per_gap=max_per_gap))


def emit_commands(rounds: list[Round], heads: dict[int, HeadWork], cfg: Config, *,
                  compact: bool = False, max_per_gap: int = 2) -> list[Cmd]:
    """The program of ``rounds`` with every head's moves placed (module docstring), as command
    tuples.

    ``compact`` changes two choices at the program's edges (docs/multihead.md): moves that must
    precede a round go after its activation instead of before it (the activation depends on no
    move, so the first ACTAB opens its row while the query is written, and a value round's rows
    open while its probabilities move), and the value moves go half by half with the groups in
    an order that alternates pseudo-channels and ranks (one move per cycle instead of same-group
    pairs tCCD_L apart). Without it the single-head program is exactly the reference one."""
    for h in heads:
        if not 0 <= h < MAX_HEADS:
            raise ValueError(f"head {h} out of range (0..{MAX_HEADS - 1})")
    passes = [p for rd in rounds for p in rd.passes]
    for p in passes:
        if p.head not in heads:
            raise ValueError(f"a pass names head {p.head}, which has no HeadWork")
        if len(p.dt) != len(p.slots) or not p.slots:
            raise ValueError("a pass needs at least one MAC slot and one dt per slot")
    tm = cfg.timing
    maclat = cfg.distances()["mac_latency"]
    sfm_cycles = cfg.sfm_cycles

    score_idx = [i for i, p in enumerate(passes) if not p.value]
    value_idx = [i for i, p in enumerate(passes) if p.value]
    set_of = {i: n & 1 for n, i in enumerate(score_idx)}
    slot_of = {i: n & 1 for n, i in enumerate(value_idx)}
    score_of = {h: [i for i in score_idx if passes[i].head == h] for h in heads}
    value_of = {h: [i for i in value_idx if passes[i].head == h] for h in heads}
    next_same_set = {i: score_idx[n + 2] if n + 2 < len(score_idx) else -1
                     for n, i in enumerate(score_idx)}
    # heads in the order of their first pass; head k's query goes under head k - 1's first
    # score pass
    firsts = {h: min(score_of[h] + value_of[h], default=1 << 30) for h in heads}
    order = sorted(heads, key=lambda h: firsts[h])
    query_under = {min(score_of[a]): b for a, b in zip(order, order[1:], strict=False)
                   if score_of[a]}

    out: list[Cmd] = []
    queue: list[_Item] = []
    seq = 0
    now = 0.0                        # estimated cycle of the next command
    last_sfm: tuple[_Item, int] | None = None

    started: set[int] = set()        # passes whose MACs have started

    def enqueue(cmd: Cmd, ready: float, *, after: list[tuple[_Item, int]] | None = None,
                deadline: int = -1, after_pass: int = -1) -> _Item:
        nonlocal seq
        kind = (cmd[0], cmd[4], int(cmd[3] & MoveFlag.VALUE) if cmd[0] == int(Op.MVSB) else 0)
        it = _Item(cmd, ready, list(after or []), deadline, after_pass, kind, seq)
        seq += 1
        queue.append(it)
        return it

    def is_ready(it: _Item) -> bool:
        if it.after_pass >= 0 and it.after_pass not in started:
            return False
        for dep, delay in it.after:
            if dep.at is None or now < dep.at + delay:
                return False
        for o in queue:          # same-kind moves keep their order
            if o is it:
                break
            if o.kind == it.kind:
                return False
        return now >= it.ready

    def put(it: _Item) -> None:
        nonlocal now
        queue.remove(it)
        it.at = now
        out.append(it.cmd)
        now += 1

    def force(pi: int) -> None:
        """Place every queued move that must precede pass ``pi``, with what it depends on."""
        need: set[int] = set()

        def mark(it: _Item) -> None:
            if it.seq in need or it.at is not None:
                return
            need.add(it.seq)
            for dep, _ in it.after:
                mark(dep)
            for o in queue:
                if o.seq < it.seq and o.kind == it.kind:
                    mark(o)

        for it in list(queue):
            if 0 <= it.deadline <= pi:
                mark(it)
        for it in [o for o in queue if o.seq in need]:
            put(it)

    def query_items(h: int, ready: float) -> None:
        fp = min(score_of[h], default=-1)
        for c, a in enumerate(heads[h].query):
            enqueue((int(Op.WRGB), 0, 0, c, h, a), ready, deadline=fp)

    if order:
        query_items(order[0], 0.0)
    pre_t: float | None = None       # estimated cycle of the last precharge
    org = cfg.org

    def move_order(gs: list[int]) -> list[int]:
        # (bank group, SID, pseudo-channel): consecutive moves alternate pseudo-channels, and a
        # rank sees one every other move of its pseudo-channel
        def key(g: int) -> tuple[int, int, int]:
            rank, bg = divmod(g, org.bank_groups)
            pc, sid = divmod(rank, org.sids)
            return bg, sid, pc
        return sorted(gs, key=key)

    pi = 0
    for rd in rounds:
        if not compact:
            force(pi)
        if pre_t is not None:
            now = max(now, pre_t + tm.tRP)
        act_t = now
        for c in rd.act:
            out.append(c)
            now += 1
        if compact:
            force(pi)
        now = max(now, act_t + tm.tRCD) if rd.act else now
        last_mac = now
        for j, p in enumerate(rd.passes):
            i = pi + j
            if j:
                force(i)
            h = p.head
            started.add(i)
            if i in query_under:
                query_items(query_under[i], now)
            if p.value:
                vs = value_of[h]
                k = vs.index(i)
                if k + 1 < len(vs):      # the probabilities of the head's next value pass
                    nxt = vs[k + 1]
                    prev = value_idx[value_idx.index(nxt) - 1]   # the slot's last reader
                    for g in passes[nxt].groups:
                        enqueue((int(Op.MVGB), g, 0, slot_of[nxt], h, 0), now, deadline=nxt,
                                after_pass=prev)
                bits = int(MacArg.VALUE) | (int(MacArg.BUF) if slot_of[i] else 0)
            else:
                bits = int(MacArg.BUF) if set_of[i] else 0
            later = sum(len(q.slots) for q in rd.passes[j + 1:])
            for n, (slot, dt) in enumerate(zip(p.slots, p.dt, strict=True)):
                last_mac = now
                for c in slot:
                    out.append((c[0], c[1], c[2], c[3], h, c[5] | bits))
                now += 1
                ready = [it for it in queue if is_ready(it)]
                left = len(p.slots) - n - 1 + later
                for it in ready[:1 if len(ready) <= left else max_per_gap]:
                    put(it)
                now = max(now, last_mac + dt)
            if not p.value:
                for g, m in zip(p.groups, p.masks, strict=True):
                    enqueue((int(Op.MVSB), g, 0, set_of[i], h, m), last_mac + maclat,
                            deadline=next_same_set[i])
                if i == score_of[h][-1]:
                    # the softmax after the head's last score moves and the previous softmax;
                    # the MVGBs of its first value pass after the softmax
                    after = [(it, cfg.pu.mv_cycles) for it in queue
                             if it.kind == (int(Op.MVSB), h, 0)]
                    if last_sfm is not None:
                        after.append(last_sfm)
                    sfm = enqueue((int(Op.SFM), 0, 0, 0, h, heads[h].n_valid), 0.0, after=after)
                    busy = sfm_cycles(heads[h].n_valid)
                    last_sfm = (sfm, busy)
                    if value_of[h]:
                        v0 = value_of[h][0]
                        # the slot's previous reader is the value pass two before v0: wait until
                        # the pass right before v0 has started
                        n0 = value_idx.index(v0)
                        for g in passes[v0].groups:
                            enqueue((int(Op.MVGB), g, 0, slot_of[v0], h, 0), 0.0,
                                    after=[(sfm, busy)], deadline=v0,
                                    after_pass=value_idx[n0 - 1] if n0 else -1)
            elif i == value_of[h][-1]:
                gs = heads[h].out_groups
                pairs = ([(g, half) for half in range(2) for g in move_order(gs)] if compact
                         else [(g, half) for g in gs for half in range(2)])
                for g, half in pairs:
                    flags = MoveFlag.VALUE | (MoveFlag.HALF if half else MoveFlag(0))
                    enqueue((int(Op.MVSB), g, 0, int(flags), h, 0), last_mac + maclat)
        pre_t = max(now, last_mac + tm.tRTP_L)
        for c in rd.pre:
            out.append(c)
            now = pre_t + 1
        pi += len(rd.passes)
    force(len(passes))
    for it in sorted(queue, key=lambda o: o.seq):
        out.append(it.cmd)
    return out

"""Independent timing checker: brute force over command pairs.

Written apart from the rules table (:mod:`starc.rules`) on purpose: it reads only the named
distances (:meth:`starc.config.Config.distances`) and states every constraint again in its own
words (:data:`CONSTRAINTS`), so a mistake in the table, in the schedule generator or in the RTL
controller shows up as a disagreement. For every constraint it enumerates every pair (earlier
``j``, later ``i``) of commands of the two kinds that could still conflict (``i`` issued before
``t_j`` plus the largest distance the constraint can ask for), tests the relation of the two
commands from the banks, groups, ranks and pseudo-channels each touches, and requires
``t_i >= t_j + distance``. The four-activation window pairs each activation with the fourth
earlier one of every rank it touches. All cycles are DRAM clock cycles (tCK).

:func:`violations` lists what a trace breaks (it checks RTL traces too); :func:`bounds` gives,
per command, the earliest cycle the constraints allow given the earlier commands' cycles and
which constraints reach it: the golden schedule must issue every command at
``max(previous + 1, bound)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from starc.config import Config
from starc.isa import HEAD_OPS, MacArg, MoveFlag, Op, format_command

__all__ = ["CONSTRAINTS", "Constraint", "TimingViolation", "Violation", "bounds", "check",
           "violations"]

NEVER = -(1 << 50)


class TimingViolation(ValueError):
    """Names the command, the constraint and the cycles."""


@dataclass(frozen=True)
class Violation:
    index: int
    constraint: str
    issued: int
    earliest: int
    cause: int

    def message(self, prog: np.ndarray) -> str:
        return (f"command #{self.index} ({format_command(prog[self.index])}) issued at cycle "
                f"{self.issued} violates {self.constraint}: command #{self.cause} "
                f"({format_command(prog[self.cause])}) requires cycle >= {self.earliest}")


class _Cmds:
    """The program as arrays: opcode kinds, what each command touches, its keys."""

    def __init__(self, prog: np.ndarray, cfg: Config) -> None:
        org = cfg.org
        G, BGS, SIDS = org.groups_per_channel, org.bank_groups, org.sids
        op = prog["op"].astype(np.int64)
        grp = prog["group"].astype(np.int64)
        col = prog["col"].astype(np.int64)
        arg = prog["arg"].astype(np.int64)
        self.n = len(prog)
        # the head a command names in its row field (docs/multihead.md); 0 for the others
        self.head = np.where(np.isin(op, [int(o) for o in HEAD_OPS]),
                             prog["row"].astype(np.int64), 0)
        self.op = op

        def isin(*ops: Op) -> NDArray[np.bool_]:
            return np.isin(op, [int(o) for o in ops])

        self.act = isin(Op.ACTAB, Op.ACTBG, Op.ACTPB)
        self.pre = isin(Op.PREA, Op.PREBG, Op.PREPB)
        self.ref = isin(Op.REF)
        self.macab, self.macbg = isin(Op.MACAB), isin(Op.MACBG)
        self.mac = self.macab | self.macbg
        self.rd, self.wr = isin(Op.RD), isin(Op.WR)
        self.wrgb, self.mvsb, self.mvgb = isin(Op.WRGB), isin(Op.MVSB), isin(Op.MVGB)
        self.sfm, self.bar, self.rdsb = isin(Op.SFM), isin(Op.BAR), isin(Op.RDSB)
        self.any = np.ones(self.n, dtype=bool)
        value_mac = (arg & int(MacArg.VALUE)) != 0
        value_move = (col & int(MoveFlag.VALUE)) != 0
        self.score_mac = self.mac & ~value_mac
        self.value_mac = self.mac & value_mac
        self.score_move = self.mvsb & ~value_move
        # the register set a MAC fills / a move reads: score sets 0 and 1 (shared by the heads),
        # the value accumulators of head h: 2 + h
        self.set = np.where(self.mac,
                            np.where(value_mac, 2 + self.head, (arg & int(MacArg.BUF)) != 0),
                            np.where(value_move, 2 + self.head, (col & int(MoveFlag.BUF)) != 0))
        # the probability slot an MVGB writes / a value MAC reads
        self.slot = np.where(self.mac, (arg & int(MacArg.BUF)) != 0,
                             (col & int(MoveFlag.BUF)) != 0).astype(np.int64)
        # what each command touches: groups (bit mask), one bank of them or all (-1)
        every = isin(Op.ACTAB, Op.PREA, Op.MACAB, Op.REF, Op.WRGB, Op.SFM, Op.RDSB)
        one_bank = isin(Op.ACTPB, Op.PREPB, Op.RD, Op.WR)
        none = self.bar
        self.groups = np.where(every, (1 << G) - 1, 1 << np.minimum(grp, 62))
        self.groups = np.where(none, 0, self.groups).astype(np.uint64)
        self.bank = np.where(one_bank, prog["bank"].astype(np.int64), -1)
        self.banks_touched = ~(self.wrgb | self.sfm | self.rdsb | self.mvsb | self.mvgb | none)
        rank_of = np.arange(G) // BGS
        pc_of = rank_of // SIDS
        self.ranks = self._project(rank_of, G)
        self.pcs = self._project(pc_of, G)
        self.arg = arg

    def _project(self, upper: NDArray[np.int64], G: int) -> NDArray[np.uint64]:
        out = np.zeros(self.n, dtype=np.uint64)
        for g in range(G):
            hit = (self.groups >> np.uint64(g)) & np.uint64(1)
            out |= hit * np.uint64(1 << int(upper[g]))
        return out


Relation = Callable[[_Cmds, NDArray[np.int64], NDArray[np.int64]], NDArray[np.bool_]]


def _share(field: str) -> Relation:
    def rel(c: _Cmds, j: NDArray[np.int64], i: NDArray[np.int64]) -> NDArray[np.bool_]:
        a = getattr(c, field)
        return (a[j] & a[i]) != 0
    return rel


def _same_bank(c: _Cmds, j: NDArray[np.int64], i: NDArray[np.int64]) -> NDArray[np.bool_]:
    both = c.banks_touched[j] & c.banks_touched[i] & ((c.groups[j] & c.groups[i]) != 0)
    return both & ((c.bank[j] < 0) | (c.bank[i] < 0) | (c.bank[j] == c.bank[i]))


def _anywhere(c: _Cmds, j: NDArray[np.int64], i: NDArray[np.int64]) -> NDArray[np.bool_]:
    return np.ones(len(j), dtype=bool)


def _and_same(rel: Relation, key: str) -> Relation:
    def f(c: _Cmds, j: NDArray[np.int64], i: NDArray[np.int64]) -> NDArray[np.bool_]:
        a = getattr(c, key)
        return rel(c, j, i) & (a[j] == a[i])
    return f


SAME_BANK, SAME_GROUP = _same_bank, _share("groups")
SAME_RANK, SAME_PC = _share("ranks"), _share("pcs")


@dataclass(frozen=True)
class Constraint:
    """Command ``i`` of kind ``later`` issues at least ``distance`` after every earlier command
    ``j`` of kind ``earlier`` related to it. ``distance`` is a name of
    :meth:`Config.distances`, or ``busy`` (how long the earlier SFM or RDSB keeps the softmax unit
    and its buffer's read port), ``xfer`` (the earlier RDSB's transfer on the data buses) or
    ``done`` (the earlier command's completion)."""

    name: str
    later: str
    earlier: str
    relation: Relation
    distance: str


def _row(c: _Cmds) -> NDArray[np.bool_]:
    return c.act | c.pre | c.ref


def _cls(c: _Cmds, name: str) -> NDArray[np.bool_]:
    if name == "row":
        return _row(c)
    if name == "column":
        return c.mac | c.rd | c.wr
    if name == "mac/rd":
        return c.mac | c.rd
    if name == "rd/wr":
        return c.rd | c.wr
    if name == "data":
        return c.rd | c.wr | c.wrgb | c.mvsb | c.mvgb | c.sfm | c.rdsb
    if name == "sfm/rdsb":
        return c.sfm | c.rdsb
    if name == "group data":
        return c.rd | c.wr | c.mvsb | c.mvgb
    return getattr(c, name)


#: The constraints, restated from docs/commands.md (DRAM bank timing, the row command bus, the
#: activation window, column and data-path spacing, PIM dependencies).
CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint("row command bus occupancy", "row", "row", _anywhere, "row_cmd_cycles"),
    Constraint("tRC (ACT -> ACT, same bank)", "act", "act", SAME_BANK, "tRC"),
    Constraint("tRP (PRE -> ACT)", "act", "pre", SAME_BANK, "tRP"),
    Constraint("tRFC (REF -> ACT)", "act", "ref", SAME_BANK, "tRFC"),
    Constraint("tRAS (ACT -> PRE)", "pre", "act", SAME_BANK, "tRAS"),
    Constraint("tRTP_L (MAC/RD -> PRE)", "pre", "mac/rd", SAME_BANK, "tRTP_L"),
    Constraint("wr_to_pre (WR -> PRE)", "pre", "wr", SAME_BANK, "wr_to_pre"),
    Constraint("tRCD (ACT -> MAC/RD/WR)", "column", "act", SAME_BANK, "tRCD"),
    Constraint("tRP (PRE -> REF)", "ref", "pre", SAME_BANK, "tRP"),
    Constraint("tRC (ACT -> REF)", "ref", "act", SAME_BANK, "tRC"),
    Constraint("tRFC (REF -> REF)", "ref", "ref", SAME_BANK, "tRFC"),
    Constraint("tRRD_L (ACT -> ACT, same group)", "act", "act", SAME_GROUP, "tRRD_L"),
    Constraint("tRRD_S (ACT -> ACT, rank)", "act", "act", SAME_RANK, "tRRD_S"),
    Constraint("tCCD_AB (MACAB -> MAC)", "mac", "macab", _anywhere, "tCCD_AB"),
    Constraint("tCCD_AB (MACBG -> MACAB)", "macab", "macbg", _anywhere, "tCCD_AB"),
    Constraint("tCCD_S (MACBG -> MACBG)", "macbg", "macbg", _anywhere, "tCCD_S"),
    Constraint("tCCD_L (MACBG -> MACBG, same group)", "macbg", "macbg", SAME_GROUP, "tCCD_L"),
    Constraint("tCCD_L (RD/WR -> MAC, same group)", "mac", "rd/wr", SAME_GROUP, "tCCD_L"),
    Constraint("tCCD_AB (MACAB -> RD/WR)", "rd/wr", "macab", _anywhere, "tCCD_AB"),
    Constraint("tCCD_L (MACBG -> RD/WR, same group)", "rd/wr", "macbg", SAME_GROUP, "tCCD_L"),
    Constraint("wr_to_rd_l (WR -> RD, same group)", "rd", "wr", SAME_GROUP, "wr_to_rd_l"),
    Constraint("wr_to_rd_s (WR -> RD, rank)", "rd", "wr", SAME_RANK, "wr_to_rd_s"),
    Constraint("rd_to_wr (RD -> WR, rank)", "wr", "rd", SAME_RANK, "rd_to_wr"),
    Constraint("tCCD_L (data path, same group)", "data", "data", SAME_GROUP, "tCCD_L"),
    Constraint("tCCD_S (data path, same rank)", "data", "data", SAME_RANK, "tCCD_S"),
    Constraint("tBL (data bus of a pseudo-channel)", "data", "data", SAME_PC, "tBL"),
    Constraint("RDSB transfer (the read-back holds every data bus)", "group data", "rdsb",
               _anywhere, "xfer"),
    Constraint("move_spacing (score MVSB -> score MVSB, softmax buffer write port)",
               "score_move", "score_move", _anywhere, "move_spacing"),
    Constraint("move_spacing (MVGB -> MVGB, softmax buffer read port)", "mvgb", "mvgb",
               _anywhere, "move_spacing"),
    Constraint("mv_cycles (WRGB -> score MAC of its head)", "score_mac", "wrgb",
               _and_same(_anywhere, "head"), "mv_cycles"),
    Constraint("mv_cycles (MVGB -> value MAC of its slot)", "value_mac", "mvgb",
               _and_same(SAME_GROUP, "slot"), "mv_cycles"),
    Constraint("mac_latency (MAC -> MVSB of its register set)", "mvsb", "mac",
               _and_same(SAME_GROUP, "set"), "mac_latency"),
    Constraint("mv_cycles (MVSB -> SFM / RDSB)", "sfm/rdsb", "mvsb", _anywhere, "mv_cycles"),
    Constraint("softmax unit busy (SFM / RDSB -> SFM / RDSB)", "sfm/rdsb", "sfm/rdsb", _anywhere,
               "busy"),
    Constraint("softmax buffer read port (SFM / RDSB -> MVGB of its head)", "mvgb", "sfm/rdsb",
               _and_same(_anywhere, "head"), "busy"),
    Constraint("completion (any -> BAR)", "bar", "any", _anywhere, "done"),
)

#: The four-activation window: an activation at least tFAW after the 4th earlier activation of
#: every rank it touches.
TFAW = "tFAW (five activations in a rank)"


def _completion(c: _Cmds, cfg: Config) -> NDArray[np.int64]:
    d = cfg.distances()
    done = np.zeros(c.n, dtype=np.int64)
    done[c.act | c.pre] = d["row_cmd_cycles"]
    done[c.ref] = d["tRFC"]
    done[c.mac] = d["mac_latency"]
    done[c.rd] = d["rd_done"]
    done[c.wr] = d["wr_done"]
    done[c.wrgb | c.mvsb | c.mvgb] = d["mv_cycles"]
    done[c.sfm | c.rdsb] = _busy(c, cfg)[c.sfm | c.rdsb]
    done[c.bar] = 1
    return done


def _of_arg(c: _Cmds, mask: NDArray[np.bool_], fn: Callable[[int], int]) -> NDArray[np.int64]:
    """``fn(arg)`` for the commands of ``mask`` (0 elsewhere)."""
    out = np.zeros(c.n, dtype=np.int64)
    idx = np.flatnonzero(mask)
    out[idx] = [fn(int(a)) for a in c.arg[idx]]
    return out


def _xfer(c: _Cmds, cfg: Config) -> NDArray[np.int64]:
    """The RDSB's transfer on the data buses (:meth:`Config.rdsb_transfer`)."""
    return _of_arg(c, c.rdsb, cfg.rdsb_transfer)


def _busy(c: _Cmds, cfg: Config) -> NDArray[np.int64]:
    """Softmax unit / buffer read port: SFM :meth:`Config.sfm_cycles`, RDSB CL + its
    transfer (it completes as a RD of that many bursts)."""
    return np.where(c.rdsb, cfg.timing.CL + _xfer(c, cfg), _of_arg(c, c.sfm, cfg.sfm_cycles))


@dataclass
class _Best:
    """Per command and constraint: the largest required cycle and the command requiring it."""

    need: dict[str, NDArray[np.int64]]
    cause: dict[str, NDArray[np.int64]]
    distance: dict[str, str]


def _analyse(prog: np.ndarray, issue: NDArray[np.int64], cfg: Config) -> _Best:
    c = _Cmds(prog, cfg)
    n = c.n
    t = issue
    dist = cfg.distances()
    # suffix minimum: every command from index k on issues at or after smin[k]
    smin = np.minimum.accumulate(t[::-1])[::-1] if n else t
    best = _Best({}, {}, {})
    for con in CONSTRAINTS:
        later, earlier = _cls(c, con.later), _cls(c, con.earlier)
        js = np.flatnonzero(earlier)
        if con.distance == "busy":
            d_j = _busy(c, cfg)[js]
        elif con.distance == "xfer":
            d_j = _xfer(c, cfg)[js]
        elif con.distance == "done":
            d_j = _completion(c, cfg)[js]
        else:
            d_j = np.full(len(js), dist[con.distance], dtype=np.int64)
        need = np.full(n, NEVER, dtype=np.int64)
        cause = np.full(n, -1, dtype=np.int64)
        if len(js) and later.any():
            # later commands the constraint may bind or break: up to the first index from which
            # every command issues after t_j + d
            hi = np.searchsorted(smin, t[js] + d_j, side="right")
            hi = np.maximum(hi, js + 1)
            counts = hi - js - 1
            jj = np.repeat(js, counts)
            dd = np.repeat(d_j, counts)
            start = np.repeat(np.cumsum(counts) - counts, counts)
            ii = jj + 1 + (np.arange(len(jj)) - start)
            keep = later[ii]
            jj, ii, dd = jj[keep], ii[keep], dd[keep]
            keep = con.relation(c, jj, ii)
            jj, ii, req = jj[keep], ii[keep], t[jj[keep]] + dd[keep]
            np.maximum.at(need, ii, req)
            hit = req == need[ii]
            cause[ii[hit]] = jj[hit]
        best.need[con.name], best.cause[con.name] = need, cause
        best.distance[con.name] = con.distance
    # the activation window, per rank
    need = np.full(n, NEVER, dtype=np.int64)
    cause = np.full(n, -1, dtype=np.int64)
    R = cfg.org.ranks_per_channel
    acts = np.flatnonzero(c.act)
    for r in range(R):
        idx = acts[(c.ranks[acts] >> np.uint64(r)) & np.uint64(1) == 1]
        if len(idx) > 4:
            i, j = idx[4:], idx[:-4]
            req = t[j] + dist["tFAW"]
            upd = req > need[i]
            need[i[upd]], cause[i[upd]] = req[upd], j[upd]
    best.need[TFAW], best.cause[TFAW], best.distance[TFAW] = need, cause, "tFAW"
    return best


def _issue(prog: np.ndarray, issue: np.ndarray) -> NDArray[np.int64]:
    issue = np.asarray(issue, dtype=np.int64)
    if len(issue) != len(prog):
        raise ValueError(f"{len(prog)} commands but {len(issue)} issue cycles")
    return issue


def bounds(prog: np.ndarray, issue: np.ndarray, cfg: Config
           ) -> tuple[NDArray[np.int64], list[list[tuple[str, str]]]]:
    """Per command: the earliest cycle every constraint allows given the earlier commands'
    ``issue`` cycles (``NEVER`` if none applies), and the constraints that reach it, as
    ``(constraint, distance name)`` pairs."""
    t = _issue(prog, issue)
    best = _analyse(prog, t, cfg)
    names = list(best.need)
    stack = np.stack([best.need[k] for k in names]) if names else np.zeros((0, len(t)))
    bound = stack.max(axis=0) if len(names) else np.full(len(t), NEVER)
    reach: list[list[tuple[str, str]]] = [[] for _ in range(len(t))]
    for k, name in enumerate(names):
        for i in np.flatnonzero((stack[k] == bound) & (bound > NEVER)).tolist():
            reach[i].append((name, best.distance[name]))
    return bound, reach


def violations(prog: np.ndarray, issue: np.ndarray, cfg: Config) -> list[Violation]:
    """Every violated constraint of a scheduled program (empty list: legal)."""
    t = _issue(prog, issue)
    n = len(t)
    out: list[Violation] = []
    for i in np.flatnonzero(t[1:] <= t[:-1]).tolist():
        out.append(Violation(i + 1, "in-order single issue", int(t[i + 1]), int(t[i] + 1), i))
    best = _analyse(prog, t, cfg)
    for name, need in best.need.items():
        for i in np.flatnonzero(t < need).tolist():
            out.append(Violation(i, name, int(t[i]), int(need[i]), int(best.cause[name][i])))
    out.extend(_state(prog, t, cfg))
    out.sort(key=lambda v: (v.index, v.constraint))
    assert all(0 <= v.index < n for v in out)
    return out


def _state(prog: np.ndarray, t: NDArray[np.int64], cfg: Config) -> list[Violation]:
    """Bank state: activating an open bank, a column access to a closed one, REF with a bank
    open."""
    org = cfg.org
    G, BPG = org.groups_per_channel, org.banks_per_group
    open_ = np.zeros(G * BPG, dtype=bool)
    out = []
    for i, cmd in enumerate(prog):
        op, g, b = Op(int(cmd["op"])), int(cmd["group"]), int(cmd["bank"])
        if op in (Op.ACTAB, Op.PREA, Op.MACAB, Op.REF):
            bk = slice(None)
        elif op in (Op.ACTBG, Op.PREBG, Op.MACBG):
            bk = slice(g * BPG, (g + 1) * BPG)
        elif op in (Op.ACTPB, Op.PREPB, Op.RD, Op.WR):
            bk = slice(g * BPG + b, g * BPG + b + 1)
        else:
            continue
        if op in (Op.ACTAB, Op.ACTBG, Op.ACTPB):
            if open_[bk].any():
                out.append(Violation(i, "activate of an open bank", int(t[i]), -1, i))
            open_[bk] = True
        elif op in (Op.PREA, Op.PREBG, Op.PREPB):
            open_[bk] = False
        elif op == Op.REF:
            if open_.any():
                out.append(Violation(i, "refresh with a bank open", int(t[i]), -1, i))
        elif not open_[bk].all():
            out.append(Violation(i, "column access to a closed bank", int(t[i]), -1, i))
    return out


def check(prog: np.ndarray, issue: np.ndarray, cfg: Config) -> None:
    """Raise :class:`TimingViolation` naming the first violated constraint, if any."""
    v = violations(prog, issue, cfg)
    if v:
        first = min(v, key=lambda x: x.index)
        more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
        raise TimingViolation(first.message(prog) + more)

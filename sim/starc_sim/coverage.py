"""Functional coverage of the scheduling rule: which timing constraint decided each issue cycle.

:func:`binding_rules` replays a program at its golden issue cycles
(:func:`starc.golden.timing.schedule`) and, for every issued command (inserted refreshes
included), evaluates each lower bound the rule of docs/commands.md puts on its cycle: ``order``
(one cycle after the previous command), the DRAM distances (``tRCD``, ``tCCD_AB``, ``tFAW``, ...),
the row-command bus, and the datapath dependencies (``MAC latency``, ``move spacing``, ``SFM
done``, ...). The constraints whose bound equals the issue cycle *bind*: they decided it. Each
bound also names the earlier event it counts from, so a binding is a rule and a command pair
(``tRCD``: ACT -> MACAB).

The replay is an independent reading of the rule (the same terms as ``starc.golden.timing``,
written apart) and checks itself: the largest bound must equal the golden issue cycle of every
command, or :class:`CoverageError` names the command. When the golden schedule reports binding
rules itself, this module is where that report is read instead.

:class:`Coverage` accumulates bindings over many runs (``starc rtl regress``) and lists what never
bound out of :data:`RULES` and :data:`PAIRS`, the constraints and pairs a channel program can
exercise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starc.config import Config
from starc.golden.timing import Schedule, mac_latency, move_spacing, schedule, sfm_cycles
from starc.isa import MacArg, MoveFlag, Op

__all__ = ["PAIRS", "RULES", "Binding", "Coverage", "CoverageError", "binding_rules",
           "unreachable"]

NEG = -(1 << 40)

#: Every (rule, earlier event, command) a program can make bind; ``*`` stands for any command.
PAIRS: tuple[tuple[str, str, str], ...] = (
    ("order", "*", "*"),
    ("tRCD", "ACT", "MACAB"), ("tRCD", "ACT", "MACBG"), ("tRCD", "ACT", "RD"),
    ("tRCD", "ACT", "WR"),
    ("tCCD_AB", "MACAB", "MACAB"), ("tCCD_AB", "MACBG", "MACAB"), ("tCCD_AB", "MACAB", "MACBG"),
    ("tCCD_AB", "MACAB", "RD"), ("tCCD_AB", "MACAB", "WR"),
    ("tCCD_S", "MACBG", "MACBG"), ("tCCD_L", "MACBG", "MACBG"),
    ("tCCD_L", "RD/WR", "MACAB"), ("tCCD_L", "RD/WR", "MACBG"),
    ("tCCD_L", "MACBG", "RD"), ("tCCD_L", "MACBG", "WR"),
    ("WRGB done", "WRGB", "MACAB"), ("WRGB done", "WRGB", "MACBG"),
    ("MVGB done", "MVGB", "MACAB"), ("MVGB done", "MVGB", "MACBG"),
    ("tRP", "PRE", "ACT"), ("tRC", "ACT", "ACT"), ("tRRD_L", "ACT", "ACT"),
    ("tRRD_S", "ACT", "ACT"), ("tFAW", "ACT", "ACT"), ("row bus", "row", "ACT"),
    ("tRFC", "REF", "ACT"),
    ("tRAS", "ACT", "PRE"), ("tRTP_L", "MAC/RD", "PRE"), ("tWR", "WR", "PRE"),
    ("row bus", "row", "PRE"),
    ("tCCD_L", "WRGB/SFM", "data"), ("tBL", "data", "data"), ("tCCD_S", "data", "data"),
    ("tCCD_L", "data", "data"),
    ("MAC latency", "MAC", "MVSB"), ("move spacing", "MVSB", "MVSB"),
    ("move spacing", "MVGB", "MVGB"), ("SFM done", "SFM", "MVGB"),
    ("tWTR_L", "WR", "RD"), ("tWTR_S", "WR", "RD"), ("tRTW", "RD", "WR"),
    ("tCCD_L", "data", "WRGB/SFM"), ("MVSB done", "MVSB", "SFM"), ("SFM done", "SFM", "SFM"),
    ("complete", "*", "BAR"),
    ("row bus", "row", "REF"), ("tRP", "PRE", "REF"), ("tRC", "ACT", "REF"),
    ("tRFC", "REF", "REF"), ("tREFI", "refresh due", "REF"),
)
#: The constraints themselves.
RULES: tuple[str, ...] = tuple(dict.fromkeys(r for r, _, _ in PAIRS))
#: The row-bus spacing before a REF: a pair :func:`unreachable` can name (not a constraint).
ROW_BUS_REF = ("row bus", "row", "REF")

_DATA = {Op.MVSB: "data", Op.MVGB: "data", Op.RD: "data", Op.WR: "data"}


def unreachable(cfg: Config) -> dict[str, str]:
    """The constraints of :data:`RULES` (and, as ``"rule | earlier | command"``, the pairs of
    :data:`PAIRS`) no legal program can make bind on ``cfg``, each with the reason (an argument
    from the preset's distances and the organisation; the tests check it both ways: random
    programs never bind these, and a configuration without the reason does, with
    :func:`starc_sim.programs.directed_programs`).

    ``tRC``: an ACT (or REF) after an ACT of the same bank also waits for that bank's PRE, which
    waits tRAS, and then tRP; when tRC < tRAS + tRP that path is always later.
    ``tFAW``: five activations inside one tFAW window need five banks of one rank (a bank
    re-opened inside the window waits tRAS + tRP, or tRC, from its earlier ACT, longer than
    the window); ranks of fewer than five banks cannot.
    ``row bus | row | REF``: the row command before a REF is a PRE or a REF (after an ACT a bank
    is open), which the REF waits tRP or tRFC after, so the row bus binds only when it is not
    shorter than both."""
    org, tm = cfg.org, cfg.timing
    out: dict[str, str] = {}
    if tm.tRC < tm.tRAS + tm.tRP:
        out["tRC"] = (f"tRC ({tm.tRC}) < tRAS + tRP ({tm.tRAS} + {tm.tRP}): the same bank's PRE "
                      f"and then tRP always decide a later cycle")
    rowc = tm.row_cmd_cycles
    if rowc < min(tm.tRP, tm.tRFC):
        out[" | ".join(ROW_BUS_REF)] = (
            f"the row command before a REF is a PRE (after an ACT a bank is open, and a REF "
            f"needs every bank closed) or a REF, and the REF waits tRP ({tm.tRP}) or tRFC "
            f"({tm.tRFC}) after it, longer than the row bus's {rowc} cycles")
    per_rank = org.bank_groups * org.banks_per_group
    if per_rank < 5 and tm.tFAW < min(tm.tRC, tm.tRAS + tm.tRP):
        out["tFAW"] = (f"a rank has {per_rank} banks: a fifth ACT inside tFAW ({tm.tFAW}) would "
                       f"re-open a bank activated in the window, which waits min(tRC, tRAS + "
                       f"tRP) = {min(tm.tRC, tm.tRAS + tm.tRP)} > tFAW")
    return out


class CoverageError(AssertionError):
    """The replay of the rule disagrees with the golden schedule (the rule changed)."""


@dataclass(frozen=True)
class Binding:
    """Command ``index`` of the executed program (inserted refreshes included): its opcode,
    issue cycle and the (rule, earlier event, command class) triples that decided it."""

    index: int
    op: str
    cycle: int
    inserted: bool
    pairs: tuple[tuple[str, str, str], ...]

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r for r, _, _ in self.pairs))


def _cls(op: Op) -> str:
    """The command class a pair names: activations are ACT, precharges PRE, others themselves."""
    if op in (Op.ACTAB, Op.ACTBG, Op.ACTPB):
        return "ACT"
    if op in (Op.PREA, Op.PREBG, Op.PREPB):
        return "PRE"
    return op.name


def binding_rules(prog: np.ndarray, cfg: Config, sched: Schedule | None = None, *,
                  refresh: bool = True) -> list[Binding]:
    """The binding constraints of every command of ``prog`` at its golden issue cycle (module
    doc). ``sched`` is ``schedule(prog, cfg, refresh=refresh)`` if not given."""
    s = sched if sched is not None else schedule(prog, cfg, refresh=refresh)
    org, tm, pu = cfg.org, cfg.timing, cfg.pu
    G, BPG, R, BGS, RPP = (org.groups_per_channel, org.banks_per_group, org.ranks_per_channel,
                           org.bank_groups, org.sids)
    NB = G * BPG
    dist = cfg.distances()
    tRTP, tWRP = tm.tRTP_L, dist["wr_to_pre"]
    tWTR_S, tWTR_L = dist["wr_to_rd_s"], dist["wr_to_rd_l"]
    tRTW = dist["rd_to_wr"]
    MACLAT, MV, MOVE, ROWC = mac_latency(cfg), pu.mv_cycles, move_spacing(cfg), tm.row_cmd_cycles
    VALUE, BUF = int(MacArg.VALUE), int(MacArg.BUF)

    act_all = act_allmax = pre_all = pre_allmax = col_all = col_allmax = wr_allmax = NEG
    act_grp, act_grpmax, pre_grp, pre_grpmax = [NEG] * G, [NEG] * G, [NEG] * G, [NEG] * G
    col_grp, col_grpmax, wr_grpmax = [NEG] * G, [NEG] * G, [NEG] * G
    act_bank, pre_bank, col_bank, wr_bank = [NEG] * NB, [NEG] * NB, [NEG] * NB, [NEG] * NB
    rank_act = [NEG] * R
    faw = [[NEG] * 4 for _ in range(R)]
    faw_i = [0] * R
    last_row = last_ref = macab_t = macbg_any = NEG
    macbg_grp = [NEG] * G
    d_all = d_allmax = NEG
    d_pc, d_rank, d_grp = [NEG] * org.pseudo_channels, [NEG] * R, [NEG] * G
    rd_grp, rd_rank, wrc_grp, wrc_rank = [NEG] * G, [NEG] * R, [NEG] * G, [NEG] * R
    rw_any = wrgb_done = mvsb_done = mvs_t = mvg_t = sfm_end = NEG
    mvgb_done = [[NEG, NEG] for _ in range(G)]
    mvgb_done_all = [NEG, NEG]
    mac_set_all = [NEG] * 3
    mac_set_grp = [[NEG] * 3 for _ in range(G)]
    complete = 0
    prev = -1
    out: list[Binding] = []

    for i, (c, t, ins) in enumerate(zip(s.program, s.issue.tolist(), s.inserted.tolist(),
                                        strict=True)):
        op = Op(int(c["op"]))
        g, b, col, arg = int(c["group"]), int(c["bank"]), int(c["col"]), int(c["arg"])
        g = min(g, G - 1)
        bi = g * BPG + min(b, BPG - 1)
        r = g // BGS
        pc = r // RPP
        name = _cls(op)
        terms: list[tuple[int, str, str, str]] = [(prev + 1, "order", "*", "*")]

        def add(value: int, rule: str, src: str, dst: str = name,
                terms: list[tuple[int, str, str, str]] = terms) -> None:
            terms.append((value, rule, src, dst))

        if op == Op.MACAB:
            add(act_allmax + tm.tRCD, "tRCD", "ACT")
            add(macab_t + tm.tCCD_AB, "tCCD_AB", "MACAB")
            add(macbg_any + tm.tCCD_AB, "tCCD_AB", "MACBG")
            add(rw_any + tm.tCCD_L, "tCCD_L", "RD/WR")
            if arg & VALUE:
                add(mvgb_done_all[1 if arg & BUF else 0], "MVGB done", "MVGB")
            else:
                add(wrgb_done, "WRGB done", "WRGB")
        elif op == Op.MACBG:
            add(max(act_all, act_grpmax[g]) + tm.tRCD, "tRCD", "ACT")
            add(macab_t + tm.tCCD_AB, "tCCD_AB", "MACAB")
            add(macbg_any + tm.tCCD_S, "tCCD_S", "MACBG")
            add(macbg_grp[g] + tm.tCCD_L, "tCCD_L", "MACBG")
            add(max(rd_grp[g], wrc_grp[g]) + tm.tCCD_L, "tCCD_L", "RD/WR")
            if arg & VALUE:
                add(mvgb_done[g][1 if arg & BUF else 0], "MVGB done", "MVGB")
            else:
                add(wrgb_done, "WRGB done", "WRGB")
        elif op in (Op.ACTAB, Op.ACTBG, Op.ACTPB):
            if op == Op.ACTAB:
                add(pre_allmax + tm.tRP, "tRP", "PRE")
                add(act_allmax + tm.tRC, "tRC", "ACT")
                add(max(rank_act) + tm.tRRD_L, "tRRD_L", "ACT")
                rks: Any = range(R)
            else:
                if op == Op.ACTBG:
                    add(max(pre_all, pre_grpmax[g]) + tm.tRP, "tRP", "PRE")
                    add(max(act_all, act_grpmax[g]) + tm.tRC, "tRC", "ACT")
                else:
                    add(max(pre_all, pre_grp[g], pre_bank[bi]) + tm.tRP, "tRP", "PRE")
                    add(max(act_all, act_grp[g], act_bank[bi]) + tm.tRC, "tRC", "ACT")
                add(max(act_all, act_grpmax[g]) + tm.tRRD_L, "tRRD_L", "ACT")
                add(rank_act[r] + tm.tRRD_S, "tRRD_S", "ACT")
                rks = (r,)
            for rr in rks:
                add(faw[rr][faw_i[rr]] + tm.tFAW, "tFAW", "ACT")
            add(last_row + ROWC, "row bus", "row")
            add(last_ref + tm.tRFC, "tRFC", "REF")
        elif op in (Op.PREA, Op.PREBG, Op.PREPB):
            if op == Op.PREA:
                add(act_allmax + tm.tRAS, "tRAS", "ACT")
                add(col_allmax + tRTP, "tRTP_L", "MAC/RD")
                add(wr_allmax + tWRP, "tWR", "WR")
            elif op == Op.PREBG:
                add(max(act_all, act_grpmax[g]) + tm.tRAS, "tRAS", "ACT")
                add(max(col_all, col_grpmax[g]) + tRTP, "tRTP_L", "MAC/RD")
                add(wr_grpmax[g] + tWRP, "tWR", "WR")
            else:
                add(max(act_all, act_grp[g], act_bank[bi]) + tm.tRAS, "tRAS", "ACT")
                add(max(col_all, col_grp[g], col_bank[bi]) + tRTP, "tRTP_L", "MAC/RD")
                add(wr_bank[bi] + tWRP, "tWR", "WR")
            add(last_row + ROWC, "row bus", "row")
        elif op in _DATA:
            add(d_all + tm.tCCD_L, "tCCD_L", "WRGB/SFM", "data")
            add(d_pc[pc] + tm.tBL, "tBL", "data", "data")
            add(d_rank[r] + tm.tCCD_S, "tCCD_S", "data", "data")
            add(d_grp[g] + tm.tCCD_L, "tCCD_L", "data", "data")
            if op == Op.MVSB:
                k = 2 if col & MoveFlag.VALUE else (1 if col & MoveFlag.BUF else 0)
                add(max(mac_set_all[k], mac_set_grp[g][k]) + MACLAT, "MAC latency", "MAC")
                if k != 2:
                    add(mvs_t + MOVE, "move spacing", "MVSB")
            elif op == Op.MVGB:
                add(mvg_t + MOVE, "move spacing", "MVGB")
                add(sfm_end, "SFM done", "SFM")
            else:
                add(max(act_all, act_grp[g], act_bank[bi]) + tm.tRCD, "tRCD", "ACT")
                add(macab_t + tm.tCCD_AB, "tCCD_AB", "MACAB")
                add(macbg_grp[g] + tm.tCCD_L, "tCCD_L", "MACBG")
                if op == Op.RD:
                    add(wrc_grp[g] + tWTR_L, "tWTR_L", "WR")
                    add(wrc_rank[r] + tWTR_S, "tWTR_S", "WR")
                else:
                    add(max(rd_grp[g], rd_rank[r]) + tRTW, "tRTW", "RD")
        elif op in (Op.WRGB, Op.SFM):
            add(d_allmax + tm.tCCD_L, "tCCD_L", "data", "WRGB/SFM")
            if op == Op.SFM:
                add(mvsb_done, "MVSB done", "MVSB")
                add(sfm_end, "SFM done", "SFM")
        elif op == Op.BAR:
            add(complete, "complete", "*")
        elif op == Op.REF:
            add(last_row + ROWC, "row bus", "row")
            add(pre_allmax + tm.tRP, "tRP", "PRE")
            add(act_allmax + tm.tRC, "tRC", "ACT")
            add(last_ref + tm.tRFC, "tRFC", "REF")

        top = max(v for v, _, _, _ in terms)
        if top != t:
            raise CoverageError(f"command #{i} ({op.name}{' inserted' if ins else ''}) issues at "
                                f"{t} in the golden schedule, but its constraints give {top}: "
                                f"starc_sim.coverage no longer reads the rule as "
                                f"starc.golden.timing applies it")
        pairs = [(rule, src, dst) for v, rule, src, dst in terms if v == t]
        if ins:
            pairs.append(("tREFI", "refresh due", "REF"))
        out.append(Binding(i, op.name, t, bool(ins), tuple(dict.fromkeys(pairs))))

        # ---- state update (as starc.golden.timing) -------------------------------------------
        done = t + 1
        if op == Op.MACAB:
            macab_t = col_all = col_allmax = t
            k = 2 if arg & VALUE else (1 if arg & BUF else 0)
            mac_set_all[k] = t
            done = t + MACLAT
        elif op == Op.MACBG:
            macbg_any = macbg_grp[g] = t
            col_grp[g] = col_grpmax[g] = col_allmax = t
            k = 2 if arg & VALUE else (1 if arg & BUF else 0)
            mac_set_grp[g][k] = t
            done = t + MACLAT
        elif op in (Op.ACTAB, Op.ACTBG, Op.ACTPB):
            if op == Op.ACTAB:
                act_all = act_allmax = t
            elif op == Op.ACTBG:
                act_grp[g] = act_grpmax[g] = act_allmax = t
            else:
                act_bank[bi] = t
                act_grpmax[g] = act_allmax = t
            for rr in (range(R) if op == Op.ACTAB else (r,)):
                rank_act[rr] = t
                faw[rr][faw_i[rr]] = t
                faw_i[rr] = (faw_i[rr] + 1) & 3
            last_row = t
            done = t + ROWC
        elif op in (Op.PREA, Op.PREBG, Op.PREPB):
            if op == Op.PREA:
                pre_all = pre_allmax = t
            elif op == Op.PREBG:
                pre_grp[g] = pre_grpmax[g] = pre_allmax = t
            else:
                pre_bank[bi] = t
                pre_grpmax[g] = pre_allmax = t
            last_row = t
            done = t + ROWC
        elif op in _DATA:
            d_allmax = d_pc[pc] = d_rank[r] = d_grp[g] = t
            done = t + MV
            if op == Op.MVSB:
                mvsb_done = done
                if not col & MoveFlag.VALUE:
                    mvs_t = t
            elif op == Op.MVGB:
                mvg_t = t
                slot = 1 if col & MoveFlag.BUF else 0
                mvgb_done[g][slot] = done
                mvgb_done_all[slot] = max(mvgb_done_all[slot], done)
            elif op == Op.RD:
                rd_grp[g] = rd_rank[r] = rw_any = t
                col_bank[bi] = t
                col_grpmax[g] = col_allmax = t
                done = t + dist["rd_done"]
            else:
                wrc_grp[g] = wrc_rank[r] = rw_any = t
                wr_bank[bi] = wr_grpmax[g] = wr_allmax = t
                done = t + dist["wr_done"]
        elif op in (Op.WRGB, Op.SFM):
            d_all = d_allmax = t
            d_pc = [t] * len(d_pc)
            d_rank = [t] * R
            d_grp = [t] * G
            if op == Op.WRGB:
                done = wrgb_done = t + MV
            else:
                done = sfm_end = t + sfm_cycles(cfg, arg)
        elif op == Op.REF:
            last_row = last_ref = t
            done = t + tm.tRFC
        complete = max(complete, done)
        prev = t
    return out


@dataclass
class Coverage:
    """Bindings counted over many runs; what of :data:`PAIRS` never bound."""

    pairs: Counter = field(default_factory=Counter)
    commands: int = 0
    #: Constraints that cannot bind on the model (:func:`unreachable`), with the reason; they
    #: are reported apart and not counted as missing.
    unreachable: dict[str, str] = field(default_factory=dict)
    #: Binding rule ids as the golden schedule reports them (``Schedule.rule``, one per issued
    #: command: the first row of ``starc.rules.RULES`` that decided it; the RTL controller
    #: reports the same id on its issue stream and the scoreboard compares the two).
    rule_ids: Counter = field(default_factory=Counter)

    def add_rule_ids(self, ids: Any) -> None:
        for i in np.asarray(ids).tolist():
            self.rule_ids[int(i)] += 1

    def add(self, bindings: list[Binding]) -> None:
        self.commands += len(bindings)
        for bnd in bindings:
            for p in bnd.pairs:
                self.pairs[p] += 1

    def merge(self, other: dict[str, Any]) -> None:
        """Add a :meth:`as_dict` of another run."""
        self.commands += int(other.get("commands", 0))
        for key, n in other.get("pairs", {}).items():
            self.pairs[tuple(key.split(" | "))] += int(n)
        for key, n in other.get("rule_ids", {}).items():
            self.rule_ids[int(key)] += int(n)

    @property
    def rules(self) -> Counter:
        out: Counter = Counter()
        for (rule, _, _), n in self.pairs.items():
            out[rule] += n
        return out

    def missing_rules(self) -> list[str]:
        """Constraints that can bind on the model but never did."""
        seen = self.rules
        return [r for r in RULES if not seen[r] and r not in self.unreachable]

    def _reachable(self, p: tuple[str, str, str]) -> bool:
        return p[0] not in self.unreachable and " | ".join(p) not in self.unreachable

    def missing_pairs(self) -> list[tuple[str, str, str]]:
        """Reachable pairs that never bound."""
        return [p for p in PAIRS if not self.pairs[p] and self._reachable(p)]

    def _bound(self, key: str) -> int:
        """Bindings of an :func:`unreachable` key (a constraint, or a pair)."""
        return self.pairs[tuple(key.split(" | "))] if " | " in key else self.rules[key]

    def as_dict(self) -> dict[str, Any]:
        n_rules = len([r for r in RULES if r not in self.unreachable])
        n_pairs = len([p for p in PAIRS if self._reachable(p)])
        return {"commands": self.commands,
                "pairs": {" | ".join(k): n for k, n in sorted(self.pairs.items())},
                "rules": dict(sorted(self.rules.items())),
                "rules_total": len(RULES), "rules_reachable": n_rules,
                "rules_bound": n_rules - len(self.missing_rules()),
                "pairs_total": len(PAIRS), "pairs_reachable": n_pairs,
                "pairs_bound": n_pairs - len(self.missing_pairs()),
                "missing_rules": self.missing_rules(),
                "missing_pairs": [" | ".join(p) for p in self.missing_pairs()],
                "unreachable": dict(self.unreachable),
                # a constraint said to be unreachable that bound: the reason is wrong
                "unreachable_bound": [r for r in self.unreachable if self._bound(r)],
                **self._rule_id_report()}

    def _rule_id_report(self) -> dict[str, Any]:
        """The binding rule ids seen, by name, and the rows of the rules table never reported
        (only when the golden schedule reports ids)."""
        if not self.rule_ids:
            return {}
        try:
            from starc.rules import RULES as TABLE
            from starc.rules import rule_name
        except ImportError:  # pragma: no cover - a golden model without the rules table
            return {"rule_ids": {str(k): n for k, n in sorted(self.rule_ids.items())}}
        ids = range(len(TABLE) + 1)
        return {"rule_ids": {str(k): n for k, n in sorted(self.rule_ids.items())},
                "rule_ids_total": len(ids),
                "rule_ids_bound": sum(1 for i in ids if self.rule_ids[i]),
                "rule_ids_missing": [rule_name(i) for i in ids if not self.rule_ids[i]]}

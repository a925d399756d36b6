"""Independent timing checker: does a scheduled program violate any constraint?

Written separately from :mod:`starc.golden.timing` (which *constructs* a schedule) so that each can
check the other: this module only *verifies* a given list of issue cycles, pair by pair, expanding
every command to the banks, groups, ranks and pseudo-channels it touches and looking, for each
constraint, at the latest earlier event of the required kind on the same resource. It is also what
checks an RTL trace. All cycles are DRAM clock cycles (tCK).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starc.config import Config
from starc.golden.timing import mac_latency, move_spacing, rdsb_transfer, sfm_cycles
from starc.isa import MacArg, MoveFlag, Op, format_command

__all__ = ["TimingViolation", "check", "violations"]


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


def _expand(prog: np.ndarray, cfg: Config) -> dict[str, list[np.ndarray]]:
    """Per command, the banks (flat index) and groups it touches."""
    org = cfg.org
    G, BPG = org.groups_per_channel, org.banks_per_group
    all_banks = np.arange(G * BPG)
    all_groups = np.arange(G)
    banks, groups = [], []
    for c in prog:
        op = Op(int(c["op"]))
        g, b = int(c["group"]), int(c["bank"])
        if op in (Op.ACTAB, Op.PREA, Op.MACAB, Op.REF):
            banks.append(all_banks)
            groups.append(all_groups)
        elif op in (Op.ACTBG, Op.PREBG, Op.MACBG):
            banks.append(np.arange(g * BPG, (g + 1) * BPG))
            groups.append(np.array([g]))
        elif op in (Op.ACTPB, Op.PREPB, Op.RD, Op.WR):
            banks.append(np.array([g * BPG + b]))
            groups.append(np.array([g]))
        elif op in (Op.MVSB, Op.MVGB):
            banks.append(np.array([], dtype=np.int64))
            groups.append(np.array([g]))
        elif op in (Op.WRGB, Op.SFM, Op.RDSB):
            banks.append(np.array([], dtype=np.int64))
            groups.append(all_groups)
        else:
            banks.append(np.array([], dtype=np.int64))
            groups.append(np.array([], dtype=np.int64))
    return {"banks": banks, "groups": groups}


def violations(prog: np.ndarray, issue: np.ndarray, cfg: Config) -> list[Violation]:
    """Every violated constraint of a scheduled program (empty list: legal)."""
    org, tm, pu = cfg.org, cfg.timing, cfg.pu
    BGS, RPP = org.bank_groups, org.sids
    issue = np.asarray(issue, dtype=np.int64)
    n = len(prog)
    if len(issue) != n:
        raise ValueError(f"{n} commands but {len(issue)} issue cycles")
    ops = [Op(int(o)) for o in prog["op"]]
    ex = _expand(prog, cfg)
    out: list[Violation] = []

    def need(i: int, j: int, dist: int, name: str) -> None:
        if issue[i] < issue[j] + dist:
            out.append(Violation(i, name, int(issue[i]), int(issue[j] + dist), j))

    # ordering and the row bus
    last_row = -1
    for i in range(n):
        if i and issue[i] <= issue[i - 1]:
            out.append(Violation(i, "in-order single issue", int(issue[i]),
                                 int(issue[i - 1] + 1), i - 1))
        if ops[i] in (Op.ACTAB, Op.ACTBG, Op.ACTPB, Op.PREA, Op.PREBG, Op.PREPB, Op.REF):
            if last_row >= 0:
                need(i, last_row, tm.row_cmd_cycles, "row command bus occupancy")
            last_row = i

    # per-bank constraints: walk the commands, remember the latest event of each kind per bank
    NB = org.banks_per_channel
    last = {k: np.full(NB, -1, dtype=np.int64) for k in ("act", "pre", "col", "wr", "ref")}
    open_ = np.zeros(NB, dtype=bool)
    ACT = (Op.ACTAB, Op.ACTBG, Op.ACTPB)
    PRE = (Op.PREA, Op.PREBG, Op.PREPB)
    tWRP = tm.tCWL + tm.tBL + tm.tWR

    def worst(i: int, kind: str, banks: np.ndarray, dist: int, name: str) -> None:
        js = last[kind][banks]
        js = js[js >= 0]
        if len(js):
            j = int(js[np.argmax(issue[js])])
            need(i, j, dist, name)

    for i in range(n):
        op, bk = ops[i], ex["banks"][i]
        if op in ACT:
            if open_[bk].any():
                out.append(Violation(i, "activate of an open bank", int(issue[i]), -1, i))
            worst(i, "act", bk, tm.tRC, "tRC (ACT -> ACT, same bank)")
            worst(i, "pre", bk, tm.tRP, "tRP (PRE -> ACT)")
            worst(i, "ref", bk, tm.tRFC, "tRFC (REF -> ACT)")
            last["act"][bk] = i
            open_[bk] = True
        elif op in PRE:
            worst(i, "act", bk, tm.tRAS, "tRAS (ACT -> PRE)")
            worst(i, "col", bk, tm.tRTP_L, "tRTP_L (MAC/RD -> PRE)")
            worst(i, "wr", bk, tWRP, "tCWL + tBL + tWR (WR -> PRE)")
            last["pre"][bk] = i
            open_[bk] = False
        elif op in (Op.MACAB, Op.MACBG, Op.RD, Op.WR):
            if not open_[bk].all():
                out.append(Violation(i, "column access to a closed bank", int(issue[i]), -1, i))
            worst(i, "act", bk, tm.tRCD, "tRCD (ACT -> MAC/RD/WR)")
            last["wr" if op == Op.WR else "col"][bk] = i
        elif op == Op.REF:
            if open_.any():
                out.append(Violation(i, "refresh with a bank open", int(issue[i]), -1, i))
            worst(i, "pre", bk, tm.tRP, "tRP (PRE -> REF)")
            worst(i, "act", bk, tm.tRC, "tRC (ACT -> REF)")
            worst(i, "ref", bk, tm.tRFC, "tRFC (REF -> REF)")
            last["ref"][bk] = i

    # activation window per rank
    R = org.ranks_per_channel
    acts_rank: list[list[int]] = [[] for _ in range(R)]
    last_act_group = np.full(org.groups_per_channel, -1)
    for i in range(n):
        if ops[i] not in ACT:
            continue
        grp = ex["groups"][i]
        ranks = np.unique(grp // BGS)
        for r in ranks:
            prev = acts_rank[r]
            if prev:
                j = prev[-1]
                same = np.intersect1d(ex["groups"][j], grp).size > 0
                need(i, j, tm.tRRD_L if same else tm.tRRD_S,
                     "tRRD_L (ACT -> ACT, same group)" if same else "tRRD_S (ACT -> ACT, rank)")
            if len(prev) >= 4:
                need(i, prev[-4], tm.tFAW, f"tFAW (five activations in rank {r})")
            prev.append(i)
        last_act_group[grp] = i

    # column spacing
    last_ab = -1
    last_bg = -1
    last_bg_g: dict[int, int] = {}
    last_rw_g: dict[int, int] = {}
    for i in range(n):
        op = ops[i]
        if op in (Op.RD, Op.WR):
            last_rw_g[int(prog["group"][i])] = i
        if op in (Op.MACAB, Op.MACBG):
            for g in ex["groups"][i].tolist():
                if g in last_rw_g:
                    need(i, last_rw_g[g], tm.tCCD_L, "tCCD_L (RD/WR -> MAC, same group)")
        if op == Op.MACAB:
            if last_ab >= 0:
                need(i, last_ab, tm.tCCD_AB, "tCCD_AB (MACAB -> MACAB)")
            if last_bg >= 0:
                need(i, last_bg, tm.tCCD_AB, "tCCD_AB (MACBG -> MACAB)")
            last_ab = i
        elif op == Op.MACBG:
            g = int(prog["group"][i])
            if last_ab >= 0:
                need(i, last_ab, tm.tCCD_AB, "tCCD_AB (MACAB -> MACBG)")
            if last_bg >= 0:
                need(i, last_bg, tm.tCCD_S, "tCCD_S (MACBG -> MACBG)")
            if g in last_bg_g:
                need(i, last_bg_g[g], tm.tCCD_L, "tCCD_L (MACBG -> MACBG, same group)")
            last_bg = i
            last_bg_g[g] = i

    # data path: per pseudo-channel tBL, per rank tCCD_S, per group tCCD_L
    DATA = (Op.RD, Op.WR, Op.WRGB, Op.MVSB, Op.MVGB, Op.SFM, Op.RDSB)
    last_d_grp: dict[int, int] = {}
    last_d_rank: dict[int, int] = {}
    last_d_pc: dict[int, int] = {}
    for i in range(n):
        if ops[i] not in DATA:
            continue
        grp = ex["groups"][i]
        for g in grp.tolist():
            r = g // BGS
            pc = r // RPP
            if g in last_d_grp:
                need(i, last_d_grp[g], tm.tCCD_L, "tCCD_L (data path, same group)")
            if r in last_d_rank:
                need(i, last_d_rank[r], tm.tCCD_S, "tCCD_S (data path, same rank)")
            if pc in last_d_pc:
                need(i, last_d_pc[pc], tm.tBL, "tBL (data bus of a pseudo-channel)")
        for g in grp.tolist():
            r = g // BGS
            last_d_grp[g] = i
            last_d_rank[r] = i
            last_d_pc[r // RPP] = i

    # selection read-back (RDSB, docs/commands.md): the transfer holds the pseudo-channels' data
    # buses; the softmax buffer's read port is busy until the data has left
    last_rdsb = -1
    for i in range(n):
        op = ops[i]
        if last_rdsb >= 0:
            xfer = rdsb_transfer(cfg, int(prog["arg"][last_rdsb]))
            if op in (Op.RD, Op.WR, Op.MVSB, Op.MVGB):
                need(i, last_rdsb, xfer, "RDSB transfer (data bus)")
            if op in (Op.SFM, Op.MVGB, Op.RDSB):
                need(i, last_rdsb, tm.CL + xfer, "RDSB -> softmax buffer read port")
        if op == Op.RDSB:
            last_rdsb = i

    # read/write turnaround
    last_rd: dict[int, int] = {}
    last_wr: dict[int, int] = {}
    for i in range(n):
        if ops[i] not in (Op.RD, Op.WR):
            continue
        g = int(prog["group"][i])
        r = g // BGS
        if ops[i] == Op.RD:
            for key, d, nm in ((("g", g), tm.tCWL + tm.tBL + tm.tWTR_L, "tWTR_L (WR -> RD)"),
                               (("r", r), tm.tCWL + tm.tBL + tm.tWTR_S, "tWTR_S (WR -> RD)")):
                if key in last_wr:
                    need(i, last_wr[key], d, nm)
            last_rd[("g", g)] = last_rd[("r", r)] = i
        else:
            for key in (("g", g), ("r", r)):
                if key in last_rd:
                    need(i, last_rd[key], tm.CL + tm.tBL + 2 - tm.tCWL, "tRTW (RD -> WR)")
            last_wr[("g", g)] = last_wr[("r", r)] = i

    # dependencies
    lat = mac_latency(cfg)
    last_wrgb = -1
    last_mvgb: dict[tuple[int, int], int] = {}
    last_mac: dict[tuple[int, int], int] = {}
    mvsbs: list[int] = []
    last_sfm = -1
    last_score_mv = -1
    last_any_mvgb = -1
    done: list[int] = []
    for i in range(n):
        op, c = ops[i], prog[i]
        if op in (Op.MACAB, Op.MACBG):
            arg = int(c["arg"])
            grp = ex["groups"][i].tolist()
            if arg & MacArg.VALUE:
                s = 1 if arg & MacArg.BUF else 0
                for g in grp:
                    if (g, s) in last_mvgb:
                        need(i, last_mvgb[(g, s)], pu.mv_cycles, "MVGB -> value MAC (mv_cycles)")
                k = 2
            else:
                if last_wrgb >= 0:
                    need(i, last_wrgb, pu.mv_cycles, "WRGB -> score MAC (mv_cycles)")
                k = 1 if arg & MacArg.BUF else 0
            for g in grp:
                last_mac[(g, k)] = i
            done.append(int(issue[i]) + lat)
        elif op == Op.WRGB:
            last_wrgb = i
            done.append(int(issue[i]) + pu.mv_cycles)
        elif op == Op.MVSB:
            fl = int(c["col"])
            k = 2 if fl & MoveFlag.VALUE else (1 if fl & MoveFlag.BUF else 0)
            g = int(c["group"])
            if (g, k) in last_mac:
                need(i, last_mac[(g, k)], lat, "MAC -> MVSB (CL + mac_pipeline)")
            if k != 2:
                if last_score_mv >= 0:
                    need(i, last_score_mv, move_spacing(cfg),
                         "score MVSB -> score MVSB (softmax buffer write port)")
                last_score_mv = i
            mvsbs.append(i)
            done.append(int(issue[i]) + pu.mv_cycles)
        elif op == Op.SFM:
            for j in mvsbs[-1:]:
                need(i, j, pu.mv_cycles, "MVSB -> SFM (mv_cycles)")
            if last_sfm >= 0:
                need(i, last_sfm, sfm_cycles(cfg, int(prog["arg"][last_sfm])), "SFM busy")
            last_sfm = i
            done.append(int(issue[i]) + sfm_cycles(cfg, int(c["arg"])))
        elif op == Op.MVGB:
            if last_sfm >= 0:
                need(i, last_sfm, sfm_cycles(cfg, int(prog["arg"][last_sfm])), "SFM -> MVGB")
            if last_any_mvgb >= 0:
                need(i, last_any_mvgb, move_spacing(cfg), "MVGB -> MVGB (softmax buffer read port)")
            last_any_mvgb = i
            last_mvgb[(int(c["group"]), 1 if int(c["col"]) & MoveFlag.BUF else 0)] = i
            done.append(int(issue[i]) + pu.mv_cycles)
        elif op == Op.RDSB:
            for j in mvsbs[-1:]:
                need(i, j, pu.mv_cycles, "MVSB -> RDSB (mv_cycles)")
            if last_sfm >= 0:
                need(i, last_sfm, sfm_cycles(cfg, int(prog["arg"][last_sfm])), "SFM -> RDSB")
            done.append(int(issue[i]) + tm.CL + rdsb_transfer(cfg, int(c["arg"])))
        elif op == Op.BAR and done and issue[i] < max(done):
            out.append(Violation(i, "BAR before earlier commands completed", int(issue[i]),
                                 max(done), i - 1))
    return out


def check(prog: np.ndarray, issue: np.ndarray, cfg: Config) -> None:
    """Raise :class:`TimingViolation` naming the first violated constraint, if any."""
    v = violations(prog, issue, cfg)
    if v:
        first = min(v, key=lambda x: x.index)
        more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
        raise TimingViolation(first.message(prog) + more)

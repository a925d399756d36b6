"""The hand-written golden schedule loop this project used before the rules table, kept only
as the speed baseline of bench_timing.py: the generated loop (starc.golden.schedgen) must be at
least as fast, measured side by side in the same run. Its issue cycles equal the generated
loop's; its breakdown booked refresh waits as row switches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from starc.config import Config
from starc.golden.timing import ProgramError
from starc.isa import PROGRAM_DTYPE, MacArg, Op

__all__ = ["ProgramError", "Schedule", "schedule", "sfm_cycles", "mac_latency", "rdsb_transfer",
           "CATEGORIES"]

CATEGORIES = ("mac_issue", "row_switch", "refresh", "data_movement", "softmax", "drain")

NEG = -(1 << 40)





def sfm_cycles(cfg: Config, n: int) -> int:
    """Cycles the softmax unit is busy for n valid entries (docs/commands.md)."""
    pu = cfg.pu
    return pu.sfm_latency + pu.sfm_passes * -(-max(int(n), 0) // pu.sfm_lanes)


# ---- selection read-back (RDSB), docs/commands.md; kept apart until the rule table lands ------
def rdsb_transfer(cfg: Config, n: int) -> int:
    """Cycles the channel's data bus carries an RDSB of ``n`` FP32 scores: ``4 n`` bytes in
    32-byte bursts of ``tBL`` cycles, the pseudo-channels' buses side by side. Completion is
    ``CL`` later (as for RD: CL + tBL for one burst)."""
    bursts = -(-4 * max(int(n), 0) // cfg.org.column_bytes)
    return cfg.timing.tBL * -(-bursts // cfg.org.pseudo_channels)


def move_spacing(cfg: Config) -> int:
    """Minimum distance between two score MVSBs, and between two MVGBs, anywhere in the channel.

    The softmax buffer has one write port and one read port of ``pu.sfm_lanes`` entries per cycle
    (starc_hw.softmax); a score move carries up to 32 entries (its 32-bit valid mask) and an MVGB
    pops the same, so each holds its port ``ceil(32 / sfm_lanes)`` cycles (docs/commands.md)."""
    return max(1, -(-32 // cfg.pu.sfm_lanes))


def mac_latency(cfg: Config) -> int:
    """Cycles from a MAC's issue until its result is in the accumulator: CL + PU pipeline."""
    return cfg.timing.CL + cfg.pu.mac_pipeline


@dataclass
class Schedule:
    """Result of :func:`schedule`.

    ``program`` is the executed program including the inserted REF commands, ``issue`` the issue
    cycle of each of its commands, ``inserted`` a boolean mask of the inserted REFs,
    ``total_cycles`` the latest completion, and ``breakdown`` the total split by what each gap
    waited for.
    """

    program: np.ndarray
    issue: np.ndarray
    inserted: np.ndarray
    total_cycles: int
    breakdown: dict[str, int] = field(default_factory=dict)
    refreshes: int = 0
    tck_ns: float = 0.0

    @property
    def total_ns(self) -> float:
        return self.total_cycles * self.tck_ns


def schedule(prog: np.ndarray, cfg: Config, *, refresh: bool = True) -> Schedule:
    """Issue every command of ``prog`` at its earliest legal cycle, in order (see module doc)."""
    if prog.dtype != PROGRAM_DTYPE:
        raise ProgramError(f"program must have dtype starc.isa.PROGRAM_DTYPE, not {prog.dtype}")
    org, tm, pu = cfg.org, cfg.timing, cfg.pu
    G = org.groups_per_channel
    BPG = org.banks_per_group
    NB = G * BPG
    R = org.ranks_per_channel
    BGS = org.bank_groups
    RPP = org.sids  # ranks per pseudo-channel
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

    # ---- state (see module docstring for the three-level scheme) ----
    act_all = act_allmax = NEG
    act_grp = [NEG] * G       # last group-scope ACT
    act_grpmax = [NEG] * G    # last ACT touching any bank of the group
    act_bank = [NEG] * NB
    pre_all = pre_allmax = NEG
    pre_grp = [NEG] * G
    pre_grpmax = [NEG] * G
    pre_bank = [NEG] * NB
    col_all = col_allmax = NEG   # MAC / RD (for tRTP)
    col_grp = [NEG] * G
    col_grpmax = [NEG] * G
    col_bank = [NEG] * NB
    wr_allmax = NEG
    wr_grpmax = [NEG] * G
    wr_bank = [NEG] * NB
    n_open = 0
    grp_open = [0] * G
    bank_open = [False] * NB
    rank_act = [NEG] * R
    faw = [[NEG, NEG, NEG, NEG] for _ in range(R)]  # last four ACT cycles per rank (ring)
    faw_i = [0] * R
    last_row = NEG
    last_ref = NEG
    macab_t = NEG
    macbg_any = NEG
    macbg_grp = [NEG] * G
    # data path
    d_allmax = NEG
    d_all = NEG
    d_pc = [NEG] * org.pseudo_channels
    d_rank = [NEG] * R
    d_grp = [NEG] * G
    rd_grp = [NEG] * G
    rd_rank = [NEG] * R
    wrc_grp = [NEG] * G
    wrc_rank = [NEG] * R
    rw_any = NEG
    # dependencies
    wrgb_done = NEG
    mvgb_done = [[NEG, NEG] for _ in range(G)]
    mvgb_done_all = [NEG, NEG]
    mac_set_all = [NEG, NEG, NEG]
    mac_set_grp = [[NEG, NEG, NEG] for _ in range(G)]
    mvsb_done = NEG
    mvs_t = NEG     # last score MVSB (softmax buffer write port)
    mvg_t = NEG     # last MVGB (softmax buffer read port)
    sfm_end = NEG
    complete = 0
    next_due = tREFI if refresh else 1 << 62

    ops = prog["op"].tolist()
    grps = prog["group"].tolist()
    banks = prog["bank"].tolist()
    cols = prog["col"].tolist()
    args = prog["arg"].tolist()
    n = len(ops)
    out_t: list[int] = []
    out_ref: list[int] = []  # index in the original program before which a REF was inserted
    ref_t: list[int] = []
    cat = dict.fromkeys(CATEGORIES, 0)
    prev = -1
    mac_cycles = 0

    ACTAB, ACTBG, ACTPB = int(Op.ACTAB), int(Op.ACTBG), int(Op.ACTPB)
    PREA, PREBG, PREPB = int(Op.PREA), int(Op.PREBG), int(Op.PREPB)
    MACAB, MACBG, RD, WR = int(Op.MACAB), int(Op.MACBG), int(Op.RD), int(Op.WR)
    WRGB, MVSB, MVGB, SFM = int(Op.WRGB), int(Op.MVSB), int(Op.MVGB), int(Op.SFM)
    REF, BAR = int(Op.REF), int(Op.BAR)
    RDSB = int(Op.RDSB)
    VALUE, BUF = int(MacArg.VALUE), int(MacArg.BUF)

    def _err(i: int, msg: str) -> ProgramError:
        return ProgramError(f"command #{i} ({Op(ops[i]).name}): {msg}")

    for i in range(n):
        op = ops[i]
        t = prev + 1
        if op == MACAB:
            if n_open != NB:
                raise _err(i, "MACAB needs a row open in every bank")
            a = act_allmax + tRCD
            if a > t:
                t = a
            a = macab_t + tCCD_AB
            if a > t:
                t = a
            a = macbg_any + tCCD_AB
            if a > t:
                t = a
            a = rw_any + tCCD_L  # RD/WR -> MAC (column spacing, every group touched)
            if a > t:
                t = a
            arg = args[i]
            if arg & VALUE:
                s = 1 if arg & BUF else 0
                a = mvgb_done_all[s]
                k = 2
            else:
                a = wrgb_done
                k = 1 if arg & BUF else 0
            if a > t:
                t = a
            macab_t = col_all = col_allmax = t
            mac_set_all[k] = t
            c = t + MACLAT
            mac_cycles += t - prev
        elif op == MACBG:
            g = grps[i]
            if g >= G:
                raise _err(i, f"group {g} out of range (0..{G - 1})")
            if grp_open[g] != BPG:
                raise _err(i, f"MACBG needs a row open in every bank of group {g}")
            a = max(act_all, act_grpmax[g]) + tRCD
            if a > t:
                t = a
            a = macab_t + tCCD_AB
            if a > t:
                t = a
            a = macbg_any + tCCD_S
            if a > t:
                t = a
            a = macbg_grp[g] + tCCD_L
            if a > t:
                t = a
            a = max(rd_grp[g], wrc_grp[g]) + tCCD_L  # RD/WR -> MAC, same group
            if a > t:
                t = a
            arg = args[i]
            if arg & VALUE:
                s = 1 if arg & BUF else 0
                a = mvgb_done[g][s]
                k = 2
            else:
                a = wrgb_done
                k = 1 if arg & BUF else 0
            if a > t:
                t = a
            macbg_any = macbg_grp[g] = t
            col_grp[g] = col_grpmax[g] = col_allmax = t
            mac_set_grp[g][k] = t
            c = t + MACLAT
            cat["mac_issue"] += t - prev if prev >= 0 else t
        elif op in (ACTAB, ACTBG, ACTPB):
            if op == ACTAB:
                if n_open:
                    raise _err(i, "ACTAB needs every bank closed")
                base = max(pre_allmax + tRP, act_allmax + tRC, max(rank_act) + tRRD_L)
                rks = range(R)
            elif op == ACTBG:
                g = grps[i]
                if g >= G:
                    raise _err(i, f"group {g} out of range (0..{G - 1})")
                if grp_open[g]:
                    raise _err(i, f"ACTBG needs every bank of group {g} closed")
                r = g // BGS
                base = max(max(pre_all, pre_grpmax[g]) + tRP,
                           max(act_all, act_grpmax[g]) + tRC,
                           max(act_all, act_grpmax[g]) + tRRD_L, rank_act[r] + tRRD_S)
                rks = (r,)
            else:
                g, b = grps[i], banks[i]
                if g >= G or b >= BPG:
                    raise _err(i, f"group {g} / bank {b} out of range")
                bi = g * BPG + b
                if bank_open[bi]:
                    raise _err(i, f"ACTPB needs bank {b} of group {g} closed")
                r = g // BGS
                base = max(max(pre_all, pre_grp[g], pre_bank[bi]) + tRP,
                           max(act_all, act_grp[g], act_bank[bi]) + tRC,
                           max(act_all, act_grpmax[g]) + tRRD_L, rank_act[r] + tRRD_S)
                rks = (r,)
            for r in rks:
                a = faw[r][faw_i[r]] + tFAW
                if a > base:
                    base = a
            a = last_row + ROWC
            if a > base:
                base = a
            a = last_ref + tRFC  # REF -> ACT (inserted or explicit)
            if a > base:
                base = a
            if base > t:
                t = base
            # refresh insertion
            while t >= next_due and n_open == 0:
                tr = max(prev + 1, last_row + ROWC, pre_allmax + tRP, act_allmax + tRC,
                         last_ref + tRFC)
                last_ref = tr
                ref_t.append(tr)
                out_ref.append(i)
                cat["refresh"] += tr - prev if prev >= 0 else tr
                prev = tr
                last_row = tr
                if tr + tRFC > complete:
                    complete = tr + tRFC
                next_due += tREFI
                # REF -> ACT tRFC, and the row bus
                t = max(t, tr + tRFC, tr + ROWC)
                refresh_bound = True
            else:
                refresh_bound = False
            # record
            if op == ACTAB:
                act_all = act_allmax = t
                n_open = NB
                grp_open = [BPG] * G
                bank_open = [True] * NB
            elif op == ACTBG:
                act_grp[g] = act_grpmax[g] = act_allmax = t
                n_open += BPG
                grp_open[g] = BPG
                bank_open[g * BPG:(g + 1) * BPG] = [True] * BPG
            else:
                act_bank[bi] = t
                act_grpmax[g] = act_allmax = t
                n_open += 1
                grp_open[g] += 1
                bank_open[bi] = True
            for r in rks:
                rank_act[r] = t
                faw[r][faw_i[r]] = t
                faw_i[r] = (faw_i[r] + 1) & 3
            last_row = t
            c = t + ROWC
            key = "refresh" if refresh_bound else "row_switch"
            cat[key] += t - prev if prev >= 0 else t
        elif op in (PREA, PREBG, PREPB):
            if op == PREA:
                base = max(act_allmax + tRAS, col_allmax + tRTP, wr_allmax + tWRP)
            elif op == PREBG:
                g = grps[i]
                if g >= G:
                    raise _err(i, f"group {g} out of range (0..{G - 1})")
                base = max(max(act_all, act_grpmax[g]) + tRAS,
                           max(col_all, col_grpmax[g]) + tRTP, wr_grpmax[g] + tWRP)
            else:
                g, b = grps[i], banks[i]
                if g >= G or b >= BPG:
                    raise _err(i, f"group {g} / bank {b} out of range")
                bi = g * BPG + b
                base = max(max(act_all, act_grp[g], act_bank[bi]) + tRAS,
                           max(col_all, col_grp[g], col_bank[bi]) + tRTP, wr_bank[bi] + tWRP)
            a = last_row + ROWC
            if a > base:
                base = a
            if base > t:
                t = base
            if op == PREA:
                pre_all = pre_allmax = t
                n_open = 0
                grp_open = [0] * G
                bank_open = [False] * NB
            elif op == PREBG:
                pre_grp[g] = pre_grpmax[g] = pre_allmax = t
                n_open -= grp_open[g]
                grp_open[g] = 0
                bank_open[g * BPG:(g + 1) * BPG] = [False] * BPG
            else:
                pre_bank[bi] = t
                pre_grpmax[g] = pre_allmax = t
                if bank_open[bi]:
                    bank_open[bi] = False
                    n_open -= 1
                    grp_open[g] -= 1
            last_row = t
            c = t + ROWC
            cat["row_switch"] += t - prev if prev >= 0 else t
        elif op in (MVSB, MVGB, RD, WR):
            g = grps[i]
            if g >= G:
                raise _err(i, f"group {g} out of range (0..{G - 1})")
            r = g // BGS
            pc = r // RPP
            base = max(d_all + tCCD_L, d_pc[pc] + tBL, d_rank[r] + tCCD_S, d_grp[g] + tCCD_L)
            key = "data_movement"
            if op == MVSB:
                fl = cols[i]
                k = 2 if fl & 2 else (fl & 1)
                a = max(mac_set_all[k], mac_set_grp[g][k]) + MACLAT
                if k != 2 and mvs_t + MOVE > a:
                    a = mvs_t + MOVE
                if a > base:
                    base = a
            elif op == MVGB:
                if mvg_t + MOVE > base:
                    base = mvg_t + MOVE
                if sfm_end > base:
                    base = sfm_end
                    key = "softmax"
            else:
                b = banks[i]
                if b >= BPG:
                    raise _err(i, f"bank {b} out of range (0..{BPG - 1})")
                bi = g * BPG + b
                if not bank_open[bi]:
                    raise _err(i, f"bank {b} of group {g} has no open row")
                a = max(act_all, act_grp[g], act_bank[bi]) + tRCD
                if a > base:
                    base = a
                if op == RD:
                    a = max(wrc_grp[g] + tWTR_L, wrc_rank[r] + tWTR_S, macab_t + tCCD_AB,
                            macbg_grp[g] + tCCD_L)
                else:
                    a = max(rd_grp[g] + tRTW, rd_rank[r] + tRTW, macab_t + tCCD_AB,
                            macbg_grp[g] + tCCD_L)
                if a > base:
                    base = a
            if base > t:
                t = base
            d_allmax = d_pc[pc] = d_rank[r] = d_grp[g] = t
            c = t + MV
            if op == MVSB:
                mvsb_done = c
                if not cols[i] & 2:
                    mvs_t = t
            elif op == MVGB:
                mvg_t = t
                s = cols[i] & 1
                mvgb_done[g][s] = c
                if c > mvgb_done_all[s]:
                    mvgb_done_all[s] = c
            elif op == RD:
                rd_grp[g] = rd_rank[r] = rw_any = t
                col_bank[bi] = t
                col_grpmax[g] = col_allmax = t
                c = t + tm.CL + tBL
            else:
                wrc_grp[g] = wrc_rank[r] = rw_any = t
                wr_bank[bi] = wr_grpmax[g] = wr_allmax = t
                c = t + tm.tCWL + tBL
            cat[key] += t - prev if prev >= 0 else t
        elif op in (WRGB, SFM):
            base = d_allmax + tCCD_L
            key = "data_movement"
            if op == SFM:
                a = mvsb_done
                if sfm_end > a:
                    a = sfm_end
                if a > base:
                    base = a
                key = "softmax"
            if base > t:
                t = base
            d_all = d_allmax = t
            d_pc = [t] * len(d_pc)
            d_rank = [t] * R
            d_grp = [t] * G
            if op == WRGB:
                c = t + MV
                wrgb_done = c
            else:
                c = t + sfm_cycles(cfg, args[i])
                sfm_end = c
            cat[key] += t - prev if prev >= 0 else t
        elif op == RDSB:
            # selection read-back (docs/commands.md): after every earlier score move and the
            # softmax unit; holds the data bus for the transfer and the buffer's read port until
            # the data has left (completion)
            base = max(d_allmax + tCCD_L, mvsb_done, sfm_end)
            if base > t:
                t = base
            xfer = rdsb_transfer(cfg, args[i])
            d_all = d_allmax = t
            d_pc = [t + xfer - tBL] * len(d_pc)
            d_rank = [t] * R
            d_grp = [t] * G
            c = t + tm.CL + xfer
            sfm_end = c
            cat["data_movement"] += t - prev if prev >= 0 else t
        elif op == BAR:
            if complete > t:
                t = complete
            c = t + 1
            cat["drain"] += t - prev if prev >= 0 else t
        elif op == REF:
            if n_open:
                raise _err(i, "REF needs every bank closed")
            t = max(t, last_row + ROWC, pre_allmax + tRP, act_allmax + tRC, last_ref + tRFC)
            last_row = last_ref = t
            c = t + tRFC
            # an explicit REF counts as the due refresh if one is due soon
            next_due = max(next_due, (t // tREFI + 1) * tREFI)
            cat["refresh"] += t - prev if prev >= 0 else t
        else:
            raise _err(i, "not a valid command in a program") if op in Op._value2member_map_ \
                else ProgramError(f"command #{i}: unknown opcode {op}")
        if c > complete:
            complete = c
        out_t.append(t)
        prev = t

    cat["mac_issue"] += mac_cycles
    cat["drain"] += complete - (prev if prev >= 0 else 0)
    # merge inserted REFs into the program
    if out_ref:
        ref_cmd = np.zeros(1, dtype=PROGRAM_DTYPE)
        ref_cmd["op"] = REF
        full = np.insert(prog, out_ref, np.repeat(ref_cmd, len(out_ref)))
        issue = np.insert(np.asarray(out_t, dtype=np.int64), out_ref, ref_t)
        inserted = np.zeros(len(full), dtype=bool)
        inserted[np.asarray(out_ref) + np.arange(len(out_ref))] = True
    else:
        full = prog.copy()
        issue = np.asarray(out_t, dtype=np.int64)
        inserted = np.zeros(len(full), dtype=bool)
    return Schedule(program=full, issue=issue, inserted=inserted, total_cycles=int(complete),
                    breakdown=cat, refreshes=len(out_ref), tck_ns=tm.tCK_ns)

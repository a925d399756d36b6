"""Test programs for the RTL tiers: small configurations and a seeded random legal program.

The random programs mix what dense streaming never exercises: per-group activation rounds
(ACTBG, MACBG bursts over several groups, PREBG), all-bank rows, per-bank RD/WR, data movement
(WRGB, MVSB, MVGB), softmax, barriers and, optionally, explicit refreshes. Every program is legal
for :func:`starc.golden.timing.schedule` (it never raises ``ProgramError``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from starc import config
from starc.config import Config
from starc.isa import PROGRAM_DTYPE, MacArg, MoveFlag, Op

__all__ = ["SHORT_REFRESH", "SMALL", "TINY", "directed_programs", "load_config",
           "random_program"]

#: Two groups of two banks in one rank: the smallest organisation with every scope distinct.
TINY: dict[str, Any] = {
    "organisation.pseudo_channels": 1, "organisation.sids": 1,
    "organisation.bank_groups": 2, "organisation.banks_per_group": 2,
    "organisation.rows_per_bank": 64,
}
#: 2 pseudo-channels x 2 SIDs x 2 bank groups x 2 banks: every rank/pc/group path, 16 banks.
SMALL: dict[str, Any] = {
    "organisation.pseudo_channels": 2, "organisation.sids": 2,
    "organisation.bank_groups": 2, "organisation.banks_per_group": 2,
    "organisation.rows_per_bank": 64,
}
#: A short refresh interval (and a matching tRFC) so that short programs cross several tREFI.
SHORT_REFRESH: dict[str, Any] = {"timing.tREFI": 700, "timing.tRFC_ns": 50.0}


def load_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """``starc.config.load`` with dict overrides (also what the cocotb side rebuilds from env)."""
    return config.load(preset, overrides=dict(overrides or {}))


def random_program(cfg: Config, length: int, seed: int, *, explicit_ref: bool = False,
                   rows: int | None = None) -> np.ndarray:
    """A random legal program of about ``length`` commands (seeded; same seed, same program)."""
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError(f"Program length must be a positive integer, not {length!r}")
    rng = random.Random(seed)
    org = cfg.org
    G, BPG, C = org.groups_per_channel, org.banks_per_group, org.columns_per_row
    n_rows = min(rows or org.rows_per_bank, org.rows_per_bank)
    is_open = [False] * (G * BPG)
    out: list[tuple[int, int, int, int, int, int]] = []

    def add(op: Op, group: int = 0, bank: int = 0, col: int = 0, row: int = 0,
            arg: int = 0) -> None:
        out.append((int(op), group, bank, col, row, arg))

    def grp_open(g: int) -> list[bool]:
        return is_open[g * BPG:(g + 1) * BPG]

    def close_group(g: int) -> None:
        if any(grp_open(g)):
            if all(grp_open(g)) or rng.random() < 0.5:
                add(Op.PREBG, g)
                is_open[g * BPG:(g + 1) * BPG] = [False] * BPG
            else:
                for b in range(BPG):
                    if is_open[g * BPG + b]:
                        add(Op.PREPB, g, b)
                        is_open[g * BPG + b] = False

    def close_all() -> None:
        if any(is_open):
            add(Op.PREA)
            is_open[:] = [False] * len(is_open)

    def mac_arg() -> int:
        a = 0
        if rng.random() < 0.5:
            a |= int(MacArg.VALUE)
        if rng.random() < 0.5:
            a |= int(MacArg.BUF)
        return a

    def moves() -> None:
        for _ in range(rng.randint(0, 2)):
            x = rng.random()
            if x < 0.5:
                # any MoveFlag combination: the timing rule reads VALUE and BUF
                add(Op.MVSB, rng.randrange(G), col=rng.randrange(2 * MoveFlag.HALF),
                    arg=rng.getrandbits(32))
            elif x < 0.8:
                add(Op.MVGB, rng.randrange(G), col=rng.choice((0, MoveFlag.BUF)))
            else:
                add(Op.WRGB, col=rng.randrange(8), arg=rng.randrange(64))

    kinds = ["round", "allbank", "perbank", "move", "sfm", "bar", "ref"]
    weights = [4.0, 1.0, 1.5, 2.0, 0.5, 0.3, 0.3 if explicit_ref else 0.0]
    while len(out) < length:
        kind = rng.choices(kinds, weights)[0]
        if kind == "round":
            groups = rng.sample(range(G), rng.randint(1, G))
            for g in groups:
                close_group(g)
                add(Op.ACTBG, g, row=rng.randrange(n_rows))
                is_open[g * BPG:(g + 1) * BPG] = [True] * BPG
            arg = mac_arg()
            for c in rng.sample(range(C), rng.randint(1, min(C, 6))):
                for g in groups:
                    add(Op.MACBG, g, col=c, arg=arg)
                    if rng.random() < 0.15:
                        moves()
            for g in groups:
                if rng.random() < 0.8:
                    close_group(g)
        elif kind == "allbank":
            close_all()
            add(Op.ACTAB, row=rng.randrange(n_rows))
            is_open[:] = [True] * len(is_open)
            arg = mac_arg()
            for c in range(rng.randint(1, min(C, 8))):
                add(Op.MACAB, col=c, arg=arg)
                if rng.random() < 0.3:
                    moves()
            if rng.random() < 0.8:
                close_all()
        elif kind == "perbank":
            g, b = rng.randrange(G), rng.randrange(BPG)
            if not is_open[g * BPG + b]:
                add(Op.ACTPB, g, b, row=rng.randrange(n_rows))
                is_open[g * BPG + b] = True
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.5:
                    add(Op.RD, g, b, col=rng.randrange(C))
                else:
                    add(Op.WR, g, b, col=rng.randrange(C), arg=rng.randrange(64))
            if rng.random() < 0.6:
                add(Op.PREPB, g, b)
                is_open[g * BPG + b] = False
        elif kind == "move":
            moves()
        elif kind == "sfm":
            add(Op.SFM, arg=rng.randint(1, 96))
        elif kind == "bar":
            add(Op.BAR)
        else:
            close_all()
            add(Op.REF)
    return np.array(out, dtype=PROGRAM_DTYPE)


def directed_programs(cfg: Config) -> dict[str, np.ndarray]:
    """Short programs whose last command is decided by a constraint that random programs and
    decode steps (almost) never make bind, keyed by that constraint (``starc_sim.coverage``
    names). Only what ``cfg`` can express is returned: the others are in
    :func:`starc_sim.coverage.unreachable` with the reason.

    ``tRRD_L``: two per-bank activations in one bank group; ``tWTR_S``: a WR, then a RD in the
    other bank group of the same rank; ``tFAW``: five per-bank activations in one rank (ranks of
    at least five banks); ``tRC``: ACT, PRE, ACT of one bank (only when tRC >= tRAS + tRP).

    Three more that planned steps never make bind, because the planner opens a row only after
    the data it waits for has moved: ``WRGB done``: an all-bank activation, then query chunks
    (WRGB), the last one later than tRCD before the score MAC; ``MVGB done``: a group's
    activation, one score MAC, its score into the softmax buffer (MVSB), a softmax (SFM) and the
    probability into the group (MVGB), then a value MAC of that group, which waits for the
    move; ``tREFI``: activations and precharges of one bank for longer than tREFI, so that the
    schedule inserts a refresh (the steps and the random programs end before the first refresh
    is due). The data-movement commands of the first two run on the datapath without a result
    to check: the program testcase checks issues, cycles, faults and bank flags."""
    org, tm = cfg.org, cfg.timing
    BG, BPG = org.bank_groups, org.banks_per_group
    out: dict[str, list[tuple[int, ...]]] = {}
    # (op, group, bank, col, row, arg)
    out["WRGB done"] = [(Op.ACTAB,), *_query_chunks(cfg), (Op.MACAB, 0, 0, 0, 0, 0)]
    # one token's probability into group 0, then a value MAC of the open row
    out["MVGB done"] = [(Op.ACTBG, 0), *_ONE_SCORE, (Op.MVGB, 0, 0, 0),
                        (Op.MACBG, 0, 0, 0, 0, int(MacArg.VALUE))]
    pairs = tm.tREFI // (tm.tRAS + tm.tRP) + 2
    out["tREFI"] = [c for _ in range(pairs) for c in ((Op.ACTPB, 0, 0), (Op.PREPB, 0, 0))]
    if BPG > 1:
        out["tRRD_L"] = [(Op.ACTPB, 0, 0), (Op.ACTPB, 0, 1)]
    if BG > 1:   # groups 0 and 1 are bank groups of rank 0 (starc.address.group_of)
        out["tWTR_S"] = [(Op.ACTBG, 0), (Op.ACTBG, 1), (Op.WR, 0, 0), (Op.RD, 1, 0)]
    rank0 = [(g, b) for g in range(BG) for b in range(BPG)]
    if len(rank0) >= 5:
        out["tFAW"] = [(Op.ACTPB, g, b) for g, b in rank0[:5]]
    if tm.tRC >= tm.tRAS + tm.tRP:
        out["tRC"] = [(Op.ACTPB, 0, 0), (Op.PREPB, 0, 0), (Op.ACTPB, 0, 0)]
    out.update(_pair_programs(cfg))
    progs = {}
    for name, cmds in out.items():
        rows = [(int(c[0]), *(list(c[1:]) + [0] * (5 - len(c[1:])))) for c in cmds]
        progs[name] = np.array([tuple(r) for r in rows], dtype=PROGRAM_DTYPE)
    return progs


#: One token's score through the softmax buffer: a score MAC of group 0, its move (MVSB) and a
#: softmax of that one entry (the RTL's softmax normalises only entries a move brought in).
_ONE_SCORE = [(Op.MACBG, 0, 0, 0), (Op.MVSB, 0, 0, 0, 0, 1), (Op.SFM, 0, 0, 0, 0, 1)]


def _query_chunks(cfg: Config) -> list[tuple[int, ...]]:
    """WRGBs of query slot 0 (data beat k), enough that the last one issues after tRCD."""
    tm = cfg.timing
    return [(Op.WRGB, 0, 0, 0, 0, k) for k in range(1 + (tm.tRCD + 1) // max(1, tm.tCCD_L))]


def pair_name(rule: str, src: str, dst: str) -> str:
    """The name of the directed program of the pair (``rule``, ``src``, ``dst``) of
    :data:`starc_sim.coverage.PAIRS`."""
    return f"{rule} {src}->{dst}"


def _pair_programs(cfg: Config) -> dict[str, list[tuple[int, ...]]]:
    """Programs with a command that binds a (rule, earlier event, command) pair that the planned
    steps and the random programs never bind: mixes of all-bank and per-group MACs, of MACs and
    per-bank RD/WR, a data command right after a WRGB, a value MAC of every group after one
    group's move, two softmaxes and two refreshes back to back (docs/rtl.md, "Full
    coverage")."""
    value = int(MacArg.VALUE)
    one_score = _ONE_SCORE
    return {
        pair_name("tCCD_AB", "MACBG", "MACAB"): [(Op.ACTAB,), (Op.MACBG, 0, 0, 0),
                                                 (Op.MACAB, 0, 0, 1)],
        pair_name("tCCD_AB", "MACAB", "MACBG"): [(Op.ACTAB,), (Op.MACAB, 0, 0, 0),
                                                 (Op.MACBG, 0, 0, 1)],
        pair_name("tCCD_L", "RD/WR", "MACAB"): [(Op.ACTAB,), (Op.RD, 0, 0, 0),
                                                (Op.MACAB, 0, 0, 1)],
        pair_name("tCCD_L", "RD/WR", "MACBG"): [(Op.ACTBG, 0), (Op.RD, 0, 0, 0),
                                                (Op.MACBG, 0, 0, 1)],
        pair_name("tCCD_L", "MACBG", "RD"): [(Op.ACTBG, 0), (Op.MACBG, 0, 0, 0),
                                             (Op.RD, 0, 0, 1)],
        pair_name("tCCD_L", "MACBG", "WR"): [(Op.ACTBG, 0), (Op.MACBG, 0, 0, 0),
                                             (Op.WR, 0, 0, 1, 0, 0)],
        pair_name("tCCD_L", "WRGB/SFM", "data"): [(Op.ACTBG, 0), (Op.MACBG, 0, 0, 0),
                                                  (Op.WRGB, 0, 0, 0, 0, 0), (Op.RD, 0, 0, 1)],
        pair_name("WRGB done", "WRGB", "MACBG"): [
            (Op.ACTBG, 0), *_query_chunks(cfg), (Op.MACBG, 0, 0, 0)],
        pair_name("MVGB done", "MVGB", "MACAB"): [(Op.ACTAB,), *one_score, (Op.MVGB, 0, 0, 0),
                                                  (Op.MACAB, 0, 0, 0, 0, value)],
        # the second softmax needs an entry of its own (a softmax consumes what it normalised),
        # and the datapath is idle only once its probabilities have moved (MVGB)
        pair_name("SFM done", "SFM", "SFM"): [(Op.ACTBG, 0), *one_score,
                                              (Op.MVSB, 0, 0, 0, 0, 1), (Op.SFM, 0, 0, 0, 0, 1),
                                              (Op.MVGB, 0, 0, 0)],
        pair_name("tRFC", "REF", "REF"): [(Op.REF,), (Op.REF,)],
    }

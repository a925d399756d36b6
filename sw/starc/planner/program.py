"""From selected token addresses to a PIM command program (docs/commands.md, exactly).

Rows to open: every (group, key row) holding at least one selected token, with a valid-slot mask
(bit ``16 set + slot``). They are grouped into *activation rounds*, at most one row per group:

1. rows that every group needs at the same row index: one round each, opened with one ACTAB;
2. the remaining rows: round ``i`` takes the ``i``-th remaining row (ascending) of every group,
   opened with one ACTBG per group.
3. optionally (``fill``): a round with enough open groups that one MACAB stream beats per-group
   MACBGs also opens every idle group on a dummy row (valid mask 0, so its entries get
   probability 0): more activations, fewer cycles. Off by default.

Program (one query head, one KV head, one channel), mirroring
:func:`starc.golden.programs.dense_program` so a fully dense selection gives the same program:

- WRGB of the ``d / 16`` query chunks (``wdata`` rows 0 ..);
- score phase, round ``i`` (register set ``i % 2``): ACTAB or ACTBGs; 32 column MACs, as MACAB when
  every group is open, else MACBG per open group (column-major, groups interleaved); the score
  MVSBs (with masks) of round ``i - 1`` interleave one after each MAC; PREA;
- the last round's score MVSBs, SFM over the valid entries, the MVGBs of round 0;
- value phase, round ``i``: activate the value rows; MACs with ``VALUE`` and probability slot
  ``i % 2``; the MVGBs of round ``i + 1`` interleave; PREA;
- value MVSBs (both halves) of every group that took part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starc.address import SLICE, Geometry
from starc.compiler.compiled import Located
from starc.config import Config
from starc.isa import PROGRAM_DTYPE, MacArg, Op

__all__ = ["Round", "RowPlan", "emit_program", "fill_threshold", "plan_rows", "query_words"]


@dataclass
class Round:
    groups: np.ndarray     # int64 [m] ascending
    rows: np.ndarray       # int64 [m] relative key rows
    masks: np.ndarray      # uint64 [m]
    actab: bool


@dataclass
class RowPlan:
    rounds: list[Round]
    n_valid: int           # selected tokens
    n_blocks: int          # group rows activated (per phase), dummies included
    n_slices: int          # 16-token slices holding a selected token
    n_dummy: int = 0       # group rows opened only to allow a MACAB (``fill``)

    @property
    def n_actab(self) -> int:
        return sum(1 for r in self.rounds if r.actab)

    @property
    def n_actbg(self) -> int:
        return sum(len(r.groups) for r in self.rounds if not r.actab)

    def groups_touched(self) -> np.ndarray:
        if not self.rounds:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([r.groups for r in self.rounds]))


def fill_threshold(cfg: Config) -> int:
    """Fewest open groups for which one all-bank MAC stream (``tCCD_AB`` per column) beats the
    per-group MACBGs (``n x tCCD_S`` per column): ``floor(tCCD_AB / tCCD_S) + 1``."""
    t = cfg.timing
    return t.tCCD_AB // t.tCCD_S + 1


def plan_rows(loc: Located, G: int, *, fill_from: int = 0) -> RowPlan:
    """Activation rounds for the tokens at ``loc`` (see the module docstring). With
    ``fill_from > 0`` a round with at least that many (but not all) groups also opens every idle
    group (mask 0, on the round's first row) so the round can MAC with MACAB."""
    n = loc.group.size
    if n == 0:
        return RowPlan([], 0, 0, 0)
    key = loc.group * (1 << 32) + loc.row
    items, inv = np.unique(key, return_inverse=True)
    masks = np.zeros(items.size, np.uint64)
    np.bitwise_or.at(masks, inv, np.left_shift(np.uint64(1), loc.lane_bit.astype(np.uint64)))
    n_slices = np.unique(key * 8 + loc.set).size
    ig, ir = items >> 32, items & 0xFFFFFFFF
    # rows needed by every group -> ACTAB rounds
    urows, rcount = np.unique(ir, return_counts=True)
    common = urows[rcount == G]
    rounds: list[Round] = []
    is_common = np.isin(ir, common)
    for r in common:
        sel = np.flatnonzero(ir == r)                                 # sorted by group
        rounds.append(Round(ig[sel], ir[sel], masks[sel], True))
    rest = np.flatnonzero(~is_common)                                 # sorted by (group, row)
    if rest.size:
        g = ig[rest]
        first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        rank = np.arange(rest.size) - np.repeat(first, np.diff(np.r_[first, rest.size]))
        order = np.lexsort((g, rank))
        rest, rank = rest[order], rank[order]
        bounds = np.flatnonzero(np.r_[True, rank[1:] != rank[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            sel = rest[a:b]
            rounds.append(Round(ig[sel], ir[sel], masks[sel], False))
    n_dummy = 0
    if fill_from > 0:
        for i, rd in enumerate(rounds):
            if rd.actab or not fill_from <= len(rd.groups) < G:
                continue
            idle = np.setdiff1d(np.arange(G), rd.groups)
            g = np.concatenate([rd.groups, idle])
            order = np.argsort(g, kind="stable")
            rows = np.concatenate([rd.rows, np.full(idle.size, rd.rows[0])])[order]
            m = np.concatenate([rd.masks, np.zeros(idle.size, np.uint64)])[order]
            rounds[i] = Round(g[order], rows, m, bool((rows == rows[0]).all()))
            n_dummy += idle.size
    return RowPlan(rounds, n, items.size + n_dummy, n_slices, n_dummy)


def query_words(q16: np.ndarray, head_dim: int, lanes: int) -> np.ndarray:
    """``wdata`` rows of the query: ``fp16(q / sqrt(d))`` as ``[d / lanes, lanes]`` uint16."""
    qs = (np.asarray(q16, np.float16).astype(np.float32)
          * np.float32(1.0 / np.sqrt(head_dim))).astype(np.float16)
    return qs.view(np.uint16).reshape(head_dim // lanes, lanes)


def _columns(masks: np.ndarray, sets: int) -> list[int]:
    """Columns holding a valid slot in any token set of any of ``masks`` (slot s: 2s, 2s + 1)."""
    m = 0
    for x in masks.tolist():
        m |= int(x)
    per_slot = 0
    for j in range(sets):
        per_slot |= (m >> (SLICE * j)) & 0xFFFF
    return [c for s in range(SLICE) if per_slot >> s & 1 for c in (2 * s, 2 * s + 1)]


#: Token slots one score move's valid mask covers (a 32-bit field of the command word).
MOVE_MASK_SLOTS = 32


def check_geometry(geo: Geometry) -> None:
    """Raise ValueError if the planner cannot emit programs for this layout (the compiler calls
    it so such a cache is refused at compile time, not at evaluation)."""
    if geo.tpgr > MOVE_MASK_SLOTS:
        raise ValueError(f"head_dim {geo.d} puts {geo.tpgr} tokens in a group row, but a score "
                         f"move's valid mask covers {MOVE_MASK_SLOTS} slots; the planner needs "
                         f"head_dim >= {geo.d * geo.tpgr // MOVE_MASK_SLOTS} on this preset")


def emit_program(plan: RowPlan, geo: Geometry, *, krow_base: int, vrow_base: int,
                 banks_per_pu: int = 1, skip_empty_columns: bool = True) -> np.ndarray:
    """The command program of ``plan`` (see the module docstring). Key row ``r`` of the plan is
    absolute row ``krow_base + r``, its value row ``vrow_base + r``. ``wdata`` rows 0 .. d/16 - 1
    are the query chunks (:func:`query_words`).

    With ``skip_empty_columns`` a column pair (2s, 2s + 1) is MAC'd only if slot s holds a selected
    token in some token set of the open row(s) the MAC covers: the skipped entries are masked out
    of the softmax (probability 0), so the result is the same and partly used rows cost fewer
    column reads (the AttAcc-style per-byte energy then differs from the per-activation one)."""
    check_geometry(geo)
    G, C = geo.G, geo.cols
    cmds: list[tuple[int, int, int, int, int, int]] = []
    add = cmds.append
    ACTAB, ACTBG, PREA = int(Op.ACTAB), int(Op.ACTBG), int(Op.PREA)
    MACAB, MACBG, MVSB, MVGB = int(Op.MACAB), int(Op.MACBG), int(Op.MVSB), int(Op.MVGB)
    VALUE, BUF = int(MacArg.VALUE), int(MacArg.BUF)
    for c in range(geo.d // geo.lanes):
        add((int(Op.WRGB), 0, 0, c, 0, c))

    all_cols = list(range(C))

    def macs(rd: Round, arg: int, pending: list[tuple[int, int, int, int, int, int]]) -> None:
        if rd.actab or len(rd.groups) == G:
            for c in (_columns(rd.masks, geo.sets) if skip_empty_columns else all_cols):
                for _ in range(banks_per_pu):
                    add((MACAB, 0, 0, c, 0, arg))
                if pending:
                    add(pending.pop(0))
        else:
            gl = rd.groups.tolist()
            cols = [set(_columns(rd.masks[i:i + 1], geo.sets)) if skip_empty_columns
                    else set(all_cols) for i in range(len(gl))]
            for c in all_cols:
                for g, cs in zip(gl, cols, strict=True):
                    if c not in cs:
                        continue
                    for _ in range(banks_per_pu):
                        add((MACBG, g, 0, c, 0, arg))
                    if pending:
                        add(pending.pop(0))

    def activate(rd: Round, base: int) -> None:
        if rd.actab:
            add((ACTAB, 0, 0, 0, base + int(rd.rows[0]), 0))
        else:
            for g, r in zip(rd.groups.tolist(), rd.rows.tolist(), strict=True):
                add((ACTBG, g, 0, 0, base + r, 0))

    pending: list[tuple[int, int, int, int, int, int]] = []
    for i, rd in enumerate(plan.rounds):
        activate(rd, krow_base)
        macs(rd, BUF if i & 1 else 0, pending)
        add((PREA, 0, 0, 0, 0, 0))
        pending.extend((MVSB, g, 0, i & 1, 0, int(m))
                       for g, m in zip(rd.groups.tolist(), rd.masks.tolist(), strict=True))
    cmds.extend(pending)
    if not plan.rounds:
        return np.array(cmds, dtype=PROGRAM_DTYPE)
    add((int(Op.SFM), 0, 0, 0, 0, plan.n_valid))
    cmds.extend((MVGB, g, 0, 0, 0, 0) for g in plan.rounds[0].groups.tolist())
    for i, rd in enumerate(plan.rounds):
        activate(rd, vrow_base)
        pending = []
        if i + 1 < len(plan.rounds):
            pending = [(MVGB, g, 0, (i + 1) & 1, 0, 0)
                       for g in plan.rounds[i + 1].groups.tolist()]
        macs(rd, VALUE | (BUF if i & 1 else 0), pending)
        cmds.extend(pending)
        add((PREA, 0, 0, 0, 0, 0))
    for g in plan.groups_touched().tolist():
        for h in range(2):
            add((MVSB, g, 0, 2 | (h << 2), 0, 0))
    return np.array(cmds, dtype=PROGRAM_DTYPE)

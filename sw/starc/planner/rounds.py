"""Activation rounds: which rows open together, and how each round MACs.

A *round* opens at most one row per group and MACs the selected columns of those rows (score
phase on the key rows, value phase on the value rows at the same row indices). Three steps:

1. **Formation** (:func:`form_rounds`): rows every group needs at the same row index become one
   round each, opened with one ACTAB; the remaining rows go round by round, round ``i`` taking the
   ``i``-th remaining row (ascending) of every group, opened with one ACTBG per group. The
   alternative formation :func:`row_index_rounds` opens every touched row index in all groups
   (ACTAB rounds: masked dense attention over the touched row indices).
2. **Per-round MAC choice** (:func:`choose_macs`): a round open in only some groups either MACs
   per group (MACBG, ``n x tCCD_S`` per column, only the columns each group needs) or opens every
   idle group on a dummy row (mask 0) and MACs all banks at once (MACAB, ``tCCD_AB`` per column,
   the union of the columns): the planner takes, per round, whichever costs fewer cycles
   (:class:`RoundCost`, objective ``cycles``) or less energy (objective ``energy``: per-group MACs
   always open fewer rows and read fewer columns, so it never fills).
3. **Plan-level guard** (:func:`plan_rows`, objective ``cycles``): the chosen rounds are compared
   with the plan for every token of the head (:func:`whole_rounds`, what attending everything on
   this layout costs: the per-round choice or the masked dense attention over every row index,
   whichever is faster) cut to the selection (:func:`restrict`: fewer rounds, fewer columns, fewer
   groups); when their estimates are within :data:`GUARD_MARGIN` the golden timing model decides.
   A cut plan never costs more than the whole one, so a selection never costs more cycles than
   dense attention on the same layout (tests/sw/test_rounds.py checks it against the golden
   model).

All cycle figures are DRAM clock cycles (tCK) of the preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from starc.address import SLICE, Geometry
from starc.config import Config

__all__ = [
    "GUARD_MARGIN",
    "OBJECTIVES",
    "Round",
    "RoundCost",
    "RowPlan",
    "choose_macs",
    "column_mask",
    "form_rounds",
    "row_index_rounds",
    "add_objective_arg",
    "setting",
]

#: what the per-round MAC choice minimises; the first is the default everywhere
OBJECTIVES = ("cycles", "energy")
#: relative gap between the two formations' estimates below which the golden model decides
GUARD_MARGIN = 0.25


def setting(objective: str) -> str:
    """The planner setting as every title and report prints it."""
    if objective == "cycles":
        return "planner: per-round MACs by fewest cycles"
    if objective == "energy":
        return "planner: per-group MACs (fewest activations, least energy)"
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")


def add_objective_arg(p: object) -> None:
    """``--objective`` of every command that plans (eval, sweep, demo): one default."""
    p.add_argument(  # type: ignore[attr-defined]
        "--objective", choices=OBJECTIVES, default=OBJECTIVES[0],
        help="planner: per activation round, MAC per group or fill the idle groups with dummy "
             "rows and MAC all banks, whichever costs fewer cycles (cycles, the default "
             "everywhere) or less energy (energy: never fills)")


@dataclass
class Round:
    groups: np.ndarray     # int64 [m] ascending
    rows: np.ndarray       # int64 [m] relative key rows
    masks: np.ndarray      # uint64 [m] valid slots (bit 16 set + slot); 0 = dummy row
    actab: bool            # all groups at one row index: one ACTAB

    @property
    def filled(self) -> bool:
        """Open in every group (MACAB) although some groups hold no selected token."""
        return bool((self.masks == 0).any())


@dataclass
class RowPlan:
    rounds: list[Round]
    n_valid: int           # selected tokens
    n_blocks: int          # group rows activated (per phase), dummies included
    n_slices: int          # 16-token slices holding a selected token
    n_dummy: int = 0       # group rows opened only to allow a MACAB
    formation: str = "rounds"   # rounds | row-index (the plan-level guard's choice)

    @property
    def n_actab(self) -> int:
        return sum(1 for r in self.rounds if r.actab)

    @property
    def n_actbg(self) -> int:
        return sum(len(r.groups) for r in self.rounds if not r.actab)

    @property
    def n_filled(self) -> int:
        return sum(1 for r in self.rounds if r.filled)

    def groups_touched(self) -> np.ndarray:
        if not self.rounds:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([r.groups for r in self.rounds]))


def column_mask(masks: np.ndarray, sets: int) -> np.ndarray:
    """Per mask, the 16-bit set of slots holding a selected token in any token set (slot ``s``
    is MAC'd as columns ``2s`` and ``2s + 1``)."""
    m = np.asarray(masks, np.uint64)
    out = np.zeros(m.shape, np.uint64)
    for j in range(sets):
        out |= (m >> np.uint64(SLICE * j)) & np.uint64(0xFFFF)
    return out


def _popcount16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.uint64)
    return np.unpackbits(x.astype("<u2").view(np.uint8).reshape(-1, 2), axis=1).sum(1) \
        if x.size else np.zeros(0, np.int64)


# ---- formation -----------------------------------------------------------------------------------
@dataclass
class _Items:
    group: np.ndarray
    row: np.ndarray
    mask: np.ndarray
    n_valid: int
    n_slices: int


def _items(group: np.ndarray, row: np.ndarray, lane_bit: np.ndarray, token_set: np.ndarray
           ) -> _Items:
    """The distinct (group, row) pairs holding a token, with their valid-slot masks."""
    n = group.size
    key = group * (1 << 32) + row
    items, inv = np.unique(key, return_inverse=True)
    masks = np.zeros(items.size, np.uint64)
    np.bitwise_or.at(masks, inv, np.left_shift(np.uint64(1), lane_bit.astype(np.uint64)))
    n_slices = np.unique(key * 8 + token_set).size if n else 0
    return _Items(items >> 32, items & 0xFFFFFFFF, masks, n, n_slices)


def form_rounds(it: _Items, G: int) -> list[Round]:
    """Step 1 of the module docstring: ACTAB rounds for rows every group needs at one row index,
    then the i-th remaining row of every group."""
    ig, ir, masks = it.group, it.row, it.mask
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
    return rounds


def row_index_rounds(it: _Items, G: int) -> list[Round]:
    """Every touched row index opened in all groups (ACTAB), groups without a selected token at
    that row on a dummy mask: masked dense attention over the touched row indices."""
    rounds = []
    all_g = np.arange(G, dtype=np.int64)
    for r in np.unique(it.row):
        sel = it.row == r
        m = np.zeros(G, np.uint64)
        m[it.group[sel]] = it.mask[sel]
        rounds.append(Round(all_g, np.full(G, r, np.int64), m, True))
    return rounds


def fill_round(rd: Round, G: int) -> Round:
    """``rd`` with every idle group opened on a dummy row (mask 0), at the round's first row
    index, so one MACAB stream serves it; an ACTAB when that puts every group at one row."""
    idle = np.setdiff1d(np.arange(G), rd.groups)
    g = np.concatenate([rd.groups, idle])
    order = np.argsort(g, kind="stable")
    rows = np.concatenate([rd.rows, np.full(idle.size, rd.rows[0])])[order]
    m = np.concatenate([rd.masks, np.zeros(idle.size, np.uint64)])[order]
    return Round(g[order], rows, m, bool((rows == rows[0]).all()))


# ---- cost ---------------------------------------------------------------------------------------
class RoundCost:
    """Estimated cycles of one round of a planner program (both phases), from the scheduling rule
    of docs/commands.md, for comparing the ways a round can be executed.

    Per phase, from the round's first activation: ``m`` ACTBGs issue ``max(row_cmd_cycles,
    tRRD_S)`` apart (one ACTAB: at once); MACs start ``tRCD`` after their group's activation;
    per-group MACBGs are at least ``tCCD_S`` apart and ``tCCD_L`` apart within one group, MACABs
    ``tCCD_AB`` apart; the moves of a neighbouring round (score MVSBs, probability MVGBs, one per
    open group) interleave with the MACs at ``move_spacing`` each; PREA waits ``tRTP_L`` after the
    last MAC and ``tRAS`` after the last activation; the next round activates ``tRP`` later (and
    at least ``tRC`` after this round's first activation)."""

    def __init__(self, cfg: Config, geo: Geometry) -> None:
        from starc.golden.timing import move_spacing

        t = cfg.timing
        self.cfg = cfg
        self.t = t
        self.geo = geo
        self.bppu = cfg.pu.banks_per_pu
        self.act_step = max(t.row_cmd_cycles, t.tRRD_S)
        self.move = max(move_spacing(cfg), t.tBL)

    def _phase(self, n_act: int, n_macs: int, max_group_macs: int, moves: int,
               macab: bool) -> int:
        t = self.t
        last_act = self.act_step * (n_act - 1)
        if macab:
            span = t.tCCD_AB * (n_macs - 1)
        else:
            span = max(t.tCCD_S * (n_macs - 1), t.tCCD_L * (max_group_macs - 1))
        span = max(span, self.move * moves - 1)
        first_mac = (last_act if macab else 0) + t.tRCD
        pre = max(first_mac + span + t.tRTP_L, last_act + t.tRAS)
        return max(pre + t.tRP, t.tRC)

    def _macs(self, rd: Round) -> tuple[int, int]:
        """(MAC commands, MAC commands of the busiest group) of one phase of ``rd``."""
        cm = column_mask(rd.masks, self.geo.sets)
        if rd.actab or len(rd.groups) == self.geo.G:
            union = 2 * int(_popcount16(np.bitwise_or.reduce(cm, keepdims=True))[0])
            n = max(union, 1) * self.bppu
            return n, n
        cols = 2 * _popcount16(cm)
        return int(cols.sum()) * self.bppu, int(cols.max()) * self.bppu

    def cycles(self, rd: Round) -> int:
        """Estimated cycles of ``rd`` in both phases (score and value)."""
        m = len(rd.groups)
        macab = rd.actab or m == self.geo.G
        n_macs, mg = self._macs(rd)
        return 2 * self._phase(1 if rd.actab else m, n_macs, mg, m, macab)

    def plan_cycles(self, rounds: list[Round], n_valid: int) -> int:
        """Estimated cycles of a whole program: its rounds plus the query writes, the softmax
        (``sfm_cycles``), the moves around it, the value moves at the end, and refresh."""
        if not rounds:
            return 0
        t, pu = self.t, self.cfg.pu
        body = sum(self.cycles(r) for r in rounds)
        touched = np.unique(np.concatenate([r.groups for r in rounds])).size
        wrgb = t.tCCD_L * (self.geo.d // self.geo.lanes) + pu.mv_cycles
        sfm = self.cfg.sfm_cycles(n_valid) + pu.mv_cycles
        # score moves interleave one per MAC of the following rounds; the rest wait for the end
        score_moves = sum(len(r.groups) for r in rounds)
        slots = sum(self._macs(r)[0] for r in rounds[1:])
        left = max(len(rounds[-1].groups), score_moves - slots)
        moves = self.move * (left + len(rounds[0].groups) + 2 * touched)
        total = wrgb + body + sfm + moves
        return int(total * (1 + t.tRFC / t.tREFI))

    def energy_pj(self, rd: Round, cfg: Config) -> float:
        """Energy of ``rd`` in both phases that depends on how it executes: activations, column
        reads (with their MACs) and the per-group moves (explicit convention)."""
        e, org = cfg.energy, cfg.org
        m = len(rd.groups)
        bpg = org.banks_per_group
        acts = (org.banks_per_channel if rd.actab else m * bpg)
        if rd.actab or m == self.geo.G:
            union = 2 * int(_popcount16(np.bitwise_or.reduce(
                column_mask(rd.masks, self.geo.sets), keepdims=True))[0])
            reads = union * org.banks_per_channel
        else:
            reads = int(2 * _popcount16(column_mask(rd.masks, self.geo.sets)).sum()) * bpg
        io = e.bg_mux_pj_per_bit + e.gio_pj_per_bit + e.tsv_pj_per_bit
        move_bytes = m * (self.geo.sets * 16 * 4 + self.geo.sets * 16 * 2 * bpg)
        per_phase = (acts * org.row_bytes * 8 * e.act_pj_per_bit
                     + reads * org.column_bytes * 8 * e.cell_rw_pj_per_bit
                     + reads // self.bppu * cfg.pu.lanes * e.mac_pj)
        return 2 * per_phase + move_bytes * (8 * io + e.sram_pj_per_byte)


def choose_macs(rounds: list[Round], G: int, objective: str,
                cost: RoundCost | None = None, cfg: Config | None = None) -> tuple[list[Round],
                                                                                     int]:
    """Step 2 of the module docstring. Returns the rounds and the number of dummy rows."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if objective == "energy":
        return rounds, 0
    assert cost is not None
    out, n_dummy = [], 0
    for rd in rounds:
        if rd.actab or len(rd.groups) == G:
            out.append(rd)
            continue
        filled = fill_round(rd, G)
        if cost.cycles(filled) < cost.cycles(rd):
            out.append(filled)
            n_dummy += G - len(rd.groups)
        else:
            out.append(rd)
    return out, n_dummy


def restrict(rounds: list[Round], it: _Items, G: int) -> list[Round]:
    """The rounds of a plan for a superset of ``it``'s tokens, cut to ``it``: rounds without a
    selected token go, masks keep only the selected slots; a MACAB round keeps every group (those
    without a selected token become dummies), a per-group round drops them."""
    keys = it.group * (1 << 32) + it.row                       # sorted (np.unique order)
    out = []
    for rd in rounds:
        k = rd.groups * (1 << 32) + rd.rows
        i = np.minimum(np.searchsorted(keys, k), keys.size - 1)
        m = np.where(keys[i] == k, it.mask[i], np.uint64(0)).astype(np.uint64)
        if not m.any():
            continue
        if rd.actab or len(rd.groups) == G:
            out.append(Round(rd.groups, rd.rows, m, rd.actab))
        else:
            keep = m != 0
            out.append(Round(rd.groups[keep], rd.rows[keep], m[keep], False))
    return out


def whole_rounds(group: np.ndarray, row: np.ndarray, lane_bit: np.ndarray, token_set: np.ndarray,
                 geo: Geometry, cfg: Config, *,
                 exact: Callable[[RowPlan], int] | None = None) -> list[Round]:
    """The cycles-objective rounds of every token of a head (its dense plan on this layout): the
    guard's reference for any selection of those tokens. The per-round choice over
    :func:`form_rounds`, or the masked dense attention over every row index
    (:func:`row_index_rounds`) when that is faster: by the estimate, or, when the two estimates
    are within :data:`GUARD_MARGIN` and ``exact`` is given, by the golden model. So the
    reference never costs more than masked dense attention over the head's rows."""
    it = _items(group, row, lane_bit, token_set)
    cost = RoundCost(cfg, geo)
    chosen = choose_macs(form_rounds(it, geo.G), geo.G, "cycles", cost)[0]
    alt = row_index_rounds(it, geo.G)
    if _same(alt, chosen):
        return chosen
    est_c, est_a = cost.plan_cycles(chosen, it.n_valid), cost.plan_cycles(alt, it.n_valid)
    if est_c < (1 - GUARD_MARGIN) * est_a:
        return chosen
    if est_a < (1 - GUARD_MARGIN) * est_c or exact is None:
        return alt if est_a < est_c else chosen
    n = it.group.size
    return alt if exact(RowPlan(alt, it.n_valid, n, it.n_slices)) < exact(
        RowPlan(chosen, it.n_valid, n, it.n_slices)) else chosen


def plan_rows(group: np.ndarray, row: np.ndarray, lane_bit: np.ndarray, token_set: np.ndarray,
              geo: Geometry, *, objective: str = "cycles", cfg: Config | None = None,
              exact: Callable[[RowPlan], int] | None = None,
              whole: list[Round] | None = None) -> RowPlan:
    """Rounds for the tokens at (``group``, ``row``, ``lane_bit``) (the module docstring's three
    steps). ``whole``: :func:`whole_rounds` of every token of the head at this context (the
    guard's reference; without it the guard compares with :func:`row_index_rounds`).
    ``exact(plan)`` returns the golden-model cycles of a plan's program."""
    G = geo.G
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if group.size == 0:
        return RowPlan([], 0, 0, 0)
    it = _items(group, row, lane_bit, token_set)
    n_items = it.group.size
    rounds = form_rounds(it, G)
    if objective == "energy":
        return RowPlan(rounds, it.n_valid, n_items, it.n_slices)
    if cfg is None:
        raise ValueError("objective 'cycles' needs the preset (cfg=)")
    cost = RoundCost(cfg, geo)
    chosen, n_dummy = choose_macs(rounds, G, objective, cost)
    plan = RowPlan(chosen, it.n_valid, n_items + n_dummy, it.n_slices, n_dummy)
    alt_rounds = restrict(whole, it, G) if whole is not None else row_index_rounds(it, G)
    alt_blocks = sum(len(r.groups) for r in alt_rounds)
    alt = RowPlan(alt_rounds, it.n_valid, alt_blocks, it.n_slices, alt_blocks - n_items,
                  "whole" if whole is not None else "row-index")
    if _same(alt_rounds, chosen):
        return plan
    est_plan = cost.plan_cycles(chosen, it.n_valid)
    est_alt = cost.plan_cycles(alt_rounds, it.n_valid)
    if est_plan < (1 - GUARD_MARGIN) * est_alt:
        return plan
    if est_alt < (1 - GUARD_MARGIN) * est_plan or exact is None:
        return alt if est_alt < est_plan else plan
    return alt if exact(alt) < exact(plan) else plan


def _same(a: list[Round], b: list[Round]) -> bool:
    return len(a) == len(b) and all(
        x.actab == y.actab and np.array_equal(x.groups, y.groups) and
        np.array_equal(x.rows, y.rows) and np.array_equal(x.masks, y.masks)
        for x, y in zip(a, b, strict=True))

"""From activation rounds (:mod:`starc.planner.rounds`) to a PIM command program
(docs/commands.md, exactly).

Program (one query head, one KV head, one channel), mirroring
:func:`starc.golden.programs.dense_program` so a fully dense selection gives the same program:

- WRGB of the ``d / 16`` query chunks (``wdata`` rows 0 ..);
- score phase, round ``i`` (register set ``i % 2``): ACTAB or ACTBGs; the score MVSBs still
  pending from round ``i - 2`` (same register set); the column MACs, as MACAB when every group is
  open, else MACBG per open group (column-major, groups interleaved); the pending score MVSBs
  (with masks) of earlier rounds interleave one after each MAC; PREA;
- the last round's score MVSBs, SFM over the valid entries, the MVGBs of round 0;
- value phase, round ``i``: activate the value rows; MACs with ``VALUE`` and probability slot
  ``i % 2``; the MVGBs of round ``i + 1`` interleave; PREA;
- value MVSBs (both halves) of every group that took part.
"""

from __future__ import annotations

import numpy as np

from starc.address import SLICE, Geometry
from starc.isa import PROGRAM_DTYPE, MacArg, Op
from starc.planner.rounds import Round, RowPlan

__all__ = ["emit_program", "query_words"]


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
        # moves still pending from round i - 2 read the register set round i writes: they go
        # first (only rounds with fewer MACs than moves leave any)
        while pending and pending[0][3] == (i & 1):
            add(pending.pop(0))
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

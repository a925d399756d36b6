"""From activation rounds (:mod:`starc.planner.rounds`) to PIM command programs
(docs/commands.md, exactly).

Attention program (one query head, one KV head, one channel), mirroring
:func:`starc.golden.programs.dense_program` so a fully dense selection gives the same program:

- WRGB of the ``d / 16`` query chunks (``wdata`` rows ``wdata_base ..``);
- score phase, round ``i`` (register set ``i % 2``): ACTAB or ACTBGs; the score MVSBs still
  pending from round ``i - 2`` (same register set); the column MACs, as MACAB when every group is
  open, else MACBG per open group (column-major, groups interleaved); the pending score MVSBs
  (with masks) of earlier rounds interleave one after each MAC; PREA;
- the last round's score MVSBs, SFM over the valid entries, the MVGBs of round 0;
- value phase, round ``i``: activate the value rows; MACs with ``VALUE`` and probability slot
  ``i % 2``; the MVGBs of round ``i + 1`` interleave; PREA;
- value MVSBs (both halves) of every group that took part.

Selection program (:func:`emit_selection`, one query head): per scan, WRGB of the scan's query
words and the score phase over the scanned rows (the same rounds and register-set rule as
above); the remaining score MVSBs; RDSB of the valid scores; BAR (the host needs them before it
issues the attention's activations). A *step program* is a selection program followed by the
attention program (:func:`step_program`); when the last scan's query is the attention's, the
attention's WRGBs are left out (the GEMV buffer still holds it).

``wdata`` rows are addressed by the WRGB's ``arg``; :func:`emit_program` and
:func:`emit_selection` take a ``wdata_base`` so several queries can share one program.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starc.address import MOVE_MASK_SLOTS, SLICE, Geometry, check_geometry
from starc.isa import PROGRAM_DTYPE, MacArg, MoveFlag, Op
from starc.planner.rounds import Round, RowPlan

__all__ = ["MOVE_MASK_SLOTS", "Scan", "SelectionPass", "check_geometry", "emit_program",
           "emit_selection", "emit_selection_shared", "query_words", "step_program"]

Cmd = tuple[int, int, int, int, int, int]
_ACTAB, _ACTBG, _PREA = int(Op.ACTAB), int(Op.ACTBG), int(Op.PREA)
_MACAB, _MACBG, _MVSB, _MVGB = int(Op.MACAB), int(Op.MACBG), int(Op.MVSB), int(Op.MVGB)
_VALUE, _BUF = int(MacArg.VALUE), int(MacArg.BUF)
_MV_BUF, _MV_VALUE, _MV_HALF = int(MoveFlag.BUF), int(MoveFlag.VALUE), int(MoveFlag.HALF)


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


class _Emitter:
    """Command list under construction (one channel)."""

    def __init__(self, geo: Geometry, banks_per_pu: int, skip_empty_columns: bool) -> None:
        check_geometry(geo)
        self.geo = geo
        self.bppu = banks_per_pu
        self.skip = skip_empty_columns
        self.cmds: list[Cmd] = []
        self.pending: list[Cmd] = []     # score MVSBs not yet issued (FIFO)
        self.round = 0                   # score rounds so far (register set = round % 2)

    def add(self, c: Cmd) -> None:
        self.cmds.append(c)

    def wrgb(self, base: int, head: int = 0) -> None:
        for c in range(self.geo.d // self.geo.lanes):
            self.add((int(Op.WRGB), 0, 0, c, head, base + c))

    def activate(self, rd: Round, base: int) -> None:
        if rd.actab:
            self.add((_ACTAB, 0, 0, 0, base + int(rd.rows[0]), 0))
        else:
            for g, r in zip(rd.groups.tolist(), rd.rows.tolist(), strict=True):
                self.add((_ACTBG, g, 0, 0, base + r, 0))

    def macs(self, rd: Round, arg: int, pending: list[Cmd], head: int = 0) -> None:
        geo, all_cols = self.geo, range(self.geo.cols)
        if rd.actab or len(rd.groups) == geo.G:
            for c in (_columns(rd.masks, geo.sets) if self.skip else all_cols):
                for k in range(self.bppu):              # every bank of each PU (bank field)
                    self.add((_MACAB, 0, k, c, head, arg))
                if pending:
                    self.add(pending.pop(0))
            return
        gl = rd.groups.tolist()
        cols = [set(_columns(rd.masks[i:i + 1], geo.sets)) if self.skip else set(all_cols)
                for i in range(len(gl))]
        for c in all_cols:
            for g, cs in zip(gl, cols, strict=True):
                if c not in cs:
                    continue
                for k in range(self.bppu):
                    self.add((_MACBG, g, k, c, head, arg))
                if pending:
                    self.add(pending.pop(0))

    def score_rounds(self, rounds: list[Round], base: int) -> None:
        """Score phase over ``rounds`` (rows relative to ``base``), continuing the round count."""
        for rd in rounds:
            i = self.round
            self.activate(rd, base)
            # moves still pending from round i - 2 read the register set round i writes: they
            # go first (only rounds with fewer MACs than moves leave any)
            while self.pending and self.pending[0][3] == (_MV_BUF if i & 1 else 0):
                self.add(self.pending.pop(0))
            self.macs(rd, _BUF if i & 1 else 0, self.pending)
            self.add((_PREA, 0, 0, 0, 0, 0))
            self.pending.extend((_MVSB, g, 0, _MV_BUF if i & 1 else 0, 0, int(m))
                                for g, m in zip(rd.groups.tolist(), rd.masks.tolist(),
                                                strict=True))
            self.round += 1

    def flush(self) -> None:
        self.cmds.extend(self.pending)
        self.pending = []

    def program(self) -> np.ndarray:
        return np.array(self.cmds, dtype=PROGRAM_DTYPE).reshape(-1)


def _attention(em: _Emitter, plan: RowPlan, *, krow_base: int, vrow_base: int,
               wdata_base: int, write_query: bool) -> None:
    if write_query:
        em.wrgb(wdata_base)
    em.round = 0
    em.score_rounds(plan.rounds, krow_base)
    em.flush()
    if not plan.rounds:
        return
    em.add((int(Op.SFM), 0, 0, 0, 0, plan.n_valid))
    em.cmds.extend((_MVGB, g, 0, 0, 0, 0) for g in plan.rounds[0].groups.tolist())
    for i, rd in enumerate(plan.rounds):
        em.activate(rd, vrow_base)
        pending: list[Cmd] = []
        if i + 1 < len(plan.rounds):
            pending = [(_MVGB, g, 0, _MV_BUF if (i + 1) & 1 else 0, 0, 0)
                       for g in plan.rounds[i + 1].groups.tolist()]
        em.macs(rd, _VALUE | (_BUF if i & 1 else 0), pending)
        em.cmds.extend(pending)
        em.add((_PREA, 0, 0, 0, 0, 0))
    for g in plan.groups_touched().tolist():
        for h in range(2):
            em.add((_MVSB, g, 0, _MV_VALUE | (_MV_HALF if h else 0), 0, 0))


def emit_program(plan: RowPlan, geo: Geometry, *, krow_base: int, vrow_base: int,
                 banks_per_pu: int = 1, skip_empty_columns: bool = True, wdata_base: int = 0,
                 write_query: bool = True) -> np.ndarray:
    """The attention program of ``plan`` (see the module docstring). Key row ``r`` of the plan is
    absolute row ``krow_base + r``, its value row ``vrow_base + r``. ``wdata`` rows
    ``wdata_base .. + d/16 - 1`` are the query chunks (:func:`query_words`); with
    ``write_query=False`` the GEMV buffer is assumed to hold them already.

    With ``skip_empty_columns`` a column pair (2s, 2s + 1) is MAC'd only if slot s holds a selected
    token in some token set of the open row(s) the MAC covers: the skipped entries are masked out
    of the softmax (probability 0), so the result is the same and partly used rows cost fewer
    column reads (the AttAcc-style per-byte energy then differs from the per-activation one)."""
    em = _Emitter(geo, banks_per_pu, skip_empty_columns)
    _attention(em, plan, krow_base=krow_base, vrow_base=vrow_base, wdata_base=wdata_base,
               write_query=write_query)
    return em.program()


@dataclass
class Scan:
    """One scan of a selection pass: the query words written first, then a score phase."""

    query: np.ndarray          # uint16 [d / 16, 16] wdata rows (fp16(q' / sqrt(d)))
    rows: RowPlan              # rounds over the scanned rows (relative to ``base``)
    base: int                  # absolute row of relative row 0
    order: np.ndarray          # index of the scanned vector behind each score read, in order


@dataclass
class SelectionPass:
    """What the PIM computes before the host can choose (docs/planner.md)."""

    kind: str                  # key of starc.planner.registry.SELECTION_PASSES
    scans: list[Scan]
    n_read: int                # valid scores the RDSB reads back
    row_scores: str = "centroid"   # centroids pass: how the host combines the scanned sets

    def wdata(self) -> np.ndarray:
        return np.concatenate([s.query for s in self.scans]) if self.scans else \
            np.zeros((0, 16), np.uint16)


def emit_selection(sel: SelectionPass, geo: Geometry, *, banks_per_pu: int = 1,
                   wdata_base: int = 0) -> np.ndarray:
    """The selection program of ``sel`` (module docstring); ``wdata`` rows ``wdata_base ..``
    are :meth:`SelectionPass.wdata`."""
    em = _Emitter(geo, banks_per_pu, True)
    at = wdata_base
    last = None
    for s in sel.scans:
        if last is None or not np.array_equal(s.query, last):   # the buffers hold it already
            em.wrgb(at)
        at += len(s.query)
        last = s.query
        em.score_rounds(s.rows.rounds, s.base)
    em.flush()
    em.add((int(Op.RDSB), 0, 0, 0, 0, sel.n_read))
    em.add((int(Op.BAR), 0, 0, 0, 0, 0))
    return em.program()


def emit_selection_shared(sels: list[SelectionPass], geo: Geometry, *, banks_per_pu: int = 1,
                          wdata_base: int = 0) -> np.ndarray:
    """One selection program for the query heads of a KV head whose passes scan the same rows
    with their own queries (a multi-query GEMV buffer, docs/compiler.md "GQA-shared
    selection"): the WRGBs of every head's query (head k named k, ``wdata`` rows ``wdata_base +
    k d / 16 ..``, :meth:`SelectionPass.wdata` of each), then per round of the scan its rows
    opened **once** and one pass of MACs per head, each pass into the next score register set
    (its moves interleave with the following passes' MACs, as between rounds of one head), the
    remaining moves, one RDSB per head (its valid scores, in the order of its one-head pass) and
    one BAR. Each ``sels[k]`` must be a one-scan pass over the same rows as ``sels[0]``."""
    if not sels:
        raise ValueError("emit_selection_shared needs the passes of at least one head")
    s0 = sels[0].scans[0] if len(sels[0].scans) == 1 else None
    for sel in sels:
        if (s0 is None or len(sel.scans) != 1 or sel.scans[0].base != s0.base or
                len(sel.scans[0].rows.rounds) != len(s0.rows.rounds) or
                any(a.actab != b.actab or not np.array_equal(a.groups, b.groups) or
                    not np.array_equal(a.rows, b.rows) or not np.array_equal(a.masks, b.masks)
                    for a, b in zip(sel.scans[0].rows.rounds, s0.rows.rounds, strict=True))):
            raise ValueError("a shared selection program needs one scan per head, all over the "
                             "same rows")
    em = _Emitter(geo, banks_per_pu, True)
    chunks = geo.d // geo.lanes
    for k in range(len(sels)):
        em.wrgb(wdata_base + k * chunks, head=k)
    for rd in s0.rows.rounds:
        em.activate(rd, s0.base)
        for k in range(len(sels)):
            i = em.round
            # moves still pending from pass i - 2 read the register set pass i writes
            while em.pending and em.pending[0][3] == (_MV_BUF if i & 1 else 0):
                em.add(em.pending.pop(0))
            em.macs(rd, _BUF if i & 1 else 0, em.pending, head=k)
            em.pending.extend((_MVSB, g, 0, _MV_BUF if i & 1 else 0, k, int(m))
                              for g, m in zip(rd.groups.tolist(), rd.masks.tolist(),
                                              strict=True))
            em.round += 1
        em.add((_PREA, 0, 0, 0, 0, 0))
    em.flush()
    for k, sel in enumerate(sels):
        em.add((int(Op.RDSB), 0, 0, 0, k, sel.n_read))
    em.add((int(Op.BAR), 0, 0, 0, 0, 0))
    return em.program()


def step_program(sel: SelectionPass | None, plan: RowPlan, geo: Geometry, query: np.ndarray, *,
                 krow_base: int, vrow_base: int, banks_per_pu: int = 1
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """Selection (if any) then attention: ``(program, wdata, commands of the selection part)``.
    The attention's WRGBs are left out when the last scan wrote the same query words."""
    if sel is None or not sel.scans:
        prog = emit_program(plan, geo, krow_base=krow_base, vrow_base=vrow_base,
                            banks_per_pu=banks_per_pu)
        return prog, query, 0
    sp = emit_selection(sel, geo, banks_per_pu=banks_per_pu)
    swd = sel.wdata()
    same = np.array_equal(sel.scans[-1].query, query)
    ap = emit_program(plan, geo, krow_base=krow_base, vrow_base=vrow_base,
                      banks_per_pu=banks_per_pu, wdata_base=len(swd), write_query=not same)
    wd = swd if same else np.concatenate([swd, query])
    return np.concatenate([sp, ap]), wd, len(sp)

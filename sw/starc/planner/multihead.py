"""Sparse steps of several heads on one channel (docs/multihead.md): the planner's rounds in the
overlapped order of :mod:`starc.golden.multihead`.

Two ways to put several heads on a channel:

- :func:`overlapped_program`: heads with plans of their own (query heads that select on their
  own, or KV heads with their own rows). Their phases run in the overlapped order
  S_0, S_1, V_0, S_2, V_1, ..., V_{H-1}, each head opening its own rounds, so that one head's
  softmax and probability moves go under another head's MACs.
- :func:`shared_program`: heads that share one plan (a GQA group with one selection per KV
  head). Each round opens its rows **once**; one pass of MACs per head runs over them (the score
  register set and the probability slot alternate per pass), each head with its own query,
  softmax and accumulators.

A round's MACs are laid out as in the single-head attention program
(:mod:`starc.planner.program`): MACAB over the selected columns when every group is open, else
MACBG per open group, column-major; every MAC is a slot a move may follow. Selection passes
are not part of these programs (each head's comes first, :func:`starc.planner.program.
emit_selection`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from starc.address import Geometry
from starc.config import Config
from starc.golden.multihead import HeadWork, Pass, Round, emit, overlapped_order
from starc.isa import MAX_HEADS, Op
from starc.planner.program import _columns, query_words
from starc.planner.rounds import Round as PlanRound
from starc.planner.rounds import RowPlan

if TYPE_CHECKING:
    from starc.planner.plan import Planner, StepPlan

__all__ = ["HeadPlan", "overlapped_program", "shared_program", "step_program"]

_ACTAB, _ACTBG, _PREA = int(Op.ACTAB), int(Op.ACTBG), int(Op.PREA)
_MACAB, _MACBG = int(Op.MACAB), int(Op.MACBG)


class HeadPlan:
    """One head's plan on the channel: its rows (``krow_base`` / ``vrow_base``: absolute row of
    relative row 0) and its query words (``wdata`` rows ``query`` ..)."""

    def __init__(self, plan: RowPlan, *, krow_base: int, vrow_base: int, query: int) -> None:
        self.plan, self.krow_base, self.vrow_base, self.query = plan, krow_base, vrow_base, query


def _activate(rd: PlanRound, base: int) -> list[tuple]:
    if rd.actab:
        return [(_ACTAB, 0, 0, 0, base + int(rd.rows[0]), 0)]
    return [(_ACTBG, g, 0, 0, base + r, 0)
            for g, r in zip(rd.groups.tolist(), rd.rows.tolist(), strict=True)]


def _slots(rd: PlanRound, geo: Geometry, cfg: Config, skip: bool
           ) -> tuple[list[list[tuple]], list[int]]:
    """MAC slots of one pass over a round, with the cycles each takes (tCCD_AB per all-bank
    column; tCCD_S between MACBGs of different groups, tCCD_L of the same group)."""
    bppu, tm = cfg.pu.banks_per_pu, cfg.timing
    if rd.actab or len(rd.groups) == geo.G:
        cols = _columns(rd.masks, geo.sets) if skip else list(range(geo.cols))
        return ([[(_MACAB, 0, k, c, 0, 0) for k in range(bppu)] for c in cols],
                [bppu * tm.tCCD_AB] * len(cols))
    gl = rd.groups.tolist()
    cols = [set(_columns(rd.masks[i:i + 1], geo.sets)) if skip else set(range(geo.cols))
            for i in range(len(gl))]
    slots: list[list[tuple]] = []
    for c in range(geo.cols):
        for g, cs in zip(gl, cols, strict=True):
            if c in cs:
                slots.append([(_MACBG, g, k, c, 0, 0) for k in range(bppu)])
    dt = [bppu * (tm.tCCD_L if len(gl) == 1 else tm.tCCD_S)] * len(slots)
    return slots, dt


def _phase(hp: HeadPlan, head: int, value: bool, geo: Geometry, cfg: Config,
           skip: bool) -> list[Round]:
    out = []
    for rd in hp.plan.rounds:
        slots, dt = _slots(rd, geo, cfg, skip)
        if not slots:
            continue
        base = hp.vrow_base if value else hp.krow_base
        out.append(Round(_activate(rd, base),
                         [Pass(head, value, slots, dt, rd.groups.tolist(),
                               [int(x) for x in rd.masks.tolist()])],
                         [(_PREA, 0, 0, 0, 0, 0)]))
    return out


def _work(hp: HeadPlan, geo: Geometry) -> HeadWork:
    return HeadWork(query=[hp.query + c for c in range(geo.d // geo.lanes)],
                    n_valid=hp.plan.n_valid,
                    out_groups=hp.plan.groups_touched().tolist())


def overlapped_program(heads: list[HeadPlan], geo: Geometry, cfg: Config, *,
                       skip_empty_columns: bool = True) -> np.ndarray:
    """The attention of several heads with plans of their own, head k named k, in the
    overlapped order (module docstring). A head whose plan has no round (nothing selected) only
    writes its query."""
    if not heads:
        raise ValueError("overlapped_program needs at least one head")
    phases: dict[tuple[int, bool], list[Round]] = {}
    for k, hp in enumerate(heads):
        for value in (False, True):
            phases[(k, value)] = _phase(hp, k, value, geo, cfg, skip_empty_columns)
    rounds = [rd for ph in overlapped_order(len(heads)) for rd in phases[ph]]
    work = {k: _work(hp, geo) for k, hp in enumerate(heads)}
    return emit(rounds, work, cfg, compact=True)


def shared_program(plan: RowPlan, queries: list[int], geo: Geometry, cfg: Config, *,
                   krow_base: int, vrow_base: int, skip_empty_columns: bool = True,
                   write_query: bool = True) -> np.ndarray:
    """The attention of ``len(queries)`` heads over one shared plan (a GQA group with one
    selection): every round opens its rows once and runs one pass per head; head k's query
    words are ``wdata`` rows ``queries[k]`` .., its commands name head k. With
    ``write_query=False`` the GEMV buffers hold every head's query already (a selection scan
    wrote it) and no WRGB is issued."""
    if not queries:
        raise ValueError("shared_program needs at least one head")
    hp = HeadPlan(plan, krow_base=krow_base, vrow_base=vrow_base, query=0)
    rounds: list[Round] = []
    for value in (False, True):
        for rd in _phase(hp, 0, value, geo, cfg, skip_empty_columns):
            p = rd.passes[0]
            rounds.append(Round(rd.act, [Pass(k, value, p.slots, p.dt, p.groups, p.masks)
                                         for k in range(len(queries))], rd.pre))
    work = {k: HeadWork(query=[q + c for c in range(geo.d // geo.lanes)] if write_query else [],
                        n_valid=plan.n_valid, out_groups=plan.groups_touched().tolist())
            for k, q in enumerate(queries)}
    return emit(rounds, work, cfg, compact=True)


def step_program(planner: Planner, plans: list[StepPlan]) -> tuple[np.ndarray, np.ndarray]:
    """The attention of the step plans ``plans`` (one per head; their KV heads on one channel)
    as one program of ``len(plans)`` heads in the overlapped order: head k is ``plans[k]``, its
    query chunks are ``wdata`` rows ``k d / 16 ..``. Returns ``(program, wdata)``; the channel is
    the KV heads' (:meth:`starc.compiler.compiled.CompiledKV.head`)."""
    if not 1 <= len(plans) <= MAX_HEADS:
        raise ValueError(f"a channel takes 1 to {MAX_HEADS} heads, not {len(plans)}")
    ck, geo = planner.ck, planner.geo
    maps = [ck.head(sp.layer, sp.kv_head) for sp in plans]
    channels = sorted({hm.channel for hm in maps})
    if len(channels) != 1:
        raise ValueError(f"the plans' KV heads sit on channels {channels}; one program runs on "
                         f"one channel: pass the plans of one channel's heads")
    chunks = geo.d // geo.lanes
    heads = [HeadPlan(sp.rows, krow_base=hm.row_base, vrow_base=hm.row_base + hm.n_krows,
                      query=k * chunks) for k, (sp, hm) in enumerate(zip(plans, maps, strict=True))]
    wdata = np.concatenate([query_words(ck.cache.q[sp.layer][sp.step, sp.q_head], geo.d,
                                        geo.lanes) for sp in plans])
    return overlapped_program(heads, geo, ck.cfg), wdata

"""One channel's program for one layer, and its exact cost.

A channel runs the query heads of the instances mapped to it (:mod:`starc.system.mapping`).
The *channel program builder* turns their step programs (:mod:`starc.system.workload`: selection
pass, then attention, per query head) into one program; the golden model schedules it
(:func:`starc.golden.timing.schedule`) and charges it (:func:`starc.golden.energy.account`), so
refresh, the row switches between heads and every dependency are those of the whole channel.

Schedules (:data:`SCHEDULES`):

``sequential``
    One head per program, the heads of a channel back to back in program order (instance by
    instance, query head by query head): the channel's program is the concatenation of their
    step programs (selection pass, then attention, per head). A head's first commands may issue
    under the previous head's last moves where the timing rules allow it.
``overlapped``
    The multi-head schedule of docs/multihead.md: first every head's selection pass (each ends
    with its read-back barrier: the host needs the scores before it selects), then the heads'
    attention in the overlapped order S_0, S_1, V_0, S_2, V_1, ..., V_{H-1}
    (:func:`starc.planner.multihead.overlapped_program`), so one head's softmax and probability
    moves run under another head's MACs. Every head keeps its own plan (its own selection);
    a channel with more than :data:`~starc.isa.MAX_HEADS` heads runs them in consecutive
    programs of at most that many. The k-th instance on a channel reads its rows at an offset of
    k regions (``row_offset``); row addresses do not change a cost (every round opens and closes
    its rows), only the bytes of the program.

Costs are memoised by the SHA-256 of the program's bytes (and the preset), so identical
programs (every dense layer, every instance reading the same stream) are scheduled once.
The selection part of a channel's time is exact: commands issue in order, so a prefix of the
program schedules alone as it does inside it, and the cumulative breakdown at each boundary
between a selection part and an attention part splits the total (:meth:`ChannelCosts.split`;
a selection part ends with its read-back barrier and takes the completion, as
:func:`starc.metrics.step_cost` counts it). All cycle counts are DRAM clock cycles (tCK) of
the preset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from starc.config import Config
from starc.isa import PROGRAM_DTYPE

__all__ = ["SCHEDULES", "ChannelCost", "ChannelCosts", "ChannelProgram", "HeadPart",
           "TIME_CATEGORIES", "build_overlapped", "build_sequential"]

#: the time breakdown of a channel: the golden model's categories with ``selection`` first
TIME_CATEGORIES = ("selection", "mac_issue", "row_switch", "refresh", "data_movement",
                   "softmax", "drain")


@dataclass
class ChannelProgram:
    """A channel's program and, per command, whether it belongs to a selection pass."""

    program: np.ndarray
    selection: np.ndarray             # bool per command

    def digest(self) -> str:
        h = hashlib.sha256(self.program.tobytes())
        h.update(np.packbits(self.selection).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class HeadPart:
    """One query head's work on a channel: its step program (selection pass, then attention)
    with the number of selection commands, and what the overlapped builder needs to re-emit
    its attention: its row plan, row bases and geometry, and the offset of its instance's
    region on the channel."""

    program: np.ndarray
    n_selection: int
    rows: Any = None                  # starc.planner.rounds.RowPlan
    krow_base: int = 0
    vrow_base: int = 0
    geo: Any = None                   # starc.address.Geometry
    row_offset: int = 0


def _part(p: HeadPart | tuple[np.ndarray, int]) -> HeadPart:
    return p if isinstance(p, HeadPart) else HeadPart(p[0], int(p[1]))


def _concat(chunks: Sequence[tuple[np.ndarray, bool]]) -> ChannelProgram:
    chunks = [(c, s) for c, s in chunks if len(c)]
    if not chunks:
        return ChannelProgram(np.zeros(0, PROGRAM_DTYPE), np.zeros(0, bool))
    return ChannelProgram(np.concatenate([c for c, _ in chunks]),
                          np.concatenate([np.full(len(c), s) for c, s in chunks]))


def build_sequential(parts: Sequence[HeadPart | tuple[np.ndarray, int]],
                     cfg: Config | None = None) -> ChannelProgram:
    """The ``sequential`` schedule: step programs (``HeadPart`` or ``(program, selection
    commands)``) back to back."""
    chunks = []
    for p in map(_part, parts):
        chunks += [(p.program[:p.n_selection], True), (p.program[p.n_selection:], False)]
    return _concat(chunks)


def build_overlapped(parts: Sequence[HeadPart], cfg: Config) -> ChannelProgram:
    """The ``overlapped`` schedule (module docstring): selection passes, then the attention of
    at most :data:`~starc.isa.MAX_HEADS` heads per program in the overlapped order."""
    from starc.isa import MAX_HEADS
    from starc.planner.multihead import HeadPlan, overlapped_program
    parts = [_part(p) for p in parts]
    if any(p.rows is None or p.geo is None for p in parts):
        raise ValueError("the overlapped schedule needs each head's row plan and geometry")
    chunks = [(p.program[:p.n_selection], True) for p in parts]
    for at in range(0, len(parts), MAX_HEADS):
        group = parts[at:at + MAX_HEADS]
        geo = group[0].geo
        heads = [HeadPlan(p.rows, krow_base=p.krow_base + p.row_offset,
                          vrow_base=p.vrow_base + p.row_offset, query=k * (geo.d // geo.lanes))
                 for k, p in enumerate(group)]
        chunks.append((overlapped_program(heads, geo, cfg), False))
    return _concat(chunks)


#: name -> builder of a channel program from its heads' parts and the preset
SCHEDULES: dict[str, Callable[[Sequence[HeadPart], Config], ChannelProgram]] = {
    "sequential": build_sequential,
    "overlapped": build_overlapped,
}


@dataclass
class ChannelCost:
    cycles: int
    energy_pj: float
    attacc_energy_pj: float
    breakdown: dict[str, int]                  # golden categories (selection not split off)
    energy_breakdown: dict[str, float]         # explicit-activation energy, with selection
    selection_energy_pj: float
    commands: int
    activations: int                           # bank rows opened
    split: dict[str, int] | None = None        # TIME_CATEGORIES, filled on demand

    def as_dict(self) -> dict[str, object]:
        return {"cycles": self.cycles, "energy_pj": self.energy_pj,
                "attacc_energy_pj": self.attacc_energy_pj, "breakdown": self.breakdown,
                "energy_breakdown": self.energy_breakdown,
                "selection_energy_pj": self.selection_energy_pj, "commands": self.commands,
                "activations": self.activations, "split": self.split}


@dataclass
class ChannelCosts:
    """Exact costs of channel programs, memoised by content hash."""

    cfg: Config
    head_dim: int
    _memo: dict[str, ChannelCost] = field(default_factory=dict)
    _programs: dict[str, ChannelProgram] = field(default_factory=dict)
    scheduled: int = 0
    commands_scheduled: int = 0

    def cost(self, cp: ChannelProgram) -> tuple[str, ChannelCost]:
        from starc.golden import energy, timing
        key = cp.digest()
        c = self._memo.get(key)
        if c is not None:
            return key, c
        if len(cp.program) == 0:
            c = ChannelCost(0, 0.0, 0.0, {k: 0 for k in timing.CATEGORIES}, {}, 0.0, 0, 0,
                            dict.fromkeys(TIME_CATEGORIES, 0))
        else:
            s = timing.schedule(cp.program, self.cfg)
            e = energy.account(cp.program, self.cfg, self.head_dim)
            es = energy.account(cp.program[cp.selection], self.cfg, self.head_dim) \
                if cp.selection.any() else None
            ea = energy.account(cp.program[~cp.selection], self.cfg, self.head_dim) \
                if es is not None else e
            ebd = {"selection": es.total_pj if es is not None else 0.0, **ea.breakdown}
            c = ChannelCost(int(s.total_cycles), e.total_pj, e.attacc_pj,
                            {k: int(v) for k, v in s.breakdown.items()}, ebd,
                            es.total_pj if es is not None else 0.0, len(cp.program),
                            int(e.counts.bank_activations) if e.counts else 0)
            if es is None:
                c.split = {"selection": 0, **c.breakdown}
            self.scheduled += 1
            self.commands_scheduled += len(cp.program)
        self._memo[key] = c
        self._programs[key] = cp
        return key, c

    def split(self, key: str) -> dict[str, int]:
        """The time breakdown of a memoised program with the selection parts split off
        (exact: cumulative breakdowns of the in-order prefixes at every boundary)."""
        from starc.golden import timing
        c = self._memo[key]
        if c.split is not None:
            return c.split
        cp = self._programs[key]
        sel = cp.selection
        edges = np.flatnonzero(np.diff(sel.astype(np.int8))) + 1     # first index of each run
        bounds = [0, *edges.tolist(), len(sel)]
        cum_prev = dict.fromkeys(timing.CATEGORIES, 0)
        out = dict.fromkeys(TIME_CATEGORIES, 0)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b == len(sel):
                cum = dict(c.breakdown)
            else:
                # a selection part ends with its read-back barrier: nothing is in flight after
                # it, so the part takes the prefix's completion (as metrics.step_cost does);
                # after an attention part the prefix's final drain (completion after its last
                # issue) overlaps the commands that follow, so only its gaps count
                s = timing.schedule(cp.program[:b], self.cfg)
                cum = dict(s.breakdown)
                if not sel[b - 1]:
                    cum["drain"] -= int(s.total_cycles) - int(s.issue[-1])
            delta = {k: cum[k] - cum_prev[k] for k in timing.CATEGORIES}
            if sel[a]:
                out["selection"] += sum(delta.values())
            else:
                for k, v in delta.items():
                    out[k] += v
            cum_prev = cum
        if sum(out.values()) != c.cycles:                    # pragma: no cover - invariant
            raise AssertionError(f"selection split does not add up: {out} vs {c.cycles}")
        c.split = out
        return out


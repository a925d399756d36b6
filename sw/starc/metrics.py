"""Quality and cost metrics of one decode step under a selection policy.

Quality (needs only Q/K/V; the reference is dense attention in float64 over the FP16 cache the PIM
stores, scores scaled by 1/sqrt(d)):

- attention-mass recall: softmax mass of the exact dense attention inside the selected set;
- top-k recall at k = B: share of the B highest-scoring positions that were selected
  (k = min(B, n));
- relative L2 error ``||o_sel - o_dense|| / ||o_dense||`` of the attention output, where ``o_sel``
  is softmax attention renormalised over the selected set (SparQ: ``alpha o_sel + (1 - alpha)
  mean(V)``, its mean-value correction).

Cost (from a :class:`starc.planner.program.RowPlan` and the golden model):

- token slots activated: group rows opened (per phase) x tokens per group row; the same count of
  value rows is opened again in the value phase;
- artifact-comparable token-equivalents: 16-token bank-row slices holding a selected token x 16
  (the STARC artifact's "rows x 16"; equal to the slots for d = 128);
- occupancy: selected tokens / activated slots;
- cycles and energy of the step program (``starc.golden.timing.schedule``,
  ``starc.golden.energy``), split into the *selection* part (the selection pass up to the
  host's read-back barrier, plus an optional host turnaround) and the attention part
  (:func:`step_cost`);
- floor: the K and V bytes of the selected tokens at the channel's internal PIM bandwidth
  (``pus_per_channel x column_bytes / tCCD_AB`` bytes per cycle); ratio = cycles / floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starc.config import Config

__all__ = ["DenseRef", "Quality", "dense_reference", "quality", "floor_cycles",
           "program_cost", "step_cost", "ProgramCost"]


@dataclass
class DenseRef:
    """Float64 dense attention of the ``g`` query heads of one KV head over ``n`` positions."""

    logits: np.ndarray   # [g, n]
    probs: np.ndarray    # [g, n]
    out: np.ndarray      # [g, d]
    V: np.ndarray        # [n, d] float64


def dense_reference(q: np.ndarray, K: np.ndarray, V: np.ndarray) -> DenseRef:
    q64 = np.asarray(q, np.float64)
    K64 = np.asarray(K, np.float64)
    V64 = np.asarray(V, np.float64)
    logits = q64 @ K64.T / np.sqrt(K64.shape[1])
    m = logits.max(1, keepdims=True)
    e = np.exp(logits - m)
    p = e / e.sum(1, keepdims=True)
    return DenseRef(logits=logits, probs=p, out=p @ V64, V=V64)


@dataclass
class Quality:
    mass_recall: float
    topk_recall: float
    rel_error: float


def quality(ref: DenseRef, h: int, selected: np.ndarray, B: int,
            alpha: float | None = None) -> Quality:
    """Quality of query head ``h`` (row of ``ref``) attending to ``selected``."""
    p = ref.probs[h]
    n = p.size
    sel = np.asarray(selected, np.int64)
    mass = float(p[sel].sum())
    k = min(B, n)
    if k >= n:
        topk = 1.0 if sel.size >= n else sel.size / n
    else:
        top = np.argpartition(-ref.logits[h], k - 1)[:k]
        topk = float(np.isin(top, sel, assume_unique=True).sum()) / k
    lg = ref.logits[h, sel]
    w = np.exp(lg - lg.max())
    w /= w.sum()
    o = w @ ref.V[sel]
    if alpha is not None:
        o = alpha * o + (1.0 - alpha) * ref.V.mean(0)
    ref_o = ref.out[h]
    err = float(np.linalg.norm(o - ref_o) / max(np.linalg.norm(ref_o), 1e-300))
    return Quality(mass, topk, err)


def floor_cycles(cfg: Config, n_tokens: int, head_dim: int) -> float:
    """Cycles to stream the K and V bytes of ``n_tokens`` at the channel's internal bandwidth
    (:meth:`starc.config.Config.floor_cycles`)."""
    return cfg.floor_cycles(n_tokens, head_dim)


@dataclass
class ProgramCost:
    commands: int
    cycles: int
    energy_pj: float
    attacc_energy_pj: float
    floor: float
    breakdown: dict[str, int]
    energy_breakdown: dict[str, float]
    selection_cycles: int = 0          # included in cycles
    selection_energy_pj: float = 0.0   # included in energy_pj
    selection_attacc_energy_pj: float = 0.0

    @property
    def ratio_to_floor(self) -> float:
        return self.cycles / self.floor if self.floor else float("nan")


def program_cost(prog: np.ndarray, cfg: Config, head_dim: int, n_tokens: int) -> ProgramCost:
    """Golden-model cycles and energy of one channel program."""
    from starc.golden import energy, timing

    s = timing.schedule(prog, cfg)
    e = energy.account(prog, cfg, head_dim)
    return ProgramCost(commands=len(prog), cycles=int(s.total_cycles), energy_pj=e.total_pj,
                       attacc_energy_pj=e.attacc_pj,
                       floor=floor_cycles(cfg, n_tokens, head_dim),
                       breakdown=dict(s.breakdown), energy_breakdown=dict(e.breakdown))


def step_cost(prog: np.ndarray, n_selection: int, cfg: Config, head_dim: int, n_tokens: int,
              host_cycles: int = 0) -> ProgramCost:
    """Cycles and energy of a step program whose first ``n_selection`` commands are its selection
    pass (ending with RDSB and BAR). The selection part is exact: the program is scheduled in
    order, so its prefix schedules alone as it does inside the step, and ``selection_cycles`` is
    the prefix's completion (the BAR). The breakdowns hold ``selection`` (cycles: the prefix plus
    ``host_cycles``, the host's choice, not modelled by default) and the attention part's
    categories (step minus prefix). ``host_cycles`` are added once when there is a pass."""
    from starc.golden import energy, timing

    if n_selection == 0:
        c = program_cost(prog, cfg, head_dim, n_tokens)
        c.breakdown = {"selection": 0, **c.breakdown}
        c.energy_breakdown = {"selection": 0.0, **c.energy_breakdown}
        return c
    s = timing.schedule(prog, cfg)
    pre = timing.schedule(prog[:n_selection], cfg)
    sel_cycles = int(pre.total_cycles) + int(host_cycles)
    e_sel = energy.account(prog[:n_selection], cfg, head_dim)
    e_att = energy.account(prog[n_selection:], cfg, head_dim)
    bd = {"selection": sel_cycles, **{k: int(v - pre.breakdown.get(k, 0))
                                      for k, v in s.breakdown.items()}}
    return ProgramCost(commands=len(prog), cycles=int(s.total_cycles) + int(host_cycles),
                       energy_pj=e_sel.total_pj + e_att.total_pj,
                       attacc_energy_pj=e_sel.attacc_pj + e_att.attacc_pj,
                       floor=floor_cycles(cfg, n_tokens, head_dim), breakdown=bd,
                       energy_breakdown={"selection": e_sel.total_pj, **e_att.breakdown},
                       selection_cycles=sel_cycles, selection_energy_pj=e_sel.total_pj,
                       selection_attacc_energy_pj=e_sel.attacc_pj)

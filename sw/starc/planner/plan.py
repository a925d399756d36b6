"""Decode planner: per decode step, layer and query head, the selected tokens, the rows to open,
the occupancy, and the PIM command program with its ``wdata`` side table.

GQA counting rule (docs/compiler.md): every query head selects on its own (SparQ and StreamingLLM
select once per KV head), and the PIM computes one query head per program (the GEMV buffer holds
one query), so rows are activated *per query head*: that is the primary cost. The *GQA union*
(rows holding a token selected by any query head of the KV head) is what a batched-query PIM would
have to fetch once; it is reported beside it, per KV head.

Layers in ``dense_layers`` (0 and 1 by default) use dense attention under every policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from starc.address import Geometry
from starc.compiler.compiled import CompiledKV, HeadMap, Located
from starc.planner import policies as pol
from starc.planner import registry
from starc.planner.budget import Budget, parse_budget
from starc.planner.program import SelectionPass, emit_program, query_words, step_program
from starc.planner.registry import DENSE_LAYERS, LAYOUT_OF, Params
from starc.planner.rounds import OBJECTIVES, RowPlan, plan_rows, whole_rounds
from starc.planner.selection import selection_pass

__all__ = ["LAYOUT_OF", "Planner", "StepPlan", "concat_located"]  # LAYOUT_OF: registry's

@dataclass
class StepPlan:
    step: int
    layer: int
    q_head: int
    kv_head: int
    n_ctx: int
    selected: np.ndarray
    located: Located
    rows: RowPlan
    alpha: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    scored: bool = False       # the choice needed scores: the step has a selection pass

    def program(self, hm: HeadMap, geo: Geometry, banks_per_pu: int = 1) -> np.ndarray:
        return emit_program(self.rows, geo, krow_base=hm.row_base,
                            vrow_base=hm.row_base + hm.n_krows, banks_per_pu=banks_per_pu)


def concat_located(locs: list[Located]) -> Located:
    return Located(*(np.concatenate([getattr(x, f) for x in locs])
                     for f in ("group", "row", "set", "slot", "block")))


class Planner:
    """Plans decode steps of ``compiled`` (whose layout must suit ``policy``, see
    :data:`~starc.planner.registry.LAYOUT_OF`) under ``budget``: a token count B, or a mass
    target (``"p0.95"`` or a :class:`~starc.planner.budget.Budget`) for the policies that adapt."""

    def __init__(self, compiled: CompiledKV, policy: str, budget: int | str | Budget, *,
                 dense_layers: tuple[int, ...] | list[int] = DENSE_LAYERS,
                 sparq_r: int | None = None, sparq_recent: int = 64, sinks: int = 4,
                 objective: str = OBJECTIVES[0], whole_cache: dict | None = None) -> None:
        self.spec = registry.get(policy)
        want = self.spec.layout
        if compiled.mode != want:
            raise ValueError(f"policy {policy!r} needs a {want!r} compilation, this one is "
                             f"{compiled.mode!r}; compile with --mode {want}")
        self.budget = parse_budget(budget)
        if self.budget.adaptive and not self.spec.adaptive:
            raise ValueError(f"policy {policy!r} has no mass-adaptive mode (budget "
                             f"{self.budget.label}); use a token budget")
        self.ck = compiled
        self.policy = policy
        self.B = self.budget.limit          # B, or the mass budget's cap
        self.dense_layers = set(int(x) for x in dense_layers)
        m = compiled.cache.meta
        self.meta = m
        self.geo = compiled.geometry
        self.params = Params(sparq_r=sparq_r, sparq_recent=sparq_recent, sinks=sinks)
        r = self.params.r(m.head_dim)
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= m.head_dim:
            raise ValueError(f"sparq_r must be an integer in 1..head_dim ({m.head_dim}), not "
                             f"{sparq_r!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not "
                             f"{objective!r}")
        self.objective = objective
        # the whole-head rounds depend on the layout and the context only: planners of one
        # compiled image may share them (evaluate passes one dict per image)
        self._whole_cache: dict = whole_cache if whole_cache is not None else {}
        self._norms: dict[tuple[int, int], np.ndarray] = {}

    def context(self, step: int) -> int:
        m = self.meta
        if not 0 <= step < m.decode_steps:
            raise ValueError(f"decode step {step} out of range (the cache has {m.decode_steps})")
        return m.prefill_len + step + 1

    def select(self, step: int, layer: int, kv_head: int) -> pol.Selection:
        """Selections of the query heads of one KV head."""
        n = self.context(step)
        m, c = self.meta, self.ck.cache
        g = m.group_size
        q = c.q[layer][step, kv_head * g:(kv_head + 1) * g].astype(np.float32)
        if layer in self.dense_layers:
            return pol._all(n, g)
        K = None if self.spec.clustered else c.k[layer][:n, kv_head].astype(np.float32)
        hm = self.ck.head(layer, kv_head)
        host = None
        if self.budget.adaptive and self.spec.clustered:
            # what the host knows besides the centroid scores: per-cluster key norms (kept with
            # the cluster table; the query metric stores mean raw keys as centroids, so q . c is
            # already the mean logit) and the exact logits of the always-attended tokens (read
            # back by the selection pass, :mod:`starc.planner.selection`)
            norms = None
            if self.ck.options.get("metric") != "query":
                norms = self._norms.get((layer, kv_head))
                if norms is None:
                    norms = self._norms[(layer, kv_head)] = pol.cluster_norms(
                        hm, c.k[layer][:, kv_head])
            a = pol.always_attended(hm, n, self.B)
            Ka = c.k[layer][a, kv_head].astype(np.float32)
            host = {"norms": norms,
                    "always_logits": (q @ Ka.T) / np.float32(np.sqrt(m.head_dim))}
        return self.spec.select(q, n=n, budget=self.budget, params=self.params, K=K, head=hm,
                                host=host)

    def plan(self, step: int, layer: int, kv_head: int) -> list[StepPlan]:
        """One :class:`StepPlan` per query head of ``kv_head``."""
        n = self.context(step)
        sel = self.select(step, layer, kv_head)
        hm = self.ck.head(layer, kv_head)
        g = self.meta.group_size
        out = []
        shared = None
        for j, pos in enumerate(sel.positions):
            if shared is not None and np.array_equal(pos, shared[0]):
                loc, rows = shared[1], shared[2]        # one selection for the group: one plan
            else:
                loc = hm.locate(pos, n)
                rows = self.rows_for(loc, whole=self.whole(layer, kv_head, n)
                                     if self.objective == "cycles" else None)
                if self.spec.multi_query:
                    shared = (pos, loc, rows)
            out.append(StepPlan(step=step, layer=layer, q_head=kv_head * g + j, kv_head=kv_head,
                                n_ctx=n, selected=pos, located=loc, rows=rows,
                                alpha=None if sel.alpha is None else float(sel.alpha[j]),
                                extra=dict(sel.extra), scored=sel.scored))
        return out

    def whole(self, layer: int, kv_head: int, n: int) -> list:
        """The cycles-objective rounds of every token of the head at context ``n`` (the guard's
        reference, shared by the query heads of a step)."""
        key = (layer, kv_head, n)
        c = self._whole_cache
        if c.get("key") != key:
            loc = self.ck.head(layer, kv_head).locate(np.arange(n), n)
            c["rounds"] = whole_rounds(loc.group, loc.row, loc.lane_bit, loc.set, self.geo,
                                       self.ck.cfg, exact=self._exact)
            c["key"] = key
        return c["rounds"]

    def rows_for(self, loc: Located, objective: str | None = None,
                 whole: list | None = None) -> RowPlan:
        """Activation rounds of the tokens at ``loc`` (:func:`starc.planner.rounds.plan_rows`);
        the plan-level guard times both formations on the golden model when they are close."""
        return plan_rows(loc.group, loc.row, loc.lane_bit, loc.set, self.geo,
                         objective=objective or self.objective, cfg=self.ck.cfg,
                         exact=self._exact, whole=whole)

    def _exact(self, rp: RowPlan) -> int:
        """Golden-model cycles of the attention program of ``rp`` (the guard's referee)."""
        from starc.golden.timing import schedule

        cfg = self.ck.cfg
        prog = emit_program(rp, self.geo, krow_base=0, vrow_base=0,
                            banks_per_pu=cfg.pu.banks_per_pu)
        return schedule(prog, cfg).total_cycles

    def rows_for_tokens(self, group: np.ndarray, row: np.ndarray, lane_bit: np.ndarray,
                        token_set: np.ndarray) -> RowPlan:
        """Activation rounds of arbitrary vectors (a selection pass's scanned rows)."""
        return plan_rows(group, row, lane_bit, token_set, self.geo, objective=self.objective,
                         cfg=self.ck.cfg)

    def union_rows(self, plans: list[StepPlan]) -> RowPlan:
        """Rows the query heads of one KV head need together (the GQA union; counted without
        dummy rows)."""
        hm = self.ck.head(plans[0].layer, plans[0].kv_head)
        pos = np.unique(np.concatenate([p.selected for p in plans]))
        return self.rows_for(hm.locate(pos, plans[0].n_ctx), "energy")

    def program(self, sp: StepPlan) -> tuple[np.ndarray, np.ndarray]:
        """Attention program and ``wdata`` (query chunks, uint16 ``[d/16, 16]``) of one plan."""
        hm = self.ck.head(sp.layer, sp.kv_head)
        q16 = self.ck.cache.q[sp.layer][sp.step, sp.q_head]
        prog = sp.program(hm, self.geo, self.ck.cfg.pu.banks_per_pu)
        return prog, query_words(q16, self.meta.head_dim, self.geo.lanes)

    def selection(self, sp: StepPlan) -> SelectionPass | None:
        """The selection pass of one plan (:mod:`starc.planner.selection`), or ``None``."""
        return selection_pass(self, sp)

    def group_program(self, plans: list[StepPlan]) -> tuple[np.ndarray, np.ndarray, int]:
        """The step of a multi-query policy (registry: ``Policy.multi_query``) for the query
        heads ``plans`` of one KV head, which share one plan: the heads' selection scans of the
        centroid rows, opened once with one pass of MACs per head and one read-back per head
        (:func:`starc.planner.program.emit_selection_shared`; passes of several scans go one
        head after the other), then the attention of all heads over the shared rows
        (:func:`starc.planner.multihead.shared_program`: every round opens its rows once and
        runs one pass of MACs per query head, head k named k). Returns ``(program, wdata,
        commands of the selection part)``."""
        from starc.planner.multihead import shared_program
        from starc.planner.program import emit_selection, emit_selection_shared

        if not plans:
            raise ValueError("group_program needs the plans of at least one query head")
        sp0 = plans[0]
        if any((sp.layer, sp.kv_head, sp.step) != (sp0.layer, sp0.kv_head, sp0.step) or
               not np.array_equal(sp.selected, sp0.selected) for sp in plans):
            raise ValueError("group_program runs query heads of one KV head and step that "
                             "attend the same positions (a multi-query policy's plans)")
        hm = self.ck.head(sp0.layer, sp0.kv_head)
        geo, cfg = self.geo, self.ck.cfg
        parts, words, at = [], [], 0
        sels = [self.selection(sp) for sp in plans]
        if all(sel is not None and len(sel.scans) == 1 for sel in sels):
            # one scan per head over the same rows (the centroid rows): opened once, one pass
            # of MACs per head, one read-back per head
            parts.append(emit_selection_shared(sels, geo, banks_per_pu=cfg.pu.banks_per_pu))
            words = [sel.wdata() for sel in sels]
            at = int(sum(len(w) for w in words))
        else:
            for sel in sels:
                if sel is not None and sel.scans:
                    parts.append(emit_selection(sel, geo, banks_per_pu=cfg.pu.banks_per_pu,
                                                wdata_base=at))
                    w = sel.wdata()
                    words.append(w)
                    at += len(w)
        n_sel = int(sum(len(x) for x in parts))
        chunks = geo.d // geo.lanes
        qw = [query_words(self.ck.cache.q[sp.layer][sp.step, sp.q_head], geo.d, geo.lanes)
              for sp in plans]
        # the shared scan left every head's query in its GEMV buffer: no second WRGB
        held = len(parts) == 1 and all(np.array_equal(sel.scans[0].query, w)
                                       for sel, w in zip(sels, qw, strict=True))
        if held:
            queries = [k * chunks for k in range(len(plans))]
        else:
            queries = [at + k * chunks for k in range(len(plans))]
            words += qw
        att = shared_program(sp0.rows, queries, geo, cfg, krow_base=hm.row_base,
                             vrow_base=hm.row_base + hm.n_krows, write_query=not held)
        return np.concatenate(parts + [att]), np.concatenate(words), n_sel

    def step_program(self, sp: StepPlan) -> tuple[np.ndarray, np.ndarray, int]:
        """The whole step: selection program (if any) then attention program. Returns
        ``(program, wdata, commands of the selection part)``."""
        hm = self.ck.head(sp.layer, sp.kv_head)
        q16 = self.ck.cache.q[sp.layer][sp.step, sp.q_head]
        return step_program(self.selection(sp), sp.rows, self.geo,
                            query_words(q16, self.meta.head_dim, self.geo.lanes),
                            krow_base=hm.row_base, vrow_base=hm.row_base + hm.n_krows,
                            banks_per_pu=self.ck.cfg.pu.banks_per_pu)

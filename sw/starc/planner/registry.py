"""The one registry of selection policies: definition, layout and selection pass of each.

Everything that names a policy reads it from here: the planner (:class:`~starc.planner.Planner`),
the evaluation (``starc eval``), sweeps, the demo and the real-model bridge
(:mod:`starc.model.policy_decode`). A policy is

- a **rule** (:func:`Policy.select`: which positions each query head of one KV head attends to at
  one decode step under a budget; the functions are in :mod:`starc.planner.policies`);
- a **layout**: the compile mode its memory image needs (``dense`` is the positional AttAcc
  layout; :func:`compile_options` gives the options, the same everywhere);
- a **selection pass**: what the PIM must compute before the host can choose
  (:data:`SELECTION_PASSES`; the planner emits it as a program, docs/planner.md).

Rules every policy keeps (property tests in tests/sw/test_registry.py): the budget counts every
attended token, recent ones included; a context of at most ``B`` tokens is attended fully; layers
in :data:`DENSE_LAYERS` are dense under every policy (the planner applies that rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from starc.compiler.compile import CompileOptions
from starc.planner import policies as pol
from starc.planner.budget import Budget, parse_budget
from starc.planner.gqa import select_starc_shared

__all__ = [
    "DEFAULT_POLICIES",
    "DENSE_LAYERS",
    "LAYOUT_OF",
    "POLICIES",
    "REGISTRY",
    "SELECTION_PASSES",
    "Params",
    "Policy",
    "compile_options",
    "get",
]

#: layers attended densely under every policy (the compiler's default; one value everywhere)
DENSE_LAYERS: tuple[int, ...] = CompileOptions().dense_layers

#: selection passes: what the PIM computes so the host can choose (docs/planner.md)
SELECTION_PASSES = {
    "none": "nothing to compute: the rule is positional",
    "centroids": "query x centroid-row scan over the region's centroid rows, scores read back",
    "r-channels": "score scan of every key with the query cut to its r largest-|q| channels",
    "page-bounds": "q+ x page-max and q- x page-min scans over the page-bound rows",
    "exact-scores": "score scan of every key with the whole query (what an oracle must know)",
}


@dataclass(frozen=True)
class Params:
    """Policy parameters (defaults: the published methods')."""

    sparq_r: int | None = None      # SparQ channels r (None: head_dim / 4)
    sparq_recent: int = 64          # SparQ recent window, inside B
    sinks: int = 4                  # StreamingLLM sinks

    def r(self, head_dim: int) -> int:
        return self.sparq_r if self.sparq_r is not None else max(1, head_dim // 4)


@dataclass(frozen=True)
class Policy:
    name: str
    layout: str                     # compile mode (``dense``: the positional AttAcc layout)
    selection: str                  # key of SELECTION_PASSES
    shared: bool                    # one selection per KV head (the GQA group shares it)
    rule: str
    source: str
    _select: Callable[..., pol.Selection]
    adaptive: bool = False          # supports a mass budget (p0.95: starc.planner.budget)
    multi_query: bool = False       # the GEMV buffer holds the GQA group's queries: one program
                                    # per KV head, each row opened once, MACs per query head
    colour: str = "#999999"         # plots (starc.plots): fixed per policy, Okabe-Ito palette
    marker: str = "o"

    @property
    def clustered(self) -> bool:
        return self.layout != "dense"

    def select(self, q: np.ndarray, *, n: int, budget: int | str | Budget,
               params: Params | None = None, K: np.ndarray | None = None, head: Any = None,
               host: dict[str, Any] | None = None) -> pol.Selection:
        """Selections of the ``g`` query heads ``q [g, d]`` of one KV head at context ``n``.
        Positional policies read the keys ``K [n, d]`` (float32); clustered ones the compiled
        head map ``head`` of that KV head, and, for an adaptive budget, what the host knows
        besides the centroid scores (``host``: ``norms``, the per-cluster key norms,
        :func:`starc.planner.policies.cluster_norms`; ``always_logits``, the exact logits of the
        always-attended tokens the selection pass reads back)."""
        b = parse_budget(budget)
        if b.adaptive and not self.adaptive:
            raise ValueError(f"policy {self.name!r} has no mass-adaptive mode (budget "
                             f"{b.label}); use a token budget, or one of "
                             f"{', '.join(n for n, p in REGISTRY.items() if p.adaptive)}")
        p = params or Params()
        if self.clustered:
            if head is None:
                raise ValueError(f"policy {self.name!r} selects on a compiled {self.layout!r} "
                                 f"head map; pass head=")
            return self._select(q, None, head, n, b, p, host or {})
        if K is None:
            raise ValueError(f"policy {self.name!r} reads the keys; pass K=")
        if K.shape[0] != n:
            raise ValueError(f"K holds {K.shape[0]} positions, the context is {n}")
        return self._select(q, K, head, n, b, p, host or {})


def _dense(q: np.ndarray, K: Any, hm: Any, n: int, b: Budget, p: Params,
           nrm: Any) -> pol.Selection:
    return pol.select_dense(q, K, b.limit)


def _oracle(q: np.ndarray, K: Any, hm: Any, n: int, b: Budget, p: Params,
            nrm: Any) -> pol.Selection:
    return pol.select_oracle(q, K, b.limit, mass=b.mass, threshold=b.threshold, floor=b.floor,
                             tokens_per_row=hm.tpgr if hm is not None else 32)


def _quest(q: np.ndarray, K: Any, hm: Any, n: int, b: Budget, p: Params,
           nrm: Any) -> pol.Selection:
    return pol.select_quest(q, K, b.limit)


def _sparq(q: np.ndarray, K: Any, hm: Any, n: int, b: Budget, p: Params,
           nrm: Any) -> pol.Selection:
    return pol.select_sparq(q, K, b.limit, r=p.r(q.shape[1]), recent=p.sparq_recent)


def _streaming(q: np.ndarray, K: Any, hm: Any, n: int, b: Budget, p: Params,
               nrm: Any) -> pol.Selection:
    return pol.select_streaming(q, K, b.limit, sinks=p.sinks)


def _starc(q: np.ndarray, K: Any, hm: Any, n: int, b: Budget, p: Params,
           nrm: Any) -> pol.Selection:
    return pol.select_starc(q, hm, n, b.limit, mass=b.mass, threshold=b.threshold, floor=b.floor,
                            norms=nrm.get("norms"), always_logits=nrm.get("always_logits"))


def _starc_shared(q: np.ndarray, K: Any, hm: Any, n: int, b: Budget, p: Params,
                  nrm: Any) -> pol.Selection:
    return select_starc_shared(q, hm, n, b.limit)


_STARC_RULE = ("score every available cluster q . centroid / sqrt(d) (fp32), whole clusters in "
               "descending order while they fit B - recent, the first overflowing one cut to fill "
               "B; recent buffer and sink block always attended")

#: every policy, in display order
REGISTRY: dict[str, Policy] = {p.name: p for p in (
    Policy("dense", "dense", "none", True, "all n positions", "full attention", _dense,
           colour="#000000", marker="o"),
    Policy("oracle", "dense", "exact-scores", False, "the B largest exact scores q . k per query "
           "head (quality upper bound)", "top-k attention", _oracle, adaptive=True,
           colour="#7f7f7f", marker="v"),
    Policy("quest", "dense", "page-bounds", False, "16-token pages, score sum_i max(q_i min_i, "
           "q_i max_i), max(3, B // 16) pages per query head, current page always in",
           "Quest (github.com/mit-han-lab/Quest)", _quest, colour="#E69F00", marker="s"),
    Policy("sparq", "dense", "r-channels", True, "approximate scores from the r = d/4 largest-|q| "
           "channels, probabilities of the GQA group summed, top B - 64 shared per KV head plus "
           "the last 64; output alpha o + (1 - alpha) mean(V)", "SparQ (arXiv 2312.04985)",
           _sparq, colour="#009E73", marker="^"),
    Policy("streaming", "dense", "none", True, "4 sinks + the last B - 4 positions",
           "StreamingLLM (arXiv 2309.17453)", _streaming, colour="#CC79A7", marker="D"),
    Policy("starc", "artifact", "centroids", False, _STARC_RULE + " (artifact clusters: 64-token "
           "windows, 4 Lloyd clusters each)", "STARC artifact (github.com/EPIC-RPI/STARC)",
           _starc, adaptive=True, colour="#0072B2", marker="P"),
    Policy("starc-row", "row-aligned", "centroids", False, _STARC_RULE + " (row-aligned "
           "clusters of one group row, sink row, co-selection placement)", "this project",
           _starc, adaptive=True, colour="#D55E00", marker="X"),
    Policy("starc-global", "global", "centroids", False, _STARC_RULE + " (one k-means over the "
           "whole prefill, ~32 tokens per cluster, sink row)", "STARC v1 paper variant", _starc,
           adaptive=True, colour="#56B4E9", marker="*"),
    Policy("starc-row-gqa", "row-aligned", "centroids", True, "one selection per KV head for "
           "its GQA group: each query head's estimated mass share of every cluster, size_c "
           "exp(q . c / sqrt(d)) normalised, averaged over the heads; whole clusters in that "
           "order while they fit B - recent, the first overflowing one cut to fill B; sink row "
           "and recent buffer always attended; run with a multi-query GEMV buffer: each row "
           "opened once per KV head, MACs per query head", "this project (docs/compiler.md, "
           "GQA-shared selection)", _starc_shared, multi_query=True, colour="#F0E442",
           marker="h"),
)}

POLICIES: tuple[str, ...] = tuple(REGISTRY)
#: the policies ``starc eval``, ``starc sweep`` and ``starc demo`` compare by default
DEFAULT_POLICIES: tuple[str, ...] = ("dense", "oracle", "quest", "sparq", "streaming", "starc",
                                     "starc-row")
#: compile mode of each policy (derived)
LAYOUT_OF: dict[str, str] = {name: p.layout for name, p in REGISTRY.items()}


def get(name: str) -> Policy:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}") from None


def compile_options(policy: str, *, seed: int = 0,
                    dense_layers: tuple[int, ...] | list[int] = DENSE_LAYERS,
                    **overrides: Any) -> CompileOptions:
    """The compile options of ``policy``'s layout (the mode's defaults unless overridden): what
    every caller compiles with, so the same policy sees the same image everywhere."""
    return CompileOptions(mode=get(policy).layout, seed=seed, dense_layers=tuple(dense_layers),
                          **overrides)

"""GQA-shared STARC selection: one selection per KV head for its whole query group.

A PIM whose GEMV buffer holds the ``g`` queries of a KV head opens every selected group row
once per decode step and MACs it against all of them. Per-query-head selection then pays for the
*union* of the heads' selections (about twice one head's rows on the synthetic GQA caches,
docs/compiler.md); a shared selection chooses one set of clusters for the group, so its rows are
what every head attends.

Rule (:func:`select_starc_shared`): each query head h estimates the share of its attention mass
that each available cluster c holds, ``p_hc = size_c exp(l_hc) / sum_c' size_c' exp(l_hc')``
with ``l_hc = q_h . c / sqrt(d)`` (times the cluster's mean key norm when ``norms`` is given:
centroids of unit keys; on query-metric layouts the centroid is the mean raw key, so ``l`` is
already the cluster's mean logit); the group score of c is the mean of ``p_hc`` over the heads.
Whole clusters in descending group score while they fit ``B - recent``, the first overflowing
one cut to fill ``B`` (its first slots in stored order), exactly as per-head STARC; the sink
block and the recent buffer are always attended. Every query head attends the same positions.
"""

from __future__ import annotations

import numpy as np

from starc.compiler.compiled import HeadMap
from starc.planner.policies import Selection, _all, _slots, row_scores

__all__ = ["COMBINES", "group_scores", "select_starc_shared"]

COMBINES = ("mean", "max")


def group_scores(q: np.ndarray, centroids: np.ndarray, sizes: np.ndarray,
                 norms: np.ndarray | None = None, combine: str = "mean",
                 logits: np.ndarray | None = None) -> np.ndarray:
    """Each cluster's estimated share of a query head's attention mass, combined over the query
    heads by ``combine``: ``mean`` (sums to 1 when every size is positive) or ``max`` (a cluster
    is as important as it is to the head that needs it most). ``q [g, d]``, ``centroids
    [C, d]``, ``sizes [C]`` -> ``[C]`` float64. ``logits [g, C]``: each head's estimated
    cluster logits in place of ``q . centroid / sqrt(d)`` (a head's row-score rule,
    :func:`starc.planner.policies.row_scores`)."""
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {', '.join(COMBINES)}, not {combine!r}")
    g, d = q.shape
    lg = (np.asarray(q, np.float64) @ np.asarray(centroids, np.float64).T) / np.sqrt(d) \
        if logits is None else np.asarray(logits, np.float64)
    if norms is not None:
        lg = lg * np.asarray(norms, np.float64)[None, :]
    lg = lg - lg.max(axis=1, keepdims=True)
    w = np.asarray(sizes, np.float64)[None, :] * np.exp(lg)
    share = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    return share.mean(axis=0) if combine == "mean" else share.max(axis=0)


def select_starc_shared(q: np.ndarray, hm: HeadMap, n: int, B: int, *,
                        norms: np.ndarray | None = None, combine: str = "mean") -> Selection:
    """One STARC selection for the ``g`` query heads ``q [g, d]`` of a KV head (module
    docstring); returns the same positions for every head."""
    g, _ = q.shape
    if n <= B:
        return _all(n, g)
    e = hm.clustered_end(n)
    recent = np.arange(e, n, dtype=np.int64)
    sinks = np.arange(min(hm.sink_end, e, B), dtype=np.int64)
    if sinks.size + recent.size >= B:
        keep = np.concatenate([sinks, recent[recent.size - (B - sinks.size):]])
        return Selection([keep] * g, extra={"recent": float(B)})
    always = np.concatenate([sinks, recent])
    avail = hm.clusters_at(n)
    sizes, starts = hm.cl_size[avail], hm.cl_start[avail]
    sc = group_scores(q, hm.centroid[avail], sizes, None if norms is None else norms[avail],
                      combine, None if hm.row_scores == "centroid" else row_scores(q, hm, avail))
    order = np.argsort(-sc, kind="stable")
    budget = B - always.size
    cum = np.cumsum(sizes[order])
    whole = int(np.searchsorted(cum, budget, side="right"))
    taken = int(cum[whole - 1]) if whole else 0
    parts = [_slots(starts[order[:whole]], sizes[order[:whole]])]
    if whole < len(order) and taken < budget:
        c = order[whole]
        parts.append(np.arange(starts[c], starts[c] + (budget - taken)))
    pos = np.sort(np.concatenate([hm.slot_pos[np.concatenate(parts)], always]))
    return Selection([pos] * g, extra={"clusters": float(whole + (len(parts) > 1)),
                                       "recent": float(always.size)}, scored=True)

"""Selection rules: which key positions each query head attends to at one decode step.

The policies themselves (name, layout, selection pass, which rule) are listed once, in
:mod:`starc.planner.registry`; this module holds the rules.

Every policy works under a token budget ``B`` that counts recent (always attended) tokens too.
When the context ``n`` is at most ``B`` every policy attends to everything. Arrays:
``q [g, d]`` float32 (the ``g`` query heads of one KV head), ``K [n, d]`` float32 keys of that KV
head. Each function returns one sorted int64 position array per query head.

=============  =================================================================================
policy         rule
=============  =================================================================================
dense          all ``n`` positions
oracle         the ``B`` largest exact scores ``q . k`` per query head (upper bound on quality)
quest          16-token positional pages; page score ``sum_i max(q_i min_i, q_i max_i)`` over
               the page's per-channel key min/max; ``max(3, B // 16)`` pages per query head, the
               current (last) page always among them
sparq          approximate scores from the ``r`` largest-|q| channels (softmax with SparQ's
               temperature correction); the approximate probabilities of the ``g`` heads are
               summed and the top ``B - recent`` positions outside the recent window are shared
               by the whole GQA group, plus the last ``recent`` positions; ``alpha`` (the
               approximate mass kept) is returned for SparQ's mean-value correction
streaming      the first ``sinks`` positions and the last ``B - sinks``
starc          score every available cluster ``q . centroid / sqrt(d)`` (fp32), sort descending
               (stable), take whole clusters while the running count fits ``B - recent``, cut the
               first overflowing cluster to fill exactly (its first slots in stored order); the
               recent buffer (unclustered tokens) and the sink block (row-aligned mode) are
               always attended and counted in B. Each query head selects its own clusters.
=============  =================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from starc.compiler.compiled import HeadMap

__all__ = [
    "Selection",
    "select_dense",
    "always_attended",
    "cluster_norms",
    "combine_row_scores",
    "row_scores",
    "select_oracle",
    "sparq_channels",
    "select_quest",
    "select_sparq",
    "select_starc",
    "select_streaming",
]

PAGE = 16


@dataclass
class Selection:
    """Per query head of one KV head: attended positions (sorted) and policy extras."""

    positions: list[np.ndarray]
    alpha: np.ndarray | None = None        # SparQ: approximate mass kept, per query head
    extra: dict[str, float] = field(default_factory=dict)
    scored: bool = False                   # the choice needed scores (a selection pass)


def _all(n: int, g: int) -> Selection:
    a = np.arange(n, dtype=np.int64)
    return Selection([a] * g)


def select_dense(q: np.ndarray, K: np.ndarray, B: int) -> Selection:
    return _all(K.shape[0], q.shape[0])


def select_oracle(q: np.ndarray, K: np.ndarray, B: int, *, mass: float | None = None,
                  threshold: float | None = None, tokens_per_row: int = 32,
                  floor: int = 0) -> Selection:
    """Top-B exact scores per query head; with ``mass``: the fewest top tokens whose exact
    softmax mass reaches ``mass``; with ``threshold``: every token whose exact probability is at
    least ``threshold / tokens_per_row`` (the per-row threshold spread over a row's tokens); at
    least ``floor``, at most ``B`` tokens."""
    n = K.shape[0]
    floor = min(floor, B)
    adaptive = mass is not None or threshold is not None
    if n <= (floor if adaptive else B):
        return _all(n, q.shape[0])
    s = q @ K.T                                                      # [g, n]
    if not adaptive:
        top = np.argpartition(-s, B - 1, axis=1)[:, :B]
        return Selection([np.sort(t) for t in top], scored=True)
    out = []
    for h in range(q.shape[0]):
        lg = s[h].astype(np.float64) / np.sqrt(K.shape[1])
        order = np.argsort(-lg, kind="stable")
        p = np.exp(lg[order] - lg[order[0]])
        if mass is not None:
            k = int(np.searchsorted(np.cumsum(p) / p.sum(), mass - 1e-12)) + 1
        else:
            k = int(np.count_nonzero(p / p.sum() >= threshold / tokens_per_row))
        out.append(np.sort(order[:min(max(k, floor), B)]))
    return Selection(out, scored=True)


def select_quest(q: np.ndarray, K: np.ndarray, B: int) -> Selection:
    n, d = K.shape
    g = q.shape[0]
    if n <= B:
        return _all(n, g)
    n_pages = -(-n // PAGE)
    pad = n_pages * PAGE - n
    Kp = np.concatenate([K, np.repeat(K[-1:], pad, axis=0)]) if pad else K
    Kp = Kp.reshape(n_pages, PAGE, d)
    kmin, kmax = Kp.min(1), Kp.max(1)                                # [pages, d]
    score = np.maximum(q[:, None, :] * kmin[None], q[:, None, :] * kmax[None]).sum(-1)
    want = max(3, B // PAGE)
    cur = n_pages - 1
    score[:, cur] = np.inf                                           # current page always in
    want = min(want, n_pages)
    top = np.argpartition(-score, want - 1, axis=1)[:, :want]
    out = []
    for t in top:
        pages = np.sort(t)
        pos = (pages[:, None] * PAGE + np.arange(PAGE)[None]).reshape(-1)
        out.append(pos[pos < n])
    return Selection(out, scored=want < n_pages)


def sparq_channels(q: np.ndarray, r: int) -> np.ndarray:
    """SparQ's ``r`` largest-|q| channels of each query head ``[g, r]`` (the approximate pass
    reads these channels of every key)."""
    return np.argpartition(-np.abs(q), min(r, q.shape[1]) - 1, axis=1)[:, :r]


def select_sparq(q: np.ndarray, K: np.ndarray, B: int, *, r: int, recent: int) -> Selection:
    n, d = K.shape
    g = q.shape[0]
    if n <= B:
        return Selection(_all(n, g).positions, alpha=np.ones(g))
    r = min(r, d)
    recent = min(recent, B)
    idx = sparq_channels(q, r)                                       # [g, r]
    qr = np.take_along_axis(q, idx, axis=1)                          # [g, r]
    Kr = K[:, idx].transpose(1, 0, 2)                                # [g, n, r]
    # SparQ: temperature sqrt(d * ||q_r||_1 / ||q||_1) compensates the dropped channels
    temp = np.sqrt(d * np.abs(qr).sum(1) / np.maximum(np.abs(q).sum(1), 1e-30))
    temp = np.where(temp > 0, temp, 1.0)    # q = 0: every approximate score is 0 (uniform)
    s = np.einsum("gnr,gr->gn", Kr, qr) / temp[:, None]
    s = s - s.max(1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(1, keepdims=True)
    k_top = B - recent
    old = n - recent
    shared = p[:, :old].sum(0)
    top = np.sort(np.argpartition(-shared, k_top - 1)[:k_top]) if k_top > 0 else \
        np.zeros(0, np.int64)
    pos = np.concatenate([top, np.arange(old, n)]).astype(np.int64)
    alpha = p[:, pos].sum(1)
    return Selection([pos] * g, alpha=alpha, scored=True)


def select_streaming(q: np.ndarray, K: np.ndarray, B: int, *, sinks: int = 4) -> Selection:
    n = K.shape[0]
    g = q.shape[0]
    if n <= B:
        return _all(n, g)
    sinks = min(sinks, B)
    pos = np.concatenate([np.arange(sinks), np.arange(n - (B - sinks), n)]).astype(np.int64)
    return Selection([pos] * g)


def always_attended(hm: HeadMap, n: int, B: int) -> np.ndarray:
    """The positions STARC attends without choosing at context ``n``: the sink block (within B)
    and the recent buffer, in that order."""
    e = hm.clustered_end(n)
    return np.concatenate([np.arange(min(hm.sink_end, e, B)), np.arange(e, n)]).astype(np.int64)


def select_starc(q: np.ndarray, hm: HeadMap, n: int, B: int, *, mass: float | None = None,
                 threshold: float | None = None, floor: int = 0,
                 norms: np.ndarray | None = None,
                 always_logits: np.ndarray | None = None) -> Selection:
    """STARC selection on a compiled head (see the module table). With an adaptive budget
    (:mod:`starc.planner.budget`) ``B`` is the cap and each query head takes clusters in
    descending estimated logit: with ``mass``, until the estimated share of the head's attention
    mass (always-attended tokens included) reaches it; with ``threshold``, every cluster whose
    estimated share per group row (``share_c x tpgr / size_c``) is at least it; then more until
    ``floor`` tokens are attended; past the cap the fixed rule applies. The estimated logit of
    cluster c is ``score_c x norms[c]`` (``norms``: the mean key norm of each cluster, held by the
    host; centroids are means of unit keys), its estimated mass ``size_c exp(logit_c)``;
    ``always_logits [g, a]`` are the exact logits of :func:`always_attended` (the selection pass
    reads them back with the centroid scores) and enter the estimate's total."""
    g, d = q.shape
    floor = min(floor, B)
    adaptive = mass is not None or threshold is not None
    if n <= (floor if adaptive else B):
        return _all(n, g)
    e = hm.clustered_end(n)
    recent = np.arange(e, n, dtype=np.int64)
    sinks = np.arange(min(hm.sink_end, e, B), dtype=np.int64)
    if sinks.size + recent.size >= B:  # tiny budget: sinks, then the newest tokens
        keep = np.concatenate([sinks, recent[recent.size - (B - sinks.size):]])
        return Selection([keep] * g, extra={"recent": float(B)})
    recent = np.concatenate([sinks, recent])
    avail = hm.clusters_at(n)
    sizes = hm.cl_size[avail]
    starts = hm.cl_start[avail]
    score = row_scores(q, hm, avail)
    budget = B - recent.size
    logit = score * (norms[avail] if norms is not None else np.float32(1.0))
    out = []
    n_clusters = 0.0
    for h in range(g):
        order = np.argsort(-(logit[h] if adaptive else score[h]), kind="stable")
        cum = np.cumsum(sizes[order])
        whole = int(np.searchsorted(cum, budget, side="right"))     # clusters fully taken
        if adaptive and order.size:
            lg = logit[h, order].astype(np.float64)
            la = (np.asarray(always_logits[h], np.float64) if always_logits is not None
                  else np.zeros(0))
            top = max(lg.max(), la.max() if la.size else -np.inf)
            w = sizes[order] * np.exp(lg - top)
            w_always = float(np.exp(la - top).sum())
            total = max(w.sum() + w_always, 1e-300)
            if mass is not None:                                     # reach the mass
                k = 0 if w_always / total >= mass - 1e-12 else int(np.searchsorted(
                    (w_always + np.cumsum(w)) / total, mass - 1e-12)) + 1
            else:                                                    # rows worth their mass
                per_row = np.exp(lg - top) * hm.tpgr / total
                k = int(np.count_nonzero(per_row >= threshold))
            if floor > recent.size:                                  # and the floor
                k = max(k, int(np.searchsorted(cum, floor - recent.size)) + 1)
            if k <= whole:                                           # within the cap
                whole, budget = k, int(cum[k - 1]) if k else 0
        taken = int(cum[whole - 1]) if whole else 0
        parts = [_slots(starts[order[:whole]], sizes[order[:whole]])]
        if whole < len(order) and taken < budget:
            c = order[whole]
            parts.append(np.arange(starts[c], starts[c] + (budget - taken)))
            n_clusters += 1
        n_clusters += whole
        slots = np.concatenate(parts)
        pos = hm.slot_pos[slots]
        out.append(np.sort(np.concatenate([pos, recent])))
        budget = B - recent.size
    return Selection(out, extra={"clusters": n_clusters / g, "recent": float(recent.size)},
                     scored=True)


def row_scores(q: np.ndarray, hm: HeadMap, avail: np.ndarray) -> np.ndarray:
    """Float32 scores ``[g, len(avail)]`` of clusters ``avail`` by the head's row-score rule
    (:data:`starc.compiler.compiled.ROW_SCORES`), from the vectors its selection pass scans:
    the raw scores ``s = q . x / sqrt(d)`` combined on the host (:func:`combine_row_scores`)."""
    d = q.shape[1]
    q32 = q.astype(np.float32)
    inv = np.float32(1.0 / np.sqrt(d))
    s0 = (q32 @ hm.centroid[avail].T.astype(np.float32)) * inv
    if hm.row_scores == "centroid":
        return s0
    extra = [(q32 @ v[avail].T.astype(np.float32)) * inv for v in hm.score_vecs]
    raw = extra if hm.row_scores == "halves" else [s0, *extra]
    return combine_row_scores(hm.row_scores, raw)


def combine_row_scores(rule: str, parts: list[np.ndarray]) -> np.ndarray:
    """The host's cluster score from the scanned sets' raw scores (:data:`ROW_SCORES` order):
    ``halves``: ``log((e^a + e^b) / 2)``; ``pc1``: ``s0 + s1^2 / 2``; ``pc4``: ``s0 + (s1^2 +
    .. + s4^2) / 2``; ``centroid``: ``s0``."""
    if rule == "centroid":
        return parts[0]
    if rule == "halves":
        a, b = parts
        return (np.logaddexp(a, b) - np.log(2.0)).astype(a.dtype)
    if rule == "pc1":
        s0, s1 = parts
        return (s0 + 0.5 * s1 * s1).astype(s0.dtype)
    if rule == "pc4":
        s0 = parts[0]
        return (s0 + 0.5 * sum(s * s for s in parts[1:])).astype(s0.dtype)
    raise ValueError(f"unknown row-score rule {rule!r}")


def cluster_norms(hm: HeadMap, K: np.ndarray) -> np.ndarray:
    """Mean key norm of every cluster of ``hm`` (``K [T, d]``: the head's keys): what the host
    keeps per cluster to turn a centroid score into an estimated logit."""
    if hm.n_clusters == 0:
        return np.zeros(0, np.float32)
    kn = np.linalg.norm(np.asarray(K, np.float32), axis=1)
    pos = hm.slot_pos[_slots(hm.cl_start, hm.cl_size)]
    per = kn[np.maximum(pos, 0)] * (pos >= 0)
    bounds = np.concatenate([[0], np.cumsum(hm.cl_size)[:-1]])
    sums = np.add.reduceat(per, bounds) if per.size else np.zeros(hm.n_clusters)
    sums[hm.cl_size == 0] = 0
    return (sums / np.maximum(hm.cl_size, 1)).astype(np.float32)


def _slots(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    if starts.size == 0:
        return np.zeros(0, np.int64)
    total = int(sizes.sum())
    off = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    return off + np.arange(total)

"""Placement of a head's blocks (group rows of tokens) onto (group, row index) of its region.

- ``naive``: stream order, dealt round-robin over the groups (block b -> group b mod G, row
  b // G). For a positional stream this is exactly the AttAcc dense layout.
- ``coselect``: blocks whose tokens are likely to be selected together share a row index across
  groups, so one activation round (an ACTAB, or ACTBGs with one MACAB stream) serves several
  selected blocks. Blocks are bundled by balanced k-means of their centroid directions into bundles
  of G (the last one smaller); a bundle is one row index, one block per group. Inside a bundle the
  member closest to the bundle centre goes to group ``(5 r) mod G`` for bundle r, the next to the
  following group, and so on, so the members most often selected from different bundles also land
  in different groups (load balance across groups when bundles are only partly selected).

- ``queries``: learnt from the prefill queries (calibration, ``KVCache.qp``). Each calibration
  query selects its top blocks by centroid score (as many as a budget of
  :data:`PLACEMENT_BUDGET` tokens holds); blocks are then dealt to groups so that the blocks each
  query selects spread evenly over the groups: minimise ``sum_q sum_g n_qg^2`` (``n_qg``: blocks
  of group g that query q selects), i.e. the co-selection weight inside groups, by a greedy
  assignment (most often selected blocks first, each to the group where it meets the least
  co-selection weight, group sizes as in ``naive``) and pairwise swaps. A step whose rows are
  spread evenly fills its activation rounds (every group open: all-bank MACs) without dummy rows.
  Inside a group blocks are ordered by how often they are selected, so blocks often selected
  together also tend to share a row index.

Only the blocks clustered at prefill time are arranged; blocks appended during decode (clustered
recent buffers) follow in arrival order, round-robin, as they would on a live system.
"""

from __future__ import annotations

import numpy as np

from starc.address import round_robin
from starc.compiler.cluster import balanced_kmeans, unit

__all__ = ["PLACEMENTS", "PLACEMENT_BUDGET", "place_blocks", "spread_groups"]

PLACEMENTS = ("naive", "coselect", "queries")
#: tokens a calibration query selects when learning the ``queries`` placement (the headline
#: budget B = 1024 of the STARC tables)
PLACEMENT_BUDGET = 1024
#: at most this many rounds of disjoint pairwise swaps refine the greedy ``queries`` placement
SWAP_ROUNDS = 2


def spread_groups(sel: np.ndarray, G: int, *, swaps: int = SWAP_ROUNDS) -> np.ndarray:
    """Groups of ``nb`` blocks from a selection matrix ``sel [n_queries, nb]`` (bool) so that the
    blocks every query selects spread over the ``G`` groups (see the module docstring). Group g
    receives as many blocks as the naive round-robin gives it. Returns ``group [nb]``."""
    nq, nb = sel.shape
    s = sel.astype(np.float32)
    W = s.T @ s                                                       # co-selection counts
    np.fill_diagonal(W, 0.0)
    room = np.bincount(np.arange(nb) % G, minlength=G)
    group = np.full(nb, -1, dtype=np.int64)
    cost_t = np.zeros((G, nb), np.float32)        # [g, b]: co-selection of b with group g
    freq = s.sum(0)
    full = np.zeros(G, dtype=bool)
    for b in np.argsort(-freq, kind="stable").tolist():
        c = cost_t[:, b].copy()
        c[full] = np.inf
        g = int(np.argmin(c))
        group[b] = g
        room[g] -= 1
        full[g] = room[g] <= 0
        cost_t[g] += W[b]
    cost = np.ascontiguousarray(cost_t.T)
    ar = np.arange(nb)
    for _ in range(swaps):
        D = cost - cost[ar, group][:, None]                           # move b to g: +D[b, g]
        A = D[:, group]                                               # [b, b']: b to b''s group
        delta = A + A.T - 2.0 * W
        delta[group[:, None] == group[None, :]] = 0.0
        # a batch of disjoint improving swaps, best first (each re-checked against the cost
        # updates of the swaps taken before it in the batch)
        dflat = delta.reshape(-1)
        m = min(nb, dflat.size - 1)
        flat = np.argpartition(dflat, m)[:m]
        flat = flat[np.argsort(dflat[flat], kind="stable")]
        cand = flat[dflat[flat] < -1e-6]
        if cand.size == 0:
            break
        used = np.zeros(nb, bool)
        moved = 0
        for i in cand.tolist():
            b1, b2 = divmod(i, nb)
            if used[b1] or used[b2]:
                continue
            g1, g2 = group[b1], group[b2]
            if g1 == g2:
                continue
            d = (cost[b1, g2] - cost[b1, g1] + cost[b2, g1] - cost[b2, g2] - 2.0 * W[b1, b2])
            if d >= -1e-6:
                continue
            cost[:, g1] += W[:, b2] - W[:, b1]
            cost[:, g2] += W[:, b1] - W[:, b2]
            group[b1], group[b2] = g2, g1
            used[b1] = used[b2] = True
            moved += 1
        if moved == 0:
            break
    return group


def place_blocks(n_prefill: int, n_total: int, G: int, centroids: np.ndarray | None,
                 strategy: str, seed: int, *, selected: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Group and row index of each of ``n_total`` stream blocks; the first ``n_prefill`` are
    arranged by ``strategy`` using ``centroids [n_prefill, d]`` (``coselect``) or the calibration
    selections ``selected [n_queries, n_prefill]`` (``queries``); ``naive`` uses neither."""
    if strategy not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, not {strategy!r}")
    group = np.empty(n_total, dtype=np.int64)
    row = np.empty(n_total, dtype=np.int64)
    if strategy == "queries" and selected is not None and n_prefill > G:
        nb = n_prefill
        group[:nb] = spread_groups(selected, G)
        freq = selected.sum(0)
        order = np.lexsort((np.arange(nb), -freq, group[:nb]))       # by group, then frequency
        g_sorted = group[:nb][order]
        first = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        row[order] = np.arange(nb) - np.repeat(first, np.diff(np.r_[first, nb]))
        k = int(row[:nb].max()) + 1
        group[nb:], rest_row = round_robin(n_total - nb, G)
        row[nb:] = k + rest_row
        return group, row
    if strategy in ("naive", "queries") or n_prefill <= G or centroids is None:
        return round_robin(n_total, G)
    nb = n_prefill
    k = -(-nb // G)
    caps = np.full(k, G, dtype=np.int64)
    caps[-1] = nb - G * (k - 1)
    cu = unit(centroids)
    labels, bc, _ = balanced_kmeans(cu[None], caps[None], iters=8, seed=seed)
    labels, bc = labels[0], bc[0]
    # order bundles along their leading principal direction (stable, deterministic)
    u, s, vt = np.linalg.svd(bc - bc.mean(0), full_matrices=False)
    bundle_order = np.argsort(bc @ vt[0], kind="stable")
    # put the short bundle last so full rows come first
    if caps[-1] < G:
        bundle_order = np.r_[bundle_order[bundle_order != k - 1], k - 1]
    rank_of_bundle = np.empty(k, dtype=np.int64)
    rank_of_bundle[bundle_order] = np.arange(k)
    sim = (cu * bc[labels]).sum(1)
    # within a bundle: most central first
    order = np.lexsort((-sim, rank_of_bundle[labels]))
    r_of = rank_of_bundle[labels[order]]
    first = np.flatnonzero(np.r_[True, r_of[1:] != r_of[:-1]])
    pos_in = np.arange(nb) - np.repeat(first, np.diff(np.r_[first, nb]))
    group[order] = (pos_in + 5 * r_of) % G
    row[order] = r_of
    group[nb:], rest_row = round_robin(n_total - nb, G)
    row[nb:] = k + rest_row
    return group, row

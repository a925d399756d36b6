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

Only the blocks clustered at prefill time are arranged; blocks appended during decode (clustered
recent buffers) follow in arrival order, round-robin, as they would on a live system.
"""

from __future__ import annotations

import numpy as np

from starc.address import round_robin
from starc.compiler.cluster import balanced_kmeans, unit

__all__ = ["PLACEMENTS", "place_blocks"]

PLACEMENTS = ("naive", "coselect")


def place_blocks(n_prefill: int, n_total: int, G: int, centroids: np.ndarray | None,
                 strategy: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Group and row index of each of ``n_total`` stream blocks; the first ``n_prefill`` are
    arranged by ``strategy`` using ``centroids [n_prefill, d]`` (ignored for ``naive``)."""
    if strategy not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, not {strategy!r}")
    group = np.empty(n_total, dtype=np.int64)
    row = np.empty(n_total, dtype=np.int64)
    if strategy == "naive" or n_prefill <= G or centroids is None:
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

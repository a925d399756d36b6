"""Clustering kernels of the mapping compiler, vectorised over windows (no per-token loops).

Three algorithms, one per mode (docs/compiler.md):

- :func:`artifact_lloyd`: the STARC ASPLOS artifact, exactly: per window, Lloyd on unit keys with
  squared Euclidean distance, initial centroids = the first ``k`` keys of the window, at most 16
  iterations, stop when no centroid moves by ``tol`` (1e-4, L2) or more; centroid = mean of the
  unit keys (not re-normalised); an empty cluster gets a zero centroid; sizes unconstrained.
- :func:`balanced_kmeans`: size-constrained k-means. Every cluster gets exactly its capacity
  (a whole number of bank-row slices). Assignment is a vectorised capacity-constrained greedy
  (:func:`balanced_assign`); update = mean of the unit keys.
- :func:`spherical_kmeans`: the v1 paper's global variant: k-means++ seeding (batched over heads,
  one candidate per step), cosine assignment, a fixed number of iterations, unconstrained sizes.

All take unit-normalised keys; :func:`unit` makes them (a zero key stays zero).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ASSIGNS",
    "artifact_lloyd",
    "assign_rule",
    "balanced_assign",
    "balanced_kmeans",
    "kmeanspp_batched",
    "refine_rows",
    "spherical_kmeans",
    "unit",
]


#: k-means++ seeding of balanced k-means runs on KPP_SAMPLE x k sampled points (speed; measured
#: on the SmolLM2 cache: no loss in attention-mass recall, docs/compiler.md)
KPP_SAMPLE = 8
#: cluster means by a one-hot matrix product up to this many clusters (faster than sorting)
ONEHOT_MAX_K = 64


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _augment(x: np.ndarray) -> np.ndarray:
    """``[x, 1]``: lets :func:`_sqdist` produce the whole cost with one matrix product."""
    return np.concatenate([x, np.ones(x.shape[:-1] + (1,), np.float32)], axis=-1)


def _sqdist(xa: np.ndarray, c: np.ndarray) -> np.ndarray:
    """||x - c||^2 minus ||x||^2 (constant per point), i.e. ``||c||^2 - 2 x.c``, ``[B, N, k]``,
    from augmented points ``xa = [x, 1]`` (:func:`_augment`)."""
    ca = np.concatenate([-2.0 * c, (c * c).sum(-1, keepdims=True)], axis=-1).astype(np.float32)
    return np.matmul(xa, ca.transpose(0, 2, 1))


def _means(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster means (zero for an empty cluster) and counts, by sorting: ``x [B, N, d]``,
    ``labels [B, N]`` -> ``[B, k, d]``, ``[B, k]``."""
    B, N, d = x.shape
    flat = (labels + (np.arange(B) * k)[:, None]).reshape(-1)
    counts = np.bincount(flat, minlength=B * k)
    if k <= ONEHOT_MAX_K:
        # few clusters: one matrix product with the one-hot labels beats sorting
        onehot = (labels[:, :, None] == np.arange(k)[None, None, :]).astype(np.float32)
        sums32 = np.matmul(onehot.transpose(0, 2, 1), x)
        c32 = sums32 / np.maximum(counts.reshape(B, k), 1)[..., None]
        return c32.astype(np.float32), counts.reshape(B, k)
    order = np.argsort(flat, kind="stable")
    xs = x.reshape(B * N, d).take(order, axis=0)
    nz = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.zeros((B * k, d), np.float64)
    if nz.size:
        sums[nz] = np.add.reduceat(xs.astype(np.float64), starts[nz], axis=0)
    c = sums / np.maximum(counts, 1)[:, None]
    return c.astype(np.float32).reshape(B, k, d), counts.reshape(B, k)


def artifact_lloyd(xu: np.ndarray, k: int, *, max_iter: int = 16, tol: float = 1e-4
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster each window of ``xu`` ``[n_windows, W, d]`` (unit keys) into ``k`` clusters.

    Returns ``labels [n_windows, W]``, ``centroids [n_windows, k, d]`` and the iterations each
    window ran. Each window stops on its own when its largest centroid move is below ``tol``.
    """
    nw, W, _ = xu.shape
    if k > W:
        raise ValueError(f"{k} clusters need at least {k} keys per window, not {W}")
    c = xu[:, :k].copy()
    labels = np.zeros((nw, W), dtype=np.int64)
    iters = np.zeros(nw, dtype=np.int64)
    active = np.arange(nw)
    xa_all = _augment(xu)
    for _ in range(max_iter):
        if active.size == 0:
            break
        x = xu[active]
        lab = np.argmin(_sqdist(xa_all[active], c[active]), axis=2)
        new_c, _ = _means(x, lab, k)
        shift = np.linalg.norm(new_c - c[active], axis=2).max(axis=1)
        labels[active] = lab
        c[active] = new_c
        iters[active] += 1
        active = active[shift >= tol]
    return labels, c, iters


def balanced_assign(cost: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Assign every point to a cluster so that cluster ``c`` of batch ``b`` gets exactly
    ``caps[b, c]`` points (``caps`` sums to N per batch), greedily by cost.

    Rounds, all vectorised: every unassigned point proposes to its cheapest cluster that still has
    room; each cluster keeps its cheapest proposers up to its remaining room. A round either places
    every proposer or fills at least one cluster, so there are at most k + 1 rounds.
    ``cost`` is ``[B, N, k]``; returns labels ``[B, N]``.
    """
    B, N, k = cost.shape
    caps = np.asarray(caps, dtype=np.int64)
    if caps.shape != (B, k):
        raise ValueError(f"caps shape {caps.shape}, expected {(B, k)}")
    if (caps.sum(1) != N).any():
        raise ValueError("capacities must add up to the number of points in every batch")
    flat = cost.reshape(B * N, k)
    room = caps.copy().reshape(-1)
    labels = np.full(B * N, -1, dtype=np.int64)
    todo = np.arange(B * N)
    batch = todo // N
    cu = flat                      # costs of the points in ``todo`` (full clusters: +inf)
    is_open = np.ones(B * k, dtype=bool)
    while todo.size:
        b = batch[todo]
        choice = np.argmin(cu, axis=1)
        val = cu[np.arange(todo.size), choice].astype(np.float64)
        # one float64 sort key per proposal: cluster id + cost scaled into [0, 0.5)
        lo = float(val.min())
        span = float(val.max()) - lo
        gid = b * k + choice
        order = np.argsort(gid + (val - lo) * (0.5 / (span if span > 0 else 1.0)))
        gs = gid[order]
        first = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
        rank = np.arange(gs.size) - np.repeat(first, np.diff(np.r_[first, gs.size]))
        ok = rank < room[gs]
        acc = order[ok]
        labels[todo[acc]] = choice[acc]
        room -= np.bincount(gs[ok], minlength=B * k)
        rest = np.sort(order[~ok])
        todo = todo[rest]
        if not todo.size:
            break
        cu = cu[rest]              # a copy (fancy indexing), never a view of ``cost``
        # clusters filled in this round close for the remaining points of their batch (columns
        # closed in earlier rounds are already +inf in ``cu``)
        newly = is_open & (room <= 0)
        is_open &= room > 0
        if newly.any():
            bt = batch[todo]
            hit = newly.reshape(B, k)
            rows = np.flatnonzero(hit.any(1)[bt])
            if rows.size:
                sub = cu[rows]
                sub[hit[bt[rows]]] = np.inf
                cu[rows] = sub
    return labels.reshape(B, N)


def kmeanspp_batched(xu: np.ndarray, k: int, rng: np.random.Generator, *,
                     sample: int | None = None) -> np.ndarray:
    """k-means++ seeding (one candidate per step) for every batch of ``xu [B, N, d]`` at once.
    With ``sample``, seeding runs on that many randomly chosen points per batch (the Lloyd
    iterations that follow see every point). Returns centroids ``[B, k, d]`` (copies of chosen
    points)."""
    B, N, d = xu.shape
    if sample is not None and max(sample, k) < N:
        sub = np.sort(rng.permuted(np.tile(np.arange(N), (B, 1)), axis=1)[:, :max(sample, k)],
                      axis=1)
        xu = np.take_along_axis(xu, sub[..., None], axis=1)
        B, N, d = xu.shape
    idx = np.empty((B, k), dtype=np.int64)
    idx[:, 0] = rng.integers(0, N, size=B)
    ar = np.arange(B)
    sq = (xu * xu).sum(-1)                                            # [B, N]

    def dist_to(c: np.ndarray) -> np.ndarray:                        # c [B, d] -> [B, N]
        dots = np.matmul(xu, c[:, :, None])[..., 0]
        return np.maximum(sq - 2.0 * dots + (c * c).sum(-1)[:, None], 0.0)

    dmin = dist_to(xu[ar, idx[:, 0]])
    for j in range(1, k):
        cum = np.cumsum(dmin, axis=1)
        tot = cum[:, -1]
        r = rng.random(B) * tot
        # searchsorted(cum[b], r[b], side="right") for every batch at once: the number of
        # entries <= r (cum never decreases: dmin >= 0)
        pick = np.count_nonzero(cum <= r[:, None], axis=1)
        pick = np.minimum(pick, N - 1)
        # an all-zero distance row (duplicates) falls back to a random point
        pick = np.where(tot > 0, pick, rng.integers(0, N, size=B))
        idx[:, j] = pick
        np.minimum(dmin, dist_to(xu[ar, pick]), out=dmin)
    return xu[ar[:, None], idx]


def _means_equal(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Cluster means when every cluster of every batch has N / k members (sort, reshape)."""
    B, N, d = x.shape
    order = np.argsort(labels, axis=1, kind="stable")
    flat = (order + (np.arange(B) * N)[:, None]).reshape(-1)
    xs = x.reshape(B * N, d).take(flat, axis=0)
    return xs.reshape(B, k, N // k, d).mean(axis=2)


def balanced_kmeans(xu: np.ndarray, caps: np.ndarray, *, iters: int = 10, seed: int = 0,
                    init: str = "positional", tol: float = 1e-4, assign: str = "greedy"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Size-constrained k-means of ``xu [B, N, d]`` (unit keys) into clusters of sizes
    ``caps [B, k]``. ``init`` is ``kmeans++`` (seeded) or ``positional`` (centroid c = mean of the
    c-th run of consecutive points, sized by ``caps``); ``assign`` the assignment rule of every
    iteration (:func:`assign_rule`). Returns labels ``[B, N]``, centroids (mean of unit members)
    ``[B, k, d]`` and the iterations run."""
    B, N, _ = xu.shape
    caps = np.asarray(caps, dtype=np.int64)
    k = caps.shape[1]
    if init == "positional":
        lab0 = np.broadcast_to(np.repeat(np.arange(k), caps[0]), (B, N)).copy() \
            if (caps == caps[0]).all() else np.stack([np.repeat(np.arange(k), c) for c in caps])
        c, _ = _means(xu, lab0, k)
    elif init == "kmeans++":
        c = kmeanspp_batched(xu, k, np.random.default_rng(seed), sample=KPP_SAMPLE * k)
    else:
        raise ValueError(f"init must be 'kmeans++' or 'positional', not {init!r}")
    labels = np.zeros((B, N), dtype=np.int64)
    equal = bool((caps == N // k).all())
    xa = _augment(xu)
    n_it = 0
    state: dict = {}
    for n_it in range(1, iters + 1):  # noqa: B007 - n_it reported
        new_labels = assign_rule(_sqdist(xa, c), caps, assign, state)
        new_c = _means_equal(xu, new_labels, k) if equal else _means(xu, new_labels, k)[0]
        shift = float(np.linalg.norm(new_c - c, axis=2).max()) if B else 0.0
        same = bool((new_labels == labels).all())
        labels, c = new_labels, new_c
        if same or shift < tol:
            break
    return labels, c, np.full(B, n_it, dtype=np.int64)


def _split_caps(caps_b: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Deal the ``k`` capacities of one batch into ``k1`` consecutive runs of ``k // k1`` or
    ``k // k1 + 1`` clusters (the larger runs first); returns the run lengths and their sums."""
    k = caps_b.size
    runs = np.full(k1, k // k1, dtype=np.int64)
    runs[: k % k1] += 1
    ends = np.cumsum(runs)
    sums = np.add.reduceat(caps_b, ends - runs)
    return runs, sums


def balanced_kmeans_tree(xu: np.ndarray, caps: np.ndarray, *, iters: int = 10, seed: int = 0,
                         fanout: int | None = None, refine: int = 0, assign: str = "greedy"
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-level size-constrained k-means, the same contract as :func:`balanced_kmeans` with
    k-means++ seeding: first ``fanout`` (default ``round(sqrt(k))``) super-clusters, each sized to
    hold a run of ``k // fanout`` or one more of the final clusters, then every super-cluster is
    split into its run, batched over all super-clusters of equal shape. Each level costs
    ``N x fanout`` distances per iteration instead of ``N x k``. ``refine`` flat iterations over
    all ``k`` centroids follow; ``assign`` is their assignment rule (:func:`assign_rule`; the
    two levels assign greedily, or exactly where ``assign`` is ``exact`` and sizes allow).
    Every batch must have the same capacities."""
    B, N, d = xu.shape
    caps = np.asarray(caps, dtype=np.int64)
    k = caps.shape[1]
    if not (caps == caps[0]).all():
        raise ValueError("balanced_kmeans_tree needs the same capacities in every batch")
    k1 = fanout if fanout is not None else max(2, int(round(np.sqrt(k))))
    if k1 >= k or k < 4:
        return balanced_kmeans(xu, caps, iters=iters, seed=seed, init="kmeans++",
                               assign=assign)
    runs, sums = _split_caps(caps[0], k1)
    rng = np.random.default_rng(seed)
    lev = assign if assign == "exact" else "greedy"
    lab1, _, _ = balanced_kmeans(xu, np.broadcast_to(sums, (B, k1)), iters=iters,
                                 seed=int(rng.integers(2**31)), init="kmeans++", assign=lev)
    first = np.concatenate([[0], np.cumsum(runs)[:-1]])
    labels = np.empty((B, N), dtype=np.int64)
    cents = np.empty((B, k, d), np.float32)
    order = np.argsort(lab1, axis=1, kind="stable")                 # points by super-cluster
    starts = np.concatenate([[0], np.cumsum(sums)[:-1]])
    if not (caps[0] == caps[0, 0]).all():          # unequal capacities: one split at a time
        for j in range(k1):
            _split_one(xu, order, labels, cents, j, starts, sums, caps, first, runs, iters, rng)
    for r in (np.unique(runs).tolist() if (caps[0] == caps[0, 0]).all() else []):
        js = np.flatnonzero(runs == r)                 # runs of r clusters: the same shape
        n2 = int(sums[js[0]])
        idx = order[:, starts[js][:, None] + np.arange(n2)[None, :]]  # [B, len(js), n2]
        sub = xu[np.arange(B)[:, None], idx.reshape(B, -1)]   # a gather (take_along_axis)
        sub = sub.reshape(B * js.size, n2, d)
        c2 = np.broadcast_to(caps[0][first[js[0]]:first[js[0]] + r], (B * js.size, r))
        l2, cc, _ = balanced_kmeans(sub, c2, iters=iters, seed=int(rng.integers(2**31)),
                                    init="kmeans++", assign=lev)
        gl = (l2.reshape(B, js.size, n2) + first[js][None, :, None]).reshape(B, -1)
        np.put_along_axis(labels, idx.reshape(B, -1), gl, axis=1)
        cents[:, (first[js][:, None] + np.arange(r)[None, :]).reshape(-1)] = cc.reshape(
            B, js.size * r, d)
    n_it = iters
    if refine:
        equal = bool((caps == N // k).all())
        xa = _augment(xu)
        state: dict = {}
        for _ in range(refine):
            labels = assign_rule(_sqdist(xa, cents), caps, assign, state)
            cents = _means_equal(xu, labels, k) if equal else _means(xu, labels, k)[0]
        n_it += refine
    return labels, cents, np.full(B, n_it, dtype=np.int64)


def _split_one(xu, order, labels, cents, j, starts, sums, caps, first, runs, iters, rng):
    B, _, d = xu.shape
    idx = order[:, starts[j]:starts[j] + sums[j]]
    sub = xu[np.arange(B)[:, None], idx]
    c2 = np.broadcast_to(caps[0][first[j]:first[j] + runs[j]], (B, runs[j]))
    l2, cc, _ = balanced_kmeans(sub, c2, iters=iters, seed=int(rng.integers(2**31)),
                                init="kmeans++")
    np.put_along_axis(labels, idx, l2 + first[j], axis=1)
    cents[:, first[j]:first[j] + runs[j]] = cc


def spherical_kmeans(xu: np.ndarray, k: int, *, iters: int = 15, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-means of every batch of ``xu [B, N, d]`` (unit keys): k-means++ seeding
    (:func:`kmeanspp_batched`), then ``iters`` rounds of (assign each key to the most similar
    normalised centroid; centroid = mean of its unit members). An empty cluster keeps its previous
    centroid. Returns labels ``[B, N]`` and centroids ``[B, k, d]``; ``k`` is capped at N."""
    B, N, _ = xu.shape
    k = min(k, N)
    c = kmeanspp_batched(xu, k, np.random.default_rng(seed))
    labels = np.zeros((B, N), dtype=np.int64)
    for _ in range(iters):
        labels = np.argmax(np.matmul(xu, unit(c).transpose(0, 2, 1)), axis=2)
        new_c, counts = _means(xu, labels, k)
        c = np.where(counts[..., None] > 0, new_c, c)
    return labels, c


#: assignment rules of the balanced k-means iterations (``assign`` of :func:`balanced_kmeans`)
ASSIGNS = ("greedy", "sinkhorn", "exact")
#: ``exact`` solves problems of at most this many points (SciPy's assignment solver on the
#: capacity-expanded columns, O(N^3)); larger ones take the greedy rounds
EXACT_MAX_N = 1024


def sinkhorn_potentials(cost: np.ndarray, caps: np.ndarray, *, eps: float = 0.05,
                        iters: int = 30, g0: np.ndarray | None = None) -> np.ndarray:
    """Column potentials ``g [B, k]`` (cost units) of the entropic optimal transport of the
    ``N`` points of every batch (mass 1 each) to its clusters (mass ``caps``): Sinkhorn's
    matrix scaling on the kernel ``exp(-c / t)``, ``c`` the costs less each point's minimum,
    ``t`` = ``eps`` times the batch's mean ``c``; ``g0`` (potentials of a previous call) starts
    the scaling warm. ``balanced_assign(cost - g)`` then rounds the transport plan greedily: a
    cluster that too many points want gets dearer for all of them at once, instead of the
    greedy rounds' first come, first served."""
    B, N, k = cost.shape
    c = cost.astype(np.float32)
    c = c - c.min(axis=2, keepdims=True)
    t = np.float32(eps) * np.maximum(c.mean(axis=(1, 2)), 1e-12).astype(np.float32)   # [B]
    K = np.exp(-c / t[:, None, None])          # every point keeps its cheapest cluster at 1
    b = np.asarray(caps, np.float32)
    lv = np.zeros((B, k), np.float32) if g0 is None else (g0 / t[:, None]).astype(np.float32)
    lv -= lv.max(1, keepdims=True)
    v = np.exp(lv)
    for _ in range(iters):
        u = 1.0 / np.maximum(np.einsum("bnk,bk->bn", K, v), 1e-30)                 # [B, N]
        v = b / np.maximum(np.einsum("bnk,bn->bk", K, u), 1e-30)                   # [B, k]
        v /= v.max(1, keepdims=True)
    g = np.log(np.maximum(v, 1e-30)) * t[:, None]
    return g - g.mean(1, keepdims=True)


#: Sinkhorn iterations of the first assignment of a k-means run, and of the later ones (warm)
SINKHORN_ITERS = 30
SINKHORN_WARM = 5


def assign_rule(cost: np.ndarray, caps: np.ndarray, assign: str = "greedy",
                state: dict | None = None) -> np.ndarray:
    """Labels ``[B, N]`` with exactly ``caps`` points per cluster, by ``assign``: ``greedy``
    (:func:`balanced_assign` on the costs), ``sinkhorn`` (the same on the costs less the
    Sinkhorn column potentials, :func:`sinkhorn_potentials`; ``state`` carries them from one
    k-means iteration to the next, a warm start) or ``exact`` (the optimum, SciPy's
    ``linear_sum_assignment`` on capacity-expanded columns, for at most :data:`EXACT_MAX_N`
    points; greedy above)."""
    if assign == "greedy":
        return balanced_assign(cost, caps)
    if assign == "sinkhorn":
        g0 = state.get("g") if state is not None else None
        g = sinkhorn_potentials(cost, caps, g0=g0,
                                iters=SINKHORN_ITERS if g0 is None else SINKHORN_WARM)
        if state is not None:
            state["g"] = g
        return balanced_assign(cost - g[:, None, :], caps)
    if assign == "exact":
        B, N, k = cost.shape
        if N > EXACT_MAX_N:
            return balanced_assign(cost, caps)
        from scipy.optimize import linear_sum_assignment
        out = np.empty((B, N), np.int64)
        for b in range(B):
            cols = np.repeat(np.arange(k), caps[b])
            r, c = linear_sum_assignment(cost[b][:, cols].astype(np.float64))
            out[b, r] = cols[c]
        return out
    raise ValueError(f"assign must be one of {', '.join(ASSIGNS)}, not {assign!r}")


def row_mass_objective(A: np.ndarray, labels: np.ndarray, x: np.ndarray, q: np.ndarray,
                       k: int, rows: int) -> tuple[float, np.ndarray, np.ndarray]:
    """The mass the queries ``q [P, d]`` (pre-scaled) capture in their ``rows`` best clusters
    by centroid score ``q . c`` (c = mean of ``x`` per cluster): ``A [P, N]`` is each query's
    attention mass per point. Returns the mean captured mass per query, the selection
    ``[P, k]`` (bool) and the centroids."""
    c, _ = _means(x[None], labels[None], k)
    c = c[0]
    s = q @ c.T
    r = min(rows, k)
    top = np.argpartition(-s, r - 1, axis=1)[:, :r]
    sel = np.zeros(s.shape, bool)
    np.put_along_axis(sel, top, True, axis=1)
    got = float(np.take_along_axis(sel, labels[None, :].repeat(q.shape[0], 0), 1)
                .__mul__(A).sum() / max(q.shape[0], 1))
    return got, sel, c


def refine_rows(x: np.ndarray, xm: np.ndarray, labels: np.ndarray, k: int, q: np.ndarray,
                A: np.ndarray, *, rows: int, iters: int = 3, lam: float = 1.0,
                val: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, list[float]]:
    """Selection-aware refinement of an equal-size clustering (every cluster ``N / k`` points).

    Each calibration query (``q [P, d]``, pre-scaled by ``1 / sqrt(d)``; ``A [P, N]`` its
    attention mass on every point) selects its ``rows`` best clusters by ``q . c`` (``c``: the
    mean of the raw keys ``x [N, d]``). One step moves points between clusters, keeping the
    sizes, to put more of that mass into selected clusters: the balanced assignment of the cost
    ``D / mean D - lam * M / mean M``, with ``D`` the squared distance to the cluster's mean in
    the clustering metric (``xm``: where points with no mass at stake stay) and ``M[t, c]`` the
    mass of point t over the queries that select c. A step is kept only if the captured mass
    (recomputed with the new centroids and selections) grows; the first that does not stops.
    Returns the labels and the captured mass per query after every accepted step (the first
    entry: before)."""
    N = x.shape[0]
    cs = N // k
    caps = np.full((1, k), cs, np.int64)
    J, sel, _ = row_mass_objective(A, labels, x, q, k, rows)
    V = row_mass_objective(val[1], labels, x, val[0], k, rows)[0] if val is not None else 0.0
    hist = [J]
    xa = _augment(xm[None])
    for _ in range(iters):
        cm = _means_equal(xm[None], labels[None], k)
        D = _sqdist(xa, cm)[0] + (xm * xm).sum(1)[:, None]                  # [N, k]
        M = A.T @ sel.astype(np.float32)                                     # [N, k]
        Dbar = float(np.take_along_axis(D, labels[:, None], 1).mean()) or 1.0
        Mbar = float(np.take_along_axis(M, labels[:, None], 1).mean()) or 1.0
        cost = D / Dbar - np.float32(lam) * M / Mbar
        new = balanced_assign(cost[None].astype(np.float32), caps)[0]
        J2, sel2, _ = row_mass_objective(A, new, x, q, k, rows)
        if J2 <= J:
            break
        if val is not None:
            V2 = row_mass_objective(val[1], new, x, val[0], k, rows)[0]
            if V2 <= V:
                break
            V = V2
        labels, J, sel = new, J2, sel2
        hist.append(J)
    return labels, hist

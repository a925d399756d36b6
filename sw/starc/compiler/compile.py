"""KV cache in, clustered and placed memory layout out (:func:`compile_kv`).

Data flow per (layer, KV head), see docs/compiler.md:

1. FP16 conversion (round to nearest even) of keys, values and queries.
2. Segment plan: which positions are clustered together and from which context length on.
   Windowed modes (``artifact``, ``row-aligned``) cluster the prefill up to the last multiple of
   the buffer length R in windows of W; the rest of the prefill (the *tail*, fewer than R tokens)
   starts the recent buffer. ``global`` clusters the whole prefill at once. During decode, new
   tokens enter the recent buffer; when it holds R tokens it is clustered as one window and
   appended (old clusters are never re-clustered). The cache file holds the decode tokens too, so
   their windows are compiled here, each tagged with the context length that makes it ready.
3. Clustering of unit keys (:mod:`starc.compiler.cluster`); inside a segment tokens are stably
   reordered by cluster label; clusters keep label order.
4. The stream: segments in position order; the prefill region and every decode window start on a
   block (group-row) boundary.
5. Placement of blocks on (group, row) (:mod:`starc.compiler.placement`), keys and values in
   separate rows, then the recent-buffer rows, then the centroid rows; KV head h goes to channel
   h mod channels, (layer, head) regions stacked in disjoint row ranges of their channel.

Dense layers (0 and 1 by default) and mode ``dense`` get the positional AttAcc layout.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from starc.address import SLICE, Geometry, quest_meta_rows, round_robin
from starc.compiler.cluster import (
    ASSIGNS,
    _means_equal,
    artifact_lloyd,
    balanced_kmeans,
    balanced_kmeans_tree,
    refine_rows,
    spherical_kmeans,
    unit,
)
from starc.compiler.compiled import ROW_SCORES, CompiledKV, HeadMap, attach_row_scores
from starc.compiler.placement import PLACEMENT_BUDGET, PLACEMENTS, place_blocks
from starc.config import Config
from starc.kv import KVCache, KVError, check_capacity, qp_hash

__all__ = ["MODES", "CompileOptions", "compile_kv", "plan_segments", "positional_headmap"]

MODES = ("artifact", "row-aligned", "global", "dense")
#: row-aligned prefill window: the whole prefill up to this many tokens (measured: recall grows
#: with the window, cost grows with window x clusters; docs/compiler.md)
ROW_ALIGNED_WINDOW = 8192
#: query metric: keys are clustered in the metric ``a Mn + (1 - a) I`` with ``Mn`` the prefill
#: queries' second-moment matrix scaled to trace d (a = 1: pure query whitening, 0: raw keys);
#: 0.5 measured best on synthetic and real caches (docs/compiler.md, "Better rows")
QUERY_METRIC_MIX = 0.5
METRICS = ("unit", "query")
#: row-aligned windows of at least this many clusters use the two-level balanced k-means
#: (``cluster.balanced_kmeans_tree``: sqrt(k) super-clusters, then each split; measured: the same
#: recall as flat k-means at 0.5-0.6 x its time, docs/compiler.md "Speed")
TREE_MIN_K = 64
#: flat balanced iterations over all clusters after the two levels, which run half the
#: iterations each (measured on synthetic d 64 / d 128 caches, mass recall at B = 1024: 10 per
#: level and no refinement -1.6 points at d 64; 10 + 1: -0.5 at d 128; 5 + 2: within 0.15 of
#: flat k-means at both, docs/compiler.md "Speed")
TREE_REFINE = 2
#: selection-aware refinement (``CompileOptions.refine``, ``cluster.refine_rows``): default steps,
#: the weight of the captured mass against the metric distance, the budget whose rows the
#: calibration queries select, at most this many calibration queries per KV head, causal masses
#: (query i at the i-th evenly spaced prefill position), only the queries from this fraction of
#: the prefill on, and train on every other query with the rest held out (a step is kept only if
#: they gain too). Measured: it loses recall on every cache (docs/compiler.md, "Sinkhorn
#: assignment and selection-aware refinement"), so the default is no refinement
REFINE_STEPS = 0
REFINE_LAM = 1.0
REFINE_BUDGET = 1024
REFINE_QUERIES = 512
REFINE_CAUSAL = True
REFINE_FROM = 0.0
REFINE_VAL = False
#: clustering runs in worker processes from this many clustered layers on (below: threads; a
#: process pool costs ~0.5 s to start)
PROCESS_MIN_LAYERS = 8


class CompileError(ValueError):
    """Options that cannot be compiled; the message names the option and the rule."""


@dataclass(frozen=True)
class CompileOptions:
    """How to compile. ``None`` fields take the mode's default (:meth:`resolve`)."""

    mode: str = "row-aligned"
    placement: str | None = None          # naive | coselect
    seed: int = 0
    window: int | None = None             # tokens clustered together at prefill
    buffer: int | None = None             # recent-buffer length R
    cluster_tokens: int | None = None     # tokens per cluster (mean for unconstrained modes)
    iters: int | None = None
    init: str | None = None               # row-aligned seeding: kmeans++ | positional
    tree: bool | None = None              # row-aligned: two-level balanced k-means for large
                                          # windows (default True; False: flat)
    key_norm: str | None = None           # unit (default) | mean (raw keys / mean norm)
    metric: str | None = None             # row-aligned: unit | query (default: query when the
                                          # cache has prefill queries, else unit)
    sinks: int | None = None              # first tokens kept unclustered, always attended
    assign: str | None = None             # row-aligned: balanced assignment of every k-means
                                          # iteration (cluster.ASSIGNS; default greedy)
    refine: int | None = None             # row-aligned: steps of the selection-aware refinement
                                          # learnt from prefill queries (0: none)
    row_scores: str | None = None         # row-aligned: how the host scores a cluster
                                          # (compiled.ROW_SCORES; default centroid)
    dense_layers: tuple[int, ...] = (0, 1)
    threads: int = 0                      # 0: one per core

    def resolve(self, geo: Geometry, prefill_len: int) -> dict[str, Any]:
        """Options with defaults filled in and checked; raises :class:`CompileError`."""
        if self.mode not in MODES:
            raise CompileError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        m = self.mode
        d: dict[str, Any] = asdict(self)
        d["dense_layers"] = sorted(set(int(x) for x in self.dense_layers))
        if m == "artifact":
            defaults = {"window": 64, "buffer": 64, "cluster_tokens": 16, "iters": 16,
                        "placement": "naive", "init": "first-keys", "key_norm": "unit",
                        "sinks": 0}
        elif m == "row-aligned":
            defaults = {"window": ROW_ALIGNED_WINDOW, "buffer": 64, "cluster_tokens": geo.tpgr,
                        "iters": 10, "placement": None, "init": "kmeans++",
                        "key_norm": "unit", "sinks": geo.tpgr, "tree": True}
        elif m == "global":
            defaults = {"window": None, "buffer": 128, "cluster_tokens": 32, "iters": 15,
                        "placement": "naive", "init": "kmeans++", "key_norm": "unit",
                        "sinks": geo.tpgr}  # a sink row, as row-aligned (docs/compiler.md)
        else:
            defaults = {"window": None, "buffer": 0, "cluster_tokens": None, "iters": 0,
                        "placement": "naive", "init": None, "key_norm": None, "sinks": 0}
        for k, v in defaults.items():
            if d[k] is None:
                d[k] = v
        if m != "row-aligned":
            d["tree"] = False
        if d["placement"] is None and m == "row-aligned":
            pass    # resolved by compile_kv: queries with prefill queries, else coselect
        elif d["placement"] not in PLACEMENTS:
            raise CompileError(f"placement must be one of {', '.join(PLACEMENTS)}, not "
                               f"{d['placement']!r}")
        if not isinstance(d["sinks"], int) or d["sinks"] < 0:
            raise CompileError(f"sinks must be a non-negative integer, not {d['sinks']!r}")
        if m != "dense" and d["key_norm"] not in ("unit", "mean"):
            raise CompileError(f"key_norm must be 'unit' or 'mean', not {d['key_norm']!r}")
        if m == "row-aligned" and d["init"] not in ("kmeans++", "positional"):
            raise CompileError(f"init must be 'positional' or 'kmeans++', not {d['init']!r}")
        if d["metric"] is not None and d["metric"] not in METRICS:
            raise CompileError(f"metric must be one of {', '.join(METRICS)}, not "
                               f"{d['metric']!r}")
        if d["metric"] == "query" and m != "row-aligned":
            raise CompileError(f"metric 'query' applies to row-aligned mode, not {m!r} (the "
                               f"artifact and global modes cluster unit keys as published)")
        d["tpgr"] = geo.tpgr
        if d["row_scores"] is None:
            d["row_scores"] = "centroid"
        if d["row_scores"] not in ROW_SCORES:
            raise CompileError(f"row_scores must be one of {', '.join(ROW_SCORES)}, not "
                               f"{d['row_scores']!r}")
        if d["row_scores"] != "centroid" and m != "row-aligned":
            raise CompileError(f"row_scores {d['row_scores']!r} applies to row-aligned mode (every "
                               f"cluster one group row), not {m!r}")
        if d["row_scores"] == "halves" and geo.tpgr % 2:  # pragma: no cover - tpgr is 16 x sets
            raise CompileError("row_scores 'halves' needs an even number of tokens per row")
        if d["assign"] is None:
            d["assign"] = "greedy"
        if d["assign"] not in ASSIGNS:
            raise CompileError(f"assign must be one of {', '.join(ASSIGNS)}, not {d['assign']!r}")
        if d["refine"] is None:
            d["refine"] = REFINE_STEPS if m == "row-aligned" else 0
        if not isinstance(d["refine"], int) or d["refine"] < 0:
            raise CompileError(f"refine must be a non-negative integer, not {d['refine']!r}")
        if m != "row-aligned" and (d["assign"] != "greedy" or d["refine"]):
            raise CompileError(f"assign and refine apply to row-aligned mode, not {m!r}")
        # the defaults leave the resolved options (manifest, JSON, hashes) as they were
        if d["assign"] == "greedy":
            del d["assign"]
        if d["refine"] == 0:
            del d["refine"]
        if d["row_scores"] == "centroid":
            # the default leaves the resolved options (manifest, JSON, hashes) as they were
            del d["row_scores"]
        if m == "dense":
            return d
        for k in ("buffer", "cluster_tokens", "iters"):
            if not isinstance(d[k], int) or d[k] <= 0:
                raise CompileError(f"{k} must be a positive integer, not {d[k]!r}")
        R, cs = d["buffer"], d["cluster_tokens"]
        if m == "row-aligned":
            if cs % SLICE or not (geo.tpgr % cs == 0 or cs % geo.tpgr == 0):
                raise CompileError(
                    f"cluster_tokens {cs}: row-aligned clusters must fill whole bank-row slices "
                    f"of {SLICE} tokens and tile the {geo.tpgr}-token group row (a divisor or a "
                    f"multiple of {geo.tpgr})")
            if R % cs:
                raise CompileError(f"buffer {R} must be a multiple of cluster_tokens {cs} (a "
                                   f"full buffer is clustered into whole clusters)")
        if m != "global":
            W = d["window"]
            if not isinstance(W, int) or W <= 0 or W % R:
                raise CompileError(f"window {W!r} must be a positive multiple of the buffer "
                                   f"length {R}")
        if m == "artifact" and cs > d["window"]:
            raise CompileError(f"cluster_tokens {cs} exceeds the window {d['window']}")
        return d


@dataclass
class Segment:
    start: int
    end: int
    ready: int
    k: int
    prefill: bool


def plan_segments(opts: dict[str, Any], prefill_len: int, T: int) -> list[Segment]:
    """The clustering windows of one head (the same for every head), in position order. A sink
    segment (``k = 0``: no clusters, always attended) comes first when ``opts['sinks'] > 0``."""
    m, R, cs = opts["mode"], opts["buffer"], opts["cluster_tokens"]
    s0 = min(int(opts.get("sinks", 0) or 0), prefill_len)
    segs: list[Segment] = []
    if s0:
        segs.append(Segment(0, s0, s0, 0, True))
    if m == "global":
        e0 = prefill_len
        if e0 > s0:
            segs.append(Segment(s0, e0, e0, max(1, math.ceil((e0 - s0) / cs)), True))
    else:
        W = opts["window"]
        e0 = s0 + ((prefill_len - s0) // R) * R
        for s in range(s0, e0, W):
            e = min(s + W, e0)
            k = math.ceil((e - s) / cs)
            segs.append(Segment(s, e, e, k, True))
    for s in range(e0, T - R + 1, R):
        segs.append(Segment(s, s + R, s + R, math.ceil(R / cs), False))
    return segs


# ---- clustering of one layer -----------------------------------------------------------------
@dataclass
class _SegResult:
    order: np.ndarray       # [H, size] positions in stored order
    sizes: np.ndarray       # [H, k]
    cents: np.ndarray       # [H, k, d]
    iters: np.ndarray       # [H]


def _cluster_group(xu: np.ndarray, segs: list[Segment], opts: dict[str, Any], seed: int
                   ) -> list[_SegResult]:
    """Cluster equally sized segments of every head of one layer at once. ``xu [H, T, d]``."""
    H = xu.shape[0]
    size, k = segs[0].end - segs[0].start, segs[0].k
    starts = np.array([s.start for s in segs])
    X = xu[:, starts[:, None] + np.arange(size)[None, :]]            # [H, nseg, size, d]
    X = X.reshape(H * len(segs), size, xu.shape[2])
    m = opts["mode"]
    if m == "artifact":
        labels, cents, iters = artifact_lloyd(X, k, max_iter=opts["iters"])
    elif m == "row-aligned":
        cs = opts["cluster_tokens"]
        caps = np.full((X.shape[0], k), cs, dtype=np.int64)
        if opts.get("tree") and opts["init"] == "kmeans++" and k >= TREE_MIN_K:
            labels, cents, iters = balanced_kmeans_tree(X, caps, iters=-(-opts["iters"] // 2),
                                                        seed=seed, refine=TREE_REFINE,
                                                        assign=opts.get("assign", "greedy"))
        else:
            labels, cents, iters = balanced_kmeans(X, caps, iters=opts["iters"], seed=seed,
                                                   init=opts["init"],
                                                   assign=opts.get("assign", "greedy"))
        per_row = opts["tpgr"] // cs
        if per_row > 1 and k % per_row == 0 and k > per_row:
            labels, cents = _pair_clusters(labels, cents, per_row, seed)
    else:
        labels, c = spherical_kmeans(X, k, iters=opts["iters"], seed=seed)
        cents = np.zeros((X.shape[0], k, X.shape[2]), np.float32)
        cents[:, :c.shape[1]] = c
        iters = np.full(X.shape[0], opts["iters"])
    order = np.argsort(labels, axis=1, kind="stable")
    sizes = np.zeros((X.shape[0], k), np.int64)
    np.add.at(sizes, (np.repeat(np.arange(X.shape[0]), size), labels.reshape(-1)), 1)
    out = []
    order = order.reshape(H, len(segs), size)
    sizes = sizes.reshape(H, len(segs), k)
    cents = cents.reshape(H, len(segs), k, -1)
    iters = np.asarray(iters).reshape(H, len(segs))
    for j, s in enumerate(segs):
        out.append(_SegResult(order=order[:, j] + s.start, sizes=sizes[:, j], cents=cents[:, j],
                              iters=iters[:, j]))
    return out


def _pair_clusters(labels: np.ndarray, cents: np.ndarray, per_row: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters so that each run of ``per_row`` consecutive labels (one group row) holds
    similar clusters: balanced k-means of the centroid directions into bundles of ``per_row``."""
    Bn, k, _ = cents.shape
    caps = np.full((Bn, k // per_row), per_row, dtype=np.int64)
    bl, _, _ = balanced_kmeans(unit(cents), caps, iters=5, seed=seed, init="positional")
    new_order = np.argsort(bl, axis=1, kind="stable")              # new label -> old label
    rank = np.empty_like(new_order)
    np.put_along_axis(rank, new_order, np.arange(k)[None, :].repeat(Bn, 0), axis=1)
    return np.take_along_axis(rank, labels, axis=1), np.take_along_axis(
        cents, new_order[..., None], axis=1)


def _seed_for(seed: int, *parts: int) -> int:
    h = hashlib.sha256(repr((seed,) + parts).encode()).digest()
    return int.from_bytes(h[:4], "little")


def query_metric(qp: np.ndarray, n_kv_heads: int, mix: float = QUERY_METRIC_MIX) -> np.ndarray:
    """Per KV head, the matrix ``W`` with ``||k W||^2 = k^T (mix Mn + (1 - mix) I) k``, where
    ``Mn`` is the second moment ``E[q q^T]`` of the prefill queries of the head's GQA group,
    scaled to trace d. In that metric the squared distance of two keys is (for mix = 1) the mean
    squared difference of their scores over the prefill queries. ``qp [P', Hq, d]`` ->
    ``[n_kv_heads, d, d]`` float32."""
    P, Hq, d = qp.shape
    g = Hq // n_kv_heads
    q = qp.astype(np.float64).reshape(P, n_kv_heads, g, d).transpose(1, 0, 2, 3)
    q = q.reshape(n_kv_heads, P * g, d)
    M = np.matmul(q.transpose(0, 2, 1), q) / max(P * g, 1)
    tr = np.trace(M, axis1=1, axis2=2)
    Mn = M * (d / np.where(tr > 0, tr, 1.0))[:, None, None]
    A = mix * Mn + (1.0 - mix) * np.eye(d)[None]
    w, U = np.linalg.eigh(A)
    W = np.matmul(U * np.sqrt(np.maximum(w, 0.0))[:, None, :], U.transpose(0, 2, 1))
    return W.astype(np.float32)


def _raw_means(x: np.ndarray, order: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean raw key of every cluster: ``x [T, d]``, ``order`` (positions in stored order),
    ``sizes [k]`` -> ``[k, d]`` (zero for an empty cluster)."""
    k = sizes.size
    out = np.zeros((k, x.shape[1]), np.float32)
    nz = np.flatnonzero(sizes)
    if nz.size:
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        sums = np.add.reduceat(x[order].astype(np.float64), starts[nz], axis=0)
        out[nz] = sums / sizes[nz, None]
    return out


def _refine_segment(r: _SegResult, s: Segment, x32: np.ndarray, xu: np.ndarray,
                    qp: np.ndarray, opts: dict[str, Any], P: int, unit_cents: bool) -> None:
    """Selection-aware refinement (``cluster.refine_rows``) of one prefill segment of every head
    in place: the calibration queries of each KV head's GQA group (``qp [P', Hq, d]``) select
    their rows at ``REFINE_BUDGET``; their attention masses are normalised over the head's
    whole prefill (``P`` keys)."""
    H, _, d = x32.shape
    g = qp.shape[1] // H
    size, k = s.end - s.start, s.k
    cs = size // k
    rows = max(1, (REFINE_BUDGET - int(opts.get("sinks", 0) or 0) - opts["buffer"]) // cs)
    sc = np.float32(1.0 / math.sqrt(d))
    n_qp = qp.shape[0]
    # the calibration queries come from evenly spaced prefill positions, in order: query i sees
    # the keys up to its position p_i, and the last ``buffer`` of them it would attend anyway
    pos = ((np.arange(n_qp) + 1) * P) // n_qp - 1
    keep = np.arange(n_qp)[pos >= REFINE_FROM * P] if REFINE_CAUSAL else np.arange(n_qp)
    kpos = np.arange(P)
    for h in range(H):
        q = qp[keep][:, h * g:(h + 1) * g].astype(np.float32)          # [n, g, d]
        qpos = np.repeat(pos[keep], g)
        q = q.reshape(-1, d)
        sub = np.arange(0, len(q), max(1, -(-len(q) // REFINE_QUERIES)))
        q, qpos = q[sub] * sc, qpos[sub]
        lg = q @ x32[h, :P].T
        if REFINE_CAUSAL:
            lg = np.where(kpos[None, :] <= qpos[:, None], lg, -np.inf)
        mx = lg.max(1, keepdims=True)
        lse = mx + np.log(np.exp(lg - mx).sum(1, keepdims=True))
        A = np.exp(lg[:, s.start:s.end] - lse).astype(np.float32)
        if REFINE_CAUSAL:
            A[kpos[None, s.start:s.end] > (qpos - opts["buffer"])[:, None]] = 0.0
        order = np.asarray(r.order[h]) - s.start
        lab = np.empty(size, np.int64)
        lab[order] = np.repeat(np.arange(k), cs)
        if REFINE_VAL:     # train on every other query, stop when the others gain nothing
            tr = np.arange(len(q)) % 2 == 0
            lab, _ = refine_rows(x32[h, s.start:s.end], xu[h, s.start:s.end], lab, k, q[tr],
                                 A[tr], rows=rows, iters=int(opts["refine"]), lam=REFINE_LAM,
                                 val=(q[~tr], A[~tr]))
        else:
            lab, _ = refine_rows(x32[h, s.start:s.end], xu[h, s.start:s.end], lab, k, q, A,
                                 rows=rows, iters=int(opts["refine"]), lam=REFINE_LAM)
        r.order[h] = np.argsort(lab, kind="stable") + s.start
        if unit_cents:
            r.cents[h] = _means_equal(xu[h, s.start:s.end][None], lab[None], k)[0]


def _compile_layer(layer: int, keys16: np.ndarray, opts: dict[str, Any], segs: list[Segment],
                   geo: Geometry, T: int, white: np.ndarray | None = None,
                   qp: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Cluster one layer (all KV heads); returns per head the stream and cluster table. With
    ``white [H, d, d]`` (query metric) keys are clustered as ``k W`` over the mean norm and the
    centroids are the mean raw keys (so ``q . c`` is the cluster's mean score)."""
    H = keys16.shape[1]
    x32 = keys16.astype(np.float32).transpose(1, 0, 2)                # [H, T, d]
    if white is not None:
        xw = np.matmul(x32, white)
        clus = [sg for sg in segs if sg.k > 0]
        a0, e0 = (clus[0].start, max(clus[0].end, clus[0].start + 1)) if clus else (0, T)
        scale = np.linalg.norm(xw[:, a0:e0], axis=2).mean(1)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        xu = xw / scale[:, None, None]
    elif opts["key_norm"] == "mean":
        # raw keys over the head's mean prefill key norm: Euclidean k-means then minimises the
        # error of the cluster's mean logit q.mean(k); the scale only makes tolerances scale-free
        clus = [sg for sg in segs if sg.k > 0]
        a0, e0 = (clus[0].start, max(clus[0].end, clus[0].start + 1)) if clus else (0, T)
        scale = np.linalg.norm(x32[:, a0:e0], axis=2).mean(1)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        xu = x32 / scale[:, None, None]
    else:
        scale = np.ones(H, np.float32)
        xu = unit(x32)
    results: list[_SegResult | None] = [None] * len(segs)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(segs):
        if s.k == 0:   # sink segment: positional, no clusters
            results[i] = _SegResult(order=np.broadcast_to(np.arange(s.start, s.end), (H, s.end -
                                                                                      s.start)),
                                    sizes=np.zeros((H, 0), np.int64),
                                    cents=np.zeros((H, 0, x32.shape[2]), np.float32),
                                    iters=np.zeros(H, np.int64))
            continue
        by_shape.setdefault((s.end - s.start, s.k), []).append(i)
    for (size, k), idx in sorted(by_shape.items()):
        res = _cluster_group(xu, [segs[i] for i in idx], opts,
                             _seed_for(opts["seed"], layer, size, k))
        for i, r in zip(idx, res, strict=True):
            results[i] = r
    if opts.get("refine") and qp is not None:
        P = max((sg.end for sg in segs if sg.prefill), default=0)
        for s, r in zip(segs, results, strict=True):
            if s.prefill and s.k and (s.end - s.start) == s.k * geo.tpgr and r is not None:
                _refine_segment(r, s, x32, xu, qp, opts, P, white is None)
    tp = geo.tpgr
    heads = []
    for h in range(H):
        parts: list[np.ndarray] = []
        cl_start, cl_size, cl_seg, cents, iters = [], [], [], [], []
        cursor = 0
        n_prefill_slots = None
        for i, (s, r) in enumerate(zip(segs, results, strict=True)):
            assert r is not None
            if not s.prefill and n_prefill_slots is None:
                pad = (-cursor) % tp
                parts.append(np.full(pad, -1, np.int64))
                cursor += pad
                n_prefill_slots = cursor
            starts = cursor + np.concatenate([[0], np.cumsum(r.sizes[h])[:-1]])
            if s.k:
                cl_start.append(starts)
                cl_size.append(r.sizes[h])
                cl_seg.append(np.full(len(starts), i))
                cents.append(_raw_means(x32[h], np.asarray(r.order[h]), r.sizes[h])
                             if white is not None else r.cents[h] * scale[h])
                iters.append(int(r.iters[h]))
            parts.append(np.asarray(r.order[h]))
            cursor += len(r.order[h])
            if not s.prefill or s.k == 0:
                pad = (-cursor) % tp
                parts.append(np.full(pad, -1, np.int64))
                cursor += pad
        if n_prefill_slots is None:
            pad = (-cursor) % tp
            parts.append(np.full(pad, -1, np.int64))
            cursor += pad
            n_prefill_slots = cursor
        slot_pos = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        cent = np.concatenate(cents) if cents else np.zeros((0, geo.d), np.float32)
        heads.append({
            "slot_pos": slot_pos.astype(np.int64),
            "n_prefill_blocks": n_prefill_slots // tp,
            "cl_start": np.concatenate(cl_start).astype(np.int64) if cl_start else
            np.zeros(0, np.int64),
            "cl_size": np.concatenate(cl_size).astype(np.int64) if cl_size else
            np.zeros(0, np.int64),
            "cl_seg": np.concatenate(cl_seg).astype(np.int64) if cl_seg else np.zeros(0, np.int64),
            "centroid": cent.astype(np.float32),
            "iters": iters,
            "xu": xu[h] if opts["key_norm"] == "unit" and white is None else unit(x32[h]),
            "xraw": x32[h],
        })
    return heads


def _block_centroids(slot_pos: np.ndarray, xu: np.ndarray, nb: int, tp: int) -> np.ndarray:
    sp = slot_pos[: nb * tp].reshape(nb, tp)
    valid = sp >= 0
    x = np.where(valid[..., None], xu[np.where(valid, sp, 0)], 0.0)
    return x.sum(1) / np.maximum(valid.sum(1), 1)[:, None]


def positional_headmap(layer: int, head: int, channel: int, row_base: int, T: int,
                       geo: Geometry, n_crows: int = 0) -> HeadMap:
    """The AttAcc dense layout of one head: position t in block t // tpgr, round-robin groups.
    ``n_crows``: metadata rows after the value rows (Quest's page bounds, see starc.address)."""
    tp, G = geo.tpgr, geo.G
    nb = -(-T // tp)
    slot_pos = np.arange(nb * tp, dtype=np.int64)
    slot_pos[slot_pos >= T] = -1
    group, row = round_robin(nb, G)
    n_krows = -(-nb // G)
    z = np.zeros(0, np.int64)
    return HeadMap(layer=layer, head=head, channel=channel, positional=True, tpgr=tp,
                   row_base=row_base, n_krows=n_krows, n_crows=n_crows, block_group=group,
                   block_row=row, slot_pos=slot_pos, seg_start=z, seg_end=z, seg_ready=z,
                   cl_start=z, cl_size=z, cl_seg=z,
                   centroid=np.zeros((0, geo.d), np.float32), buf_group=z, buf_row=z,
                   buffer_cap=0, stats={"blocks": nb})


def _headmap(layer: int, head: int, channel: int, row_base: int, lay: dict[str, Any],
             segs: list[Segment], opts: dict[str, Any], geo: Geometry) -> HeadMap:
    tp, G = geo.tpgr, geo.G
    slot_pos = lay["slot_pos"]
    nb = len(slot_pos) // tp
    npb = lay["n_prefill_blocks"]
    cents = None
    selected = None
    if opts["placement"] == "coselect" and npb > G:
        cents = _block_centroids(slot_pos, lay["xu"], npb, tp)
    if opts["placement"] == "queries" and npb > G and "qcal" in lay:
        bc = _block_centroids(slot_pos, lay["xraw"], npb, tp)
        sc = lay["qcal"] @ bc.T                                        # [n_queries, npb]
        m_sel = min(npb, max(1, -(-PLACEMENT_BUDGET // tp)))
        top = np.argpartition(-sc, m_sel - 1, axis=1)[:, :m_sel]
        selected = np.zeros(sc.shape, bool)
        np.put_along_axis(selected, top, True, axis=1)
        n_sink_blocks = -(-sum(s.end - s.start for s in segs if s.k == 0) // tp)
        selected[:, :n_sink_blocks] = True                             # always attended
    group, row = place_blocks(npb, nb, G, cents, opts["placement"],
                              _seed_for(opts["seed"], layer, head, 7), selected=selected)
    stream_rows = int(row.max()) + 1 if nb else 0
    R = opts["buffer"]
    nbb = -(-R // tp)
    buf_group, buf_row = round_robin(nbb, G)
    buf_row = stream_rows + buf_row
    n_krows = stream_rows + (-(-nbb // G))
    C = len(lay["cl_start"])
    sets = 1 + ROW_SCORES[opts.get("row_scores") or "centroid"][1]
    n_crows = _ceil_div(sets * _ceil_div(C, tp), G)
    sizes = lay["cl_size"]
    xu = lay["xu"]
    # cluster tightness: mean cosine between a key and its cluster's centroid direction
    if C and sizes.sum():
        sp = slot_pos
        valid = sp >= 0
        slot_cl = np.full(len(sp), -1, np.int64)
        rep = np.repeat(np.arange(C), sizes)
        idx = _ranges(lay["cl_start"], sizes)
        slot_cl[idx] = rep
        ok = valid & (slot_cl >= 0)
        cu = unit(lay["centroid"])
        cos = float((xu[sp[ok]] * cu[slot_cl[ok]]).sum(1).mean())
    else:
        cos = None           # undefined: no clusters (strict JSON, docs/reliability.md)
    stats = {"clusters": C, "blocks": nb, "prefill_blocks": npb,
             "size_min": int(sizes.min()) if C else 0, "size_max": int(sizes.max()) if C else 0,
             "size_mean": float(sizes.mean()) if C else 0.0,
             "empty_clusters": int((sizes == 0).sum()),
             "iters_mean": float(np.mean(lay["iters"])) if lay["iters"] else 0.0,
             "mean_cos_to_centroid": cos, "padding_slots": int((slot_pos < 0).sum())}
    if cos is None:
        stats["mean_cos_to_centroid_undefined"] = "no clusters"
    return HeadMap(layer=layer, head=head, channel=channel, positional=False, tpgr=tp,
                   row_base=row_base, n_krows=n_krows, n_crows=n_crows, block_group=group,
                   block_row=row, slot_pos=slot_pos,
                   seg_start=np.array([s.start for s in segs], np.int64),
                   seg_end=np.array([s.end for s in segs], np.int64),
                   seg_ready=np.array([s.ready for s in segs], np.int64),
                   cl_start=lay["cl_start"], cl_size=sizes, cl_seg=lay["cl_seg"],
                   centroid=lay["centroid"], buf_group=buf_group, buf_row=buf_row,
                   buffer_cap=nbb * tp, sink_end=sum(s.end - s.start for s in segs if s.k == 0),
                   stats=stats)


def _nanmean(xs: list[float | None]) -> float | None:
    """Mean of the defined values (None and NaN skipped); None when there is none."""
    a = np.asarray([x for x in xs if x is not None], np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + z)`` for every pair, vectorised."""
    total = int(sizes.sum())
    rep = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    return rep + np.arange(total)


def _layer_job(args: tuple) -> tuple[int, list[HeadMap]]:
    """Cluster and place one layer (every KV head); row bases are set by the caller (they
    depend on the layers before)."""
    l, keys16, qp, opts, segs, geo, T, channels = args
    n_kv = keys16.shape[1]
    white = query_metric(qp, n_kv) if opts.get("metric") == "query" and qp is not None else None
    lay = _compile_layer(l, keys16, opts, segs, geo, T, white, qp)
    if opts["placement"] == "queries" and qp is not None:
        g = qp.shape[1] // n_kv
        for h, hd in enumerate(lay):
            hd["qcal"] = qp[:, h * g:(h + 1) * g].astype(np.float32).reshape(-1, geo.d)
    return l, [_headmap(l, h, h % channels, 0, hd, segs, opts, geo)
               for h, hd in enumerate(lay)]


def _worker_init() -> None:
    """Worker processes run single-threaded BLAS (the parallelism is over layers)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def compile_kv(cache: KVCache, cfg: Config, options: CompileOptions | None = None, *,
               progress: Callable[[int, int], None] | None = None) -> CompiledKV:
    """Compile ``cache`` for ``cfg``; see the module docstring. Deterministic for a given input,
    preset and options (seed included)."""
    opts_in = options or CompileOptions()
    cache.validate()
    m = cache.meta
    check_capacity(m, cfg)
    geo = Geometry(cfg, m.head_dim)
    opts = opts_in.resolve(geo, m.prefill_len)
    if opts["mode"] == "row-aligned":
        if opts["metric"] is None:
            opts["metric"] = "query" if cache.qp is not None else "unit"
        if opts["metric"] == "query" and cache.qp is None:
            raise CompileError("metric 'query' learns from prefill queries, and this cache has "
                               "none (tensors qp_0 ..); export them (starc kv extract "
                               "--prefill-queries N) or use metric 'unit'")
        if opts["placement"] is None:
            opts["placement"] = "queries" if cache.qp is not None else "coselect"
        if opts["placement"] == "queries" and cache.qp is None:
            raise CompileError("placement 'queries' learns from prefill queries, and this cache "
                               "has none (tensors qp_0 ..); export them or use placement "
                               "'coselect'")
        if opts.get("refine") and cache.qp is None:
            raise CompileError("refine learns from prefill queries, and this cache has none "
                               "(tensors qp_0 ..); export them or use refine 0")
        if "query" in (opts["metric"],) or opts["placement"] == "queries" or opts.get("refine"):
            opts["calibration_hash"] = qp_hash(cache)
        if opts["metric"] == "query":
            opts["key_norm"] = "mean"
    elif opts["mode"] != "dense":
        opts["metric"] = "unit"
        if opts["placement"] == "queries" and cache.qp is None:
            raise CompileError("placement 'queries' learns from prefill queries, and this cache "
                               "has none (tensors qp_0 ..); export them or use placement "
                               "'naive'")
    bad = [x for x in opts["dense_layers"] if not 0 <= x < m.n_layers]
    if bad and m.n_layers > max(bad, default=0):  # pragma: no cover
        raise CompileError(f"dense_layers {bad} out of range")
    t0 = time.perf_counter()
    c16 = cache.to_fp16()
    input_hash = c16.content_hash()
    T, P = m.context_len, m.prefill_len
    segs = plan_segments(opts, P, T) if opts["mode"] != "dense" else []
    clustered_layers = [l for l in range(m.n_layers)
                        if opts["mode"] != "dense" and l not in opts["dense_layers"]]
    t_cluster0 = time.perf_counter()
    layouts: dict[int, list[HeadMap]] = {}
    threads = opts["threads"] or min(2, os.cpu_count() or 1)
    done = 0
    workers = "serial"

    def job(l: int) -> tuple:
        qp = c16.qp[l] if c16.qp is not None and (opts.get("metric") == "query" or
                                                  opts["placement"] == "queries" or
                                                  opts.get("refine")) else None
        return (l, c16.k[l], qp, opts, segs, geo, T, cfg.org.channels)

    if clustered_layers:
        n_work = min(threads, len(clustered_layers))
        import multiprocessing
        import threading
        if (n_work > 1 and len(clustered_layers) >= PROCESS_MIN_LAYERS
                and threading.active_count() == 1
                and "fork" in multiprocessing.get_all_start_methods()):
            # worker processes (no interpreter lock between the many small NumPy steps), each
            # single-threaded BLAS. Forked (no re-import of the caller's main module), and only
            # from a process without other threads (a fork copies no lock another thread holds)
            from concurrent.futures import ProcessPoolExecutor
            ctx = multiprocessing.get_context("fork")
            workers = "processes"
            with ProcessPoolExecutor(max_workers=n_work, mp_context=ctx,
                                     initializer=_worker_init) as ex:
                for l, lay in ex.map(_layer_job, (job(l) for l in clustered_layers)):
                    layouts[l] = lay
                    done += 1
                    if progress:
                        progress(done, len(clustered_layers))
        else:
            from threadpoolctl import threadpool_limits
            with threadpool_limits(limits=1, user_api="blas"), \
                    ThreadPoolExecutor(max_workers=n_work) as ex:
                mapper = ex.map if n_work > 1 else map
                workers = "threads" if n_work > 1 else "serial"
                for l, lay in mapper(_layer_job, (job(l) for l in clustered_layers)):
                    layouts[l] = lay
                    done += 1
                    if progress:
                        progress(done, len(clustered_layers))
    t_cluster = time.perf_counter() - t_cluster0
    # placement and row allocation: KV head h -> channel h mod channels, regions stacked
    t_place0 = time.perf_counter()
    next_row = [0] * cfg.org.channels
    heads: list[list[HeadMap]] = []
    for l in range(m.n_layers):
        row_maps = []
        for h in range(m.n_kv_heads):
            ch = h % cfg.org.channels
            if l in layouts:
                hm = layouts[l][h]
                hm.row_base = next_row[ch]
            else:
                # sparse layers of the positional layout carry Quest's page bounds
                meta = quest_meta_rows(T, geo) if (opts["mode"] == "dense" and l not in
                                                   opts["dense_layers"]) else 0
                hm = positional_headmap(l, h, ch, next_row[ch], T, geo, meta)
            next_row[ch] += 2 * hm.n_krows + hm.n_crows
            row_maps.append(hm)
        heads.append(row_maps)
        layouts.pop(l, None)
    if max(next_row) > cfg.org.rows_per_bank:
        raise KVError(f"k_*/v_*: the compiled layout needs {max(next_row)} rows per bank on "
                      f"channel {int(np.argmax(next_row))}, preset {cfg.name!r} has "
                      f"{cfg.org.rows_per_bank}; shorten the context or drop layers")
    t_place = time.perf_counter() - t_place0
    total = time.perf_counter() - t0
    all_maps = [hm for row in heads for hm in row if not hm.positional]
    sizes = np.concatenate([hm.cl_size for hm in all_maps]) if all_maps else np.zeros(0)
    stats = {
        "mode": opts["mode"], "seconds_total": total, "seconds_cluster": t_cluster,
        "workers": workers,
        "seconds_place": t_place, "tokens": T * m.n_layers * m.n_kv_heads,
        "tokens_per_s": T * m.n_layers * m.n_kv_heads / max(total, 1e-9),
        "clusters": int(sizes.size), "cluster_size_mean": float(sizes.mean()) if sizes.size else 0,
        "cluster_size_min": int(sizes.min()) if sizes.size else 0,
        "cluster_size_max": int(sizes.max()) if sizes.size else 0,
        "empty_clusters": int((sizes == 0).sum()),
        "mean_cos_to_centroid": _nanmean([hm.stats["mean_cos_to_centroid"] for hm in all_maps]),
        "iters_mean": float(np.mean([hm.stats["iters_mean"] for hm in all_maps]))
        if all_maps else 0.0,
        "rows_per_bank_used": max(next_row), "segments_per_head": len(segs),
        "final_buffer_tokens": (T - all_maps[0].clustered_end(T)) if all_maps else 0,
        "padding_slots": int(sum(int((hm.slot_pos < 0).sum()) for hm in all_maps)),
    }
    if stats["mean_cos_to_centroid"] is None:
        stats["mean_cos_to_centroid_undefined"] = "no clusters (dense layout or empty heads)"
    ck = CompiledKV(cfg=cfg, cache=replace(c16, qp=None), mode=opts["mode"], options=opts,
                    heads=heads, stats=stats, input_hash=input_hash)
    if opts["mode"] != "dense":
        attach_row_scores(ck, opts.get("row_scores") or "centroid")
    return ck


def options_summary(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in opts.items() if k != "threads"}


"""The compiler's output in memory: one :class:`HeadMap` per (layer, KV head), and the whole
:class:`CompiledKV` (head maps + the FP16 cache + options + statistics).

A head map describes one (layer, KV head) region of one channel:

- the *stream*: the head's token slots in storage order, ``n_blocks x tpgr`` slots, each holding an
  original position or -1 (empty); block ``b`` sits in group ``block_group[b]``, key row
  ``row_base + block_row[b]``, value row ``row_base + n_krows + block_row[b]``;
- *segments*: runs of positions clustered together (a window), each available from context length
  ``seg_ready`` on; positions beyond the last available segment are in the recent buffer;
- *clusters*: slot range ``[cl_start, cl_start + cl_size)`` of the stream and a centroid;
- *sinks*: positions ``0 .. sink_end - 1`` stored positionally at the start of the stream, never
  clustered, always attended (row-aligned mode: one group row);
- the *recent buffer*: ``buffer_cap`` slots in blocks ``buf_group``/``buf_row``; at context length
  ``n`` it holds positions ``clustered_end(n) .. n-1`` in arrival order;
- *metadata rows* (``n_crows`` from row ``row_base + 2 * n_krows``): the vectors a selection pass
  scans, FP16, ``tpgr`` per block, dealt round-robin over the groups: the centroids of a clustered
  head (followed, with ``row_scores`` other than ``centroid``, by its row-score vectors, one set
  of ``C`` per kind, each set starting on a block boundary: :data:`ROW_SCORES`), or Quest's page
  bounds (the max vector of every complete 16-token page, then, from the
  next row boundary, the min vectors) on the sparse layers of the positional layout
  (:mod:`starc.address`).

A *positional* head map (dense layers, the baselines' layout) has one segment per block, no
clusters and no buffer: position t is slot t, so the layout is AttAcc's dense one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from starc.address import (
    QUEST_PAGE,
    Geometry,
    blocks_to_banks,
    lane_bit,
    quest_bound_index,
    round_robin,
    slot_fields,
)
from starc.config import Config
from starc.kv import KVCache

__all__ = ["HeadMap", "CompiledKV", "Located", "ROW_SCORES", "attach_row_scores",
           "row_score_vectors"]

#: How the host scores a row-aligned cluster from the metadata its selection pass scans (the
#: query written once, one RDSB; docs/compiler.md "Row scores"): name -> (vector sets scanned,
#: extra vector sets stored after the centroids). ``centroid``: the centroid c, score q . c;
#: ``halves``: the means a, b of the two halves of the cluster's row (its first and last
#: ``tpgr / 2`` slots), score ``log((e^(q . a) + e^(q . b)) / 2)``; ``pc1``: the centroid and
#: v = the top principal axis of the cluster's keys times its standard deviation, score
#: ``q . c + (q . v)^2 / 2`` (scores of the query pre-scaled by 1 / sqrt(d)); ``pc4``: the
#: centroid and the top four principal axes v_1 .. v_4, each times its standard deviation, score
#: ``q . c + sum_i (q . v_i)^2 / 2`` (the Gaussian estimate in the keys' four widest directions).
ROW_SCORES: dict[str, tuple[tuple[int, ...], int]] = {
    "centroid": ((0,), 0), "halves": ((1, 2), 2), "pc1": ((0, 1), 1),
    "pc4": ((0, 1, 2, 3, 4), 4)}


def row_score_vectors(rule: str, X: np.ndarray) -> np.ndarray:
    """The extra metadata vectors ``[sets, C, d]`` (float32) of rule ``rule`` (:data:`ROW_SCORES`)
    for clusters whose keys are ``X [C, t, d]`` (every cluster one full row of ``t`` tokens)."""
    C, t, d = X.shape
    if rule == "centroid":
        return np.zeros((0, C, d), np.float32)
    X = np.asarray(X, np.float64)
    if rule == "halves":
        if t % 2:
            raise ValueError(f"row_scores 'halves' needs an even row length, not {t}")
        return X.reshape(C, 2, t // 2, d).mean(2).transpose(1, 0, 2).astype(np.float32)
    if rule == "pc1":
        # the top eigenpair of the keys' covariance Xc^T Xc / t from the t x t Gram matrix
        # Xc Xc^T / t (same nonzero eigenvalues; t <= d, so a much smaller eigenproblem)
        Xc = X - X.mean(1, keepdims=True)
        ev, U = np.linalg.eigh(np.einsum("cid,cjd->cij", Xc, Xc) / t)
        w = np.einsum("ctd,ct->cd", Xc, U[:, :, -1])
        norm = np.linalg.norm(w, axis=1, keepdims=True)
        v = np.where(norm > 0, w / np.maximum(norm, 1e-300), 0.0) * np.sqrt(
            np.maximum(ev[:, -1:], 0.0))
        # the sign of an eigenvector is arbitrary; fix it (largest component positive) so the
        # image does not depend on the LAPACK build
        big = np.take_along_axis(v, np.abs(v).argmax(1)[:, None], 1)
        v = np.where(big < 0, -v, v)
        return v[None].astype(np.float32)
    if rule == "pc4":
        r = ROW_SCORES[rule][1]
        if t < r:
            raise ValueError(f"row_scores {rule!r} needs rows of at least {r} tokens, not {t}")
        Xc = X - X.mean(1, keepdims=True)
        ev, U = np.linalg.eigh(np.einsum("cid,cjd->cij", Xc, Xc) / t)
        ev, U = ev[:, ::-1][:, :r], U[:, :, ::-1][:, :, :r]          # the r largest, descending
        w = np.einsum("ctd,ctr->crd", Xc, U)
        norm = np.linalg.norm(w, axis=2, keepdims=True)
        v = np.where(norm > 0, w / np.maximum(norm, 1e-300), 0.0) * np.sqrt(
            np.maximum(ev, 0.0))[:, :, None]                           # [C, r, d]
        big = np.take_along_axis(v, np.abs(v).argmax(2)[:, :, None], 2)
        v = np.where(big < 0, -v, v)                                   # signs fixed as pc1's
        return v.transpose(1, 0, 2).astype(np.float32)
    raise ValueError(f"row_scores must be one of {', '.join(ROW_SCORES)}, not {rule!r}")


@dataclass
class Located:
    """Addresses of a set of tokens at one context length (arrays of equal length)."""

    group: np.ndarray
    row: np.ndarray      # key row, relative to the region (add row_base)
    set: np.ndarray
    slot: np.ndarray
    block: np.ndarray    # stream block index, or -1 - buffer block index

    @property
    def lane_bit(self) -> np.ndarray:
        """Bit of the valid-slot mask of a score move: 16 * set + slot."""
        return lane_bit(self.set, self.slot)


@dataclass
class HeadMap:
    layer: int
    head: int
    channel: int
    positional: bool
    tpgr: int
    row_base: int
    n_krows: int
    n_crows: int
    block_group: np.ndarray   # int64 [nb]
    block_row: np.ndarray     # int64 [nb] (relative key row)
    slot_pos: np.ndarray      # int64 [nb * tpgr], -1 = empty
    seg_start: np.ndarray     # int64 [nseg] first position
    seg_end: np.ndarray       # int64 [nseg] one past the last position
    seg_ready: np.ndarray     # int64 [nseg] context length from which the segment is clustered
    cl_start: np.ndarray      # int64 [C] stream slot
    cl_size: np.ndarray       # int64 [C]
    cl_seg: np.ndarray        # int64 [C]
    centroid: np.ndarray      # float32 [C, d]
    buf_group: np.ndarray     # int64 [nbb]
    buf_row: np.ndarray       # int64 [nbb]
    buffer_cap: int
    sink_end: int = 0         # positions 0 .. sink_end-1: sink block(s), always attended
    stats: dict[str, Any] = field(default_factory=dict)
    row_scores: str = "centroid"          # ROW_SCORES: how the host scores a cluster
    score_vecs: np.ndarray | None = None  # float32 [sets, C, d]: its extra metadata vectors
    _pos_slot: np.ndarray | None = field(default=None, repr=False)

    # ---- derived ---------------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return len(self.block_group)

    @property
    def n_clusters(self) -> int:
        return len(self.cl_start)

    @property
    def pos_slot(self) -> np.ndarray:
        """Stream slot of each position (-1 if the position is not in the stream)."""
        if self._pos_slot is None:
            valid = self.slot_pos >= 0
            n = int(self.slot_pos.max()) + 1 if valid.any() else 0
            ps = np.full(n, -1, dtype=np.int64)
            ps[self.slot_pos[valid]] = np.flatnonzero(valid)
            self._pos_slot = ps
        return self._pos_slot

    def clustered_end(self, n: int) -> int:
        """Positions ``0 .. clustered_end(n) - 1`` sit in the stream at context length ``n``."""
        if self.positional:
            return n
        ok = self.seg_ready <= n
        return int(self.seg_end[ok].max()) if ok.any() else 0

    @property
    def meta_stride(self) -> int:
        """Metadata vectors per set (the clusters rounded up to whole blocks)."""
        return -(-self.n_clusters // self.tpgr) * self.tpgr

    def score_vector_index(self, clusters: np.ndarray) -> np.ndarray:
        """Metadata vector indices the selection pass scans for ``clusters``, set by set
        (:data:`ROW_SCORES`): ``[sets x len(clusters)]``."""
        c = np.asarray(clusters, np.int64)
        sets = ROW_SCORES[self.row_scores][0]
        return np.concatenate([k * self.meta_stride + c for k in sets]) if c.size else c

    def clusters_at(self, n: int) -> np.ndarray:
        """Indices of the clusters available at context length ``n``."""
        return np.flatnonzero(self.seg_ready[self.cl_seg] <= n)

    def cluster_positions(self, c: np.ndarray) -> list[np.ndarray]:
        return [self.slot_pos[s:s + z] for s, z in zip(self.cl_start[c], self.cl_size[c],
                                                        strict=True)]

    def locate(self, positions: np.ndarray, n: int) -> Located:
        """Addresses of ``positions`` (all < n) at context length ``n``."""
        p = np.asarray(positions, dtype=np.int64)
        e = self.clustered_end(n)
        in_stream = p < e
        out_g = np.empty(p.size, np.int64)
        out_r = np.empty(p.size, np.int64)
        out_i = np.empty(p.size, np.int64)
        out_b = np.empty(p.size, np.int64)
        if in_stream.any():
            sl = self.pos_slot[p[in_stream]]
            if (sl < 0).any():  # pragma: no cover - compiler invariant
                raise AssertionError("position missing from the stream")
            b = sl // self.tpgr
            out_b[in_stream] = b
            out_g[in_stream] = self.block_group[b]
            out_r[in_stream] = self.block_row[b]
            out_i[in_stream] = sl % self.tpgr
        if (~in_stream).any():
            j = p[~in_stream] - e
            if (j >= self.buffer_cap).any():
                raise ValueError(f"layer {self.layer} head {self.head}: {int(j.max()) + 1} "
                                 f"unclustered tokens at context {n}, buffer holds "
                                 f"{self.buffer_cap}")
            bb = j // self.tpgr
            out_b[~in_stream] = -1 - bb
            out_g[~in_stream] = self.buf_group[bb]
            out_r[~in_stream] = self.buf_row[bb]
            out_i[~in_stream] = j % self.tpgr
        token_set, slot = slot_fields(out_i)
        return Located(group=out_g, row=out_r, set=token_set, slot=slot, block=out_b)


@dataclass
class CompiledKV:
    """Everything the planner needs; :mod:`starc.compiler.artifact` saves and loads it."""

    cfg: Config
    cache: KVCache                       # FP16 keys, values and queries
    mode: str
    options: dict[str, Any]
    heads: list[list[HeadMap]]           # [layer][kv_head]
    stats: dict[str, Any] = field(default_factory=dict)
    input_hash: str = ""

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.cfg, self.cache.meta.head_dim)

    def head(self, layer: int, kv_head: int) -> HeadMap:
        return self.heads[layer][kv_head]

    def iter_heads(self) -> list[HeadMap]:
        return [hm for row in self.heads for hm in row]

    def channel_rows_used(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for hm in self.iter_heads():
            end = hm.row_base + 2 * hm.n_krows + hm.n_crows
            out[hm.channel] = max(out.get(hm.channel, 0), end)
        return out

    # ---- memory image --------------------------------------------------------------------------
    def head_image(self, hm: HeadMap, n: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Bank rows of one head region at context length ``n`` (default: every stored token):
        ``addr [m, 4]`` (channel, group, bank, absolute row) and ``data [m, columns, lanes]``
        uint16 FP16 bits. Empty slots hold +0."""
        geo = self.geometry
        T = self.cache.meta.context_len
        n = T if n is None else n
        k16 = self.cache.k[hm.layer][:, hm.head].view(np.uint16)
        v16 = self.cache.v[hm.layer][:, hm.head].view(np.uint16)
        e = hm.clustered_end(n)
        sp = hm.slot_pos
        live = (sp >= 0) & (sp < e)
        tok = np.where(live, sp, 0)
        blocks_k = np.where(live[:, None], k16[tok], 0).reshape(hm.n_blocks, geo.tpgr, geo.d)
        blocks_v = np.where(live[:, None], v16[tok], 0).reshape(hm.n_blocks, geo.tpgr, geo.d)
        nbb = len(hm.buf_group)
        buf = np.arange(e, e + nbb * geo.tpgr)
        bl = buf < n
        bt = np.where(bl, buf, 0)
        buf_k = np.where(bl[:, None], k16[bt], 0).reshape(nbb, geo.tpgr, geo.d)
        buf_v = np.where(bl[:, None], v16[bt], 0).reshape(nbb, geo.tpgr, geo.d)
        cent = self.meta_vectors(hm, n)
        ncb = len(cent) // geo.tpgr
        cg, cr = self.centroid_blocks(hm)
        groups = np.concatenate([hm.block_group, hm.buf_group, hm.block_group, hm.buf_group, cg])
        rows = np.concatenate([hm.block_row, hm.buf_row, hm.block_row + hm.n_krows,
                               hm.buf_row + hm.n_krows, cr]) + hm.row_base
        data = blocks_to_banks(np.concatenate([blocks_k, buf_k, blocks_v, buf_v,
                                               cent.reshape(ncb, geo.tpgr, geo.d)]), geo)
        nrow = len(groups)
        addr = np.empty((nrow, geo.bpg, 4), np.int64)
        addr[..., 0] = hm.channel
        addr[..., 1] = groups[:, None]
        addr[..., 2] = np.arange(geo.bpg)[None, :]
        addr[..., 3] = rows[:, None]
        return addr.reshape(-1, 4), data.reshape(-1, geo.cols, geo.lanes)

    def meta_vectors(self, hm: HeadMap, n: int | None = None) -> np.ndarray:
        """FP16 bits ``[blocks x tpgr, d]`` of the head's metadata vectors at context ``n``:
        its centroids, or (positional heads with metadata rows) Quest's page bounds of the
        complete pages (a page's bounds are final once its 16 tokens exist; others read 0)."""
        geo = self.geometry
        if not hm.positional:
            C, stride = hm.n_clusters, hm.meta_stride
            extra = hm.score_vecs if hm.score_vecs is not None else np.zeros((0, C, geo.d))
            out = np.zeros(((1 + len(extra)) * stride, geo.d), np.uint16)
            out[:C] = hm.centroid.astype(np.float16).view(np.uint16)
            for k, vecs in enumerate(extra, start=1):
                out[k * stride:k * stride + C] = vecs.astype(np.float16).view(np.uint16)
            return out
        out = np.zeros((hm.n_crows * geo.G * geo.tpgr, geo.d), np.uint16)
        if not hm.n_crows:
            return out
        T = self.cache.meta.context_len
        n = T if n is None else n
        full = n // QUEST_PAGE
        if full:
            k = self.cache.k[hm.layer][:full * QUEST_PAGE, hm.head].astype(np.float16)
            k = k.reshape(full, QUEST_PAGE, geo.d)
            pages = np.arange(full)
            out[quest_bound_index(pages, T, geo, upper=True)] = k.max(1).view(np.uint16)
            out[quest_bound_index(pages, T, geo, upper=False)] = k.min(1).view(np.uint16)
        return out

    def centroid_blocks(self, hm: HeadMap) -> tuple[np.ndarray, np.ndarray]:
        """(group, region row) of each metadata block (:meth:`meta_vectors`)."""
        G = self.cfg.org.groups_per_channel
        sets = 1 + (len(hm.score_vecs) if hm.score_vecs is not None else 0)
        nb = hm.n_crows * G if hm.positional else sets * (hm.meta_stride // hm.tpgr)
        g, r = round_robin(nb, G)
        return g, 2 * hm.n_krows + r

    def channel_image(self, channel: int, n: int | None = None,
                      layers: list[int] | None = None) -> dict[tuple[int, int, int], np.ndarray]:
        """The image of one channel at context length ``n`` as the golden functional model takes
        it: ``(group, bank, row) -> uint16 [columns, lanes]`` (``layers`` limits the regions)."""
        out: dict[tuple[int, int, int], np.ndarray] = {}
        for hm in self.iter_heads():
            if hm.channel != channel or (layers is not None and hm.layer not in layers):
                continue
            addr, data = self.head_image(hm, n)
            for (_, g, b, r), d in zip(addr.tolist(), data, strict=True):
                out[(g, b, r)] = d
        return out

    def image(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The whole sparse memory image (every head region), see :meth:`head_image`."""
        parts = [self.head_image(hm, n) for hm in self.iter_heads()]
        if not parts:
            return np.zeros((0, 4), np.int64), np.zeros((0, 32, 16), np.uint16)
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def attach_row_scores(ck: CompiledKV, rule: str) -> None:
    """Give every clustered head of ``ck`` the extra metadata vectors of ``rule`` (computed from
    the FP16 keys in its clusters' rows; :func:`row_score_vectors`)."""
    for hm in ck.iter_heads():
        if hm.positional:
            continue
        hm.row_scores = rule
        if rule == "centroid" or hm.n_clusters == 0:
            hm.score_vecs = None if rule == "centroid" else np.zeros(
                (ROW_SCORES[rule][1], 0, ck.cache.meta.head_dim), np.float32)
            continue
        if not (hm.cl_size == hm.tpgr).all():
            raise ValueError(f"row_scores {rule!r} needs every cluster to fill one group row "
                             f"(row-aligned mode); layer {hm.layer} head {hm.head} has sizes "
                             f"{int(hm.cl_size.min())}..{int(hm.cl_size.max())}")
        K = np.asarray(ck.cache.k[hm.layer][:, hm.head], np.float32)
        idx = hm.cl_start[:, None] + np.arange(hm.tpgr)[None]
        hm.score_vecs = row_score_vectors(rule, K[hm.slot_pos[idx]])

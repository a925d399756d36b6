"""Selection passes: what the PIM computes so the host can choose (docs/planner.md).

Each policy's registry entry names its pass (:data:`starc.planner.registry.SELECTION_PASSES`).
The pass is a list of *scans* (a query written to the GEMV buffers, then a score phase over rows
of the head's region) whose valid scores one RDSB reads back to the host; the host then chooses
and issues the attention program. Top clusters, pages or tokens are chosen **on the host**: the
host issues the attention's activations, whose row addresses depend on the choice, so the choice
has to reach it anyway; an on-PIM top-k would save the sort, not the round trip, and would need
a sorting unit the PIM does not have.

=============  ==================================================================================
pass           scans (rows relative to the head's ``row_base``)
=============  ==================================================================================
centroids      STARC: the query over the metadata rows holding the centroids of the clusters
               available at context n (``2 n_krows ..``, the rows the compiler reserved), or
               the vectors of the head's row-score rule (``halves``: the two half-row means,
               ``pc1``: centroid and principal axis; starc.compiler.compiled.ROW_SCORES), set
               by set in one scan; reads one score per vector, the host combines them; with
               an adaptive budget also the key rows of the sink block and the recent buffer
               (their exact scores enter the mass estimate)
page-bounds    Quest: ``q+ = max(q, 0)`` over the page-max rows, then ``q- = min(q, 0)`` over the
               page-min rows of the complete pages (the current page is always attended); the
               host adds the two scores of a page: ``sum_i max(q_i min_i, q_i max_i) = q+ . max
               + q- . min``; reads two scores per page
r-channels     SparQ: the query cut to its r largest-|q| channels (the others zero) over the key
               rows of every token outside the recent window; in the bank-level layout a column
               holds 16 channels of one token, so the pass opens every key row and reads whole
               columns (a channel-major key copy, not modelled, would change that); reads one
               score per token
exact-scores   oracle: the whole query over every key row; reads one score per token
none           dense, StreamingLLM: nothing
=============  ==================================================================================

Scores are computed by the PU as everywhere (FP16 products, FP32 tree sums, the query
pre-scaled by ``1/sqrt(d)`` and rounded to FP16); the policies rank with float32 scores, which
differ from the PIM's only by that rounding (tests/sw/test_selection.py compares them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from starc.address import meta_address, quest_bound_index
from starc.compiler.compiled import ROW_SCORES
from starc.planner.policies import PAGE, always_attended, combine_row_scores, sparq_channels
from starc.planner.program import Scan, SelectionPass, query_words

if TYPE_CHECKING:  # pragma: no cover
    from starc.planner.plan import Planner, StepPlan

__all__ = ["host_scores", "scan_scores", "selection_pass"]


def _scan(pl: Planner, q: np.ndarray, group: np.ndarray, row: np.ndarray, token_set: np.ndarray,
          slot: np.ndarray, base: int) -> Scan:
    geo = pl.geo
    rows = pl.rows_for_tokens(group, row, 16 * token_set + slot, token_set)
    return Scan(query_words(q, geo.d, geo.lanes), rows, base,
                _buffer_order(rows.rounds, group, row, token_set, slot, geo.sets))


def _buffer_order(rounds: list, group: np.ndarray, row: np.ndarray, token_set: np.ndarray,
                  slot: np.ndarray, sets: int) -> np.ndarray:
    """Index (into the scanned vectors) of each valid score in softmax-buffer order: rounds in
    order, the groups of a round ascending, then the valid slots of a move (set-major)."""
    key = ((row * 32 + group) * sets + token_set) * 16 + slot
    order = np.argsort(key)
    skey = key[order]
    out = []
    for rd in rounds:
        for g, r, m in zip(rd.groups.tolist(), rd.rows.tolist(), rd.masks.tolist(),
                           strict=True):
            bits = [b for b in range(16 * sets) if m >> b & 1]
            if bits:
                k = ((r * 32 + g) * sets + np.array(bits) // 16) * 16 + np.array(bits) % 16
                out.append(order[np.searchsorted(skey, k)])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def selection_pass(pl: Planner, sp: StepPlan) -> SelectionPass | None:
    """The selection pass of plan ``sp`` (``None`` when its choice needed no scores)."""
    spec = pl.spec
    if not sp.scored or spec.selection == "none":
        return None
    hm = pl.ck.head(sp.layer, sp.kv_head)
    geo, n = pl.geo, sp.n_ctx
    q16 = pl.ck.cache.q[sp.layer][sp.step, sp.q_head].astype(np.float16)
    meta_base = hm.row_base + 2 * hm.n_krows
    kind = spec.selection
    if kind == "centroids":
        avail = hm.clusters_at(n)
        if avail.size and not np.array_equal(avail, np.arange(avail.size)):  # pragma: no cover
            raise AssertionError("available clusters are not a prefix of the cluster table")
        # the vectors of the head's row-score rule (compiled.ROW_SCORES), one query, one scan
        g, r, j, s = meta_address(hm.score_vector_index(np.arange(avail.size)), geo)
        scans = [_scan(pl, q16, g, r, j, s, meta_base)]
        if pl.budget.adaptive:
            # an adaptive budget also needs the exact scores of the tokens attended anyway (the
            # sink row and the recent buffer) for its estimate of the head's total mass
            loc = hm.locate(always_attended(hm, n, pl.B), n)
            scans.append(_scan(pl, q16, loc.group, loc.row, loc.set, loc.slot, hm.row_base))
        return SelectionPass(kind, scans, int(sum(sc.order.size for sc in scans)),
                             row_scores=hm.row_scores)
    if kind == "page-bounds":
        if not hm.n_crows:
            raise ValueError(f"layer {sp.layer} has no page-bound rows; compile it with the "
                             f"registry's options for quest (mode dense)")
        T = pl.meta.context_len
        pages = np.arange(-(-n // PAGE) - 1)          # complete pages; the current one is in
        scans = []
        for upper, qq in ((True, np.maximum(q16, 0)), (False, np.minimum(q16, 0))):
            g, r, j, s = meta_address(quest_bound_index(pages, T, geo, upper=upper), geo)
            scans.append(_scan(pl, qq.astype(np.float16), g, r, j, s, meta_base))
        return SelectionPass(kind, scans, 2 * int(pages.size))
    if kind in ("r-channels", "exact-scores"):
        if kind == "r-channels":
            recent = min(pl.params.sparq_recent, pl.B)
            pos = np.arange(n - recent)
            keep = sparq_channels(q16.astype(np.float32)[None], pl.params.r(geo.d))[0]
            qq = np.zeros_like(q16)
            qq[keep] = q16[keep]
        else:
            pos = np.arange(n)
            qq = q16
        loc = hm.locate(pos, n)
        return SelectionPass(kind, [_scan(pl, qq, loc.group, loc.row, loc.set, loc.slot,
                                          hm.row_base)], int(pos.size))
    raise ValueError(f"unknown selection pass {kind!r}")  # pragma: no cover


def host_scores(sel: SelectionPass, read: np.ndarray) -> np.ndarray:
    """What the host ranks, from the FP32 bits an RDSB returned, in the order of the scanned
    vectors (centroid, page or token index): Quest adds each page's two bound scores. (An
    adaptive STARC pass's second scan, the always-attended tokens, is ``scan_scores(...)[1]``.)"""
    parts = scan_scores(sel, read)
    if sel.kind == "page-bounds":
        return parts[0] + parts[1]
    if sel.kind == "centroids" and sel.row_scores != "centroid":
        sets = np.split(parts[0], len(ROW_SCORES[sel.row_scores][0]))
        return combine_row_scores(sel.row_scores, sets)
    return parts[0]


def scan_scores(sel: SelectionPass, read: np.ndarray) -> list[np.ndarray]:
    """The scores an RDSB returned, per scan, in the order of each scan's vectors."""
    x = np.asarray(read, np.uint32).view(np.float32).astype(np.float64)
    parts, at = [], 0
    for s in sel.scans:
        v = np.empty(s.order.size)
        v[s.order] = x[at:at + s.order.size]
        parts.append(v)
        at += s.order.size
    return parts

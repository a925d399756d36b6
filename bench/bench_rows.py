"""Row-aligned clustering ablation: which rows STARC chooses, judged by recall at equal cost.

For every cache (synthetic ones generated here, real ones given as files with prefill queries,
e.g. ``starc kv extract --passkey-length 8176 --decode-steps 8 -o pk8k.npz``) and every variant,
all decode steps of the sparse layers (or ``--layers``) are selected under budgets B, and the
table reports, pooled over the caches of each head size:

- mass recall and top-k hit rate at B = 1024, activated slots / B;
- golden-model cycles (DRAM tCK of the preset) of one program per query head (a sample, every
  ``--cost-every``-th plan) without fill (rounds as the planner forms them, per-group MACs in a
  round not every group opens: the planner's ``energy`` objective), and full rounds (all groups
  open);
- recall at equal activated slots: interpolated along B at the slots artifact STARC activates at
  B = 1024; recall at equal cycles: the same at artifact STARC's cycles at B = 1024;
- compile time of the variant's layout.

Variants (compile options of the row-aligned mode, and cluster scores of the selection):
``artifact`` (STARC's artifact, exact), ``unit+coselect`` (unit keys, centroid bundles: the
previous default), ``unit+queries`` (unit keys, the placement learnt from prefill queries),
``query+coselect`` (keys in the prefill-query metric), ``query+queries`` (both: today's
default), ``flat`` (the default with flat balanced k-means, ``tree=False``), ``sinkhorn`` and
``flat sinkhorn`` (the same two with the Sinkhorn balanced assignment, ``assign='sinkhorn'``:
in the two-level algorithm only its flat iterations), ``exact`` (the two-level default with the
exact assignment, SciPy's solver, wherever a problem has at most 1024 points: its second level),
``refine`` (the default plus 3 steps of the selection-aware refinement learnt from the prefill
queries, ``refine=3``; the decode queries the bench evaluates are never seen by the compile),
and on the default layout the
cluster scores ``q . c`` (the planner's rule; c is the mean raw key in the query metric),
``massvar`` (mean score + half the per-channel score variance: a log-sum-exp estimate),
``bound`` (q . c + |q| r), ``minmax`` (Quest's bound on per-cluster channel min / max),
``halves`` (log-sum-exp of the two 16-token halves of a 32-token row, d = 64), ``quarters``
(the same over four 8-token quarters), ``pc1`` (one more vector per cluster, the top principal
axis of its keys scaled by its standard deviation, scanned with the same query: ``q . c +
(q . v)^2 / (2 d)``, the host squares), ``pc4`` (the same with the top four axes, the planner's
``--row-scores pc4``), ``mixbound`` / ``mixvar`` (``q . c`` plus the weight
``w`` of the bound term ``|q| r`` or of the variance term, ``w`` fit per layer and KV head on the
prefill queries: the most exact mass in the top 32 rows), the references no selection pass can
afford: ``fullcov`` (``q . c + q^T S q / (2 d)`` with the cluster's full key covariance S: the
best second-order estimate) and ``rowlse`` (the exact log-sum-exp of the row's scores: perfect
row scores), and ``balanced`` (``q . c`` order, but at most ``ceil(rows / G) + 1`` rows per bank
group before any group exceeds it: rounds fill up). The rules other than ``q . c`` are evaluated
here only; the planner keeps ``q . c``.

Every rule's cycles include its selection pass as the golden model times it (``sel.``: the scans
the PIM would run for it, laid out as the planner lays out its metadata (a set of C vectors per
block range, the centroids first: ``SCANS``): the C centroids for ``q . c``, ``bound`` and
``mixbound`` (the radius is a host number); two sets with one query for ``halves`` (the two half
means, after the centroids) and ``pc1`` (centroids and axes), four for ``quarters``, five for
``pc4`` (centroids and four axes); two scans of
one set each with two queries (``q``, ``q * q``) for ``massvar`` and ``mixvar``, (``q+``, ``q-``)
for ``minmax``; every key row for ``rowlse`` and ``fullcov`` (the exact-scores pass, a lower
bound for ``fullcov``), then the RDSB of the scores).

Usage: ``python bench/bench_rows.py [--real pk8k.npz ...] [--layers 6] [--steps 4]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import time
from typing import Any

import numpy as np

SYNTHETIC = (  # (name, head_dim, q heads, kv heads, prefill, seed): GQA 3:1 and 4:1, 5K-8K
    ("syn d64 3:1 8K", 64, 9, 3, 8192, 0),
    ("syn d64 4:1 6K", 64, 12, 3, 6144, 1),
    ("syn d128 4:1 6K", 128, 16, 4, 6144, 2),
    ("syn d128 3:1 8K", 128, 9, 3, 8192, 3),
)
BUDGETS = (256, 512, 768, 1024, 1536, 2048)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


@dataclasses.dataclass
class Stats:
    """Per-cluster statistics of one compiled head (raw keys)."""

    hm: Any
    K: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    rad: np.ndarray
    kmin: np.ndarray
    kmax: np.ndarray
    halves: np.ndarray | None
    quarters: np.ndarray | None = None
    pc1: np.ndarray | None = None          # top principal axis x its standard deviation
    pc4: np.ndarray | None = None          # top four axes [4, C, d] (compiled.row_score_vectors)
    members: np.ndarray | None = None      # [C, t, d] keys of every cluster (equal sizes)
    w: dict[str, float] = dataclasses.field(default_factory=dict)   # fitted weights


def _lse(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis, keepdims=True))).squeeze(axis)


def fit_weight(st: Stats, qp: np.ndarray, term: str, grid: tuple[float, ...],
               k_rows: int = 32) -> float:
    """Weight of ``term`` in ``q . c + w term`` that puts the most exact attention mass into the
    ``k_rows`` best-scored clusters, over the prefill queries ``qp`` (calibration data)."""
    s = np.float32(1.0 / np.sqrt(qp.shape[1]))
    true = _lse(np.einsum("pd,ctd->pct", qp, st.members) * s, 2)        # log mass per cluster
    pm = np.exp(true - true.max(1, keepdims=True))
    pm /= pm.sum(1, keepdims=True)
    base = (qp @ st.mean.T) * s
    t = (np.linalg.norm(qp, axis=1)[:, None] * st.rad[None] * s if term == "bound"
         else 0.5 * (qp * qp) @ st.var.T * (s * s))
    k = min(k_rows, pm.shape[1] - 1)
    best = (-1.0, 0.0)
    for w in grid:
        top = np.argpartition(-(base + w * t), k, axis=1)[:, :k]
        v = float(np.take_along_axis(pm, top, 1).sum(1).mean())
        if v > best[0]:
            best = (v, w)
    return best[1]


def head_stats(ck: Any, l: int, h: int, qps: list[np.ndarray] | None = None) -> Stats:
    hm = ck.head(l, h)
    K = ck.cache.k[l][:, h].astype(np.float32)
    C, d = hm.n_clusters, K.shape[1]
    z = np.zeros((C, d), np.float32)
    st = Stats(hm, K, z.copy(), z.copy(), np.zeros(C, np.float32), z.copy(), z.copy(), None)
    for c in range(C):
        if hm.cl_size[c] == 0:
            continue
        X = K[hm.slot_pos[hm.cl_start[c]:hm.cl_start[c] + hm.cl_size[c]]]
        st.mean[c], st.var[c] = X.mean(0), X.var(0)
        st.rad[c] = np.linalg.norm(X - st.mean[c], axis=1).max()
        st.kmin[c], st.kmax[c] = X.min(0), X.max(0)
    t = hm.tpgr
    if C and (hm.cl_size == t).all():
        X = K[hm.slot_pos[hm.cl_start[:, None] + np.arange(t)[None]]]       # [C, t, d]
        st.members = X
        if t == 32:
            st.halves = X.reshape(C, 2, 16, d).mean(2)
        st.quarters = X.reshape(C, 4, t // 4, d).mean(2)
        Xc = X - X.mean(1, keepdims=True)
        ev, V = np.linalg.eigh(np.einsum("cti,ctj->cij", Xc, Xc) / t)
        st.pc1 = V[:, :, -1] * np.sqrt(np.maximum(ev[:, -1:], 0.0))
        from starc.compiler.compiled import row_score_vectors
        st.pc4 = row_score_vectors("pc4", X)
        qp = qps[l] if qps is not None else None      # the compiled cache keeps no calibration
        if qp is not None:
            g = ck.cache.meta.group_size
            qq = qp[:, h * g:(h + 1) * g].astype(np.float32).reshape(-1, d)
            qq = qq[:: max(1, len(qq) // 256)]
            st.w["bound"] = fit_weight(st, qq, "bound", (0, .01, .02, .05, .1, .2, .3, .5))
            st.w["var"] = fit_weight(st, qq, "var", (0, .125, .25, .5, .75, 1.0, 1.5))
    return st


def scores(st: Stats, q: np.ndarray, avail: np.ndarray, rule: str) -> np.ndarray:
    s = np.float32(1.0 / np.sqrt(q.shape[1]))
    if rule == "centroid":
        return (q @ st.hm.centroid[avail].T) * s
    if rule == "mean":
        return (q @ st.mean[avail].T) * s
    if rule == "massvar":
        return (q @ st.mean[avail].T) * s + 0.5 * (q * q) @ st.var[avail].T * (s * s)
    if rule == "bound":
        return (q @ st.mean[avail].T + np.linalg.norm(q, axis=1)[:, None] * st.rad[avail]) * s
    if rule == "minmax":
        lo, hi = st.kmin[avail], st.kmax[avail]
        return np.maximum(q[:, None] * lo[None], q[:, None] * hi[None]).sum(-1) * s
    if rule in ("halves", "quarters"):
        sub = st.halves if rule == "halves" else st.quarters
        a = np.einsum("gd,chd->gch", q, sub[avail]) * s
        return _lse(a, 2) - np.float32(np.log(sub.shape[1]))
    if rule == "pc1":
        a = (q @ st.pc1[avail].T) * s
        return (q @ st.mean[avail].T) * s + 0.5 * a * a
    if rule == "pc4":
        a = np.einsum("gd,icd->gci", q, st.pc4[:, avail]) * s
        return (q @ st.mean[avail].T) * s + 0.5 * (a * a).sum(2)
    if rule == "mixbound":
        return (q @ st.mean[avail].T + st.w["bound"] * np.linalg.norm(q, axis=1)[:, None]
                * st.rad[avail]) * s
    if rule == "mixvar":
        return (q @ st.mean[avail].T) * s + st.w["var"] * 0.5 * (q * q) @ st.var[avail].T * (
            s * s)
    if rule == "fullcov":
        X = st.members[avail]
        a = np.einsum("gd,ctd->gct", q, X - X.mean(1, keepdims=True)) * s
        return (q @ st.mean[avail].T) * s + 0.5 * (a * a).mean(2)
    if rule == "rowlse":
        X = st.members[avail]
        return _lse(np.einsum("gd,ctd->gct", q, X) * s, 2)
    raise ValueError(rule)


# the metadata vector sets each rule's selection pass scans, one tuple per query written (module
# docstring; set 0 holds the centroids, the planner's layout of starc.compiler.compiled); None:
# every key row (the exact-scores pass)
SCANS: dict[str, tuple[tuple[int, ...], ...] | None] = {
    "centroid": ((0,),), "bound": ((0,),), "mixbound": ((0,),), "balanced": ((0,),),
    "halves": ((1, 2),), "pc1": ((0, 1),), "pc4": ((0, 1, 2, 3, 4),),
    "quarters": ((1, 2, 3, 4),),
    "massvar": ((0,), (1,)), "mixvar": ((0,), (1,)), "minmax": ((1,), (2,)),
    "fullcov": None, "rowlse": None}


def selection_cycles(pl: Any, hm: Any, n: int, q: np.ndarray, rule: str) -> int:
    """Golden-model cycles of the selection pass ``rule`` needs at context ``n`` (one query
    head): its scans over the head's metadata rows (or every key row), then the RDSB and BAR."""
    from starc.address import meta_address
    from starc.metrics import program_cost
    from starc.planner.program import SelectionPass, emit_selection
    from starc.planner.selection import _scan

    geo = pl.geo
    q16 = q.astype(np.float16)
    if SCANS[rule] is None:                          # every key: the exact-scores pass
        loc = hm.locate(np.arange(n), n)
        scans = [_scan(pl, q16, loc.group, loc.row, loc.set, loc.slot, hm.row_base)]
    else:
        C = hm.clusters_at(n).size
        stride = -(-hm.n_clusters // geo.tpgr) * geo.tpgr     # a vector set per row range
        base = hm.row_base + 2 * hm.n_krows
        qs = [q16, (q16.astype(np.float32) ** 2 / 8).astype(np.float16)]  # a second query
        scans = []
        for qq, sets in zip(qs[:len(SCANS[rule])], SCANS[rule], strict=True):
            idx = np.concatenate([k * stride + np.arange(C) for k in sets])
            scans.append(_scan(pl, qq, *meta_address(idx, geo), base))
    sel = SelectionPass("centroids", scans, int(sum(sc.order.size for sc in scans)))
    return program_cost(emit_selection(sel, geo), pl.ck.cfg, geo.d, 0).cycles


def select(st: Stats, q: np.ndarray, n: int, B: int, rule: str) -> list[np.ndarray]:
    """STARC's rule (starc.planner.policies.select_starc) with a pluggable cluster score."""
    hm = st.hm
    if n <= B:
        return [np.arange(n)] * q.shape[0]
    e = hm.clustered_end(n)
    always = np.concatenate([np.arange(min(hm.sink_end, e, B)), np.arange(e, n)])
    avail = hm.clusters_at(n)
    sizes, starts = hm.cl_size[avail], hm.cl_start[avail]
    balanced = rule == "balanced"
    sc = scores(st, q, avail, "centroid" if balanced else rule)
    budget = B - always.size
    out = []
    for j in range(q.shape[0]):
        order = np.argsort(-sc[j], kind="stable")
        if balanced:   # at most ceil(rows / G) + 1 rows per group, in score order
            G = int(hm.block_group.max()) + 1
            grp = hm.block_group[starts[order] // hm.tpgr]
            quota = -(-budget // (int(sizes.max()) * G)) + 1
            rank = np.zeros_like(grp)
            for gg in np.unique(grp).tolist():
                at = np.flatnonzero(grp == gg)
                rank[at] = np.arange(at.size)
            order = order[np.argsort(rank >= quota, kind="stable")]
        cum = np.cumsum(sizes[order])
        whole = int(np.searchsorted(cum, budget, side="right"))
        taken = int(cum[whole - 1]) if whole else 0
        parts = [np.arange(a, a + z) for a, z in zip(starts[order[:whole]],
                                                     sizes[order[:whole]], strict=True)]
        if whole < len(order) and taken < budget:
            c = order[whole]
            parts.append(np.arange(starts[c], starts[c] + (budget - taken)))
        slots = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        out.append(np.sort(np.concatenate([hm.slot_pos[slots], always])))
    return out


def evaluate(ck: Any, rule: str, layers: list[int], cost_every: int,
             qps: list[np.ndarray] | None = None) -> dict[int, dict[str, Any]]:
    from starc.metrics import dense_reference, program_cost, quality
    from starc.planner.plan import Planner
    from starc.planner.program import emit_program
    from starc.planner.rounds import plan_rows

    pl = Planner(ck, "starc" if ck.mode == "artifact" else "starc-row", 1024)

    cache, cfg = ck.cache, ck.cfg
    m = cache.meta
    g, G, geo = m.group_size, cfg.org.groups_per_channel, ck.geometry
    acc: dict[int, dict[str, list[float]]] = {B: {} for B in BUDGETS}
    i = 0
    for l in layers:
        for kh in range(m.n_kv_heads):
            st = head_stats(ck, l, kh, qps)
            for s in range(m.decode_steps):
                n = m.prefill_len + s + 1
                qg = cache.q[l][s, kh * g:(kh + 1) * g].astype(np.float32)
                ref = dense_reference(qg.astype(np.float64), cache.k[l][:n, kh],
                                      cache.v[l][:n, kh])
                sel_c = selection_cycles(pl, st.hm, n, qg[0], rule)
                for B in BUDGETS:
                    a = acc[B]
                    for j, pos in enumerate(select(st, qg, n, B, rule)):
                        qual = quality(ref, j, pos, B)
                        loc = st.hm.locate(pos, n)
                        # objective energy: per-group MACs, no dummy rows ("without fill")
                        rp = plan_rows(loc.group, loc.row, loc.lane_bit, loc.set, geo,
                                       objective="energy")
                        for k, v in (("slots", rp.n_blocks * geo.tpgr),
                                     ("recall", qual.mass_recall), ("topk", qual.topk_recall),
                                     ("full", sum(len(r.groups) == G for r in rp.rounds))):
                            a.setdefault(k, []).append(v)
                        if (i + j) % cost_every == 0:
                            prog = emit_program(rp, geo, krow_base=st.hm.row_base,
                                                vrow_base=st.hm.row_base + st.hm.n_krows)
                            a.setdefault("cycles", []).append(
                                program_cost(prog, cfg, m.head_dim, pos.size).cycles + sel_c)
                            a.setdefault("sel", []).append(sel_c)
                i += g
    return {B: {k: float(np.mean(v)) for k, v in acc[B].items()} for B in BUDGETS}


def interp(res: dict[int, dict[str, float]], x_key: str, x: float) -> float:
    xs = np.array([res[B][x_key] for B in BUDGETS])
    ys = np.array([res[B]["recall"] for B in BUDGETS])
    o = np.argsort(xs)
    if not xs[o][0] <= x <= xs[o][-1]:
        return float("nan")
    return float(np.interp(x, xs[o], ys[o]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", nargs="*", default=[], help="real caches with prefill queries")
    ap.add_argument("--layers", type=int, default=6, help="synthetic layers (2 dense)")
    ap.add_argument("--steps", type=int, default=4, help="synthetic decode steps")
    ap.add_argument("--real-layers", type=int, nargs="*", default=[4, 9, 14, 19, 24, 29])
    ap.add_argument("--cost-every", type=int, default=5)
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--variants", nargs="*", default=None,
                    help="compile variants to run (default: all)")
    ap.add_argument("--rules", nargs="*", default=None,
                    help="cluster scores on the default layout (default: all)")
    ap.add_argument("--budgets-table", type=int, nargs="*", default=[1024],
                    help="budgets of the per-budget table (recall, top-k, slots, cycles)")
    args = ap.parse_args()

    from starc import config
    from starc.compiler import CompileOptions, compile_kv
    from starc.kv import load_kv, synthetic_kv
    from threadpoolctl import threadpool_limits

    cfg = config.load()
    print(f"start: {uptime()}")
    caches = []
    if not args.no_synthetic:
        for name, d, hq, hk, P, seed in SYNTHETIC:
            caches.append((name, synthetic_kv(n_layers=args.layers, n_q_heads=hq, n_kv_heads=hk,
                                              head_dim=d, prefill_len=P, seed=seed,
                                              decode_steps=args.steps, prefill_queries=256)))
    for p in args.real:
        caches.append((f"real {os.path.basename(p)}", load_kv(p)))
    variants: list[tuple[str, dict[str, Any], list[str]]] = [
        ("artifact", {"mode": "artifact"}, ["centroid"]),
        ("unit+coselect", {"metric": "unit", "placement": "coselect"}, ["centroid"]),
        ("unit+queries", {"metric": "unit", "placement": "queries"}, ["centroid"]),
        ("query+coselect", {"metric": "query", "placement": "coselect"}, ["centroid"]),
        ("query+queries", {"metric": "query", "placement": "queries"},
         args.rules or ["centroid", "massvar", "bound", "minmax", "halves", "balanced",
                        "quarters", "pc1", "mixbound", "mixvar", "fullcov", "rowlse"]),
        ("flat", {"metric": "query", "placement": "queries", "tree": False}, ["centroid"]),
        ("sinkhorn", {"metric": "query", "placement": "queries", "assign": "sinkhorn"},
         ["centroid"]),
        ("flat sinkhorn", {"metric": "query", "placement": "queries", "tree": False,
                           "assign": "sinkhorn"}, ["centroid"]),
        ("exact", {"metric": "query", "placement": "queries", "assign": "exact"},
         ["centroid"]),
        ("refine", {"metric": "query", "placement": "queries", "refine": 3}, ["centroid"]),
    ]
    if args.variants is not None:
        variants = [v for v in variants if v[0] in args.variants]
    rows: dict[tuple[str, str], list[tuple[int, dict[int, dict[str, float]], float]]] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for cname, cache in caches:
            m = cache.meta
            layers = [l for l in range(2, m.n_layers)] if cname.startswith("syn") else \
                [l for l in args.real_layers if l < m.n_layers]
            print(f"{cname}: {m.n_layers} layers x {m.n_kv_heads} KV heads x {m.context_len} "
                  f"tokens, d {m.head_dim}, GQA {m.group_size}:1, evaluated layers {layers}, "
                  f"{m.decode_steps} steps", flush=True)
            for vname, kw, rules in variants:
                t0 = time.perf_counter()
                ck = compile_kv(cache, cfg, CompileOptions(**kw))
                dt = time.perf_counter() - t0
                for rule in rules:
                    if rule == "halves" and ck.geometry.tpgr != 32:
                        continue
                    if rule in ("mixbound", "mixvar") and cache.qp is None:
                        continue
                    res = evaluate(ck, rule, layers, args.cost_every, cache.qp)
                    label = vname if rule == "centroid" else f"{vname}, score {rule}"
                    rows.setdefault((label, cname), []).append((m.head_dim, res, dt))
                    r = res[1024]
                    print(f"  {label:30s} B 1024: recall {r['recall']:.4f} top-k "
                          f"{r['topk']:.3f} slots/B {r['slots'] / 1024:.3f} cycles "
                          f"{r['cycles']:7.0f} (sel. {r['sel']:.0f}) full rounds "
                          f"{r['full']:.2f} (compile {dt:.1f} s)", flush=True)
    # pooled table per head size and kind (synthetic / real)
    print()
    print("| caches | variant | recall @B=1024 | top-k | slots/B | cycles | sel. | full rounds | "
          "recall @ artifact's slots | recall @ artifact's cycles | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    kinds = sorted({(d, c.startswith("real")) for (_, c), v in rows.items() for d, _, _ in v})
    for d, real in kinds:
        group = f"{'real' if real else 'synthetic'} d {d}"
        cn = [c for (lab, c) in rows if lab == "artifact" and c.startswith("real") == real
              and rows[(lab, c)][0][0] == d]
        art = {c: rows[("artifact", c)][0][1][1024] for c in cn}
        labels = list(dict.fromkeys(lab for (lab, c) in rows if c in cn))
        for lab in labels:
            vals = [(c, rows[(lab, c)][0]) for c in cn if (lab, c) in rows]
            if not vals:
                continue
            r1 = [v[1][1024] for _, v in vals]
            eq_s = [interp(v[1], "slots", art[c]["slots"]) for c, v in vals]
            eq_c = [interp(v[1], "cycles", art[c]["cycles"]) for c, v in vals]
            print(f"| {group} ({len(vals)}) | {lab} | {np.mean([r['recall'] for r in r1]):.4f} | "
                  f"{np.mean([r['topk'] for r in r1]):.3f} | "
                  f"{np.mean([r['slots'] for r in r1]) / 1024:.3f} | "
                  f"{np.mean([r['cycles'] for r in r1]):.0f} | "
                  f"{np.mean([r['sel'] for r in r1]):.0f} | "
                  f"{np.mean([r['full'] for r in r1]):.2f} | {np.nanmean(eq_s):.4f} | "
                  f"{np.nanmean(eq_c):.4f} | {np.mean([v[2] for _, v in vals]):.1f} |")
    # per budget: recall / top-k / slots / cycles of every variant, pooled as above
    for B in args.budgets_table:
        if B not in BUDGETS:
            continue
        print()
        print(f"B = {B}: | caches | variant | recall | top-k | slots/B | cycles | sel. |")
        for d, real in kinds:
            group = f"{'real' if real else 'synthetic'} d {d}"
            cn = [c for (lab, c) in rows if c.startswith("real") == real
                  and rows[(lab, c)][0][0] == d]
            for lab in dict.fromkeys(lab for (lab, c) in rows if c in cn):
                r1 = [rows[(lab, c)][0][1][B] for c in dict.fromkeys(cn) if (lab, c) in rows]
                print(f"| {group} ({len(r1)}) | {lab} | "
                      f"{np.mean([r['recall'] for r in r1]):.4f} | "
                      f"{np.mean([r['topk'] for r in r1]):.3f} | "
                      f"{np.mean([r['slots'] for r in r1]) / B:.3f} | "
                      f"{np.mean([r['cycles'] for r in r1]):.0f} | "
                      f"{np.mean([r['sel'] for r in r1]):.0f} |")
    print(f"end: {uptime()}")


if __name__ == "__main__":
    main()

"""GQA-shared STARC selection against per-query-head selection, by rows opened at equal recall.

Per synthetic GQA cache (those of ``bench_rows.py``: d 64 3:1 8K and 4:1 6K, d 128 4:1 6K and
3:1 8K; 256 prefill queries, default row-aligned compile), every decode step of the sparse layers:

- per query head (``starc-row``, ``policies.select_starc``) at B = 1024: mean attention-mass
  recall, slots per query head (group rows holding a selected token x tokens per row), and the
  GQA union (rows any head of the KV head selects: what a PIM with a multi-query GEMV buffer
  opens once per KV head);
- shared (``planner.gqa.select_starc_shared``, one selection per KV head) over a range of
  budgets: recall and slots; interpolated, the slots at which it reaches the per-head recall.

Target (issue 14): shared slots at equal recall <= 1.3 x per-query-head slots.

``--heads`` asks instead how far apart the query heads of a group are, on the synthetic caches
and on real ones (``--real FILE``, layers 4, 9, .. 29), from exact float64 attention: the mean
pairwise cosine of the heads' queries, the pairwise Jaccard overlap and the union of their exact
top-B token sets, and, on the row-aligned placement as compiled (cluster rows plus the sink row
and recent buffer every plan attends), the rows the best possible selections need to reach the
per-head ``starc-row`` recall at B: per query head (its own exact row masses, the row oracle)
and shared by the group (rows by the group's mean exact row mass: the best a shared selection
of whole rows can do), pooled over the plans (recall averaged at each row count, then
interpolated); and shared selections by other combinations of the heads' centroid scores: the
rule on ``pc1`` row scores (bench_rows.py), mass shares at temperature 0.5 and 2, per-head
standardised scores summed. The shared oracle over the per-head oracle is what the heads'
disagreement costs; over ``starc-row``'s own rows it says whether the 1.3 x target is reachable
at all. A second table asks where the shared rule's gap lies, by estimator: the rule with the
sink and recent tokens' exact mass in each head's normaliser (what the adaptive budget's pass
reads back), a greedy coverage order (the cluster maximising the sum over heads of
``min(remaining need, share)``, the need up to the per-head recall), and the rule on better
cluster-mass estimates: ``pc1`` and ``pc8`` (one / eight principal axes of the cluster's keys,
``q . c + sum_r (q . v_r)^2 / 2``), the full key covariance of each cluster (``fullcov``, d^2 / 2
numbers per cluster: a reference no image carries) and the exact log-sum-exp of each row
(``rowlse``: perfect estimates; the shared row oracle up to its normaliser); beside each, one
head's own recall at ``starc-row``'s cluster rows when it ranks by that estimate (the ranking
gap of the per-head target, docs/compiler.md "Row scores").

``--row-scores centroid pc1 pc4`` runs the comparison for several row-score rules side by side on
the same clusters (per-head and shared selection both rank by the rule); the last column gives the
shared slots at the first rule's per-head recall.

Usage: ``python bench/bench_gqa.py [--layers 6] [--steps 4] [--row-scores R ...]
[--heads [--real FILE ...]]``.
"""

from __future__ import annotations

import argparse
import itertools
import os

import numpy as np
from bench_rows import SYNTHETIC, uptime  # the same caches (bench/ is the script's folder)

SHARED_BUDGETS = (1024, 1280, 1536, 2048, 2560, 3072)


def rows_of(hm, pos: np.ndarray, n: int) -> set[tuple[int, int]]:
    loc = hm.locate(pos, n)
    return set(zip(loc.group.tolist(), loc.row.tolist(), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6, help="synthetic layers (2 dense)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--budget", type=int, default=1024, help="per-query-head budget")
    ap.add_argument("--combine", default="mean", choices=("mean", "max"),
                    help="how the shared rule combines the heads' mass shares")
    ap.add_argument("--row-scores", nargs="+", default=["centroid"],
                    help="row-score rules (compiled.ROW_SCORES) run side by side on the same "
                         "clusters: per-head and shared selection both rank by the rule")
    ap.add_argument("--heads", action="store_true",
                    help="how far apart the query heads of a group are (module docstring)")
    ap.add_argument("--real", nargs="*", default=[], help="real caches for --heads")
    args = ap.parse_args()
    if args.heads:
        heads_report(args)
        return

    from starc import config
    from starc.compiler import compile_kv
    from starc.compiler.compiled import attach_row_scores
    from starc.kv import synthetic_kv
    from starc.metrics import dense_reference, quality
    from starc.planner.gqa import select_starc_shared
    from starc.planner.policies import select_starc

    cfg = config.load()
    print(f"start: {uptime()}; shared rule: {args.combine} of the heads' mass shares; row "
          f"scores {' '.join(args.row_scores)}")
    B = args.budget
    pooled: dict[tuple[str, int], list[tuple[float, float, float, float, float]]] = {}
    base_rec: dict[str, float] = {}
    compiled: dict[str, object] = {}
    for (name, d, hq, hk, P, seed), rule in itertools.product(SYNTHETIC, args.row_scores):
        if rule == "halves" and d != 64:
            continue
        if rule == args.row_scores[0] or name not in compiled:
            cache = synthetic_kv(n_layers=args.layers, n_q_heads=hq, n_kv_heads=hk, head_dim=d,
                                 prefill_len=P, seed=seed, decode_steps=args.steps,
                                 prefill_queries=256)
            compiled.clear()
            compiled[name] = compile_kv(cache, cfg)
        ck = compiled[name]
        attach_row_scores(ck, rule)          # the same clusters, the rule's metadata vectors
        name = f"{name} [{rule}]"
        m = cache.meta
        g, tp = m.group_size, ck.geometry.tpgr
        per_rec, per_slots, uni_slots = [], [], []
        sh: dict[int, list[tuple[float, float]]] = {b: [] for b in SHARED_BUDGETS}
        for l in range(2, m.n_layers):
            for kh in range(m.n_kv_heads):
                hm = ck.head(l, kh)
                for s in range(m.decode_steps):
                    n = m.prefill_len + s + 1
                    qg = cache.q[l][s, kh * g:(kh + 1) * g].astype(np.float32)
                    ref = dense_reference(qg.astype(np.float64), cache.k[l][:n, kh],
                                          cache.v[l][:n, kh])
                    sel = select_starc(qg, hm, n, B)
                    union: set[tuple[int, int]] = set()
                    for j, pos in enumerate(sel.positions):
                        per_rec.append(quality(ref, j, pos, B).mass_recall)
                        r = rows_of(hm, pos, n)
                        per_slots.append(len(r) * tp)
                        union |= r
                    uni_slots.append(len(union) * tp)
                    for b in SHARED_BUDGETS:
                        pos = select_starc_shared(qg, hm, n, b,
                                              combine=args.combine).positions[0]
                        nr = len(rows_of(hm, pos, n)) * tp
                        for j in range(g):
                            sh[b].append((quality(ref, j, pos, b).mass_recall, nr))
        rec = float(np.mean(per_rec))
        s1, su = float(np.mean(per_slots)), float(np.mean(uni_slots))
        xs = np.array([np.mean([v[1] for v in sh[b]]) for b in SHARED_BUDGETS])
        ys = np.array([np.mean([v[0] for v in sh[b]]) for b in SHARED_BUDGETS])
        at = float(np.interp(rec, ys, xs)) if ys[0] <= rec <= ys[-1] else float("nan")
        # the slots at which the rule's shared selection reaches the first rule's per-head
        # recall (today's starc-row when the first rule is centroid)
        r0 = base_rec.setdefault(name.split(" [")[0], rec)
        at0 = float(np.interp(r0, ys, xs)) if ys[0] <= r0 <= ys[-1] else float("nan")
        print(f"{name}: per query head B {B}: recall {rec:.4f}, slots/qh {s1:.0f}, GQA union "
              f"{su:.0f} ({su / s1:.2f} x)", flush=True)
        print("  shared: " + ", ".join(f"B {b}: recall {y:.4f} slots {x:.0f}"
                                       for b, x, y in zip(SHARED_BUDGETS, xs, ys, strict=True)))
        print(f"  shared slots at the per-head recall: {at:.0f} = {at / s1:.2f} x per-query-head "
              f"slots (target <= 1.3 x), {at / su:.2f} x the union; at the first rule's "
              f"per-head recall {r0:.4f}: {at0:.0f} = {at0 / s1:.2f} x", flush=True)
        pooled.setdefault((rule, d), []).append((rec, s1, su, at, at0))
    print("| caches | row scores | per-head recall | slots per query head | GQA union | shared, "
          "at equal recall | shared, at the first rule's per-head recall |")
    print("|---|---|---|---|---|---|---|")
    for (rule, d), v in sorted(pooled.items(), key=lambda kv: (kv[0][1], kv[0][0] != "centroid",
                                                                kv[0][0])):
        a = np.array(v)
        print(f"| synthetic d {d} ({len(v)}) | {rule} | {a[:, 0].mean():.4f} | "
              f"{a[:, 1].mean():.0f} | {a[:, 2].mean():.0f} ({(a[:, 2] / a[:, 1]).mean():.2f} x) "
              f"| {a[:, 3].mean():.0f} ({(a[:, 3] / a[:, 1]).mean():.2f} x) | "
              f"{a[:, 4].mean():.0f} ({(a[:, 4] / a[:, 1]).mean():.2f} x) |")
    print(f"end: {uptime()}")


def _curve(base: float, masses: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    """Recall after 0 .. size - 1 rows taken in ``order`` (padded with the last value)."""
    c = base + np.concatenate([[0.0], np.cumsum(masses[order])])
    out = np.full(size, c[-1])
    out[:min(size, c.size)] = c[:size]
    return out


def _lse(a: np.ndarray, axis: int) -> np.ndarray:
    mx = a.max(axis, keepdims=True)
    return (mx + np.log(np.exp(a - mx).sum(axis, keepdims=True))).squeeze(axis)


def _principal_axes(X: np.ndarray, r: int) -> np.ndarray:
    """The top ``r`` principal axes of each cluster's keys ``X [C, t, d]``, each times its
    standard deviation: ``[C, r, d]`` (from the t x t Gram matrix, as ``row_score_vectors``)."""
    t = X.shape[1]
    Xc = X - X.mean(1, keepdims=True)
    ev, U = np.linalg.eigh(np.einsum("cid,cjd->cij", Xc, Xc) / t)
    ev, U = ev[:, ::-1][:, :r], U[:, :, ::-1][:, :, :r]
    w = np.einsum("ctd,ctr->crd", Xc, U)
    norm = np.linalg.norm(w, axis=2, keepdims=True)
    return np.where(norm > 0, w / np.maximum(norm, 1e-300), 0.0) * np.sqrt(
        np.maximum(ev, 0.0))[:, :, None]


def _coverage_order(share: np.ndarray, got: np.ndarray, target: float) -> np.ndarray:
    """Greedy coverage: clusters in the order that each time takes the one maximising the sum
    over heads of ``min(need_h, share_hc)``, ``need_h = target - got_h - taken share`` (ties,
    and once every need is met, by the mean share)."""
    g, C = share.shape
    need = np.maximum(target - got, 0.0)
    left = np.ones(C, bool)
    order = np.empty(C, np.int64)
    tie = 1e-9 * share.mean(0)
    for i in range(C):
        gain = np.minimum(need[:, None], share).sum(0) + tie
        gain[~left] = -np.inf
        c = int(np.argmax(gain))
        order[i], left[c] = c, False
        need = np.maximum(need - share[:, c], 0.0)
    return order


ESTIMATES = ("centroid", "pc1", "pc8", "fullcov", "rowlse")


def heads_report(args: argparse.Namespace) -> None:
    from starc import config
    from starc.compiler import compile_kv
    from starc.compiler.compiled import row_score_vectors
    from starc.kv import load_kv, synthetic_kv
    from starc.planner.gqa import group_scores
    from starc.planner.policies import select_starc

    cfg = config.load()
    B = args.budget
    print(f"start: {uptime()}; B = {B}; exact float64 attention")
    caches = [(name, (d, hq, hk, P, seed)) for name, d, hq, hk, P, seed in SYNTHETIC]
    caches += [(f"real {os.path.basename(p)}", p) for p in args.real]
    print("| cache | query cosine | top-B Jaccard | top-B union / B | starc-row recall | rows "
          "| row oracle per head | shared row oracle | shared / per-head oracle | shared oracle "
          "/ starc-row rows | shared rule / starc-row rows | shared rule on pc1 scores / "
          "starc-row rows | shares at tau 0.5 / 2 | standardised scores summed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    est_rows: dict[str, tuple] = {}
    size = 512
    for name, src in caches:
        if isinstance(src, str):
            cache = load_kv(src)
            layers = [l for l in (4, 9, 14, 19, 24, 29) if l < cache.meta.n_layers]
        else:
            d, hq, hk, P, seed = src
            cache = synthetic_kv(n_layers=args.layers, n_q_heads=hq, n_kv_heads=hk, head_dim=d,
                                 prefill_len=P, seed=seed, decode_steps=args.steps,
                                 prefill_queries=256)
            layers = list(range(2, cache.meta.n_layers))
        ck = compile_kv(cache, cfg)
        m = cache.meta
        g, tp = m.group_size, ck.geometry.tpgr
        cos, jac, uni, rec, rows, alw = [], [], [], [], [], []
        per: dict[str, list[np.ndarray]] = {}
        cur: dict[str, list[np.ndarray]] = {"per head": [], "shared": [], "rule": [],
                                            "rule pc1": [], "tau 0.5": [], "tau 2": [],
                                            "z-sum": []}
        for l in layers:
            for kh in range(m.n_kv_heads):
                hm = ck.head(l, kh)
                # every cluster's keys, mean and pc1 vector (bench_rows.py), once per head
                allm = hm.slot_pos[hm.cl_start[:, None] + np.arange(tp)[None]]
                Xall = cache.k[l][:, kh].astype(np.float32)[allm]            # [C, t, d]
                mean_all = Xall.mean(1).astype(np.float64)
                v_all = row_score_vectors("pc1", Xall)[0].astype(np.float64)
                X64 = Xall.astype(np.float64)
                v8_all = _principal_axes(X64, 8)                             # [C, 8, d]
                for s in range(m.decode_steps):
                    n = m.prefill_len + s + 1
                    q = cache.q[l][s, kh * g:(kh + 1) * g].astype(np.float64)
                    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
                    cos.append(float((qn @ qn.T)[np.triu_indices(g, 1)].mean()))
                    lg = q @ cache.k[l][:n, kh].astype(np.float64).T / np.sqrt(m.head_dim)
                    p = np.exp(lg - lg.max(1, keepdims=True))
                    p /= p.sum(1, keepdims=True)
                    tops = [set(np.argpartition(-lg[j], B - 1)[:B].tolist()) for j in range(g)]
                    jac.append(float(np.mean([len(tops[a] & tops[b]) / len(tops[a] | tops[b])
                                              for a in range(g) for b in range(a + 1, g)])))
                    uni.append(len(set().union(*tops)) / B)
                    e = hm.clustered_end(n)
                    always = np.concatenate([np.arange(min(hm.sink_end, e, B)), np.arange(e, n)])
                    alw.append(always.size / tp)
                    avail = hm.clusters_at(n)
                    members = hm.slot_pos[hm.cl_start[avail][:, None] + np.arange(tp)[None]]
                    rm = p[:, members].sum(2)                         # [g, clusters] exact
                    base = p[:, always].sum(1)
                    sel = select_starc(q.astype(np.float32), hm, n, B).positions
                    rec.append(float(np.mean([p[j, sel[j]].sum() for j in range(g)])))
                    for pos in sel:
                        loc = hm.locate(pos, n)
                        rows.append(len(set(zip(loc.group.tolist(), loc.row.tolist(),
                                                strict=True))))
                    for j in range(g):
                        cur["per head"].append(_curve(base[j], rm[j], np.argsort(-rm[j]), size))
                    cur["shared"].append(_curve(base.mean(), rm.mean(0),
                                                np.argsort(-rm.mean(0)), size))
                    # the shared rule's own order (starc-row-gqa): every cluster one row
                    sc = group_scores(q.astype(np.float32), hm.centroid[avail],
                                      hm.cl_size[avail], None, "mean")
                    cur["rule"].append(_curve(base.mean(), rm.mean(0),
                                              np.argsort(-sc, kind="stable"), size))
                    # other ways to combine the heads' centroid scores: mass shares at a
                    # temperature (logits x tau), and per-head standardised scores summed
                    lg0 = q @ hm.centroid[avail].T.astype(np.float64) / np.sqrt(m.head_dim)
                    for tau in (0.5, 2):
                        w = np.exp(tau * (lg0 - lg0.max(1, keepdims=True)))
                        w = w * hm.cl_size[avail][None]
                        sh = (w / w.sum(1, keepdims=True)).mean(0)
                        cur[f"tau {tau:g}"].append(_curve(base.mean(), rm.mean(0),
                                                          np.argsort(-sh, kind="stable"), size))
                    z = (lg0 - lg0.mean(1, keepdims=True)) / np.maximum(
                        lg0.std(1, keepdims=True), 1e-12)
                    cur["z-sum"].append(_curve(base.mean(), rm.mean(0),
                                               np.argsort(-z.sum(0), kind="stable"), size))
                    # the same rule on pc1 row scores (bench_rows.py: one more vector per
                    # cluster), each head's mass shares from q . c + (q . v)^2 / (2 d)
                    qs = q / np.sqrt(m.head_dim)
                    lgc = qs @ mean_all[avail].T + 0.5 * (qs @ v_all[avail].T) ** 2
                    w = np.exp(lgc - lgc.max(1, keepdims=True))
                    sh = (w / w.sum(1, keepdims=True)).mean(0)
                    cur["rule pc1"].append(_curve(base.mean(), rm.mean(0),
                                                  np.argsort(-sh, kind="stable"), size))
                    # where the gap lies: each head's estimated cluster logits by estimator
                    Xa = X64[avail]
                    a8 = np.einsum("gd,crd->gcr", qs, v8_all[avail])
                    Xc = Xa - Xa.mean(1, keepdims=True)
                    est = {"centroid": lg0, "pc1": lgc,
                           "pc8": qs @ mean_all[avail].T + 0.5 * (a8 * a8).sum(2),
                           "fullcov": qs @ mean_all[avail].T + 0.5 * (
                               np.einsum("gd,ctd->gct", qs, Xc) ** 2).mean(2),
                           "rowlse": _lse(np.einsum("gd,ctd->gct", qs, Xa), 2)
                           - np.log(Xa.shape[1])}
                    la = lg[:, always]                     # exact logits of the sink / recent
                    for k, L in est.items():
                        top = np.maximum(L.max(1, keepdims=True), la.max(1, keepdims=True))
                        w = hm.cl_size[avail][None] * np.exp(L - top)
                        wa = np.exp(la - top).sum(1)
                        tot = w.sum(1) + wa
                        sh_a = w / tot[:, None]
                        cur.setdefault(f"{k} norm", []).append(
                            _curve(base.mean(), rm.mean(0), np.argsort(-sh_a.mean(0),
                                                                      kind="stable"), size))
                        if k != "pc1":     # the rule on pc1 has its column above
                            ww = hm.cl_size[avail][None] * np.exp(L - L.max(1, keepdims=True))
                            cur.setdefault(f"{k} rule", []).append(_curve(
                                base.mean(), rm.mean(0), np.argsort(
                                    -(ww / ww.sum(1, keepdims=True)).mean(0), kind="stable"),
                                size))
                        if k in ("centroid", "fullcov"):
                            cur.setdefault(f"{k} cover", []).append(_curve(
                                base.mean(), rm.mean(0),
                                _coverage_order(sh_a, wa / tot, rec[-1]), size))
                        for j in range(g):
                            per.setdefault(k, []).append(
                                _curve(base[j], rm[j], np.argsort(-L[j], kind="stable"), size))
        R, r_rows, a = float(np.mean(rec)), float(np.mean(rows)), float(np.mean(alw))
        at = {k: float(np.interp(R, np.mean(v, 0), np.arange(size))) + a
              for k, v in cur.items()}
        est_rows[name] = (R, r_rows, a, {k: v for k, v in cur.items()}, per)
        print(f"| {name} | {np.mean(cos):.3f} | {np.mean(jac):.3f} | {np.mean(uni):.2f} | "
              f"{R:.4f} | {r_rows:.1f} | {at['per head']:.1f} | {at['shared']:.1f} | "
              f"{at['shared'] / at['per head']:.2f} | {at['shared'] / r_rows:.2f} | "
              f"{at['rule'] / r_rows:.2f} | {at['rule pc1'] / r_rows:.2f} | "
              f"{at['tau 0.5'] / r_rows:.2f} / {at['tau 2'] / r_rows:.2f} | "
              f"{at['z-sum'] / r_rows:.2f} |", flush=True)
    print()
    print("Where the shared rule's gap lies (rows at starc-row's recall R / starc-row's rows; "
          "norm: the sink and recent tokens' exact mass in each head's normaliser; cover: greedy "
          "coverage up to R; per head: one head's own recall at starc-row's cluster rows when it "
          "ranks by the estimate):")
    print("| cache | estimate | shared rule | with exact sink/recent mass | coverage | "
          "per-head recall at starc-row's rows |")
    print("|---|---|---|---|---|---|")
    for name, (R, r_rows, a, cur, per) in est_rows.items():
        def at(v: list[np.ndarray], R: float = R, a: float = a, r_rows: float = r_rows) -> float:
            return (float(np.interp(R, np.mean(v, 0), np.arange(size))) + a) / r_rows
        for k in ESTIMATES:
            rule = cur["rule pc1"] if k == "pc1" else cur[f"{k} rule"]
            cov = f"{at(cur[f'{k} cover']):.2f}" if f"{k} cover" in cur else "-"
            pr = float(np.interp(r_rows - a, np.arange(size), np.mean(per[k], 0)))
            print(f"| {name} | {k} | {at(rule):.2f} | {at(cur[f'{k} norm']):.2f} | {cov} | "
                  f"{pr:.4f} |")
    print(f"end: {uptime()}")


if __name__ == "__main__":
    main()

"""Mapping-compiler speed on a SmolLM2-sized cache: 30 layers x 3 KV heads x 8192 tokens, d = 64.

Measured in one run, side by side:
- ``starc.compiler.compile_kv`` per mode (target for the default row-aligned mode: <= 30 s on an
  idle 2-core machine), wall and CPU time (the worker processes' included), tokens per second;
- the peak traced memory of one more compile of the first mode, next to the KV size: serial (the
  tracer sees one process) and untimed (tracing slows every allocation);
- the baseline: scikit-learn ``KMeans`` (k-means++ seeding, one init, 10 Lloyd iterations, the
  same thread count) with the row-aligned clustering's job: the same keys (scaled by the head's
  mean norm), the same number of clusters (one per 32-token group row) on every clustered head;
  target: the row-aligned compile >= 5 x faster;
- the attention-mass recall of both clusterings at equal activated slots, on the decode queries
  of a sample of heads: per query, the sink row and the recent tokens, then whole clusters in
  order of centroid score while the activated group-row slots stay within the budget (a
  scikit-learn cluster of z tokens stored from a row boundary occupies ceil(z / 32) rows);
- building and writing the artifact folder (memory image, tables, hashes).

The cache carries 256 prefill queries per layer (calibration for the default query metric and
placement, docs/compiler.md). Usage: ``python bench/bench_compile.py [--layers 30]
[--modes row-aligned artifact global] [--sklearn-heads N] [--slots 1024] [--no-memory]``
(N limits the baseline to N heads and scales its time up, for a quick run).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
import tracemalloc
from typing import Any

import numpy as np


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def cpu_time() -> float:
    """CPU seconds of this process, its threads and its finished child processes (the
    compiler's worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def select_recall(q: np.ndarray, K: np.ndarray, clusters: list[np.ndarray], cents: np.ndarray,
                  always: np.ndarray, slots: int, tpgr: int) -> tuple[float, float]:
    """Mass recall and activated slots of one query: ``always`` (sink row, recent tokens) plus
    whole clusters by descending ``q . centroid`` while the slots fit ``slots``."""
    d = K.shape[1]
    lg = (K.astype(np.float64) @ q.astype(np.float64)) / np.sqrt(d)
    p = np.exp(lg - lg.max())
    p /= p.sum()
    used = -(-always.size // tpgr) * tpgr
    mass = float(p[always].sum())
    for c in np.argsort(-(cents @ q), kind="stable"):
        cost = -(-clusters[c].size // tpgr) * tpgr
        if used + cost > slots:
            continue
        used += cost
        mass += float(p[clusters[c]].sum())
    return mass, float(used)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--modes", nargs="+", default=["row-aligned", "row-aligned-flat",
                                                   "artifact", "global"],
                    help="compile modes; row-aligned-flat: row-aligned with flat balanced "
                    "k-means (tree=False), for the ablation")
    ap.add_argument("--sklearn-heads", type=int, default=0,
                    help="heads for the scikit-learn baseline (0: all clustered heads)")
    ap.add_argument("--slots", type=int, default=1024, help="activated slots for the recall "
                    "comparison")
    ap.add_argument("--recall-layers", type=int, default=6,
                    help="clustered layers (evenly spread) whose heads the recall covers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-save", action="store_true", help="skip writing the artifact folder")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the untimed serial compile traced for its peak memory")
    args = ap.parse_args()

    from starc import config
    from starc.compiler import CompileOptions, compile_kv
    from starc.compiler.artifact import save_artifact
    from starc.kv import synthetic_kv
    from threadpoolctl import threadpool_limits

    cfg = config.load()
    print(f"start: {uptime()}")
    print(f"{os.cpu_count()} cores; other processes compete for them: wall times scale with the "
          f"load, CPU times less so; both clusterings use {args.threads} threads")
    t0 = time.perf_counter()
    cache = synthetic_kv(n_layers=args.layers, n_q_heads=9, n_kv_heads=3, head_dim=64,
                         prefill_len=args.tokens, decode_steps=4, seed=0, prefill_queries=256)
    m = cache.meta
    kv_mib = cache.nbytes_fp16 / 2**20
    n_tok = m.n_layers * m.n_kv_heads * m.context_len
    print(f"synthetic cache: {m.n_layers} layers x {m.n_kv_heads} KV heads x {m.context_len} "
          f"tokens x d {m.head_dim} = {n_tok:,} key/value pairs, {kv_mib:.0f} MiB FP16, 256 "
          f"prefill queries per layer (generated in {time.perf_counter() - t0:.1f} s)")
    times: dict[str, float] = {}
    cpus: dict[str, float] = {}
    row_cks: dict[str, Any] = {}
    for mode in args.modes:
        t0, c0 = time.perf_counter(), cpu_time()
        opt = (CompileOptions(mode="row-aligned", tree=False, threads=args.threads)
               if mode == "row-aligned-flat" else CompileOptions(mode=mode, threads=args.threads))
        ck = compile_kv(cache, cfg, opt)
        dt, cpu = time.perf_counter() - t0, cpu_time() - c0
        times[mode] = dt
        cpus[mode] = cpu
        st = ck.stats
        target = "  (target <= 30 s idle)" if mode == "row-aligned" else ""
        extra = (f", metric {ck.options['metric']}, placement {ck.options['placement']}, "
                 f"{'two-level' if ck.options['tree'] else 'flat'} balanced k-means"
                 if mode.startswith("row-aligned") else "")
        print(f"compile {mode:11s}: {dt:6.2f} s wall{target}, {cpu:6.2f} s CPU, "
              f"{n_tok / dt:,.0f} tokens/s, clustering {st['seconds_cluster']:.2f} s, "
              f"{st['clusters']:,} clusters (size {st['cluster_size_min']}.."
              f"{st['cluster_size_max']}){extra}, layers in {st['workers']}")
        if mode == args.modes[0] and not args.no_save:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                save_artifact(ck, f"{tmp}/art")
                print(f"  artifact folder written in {time.perf_counter() - t0:.2f} s")
        if mode.startswith("row-aligned"):
            row_ck = ck
            row_cks[mode] = ck
        del ck
    if args.memory:
        # untimed: tracemalloc slows every allocation (a timed compile under it took about 35 %
        # more CPU), and it sees one process only, so this compile runs serially in this one
        mode = args.modes[0]
        opt = (CompileOptions(mode="row-aligned", tree=False, threads=1)
               if mode == "row-aligned-flat" else CompileOptions(mode=mode, threads=1))
        tracemalloc.start()
        compile_kv(cache, cfg, opt)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"memory of one compile ({mode}, serial, traced, untimed): peak {peak:.0f} MiB = "
              f"{peak / kv_mib:.2f} x KV")
    if "row-aligned" not in times:
        return
    from sklearn.cluster import KMeans

    heads = [(l, h) for l in range(m.n_layers) if l not in (0, 1) for h in range(m.n_kv_heads)]
    run = heads if args.sklearn_heads <= 0 else heads[:args.sklearn_heads]
    T = m.prefill_len
    k = T // 32
    rec_layers = sorted(set(np.linspace(2, m.n_layers - 1, args.recall_layers).round()
                            .astype(int).tolist()))
    sk_models: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    t0, c0 = time.perf_counter(), cpu_time()
    with threadpool_limits(limits=args.threads):
        for l, h in run:
            x = cache.k[l][:T, h].astype(np.float32)
            x /= np.linalg.norm(x, axis=1).mean()
            km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=10, tol=0.0,
                        random_state=0, algorithm="lloyd").fit(x)
            if l in rec_layers:
                sk_models[(l, h)] = (km.labels_, km.cluster_centers_)
    dt = (time.perf_counter() - t0) * len(heads) / len(run)
    cpu = (cpu_time() - c0) * len(heads) / len(run)
    note = "" if len(run) == len(heads) else f" (measured on {len(run)} heads, scaled)"
    print(f"scikit-learn KMeans (k = {k}, k-means++, 10 Lloyd iterations, unconstrained, "
          f"{args.threads} threads) on the {len(heads)} clustered heads: {dt:.2f} s wall, "
          f"{cpu:.2f} s CPU{note}")
    for mode in row_cks:
        target = " (target >= 5x)" if mode == "row-aligned" else ""
        print(f"ratio sklearn / starc {mode} compile: {dt / times[mode]:.2f}x wall, "
              f"{cpu / cpus[mode]:.2f}x CPU{target}")
    # recall at equal activated slots
    assert row_ck is not None
    tp = row_ck.geometry.tpgr
    g = m.group_size
    res: dict[str, list[tuple[float, float]]] = {f"starc {mode}": [] for mode in row_cks}
    res["scikit-learn"] = []
    for (l, h), (lab, _centers) in sorted(sk_models.items()):
        hm = row_ck.head(l, h)
        for s in range(m.decode_steps):
            n = m.prefill_len + s + 1
            K = cache.k[l][:n, h].astype(np.float32)
            e = hm.clustered_end(n)
            always = np.concatenate([np.arange(hm.sink_end), np.arange(e, n)])
            rows = {}
            for mode, rck in row_cks.items():
                hr = rck.head(l, h)
                avail = hr.clusters_at(n)
                rows[mode] = ([hr.slot_pos[a:a + z] for a, z in zip(hr.cl_start[avail],
                                                                     hr.cl_size[avail],
                                                                     strict=True)],
                              hr.centroid[avail])
            # scikit-learn's clusters over the same positions (the sink row and recent tokens
            # are attended by both)
            pos = np.arange(T)
            keep = (pos >= hm.sink_end) & (pos < e)
            cl_sk = [c for c in (pos[keep & (lab == j)] for j in range(k)) if c.size]
            cen_sk = np.stack([K[c].mean(0) for c in cl_sk])
            for j in range(g):
                q = cache.q[l][s, h * g + j].astype(np.float32)
                for mode, (cl_row, cen_row) in rows.items():
                    res[f"starc {mode}"].append(select_recall(q, K, cl_row, cen_row, always,
                                                              args.slots, tp))
                res["scikit-learn"].append(select_recall(q, K, cl_sk, cen_sk, always,
                                                         args.slots, tp))
    n_q = len(res["scikit-learn"])
    print(f"attention-mass recall at <= {args.slots} activated slots ({n_q} decode queries of "
          f"layers {rec_layers}, all KV heads; centroid-score order, whole clusters):")
    for name, v in res.items():
        a = np.array(v)
        print(f"  {name:18s}: mass recall {a[:, 0].mean():.4f}, activated slots "
              f"{a[:, 1].mean():.0f}")
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {ru:.0f} MiB (cache generation included) = {ru / kv_mib:.2f} x KV")
    print(f"end: {uptime()}")


if __name__ == "__main__":
    main()

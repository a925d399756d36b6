"""Mapping-compiler speed on a SmolLM2-sized cache: 30 layers x 3 KV heads x 8192 tokens, d = 64.

Measured in one run:
- ``starc.compiler.compile_kv`` per mode (target for the default row-aligned mode: <= 30 s on
  2 cores), tokens per second, and peak traced memory of the compile next to the KV size;
- baseline, side by side on the same data: scikit-learn ``KMeans`` (Lloyd, unconstrained, one
  init) with the row-aligned clustering's job: the same keys (scaled by the head's mean norm),
  the same number of clusters (T / 32 per head) and iterations (10), on every clustered head;
- building and writing the artifact folder (memory image, tables, hashes).

Usage: ``python bench/bench_compile.py [--layers 30] [--modes row-aligned artifact global]
[--sklearn-heads N]`` (N limits the baseline to N heads and scales its time up, for a quick run).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import tracemalloc

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--modes", nargs="+", default=["row-aligned", "artifact", "global"])
    ap.add_argument("--sklearn-heads", type=int, default=0,
                    help="heads for the scikit-learn baseline (0: all clustered heads)")
    ap.add_argument("--no-save", action="store_true", help="skip writing the artifact folder")
    args = ap.parse_args()

    from starc import config
    from starc.compiler import CompileOptions, compile_kv
    from starc.compiler.artifact import save_artifact
    from starc.kv import synthetic_kv

    cfg = config.load()
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.2f} on {os.cpu_count()} cores (other processes "
          f"compete for the cores: wall times scale with it; CPU time below does less)")
    t0 = time.perf_counter()
    cache = synthetic_kv(n_layers=args.layers, n_q_heads=9, n_kv_heads=3, head_dim=64,
                         prefill_len=args.tokens, decode_steps=0, seed=0)
    m = cache.meta
    kv_mib = cache.nbytes_fp16 / 2**20
    n_tok = m.n_layers * m.n_kv_heads * m.context_len
    print(f"synthetic cache: {m.n_layers} layers x {m.n_kv_heads} KV heads x {m.context_len} "
          f"tokens x d {m.head_dim} = {n_tok:,} key/value pairs, {kv_mib:.0f} MiB FP16 "
          f"(generated in {time.perf_counter() - t0:.1f} s)")
    times: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for mode in args.modes:
        tracemalloc.start()
        t0, c0 = time.perf_counter(), time.process_time()
        ck = compile_kv(cache, cfg, CompileOptions(mode=mode))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        times[mode] = dt
        cpus[mode] = cpu
        st = ck.stats
        target = "  (target <= 30 s)" if mode == "row-aligned" else ""
        print(f"compile {mode:11s}: {dt:6.2f} s wall{target}, {cpu:6.2f} s CPU (2 threads), "
              f"{n_tok / dt:,.0f} tokens/s, "
              f"clustering {st['seconds_cluster']:.2f} s, {st['clusters']:,} clusters "
              f"(size {st['cluster_size_min']}..{st['cluster_size_max']}), peak traced memory "
              f"{peak:.0f} MiB = {peak / kv_mib:.2f} x KV")
        if mode == args.modes[0] and not args.no_save:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                save_artifact(ck, f"{tmp}/art")
                print(f"  artifact folder written in {time.perf_counter() - t0:.2f} s")
        del ck
    if "row-aligned" in times:
        from sklearn.cluster import KMeans
        heads = [(l, h) for l in range(m.n_layers) if l not in (0, 1)
                 for h in range(m.n_kv_heads)]
        run = heads if args.sklearn_heads <= 0 else heads[:args.sklearn_heads]
        k = m.context_len // 32
        t0, c0 = time.perf_counter(), time.process_time()
        for l, h in run:
            x = cache.k[l][:, h].astype(np.float32)
            x /= np.linalg.norm(x, axis=1).mean()
            KMeans(n_clusters=k, n_init=1, max_iter=10, tol=0.0, random_state=0,
                   algorithm="lloyd").fit(x)
        dt = (time.perf_counter() - t0) * len(heads) / len(run)
        cpu = (time.process_time() - c0) * len(heads) / len(run)
        note = "" if len(run) == len(heads) else f" (measured on {len(run)} heads, scaled)"
        print(f"scikit-learn KMeans (k = {k}, 10 Lloyd iterations, unconstrained) on the "
              f"{len(heads)} clustered heads: {dt:.2f} s wall, {cpu:.2f} s CPU{note}")
        print(f"ratio sklearn / starc row-aligned compile: {dt / times['row-aligned']:.2f}x wall, "
              f"{cpu / cpus['row-aligned']:.2f}x CPU")
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {ru:.0f} MiB (cache generation included) = {ru / kv_mib:.2f} x KV")


if __name__ == "__main__":
    main()

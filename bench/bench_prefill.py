"""Time the NumPy SmolLM2 prefill at 2K/4K/8K tokens against a naive baseline, side by side.

Usage::

    .venv/bin/python bench/bench_prefill.py                    # 2048, 4096, 8192
    .venv/bin/python bench/bench_prefill.py --lengths 2048 --repeat 3 --json

The model is loaded once first (from the dequantised cache after the first run; the load time is
printed separately). "optimised" is :class:`starc.model.llama.LlamaModel`: fused Q/K/V and
gate/up products, chunked prefill, attention as blocked matrix products over KV-head groups on
all cores. "naive" is the same arithmetic written the obvious way: separate projections, one
query head at a time, and the full masked ``T x T`` score matrix per head. Both run in float32
on the same token ids (project-written passkey prompts); the script checks that they agree on the
last-position logits and prints the speed-up. Close other work first: the machine has 2 cores.
Wall time, process CPU time (all threads) and the 1-minute load average are printed, so a run on
a busy machine can still be read (CPU time / cores approximates the idle-machine wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
from starc.model.gguf_loader import load_gguf
from starc.model.llama import LlamaModel, apply_rope, rms_norm, rope_tables
from starc.model.prompts import passkey_prompt


def naive_prefill(model: LlamaModel, ids: np.ndarray) -> np.ndarray:
    """Last-position logits, computed head by head with full score matrices."""
    cfg = model.config
    t = model.source.tensors
    hq, hkv, d = cfg.n_q_heads, cfg.n_kv_heads, cfg.head_dim
    g = hq // hkv
    n = len(ids)
    cos, sin = rope_tables(np.arange(n), d, cfg.rope_base)
    causal = np.triu(np.ones((n, n), dtype=bool), k=1)
    x = t["token_embd.weight"][ids]
    for layer in range(cfg.n_layers):
        b = f"blk.{layer}."
        h = rms_norm(x, t[b + "attn_norm.weight"], cfg.rms_eps)
        q = apply_rope((h @ t[b + "attn_q.weight"].T).reshape(n, hq, d), cos, sin)
        k = apply_rope((h @ t[b + "attn_k.weight"].T).reshape(n, hkv, d), cos, sin)
        v = (h @ t[b + "attn_v.weight"].T).reshape(n, hkv, d)
        heads = []
        for head in range(hq):
            s = (q[:, head] @ k[:, head // g].T) / np.float32(math.sqrt(d))
            s[causal] = -np.inf
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            heads.append(s @ v[:, head // g])
        x = x + np.concatenate(heads, axis=1) @ t[b + "attn_output.weight"].T
        h = rms_norm(x, t[b + "ffn_norm.weight"], cfg.rms_eps)
        gate = h @ t[b + "ffn_gate.weight"].T
        up = h @ t[b + "ffn_up.weight"].T
        with np.errstate(over="ignore"):
            act = gate / (np.float32(1) + np.exp(-gate)) * up
        x = x + act @ t[b + "ffn_down.weight"].T
    h = rms_norm(x[-1:], t["output_norm.weight"], cfg.rms_eps)
    return h @ t["token_embd.weight"].T


def best_of(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall time, the CPU time (all threads) of that run, and the result."""
    best, best_cpu = math.inf, math.inf
    out = None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="2048,4096,8192",
                    help="comma-separated prompt lengths (default 2048,4096,8192)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per length, best kept")
    ap.add_argument("--baseline-max-len", type=int, default=8192,
                    help="skip the naive baseline above this length")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args(argv)
    try:
        lengths = [int(v) for v in args.lengths.split(",") if v]
    except ValueError:
        ap.error(f"--lengths must be comma-separated integers, not {args.lengths!r}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    t0 = time.perf_counter()
    weights = load_gguf()
    model = LlamaModel(weights)
    load_s = time.perf_counter() - t0
    model.forward(model.tokenizer.encode("Warm-up."))  # first BLAS calls, thread pool start
    if not args.json:
        print(f"load: {load_s:.2f} s ({'cache hit' if weights.from_cache else 'cache built'})")

    rows = []
    for n in lengths:
        ids = np.asarray(passkey_prompt(model.tokenizer, n, seed=n).token_ids)
        opt_s, opt_cpu, opt_out = best_of(lambda ids=ids: model.forward(ids).logits,
                                          args.repeat)
        row = {"tokens": len(ids), "optimised_s": round(opt_s, 3),
               "optimised_cpu_s": round(opt_cpu, 3),
               "optimised_tok_s": round(len(ids) / opt_s, 1),
               "load_avg": round(os.getloadavg()[0], 2)}
        if n <= args.baseline_max_len:
            base_s, base_cpu, base_out = best_of(lambda ids=ids: naive_prefill(model, ids),
                                                 args.repeat)
            diff = float(np.max(np.abs(np.asarray(base_out) - np.asarray(opt_out))))
            row |= {"naive_s": round(base_s, 3), "naive_cpu_s": round(base_cpu, 3),
                    "naive_tok_s": round(len(ids) / base_s, 1),
                    "speedup": round(base_s / opt_s, 2), "max_abs_logit_diff": diff}
        rows.append(row)
        if not args.json:
            line = f"{row['tokens']:>6} tokens: optimised {opt_s:7.2f} s " \
                   f"({row['optimised_tok_s']:6.1f} tok/s, cpu {opt_cpu:6.1f} s)"
            if "naive_s" in row:
                line += f" | naive {base_s:7.2f} s ({row['naive_tok_s']:6.1f} tok/s, " \
                        f"cpu {base_cpu:6.1f} s) | speed-up x{row['speedup']:.2f} | " \
                        f"max |dlogit| {diff:.1e}"
            print(line + f" | load {row['load_avg']}", flush=True)
    if args.json:
        print(json.dumps({"load_s": round(load_s, 3), "cache_hit": weights.from_cache,
                          "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

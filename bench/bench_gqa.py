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
Usage: ``python bench/bench_gqa.py [--layers 6] [--steps 4]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess

import numpy as np

SYNTHETIC = (  # (name, head_dim, q heads, kv heads, prefill, seed), as bench_rows.py
    ("syn d64 3:1 8K", 64, 9, 3, 8192, 0),
    ("syn d64 4:1 6K", 64, 12, 3, 6144, 1),
    ("syn d128 4:1 6K", 128, 16, 4, 6144, 2),
    ("syn d128 3:1 8K", 128, 9, 3, 8192, 3),
)
SHARED_BUDGETS = (1024, 1280, 1536, 2048, 2560, 3072)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


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
    args = ap.parse_args()

    from starc import config
    from starc.compiler import compile_kv
    from starc.kv import synthetic_kv
    from starc.metrics import dense_reference, quality
    from starc.planner.gqa import select_starc_shared
    from starc.planner.policies import select_starc

    cfg = config.load()
    print(f"start: {uptime()}; shared rule: {args.combine} of the heads' mass shares")
    B = args.budget
    pooled: dict[int, list[tuple[float, float, float, float]]] = {}
    for name, d, hq, hk, P, seed in SYNTHETIC:
        cache = synthetic_kv(n_layers=args.layers, n_q_heads=hq, n_kv_heads=hk, head_dim=d,
                             prefill_len=P, seed=seed, decode_steps=args.steps,
                             prefill_queries=256)
        ck = compile_kv(cache, cfg)
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
        print(f"{name}: per query head B {B}: recall {rec:.4f}, slots/qh {s1:.0f}, GQA union "
              f"{su:.0f} ({su / s1:.2f} x)", flush=True)
        print("  shared: " + ", ".join(f"B {b}: recall {y:.4f} slots {x:.0f}"
                                       for b, x, y in zip(SHARED_BUDGETS, xs, ys, strict=True)))
        print(f"  shared slots at the per-head recall: {at:.0f} = {at / s1:.2f} x per-query-head "
              f"slots (target <= 1.3 x), {at / su:.2f} x the union", flush=True)
        pooled.setdefault(d, []).append((rec, s1, su, at))
    for d, v in sorted(pooled.items()):
        a = np.array(v)
        print(f"pooled d {d} ({len(v)} caches): per-head recall {a[:, 0].mean():.4f}, slots/qh "
              f"{a[:, 1].mean():.0f}, union {a[:, 2].mean():.0f} ({(a[:, 2] / a[:, 1]).mean():.2f}"
              f" x), shared at equal recall {a[:, 3].mean():.0f} ({(a[:, 3] / a[:, 1]).mean():.2f}"
              f" x per query head)")
    print(f"end: {uptime()}")


if __name__ == "__main__":
    main()

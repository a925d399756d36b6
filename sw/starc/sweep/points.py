"""What one sweep point computes, and the plots of a sweep.

A point fixes (preset, overrides, model shape, context length, seed, policies, budgets). Its
evaluation builds the seeded synthetic cache of that shape (or reads a KV file given by path),
compiles the layouts the policies need, and runs :func:`starc.planner.evaluate.evaluate`. Policies
and budgets of one point share the compiled layouts, so they are evaluated together; the rows are
expanded afterwards, one per (point, policy, budget).
"""

from __future__ import annotations

from typing import Any

#: Model shapes a sweep can name. SmolLM2-135M (the offline real model) and the Mistral-7B shape
#: the STARC artifact evaluates (32 layers, 32 query heads, 8 KV heads, d 128).
MODEL_SHAPES: dict[str, dict[str, int]] = {
    "smollm2-135m": {"n_layers": 30, "n_q_heads": 9, "n_kv_heads": 3, "head_dim": 64},
    "mistral-7b": {"n_layers": 32, "n_q_heads": 32, "n_kv_heads": 8, "head_dim": 128},
}

#: Published headline ranges (BRIEF.md section 4): reductions of STARC at B = 1024.
PAPER_RANGES = {
    "latency_vs_tokenwise": (0.19, 0.31),   # v1 abstract
    "energy_vs_tokenwise": (0.19, 0.27),
    "latency_vs_dense": (0.54, 0.74),
    "energy_vs_dense": (0.45, 0.67),
}


def evaluate_point(point: dict[str, Any]) -> dict[str, Any]:
    """Pure function of the point (seeded), so a Dask run equals a local one."""
    from starc import config
    from starc.kv import load_kv, synthetic_kv
    from starc.planner.evaluate import EvalOptions, evaluate

    cfg = config.load(point["preset"], point.get("overrides") or None)
    if point.get("kv"):
        cache = load_kv(point["kv"], cfg)
    else:
        shape = MODEL_SHAPES[point["model"]]
        n_layers = int(point.get("layers", shape["n_layers"]))
        cache = synthetic_kv(n_layers=n_layers, n_q_heads=shape["n_q_heads"],
                             n_kv_heads=shape["n_kv_heads"], head_dim=shape["head_dim"],
                             prefill_len=int(point["context"]),
                             decode_steps=int(point.get("steps", 2)), seed=int(point["seed"]))
    opts = EvalOptions(policies=tuple(point["policies"]), budgets=tuple(point["budgets"]),
                       cost_programs=int(point.get("cost_programs", 8)), seed=int(point["seed"]))
    res = evaluate(cache, cfg, opts)
    rows = []
    for r in res.rows:
        rows.append({"preset": cfg.name, "model": point.get("model", "file"),
                     "context": int(point["context"]), **r})
    return {"rows": rows, "meta": res.meta}


def reductions(rows: list[dict[str, Any]], budget: int = 1024) -> dict[str, float]:
    """Latency and energy reductions of STARC variants against token-wise and dense at B."""
    by = {(r["policy"], r["budget"]): r for r in rows}
    out: dict[str, float] = {}
    for star in ("starc", "starc-row"):
        s = by.get((star, budget))
        if s is None:
            continue
        for base, name in (("sparq", "tokenwise"), ("dense", "dense")):
            b = by.get((base, budget))
            if b is None or not b.get("cycles") or not b.get("energy_nJ"):
                continue
            out[f"{star}_latency_vs_{name}"] = 1 - s["cycles"] / b["cycles"]
            out[f"{star}_energy_vs_{name}"] = 1 - s["energy_nJ"] / b["energy_nJ"]
    return out


def plot_sweep(rows: list[dict[str, Any]], title: str = "") -> dict[str, Any]:
    """Figures: latency and energy against budget per policy; recall against activated slots;
    cycle breakdown bars; STARC's reductions next to the papers' ranges."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, Any] = {}
    policies = sorted({r["policy"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for p in policies:
        rs = sorted((r for r in rows if r["policy"] == p), key=lambda r: r["budget"])
        bs = [r["budget"] for r in rs]
        axes[0].plot(bs, [r.get("ns", float("nan")) for r in rs], marker="o", label=p)
        axes[1].plot(bs, [r.get("energy_nJ", float("nan")) for r in rs], marker="o", label=p)
    for ax, lab in zip(axes, ("attention latency per head (ns)", "energy per head (nJ)"),
                       strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("token budget B")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "cost against budget")
    figs["cost_vs_budget.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for p in policies:
        rs = [r for r in rows if r["policy"] == p]
        ax.scatter([r.get("slots_per_head", float("nan")) for r in rs],
                   [r.get("mass_recall", float("nan")) for r in rs], label=p)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("activated token slots per step and query head")
    ax.set_ylabel("attention-mass recall")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figs["recall_vs_rows.png"] = fig

    keys = ["t_mac_issue", "t_row_switch", "t_refresh", "t_data_movement", "t_softmax", "t_drain"]
    b0 = 1024 if any(r["budget"] == 1024 for r in rows) else max(r["budget"] for r in rows)
    sel = [r for r in rows if r["budget"] == b0]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(sel)
    for k in keys:
        vals = [float(r.get(k, 0.0) or 0.0) for r in sel]
        ax.bar([r["policy"] for r in sel], vals, bottom=bottom, label=k[2:])
        bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
    ax.set_ylabel(f"cycles (tCK) per head at B = {b0}")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    figs["breakdown.png"] = fig

    red = reductions(rows, 1024)
    if red:
        fig, ax = plt.subplots(figsize=(8, 4))
        names = ["latency_vs_tokenwise", "energy_vs_tokenwise", "latency_vs_dense",
                 "energy_vs_dense"]
        for i, n in enumerate(names):
            lo, hi = PAPER_RANGES[n]
            ax.add_patch(plt.Rectangle((i - 0.4, lo), 0.8, hi - lo, color="0.85",
                                       label="published range" if i == 0 else None))
            for j, star in enumerate(("starc", "starc-row")):
                v = red.get(f"{star}_{n}")
                if v is not None:
                    ax.plot(i - 0.15 + 0.3 * j, v, "o", color=f"C{j}",
                            label=star if i == 0 else None)
        ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=15)
        ax.set_ylabel("reduction at B = 1024")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        figs["reductions_vs_papers.png"] = fig
    return figs

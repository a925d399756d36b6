"""What one sweep point computes, and the plots of a sweep.

A point fixes (preset, overrides, model shape, context length, seed, policies, budgets, and
optionally the planner's ``objective`` and ``cost_programs``). Its evaluation builds the seeded
synthetic cache of that shape (or reads a KV file given by path; the point then also carries the
file's SHA-256, so a rewritten file is never served from the cache), compiles the layouts the
policies need, and runs :func:`starc.planner.evaluate.evaluate`. Policies and budgets of one point
share the compiled layouts, so they are evaluated together; the rows are expanded afterwards, one
per (point, policy, budget).
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
    from starc.planner.budget import DEFAULT_CAP, DEFAULT_FLOOR
    from starc.planner.evaluate import EvalOptions, evaluate
    from starc.planner.rounds import OBJECTIVES

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
                       cost_programs=point.get("cost_programs"),
                       host_cycles=int(point.get("host_cycles", 0)), seed=int(point["seed"]),
                       mass_floor=int(point.get("mass_floor", DEFAULT_FLOOR)),
                       mass_cap=int(point.get("mass_cap", DEFAULT_CAP)),
                       objective=str(point.get("objective", OBJECTIVES[0])))
    res = evaluate(cache, cfg, opts)
    rows = []
    for r in res.rows:
        rows.append({"preset": cfg.name, "model": point.get("model", "file"),
                     "context": int(point["context"]), **r})
    return {"rows": rows, "meta": res.meta}


def point_of(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(preset, model, context) of a row: the sweep point it belongs to (None where absent)."""
    return (row.get("preset"), row.get("model"), row.get("context"))


def reductions(rows: list[dict[str, Any]], budget: int = 1024) -> dict[str, float]:
    """Latency and energy reductions of STARC variants against token-wise (``sparq``) and dense
    at B, for the rows of ONE point (use :func:`reductions_by_point` for a whole sweep).

    ``energy`` uses the explicit per-activation energy (``energy_nJ``), ``attacc_energy`` the
    AttAcc-compatible per-byte figure (``attacc_energy_nJ``), which is what the papers used.
    Costs include each policy's selection pass; the ``attention_*`` keys leave it out (what the
    published tables compare: selection free)."""
    if len({point_of(r) for r in rows}) > 1:
        raise ValueError("rows of several sweep points (preset, model, context); "
                         "use reductions_by_point")
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
            if s.get("selection_cycles") is not None and b.get("selection_cycles") is not None:
                out[f"{star}_attention_latency_vs_{name}"] = 1 - (
                    (s["cycles"] - s["selection_cycles"]) / (b["cycles"] - b["selection_cycles"]))
                out[f"{star}_attention_energy_vs_{name}"] = 1 - (
                    (s["energy_nJ"] - s["selection_energy_nJ"])
                    / (b["energy_nJ"] - b["selection_energy_nJ"]))
            if s.get("attacc_energy_nJ") and b.get("attacc_energy_nJ"):
                out[f"{star}_attacc_energy_vs_{name}"] = \
                    1 - s["attacc_energy_nJ"] / b["attacc_energy_nJ"]
    return out


def reductions_by_point(rows: list[dict[str, Any]], budget: int = 1024
                        ) -> list[dict[str, Any]]:
    """:func:`reductions` of every (preset, model, context) point, in the rows' order."""
    groups: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(point_of(r), []).append(r)
    out = []
    for (preset, model, context), rs in groups.items():
        red = reductions(rs, budget)
        if red:
            out.append({"preset": preset, "model": model, "context": context, **red})
    return out


def reductions_pooled(rows: list[dict[str, Any]], budget: int = 1024
                      ) -> list[dict[str, Any]]:
    """Reductions per (preset, model) over all its context lengths together: each policy's
    cycles and energies are summed over the contexts first. With evenly spaced contexts this is
    the decode-averaged figure the STARC artifact reports (one run decoding from Lin to
    Lin + Lout at a fixed B). Only (preset, model) pairs with more than one context appear."""
    groups: dict[tuple[Any, Any], dict[tuple[str, int], dict[str, Any]]] = {}
    contexts: dict[tuple[Any, Any], set[Any]] = {}
    for r in rows:
        if r["budget"] != budget:
            continue
        key = (r.get("preset"), r.get("model"))
        contexts.setdefault(key, set()).add(r.get("context"))
        acc = groups.setdefault(key, {}).setdefault(
            (r["policy"], r["budget"]), {"policy": r["policy"], "budget": r["budget"]})
        for k in ("cycles", "energy_nJ", "attacc_energy_nJ", "selection_cycles",
                  "selection_energy_nJ"):
            if r.get(k) is not None:
                acc[k] = acc.get(k, 0.0) + float(r[k])
    out = []
    for (preset, model), by in groups.items():
        if len(contexts[(preset, model)]) < 2:
            continue
        red = reductions(list(by.values()), budget)
        if red:
            out.append({"preset": preset, "model": model,
                        "context": "sum " + "+".join(str(c) for c in
                                                     sorted(contexts[(preset, model)])),
                        **red})
    return out


def plot_sweep(rows: list[dict[str, Any]], title: str = "", setting: str = "") -> dict[str, Any]:
    """Figures: latency and energy against budget per policy; recall against activated slots;
    cycle breakdown bars; STARC's reductions next to the papers' ranges."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, Any] = {}
    policies = sorted({r["policy"] for r in rows})
    points = list(dict.fromkeys(point_of(r) for r in rows))
    # budget plot: the sweep's last point, token budgets (mass budgets have no B axis)
    last = [r for r in rows if point_of(r) == points[-1] and isinstance(r["budget"], int)]
    if len(points) > 1 and not title:
        title = f"cost against budget, {points[-1][1]}, L = {points[-1][2]}"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for p in policies:
        rs = sorted((r for r in last if r["policy"] == p), key=lambda r: r["budget"])
        bs = [r["budget"] for r in rs]
        # error bars: the 95 % interval of a sampled mean (0 when every plan was timed)
        axes[0].errorbar(bs, [r.get("ns", float("nan")) for r in rs],
                         yerr=[r.get("ns_ci95", 0.0) or 0.0 for r in rs], marker="o", capsize=3,
                         label=p)
        axes[1].errorbar(bs, [r.get("energy_nJ", float("nan")) for r in rs],
                         yerr=[r.get("energy_nJ_ci95", 0.0) or 0.0 for r in rs], marker="o",
                         capsize=3, label=p)
    for ax, lab in zip(axes, ("attention latency per head (ns)", "energy per head (nJ)"),
                       strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("token budget B")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    head = ", ".join(x for x in (title, setting) if x)
    fig.suptitle(", ".join(x for x in (title or "cost against budget", setting) if x))
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
    fig.suptitle(head, fontsize=9)
    figs["recall_vs_rows.png"] = fig

    # breakdowns at one token budget (1024 if swept): cycles and energy, selection as its own part
    fixed = [r for r in rows if isinstance(r["budget"], int)]
    b0 = 1024 if any(r["budget"] == 1024 for r in fixed) else \
        max((r["budget"] for r in fixed), default=None)
    sel = [r for r in fixed if r["budget"] == b0]
    several_models = len({p[1] for p in points}) > 1
    labels = [r["policy"] if len(points) == 1 else
              f"{r['policy']} {r.get('model') if several_models else ''} L{r.get('context')}"
              .replace("  ", " ") for r in sel]
    parts = {
        "breakdown.png": (["t_selection", "t_mac_issue", "t_row_switch", "t_refresh",
                           "t_data_movement", "t_softmax", "t_drain"], "cycles_ci95",
                          f"cycles (tCK) per head at B = {b0}"),
        "energy_breakdown.png": (["e_selection", "e_activation", "e_column_access", "e_mac",
                                  "e_data_movement", "e_host_io", "e_softmax"], "energy_nJ_ci95",
                                 f"energy (nJ, explicit activation) per head at B = {b0}"),
    }
    for name, (keys, ci, ylabel) in parts.items() if sel else ():
        fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(sel)), 4))
        bottom = [0.0] * len(sel)
        for k in keys:
            vals = [float(r.get(k, 0.0) or 0.0) for r in sel]
            if any(vals):
                ax.bar(labels, vals, bottom=bottom, label=k[2:])
            bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
        ax.errorbar(labels, bottom, yerr=[r.get(ci, 0.0) or 0.0 for r in sel], fmt="none",
                    ecolor="k", capsize=3, label="95 % interval")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", rotation=30 if len(points) == 1 else 90)
        fig.suptitle(head, fontsize=9)
        fig.tight_layout()
        figs[name] = fig

    reds = reductions_by_point(rows, 1024)
    if reds:
        fig, ax = plt.subplots(figsize=(11, 4.5))
        names = ["latency_vs_tokenwise", "energy_vs_tokenwise", "attacc_energy_vs_tokenwise",
                 "latency_vs_dense", "energy_vs_dense", "attacc_energy_vs_dense"]
        models = list(dict.fromkeys(r["model"] for r in reds))
        n = len(reds)
        for i, nm in enumerate(names):
            lo, hi = PAPER_RANGES[nm.removeprefix("attacc_")]
            ax.add_patch(plt.Rectangle((i - 0.4, lo), 0.8, hi - lo, color="0.85",
                                       label="published range" if i == 0 else None))
            for j, star in enumerate(("starc", "starc-row")):
                for k, red in enumerate(reds):
                    v = red.get(f"{star}_{nm}")
                    if v is None:
                        continue
                    x = i - 0.35 + 0.7 * (j * n + k + 0.5) / (2 * n)
                    mi = models.index(red["model"])
                    lab = f"{star}, {red['model']}" if i == 0 and (
                        k == 0 or reds[k - 1]["model"] != red["model"]) else None
                    ax.plot(x, v, "os^Dv"[mi % 5], color=f"C{j}", label=lab)
        ax.set_xticks(range(len(names)), [nm.replace("_", " ") for nm in names], rotation=15)
        ax.set_ylabel("reduction at B = 1024")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.axhline(0, color="k", lw=0.6)
        if n > 1:
            ax.set_title("points left to right: " + ", ".join(
                f"{r['model']} L{r['context']}" for r in reds), fontsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        fig.suptitle(head, fontsize=9)
        figs["reductions_vs_papers.png"] = fig
    return figs


# ---------------------------------------------------------------------------------------------
# accuracy and perplexity of policies on the real model (docs/real-model-eval.md)

_MODEL: dict[str, Any] = {}


def _real_model() -> Any:
    """The SmolLM2 model, loaded once per worker process."""
    if "m" not in _MODEL:
        from starc.model.llama import load_model
        _MODEL["m"] = load_model()
    return _MODEL["m"]


def accuracy_point(point: dict[str, Any]) -> dict[str, Any]:
    """Task samples ``indices`` of one (task, context) decoded under every (policy, budget):
    one row per (sample, policy, budget) (:func:`starc.model.quality.task_scores`)."""
    import time

    from starc import config
    from starc.model.quality import task_scores

    cfg = config.load(point["preset"], point.get("overrides") or None)
    t0 = time.perf_counter()
    rows = task_scores(_real_model(), cfg, point["task"], int(point["context"]),
                       list(point["indices"]), policies=tuple(point["policies"]),
                       budgets=tuple(point["budgets"]), seed=int(point["seed"]))
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def perplexity_point(point: dict[str, Any]) -> dict[str, Any]:
    """One window of the long text under every (policy, budget)
    (:func:`starc.model.quality.window_nll`)."""
    import time

    from starc import config
    from starc.model.corpus import load_text
    from starc.model.quality import window_nll

    cfg = config.load(point["preset"], point.get("overrides") or None)
    text = load_text(point["text"])
    if text.sha256 != point["text_sha256"]:
        raise ValueError(f"the text {point['text']!r} changed since the sweep was planned")
    model = _real_model()
    t0 = time.perf_counter()
    ids = model.tokenizer.encode(text.text)
    rows = window_nll(model, cfg, ids, int(point["start"]), int(point["context"]),
                      int(point["score_len"]), policies=tuple(point["policies"]),
                      budgets=tuple(point["budgets"]))
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def quality_point(point: dict[str, Any]) -> dict[str, Any]:
    """Dispatch on ``point["kind"]``: ``accuracy`` or ``perplexity``."""
    if point["kind"] == "accuracy":
        return accuracy_point(point)
    if point["kind"] == "perplexity":
        return perplexity_point(point)
    raise ValueError(f"unknown quality point kind {point['kind']!r}")

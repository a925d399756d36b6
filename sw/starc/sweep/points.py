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

from starc.plots import PAPER_BUDGET


def _attention_shapes() -> dict[str, dict[str, int]]:
    from starc.system.shapes import SHAPES
    return {n: {"n_layers": s.n_layers, "n_q_heads": s.n_q_heads, "n_kv_heads": s.n_kv_heads,
                "head_dim": s.head_dim} for n, s in SHAPES.items()}


#: Model shapes a sweep can name: the attention geometry of :data:`starc.system.shapes.SHAPES`
#: (each from its published configuration), e.g. SmolLM2-135M (the offline real model) and the
#: Mistral-7B the STARC artifact evaluates (32 layers, 32 query heads, 8 KV heads, d 128).
MODEL_SHAPES: dict[str, dict[str, int]] = _attention_shapes()


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
    label = preset_label(cfg.name, point.get("overrides"))
    rows = []
    for r in res.rows:
        rows.append({"preset": label, "model": point.get("model", "file"),
                     "context": int(point["context"]),
                     **({"overrides": list(point["overrides"])} if point.get("overrides")
                        else {}), **r})
    return {"rows": rows, "meta": {**res.meta, "preset": label}}


def preset_label(name: str, overrides: list[str] | None) -> str:
    """A sweep row's ``preset``: the preset's name, with its overrides when a grid set them
    (``attacc-hbm3-5.2[timing.tCCD_AB=4]``), so every grid point is its own facet."""
    if not overrides:
        return name
    return f"{name.removesuffix('+overrides')}[{','.join(overrides)}]"


def point_of(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(preset, model, context) of a row: the sweep point it belongs to (None where absent)."""
    return (row.get("preset"), row.get("model"), row.get("context"))


#: the baselines of a reduction: name in the metric -> policy
_RED_BASE = {"tokenwise": "sparq", "dense": "dense"}
#: metric stem -> (the row's cost, the selection part subtracted or None)
_RED_COST = {"latency": ("cycles", None), "energy": ("energy_nJ", None),
             "attacc_energy": ("attacc_energy_nJ", None),
             "attention_latency": ("cycles", "selection_cycles"),
             "attention_energy": ("energy_nJ", "selection_energy_nJ")}
#: the reductions a sweep prints and plots, in order (names of the metric registry)
REDUCTION_METRICS = tuple(f"{k}_vs_{b}" for b in _RED_BASE for k in _RED_COST)


def starc_variants() -> tuple[str, ...]:
    """The clustered policies of the registry (the ones a reduction is about)."""
    from starc.planner.registry import REGISTRY
    return tuple(n for n, p in REGISTRY.items() if p.clustered)


def _cost(row: dict[str, Any], col: str, minus: str | None) -> float | None:
    v = row.get(col)
    if v is None:
        return None
    if minus is not None:
        m = row.get(minus)
        if m is None:
            return None
        v = float(v) - float(m)
    return float(v)


def reductions(rows: list[dict[str, Any]], budget: Any = None) -> list[dict[str, Any]]:
    """Reductions ``1 - variant / baseline`` of every STARC variant against token-wise
    (``sparq``) and dense, for the rows of ONE point (:func:`reductions_by_point` for a whole
    sweep): one entry per (budget, variant), at ``budget`` or at every budget a variant has.
    Latency is ``cycles``, energy ``energy_nJ`` (explicit per-activation energy), attacc_energy
    the AttAcc-convention figure the papers used; costs include each policy's selection pass,
    the ``attention_*`` metrics leave it out (what the published tables compare). A missing
    baseline leaves ``None`` with the reason (``<name>_undefined``); a negative value means the
    variant costs more than the baseline."""
    from starc.outputs import undefined

    if len({point_of(r) for r in rows}) > 1:
        raise ValueError("rows of several sweep points (preset, model, context); "
                         "use reductions_by_point")
    by = {(r["policy"], r["budget"]): r for r in rows}
    dense_any = next((r for r in rows if r["policy"] == "dense"), None)
    variants = starc_variants()
    budgets = [budget] if budget is not None else \
        list(dict.fromkeys(r["budget"] for r in rows if r["policy"] in variants))
    policies = {r["policy"] for r in rows}
    out = []
    for b in budgets:
        for v in variants:
            s = by.get((v, b))
            if s is None:
                continue
            red: dict[str, Any] = {"budget": b, "variant": v}
            for base_name, base_pol in _RED_BASE.items():
                base = by.get((base_pol, b)) or (dense_any if base_pol == "dense" else None)
                for stem, (col, minus) in _RED_COST.items():
                    key = f"{stem}_vs_{base_name}"
                    sv = _cost(s, col, minus)
                    bv = None if base is None else _cost(base, col, minus)
                    if base is None:
                        why = (f"{base_pol} is not among the policies" if base_pol not in policies
                               else f"no {base_pol} row at budget {b}")
                        undefined(red, key, why)
                    elif sv is None or not bv:
                        undefined(red, key, f"{col} not available")
                    else:
                        red[key] = 1.0 - sv / bv
            out.append(red)
    return out


def reductions_by_point(rows: list[dict[str, Any]], budget: Any = None
                        ) -> list[dict[str, Any]]:
    """:func:`reductions` of every (preset, model, context) point, in the rows' order."""
    groups: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(point_of(r), []).append(r)
    out = []
    for (preset, model, context), rs in groups.items():
        for red in reductions(rs, budget):
            out.append({"preset": preset, "model": model, "context": context, **red})
    return out


def reductions_pooled(rows: list[dict[str, Any]], budget: Any = None
                      ) -> list[dict[str, Any]]:
    """Reductions per (preset, model) over all its context lengths together: each policy's
    cycles and energies are summed over the contexts first. With evenly spaced contexts this is
    the decode-averaged figure the STARC artifact reports (one run decoding from Lin to
    Lin + Lout at a fixed B). Only (preset, model) pairs with more than one context appear."""
    groups: dict[tuple[Any, Any], dict[tuple[str, Any], dict[str, Any]]] = {}
    contexts: dict[tuple[Any, Any], set[Any]] = {}
    for r in rows:
        if budget is not None and r["budget"] != budget:
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
        ctx = "sum " + "+".join(str(c) for c in sorted(contexts[(preset, model)]))
        for red in reductions(list(by.values()), budget):
            out.append({"preset": preset, "model": model, "context": ctx, **red})
    return out


def reduction_notes(rows: list[dict[str, Any]], reds: list[dict[str, Any]]) -> list[str]:
    """What a reader must know about the reductions table: why it is empty or has empty
    columns, and what a negative value means."""
    variants = starc_variants()
    pols = {r["policy"] for r in rows}
    notes = []
    if not reds:
        if not pols & set(variants):
            return [f"No reductions: none of the STARC variants ({', '.join(variants)}) is among "
                    f"the policies."]
        return ["No reductions: no STARC variant row has a budget."]
    for base_name, pol in _RED_BASE.items():
        if pol not in pols:
            notes.append(f"*_vs_{base_name} empty: the {base_name} baseline ({pol}) is not among "
                         f"the policies (add it to --policies).")
    if any(isinstance(v, float) and v < 0 for r in reds for v in r.values()):
        notes.append("A negative reduction means the STARC variant costs MORE than the baseline "
                     "there (slower, or more energy): typically a short context, where B covers "
                     "most of it, or rounds whose rows are open in only some bank groups "
                     "(per-group MACs, docs/compiler.md).")
    if not any(r["budget"] == PAPER_BUDGET for r in reds):
        notes.append(f"The published ranges are at B = {PAPER_BUDGET}, which this sweep does "
                     f"not include: no comparison plot.")
    return notes


def plot_sweep(rows: list[dict[str, Any]], *, planner: str | None = None,
               sampling: Any = None) -> dict[str, Any]:
    """The figures of a sweep or an evaluation (house style, :mod:`starc.plots`): cost against
    budget, the recall-vs-latency and recall-vs-energy Pareto plot, the cycle and energy
    breakdowns at B = 1024 (or the largest token budget), STARC's reductions next to the
    papers' ranges. Keys are file stems; figures with nothing to draw are left out."""
    from starc import plots

    figs: dict[str, Any] = {
        "pareto": plots.pareto(rows, planner=planner, sampling=sampling),
        "cost_vs_budget": plots.cost_vs_budget(rows, planner=planner, sampling=sampling),
    }
    fixed = [r["budget"] for r in rows if isinstance(r.get("budget"), int)]
    b0 = PAPER_BUDGET if PAPER_BUDGET in fixed else max(fixed, default=None)
    if b0 is not None:
        figs["breakdown"] = plots.breakdown(rows, budget=b0, planner=planner, sampling=sampling)
    figs["reductions_vs_papers"] = plots.reductions_vs_papers(
        reductions_by_point(rows, PAPER_BUDGET), planner=planner, sampling=sampling)
    return {k: v for k, v in figs.items() if v is not None}


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

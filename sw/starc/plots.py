"""The plot house style: every figure starc writes is made here.

Rules (docs/outputs.md):

- every figure has a title naming what it shows and the setting it was measured in: preset,
  model and context, budget, planner setting and cost sampling (:func:`suptitle`);
- a policy has one colour and one marker everywhere, from the policy registry
  (:attr:`starc.planner.registry.Policy.colour`), so plots of different runs read the same;
- one facet per (preset, model, context) point: a sweep over several contexts shows them all;
- axis labels are metric names of the registry with their units (:func:`label`);
- energy is drawn beside latency; a breakdown component that is zero everywhere in a facet is not
  drawn; sampled means carry their 95 % interval;
- :func:`save` writes PNG beside SVG and PDF (vector, for papers), with fixed metadata so the
  same figure gives the same bytes.

The figures: :func:`cost_vs_budget`, :func:`pareto` (attention-mass recall against latency and
against energy: the figure a paper needs), :func:`breakdown`, :func:`reductions_vs_papers`, and
the end-task figures :func:`accuracy_by_task`, :func:`accuracy_vs_budget`,
:func:`perplexity_change`. Each returns a matplotlib ``Figure`` (tests read its titles, labels
and series) or ``None`` when the rows hold nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# the formats a figure is written in live in starc.outputs: the CLI checks STARC_PLOT_FORMATS at
# start-up without importing this module
from starc.outputs import FORMATS, FORMATS_ENV, plot_formats

__all__ = ["FORMATS", "FORMATS_ENV", "accuracy_by_task", "accuracy_vs_budget", "breakdown",
           "cost_vs_budget", "facet_title", "label", "pareto", "pareto_front", "perplexity_change",
           "plot_formats", "policy_style", "reductions_vs_papers", "save", "suptitle",
           "system_breakdown", "system_trajectory"]

#: colour of each breakdown part (cycles and energy), fixed like the policies'
PART_COLOURS = {
    "selection": "#7f7f7f", "mac_issue": "#0072B2", "row_switch": "#D55E00",
    "refresh": "#CC79A7", "data_movement": "#009E73", "softmax": "#E69F00", "drain": "#56B4E9",
    "activation": "#D55E00", "column_access": "#0072B2", "mac": "#56B4E9",
    "host_io": "#F0E442",
}
T_PARTS = ("selection", "mac_issue", "row_switch", "refresh", "data_movement", "softmax", "drain")
E_PARTS = ("selection", "activation", "column_access", "mac", "data_movement", "host_io",
           "softmax")

_RC = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7,
       "figure.titlesize": 10, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True,
       "grid.alpha": 0.3,
       "svg.hashsalt": "starc-pim", "svg.fonttype": "path", "pdf.fonttype": 42}


def _plt() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update(_RC)
    return plt


def _subplots(plt: Any, *args: Any, **kw: Any) -> Any:
    """``plt.subplots`` with the constrained layout (room for the legend under the axes)."""
    return plt.subplots(*args, layout="constrained", **kw)


def policy_style(policy: str) -> tuple[str, str]:
    """(colour, marker) of ``policy`` from the policy registry; a name the registry does not
    know gets grey circles (never a colour another policy has)."""
    from starc.planner.registry import REGISTRY

    p = REGISTRY.get(policy)
    return (p.colour, p.marker) if p is not None else ("#999999", "o")


def policy_order(policies: Sequence[str]) -> list[str]:
    """Policies in the registry's display order, unknown names last (sorted)."""
    from starc.planner.registry import POLICIES

    known = [p for p in POLICIES if p in set(policies)]
    return known + sorted(set(policies) - set(known))


def label(name: str, what: str | None = None) -> str:
    """Axis label of metric ``name``: the name and its unit (registry), e.g. ``cycles (tCK)``."""
    from starc.glossary import get

    m = get(name)
    unit = f" ({m.unit})" if m.unit and m.unit not in ("ratio",) and \
        not name.endswith("_" + m.unit) else ""
    return f"{what or name}{unit}"


def suptitle(what: str, *, preset: Any = None, point: str | None = None,
             budget: Any = None, planner: str | None = None, sampling: Any = None) -> str:
    """A figure title: what it shows, then the setting (preset, model and context, budget,
    planner, sampling), each part that is known. Lists name every distinct value."""
    def one(x: Any) -> str | None:
        if x is None or x == [] or x == ():
            return None
        if isinstance(x, (list, tuple, set)):
            xs = list(dict.fromkeys(str(v) for v in x))
            return ", ".join(xs) if xs else None
        return str(x)
    parts = [one(preset), point]
    if budget is not None:
        parts.append(f"B = {one(budget)}")
    parts += [one(planner), one(sampling)]
    setting = "; ".join(p for p in parts if p)
    return f"{what}\n{setting}" if setting else what


def _suptitle(fig: Any, text: str) -> None:
    """Set the figure title, each line wrapped to the figure's width (nothing is cut off)."""
    import textwrap

    chars = max(40, int(fig.get_figwidth() * 72 / (plt_fontsize() * 0.56)))
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in text.split("\n")))


def plt_fontsize() -> float:
    """The title font size of the house style (points)."""
    return float(_RC["font.size"]) + 1


def _pt(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (row.get("preset"), row.get("model"), row.get("context"))


def facet_title(point: tuple[Any, Any, Any], several_presets: bool) -> str:
    """``model, L = context`` (and the preset when a figure shows several)."""
    preset, model, ctx = point
    bits = [str(preset)] if several_presets and preset else []
    if model:
        bits.append(str(model))
    if ctx is not None:
        bits.append(f"L = {ctx}")
    return ", ".join(bits)


def _points(rows: Sequence[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return list(dict.fromkeys(_pt(r) for r in rows))


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _budget_key(row: dict[str, Any]) -> tuple[bool, str]:
    """Token budgets in ascending order, then mass targets (p0.9 < p0.95)."""
    b = row["budget"]
    return (isinstance(b, str), str(b).zfill(12))


def _ci(row: dict[str, Any], name: str) -> float:
    v = _num(row.get(f"{name}_ci95"))
    return 0.0 if math.isnan(v) else v


def _legend(fig: Any, axes: Sequence[Any], **kw: Any) -> Any:
    """One legend for the figure, under the axes: every labelled series of ``axes``, first
    label wins (the figures use the constrained layout, which makes room for it)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if not handles:
        return None
    kw.setdefault("ncol", min(len(handles), 8))
    return fig.legend(list(handles.values()), list(handles), loc="outside lower center", **kw)


# ---- cost against budget -------------------------------------------------------------------------
def cost_vs_budget(rows: Sequence[dict[str, Any]], *, planner: str | None = None,
                   sampling: Any = None) -> Any:
    """Latency (cycles) and energy (energy_nJ) against the token budget, one line per policy
    with 95 % intervals; one facet row per point, latency left and energy right."""
    fixed = [r for r in rows if isinstance(r.get("budget"), int)]
    pts = _points(fixed)
    if not pts or len({r["budget"] for r in fixed}) < 2:
        return None
    plt = _plt()
    several = len({p[0] for p in pts}) > 1
    fig, axes = _subplots(plt, len(pts), 2, figsize=(10, 3.2 * len(pts) + 0.8), squeeze=False)
    for i, pt in enumerate(pts):
        rs = [r for r in fixed if _pt(r) == pt]
        for p in policy_order({r["policy"] for r in rs}):
            col, mk = policy_style(p)
            sel = sorted((r for r in rs if r["policy"] == p), key=lambda r: r["budget"])
            bs = [r["budget"] for r in sel]
            for ax, name in zip(axes[i], ("cycles", "energy_nJ"), strict=True):
                ax.errorbar(bs, [_num(r.get(name)) for r in sel],
                            yerr=[_ci(r, name) for r in sel], color=col, marker=mk, capsize=3,
                            lw=1.2, ms=5, label=p)
        ticks = sorted({r["budget"] for r in rs})
        for ax, name in zip(axes[i], ("cycles", "energy_nJ"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(b) for b in ticks])
            ax.minorticks_off()
            ax.set_xlabel(label("budget", "token budget B"))
            ax.set_ylabel(label(name))
            ax.set_title(facet_title(pt, several))
    _legend(fig, list(axes[0]))
    presets = [p[0] for p in pts]
    _suptitle(fig, suptitle("latency and energy per decode step and query head against the "
                            "budget", preset=presets, planner=planner, sampling=sampling))
    return fig


# ---- Pareto: recall against latency and energy ---------------------------------------------------
def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower or equal x with higher y, or lower x with
    equal y), in ascending x."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    out, best = [], -math.inf
    for i in order:
        if math.isnan(xs[i]) or math.isnan(ys[i]):
            continue
        if ys[i] > best:
            out.append(i)
            best = ys[i]
    return out


def pareto(rows: Sequence[dict[str, Any]], *, planner: str | None = None, sampling: Any = None,
           recall: str = "mass_recall") -> Any:
    """Attention-mass recall against latency (cycles) and against energy (energy_nJ): one marker
    per (policy, budget), joined per policy in budget order and labelled with B; the Pareto front
    of each panel dashed. One facet row per point."""
    pts = _points(rows)
    usable = [r for r in rows if not math.isnan(_num(r.get("cycles")))
              and not math.isnan(_num(r.get(recall)))]
    if not usable:
        return None
    plt = _plt()
    several = len({p[0] for p in pts}) > 1
    fig, axes = _subplots(plt, len(pts), 2, figsize=(10, 3.6 * len(pts) + 0.8), squeeze=False)
    budgets = [str(r["budget"]) for r in sorted({r["budget"]: r for r in usable}.values(),
                                                key=_budget_key)]
    for i, pt in enumerate(pts):
        rs = [r for r in usable if _pt(r) == pt]
        for ax, name in zip(axes[i], ("cycles", "energy_nJ"), strict=True):
            for p in policy_order({r["policy"] for r in rs}):
                col, mk = policy_style(p)
                sel = sorted((r for r in rs if r["policy"] == p), key=_budget_key)
                xs = [_num(r.get(name)) for r in sel]
                ys = [_num(r.get(recall)) for r in sel]
                ax.errorbar(xs, ys, xerr=[_ci(r, name) for r in sel], color=col, marker=mk,
                            ms=6, lw=1.0, capsize=2, label=p)
                if len(budgets) > 1:
                    done: set[tuple[float, float]] = set()
                    for x, y, r in zip(xs, ys, sel, strict=True):
                        if (x, y) in done:      # dense: the same point at every budget
                            continue
                        done.add((x, y))
                        ax.annotate(f"B={r['budget']}", (x, y), fontsize=6, color=col,
                                    xytext=(3, -8), textcoords="offset points")
            xs = [_num(r.get(name)) for r in rs]
            ys = [_num(r.get(recall)) for r in rs]
            front = pareto_front(xs, ys)
            if len(front) > 1:
                ax.step([xs[j] for j in front], [ys[j] for j in front], where="post", ls="--",
                        color="0.4", lw=0.8, label="Pareto front", zorder=0)
            ax.set_xlabel(label(name))
            ax.set_ylabel(label(recall))
            ax.set_title(facet_title(pt, several))
    _legend(fig, list(axes[0]))
    _suptitle(fig, suptitle(f"{recall} against latency and energy (Pareto: up and left is "
                            f"better)",
                          preset=[p[0] for p in pts], budget=budgets, planner=planner,
                          sampling=sampling))
    return fig


# ---- breakdowns ----------------------------------------------------------------------------------
def breakdown(rows: Sequence[dict[str, Any]], *, budget: Any, planner: str | None = None,
              sampling: Any = None) -> Any:
    """Stacked cycle (top) and energy (bottom) breakdowns per policy at ``budget``, one facet
    column per point; parts that are zero in a facet are not drawn; the 95 % interval of the
    total on top."""
    sel = [r for r in rows if r.get("budget") == budget and "cycles" in r]
    pts = _points(sel)
    if not sel:
        return None
    plt = _plt()
    several = len({p[0] for p in pts}) > 1
    npol = max(len({r["policy"] for r in sel if _pt(r) == pt}) for pt in pts)
    fig, axes = _subplots(plt, 2, len(pts), figsize=(max(5.0, 0.6 * npol + 1.6) * len(pts), 7.4),
                             squeeze=False)
    for j, pt in enumerate(pts):
        rs = sorted((r for r in sel if _pt(r) == pt),
                    key=lambda r: policy_order([x["policy"] for x in sel]).index(r["policy"]))
        names = [r["policy"] for r in rs]
        for ax, prefix, parts, total in ((axes[0][j], "t_", T_PARTS, "cycles"),
                                         (axes[1][j], "e_", E_PARTS, "energy_nJ")):
            bottom = [0.0] * len(rs)
            for part in parts:
                vals = [_num(r.get(prefix + part)) for r in rs]
                vals = [0.0 if math.isnan(v) else v for v in vals]
                if not any(vals):
                    continue            # a zero component is not drawn
                ax.bar(names, vals, bottom=bottom, color=PART_COLOURS[part], label=part,
                       width=0.7)
                bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
            cis = [_ci(r, total) for r in rs]
            if any(cis):
                ax.errorbar(names, bottom, yerr=cis, fmt="none", ecolor="k", capsize=3,
                            label="95 % interval")
            ax.set_ylabel(label(total))
            ax.set_title(facet_title(pt, several))
            ax.tick_params(axis="x", rotation=30)
            ax.grid(axis="x", visible=False)
        axes[1][j].set_xlabel("policy")
    # one legend per row (cycle parts, energy parts): the parts drawn somewhere in that row
    for row in axes:
        handles: dict[str, Any] = {}
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(lab, h)
        row[-1].legend(list(handles.values()), list(handles), loc="center left",
                       bbox_to_anchor=(1.01, 0.5))
    _suptitle(fig, suptitle("cycle and energy breakdown per decode step and query head",
                          preset=[p[0] for p in pts], budget=budget, planner=planner,
                          sampling=sampling))
    return fig


# ---- system model: per generated token along the decode trajectory ------------------------------
_MAPPING_DASH = {"attacc": "-", "balanced": ":", "replicate": "--"}


def system_trajectory(rows: Sequence[dict[str, Any]], *, setting: str) -> Any:
    """Attention latency (token_us) and energy (token_energy_mJ) per generated token against the
    context (n_ctx), one line per policy (dash per mapping), the GPU-only dense attention
    beside them (gpu_dense_us, gpu_dense_energy_mJ): latency left, energy right."""
    if not rows:
        return None
    plt = _plt()
    fig, axes = _subplots(plt, 1, 2, figsize=(11, 4.6))
    mappings = sorted({r["mapping"] for r in rows})
    for mapping in mappings:
        for p in policy_order({r["policy"] for r in rows}):
            rs = sorted((r for r in rows if r["policy"] == p and r["mapping"] == mapping),
                        key=lambda r: r["n_ctx"])
            if not rs:
                continue
            col, mk = policy_style(p)
            lab = p if len(mappings) == 1 else f"{p} ({mapping})"
            for ax, name in zip(axes, ("token_us", "token_energy_mJ"), strict=True):
                ax.plot([r["n_ctx"] for r in rs], [_num(r.get(name)) for r in rs],
                        _MAPPING_DASH.get(mapping, "-."), color=col, marker=mk, ms=4, lw=1.2,
                        label=lab)
    gpu = sorted({(r["n_ctx"], r["gpu_dense_us"], r["gpu_dense_energy_mJ"]) for r in rows})
    for ax, i in ((axes[0], 1), (axes[1], 2)):
        ax.plot([g[0] for g in gpu], [g[i] for g in gpu], color="#999999", lw=2.2, alpha=0.7,
                label="GPU-only dense")
        ax.set_xlabel(label("n_ctx", "context"))
        ax.set_yscale("log")
    axes[0].set_ylabel(label("token_us"))
    axes[1].set_ylabel(label("token_energy_mJ"))
    _legend(fig, list(axes))
    _suptitle(fig, suptitle("attention latency and energy per generated token along the decode "
                            "trajectory", point=setting))
    return fig


def system_breakdown(summary: Sequence[dict[str, Any]], *, setting: str) -> Any:
    """Stacked breakdowns of the per-token attention (trajectory means): latency parts
    (token_t, drawn in us) left, energy parts (token_e) right, one bar per policy and mapping;
    parts that are zero everywhere are not drawn."""
    if not summary:
        return None
    plt = _plt()
    order = policy_order({r["policy"] for r in summary})
    rows = sorted(summary, key=lambda r: (r["mapping"], order.index(r["policy"])))
    several = len({r["mapping"] for r in rows}) > 1
    names = [f"{r['policy']}\n{r['mapping']}" if several else r["policy"] for r in rows]
    fig, axes = _subplots(plt, 1, 2, figsize=(max(8.0, 1.1 * len(rows) + 3), 4.8))
    for ax, key, parts, total in ((axes[0], "token_t", T_PARTS, "token_us"),
                                  (axes[1], "token_e", E_PARTS, "token_energy_mJ")):
        bottom = [0.0] * len(rows)
        for part in parts:
            if key == "token_t":     # cycles of the part, drawn as its share of token_us
                vals = [r[key].get(part, 0) / r["token_cycles"] * r["token_us"]
                        if r["token_cycles"] else 0.0 for r in rows]
            else:
                vals = [r[key].get(part, 0.0) for r in rows]
            if not any(vals):
                continue
            ax.bar(names, vals, bottom=bottom, color=PART_COLOURS[part], label=part, width=0.7)
            bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
        ax.set_ylabel(label(total))
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper right", fontsize=7)
    axes[0].set_title("latency parts (the slowest channel of each layer)")
    axes[1].set_title("energy parts (every channel)")
    _suptitle(fig, suptitle("attention per generated token by part (means over the sampled "
                            "steps)", point=setting))
    return fig


# ---- reductions next to the published ranges -----------------------------------------------------
#: Published headline ranges (the STARC v1 abstract, arXiv 2505.05772): reductions at B = 1024.
PAPER_RANGES = {
    "latency_vs_tokenwise": (0.19, 0.31),
    "energy_vs_tokenwise": (0.19, 0.27),
    "latency_vs_dense": (0.54, 0.74),
    "energy_vs_dense": (0.45, 0.67),
}
PAPER_BUDGET = 1024


def reductions_vs_papers(reds: Sequence[dict[str, Any]], *, planner: str | None = None,
                         sampling: Any = None) -> Any:
    """STARC's reductions at B = 1024 (one marker per point and variant; rows of
    :func:`starc.sweep.points.reductions_by_point`) over grey bands of the published ranges."""
    reds = [r for r in reds if r.get("budget") == PAPER_BUDGET]
    if not reds:
        return None
    plt = _plt()
    names = ["latency_vs_tokenwise", "energy_vs_tokenwise", "attacc_energy_vs_tokenwise",
             "latency_vs_dense", "energy_vs_dense", "attacc_energy_vs_dense"]
    points = list(dict.fromkeys((r.get("preset"), r.get("model"), r.get("context")) for r in reds))
    variants = policy_order({r["variant"] for r in reds})
    fig, ax = _subplots(plt, figsize=(11, 4.8))
    n = len(points) * len(variants)
    for i, nm in enumerate(names):
        lo, hi = PAPER_RANGES[nm.removeprefix("attacc_")]
        ax.add_patch(plt.Rectangle((i - 0.4, lo), 0.8, hi - lo, color="0.88",
                                   label="published range (v1 abstract)" if i == 0 else None))
        for k, (pt, v) in enumerate((pt, v) for v in variants for pt in points):
            r = next((x for x in reds if x["variant"] == v and
                      (x.get("preset"), x.get("model"), x.get("context")) == pt), None)
            if r is None or r.get(nm) is None:
                continue
            col, mk = policy_style(v)
            x = i - 0.35 + 0.7 * (k + 0.5) / n
            ax.plot(x, r[nm], mk, color=col, ms=6, label=v if i == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=12)
    ax.set_ylabel(label("latency_vs_dense", f"reduction at B = {PAPER_BUDGET}"))
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_title("points left to right in each column: " + ", ".join(
        facet_title(pt, len({p[0] for p in points}) > 1) for pt in points), fontsize=7)
    ax.grid(axis="x", visible=False)
    _legend(fig, [ax])
    _suptitle(fig, suptitle("STARC's reductions against token-wise (sparq) and dense, next to the "
                          "published ranges", preset=[p[0] for p in points],
                          budget=PAPER_BUDGET, planner=planner, sampling=sampling))
    return fig


# ---- end-task quality ----------------------------------------------------------------------------
def _task_order(tasks: set[str]) -> list[str]:
    from starc.model.tasks import TASKS
    known = [t for t in TASKS if t in tasks]
    return known + sorted(tasks - set(known))


def accuracy_by_task(acc: Sequence[dict[str, Any]], *, budget: int, preset: str,
                     samples_note: str) -> Any:
    """Accuracy per task at ``budget`` with 95 % intervals, one bar per policy; one facet per
    context (a marker on every bar so a 0 % bar is still seen)."""
    acc = [r for r in acc if r["budget"] == budget]
    if not acc:
        return None
    plt = _plt()
    ctxs = sorted({r["context"] for r in acc})
    tasks = _task_order({r["task"] for r in acc})
    pols = policy_order({r["policy"] for r in acc})
    by = {(r["task"], r["context"], r["policy"]): r for r in acc}
    fig, axes = _subplots(plt, 1, len(ctxs), figsize=(6.5 * len(ctxs), 4.4), squeeze=False,
                             sharey=True)
    w = 0.8 / len(pols)
    for ax, c in zip(axes[0], ctxs, strict=True):
        for j, p in enumerate(pols):
            xs, ys, lo, hi = [], [], [], []
            for i, t in enumerate(tasks):
                r = by.get((t, c, p))
                if r is None:
                    continue
                xs.append(i - 0.4 + w * (j + 0.5))
                ys.append(100 * r["accuracy"])
                lo.append(100 * (r["accuracy"] - r["ci_low"]))
                hi.append(100 * (r["ci_high"] - r["accuracy"]))
            col, mk = policy_style(p)
            ax.bar(xs, ys, w, color=col, label=p, yerr=[lo, hi], capsize=2,
                   error_kw={"lw": 0.8}, alpha=0.85)
            ax.plot(xs, ys, mk, color=col, ms=3.5, mec="k", mew=0.4, ls="none")
        ax.set_xticks(range(len(tasks)), tasks, rotation=15)
        ax.set_title(f"L = {c}")
        ax.set_ylim(0, 105)
        ax.grid(axis="x", visible=False)
    axes[0][0].set_ylabel("accuracy (%), 95 % interval")
    _legend(fig, list(axes[0]))
    _suptitle(fig, suptitle("SmolLM2-135M task accuracy per policy", preset=preset, budget=budget,
                          sampling=samples_note))
    return fig


def accuracy_vs_budget(acc: Sequence[dict[str, Any]], *, preset: str, samples_note: str) -> Any:
    """Accuracy against the budget, one facet per (context, task), bands: 95 % intervals."""
    if len({r["budget"] for r in acc}) < 2:
        return None
    plt = _plt()
    ctxs = sorted({r["context"] for r in acc})
    tasks = _task_order({r["task"] for r in acc})
    pols = policy_order({r["policy"] for r in acc})
    budgets = sorted({r["budget"] for r in acc})
    by = {(r["task"], r["context"], r["policy"], r["budget"]): r for r in acc}
    # at least 7 in wide: the legend of the seven policies sits in one row below the facets
    fig, axes = _subplots(plt, len(ctxs), len(tasks), figsize=(max(3.2 * len(tasks) + 0.5, 7.0),
                                                             2.9 * len(ctxs) + 0.8),
                             squeeze=False, sharex=True, sharey=True)
    for ri, c in enumerate(ctxs):
        for ci, t in enumerate(tasks):
            ax = axes[ri][ci]
            for p in pols:
                rs = [by.get((t, c, p, b)) for b in budgets]
                if any(r is None for r in rs):
                    continue
                col, mk = policy_style(p)
                ax.plot(budgets, [100 * r["accuracy"] for r in rs], marker=mk, color=col,
                        label=p, lw=1)
                ax.fill_between(budgets, [100 * r["ci_low"] for r in rs],
                                [100 * r["ci_high"] for r in rs], color=col, alpha=0.08)
            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.set_title(f"{t}, L = {c}")
            if ci == 0:
                ax.set_ylabel("accuracy (%)")
            if ri == len(ctxs) - 1:
                ax.set_xlabel(label("budget", "token budget B"))
    _legend(fig, [a for row in axes for a in row])
    _suptitle(fig, suptitle("accuracy against the budget (bands: 95 % intervals)", preset=preset,
                          sampling=samples_note))
    return fig


def perplexity_change(ppl: Sequence[dict[str, Any]], *, preset: str, text: str | None = None
                      ) -> Any:
    """ppl_change against the budget per policy with 95 % intervals; one facet per context."""
    rows = [r for r in ppl if "ppl_change" in r]
    if not rows:
        return None
    plt = _plt()
    ctxs = sorted({r["context"] for r in ppl})
    pols = policy_order({r["policy"] for r in rows})
    budgets = sorted({r["budget"] for r in ppl})
    by = {(r["context"], r["policy"], r["budget"]): r for r in ppl}
    fig, axes = _subplots(plt, 1, len(ctxs), figsize=(5.5 * len(ctxs), 4.2), squeeze=False)
    for ax, c in zip(axes[0], ctxs, strict=True):
        for j, p in enumerate(pols):
            rs = [by.get((c, p, b)) for b in budgets]
            if any(r is None or "ppl_change" not in r for r in rs):
                continue
            col, mk = policy_style(p)
            xs = [b * (1 + 0.04 * (j - len(pols) / 2)) for b in budgets]
            ys = [100 * r["ppl_change"] for r in rs]
            ax.errorbar(xs, ys, yerr=[[100 * (r["ppl_change"] - r["ppl_change_ci_low"])
                                       for r in rs],
                                      [100 * (r["ppl_change_ci_high"] - r["ppl_change"])
                                       for r in rs]],
                        marker=mk, color=col, label=p, capsize=2, lw=1)
        d = by.get((c, "dense", budgets[0]))
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=10)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel(label("budget", "token budget B"))
        ax.set_title(f"L = {c}" + (f", dense ppl {d['ppl']:.2f}" if d else ""))
    axes[0][0].set_ylabel("ppl_change (%), 95 % interval")
    _legend(fig, list(axes[0]))
    _suptitle(fig, suptitle("perplexity change against dense per policy (window bootstrap)",
                          preset=preset, sampling=text))
    return fig


# ---- files ---------------------------------------------------------------------------------------
def save(fig: Any, stem: str | Path, formats: Sequence[str] | None = None) -> list[Path]:
    """Write ``fig`` as ``stem.png``, ``stem.svg`` and ``stem.pdf`` (``formats``, by default
    :func:`plot_formats`; no dates in the files, so the same figure gives the same bytes) and
    close it. Returns the paths."""
    formats = plot_formats() if formats is None else tuple(formats)
    plt = _plt()
    stem = Path(stem)
    out = []
    meta = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
            "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}
    try:
        # lay the figure out once (constrained layout), then freeze it: each format's draw
        # reuses the positions instead of solving the layout again
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
        for fmt in formats:
            p = stem.with_name(stem.name + "." + fmt)
            fig.savefig(p, format=fmt, dpi=130, metadata=meta.get(fmt))
            out.append(p)
    finally:
        plt.close(fig)
    return out

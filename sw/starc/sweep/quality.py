"""Accuracy and perplexity of attention policies on the real model, as a cached sweep.

``starc sweep --accuracy [--perplexity]`` and ``starc eval-quality`` plan sweep points
(:func:`plan`), evaluate them with :func:`starc.sweep.points.quality_point` through the sweep
engine (content-hash cache, local processes or a Dask cluster, progress bar), summarise them with
95 % confidence intervals (:mod:`starc.model.quality`) and write a report folder: JSON, CSV, PNG
and a README with the tables (docs/real-model-eval.md shows the full run).

Points: one per (task, context, chunk of ``chunk`` samples) for accuracy and one per (context,
window) for perplexity; each point prefills its prompts once and decodes every (policy, budget)
from that prefill, so policies are always compared on the same prompts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from starc.model.quality import ACCURACY_POLICIES

__all__ = ["ACC_BUDGETS", "ACC_CONTEXTS", "ACC_TASKS", "add_sweep_args", "plan", "plot_quality",
           "register", "run_quality", "summarize"]

ACC_TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "vt", "cwe")
ACC_CONTEXTS = (1024, 2048)
ACC_BUDGETS = (128, 256, 512)

# ---------------------------------------------------------------------------------------------
# planning


def plan(*, tasks: list[str], contexts: list[int], samples: int, chunk: int,
         policies: list[str], budgets: list[int], seed: int, preset: str,
         overrides: list[str] | None = None, perplexity: bool = False,
         text: str = "frankenstein", windows: int = 8, score_len: int = 256) -> list[dict]:
    """The sweep points (JSON-serialisable; each is a cache key)."""
    from starc.model.policy_decode import KNOWN_POLICIES
    from starc.model.tasks import TASKS

    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    for p in policies:
        if p not in KNOWN_POLICIES:
            raise ValueError(f"unknown policy {p!r}; choose from {', '.join(KNOWN_POLICIES)}")
    for name, vals, low in (("context", contexts, 64), ("budget", budgets, 1)):
        for v in vals:
            if v < low:
                raise ValueError(f"{name} must be >= {low}, not {v}")
    if samples < 1 or chunk < 1:
        raise ValueError("--samples and --chunk must be >= 1")
    common = {"preset": preset, "policies": list(policies), "budgets": sorted(set(budgets))}
    if overrides:
        common["overrides"] = list(overrides)
    acc: list[tuple[int, dict]] = []
    for ctx in sorted(contexts, reverse=True):          # long contexts first: better packing
        for t in tasks:
            for k, a in enumerate(range(0, samples, chunk)):
                acc.append((k, {"kind": "accuracy", "task": t, "context": ctx, "seed": seed,
                                "indices": list(range(a, min(samples, a + chunk))),
                                **common}))
    # round-robin over (task, context): a run stopped early has the same number of chunks
    # done in every cell, and a later run with fewer --samples is served from the cache
    pts = [p for _, p in sorted(acc, key=lambda kp: kp[0])]
    if perplexity:
        from starc.model.corpus import load_text
        from starc.model.gguf_loader import load_gguf
        from starc.model.quality import window_starts
        from starc.model.tokenizer import SmolTokenizer

        lt = load_text(text)
        n = len(SmolTokenizer(load_gguf().tokenizer_json).encode(lt.text))
        ppl = [{"kind": "perplexity", "text": text, "text_sha256": lt.sha256, "context": ctx,
                "start": start, "score_len": score_len, **common}
               for ctx in sorted(contexts, reverse=True)
               for start in window_starts(n, ctx, windows, score_len)]
        # perplexity windows after the first round of accuracy chunks
        first = sum(1 for k, _ in acc if k == 0)
        pts = pts[:first] + ppl + pts[first:]
    return pts


def summarize(results: list[dict]) -> dict[str, list[dict]]:
    from starc.model.quality import pool_scores, summarize_nll, summarize_scores

    acc = [r for res in results for r in res["rows"] if "score" in r]
    ppl = [r for res in results for r in res["rows"] if "nll" in r]
    return {"accuracy": summarize_scores(acc) if acc else [],
            "pooled": pool_scores(acc) if acc else [],
            "perplexity": summarize_nll(ppl) if ppl else [],
            "samples": acc, "windows": ppl}


def _git_state() -> dict[str, Any]:
    """Commit and whether the source tree differs from it: a report of uncommitted code says so
    (the stale perplexity of docs/real-model-eval.md came from uncommitted code)."""
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "sw"],
                               capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def run_quality(points: list[dict], *, workers: int | None, scheduler: str | None,
                cache_dir: Path | None, progress: bool = True) -> tuple[list[dict], float]:
    from starc.sweep.engine import run_points
    from starc.sweep.points import quality_point

    n = workers or os.cpu_count() or 1
    if scheduler is None and n > 1:
        # one model thread per worker process: the processes already fill the cores
        os.environ.setdefault("STARC_THREADS", "1")
    t0 = time.perf_counter()
    res = run_points(points, quality_point, workers=workers, scheduler=scheduler,
                     cache_dir=cache_dir, progress=progress)
    return res, time.perf_counter() - t0


def cached_points(points: list[dict], cache_dir: Path | None) -> int:
    """How many of ``points`` the sweep cache already holds (before running)."""
    from starc.sweep.engine import default_cache_dir, point_key
    from starc.sweep.points import quality_point

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"{quality_point.__module__}.{quality_point.__qualname__}"
    return sum((cache / f"{point_key(p, name)}.json").is_file() for p in points)


# ---------------------------------------------------------------------------------------------
# tables and plots


def _pct(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else f"{100 * x:{spec}}"


ACC_NOTE = ("Cells: accuracy, the mean score in % [ci_low, ci_high: its 95 % interval] (RULER "
            "string_match_all; Wilson interval for 0/1 scores, else percentile bootstrap over "
            "samples). Dense does not depend on B.")
PPL_NOTE = ("ppl = exp(mean NLL) over the scored tail of every window (teacher forced after a "
            "dense prefill of the window's start) [ppl_ci_low, ppl_ci_high: bootstrap over "
            "windows]; ppl_change = ppl / dense ppl - 1 on the same tokens (paired) [its 95 % "
            "interval]; agreement = positions where the policy's argmax token equals dense's.")


def accuracy_table(summary: list[dict], budgets: list[int]) -> tuple[list[str], list[list]]:
    head = ["task", "context", "policy"] + [f"B={b}" for b in budgets]
    by = {(r["task"], r["context"], r["policy"], r["budget"]): r for r in summary}
    keys = sorted({(r["task"], r["context"], r["policy"]) for r in summary},
                  key=lambda k: (ACC_TASKS.index(k[0]) if k[0] in ACC_TASKS else -1, k[0], k[1],
                                 _order(k[2])))
    rows = []
    for t, c, p in keys:
        cells = []
        for b in budgets:
            r = by.get((t, c, p, b))
            cells.append("-" if r is None else
                         f"{_pct(r['accuracy'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]")
        rows.append([t, c, p, *cells])
    return head, rows


POOLED_NOTE = ("Every task and context pooled: the mean score over all their samples (each "
               "sample one equal weight) [its 95 % interval, percentile bootstrap over samples]; "
               "change vs dense: the paired difference on the same samples, in points "
               "[its 95 % interval].")


def pooled_table(pooled: list[dict], budgets: list[int]) -> tuple[list[str], list[list]]:
    """Policy rows: accuracy and change against dense per budget, pooled over tasks and
    contexts (:func:`starc.model.quality.pool_scores`)."""
    head = (["policy"] + [f"B={b}" for b in budgets]
            + [f"vs dense B={b}" for b in budgets])
    by = {(r["policy"], r["budget"]): r for r in pooled}
    rows = []
    for p in sorted({r["policy"] for r in pooled}, key=_order):
        acc, delta = [], []
        for b in budgets:
            r = by.get((p, b))
            acc.append("-" if r is None else
                       f"{_pct(r['accuracy'], '.1f')} [{_pct(r['ci_low'], '.1f')}, "
                       f"{_pct(r['ci_high'], '.1f')}]")
            delta.append("-" if r is None or "delta_vs_dense" not in r else
                         f"{100 * r['delta_vs_dense']:+.1f} [{100 * r['delta_ci_low']:+.1f}, "
                         f"{100 * r['delta_ci_high']:+.1f}]")
        rows.append([p, *acc, *delta])
    return head, rows


def perplexity_table(summary: list[dict]) -> tuple[list[str], list[list]]:
    head = ["context", "policy", "budget", "windows", "tokens", "ppl", "ppl_change",
            "agreement"]
    rows = []
    for r in sorted(summary, key=lambda r: (r["context"], r["budget"], _order(r["policy"]))):
        ch = "-" if "ppl_change" not in r else (
            f"{100 * r['ppl_change']:+.1f} % [{100 * r['ppl_change_ci_low']:+.1f}, "
            f"{100 * r['ppl_change_ci_high']:+.1f}]")
        rows.append([r["context"], r["policy"], r["budget"], r["windows"], r["tokens"],
                     f"{r['ppl']:.2f} [{r['ppl_ci_low']:.2f}, {r['ppl_ci_high']:.2f}]", ch,
                     "-" if r.get("agreement") is None else f"{100 * r['agreement']:.1f} %"])
    return head, rows


def _order(p: str) -> int:
    return ACCURACY_POLICIES.index(p) if p in ACCURACY_POLICIES else len(ACCURACY_POLICIES)


def plot_quality(summary: dict[str, list[dict]], *, preset: str, samples_note: str,
                 budget: int = 256, text: str | None = None) -> dict[str, Any]:
    """Figures (house style, :mod:`starc.plots`): accuracy per task at ``budget`` with 95 %
    intervals (one facet per context); accuracy against budget (task x context facets);
    perplexity change against budget. Keys are file stems."""
    from starc import plots

    figs: dict[str, Any] = {}
    acc = summary["accuracy"]
    if acc:
        bb = budget if any(r["budget"] == budget for r in acc) else min(r["budget"] for r in acc)
        figs[f"accuracy_B{bb}"] = plots.accuracy_by_task(acc, budget=bb, preset=preset,
                                                         samples_note=samples_note)
        figs["accuracy_vs_budget"] = plots.accuracy_vs_budget(acc, preset=preset,
                                                              samples_note=samples_note)
        pooled = summary.get("pooled") or []
        if pooled:
            n = len({r["task"] for r in acc})
            figs["accuracy_pooled"] = plots.accuracy_vs_budget(
                [{**r, "task": f"{n} tasks pooled"} for r in pooled], preset=preset,
                samples_note=samples_note)
    if summary["perplexity"]:
        figs["perplexity_change"] = plots.perplexity_change(summary["perplexity"], preset=preset,
                                                            text=text)
    return {k: v for k, v in figs.items() if v is not None}


def write_report(rep: Any, *, points: list[dict], summary: dict[str, list[dict]],
                 meta: dict[str, Any]) -> None:
    """Fill the report folder ``rep`` (a :class:`starc.report.ReportWriter`)."""
    from starc.glossary import glossary_line
    from starc.report import markdown_table

    budgets = sorted({r["budget"] for r in summary["accuracy"] + summary["perplexity"]})
    with rep:
        rep.json("quality.json", {"meta": meta, "points": points,
                                  "accuracy": summary["accuracy"],
                                  "accuracy_pooled": summary.get("pooled", []),
                                  "perplexity": summary["perplexity"]})
        if summary["samples"]:
            rep.csv("accuracy_samples.csv", summary["samples"])
            rep.csv("accuracy.csv", summary["accuracy"])
            rep.csv("accuracy_pooled.csv", summary["pooled"])
        if summary["perplexity"]:
            rep.csv("perplexity.csv", summary["perplexity"])
        for name, fig in plot_quality(summary, preset=meta["preset"],
                                      samples_note=meta["samples_note"],
                                      text=meta.get("text")).items():
            rep.figure(name, fig)
        md = [f"# starc {meta['command']}\n\n",
              f"Preset `{meta['preset']}`, SmolLM2-135M-Instruct (float32 masked attention, "
              f"layers 0-1 dense), commit `{meta['git']['commit']}`"
              f"{' with uncommitted changes' if meta['git']['dirty'] else ''}; "
              f"{meta['wall_s']:.0f} s wall ({meta['points']} points, "
              f"{meta['cached']} from the cache).\n\n"]
        if summary["accuracy"]:
            head, rows = accuracy_table(summary["accuracy"], budgets)
            md += ["## Accuracy\n\n", f"{meta['samples_note']}. {ACC_NOTE}\n\n",
                   markdown_table(head, rows), "\n"]
            head, rows = pooled_table(summary["pooled"], budgets)
            md += ["\n## Accuracy pooled over tasks and contexts\n\n", f"{POOLED_NOTE}\n\n",
                   markdown_table(head, rows), "\n"]
        if summary["perplexity"]:
            head, rows = perplexity_table(summary["perplexity"])
            md += ["\n## Perplexity\n\n", f"Text: {meta['text']}. {PPL_NOTE}\n\n",
                   markdown_table(head, rows), "\n", glossary_line(head) + "\n"]
        rep.text("README.md", "".join(md))


# ---------------------------------------------------------------------------------------------
# command line


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """The accuracy-sweep options of ``starc sweep``."""
    g = p.add_argument_group("accuracy and perplexity on the real model (docs/real-model-eval.md)")
    g.add_argument("--accuracy", action="store_true",
                   help="run the RULER-style task sweep on SmolLM2 instead of the cost sweep "
                        f"(defaults: tasks {' '.join(ACC_TASKS)}, contexts "
                        f"{' '.join(map(str, ACC_CONTEXTS))}, budgets "
                        f"{' '.join(map(str, ACC_BUDGETS))})")
    g.add_argument("--perplexity", action="store_true",
                   help="also (or, without --accuracy, only) the perplexity of the long text")
    _quality_args(g, samples=50)


def _quality_args(g: Any, *, samples: int, windows: int = 8, score_len: int = 256,
                  tasks: tuple[str, ...] = ACC_TASKS) -> None:
    from starc.argtypes import int_range
    from starc.model.tasks import TASKS
    g.add_argument("--tasks", nargs="+", default=list(tasks), choices=list(TASKS),
                   metavar="TASK", help=f"tasks ({', '.join(TASKS)})")
    g.add_argument("--samples", type=int_range(1, 1 << 20), default=samples,
                   help=f"samples per (task, context) (default {samples})")
    g.add_argument("--chunk", type=int_range(1, 1 << 20), default=5,
                   help="samples per sweep point (default 5)")
    g.add_argument("--text", default="frankenstein",
                   help="perplexity text: 'frankenstein' (shipped, public domain) or a UTF-8 "
                        "file")
    g.add_argument("--ppl-windows", type=int_range(1, 1 << 20), default=windows,
                   help=f"windows of the text per context (default {windows})")
    g.add_argument("--ppl-score-len", type=int_range(1), default=score_len,
                   help=f"scored tokens at the end of each window (default {score_len})")


def run_sweep(args: argparse.Namespace, *, command: str = "sweep --accuracy") -> int:
    """Handler of ``starc sweep --accuracy/--perplexity`` and ``starc eval-quality``."""
    from starc.cli import print_json, print_table
    from starc.glossary import print_glossary
    from starc.report import ReportWriter

    text_input = [args.text] if args.perplexity and Path(args.text).is_file() else []
    rep = ReportWriter(args.out, command=command, force=getattr(args, "force", False),
                       inputs=text_input)

    contexts = list(args.contexts or ACC_CONTEXTS)
    budgets = list(args.budgets or ACC_BUDGETS)
    if hasattr(args, "presets"):
        if len(args.presets) != 1:
            from starc.cli import UserError
            raise UserError("--accuracy/--perplexity take one preset (the STARC layouts are "
                            f"compiled for it), not {len(args.presets)}")
        preset = args.presets[0]
    else:
        preset = args.preset
    from starc import config
    cfg = config.load(preset, getattr(args, "overrides", None) or None)
    tasks = list(args.tasks) if getattr(args, "accuracy", True) else []
    points = plan(tasks=tasks, contexts=contexts, samples=args.samples, chunk=args.chunk,
                  policies=list(args.policies), budgets=budgets, seed=args.seed,
                  preset=cfg.name, overrides=getattr(args, "overrides", None) or None,
                  perplexity=args.perplexity, text=args.text, windows=args.ppl_windows,
                  score_len=args.ppl_score_len)
    if args.cache_dir is not None and args.cache_dir.exists() and not args.cache_dir.is_dir():
        from starc.cli import UserError
        raise UserError(f"--cache-dir {args.cache_dir}: a file, not a folder")
    from starc.model.gguf_loader import load_gguf
    n_ctx = load_gguf().config.context_length
    if max(contexts) > n_ctx:
        from starc.cli import UserError
        raise UserError(f"--contexts {max(contexts)}: SmolLM2-135M's context is {n_ctx} tokens; "
                        f"use at most {n_ctx}")
    if args.scheduler:
        from starc.sweep.engine import probe_scheduler
        probe_scheduler(args.scheduler)
    cached = cached_points(points, args.cache_dir)
    results, wall = run_quality(points, workers=args.workers, scheduler=args.scheduler,
                                cache_dir=args.cache_dir, progress=not args.json)
    summary = summarize(results)
    from starc.model.corpus import load_text
    lt = load_text(args.text) if args.perplexity else None
    meta = {"command": command, "preset": cfg.name, "git": _git_state(), "wall_s": wall,
            "points": len(points), "cached": cached,
            "compute_s": sum(float(r.get("seconds", 0.0)) for r in results),
            "samples_note": f"{args.samples} samples per task and context" if tasks else "",
            "text": None if lt is None else f"{lt.title} ({lt.licence}; {lt.source}, "
                                            f"sha256 {lt.sha256[:12]})",
            "uptime": _uptime()}
    write_report(rep, points=points, summary=summary, meta=meta)
    if args.json:
        print_json({"report": str(args.out), "meta": meta, "accuracy": summary["accuracy"],
                    "perplexity": summary["perplexity"]})
        return 0
    if summary["accuracy"]:
        head, rows = accuracy_table(summary["accuracy"], budgets)
        print_table(f"accuracy % [95 % CI], {meta['samples_note']}", head, rows)
        print_glossary(["accuracy", "ci_low", "ci_high"],
                       notes=[ACC_NOTE, "B=...: the token budget of the column."])
    if summary["perplexity"]:
        head, rows = perplexity_table(summary["perplexity"])
        print_table("perplexity [95 % CI, window bootstrap]", head, rows)
        print_glossary(head, notes=[PPL_NOTE])
    print(f"report written to {args.out}/ ({wall:.0f} s)")
    return 0


def _uptime() -> str | None:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return None


def register(sub: argparse._SubParsersAction) -> None:
    """``starc eval-quality``: pass key, RULER-style tasks, perplexity and agreement per
    policy (the same machinery as ``starc sweep --accuracy``, with small defaults)."""
    from starc.argtypes import dask_address, int_range
    from starc.cli import add_force_arg, add_json_arg, add_preset_args
    from starc.model.policy_decode import KNOWN_POLICIES
    p = sub.add_parser(
        "eval-quality", help="end-task quality of policies on SmolLM2: pass key, RULER-style "
        "tasks, perplexity, agreement, with confidence intervals",
        description="Decode SmolLM2-135M under every policy and budget from one dense prefill "
                    "per prompt; report task accuracy (pass key by default, or RULER-style "
                    "tasks), perplexity of a shipped public-domain text and next-token "
                    "agreement with dense, each with a 95 % confidence interval. Cached like "
                    "`starc sweep`; see docs/real-model-eval.md.")
    add_preset_args(p)
    p.add_argument("--contexts", type=int_range(64), nargs="+", default=[2048],
                   help="context lengths (default 2048; at most the model's context)")
    p.add_argument("--budgets", type=int_range(1), nargs="+", default=[256, 1024],
                   help="token budgets (default 256 1024)")
    p.add_argument("--policies", nargs="+", default=list(ACCURACY_POLICIES),
                   choices=list(KNOWN_POLICIES), metavar="POLICY",
                   help=f"policies (default {' '.join(ACCURACY_POLICIES)})")
    p.add_argument("--seed", type=int_range(0, (1 << 32) - 1), default=0)
    p.add_argument("--no-perplexity", dest="perplexity", action="store_false",
                   help="skip perplexity and agreement")
    _quality_args(p, samples=5, windows=2, score_len=64, tasks=("passkey",))
    p.add_argument("--workers", type=int_range(1, 1024), default=None,
                   help="local processes (default: CPUs)")
    p.add_argument("--scheduler", type=dask_address, default=None,
                   help="Dask scheduler address (tcp://host:8786)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("-o", "--out", type=Path, default=Path("results/quality"),
                   help="report folder (JSON, CSV, PNG, README)")
    add_force_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_eval_quality, accuracy=True)


def _eval_quality(args: argparse.Namespace) -> int:
    return run_sweep(args, command="eval-quality")

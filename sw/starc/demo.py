"""`starc demo`: the main job end to end on an embedded default (what `make demo` runs).

1. Build a passkey-retrieval prompt (about 2K tokens, the key at half depth) and run SmolLM2-135M on
   it offline (prefill + greedy decode); the KV cache is written in schema starc-kv/1 and cached by
   a hash of the prompt and the model file, so a second run skips the model.
2. Compile the cache (artifact and row-aligned STARC layouts) and evaluate every policy at the
   default budget on the golden model: rows, occupancy, cycles, ns, energy (both conventions),
   ratio to the floor, attention-mass recall, relative error.
3. Decode the passkey answer with each policy plugged into the model's attention (when the
   policy-decoding bridge is available).
4. Co-simulate one decode step of one head on the RTL under Verilator and check bit and cycle
   agreement with the golden model (skipped with a reason when the RTL tier is unavailable).
5. Print one table and a verdict; write a report folder (JSON, CSV, README.md, and the plots as
   PNG, SVG and PDF: attention-mass recall against latency and energy, the cost breakdown).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_CONTEXT = 2048
DEFAULT_BUDGET = 512
DEFAULT_STEPS = 8
#: SmolLM2-135M's context (its config.json, max_position_embeddings) and the shortest prompt
#: worth a sparse policy.
MODEL_CONTEXT = 8192
MIN_CONTEXT = 256


def register(sub: argparse._SubParsersAction) -> None:
    from starc.argtypes import finite_float, int_range
    from starc.cli import add_force_arg, add_json_arg, add_preset_args
    from starc.planner.rounds import add_objective_arg
    p = sub.add_parser("demo", help="the main job end to end on an embedded default",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--context", type=int_range(MIN_CONTEXT, MODEL_CONTEXT - 64),
                   default=DEFAULT_CONTEXT,
                   help=f"prompt length in tokens, {MIN_CONTEXT}..{MODEL_CONTEXT - 64} (default "
                        f"{DEFAULT_CONTEXT})")
    p.add_argument("--budget", type=int_range(1), default=DEFAULT_BUDGET,
                   help=f"token budget B (default {DEFAULT_BUDGET})")
    p.add_argument("--steps", type=int_range(1, 64), default=DEFAULT_STEPS,
                   help=f"decode steps, 1..64 (default {DEFAULT_STEPS})")
    p.add_argument("--depth", type=finite_float(0.0, 1.0), default=0.5,
                   help="pass-key depth in the prompt, 0..1 (default 0.5)")
    p.add_argument("--seed", type=int_range(0, (1 << 32) - 1), default=0)
    p.add_argument("--no-rtl", action="store_true", help="skip the RTL co-simulation")
    add_objective_arg(p)
    p.add_argument("--no-policy-decode", action="store_true",
                   help="skip decoding the pass key under every policy")
    p.add_argument("-o", "--out", type=Path, default=Path("results/demo"),
                   help="report folder (default results/demo)")
    add_force_arg(p)
    add_preset_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def _cache_dir() -> Path:
    import os
    return Path(os.environ.get("STARC_CACHE_DIR", Path.home() / ".cache" / "starc-pim"))


def _status(msg: str) -> None:
    from rich.console import Console
    Console(stderr=True).print(f"[bold cyan]demo[/] {msg}")


def extract_demo_kv(context: int, steps: int, depth: float, seed: int) -> tuple[Path, Any, Any]:
    """The demo's SmolLM2 KV cache (cached on disk), the model and the prompt."""
    from starc.model.extract import extract_kv, write_kv
    from starc.model.gguf_loader import file_key, find_gguf
    from starc.model.llama import load_model
    from starc.model.prompts import passkey_prompt

    model = load_model()
    prompt = passkey_prompt(model.tokenizer, context, depth=depth, seed=seed)
    key = hashlib.sha256(json.dumps({"ids": list(prompt.token_ids), "steps": steps,
                                     "model": file_key(find_gguf())}).encode()).hexdigest()[:16]
    path = _cache_dir() / "demo" / f"kv-{key}.npz"
    if not path.exists():
        _status(f"running SmolLM2-135M on a {prompt.n_tokens}-token passkey prompt "
                f"(key {prompt.passkey} at depth {prompt.needle_depth:.2f}) ...")
        ex = extract_kv(model, prompt.token_ids, steps, progress=True,
                        extra_meta={"passkey": prompt.passkey})
        write_kv(path, ex.arrays, ex.meta, force=True)   # a cache entry, keyed by its content
    else:
        _status(f"using the cached KV cache {path}")
    return path, model, prompt


def run(args: argparse.Namespace) -> int:
    from starc import config
    from starc.cli import print_json
    from starc.glossary import glossary_line
    from starc.kv import load_kv
    from starc.planner.registry import DEFAULT_POLICIES
    from starc.planner.table import COLUMNS, baseline_notes, cells, print_rows, title
    from starc.report import ReportWriter, markdown_table

    t0 = time.perf_counter()
    rep = ReportWriter(args.out, command="demo", force=args.force,
                       inputs=[args.preset] if args.preset and args.preset.endswith(".toml")
                       else [])
    cfg = config.load(args.preset, args.overrides or None)
    from starc.kv import KVMeta, check_capacity
    # SmolLM2-135M's shape (its config.json; docs/real-model.md): checked before the model runs;
    # the prompt may come out a few tokens longer than asked, hence the margin
    check_capacity(KVMeta(model="SmolLM2-135M", n_layers=30, n_q_heads=9, n_kv_heads=3,
                          head_dim=64, prefill_len=args.context + 64,
                          decode_steps=args.steps), cfg)
    kv_path, model, prompt = extract_demo_kv(args.context, args.steps, args.depth, args.seed)
    cache = load_kv(kv_path, cfg)
    meta = cache.meta
    generated = str(meta.extra.get("generated_text", ""))
    dense_ok = prompt.retrieved(generated)
    _status(f"dense decoding answered {generated!r} (pass key {prompt.passkey}: "
            f"{'retrieved' if dense_ok else 'missed'})")

    _status(f"compiling and evaluating {len(DEFAULT_POLICIES)} policies at B = {args.budget} "
            f"over {meta.n_layers - 2} sparse layers x {meta.n_kv_heads} KV heads x "
            f"{meta.decode_steps} steps ...")
    with _eval_progress() as progress:
        res = evaluate_demo(cache, cfg, args.budget, args.objective, progress=progress)
    rows = res.rows

    answers: dict[str, str] = {}
    if not args.no_policy_decode:
        try:
            from starc.model.policy_decode import decode_answers
        except ImportError:
            _status("policy decoding bridge not available: pass-key answers only for dense")
        else:
            _status("decoding the pass key under every policy ...")
            answers = decode_answers(model, prompt, [r["policy"] for r in rows], args.budget,
                                     cfg=cfg, steps=args.steps)
    for r in rows:
        ans = answers.get(r["policy"], generated if r["policy"] == "dense" else None)
        r["passkey_answer"] = ans
        r["passkey_ok"] = None if ans is None else prompt.retrieved(ans)

    rtl: dict[str, Any] = {"ran": False}
    if not args.no_rtl:
        rtl = _rtl_check(cfg, cache)

    dense = next((r for r in rows if r["policy"] == "dense"), None)
    verdict = _verdict(rows, dense, args.budget, rtl)
    # the comparison table of `starc eval` and `starc sweep` (starc.planner.table), plus the
    # pass key
    cols = (*COLUMNS, "passkey_ok")
    table_title = title(res.meta, what=f"one decode step of attention, SmolLM2-135M, "
                                        f"{meta.prefill_len} tokens, B = {args.budget}")
    notes = baseline_notes(rows)

    def line(r: dict[str, Any]) -> list[str]:
        return cells(r, cols)

    with rep:
        summary = {"preset": cfg.name, "budget": args.budget, "context": meta.prefill_len,
                   "kv": str(kv_path), "passkey": prompt.passkey, "dense_answer": generated,
                   "rows": rows, "eval_meta": res.meta, "compile_stats": res.compile_stats,
                   "rtl": rtl, "verdict": verdict, "seconds": time.perf_counter() - t0}
        rep.json("demo.json", summary)
        rep.csv("demo.csv", rows)
        from starc import plots
        pts = [{**r, "preset": cfg.name, "model": "SmolLM2-135M", "context": meta.prefill_len}
               for r in rows]
        figs = {"pareto": plots.pareto(pts, planner=res.meta["planner"],
                                       sampling=res.meta["sampling"]),
                "breakdown": plots.breakdown(pts, budget=args.budget,
                                             planner=res.meta["planner"],
                                             sampling=res.meta["sampling"])}
        for name, fig in figs.items():
            if fig is not None:
                rep.figure(name, fig)
        rep.text("README.md", "\n".join([
            "# starc demo\n",
            f"SmolLM2-135M-Instruct, passkey prompt of {meta.prefill_len} tokens, "
            f"{meta.decode_steps} decode steps, preset `{cfg.name}`, budget B = {args.budget}, "
            f"{res.meta['planner']}, {res.meta['sampling']}. Costs are per decode step, layer "
            "and query head on one channel, selection pass included; cycles in tCK.\n",
            markdown_table(list(cols), [line(r) for r in rows]),
            glossary_line(cols, notes=notes) + "\n",
            "![attention-mass recall against latency and energy](pareto.png)\n",
            "![cycle and energy breakdown](breakdown.png)\n",
            f"RTL co-simulation: {_rtl_line(rtl)}\n", f"**Verdict.** {verdict}\n"]))
    if args.json:
        print_json(summary)
        return 0
    print_rows(table_title, cols, [line(r) for r in rows], notes=notes)
    print(f"RTL co-simulation: {_rtl_line(rtl)}")
    print(f"Verdict: {verdict}")
    from starc.outputs import plot_formats

    fmts = [f.upper() for f in plot_formats()]
    fmts_text = fmts[0] if len(fmts) == 1 else f"{', '.join(fmts[:-1])} and {fmts[-1]}"
    print(f"Report: {args.out}/ (demo.json, demo.csv, README.md, plots as {fmts_text}); "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


def evaluate_demo(cache: Any, cfg: Any, budget: int, objective: str | None = None,
                  progress: Any = None) -> Any:
    """The demo's comparison: :func:`starc.planner.evaluate.evaluate` with the defaults
    ``starc eval`` and ``starc sweep`` use (policies, planner objective, cost sampling, compile
    options), so they reproduce the demo's table on the same cache. ``progress`` receives the
    evaluation's progress messages."""
    from starc.planner.evaluate import EvalOptions, evaluate
    from starc.planner.rounds import OBJECTIVES

    return evaluate(cache, cfg, EvalOptions(budgets=(budget,),
                                            objective=objective or OBJECTIVES[0]),
                    progress=progress or (lambda m: None))


@contextlib.contextmanager
def _eval_progress() -> Iterator[Any]:
    """A progress callback for the evaluation (about a minute at the default context): a live
    spinner line with the step, layer and KV head on a terminal, status lines otherwise."""
    import sys

    if not sys.stderr.isatty():
        last = [-1e9]

        def line(m: str) -> None:  # at most one line per 10 s in a log
            if time.monotonic() - last[0] >= 10:
                last[0] = time.monotonic()
                _status(f"  evaluating: {m}")

        yield line
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("[bold cyan]demo[/] evaluating: {task.description}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda m: bar.update(task, description=m)


def _rtl_check(cfg: Any, cache: Any) -> dict[str, Any]:
    try:
        from starc_sim.cosim import cosim_step
    except ImportError as e:
        return {"ran": False, "reason": f"RTL co-simulation unavailable ({e})"}
    import sys

    _status("co-simulating one decode step of one head on the RTL (Verilator) ...")
    return cosim_step(cfg, cache, progress=sys.stderr.isatty())


def _rtl_line(rtl: dict[str, Any]) -> str:
    if not rtl.get("ran"):
        return f"skipped: {rtl.get('reason', 'not requested')}"
    sc = rtl.get("scenario") or {}
    what = (f"{sc.get('policy')} B={sc.get('budget')}, layer {sc.get('layer')} q-head "
            f"{sc.get('q_head')} step {sc.get('step')}, {sc.get('selected')} tokens in "
            f"{sc.get('rows_opened')} rows, on the co-simulation channel of "
            f"{rtl.get('model')}; "
            if sc else "")
    return (f"{what}outputs bit-exact: {rtl.get('bit_exact')}, cycles RTL "
            f"{rtl.get('rtl_cycles')} = golden {rtl.get('golden_cycles')}: "
            f"{rtl.get('cycles_equal')}")


def _verdict(rows: list[dict[str, Any]], dense: dict[str, Any] | None, B: int,
             rtl: dict[str, Any]) -> str:
    if dense is None or not dense.get("cycles"):
        return "no dense baseline to compare with"
    parts = []
    best = None
    for r in rows:
        if r["policy"] == "dense" or not r.get("cycles"):
            continue
        if r.get("mass_recall", 0) >= 0.85 and (best is None or r["cycles"] < best["cycles"]):
            best = r
    if best is None:
        parts.append(f"no sparse policy keeps 85 % of the attention mass at B = {B}")
    else:
        parts.append(f"fastest policy keeping >= 85 % of the attention mass: {best['policy']} "
                     f"({best['cycles'] / dense['cycles']:.2f}x dense cycles, "
                     f"{best['energy_nJ'] / dense['energy_nJ']:.2f}x dense energy, mass recall "
                     f"{best['mass_recall']:.3f})")
    for name in ("starc", "starc-row"):
        r = next((x for x in rows if x["policy"] == name), None)
        if r and r.get("slots_over_B") is not None:
            parts.append(f"{name} activates {r['slots_over_B']:.2f} x B token slots")
    if rtl.get("ran"):
        ok = rtl.get("bit_exact") and rtl.get("cycles_equal")
        parts.append("RTL agrees with the golden model" if ok else "RTL DISAGREES with the "
                     "golden model")
    return "; ".join(parts) + "."

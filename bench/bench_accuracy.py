"""Speed of the accuracy sweep (docs/real-model-eval.md): one task sample decoded under every
policy and budget, lockstep streams from one shared prefill vs the sequential baseline.

For each (task, context) it generates sample 0, prefills it densely, compiles the STARC layouts,
then decodes all (policy, budget) streams with ``decode_streams`` (the sweep's path). The
baseline, measured side by side in the same run, decodes the same streams one after another
through ``LlamaModel.forward`` with ``policy_attention`` (one-row products, one policy at a time,
still sharing the prefill). Both must produce the same answers. The per-sample time then projects
the full sweep (5 tasks x 2 contexts x 50 samples, 3 budgets x 7 policies) on ``--workers``
processes. Wall and CPU seconds are printed with the machine load (``uptime``), since other jobs
share the cores.

    .venv/bin/python bench/bench_accuracy.py [--tasks niah_single vt] [--contexts 1024 2048]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

os.environ.setdefault("STARC_THREADS", "1")      # as in the sweep's worker processes


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["niah_single", "niah_multivalue", "vt",
                                                    "cwe"])
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--budgets", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--samples", type=int, default=50, help="samples per cell to project")
    ap.add_argument("--workers", type=int, default=2, help="processes to project for")
    ap.add_argument("--no-baseline", action="store_true")
    a = ap.parse_args()

    from starc import config
    from starc.model.llama import load_model
    from starc.model.policy_decode import _attention_for, _greedy
    from starc.model.policy_decode import _Prefilled as SeqPrefill
    from starc.model.quality import ACCURACY_POLICIES, _groups, _prefill
    from starc.model.streams import decode_streams
    from starc.model.tasks import generate, score

    cfg = config.load(None)
    model = load_model()
    tok = model.tokenizer
    eos = model.config.eos_token_id
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"{'task':16s} {'L':>5s} {'prefill':>8s} {'compile':>8s} {'streams':>8s} "
          f"{'baseline':>9s} {'speed-up':>8s} {'cpu/sample':>10s} same")
    per_ctx: dict[int, list[float]] = {}
    for ctx in a.contexts:
        for task in a.tasks:
            s = generate(tok, task, ctx, 0)
            w0, c0 = _clock()
            pre = _prefill(model, s.token_ids, ACCURACY_POLICIES, cfg, (0, 1), s.gen_tokens)

            def stop(_i: int, toks: list[int], refs: list[str] = s.references) -> bool:
                return toks[-1] == eos or score(tok.decode(toks), refs) == 1.0

            t0 = time.perf_counter()
            answers = {}
            for grp in _groups(ACCURACY_POLICIES, a.budgets, pre):
                res = decode_streams(model, pre.cache, [g[2] for g in grp], first=pre.first,
                                     steps=s.gen_tokens, stop=stop)
                for (p, B, _), toks in zip(grp, res.tokens, strict=True):
                    answers[(p, B)] = toks
            t_streams = time.perf_counter() - t0
            w1, c1 = _clock()
            per_ctx.setdefault(ctx, []).append(w1 - w0)
            t_base, same = float("nan"), "-"
            if not a.no_baseline:
                seq = SeqPrefill(list(s.token_ids), pre.cache, pre.first, pre.logits,
                                 pre.compiled, {})
                t0 = time.perf_counter()
                ok = True
                for (p, B), toks in answers.items():
                    want = _greedy(model, seq, _attention_for(p, B, seq, cfg, (0, 1)),
                                   len(toks))
                    ok &= want == toks[:len(want)]
                t_base = time.perf_counter() - t0
                same = "yes" if ok else "NO"
            print(f"{task:16s} {ctx:5d} {pre.seconds['prefill_s']:8.1f} "
                  f"{pre.seconds['compile_s']:8.1f} {t_streams:8.1f} {t_base:9.1f} "
                  f"{t_base / t_streams:7.1f}x {c1 - c0:10.1f} {same}", flush=True)
    # mean wall time per sample of each context, times the sweep's 5 tasks
    total = sum(5 * sum(v) / len(v) for v in per_ctx.values())
    proj = total * a.samples / a.workers
    print(f"projected full sweep (5 tasks x {len(a.contexts)} contexts x {a.samples} samples, "
          f"{len(a.budgets)} budgets x {len(ACCURACY_POLICIES)} policies) on {a.workers} "
          f"processes at this load: {proj / 3600:.2f} h")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

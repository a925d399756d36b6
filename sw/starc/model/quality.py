"""End-task quality of attention policies on the real model: accuracy, perplexity, agreement.

Data flow of one unit of work (docs/real-model-eval.md, "How it runs"):

    prompt (tasks.generate | passkey_prompt | a window of the long text)
      -> dense prefill, once                       (LlamaModel.forward)
      -> STARC layouts compiled once from it       (compile_kv, artifact + row-aligned)
      -> every (policy, budget) decodes in lockstep (streams.decode_streams, grouped per budget)
      -> per-sample scores                         (tasks.score / log-probabilities)

Three measurements, all per (policy, budget) and all on the very same prompts for every policy:

- :func:`task_scores`: task samples (:mod:`starc.model.tasks`: pass key and the RULER-style
  tasks), greedy answers
  scored by ``string_match_all``; decoding of a stream stops once its score is 1 (it cannot
  change any more), at the end-of-text token, or after the task's generation budget.
- :func:`window_nll`: the negative log-likelihood of the last ``score_len - 1`` tokens of a
  window of a long text, teacher forced after a dense prefill of the window's start.
  The same runs give the next-token agreement with dense: how often a policy's argmax equals
  dense's at the scored positions.

:func:`summarize_scores` and :func:`summarize_nll` turn per-sample results into means with 95 %
confidence intervals: Wilson score intervals for 0/1 outcomes, otherwise a percentile bootstrap
over samples (``scipy.stats.bootstrap``, fixed seed), and paired bootstrap intervals of the
difference to dense on the same samples; perplexity intervals resample whole windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from starc.config import Config

from .llama import LlamaModel
from .policy_decode import STARC_MODES, _check_policy, _compile_for, policy_selector
from .streams import StreamSpec, decode_streams

__all__ = [
    "ACCURACY_POLICIES",
    "pool_scores",
    "summarize_nll",
    "summarize_scores",
    "task_scores",
    "wilson",
    "window_nll",
    "window_starts",
]

#: the policies of the accuracy sweep: the planner's comparison set
ACCURACY_POLICIES = ("dense", "oracle", "quest", "sparq", "streaming", "starc", "starc-row")
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class _Prefill:
    cache: Any
    first: int
    logits: np.ndarray
    compiled: dict[str, Any]
    seconds: dict[str, float]


def _prefill(model: LlamaModel, ids: Sequence[int], policies: Sequence[str], cfg: Config,
             dense_layers: Sequence[int], room: int) -> _Prefill:
    t0 = time.perf_counter()
    cache = model.new_cache(len(ids) + room)
    res = model.forward(list(ids), cache)
    assert res.logits is not None
    t1 = time.perf_counter()
    compiled = _compile_for(model, cache, len(ids), policies, cfg, dense_layers)
    t2 = time.perf_counter()
    return _Prefill(cache, int(np.argmax(res.logits[-1])), res.logits[-1], compiled,
                    {"prefill_s": t1 - t0, "compile_s": t2 - t1})


def _groups(policies: Sequence[str], budgets: Sequence[int], pre: _Prefill
            ) -> list[list[tuple[str, int, StreamSpec]]]:
    """Stream groups, one per budget; dense (budget-free) runs once, in the first group."""
    for p in policies:
        _check_policy(p)
    out: list[list[tuple[str, int, StreamSpec]]] = []
    for i, B in enumerate(budgets):
        grp = []
        for p in policies:
            if p == "dense":
                if i == 0:
                    grp.append((p, B, StreamSpec("dense", 1 << 62, None)))
                continue
            sel = policy_selector(p, B, compiled=pre.compiled.get(p))
            grp.append((p, B, StreamSpec(f"{p}@{B}", B, sel)))
        out.append(grp)
    return out


def _dense_rows(rows: list[dict[str, Any]], budgets: Sequence[int]) -> list[dict[str, Any]]:
    """Dense does not depend on B: its one result is reported under every budget."""
    out = []
    for r in rows:
        if r["policy"] == "dense":
            out += [r | {"budget": B} for B in budgets]
        else:
            out.append(r)
    return out


# ---------------------------------------------------------------------------------------------
# measurements


def task_scores(model: LlamaModel, cfg: Config, task: str, context: int,
                indices: Sequence[int], *, policies: Sequence[str] = ACCURACY_POLICIES,
                budgets: Sequence[int] = (128, 256, 512), seed: int = 0,
                dense_layers: Sequence[int] = (0, 1),
                log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per (sample, policy, budget): ``score`` (RULER string_match_all), the answer and
    the number of tokens decoded."""
    from .tasks import generate, score

    tok = model.tokenizer
    eos = model.config.eos_token_id
    rows: list[dict[str, Any]] = []
    for idx in indices:
        s = generate(tok, task, context, int(idx), seed=seed)
        pre = _prefill(model, s.token_ids, policies, cfg, dense_layers, s.gen_tokens)
        t0 = time.perf_counter()

        def stop(_i: int, toks: list[int], refs: list[str] = s.references) -> bool:
            return toks[-1] == eos or score(tok.decode(toks), refs) == 1.0

        sample_rows = []
        for grp in _groups(policies, budgets, pre):
            res = decode_streams(model, pre.cache, [g[2] for g in grp], first=pre.first,
                                 steps=s.gen_tokens, stop=stop, dense_layers=dense_layers)
            for (p, B, _), toks in zip(grp, res.tokens, strict=True):
                ans = tok.decode(toks)
                sample_rows.append({"task": task, "context": context, "index": int(idx),
                                    "policy": p, "budget": B,
                                    "score": score(ans, s.references), "answer": ans,
                                    "tokens": len(toks)})
        rows += _dense_rows(sample_rows, budgets)
        if log is not None:
            dense = next(r for r in sample_rows if r["policy"] == "dense")
            log(f"{task} {context} #{idx}: {s.n_tokens} tokens, prefill "
                f"{pre.seconds['prefill_s']:.1f} s, compile {pre.seconds['compile_s']:.1f} s, "
                f"decode {time.perf_counter() - t0:.1f} s; dense score {dense['score']:.2f}")
    return rows


def window_starts(n_tokens: int, context: int, windows: int, score_len: int) -> list[int]:
    """Start offsets of ``windows`` windows of ``context`` tokens spread evenly over a text of
    ``n_tokens`` tokens; their scored tails (the last ``score_len`` tokens) do not overlap."""
    if context > n_tokens:
        raise ValueError(f"the text has {n_tokens} tokens, fewer than one {context}-token "
                         f"window")
    if windows < 1:
        raise ValueError(f"windows must be >= 1, not {windows}")
    span = n_tokens - context
    if windows == 1:
        return [span // 2]
    step = span / (windows - 1)
    if step < score_len:
        most = span // score_len + 1
        raise ValueError(f"{windows} windows of {context} tokens with {score_len}-token scored "
                         f"tails do not fit a {n_tokens}-token text without overlap; use at "
                         f"most {most}")
    return [round(i * step) for i in range(windows)]


def window_nll(model: LlamaModel, cfg: Config, ids: Sequence[int], start: int, context: int,
               score_len: int, *, policies: Sequence[str] = ACCURACY_POLICIES,
               budgets: Sequence[int] = (128, 256, 512), dense_layers: Sequence[int] = (0, 1)
               ) -> list[dict[str, Any]]:
    """Per (policy, budget): the NLL (nats) of each of the last ``score_len - 1`` tokens of the
    window ``ids[start : start + context]``, teacher forced after a dense prefill of its first
    ``context - score_len`` tokens. Every scored prediction is made under the policy (the
    prefill's own prediction, the same for all, is left out). Also the next-token agreement:
    how often the policy's argmax equals dense's on those positions."""
    win = [int(t) for t in ids[start:start + context]]
    if len(win) != context:
        raise ValueError(f"window {start}..{start + context} runs past the text "
                         f"({len(ids)} tokens)")
    if not 2 <= score_len < context:
        raise ValueError(f"score_len must be between 2 and {context - 1}, not {score_len}")
    P = context - score_len
    pre = _prefill(model, win[:P], policies, cfg, dense_layers, score_len)
    forced = win[P:]
    rows = []
    dense_pred: list[int] | None = None
    for grp in _groups(policies, budgets, pre):
        res = decode_streams(model, pre.cache, [g[2] for g in grp], steps=score_len,
                             forced=forced, dense_layers=dense_layers)
        for (p, B, _), lp, pred in zip(grp, res.logprobs, res.tokens, strict=True):
            if p == "dense":
                dense_pred = pred
            rows.append({"context": context, "start": start, "policy": p, "budget": B,
                         "nll": (-lp).tolist(), "pred": pred})
    assert dense_pred is not None or "dense" not in policies
    for r in rows:
        pred = r.pop("pred")
        if dense_pred is not None:
            r["agree"] = int(sum(a == b for a, b in zip(pred, dense_pred, strict=True)))
            r["agree_n"] = len(pred)
    return _dense_rows(rows, budgets)


# ---------------------------------------------------------------------------------------------
# statistics


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``scipy.stats.binomtest``)."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("the interval of an empty sample is undefined")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _bootstrap(data: Sequence[np.ndarray], stat: Callable[..., Any], *, paired: bool,
               seed: int) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if all(np.ptp(d) == 0 for d in data):      # no spread: every resample gives the same value
        v = float(stat(*data))
        return v, v
    res = bootstrap(tuple(data), stat, paired=paired, vectorized=True, method="percentile",
                    n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=0.95,
                    random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def summarize_scores(rows: Sequence[dict[str, Any]], keys: Sequence[str] = ("task", "context"),
                     seed: int = 0) -> list[dict[str, Any]]:
    """Per ``keys`` + (policy, budget): mean score over samples with its 95 % interval (Wilson
    when every score is 0 or 1, else percentile bootstrap) and the paired difference to dense on
    the same samples (percentile bootstrap over samples)."""
    groups: dict[tuple[Any, ...], dict[Any, float]] = {}
    for r in rows:
        k = (*(r[c] for c in keys), r["policy"], r["budget"])
        sid = (r.get("index"), r.get("seed"), r.get("depth"))
        groups.setdefault(k, {})[sid] = float(r["score"])
    out = []
    for k, by in groups.items():
        *head, policy, B = k
        ids = sorted(by, key=repr)
        x = np.array([by[i] for i in ids])
        n = len(x)
        binary = bool(np.all((x == 0) | (x == 1)))
        if binary:
            lo, hi = wilson(int(x.sum()), n)
        else:
            lo, hi = _bootstrap([x], _mean, paired=False, seed=seed)
        row = {**dict(zip(keys, head, strict=True)), "policy": policy, "budget": B, "n": n,
               "accuracy": float(x.mean()), "ci_low": lo, "ci_high": hi,
               "ci_method": "wilson" if binary else "bootstrap"}
        dense = groups.get((*head, "dense", B))
        if dense is not None and policy != "dense":
            common = [i for i in ids if i in dense]
            a = np.array([by[i] for i in common])
            b = np.array([dense[i] for i in common])
            lo_d, hi_d = _bootstrap([a, b], _diff, paired=True, seed=seed)
            row |= {"delta_vs_dense": float(a.mean() - b.mean()), "delta_ci_low": lo_d,
                    "delta_ci_high": hi_d}
        out.append(row)
    return out


def pool_scores(rows: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Per (policy, budget), pooled over every task and context: the mean score over all their
    samples (each sample one equal weight), its 95 % interval and the paired difference to dense,
    as :func:`summarize_scores` computes them. A sample is told apart by its task and context
    too (the same index under two tasks is two samples). ``task`` and ``context`` of the output
    say what was pooled."""
    tasks = sorted({str(r["task"]) for r in rows})
    contexts = sorted({int(r["context"]) for r in rows})
    ided = [{**r, "index": (r["task"], r["context"], r.get("index"))} for r in rows]
    return [{"task": "+".join(tasks), "context": "+".join(map(str, contexts)), **r}
            for r in summarize_scores(ided, keys=(), seed=seed)]


def summarize_nll(rows: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Per (context, policy, budget): perplexity ``exp(mean NLL)`` over every scored token of
    every window, its 95 % interval by a bootstrap over windows (token-weighted), the change
    relative to dense with a paired window bootstrap, and next-token agreement with dense."""
    groups: dict[tuple[Any, str, int], dict[int, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["context"], r["policy"], r["budget"]), {})[r["start"]] = r
    out = []
    for (ctx, policy, B), by in groups.items():
        starts = sorted(by)
        sums = np.array([float(np.sum(by[s]["nll"])) for s in starts])
        cnts = np.array([len(by[s]["nll"]) for s in starts], dtype=float)

        def ppl(s: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.exp(np.sum(s, axis=axis) / np.sum(c, axis=axis))

        value = float(ppl(sums, cnts))
        lo, hi = _bootstrap([sums, cnts], ppl, paired=True, seed=seed) if len(starts) > 1 \
            else (value, value)
        row: dict[str, Any] = {"context": ctx, "policy": policy, "budget": B,
                               "windows": len(starts), "tokens": int(cnts.sum()),
                               "ppl": value, "ppl_ci_low": lo, "ppl_ci_high": hi}
        if all("agree" in by[s] for s in starts):
            row["agreement"] = sum(by[s]["agree"] for s in starts) / max(
                1, sum(by[s]["agree_n"] for s in starts))
        dense = groups.get((ctx, "dense", B))
        if dense is not None and policy != "dense" and set(dense) >= set(starts):
            dsums = np.array([float(np.sum(dense[s]["nll"])) for s in starts])

            def change(s: np.ndarray, d: np.ndarray, c: np.ndarray, axis: int = -1
                       ) -> np.ndarray:
                return np.exp((np.sum(s, axis=axis) - np.sum(d, axis=axis))
                              / np.sum(c, axis=axis)) - 1.0

            ch = float(change(sums, dsums, cnts))
            clo, chi = _bootstrap([sums, dsums, cnts], change, paired=True, seed=seed) \
                if len(starts) > 1 else (ch, ch)
            row |= {"ppl_dense": float(ppl(dsums, cnts)), "ppl_change": ch,
                    "ppl_change_ci_low": clo, "ppl_change_ci_high": chi}
        out.append(row)
    return out


def starc_modes() -> dict[str, str]:
    """Compile mode of each STARC policy (for reports)."""
    return dict(STARC_MODES)

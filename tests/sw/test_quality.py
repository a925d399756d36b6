"""Policy quality on the real model (``starc.model.quality``, ``streams``, ``corpus``) and the
accuracy sweep (``starc.sweep.quality``).

Lockstep decoding is checked against the sequential path (``policy_attention`` through
``LlamaModel.forward``, row by row), the intervals against closed forms, the sweep plan against
the cache-extension property, and ``starc eval-quality`` end to end on a short context.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from starc import config
from starc.model import gguf_loader as gl
from starc.model import llama as L
from starc.model.quality import pool_scores, summarize_nll, summarize_scores, wilson, window_starts

CFG = config.load(None)
POLICIES = ["dense", "oracle", "quest", "sparq", "streaming", "starc", "starc-row"]


@pytest.fixture(scope="module")
def text_installed() -> None:
    from starc.model.corpus import TextError, load_text
    try:
        load_text("frankenstein")
    except TextError as exc:          # a virtual environment older than the pin: make setup
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def model() -> L.LlamaModel:
    try:
        return L.load_model()
    except gl.ModelFileError as exc:
        pytest.skip(str(exc))


def test_streams_equal_sequential_policy_decoding(model: L.LlamaModel) -> None:
    from starc.model.policy_decode import (
        _attention_for,
        _greedy,
        _prefill,
        _teacher_forced,
        policy_selector,
    )
    from starc.model.prompts import passkey_prompt
    from starc.model.streams import StreamSpec, decode_streams

    pr = passkey_prompt(model.tokenizer, 200, depth=0.5, seed=1)
    pre = _prefill(model, pr.token_ids, POLICIES, CFG, 5, (0, 1))
    B = 48
    specs = [StreamSpec(p, 1 << 62 if p == "dense" else B,
                        policy_selector(p, B, compiled=pre.compiled.get(p))) for p in POLICIES]
    res = decode_streams(model, pre.cache, specs, first=pre.first, steps=5)
    for p, toks in zip(POLICIES, res.tokens, strict=True):
        want = _greedy(model, pre, _attention_for(p, B, pre, CFG, (0, 1)), 5)
        assert toks[:len(want)] == want, p
    assert pre.cache.length == len(pr.token_ids)           # the shared prefill is untouched
    dense = res.tokens[0]
    tf = decode_streams(model, pre.cache, specs, steps=len(dense), forced=dense)
    for p, lp in zip(POLICIES, tf.logprobs, strict=True):
        lg = _teacher_forced(model, pre, dense[:-1], _attention_for(p, B, pre, CFG, (0, 1)))
        lg = lg.astype(np.float64)
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        want = lg[np.arange(len(dense) - 1), dense[1:]] - lse
        np.testing.assert_allclose(lp, want, atol=1e-4, err_msg=p)
    # dense predicts its own greedy trajectory
    assert tf.tokens[0] == dense[1:]


def test_greedy_streams_stop_independently(model: L.LlamaModel) -> None:
    from starc.model.streams import StreamSpec, decode_streams

    cache = model.new_cache(64)
    res = model.forward(model.tokenizer.encode("The capital of France is"), cache)
    first = int(np.argmax(res.logits[-1]))
    specs = [StreamSpec("a", 1 << 62, None), StreamSpec("b", 1 << 62, None)]
    out = decode_streams(model, cache, specs, first=first, steps=5,
                         stop=lambda s, toks: s == 0 and len(toks) >= 2)
    assert len(out.tokens[0]) == 2 and len(out.tokens[1]) == 5
    assert out.tokens[1][:2] == out.tokens[0]
    assert out.tokens[1] == model.generate(model.tokenizer.encode("The capital of France is"),
                                           5, stop_ids=[])


def test_wilson_matches_the_closed_form() -> None:
    z = 1.959963984540054
    for k, n in ((0, 50), (7, 50), (50, 50), (1, 3)):
        p = k / n
        c = (p + z * z / (2 * n)) / (1 + z * z / n)
        h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = wilson(k, n)
        assert lo == pytest.approx(max(0.0, c - h), abs=1e-9)
        assert hi == pytest.approx(min(1.0, c + h), abs=1e-9)


def _rows(policy: str, scores: list[float], B: int = 256) -> list[dict]:
    return [{"task": "t", "context": 1024, "index": i, "policy": policy, "budget": B,
             "score": s} for i, s in enumerate(scores)]


def test_summaries_pick_the_interval_and_pair_with_dense() -> None:
    rng = np.random.default_rng(5)
    dense = [1.0] * 40 + [0.0] * 10
    frac = list(np.round(rng.uniform(0, 1, 50) * 4) / 4)
    rows = _rows("dense", dense) + _rows("quest", dense) + _rows("sparq", frac)
    out = {r["policy"]: r for r in summarize_scores(rows)}
    assert out["dense"]["ci_method"] == "wilson"
    assert (out["dense"]["ci_low"], out["dense"]["ci_high"]) == pytest.approx(wilson(40, 50))
    assert out["quest"]["delta_vs_dense"] == 0.0
    assert (out["quest"]["delta_ci_low"], out["quest"]["delta_ci_high"]) == (0.0, 0.0)
    s = out["sparq"]
    assert s["ci_method"] == "bootstrap" and s["n"] == 50
    assert s["accuracy"] == pytest.approx(np.mean(frac))
    assert s["ci_low"] < s["accuracy"] < s["ci_high"]
    # a percentile bootstrap of a mean is close to the normal interval for n = 50
    se = np.std(frac, ddof=1) / math.sqrt(50)
    assert s["ci_high"] - s["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert s["delta_vs_dense"] == pytest.approx(np.mean(frac) - 0.8)


def test_pooled_accuracy_weights_every_sample_once_across_tasks() -> None:
    # two tasks x two contexts with the same sample indices: 4 x 6 distinct samples
    rng = np.random.default_rng(11)
    rows, dense_all, quest_all = [], [], []
    for task in ("niah_single", "vt"):
        for ctx in (1024, 2048):
            d = list(rng.integers(0, 2, 6).astype(float))
            q = list(np.round(rng.uniform(0, 1, 6) * 3) / 3)
            dense_all += d
            quest_all += q
            for pol, xs in (("dense", d), ("quest", q)):
                rows += [{**r, "task": task, "context": ctx} for r in _rows(pol, xs)]
    out = {r["policy"]: r for r in pool_scores(rows)}
    assert out["dense"]["n"] == out["quest"]["n"] == 24
    assert out["dense"]["task"] == "niah_single+vt" and out["dense"]["context"] == "1024+2048"
    assert out["dense"]["accuracy"] == pytest.approx(np.mean(dense_all))
    assert out["quest"]["accuracy"] == pytest.approx(np.mean(quest_all))
    assert out["quest"]["delta_vs_dense"] == pytest.approx(np.mean(quest_all) - np.mean(dense_all))
    assert out["quest"]["delta_ci_low"] <= out["quest"]["delta_vs_dense"] <= \
        out["quest"]["delta_ci_high"]


def test_perplexity_summary_is_token_weighted_and_paired() -> None:
    quest = {0: [1.0, 2.0, 3.0], 1: [2.0, 2.0]}
    rows = []
    for start, nll in quest.items():
        rows.append({"context": 8, "start": start, "policy": "dense", "budget": 4,
                     "nll": [1.5] * len(nll), "agree": len(nll), "agree_n": len(nll)})
        rows.append({"context": 8, "start": start, "policy": "quest", "budget": 4,
                     "nll": nll, "agree": 1, "agree_n": len(nll)})
    out = {r["policy"]: r for r in summarize_nll(rows)}
    assert out["dense"]["ppl"] == pytest.approx(math.exp(1.5))
    assert out["quest"]["ppl"] == pytest.approx(math.exp(10.0 / 5))
    assert out["quest"]["ppl_change"] == pytest.approx(math.exp(2.0 - 1.5) - 1)
    assert out["quest"]["agreement"] == pytest.approx(2 / 5)
    assert out["quest"]["tokens"] == 5 and out["quest"]["windows"] == 2


def test_window_starts_spread_without_overlapping_tails() -> None:
    s = window_starts(6826, 2048, 6, 128)
    assert s[0] == 0 and s[-1] == 6826 - 2048 and len(s) == 6
    assert min(b - a for a, b in zip(s, s[1:], strict=False)) >= 128
    with pytest.raises(ValueError, match="use at most"):
        window_starts(3000, 2048, 20, 128)
    with pytest.raises(ValueError, match="fewer than one"):
        window_starts(1000, 2048, 2, 128)


def test_shipped_text_is_checked_and_files_are_accepted(tmp_path) -> None:
    from starc.model.corpus import TextError, load_text

    try:
        t = load_text("frankenstein")
    except TextError as exc:
        pytest.skip(str(exc))
    assert t.text.startswith("Letter 1") and len(t.text) == 31073
    assert "public domain" in t.licence
    f = tmp_path / "a.txt"
    f.write_text("hello there", encoding="utf-8")
    assert load_text(str(f)).text == "hello there"
    with pytest.raises(TextError, match="neither a shipped text"):
        load_text(str(tmp_path / "missing.txt"))
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(TextError, match="not UTF-8"):
        load_text(str(f))


def test_sweep_plan_grows_by_whole_points(model: L.LlamaModel, text_installed: None) -> None:
    # a 20-sample plan is a subset of the 50-sample plan: the cache extends a run
    from starc.sweep.quality import plan

    kw = dict(tasks=["niah_single", "vt"], contexts=[1024, 2048], chunk=5,
              policies=POLICIES, budgets=[128, 256, 512], seed=0, preset=CFG.name)
    small = plan(samples=20, **kw)
    big = plan(samples=50, **kw)
    assert len(small) == 2 * 2 * 4 and len(big) == 2 * 2 * 10
    assert all(p in big for p in small)
    ppl = plan(samples=5, perplexity=True, windows=3, score_len=64, **kw)
    assert sum(p["kind"] == "perplexity" for p in ppl) == 6
    with pytest.raises(ValueError, match="unknown task"):
        plan(samples=5, **(kw | {"tasks": ["nope"]}))


@pytest.mark.slow
def test_eval_quality_cli_end_to_end(model: L.LlamaModel, text_installed: None, tmp_path,
                                     capsys) -> None:
    from starc.cli import main

    rc = main(["eval-quality", "--contexts", "256", "--budgets", "48", "--policies", "dense",
               "streaming", "--samples", "2", "--ppl-windows", "2", "--ppl-score-len", "8",
               "--workers", "1", "--cache-dir", str(tmp_path / "c"), "-o",
               str(tmp_path / "r"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    acc = {r["policy"]: r for r in out["accuracy"]}
    assert acc["dense"]["n"] == 2 and acc["dense"]["ci_method"] == "wilson"
    ppl = {r["policy"]: r for r in out["perplexity"]}
    assert ppl["dense"]["tokens"] == 2 * 7
    assert ppl["streaming"]["ppl_change"] == pytest.approx(
        ppl["streaming"]["ppl"] / ppl["dense"]["ppl"] - 1)
    for f in ("README.md", "quality.json", "accuracy.csv", "accuracy_pooled.csv",
              "perplexity.csv", "accuracy_B48.png", "perplexity_change.png"):
        assert (tmp_path / "r" / f).is_file(), f
    # the second run is served from the cache
    rc = main(["eval-quality", "--contexts", "256", "--budgets", "48", "--policies", "dense",
               "streaming", "--samples", "2", "--ppl-windows", "2", "--ppl-score-len", "8",
               "--workers", "1", "--cache-dir", str(tmp_path / "c"), "-o",
               str(tmp_path / "r2"), "--json"])
    again = json.loads(capsys.readouterr().out)
    assert again["meta"]["cached"] == again["meta"]["points"]
    assert again["accuracy"] == out["accuracy"]

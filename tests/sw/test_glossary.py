"""The metric registry: every column of every table, CSV and JSON row has one registered name,
docs/metrics.md is rendered from it, tables define their columns under themselves, and the ratio
columns equal the ratio of the rows they name (a missing baseline is said)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starc import cli, config, glossary
from starc.kv import synthetic_kv
from starc.planner.evaluate import EvalOptions, evaluate
from starc.planner.table import COLUMNS, add_baseline_ratios, baseline_notes
from starc.report import flatten

ROOT = Path(__file__).resolve().parents[2]
CFG = config.load()


@pytest.fixture(scope="module")
def eval_rows():
    cache = synthetic_kv(n_layers=3, n_q_heads=4, n_kv_heads=2, prefill_len=400, decode_steps=1,
                         seed=5)
    return evaluate(cache, CFG, EvalOptions(budgets=(128, "p0.9"), cost_programs=3)).rows


def _unregistered(rows):
    bad = set()
    for r in rows:
        for k in flatten(r):
            try:
                glossary.get(k)
            except glossary.UnknownMetric:
                bad.add(k)
    return sorted(bad)


def test_docs_metrics_page_is_rendered_from_the_registry():
    page = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert page == glossary.render_markdown(), (
        "docs/metrics.md is stale: regenerate it with `python -m starc.glossary docs/metrics.md`")
    for m in glossary.METRICS.values():
        assert f"| `{m.name}` |" in page


def test_every_registered_metric_is_complete():
    for m in glossary.METRICS.values():
        assert m.better in (None, glossary.HIGHER, glossary.LOWER), m
        assert m.short and m.definition and m.group in {g for g, _, _ in glossary.GROUPS}, m
        # a figure of merit has a unit (dimensionless ones say ratio or fraction)
        assert m.better is None or m.unit, m
    with pytest.raises(glossary.UnknownMetric):
        glossary.get("x floor")


def test_comparison_rows_use_registered_names_only(eval_rows):
    assert _unregistered(eval_rows) == []
    assert all(glossary.get(k) for k in COLUMNS)


def _tables(doc):
    """The row lists of a JSON output (lists of dicts anywhere in it), and its derived figures."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "derived" and isinstance(v, dict):
                yield [v]
            elif k in ("meta", "eval_meta", "compile_stats", "points", "config", "options",
                       "stats", "fields", "ports", "modules", "cells", "scenario"):
                continue            # settings and descriptions, not metric rows
            else:
                yield from _tables(v)
    elif isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc):
        if all("config" in x for x in doc):     # whole documents (sweep --system's results)
            for x in doc:
                yield from _tables(x)
        else:
            yield doc


def test_every_recorded_output_uses_registered_names():
    """The recorded scenarios (tests/scenarios.py) are the outputs of every command: each row of
    each of their tables uses names of the registry only."""
    from scenarios import SCENARIOS
    seen = 0
    for scn in SCENARIOS:
        if not scn.path.is_file() or scn.argv[0] in ("config", "rtl", "model", "kv") and \
                scn.argv[:2] != ("config", "show"):
            continue
        doc = json.loads(scn.path.read_text(encoding="utf-8"))
        for rows in _tables(doc):
            assert _unregistered(rows) == [], scn.name
            seen += len(rows)
    assert seen > 100


def test_breakdowns_are_flat_and_sum_to_the_totals():
    from scenarios import get
    r = json.loads(get("timing-dense").path.read_text())["rows"][0]
    assert sum(v for k, v in r.items() if k.startswith("t_")) == r["cycles"]
    assert sum(v for k, v in r.items() if k.startswith("e_")) == pytest.approx(r["energy_nJ"])
    red = json.loads(get("sweep-small").path.read_text())["reductions"][0]
    assert red["variant"] == "starc" and red["budget"] == 128


def test_quality_summaries_use_registered_names():
    from starc.model.quality import summarize_nll, summarize_scores
    acc = [{"task": "passkey", "context": 512, "policy": p, "budget": 64, "index": i,
            "score": float((i + j) % 2)}
           for i in range(6) for j, p in enumerate(("dense", "starc"))]
    ppl = [{"context": 512, "policy": p, "budget": 64, "start": s, "nll": [1.0, 2.0 + j],
            "agree": 1, "agree_n": 2} for s in (0, 100) for j, p in enumerate(("dense", "sparq"))]
    assert _unregistered(summarize_scores(acc) + summarize_nll(ppl)) == []


def test_baseline_ratios_are_the_ratios_of_the_rows(eval_rows):
    by = {(r["policy"], r["budget"]): r for r in eval_rows}
    dense = by[("dense", 128)]
    for r in eval_rows:
        assert r["cycles_x_dense"] == pytest.approx(r["cycles"] / dense["cycles"])
        assert r["energy_x_dense"] == pytest.approx(r["energy_nJ"] / dense["energy_nJ"])
        if r["budget"] == 128:
            sp = by[("sparq", 128)]
            assert r["cycles_x_tokenwise"] == pytest.approx(r["cycles"] / sp["cycles"])
        else:   # a mass budget: SparQ has no such mode, so there is no token-wise baseline
            assert r["cycles_x_tokenwise"] is None
            assert "no sparq row at budget p0.9" in r["cycles_x_tokenwise_undefined"]
    assert by[("dense", 128)]["cycles_x_dense"] == 1.0


def test_missing_baseline_is_said():
    rows = [{"policy": "starc", "budget": 64, "cycles": 10.0, "energy_nJ": 2.0}]
    add_baseline_ratios(rows)
    assert rows[0]["cycles_x_dense"] is None and rows[0]["energy_x_tokenwise"] is None
    notes = " ".join(baseline_notes(rows))
    assert "dense is not among the policies" in notes and "sparq is not among" in notes


def test_headers_keep_the_name():
    for name in (*COLUMNS, "attention_latency_vs_tokenwise", "command_counts.MACAB"):
        for w in (0, 6, 9, 14):
            h = glossary.header(name, w)
            assert h.replace("\n", "") == name
            assert all(len(x) <= max(w, max(len(p) + 1 for p in name.replace(".", "_")
                                              .split("_"))) or w == 0 for x in h.split("\n"))


def test_printed_table_has_the_glossary_line_and_notes(tmp_path, capsys):
    assert cli.main(["eval", "--synthetic", "--layers", "3", "--prefill", "300",
                     "--decode-steps", "1", "--budgets", "128", "--policies", "quest", "starc",
                     "--cost-programs", "2", "-o", str(tmp_path / "e")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Columns (↓ lower is better, ↑ higher):" in out
    for name in COLUMNS:
        if name != "policy":
            assert f"{name} (" in out or f"{name}:" in out, name
    assert "dense is not among the policies" in out and "docs/metrics.md" in out

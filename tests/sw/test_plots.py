"""The plot house style, read back through matplotlib's objects: titles name the setting, one
facet per point, fixed policy colours from the registry, the Pareto front, no zero components,
vector files beside PNG with the same bytes every time."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from matplotlib.colors import to_hex
from starc import plots
from starc.planner.registry import POLICIES, REGISTRY


def _rows(contexts=(1024, 4096), budgets=(256, 1024), policies=("dense", "sparq", "starc")):
    rows = []
    for c, b, (i, p) in itertools.product(contexts, budgets, enumerate(policies)):
        cyc = 1000.0 + 100 * i + c / 10 + (0 if p == "dense" else b / 4)
        rows.append({"preset": "attacc-hbm3-5.2", "model": "m", "context": c, "policy": p,
                     "budget": b, "cycles": cyc, "cycles_ci95": 5.0, "energy_nJ": cyc / 2,
                     "mass_recall": 1.0 if p == "dense" else 0.5 + b / 4096 + i / 10,
                     "t_mac_issue": cyc - 100, "t_selection": 0.0 if p == "dense" else 100.0,
                     "t_refresh": 0.0, "e_activation": cyc / 4, "e_mac": cyc / 4,
                     "e_softmax": 0.0})
    return rows


def _series(ax):
    """label -> (x data, y data, colour) of every errorbar / line series of ``ax``."""
    out = {}
    for c in ax.containers:
        line = getattr(c, "lines", [None])[0]
        if line is not None and hasattr(line, "get_xdata"):
            out[c.get_label()] = (list(line.get_xdata()), list(line.get_ydata()),
                                  to_hex(line.get_color()))
    return out


def test_titles_name_preset_contexts_budget_and_planner():
    fig = plots.pareto(_rows(), planner="planner: X", sampling="all 8 plans per cell timed")
    title = fig.get_suptitle()
    for part in ("attacc-hbm3-5.2", "B = 256, 1024", "planner: X", "all 8 plans"):
        assert part in title, (part, title)
    facets = [ax.get_title() for ax in fig.axes]
    assert facets == ["m, L = 1024"] * 2 + ["m, L = 4096"] * 2       # one row per context
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["cycles (tCK)", "energy_nJ"]
    assert all(ax.get_ylabel() == "mass_recall (fraction)" for ax in fig.axes)
    b = plots.breakdown(_rows(), budget=1024, planner="planner: X")
    assert "B = 1024" in b.get_suptitle() and "planner: X" in b.get_suptitle()


def test_every_context_is_a_facet_with_its_own_data():
    rows = _rows()
    fig = plots.cost_vs_budget(rows)
    lat = [ax for ax in fig.axes if ax.get_ylabel() == "cycles (tCK)"]
    assert [ax.get_title() for ax in lat] == ["m, L = 1024", "m, L = 4096"]
    for ax, c in zip(lat, (1024, 4096), strict=True):
        s = _series(ax)
        want = [r["cycles"] for r in rows if r["context"] == c and r["policy"] == "starc"]
        assert s["starc"][1] == pytest.approx(sorted(want))
        assert s["starc"][0] == [256, 1024]


def test_policy_colours_come_from_the_registry_and_do_not_depend_on_the_run():
    a = _series(plots.pareto(_rows(policies=("dense", "sparq", "starc"))).axes[0])
    b = _series(plots.pareto(_rows(policies=("starc", "quest"))).axes[0])
    assert a["starc"][2] == b["starc"][2] == REGISTRY["starc"].colour.lower()
    assert a["sparq"][2] == REGISTRY["sparq"].colour.lower()
    colours = [REGISTRY[p].colour.lower() for p in POLICIES]
    markers = [REGISTRY[p].marker for p in POLICIES]
    assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)


def test_pareto_front_against_brute_force():
    rng = random.Random(11)
    for _ in range(200):
        n = rng.randint(1, 12)
        xs = [float(rng.randint(0, 9)) for _ in range(n)]
        ys = [float(rng.randint(0, 9)) for _ in range(n)]
        front = plots.pareto_front(xs, ys)
        # independent definition: i is on the front iff no j is at least as good in both
        # coordinates and strictly better in one (ties: the first of equal points)
        want = set()
        seen = set()
        for i in sorted(range(n), key=lambda i: (xs[i], -ys[i], i)):
            dominated = any((xs[j] <= xs[i] and ys[j] >= ys[i]) and
                            (xs[j] < xs[i] or ys[j] > ys[i]) for j in range(n))
            if not dominated and (xs[i], ys[i]) not in seen:
                want.add((xs[i], ys[i]))
            seen.add((xs[i], ys[i]))
        assert {(xs[i], ys[i]) for i in front} == want, (xs, ys)
        assert [xs[i] for i in front] == sorted(xs[i] for i in front)


def test_zero_components_are_not_drawn():
    fig = plots.breakdown(_rows(), budget=256)
    cyc = [c.get_label() for c in fig.axes[0].containers]
    en = [c.get_label() for c in fig.axes[len(fig.axes) // 2].containers]
    assert "refresh" not in cyc and "softmax" not in en      # zero everywhere
    assert "selection" in cyc and "mac_issue" in cyc and "mac" in en
    assert "95 % interval" in cyc


def test_save_writes_vectors_beside_png_with_stable_bytes(tmp_path, monkeypatch):
    monkeypatch.delenv(plots.FORMATS_ENV, raising=False)   # every format (the default)
    (tmp_path / "a").mkdir()
    paths = plots.save(plots.pareto(_rows()), tmp_path / "a" / "p")
    assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
    (tmp_path / "b").mkdir()
    again = plots.save(plots.pareto(_rows()), tmp_path / "b" / "p")
    for x, y in zip(paths, again, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.name
    assert b"<svg" in paths[1].read_bytes()[:400] and paths[2].read_bytes()[:5] == b"%PDF-"


def test_quality_figures_go_through_the_house_style():
    from starc.sweep.quality import plot_quality
    acc = [{"task": t, "context": c, "policy": p, "budget": b, "accuracy": 0.5, "ci_low": 0.3,
            "ci_high": 0.7} for t in ("niah_single", "vt") for c in (1024, 2048)
           for p in ("dense", "starc") for b in (128, 256)]
    ppl = [{"context": 1024, "policy": p, "budget": b, "ppl": 20.0, "ppl_ci_low": 19.0,
            "ppl_ci_high": 21.0, **({} if p == "dense" else {
                "ppl_change": 0.05, "ppl_change_ci_low": 0.0, "ppl_change_ci_high": 0.1})}
           for p in ("dense", "sparq") for b in (128, 256)]
    pooled = [{"task": "niah_single+vt", "context": "1024+2048", "policy": p, "budget": b,
               "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6}
              for p in ("dense", "starc") for b in (128, 256)]
    figs = plot_quality({"accuracy": acc, "pooled": pooled, "perplexity": ppl},
                        preset="attacc-hbm3-5.2", samples_note="5 samples", text="frankenstein")
    assert set(figs) == {"accuracy_B256", "accuracy_vs_budget", "accuracy_pooled",
                         "perplexity_change"}
    assert [ax.get_title() for ax in figs["accuracy_pooled"].axes] == [
        "2 tasks pooled, L = 1024+2048"]
    t = figs["accuracy_B256"]
    assert "attacc-hbm3-5.2" in t.get_suptitle() and "B = 256" in t.get_suptitle()
    assert [ax.get_title() for ax in t.axes] == ["L = 1024", "L = 2048"]
    bars = {c.get_label(): c for c in t.axes[0].containers if c.get_label() in ("dense", "starc")}
    assert to_hex(bars["starc"].patches[0].get_facecolor()) == REGISTRY["starc"].colour.lower()
    assert "frankenstein" in figs["perplexity_change"].get_suptitle()


def test_plot_formats_env(tmp_path, monkeypatch):
    """``STARC_PLOT_FORMATS`` narrows the formats (in FORMATS' order, case and spaces ignored);
    anything else is a one-line error naming the variable, before the command does any work."""
    import subprocess
    import sys

    monkeypatch.setenv(plots.FORMATS_ENV, " PDF, png ")
    assert plots.plot_formats() == ("png", "pdf")
    paths = plots.save(plots.pareto(_rows()), tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pdf", "p.png"] == sorted(
        p.name for p in paths)
    for bad in ("jpeg", "png,gif", ","):
        monkeypatch.setenv(plots.FORMATS_ENV, bad)
        with pytest.raises(ValueError, match="STARC_PLOT_FORMATS"):
            plots.plot_formats()
    monkeypatch.setenv(plots.FORMATS_ENV, "jpeg")
    run = subprocess.run([sys.executable, "-m", "starc.cli", "config", "list"],
                         capture_output=True, text=True, env=os.environ.copy())
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "STARC_PLOT_FORMATS='jpeg'" in run.stderr

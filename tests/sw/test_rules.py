"""The rules table: the generated golden schedule against the independent brute-force checker,
every row binding in a directed program, the breakdown, the rendered documentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _rule_programs import rule_programs
from starc import config, rules
from starc.golden import check, programs, schedgen, timing
from starc.isa import Op, Scope, make_program
from starc_sim.programs import SHORT_REFRESH, SMALL, TINY, load_config, random_program

DOCS = Path(__file__).resolve().parents[2] / "docs" / "commands.md"
CHECKER_NAME = {"buffer_busy": "busy", "rdsb_transfer": "xfer", "completion": "done"}


def exact(prog: np.ndarray, cfg: config.Config, refresh: bool = True) -> timing.Schedule:
    """Schedule ``prog`` and require, from the independent checker: no violation; every command
    at max(previous + 1, the earliest cycle the constraints allow); its binding rule one of the
    constraints that reach that cycle (or in-order when none does)."""
    s = timing.schedule(prog, cfg, refresh=refresh)
    assert check.violations(s.program, s.issue, cfg) == []
    bound, reach = check.bounds(s.program, s.issue, cfg)
    t = s.issue
    prev = np.concatenate([[-1], t[:-1]])
    bad = np.flatnonzero(np.maximum(prev + 1, bound) != t)
    assert len(bad) == 0, f"commands {bad[:5].tolist()} not at their earliest cycle"
    assert s.rule is not None and len(s.rule) == len(t)
    for i, rid in enumerate(s.rule.tolist()):
        if rid == rules.IN_ORDER:
            assert bound[i] < t[i], (i, reach[i])
        else:
            r = rules.RULES[rid - 1]
            assert bound[i] == t[i], (i, rules.rule_name(rid))
            assert CHECKER_NAME.get(r.distance, r.distance) in {d for _, d in reach[i]}, \
                (i, rules.rule_name(rid), reach[i])
    return s


@pytest.mark.parametrize("preset", config.list_presets())
def test_dense_programs_are_exact_on_every_preset(preset):
    cfg = config.load(preset)
    d = 128 if cfg.org.banks_per_group >= 4 else 64
    for L in (256, 1000, 3000):
        exact(programs.dense_program(cfg, L, d), cfg)


@pytest.mark.parametrize("org", ["tiny", "small", "default"])
@pytest.mark.parametrize("seed", range(6))
def test_random_programs_are_exact(org, seed):
    over = {"tiny": TINY, "small": SMALL, "default": {}}[org]
    cfg = load_config(None, {**over, **SHORT_REFRESH})
    prog = random_program(cfg, 300, seed, explicit_ref=seed % 2 == 0)
    try:
        exact(prog, cfg, refresh=seed % 3 != 2)
    except AssertionError as e:
        raise AssertionError(f"org {org}, seed {seed}: {e}") from None


@pytest.mark.parametrize("rid", range(len(rules.RULES) + 1))
def test_every_row_binds(rid):
    overrides, cmds = rule_programs()[rid]
    cfg = config.load(overrides=overrides)
    s = exact(make_program(cmds), cfg)
    assert s.rule[-1] == rid, f"want {rules.rule_name(rid)}, got {s.rule_names()[-1]}"


def test_refresh_wait_is_booked_as_refresh():
    """The activation behind an inserted REF waits tRFC; that wait is refresh, not a row switch
    (the hand-written model booked it as row_switch)."""
    cfg = config.load()
    s = timing.schedule(programs.stream_program(cfg, 60), cfg)
    assert s.refreshes >= 2
    after = np.flatnonzero(s.inserted) + 1
    waits = (s.issue[after] - s.issue[after - 1]).sum()
    assert waits >= s.refreshes * cfg.timing.tRFC
    assert s.breakdown["refresh"] >= waits
    assert sum(s.breakdown.values()) == s.total_cycles
    no_ref = timing.schedule(programs.stream_program(cfg, 60), cfg, refresh=False)
    assert no_ref.breakdown["refresh"] == 0
    # the row switches are what they are without refresh, up to the rows the REFs displaced
    assert s.breakdown["row_switch"] <= no_ref.breakdown["row_switch"]


@pytest.mark.parametrize("preset", config.list_presets())
def test_refresh_share_is_the_analytic_count(preset):
    """Streaming whole rows, each inserted REF waits tRP after the PREA and the next ACT tRFC
    after the REF, both booked as refresh: the share is refreshes x (tRP + tRFC), the total grows
    by refreshes x tRFC and the row switches shrink by the refreshes x tRP the REFs took over.
    The count follows from the refresh-free schedule: a REF goes in before the first activation
    at or past the next due time (k tREFI for the k-th), each REF pushing later ones tRFC back."""
    cfg = config.load(preset)
    t = cfg.timing
    prog = programs.stream_program(cfg, 200)
    s = timing.schedule(prog, cfg)
    free = timing.schedule(prog, cfg, refresh=False)
    n = 0
    for act in free.issue[prog["op"] == int(Op.ACTAB)].tolist():
        while act + n * t.tRFC >= (n + 1) * t.tREFI:
            n += 1
    assert s.refreshes == n >= 5
    assert s.breakdown["refresh"] == n * (t.tRP + t.tRFC) and free.breakdown["refresh"] == 0
    assert s.total_cycles == free.total_cycles + n * t.tRFC
    assert s.breakdown["row_switch"] == free.breakdown["row_switch"] - n * t.tRP
    assert {k: v for k, v in s.breakdown.items() if k not in ("refresh", "row_switch")} == \
        {k: v for k, v in free.breakdown.items() if k not in ("refresh", "row_switch")}


def test_dense_refresh_share_is_the_refs_and_the_activations_behind_them():
    """`starc timing dense` at 32K tokens: t_refresh is every inserted REF's wait plus tRFC per
    REF (the activation behind it), each REF waiting at most tRP after its predecessor."""
    from starc.golden.cli import dense_cost_rows
    cfg = config.load()
    prog = programs.dense_program(cfg, 32768, 128)
    s = timing.schedule(prog, cfg)
    ref = np.flatnonzero(s.inserted)
    assert len(ref) == s.refreshes >= 10
    ref_waits = s.issue[ref] - s.issue[ref - 1]
    assert (s.issue[ref + 1] - s.issue[ref] == cfg.timing.tRFC).all()
    assert (ref_waits >= 1).all() and (ref_waits <= cfg.timing.tRP).all()
    row = dense_cost_rows(cfg, [32768], 128)[0]
    assert row["refreshes"] == s.refreshes
    assert row["t_refresh"] == int(ref_waits.sum()) + s.refreshes * cfg.timing.tRFC


def test_first_command_is_in_order_and_bar_of_nothing():
    s = timing.schedule(make_program([(Op.BAR,), (Op.BAR,)]), config.load())
    bar = next(k for k, r in enumerate(rules.RULES, start=1) if Op.BAR in r.later.ops)
    assert s.issue.tolist() == [0, 1] and s.rule.tolist() == [rules.IN_ORDER, bar]
    assert s.total_cycles == 2


def test_generated_source_compiles_for_every_preset():
    for name in config.list_presets():
        cfg = config.load(name)
        for refresh in (True, False):
            src = schedgen.source(cfg, refresh=refresh)
            compile(src, name, "exec")
            # refresh insertion is generated only when asked for
            assert ("ref_at.append(i)" in src) == refresh


def test_the_documented_tables_are_current():
    assert rules.main([str(DOCS), "--check"]) == 0, (
        "docs/commands.md is stale: run python -m starc.rules docs/commands.md")


def test_render_and_check_report_problems(tmp_path, capsys):
    page = tmp_path / "p.md"
    page.write_text(f"intro\n{rules.BEGIN}\nold\n{rules.END}\ntail\n")
    assert rules.main([str(page), "--check"]) == 1
    assert "not current" in capsys.readouterr().err
    assert rules.main([str(page)]) == 0
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("\ntail\n") and "| 36 |" in text
    assert rules.main([str(page), "--check"]) == 0
    page.write_text("no markers\n")
    assert rules.main([str(page)]) == 2
    assert "no <!-- rules-table:begin -->" in capsys.readouterr().err
    assert rules.main([str(tmp_path / "missing.md")]) == 2


def test_table_validation_names_the_row():
    bad = (rules.Rule(rules.MVGB, rules.SFM, rules.Relation(Scope.GROUP), "buffer_busy", "x"),)
    with pytest.raises(ValueError, match=r"MVGB <- SFM, same group: buffer_busy: a dynamic "):
        rules._plan(bad)
    bad = (rules.Rule(rules.MVGB, rules.SFM, rules.Relation(Scope.UNIT), "tBL", "x"),)
    with pytest.raises(ValueError, match="relation level UNIT is not one of the nested"):
        rules._plan(bad)
    bad = (rules.Rule(rules.WRGB, rules.SFM, rules.Relation(Scope.CHANNEL, (rules.SET,)),
                      "tBL", "x"),)
    with pytest.raises(KeyError, match="key 'set' has no value for WRGB"):
        rules._plan(bad)


def test_rule_names_and_ids():
    assert rules.rule_name(rules.IN_ORDER) == "in order"
    assert rules.rule_name(14) == "#14 ACT <- ACT (4th latest), same rank: tFAW"
    # every row's distance is a named distance of every preset, or a dynamic one
    for name in config.list_presets():
        d = config.load(name).distances()
        assert all(r.distance in d or r.distance in rules.DYNAMIC_DISTANCES
                   for r in rules.RULES)

"""Timing of several heads per channel (docs/multihead.md): the head keys of the rules table
(``head`` on the query and softmax dependencies, register set ``2 + h`` for head h's value
accumulators), the schedule exact against the independent checker, and the overlapped dense
schedule against the MAC-stream bound."""

from __future__ import annotations

import numpy as np
import pytest
from starc import config
from starc.golden import programs, timing
from starc.isa import MAX_HEADS, MacArg, MoveFlag, Op, make_program
from test_rules import exact

CFG = config.load()


@pytest.mark.parametrize(("preset", "H", "L"), [("attacc-hbm3-5.2", 2, 1000),
                                                ("attacc-hbm3-5.2", 3, 700),
                                                ("attacc-hbm3-5.2-npc", 2, 3000),
                                                ("samsung-hbm2-pim", 2, 600)])
def test_overlapped_dense_programs_are_exact(preset: str, H: int, L: int) -> None:
    cfg = config.load(preset)
    d = 128 if cfg.org.banks_per_group >= 4 else 64
    exact(programs.dense_program(cfg, L, d, heads=H), cfg)


def _issue(cmds: list[tuple], cfg: config.Config = CFG) -> list[int]:
    return timing.schedule(make_program(cmds), cfg, refresh=False).issue.tolist()


def test_a_score_mac_waits_for_its_own_heads_query_only() -> None:
    tm, mv = CFG.timing, CFG.pu.mv_cycles
    base = [(Op.WRGB, 0, 0, 0, 0, 0), (Op.ACTAB,), (Op.MACAB, 0, 0, 0, 0, 0)]
    t = _issue(base + [(Op.WRGB, 0, 0, 0, 1, 1), (Op.MACAB, 0, 0, 1, 0, 0),
                       (Op.MACAB, 0, 0, 2, 1, 0)])
    assert t[4] == t[2] + tm.tCCD_AB              # head 0's MAC: not behind head 1's query
    assert t[5] == max(t[4] + tm.tCCD_AB, t[3] + mv)   # head 1's MAC: behind its own
    slow = config.load(overrides={"pu.mv_cycles": 3 * tm.tCCD_AB})
    t = _issue(base + [(Op.WRGB, 0, 0, 0, 1, 1), (Op.MACAB, 0, 0, 1, 1, 0)], slow)
    assert t[4] == t[3] + slow.pu.mv_cycles > t[2] + tm.tCCD_AB


def test_an_mvgb_waits_for_its_own_heads_softmax_only() -> None:
    sfm = CFG.pu.sfm_latency + CFG.pu.sfm_passes * -(-32 // CFG.pu.sfm_lanes)
    mask = (1 << 32) - 1
    cmds = [(Op.ACTAB,), (Op.MACAB, 0, 0, 0, 0, 0), (Op.MACAB, 0, 0, 0, 1, int(MacArg.BUF)),
            (Op.PREA,), (Op.MVSB, 0, 0, 0, 0, mask), (Op.MVSB, 0, 0, int(MoveFlag.BUF), 1, mask),
            (Op.SFM, 0, 0, 0, 0, 32), (Op.SFM, 0, 0, 0, 1, 32), (Op.MVGB, 0, 0, 0, 0, 0),
            (Op.MVGB, 1, 0, 0, 1, 0)]
    t = _issue(cmds)
    assert t[7] == t[6] + sfm                  # one softmax unit
    # head 0's MVGB: after its softmax, not under head 1's (only the data path spacing)
    assert t[8] == t[7] + CFG.timing.tCCD_L < t[7] + sfm
    assert t[9] == t[7] + sfm                  # head 1's after its own


def test_value_moves_wait_for_their_own_heads_macs_only() -> None:
    tm = CFG.timing
    lat = CFG.distances()["mac_latency"]
    V, B = int(MacArg.VALUE), int(MacArg.BUF)
    cmds = [(Op.ACTAB,), (Op.MACAB, 0, 0, 0, 0, V), (Op.MACAB, 0, 0, 1, 1, V | B),
            (Op.MVSB, 0, 0, int(MoveFlag.VALUE), 0, 0), (Op.MACAB, 0, 0, 2, 1, V | B),
            (Op.MVSB, 1, 0, int(MoveFlag.VALUE), 1, 0)]
    t = _issue(cmds)
    assert t[3] == t[1] + lat                  # head 0's accumulators: its MAC only
    assert t[4] == max(t[2] + tm.tCCD_AB, t[3] + 1)
    assert t[5] == t[4] + lat


def test_a_head_beyond_the_range_is_refused() -> None:
    with pytest.raises(timing.ProgramError, match=f"head {MAX_HEADS} out of range"):
        timing.schedule(make_program([(Op.SFM, 0, 0, 0, MAX_HEADS, 1)]), CFG)


@pytest.mark.parametrize("L", [4096, 8192])
def test_two_heads_reach_the_mac_stream_bound(L: int) -> None:
    """Dense, 2 heads per channel, power-limited preset, L >= 4K: within 3 % of the opened rows
    x the all-bank row period plus refresh (the bound computed here from the timing
    parameters, not from the model)."""
    cfg = config.load("attacc-hbm3-5.2")
    tm, C = cfg.timing, cfg.org.columns_per_row
    prog = programs.dense_program(cfg, L, 128, heads=2)
    rows = int((prog["op"] == int(Op.ACTAB)).sum())
    assert rows == 2 * 2 * -(-L // (cfg.org.groups_per_channel * cfg.tokens_per_group_row(128)))
    stream = rows * max(tm.tRC, tm.tRCD + (C - 1) * tm.tCCD_AB + tm.tRTP_L + tm.tRP)
    bound = stream + stream // (tm.tREFI - tm.tRFC) * tm.tRFC
    s = timing.schedule(prog, cfg)
    assert bound <= s.total_cycles <= 1.03 * bound, s.total_cycles / bound
    one = timing.schedule(programs.dense_program(cfg, L, 128), cfg).total_cycles
    assert s.total_cycles < 2 * one


def test_planner_group_step_overlaps() -> None:
    """A GQA group's query heads in one overlapped program take fewer cycles than their
    one-head programs one after the other; the program is exact per the checker."""
    from starc.compiler import CompileOptions, compile_kv
    from starc.kv import synthetic_kv
    from starc.planner import Planner
    from starc.planner.multihead import step_program

    cache = synthetic_kv(n_layers=3, prefill_len=1500, decode_steps=70, seed=11)
    pl = Planner(compile_kv(cache, CFG, CompileOptions(mode="row-aligned")), "starc-row", 512)
    plans = pl.plan(69, 2, 1)
    prog, _ = step_program(pl, plans)
    s = exact(prog, CFG)
    alone = [timing.schedule(pl.program(sp)[0], CFG).total_cycles for sp in plans]
    assert s.total_cycles < sum(alone)
    assert np.unique(prog["row"][prog["op"] == int(Op.SFM)]).tolist() == [0, 1, 2]


def test_the_documented_figures_are_current() -> None:
    """docs/multihead.md's figures table: our columns from the golden model and the bound, the
    AttAcc columns from the simulator's figures (tests/data/attacc), the compatibility model's
    equal to them (tests/sw/test_attacc.py checks it count for count)."""
    import json
    from pathlib import Path

    from starc.golden.attacc import mac_stream_bound
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "multihead.md").read_text()
    a = text.index("<!-- multihead-figures:begin -->")
    b = text.index("<!-- multihead-figures:end -->")
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in text[a:b].splitlines()[3:] if line.startswith("| ")]
    runs = json.loads((root / "tests" / "data" / "attacc" / "figures.json").read_text())["runs"]
    assert len(rows) == 8
    for preset, L, c1, r1, c2, r2, s1, s2, compat, bound in rows:
        cfg = config.load(preset)
        got = {}
        for H in (1, 2):
            prog = programs.dense_program(cfg, int(L), 128, heads=H)
            got[H] = (timing.schedule(prog, cfg).total_cycles,
                      mac_stream_bound(cfg, int((prog["op"] == int(Op.ACTAB)).sum())))
        assert (int(c1), int(c2), int(bound)) == (got[1][0], got[2][0], got[2][1]), (preset, L)
        assert (r1, r2) == (f"{got[1][0] / got[1][1]:.3f}", f"{got[2][0] / got[2][1]:.3f}")
        sim = {r["heads_per_channel"]: r["memory_system_cycles"] for r in runs
               if r["preset"] == preset and r["L"] == int(L) and r["head_dim"] == 128}
        assert (int(s1), int(s2)) == (sim[1], sim[2]) and compat == f"{s1} / {s2}"

"""Activation rounds and the per-round MAC choice, against the golden model: a selection never
costs more cycles than attending everything on the same layout (hypothesis over caches, policies
and budgets), the cost estimate tracks the golden model, and every way of executing a round
computes the same attention."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import config
from starc.address import Geometry
from starc.compiler import compile_kv
from starc.golden import check, energy, functional, timing
from starc.kv import synthetic_kv
from starc.planner import Planner, registry
from starc.planner import rounds as R
from starc.planner.program import emit_program, query_words

CFG = config.load()
SPARSE = [p for p in registry.POLICIES if p != "dense"]


def _cycles(rp, geo):
    return timing.schedule(emit_program(rp, geo, krow_base=0, vrow_base=0), CFG).total_cycles


def _everything(ck, layer, kvh, n):
    """Rounds that attend every token of the head at context n (masked dense attention)."""
    loc = ck.head(layer, kvh).locate(np.arange(n), n)
    it = R._items(loc.group, loc.row, loc.lane_bit, loc.set)
    return R.RowPlan(R.row_index_rounds(it, ck.geometry.G), it.n_valid, 0, 0)


@st.composite
def scenario(draw):
    d = draw(st.sampled_from([64, 128]))
    prefill = draw(st.integers(100, 1400))
    policy = draw(st.sampled_from(SPARSE))
    budget = draw(st.integers(8, 1600))
    return dict(d=d, prefill=prefill, steps=draw(st.integers(1, 70)),
                seed=draw(st.integers(0, 10_000)), policy=policy, budget=budget,
                q=draw(st.integers(0, 3)))


@given(sc=scenario())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_selection_costs_more_cycles_than_attending_everything(sc):
    c = synthetic_kv(n_layers=3, n_q_heads=4, n_kv_heads=2, head_dim=sc["d"],
                     prefill_len=sc["prefill"], decode_steps=sc["steps"], seed=sc["seed"])
    spec = registry.get(sc["policy"])
    ck = compile_kv(c, CFG, registry.compile_options(sc["policy"]))
    geo = ck.geometry
    step = sc["steps"] - 1
    pl = Planner(ck, sc["policy"], sc["budget"])
    sp = pl.plan(step, 2, 1)[sc["q"] % 2]
    got = _cycles(sp.rows, geo)
    # dense attention on the same layout: the planner's plan of every token
    ref = _cycles(pl.rows_for(ck.head(2, 1).locate(np.arange(sp.n_ctx), sp.n_ctx),
                              whole=pl.whole(2, 1, sp.n_ctx)), geo)
    assert got <= ref, (sc, got, ref)
    assert ref <= _cycles(_everything(ck, 2, 1, sp.n_ctx), geo)
    if not spec.clustered:  # on the positional layout that is the dense policy's own program
        dense = Planner(ck, "dense", sc["budget"]).plan(step, 2, 1)[0]
        assert _cycles(dense.rows, geo) == ref
    # the energy objective never fills and costs no more energy
    spe = Planner(ck, sc["policy"], sc["budget"], objective="energy").plan(step, 2, 1)[sc["q"] % 2]
    assert spe.rows.n_dummy == 0 and spe.rows.formation == "rounds"
    e_cyc = energy.account(emit_program(sp.rows, geo, krow_base=0, vrow_base=0), CFG, sc["d"])
    e_en = energy.account(emit_program(spe.rows, geo, krow_base=0, vrow_base=0), CFG, sc["d"])
    assert e_en.total_pj <= e_cyc.total_pj * (1 + 1e-12)


@pytest.fixture(scope="module")
def smol():
    c = synthetic_kv(n_layers=3, n_q_heads=6, n_kv_heads=2, prefill_len=3000, decode_steps=2,
                     seed=4)
    return c, {p: compile_kv(c, CFG, registry.compile_options(p))
               for p in ("oracle", "starc", "starc-row")}


def test_estimate_tracks_the_golden_model(smol):
    """Whole-plan estimate within [0.85, 1.25] of the golden cycles in every formation, and the
    per-round choice within 5 % of the best of the three formations (measured: 0.93-1.16 and
    3 % on 1260 plans, scripts in the commit message of the estimator)."""
    c, cks = smol
    ratios, regret = [], []
    for pol, ck in cks.items():
        geo = ck.geometry
        cost = R.RoundCost(CFG, geo)
        for B in (64, 512, 2048):
            for sp in Planner(ck, pol, B, objective="energy").plan(1, 2, 0):
                it = R._items(sp.located.group, sp.located.row, sp.located.lane_bit,
                              sp.located.set)
                base = R.form_rounds(it, geo.G)
                forms = {"group": base,
                         "fill": [r if r.actab or len(r.groups) == geo.G else
                                  R.fill_round(r, geo.G) for r in base],
                         "row-index": R.row_index_rounds(it, geo.G)}
                act = {k: _cycles(R.RowPlan(v, it.n_valid, 0, 0), geo) for k, v in forms.items()}
                for k, v in forms.items():
                    ratios.append(cost.plan_cycles(v, it.n_valid) / act[k])
                chosen = Planner(ck, pol, B).rows_for(sp.located)
                regret.append(_cycles(chosen, geo) / min(act.values()))
    assert min(ratios) >= 0.85 and max(ratios) <= 1.25, (min(ratios), max(ratios))
    assert max(regret) <= 1.05, max(regret)


@pytest.mark.parametrize("form", ["group", "fill", "row-index"])
def test_every_formation_computes_the_same_attention(smol, form):
    """Few-column rounds leave score moves pending past a round; they must still read their own
    scores (a move of round i - 2 goes before round i's MACs into the same register set)."""
    c, cks = smol
    ck = cks["oracle"]
    geo = ck.geometry
    layer, kvh, step = 2, 1, 1
    hm = ck.head(layer, kvh)
    outs = []
    for sp in Planner(ck, "oracle", 48, objective="energy").plan(step, layer, kvh)[:2]:
        loc = sp.located
        it = R._items(loc.group, loc.row, loc.lane_bit, loc.set)
        base = R.form_rounds(it, geo.G)
        rounds = {"group": base, "fill": [r if r.actab or len(r.groups) == geo.G else
                                          R.fill_round(r, geo.G) for r in base],
                  "row-index": R.row_index_rounds(it, geo.G)}[form]
        assert len(rounds) >= (3 if form == "row-index" else 1)
        prog = emit_program(R.RowPlan(rounds, it.n_valid, 0, 0), geo, krow_base=hm.row_base,
                            vrow_base=hm.row_base + hm.n_krows)
        s = timing.schedule(prog, CFG)
        check.check(s.program, s.issue, CFG)
        wd = query_words(ck.cache.q[layer][step, sp.q_head], 64, 16)
        res = functional.execute(prog, wd, ck.channel_image(hm.channel, sp.n_ctx, [layer]), CFG,
                                 64)
        q = c.q[layer][step, sp.q_head].astype(np.float16).astype(np.float64)
        K = c.k[layer][:sp.n_ctx, kvh].astype(np.float16).astype(np.float64)[sp.selected]
        V = c.v[layer][:sp.n_ctx, kvh].astype(np.float16).astype(np.float64)[sp.selected]
        lg = K @ q / 8
        p = np.exp(lg - lg.max())
        o = (p / p.sum()) @ V
        err = np.linalg.norm(res.output - o) / np.linalg.norm(o)
        assert err < 2e-3, (form, err)
        outs.append(res.output_bits)
    assert len(outs) == 2


def test_objective_is_named_and_checked():
    assert R.setting("cycles").startswith("planner: per-round MACs by fewest cycles")
    with pytest.raises(ValueError, match="objective must be one of cycles, energy"):
        R.setting("fill")
    z = np.zeros(0, np.int64)
    with pytest.raises(ValueError, match="objective must be one of cycles, energy, not 'x'"):
        R.plan_rows(z + 1, z + 1, z + 1, z + 1, Geometry(CFG, 64), objective="x", cfg=CFG)

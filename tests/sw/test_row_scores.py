"""Row scores of row-aligned STARC (``CompileOptions(row_scores=...)``, docs/compiler.md "Row
scores"): the extra metadata vectors against a float64 reference, the selection pass's read-back
scores combined on the host against float64 scores of the same FP16 vectors, the metadata rows
round-tripping through the image and the artifact, and (hypothesis) the budget and slot bounds
of every selection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import config
from starc.compiler import CompileError, CompileOptions, compile_kv
from starc.compiler.artifact import load_artifact, save_artifact
from starc.compiler.compiled import ROW_SCORES, row_score_vectors
from starc.golden import check, functional, timing
from starc.kv import synthetic_kv
from starc.planner import Planner
from starc.planner.gqa import select_starc_shared
from starc.planner.policies import always_attended, row_scores, select_starc
from starc.planner.selection import host_scores

CFG = config.load()
RULES = [r for r in ROW_SCORES if r != "centroid"]


@pytest.fixture(scope="module")
def cache():
    return synthetic_kv(n_layers=3, n_q_heads=6, n_kv_heads=2, prefill_len=1700,
                        decode_steps=70, seed=9, prefill_queries=64)


@pytest.fixture(scope="module")
def compiled(cache):
    return {r: compile_kv(cache, CFG, CompileOptions(row_scores=r)) for r in ROW_SCORES}


def _members(c, hm):
    K = c.k[hm.layer][:, hm.head].astype(np.float16).astype(np.float64)
    return K[hm.slot_pos[hm.cl_start[:, None] + np.arange(hm.tpgr)[None]]]


def test_vectors_against_float64(cache, compiled):
    hm_h = compiled["halves"].head(2, 0)
    X = _members(cache, hm_h)
    t = hm_h.tpgr
    a, b = X[:, :t // 2].sum(1) / (t // 2), X[:, t // 2:].sum(1) / (t // 2)
    assert np.abs(hm_h.score_vecs[0] - a).max() < 1e-5 * (1 + np.abs(a).max())
    assert np.abs(hm_h.score_vecs[1] - b).max() < 1e-5 * (1 + np.abs(b).max())
    hm_p = compiled["pc1"].head(2, 1)
    X = _members(cache, hm_p)
    v = hm_p.score_vecs[0].astype(np.float64)
    for c in range(0, hm_p.n_clusters, 7):
        Xc = X[c] - X[c].mean(0)
        # the largest singular value of the centred keys: ||v||^2 = sigma_1^2 / t, and v is its
        # right singular vector (up to sign)
        _, sig, Vt = np.linalg.svd(Xc, full_matrices=False)
        assert abs(v[c] @ v[c] - sig[0] ** 2 / t) <= 1e-4 * (1 + sig[0] ** 2 / t)
        if sig[0] > 1.01 * sig[1]:
            u = v[c] / np.linalg.norm(v[c])
            assert abs(abs(u @ Vt[0]) - 1) < 1e-4
        assert v[c][np.abs(v[c]).argmax()] >= 0          # the sign rule


def test_pc4_axes_against_float64(cache, compiled):
    """pc4's four vectors are the top four principal axes times their standard deviations (the
    first is pc1's vector), each with the sign rule; its host score is the Gaussian estimate."""
    hm4, hm1 = compiled["pc4"].head(2, 1), compiled["pc1"].head(2, 1)
    assert hm4.score_vecs.shape == (4, hm4.n_clusters, hm4.centroid.shape[1])
    np.testing.assert_allclose(hm4.score_vecs[0], hm1.score_vecs[0], rtol=0, atol=1e-5)
    X = _members(cache, hm4)
    t = hm4.tpgr
    v = hm4.score_vecs.astype(np.float64)
    for c in range(0, hm4.n_clusters, 5):
        _, sig, Vt = np.linalg.svd(X[c] - X[c].mean(0), full_matrices=False)
        for i in range(4):
            assert abs(v[i, c] @ v[i, c] - sig[i] ** 2 / t) <= 1e-4 * (1 + sig[0] ** 2 / t)
            if sig[i] > 1.01 * sig[i + 1] and (i == 0 or sig[i - 1] > 1.01 * sig[i]):
                u = v[i, c] / np.linalg.norm(v[i, c])
                assert abs(abs(u @ Vt[i]) - 1) < 1e-4
            assert v[i, c][np.abs(v[i, c]).argmax()] >= 0
    q = np.random.default_rng(3).normal(size=(3, X.shape[2])).astype(np.float32)
    avail = np.arange(hm4.n_clusters)
    qs = q.astype(np.float64) / np.sqrt(X.shape[2])
    want = qs @ hm4.centroid.T.astype(np.float64) + 0.5 * (
        np.einsum("gd,icd->gci", qs, v) ** 2).sum(2)
    np.testing.assert_allclose(row_scores(q, hm4, avail), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rule", RULES)
def test_pass_reads_back_the_rule_scores(cache, compiled, rule):
    ck = compiled[rule]
    pl = Planner(ck, "starc-row", 300)
    step, layer, kvh = 69, 2, 1
    sp = pl.plan(step, layer, kvh)[1]
    sel = pl.selection(sp)
    hm = ck.head(layer, kvh)
    avail = hm.clusters_at(sp.n_ctx)
    assert sel.row_scores == rule and sel.n_read == len(ROW_SCORES[rule][0]) * avail.size
    prog, wdata, n_sel = pl.step_program(sp)
    s = timing.schedule(prog, CFG)
    check.check(s.program, s.issue, CFG)
    res = functional.execute(prog, wdata, ck.channel_image(hm.channel, sp.n_ctx, [layer]),
                             CFG, 64)
    (read,) = res.host_scores
    got = host_scores(sel, read)
    # float64 reference from the same FP16 query and FP16 metadata vectors
    q = cache.q[layer][step, sp.q_head].astype(np.float16).astype(np.float64) / 8.0
    f16 = lambda x: x.astype(np.float16).astype(np.float64)   # noqa: E731
    if rule == "halves":
        a, b = f16(hm.score_vecs[0][avail]) @ q, f16(hm.score_vecs[1][avail]) @ q
        ref = np.log((np.exp(a) + np.exp(b)) / 2)
    else:
        s0 = f16(hm.centroid[avail]) @ q            # pc1, pc4: s0 + sum_i s_i^2 / 2
        ref = s0 + 0.5 * sum((f16(v[avail]) @ q) ** 2 for v in hm.score_vecs)
    tol = 2e-5 * (1 + np.abs(ref).max())
    assert np.abs(got - ref).max() <= tol, (rule, np.abs(got - ref).max())
    # the choice survives the PIM's rounding: nothing left out scores clearly higher
    chosen = np.isin(hm.cl_start[avail], [hm.pos_slot[p] for p in sp.selected
                                          if p < hm.clustered_end(sp.n_ctx)])
    assert chosen.any() and (~chosen).any()
    assert got[~chosen].max() <= got[chosen].min() + 0.01 * (1 + np.abs(ref).max())


def test_metadata_round_trips(tmp_path, cache, compiled):
    for rule, ck in compiled.items():
        sets = ROW_SCORES[rule][1]
        for hm in ck.iter_heads():
            if hm.positional:
                continue
            mv = ck.meta_vectors(hm)
            C, stride = hm.n_clusters, hm.meta_stride
            assert mv.shape == ((1 + sets) * stride, hm.centroid.shape[1])
            assert np.array_equal(mv[:C], hm.centroid.astype(np.float16).view(np.uint16))
            for k in range(sets):
                assert np.array_equal(mv[(k + 1) * stride:(k + 1) * stride + C],
                                      hm.score_vecs[k].astype(np.float16).view(np.uint16))
            g, r = ck.centroid_blocks(hm)
            assert g.size * hm.tpgr == mv.shape[0]
            assert (r - 2 * hm.n_krows < hm.n_crows).all()     # inside the reserved rows
        save_artifact(ck, tmp_path / rule)
        back = load_artifact(tmp_path / rule, CFG)
        assert back.options.get("row_scores", "centroid") == rule
        for hm, h2 in zip(ck.iter_heads(), back.iter_heads(), strict=True):
            assert h2.row_scores == hm.row_scores
            if hm.score_vecs is not None:
                assert np.array_equal(h2.score_vecs, hm.score_vecs)


def test_bad_options_are_refused(cache):
    with pytest.raises(CompileError, match="row_scores must be one of"):
        compile_kv(cache, CFG, CompileOptions(row_scores="median"))
    with pytest.raises(CompileError, match="applies to row-aligned mode"):
        compile_kv(cache, CFG, CompileOptions(mode="artifact", row_scores="halves"))
    with pytest.raises(ValueError, match="row_scores must be one of"):
        row_score_vectors("median", np.zeros((1, 32, 64)))


@st.composite
def scenario(draw):
    return (draw(st.sampled_from(RULES)), draw(st.sampled_from([64, 128])),
            draw(st.integers(0, 2 ** 16)), draw(st.integers(200, 600)),
            draw(st.integers(1, 4)))


@given(sc=scenario(), budget=st.integers(1, 1200), step=st.integers(0, 39))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_selection_keeps_the_budget_and_the_slot_bound(sc, budget, step):
    rule, d, seed, P, g = sc
    c = synthetic_kv(n_layers=3, n_q_heads=2 * g, n_kv_heads=2, head_dim=d, prefill_len=P,
                     decode_steps=40, seed=seed)
    ck = compile_kv(c, CFG, CompileOptions(row_scores=rule))
    n = P + step + 1
    for kvh in range(2):
        hm = ck.head(2, kvh)
        q = c.q[2][step, kvh * g:(kvh + 1) * g].astype(np.float32)
        always = always_attended(hm, n, budget)
        a_loc = hm.locate(always, n)
        a_rows = len(set(zip(a_loc.group.tolist(), a_loc.row.tolist(), strict=True)))
        for sel in (select_starc(q, hm, n, budget), select_starc_shared(q, hm, n, budget)):
            for pos in sel.positions:
                assert pos.size <= min(budget, n) and np.unique(pos).size == pos.size
                if n <= budget:
                    continue
                loc = hm.locate(pos, n)
                rows = len(set(zip(loc.group.tolist(), loc.row.tolist(), strict=True)))
                # whole clusters are whole rows: at most one cut cluster beyond the budget's rows
                assert rows <= max(0, budget - always.size) // hm.tpgr + 1 + a_rows, \
                    (rule, seed, budget, step)
        # with one query head the shared rule is the per-head rule, for every row-score rule
        assert np.array_equal(select_starc_shared(q[:1], hm, n, budget).positions[0],
                              select_starc(q[:1], hm, n, budget).positions[0]), (rule, seed)

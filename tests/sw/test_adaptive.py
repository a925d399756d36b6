"""Mass-adaptive budgets (p0.95): parsing, STARC's top-p over cluster scores against a brute-force
reference, the exact (oracle) top-p, floor and cap, and the row oracle of the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starc import config
from starc.compiler import compile_kv
from starc.kv import synthetic_kv
from starc.planner import Planner, registry
from starc.planner import policies as pol
from starc.planner.budget import Budget, parse_budget
from starc.planner.evaluate import EvalOptions, _oracle_rows, evaluate

CFG = config.load()


def test_budget_parsing():
    assert parse_budget(1024) == Budget(tokens=1024) and parse_budget("1024").label == 1024
    b = parse_budget("p0.95", floor=64, cap=2048)
    assert b.adaptive and b.mass == 0.95 and (b.floor, b.cap, b.limit) == (64, 2048, 2048)
    assert b.label == "p0.95" and parse_budget("p1").label == "p1"
    assert parse_budget(7).sort_key() < parse_budget("p0.5").sort_key()
    for bad in ("p0", "p1.5", "0", "-3", "x", "p", True, 0):
        with pytest.raises(ValueError):
            parse_budget(bad)
    with pytest.raises(ValueError, match="floor"):
        Budget(mass=0.9, floor=300, cap=200)


@pytest.fixture(scope="module")
def ck():
    c = synthetic_kv(n_layers=3, n_q_heads=6, n_kv_heads=2, prefill_len=2400, decode_steps=3,
                     seed=12)
    return c, compile_kv(c, CFG, registry.compile_options("starc-row")), \
        compile_kv(c, CFG, registry.compile_options("starc"))


def _brute(hm, q, n, p, floor, cap, norms, la=None):
    """STARC top-p written out: clusters by estimated logit, whole ones until the estimated
    share of the head's mass (the always-attended tokens' exact logits ``la`` included) reaches
    p and the floor is met, the fixed rule at the cap."""
    e = hm.clustered_end(n)
    always = list(range(min(hm.sink_end, e))) + list(range(e, n))
    avail = [c for c in range(hm.n_clusters) if hm.seg_ready[hm.cl_seg[c]] <= n]
    s = {c: float(np.float32(q @ hm.centroid[c]) / np.float32(8.0)) * float(norms[c])
         for c in avail}
    order = sorted(avail, key=lambda c: (-s[c], avail.index(c)))
    la = np.zeros(0) if la is None else np.asarray(la, np.float64)
    top = max([s[order[0]], *la.tolist()])
    w = np.array([hm.cl_size[c] * np.exp(s[c] - top) for c in order])
    wa = np.exp(la - top).sum()
    share = (wa + np.cumsum(w)) / (wa + w.sum())
    out: list[int] = []
    before = wa / (wa + w.sum())                     # the share reached before cluster i
    for i, c in enumerate(order):
        if before >= p - 1e-12 and len(always) + len(out) >= floor:
            break
        toks = hm.slot_pos[hm.cl_start[c]:hm.cl_start[c] + hm.cl_size[c]].tolist()
        room = cap - len(always) - len(out)
        if room <= 0:
            break
        out += toks[:room]
        before = share[i]
    return sorted(out + always)


@given(p=st.floats(0.05, 1.0), floor=st.integers(1, 900), cap=st.integers(200, 2500),
       step=st.integers(0, 2), kvh=st.integers(0, 1), artifact=st.booleans(),
       with_always=st.booleans())
@settings(max_examples=60, deadline=None)
def test_starc_top_p_matches_the_reference(ck, p, floor, cap, step, kvh, artifact, with_always):
    c, comp, art = ck
    floor = min(floor, cap)
    hm = (art if artifact else comp).head(2, kvh)
    n = 2400 + step + 1
    q = c.q[2][step, 3 * kvh:3 * kvh + 3].astype(np.float32)
    norms = pol.cluster_norms(hm, c.k[2][:, kvh])
    la = None
    if with_always:
        a = pol.always_attended(hm, n, cap)
        la = q @ c.k[2][a, kvh].astype(np.float32).T / np.float32(8.0)
    sel = pol.select_starc(q, hm, n, cap, mass=p, floor=floor, norms=norms, always_logits=la)
    for h in range(3):
        got = sel.positions[h].tolist()
        ref = _brute(hm, q[h], n, p, floor, cap, norms, None if la is None else la[h])
        assert got == ref, (p, floor, cap, h)
        assert floor <= len(got) <= cap
    # a larger target never selects fewer tokens
    more = pol.select_starc(q, hm, n, cap, mass=min(1.0, p + 0.05), floor=floor, norms=norms,
                            always_logits=la)
    assert all(len(a) >= len(b) for a, b in zip(more.positions, sel.positions, strict=True))


def test_cluster_norms_are_the_mean_key_norms(ck):
    c, comp, _ = ck
    hm = comp.head(2, 0)
    norms = pol.cluster_norms(hm, c.k[2][:, 0])
    K = c.k[2][:, 0].astype(np.float64)
    for cl in (0, 7, hm.n_clusters - 1):
        pos = hm.slot_pos[hm.cl_start[cl]:hm.cl_start[cl] + hm.cl_size[cl]]
        assert norms[cl] == pytest.approx(np.linalg.norm(K[pos], axis=1).mean(), rel=1e-5)


@given(seed=st.integers(0, 10_000), n=st.integers(50, 600), p=st.floats(0.05, 0.999),
       floor=st.integers(1, 60))
@settings(max_examples=50, deadline=None)
def test_oracle_top_p_is_the_smallest_set_reaching_p(seed, n, p, floor):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, 16)).astype(np.float32) * 2
    K = rng.standard_normal((n, 16)).astype(np.float32)
    cap = n - 1
    sel = pol.select_oracle(q, K, cap, mass=p, floor=floor)
    for h, pos in enumerate(sel.positions):
        lg = (K @ q[h]).astype(np.float64) / 4.0
        pr = np.exp(lg - lg.max())
        pr /= pr.sum()
        assert len(pos) <= cap and len(pos) >= min(floor, cap)
        if len(pos) > floor and len(pos) < cap:
            assert pr[pos].sum() >= p - 1e-9, f"seed={seed}"
            smallest = np.sort(pr[pos])
            assert pr[pos].sum() - smallest[0] < p + 1e-9, f"seed={seed}: not minimal"
        top = np.argsort(-pr)[:len(pos)]
        assert set(top.tolist()) == set(pos.tolist()) or np.isclose(
            pr[top].sum(), pr[pos].sum()), f"seed={seed}"


def test_row_oracle_is_minimal():
    blocks = np.array([0, 0, 1, 1, 2, 3, 3, 3])
    probs = np.array([0.05, 0.05, 0.3, 0.1, 0.2, 0.1, 0.1, 0.1])
    # rows hold 0.1, 0.4, 0.2, 0.3: 0.5 needs rows 1 and 3, 0.71 needs three
    assert _oracle_rows(blocks, probs, 0.5) == 2
    assert _oracle_rows(blocks, probs, 0.71) == 3
    assert _oracle_rows(blocks, probs, 1.0) == 4


def test_evaluate_with_mass_budgets(ck):
    c, comp, _ = ck
    res = evaluate(c, CFG, EvalOptions(policies=("dense", "oracle", "starc-row"),
                                       budgets=(512, "p0.9"), cost_programs=2),
                   compiled={"row-aligned": comp})
    by = {(r["policy"], r["budget"]): r for r in res.rows}
    assert ("dense", "p0.9") not in by                      # dense does not adapt
    for key in (("oracle", "p0.9"), ("starc-row", "p0.9"), ("starc-row", 512)):
        r = by[key]
        assert r["rows"] >= r["oracle_rows"] - 1e-9         # the oracle is a lower bound
        assert r["selection_cycles"] > 0 and r["cost_n"] == 2
    assert by["oracle", "p0.9"]["mass_recall"] >= 0.9 - 1e-9
    with pytest.raises(ValueError, match="policy 'quest' has no mass-adaptive mode"):
        registry.get("quest").select(c.q[2][0, :3].astype(np.float32), n=2401, budget="p0.9",
                                     K=c.k[2][:2401, 0].astype(np.float32))
    with pytest.raises(ValueError, match="policy 'sparq' has no mass-adaptive mode"):
        Planner(comp, "starc-row", 512)  # a valid planner; the next one is not
        Planner(compile_kv(c, CFG, registry.compile_options("sparq")), "sparq", "p0.9")
    with pytest.raises(ValueError, match="mass budgets apply to oracle, starc"):
        evaluate(c, CFG, EvalOptions(policies=("dense",), budgets=("p0.9",)))


@given(t=st.floats(1e-4, 0.5), floor=st.integers(1, 600), step=st.integers(0, 2),
       kvh=st.integers(0, 1))
@settings(max_examples=40, deadline=None)
@example(t=1e-4, floor=1, step=0, kvh=1)                          # more worthy rows than the cap
def test_starc_threshold_takes_every_row_worth_its_share(ck, t, floor, step, kvh):
    c, comp, _ = ck
    hm = comp.head(2, kvh)
    n, cap = 2400 + step + 1, 2000
    q = c.q[2][step, 3 * kvh:3 * kvh + 3].astype(np.float32)
    norms = pol.cluster_norms(hm, c.k[2][:, kvh])
    a = pol.always_attended(hm, n, cap)
    la = q @ c.k[2][a, kvh].astype(np.float32).T / np.float32(8.0)
    sel = pol.select_starc(q, hm, n, cap, threshold=t, floor=floor, norms=norms,
                           always_logits=la)
    avail = hm.clusters_at(n)
    for h in range(3):
        lg = (q[h] @ hm.centroid[avail].T / np.float32(8.0)).astype(np.float64) * norms[avail]
        top = max(lg.max(), la[h].max())
        total = (hm.cl_size[avail] * np.exp(lg - top)).sum() + np.exp(la[h] - top).sum()
        worth = np.exp(lg - top) * hm.tpgr / total >= t          # rows worth their share
        order = np.argsort(-lg, kind="stable")
        k_floor = 0 if floor <= a.size else int(np.searchsorted(
            np.cumsum(hm.cl_size[avail][order]), floor - a.size)) + 1
        k = max(int(worth.sum()), k_floor)
        assert worth[order][:int(worth.sum())].all()              # the worthy rows lead
        # past the cap the fixed rule applies: the clusters that fit whole (the next one only in
        # part, so not taken whole)
        whole = int(np.searchsorted(np.cumsum(hm.cl_size[avail][order]), cap - a.size,
                                    side="right"))
        k = min(k, whole)
        want = np.zeros(avail.size, bool)
        want[order[:k]] = True
        pos = set(sel.positions[h].tolist())
        taken = np.array([set(hm.cluster_positions(np.array([cl]))[0].tolist()) <= pos
                          for cl in avail])
        assert set(a.tolist()) <= pos and len(pos) <= cap
        assert np.array_equal(taken, want), (t, floor, h)

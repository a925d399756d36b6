"""The policy registry: one definition read by the planner, the bridge, the CLI and sweeps, and
invariants every policy keeps (hypothesis over caches, steps and budgets)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import config
from starc.compiler import compile_kv
from starc.kv import synthetic_kv
from starc.planner import Planner, registry

CFG = config.load()


@pytest.fixture(scope="module")
def caches():
    """Two small caches (d 64 GQA 3:1 and d 128 GQA 2:1) compiled in every layout."""
    out = []
    for seed, d, hq, hkv, P, S in ((3, 64, 6, 2, 700, 70), (5, 128, 4, 2, 530, 3)):
        c = synthetic_kv(n_layers=3, n_q_heads=hq, n_kv_heads=hkv, head_dim=d, prefill_len=P,
                         decode_steps=S, seed=seed)
        modes = {p.layout for p in registry.REGISTRY.values()}
        ck = {m: compile_kv(c, CFG, registry.compile_options(
            next(n for n, p in registry.REGISTRY.items() if p.layout == m))) for m in modes}
        out.append((c, ck))
    return out


def test_one_definition_everywhere():
    from starc.compiler.compile import MODES
    from starc.model import policy_decode
    from starc.planner import LAYOUT_OF, POLICIES
    from starc.sweep import cli as sweep_cli

    assert tuple(registry.REGISTRY) == POLICIES and len(set(POLICIES)) == len(POLICIES)
    assert set(registry.DEFAULT_POLICIES) <= set(POLICIES)
    assert {n: p.layout for n, p in registry.REGISTRY.items()} == LAYOUT_OF
    assert set(LAYOUT_OF.values()) <= set(MODES)
    assert policy_decode.KNOWN_POLICIES == POLICIES
    assert {n: m for n, m in LAYOUT_OF.items() if m != "dense"} == policy_decode.STARC_MODES
    for p in registry.REGISTRY.values():
        assert p.selection in registry.SELECTION_PASSES
        assert registry.compile_options(p.name).mode == p.layout
    import argparse
    ap = argparse.ArgumentParser()
    sweep_cli.register(ap.add_subparsers())
    with pytest.raises(SystemExit):
        ap.parse_args(["sweep", "--policies", "no-such-policy"])
    with pytest.raises(ValueError, match="unknown policy 'nope'; choose from dense, oracle"):
        registry.get("nope")


def test_starc_global_has_a_sink_row(caches):
    c, ck = caches[0]
    hm = ck["global"].head(2, 0)
    assert hm.sink_end == CFG.tokens_per_group_row(64)
    sel = Planner(ck["global"], "starc-global", 256).select(5, 2, 0)
    for pos in sel.positions:
        assert set(range(hm.sink_end)) <= set(pos.tolist())


@given(which=st.integers(0, 1), policy=st.sampled_from(registry.POLICIES),
       step=st.integers(0, 69), layer=st.integers(0, 2), budget=st.integers(1, 900))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_policy_keeps_the_budget_rules(caches, which, policy, step, layer, budget):
    c, ck = caches[which]
    m = c.meta
    step = step % m.decode_steps
    spec = registry.get(policy)
    pl = Planner(ck[spec.layout], policy, budget)
    n = pl.context(step)
    kvh = step % m.n_kv_heads
    sel = pl.select(step, layer, kvh)
    assert len(sel.positions) == m.group_size
    hm = ck[spec.layout].head(layer, kvh)
    for pos in sel.positions:
        assert pos.dtype == np.int64 and np.all(np.diff(pos) > 0)           # sorted, unique
        assert pos.size == 0 or (pos[0] >= 0 and pos[-1] < n)
        if layer in registry.DENSE_LAYERS or n <= budget or policy == "dense":
            assert np.array_equal(pos, np.arange(n)), "dense layer / short context: all"
            continue
        # the budget counts every attended token (Quest's published 3-page minimum aside)
        limit = max(budget, 48) if policy == "quest" else budget
        assert pos.size <= limit
        if policy in ("oracle", "sparq", "streaming") or spec.clustered:
            assert pos.size == budget
        # recent tokens are inside B
        if policy == "streaming":
            assert set(range(n - (budget - min(4, budget)), n)) <= set(pos.tolist())
        if policy == "sparq":
            assert set(range(n - min(64, budget), n)) <= set(pos.tolist())
        if policy == "quest":
            assert n - 1 in pos
        if spec.clustered:
            e = hm.clustered_end(n)
            must = set(range(min(hm.sink_end, e, budget)))
            if hm.sink_end + n - e < budget:
                must |= set(range(e, n))
            assert must <= set(pos.tolist())
    if spec.shared and layer not in registry.DENSE_LAYERS:
        assert all(np.array_equal(sel.positions[0], p) for p in sel.positions)

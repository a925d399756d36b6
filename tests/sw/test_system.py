"""The system model (docs/system.md): shapes, mapping, capacity, channel programs, per-token
aggregation, GPU baseline. Values are checked against independent sources: published parameter
counts, AttAcc's trace generator's assignment, the golden model run directly, analytic formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starc import config
from starc.address import region_rows_upper_bound
from starc.golden import check, energy, programs, timing
from starc.isa import Op
from starc.metrics import step_cost
from starc.system import gpu as gpumod
from starc.system import shapes
from starc.system.channel import ChannelCosts, HeadPart, build_overlapped, build_sequential
from starc.system.mapping import (
    STRATEGIES,
    CapacityError,
    capacity,
    check_capacity,
    map_instances,
)
from starc.system.pertoken import SystemSpec, evaluate_step
from starc.system.workload import Streams, sampled_steps

CFG = config.load("attacc-hbm3-5.2")


# ---- shapes ------------------------------------------------------------------------------------
#: published total parameter counts (the model cards / papers) and whether the LM head is tied
#: to the embedding (then counted once)
PUBLISHED = {
    "smollm2-135m": (134_515_008, True),     # HuggingFaceTB/SmolLM2-135M, 134.5M
    "llama-2-7b": (6_738_415_616, False),    # meta-llama/Llama-2-7b-hf safetensors, 6.74B
    "mistral-7b": (7_248_023_552, False),    # Mistral-7B-v0.3 safetensors, 7.25B
    "llama-3-8b": (8_030_261_248, False),    # Meta-Llama-3-8B safetensors, 8.03B
    "opt-66b": (65.7e9, True),               # OPT paper (arXiv 2205.01068) Table 1: 66B
    "gpt3-175b": (175.0e9, True),            # GPT-3 paper Table 2.1: 175.0B
}


@pytest.mark.parametrize("name", sorted(shapes.SHAPES))
def test_shapes_reproduce_published_parameter_counts(name):
    s = shapes.get(name)
    total, tied = PUBLISHED[name]
    p = s.fc_params()
    ours = p["attention_projections"] + p["ffn"] + s.vocab * s.hidden * (1 if tied else 2)
    # norms, biases and learned positions are not in the shape: well under 1 % of any model
    assert abs(ours - total) / total < 0.01, (name, ours, total)
    assert s.n_q_heads % s.n_kv_heads == 0 and s.n_q_heads * s.head_dim == s.hidden


def test_unknown_shape_names_the_choices():
    with pytest.raises(ValueError, match="mistral-7b"):
        shapes.get("mistral")


# ---- mapping -----------------------------------------------------------------------------------
def test_attacc_mapping_is_attaccs_assignment():
    # Mistral-7B, batch 16, 8 GPUs x 5 stacks: AttAcc's wrapper gives each stack
    # ceil(ops_per_device / 5) ops and its trace generator puts op k on channel k mod 16
    m = map_instances("attacc", batch=16, n_kv_heads=8, group_size=4, stacks=40, channels=16,
                      gpus=8)
    per_stack = math.ceil(16 / 5)                   # 16 ops per GPU (1 KV head x 16 entries)
    for s in range(40):
        d, j = divmod(s, 5)
        expected = list(range(per_stack)) if j < 4 else []
        got = [c for c in range(16) if m.items[s * 16 + c]]
        assert got == expected, s
        for c in got:
            (it,) = m.items[s * 16 + c]
            assert it.instance % 8 == d and it.q_heads == (0, 1, 2, 3)
    # GPT-3 175B at batch 4 on AttAcc's 8 x 5 stacks: 12 heads x 4 = 48 ops per GPU,
    # ceil(48 / 5) = 10 per stack on channels 0..9, the last stack of each GPU gets 8
    m = map_instances("attacc", batch=4, n_kv_heads=96, group_size=1, stacks=40, channels=16,
                      gpus=8)
    counts = [sum(len(m.items[s * 16 + c]) for c in range(16)) for s in range(5)]
    assert counts == [10, 10, 10, 10, 8]


@settings(max_examples=60, deadline=None)
@example(strategy="replicate", batch=17, kv=3, g=4, gpus=4, per_gpu=3)   # 3 copies of 4 heads
@given(strategy=st.sampled_from(STRATEGIES), batch=st.integers(1, 24),
       kv=st.sampled_from([1, 2, 3, 8]), g=st.sampled_from([1, 3, 4]),
       gpus=st.sampled_from([1, 2, 4]), per_gpu=st.integers(1, 3))
def test_every_query_head_runs_exactly_once(strategy, batch, kv, g, gpus, per_gpu):
    stacks = gpus * per_gpu
    m = map_instances(strategy, batch=batch, n_kv_heads=kv, group_size=g, stacks=stacks,
                      channels=16, gpus=gpus)
    seen = {}
    for items in m.items:
        for it in items:
            for q in it.q_heads:
                key = (it.instance, q)
                assert key not in seen, f"{key} twice ({strategy})"
                seen[key] = True
    assert set(seen) == {(i, q) for i in range(batch * kv) for q in range(g)}
    # every instance is stored m.replicas times, each copy running at least one query head;
    # only replicate makes copies, and never more than the group has query heads
    copies = {}
    for items in m.items:
        for it in items:
            assert it.q_heads, f"a copy without query heads ({strategy})"
            copies[it.instance] = copies.get(it.instance, 0) + 1
    assert set(copies.values()) == {m.replicas}
    assert m.replicas == 1 or (strategy == "replicate" and m.replicas <= g)
    if strategy in ("balanced", "replicate"):
        units = batch * kv * m.replicas
        assert m.max_items() == math.ceil(units / m.total_channels)
        per_stack = [sum(len(m.items[s * 16 + c]) for c in range(16)) for s in range(stacks)]
        assert max(per_stack) - min(per_stack) <= 1


def test_replicate_splits_a_gqa_group_over_copies():
    m = map_instances("replicate", batch=16, n_kv_heads=8, group_size=4, stacks=40,
                      channels=16, gpus=8)
    assert m.replicas == 4 and m.used_channels() == 512 and m.max_items() == 1
    m = map_instances("replicate", batch=16, n_kv_heads=8, group_size=4, stacks=12,
                      channels=16, gpus=1)               # 192 channels: only one copy fits
    assert m.replicas == 1


def test_capacity_error_says_what_is_missing_and_the_fix_fits():
    m = map_instances("balanced", batch=64, n_kv_heads=8, group_size=4, stacks=4, channels=16,
                      gpus=1)
    cap = capacity(m, CFG, head_dim=128, n_layers=32, context=26048)
    assert not cap["fits"]
    with pytest.raises(CapacityError) as e:
        check_capacity(m, CFG, head_dim=128, n_layers=32, context=26048)
    msg = str(e.value)
    missing = cap["rows_needed_max"] - cap["rows_per_bank"]
    assert f"{missing} rows per bank missing" in msg and "GiB missing" in msg
    fewest = int(msg.split("use at least ")[1].split(" stacks")[0])
    assert capacity(m.with_stacks(fewest), CFG, head_dim=128, n_layers=32,
                    context=26048)["fits"]
    assert not capacity(m.with_stacks(fewest - 1), CFG, head_dim=128, n_layers=32,
                        context=26048)["fits"]
    # the K and V bytes are the model's: 2 x layers x KV heads x d x 2 B per token and entry
    assert cap["kv_GiB"] * 2**30 == 64 * 8 * 32 * 2 * 26048 * 128 * 2


# ---- channel programs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def streams():
    return Streams(CFG, head_dim=128, group_size=2, lin=1500, lout=40, streams=2, seed=5)


def test_one_head_channel_equals_the_step_cost_of_its_program(streams):
    hs = streams.head_step((-1, 1, 0), 20, "starc", 512)
    prog, n_sel = hs.programs[0], hs.n_selection[0]
    assert n_sel > 0
    ref = step_cost(prog, n_sel, CFG, 128, hs.selected[0])
    costs = ChannelCosts(CFG, 128)
    key, c = costs.cost(build_sequential([(prog, n_sel)]))
    split = costs.split(key)
    assert c.cycles == ref.cycles
    assert split["selection"] == ref.selection_cycles
    for k, v in ref.breakdown.items():
        assert split[k] == v, k
    assert c.energy_pj == pytest.approx(ref.energy_pj)
    assert c.selection_energy_pj == pytest.approx(ref.selection_energy_pj)


def test_back_to_back_heads_are_scheduled_as_one_program(streams):
    hs = streams.head_step((-1, 0, 0), 30, "quest", 256)
    parts = [(p, n) for p, n in zip(hs.programs, hs.n_selection, strict=True)]
    costs = ChannelCosts(CFG, 128)
    cp = build_sequential(parts)
    key, c = costs.cost(cp)
    whole = timing.schedule(np.concatenate([p for p, _ in parts]), CFG)
    assert c.cycles == whole.total_cycles
    alone = [timing.schedule(p, CFG).total_cycles for p, _ in parts]
    assert c.cycles <= sum(alone) + whole.refreshes * CFG.timing.tRFC
    split = costs.split(key)
    assert sum(split.values()) == c.cycles
    assert split["selection"] > 0
    # energy is additive over commands: the channel's is the heads' sum
    e = sum(energy.account(p, CFG, 128).total_pj for p, _ in parts)
    assert c.energy_pj == pytest.approx(e)
    sel_e = sum(energy.account(p[:n], CFG, 128).total_pj for p, n in parts)
    assert c.selection_energy_pj == pytest.approx(sel_e)
    # the same program is scheduled once
    n = costs.scheduled
    costs.cost(build_sequential(parts))
    assert costs.scheduled == n


def _counts(prog: np.ndarray) -> dict[str, int]:
    ops, n = np.unique(prog["op"], return_counts=True)
    return {Op(int(o)).name: int(c) for o, c in zip(ops, n, strict=True)}


def test_overlapped_channel_is_legal_and_does_the_sequential_work(streams):
    # 5 instances x 2 query heads = 10 heads: two overlapped programs (8 + 2 heads)
    parts = []
    for k in range(5):
        hs = streams.head_step((-1, k % 2, 0), 25 + k, "starc", 512)
        parts += [HeadPart(p, n, r, hs.krow_base, hs.vrow_base, hs.geo, 1000 * k)
                  for p, n, r in zip(hs.programs, hs.n_selection, hs.rows, strict=True)]
    seq, ov = build_sequential(parts), build_overlapped(parts, CFG)
    s_seq, s_ov = timing.schedule(seq.program, CFG), timing.schedule(ov.program, CFG)
    check.check(s_ov.program, s_ov.issue, CFG)          # the independent checker
    # the same selection passes, first, and the same rows and MACs (the overlapped programs
    # write each head's query into its own slot: WRGBs and moves may differ)
    n_sel = sum(p.n_selection for p in parts)
    assert ov.selection[:n_sel].all() and not ov.selection[n_sel:].any()
    a, b = _counts(seq.program), _counts(ov.program)
    for op in ("ACTAB", "ACTBG", "PREA", "MACAB", "MACBG", "SFM"):
        assert a.get(op, 0) == b.get(op, 0), op
    assert b["SFM"] == 10
    # one head's softmax and moves run under another's MACs: no slower than back to back
    assert s_ov.total_cycles <= s_seq.total_cycles
    costs = ChannelCosts(CFG, 128)
    key, c = costs.cost(ov)
    assert c.cycles == s_ov.total_cycles and sum(costs.split(key).values()) == c.cycles


def test_overlapped_schedule_needs_row_plans():
    with pytest.raises(ValueError, match="row plan"):
        build_overlapped([(programs.dense_program(CFG, 64, 128), 0)], CFG)


# ---- per token ---------------------------------------------------------------------------------
def _spec(**kw):
    base = dict(model=shapes.get("smollm2-135m"), batch=2, lin=700, lout=20, stacks=1, gpus=1,
                gpu="h100-sxm", policies=("dense", "starc"), budget=256,
                mappings=("balanced",), schedule="sequential", streams=2, seed=1)
    base.update(kw)
    return SystemSpec(**base)


def test_dense_token_latency_is_layers_times_one_channel():
    spec = _spec(policies=("dense",))
    m = spec.model
    st_ = Streams(CFG, head_dim=m.head_dim, group_size=m.group_size, lin=spec.lin,
                  lout=spec.lout, streams=2, seed=1)
    res = evaluate_step(spec, CFG, 7, st_, ChannelCosts(CFG, m.head_dim))
    (row,) = res["rows"]
    n = spec.lin + 7 + 1
    # 2 x 3 = 6 instances on 16 channels: one per channel, its 3 query heads back to back
    one = programs.dense_program(CFG, n, m.head_dim)
    per_layer = timing.schedule(np.concatenate([one] * m.group_size), CFG).total_cycles
    assert row["token_cycles"] == m.n_layers * per_layer
    e = energy.account(one, CFG, m.head_dim).total_pj
    assert row["token_energy_mJ"] == pytest.approx(m.n_layers * 6 * m.group_size * e * 1e-9)
    assert row["channel_util"] == pytest.approx(6 / 16)
    assert row["stack_util"] == pytest.approx(1.0)
    assert row["token_t"]["selection"] == 0
    assert sum(row["token_t"].values()) == row["token_cycles"]
    assert row["mass_recall"] == 1.0


def test_sparse_token_costs_add_up_and_beat_dense():
    # at 2K tokens B = 256 is an eighth of the context (at 700 the selection pass and the
    # row-aligned layout's sink row make STARC slower than dense on SmolLM2's d = 64)
    spec = _spec(mappings=("balanced", "replicate"), lin=2000)
    m = spec.model
    st_ = Streams(CFG, head_dim=m.head_dim, group_size=m.group_size, lin=spec.lin,
                  lout=spec.lout, streams=2, seed=1)
    res = evaluate_step(spec, CFG, 15, st_, ChannelCosts(CFG, m.head_dim))
    rows = {(r["policy"], r["mapping"]): r for r in res["rows"]}
    for r in res["rows"]:
        assert sum(r["token_t"].values()) == r["token_cycles"]
        assert sum(r["token_e"].values()) == pytest.approx(r["token_energy_mJ"])
        assert r["token_us"] == pytest.approx(r["token_cycles"] * CFG.timing.tCK_ns / 1e3)
        assert 0 < r["channel_util"] <= r["stack_util"] <= 1
    for mp in ("balanced", "replicate"):
        d, s = rows[("dense", mp)], rows[("starc", mp)]
        assert s["token_cycles"] < d["token_cycles"]
        assert s["token_energy_mJ"] < d["token_energy_mJ"]
        assert s["token_t"]["selection"] > 0
        assert 0 < s["mass_recall"] < 1
        assert s["selected"] <= spec.budget
    # replicas only split the GQA group over copies: same energy, no more latency
    for p in ("dense", "starc"):
        a, b = rows[(p, "balanced")], rows[(p, "replicate")]
        assert b["token_energy_mJ"] == pytest.approx(a["token_energy_mJ"])
        assert b["token_cycles"] <= a["token_cycles"]


@pytest.mark.parametrize("schedule", ["sequential", "overlapped"])
def test_token_is_the_slowest_channel_of_each_layer_recomputed_directly(schedule):
    # 7 x 3 = 21 instances on 16 channels: five channels hold two instances, so the layers'
    # channels differ. Recomputed here without the memo: every channel's heads concatenated
    # (sequential) or rebuilt, scheduled and charged by the golden model directly; latency is
    # the sum over layers of the slowest channel, energy the sum over every channel.
    spec = _spec(batch=7, mappings=("balanced",), schedule=schedule, lin=900)
    m = spec.model
    st_ = Streams(CFG, head_dim=m.head_dim, group_size=m.group_size, lin=spec.lin,
                  lout=spec.lout, streams=3, seed=1)
    step = 11
    res = evaluate_step(spec, CFG, step, st_, ChannelCosts(CFG, m.head_dim))
    mp = spec.mapping("balanced", CFG)
    assert sorted(len(it) for it in mp.items) == [1] * 11 + [2] * 5
    region = region_rows_upper_bound(CFG, m.head_dim, spec.context_max)
    sched: dict[bytes, tuple[int, float]] = {}
    built: dict[tuple, np.ndarray] = {}
    for row in res["rows"]:
        latency, busy, e = 0, 0, 0.0
        for layer in range(m.n_layers):
            dense = layer in (0, 1)
            worst = 0
            for items in mp.items:
                keys = tuple((None if dense else st_.key(layer, it.instance, m.n_kv_heads,
                                                         mp.instances), it.q_heads)
                             for it in items)
                prog = built.get((row["policy"], keys))
                if prog is None:
                    parts = []
                    for k, (key, q_heads) in enumerate(keys):
                        hs = st_.head_step(key, step, row["policy"], spec.budget,
                                           dense_layer=dense)
                        parts += [HeadPart(hs.programs[j], hs.n_selection[j], hs.rows[j],
                                           hs.krow_base, hs.vrow_base, hs.geo, k * region)
                                  for j in q_heads]
                    prog = built[(row["policy"], keys)] = (
                        np.concatenate([p.program for p in parts]) if schedule == "sequential"
                        else build_overlapped(parts, CFG).program)
                b = prog.tobytes()
                if b not in sched:
                    sched[b] = (int(timing.schedule(prog, CFG).total_cycles),
                                energy.account(prog, CFG, m.head_dim).total_pj)
                cyc, pj = sched[b]
                worst = max(worst, cyc)
                busy += cyc
                e += pj
            latency += worst
        assert row["token_cycles"] == latency, row["policy"]
        assert row["token_energy_mJ"] == pytest.approx(e * 1e-9)
        assert row["channel_util"] == pytest.approx(busy / (16 * latency))
        assert row["token_us"] == pytest.approx(latency * CFG.timing.tCK_ns * 1e-3)


def test_multi_query_policy_runs_one_program_per_kv_head(schedule="overlapped"):
    # starc-row-gqa: every query head of a KV head attends the same rows, and the channel runs
    # the group's heads as one program that opens each row once. Recomputed here from a fresh
    # planner (not the Streams memo): per channel, each instance's Planner.group_program over
    # the query heads it runs there, back to back, scheduled and charged by the golden model.
    from starc.compiler import compile_kv
    from starc.planner import registry
    from starc.planner.plan import Planner

    spec = _spec(batch=7, mappings=("balanced", "replicate"), policies=("starc-row-gqa",),
                 lin=900, schedule=schedule)
    m = spec.model
    st_ = Streams(CFG, head_dim=m.head_dim, group_size=m.group_size, lin=spec.lin,
                  lout=spec.lout, streams=3, seed=1)
    step = 11
    res = evaluate_step(spec, CFG, step, st_, ChannelCosts(CFG, m.head_dim))
    planners: dict[tuple, tuple] = {}

    def group(key, q_heads):
        if key not in planners:
            cache = st_._stream(key).cache
            ck = compile_kv(cache, CFG, registry.compile_options("starc-row-gqa", seed=1,
                                                                 dense_layers=(), threads=1))
            pl = Planner(ck, "starc-row-gqa", spec.budget, dense_layers=())
            planners[key] = (pl, pl.plan(step, 0, 0))
        pl, plans = planners[key]
        assert all(np.array_equal(p.selected, plans[0].selected) for p in plans)
        return pl, plans, pl.group_program([plans[j] for j in q_heads])[0]

    for row in res["rows"]:
        mp = spec.mapping(row["mapping"], CFG)
        region = region_rows_upper_bound(CFG, m.head_dim, spec.context_max)
        latency, e = 0, 0.0
        for layer in range(m.n_layers):
            dense = layer in (0, 1)
            worst = 0
            for items in mp.items:
                if not items:
                    continue
                progs, dparts = [], []
                for k, it in enumerate(items):
                    if dense:       # dense layers: the schedule's builder, as for any policy
                        hs = st_.head_step(None, step, "dense", spec.budget, dense_layer=True)
                        dparts += [HeadPart(hs.programs[j], hs.n_selection[j], hs.rows[j],
                                            hs.krow_base, hs.vrow_base, hs.geo, k * region)
                                   for j in it.q_heads]
                        continue
                    key = st_.key(layer, it.instance, m.n_kv_heads, mp.instances)
                    pl, plans, gp = group(key, it.q_heads)
                    # the group program opens each row once: as many activations as one
                    # query head's own step program, whatever the number of heads
                    one, _, _ = pl.step_program(plans[it.q_heads[0]])
                    acts = [int(Op.ACTAB), int(Op.ACTBG), int(Op.ACTPB)]
                    assert (np.isin(gp["op"], acts).sum() == np.isin(one["op"], acts).sum())
                    progs.append(gp)
                if dense:
                    progs = [(build_overlapped(dparts, CFG).program if schedule == "overlapped"
                              else np.concatenate([p.program for p in dparts]))]
                prog = np.concatenate(progs)
                worst = max(worst, int(timing.schedule(prog, CFG).total_cycles))
                e += energy.account(prog, CFG, m.head_dim).total_pj
            latency += worst
        assert row["token_cycles"] == latency, row["mapping"]
        assert row["token_energy_mJ"] == pytest.approx(e * 1e-9)


def test_gpu_baseline_is_bandwidth_over_bytes():
    m = shapes.get("mistral-7b")
    g = gpumod.get("h100-sxm")
    n = 10_000
    r = gpumod.attention(g, 8, n_layers=32, batch=16, n_kv_heads=8, n_q_heads=32,
                         head_dim=128, context=n)
    kv = 32 * 16 * 8 * n * 2 * 128 * 2
    qo = 32 * 16 * 32 * 128 * 2 * 2
    assert r["bytes"] == kv + qo
    assert r["seconds"] == pytest.approx((kv + qo) / (8 * 3352e9 * 0.85))
    assert r["bound"] == "memory"
    assert r["energy_pj"] == pytest.approx((kv + qo) * 28.72 + 32 * 16 * 32 * n * 256 * 0.32)
    fc = gpumod.fc_layers(g, 8, params=sum(m.fc_params().values()), batch=16)
    assert fc["bound"] == "memory"
    assert fc["seconds"] == pytest.approx(2 * sum(m.fc_params().values()) /
                                          (8 * 3352e9 * 0.85))


def test_sampled_steps_are_bin_midpoints():
    assert sampled_steps(24000, 4) == [3000, 9000, 15000, 21000]
    assert sampled_steps(10, 10) == list(range(10))
    assert sampled_steps(7, 1) == [3]
    with pytest.raises(ValueError):
        sampled_steps(5, 6)

"""Head streams of the system model: real KV files and seeded synthetic streams, and the
vectorised query draws of the synthetic generator they use."""

from __future__ import annotations

import numpy as np
import pytest
from starc import config
from starc.kv import save_kv, synthetic_kv
from starc.metrics import dense_reference
from starc.planner.plan import Planner
from starc.planner.registry import compile_options
from starc.system import shapes
from starc.system.channel import ChannelCosts
from starc.system.pertoken import SystemSpec, evaluate_step
from starc.system.workload import Streams, stream_seed

CFG = config.load("attacc-hbm3-5.2")


def _stats(c) -> tuple[float, float, float]:
    """Mean query norm, mean attention entropy and mean top-32 mass over the decode steps."""
    q = c.q[0].astype(np.float32)
    k = c.k[0].astype(np.float32)
    norms, ent, top = [], [], []
    for s in range(0, q.shape[0], 4):
        n = c.meta.prefill_len + s + 1
        ref = dense_reference(q[s], k[:n, 0], c.v[0][:n, 0])
        p = ref.probs
        norms.append(np.linalg.norm(q[s], axis=-1).mean())
        ent.append((-(p * np.log(p + 1e-300)).sum(1)).mean())
        top.append(np.sort(p, axis=1)[:, -32:].sum(1).mean())
    return float(np.mean(norms)), float(np.mean(ent)), float(np.mean(top))


def test_vectorised_queries_draw_the_same_distribution():
    kw = dict(n_layers=1, n_q_heads=4, n_kv_heads=1, head_dim=64, prefill_len=600,
              decode_steps=1200, seed=11)
    seq = synthetic_kv(**kw)
    vec = synthetic_kv(**kw, query_draws="vectorised")
    again = synthetic_kv(**kw, query_draws="vectorised")
    # keys and values are the same stream; queries are redrawn, deterministically
    assert np.array_equal(seq.k[0], vec.k[0]) and np.array_equal(seq.v[0], vec.v[0])
    assert not np.array_equal(seq.q[0], vec.q[0])
    assert np.array_equal(vec.q[0], again.q[0])
    a, b = _stats(seq), _stats(vec)
    for x, y, what in zip(a, b, ("query norm", "attention entropy", "top-32 mass"),
                          strict=True):
        assert abs(x - y) / abs(x) < 0.05, (what, x, y)


def test_query_draws_are_checked():
    with pytest.raises(ValueError, match="query_draws"):
        synthetic_kv(n_layers=1, prefill_len=64, decode_steps=1, query_draws="fast")


def test_synthetic_streams_are_distinct_seeded_sequences():
    st = Streams(CFG, head_dim=64, group_size=3, lin=300, lout=10, streams=3, seed=4)
    # instance i of layer l reads stream (l * instances + i) mod streams
    assert [st.key(l, i, 3, 6)[1] for l in (0, 1) for i in range(6)] == \
        [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert st.key(1, 1, 3, 4) == (-1, 5 % 3, 0)
    assert len({stream_seed(4, p) for p in range(100)}) == 100
    c0 = st._stream((-1, 0, 0)).cache
    c1 = st._stream((-1, 1, 0)).cache
    ref = synthetic_kv(n_layers=1, n_q_heads=3, n_kv_heads=1, head_dim=64, prefill_len=300,
                       decode_steps=10, seed=stream_seed(4, 1), query_draws="vectorised")
    assert np.array_equal(c1.k[0], ref.k[0]) and np.array_equal(c1.q[0], ref.q[0])
    assert not np.array_equal(c0.k[0], c1.k[0])


def test_head_step_is_the_planners_step_program():
    st = Streams(CFG, head_dim=64, group_size=3, lin=900, lout=8, streams=2, seed=2)
    hs = st.head_step((-1, 1, 0), 5, "starc-row", 256)
    c = st._stream((-1, 1, 0)).cache
    from starc.compiler import compile_kv
    ck = compile_kv(c, CFG, compile_options("starc-row", seed=2, dense_layers=()))
    pl = Planner(ck, "starc-row", 256, dense_layers=())
    for j, sp in enumerate(pl.plan(5, 0, 0)):
        prog, _, n_sel = pl.step_program(sp)
        assert np.array_equal(prog, hs.programs[j]) and n_sel == hs.n_selection[j]
        assert sp.selected.size == hs.selected[j] <= 256
    assert len(hs.mass_recall) == 3 and all(0 < r <= 1 for r in hs.mass_recall)
    assert max(hs.selected) <= hs.union <= sum(hs.selected)


def test_real_kv_files_batch_entries_cycle_over_files(tmp_path):
    files = []
    for s in (1, 2):
        c = synthetic_kv(n_layers=3, n_q_heads=9, n_kv_heads=3, head_dim=64, prefill_len=700,
                         decode_steps=3, seed=s)
        files.append(str(save_kv(c, tmp_path / f"kv{s}.npz")))
    st = Streams(CFG, head_dim=64, group_size=3, lin=700, lout=3, kv=files)
    # batch entry b reads file b mod 2, layer l, KV head h
    assert st.key(2, 4, 3, 9) == (1, 2, 1)
    assert st.key(0, 7, 3, 9) == (0, 0, 1)
    spec = SystemSpec(model=shapes.get("smollm2-135m"), batch=3, lin=700, lout=3, stacks=1,
                      gpus=1, gpu="h100-sxm", policies=("dense", "quest"), budget=128,
                      mappings=("attacc",), kv=tuple(files))
    # the shape's 30 layers exceed the files' 3: only the files' layers are planned
    small = SystemSpec(**{**spec.__dict__, "model": shapes.ModelShape(
        "smollm2-3layers", 3, 576, 9, 3, 64, 1536, True, 49152, "test")})
    res = evaluate_step(small, CFG, 1, st, ChannelCosts(CFG, 64))
    rows = {r["policy"]: r for r in res["rows"]}
    assert res["n_ctx"] == 702
    # layers 0 and 1 are dense under every policy: quest differs from dense in layer 2 only
    assert 0 < rows["quest"]["selected"] <= 128
    assert rows["quest"]["token_cycles"] != rows["dense"]["token_cycles"]

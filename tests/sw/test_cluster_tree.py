"""Two-level balanced k-means and the parallel compile (docs/compiler.md, "Speed")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import config
from starc.compiler import CompileOptions, compile_kv
from starc.compiler import compile as compile_mod
from starc.compiler.cluster import balanced_kmeans, balanced_kmeans_tree, unit
from starc.kv import synthetic_kv
from test_compiler import _check_invariants

CFG = config.load()


@given(seed=st.integers(0, 10_000), k=st.integers(4, 40), cap=st.sampled_from([1, 2, 16, 0]),
       batches=st.integers(1, 3), fanout=st.one_of(st.none(), st.integers(2, 9)),
       refine=st.integers(0, 2))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_tree_gives_every_cluster_exactly_its_capacity(seed, k, cap, batches, fanout, refine):
    """Exact sizes (cap 0: unequal capacities 1..4 inside a batch), centroids = member means."""
    rng = np.random.default_rng(seed)
    row = np.full(k, cap) if cap else rng.integers(1, 5, size=k)
    caps = np.tile(row, (batches, 1))
    n = int(row.sum())
    x = unit(rng.standard_normal((batches, n, 8)).astype(np.float32))
    labels, cents, _ = balanced_kmeans_tree(x, caps, seed=seed, fanout=fanout, refine=refine,
                                            iters=3)
    assert labels.shape == (batches, n) and cents.shape == (batches, k, 8)
    for b in range(batches):
        assert (np.bincount(labels[b], minlength=k) == row).all(), f"seed={seed}"
        # centroids are the means of their members
        for c in (0, k - 1):
            assert np.allclose(cents[b, c], x[b, labels[b] == c].mean(0), atol=1e-5), \
                f"seed={seed}"


def test_tree_recovers_separated_clusters():
    """64 well-separated groups of 8 points: both the flat and the two-level algorithm find
    every group (a permutation of labels)."""
    rng = np.random.default_rng(11)
    centers = unit(rng.standard_normal((64, 24)))
    pts = unit((centers.repeat(8, 0) + 0.03 * rng.standard_normal((512, 24))).astype(np.float32))
    perm = rng.permutation(512)
    truth = (np.arange(512) // 8)[perm]
    caps = np.full((1, 64), 8)
    for fn in (lambda: balanced_kmeans_tree(pts[perm][None], caps, seed=1, refine=1),
               lambda: balanced_kmeans(pts[perm][None], caps, seed=1, init="kmeans++")):
        labels = fn()[0][0]
        purity = np.mean([np.bincount(truth[labels == j]).max() / 8 for j in range(64)])
        assert purity > 0.95, purity


def test_tree_needs_equal_capacities():
    with pytest.raises(ValueError, match="same capacities"):
        balanced_kmeans_tree(np.zeros((2, 8, 4), np.float32), np.array([[4, 4], [2, 6]]))


@given(seed=st.integers(0, 10_000), d=st.sampled_from([64, 128]), steps=st.integers(1, 70))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_compile_with_the_tree_keeps_the_invariants(seed, d, steps):
    c = synthetic_kv(n_layers=3, n_q_heads=4, n_kv_heads=2, head_dim=d, prefill_len=1100,
                     decode_steps=steps, seed=seed, prefill_queries=16)
    old = compile_mod.TREE_MIN_K
    compile_mod.TREE_MIN_K = 8           # windows of 1024 tokens: 32 or 64 clusters
    try:
        ck = compile_kv(c, CFG, CompileOptions(mode="row-aligned", seed=seed, window=1024))
    finally:
        compile_mod.TREE_MIN_K = old
    assert ck.options["tree"]
    _check_invariants(ck, seed)


def test_worker_processes_give_the_serial_result(monkeypatch):
    """The layers compiled in worker processes (or threads, when the caller runs other threads)
    give exactly the serial compile."""
    c = synthetic_kv(n_layers=5, n_q_heads=2, n_kv_heads=2, prefill_len=700, decode_steps=40,
                     seed=5, prefill_queries=8)
    monkeypatch.setattr(compile_mod, "PROCESS_MIN_LAYERS", 2)
    a = compile_kv(c, CFG, CompileOptions(mode="row-aligned", threads=1))
    b = compile_kv(c, CFG, CompileOptions(mode="row-aligned", threads=2))
    assert a.stats["workers"] == "serial" and b.stats["workers"] in ("processes", "threads")
    for ha, hb in zip(a.iter_heads(), b.iter_heads(), strict=True):
        assert ha.row_base == hb.row_base
        for f in ("slot_pos", "block_group", "block_row", "cl_size", "centroid"):
            assert np.array_equal(getattr(ha, f), getattr(hb, f)), f

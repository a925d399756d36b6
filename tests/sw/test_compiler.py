"""Mapping compiler: artifact-exact clustering, balanced clustering, placement invariants, image
round trip, artifact folder integrity and error messages."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import config
from starc.address import Geometry, banks_to_blocks, blocks_to_banks
from starc.compiler import CompileError, CompileOptions, compile_kv
from starc.compiler.artifact import ArtifactError, decode_image, load_artifact, save_artifact
from starc.compiler.cluster import artifact_lloyd, balanced_assign, balanced_kmeans, unit
from starc.compiler.compile import plan_segments, query_metric
from starc.compiler.placement import spread_groups
from starc.golden.programs import dense_token_address
from starc.kv import KVError, synthetic_kv

CFG = config.load()


# ---- artifact mode against an independent, loop-based reference ----------------------------------
def _artifact_reference(keys: np.ndarray, k: int = 4, max_iter: int = 16, tol: float = 1e-4):
    """The STARC artifact's per-window clustering written plainly in float64."""
    x = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    c = x[:k].copy()
    labels = np.zeros(len(x), int)
    for _ in range(max_iter):
        dist = np.array([[np.sum((xi - cj) ** 2) for cj in c] for xi in x])
        labels = dist.argmin(1)
        new = np.array([x[labels == j].mean(0) if (labels == j).any() else np.zeros(x.shape[1])
                        for j in range(k)])
        moved = max(np.linalg.norm(new[j] - c[j]) for j in range(k))
        c = new
        if moved < tol:
            break
    order = sorted(range(len(x)), key=lambda i: (labels[i], i))   # stable by label
    return labels, c, np.array(order)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_artifact_windows_match_reference(seed):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, 32))
    keys = (centers[rng.integers(0, 4, (6, 64))] + 0.3 * rng.standard_normal((6, 64, 32)))
    labels, cents, _ = artifact_lloyd(unit(keys.astype(np.float32)), 4)
    for w in range(6):
        ref_l, ref_c, ref_o = _artifact_reference(keys[w])
        assert np.array_equal(labels[w], ref_l), f"seed={seed} window {w}"
        assert np.allclose(cents[w], ref_c, atol=1e-5), f"seed={seed} window {w}"
        assert np.array_equal(np.argsort(labels[w], kind="stable"), ref_o)


def test_artifact_empty_cluster_gets_zero_centroid():
    x = np.zeros((1, 64, 8), np.float32)
    x[0, :, 0] = 1.0                      # every key identical: clusters 1..3 end up empty
    labels, cents, _ = artifact_lloyd(x, 4)
    assert (labels == 0).all()
    assert np.array_equal(cents[0, 1:], np.zeros((3, 8)))


def test_artifact_mode_compiles_exact_windows():
    c = synthetic_kv(n_layers=3, n_q_heads=3, n_kv_heads=1, prefill_len=300, decode_steps=40,
                     seed=1)
    ck = compile_kv(c, CFG, CompileOptions(mode="artifact"))
    hm = ck.head(2, 0)
    # windows [0, 64) .. [192, 256) at prefill, then decode windows [256, 320); buffer 320..339
    assert hm.seg_start.tolist() == [0, 64, 128, 192, 256]
    assert hm.seg_ready.tolist() == [64, 128, 192, 256, 320]
    assert hm.clustered_end(301) == 256 and hm.clustered_end(340) == 320
    x = c.k[2][:, 0].astype(np.float16).astype(np.float64)
    for w in range(5):
        _, ref_c, ref_o = _artifact_reference(x[64 * w:64 * w + 64])
        got = hm.slot_pos[64 * w:64 * w + 64]
        assert np.array_equal(got, 64 * w + ref_o), f"window {w}"
        assert np.allclose(hm.centroid[4 * w:4 * w + 4], ref_c, atol=1e-5)
    assert (hm.cl_size.reshape(-1, 4).sum(1) == 64).all()


# ---- balanced clustering -------------------------------------------------------------------------
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 5), size=st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_balanced_assign_respects_capacities_and_is_near_optimal(seed, k, size):
    from scipy.optimize import linear_sum_assignment
    rng = np.random.default_rng(seed)
    n = k * size
    cost = rng.standard_normal((2, n, k)).astype(np.float32)
    caps = np.full((2, k), size)
    labels = balanced_assign(cost, caps)
    for b in range(2):
        assert (np.bincount(labels[b], minlength=k) == size).all(), f"seed={seed}"
        rep = np.repeat(cost[b], size, axis=1)
        r, cc = linear_sum_assignment(rep)
        opt = rep[r, cc].sum()
        got = cost[b][np.arange(n), labels[b]].sum()
        assert got >= opt - 1e-4, f"seed={seed}"
        # greedy rounds: at most the spread of the costs above optimal
        assert got <= opt + n * (cost[b].max() - cost[b].min()) / 2 + 1e-4, f"seed={seed}"


def test_balanced_assign_separable_is_exact():
    cost = np.array([[[0, 5], [0, 5], [5, 0], [5, 0]]], np.float32)
    assert balanced_assign(cost, np.array([[2, 2]])).tolist() == [[0, 0, 1, 1]]
    # everyone prefers cluster 0; the two cheapest get it
    cost = np.array([[[0.1, 9], [0.3, 9], [0.2, 9], [0.4, 9]]], np.float32)
    assert balanced_assign(cost, np.array([[2, 2]])).tolist() == [[0, 1, 0, 1]]


def test_balanced_kmeans_sizes_and_recovery():
    rng = np.random.default_rng(7)
    centers = unit(rng.standard_normal((4, 16)))
    pts = centers.repeat(8, 0) + 0.05 * rng.standard_normal((32, 16))
    perm = rng.permutation(32)
    labels, cents, _ = balanced_kmeans(unit(pts[perm].astype(np.float32))[None],
                                       np.full((1, 4), 8), init="kmeans++", seed=3)
    assert (np.bincount(labels[0]) == 8).all()
    truth = (np.arange(32) // 8)[perm]
    # each found cluster is one true cluster (a permutation of labels)
    for j in range(4):
        assert len(set(truth[labels[0] == j])) == 1


# ---- layout and placement invariants -------------------------------------------------------------
def test_bank_layout_roundtrip_and_columns():
    for d in (64, 128):
        geo = Geometry(CFG, d)
        x = np.arange(3 * geo.tpgr * d, dtype=np.uint16).reshape(3, geo.tpgr, d)
        rows = blocks_to_banks(x, geo)
        assert rows.shape == (3, 4, 32, 16)
        assert np.array_equal(banks_to_blocks(rows, geo), x)
        # slot i of set j in bank j*bpt + h, columns 2s and 2s+1 (docs/commands.md)
        i = geo.tpgr - 1
        j, s = i // 16, i % 16
        for h in range(geo.bpt):
            assert np.array_equal(rows[1, j * geo.bpt + h, 2 * s], x[1, i, 32 * h:32 * h + 16])
            assert np.array_equal(rows[1, j * geo.bpt + h, 2 * s + 1],
                                  x[1, i, 32 * h + 16:32 * h + 32])


def test_dense_layers_use_the_attacc_dense_layout():
    c = synthetic_kv(n_layers=1, n_q_heads=3, n_kv_heads=1, prefill_len=700, decode_steps=1)
    ck = compile_kv(c, CFG, CompileOptions(mode="dense"))
    hm = ck.head(0, 0)
    t = np.arange(701)
    loc = hm.locate(t, 701)
    ref = dense_token_address(CFG, 64, t)
    for f in ("group", "row", "set", "slot"):
        assert np.array_equal(getattr(loc, f), ref[f]), f


def _check_invariants(ck, seed):
    T = ck.cache.meta.context_len
    geo = ck.geometry
    addr, data = ck.image()
    keys = [tuple(a) for a in addr.tolist()]
    assert len(set(keys)) == len(keys), f"seed={seed}: two bank rows at one address"
    assert addr[:, 3].max() < CFG.org.rows_per_bank, f"seed={seed}"
    for hm in ck.iter_heads():
        n_ctx = [T] + ([int(hm.seg_ready[0]) + 1] if len(hm.seg_ready) else [])
        for n in n_ctx:
            pos = np.arange(n)
            loc = hm.locate(pos, n)
            flat = ((loc.group * 1_000_000 + loc.row) * 64 + loc.set) * 16 + loc.slot
            assert np.unique(flat).size == n, f"seed={seed}: token addresses collide (n={n})"
        stream = hm.slot_pos[hm.slot_pos >= 0]
        assert np.unique(stream).size == stream.size, f"seed={seed}: token stored twice"
        assert set(stream.tolist()) == set(range(hm.clustered_end(T))), f"seed={seed}"
        blocks = hm.block_group * 1_000_000 + hm.block_row
        assert np.unique(blocks).size == hm.n_blocks, f"seed={seed}: two blocks share a row"
        assert hm.block_group.max(initial=0) < geo.G
        if not hm.positional:
            assert hm.cl_size.sum() == hm.clustered_end(T) - hm.sink_end, f"seed={seed}"
            assert set(hm.slot_pos[:hm.sink_end].tolist()) == set(range(hm.sink_end))
            if ck.mode == "row-aligned":
                cs = ck.options["cluster_tokens"]
                assert (hm.cl_size == cs).all(), f"seed={seed}"
                assert (hm.cl_start % min(cs, geo.tpgr) == 0).all(), f"seed={seed}"
    # the image decodes back to the FP16 input exactly
    from starc.compiler.artifact import _tables
    tab = _tables(ck)
    tok = tab["tokens"]
    voff = np.repeat(tab["heads"]["n_krows"].astype(np.int64), T)
    kb, vb = decode_image(tab["image_addr"], tab["image_data"], tok, geo, voff)
    for name, bits, src in (("k", kb, ck.cache.k), ("v", vb, ck.cache.v)):
        want = np.stack([src[l][p, h] for l, h, p in
                         zip(tok["layer"], tok["head"], tok["position"], strict=True)])
        assert np.array_equal(bits, want.view(np.uint16)), f"seed={seed}: {name} differs"


@given(seed=st.integers(0, 10_000), mode=st.sampled_from(["artifact", "row-aligned", "global",
                                                          "dense"]),
       prefill=st.integers(40, 300), steps=st.integers(1, 80), d=st.sampled_from([64, 128]),
       placement=st.sampled_from(["naive", "coselect"]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_compile_invariants(seed, mode, prefill, steps, d, placement):
    c = synthetic_kv(n_layers=3, n_q_heads=2, n_kv_heads=2, head_dim=d, prefill_len=prefill,
                     decode_steps=steps, seed=seed)
    ck = compile_kv(c, CFG, CompileOptions(mode=mode, seed=seed, placement=placement,
                                           window=128 if mode == "row-aligned" else None))
    _check_invariants(ck, seed)


@given(seed=st.integers(0, 10_000), prefill=st.integers(300, 1400), steps=st.integers(1, 80),
       d=st.sampled_from([64, 128]), metric=st.sampled_from(["unit", "query"]),
       placement=st.sampled_from(["queries", "coselect", "naive"]), n_qp=st.integers(1, 40))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_query_metric_and_placement_invariants(seed, prefill, steps, d, metric, placement, n_qp):
    """Every token placed exactly once at every context, no over-full or shared rows, addresses
    in range, a bijective token map and a bit-exact image, with the prefill-query metric and the
    placement learnt from prefill queries."""
    c = synthetic_kv(n_layers=3, n_q_heads=4, n_kv_heads=2, head_dim=d, prefill_len=prefill,
                     decode_steps=steps, seed=seed, prefill_queries=n_qp)
    ck = compile_kv(c, CFG, CompileOptions(mode="row-aligned", seed=seed, metric=metric,
                                           placement=placement, window=512))
    assert ck.options["metric"] == metric and ck.options["placement"] == placement
    _check_invariants(ck, seed)
    for hm in ck.iter_heads():
        if hm.positional:
            continue
        # queries: group sizes of the prefill blocks are the naive round-robin's
        npb = hm.stats["prefill_blocks"]
        G = ck.geometry.G
        got = np.bincount(hm.block_group[:npb], minlength=G)
        if placement != "coselect":
            assert np.array_equal(got, np.bincount(np.arange(npb) % G, minlength=G)), \
                f"seed={seed}"
        # centroids of the query metric are the mean raw keys of the members
        if metric == "query":
            K = ck.cache.k[hm.layer][:, hm.head].astype(np.float64)
            for ci in (0, hm.n_clusters - 1):
                pos = hm.slot_pos[hm.cl_start[ci]:hm.cl_start[ci] + hm.cl_size[ci]]
                assert np.allclose(hm.centroid[ci], K[pos].mean(0), atol=1e-3), f"seed={seed}"


def test_defaults_follow_the_prefill_queries():
    c0 = synthetic_kv(n_layers=3, prefill_len=600, decode_steps=4, seed=1)
    c1 = synthetic_kv(n_layers=3, prefill_len=600, decode_steps=4, seed=1, prefill_queries=32)
    a, b = compile_kv(c0, CFG), compile_kv(c1, CFG)
    assert (a.options["metric"], a.options["placement"]) == ("unit", "coselect")
    assert (b.options["metric"], b.options["placement"]) == ("query", "queries")
    assert a.input_hash == b.input_hash                  # calibration is not part of the input
    assert b.options["calibration_hash"] and "calibration_hash" not in a.options
    with pytest.raises(CompileError, match="prefill queries"):
        compile_kv(c0, CFG, CompileOptions(metric="query"))
    with pytest.raises(CompileError, match="prefill queries"):
        compile_kv(c0, CFG, CompileOptions(placement="queries"))
    with pytest.raises(CompileError, match="row-aligned"):
        compile_kv(c1, CFG, CompileOptions(mode="artifact", metric="query"))


def test_query_metric_distance_is_the_mean_score_difference():
    """With mix 1, ||(k1 - k2) W||^2 = d / tr(M) * mean_q (q . (k1 - k2))^2 (float64 reference)."""
    rng = np.random.default_rng(3)
    d, g, P = 16, 3, 50
    qp = (rng.standard_normal((P, 2 * g, d)) * np.linspace(0.2, 3.0, d)).astype(np.float32)
    W = query_metric(qp, 2, mix=1.0)
    for h in range(2):
        q = qp[:, h * g:(h + 1) * g].reshape(-1, d).astype(np.float64)
        M = q.T @ q / len(q)
        k1, k2 = rng.standard_normal(d), rng.standard_normal(d)
        want = d / np.trace(M) * np.mean((q @ (k1 - k2)) ** 2)
        got = float(np.sum(((k1 - k2) @ W[h].astype(np.float64)) ** 2))
        assert got == pytest.approx(want, rel=1e-4)
    # mix 0 is the plain Euclidean metric
    assert np.allclose(query_metric(qp, 2, mix=0.0), np.eye(d)[None], atol=1e-6)


def test_spread_groups_separates_blocks_selected_together():
    """G bundles of G blocks, each bundle selected as a whole by its queries: the placement puts
    the blocks of every bundle in G different groups (every query opens each group once), where
    the naive round-robin of a bundle-ordered stream would put a bundle in few groups."""
    G = 8
    rng = np.random.default_rng(0)
    bundle = rng.permutation(np.repeat(np.arange(G), G))          # block -> bundle
    sel = np.zeros((40, G * G), bool)
    for i in range(40):
        sel[i] = bundle == i % G
    group = spread_groups(sel, G)
    assert np.array_equal(np.bincount(group, minlength=G), np.full(G, G))
    for b in range(G):
        assert np.unique(group[bundle == b]).size == G, f"bundle {b}: {group[bundle == b]}"


def test_more_kv_heads_than_channels_share_channels_in_disjoint_rows():
    cfg = config.load(overrides={"organisation.channels": 2})
    c = synthetic_kv(n_layers=3, n_q_heads=5, n_kv_heads=5, prefill_len=200, decode_steps=2)
    ck = compile_kv(c, cfg, CompileOptions(mode="row-aligned"))
    spans: dict[int, list[tuple[int, int]]] = {}
    for hm in ck.iter_heads():
        assert hm.channel == hm.head % 2
        spans.setdefault(hm.channel, []).append(
            (hm.row_base, hm.row_base + 2 * hm.n_krows + hm.n_crows))
    for ch, sp in spans.items():
        for (_a0, a1), (b0, _b1) in itertools.combinations(sorted(sp), 2):
            assert a1 <= b0, f"channel {ch}: regions overlap"


def test_compile_is_deterministic():
    c = synthetic_kv(n_layers=3, prefill_len=600, decode_steps=70, seed=9)
    for mode in ("artifact", "row-aligned", "global"):
        a = compile_kv(c, CFG, CompileOptions(mode=mode, seed=4))
        b = compile_kv(c, CFG, CompileOptions(mode=mode, seed=4))
        for ha, hb in zip(a.iter_heads(), b.iter_heads(), strict=True):
            for f in ("slot_pos", "block_group", "block_row", "cl_size", "centroid"):
                assert np.array_equal(getattr(ha, f), getattr(hb, f)), (mode, f)


def test_segment_plans():
    o = {"mode": "row-aligned", "buffer": 64, "cluster_tokens": 32, "window": 256}
    segs = plan_segments(o, 700, 900)
    assert [(s.start, s.end, s.k) for s in segs] == [
        (0, 256, 8), (256, 512, 8), (512, 640, 4), (640, 704, 2), (704, 768, 2), (768, 832, 2),
        (832, 896, 2)]
    g = plan_segments({"mode": "global", "buffer": 128, "cluster_tokens": 32}, 700, 900)
    assert [(s.start, s.end, s.k) for s in g] == [(0, 700, 22), (700, 828, 4)]
    # a sink row: 32 positional tokens first, windows start after it
    sk = plan_segments({**o, "sinks": 32}, 700, 900)
    assert [(s.start, s.end, s.k) for s in sk][:4] == [(0, 32, 0), (32, 288, 8), (288, 544, 8),
                                                       (544, 672, 4)]


def test_option_errors():
    c = synthetic_kv(n_layers=1, n_q_heads=2, n_kv_heads=1, prefill_len=64, decode_steps=1)
    with pytest.raises(CompileError, match="cluster_tokens 24: row-aligned clusters must fill "
                                           "whole bank-row slices of 16 tokens"):
        compile_kv(c, CFG, CompileOptions(mode="row-aligned", cluster_tokens=24))
    with pytest.raises(CompileError, match="window 100 must be a positive multiple of the buffer "
                                           "length 64"):
        compile_kv(c, CFG, CompileOptions(mode="artifact", window=100))
    with pytest.raises(CompileError, match="mode must be one of artifact, row-aligned, global, "
                                           "dense, not 'fancy'"):
        compile_kv(c, CFG, CompileOptions(mode="fancy"))
    with pytest.raises(CompileError, match="placement must be one of naive, coselect"):
        compile_kv(c, CFG, CompileOptions(placement="random"))


def test_context_too_large_for_preset():
    cfg = config.load(overrides={"organisation.rows_per_bank": 16})
    c = synthetic_kv(n_layers=2, n_q_heads=3, n_kv_heads=3, prefill_len=3000, decode_steps=1)
    with pytest.raises(KVError, match="rows per bank"):
        compile_kv(c, cfg)


# ---- the artifact folder -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    c = synthetic_kv(n_layers=3, prefill_len=400, decode_steps=30, seed=2)
    ck = compile_kv(c, CFG, CompileOptions(mode="row-aligned"))
    p = save_artifact(ck, tmp_path_factory.mktemp("art") / "a")
    return ck, p


def test_artifact_roundtrip(saved):
    ck, p = saved
    back = load_artifact(p)
    assert back.mode == "row-aligned" and back.input_hash == ck.input_hash
    for a, b in zip(ck.iter_heads(), back.iter_heads(), strict=True):
        for f in ("slot_pos", "block_group", "block_row", "cl_start", "cl_size", "centroid",
                  "buf_group", "buf_row", "seg_ready"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
    for l in range(3):
        assert np.array_equal(back.cache.k[l], ck.cache.k[l])
        assert np.array_equal(back.cache.q[l], ck.cache.q[l])
    man = json.loads((p / "manifest.json").read_text())
    assert man["schema"] == "starc-compiled/1" and man["preset"] == "attacc-hbm3-5.2"
    assert len(man["heads"]) == 9 and man["geometry"]["tokens_per_group_row"] == 32
    clusters = np.load(p / "clusters.npy")
    assert set(clusters.dtype.names) >= {"layer", "head", "channel", "group", "set", "row",
                                         "size"}


def _copy(p, tmp_path):
    import shutil
    q = tmp_path / "copy"
    shutil.copytree(p, q)
    return q


def test_corrupted_array_is_refused(saved, tmp_path):
    q = _copy(saved[1], tmp_path)
    arr = np.load(q / "image_data.npy")
    arr[0, 0, 0] ^= 1
    np.save(q / "image_data.npy", arr)
    with pytest.raises(ArtifactError, match=r"image_data.npy: contents do not match the manifest "
                                            r"hash \(corrupted or edited\); recompile"):
        load_artifact(q)


def test_edited_manifest_is_refused(saved, tmp_path):
    q = _copy(saved[1], tmp_path)
    man = json.loads((q / "manifest.json").read_text())
    man["mode"] = "artifact"
    (q / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="the manifest was modified after it was written"):
        load_artifact(q)


def test_mismatched_preset_is_refused(saved):
    other = config.load("attacc-hbm3-5.2-npc")
    with pytest.raises(ArtifactError, match="compiled for preset 'attacc-hbm3-5.2' .* but the "
                                            "given preset 'attacc-hbm3-5.2-npc' hashes"):
        load_artifact(saved[1], other)


def test_missing_and_foreign_folders(saved, tmp_path):
    q = _copy(saved[1], tmp_path)
    (q / "tokens.npy").unlink()
    with pytest.raises(ArtifactError, match="tokens.npy is missing; the artifact is incomplete"):
        load_artifact(q)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="not a compiled artifact folder"):
        load_artifact(tmp_path / "nothing")

"""KV caches (schema starc-kv/1): containers round-trip, atomic writes, every error message."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from starc import config
from starc.kv import KVCache, KVError, KVMeta, load_kv, save_kv, synthetic_kv


@pytest.fixture(scope="module")
def small() -> KVCache:
    return synthetic_kv(n_layers=2, n_q_heads=6, n_kv_heads=2, head_dim=64, prefill_len=100,
                        decode_steps=3, seed=5)


@pytest.mark.parametrize("name", ["kv.npz", "kv.safetensors", "kvdir"])
def test_roundtrip_every_container(tmp_path, small, name):
    p = save_kv(small, tmp_path / name)
    back = load_kv(p, config.load())
    assert back.meta == small.meta
    for a, b in zip(list(small.tensors()), list(back.tensors()), strict=True):
        assert a[0] == b[0] and a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1])
    assert back.content_hash() == small.content_hash()
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_save_replaces_only_its_own_output(tmp_path, small):
    from starc.outputs import OutputError
    d = tmp_path / "kvdir"
    save_kv(small, d)
    save_kv(replace(small, meta=replace(small.meta, model="second")), d)   # its own: replaced
    assert load_kv(d).meta.model == "second"
    (d / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"files starc did not write \(notes.txt\)"):
        save_kv(small, d)
    assert (d / "notes.txt").read_text() == "mine" and load_kv(d).meta.model == "second"
    f = tmp_path / "kv.npz"
    save_kv(small, f)
    with pytest.raises(OutputError, match="exists; pass --force"):
        save_kv(small, f)
    save_kv(replace(small, meta=replace(small.meta, model="third")), f, force=True)
    assert load_kv(f).meta.model == "third"
    assert sorted(os.listdir(tmp_path)) == ["kv.npz", "kvdir"]


def _broken(small: KVCache, **tensors: np.ndarray) -> KVCache:
    k, v, q = list(small.k), list(small.v), list(small.q)
    for name, arr in tensors.items():
        kind, l = name.split("_")
        {"k": k, "v": v, "q": q}[kind][int(l)] = arr
    return KVCache(meta=small.meta, k=k, v=v, q=q)


def test_wrong_rank_names_tensor_and_fix(small):
    with pytest.raises(KVError, match=r"k_0: rank 2 \(shape \(103, 128\)\), expected rank 3 "
                                      r"\[T, n_kv_heads, head_dim\]; reshape it to \(103, 2, 64\)"):
        _broken(small, k_0=small.k[0].reshape(103, 128)).validate()


def test_kv_length_mismatch(small):
    with pytest.raises(KVError, match=r"v_1: shape \(90, 2, 64\), expected \(103, 2, 64\) .*"
                                      r"length 90 but prefill_len \+ decode_steps = 103"):
        _broken(small, v_1=small.v[1][:90]).validate()


def test_head_count_and_head_size_mismatch(small):
    with pytest.raises(KVError, match="q_0: .*5 heads but meta.n_q_heads = 6"):
        _broken(small, q_0=small.q[0][:, :5]).validate()
    with pytest.raises(KVError, match="k_1: .*head size 32 but meta.head_dim = 64"):
        _broken(small, k_1=small.k[1][..., :32]).validate()


def test_nan_and_inf_are_located(small):
    k = small.k[1].copy()
    k[7, 1, 3] = np.nan
    k[9, 0, 0] = np.inf
    with pytest.raises(KVError, match=r"k_1: 2 NaN/Inf value\(s\), first at index \(7, 1, 3\)"):
        _broken(small, k_1=k).validate()


def test_beyond_fp16_range(small):
    v = small.v[0].astype(np.float32)
    v[2, 0, 5] = 70000.0
    with pytest.raises(KVError, match=r"v_0: 1 value\(s\) beyond the FP16 range \(\|x\| > 65504\)"
                                      r", max \|x\| = 70000 at index \(2, 0, 5\).*rescale"):
        _broken(small, v_0=v).validate()


def test_dtype_not_allowed(small):
    with pytest.raises(KVError, match="q_1: dtype float64 is not allowed; store float16 or "
                                      "float32"):
        _broken(small, q_1=small.q[1].astype(np.float64)).validate()


def test_head_size_the_preset_cannot_hold():
    c = synthetic_kv(n_layers=1, n_q_heads=2, n_kv_heads=1, head_dim=48, prefill_len=16,
                     decode_steps=1)
    with pytest.raises(KVError, match="head_dim 48 does not fit preset 'attacc-hbm3-5.2': "
                                      "head_dim 48 must be a positive multiple of 32"):
        c.validate(config.load())


def test_context_that_does_not_fit():
    cfg = config.load(overrides={"organisation.rows_per_bank": 32})
    c = synthetic_kv(n_layers=2, n_q_heads=3, n_kv_heads=3, head_dim=64, prefill_len=4000,
                     decode_steps=1)
    with pytest.raises(KVError, match=r"the context \(4001 tokens x 2 layers x 3 KV heads\) needs "
                                      r"up to \d+ rows per bank on the busiest channel, preset "
                                      r"'attacc-hbm3-5.2\+overrides' has 32"):
        c.validate(cfg)


def test_meta_errors(tmp_path, small):
    p = save_kv(small, tmp_path / "kvdir")
    meta = json.loads((p / "meta.json").read_text())
    (p / "meta.json").write_text(json.dumps({**meta, "schema": "other/9"}))
    with pytest.raises(KVError, match="meta.schema is 'other/9', expected 'starc-kv/1'"):
        load_kv(p)
    (p / "meta.json").write_text(json.dumps({**meta, "n_q_heads": 5}))
    with pytest.raises(KVError, match=r"meta.n_q_heads \(5\) must be a multiple of "
                                      r"meta.n_kv_heads \(2\)"):
        load_kv(p)
    (p / "meta.json").write_text(json.dumps(meta))
    (p / "q_1.npy").unlink()
    with pytest.raises(KVError, match=r"q_1: missing from .*meta.n_layers = 2"):
        load_kv(p)


def test_missing_file_and_unknown_container(tmp_path):
    with pytest.raises(KVError, match="no such file or directory"):
        load_kv(tmp_path / "nope.npz")
    f = tmp_path / "kv.txt"
    f.write_text("x")
    with pytest.raises(KVError, match="unknown KV container"):
        load_kv(f)


def test_safetensors_without_meta(tmp_path, small):
    from safetensors.numpy import save_file
    save_file({"k_0": small.k[0]}, str(tmp_path / "x.safetensors"))
    with pytest.raises(KVError, match="metadata has no 'starc_meta' key"):
        load_kv(tmp_path / "x.safetensors")


def test_synthetic_is_seeded_and_structured():
    a = synthetic_kv(n_layers=1, prefill_len=512, decode_steps=2, seed=3)
    b = synthetic_kv(n_layers=1, prefill_len=512, decode_steps=2, seed=3)
    c = synthetic_kv(n_layers=1, prefill_len=512, decode_steps=2, seed=4)
    assert a.content_hash() == b.content_hash()
    assert a.content_hash() != c.content_hash()
    m = a.meta
    assert (m.n_layers, m.n_q_heads, m.n_kv_heads, m.head_dim) == (1, 9, 3, 64)
    assert a.k[0].dtype == np.float16 and np.isfinite(a.k[0].astype(np.float32)).all()
    # attention is peaked (not uniform) and the sink at position 0 draws real attention
    q = a.q[0][0].astype(np.float64)
    K = a.k[0][:513].astype(np.float64)
    sink = []
    for h in range(m.n_q_heads):
        s = K[:, h // 3] @ q[h] / 8
        p = np.exp(s - s.max())
        p /= p.sum()
        top = np.sort(p)[::-1]
        assert top[:51].sum() > 0.5, f"seed=3 head {h}: top 10% holds {top[:51].sum():.3f}"
        sink.append(p[0])
    assert np.mean(sink) > 10 / 513, f"seed=3: mean sink weight {np.mean(sink):.2e}"


def test_meta_roundtrip_keeps_extra():
    m = KVMeta(model="x", n_layers=1, n_q_heads=2, n_kv_heads=1, head_dim=64, prefill_len=4,
               decode_steps=0, extra={"prompt": "hi"})
    assert KVMeta.from_json(m.to_json(), "t") == m
    with pytest.raises(KVError, match="meta.head_dim must be positive, not 0"):
        KVMeta.from_json({**m.to_json(), "head_dim": 0}, "t")
    assert replace(m, decode_steps=2).context_len == 6


def test_one_head_is_that_head_and_its_query_group(small):
    one = small.one_head(1, 1)                  # 6 query heads over 2 KV heads: group of 3
    m = one.meta
    assert (m.n_layers, m.n_kv_heads, m.n_q_heads, m.head_dim) == (1, 1, 3, 64)
    assert (m.prefill_len, m.decode_steps) == (small.meta.prefill_len, small.meta.decode_steps)
    np.testing.assert_array_equal(one.k[0][:, 0], small.k[1][:, 1])
    np.testing.assert_array_equal(one.v[0][:, 0], small.v[1][:, 1])
    np.testing.assert_array_equal(one.q[0], small.q[1][:, 3:6])
    one.validate(config.load())
    with pytest.raises(KVError, match="layer 2 / KV head 0 out of range: the cache has 2 layers "
                                      "and 2 KV heads"):
        small.one_head(2, 0)


@pytest.mark.parametrize("name", ["kv.npz", "kv.safetensors", "kvdir"])
def test_prefill_queries_roundtrip_and_errors(tmp_path, small, name):
    c = synthetic_kv(n_layers=2, n_q_heads=6, n_kv_heads=2, head_dim=64, prefill_len=100,
                     decode_steps=3, seed=5, prefill_queries=12)
    # the calibration queries leave K, V, q and the input hash unchanged
    for a, b in zip(c.k + c.v + c.q, small.k + small.v + small.q, strict=True):
        assert np.array_equal(a, b)
    assert c.content_hash() == small.content_hash()
    assert [x.shape for x in c.qp] == [(12, 6, 64)] * 2
    back = load_kv(save_kv(c, tmp_path / name))
    assert back.qp is not None and all(np.array_equal(a, b) for a, b in zip(back.qp, c.qp,
                                                                             strict=True))
    assert load_kv(save_kv(small, tmp_path / f"none-{name}")).qp is None
    with pytest.raises(KVError, match=r"qp_1: shape \(5, 6, 64\), expected \(12, 6, 64\).*5 "
                                      r"prefill queries but qp_0 has 12"):
        replace(c, qp=[c.qp[0], c.qp[1][:5]]).validate()
    with pytest.raises(KVError, match="qp_\\*: 1 layers present"):
        replace(c, qp=c.qp[:1]).validate()
    one = c.one_head(1, 1)
    assert np.array_equal(one.qp[0], c.qp[1][:, 3:6])

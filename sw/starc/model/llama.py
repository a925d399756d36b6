"""NumPy forward pass of the Llama architecture (SmolLM2-135M-Instruct), float32 throughout.

Model: token embedding -> ``n_layers`` x [RMSNorm -> Q/K/V projections -> RoPE -> attention (GQA)
-> output projection -> residual -> RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> logits with
the output projection tied to the token embedding (the file has no ``output.weight``).

RoPE layout. The GGUF converter permutes the rows of ``attn_q`` and ``attn_k`` so that RoPE rotates
*interleaved* pairs of dimensions ``(2i, 2i+1)`` by angle ``pos * base**(-2i/head_dim)``; that is
what this module does. Rotating the two halves (``i``, ``i + head_dim/2``), the Hugging Face layout,
on these weights silently ruins the model (perplexity in the hundreds). Post-RoPE keys and queries
produced here equal the Hugging Face ones up to a fixed reordering of the head dimension: GGUF
dimension ``d`` is HF dimension ``P[d]`` with ``P = [0, 32, 1, 33, ..., 31, 63]``
(:func:`hf_dim_order`); values are unaffected and attention scores are identical.

Attention is pluggable. An attention callable has the signature::

    attention(layer: int,
              q: float32[Sq, n_q_heads, head_dim],      # post-RoPE queries of the new tokens
              k: float32[T, n_kv_heads, head_dim],      # post-RoPE keys of positions 0 .. T-1
              v: float32[T, n_kv_heads, head_dim],      # values of positions 0 .. T-1
              positions: int64[Sq],                     # absolute position of each query
              ) -> float32[Sq, n_q_heads, head_dim]     # attention output per query head

``k``/``v`` are read-only views of the KV cache and already contain the new tokens, so
``T = positions[-1] + 1``. A query at position ``p`` may attend to keys ``0 .. p``; query head
``h`` uses KV head ``h // (n_q_heads // n_kv_heads)``; scores are scaled by ``1/sqrt(head_dim)``.
:func:`dense_causal_attention` is the default. Layers in :data:`DENSE_LAYERS` (0 and 1) are the ones
sparse policies keep dense; :func:`keep_dense_layers` wraps a policy so that they are.

The model calls ``attention`` once per layer, in layer order, from the thread that called
:meth:`LlamaModel.forward`. ``k``/``v`` are views of cache storage: copy them to keep them past
the call.

Speed. Q/K/V and gate/up projections are fused into one matrix product each; the dense attention
works on (KV head, query block) tiles, with the 3 query heads of a group stacked as rows and only
the keys a block can see; a long prompt is processed in chunks of ``prefill_chunk`` tokens. Row
blocks and attention tiles run on a small thread pool with single-threaded BLAS (see
:class:`_Parallel` for why). A 2K-token prefill takes about 7 s on 2 idle cores
(``bench/bench_prefill.py``).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from .gguf_loader import GGUFModel, ModelConfig, load_gguf
from .tokenizer import SmolTokenizer

__all__ = [
    "DENSE_LAYERS",
    "AttentionFn",
    "ForwardOutput",
    "KVCache",
    "LlamaModel",
    "dense_causal_attention",
    "hf_dim_order",
    "is_dense_layer",
    "keep_dense_layers",
    "load_model",
    "rope_tables",
    "apply_rope",
]

AttentionFn = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

#: Layers that sparse attention policies leave dense (first two, as in Quest/STARC practice).
DENSE_LAYERS: tuple[int, ...] = (0, 1)

F32 = np.float32
_T = TypeVar("_T")


def is_dense_layer(layer: int) -> bool:
    """True for the layers that sparse policies keep dense."""
    return layer in DENSE_LAYERS


def keep_dense_layers(policy: AttentionFn, dense_layers: Sequence[int] = DENSE_LAYERS
                      ) -> AttentionFn:
    """Attention that uses the dense default on ``dense_layers`` and ``policy`` elsewhere."""
    dense = frozenset(dense_layers)

    def attention(layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                  positions: np.ndarray) -> np.ndarray:
        if layer in dense:
            return dense_causal_attention(layer, q, k, v, positions)
        return policy(layer, q, k, v, positions)

    return attention


def hf_dim_order(head_dim: int) -> np.ndarray:
    """``P`` with GGUF head dimension ``d`` == Hugging Face dimension ``P[d]``."""
    half = head_dim // 2
    return np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)


# ---------------------------------------------------------------------------------------------
# building blocks


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    ms = np.einsum("ij,ij->i", x, x) / F32(x.shape[-1])
    inv = (F32(1.0) / np.sqrt(ms + F32(eps))).astype(F32)
    return (x * inv[:, None]) * weight


def rope_tables(positions: np.ndarray, head_dim: int, base: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of ``pos * base**(-2i/head_dim)``, shape ``[len(positions), 1, head_dim/2]``."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(F32)[:, None, :], np.sin(ang).astype(F32)[:, None, :]


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray,
               out: np.ndarray | None = None) -> np.ndarray:
    """Rotate interleaved pairs ``(2i, 2i+1)`` of ``x[S, H, d]`` into ``out`` (or a new array)."""
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    if out is None:
        out = np.empty(x.shape, dtype=F32)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def _silu_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    t = np.negative(gate)
    with np.errstate(over="ignore"):
        np.exp(t, out=t)
    t += F32(1.0)
    np.divide(gate, t, out=t)
    t *= up
    return t


# Query rows (query x head-in-group) of one score block; a block is [rows, keys] float32.
_ATTN_ROWS = 128


def _threads() -> int:
    env = os.environ.get("STARC_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Parallel:
    """The forward pass's own thread pool; BLAS runs single-threaded while it is used.

    NumPy releases the GIL inside matrix products and ufuncs, so the model splits work itself:
    row blocks of the projections and MLP, and (KV head, query block) tiles of attention, run on
    all cores at once, each calling single-threaded BLAS. Leaving threading to OpenBLAS instead
    is as fast on an idle machine but collapses (ten times slower, seen on 2 cores) when other
    processes compete for the cores, because its worker threads spin while they wait.
    ``threadpoolctl`` (installed with scikit-learn) switches the BLAS thread count, process-wide,
    for the duration of a forward pass; without it everything runs in the calling thread with
    BLAS's own threading. ``STARC_THREADS`` overrides the number of threads.
    """

    def __init__(self) -> None:
        self.n = 1                    # read from the environment when first used
        self._pool: ThreadPoolExecutor | None = None
        self._ctl: Any = None
        self._ready = False
        self._lock = threading.Lock()

    def _init(self) -> None:
        with self._lock:
            if self._ready:
                return
            self.n = _threads()
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                self.n = 1
            else:
                self._ctl = ThreadpoolController()
                if self.n > 1:
                    self._pool = ThreadPoolExecutor(self.n, thread_name_prefix="starc-model")
            self._ready = True

    @contextmanager
    def single_threaded_blas(self) -> Iterator[None]:
        if not self._ready:
            self._init()
        if self._ctl is None:
            yield
            return
        with self._ctl.limit(limits=1, user_api="blas"):
            yield

    def run(self, fn: Callable[[_T], None], tasks: Sequence[_T]) -> None:
        """``fn(task)`` for every task, on the pool when there is more than one."""
        if not self._ready:
            self._init()
        if self._pool is None or len(tasks) < 2:
            for t in tasks:
                fn(t)
            return
        for _ in self._pool.map(fn, tasks):
            pass

    def row_blocks(self, n_rows: int, min_rows: int = 32) -> list[tuple[int, int]]:
        """Split ``n_rows`` into one contiguous block per thread (one block if small)."""
        if not self._ready:
            self._init()
        parts = max(1, min(self.n if self._pool is not None else 1, n_rows // min_rows))
        edges = np.linspace(0, n_rows, parts + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


_parallel = _Parallel()


def dense_causal_attention(layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                           positions: np.ndarray) -> np.ndarray:
    """Exact softmax attention of each query over keys ``0 .. position`` (GQA), float32."""
    del layer
    sq, hq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    positions = np.asarray(positions, dtype=np.int64)
    # [Hkv, Sq*g, d] with rows ordered (query, head-in-group); the scale is exact (power of 2
    # for d = 64) and folded into the copy this transpose needs anyway.
    qg = (q.reshape(sq, hkv, g, d) * F32(1.0 / math.sqrt(d))).transpose(1, 0, 2, 3)
    qg = qg.reshape(hkv, sq * g, d)
    out = np.empty((hkv, sq * g, d), dtype=F32)

    def block(task: tuple[int, int, int]) -> None:
        h, a, b = task
        pos = positions[a:b]
        tmax = int(pos.max()) + 1
        pmin = int(pos.min())
        s = qg[h, a * g:b * g] @ k[:tmax, h, :].T  # [rows, tmax]
        if tmax - 1 > pmin:  # keys after some query's position: mask them
            cols = np.arange(pmin + 1, tmax)
            mask = cols[None, :] > np.repeat(pos, g)[:, None]
            np.copyto(s[:, pmin + 1:tmax], -np.inf, where=mask)
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        denom = s.sum(axis=-1, keepdims=True)
        o = s @ v[:tmax, h, :]
        o /= denom
        out[h, a * g:b * g] = o

    step = max(1, _ATTN_ROWS // g)
    tasks = [(h, a, min(sq, a + step)) for a in range(0, sq, step) for h in range(hkv)]
    if sq * k.shape[0] < 1 << 16:  # decode steps and short prompts: threads cost more
        for t in tasks:
            block(t)
    else:
        with _parallel.single_threaded_blas():
            _parallel.run(block, tasks)
    return out.reshape(hkv, sq, g, d).transpose(1, 0, 2, 3).reshape(sq, hq, d)


# ---------------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """Post-RoPE keys and values of every layer for positions ``0 .. length-1``.

    Arrays grow geometrically; :meth:`keys`/:meth:`values` return views ``[length, Hkv, d]``.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, capacity: int = 256) -> None:
        self.n_layers = n_layers
        self.length = 0
        shape = (max(1, capacity), n_kv_heads, head_dim)
        self._k = [np.empty(shape, dtype=F32) for _ in range(n_layers)]
        self._v = [np.empty(shape, dtype=F32) for _ in range(n_layers)]

    @property
    def capacity(self) -> int:
        return self._k[0].shape[0]

    def reserve(self, n: int) -> None:
        """Make room for ``n`` positions in total."""
        if n <= self.capacity:
            return
        new = max(n, 2 * self.capacity)
        for arrs in (self._k, self._v):
            for i, a in enumerate(arrs):
                b = np.empty((new, *a.shape[1:]), dtype=F32)
                b[: self.length] = a[: self.length]
                arrs[i] = b

    def _write(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        self._k[layer][start:start + k.shape[0]] = k
        self._v[layer][start:start + v.shape[0]] = v

    def _upto(self, layer: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        k = self._k[layer][:end]
        v = self._v[layer][:end]
        k.flags.writeable = False
        v.flags.writeable = False
        return k, v

    def keys(self, layer: int) -> np.ndarray:
        return self._upto(layer, self.length)[0]

    def values(self, layer: int) -> np.ndarray:
        return self._upto(layer, self.length)[1]

    def truncate(self, length: int) -> None:
        """Forget positions ``length ..``, e.g. to re-run a decode step with another policy."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {length}")
        self.length = length


# ---------------------------------------------------------------------------------------------
# model


@dataclass
class _Layer:
    attn_norm: np.ndarray
    wqkv_t: np.ndarray  # [D, (Hq + 2 Hkv) d], a transposed view
    wo_t: np.ndarray  # [Hq d, D]
    ffn_norm: np.ndarray
    wgu_t: np.ndarray  # [D, 2 F]
    wdown_t: np.ndarray  # [F, D]


@dataclass
class ForwardOutput:
    """Result of :meth:`LlamaModel.forward`.

    ``logits``: ``[S, vocab]`` (``logits="all"``), ``[1, vocab]`` (``"last"``) or ``None``.
    ``q``: with ``capture_q``, the post-RoPE queries of each layer, ``[S, Hq, d]`` (unscaled).
    """

    logits: np.ndarray | None
    q: list[np.ndarray] | None = None


class LlamaModel:
    """The SmolLM2 network as NumPy arrays; see the module docstring for the attention contract."""

    def __init__(self, weights: GGUFModel, *, attention: AttentionFn | None = None,
                 prefill_chunk: int = 512) -> None:
        cfg = weights.config
        self.config: ModelConfig = cfg
        self.source = weights
        self.attention: AttentionFn = attention or dense_causal_attention
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be a positive integer, not {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        t = weights.tensors
        self.token_embd = t["token_embd.weight"]
        self.output_norm = t["output_norm.weight"]
        self.output = t.get("output.weight", self.token_embd)
        self.layers: list[_Layer] = []
        for layer in range(cfg.n_layers):
            b = f"blk.{layer}."
            wqkv = np.concatenate([t[b + "attn_q.weight"], t[b + "attn_k.weight"],
                                   t[b + "attn_v.weight"]], axis=0)
            wgu = np.concatenate([t[b + "ffn_gate.weight"], t[b + "ffn_up.weight"]], axis=0)
            self.layers.append(_Layer(
                attn_norm=t[b + "attn_norm.weight"],
                wqkv_t=wqkv.T,
                wo_t=t[b + "attn_output.weight"].T,
                ffn_norm=t[b + "ffn_norm.weight"],
                wgu_t=wgu.T,
                wdown_t=t[b + "ffn_down.weight"].T,
            ))
        self._tokenizer: SmolTokenizer | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **kwargs: object) -> LlamaModel:
        return cls(load_gguf(path), **kwargs)  # type: ignore[arg-type]

    @property
    def tokenizer(self) -> SmolTokenizer:
        if self._tokenizer is None:
            self._tokenizer = SmolTokenizer(self.source.tokenizer_json)
        return self._tokenizer

    def new_cache(self, capacity: int = 256) -> KVCache:
        c = self.config
        return KVCache(c.n_layers, c.n_kv_heads, c.head_dim, capacity)

    # -- forward ------------------------------------------------------------------------------

    def _check_tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(tokens)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("tokens must be a non-empty 1-D sequence of token ids")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token ids must be integers, not {ids.dtype}")
        bad = ids[(ids < 0) | (ids >= self.config.vocab_size)]
        if bad.size:
            raise ValueError(f"token ids out of range 0..{self.config.vocab_size - 1}: "
                             f"{bad[:5].tolist()}")
        return ids.astype(np.int64)

    def forward(self, tokens: Sequence[int] | np.ndarray, cache: KVCache | None = None, *,
                logits: Literal["last", "all", "none"] = "last", capture_q: bool = False,
                attention: AttentionFn | None = None,
                on_layer: Callable[[int, int], None] | None = None) -> ForwardOutput:
        """Run ``tokens`` at positions ``cache.length ..`` and append their K/V to ``cache``.

        Prompts longer than ``prefill_chunk`` are processed chunk by chunk (same result up to
        float32 rounding). ``on_layer(layer, n_tokens)`` is called after every layer of every
        chunk, for progress bars.
        """
        ids = self._check_tokens(tokens)
        cfg = self.config
        if cache is None:
            cache = self.new_cache(len(ids))
        if cache.length + len(ids) > cfg.context_length:
            raise ValueError(f"{cache.length + len(ids)} positions exceed the model's context "
                             f"length {cfg.context_length}")
        cache.reserve(cache.length + len(ids))
        attn = attention or self.attention
        outs: list[np.ndarray] = []
        qs: list[list[np.ndarray]] = [[] for _ in range(cfg.n_layers)] if capture_q else []
        n = len(ids)
        with _parallel.single_threaded_blas():
            for a in range(0, n, self.prefill_chunk):
                b = min(n, a + self.prefill_chunk)
                want = logits == "all" or (logits == "last" and b == n)
                x = self._run_chunk(ids[a:b], cache, attn, qs if capture_q else None, on_layer)
                if want:
                    rows = x if logits == "all" else x[-1:]
                    outs.append(self._logits(rows))
        out = np.concatenate(outs, axis=0) if outs else None
        q = [np.concatenate(ql, axis=0) for ql in qs] if capture_q else None
        return ForwardOutput(logits=out, q=q)

    def _run_chunk(self, ids: np.ndarray, cache: KVCache, attn: AttentionFn,
                   qs: list[list[np.ndarray]] | None,
                   on_layer: Callable[[int, int], None] | None) -> np.ndarray:
        cfg = self.config
        hq, hkv, d, ff = cfg.n_q_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_ff
        start = cache.length
        s = len(ids)
        end = start + s
        positions = np.arange(start, end, dtype=np.int64)
        cos, sin = rope_tables(positions, d, cfg.rope_base)
        x = self.token_embd[ids]  # a copy: updated in place below
        blocks = _parallel.row_blocks(s)
        for li, w in enumerate(self.layers):
            q = np.empty((s, hq, d), dtype=F32)
            k_all, v_all = cache._k[li], cache._v[li]

            def qkv_rows(ab: tuple[int, int], w: _Layer = w, q: np.ndarray = q,
                         k_all: np.ndarray = k_all, v_all: np.ndarray = v_all) -> None:
                a, b = ab
                n = b - a
                qkv = rms_norm(x[a:b], w.attn_norm, cfg.rms_eps) @ w.wqkv_t
                apply_rope(qkv[:, : hq * d].reshape(n, hq, d), cos[a:b], sin[a:b], q[a:b])
                apply_rope(qkv[:, hq * d:(hq + hkv) * d].reshape(n, hkv, d), cos[a:b],
                           sin[a:b], k_all[start + a:start + b])
                v_all[start + a:start + b] = qkv[:, (hq + hkv) * d:].reshape(n, hkv, d)

            _parallel.run(qkv_rows, blocks)
            kc, vc = cache._upto(li, end)
            q.flags.writeable = False
            o = np.asarray(attn(li, q, kc, vc, positions), dtype=F32)
            if o.shape != q.shape:
                raise ValueError(f"attention of layer {li} returned shape {o.shape}, "
                                 f"expected {q.shape}")
            if qs is not None:
                qs[li].append(q)
            o2 = o.reshape(s, hq * d)

            def out_mlp_rows(ab: tuple[int, int], w: _Layer = w, o2: np.ndarray = o2) -> None:
                a, b = ab
                xa = x[a:b]
                xa += o2[a:b] @ w.wo_t
                gu = rms_norm(xa, w.ffn_norm, cfg.rms_eps) @ w.wgu_t
                xa += _silu_mul(gu[:, :ff], gu[:, ff:]) @ w.wdown_t

            _parallel.run(out_mlp_rows, blocks)
            if on_layer is not None:
                on_layer(li, s)
        cache.length = end
        return x

    def _logits(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.output.shape[0]), dtype=F32)

        def rows(ab: tuple[int, int]) -> None:
            a, b = ab
            h = rms_norm(x[a:b], self.output_norm, self.config.rms_eps)
            np.matmul(h, self.output.T, out=out[a:b])

        if x.shape[0] == 1:  # one row: split the vocabulary instead
            h = rms_norm(x, self.output_norm, self.config.rms_eps)

            def cols(ab: tuple[int, int]) -> None:
                a, b = ab
                np.matmul(h, self.output[a:b].T, out=out[:, a:b])

            _parallel.run(cols, _parallel.row_blocks(self.output.shape[0], 4096))
        else:
            _parallel.run(rows, _parallel.row_blocks(x.shape[0]))
        return out

    # -- conveniences -------------------------------------------------------------------------

    def generate(self, prompt: Sequence[int], max_new_tokens: int, *,
                 stop_ids: Sequence[int] | None = None, cache: KVCache | None = None,
                 attention: AttentionFn | None = None) -> list[int]:
        """Greedy continuation of ``prompt``; stops early at any of ``stop_ids`` (kept)."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, not {max_new_tokens}")
        stops = set(stop_ids) if stop_ids is not None else {self.config.eos_token_id}
        cache = cache or self.new_cache(len(prompt) + max_new_tokens)
        out: list[int] = []
        if max_new_tokens == 0:
            return out
        res = self.forward(prompt, cache, attention=attention)
        while True:
            assert res.logits is not None
            nxt = int(np.argmax(res.logits[-1]))
            out.append(nxt)
            if nxt in stops or len(out) >= max_new_tokens:
                return out
            res = self.forward([nxt], cache, attention=attention)

    def nll(self, tokens: Sequence[int]) -> np.ndarray:
        """Negative log-likelihood (nats) of ``tokens[1:]`` each given its prefix."""
        ids = self._check_tokens(tokens)
        if len(ids) < 2:
            raise ValueError("need at least two tokens to score")
        res = self.forward(ids, logits="all")
        assert res.logits is not None
        lg = res.logits[:-1].astype(np.float64)
        m = lg.max(axis=-1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(lg - m).sum(axis=-1)))
        return lse - lg[np.arange(len(ids) - 1), ids[1:]]

    def perplexity(self, tokens: Sequence[int]) -> float:
        return float(np.exp(self.nll(tokens).mean()))


def load_model(path: str | os.PathLike[str] | None = None, *,
               attention: AttentionFn | None = None, prefill_chunk: int = 512) -> LlamaModel:
    """Load (from the on-disk cache after the first time) and build the model."""
    return LlamaModel(load_gguf(path), attention=attention, prefill_chunk=prefill_chunk)

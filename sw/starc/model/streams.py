"""Lockstep decoding of many attention policies from one shared prefill.

Sparse attention policies only change decoding: every policy sees the same densely prefilled
prompt. :func:`decode_streams` therefore takes one prefilled :class:`~starc.model.llama.KVCache`
and runs ``S`` *streams* (one per policy and budget) side by side, one token per step for all of
them at once:

- every stream owns a copy of the prompt's keys and values followed by its own decoded tokens
  (``[S, Hkv, P + steps, d]`` per layer, so each stream's keys of one KV head are one contiguous
  ``[n, d]`` array, as the selection functions take them);
- the projections, the MLP and the logits of all active streams are one matrix product per weight
  (the weights are read once per step instead of once per stream and step: one-row products are
  bound by memory bandwidth);
- attention runs per stream and KV head: dense over all ``n`` keys on the dense layers, for the
  dense stream, and whenever ``n <= B``; otherwise softmax over the positions the stream's
  selector returns, exactly as :func:`starc.model.policy_decode.policy_attention` computes it.

Two modes per step: greedy (each stream feeds back its own argmax, until its ``stop`` says so or
``steps`` tokens) and teacher forcing (every stream is fed the same given tokens; the
log-probability of each next given token is returned), the latter for perplexity and next-token
agreement. All streams are at the same position at every step, so RoPE tables are shared.

Memory: ``2 * n_layers * S * Hkv * (P + steps) * d * 4`` bytes, about 0.6 GB for 7 streams of a
2K-token SmolLM2 prompt; callers decode large stream sets in groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .llama import KVCache, LlamaModel, _parallel, _silu_mul, apply_rope, rms_norm, rope_tables

__all__ = ["Selector", "StreamSpec", "decode_streams", "StreamResult"]

F32 = np.float32

#: ``select(layer, kv_head, q [g, d], K [n, d], n) -> list of g sorted position arrays``
Selector = Callable[[int, int, np.ndarray, np.ndarray, int], Sequence[np.ndarray]]


@dataclass(frozen=True)
class StreamSpec:
    """One decoding stream: a label, its budget and its selector (``None``: dense attention)."""

    label: str
    budget: int
    select: Selector | None


@dataclass
class StreamResult:
    """Per stream: the tokens decoded (greedy) or the log-probabilities of the forced tokens."""

    tokens: list[list[int]]
    logprobs: list[np.ndarray]


def _softmax_out(s: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Masked attention of one head as ``policy_attention`` computes it."""
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ V


def _selected_out(sel: Sequence[np.ndarray], qg: np.ndarray, Kh: np.ndarray, Vh: np.ndarray,
                  scale: np.float32) -> np.ndarray:
    """Each head ``j`` of the group attends to ``sel[j]`` (masked softmax, as
    ``policy_attention``); heads that share one selection (SparQ, streaming) are one product."""
    g = len(sel)
    first = sel[0]
    if all(x is first for x in sel[1:]):
        return _softmax_out((qg @ Kh[first].T) * scale, Vh[first])
    out = np.empty((g, Kh.shape[1]), F32)
    for j in range(g):
        pj = sel[j]
        out[j] = _softmax_out((Kh[pj] @ qg[j]) * scale, Vh[pj])
    return out


def _dense_out(s: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Full attention of a query group as :func:`~starc.model.llama.dense_causal_attention`
    computes it (normalised after the value product)."""
    s = s - s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    o = s @ V
    o /= s.sum(axis=-1, keepdims=True)
    return o


def decode_streams(model: LlamaModel, cache: KVCache, streams: Sequence[StreamSpec], *,
                   first: int | Sequence[int] | None = None, steps: int,
                   forced: Sequence[int] | None = None,
                   stop: Callable[[int, list[int]], bool] | None = None,
                   dense_layers: Sequence[int] = (0, 1)) -> StreamResult:
    """Decode ``streams`` in lockstep after the prompt held in ``cache`` (left unchanged).

    Greedy (``forced`` is None): ``first`` is the first token of every stream (the dense
    prefill's argmax: it is the same for every policy) and counts as step 0; each stream then
    decodes until it has ``steps`` tokens or ``stop(stream_index, tokens)`` is true (checked
    after every token, ``first`` included). Teacher forcing: the tokens ``forced[0 .. steps-1]``
    are fed at positions ``P ..`` and ``logprobs[s][t]`` is stream ``s``'s log-probability of
    ``forced[t + 1]`` (natural log, float64), ``t = 0 .. steps - 2``.
    """
    cfg = model.config
    P = cache.length
    S = len(streams)
    if S == 0:
        return StreamResult([], [])
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    if P + steps > cfg.context_length:
        raise ValueError(f"{P} prompt tokens + {steps} steps exceed the model's context length "
                         f"{cfg.context_length}")
    if forced is not None:
        forced = [int(t) for t in forced]
        if len(forced) < steps:
            raise ValueError(f"teacher forcing needs {steps} tokens, got {len(forced)}")
    elif first is None:
        raise ValueError("greedy decoding needs the first token (the prefill's argmax)")
    hq, hkv, d, ff = cfg.n_q_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_ff
    g = hq // hkv
    N = P + steps
    dense = frozenset(int(x) for x in dense_layers)
    # per layer [S, Hkv, N, d]: the prompt copied into every stream, then its own tokens
    Kb, Vb = [], []
    for li in range(cfg.n_layers):
        kb = np.empty((S, hkv, N, d), F32)
        vb = np.empty((S, hkv, N, d), F32)
        kb[:, :, :P] = cache.keys(li).transpose(1, 0, 2)[None]
        vb[:, :, :P] = cache.values(li).transpose(1, 0, 2)[None]
        Kb.append(kb)
        Vb.append(vb)

    tokens: list[list[int]] = [[] for _ in range(S)]
    logprobs: list[list[float]] = [[] for _ in range(S)]
    if forced is None:
        firsts = [int(first)] * S if isinstance(first, int | np.integer) else \
            [int(t) for t in first]  # type: ignore[union-attr]
        if len(firsts) != S:
            raise ValueError(f"{len(firsts)} first tokens for {S} streams")
        active = []
        for s in range(S):
            tokens[s].append(firsts[s])
            if not (steps <= 1 or (stop is not None and stop(s, tokens[s]))):
                active.append(s)
    else:
        active = list(range(S))
    scale = F32(1.0 / math.sqrt(d))

    with _parallel.single_threaded_blas():
        for t in range(steps - (1 if forced is None else 0)):
            if not active:
                break
            if forced is not None:
                if t >= steps - 1:
                    break
                ids = np.full(len(active), forced[t], dtype=np.int64)
            else:
                ids = np.array([tokens[s][-1] for s in active], dtype=np.int64)
            pos = P + t
            cos, sin = rope_tables(np.array([pos]), d, cfg.rope_base)
            x = model.token_embd[ids]                                      # [A, D]
            A = len(active)
            act = np.asarray(active)
            for li, w in enumerate(model.layers):
                qkv = rms_norm(x, w.attn_norm, cfg.rms_eps) @ w.wqkv_t
                q = apply_rope(qkv[:, :hq * d].reshape(A, hq, d), cos, sin)
                k = apply_rope(qkv[:, hq * d:(hq + hkv) * d].reshape(A, hkv, d), cos, sin)
                v = qkv[:, (hq + hkv) * d:].reshape(A, hkv, d)
                Kb[li][act, :, pos] = k
                Vb[li][act, :, pos] = v
                n = pos + 1
                o = np.empty((A, hq, d), F32)
                layer_dense = li in dense
                for a, s in enumerate(active):
                    spec = streams[s]
                    full = layer_dense or spec.select is None or n <= spec.budget
                    for h in range(hkv):
                        Kh = Kb[li][s, h, :n]
                        Vh = Vb[li][s, h, :n]
                        qg = q[a, h * g:(h + 1) * g]
                        if full:
                            o[a, h * g:(h + 1) * g] = _dense_out((qg * scale) @ Kh.T, Vh)
                            continue
                        o[a, h * g:(h + 1) * g] = _selected_out(
                            spec.select(li, h, qg, Kh, n), qg, Kh, Vh, scale)
                x = x + o.reshape(A, hq * d) @ w.wo_t
                gu = rms_norm(x, w.ffn_norm, cfg.rms_eps) @ w.wgu_t
                x = x + _silu_mul(gu[:, :ff], gu[:, ff:]) @ w.wdown_t
            logits = model._logits(x)                                        # [A, vocab]
            if forced is not None:
                lg = logits.astype(np.float64)
                m = lg.max(axis=1, keepdims=True)
                lse = m[:, 0] + np.log(np.exp(lg - m).sum(axis=1))
                target = forced[t + 1]
                for a, s in enumerate(active):
                    logprobs[s].append(float(lg[a, target] - lse[a]))
                    tokens[s].append(int(np.argmax(logits[a])))
                continue
            nxt = np.argmax(logits, axis=1)
            still = []
            for a, s in enumerate(active):
                tokens[s].append(int(nxt[a]))
                if len(tokens[s]) < steps and not (stop is not None and stop(s, tokens[s])):
                    still.append(s)
            active = still
    return StreamResult(tokens, [np.asarray(lp, dtype=np.float64) for lp in logprobs])

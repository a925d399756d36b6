"""Decode the real model (SmolLM2) under sparse attention policies, optionally on the simulated PIM.

Bridge between :mod:`starc.model.llama` (pluggable attention) and :mod:`starc.planner.policies`
(per-step selection functions):

- :func:`policy_attention` builds an :data:`~starc.model.llama.AttentionFn` in which, on every
  layer outside ``dense_layers``, each query head attends only to the positions its policy selects
  under the budget ``B`` (recent tokens count in ``B``; GQA: every query head has its own
  selection except SparQ, whose selection is shared per KV head as
  :func:`~starc.planner.policies.select_sparq` returns it). STARC policies select on a
  :class:`~starc.compiler.compiled.CompiledKV` of the prompt's prefill KV (compiled once after
  prefill); tokens decoded later are the unclustered recent buffer. With ``pim=True`` the output
  of every selected set is computed by the golden PIM functional model
  (:func:`starc.golden.functional.execute`, bit-exact FP16/FP32 PU numerics) on the selected
  tokens laid out in the dense AttAcc layout; otherwise in float32 (softmax over the selected set,
  i.e. masked attention). Queries of a multi-token call (prefill, teacher forcing) are handled row
  by row with their own causal context, exactly as if decoded one at a time.
- :func:`decode_answers` prefills once densely, compiles the artifact / row-aligned layouts once,
  and greedily decodes the same prompt under every policy (the ``starc demo`` entry point).
- :func:`policy_selector` is the selection rule alone, for :mod:`starc.model.streams` (the
  lockstep decoding behind ``starc eval-quality`` and ``starc sweep --accuracy``,
  docs/real-model-eval.md).

The first generated token always comes from the dense prefill (all policies prefill densely, as
STARC does), so sparse attention acts from the second answer token on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from starc.compiler.compiled import CompiledKV
from starc.config import Config
from starc.planner import registry as _registry

from .llama import AttentionFn, KVCache, LlamaModel, dense_causal_attention
from .prompts import PasskeyPrompt
from .streams import Selector

__all__ = [
    "DEFAULT_POLICIES",
    "KNOWN_POLICIES",
    "MassRecall",
    "decode_answers",
    "pim_attention_head",
    "policy_attention",
    "policy_selector",
    "prefill_kv",
]

#: policies :func:`policy_attention` understands (the planner's registry; ``starc*`` need a
#: compiled layout)
KNOWN_POLICIES = _registry.POLICIES
#: compile mode of each clustered policy
STARC_MODES = {n: p.layout for n, p in _registry.REGISTRY.items() if p.clustered}
DEFAULT_POLICIES = ("dense", "quest", "sparq", "starc", "starc-row")

def _check_policy(policy: str) -> None:
    if policy not in KNOWN_POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(KNOWN_POLICIES)}")


@dataclass
class MassRecall:
    """Accumulates the softmax mass (exact float32 scores over the whole causal context) that
    falls inside each query head's selected set, over sparse layers, heads and query rows."""

    total: float = 0.0
    count: int = 0
    per_layer: dict[int, list[float]] = field(default_factory=dict)

    def add(self, layer: int, mass: float) -> None:
        self.total += mass
        self.count += 1
        acc = self.per_layer.setdefault(layer, [0.0, 0.0])
        acc[0] += mass
        acc[1] += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


# ---------------------------------------------------------------------------------------------
# PIM numerics


class _PimRunner:
    """Runs one query head's attention over a token set on the golden functional model."""

    def __init__(self, cfg: Config, head_dim: int) -> None:
        from starc.address import Geometry
        from starc.golden.programs import dense_program

        self.cfg = cfg
        self.d = head_dim
        self.geo = Geometry(cfg, head_dim)
        self._dense_program = dense_program
        self._programs: dict[int, np.ndarray] = {}
        if head_dim % cfg.org.elements_per_column:
            raise ValueError(f"head_dim {head_dim} is not a multiple of the "
                             f"{cfg.org.elements_per_column}-lane column")

    def program(self, L: int) -> np.ndarray:
        prog = self._programs.get(L)
        if prog is None:
            prog = self._dense_program(self.cfg, L, self.d)
            self._programs[L] = prog
        return prog

    def image(self, K: np.ndarray, V: np.ndarray) -> dict[tuple[int, int, int], np.ndarray]:
        """Bank rows of ``L`` tokens in the dense layout: token ``t`` at row
        ``t // (G tpgr)``, group ``(t // tpgr) % G`` (:func:`dense_token_address`); keys in rows
        ``0 .. R-1``, values in ``R .. 2R-1`` (``dense_program``'s default value base)."""
        from starc.address import blocks_to_banks

        geo = self.geo
        L = K.shape[0]
        per_row = geo.G * geo.tpgr
        n_rows = -(-L // per_row)
        out: dict[tuple[int, int, int], np.ndarray] = {}
        for base, X in ((0, K), (n_rows, V)):
            pad = np.zeros((n_rows * per_row, self.d), np.float16)
            pad[:L] = X.astype(np.float16)
            banks = blocks_to_banks(pad.view(np.uint16).reshape(-1, geo.tpgr, self.d), geo)
            for b in range(banks.shape[0]):                      # block b = row * G + group
                row, group = divmod(b, geo.G)
                for bank in range(geo.bpg):
                    out[(group, bank, base + row)] = banks[b, bank]
        return out

    def attend(self, q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:
        from starc.golden.functional import execute

        L = K.shape[0]
        if L == 0:
            return np.zeros(self.d, np.float32)
        qs = (q.astype(np.float32) * np.float32(1.0 / math.sqrt(self.d))).astype(np.float16)
        wdata = qs.view(np.uint16).reshape(-1, self.cfg.org.elements_per_column)
        res = execute(self.program(L), wdata, self.image(K, V), self.cfg, self.d)
        return np.asarray(res.output, dtype=np.float32)


def pim_attention_head(cfg: Config, q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Attention of one query ``q [d]`` over ``K, V [L, d]`` on the golden PIM model: the query
    pre-scaled by ``1/sqrt(d)`` and rounded to FP16, keys/values rounded to FP16, FP32
    accumulation, PIM softmax; returns the FP16 output widened to float32."""
    return _PimRunner(cfg, q.shape[-1]).attend(q, K, V)


# ---------------------------------------------------------------------------------------------
# policy attention


def policy_selector(policy: str, budget: int, *, compiled: CompiledKV | None = None,
                    sparq_r: int | None = None, sparq_recent: int = 64, sinks: int = 4
                    ) -> Selector | None:
    """``select(layer, kv_head, q [g, d], K [n, d], n)`` -> one sorted position array per query
    head of the group, for ``policy`` at budget ``B`` (the rule of the planner's registry,
    :mod:`starc.planner.registry`); ``None`` for dense (attend to every position).

    ``compiled`` is the CompiledKV the clustered (STARC) policies select on; its mode must be
    the policy's layout."""
    _check_policy(policy)
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget <= 0:
        raise ValueError(f"budget must be a positive integer, not {budget!r}")
    B = int(budget)
    if policy in STARC_MODES:
        if compiled is None:
            raise ValueError(f"policy {policy!r} needs compiled=<CompiledKV in mode "
                             f"{STARC_MODES[policy]!r}> of the prompt's prefill KV")
        if compiled.mode != STARC_MODES[policy]:
            raise ValueError(f"policy {policy!r} needs a {STARC_MODES[policy]!r} layout, the "
                             f"compiled KV is {compiled.mode!r}")
    if policy == "dense":
        return None
    spec = _registry.get(policy)
    params = _registry.Params(sparq_r=sparq_r, sparq_recent=sparq_recent, sinks=sinks)

    def select(layer: int, kvh: int, qg: np.ndarray, Kh: np.ndarray, n: int
               ) -> list[np.ndarray]:
        head = compiled.head(layer, kvh) if spec.clustered and compiled is not None else None
        return spec.select(qg, n=n, budget=B, params=params, K=Kh, head=head).positions

    select.__name__ = f"select_{policy}@{B}"
    return select


def policy_attention(policy: str, budget: int, *, compiled: CompiledKV | None = None,
                     cfg: Config | None = None, dense_layers: Sequence[int] = (0, 1),
                     pim: bool = False, sparq_r: int | None = None, sparq_recent: int = 64,
                     sinks: int = 4, recall: MassRecall | None = None) -> AttentionFn:
    """An attention callable for :meth:`LlamaModel.forward` running ``policy`` at budget ``B``.

    ``compiled``: the CompiledKV STARC policies select on (its mode must match: ``starc`` ->
    artifact, ``starc-row`` -> row-aligned). ``cfg``: the preset (needed with ``pim=True``;
    defaults to ``compiled.cfg``). ``recall``: if given, the attention mass inside every
    selection is accumulated into it (costs one exact score pass per head).
    """
    select = policy_selector(policy, budget, compiled=compiled, sparq_r=sparq_r,
                             sparq_recent=sparq_recent, sinks=sinks)
    B = int(budget)
    if cfg is None and compiled is not None:
        cfg = compiled.cfg
    if pim and cfg is None:
        raise ValueError("pim=True needs cfg (the preset the golden model runs)")
    dense = frozenset(int(x) for x in dense_layers)
    runners: dict[int, _PimRunner] = {}

    if select is None:
        def select(layer: int, kvh: int, qg: np.ndarray, Kh: np.ndarray, n: int
                   ) -> list[np.ndarray]:
            return [np.arange(n, dtype=np.int64)] * qg.shape[0]

    def attention(layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                  positions: np.ndarray) -> np.ndarray:
        Sq, Hq, d = q.shape
        Hkv = k.shape[1]
        n_max = int(positions.max()) + 1
        if layer in dense or (not pim and recall is None
                              and (policy == "dense" or n_max <= B)):
            # every policy attends to everything when n <= B: use the model's own kernel so the
            # result is bit-identical to dense decoding
            return dense_causal_attention(layer, q, k, v, positions)
        g = Hq // Hkv
        scale = np.float32(1.0 / math.sqrt(d))
        out = np.empty((Sq, Hq, d), np.float32)
        runner = None
        if pim:
            assert cfg is not None
            runner = runners.get(d)
            if runner is None:
                runner = runners[d] = _PimRunner(cfg, d)
        for i in range(Sq):
            n = int(positions[i]) + 1
            for kvh in range(Hkv):
                Kh = np.asarray(k[:n, kvh], dtype=np.float32)
                Vh = np.asarray(v[:n, kvh], dtype=np.float32)
                qg = np.asarray(q[i, kvh * g:(kvh + 1) * g], dtype=np.float32)
                sel = select(layer, kvh, qg, Kh, n)
                full = None
                if recall is not None:
                    s = (qg @ Kh.T) * scale
                    s -= s.max(1, keepdims=True)
                    full = np.exp(s)
                    full /= full.sum(1, keepdims=True)
                for j in range(g):
                    pos = sel[j]
                    if full is not None:
                        recall.add(layer, float(full[j, pos].sum()))
                    if runner is not None:
                        out[i, kvh * g + j] = runner.attend(qg[j], Kh[pos], Vh[pos])
                        continue
                    Ks = Kh[pos]
                    s1 = (Ks @ qg[j]) * scale
                    s1 -= s1.max()
                    p = np.exp(s1)
                    p /= p.sum()
                    out[i, kvh * g + j] = p @ Vh[pos]
        return out

    attention.__name__ = f"{policy}@{B}{'+pim' if pim else ''}"
    return attention


# ---------------------------------------------------------------------------------------------
# prefill, compile, decode


def _prompt_ids(prompt: PasskeyPrompt | Sequence[int]) -> list[int]:
    ids = prompt.token_ids if isinstance(prompt, PasskeyPrompt) else prompt
    out = [int(t) for t in ids]
    if not out:
        raise ValueError("the prompt is empty")
    return out


def prefill_kv(model: LlamaModel, cache: KVCache, prefill_len: int) -> Any:
    """A ``starc.kv.KVCache`` (schema starc-kv/1, no decode steps) of the model cache's first
    ``prefill_len`` positions, as the compiler takes it."""
    from starc.kv import KVCache as StarcKV
    from starc.kv import KVMeta

    c = model.config
    meta = KVMeta(model=c.name, n_layers=c.n_layers, n_q_heads=c.n_q_heads,
                  n_kv_heads=c.n_kv_heads, head_dim=c.head_dim, prefill_len=prefill_len,
                  decode_steps=0)
    k = [np.array(cache.keys(l)[:prefill_len], dtype=np.float32) for l in range(c.n_layers)]
    v = [np.array(cache.values(l)[:prefill_len], dtype=np.float32) for l in range(c.n_layers)]
    q = [np.zeros((0, c.n_q_heads, c.head_dim), np.float32) for _ in range(c.n_layers)]
    return StarcKV(meta=meta, k=k, v=v, q=q)


def _compile_for(model: LlamaModel, cache: KVCache, P: int, policies: Sequence[str], cfg: Config,
                 dense_layers: Sequence[int]) -> dict[str, CompiledKV]:
    from starc.compiler.compile import compile_kv

    first = {STARC_MODES[p]: p for p in reversed(policies) if p in STARC_MODES}
    if not first:
        return {}
    kv = prefill_kv(model, cache, P)
    by_mode = {m: compile_kv(kv, cfg, _registry.compile_options(p, dense_layers=dense_layers))
               for m, p in sorted(first.items())}
    return {p: by_mode[STARC_MODES[p]] for p in policies if p in STARC_MODES}


@dataclass
class _Prefilled:
    ids: list[int]
    cache: KVCache
    first: int                     # greedy token after the prompt (dense prefill)
    logits: np.ndarray             # last-position logits of the prefill
    compiled: dict[str, CompiledKV]
    seconds: dict[str, float]


def _prefill(model: LlamaModel, ids: list[int], policies: Sequence[str], cfg: Config,
             extra: int, dense_layers: Sequence[int]) -> _Prefilled:
    t0 = time.perf_counter()
    cache = model.new_cache(len(ids) + extra)
    res = model.forward(ids, cache)
    assert res.logits is not None
    t1 = time.perf_counter()
    compiled = _compile_for(model, cache, len(ids), policies, cfg, dense_layers)
    t2 = time.perf_counter()
    return _Prefilled(ids, cache, int(np.argmax(res.logits[-1])), res.logits[-1], compiled,
                      {"prefill": t1 - t0, "compile": t2 - t1})


def _greedy(model: LlamaModel, pre: _Prefilled, attention: AttentionFn, steps: int) -> list[int]:
    pre.cache.truncate(len(pre.ids))
    out = [pre.first]
    eos = model.config.eos_token_id
    while len(out) < steps and out[-1] != eos:
        res = model.forward([out[-1]], pre.cache, attention=attention)
        assert res.logits is not None
        out.append(int(np.argmax(res.logits[-1])))
    pre.cache.truncate(len(pre.ids))
    return out


def _attention_for(policy: str, budget: int, pre: _Prefilled, cfg: Config,
                   dense_layers: Sequence[int], pim: bool = False,
                   recall: MassRecall | None = None) -> AttentionFn:
    return policy_attention(policy, budget, compiled=pre.compiled.get(policy), cfg=cfg,
                            dense_layers=dense_layers, pim=pim, recall=recall)


def decode_answers(model: LlamaModel, prompt: PasskeyPrompt | Sequence[int],
                   policies: Sequence[str], budget: int, *, cfg: Config, steps: int,
                   pim: bool = False, dense_layers: Sequence[int] = (0, 1)) -> dict[str, str]:
    """Greedy answer text of ``steps`` tokens per policy for one prompt.

    The prompt is prefilled once densely; STARC layouts are compiled once from the prefill KV;
    every policy then decodes from a truncated copy of that cache (decode tokens are STARC's
    unclustered recent buffer). Decoding stops early at the end-of-turn token (kept in the text
    only as the tokenizer renders it).
    """
    for p in policies:
        _check_policy(p)
    if steps <= 0:
        raise ValueError(f"steps must be positive, not {steps}")
    ids = _prompt_ids(prompt)
    pre = _prefill(model, ids, policies, cfg, steps, dense_layers)
    answers: dict[str, str] = {}
    for p in policies:
        toks = _greedy(model, pre, _attention_for(p, budget, pre, cfg, dense_layers, pim), steps)
        answers[p] = model.tokenizer.decode(toks)
    return answers


# ---------------------------------------------------------------------------------------------
# teacher forcing (the sequential reference of the lockstep streams)


def _teacher_forced(model: LlamaModel, pre: _Prefilled, tokens: list[int],
                    attention: AttentionFn) -> np.ndarray:
    """Logits after each of ``tokens`` fed at positions ``P ..`` in one call (causal per row)."""
    pre.cache.truncate(len(pre.ids))
    res = model.forward(tokens, pre.cache, logits="all", attention=attention)
    pre.cache.truncate(len(pre.ids))
    assert res.logits is not None
    return res.logits

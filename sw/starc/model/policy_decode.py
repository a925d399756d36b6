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
- :func:`evaluate_real` measures pass-key accuracy, next-token agreement with dense decoding,
  perplexity change and attention-mass recall; ``python -m starc.model.policy_decode`` writes the
  table (docs/real-model-eval.md).

The first generated token always comes from the dense prefill (all policies prefill densely, as
STARC does), so sparse attention acts from the second answer token on.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
    "evaluate_real",
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

#: fixed project-written continuation scored for the perplexity column (teacher forced)
PPL_TEXT = (" written above. The children played in the garden until the sun went down, and "
            "then they walked home for dinner. Their mother had made soup and fresh bread, and "
            "everyone sat around the table to talk about the day. After dinner they read a story "
            "and went to sleep.")


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
# evaluation


def _teacher_forced(model: LlamaModel, pre: _Prefilled, tokens: list[int],
                    attention: AttentionFn) -> np.ndarray:
    """Logits after each of ``tokens`` fed at positions ``P ..`` in one call (causal per row)."""
    pre.cache.truncate(len(pre.ids))
    res = model.forward(tokens, pre.cache, logits="all", attention=attention)
    pre.cache.truncate(len(pre.ids))
    assert res.logits is not None
    return res.logits


def _nll(prefill_logits: np.ndarray, logits: np.ndarray, cont: list[int]) -> np.ndarray:
    lg = np.concatenate([prefill_logits[None], logits[:-1]]).astype(np.float64)
    m = lg.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(lg - m).sum(1))
    return lse - lg[np.arange(len(cont)), cont]


def evaluate_real(model: LlamaModel, cfg: Config, *, contexts: Sequence[int] = (2048, 4096),
                  budgets: Sequence[int] = (256, 1024), depths: Sequence[float] = (0.1, 0.5, 0.9),
                  policies: Sequence[str] = DEFAULT_POLICIES, steps: int = 6,
                  ppl_tokens: int = 48, seed: int = 0, chat: bool = False,
                  dense_layers: Sequence[int] = (0, 1), log: Any = None) -> list[dict[str, Any]]:
    """Rows per (context, policy, budget): pass-key accuracy over ``depths`` (free-running greedy
    decode of ``steps`` tokens), next-token agreement with dense (teacher forcing on the dense
    trajectory, decode steps 2..steps), perplexity of :data:`PPL_TEXT` (first ``ppl_tokens``
    tokens, teacher forced after the depth-0.5 prompt) and attention-mass recall (layers outside
    ``dense_layers``, every query head, measured during the teacher-forced runs)."""
    from .prompts import passkey_prompt

    for p in policies:
        _check_policy(p)
    say = log or (lambda _m: None)
    tok = model.tokenizer
    cont = tok.encode(PPL_TEXT)[:ppl_tokens]
    sparse = [p for p in policies if p != "dense"]
    rows: dict[tuple[int, str, int], dict[str, Any]] = {}

    def row(ctx: int, p: str, B: int) -> dict[str, Any]:
        return rows.setdefault((ctx, p, B), {
            "context": ctx, "policy": p, "budget": B, "passkey_ok": 0, "passkey_n": 0,
            "agree": 0, "agree_n": 0, "recall": MassRecall(), "nll": [], "answers": []})

    for ctx in contexts:
        ppl_depth = min(depths, key=lambda x: abs(x - 0.5))
        for depth in depths:
            t0 = time.perf_counter()
            pr = passkey_prompt(tok, ctx - max(steps, len(cont)), depth=depth, seed=seed,
                                chat=chat)
            pre = _prefill(model, pr.token_ids, policies, cfg, max(steps, len(cont)),
                           dense_layers)
            say(f"ctx {ctx} depth {depth}: prefill {pre.seconds['prefill']:.1f} s, compile "
                f"{pre.seconds['compile']:.1f} s")
            dense_attn = _attention_for("dense", 1 << 30, pre, cfg, dense_layers)
            traj = _greedy(model, pre, dense_attn, steps)
            dense_ok = pr.retrieved(tok.decode(traj))
            nll_dense = None
            if depth == ppl_depth:
                nll_dense = _nll(pre.logits, _teacher_forced(model, pre, cont, dense_attn), cont)
            for B in budgets:
                if "dense" in policies:
                    r = row(ctx, "dense", B)
                    r["passkey_ok"] += int(dense_ok)
                    r["passkey_n"] += 1
                    r["agree"] += len(traj) - 1
                    r["agree_n"] += len(traj) - 1
                    r["answers"].append(tok.decode(traj))
                    if nll_dense is not None:
                        r["nll"] = list(nll_dense)
                        r["nll_dense"] = list(nll_dense)
                for p in sparse:
                    r = row(ctx, p, B)
                    attn = _attention_for(p, B, pre, cfg, dense_layers)
                    ans = _greedy(model, pre, attn, steps)
                    r["passkey_ok"] += int(pr.retrieved(tok.decode(ans)))
                    r["passkey_n"] += 1
                    r["answers"].append(tok.decode(ans))
                    rec_attn = _attention_for(p, B, pre, cfg, dense_layers, recall=r["recall"])
                    if len(traj) > 1:
                        lg = _teacher_forced(model, pre, traj[:-1], rec_attn)
                        pred = np.argmax(lg, axis=1)
                        r["agree"] += int((pred == np.asarray(traj[1:])).sum())
                        r["agree_n"] += len(traj) - 1
                    if nll_dense is not None:
                        lg = _teacher_forced(model, pre, cont, attn)
                        r["nll"] = list(_nll(pre.logits, lg, cont))
                        r["nll_dense"] = list(nll_dense)
            say(f"ctx {ctx} depth {depth}: dense answer {tok.decode(traj)!r} "
                f"({'ok' if dense_ok else 'miss'}), {time.perf_counter() - t0:.1f} s")
    out = []
    for r in rows.values():
        nd = np.asarray(r.pop("nll_dense", []), float)
        nl = np.asarray(r.pop("nll"), float)
        rec: MassRecall = r.pop("recall")
        ppl = float(np.exp(nl.mean())) if nl.size else float("nan")
        ppl_d = float(np.exp(nd.mean())) if nd.size else float("nan")
        out.append(r | {
            "passkey_acc": r["passkey_ok"] / max(1, r["passkey_n"]),
            "agreement": r["agree"] / r["agree_n"] if r["agree_n"] else float("nan"),
            "ppl": ppl, "ppl_dense": ppl_d,
            "ppl_change_pct": 100.0 * (ppl / ppl_d - 1.0) if nd.size else float("nan"),
            "recall": 1.0 if r["policy"] == "dense" else rec.mean})
    return out


def _fmt(x: float, spec: str) -> str:
    return "n/a" if x != x else format(x, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| context | policy | B | pass-key acc | next-token agreement | PPL (dense) | "
             "PPL change | attention-mass recall |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["context"], r["budget"],
                                         DEFAULT_POLICIES.index(r["policy"])
                                         if r["policy"] in DEFAULT_POLICIES else 99)):
        lines.append(
            f"| {r['context']} | {r['policy']} | {r['budget']} | "
            f"{r['passkey_ok']}/{r['passkey_n']} | {r['agree']}/{r['agree_n']} "
            f"({_fmt(r['agreement'], '.2f')}) | {_fmt(r['ppl'], '.3f')} "
            f"({_fmt(r['ppl_dense'], '.3f')}) | {_fmt(r['ppl_change_pct'], '+.2f')} % | "
            f"{_fmt(r['recall'], '.3f')} |")
    return "\n".join(lines)


_DOC_HEAD = """# Real-model evaluation: sparse policies decoding SmolLM2-135M

Generated by `{cmd}` (run from `sw/`, {secs:.0f} s on the shared 2-core machine, preset
`{preset}`, float32 masked attention; `pim=True` is not used here because the golden model is far
too slow for a whole table). Code: `sw/starc/model/policy_decode.py` (`evaluate_real`).

Setup. Contexts {ctx} tokens (pass-key prompt length minus the decode room), needle depths
{depths}, greedy decoding of {steps} tokens. Layers 0 and 1 stay dense; every other layer runs the
policy with budget B (recent tokens counted in B). The prompt is prefilled densely once; STARC
layouts (`starc` = artifact mode, `starc-row` = row-aligned mode) are compiled once from the
prefill KV; decode tokens are the unclustered recent buffer. The first answer token comes from
the dense prefill, so it is the same for every policy.

Columns.
- pass-key acc: prompts (one per depth) whose free-running greedy answer contains the pass key.
- next-token agreement: decode steps 2..{steps} whose greedy token equals dense's when the policy
  is teacher-forced on the dense trajectory (summed over depths).
- PPL: perplexity of the first {ppl} tokens of the fixed text `PPL_TEXT` (teacher forced, appended
  after the depth-0.5 prompt); change relative to dense on the same tokens.
- attention-mass recall: mean over layers >= 2, query heads and teacher-forced steps of the exact
  float32 softmax mass (over the whole causal context) inside the selected set.

"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m starc.model.policy_decode",
                                 description="Evaluate sparse attention policies on SmolLM2.")
    ap.add_argument("--contexts", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--budgets", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    ap.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--ppl-tokens", type=int, default=48)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("-o", "--output", type=Path, default=None)
    a = ap.parse_args(argv)
    from starc import config

    from .llama import load_model

    cfg = config.load(a.preset)
    model = load_model()
    t0 = time.perf_counter()
    rows = evaluate_real(model, cfg, contexts=a.contexts, budgets=a.budgets, depths=a.depths,
                         policies=a.policies, steps=a.steps, ppl_tokens=a.ppl_tokens,
                         chat=a.chat, log=lambda m: print(m, file=sys.stderr, flush=True))
    secs = time.perf_counter() - t0
    table = markdown_table(rows)
    print(table)
    print(f"\n{secs:.0f} s", file=sys.stderr)
    if a.output is not None:
        cmd = "python -m starc.model.policy_decode " + " ".join(
            argv if argv is not None else sys.argv[1:])
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(_DOC_HEAD.format(cmd=cmd, secs=secs, preset=cfg.name, ctx=a.contexts,
                                             depths=a.depths, steps=a.steps, ppl=a.ppl_tokens)
                            + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

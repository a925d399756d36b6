"""Head streams: the KV caches the system's instances attend to, and their step programs.

Every (layer, instance) of the system reads one *head stream*: a single (layer, KV head) cache
with its queries along the decode trajectory.

- **Real caches** (``kv`` files, ``starc kv extract``): batch entry ``b`` reads file
  ``b mod n_files``; instance ``(b, h)`` in layer ``l`` reads that file's layer ``l``, KV head
  ``h``. The trajectory is the file's: ``Lin`` = its prefill, ``Lout`` = its decode steps.
- **Synthetic caches** (no file): ``streams`` seeded single-head caches
  (:func:`starc.kv.synthetic_kv`, one KV head with its ``g`` query heads, ``Lin`` prefill tokens
  and ``Lout`` decode steps, queries drawn vectorised), stream ``p`` seeded from ``(seed, p)``;
  instance ``i`` of layer ``l`` reads stream ``(l * instances + i) mod streams``. Each stream is
  one consistent sequence, so a later step's context extends an earlier one's, and the online
  clustering (64-token decode windows appended, old clusters kept) is the compiler's.

Layers in :data:`~starc.planner.registry.DENSE_LAYERS` are dense under every policy and read
every token positionally, so their program depends on the context alone (one per step, shared
by every instance and policy).

Per (stream, step, policy) the planner gives one step program per query head (selection pass,
then attention: :meth:`starc.planner.plan.Planner.step_program`), with the number of commands
of its selection part and its row plan (which the overlapped channel schedule re-emits);
memoised per process (:class:`Streams`), as are the compiled layouts. A multi-query policy
(``starc-row-gqa``: one selection per KV head, a GEMV buffer holding the group's queries) runs
the query heads of one KV head on one channel as one program instead
(:meth:`Streams.group_step`): each selected row is opened once per KV head and MACed against
every query head there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from starc.config import Config
from starc.planner import registry
from starc.planner.registry import DENSE_LAYERS

__all__ = ["HeadStep", "StreamKey", "Streams", "sampled_steps", "stream_seed"]

#: A head stream: (file index or -1 for synthetic, stream / layer index, KV head)
StreamKey = tuple[int, int, int]


def stream_seed(seed: int, p: int) -> int:
    """The ``synthetic_kv`` seed of synthetic stream ``p`` (a 63-bit hash of both)."""
    h = hashlib.sha256(f"starc-system/{int(seed)}/{int(p)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def sampled_steps(lout: int, n: int) -> list[int]:
    """``n`` decode steps (0-based) spread over ``lout``: the midpoints of ``n`` equal bins, so
    their mean estimates the mean over the whole trajectory (exact for a linear cost)."""
    if not 1 <= n <= lout:
        raise ValueError(f"sampled steps must be in 1 .. Lout ({lout}), not {n}")
    return [int((k + 0.5) * lout / n) for k in range(n)]


@dataclass
class HeadStep:
    """One head stream at one decode step under one policy: what each query head runs."""

    programs: list[np.ndarray]        # per query head: the step program (PROGRAM_DTYPE)
    n_selection: list[int]            # per query head: commands of its selection part
    selected: list[int]               # per query head: tokens attended
    union: int                        # distinct tokens attended by the group (GQA union)
    mass_recall: list[float] = field(default_factory=list)   # per query head (sparse layers)
    rows: list[Any] = field(default_factory=list)    # per query head: its RowPlan
    krow_base: int = 0                # the head's key and value rows (relative row 0)
    vrow_base: int = 0
    geo: Any = None                   # the layout's Geometry


@dataclass
class _Stream:
    cache: Any                        # KVCache
    layer: int
    kv_head: int
    compiled: dict[str, Any] = field(default_factory=dict)    # mode -> CompiledKV


class Streams:
    """The head streams of one system configuration, compiled and planned on demand and kept
    for the life of the process (a worker evaluating several steps compiles once)."""

    def __init__(self, cfg: Config, *, head_dim: int, group_size: int, lin: int, lout: int,
                 seed: int = 0, streams: int = 16, kv: list[str] | None = None,
                 objective: str = "cycles") -> None:
        self.cfg = cfg
        self.d, self.g = head_dim, group_size
        self.lin, self.lout = lin, lout
        self.seed, self.n_streams = seed, streams
        self.kv = list(kv or [])
        self.objective = objective
        self._streams: dict[StreamKey, _Stream] = {}
        self._files: dict[int, Any] = {}
        self._steps: dict[tuple, HeadStep] = {}
        self._plans: dict[tuple, tuple[Any, list[Any]]] = {}     # multi-query: planner, plans
        self._groups: dict[tuple, tuple[np.ndarray, int]] = {}

    # ---- which stream an instance reads ----------------------------------------------------
    def key(self, layer: int, instance: int, n_kv_heads: int, instances: int) -> StreamKey:
        if self.kv:
            b, h = divmod(instance, n_kv_heads)
            return (b % len(self.kv), layer, h)
        return (-1, (layer * instances + instance) % self.n_streams, 0)

    def dense_key(self) -> StreamKey:
        """The stream whose positional layout gives the dense layers' program."""
        return (0, 0, 0) if self.kv else (-1, 0, 0)

    # ---- caches and layouts ----------------------------------------------------------------
    def _stream(self, key: StreamKey) -> _Stream:
        st = self._streams.get(key)
        if st is not None:
            return st
        f, a, h = key
        if f >= 0:
            cache = self._files.get(f)
            if cache is None:
                from starc.kv import load_kv
                cache = self._files[f] = load_kv(Path(self.kv[f]), self.cfg)
            # every (layer, head) of a file shares its compiled layouts
            shared = next((s for (ff, _, _), s in self._streams.items() if ff == f), None)
            st = _Stream(cache, a, h, shared.compiled if shared is not None else {})
        else:
            from starc.kv import synthetic_kv
            cache = synthetic_kv(n_layers=1, n_q_heads=self.g, n_kv_heads=1, head_dim=self.d,
                                 prefill_len=self.lin, decode_steps=self.lout,
                                 seed=stream_seed(self.seed, a), query_draws="vectorised")
            st = _Stream(cache, 0, 0)
        self._streams[key] = st
        return st

    def _compiled(self, st: _Stream, policy: str) -> Any:
        from starc.compiler import compile_kv
        mode = registry.get(policy).layout
        ck = st.compiled.get(mode)
        if ck is None:
            dense_layers = DENSE_LAYERS if self.kv else ()
            ck = st.compiled[mode] = compile_kv(
                st.cache, self.cfg, registry.compile_options(policy, seed=self.seed,
                                                             dense_layers=dense_layers,
                                                             threads=1))
        return ck

    # ---- step programs ---------------------------------------------------------------------
    def head_step(self, key: StreamKey, step: int, policy: str, budget: int, *,
                  dense_layer: bool = False) -> HeadStep:
        """The step programs of stream ``key`` at decode ``step`` under ``policy`` (``dense``
        for a dense layer)."""
        if dense_layer:
            key, policy = self.dense_key(), "dense"
        mk = (key, step, policy, budget)
        hs = self._steps.get(mk)
        if hs is not None:
            return hs
        from starc.metrics import dense_reference, quality
        from starc.planner.plan import Planner
        st = self._stream(key)
        ck = self._compiled(st, policy)
        dl = DENSE_LAYERS if self.kv else ()
        pl = Planner(ck, policy, budget, dense_layers=dl, objective=self.objective)
        plans = pl.plan(step, st.layer, st.kv_head)
        progs, nsel, sel, recall = [], [], [], []
        sparse = policy != "dense" and st.layer not in dl
        ref = None
        if sparse:
            c, n = st.cache, plans[0].n_ctx
            g0 = st.kv_head * self.g
            q = c.q[st.layer][step, g0:g0 + self.g].astype(np.float16).astype(np.float64)
            ref = dense_reference(q, c.k[st.layer][:n, st.kv_head].astype(np.float16),
                                  c.v[st.layer][:n, st.kv_head].astype(np.float16))
        for j, sp in enumerate(plans):
            prog, _, n_sel = pl.step_program(sp)
            progs.append(prog)
            nsel.append(int(n_sel))
            sel.append(int(sp.selected.size))
            if ref is not None:
                recall.append(quality(ref, j, sp.selected, pl.B, sp.alpha).mass_recall)
            elif policy == "dense":
                recall.append(1.0)
        union = int(np.unique(np.concatenate([sp.selected for sp in plans])).size)
        if sparse and pl.spec.multi_query:
            self._plans[mk] = (pl, plans)
        hm = ck.head(st.layer, st.kv_head)
        hs = HeadStep(progs, nsel, sel, union, recall, [sp.rows for sp in plans],
                      int(hm.row_base), int(hm.row_base + hm.n_krows), pl.geo)
        self._steps[mk] = hs
        return hs

    def group_step(self, key: StreamKey, step: int, policy: str, budget: int,
                   q_heads: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """The one step program of a multi-query policy (registry: ``Policy.multi_query``)
        for the query heads ``q_heads`` of stream ``key`` that run on one channel: the shared
        selection scans, then every selected row opened once with one pass of MACs per query
        head (:meth:`starc.planner.plan.Planner.group_program`). Returns ``(program,
        commands of its selection part)``."""
        if not registry.get(policy).multi_query:
            raise ValueError(f"{policy} is not a multi-query policy; its query heads run their "
                             "own step programs (head_step)")
        gk = (key, step, policy, budget, tuple(q_heads))
        hit = self._groups.get(gk)
        if hit is not None:
            return hit
        self.head_step(key, step, policy, budget)
        pl, plans = self._plans[(key, step, policy, budget)]
        prog, _, n_sel = pl.group_program([plans[j] for j in q_heads])
        hit = self._groups[gk] = (prog, int(n_sel))
        return hit

    def forget_steps(self) -> None:
        """Drop the memoised step programs (keep caches and layouts)."""
        self._steps.clear()
        self._plans.clear()
        self._groups.clear()

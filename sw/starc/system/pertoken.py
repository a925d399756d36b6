"""Per generated token: every layer's channel programs, timed and charged, summed over layers.

For one decode step (context ``n = Lin + step + 1``), each policy and each mapping:

1. per layer and channel: the channel's items (instances and their query heads,
   :mod:`starc.system.mapping`), the head stream each reads in this layer
   (:mod:`starc.system.workload`), their step programs, one channel program
   (:mod:`starc.system.channel`), its exact cost (memoised by content hash). A multi-query
   policy (``starc-row-gqa``) runs one program per instance on the channel (its query heads
   there share every opened row, :meth:`~starc.system.workload.Streams.group_step`), the
   instances back to back under either schedule (the overlapped builder interleaves single-query
   heads; a group program already interleaves its query heads' MACs within each round);
2. per layer: the **latency** is the slowest channel's cycles (the layer's attention ends when
   its last channel does; the next layer needs its output), the **energy** the sum over
   channels; idle channels cost nothing (no background or refresh energy is modelled);
3. per token: the sum over layers. The time breakdown is that of each layer's slowest channel,
   with the selection passes split off exactly; the energy breakdown sums every channel.

Utilisation: channel = busy channel-cycles / (channels x latency); stack = per layer the busiest
channel of each stack / (stacks x latency); both over the whole token.

Scope: this is the attention the PIM executes (AttAcc offloads exactly this; it is what the
selection policies change). :func:`token_result` adds the fully connected layers on the GPUs
(a lower bound of the rest of the model, :mod:`starc.system.gpu`) for whole-model figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from starc.address import region_rows_upper_bound
from starc.config import Config
from starc.planner import registry
from starc.planner.registry import DENSE_LAYERS
from starc.system import gpu as gpumod
from starc.system.channel import (
    SCHEDULES,
    TIME_CATEGORIES,
    ChannelCosts,
    HeadPart,
    build_sequential,
)
from starc.system.mapping import Mapping, check_capacity, map_instances
from starc.system.shapes import ModelShape
from starc.system.workload import Streams

__all__ = ["SystemSpec", "evaluate_step"]


@dataclass(frozen=True)
class SystemSpec:
    model: ModelShape
    batch: int
    lin: int
    lout: int
    stacks: int
    gpus: int
    gpu: str
    policies: tuple[str, ...]
    budget: int
    mappings: tuple[str, ...] = ("attacc",)
    schedule: str = "overlapped"
    objective: str = "cycles"
    streams: int = 16
    seed: int = 0
    kv: tuple[str, ...] = ()

    @property
    def context_max(self) -> int:
        return self.lin + self.lout

    def mapping(self, strategy: str, cfg: Config) -> Mapping:
        m = self.model
        return map_instances(strategy, batch=self.batch, n_kv_heads=m.n_kv_heads,
                             group_size=m.group_size, stacks=self.stacks,
                             channels=cfg.org.channels, gpus=self.gpus)

    def check(self, cfg: Config) -> dict[str, dict]:
        """Every mapping fits the KV cache at the end of the trajectory (raises
        :class:`~starc.system.mapping.CapacityError`); returns the capacity figures."""
        out = {}
        for s in self.mappings:
            out[s] = check_capacity(self.mapping(s, cfg), cfg, head_dim=self.model.head_dim,
                                    n_layers=self.model.n_layers, context=self.context_max,
                                    what=f" (mapping {s})")
        return out


@dataclass
class _Acc:
    latency: int = 0
    busy: int = 0
    stack_busy: int = 0
    energy: float = 0.0
    attacc: float = 0.0
    ebd: Counter = field(default_factory=Counter)
    tbd: Counter = field(default_factory=Counter)
    activations: int = 0
    criticals: list[str] = field(default_factory=list)


def evaluate_step(spec: SystemSpec, cfg: Config, step: int, streams: Streams,
                  costs: ChannelCosts) -> dict[str, Any]:
    """Per-token figures of decode ``step`` for every (policy, mapping) of ``spec``."""
    m = spec.model
    n_ctx = spec.lin + step + 1
    build = SCHEDULES[spec.schedule]
    # the k-th instance of a channel has its region k regions up (the overlapped schedule
    # re-emits its rows there; row addresses do not change a cost)
    region = region_rows_upper_bound(cfg, m.head_dim, spec.context_max)
    dense_layers = set(DENSE_LAYERS)
    rows = []
    used: set[str] = set()
    gpu = gpumod.get(spec.gpu)
    fc = gpumod.fc_layers(gpu, spec.gpus, params=sum(m.fc_params().values()), batch=spec.batch)
    gpu_dense = gpumod.attention(gpu, spec.gpus, n_layers=m.n_layers, batch=spec.batch,
                                 n_kv_heads=m.n_kv_heads, n_q_heads=m.n_q_heads,
                                 head_dim=m.head_dim, context=n_ctx)
    for strategy in spec.mappings:
        mp = spec.mapping(strategy, cfg)
        n_inst = mp.instances
        for policy in spec.policies:
            multi = registry.get(policy).multi_query
            acc = _Acc()
            memo: dict[tuple, tuple[str, Any]] = {}
            stats: dict[str, list[float]] = {"selected": [], "union": [], "recall": []}
            union_tokens = 0.0
            for layer in range(m.n_layers):
                dense = layer in dense_layers
                layer_keys = [None if dense else streams.key(layer, i, m.n_kv_heads, n_inst)
                              for i in range(n_inst)] if not dense else None
                lat, busy, crit = 0, 0, None
                stack_max = [0] * mp.stacks
                for g, items in enumerate(mp.items):
                    if not items:
                        continue
                    skey = tuple((("dense",) if dense else layer_keys[it.instance], it.q_heads)
                                 for it in items)
                    hit = memo.get(skey)
                    if hit is None and multi and not dense:
                        # one program per KV head on the channel (rows opened once, MACs per
                        # query head there), the instances back to back
                        parts = [HeadPart(*streams.group_step(layer_keys[it.instance], step,
                                                              policy, spec.budget, it.q_heads),
                                          row_offset=k * region)
                                 for k, it in enumerate(items)]
                        hit = memo[skey] = costs.cost(build_sequential(parts, cfg))
                    elif hit is None:
                        parts = []
                        for k, it in enumerate(items):
                            hs = streams.head_step(
                                None if dense else layer_keys[it.instance], step,
                                policy, spec.budget, dense_layer=dense)
                            parts += [HeadPart(hs.programs[j], hs.n_selection[j], hs.rows[j],
                                               hs.krow_base, hs.vrow_base, hs.geo,
                                               k * region) for j in it.q_heads]
                        hit = memo[skey] = costs.cost(build(parts, cfg))
                    key, c = hit
                    used.add(key)
                    acc.energy += c.energy_pj
                    acc.attacc += c.attacc_energy_pj
                    acc.ebd.update(c.energy_breakdown)
                    acc.activations += c.activations
                    busy += c.cycles
                    s = g // mp.channels
                    stack_max[s] = max(stack_max[s], c.cycles)
                    if c.cycles > lat:
                        lat, crit = c.cycles, key
                acc.latency += lat
                acc.busy += busy
                acc.stack_busy += sum(stack_max)
                if crit is not None:
                    acc.criticals.append(crit)
                if not dense:
                    # what the instances of this layer attend (every instance once, whatever
                    # the mapping's replicas)
                    for i in range(n_inst):
                        hs = streams.head_step(layer_keys[i], step, policy, spec.budget)
                        stats["selected"] += hs.selected
                        stats["union"].append(hs.union)
                        stats["recall"] += hs.mass_recall
                        union_tokens += hs.union
                else:
                    union_tokens += n_inst * n_ctx
            for key in acc.criticals:
                acc.tbd.update(costs.split(key))
            rows.append(_row(spec, cfg, mp, policy, step, n_ctx, acc, stats, union_tokens, gpu,
                             gpu_dense, fc))
    return {"step": step, "n_ctx": n_ctx, "rows": rows, "channel_programs": len(used)}


def _row(spec: SystemSpec, cfg: Config, mp: Mapping, policy: str, step: int, n_ctx: int,
         acc: _Acc, stats: dict[str, list[float]], union_tokens: float, gpu: gpumod.GPU,
         gpu_dense: dict[str, float], fc: dict[str, float]) -> dict[str, Any]:
    """One row (metric names of :mod:`starc.glossary`, group ``system``)."""
    m = spec.model
    tck = cfg.timing.tCK_ns
    lat_s = acc.latency * tck * 1e-9
    sparse_gpu = gpumod.attention(gpu, spec.gpus, n_layers=m.n_layers, batch=spec.batch,
                                  n_kv_heads=m.n_kv_heads, n_q_heads=m.n_q_heads,
                                  head_dim=m.head_dim, context=n_ctx, tokens_read=union_tokens)

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    t = {k: int(acc.tbd.get(k, 0)) for k in TIME_CATEGORIES}
    return {
        "policy": policy, "mapping": mp.strategy, "step": step, "n_ctx": n_ctx,
        "token_cycles": acc.latency, "token_us": lat_s * 1e6,
        "token_energy_mJ": acc.energy * 1e-9, "token_attacc_energy_mJ": acc.attacc * 1e-9,
        "token_t": t, "token_e": {k: v * 1e-9 for k, v in sorted(acc.ebd.items())},
        "selection_share": t["selection"] / acc.latency if acc.latency else 0.0,
        "channel_util": acc.busy / (mp.total_channels * acc.latency) if acc.latency else 0.0,
        "stack_util": acc.stack_busy / (mp.stacks * acc.latency) if acc.latency else 0.0,
        "channels_used": mp.used_channels(), "channels": mp.total_channels,
        "stacks_used": mp.used_stacks(), "stacks": mp.stacks, "replicas": mp.replicas,
        "bank_activations": acc.activations,
        "selected": mean(stats["selected"]), "union_tokens": mean(stats["union"]),
        "mass_recall": mean(stats["recall"]),
        "gpu_dense_us": gpu_dense["seconds"] * 1e6,
        "gpu_dense_energy_mJ": gpu_dense["energy_pj"] * 1e-9,
        "gpu_sparse_us": sparse_gpu["seconds"] * 1e6,
        "gpu_sparse_energy_mJ": sparse_gpu["energy_pj"] * 1e-9,
        "gpu_over_pim": gpu_dense["seconds"] / lat_s if lat_s else None,
        "fc_gpu_us": fc["seconds"] * 1e6, "fc_gpu_energy_mJ": fc["energy_pj"] * 1e-9,
        "model_us": (fc["seconds"] + lat_s) * 1e6,
        "gpu_model_us": (fc["seconds"] + gpu_dense["seconds"]) * 1e6,
    }

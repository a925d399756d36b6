"""KV heads x batch onto HBM-PIM stacks and channels, and the KV capacity check.

An *instance* is one KV head of one batch entry (``i = b * n_kv_heads + h``); its cache of every
layer lives on one channel (layers stacked in disjoint row ranges, as the compiler places them),
and the query heads of its GQA group run there. Every layer uses the same mapping.

Strategies (:data:`STRATEGIES`):

``attacc``
    AttAcc's assignment (scale-snu/attacc_simulator ``src/ramulator_wrapper.py`` ``run`` and
    ``pim_ramulator_src/trace_gen/gen_trace_attacc_bank.py`` ``run_attention``): the heads are
    split over the GPUs by tensor parallelism (GPU ``d`` holds KV heads ``h`` with
    ``h * gpus // n_kv_heads == d``, all batch entries), each GPU's AttAcc device has
    ``stacks / gpus`` stacks and gives each stack ``ceil(n_device / stacks_per_device)`` of its
    instances in order; inside a stack, instance ``k`` goes to channel ``k mod 16`` (the
    generator's legacy channel ``lch``), the heads of a channel run one after another. AttAcc
    itself counts query heads as if each had its own KV head (its model ignores ``gqa_size``);
    here an instance is a real KV head and its whole query group runs on its channel.
``balanced``
    Instances dealt round-robin over every channel of every stack, stacks first (instance ``i``
    to global slot ``i mod (stacks x channels)``: stack ``slot mod stacks``, channel ``slot //
    stacks``), so no stack or channel holds more than one instance above another.
``replicate``
    ``balanced`` over replicas: when channels outnumber instances, each KV head's cache is stored
    on up to ``min(g, channels // instances)`` channels and its ``g`` query heads are split over
    the copies (``ceil(g / r)`` each; ``r`` then shrinks to the copies that get a head), so a
    GQA group runs in parallel. It costs ``r`` times the
    KV capacity (AttAcc's own Mistral-7B accounting, one KV head per query head, implies the
    same storage) and the write of every new K and V to ``r`` channels (not modelled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from starc.address import region_rows_upper_bound
from starc.config import Config

__all__ = ["STRATEGIES", "CapacityError", "Item", "Mapping", "capacity", "check_capacity",
           "map_instances"]

STRATEGIES = ("attacc", "balanced", "replicate")


class CapacityError(ValueError):
    """The KV cache does not fit the stacks; the message says how much is missing."""


@dataclass(frozen=True)
class Item:
    """What one channel holds and computes for one instance: a copy of its KV cache (every
    layer) and the query heads (indices in the GQA group) it runs there."""

    instance: int
    q_heads: tuple[int, ...]
    replica: int = 0


@dataclass
class Mapping:
    strategy: str
    stacks: int
    channels: int                     # per stack
    batch: int
    n_kv_heads: int
    group_size: int
    gpus: int
    replicas: int = 1
    items: list[list[Item]] = field(default_factory=list)   # per global channel s * C + c

    @property
    def instances(self) -> int:
        return self.batch * self.n_kv_heads

    def with_stacks(self, stacks: int) -> Mapping:
        """The same strategy on ``stacks`` stacks."""
        return map_instances(self.strategy, batch=self.batch, n_kv_heads=self.n_kv_heads,
                             group_size=self.group_size, stacks=stacks, channels=self.channels,
                             gpus=self.gpus)

    @property
    def total_channels(self) -> int:
        return self.stacks * self.channels

    def channel_of(self, g: int) -> tuple[int, int]:
        """(stack, channel) of global channel index ``g``."""
        return divmod(g, self.channels)

    def used_channels(self) -> int:
        return sum(1 for it in self.items if it)

    def used_stacks(self) -> int:
        return len({g // self.channels for g, it in enumerate(self.items) if it})

    def max_items(self) -> int:
        return max((len(it) for it in self.items), default=0)

    def describe(self) -> dict[str, object]:
        return {"strategy": self.strategy, "stacks": self.stacks,
                "channels_per_stack": self.channels, "instances": self.instances,
                "replicas": self.replicas, "channels_used": self.used_channels(),
                "stacks_used": self.used_stacks(), "max_instances_per_channel": self.max_items()}


def map_instances(strategy: str, *, batch: int, n_kv_heads: int, group_size: int, stacks: int,
                  channels: int, gpus: int = 1) -> Mapping:
    """The mapping of ``batch x n_kv_heads`` instances (module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mapping {strategy!r}; choose from {', '.join(STRATEGIES)}")
    for name, v in (("batch", batch), ("n_kv_heads", n_kv_heads), ("group_size", group_size),
                    ("stacks", stacks), ("channels", channels), ("gpus", gpus)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    n = batch * n_kv_heads
    total = stacks * channels
    m = Mapping(strategy, stacks, channels, batch, n_kv_heads, group_size, gpus, 1,
                [[] for _ in range(total)])
    every = tuple(range(group_size))
    if strategy == "attacc":
        if stacks % gpus:
            raise ValueError(f"mapping attacc: {stacks} stacks do not split evenly over {gpus} "
                             f"GPUs (AttAcc gives every GPU's device the same number of stacks); "
                             f"use a multiple of {gpus} stacks or another mapping")
        per_dev = stacks // gpus
        for d in range(gpus):
            heads = [h for h in range(n_kv_heads) if h * gpus // n_kv_heads == d]
            ops = [b * n_kv_heads + h for b in range(batch) for h in heads]
            if not ops:
                continue
            per_stack = math.ceil(len(ops) / per_dev)
            for j, inst in enumerate(ops):
                s = d * per_dev + j // per_stack
                c = (j % per_stack) % channels
                m.items[s * channels + c].append(Item(inst, every))
        return m
    r = 1
    if strategy == "replicate":
        r = max(1, min(group_size, total // n))
    chunk = math.ceil(group_size / r)
    r = math.ceil(group_size / chunk)          # no copy without query heads (g 4 over 3: 2 x 2)
    m.replicas = r
    units = [(i, k) for i in range(n) for k in range(r)]
    for u, (inst, k) in enumerate(units):
        slot = u % total
        s, c = slot % stacks, slot // stacks
        qh = tuple(range(k * chunk, min(group_size, (k + 1) * chunk)))
        if qh:
            m.items[s * channels + c].append(Item(inst, qh, k))
    return m


def capacity(m: Mapping, cfg: Config, *, head_dim: int, n_layers: int, context: int
             ) -> dict[str, object]:
    """Rows per bank each channel needs for the caches it holds at ``context`` tokens (every
    layer of every instance copy: keys, values, recent buffer and the densest selection
    metadata, :func:`starc.address.region_rows_upper_bound`), against the preset's rows."""
    per_region = region_rows_upper_bound(cfg, head_dim, context)
    need = [len(it) * n_layers * per_region for it in m.items]
    have = cfg.org.rows_per_bank
    busiest = max(range(len(need)), key=need.__getitem__)
    row_bytes_channel = cfg.org.row_bytes * cfg.org.banks_per_channel   # one row in every bank
    short_rows = sum(max(0, x - have) for x in need)
    kv_bytes = m.instances * m.replicas * n_layers * 2 * context * head_dim * 2
    gib = 2 ** 30
    return {"rows_per_region": per_region, "rows_needed_max": need[busiest],
            "rows_per_bank": have, "busiest_channel": list(m.channel_of(busiest)),
            "busiest_copies": len(m.items[busiest]), "replicas": m.replicas,
            "fits": need[busiest] <= have, "short_GiB": short_rows * row_bytes_channel / gib,
            "kv_GiB": kv_bytes / gib, "stacks_GiB": m.stacks * cfg.org.stack_bytes / gib,
            "rows_GiB": sum(need) * row_bytes_channel / gib}


def check_capacity(m: Mapping, cfg: Config, *, head_dim: int, n_layers: int, context: int,
                   what: str = "") -> dict[str, object]:
    """:func:`capacity`, raising :class:`CapacityError` (how much is missing, and the fewest
    stacks that would hold it) when the busiest channel overflows."""
    cap = capacity(m, cfg, head_dim=head_dim, n_layers=n_layers, context=context)
    if cap["fits"]:
        return cap
    step = m.gpus if m.strategy == "attacc" else 1

    def fits(k: int) -> bool:
        return bool(capacity(m.with_stacks(m.stacks + k * step), cfg, head_dim=head_dim,
                             n_layers=n_layers, context=context)["fits"])
    fewest = None
    # no number of stacks helps when one head copy (all layers) overflows a channel; otherwise
    # gallop, then bisect (more stacks never put more copies on the busiest channel), so a huge
    # context or batch is refused at once instead of after thousands of trial mappings
    if n_layers * cap["rows_per_region"] <= cap["rows_per_bank"]:
        hi = 1
        while hi <= 4096 and not fits(hi):
            hi *= 2
        if hi <= 4096 or fits(4096):
            lo, hi = hi // 2, min(hi, 4096)        # fits(hi); not fits(lo) (lo 0: as given)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fits(mid) else (mid, hi)
            fewest = m.stacks + hi * step
    stack, ch = cap["busiest_channel"]
    more = f"use at least {fewest} stacks (--stacks {fewest}), " if fewest else ""
    raise CapacityError(
        f"the KV cache does not fit{what}: channel {ch} of stack {stack} holds "
        f"{cap['busiest_copies']} KV head copies x {n_layers} layers at {context} tokens and "
        f"needs {cap['rows_needed_max']} rows per bank ({cap['rows_per_region']} per layer and "
        f"head, keys + values + recent buffer + selection metadata), preset {cfg.name!r} has "
        f"{cap['rows_per_bank']}: {cap['rows_needed_max'] - cap['rows_per_bank']} rows per bank "
        f"missing there, {cap['short_GiB']:.2f} GiB missing over all overfull channels "
        f"(the cache is {cap['kv_GiB']:.2f} GiB of K and V, {m.stacks} stacks hold "
        f"{cap['stacks_GiB']:.0f} GiB); {more}a smaller batch, a shorter context or "
        f"another --mapping")

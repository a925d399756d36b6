"""Compare selection policies on one cache: quality, rows, occupancy, cycles, energy.

For every decode step, sparse layer (not in ``dense_layers``) and KV head, the float64 dense
reference is computed once; every (policy, budget) then selects, is scored against it, and has its
rows planned per query head and as the GQA union. The plans the cost-sampling rule picks
(:mod:`starc.planner.sampling`: all of them when a cell is small, else a seeded sample with 95 %
intervals) are turned into step programs (selection pass + attention) and run through the golden
timing and energy models. Means over the plans are reported per (policy, budget).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from starc.compiler import CompiledKV, CompileOptions, compile_kv
from starc.config import Config
from starc.kv import KVCache
from starc.metrics import dense_reference, quality, step_cost
from starc.outputs import undefined
from starc.planner import registry
from starc.planner.budget import DEFAULT_CAP, DEFAULT_FLOOR, Budget, parse_budget
from starc.planner.plan import Planner
from starc.planner.registry import DEFAULT_POLICIES, DENSE_LAYERS, LAYOUT_OF
from starc.planner.rounds import OBJECTIVES, setting
from starc.planner.sampling import cost_sample, mean_ci95
from starc.planner.table import CI_METRICS, add_baseline_ratios

__all__ = ["DEFAULT_BUDGETS", "DEFAULT_POLICIES", "EvalOptions", "EvalResult", "evaluate"]

DEFAULT_BUDGETS = (256, 512, 1024, 2048)

@dataclass
class EvalOptions:
    policies: tuple[str, ...] = DEFAULT_POLICIES
    budgets: tuple[int, ...] = DEFAULT_BUDGETS
    steps: tuple[int, ...] | None = None        # default: every decode step
    layers: tuple[int, ...] | None = None       # default: every layer not in dense_layers
    dense_layers: tuple[int, ...] = DENSE_LAYERS
    cost_programs: int | None = None            # None: the sampling rule; -1: all; k: k plans
    sparq_r: int | None = None
    sparq_recent: int = 64
    sinks: int = 4
    objective: str = OBJECTIVES[0]              # planner: per-round MAC choice (rounds.py)
    host_cycles: int = 0                        # host's choice after a selection read-back
    mass_floor: int = DEFAULT_FLOOR             # mass budgets (p0.95): fewest tokens attended
    mass_cap: int = DEFAULT_CAP                 # and most
    seed: int = 0

    def parsed_budgets(self) -> list[Budget]:
        return [parse_budget(b, floor=self.mass_floor, cap=self.mass_cap) for b in self.budgets]

    def check(self, cache: KVCache) -> None:
        for p in self.policies:
            registry.get(p)
        setting(self.objective)
        for b in self.budgets:
            try:
                parse_budget(b, floor=self.mass_floor, cap=self.mass_cap)
            except ValueError:
                raise ValueError(f"budgets must be positive integers or mass targets p<mass> "
                                 f"with a mass in (0, 1], not {b!r}") from None
        m = cache.meta
        if m.decode_steps == 0:
            raise ValueError("the cache has no decode steps (meta.decode_steps = 0), so there "
                             "are no queries to evaluate; export at least one decode step")
        for s in self.steps or ():
            if not 0 <= s < m.decode_steps:
                raise ValueError(f"step {s} out of range 0..{m.decode_steps - 1}")
        for l in self.layers or ():
            if not 0 <= l < m.n_layers:
                raise ValueError(f"layer {l} out of range 0..{m.n_layers - 1}")
            if l in self.dense_layers:
                raise ValueError(f"layer {l} is dense (dense_layers {list(self.dense_layers)}): "
                                 f"every policy runs dense attention there, so its figures would "
                                 f"be dense figures under each policy's name")


@dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    compile_stats: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Acc:
    def __init__(self) -> None:
        self.v: dict[str, list[float]] = {}

    def add(self, **kw: float) -> None:
        for k, x in kw.items():
            self.v.setdefault(k, []).append(float(x))

    def mean(self, k: str) -> float:
        xs = self.v.get(k)
        return float(np.mean(xs)) if xs else float("nan")


def _block_ids(hm: Any, n: int) -> np.ndarray:
    """Index of the group row holding each position ``0 .. n - 1`` at context ``n``."""
    loc = hm.locate(np.arange(n), n)
    return np.unique(loc.group * (1 << 32) + loc.row, return_inverse=True)[1]


def _oracle_rows(block_of: np.ndarray, probs: np.ndarray, mass: float) -> int:
    """The row oracle: the fewest group rows of the layout whose exact attention mass reaches
    ``mass`` (a plan's own mass recall), with the placement as it is."""
    per = np.sort(np.bincount(block_of, weights=probs))[::-1]
    return int(np.searchsorted(np.cumsum(per), mass * (1 - 1e-9))) + 1


def evaluate(cache: KVCache, cfg: Config, options: EvalOptions | None = None, *,
             compiled: dict[str, CompiledKV] | None = None,
             compile_options: dict[str, CompileOptions] | None = None,
             progress: Callable[[str], None] | None = None) -> EvalResult:
    """Run the comparison (see the module docstring). ``compiled`` may supply layouts by mode;
    missing ones are compiled with ``compile_options[mode]`` (or the mode's defaults)."""
    from threadpoolctl import threadpool_limits

    # the per-step matrices are tiny: threaded BLAS only adds contention here
    with threadpool_limits(limits=1, user_api="blas"):
        return _evaluate(cache, cfg, options, compiled, compile_options, progress)


def _evaluate(cache: KVCache, cfg: Config, options: EvalOptions | None,
              compiled: dict[str, CompiledKV] | None,
              compile_options: dict[str, CompileOptions] | None,
              progress: Callable[[str], None] | None) -> EvalResult:
    o = options or EvalOptions()
    o.check(cache)
    m = cache.meta
    compiled = dict(compiled or {})
    compile_options = compile_options or {}
    t0 = time.perf_counter()
    for p in o.policies:
        mode = LAYOUT_OF[p]
        if mode not in compiled:
            if progress:
                progress(f"compiling {mode} layout")
            copt = compile_options.get(mode) or registry.compile_options(
                p, seed=o.seed, dense_layers=o.dense_layers)
            compiled[mode] = compile_kv(cache, cfg, copt)
    # a mass budget applies to the policies that adapt (registry: Policy.adaptive); planners of
    # one image share its whole-head rounds (the guard's reference)
    whole: dict[str, dict] = {mode: {} for mode in compiled}
    planners = {(p, b.label): Planner(compiled[LAYOUT_OF[p]], p, b, dense_layers=o.dense_layers,
                                sparq_r=o.sparq_r, sparq_recent=o.sparq_recent, sinks=o.sinks,
                                objective=o.objective, whole_cache=whole[LAYOUT_OF[p]])
                for p in o.policies for b in o.parsed_budgets()
                if not b.adaptive or registry.get(p).adaptive}
    if not planners:
        adaptive = ", ".join(n for n, q in registry.REGISTRY.items() if q.adaptive)
        raise ValueError(f"mass budgets apply to {adaptive} only; none of the policies asked "
                         f"for adapts")
    steps = list(o.steps) if o.steps is not None else list(range(m.decode_steps))
    layers = list(o.layers) if o.layers is not None else \
        [l for l in range(m.n_layers) if l not in o.dense_layers]
    if not layers:
        raise ValueError(f"no sparse layer to evaluate: all {m.n_layers} layers are dense "
                         f"(dense_layers = {list(o.dense_layers)}); pass --dense-layers or "
                         f"--layers")
    g = m.group_size
    tuples = [(s, l, kh) for s in steps for l in layers for kh in range(m.n_kv_heads)]
    n_plans = len(tuples) * g
    cs = cost_sample(n_plans, o.cost_programs, o.seed)
    sample = set(cs.indices.tolist())
    acc = {key: _Acc() for key in planners}
    geo = next(iter(compiled.values())).geometry
    modes = sorted({pl.ck.mode for pl in planners.values()})
    for ti, (s, l, kh) in enumerate(tuples):
        if progress and ti % max(1, len(tuples) // 20) == 0:
            progress(f"step {s} layer {l} kv head {kh} ({ti + 1}/{len(tuples)})")
        n = m.prefill_len + s + 1
        qg = cache.q[l][s, kh * g:(kh + 1) * g].astype(np.float16).astype(np.float64)
        K = cache.k[l][:n, kh].astype(np.float16)
        V = cache.v[l][:n, kh].astype(np.float16)
        ref = dense_reference(qg, K, V)
        # group row of every position in each layout: the row oracle's units
        block_of = {mode: _block_ids(compiled[mode].head(l, kh), n) for mode in modes}
        for key, pl in planners.items():
            a = acc[key]
            plans = pl.plan(s, l, kh)
            group_cost = None
            if pl.spec.multi_query and any(ti * g + j in sample for j in range(len(plans))):
                # one program for the group (rows opened once, MACs per query head): each
                # query head's cost is the group's divided by the heads
                prog, _, n_sel = pl.group_program(plans)
                group_cost = step_cost(prog, n_sel, cfg, m.head_dim, plans[0].selected.size,
                                       o.host_cycles)
            union = pl.union_rows(plans)
            a.add(union_slots=union.n_blocks * geo.tpgr,
                  union_tokens=union.n_valid)
            for j, sp in enumerate(plans):
                # top-k hit rate at k = B (mass budgets: k = the tokens the plan attends)
                k_top = sp.selected.size if pl.budget.adaptive else pl.B
                qual = quality(ref, j, sp.selected, k_top, sp.alpha)
                # slots: the group rows holding a selected token (the placement's packing, the
                # same whatever the MAC choice); activated slots add the dummy rows a filled
                # round opens (their cost is in the cycles and energy)
                rows_used = sp.rows.n_blocks - sp.rows.n_dummy
                slots = rows_used * geo.tpgr
                a.add(selected=sp.selected.size, slots_per_head=slots,
                      activated_slots=sp.rows.n_blocks * geo.tpgr,
                      slots_over_B=slots / k_top, slices16_per_head=sp.rows.n_slices * 16,
                      rows=rows_used, oracle_rows=_oracle_rows(block_of[pl.ck.mode],
                                                               ref.probs[j], qual.mass_recall),
                      occupancy=sp.selected.size / slots if slots else 0.0,
                      rounds=len(sp.rows.rounds), actab=sp.rows.n_actab, actbg=sp.rows.n_actbg,
                      dummy_rows=sp.rows.n_dummy, filled_rounds=sp.rows.n_filled,
                      row_index_plans=float(sp.rows.formation == "row-index"),
                      mass_recall=qual.mass_recall, topk_recall=qual.topk_recall,
                      rel_error=qual.rel_error)
                if ti * g + j in sample:
                    if group_cost is not None:
                        c, share = group_cost, 1.0 / len(plans)
                    else:
                        prog, _, n_sel = pl.step_program(sp)
                        c = step_cost(prog, n_sel, cfg, m.head_dim, sp.selected.size,
                                      o.host_cycles)
                        share = 1.0
                    a.add(cycles=share * c.cycles, ns=share * cfg.cycles_to_ns(c.cycles),
                          selection_cycles=share * c.selection_cycles,
                          attention_cycles=share * (c.cycles - c.selection_cycles),
                          energy_nJ=share * c.energy_pj / 1e3,
                          attacc_energy_nJ=share * c.attacc_energy_pj / 1e3,
                          selection_energy_nJ=share * c.selection_energy_pj / 1e3,
                          ratio_to_floor=c.ratio_to_floor, commands=share * c.commands,
                          **{f"t_{k}": share * v for k, v in c.breakdown.items()},
                          **{f"e_{k}": share * v / 1e3 for k, v in c.energy_breakdown.items()})
    rows = []
    for (p, b), a in acc.items():
        row: dict[str, Any] = {"policy": p, "budget": b}
        for k in sorted(a.v):
            row[k] = a.mean(k)
        for k in CI_METRICS:
            if k in a.v:
                row[k], half = mean_ci95(a.v[k], n_plans)
                if math.isnan(half):     # strict JSON (docs/reliability.md): null with a reason
                    undefined(row, f"{k}_ci95", "one sampled program: no interval")
                else:
                    row[f"{k}_ci95"] = half
        row["programs_timed"] = row["cost_n"] = len(a.v.get("cycles", []))
        row["cost_N"] = n_plans
        rows.append(row)
    add_baseline_ratios(rows)
    meta = {"model": m.model, "n_layers": m.n_layers, "n_q_heads": m.n_q_heads,
            "n_kv_heads": m.n_kv_heads, "head_dim": m.head_dim, "prefill_len": m.prefill_len,
            "steps": steps, "layers": layers, "preset": cfg.name, "objective": o.objective,
            "planner": setting(o.objective),
            "tokens_per_group_row": geo.tpgr, "plans_per_policy": n_plans,
            "seconds": time.perf_counter() - t0,
            "counting": "per query head: one program per (step, layer, query head); GQA union: "
                        "rows holding a token selected by any query head of the KV head",
            "cost_scope": "one layer, one query head, one channel (the KV head's); cycles and "
                          "energy include the selection pass (selection_*: its part)" + (
                              "; a multi-query policy runs one program per KV head for its "
                              "query heads (rows opened once, MACs per query head) and each "
                              "query head is charged that program's cost divided by the group "
                              "size" if any(registry.get(p).multi_query for p in o.policies)
                              else ""),
            "host_cycles": o.host_cycles, "mass_floor": o.mass_floor, "mass_cap": o.mass_cap,
            "sampling": cs.describe(), "cost_n": cs.n,
            "cost_N": cs.N, "cost_sample_seed": o.seed}
    stats = {mode: {**ck.stats, "options": {k: v for k, v in ck.options.items()
                                            if k != "threads"}}
             for mode, ck in compiled.items()}
    return EvalResult(rows=rows, meta=meta, compile_stats=stats)

"""Co-simulation of one decode step on the attention channel RTL against the golden model.

Data flow (docs/rtl.md, "Co-simulation")::

    KV cache ─> compile_kv ─> Planner(policy, budget) ─> step program + query words
                     └─> head_image ─> rows the program opens, renumbered 0..k-1 ─> load program
                                                                        (ACTAB, WR per column, PREA)
    bundle.npz = load program + its data, step program + its data, golden expectations
               ─> cocotb (starc_sim.tb_attention) on the Verilated AttentionChannel:
                  load image through WR, restart, run the step with idle/backpressure,
                  compare issue cycles, score beats, probability beats, output and cycle count
               ─> result.json (what the RTL produced and every agreement)

Renumbering the rows changes nothing the golden model or the RTL computes (no rule depends on a
row address); it lets a bank model of a few rows hold any head of a large compiled cache.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from starc.config import Config
from starc.golden import functional, timing
from starc.isa import PROGRAM_DTYPE, Op

from starc_sim.programs import SMALL, load_config

__all__ = ["COSIM_MODEL", "FULL_MODEL", "MULTIHEAD_MODEL", "CosimResult", "ModelSpec", "Scenario",
           "build_attention", "cosim_step", "dense_heads_scenario", "harness_constants",
           "load_program", "planner_scenario", "run_scenario", "synthetic_cache", "write_bundle"]

RowKey = tuple[int, int, int]


@dataclass(frozen=True)
class ModelSpec:
    """What an attention-channel model is built with (one Verilator build per spec)."""

    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=lambda: dict(SMALL))
    head_dim: int = 64
    rows: int = 64
    max_entries: int = 1024
    max_beats: int = 256
    refresh: bool = True
    cycle_width: int = 48
    heads: int = 1                # heads the datapath holds (docs/multihead.md)

    @property
    def cfg(self) -> Config:
        return load_config(self.preset, self.overrides)

    def key(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def for_config(cls, cfg: Config, *, head_dim: int = 64,
                   organisation: dict[str, Any] | None = None, **kw: Any) -> ModelSpec:
        """The co-simulation model of ``cfg``: its timing, PU and column format, on the scaled
        organisation ``organisation`` (default :data:`SMALL`, 16 banks). Fields are given as
        overrides of the default preset where they differ from it, so the default preset's
        model is :data:`COSIM_MODEL` (one build)."""
        base = load_config(None).as_dict()
        want = cfg.as_dict()
        org = dict(SMALL if organisation is None else organisation)
        over: dict[str, Any] = {}
        for sec, tag in (("org", "organisation"), ("timing", "timing"), ("pu", "pu")):
            for k, v in want[sec].items():
                key = f"{tag}.{k}"
                if key not in org and v != base[sec][k]:
                    over[key] = v
        return cls(overrides={**org, **over}, head_dim=head_dim, **kw)


#: The model the tests, ``starc rtl cosim`` and the demo share: 2 pseudo-channels x 2 SIDs x
#: 2 bank groups x 2 banks (16 banks, every scope distinct) of the default preset's timing, d 64
#: (SmolLM2-135M's head dimension); the size table's ``pim-small``. Its softmax buffer holds 1024
#: entries: a longer dense step is refused before the simulator starts (``_check_capacity``).
COSIM_MODEL = ModelSpec()
#: :data:`COSIM_MODEL` with the state of two heads (``heads=2``): the co-simulation of the
#: overlapped schedule (docs/multihead.md). A build of its own, used only for steps of several
#: heads: holding two heads makes a one-head step's co-simulation 11-31 % slower (run clocks per
#: second, ``bench/bench_cosim.py --no-old --heads 1 2``; docs/multihead.md has the figures).
MULTIHEAD_MODEL = replace(COSIM_MODEL, heads=2)
#: The default preset's full channel: 64 banks (2 PC x 2 SID x 4 BG x 4), 16 lanes, d 128 (two
#: banks per token), 16 stored rows per bank (a step may open 16 distinct rows).
FULL_MODEL = ModelSpec(overrides={}, head_dim=128, rows=16, max_entries=512, max_beats=64)


#: The build configurations (``starc_sim.runner.BUILD_CONFIGS``) of the attention models; the
#: tests, the CLI and the demo ask :func:`build_config`, so they share one build per model
#: (docs/rtl.md has the figures). ``fast`` (C++ at ``-O3``) for the 16-bank model, which
#: simulates much (regressions of hundreds of scenarios); ``quick`` (``-O0``) for the full-size
#: channel, built for a step or two, where the optimised C++ compile (minutes) costs more than
#: the simulation it saves (bench/bench_cosim.py --full).
COSIM_BUILD = "fast"
FULL_BUILD = "quick"
#: Names one build configuration for every attention model instead (tests/conftest.py sets
#: ``quick``: the suite checks bits and cycles, not speed, and builds three models).
BUILD_ENV = "STARC_COSIM_BUILD"


def build_config(spec: ModelSpec) -> str:
    """The build configuration of ``spec``'s model: :data:`BUILD_ENV` if set, else
    :data:`FULL_BUILD` for :data:`FULL_MODEL` and :data:`COSIM_BUILD` for the others."""
    from starc_sim.runner import BUILD_CONFIGS

    chosen = os.environ.get(BUILD_ENV, "")
    if chosen:
        if chosen not in BUILD_CONFIGS:
            raise ValueError(f"{BUILD_ENV}={chosen!r} is not a build configuration; choose one "
                             f"of {', '.join(BUILD_CONFIGS)}")
        return chosen
    return FULL_BUILD if spec == FULL_MODEL else COSIM_BUILD


def synthetic_cache(spec: ModelSpec = COSIM_MODEL, *, prefill_len: int | None = None,
                    seed: int = 3) -> Any:
    """The seeded synthetic cache the co-simulation uses when given none (``starc rtl cosim``,
    the tests, the bench): 3 layers, one KV head with 3 query heads, d of ``spec``, one decode
    step; 500 tokens on the 16-bank model, 400 on the full channel (16 stored rows)."""
    from starc.kv import synthetic_kv

    if prefill_len is None:
        prefill_len = 500 if spec.rows >= 64 else 400
    return synthetic_kv(n_layers=3, n_q_heads=3, n_kv_heads=1, head_dim=spec.head_dim,
                        prefill_len=prefill_len, decode_steps=1, seed=seed)


@dataclass
class Scenario:
    """One decode step for one query head, ready for the RTL."""

    label: str
    spec: ModelSpec
    prog: np.ndarray                       # step program (rows renumbered)
    wdata: np.ndarray                      # uint16 [n, lanes]: the query words
    image: dict[RowKey, np.ndarray]        # (group, bank, row) -> uint16 [columns, lanes]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class CosimResult:
    ran: bool
    label: str = ""
    bit_exact: bool = False
    cycles_equal: bool = False
    issues_equal: bool = False
    rtl_cycles: int = -1
    golden_cycles: int = -1
    last_result_cycle: int = -1
    commands: int = 0
    load_commands: int = 0
    output_rtl: list[int] = field(default_factory=list)
    output_golden: list[int] = field(default_factory=list)
    #: every head's output, head-major (a model of several heads; else the output)
    outputs_rtl: list[int] = field(default_factory=list)
    outputs_golden: list[int] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reason: str = ""
    run_dir: str = ""
    waves: str = ""
    #: Where the cocotb test's time went: phase -> {"seconds", "clocks"} (simulator clocks).
    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Everything but :attr:`phases` (wall times: bench/bench_cosim.py reads them), so the
        document is a function of the scenario and the seeds; :attr:`outputs_rtl` and
        :attr:`outputs_golden` only from a model of several heads (with one they repeat the
        output)."""
        d = asdict(self)
        d.pop("phases")
        if len(self.outputs_rtl) <= len(self.output_rtl) \
                and len(self.outputs_golden) <= len(self.output_golden):
            d.pop("outputs_rtl")
            d.pop("outputs_golden")
        return d


def _words(rows: np.ndarray) -> list[int]:
    """uint16 [n, lanes] -> one integer per row, lane 0 in the low bits (the column layout)."""
    out = []
    for r in np.asarray(rows, dtype=np.uint16):
        out.append(int.from_bytes(r.astype("<u2").tobytes(), "little"))
    return out


def load_program(image: dict[RowKey, np.ndarray], cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Program and data that write ``image`` through WR commands: per row, ACTAB, every stored
    column (columns outer, banks then groups inner, so consecutive writes go to other groups),
    PREA. Returns ``(program, wdata [n, lanes])``."""
    C = cfg.org.columns_per_row
    by_row: dict[int, list[tuple[int, int]]] = {}
    for (g, b, r) in sorted(image):
        by_row.setdefault(r, []).append((g, b))
    cmds: list[tuple[int, int, int, int, int, int]] = []
    data: list[np.ndarray] = []
    for r in sorted(by_row):
        cmds.append((int(Op.ACTAB), 0, 0, 0, r, 0))
        banks = sorted(by_row[r], key=lambda gb: (gb[1], gb[0]))
        for c in range(C):
            for g, b in banks:
                cmds.append((int(Op.WR), g, b, c, 0, len(data)))
                data.append(np.asarray(image[(g, b, r)])[c])
        cmds.append((int(Op.PREA), 0, 0, 0, 0, 0))
    wd = np.array(data, dtype=np.uint16).reshape(-1, cfg.pu.lanes)
    return np.array(cmds, dtype=PROGRAM_DTYPE), wd


def _renumber(prog: np.ndarray, image: dict[RowKey, np.ndarray], rows: int
              ) -> tuple[np.ndarray, dict[RowKey, np.ndarray], dict[int, int]]:
    acts = np.isin(prog["op"], [int(Op.ACTAB), int(Op.ACTBG), int(Op.ACTPB)])
    used = sorted(set(prog["row"][acts].tolist()))
    if len(used) > rows:
        raise ValueError(f"the step opens {len(used)} distinct rows; the RTL bank model holds "
                         f"{rows} (build a model with more rows)")
    remap = {r: i for i, r in enumerate(used)}
    out = prog.copy()
    out["row"][acts] = [remap[r] for r in prog["row"][acts].tolist()]
    img = {(g, b, remap[r]): d for (g, b, r), d in image.items() if r in remap}
    return out, img, remap


def planner_scenario(cache: Any, spec: ModelSpec = COSIM_MODEL, *, policy: str = "starc-row",
                     budget: int = 256, layer: int | None = None, kv_head: int = 0,
                     step: int = 0, q_in_group: int = 0,
                     compiled: Any = None, heads: int = 1) -> Scenario:
    """Compile ``cache`` for the model's organisation, plan one step of ``policy`` and keep the
    rows it opens. ``layer`` defaults to the last layer (a sparse one). ``heads`` > 1: that many
    query heads of the group from ``q_in_group`` on, each with its own plan, in one overlapped
    program (``starc.planner.multihead.step_program``, docs/multihead.md)."""
    from starc.compiler.compile import CompileOptions, compile_kv
    from starc.planner.plan import LAYOUT_OF, Planner

    cfg = spec.cfg
    m = cache.meta
    if m.head_dim != spec.head_dim:
        raise ValueError(f"the cache has head_dim {m.head_dim}; the RTL model was built for "
                         f"{spec.head_dim}")
    layer = m.n_layers - 1 if layer is None else layer
    dense_layers = CompileOptions().dense_layers  # the compiler's and the planner's default
    at_layer, at_head = layer, kv_head
    if compiled is None:
        # Only the planned head goes onto the (small) co-simulation channel: the cache reduced to
        # one layer and one KV head with its query group, so a long context still fits the
        # model's rows. The dense-layer rule keeps the original layer number.
        cache = cache.one_head(layer, kv_head)
        dense_layers = (0,) if layer in dense_layers else ()
        at_layer, at_head = 0, 0
        compiled = compile_kv(cache, cfg, CompileOptions(mode=LAYOUT_OF[policy],
                                                         dense_layers=dense_layers))
    pl = Planner(compiled, policy, budget, dense_layers=dense_layers)
    plans = pl.plan(step, at_layer, at_head)
    sp = plans[q_in_group]
    if heads > spec.heads or q_in_group + heads > len(plans):
        raise ValueError(f"{heads} heads from query {q_in_group} of a group of {len(plans)} on a "
                         f"model holding {spec.heads}")
    if heads > 1:
        from starc.planner.multihead import step_program
        prog, wdata = step_program(pl, plans[q_in_group:q_in_group + heads])
    else:
        prog, wdata = pl.program(sp)
    hm = compiled.head(at_layer, at_head)
    addr, data = compiled.head_image(hm, sp.n_ctx)
    image = {(int(g), int(b), int(r)): d for (_, g, b, r), d in zip(addr.tolist(), data,
                                                                    strict=True)}
    prog2, img2, remap = _renumber(prog, image, spec.rows)
    g_orig = functional.execute(prog, wdata, image, cfg, spec.head_dim)
    g_new = functional.execute(prog2, wdata, img2, cfg, spec.head_dim)
    if not np.array_equal(g_orig.outputs_bits, g_new.outputs_bits):  # pragma: no cover
        raise AssertionError("row renumbering changed the golden output")
    q_head = kv_head * m.group_size + sp.q_head % m.group_size
    info = {"policy": policy, "budget": budget, "layer": layer, "kv_head": kv_head,
            "q_head": q_head, "step": step, "n_ctx": sp.n_ctx,
            "selected": int(len(sp.selected)), "rows_opened": len(remap),
            **({"heads": heads} if heads > 1 else {})}
    label = f"q-head {q_head}" if heads == 1 else f"q-heads {q_head}..{q_head + heads - 1}"
    return Scenario(label=f"{policy} B={budget} layer {layer} {label} step {step}",
                    spec=spec, prog=prog2, wdata=np.asarray(wdata, np.uint16), image=img2,
                    info=info)


def _check_capacity(scn: Scenario, valid: np.ndarray, beat_sfm: np.ndarray,
                    heads: int = 1) -> None:
    """The step must fit the model it runs on: its ``heads`` within the heads the model holds
    (``ModelSpec.heads``); per SFM, the softmax buffer's entries and beats (``max_entries``,
    ``max_beats`` per head, rounded up to powers of two as the RTL does); per step, the
    harness's capture memories (``2 * max_beats`` beats of each kind). Otherwise the RTL would
    drop beats and the run time out; this says so before the simulator starts."""
    from starc_hw.attention import _pow2_at_least

    spec = scn.spec
    if heads > spec.heads:
        raise ValueError(f"{scn.label}: the step has {heads} heads; the model holds "
                         f"{spec.heads} (ModelSpec heads): use a model built for {heads}")
    entries = _pow2_at_least(max(spec.max_entries, spec.cfg.pu.sfm_lanes))
    beats = _pow2_at_least(spec.max_beats)
    popped = beat_sfm >= 0
    if popped.any():
        per_sfm = np.bincount(beat_sfm[popped])
        ent = np.bincount(beat_sfm[popped], weights=valid[popped].sum(1))
        worst = int(ent.argmax())
        if ent[worst] > entries or per_sfm.max() > beats:
            raise ValueError(
                f"{scn.label}: SFM #{worst} normalises {int(ent[worst])} entries in "
                f"{int(per_sfm[worst])} beats; the model's softmax buffer holds {entries} entries "
                f"and {beats} beats (ModelSpec max_entries, max_beats): use a smaller budget or "
                f"context, or a model built with a larger buffer")
    if len(valid) > 2 * spec.max_beats:
        raise ValueError(f"{scn.label}: {len(valid)} score beats; the harness captures "
                         f"{2 * spec.max_beats} (2 x max_beats): use a model with more beats")


def dense_heads_scenario(spec: ModelSpec = MULTIHEAD_MODEL, *, length: int = 500,
                         heads: int | None = None, seed: int = 11) -> Scenario:
    """Dense attention of ``heads`` (default: the model's) KV heads of ``length`` tokens each
    on the model's channel, in the overlapped order (``dense_program(heads=...)``,
    docs/multihead.md): seeded random keys, values and queries (FP16), head k's rows after
    head k - 1's."""
    from starc.golden.programs import dense_program, dense_token_address

    cfg, d = spec.cfg, spec.head_dim
    H = spec.heads if heads is None else heads
    rng = np.random.default_rng(seed)
    C, Ln, bpt = cfg.org.columns_per_row, cfg.pu.lanes, cfg.banks_per_token(d)
    R = -(-length // (cfg.org.groups_per_channel * cfg.tokens_per_group_row(d)))
    if spec.rows < 2 * R * H:
        raise ValueError(f"{H} heads of {length} tokens need {2 * R * H} rows; the model "
                         f"holds {spec.rows}")
    a = dense_token_address(cfg, d, np.arange(length))
    image: dict[RowKey, np.ndarray] = {}
    queries = []
    for h in range(H):
        K, V = (rng.normal(0, 1, (length, d)).astype(np.float16) for _ in range(2))
        queries.append((rng.normal(0, 1, d) / np.sqrt(d)).astype(np.float16))
        for t in range(length):
            r, g, j, sl = (int(a[f][t]) for f in ("row", "group", "set", "slot"))
            for k in range(bpt):
                for base, X in ((2 * R * h, K), (2 * R * h + R, V)):
                    row = image.setdefault((g, j * bpt + k, base + r),
                                           np.zeros((C, Ln), np.uint16))
                    row[2 * sl] = X[t, 32 * k:32 * k + 16].view(np.uint16)
                    row[2 * sl + 1] = X[t, 32 * k + 16:32 * k + 32].view(np.uint16)
    wdata = np.concatenate([q.view(np.uint16).reshape(-1, Ln) for q in queries])
    prog = dense_program(cfg, length, d, heads=H)
    return Scenario(label=f"dense, {H} heads x {length} tokens, overlapped", spec=spec,
                    prog=prog, wdata=wdata, image=image,
                    info={"policy": "dense", "heads": H, "length": length,
                          "rows_opened": 2 * R * H})


def write_bundle(scn: Scenario, path: Path) -> dict[str, Any]:
    """Everything the cocotb side needs, golden expectations included, as one ``.npz``."""
    cfg, d = scn.spec.cfg, scn.spec.head_dim
    lprog, lwd = load_program(scn.image, cfg)
    lsched = timing.schedule(lprog, cfg, refresh=scn.spec.refresh)
    sched = timing.schedule(scn.prog, cfg, refresh=scn.spec.refresh)
    res = functional.execute(scn.prog, scn.wdata, scn.image, cfg, d)
    # per beat (one token set of a score move), in buffer order
    S = cfg.tokens_per_bank_row()
    nb = len(res.scores) // S
    beats_group = res.entry_group[::S] if nb else np.zeros(0, np.int64)
    mask = res.valid.reshape(nb, S) if nb else np.zeros((0, S), bool)
    mask_bits = (mask.astype(np.uint64) << np.arange(S, dtype=np.uint64)).sum(1) \
        if nb else np.zeros(0, np.uint64)
    popped = res.entry_sfm.reshape(nb, S)[:, 0] >= 0 if nb else np.zeros(0, bool)

    def beat_words(seq: np.ndarray) -> np.ndarray:
        return seq.reshape(nb, S).astype(np.uint64) if nb else np.zeros((0, S), np.uint64)

    _check_capacity(scn, res.valid.reshape(nb, S) if nb else np.zeros((0, S), bool),
                    res.entry_sfm.reshape(nb, S)[:, 0] if nb else np.zeros(0, np.int64),
                    res.heads)
    # probability beats in MVGB order: each MVGB pops its head's next move (buffer order)
    sets = cfg.org.banks_per_group // cfg.banks_per_token(d)
    move_head = res.entry_head[::S * sets] if nb else np.zeros(0, np.int64)
    queues: dict[int, list[int]] = {}
    for mv, h in enumerate(move_head.tolist()):
        queues.setdefault(h, []).append(mv)
    mvgb = scn.prog[scn.prog["op"] == int(Op.MVGB)]
    order = [queues[int(h)].pop(0) for h in mvgb["row"].tolist()]
    pbeats = np.array([mv * sets + j for mv in order for j in range(sets)], np.int64)
    outs = np.zeros((scn.spec.heads, d), np.uint16)
    accs = np.zeros((scn.spec.heads, d), np.uint32)
    outs[:res.heads], accs[:res.heads] = res.outputs_bits, res.outputs_acc
    bundle = {
        "load_prog": lprog, "load_wdata": lwd, "load_issue": lsched.issue,
        "load_inserted": lsched.inserted, "load_full": lsched.program, "load_rule": lsched.rule,
        "load_total": np.int64(lsched.total_cycles),
        "prog": scn.prog, "wdata": scn.wdata, "issue": sched.issue, "inserted": sched.inserted,
        "rule": sched.rule,
        "full": sched.program, "total": np.int64(sched.total_cycles),
        # every head's output, head-major (one head: the output)
        "out_bits": outs.ravel(), "out_acc": accs.ravel(),
        "score_group": beats_group.astype(np.int64), "score_mask": mask_bits.astype(np.uint64),
        "score_bits": beat_words(res.scores),
        "score_head": (res.entry_head[::S] if nb else np.zeros(0, np.int64)).astype(np.int64),
        "prob_bits": beat_words(res.probs)[pbeats], "prob_group": beats_group[pbeats],
        "prob_head": (res.entry_head[::S][pbeats] if nb else np.zeros(0)).astype(np.int64),
        "popped": popped,
        "image_addr": np.array(sorted(scn.image), np.int64).reshape(-1, 3),
        "image_data": np.array([np.asarray(scn.image[k], np.uint16) for k in sorted(scn.image)],
                               np.uint16).reshape(len(scn.image), cfg.org.columns_per_row,
                                                  cfg.pu.lanes),
    }
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **bundle)
    tmp.replace(path)
    return {"commands": len(scn.prog), "load_commands": len(lprog),
            "golden_cycles": int(sched.total_cycles), "output": outs[0].tolist(),
            "outputs": outs.ravel().tolist()}


def harness_constants() -> dict[str, Any]:
    """What the attention testbench needs to know of the gateware: the bit fields of the
    datapath-contract and bank-violation flag words (``[name, offset, width]``) and the
    selectors of the harness memories. Computed on the host and passed in ``STARC_TB_HW``, so
    that the simulator's Python does not import Amaranth."""
    from starc_hw.attention import DP_ERRORS
    from starc_hw.attention_sim import CAPTURES, LOADS
    from starc_hw.bank import VIOLATIONS

    def fields(layout: Any) -> list[list[Any]]:
        return [[name, f.offset, f.width] for name, f in layout]

    return {"dp_errors": fields(DP_ERRORS), "violations": fields(VIOLATIONS),
            "loads": dict(LOADS), "captures": dict(CAPTURES)}


#: Verilator control file of the attention models: the bank memories (``BankArray``'s ``mem_<i>``)
#: are visible and writable through VPI, for the backdoor image load of ``tb_attention``.
ATTENTION_VLT = '`verilator_config\npublic_flat_rw -module "*" -var "mem_*"\n'
#: Commands (and data beats) the harness's stimulus memories hold (``AttentionSim.prog_depth``).
PROG_DEPTH = 16384


def build_attention(spec: ModelSpec = COSIM_MODEL, *, waves: bool = False,
                    config: str | None = None, progress: bool = False,
                    clock_gating: bool | None = None,
                    softmax_gating: bool | None = None) -> Any:
    """The Verilated :class:`starc_hw.attention_sim.AttentionSim` (the attention channel with
    its stimulus and capture memories) of ``spec``, built once per spec, build configuration,
    gating and source digest, then reused. ``clock_gating`` (default: on unless ``config`` is
    ``O0``, the old way bench/bench_cosim.py compares with) gates the clock of idle PUs: same
    cycles and bits, less to simulate; the all-zero memory initialisations are left out of the
    Verilog likewise (``starc_sim.runner.strip_zero_init``). ``softmax_gating`` (default: as
    ``clock_gating``) gates the idle softmax unit too (``False``: the PUs only, what
    ``bench/bench_cosim.py --softmax-ungated`` measures beside)."""
    from starc_hw.attention import PU_MODULE
    from starc_hw.attention_sim import AttentionSim

    from starc_sim.runner import build_design

    config = config or build_config(spec)
    # ``make`` refers to plain values only, so that the build's source digest covers the gateware
    # (and what it imports), not this module: editing the co-simulation does not rebuild.
    cfg = spec.cfg
    kw = {"head_dim": spec.head_dim, "rows": spec.rows, "max_entries": spec.max_entries,
          "max_beats": spec.max_beats, "refresh": spec.refresh, "cycle_width": spec.cycle_width,
          "prog_depth": PROG_DEPTH, "beat_depth": 2 * spec.max_beats, "heads": spec.heads,
          "clock_gating": config != "O0" if clock_gating is None else bool(clock_gating)}
    if softmax_gating is not None and bool(softmax_gating) != kw["clock_gating"]:
        kw["softmax_gating"] = bool(softmax_gating)

    def make() -> Any:
        return AttentionSim(cfg=cfg, pu_instances=True, **kw)

    extra = {"softmax_gating": kw["softmax_gating"]} if "softmax_gating" in kw else {}
    return build_design("attention", make, params={**spec.key(), "prog_depth": PROG_DEPTH,
                                                   "clock_gating": kw["clock_gating"], **extra},
                        zero_init=config == "O0",
                        hier_blocks=() if waves else (PU_MODULE,),
                        waves=waves, internals=False, config=config, progress=progress,
                        control=ATTENTION_VLT, public_ports=True)


def run_scenario(scn: Scenario, *, idle: float = 0.0, backpressure: float = 0.0,
                 seed: int = 1, waves: bool = False, perturb: str = "", load: str = "backdoor",
                 host: bool = False, workdir: Path | None = None, model: Any = None,
                 quiet: bool = False, progress: bool = False, config: str | None = None
                 ) -> CosimResult:
    """Run ``scn`` on the RTL; returns what it computed and every agreement. Raises
    :class:`starc_sim.runner.RtlTestFailure` when the RTL disagrees with the golden model
    (the result file, written before the check, is still read).

    ``load``: ``backdoor`` writes the memory image into the bank memories directly; ``wr`` sends
    it through WR commands first (the write path; the cycle count of the step is the same, as
    ``restart`` zeroes time). ``host``: a Python host drives the channel's ports on every clock
    (``tb_attention.scenario_host``, image through WR commands) instead of the harness's
    memories. ``progress``: rich progress of the build and of the simulated cycles on stderr."""
    import time

    from starc_sim.runner import RtlTestFailure

    if load not in ("backdoor", "wr"):
        raise ValueError(f"load must be 'backdoor' or 'wr', not {load!r}")
    t0 = time.perf_counter()
    model = model or build_attention(scn.spec, waves=waves, config=config, progress=progress)
    base = workdir or model.build_dir / "runs"
    base.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="cosim-", dir=base))
    bundle = run_dir / "bundle.npz"
    meta = write_bundle(scn, bundle)
    too_long = [n for n, k in (("step", len(scn.prog)), ("image load", meta["load_commands"]))
                if k > PROG_DEPTH and (n == "step" or (load == "wr" and not host))]
    if too_long:
        raise ValueError(f"the {too_long[0]} program has more than {PROG_DEPTH} commands, more "
                         f"than the harness holds; use the backdoor image load")
    result_file = run_dir / "result.json"
    progress_file = run_dir / "progress.json"
    env = {"STARC_TB_SPEC": json.dumps(scn.spec.key()), "STARC_TB_BUNDLE": str(bundle),
           "STARC_TB_RESULT": str(result_file), "STARC_TB_IDLE": str(idle),
           "STARC_TB_BACKPRESSURE": str(backpressure), "STARC_TB_PERTURB": perturb,
           "STARC_TB_LOAD": load, "STARC_TB_PROGRESS": str(progress_file),
           "STARC_TB_HW": json.dumps(harness_constants())}
    failure: RtlTestFailure | None = None
    watch = _SimProgress(progress_file, meta["golden_cycles"], enabled=progress)
    try:
        model.run("starc_sim.tb_attention", testcase="scenario_host" if host else "scenario",
                  extra_env=env, seed=seed, waves=waves, test_dir=run_dir, quiet=quiet)
    except RtlTestFailure as e:
        failure = e
    finally:
        watch.close()
    out = CosimResult(ran=True, label=scn.label, commands=meta["commands"],
                      load_commands=meta["load_commands"], golden_cycles=meta["golden_cycles"],
                      output_golden=meta["output"], outputs_golden=meta["outputs"])
    if result_file.is_file():
        r = json.loads(result_file.read_text())
        for k, v in r.items():
            if hasattr(out, k):
                setattr(out, k, v)
    out.seconds = time.perf_counter() - t0
    out.run_dir = str(run_dir)
    if waves:
        fst = run_dir / "dump.fst"
        out.waves = str(fst) if fst.is_file() else ""
    if failure is not None:
        if not out.mismatches:
            out.mismatches = [str(failure)]
        raise RtlTestFailure(f"{failure}\n{out.mismatches[:5]}") from None
    return out


class _SimProgress:
    """Emulated cycles of a running co-simulation on stderr (rich), from the progress file the
    testbench writes every ``tb_attention.PROGRESS_CLOCKS`` clocks."""

    def __init__(self, path: Path, total: int, *, enabled: bool) -> None:
        self._p: Any = None
        if not enabled:
            return
        import threading

        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._path = path
        self._p = Progress(TextColumn("simulating: {task.description}"), BarColumn(),
                           TextColumn("{task.completed:.0f} / {task.total:.0f} tCK"),
                           TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._task = self._p.add_task("starting the simulator", total=max(total, 1))
        self._p.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                d = json.loads(self._path.read_text())
            except (OSError, ValueError):
                continue
            self._p.update(self._task, description=d.get("phase", ""),
                           completed=min(d.get("cycle", 0), d.get("total", 0)))

    def close(self) -> None:
        if self._p is not None:
            self._stop.set()
            self._thread.join()
            self._p.stop()


def cosim_step(cfg: Config, cache: Any, *, policy: str = "starc-row", budget: int = 512,
               step: int = 0, kv_head: int = 0, progress: bool = False,
               organisation: dict[str, Any] | None = None, heads: int = 1) -> dict[str, Any]:
    """The demo's RTL check: one decode step of one query head of ``cache`` (the last layer) on
    the co-simulation model of ``cfg`` (:meth:`ModelSpec.for_config`: its timing and PU on the
    scaled 16-bank organisation; the default preset's is :data:`COSIM_MODEL`). Returns ``{ran,
    bit_exact, cycles_equal, rtl_cycles, golden_cycles, ...}``; ``ran`` is False with a
    ``reason`` when the RTL cannot run here (no Verilator, or a preset the datapath cannot
    hold). ``organisation`` replaces the 16-bank organisation (``SMALL``) of the model;
    ``heads`` is the heads of state the model holds (the step is one head's either way: a model
    built for two heads, docs/multihead.md, runs it as well)."""
    try:
        from starc_sim.runner import RtlTestFailure, setup_environment

        setup_environment()
    except Exception as e:  # pragma: no cover - depends on the machine
        return {"ran": False, "reason": f"Verilator/cocotb unavailable: {e}"}
    try:
        spec = ModelSpec.for_config(cfg, head_dim=cache.meta.head_dim,
                                    organisation=organisation, heads=heads)
        from starc_hw.attention import check_attention_config

        check_attention_config(spec.cfg, spec.head_dim)
    except ValueError as e:
        return {"ran": False, "reason": f"the attention datapath cannot hold {cfg.name}: {e}"}
    scn = planner_scenario(cache, spec, policy=policy, budget=budget, step=step,
                           kv_head=kv_head)
    try:
        res = run_scenario(scn, quiet=True, progress=progress)
    except RtlTestFailure as e:
        return {"ran": True, "bit_exact": False, "cycles_equal": False, "error": str(e)[:2000],
                "scenario": scn.info}
    d = res.as_dict()
    d.pop("output_rtl", None)
    d.pop("output_golden", None)
    d["scenario"] = scn.info
    org = spec.cfg.org
    d["preset"] = spec.cfg.name
    d["spec_overrides"] = dict(spec.overrides)
    d["model"] = (f"{org.banks_per_channel} banks ({org.pseudo_channels} PC x {org.sids} SID x "
                  f"{org.bank_groups} BG x {org.banks_per_group}), d {spec.head_dim}")
    return d


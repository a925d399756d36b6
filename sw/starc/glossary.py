"""The metric registry: one name, unit, definition and direction per metric.

Every number starc prints, writes to CSV or JSON, or plots is named here, and only here. The name
is the JSON key, the CSV column, the table header and the word the docs use (docs/metrics.md is
rendered from this module: ``python -m starc.glossary docs/metrics.md``; a test keeps it
current). Tables print a glossary line under themselves (:func:`glossary_line`).

Families: ``<name>_undefined`` says why ``<name>`` is empty in a row; every cost metric whose
mean carries an interval has ``<name>_ci95`` (the half-width of its 95 % interval,
:mod:`starc.planner.sampling`); the cycle and energy breakdowns are ``t_<part>`` and
``e_<part>``.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["GROUPS", "METRICS", "Metric", "UnknownMetric", "get", "glossary_line", "header",
           "render_markdown"]

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class Metric:
    name: str            # the one name: JSON key, CSV column, table header, docs
    unit: str            # "tCK" (DRAM clock cycles of the preset), "ns", "nJ", "tokens", ...
    short: str           # a few words: the glossary line under a table
    definition: str      # the full definition (docs/metrics.md)
    better: str | None   # HIGHER, LOWER, or None (a description, not a figure of merit)
    group: str

    def describe(self) -> str:
        """``name (unit ↓): short`` for a glossary line (↓ lower is better, ↑ higher)."""
        arrow = {HIGHER: "↑", LOWER: "↓"}.get(self.better or "", "")
        bits = " ".join(x for x in (self.unit, arrow) if x)
        return f"{self.name} ({bits}): {self.short}" if bits else f"{self.name}: {self.short}"


class UnknownMetric(KeyError):
    """A column that the registry does not define (a test keeps every output's columns here)."""


#: docs/metrics.md sections, in order: (group, title, introduction)
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("key", "Row keys",
     "What a row is about. They are not figures of merit but every table, CSV and JSON row uses "
     "the same names."),
    ("rows", "Rows, slots and selection (comparison tables: eval, sweep, demo)",
     "Means over every plan of a cell, one plan = one (decode step, sparse layer, query head). "
     "A *group row* is one row index of one bank group: the unit one ACTBG opens, holding "
     "`tokens_per_group_row` token slots (16 x banks per group / banks per token: 16 at d 128 and "
     "32 at d 64 on the default preset)."),
    ("cost", "Cost (comparison tables and `starc timing dense`)",
     "One decode step of one layer and one query head on the KV head's channel, from the golden "
     "timing and energy models (`starc.golden`), selection pass included. Means over the timed "
     "plans (the cost-sampling rule, docs/planner.md); cycles are DRAM clock cycles (tCK) of "
     "the preset."),
    ("ratio", "Ratios to a baseline",
     "Same point (cache, preset, planner), same budget; the ratio of the two means. A missing "
     "baseline is reported under the table and leaves the cell empty (`-`)."),
    ("reduction", "Reductions (sweep)",
     "`1 - variant / baseline` at one budget, per point and pooled over contexts; a negative "
     "reduction means the STARC variant costs MORE than the baseline (slower, or more energy)."),
    ("quality", "Attention quality",
     "Against dense attention in float64 over the FP16 cache the PIM stores, per query head."),
    ("sampling", "Cost sampling",
     "How many plans the golden model timed (docs/planner.md, the cost-sampling rule)."),
    ("breakdown", "Breakdowns",
     "Cycles split by what each issue gap waited for (the command that issued after the gap "
     "decides) and energy split by event (explicit per-activation convention); both sum to "
     "`cycles` and `energy_nJ`."),
    ("accuracy", "End-task quality (eval-quality, sweep --accuracy)",
     "SmolLM2-135M decoded under each policy; 95 % intervals (Wilson for 0/1 scores, else "
     "percentile bootstrap; perplexity: bootstrap over windows)."),
    ("attacc", "AttAcc compatibility model (`starc timing dense --model attacc`)",
     "AttAcc's simulator reproduced cycle for cycle (docs/attacc.md): the whole stack, "
     "`heads_per_channel` KV heads on each of its 16 channels."),
    ("preset", "Preset figures (`starc config show`)",
     "Derived from the preset alone (docs/presets.md)."),
    ("system", "System model (`starc system`, `starc sweep --system`)",
     "One generated token of a whole model on HBM-PIM stacks (docs/system.md): every layer's "
     "attention for every batch entry, each channel's program timed and charged on the golden "
     "model. Per-step rows are one sampled decode step; summary rows average the sampled steps "
     "(trajectory means). `token_*` is the attention on the PIM; the GPU figures are the same "
     "token on GPUs bound by their HBM bandwidth (docs/system.md, GPU baseline)."),
)

_M: list[Metric] = []


def _m(group: str, name: str, unit: str, better: str | None, short: str,
       definition: str = "") -> None:
    _M.append(Metric(name, unit, short, definition or short[0].upper() + short[1:] + ".", better,
                     group))


# ---- keys ---------------------------------------------------------------------------------------
_m("key", "policy", "", None, "selection policy (starc.planner.registry)",
   "Selection policy: dense, oracle, quest, sparq, streaming, starc, starc-row, starc-global "
   "(docs/compiler.md, docs/planner.md).")
_m("key", "budget", "tokens", None, "token budget B, or a mass target pX",
   "Token budget B: at most B tokens attended per query head, recent tokens included; or a mass "
   "target written `p0.95` (as many tokens as the estimated attention mass needs, between "
   "`--mass-floor` and `--mass-cap`).")
_m("key", "preset", "", None, "hardware preset (`+overrides` when --set changed it)")
_m("key", "model", "", None, "model shape of the cache (`file` for a KV file)")
_m("key", "context", "tokens", None, "prefill length L of the cache")
_m("key", "L", "tokens", None, "context length of the dense program")
_m("key", "head_dim", "elements", None, "head dimension d")
_m("key", "heads_per_channel", "", None, "KV heads per channel")
_m("key", "variant", "", None, "STARC variant a reduction is about (starc, starc-row)")
_m("key", "task", "", None, "end task (passkey, RULER-style niah_*, vt, cwe)")
_m("key", "overrides", "", None, "the --set overrides of a sweep point (section.field=value)")

# ---- rows, slots, selection ---------------------------------------------------------------------
_m("rows", "selected", "tokens", None, "tokens attended per query head",
   "Tokens each query head attends (at most B for a token budget), recent tokens included.")
_m("rows", "slots_per_head", "tokens", LOWER, "token slots of the group rows holding a selected "
   "token", "Token slots of the group rows holding at least one selected token, per query head "
   "(`rows x tokens_per_group_row`). What the placement packs; dummy rows of filled rounds are "
   "not counted (`activated_slots` counts them).")
_m("rows", "activated_slots", "tokens", LOWER, "slots_per_head plus the dummy rows filled rounds "
   "open", "Token slots of every group row the attention opens per phase, the dummy rows a filled "
   "round opens to allow an all-bank MAC included.")
_m("rows", "slots_over_B", "ratio", LOWER, "slots_per_head / B (1 = perfectly packed)",
   "`slots_per_head` divided by the budget B (mass budgets: by the tokens attended): 1 means "
   "every activated slot holds a selected token.")
_m("rows", "slices16_per_head", "tokens", LOWER, "16-token bank-row slices holding a selected "
   "token x 16 (the STARC artifact's rows x 16)", "16-token slices (one token set of one bank "
   "row) holding at least one selected token, times 16: the token-equivalents of the STARC "
   "artifact's row tables ('rows x 16'). Equal to `slots_per_head` at d 128.")
_m("rows", "rows", "group rows", LOWER, "group rows holding a selected token, per query head")
_m("rows", "oracle_rows", "group rows", LOWER, "fewest group rows reaching the plan's mass_recall",
   "Row oracle: per plan, the fewest group rows of the same layout (placement as it is) whose "
   "exact attention mass reaches that plan's own `mass_recall`. A bound for any row-level "
   "selection on that image.")
_m("rows", "union_slots", "tokens", LOWER, "GQA union: slots of the rows any query head of the "
   "KV head selects", "Token slots of the group rows holding a token selected by any query head "
   "of the KV head (per KV head): what one shared fetch of the GQA group would open.")
_m("rows", "union_tokens", "tokens", None, "tokens selected by any query head of the KV head")
_m("rows", "occupancy", "fraction", HIGHER, "selected / slots_per_head",
   "Selected tokens per token slot of the rows they sit in (`selected / slots_per_head`), 0..1.")
_m("rows", "rounds", "rounds", LOWER, "activation rounds of the attention program",
   "Activation rounds of the attention program (a round opens up to one row per bank group and "
   "runs its score and value phases).")
_m("rows", "actab", "rounds", None, "rounds opened with one all-bank ACTAB")
_m("rows", "actbg", "activations", None, "per-group ACTBGs of the rounds that are not ACTAB")
_m("rows", "dummy_rows", "group rows", LOWER, "group rows opened only to allow an all-bank MAC")
_m("rows", "filled_rounds", "rounds", None, "rounds filled with dummy rows (planner: fewest "
   "cycles)")
_m("rows", "row_index_plans", "fraction", None, "share of plans where the guard chose the "
   "row-index formation", "Share of plans for which the planner's guard chose the row-index "
   "formation (every touched row index opened in all groups) over rounds (docs/compiler.md).")
_m("rows", "commands", "commands", None, "commands of the program (a step: selection + "
   "attention)")
_m("rows", "refreshes", "commands", None, "refresh commands the schedule inserted")

# ---- cost ---------------------------------------------------------------------------------------
_m("cost", "cycles", "tCK", LOWER, "latency of the program (a step: selection pass + attention)",
   "Cycles from the first command to the last completion of the program, in DRAM clock cycles "
   "(tCK) of the preset. In the comparison tables the program is a decode step's: selection "
   "pass, host read-back barrier, attention. (The AttAcc compatibility model ends at the last "
   "issue, as AttAcc does.)")
_m("cost", "ns", "ns", LOWER, "cycles x tCK")
_m("cost", "selection_cycles", "tCK", LOWER, "the selection pass's part of cycles",
   "Cycles of the selection pass up to the host's read-back barrier (plus `--host-cycles`); "
   "included in `cycles`. 0 for policies without a pass (dense, streaming).")
_m("cost", "attention_cycles", "tCK", LOWER, "cycles - selection_cycles")
_m("cost", "energy_nJ", "nJ", LOWER, "energy, explicit per-activation convention",
   "Energy of the step program with every activated bank row charged explicitly "
   "(act_pj_per_bit x row bits) plus cell reads per byte read, MACs, moves, host I/O and "
   "softmax (`starc.golden.energy`, docs/presets.md). Refresh energy is not included.")
_m("cost", "selection_energy_nJ", "nJ", LOWER, "the selection pass's part of energy_nJ")
_m("cost", "attacc_energy_nJ", "nJ", LOWER, "energy, AttAcc's per-byte convention",
   "Energy in AttAcc's convention: activation folded into a per-byte rate (ACT/PRE + cell RD per "
   "bit read), so a half-used row costs what its used bytes cost. What the published STARC "
   "figures use.")
_m("cost", "floor_cycles", "tCK", None, "K and V bytes at the channel's internal bandwidth",
   "The bandwidth floor: the K and V bytes of the attended tokens at the channel's internal PIM "
   "bandwidth (`pus_per_channel x column_bytes / tCCD_AB` bytes per cycle).")
_m("cost", "ratio_to_floor", "ratio", LOWER, "cycles / floor_cycles of the attended tokens",
   "`cycles` divided by the bandwidth floor of the attended tokens' K and V bytes "
   "(`floor_cycles`); at least 1 / streaming ceiling for any correct timing model.")
_m("cost", "mac_stream_cycles", "tCK", None, "opened rows x all-bank row period, plus refresh",
   "The MAC-stream bound of a dense program: its opened all-bank rows x the row period "
   "(`row_period_cycles`: tRCD, a full row of MACs, tRTP_L and tRP), plus one tRFC per "
   "tREFI - tRFC of streaming (`starc.golden.attacc.mac_stream_bound`). A schedule that hides "
   "every query write, softmax and move under the MACs reaches it.")
_m("cost", "ratio_to_mac_stream", "ratio", LOWER, "cycles / mac_stream_cycles",
   "`cycles` divided by the MAC-stream bound (`mac_stream_cycles`): what the schedule loses to "
   "work the MACs wait for (query writes, softmax, moves at the phase edges).")

# ---- ratios to baselines ------------------------------------------------------------------------
for _what, _col in (("cycles", "cycles"), ("energy", "energy_nJ")):
    _m("ratio", f"{_what}_x_dense", "ratio", LOWER, f"{_col} / dense's {_col}",
       f"`{_col}` divided by the dense policy's `{_col}` on the same point (dense does not depend "
       f"on B). Below 1: cheaper than dense attention.")
    _m("ratio", f"{_what}_x_tokenwise", "ratio", LOWER, f"{_col} / sparq's {_col} (token-wise)",
       f"`{_col}` divided by the token-wise baseline's (`sparq`, SparQ) `{_col}` at the same point "
       f"and budget. Below 1: cheaper than token-wise selection.")

# ---- reductions ---------------------------------------------------------------------------------
for _base, _bname in (("tokenwise", "token-wise (sparq)"), ("dense", "dense")):
    for _k, _col, _what in (("latency", "cycles", "cycles"),
                            ("energy", "energy_nJ", "explicit energy"),
                            ("attacc_energy", "attacc_energy_nJ", "AttAcc-convention energy"),
                            ("attention_latency", "attention_cycles",
                             "cycles without the selection pass"),
                            ("attention_energy", "energy_nJ - selection_energy_nJ",
                             "explicit energy without the selection pass")):
        _m("reduction", f"{_k}_vs_{_base}", "fraction", HIGHER,
           f"1 - {_col} / {_bname}'s ({_what}; negative: costlier)",
           f"`1 - variant / baseline` of {_what} (`{_col}`) against {_bname} at the same point "
           f"and budget. Negative: the variant is slower or uses more energy.")

# ---- quality ------------------------------------------------------------------------------------
_m("quality", "mass_recall", "fraction", HIGHER, "dense softmax mass inside the attended set",
   "Softmax mass of the exact dense attention (float64) that falls on the attended tokens, 0..1.")
_m("quality", "topk_recall", "fraction", HIGHER, "share of the top-k positions attended (k = B)",
   "Share of the k highest-scoring positions that are attended, k = min(B, context) (mass "
   "budgets: k = the tokens attended).")
_m("quality", "rel_error", "ratio", LOWER, "||o - o_dense|| / ||o_dense|| of the attention output",
   "Relative L2 error of the attention output against dense attention in float64; the output "
   "is softmax attention renormalised over the attended set (SparQ: its mean-value correction).")

# ---- sampling -----------------------------------------------------------------------------------
_m("sampling", "cost_n", "plans", None, "plans timed per cell (n)")
_m("sampling", "cost_N", "plans", None, "plans per cell (N)")
_m("sampling", "programs_timed", "plans", None, "plans timed per cell (= cost_n)")

#: cost metrics whose mean carries ``<name>_ci95``
CI_FAMILY = ("cycles", "selection_cycles", "attention_cycles", "ns", "energy_nJ",
             "selection_energy_nJ", "attacc_energy_nJ", "ratio_to_floor")
for _n in CI_FAMILY:
    _m("sampling", f"{_n}_ci95", "", None, f"95 % interval half-width of {_n}",
       f"Half-width of the 95 % interval of the mean `{_n}` over a sampled cell (Student's t, "
       f"finite-population correction; 0 when every plan was timed). Same unit as `{_n}`.")

# ---- breakdowns ---------------------------------------------------------------------------------
_T_PARTS = {
    "selection": "the selection pass (up to the read-back barrier, host cycles included)",
    "mac_issue": "gaps ending in a MAC issue: column streaming at tCCD and its stalls",
    "row_switch": "gaps ending in an activation or precharge (tRCD, tRP, tRAS, tRC, tFAW)",
    "refresh": "gaps ending in a refresh, or an activation that waited for one",
    "data_movement": "gaps ending in a move (WRGB, MVSB, MVGB) or read-back",
    "softmax": "gaps ending in the softmax command (waiting for the score moves)",
    "drain": "from the last issue to the last completion",
}
_E_PARTS = {
    "selection": "the selection pass's whole energy",
    "activation": "bank rows activated x row bits x act_pj_per_bit",
    "column_access": "bank column reads and writes x cell_rw_pj_per_bit",
    "mac": "FP16 MAC lane operations x mac_pj",
    "data_movement": "bytes between bank PUs and the buffer die (moves), with buffer SRAM",
    "host_io": "bytes to and from the host over the interposer (RD, WR, read-back)",
    "softmax": "softmax elements x sfm_ops_per_element x mac_pj",
}
for _p, _d in _T_PARTS.items():
    _m("breakdown", f"t_{_p}", "tCK", None, _d)
for _p, _d in _E_PARTS.items():
    _m("breakdown", f"e_{_p}", "nJ", None, _d)

# ---- end-task quality ---------------------------------------------------------------------------
_m("accuracy", "n", "samples", None, "samples of the cell")
_m("accuracy", "accuracy", "fraction", HIGHER, "mean task score (RULER string_match_all)")
_m("accuracy", "ci_low", "fraction", None, "lower end of accuracy's 95 % interval")
_m("accuracy", "ci_high", "fraction", None, "upper end of accuracy's 95 % interval")
_m("accuracy", "ci_method", "", None, "wilson (0/1 scores) or bootstrap")
_m("accuracy", "delta_vs_dense", "fraction", HIGHER, "accuracy - dense's on the same samples")
_m("accuracy", "delta_ci_low", "fraction", None, "lower end of delta_vs_dense's 95 % interval")
_m("accuracy", "delta_ci_high", "fraction", None, "upper end of delta_vs_dense's 95 % interval")
_m("accuracy", "windows", "windows", None, "text windows scored")
_m("accuracy", "tokens", "tokens", None, "tokens scored")
_m("accuracy", "ppl", "dimensionless", LOWER, "perplexity exp(mean NLL) over the scored tokens")
_m("accuracy", "ppl_ci_low", "", None, "lower end of ppl's 95 % interval")
_m("accuracy", "ppl_ci_high", "", None, "upper end of ppl's 95 % interval")
_m("accuracy", "ppl_dense", "", None, "dense perplexity on the same tokens")
_m("accuracy", "ppl_change", "fraction", LOWER, "ppl / ppl_dense - 1 (paired)")
_m("accuracy", "ppl_change_ci_low", "fraction", None, "lower end of ppl_change's 95 % interval")
_m("accuracy", "ppl_change_ci_high", "fraction", None, "upper end of ppl_change's 95 % interval")
_m("accuracy", "passkey_answer", "", None, "the model's answer under the policy (demo)")
_m("accuracy", "passkey_ok", "yes/no", HIGHER, "the answer contains the pass key (demo)")
_m("accuracy", "agreement", "fraction", HIGHER, "positions whose argmax token equals dense's")

# ---- AttAcc compatibility model -----------------------------------------------------------------
_m("attacc", "max_len", "tokens", None, "the trace generator's maximum length (AttAcc)")
_m("attacc", "attacc_time_s", "s", LOWER, "AttAcc's own time figure for the run")
_m("attacc", "requests", "requests", None, "memory requests per kind (mac, sfm, mvgb, mvsb, wrgb)")
_m("attacc", "command_counts", "commands", None, "commands per mnemonic, whole stack")
_m("attacc", "commands_per_channel", "commands", None, "commands per mnemonic on one channel "
   "(when every channel runs the same)")
_m("attacc", "stack_energy_nJ", "nJ", LOWER, "whole-stack energy in AttAcc's convention, by "
   "part (cell, io, alu, total)")

# ---- preset figures -----------------------------------------------------------------------------
_m("preset", "banks_per_stack", "banks", None, "banks per HBM stack")
_m("preset", "banks_per_channel", "banks", None, "banks per channel")
_m("preset", "groups_per_channel", "groups", None, "(pseudo-channel, SID, bank group) groups")
_m("preset", "stack_GiB", "GiB", None, "capacity per stack")
_m("preset", "external_bandwidth_GBps", "GB/s", None, "pseudo-channels x column bytes / 2 tCK")
_m("preset", "internal_bandwidth_TBps", "TB/s", None, "PUs x column bytes / (tCCD_AB tCK)")
_m("preset", "row_period_cycles", "tCK", None, "all-bank row period with a full row of MACs",
   "All-bank row period with C = columns_per_row MACs: max(tRC, tRCD + (C-1) tCCD_AB + tRTP_L "
   "+ tRP).")
_m("preset", "row_period_ns", "ns", None, "row_period_cycles x tCK")
_m("preset", "streaming_ceiling", "fraction", None, "C tCCD_AB / row period: MAC-issue share "
   "when streaming whole rows")
_m("preset", "tRFC_cycles", "tCK", None, "refresh cycle time: ceil(tRFC_ns / tCK)")
_m("preset", "refresh_tax", "fraction", None, "tRFC / tREFI")
_m("preset", "tokens_per_bank_row", "tokens", None, "columns_per_row / 2")
_m("preset", "banks_per_token_d128", "banks", None, "banks one d = 128 token spans (d / 32)")
_m("preset", "banks_per_token_d64", "banks", None, "banks one d = 64 token spans (d / 32)")

# ---- system model -------------------------------------------------------------------------------
_m("system", "mapping", "", None, "KV heads x batch onto stacks and channels (attacc, balanced, "
   "replicate)", "How the instances (KV head x batch entry) are placed on stacks and channels: "
   "`attacc` (AttAcc's assignment), `balanced` (round-robin over every channel), `replicate` "
   "(balanced, with a KV head's cache copied so its GQA query heads run in parallel).")
_m("system", "step", "", None, "decode step (0-based) along the trajectory")
_m("system", "n_ctx", "tokens", None, "tokens the step attends over: Lin + step + 1")
_m("system", "sampled_steps", "steps", None, "decode steps averaged in a summary row")
_m("system", "token_cycles", "tCK", LOWER, "attention latency per generated token",
   "Attention latency of one generated token: the sum over layers of the slowest channel's "
   "program (a layer ends when its last channel does), selection passes included.")
_m("system", "token_us", "us", LOWER, "token_cycles x tCK")
_m("system", "token_energy_mJ", "mJ", LOWER, "attention energy per generated token (every "
   "channel, explicit activation energy)", "Attention energy of one generated token: every "
   "channel's program of every layer, explicit per-activation convention, selection passes "
   "included; idle channels cost nothing (no background or refresh energy is modelled).")
_m("system", "token_attacc_energy_mJ", "mJ", LOWER, "token_energy_mJ in AttAcc's per-byte "
   "convention")
_m("system", "token_t", "tCK", None, "token_cycles by part (selection, mac_issue, row_switch, "
   "refresh, data_movement, softmax, drain)", "`token_cycles` split by part: per layer the "
   "slowest channel's breakdown (the `t_<part>` categories) with its selection passes split off "
   "exactly; the parts sum to `token_cycles`.")
_m("system", "token_e", "mJ", None, "token_energy_mJ by part (the e_<part> categories)")
_m("system", "token_t_share", "fraction", None, "token_t / token_cycles, per part")
_m("system", "token_e_share", "fraction", None, "token_e / token_energy_mJ, per part")
_m("system", "selection_share", "fraction", LOWER, "token_t.selection / token_cycles")
_m("system", "channel_util", "fraction", HIGHER, "busy channel-cycles / (channels x latency)",
   "Channel utilisation: the channels' busy cycles over channels x `token_cycles` (idle "
   "channels and channels waiting for a layer's slowest one count as idle).")
_m("system", "stack_util", "fraction", HIGHER, "per layer each stack's busiest channel / "
   "(stacks x latency)")
_m("system", "channels_used", "channels", None, "channels holding an instance")
_m("system", "channels", "channels", None, "channels of all stacks")
_m("system", "stacks_used", "stacks", None, "stacks holding an instance")
_m("system", "stacks", "stacks", None, "HBM-PIM stacks of the system")
_m("system", "replicas", "copies", None, "copies of each KV head's cache (mapping replicate)")
_m("system", "bank_activations", "activations", LOWER, "bank rows opened per generated token")
_m("system", "gpu_dense_us", "us", LOWER, "dense attention on the GPUs (HBM-bound)",
   "The same token's dense attention on the GPUs: every K and V byte (and the queries and "
   "outputs) over the GPUs' HBM bandwidth at AttAcc's 85 % efficiency, or the compute time at "
   "80 % of the FP16 peak if larger.")
_m("system", "gpu_dense_energy_mJ", "mJ", LOWER, "gpu_dense_us's DRAM + ALU energy (AttAcc's "
   "constants)")
_m("system", "gpu_sparse_us", "us", LOWER, "GPU reading only the attended K and V (a bound)",
   "The GPUs reading only the K and V of the tokens the policy attends (the union over a GQA "
   "group) and nothing for the selection: a lower bound for the policy on a GPU.")
_m("system", "gpu_sparse_energy_mJ", "mJ", LOWER, "gpu_sparse_us's DRAM + ALU energy")
_m("system", "gpu_over_pim", "ratio", HIGHER, "gpu_dense_us / token_us (above 1: the PIM is "
   "faster)")
_m("system", "fc_gpu_us", "us", LOWER, "fully connected layers on the GPUs per token",
   "QKV and output projections, FFN and LM head on the GPUs: every weight read once per token "
   "for the whole batch (weight-streaming bound, or compute if larger).")
_m("system", "fc_gpu_energy_mJ", "mJ", LOWER, "fc_gpu_us's DRAM + ALU energy")
_m("system", "model_us", "us", LOWER, "fc_gpu_us + token_us: the whole model per token (no "
   "overlap, no communication)")
_m("system", "gpu_model_us", "us", LOWER, "fc_gpu_us + gpu_dense_us: the GPU-only system per "
   "token")
_m("system", "pim_gain", "ratio", HIGHER, "GPU-only dense / PIM dense attention (PIM's gain)")
_m("system", "policy_speedup", "ratio", HIGHER, "PIM dense / the variant's token_us (the "
   "policy's gain on the PIM)")
_m("system", "channel_programs", "programs", None, "distinct channel programs of a step "
   "(identical ones are timed once)")

METRICS: dict[str, Metric] = {}
for _x in _M:
    if _x.name in METRICS:
        raise AssertionError(f"metric {_x.name!r} defined twice")
    METRICS[_x.name] = _x
del _x


#: ``<name>_undefined``: why ``<name>`` is empty in this row (:func:`starc.outputs.undefined`)
UNDEFINED_SUFFIX = "_undefined"


def get(name: str) -> Metric:
    """The metric ``name``; :class:`UnknownMetric` for a name nothing defines."""
    try:
        return METRICS[name]
    except KeyError:
        pass
    if "." in name:                  # a map metric's entry (CSV: flattened), e.g. requests.mac
        stem, key = name.split(".", 1)
        if stem in METRICS:
            m = METRICS[stem]
            return Metric(name, m.unit, f"{key} of {stem}", f"The `{key}` entry of `{stem}`.",
                          m.better if key == "total" else None, m.group)
    stem = name.removesuffix(UNDEFINED_SUFFIX)
    if stem != name and stem in METRICS:
        return Metric(name, "", f"why {stem} is empty in this row",
                      f"Why `{stem}` is empty (`null` in JSON) in this row.", None, "key")
    raise UnknownMetric(f"{name!r} is not in the metric registry (starc.glossary)")


def header(name: str, width: int = 0) -> str:
    """The table header of ``name``: the name itself, broken after underscores into lines of at
    most ``width`` characters (0: one line) so a narrow column keeps the one name."""
    if width <= 0 or len(name) <= width:
        return name
    import re

    parts = re.findall(r"[^_.]+[_.]?", name)
    lines, cur = [], ""
    for piece in parts:
        if cur and len(cur) + len(piece) > width:
            lines.append(cur)
            cur = piece
        else:
            cur += piece
    lines.append(cur)
    return "\n".join(lines)


def glossary_line(names: Iterable[str], *, notes: Sequence[str] = ()) -> str:
    """One paragraph defining ``names`` (keys without a unit are left out when they are plain
    identifiers such as ``policy``), then ``notes`` (e.g. a missing baseline)."""
    seen = []
    for n in names:
        m = get(n)
        if m.group == "key" and n not in ("budget",):
            continue
        if n not in seen:
            seen.append(n)
    text = "Columns (↓ lower is better, ↑ higher): " + "; ".join(
        get(n).describe() for n in seen) + ". Definitions: docs/metrics.md."
    if notes:
        text += " " + " ".join(notes)
    return text


def print_glossary(names: Iterable[str], *, notes: Sequence[str] = (), console=None) -> None:
    """Print :func:`glossary_line` dimmed under a table."""
    from rich.console import Console
    from rich.text import Text

    console = console or Console()
    console.print(Text(glossary_line(names, notes=notes), style="dim"), soft_wrap=False)


def render_markdown() -> str:
    """docs/metrics.md."""
    out = ["# Metrics\n",
           "<!-- generated by `python -m starc.glossary docs/metrics.md` from "
           "sw/starc/glossary.py; do not edit by hand -->\n",
           "Every number starc prints, writes to CSV or JSON, or plots has one name, used as the "
           "JSON key, the CSV column, the table header and in these docs. Tables print a "
           "glossary line under themselves; this page is the full list. *better*: which way a "
           "figure of merit improves (blank: a description, not a figure of merit). Cycles are "
           "DRAM clock cycles (tCK) of the preset.\n",
           "Conventions: a console table too narrow for a name breaks it after an underscore "
           "(`cycles_` over `x_dense`); `<name>_undefined` says why `<name>` is empty (`null` in "
           "JSON, an empty CSV cell, `-` in a table) in that row; a map metric (a JSON object, "
           "e.g. `command_counts`) becomes dotted CSV columns (`command_counts.MACAB`).\n"]
    for group, title, intro in GROUPS:
        ms = [m for m in METRICS.values() if m.group == group]
        out.append(f"## {title}\n")
        out.append(textwrap.fill(intro, 100) + "\n")
        out.append("| name | unit | better | definition |")
        out.append("|---|---|---|---|")
        for m in ms:
            defin = m.definition.replace("|", "\\|")
            out.append(f"| `{m.name}` | {m.unit} | {m.better or ''} | {defin} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    text = render_markdown()
    if not args:
        sys.stdout.write(text)
        return 0
    from pathlib import Path

    from starc.outputs import write_atomic
    write_atomic(Path(args[0]), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

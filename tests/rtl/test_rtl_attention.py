"""cocotb + Verilator tier: the attention channel (controller, banks, PUs, softmax, moves) runs
decode steps planned from a compiled KV cache, bit for bit and cycle for cycle against the golden
model; the scoreboard fails when a golden value or the cycle count is perturbed.

One Verilator build (``starc_sim.cosim.COSIM_MODEL``: 16 banks, d 64, in the harness
``starc_hw.attention_sim.AttentionSim``) serves the tests here, the ``starc rtl cosim`` command and
the demo. A second, small one (:data:`PRESET_2H`: another preset's timing on 4 banks, d 32, with
the state of two heads) serves the steps of two heads (docs/multihead.md) and the check that a
non-default preset reaches the RTL; the 16-bank two-head channel (``MULTIHEAD_MODEL``) runs the
same two-head tests with ``STARC_RTL_FULL=1``. The memory image goes in by the backdoor, except
in the tests that exist for the write path (``load="wr"`` through the harness, and the
host-driven run). ``STARC_SEED`` changes the testbench seed.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from starc.golden import functional, timing
from starc.kv import synthetic_kv

#: One xdist group per Verilator model: under ``pytest -n`` a model is built by one worker while
#: the other runs what does not need it.
pytestmark = [pytest.mark.rtl, pytest.mark.xdist_group("attention-16")]

SEED = int(os.environ.get("STARC_SEED", "1"))
FULL = bool(os.environ.get("STARC_RTL_FULL"))

#: The power-unlimited preset: tCCD_AB 4 where the default preset has 6 (docs/presets.md).
NPC = "attacc-hbm3-5.2-npc"
#: Two-head models: the small one in every suite, the 16-bank one with STARC_RTL_FULL=1.
TWO_HEAD = [
    pytest.param("npc-4x2", marks=pytest.mark.xdist_group("attention-npc-4x2")),
    pytest.param("16x2", marks=[pytest.mark.xdist_group("attention-16x2"), pytest.mark.skipif(
        not FULL, reason="the 16-bank two-head channel; set STARC_RTL_FULL=1")]),
]


def _two_head_spec(name: str):  # noqa: ANN202
    """``npc-4x2`` (:data:`PRESET_2H`): :data:`NPC`'s timing on the 4-bank organisation
    ``TINY`` (one pseudo-channel, one SID, 2 bank groups x 2 banks), d 32, two heads of state;
    ``16x2``: ``MULTIHEAD_MODEL`` (the default preset, 16 banks, d 64, two heads)."""
    from starc_sim.cosim import MULTIHEAD_MODEL, ModelSpec
    from starc_sim.programs import TINY, load_config

    if name == "16x2":
        return MULTIHEAD_MODEL
    return ModelSpec.for_config(load_config(NPC), head_dim=32, organisation=TINY, heads=2)


PRESET_2H = "npc-4x2"


def _small_cache():  # noqa: ANN202
    """A d 32 cache with a GQA group of two query heads (for the 4-bank model)."""
    return synthetic_kv(n_layers=3, n_q_heads=2, n_kv_heads=1, head_dim=32, prefill_len=160,
                        decode_steps=1, seed=7)


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    from starc_sim.cosim import COSIM_MODEL, build_attention

    return build_attention(COSIM_MODEL)


def _model2(name: str):  # noqa: ANN202
    from starc_sim.cosim import build_attention

    return build_attention(_two_head_spec(name))


@pytest.fixture(scope="module")
def cache():  # noqa: ANN201
    from starc_sim.cosim import synthetic_cache

    return synthetic_cache()


def _golden_agrees(scn, res) -> None:  # noqa: ANN001
    """Independent of the RTL: the golden model's own numbers for this program."""
    cfg = scn.spec.cfg
    gold = functional.execute(scn.prog, scn.wdata, scn.image, cfg, scn.spec.head_dim)
    assert res.output_rtl == gold.output_bits.tolist()
    assert res.rtl_cycles == timing.schedule(scn.prog, cfg).total_cycles
    assert 0 <= res.last_result_cycle <= res.rtl_cycles


@pytest.mark.parametrize(("policy", "budget", "idle", "bp"), [
    ("dense", 0, 0.0, 0.0),
    ("starc-row", 128, 0.2, 0.2),
    ("quest", 96, 0.3, 0.1),
    ("starc", 160, 0.1, 0.3),
])
def test_step_matches_golden(model, cache, policy, budget, idle, bp) -> None:  # noqa: ANN001
    from starc_sim.cosim import planner_scenario, run_scenario

    scn = planner_scenario(cache, policy=policy, budget=budget or 512)
    res = run_scenario(scn, idle=idle, backpressure=bp, seed=SEED, model=model)
    assert res.bit_exact and res.cycles_equal and res.issues_equal, res.mismatches
    _golden_agrees(scn, res)
    # the output is attention: finite and not all zero
    out = np.array(res.output_rtl, np.uint16).view(np.float16).astype(np.float64)
    assert np.all(np.isfinite(out)) and np.abs(out).max() > 0


@pytest.mark.parametrize("two", TWO_HEAD)
def test_two_heads_overlapped(two) -> None:  # noqa: ANN001
    """Two KV heads on one channel in the overlapped order (docs/multihead.md): head 1's
    score phase runs while head 0's softmax and probability moves do, head 0's value phase
    while head 1's softmax does. Every issue cycle, every score and probability beat (with its
    head), both heads' outputs: equal to the golden model."""
    from starc_sim.cosim import dense_heads_scenario, run_scenario

    scn = dense_heads_scenario(_two_head_spec(two), heads=2)
    res = run_scenario(scn, idle=0.1, backpressure=0.1, seed=SEED, model=_model2(two))
    assert res.bit_exact and res.cycles_equal and res.issues_equal, res.mismatches
    cfg = scn.spec.cfg
    gold = functional.execute(scn.prog, scn.wdata, scn.image, cfg, scn.spec.head_dim)
    assert gold.heads == 2
    assert res.outputs_rtl == gold.outputs_bits.ravel().tolist()
    assert res.rtl_cycles == timing.schedule(scn.prog, cfg).total_cycles
    # the cycles `starc timing dense --heads-per-channel 2` reports for this channel and length
    from starc.golden.cli import dense_cost_rows

    (row,) = dense_cost_rows(cfg, [scn.info["length"]], scn.spec.head_dim, 2)
    # its command count includes the refreshes the schedule inserts (one on the 4-bank model)
    assert row["commands"] == len(scn.prog) + row["refreshes"]
    assert res.rtl_cycles == row["cycles"]


@pytest.mark.parametrize("two", TWO_HEAD)
def test_two_query_heads_planned(two, cache) -> None:  # noqa: ANN001
    """Two query heads of a GQA group, each with its own STARC selection, in one overlapped
    program (starc.planner.multihead.step_program): bit- and cycle-exact, each head's output
    the golden model's."""
    from starc_sim.cosim import planner_scenario, run_scenario

    spec = _two_head_spec(two)
    heads_cache = cache if spec.head_dim == cache.meta.head_dim else _small_cache()
    scn = planner_scenario(heads_cache, spec, policy="starc-row", budget=64, heads=2)
    res = run_scenario(scn, seed=SEED, model=_model2(two))
    assert res.bit_exact and res.cycles_equal and res.issues_equal, res.mismatches
    gold = functional.execute(scn.prog, scn.wdata, scn.image, scn.spec.cfg, scn.spec.head_dim)
    assert gold.heads == 2 and res.outputs_rtl == gold.outputs_bits.ravel().tolist()


def test_write_path(model, cache) -> None:  # noqa: ANN001
    """The image through WR commands (every load issue checked), then the same step: same
    result and the same cycle count as with the backdoor (restart zeroes time)."""
    from starc_sim.cosim import planner_scenario, run_scenario

    scn = planner_scenario(cache, policy="starc-row", budget=64)
    wr = run_scenario(scn, idle=0.2, backpressure=0.2, seed=SEED, model=model, load="wr")
    bd = run_scenario(scn, idle=0.2, backpressure=0.2, seed=SEED, model=model)
    assert wr.bit_exact and wr.cycles_equal, wr.mismatches
    assert wr.load_commands > 0
    assert (wr.rtl_cycles, wr.output_rtl) == (bd.rtl_cycles, bd.output_rtl)
    _golden_agrees(scn, wr)


def test_host_driven(model, cache) -> None:  # noqa: ANN001
    """A Python host on the channel's ports every clock (stream drivers, WR image load)."""
    from starc_sim.cosim import planner_scenario, run_scenario

    scn = planner_scenario(cache, policy="streaming", budget=48)
    res = run_scenario(scn, idle=0.2, backpressure=0.2, seed=SEED, model=model, host=True)
    assert res.bit_exact and res.cycles_equal and res.issues_equal, res.mismatches
    _golden_agrees(scn, res)


def test_empty_step(model) -> None:  # noqa: ANN001
    """A step that selects no token: no image, the query alone; output zero, golden cycles."""
    from starc.isa import PROGRAM_DTYPE, Op
    from starc_sim.cosim import COSIM_MODEL, Scenario, run_scenario

    chunks = COSIM_MODEL.head_dim // 16
    prog = np.array([(int(Op.WRGB), 0, 0, c, 0, c) for c in range(chunks)], PROGRAM_DTYPE)
    wdata = np.random.default_rng(SEED).integers(0, 0x3C00, (chunks, 16)).astype(np.uint16)
    scn = Scenario("empty step", COSIM_MODEL, prog, wdata, {})
    res = run_scenario(scn, seed=SEED, model=model)
    assert res.bit_exact and res.cycles_equal, res.mismatches
    assert res.output_rtl == [0] * COSIM_MODEL.head_dim
    _golden_agrees(scn, res)


@pytest.mark.parametrize("what", ["output", "cycles", "score"])
def test_scoreboard_catches_perturbation(model, cache, what) -> None:  # noqa: ANN001
    from starc_sim.cosim import planner_scenario, run_scenario
    from starc_sim.runner import RtlTestFailure

    scn = planner_scenario(cache, policy="starc-row", budget=64)
    with pytest.raises(RtlTestFailure):
        run_scenario(scn, seed=SEED, perturb=what, model=model)


def test_cli_cosim(model, capsys) -> None:  # noqa: ANN001
    from starc.cli import main

    assert main(["rtl", "cosim", "--policy", "streaming", "--budget", "64"]) == 0
    out = capsys.readouterr().out
    assert "outputs bit-exact with the golden model: True" in out
    assert "equal: True" in out
    # --json: stdout is the JSON document alone
    assert main(["rtl", "cosim", "--policy", "streaming", "--budget", "64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bit_exact"] and info["cycles_equal"]
    assert info["rtl_cycles"] == info["golden_cycles"] > 0


@pytest.mark.xdist_group("attention-npc-4x2")
def test_cosim_step_uses_the_preset() -> None:
    """``cosim_step`` co-simulates the preset it is given: the power-unlimited preset (tCCD_AB 4
    instead of 6) on a 4-bank model, d 32 (:data:`PRESET_2H`, the two-head tests' build: a
    one-head step runs on it as well); its cycle count is that preset's golden one and differs
    from the default preset's."""
    from starc_sim.cosim import cosim_step
    from starc_sim.programs import TINY, load_config

    cfg = load_config(NPC)
    assert cfg.timing.tCCD_AB != load_config(None).timing.tCCD_AB
    small = _small_cache()
    res = cosim_step(cfg, small, policy="dense", budget=512, organisation=TINY, heads=2)
    assert res["ran"] and res["bit_exact"] and res["cycles_equal"], res
    assert res["preset"].startswith("attacc-hbm3-5.2")
    assert "timing.tCCD_AB" in res["spec_overrides"]
    from starc_sim.cosim import ModelSpec, planner_scenario

    spec = ModelSpec.for_config(cfg, head_dim=32, organisation=TINY, heads=2)
    assert spec == _two_head_spec(PRESET_2H)
    scn = planner_scenario(small, spec, policy="dense", budget=512)
    assert res["golden_cycles"] == timing.schedule(scn.prog, spec.cfg).total_cycles
    default = ModelSpec.for_config(load_config(None), head_dim=32, organisation=TINY)
    scn0 = planner_scenario(small, default, policy="dense", budget=512)
    assert timing.schedule(scn0.prog, default.cfg).total_cycles != res["golden_cycles"]


# The default preset's full channel: 64 banks (2 PC x 2 SID x 4 BG x 4), 16 lanes, d 128 (two
# banks per token). One sparse step runs in every suite; the dense step only with
# STARC_RTL_FULL=1.
@pytest.mark.parametrize("policy", [
    "starc-row",
    pytest.param("dense", marks=pytest.mark.skipif(
        not os.environ.get("STARC_RTL_FULL"),
        reason="second full-size step (dense); set STARC_RTL_FULL=1")),
])
@pytest.mark.xdist_group("attention-64")
def test_full_size_step(policy) -> None:  # noqa: ANN001
    from starc_sim.cosim import FULL_MODEL, planner_scenario, run_scenario

    spec = FULL_MODEL
    assert spec.cfg.org.banks_per_channel == 64 and spec.cfg.pu.lanes == 16
    full = synthetic_kv(n_layers=3, n_q_heads=2, n_kv_heads=1, head_dim=128, prefill_len=200,
                        decode_steps=1, seed=5)
    scn = planner_scenario(full, spec, policy=policy, budget=64)
    res = run_scenario(scn, idle=0.1, backpressure=0.1, seed=SEED)
    assert res.bit_exact and res.cycles_equal, res.mismatches
    _golden_agrees(scn, res)

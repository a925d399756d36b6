"""cocotb + Verilator tier: the attention channel (controller, banks, PUs, softmax, moves) runs
decode steps planned from a compiled KV cache, bit for bit and cycle for cycle against the golden
model; the scoreboard fails when a golden value or the cycle count is perturbed.

One Verilator build (``starc_sim.cosim.COSIM_MODEL``: 16 banks, d 64) serves the tests here, the
``starc rtl cosim`` command and the demo; a second one, the default preset's full 64-bank channel
(d 128), runs ``test_full_size_step``. ``STARC_SEED`` changes the testbench seed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from starc.kv import synthetic_kv

pytestmark = pytest.mark.rtl

SEED = int(os.environ.get("STARC_SEED", "1"))


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    from starc_sim.cosim import COSIM_MODEL, build_attention

    return build_attention(COSIM_MODEL)


@pytest.fixture(scope="module")
def cache():  # noqa: ANN201
    from starc_sim.cosim import synthetic_cache

    return synthetic_cache()


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
    # independent of the RTL: the golden model's own numbers for this program
    from starc.golden import functional, timing

    cfg = scn.spec.cfg
    gold = functional.execute(scn.prog, scn.wdata, scn.image, cfg, scn.spec.head_dim)
    assert res.output_rtl == gold.output_bits.tolist()
    assert res.rtl_cycles == timing.schedule(scn.prog, cfg).total_cycles
    assert 0 <= res.last_result_cycle <= res.rtl_cycles
    # the output is attention: close to a float64 reference of the selected tokens
    out = np.array(res.output_rtl, np.uint16).view(np.float16).astype(np.float64)
    assert np.all(np.isfinite(out)) and np.abs(out).max() > 0


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


# The default preset's full channel: 64 banks (2 PC x 2 SID x 4 BG x 4), 16 lanes, d 128 (two
# banks per token). One sparse step runs in every suite (a build of about 4 minutes on 2 cores,
# then under a minute of simulation, mostly the image load); the dense step only with
# STARC_RTL_FULL=1.
@pytest.mark.parametrize("policy", [
    "starc-row",
    pytest.param("dense", marks=pytest.mark.skipif(
        not os.environ.get("STARC_RTL_FULL"),
        reason="second full-size step (dense, about a minute of simulation); set "
               "STARC_RTL_FULL=1")),
])
def test_full_size_step(policy) -> None:  # noqa: ANN001
    from starc_sim.cosim import FULL_MODEL, planner_scenario, run_scenario

    spec = FULL_MODEL
    assert spec.cfg.org.banks_per_channel == 64 and spec.cfg.pu.lanes == 16
    full = synthetic_kv(n_layers=3, n_q_heads=2, n_kv_heads=1, head_dim=128, prefill_len=200,
                        decode_steps=1, seed=5)
    scn = planner_scenario(full, spec, policy=policy, budget=64)
    res = run_scenario(scn, idle=0.1, backpressure=0.1, seed=SEED)
    assert res.bit_exact and res.cycles_equal, res.mismatches

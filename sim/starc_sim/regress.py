"""``starc rtl regress``: many co-simulation scenarios on one Verilator build, with coverage.

A scenario is a point (a JSON dict) of one of two kinds:

``step``
    One decode step planned from a seeded synthetic cache (``prefill`` tokens, ``cache_seed``):
    ``policy``, ``budget``, decode ``step``, testbench ``seed``, host ``idle`` and
    ``backpressure`` probabilities. Checked bit for bit and cycle for cycle against the golden
    model (``tb_attention.scenario``, image by the backdoor).
``directed``
    A short program whose last command a rarely binding constraint decides
    (:func:`starc_sim.programs.directed_programs`: tRRD_L, tWTR_S, and on organisations that
    allow them tFAW and tRC), checked like a random program.
``program``
    A seeded random legal program of about ``length`` commands (``starc_sim.programs``, its
    data-movement commands left out: their datapath effects are checked by the steps): every
    issue, the cycle count and the bank checker's flags (``tb_attention.program``).

The points run on the sweep engine (``starc.sweep.engine.run_points``): local processes, or a
Dask cluster with a scheduler address; results are cached by content hash (the point includes the
build folder, which names the gateware's digest, and a digest of this package), so a rerun after
no change costs nothing. The model is built once, before the workers start.

For every passing scenario the golden schedule's binding constraints
(:func:`starc_sim.coverage.binding_rules`) are counted: the report lists which constraints and
command pairs bound at least once. For every failure it gives a one-line command that reproduces
it with its seed, and (``waves``) reruns it on the waves build and names the FST file.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_GRID", "QUICK_GRID", "grid_points", "reproduce", "run_point", "scenario_name"]

#: The default regression (200 scenarios): 7 policies x 3 budgets x 2 contexts x 2 steps x 2
#: seeds (idle and backpressure with the odd seed, none with the even one), plus 32 random
#: programs; plus the directed programs of the constraints the others do not make bind.
DEFAULT_GRID: dict[str, Any] = {
    "policies": ["dense", "oracle", "quest", "sparq", "streaming", "starc", "starc-row"],
    "budgets": [64, 160, 512],
    "prefills": [300, 900],
    "steps": [0, 1],
    "seeds": [1, 2],
    "traffic": {1: (0.3, 0.3), 2: (0.0, 0.0)},
    "programs": 32,
    "program_length": 400,
    "directed": True,
}
#: A quick regression for the test suite and a first look.
QUICK_GRID: dict[str, Any] = {
    "policies": ["dense", "starc-row", "quest"], "budgets": [96], "prefills": [300],
    "steps": [0], "seeds": [1], "traffic": {1: (0.2, 0.2)}, "programs": 2,
    "program_length": 300,
}

CACHE_LAYERS = 3          # the synthetic caches: layers (the last is sparse), one KV head
CACHE_Q_HEADS = 3
CACHE_DECODE_STEPS = 2


@lru_cache(maxsize=1)
def _tb_digest() -> str:
    """Digest of this package's sources (the testbenches and checkers a result depends on)."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def grid_points(grid: dict[str, Any], model: dict[str, Any]) -> list[dict[str, Any]]:
    """The scenarios of ``grid`` on ``model`` (an ``RtlModel.detached()``), as points."""
    pts: list[dict[str, Any]] = []
    common = {"model": model, "tb": _tb_digest()}
    for prefill in grid["prefills"]:
        for policy in grid["policies"]:
            for budget in grid["budgets"]:
                for step in grid["steps"]:
                    for seed in grid["seeds"]:
                        idle, bp = grid["traffic"].get(seed, (0.0, 0.0))
                        pts.append({"kind": "step", "policy": policy, "budget": int(budget),
                                    "prefill": int(prefill), "cache_seed": 3, "step": int(step),
                                    "seed": int(seed), "idle": idle, "bp": bp, **common})
    for k in range(int(grid.get("programs", 0))):
        pts.append({"kind": "program", "length": int(grid.get("program_length", 400)),
                    "program_seed": 1000 + k, "explicit_ref": k % 2 == 1, "seed": 1 + k,
                    "idle": 0.2 * (k % 3), "bp": 0.2 * ((k + 1) % 3), **common})
    if grid.get("directed"):
        for name in _directed_names():
            pts.append({"kind": "directed", "name": name, "seed": 1, "idle": 0.0, "bp": 0.0,
                        **common})
    return pts


def _directed_names() -> list[str]:
    from starc_sim.cosim import COSIM_MODEL
    from starc_sim.programs import directed_programs

    return sorted(directed_programs(COSIM_MODEL.cfg))


def scenario_name(p: dict[str, Any]) -> str:
    if p["kind"] == "step":
        return (f"{p['policy']} B={p['budget']} L={p['prefill']} step {p['step']} "
                f"seed {p['seed']} idle {p['idle']:g} bp {p['bp']:g}")
    if p["kind"] == "directed":
        return f"directed {p['name']} seed {p['seed']}"
    ref = ", REF" if p["explicit_ref"] else ""
    return (f"program #{p['program_seed']} ({p['length']} cmds{ref}) seed {p['seed']} "
            f"idle {p['idle']:g} bp {p['bp']:g}")


def reproduce(p: dict[str, Any]) -> str:
    """One command that reruns scenario ``p`` with its seeds and dumps its waves."""
    if p["kind"] == "step":
        args = ["starc", "rtl", "cosim", "--policy", p["policy"], "--budget", str(p["budget"]),
                "--prefill", str(p["prefill"]), "--cache-seed", str(p["cache_seed"]),
                "--step", str(p["step"]), "--seed", str(p["seed"]), "--idle", f"{p['idle']:g}",
                "--backpressure", f"{p['bp']:g}", "--waves"]
    elif p["kind"] == "directed":
        args = ["starc", "rtl", "regress", "--directed", p["name"], "--seed", str(p["seed"]),
                "--waves"]
    else:
        args = ["starc", "rtl", "regress", "--program", str(p["program_seed"]),
                "--program-length", str(p["length"]), "--seed", str(p["seed"]),
                "--idle", f"{p['idle']:g}", "--backpressure", f"{p['bp']:g}",
                *(["--explicit-ref"] if p["explicit_ref"] else []), "--waves"]
    return shlex.join(args)


def synthetic_step_cache(prefill: int, seed: int) -> Any:
    from starc.kv import synthetic_kv

    from starc_sim.cosim import COSIM_MODEL

    return synthetic_kv(n_layers=CACHE_LAYERS, n_q_heads=CACHE_Q_HEADS, n_kv_heads=1,
                        head_dim=COSIM_MODEL.head_dim, prefill_len=prefill,
                        decode_steps=CACHE_DECODE_STEPS, seed=seed)


def program_scenario(p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The program of ``p`` (a random one without data-movement commands, or a directed one)
    and its data beats."""
    from starc.isa import Op

    from starc_sim.cosim import COSIM_MODEL
    from starc_sim.programs import random_program

    cfg = COSIM_MODEL.cfg
    if p["kind"] == "directed":
        from starc_sim.programs import directed_programs

        progs = directed_programs(cfg)
        if p["name"] not in progs:
            raise ValueError(f"no directed program {p['name']!r} on this model (it has "
                             f"{', '.join(sorted(progs))})")
        prog, seed = progs[p["name"]], 0
    else:
        prog = random_program(cfg, int(p["length"]), int(p["program_seed"]),
                              explicit_ref=bool(p["explicit_ref"]), rows=COSIM_MODEL.rows)
        keep = ~np.isin(prog["op"], [int(Op.MVSB), int(Op.MVGB), int(Op.SFM), int(Op.WRGB)])
        prog, seed = prog[keep], int(p["program_seed"])
    rng = np.random.default_rng(seed)
    # one data beat per WR and per WRGB, in program order (``arg`` indexes the beats)
    beats = np.flatnonzero(np.isin(prog["op"], [int(Op.WR), int(Op.WRGB)]))
    for k, i in enumerate(beats):
        prog["arg"][i] = k
    wdata = rng.integers(0, 1 << 16, (max(len(beats), 1), cfg.pu.lanes)).astype(np.uint16)
    return prog, wdata


def run_point(p: dict[str, Any], *, waves_model: Any = None) -> dict[str, Any]:
    """Run one scenario; never raises for a disagreement (it is the result)."""
    import time

    from starc.golden.timing import schedule

    from starc_sim.cosim import COSIM_MODEL, planner_scenario, run_scenario
    from starc_sim.coverage import Coverage, binding_rules
    from starc_sim.runner import RtlTestFailure, attach_model

    t0 = time.perf_counter()
    out: dict[str, Any] = {"name": scenario_name(p), "repro": reproduce(p)}
    model = waves_model or attach_model(p["model"])
    waves = waves_model is not None
    cfg = COSIM_MODEL.cfg
    try:
        if p["kind"] == "step":
            cache = synthetic_step_cache(p["prefill"], p["cache_seed"])
            scn = planner_scenario(cache, COSIM_MODEL, policy=p["policy"], budget=p["budget"],
                                   step=p["step"])
            prog = scn.prog
            out["commands"] = len(prog)
            try:
                res = run_scenario(scn, idle=p["idle"], backpressure=p["bp"], seed=p["seed"],
                                   model=model, quiet=True, waves=waves)
                ok, detail = True, res
            except RtlTestFailure as e:
                ok, detail = False, e
        else:
            prog, wdata = program_scenario(p)
            out["commands"] = len(prog)
            ok, detail = _run_program(model, prog, wdata, p, waves)
    except ValueError as e:   # the scenario does not fit the model (e.g. too many rows)
        out.update(status="skipped", reason=str(e), seconds=time.perf_counter() - t0)
        return out
    out["status"] = "pass" if ok else "FAIL"
    if ok:
        sched = schedule(prog, cfg)
        cov = Coverage()
        cov.add(binding_rules(prog, cfg, sched))
        if getattr(sched, "rule", None) is not None:
            cov.add_rule_ids(sched.rule)
        out["coverage"] = cov.as_dict()
        out["rtl_cycles"] = out["golden_cycles"] = int(sched.total_cycles)
        out["run_dir"] = getattr(detail, "run_dir", "") or ""
    else:
        out["error"] = str(detail)[:3000]
    if waves:
        out["waves"] = getattr(detail, "waves", "") or _last_waves(model)
    out["seconds"] = time.perf_counter() - t0
    return out


def _last_waves(model: Any) -> str:
    runs = sorted(model.build_dir.glob("runs/*/dump.fst"), key=lambda f: f.stat().st_mtime)
    return str(runs[-1]) if runs else ""


def _run_program(model: Any, prog: np.ndarray, wdata: np.ndarray, p: dict[str, Any],
                 waves: bool) -> tuple[bool, Any]:
    import tempfile

    from starc.golden.timing import schedule

    from starc_sim.cosim import COSIM_MODEL, PROG_DEPTH, harness_constants
    from starc_sim.runner import RtlTestFailure
    from starc_sim.scoreboard import bank_violations

    spec, cfg = COSIM_MODEL, COSIM_MODEL.cfg
    if len(prog) > PROG_DEPTH:
        raise ValueError(f"program of {len(prog)} commands; the harness holds {PROG_DEPTH}")
    sched = schedule(prog, cfg, refresh=spec.refresh)
    flags = sorted(k for k in bank_violations(sched.program, sched.issue, cfg) if k != "commands")
    base = model.build_dir / "runs"
    base.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="program-", dir=base))
    bundle = run_dir / "bundle.npz"
    np.savez(bundle, prog=prog, wdata=wdata, full=sched.program, issue=sched.issue,
             inserted=sched.inserted, rule=sched.rule, total=np.int64(sched.total_cycles),
             violations=np.array(json.dumps(flags)))
    env = {"STARC_TB_SPEC": json.dumps(spec.key()), "STARC_TB_BUNDLE": str(bundle),
           "STARC_TB_RESULT": str(run_dir / "result.json"), "STARC_TB_IDLE": str(p["idle"]),
           "STARC_TB_BACKPRESSURE": str(p["bp"]), "STARC_TB_HW": json.dumps(harness_constants())}
    try:
        model.run("starc_sim.tb_attention", testcase="program", extra_env=env, seed=p["seed"],
                  waves=waves, test_dir=run_dir, quiet=True)
    except RtlTestFailure as e:
        return False, e
    return True, type("Done", (), {"run_dir": str(run_dir),
                                   "waves": str(run_dir / "dump.fst") if waves else ""})()


def summarise(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals, coverage over the passing scenarios, failures with their reproduction."""
    from starc_sim.cosim import COSIM_MODEL
    from starc_sim.coverage import Coverage, unreachable

    results = list(results)
    cov = Coverage(unreachable=unreachable(COSIM_MODEL.cfg))
    for r in results:
        if r.get("coverage"):
            cov.merge(r["coverage"])
    counts = {k: sum(r["status"] == k for r in results) for k in ("pass", "FAIL", "skipped")}
    return {"scenarios": len(results), **counts,
            "seconds": sum(r.get("seconds", 0.0) for r in results),
            "coverage": cov.as_dict(),
            "failures": [{k: r.get(k) for k in ("name", "repro", "error", "waves")}
                         for r in results if r["status"] == "FAIL"],
            "skipped_scenarios": [{k: r.get(k) for k in ("name", "reason")}
                                  for r in results if r["status"] == "skipped"]}

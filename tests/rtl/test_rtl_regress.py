"""`starc rtl regress --quick`: decode steps and random programs on the co-simulation build,
through the sweep engine's worker processes, with the constraint coverage of what passed."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.rtl, pytest.mark.xdist_group("attention-16")]


def test_quick_regression(tmp_path) -> None:  # noqa: ANN001
    """The quick regression passes with the constraint coverage of what ran; its ``--json`` is
    strict JSON alone on stdout (the test tests/jsoncommands.py names for this command), the
    same document as its ``-o`` file."""
    from jsoncommands import COMMANDS, run_json, strict_loads

    tier, args = COMMANDS[("rtl", "regress")]
    assert tier == "regress"
    rc, stdout, err = run_json(("rtl", "regress"), args, tmp_path)
    report = strict_loads(stdout)
    assert rc == 0, (report["failures"], err[-3000:])
    assert report == json.loads((tmp_path / args[args.index("-o") + 1]).read_text())
    assert report["scenarios"] == 5 and report["pass"] == 5 and report["FAIL"] == 0
    cov = report["coverage"]
    # steps bind the datapath rules, programs the DRAM ones (RD/WR turnarounds among them)
    for rule in ("tRCD", "tCCD_AB", "MAC latency", "SFM done", "tRTP_L", "tRP"):
        assert cov["rules"].get(rule, 0) > 0, rule
    assert cov["commands"] == sum(r["commands"] for r in report["results"])
    assert all(r["repro"].startswith("starc rtl ") for r in report["results"])


def _directed_names() -> list[str]:
    from starc_sim.cosim import COSIM_MODEL
    from starc_sim.programs import directed_programs

    return sorted(directed_programs(COSIM_MODEL.cfg))


@pytest.mark.parametrize("name", _directed_names())
def test_directed_program_on_the_rtl(name) -> None:  # noqa: ANN001
    """Each directed program of the default regression runs on the RTL with every issue cycle,
    the cycle count and the bank flags of the golden model, and its constraint (or pair) binds:
    the ones that planned steps never make bind run WRGB, SFM and MVGB on the datapath, a
    program longer than tREFI gets an inserted refresh, the pair programs mix all-bank and
    per-group MACs with RD/WR, softmaxes and refreshes."""
    from starc_sim.cosim import COSIM_MODEL, build_attention
    from starc_sim.regress import _tb_digest, run_point

    model = build_attention(COSIM_MODEL)
    r = run_point({"kind": "directed", "name": name, "seed": 3, "idle": 0.2, "bp": 0.2,
                   "model": model.detached(), "tb": _tb_digest()})
    assert r["status"] == "pass", r.get("error")
    if "->" in name:   # a pair program: "rule src->dst"
        rule, rest = name.rsplit(" ", 1)
        key = " | ".join((rule, *rest.split("->")))
        assert r["coverage"]["pairs"].get(key, 0) > 0, r["coverage"]["pairs"]
    else:
        assert r["coverage"]["rules"].get(name, 0) > 0, r["coverage"]["rules"]

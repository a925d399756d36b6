"""The pure-Python side of the co-simulation tools: binding-constraint coverage of the golden
schedule, the regression's scenarios and reproductions, the runner's build keys and Verilog
transforms, and the `rtl verilog` summary."""

from __future__ import annotations

import argparse
import shlex

import numpy as np
import pytest
from starc.golden.programs import dense_program, stream_program
from starc.golden.timing import schedule
from starc.isa import PROGRAM_DTYPE, Op
from starc_sim.coverage import PAIRS, RULES, Coverage, CoverageError, binding_rules
from starc_sim.programs import SHORT_REFRESH, SMALL, load_config, random_program

CFG = load_config(None)


def test_stream_program_binds_the_row_period() -> None:
    """One all-bank row at peak (docs/rtl.md timing diagram): the first MACAB waits tRCD after
    the ACTAB, the next ones tCCD_AB, the PREA tRTP_L after the last MAC, the next ACTAB tRP
    after the PREA; each issue gap equals the binding distance of the preset."""
    tm = CFG.timing
    prog = stream_program(CFG, 2)
    sched = schedule(prog, CFG, refresh=False)
    b = binding_rules(prog, CFG, sched, refresh=False)
    ops = [x.op for x in b]
    first_mac = ops.index("MACAB")
    assert b[first_mac].pairs == (("tRCD", "ACT", "MACAB"),)
    assert sched.issue[first_mac] - sched.issue[first_mac - 1] == tm.tRCD
    assert all(x.pairs == (("tCCD_AB", "MACAB", "MACAB"),) for x in b[first_mac + 1:first_mac + 32])
    pre = ops.index("PREA")
    assert b[pre].rules == ("tRTP_L",)
    assert sched.issue[pre] - sched.issue[pre - 1] == tm.tRTP_L
    act2 = ops.index("ACTAB", 1)
    assert "tRP" in b[act2].rules
    assert sched.issue[act2] - sched.issue[pre] == tm.tRP


@pytest.mark.parametrize("seed", range(6))
def test_replay_agrees_with_the_golden_schedule(seed: int) -> None:
    """The replay's largest bound is the golden issue cycle of every command (it raises
    otherwise), on random programs with refreshes, explicit REFs, RD/WR turnarounds."""
    cfg = load_config(None, {**SMALL, **SHORT_REFRESH})
    prog = random_program(cfg, 400, seed, explicit_ref=seed % 2 == 0)
    sched = schedule(prog, cfg)
    b = binding_rules(prog, cfg, sched)
    assert len(b) == len(sched.program)
    assert all(x.pairs for x in b)
    assert all(set(x.pairs) <= set(PAIRS) for x in b), "a pair outside PAIRS"
    assert sum(x.inserted for x in b) == sched.refreshes
    assert all(("tREFI", "refresh due", "REF") in x.pairs for x in b if x.inserted)


def test_replay_detects_a_wrong_schedule() -> None:
    """A schedule one cycle off is refused (the self-check can fail)."""
    prog = dense_program(CFG, 256, 64)
    sched = schedule(prog, CFG)
    k = int(np.flatnonzero(sched.program["op"] == int(Op.MACAB))[3])
    sched.issue[k:] += 1
    with pytest.raises(CoverageError, match=f"command #{k} "):
        binding_rules(prog, CFG, sched)


def test_coverage_accumulates_and_lists_what_never_bound() -> None:
    cov = Coverage()
    cov.add(binding_rules(stream_program(CFG, 2), CFG))
    d = cov.as_dict()
    assert d["rules_total"] == len(RULES) and d["pairs_total"] == len(PAIRS)
    assert "tRCD" not in d["missing_rules"] and "tWTR_L" in d["missing_rules"]
    again = Coverage()
    again.merge(d)
    again.merge(d)
    assert again.commands == 2 * cov.commands
    assert again.pairs[("tCCD_AB", "MACAB", "MACAB")] == 2 * cov.pairs[("tCCD_AB", "MACAB",
                                                                         "MACAB")]


def test_regress_points_and_reproductions() -> None:
    """Every default scenario has a name and a reproduction the CLI parses."""
    from starc.cli import build_parser
    from starc_sim.cosim import COSIM_MODEL
    from starc_sim.programs import directed_programs
    from starc_sim.regress import DEFAULT_GRID, grid_points, reproduce, scenario_name

    pts = grid_points(DEFAULT_GRID, {"build_dir": "x"})
    g = DEFAULT_GRID
    steps = (len(g["policies"]) * len(g["budgets"]) * len(g["prefills"]) * len(g["steps"])
             * len(g["seeds"]))
    directed = [p for p in pts if p["kind"] == "directed"]
    assert len(pts) == steps + g["programs"] + len(directed) >= 200
    names = {p["name"] for p in directed}
    assert names >= {"tRRD_L", "tWTR_S", "WRGB done", "MVGB done", "tREFI",
                     "tCCD_AB MACBG->MACAB", "tRFC REF->REF"}
    assert names == set(directed_programs(COSIM_MODEL.cfg))
    assert len({scenario_name(p) for p in pts}) == len(pts)
    parser = build_parser()
    for p in (pts[0], pts[-1], next(p for p in pts if p["kind"] == "program")):
        argv = shlex.split(reproduce(p))
        assert argv[0] == "starc"
        ns = parser.parse_args(argv[1:])
        assert isinstance(ns, argparse.Namespace) and ns.waves
        assert ns.seed == p["seed"]


def _binds(prog: np.ndarray, cfg) -> set[str]:  # noqa: ANN001
    """The constraints that decided the last command of ``prog``."""
    return set(binding_rules(prog, cfg, refresh=False)[-1].rules)


@pytest.mark.parametrize("overrides", [SMALL, {}], ids=["16 banks", "64 banks"])
def test_directed_programs_bind_their_constraint(overrides) -> None:  # noqa: ANN001
    """Each directed program's last command is decided by the constraint it is named after
    (golden schedule, replayed); what a configuration cannot express is explained instead."""
    from starc_sim.coverage import unreachable
    from starc_sim.programs import directed_programs

    cfg = load_config(None, overrides)
    progs = directed_programs(cfg)
    for name, prog in progs.items():
        if "->" in name:      # a pair: one of its commands binds that pair
            rule, rest = name.rsplit(" ", 1)
            pair = (rule, *rest.split("->"))
            assert pair in PAIRS, name
            assert any(pair in b.pairs for b in binding_rules(prog, cfg, refresh=False)), name
        elif name == "tREFI":   # a refresh the schedule inserts, not the last command
            got = binding_rules(prog, cfg, refresh=True)
            assert any(b.inserted and "tREFI" in b.rules for b in got)
            # half the program ends before the first refresh is due
            assert not any(b.inserted for b in binding_rules(prog[:len(prog) // 2], cfg,
                                                             refresh=True))
        else:
            assert name in _binds(prog, cfg), name
    assert set(progs) | set(unreachable(cfg)) >= {"tRRD_L", "tWTR_S", "tFAW", "tRC",
                                                  "WRGB done", "MVGB done", "tREFI"}
    assert not set(progs) & set(unreachable(cfg))


def test_unreachable_constraints_and_their_reasons() -> None:
    """On the co-simulation model tRC and tFAW cannot bind (the reasons name the distances);
    without the reason they can: a rank of 16 banks lets tFAW bind (64-bank preset), tRC raised
    to tRAS + tRP lets tRC bind; the directed programs show it."""
    from starc_sim.cosim import COSIM_MODEL
    from starc_sim.coverage import unreachable
    from starc_sim.programs import directed_programs

    cfg = COSIM_MODEL.cfg
    why = unreachable(cfg)
    tm = cfg.timing
    assert set(why) == {"tRC", "tFAW", "row bus | row | REF"}
    assert f"tRP ({tm.tRP})" in why["row bus | row | REF"]
    assert f"tRC ({tm.tRC}) < tRAS + tRP ({tm.tRAS} + {tm.tRP})" in why["tRC"]
    assert "a rank has 4 banks" in why["tFAW"]
    full = load_config(None)
    assert "tFAW" not in unreachable(full) and "tFAW" in _binds(directed_programs(full)["tFAW"],
                                                                  full)
    slow = load_config(None, {**SMALL, "timing.tRC": tm.tRAS + tm.tRP})
    assert "tRC" not in unreachable(slow)
    assert "tRC" in _binds(directed_programs(slow)["tRC"], slow)
    # a row bus as long as tRP: the REF after a PRE waits both, and both bind
    bus = load_config(None, {**SMALL, "timing.row_cmd_cycles": tm.tRP})
    assert "row bus | row | REF" not in unreachable(bus)
    ref = np.array([(int(Op.ACTPB), 0, 0, 0, 0, 0), (int(Op.PREPB), 0, 0, 0, 0, 0),
                    (int(Op.REF), 0, 0, 0, 0, 0)], dtype=PROGRAM_DTYPE)
    assert ("row bus", "row", "REF") in binding_rules(ref, bus, refresh=False)[-1].pairs


@pytest.mark.parametrize("seed", range(4))
def test_unreachable_constraints_never_bind(seed: int) -> None:
    """The reasons hold on random programs of the co-simulation model (refreshes, explicit REFs,
    per-bank and per-group rounds): tRC and tFAW decide no command; the coverage reports them
    apart, not as missing."""
    from starc_sim.cosim import COSIM_MODEL
    from starc_sim.coverage import unreachable

    cfg = COSIM_MODEL.cfg
    prog = random_program(cfg, 600, 100 + seed, explicit_ref=seed % 2 == 1)
    cov = Coverage(unreachable=unreachable(cfg))
    cov.add(binding_rules(prog, cfg))
    d = cov.as_dict()
    assert d["unreachable_bound"] == []
    assert not {"tRC", "tFAW"} & set(d["missing_rules"])
    assert d["rules_reachable"] == len(RULES) - 2


def test_strip_zero_init_keeps_nonzero_memories() -> None:
    from starc_sim.runner import strip_zero_init

    text = ("  reg [7:0] a [1:0];\n  initial begin\n    a[0] = 8'h00;\n    a[1] = 8'h00;\n"
            "  end\n  reg [7:0] b [1:0];\n  initial begin\n    b[0] = 8'h00;\n    b[1] = 8'h2a;\n"
            "  end\n")
    out = strip_zero_init(text)
    assert "a[0] =" not in out and "b[1] = 8'h2a;" in out and "b[0] = 8'h00;" in out


def test_build_configs_differ_in_their_key() -> None:
    from starc_sim.runner import BUILD_CONFIGS

    keys = {str(c.key()) for c in BUILD_CONFIGS.values()}
    assert len(keys) == len(BUILD_CONFIGS)
    assert "OPT_FAST=-O0" in BUILD_CONFIGS["O0"].makeflags()


def test_a_flat_configuration_inlines_the_blocks(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    """``flat`` builds the attention model with its bank PU inlined (no ``--hierarchical``), in a
    build folder of its own; ``fast`` keeps the PU a separately compiled block."""
    import starc_sim.runner as runner
    from starc_hw.attention import PU_MODULE
    from starc_sim.cosim import COSIM_MODEL, build_attention

    seen = {}

    def fake(cfg, build_dir, **kw):  # noqa: ANN001, ANN003, ANN202
        seen[cfg.name] = (kw["hier_blocks"], build_dir.name)
        return None

    monkeypatch.setenv("STARC_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(runner, "_build_locked", lambda name, make, build_dir, cfg, **kw:
                        fake(cfg, build_dir, **kw))
    for config in ("fast", "flat"):
        build_attention(COSIM_MODEL, config=config)
    assert seen["fast"][0] == (PU_MODULE,)
    assert seen["flat"][0] == ()
    assert seen["fast"][1] != seen["flat"][1]
    assert "-fno-merge-cond-motion" in runner.BUILD_CONFIGS["quick"].verilator


def test_each_attention_model_has_its_build_configuration(monkeypatch) -> None:  # noqa: ANN001
    """The full channel (built for a step or two) at -O0, the others optimised; the variable
    overrides both, and a configuration that does not exist is named in the error."""
    import pytest
    from starc_sim.cosim import (
        BUILD_ENV,
        COSIM_MODEL,
        FULL_MODEL,
        MULTIHEAD_MODEL,
        build_config,
    )
    from starc_sim.runner import BUILD_CONFIGS

    monkeypatch.delenv(BUILD_ENV, raising=False)
    assert build_config(FULL_MODEL) == "quick"
    assert build_config(COSIM_MODEL) == build_config(MULTIHEAD_MODEL) == "fast"
    assert "OPT_FAST=-O0" in BUILD_CONFIGS["quick"].makeflags()
    monkeypatch.setenv(BUILD_ENV, "O1")
    assert build_config(FULL_MODEL) == build_config(COSIM_MODEL) == "O1"
    monkeypatch.setenv(BUILD_ENV, "O9")
    with pytest.raises(ValueError, match="O9.*choose one of"):
        build_config(COSIM_MODEL)


def test_verilog_summary_reads_ports_and_modules() -> None:
    from amaranth.back import verilog
    from starc_hw.smoke import StreamAdder
    from starc_sim.cli import verilog_summary

    text = verilog.convert(StreamAdder(width=16), name="top", emit_src=False)
    s = verilog_summary(text)
    ports = {p["name"]: (p["direction"], p["width"]) for p in s["ports"]}
    assert ports["count"] == ("output", 32)
    assert ports["clk"] == ("input", 1)
    assert s["modules"][0]["name"] == "top" and s["lines"] == len(text.splitlines())


def test_rule_ids_of_the_golden_schedule_are_counted() -> None:
    """The binding rule ids the golden schedule reports (the RTL reports the same ones) are
    counted, merged and named; each directed program's last command has the rules-table row of
    its constraint as its id (the replay and the table agree)."""
    from starc.rules import RULES as TABLE
    from starc.rules import rule_name
    from starc_sim.cosim import COSIM_MODEL
    from starc_sim.programs import directed_programs

    prog = stream_program(CFG, 2)
    sched = schedule(prog, CFG, refresh=False)
    cov = Coverage()
    cov.add_rule_ids(sched.rule)
    d = cov.as_dict()
    assert sum(d["rule_ids"].values()) == len(sched.program)
    assert d["rule_ids_total"] == len(TABLE) + 1
    assert d["rule_ids_bound"] + len(d["rule_ids_missing"]) == d["rule_ids_total"]
    again = Coverage()
    again.merge(d)
    again.merge(d)
    assert sum(again.rule_ids.values()) == 2 * len(sched.program)
    cfg = COSIM_MODEL.cfg
    names = {"tRRD_L": "tRRD_L", "tWTR_S": "wr_to_rd_s", "WRGB done": "<- WRGB, channel",
             "MVGB done": "<- MVGB, same group"}
    for name, p in directed_programs(cfg).items():
        if name in names:
            last = rule_name(int(schedule(p, cfg, refresh=False).rule[-1]))
            assert names[name] in last, (name, last)


def test_ports_control_names_the_top_ports_only() -> None:
    """The attention builds make the top module's ports visible and nothing else of it: inputs
    writable, outputs readable; an internal signal of the top module (a register) is left out,
    and another module's ports too."""
    from starc_sim.runner import ports_control, top_ports

    verilog = """module sub(a, y);
  input a;
  wire a;
  output y;
endmodule
module top(clk, rst, ld_data, busy, rd_data);
  reg rst_q = 1'h1;
  input clk;
  wire clk;
  input rst;
  input [71:0] ld_data;
  output busy;
  reg busy;
  output [127:0] rd_data;
  always @(posedge clk) rst_q <= rst;
endmodule
"""
    assert top_ports(verilog) == [("input", "clk"), ("input", "rst"), ("input", "ld_data"),
                                  ("output", "busy"), ("output", "rd_data")]
    lines = ports_control(verilog).splitlines()
    assert 'public_flat_rw -module "top" -var "ld_data"' in lines
    assert 'public_flat_rd -module "top" -var "busy"' in lines
    assert len(lines) == 5 and not any("rst_q" in x or '"a"' in x for x in lines)
    with pytest.raises(ValueError, match="no module 'chip'"):
        top_ports(verilog, "chip")

"""Programs as command tuples (the NumPy-free path of ``starc timing dense``): the dense program's
tuples are the array's rows, their schedule totals are those of the array's schedule, and the
energy events counted from tuples are those an independent NumPy count of the array gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starc import config
from starc.compiler import CompileOptions, compile_kv
from starc.golden import energy, programs, timing
from starc.isa import COMMAND_FIELDS, MoveFlag, Op, make_program
from starc.kv import synthetic_kv
from starc.planner import Planner

PRESETS = ("attacc-hbm3-5.2", "samsung-hbm2-pim", "jedec-hbm3-6400")


def _same_totals(cmds: list[tuple], prog: np.ndarray, cfg: config.Config) -> None:
    t = timing.totals(cmds, cfg)
    s = timing.schedule(prog, cfg)
    assert (t.commands, t.total_cycles, t.refreshes, t.breakdown) == (
        len(s.program), s.total_cycles, s.refreshes, s.breakdown)
    assert t.total_ns == pytest.approx(s.total_ns)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("L, head_dim, heads", [(1, 128, 1), (1000, 128, 1), (4097, 64, 1),
                                                (700, 128, 2), (300, 64, 3)])
def test_dense_tuples_are_the_array_and_schedule_alike(preset, L, head_dim, heads):
    cfg = config.load(preset)
    cmds = programs.dense_commands(cfg, L, head_dim, heads=heads)
    prog = programs.dense_program(cfg, L, head_dim, heads=heads)
    assert [tuple(int(v) for v in c) for c in cmds] == prog.tolist()
    _same_totals(cmds, prog, cfg)
    a, b = energy.account(cmds, cfg, head_dim), energy.account(prog, cfg, head_dim)
    assert (a.total_pj, a.attacc_pj, a.counts) == (b.total_pj, b.attacc_pj, b.counts)


def test_planned_sparse_step_schedules_alike_from_tuples():
    """A planner's program (group activations, per-group MACs, selection read-back)."""
    cfg = config.load()
    cache = synthetic_kv(n_layers=1, prefill_len=900, decode_steps=4, seed=3)
    for mode, policy in (("row-aligned", "starc-row"), ("dense", "quest"), ("dense", "sparq")):
        planner = Planner(compile_kv(cache, cfg, CompileOptions(mode=mode)), policy, 256)
        for sp in planner.plan(3, 0, 0):
            prog, _, _ = planner.step_program(sp)
            cmds = prog.tolist()
            _same_totals(cmds, prog, cfg)
            assert energy.count_events(cmds, cfg, 64) == energy.count_events(prog, cfg, 64)


def _numpy_counts(prog: np.ndarray, cfg: config.Config) -> dict[str, int]:
    """The events that do not depend on the organisation, counted with NumPy from the array."""
    ops = prog["op"]
    mvsb = prog[ops == int(Op.MVSB)]
    return {"softmax_elements": int(prog["arg"][ops == int(Op.SFM)].astype(np.int64).sum()),
            "readback_bytes": 4 * int(prog["arg"][ops == int(Op.RDSB)].astype(np.int64).sum()),
            "refreshes": int(np.count_nonzero(ops == int(Op.REF))),
            "bank_column_writes": int(np.count_nonzero(ops == int(Op.WR))),
            "value_moves": int(np.count_nonzero(mvsb["col"] & int(MoveFlag.VALUE)))}


_WIDTH = dict(COMMAND_FIELDS)
command = st.tuples(st.sampled_from([int(o) for o in Op]),
                    st.integers(0, 15), st.integers(0, 3),
                    st.integers(0, (1 << _WIDTH["col"]) - 1), st.integers(0, 7),
                    st.integers(0, (1 << _WIDTH["arg"]) - 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(command, max_size=40))
def test_event_counts_from_tuples_match_a_numpy_count(cmds):
    """count_events over tuples against an independent NumPy count of the same program (the
    events need no legal schedule, so any commands will do)."""
    cfg = config.load()
    prog = make_program(cmds)
    c = energy.count_events(cmds, cfg)
    ref = _numpy_counts(prog, cfg)
    ops = prog["op"]
    moved_value = ref["value_moves"] * cfg.org.banks_per_group * 16 * 4
    assert (c.softmax_elements, c.readback_bytes, c.refreshes, c.bank_column_writes) == (
        ref["softmax_elements"], ref["readback_bytes"], ref["refreshes"],
        ref["bank_column_writes"])
    assert c.moved_bytes >= moved_value
    assert c == energy.count_events(prog, cfg)
    assert c.host_bytes == int(np.count_nonzero((ops == int(Op.RD)) | (ops == int(Op.WR)))) \
        * cfg.org.column_bytes


def test_totals_refuses_short_command_tuples():
    cfg = config.load()
    with pytest.raises(timing.ProgramError, match="full tuples"):
        timing.totals([(int(Op.ACTAB),)], cfg)

"""Energy: both conventions against hand-computed figures from the per-event constants."""

import pytest
from starc import config
from starc.golden import energy, programs
from starc.isa import Op, make_program

CFG = config.load()
E = CFG.energy


def test_full_rows_cost_the_same_in_both_conventions():
    e = energy.account(programs.stream_program(CFG, 4), CFG)
    assert e.total_pj == pytest.approx(e.attacc_pj)


def test_half_used_row_differs_by_the_activation_term():
    cmds = [(Op.ACTAB,)] + [(Op.MACAB, 0, 0, c) for c in range(16)] + [(Op.PREA,)]
    e = energy.account(make_program(cmds), CFG)
    banks = 64
    act = banks * 1024 * 8 * E.act_pj_per_bit  # 0.11 pJ/bit x 8192 bit = 901 pJ per bank row
    assert e.breakdown["activation"] == pytest.approx(act)
    assert act / banks == pytest.approx(901.12)
    reads_bits = banks * 16 * 32 * 8
    assert e.breakdown["column_access"] == pytest.approx(reads_bits * E.cell_rw_pj_per_bit)
    assert e.attacc_breakdown["column_access"] == pytest.approx(
        reads_bits * (E.act_pj_per_bit + E.cell_rw_pj_per_bit))
    assert e.total_pj - e.attacc_pj == pytest.approx(act - reads_bits * E.act_pj_per_bit)
    assert e.breakdown["mac"] == pytest.approx(banks * 16 * 16 * E.mac_pj)


def test_breakdown_sums():
    e = energy.account(programs.dense_program(CFG, 1024, 128), CFG)
    assert sum(e.breakdown.values()) == pytest.approx(e.total_pj)
    assert sum(e.attacc_breakdown.values()) == pytest.approx(e.attacc_pj)
    assert e.breakdown["softmax"] == pytest.approx(1024 * E.sfm_ops_per_element * E.mac_pj)

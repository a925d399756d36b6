"""The FP units of the PUs and moves under Verilator on every pairing of the special classes and
2000 seeded random vectors, bit for bit against starc.numerics (`starc rtl regress` runs 10^4)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.rtl, pytest.mark.xdist_group("fpunits")]


def test_fp_units_bit_exact() -> None:
    from starc_sim import numerics_check

    rep = numerics_check.run(2000, seed=7)
    bad = {u: r["first"][:3] for u, r in rep["units"].items() if r["mismatches"]}
    assert rep["ok"], f"seed {rep['seed']}: {bad}"
    assert rep["special_pairs"] >= len(numerics_check.SPECIAL32) ** 2
    assert all(r["vectors"] == rep["special_pairs"] + 2000 for r in rep["units"].values())

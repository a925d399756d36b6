"""Address arithmetic (starc.address): the layering rule, the round-robin and metadata maps, and
the formulas the preset's derived figures delegate to."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from starc import address, config

CFG = config.load()


def test_kv_and_address_do_not_import_the_compiler():
    code = ("import sys, starc.kv, starc.address; "
            "print(sorted(m for m in sys.modules if m.startswith('starc.compiler')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_dense_token_address_is_round_robin_blocks():
    geo = address.Geometry(CFG, 64)
    t = np.arange(3 * geo.tokens_per_row + 7)
    a = address.dense_token_address(CFG, 64, t)
    # independent formula: docs/commands.md, AttAcc bank-level layout
    assert np.array_equal(a["row"], t // (16 * 32))
    assert np.array_equal(a["group"], (t // 32) % 16)
    assert np.array_equal(a["set"], (t % 32) // 16)
    assert np.array_equal(a["slot"], t % 16)


def test_preset_figures_delegate_to_address():
    for d, bpt, tpgr in ((32, 1, 64), (64, 2, 32), (128, 4, 16)):
        assert CFG.banks_per_token(d) == address.banks_per_token(CFG.org, d) == bpt
        assert CFG.tokens_per_group_row(d) == tpgr
    for g in range(CFG.org.groups_per_channel):
        pc, sid, bg = CFG.org.split_group(g)
        assert address.group_of(CFG.org, pc, sid, bg) == g
        assert CFG.org.rank_of_group(g) == pc * CFG.org.sids + sid
        assert CFG.org.unit_of_group(g) == sid * CFG.org.bank_groups + bg


@given(n=st.integers(1, 5000), d=st.sampled_from([64, 128]))
@settings(max_examples=40, deadline=None)
def test_metadata_addresses_are_distinct_and_inside_the_reserved_rows(n, d):
    geo = address.Geometry(CFG, d)
    g, r, j, s = address.meta_address(np.arange(n), geo)
    key = ((r * geo.G + g) * geo.sets + j) * 16 + s
    assert np.unique(key).size == n
    assert r.max() < address.meta_rows(n, geo)
    assert (j < geo.sets).all()
    # Quest: max and min bounds in disjoint rows, all inside quest_meta_rows
    T = 16 * n - 5
    pages = np.arange(-(-T // 16))
    up = address.meta_address(address.quest_bound_index(pages, T, geo, upper=True), geo)[1]
    lo = address.meta_address(address.quest_bound_index(pages, T, geo, upper=False), geo)[1]
    assert up.max() < lo.min()
    assert lo.max() < address.quest_meta_rows(T, geo)

"""Presets: derived figures against the brief's published numbers; validation messages."""

import math
from importlib import resources

import pytest
from starc import config
from starc.config import ConfigError


@pytest.mark.parametrize("name", config.list_presets())
def test_every_preset_loads_and_cites_sources(name):
    cfg = config.load(name)
    text = (resources.files("starc") / "presets" / f"{name}.toml").read_text()
    # every value line carries a source comment
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "name", "description", "[")):
            assert "#" in line, f"{name}: value without a source: {line!r}"
    assert cfg.timing.tRFC == math.ceil(cfg.timing.tRFC_ns / cfg.timing.tCK_ns - 1e-9)


def test_default_preset_matches_brief():
    d = config.load().derived()
    # docs/presets.md, derived figures: 665.6 GB/s external, 7.10 TB/s internal, 232-cycle row
    # period, ~83 %
    assert d["external_bandwidth_GBps"] == pytest.approx(665.6, abs=0.05)
    assert d["internal_bandwidth_TBps"] == pytest.approx(7.10, abs=0.005)
    assert d["row_period_cycles"] == 232
    assert d["streaming_ceiling"] == pytest.approx(0.83, abs=0.005)
    assert d["refresh_tax"] == pytest.approx(0.09, abs=0.002)
    assert d["banks_per_stack"] == 1024
    assert d["tokens_per_bank_row"] == 16
    assert d["banks_per_token_d128"] == 4


def test_no_power_limit_preset_matches_brief():
    d = config.load("attacc-hbm3-5.2-npc").derived()
    assert d["internal_bandwidth_TBps"] == pytest.approx(10.65, abs=0.005)
    assert d["row_period_cycles"] == 170
    assert d["streaming_ceiling"] == pytest.approx(0.75, abs=0.005)


def test_row_period_formula_independent():
    cfg = config.load()
    t = cfg.timing
    for c in (1, 2, 8, 32):
        expect = max(t.tRC, t.tRCD + (c - 1) * t.tCCD_AB + t.tRTP_L + t.tRP)
        assert cfg.row_period_cycles(c) == expect
    assert cfg.row_period_cycles(1) == t.tRC  # short rows are bounded by tRC


@pytest.mark.parametrize("override, message", [
    ("timing.tRCD=0", "timing.tRCD must be a positive integer, not 0"),
    ("timing.tRP=-3", "timing.tRP must be a positive integer, not -3"),
    ("organisation.column_bytes=1", "organisation.column_bytes must be a positive multiple of 2"),
    ("pu.lanes=8", "pu.lanes (8) must equal the FP16 elements of one column access"),
    ("organisation.bank_groups=3", "organisation.bank_groups must be a power of two, not 3"),
    ("timing.bogus=1", "unknown key(s) in [timing]: ['bogus']"),
    ("nope.x=1", "unknown section 'nope'"),
    ("timing.tREFI=100", "timing: tREFI (100) must exceed tRFC"),
    ("pu.acc_format=bf16", "pu.acc_format must be 'fp32' or 'fp16'"),
])
def test_impossible_configs_are_refused(override, message):
    with pytest.raises(ConfigError) as e:
        config.load(overrides=[override])
    assert message in str(e.value)


def test_head_size_the_lanes_cannot_hold():
    cfg = config.load()
    with pytest.raises(ConfigError, match="head_dim 48 must be a positive multiple of 32"):
        cfg.banks_per_token(48)
    with pytest.raises(ConfigError, match="needs 8 banks per token"):
        cfg.banks_per_token(256)


def test_user_preset_file_and_unknown_keys(tmp_path):
    src = (resources.files("starc") / "presets" / "attacc-hbm3-5.2.toml").read_text()
    p = tmp_path / "mine.toml"
    p.write_text(src.replace("tCCD_AB = 6 ", "tCCD_AB = 5 "))
    cfg = config.load(p)
    assert cfg.timing.tCCD_AB == 5
    bad = tmp_path / "bad.toml"
    bad.write_text(src + "\nextra = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        config.load(bad)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        config.load("nope")


def test_override_changes_one_field():
    cfg = config.load(overrides={"timing.tCCD_AB": 4})
    assert cfg.timing.tCCD_AB == 4
    assert cfg.row_period_cycles() == 170


def test_named_distances_follow_their_formulas():
    cfg = config.load()
    t, d = cfg.timing, cfg.distances()
    assert d["wr_to_pre"] == t.tCWL + t.tBL + t.tWR
    assert d["rd_to_wr"] == t.CL + t.tBL + 2 - t.tCWL
    assert d["wr_to_rd_l"] == t.tCWL + t.tBL + t.tWTR_L
    assert d["mac_latency"] == t.CL + cfg.pu.mac_pipeline
    assert d["move_spacing"] == 2  # 32 entries over 16 softmax lanes
    assert d["tRFC"] == t.tRFC and d["mv_cycles"] == cfg.pu.mv_cycles
    # every derived distance carries its reason
    assert all(x.reason and x.formula for x in config.DISTANCES)
    odd = config.load(overrides={"pu.sfm_lanes": 12})
    assert odd.distances()["move_spacing"] == 3  # ceil(32 / 12)
    assert cfg.sfm_cycles(256) == cfg.pu.sfm_latency + cfg.pu.sfm_passes * 16


def test_distance_formula_rejects_other_syntax():
    bad = config.Distance("x", "tRC ** 2", "no powers")
    with pytest.raises(config.ConfigError, match=r"distance formula 'tRC \*\* 2'"):
        bad.evaluate({"tRC": 3})
    with pytest.raises(config.ConfigError, match="unknown name 'tXYZ'"):
        config.Distance("y", "tXYZ + 1", "").evaluate({})

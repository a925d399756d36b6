"""Overrides everywhere: `--set` on every command that takes a preset, grids in `sweep`,
`config show --raw` with every settable field and its source, JSON section names equal to the
TOML names, and errors that name the legal values."""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import fields
from importlib import resources

import pytest
from starc import cli, config
from starc.address import legal_banks_per_group, legal_head_dims


def _leaves(p: argparse.ArgumentParser, path=()):
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, p
        return
    for name, sp in subs[0].choices.items():
        yield from _leaves(sp, (*path, name))


def test_every_command_with_a_preset_takes_set():
    seen = 0
    for path, p in _leaves(cli.build_parser()):
        opts = {s for a in p._actions for s in a.option_strings}
        if opts & {"--preset", "--presets"}:
            seen += 1
            assert "--set" in opts, " ".join(path)
    assert seen >= 7       # config show, timing dense, compile, eval, sweep, demo, eval-quality...


def test_config_json_uses_the_toml_section_names_and_reads_back(capsys):
    assert cli.main(["config", "show", "--json", "--set", "timing.tCCD_AB=4"]) == 0
    doc = json.loads(capsys.readouterr().out)["config"]
    text = (resources.files("starc") / "presets" / "attacc-hbm3-5.2.toml").read_text()
    toml = tomllib.loads(text)
    assert set(doc) == set(toml) == {"name", "description", "organisation", "timing", "pu",
                                     "energy"}
    for sec in ("organisation", "timing", "pu", "energy"):
        assert set(toml[sec]) <= set(doc[sec])
    # what --json prints is a preset: it loads back to the same configuration
    cfg = config.from_dict(doc, "json")
    assert cfg.timing.tCCD_AB == 4
    assert cfg.as_toml_dict() == config.load(None, ["timing.tCCD_AB=4"]).as_toml_dict()
    # and the same names are what --set accepts
    for sec, vals in doc.items():
        if isinstance(vals, dict):
            k = next(iter(vals))
            config.load(None, [f"{sec}.{k}={vals[k]}"])


def test_config_raw_lists_every_settable_field_with_its_origin_and_source(tmp_path, capsys):
    assert cli.main(["config", "show", "--raw", "--json", "--set", "timing.tCCD_AB=4"]) == 0
    rows = json.loads(capsys.readouterr().out)["fields"]
    want = [f"{sec}.{f.name}" for sec, cls in config._SECTIONS.items() for f in fields(cls)
            if f.init]
    assert [r["key"] for r in rows] == want
    by = {r["key"]: r for r in rows}
    assert by["timing.tCCD_AB"]["value"] == 4 and by["timing.tCCD_AB"]["origin"] == "--set"
    assert by["timing.tRCD"]["origin"] == "preset:attacc-hbm3-5.2"
    assert by["timing.tRCD"]["source"] == "[A] nRCDRD (= nRCDWR)"
    assert by["pu.banks_per_pu"]["origin"] == "default"       # the file leaves it out
    # a multi-line citation is kept whole
    assert "docs/attacc.md" in by["pu.mac_pipeline"]["source"]
    # a file preset: its own path is the origin
    f = tmp_path / "mine.toml"
    f.write_text(text := (resources.files("starc") / "presets" /
                          "attacc-hbm3-5.2.toml").read_text().replace("tRCD = 19", "tRCD = 20"))
    assert "tRCD = 20" in text
    assert cli.main(["config", "show", str(f), "--raw", "--json"]) == 0
    by = {r["key"]: r for r in json.loads(capsys.readouterr().out)["fields"]}
    assert by["timing.tRCD"] == {"key": "timing.tRCD", "value": 20, "origin": str(f),
                                 "source": "[A] nRCDRD (= nRCDWR)"}
    assert cli.main(["config", "show", "--raw"]) == 0
    out = capsys.readouterr().out
    assert "organisation.banks_per_group" in out and "nRCDRD" in out


@pytest.mark.slow
def test_sweep_set_makes_a_grid(tmp_path, capsys):
    assert cli.main(["sweep", "--contexts", "300", "--layers", "3", "--steps", "1", "--budgets",
                     "128", "--policies", "dense", "starc-row", "--workers", "1",
                     "--cost-programs", "2", "--set", "timing.tCCD_AB=4,6",
                     "--set", "timing.tRCD=25", "--cache-dir", str(tmp_path / "c"),
                     "-o", str(tmp_path / "s"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    combos = {tuple(r["overrides"]) for r in rows}
    assert combos == {(f"timing.tCCD_AB={a}", "timing.tRCD=25") for a in (4, 6)}
    presets = {r["preset"] for r in rows}
    assert presets == {f"attacc-hbm3-5.2[timing.tCCD_AB={a},timing.tRCD=25]" for a in (4, 6)}
    # the numbers are the golden model's for that configuration
    from starc.golden.cli import dense_cost_rows
    dense = {tuple(r["overrides"]): r["cycles"] for r in rows if r["policy"] == "dense"}
    assert dense[("timing.tCCD_AB=4", "timing.tRCD=25")] < dense[("timing.tCCD_AB=6",
                                                                   "timing.tRCD=25")]
    assert dense_cost_rows(config.load(None, ["timing.tCCD_AB=4", "timing.tRCD=25"]), [300],
                           64)[0]["cycles"] < dense_cost_rows(config.load(), [300], 64)[0][
                               "cycles"]


@pytest.mark.parametrize("argv,needle", [
    (["--set", "timing.tCCD_AB=4", "--set", "timing.tCCD_AB=6"], "given twice"),
    (["--set", "timing.tCCD_AB=4,"], "empty value"),
    (["--set", "timing.tCCD_AB"], "section.field=value"),
    (["--set", "timing.tRCD=0,19"], "timing.tRCD must be a positive integer, not 0"),
    (["--set", "organisation.banks_per_group=8"],
     "organisation.banks_per_group may be 2, 4"),
])
def test_sweep_set_errors(tmp_path, capsys, argv, needle):
    assert cli.main(["sweep", "--contexts", "300", "--layers", "3", "--steps", "1",
                     "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("starc: error: ") and needle in err and "\n" not in err


def test_layout_errors_name_the_legal_values(capsys):
    assert cli.main(["eval", "--synthetic", "--layers", "3", "--prefill", "300",
                     "--decode-steps", "1", "--set", "organisation.banks_per_group=8"]) == 2
    err = capsys.readouterr().err
    assert "at head_dim 64, organisation.banks_per_group may be 2, 4" in err
    assert "at banks_per_group 8, head_dim may be 128, 256" in err


def test_legal_values_against_the_layout_rules():
    """Independent check: build every (banks_per_group, head_dim) preset and see which ones the
    planner's geometry accepts; the legal lists must be exactly those."""
    from starc.address import Geometry, check_geometry
    base = config.load()
    for bpg in (1, 2, 4, 8):
        cfg = config.load(None, [f"organisation.banks_per_group={bpg}"])
        ok_dims = []
        for d in range(32, 513, 32):
            try:
                check_geometry(Geometry(cfg, d))
            except ValueError:
                continue
            ok_dims.append(d)
        assert legal_head_dims(cfg.org) == ok_dims, bpg
        for d in ok_dims:
            assert bpg in legal_banks_per_group(base.org, d)
    assert legal_banks_per_group(base.org, 96) == []

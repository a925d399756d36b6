"""Hardware presets: the single source of truth for organisation, timing, PU, numerics and energy.

A :class:`Config` is frozen and validated once, where it enters (:func:`load`). Presets ship as TOML
files in ``starc/presets``; every value there carries its source in a comment. Timing values are in
DRAM clock cycles (tCK) unless the name ends in ``_ns``; ns values become cycles with ``ceil``.

Address vocabulary (see docs/architecture.md):

- *channel*: the unit the golden model and the RTL simulate; AttAcc's legacy channel.
- *group*: one bank group of one (pseudo-channel, SID); ``group = (pc * sids + sid) * bgs + bg``.
- *rank*: one (pseudo-channel, SID); tRRD and tFAW are counted per rank.
- *unit*: one (SID, bank group) across both pseudo-channels; the scope of data-movement commands.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "DISTANCES",
    "Config",
    "ConfigError",
    "Distance",
    "Energy",
    "Organisation",
    "PU",
    "Timing",
    "DEFAULT_PRESET",
    "list_presets",
    "load",
]

DEFAULT_PRESET = "attacc-hbm3-5.2"
FP16_BYTES = 2


class ConfigError(ValueError):
    """A preset or override that cannot describe real hardware. The message names field and rule."""


#: Largest integer field value: every cycle count and size fits a signed 32-bit word.
INT_MAX = (1 << 31) - 1
#: Largest per-event energy (pJ); real values are below 1e3, so anything larger is a typo.
ENERGY_MAX_PJ = 1e9


def _positive_int(section: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{section}.{name} must be a positive integer, not {value!r}")
    if value > INT_MAX:
        raise ConfigError(f"{section}.{name} must be at most {INT_MAX}, not {value!r}")


def _power_of_two(section: str, name: str, value: int) -> None:
    if value & (value - 1):
        raise ConfigError(f"{section}.{name} must be a power of two, not {value}")


@dataclass(frozen=True)
class Organisation:
    channels: int
    pseudo_channels: int
    sids: int
    bank_groups: int
    banks_per_group: int
    rows_per_bank: int
    columns_per_row: int
    column_bytes: int

    def _validate(self) -> None:
        for f in fields(self):
            _positive_int("organisation", f.name, getattr(self, f.name))
        for name in ("pseudo_channels", "sids", "bank_groups", "banks_per_group",
                     "rows_per_bank", "columns_per_row"):
            _power_of_two("organisation", name, getattr(self, name))
        if self.column_bytes < FP16_BYTES or self.column_bytes % FP16_BYTES:
            raise ConfigError(
                f"organisation.column_bytes must be a positive multiple of {FP16_BYTES} "
                f"(one FP16 element), not {self.column_bytes}")
        if self.groups_per_channel > 32:
            raise ConfigError(
                "organisation: pseudo_channels x sids x bank_groups must be at most 32 (the "
                f"command word has 5 group bits), not {self.groups_per_channel}")
        if self.banks_per_group > 8:
            raise ConfigError(f"organisation.banks_per_group must be at most 8 (3 bank bits in the "
                              f"command word), not {self.banks_per_group}")
        if self.columns_per_row > 64:
            raise ConfigError(f"organisation.columns_per_row must be at most 64 (6 column bits in "
                              f"the command word), not {self.columns_per_row}")
        if self.rows_per_bank > 1 << 20:
            raise ConfigError(f"organisation.rows_per_bank must be at most 2^20 (20 row bits in "
                              f"the command word), not {self.rows_per_bank}")

    # Derived figures -------------------------------------------------------------------------
    @property
    def ranks_per_channel(self) -> int:
        return self.pseudo_channels * self.sids

    @property
    def groups_per_channel(self) -> int:
        return self.pseudo_channels * self.sids * self.bank_groups

    @property
    def units_per_channel(self) -> int:
        return self.sids * self.bank_groups

    @property
    def banks_per_channel(self) -> int:
        return self.groups_per_channel * self.banks_per_group

    @property
    def banks_per_stack(self) -> int:
        return self.channels * self.banks_per_channel

    @property
    def row_bytes(self) -> int:
        return self.columns_per_row * self.column_bytes

    @property
    def elements_per_column(self) -> int:
        return self.column_bytes // FP16_BYTES

    @property
    def stack_bytes(self) -> int:
        return self.banks_per_stack * self.rows_per_bank * self.row_bytes

    # address arithmetic lives in starc.address; these delegate to it
    def group_of(self, pc: int, sid: int, bg: int) -> int:
        from starc import address
        return address.group_of(self, pc, sid, bg)

    def split_group(self, group: int) -> tuple[int, int, int]:
        """(pseudo-channel, SID, bank group) of a group index."""
        from starc import address
        return address.split_group(self, group)

    def rank_of_group(self, group: int) -> int:
        from starc import address
        return address.rank_of_group(self, group)

    def unit_of_group(self, group: int) -> int:
        from starc import address
        return address.unit_of_group(self, group)


@dataclass(frozen=True)
class Timing:
    """DRAM timing in cycles of the DRAM clock (tCK). ``tRFC`` is derived from ``tRFC_ns``."""

    tCK_ns: float
    CL: int
    tRCD: int
    tRP: int
    tRAS: int
    tRC: int
    tWR: int
    tRTP_L: int
    tRTP_S: int
    tCWL: int
    tBL: int
    tCCD_S: int
    tCCD_L: int
    tCCD_AB: int
    tRRD_S: int
    tRRD_L: int
    tWTR_S: int
    tWTR_L: int
    tFAW: int
    tREFI: int
    tRFC_ns: float
    row_cmd_cycles: int
    tRFC: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("tRFC_ns", "tCK_ns"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not v > 0:
                raise ConfigError(f"timing.{name} must be a positive finite number, not {v!r}")
        if self.tRFC_ns / self.tCK_ns > 1 << 40:
            raise ConfigError(f"timing.tRFC_ns ({self.tRFC_ns!r}) is more than 2^40 cycles of "
                              f"tCK_ns ({self.tCK_ns!r}); check the units (nanoseconds)")
        object.__setattr__(self, "tRFC", ns_to_cycles(self.tRFC_ns, self.tCK_ns))

    def _validate(self) -> None:
        for f in fields(self):
            if f.name in ("tCK_ns", "tRFC_ns", "tRFC"):
                continue
            _positive_int("timing", f.name, getattr(self, f.name))
        if self.tRC < max(self.tRAS, self.tRP):
            raise ConfigError(f"timing: tRC ({self.tRC}) must be at least tRAS ({self.tRAS}) "
                              f"and tRP ({self.tRP})")
        if self.tCCD_L < self.tCCD_S:
            raise ConfigError(f"timing: tCCD_L ({self.tCCD_L}) must be at least tCCD_S "
                              f"({self.tCCD_S})")
        if self.tRRD_L < self.tRRD_S:
            raise ConfigError(f"timing: tRRD_L ({self.tRRD_L}) must be at least tRRD_S "
                              f"({self.tRRD_S})")
        if self.tREFI <= self.tRFC:
            raise ConfigError(f"timing: tREFI ({self.tREFI}) must exceed tRFC ({self.tRFC} cycles "
                              f"= ceil({self.tRFC_ns} ns / {self.tCK_ns} ns))")


@dataclass(frozen=True)
class Distance:
    """A named minimum distance between two commands (DRAM cycles), derived from preset values.

    ``formula`` is an expression over the fields of :class:`Timing` and :class:`PU` (``+``, ``-``,
    ``*``, integer constants and ``ceil(a / b)``); ``reason`` says why the distance is what it is.
    The rules table (``starc.rules``) and the independent checker (``starc.golden.check``) refer
    to distances by name only (:meth:`Config.distances`).
    """

    name: str
    formula: str
    reason: str

    def evaluate(self, values: dict[str, int]) -> int:
        return _evaluate(self.formula, values)


#: The derived distances. The preset's own timing parameters (tRCD, tCCD_L, ...) and
#: ``pu.mv_cycles`` are distances under their own names as well.
DISTANCES: tuple[Distance, ...] = (
    Distance("issue_spacing", "1",
             "commands issue in program order, at most one per cycle; a BAR is complete one "
             "cycle after it issues"),
    Distance("wr_to_pre", "tCWL + tBL + tWR",
             "write recovery tWR counts from the end of the write burst, which is on the bus from "
             "tCWL to tCWL + tBL after the WR"),
    Distance("wr_to_rd_l", "tCWL + tBL + tWTR_L",
             "write-to-read turnaround in the same bank group: tWTR_L counts from the end of the "
             "write burst"),
    Distance("wr_to_rd_s", "tCWL + tBL + tWTR_S",
             "write-to-read turnaround in another bank group of the rank: tWTR_S from the end of "
             "the write burst"),
    Distance("rd_to_wr", "CL + tBL + 2 - tCWL",
             "read-to-write turnaround: the read burst (CL to CL + tBL after the RD) leaves the "
             "bus before the write burst (tCWL after the WR) arrives, plus 2 cycles for the bus "
             "to turn around (read postamble and a 1 tCK write preamble; Ramulator2 HBM3.cpp, "
             "'RD <-> WR, Minimum Read to Write, Assuming tWPRE = 1 tCK')"),
    Distance("rd_done", "CL + tBL",
             "a RD is complete when its burst has left the bus: CL + tBL after the command"),
    Distance("wr_done", "tCWL + tBL",
             "a WR is complete when its burst is in the bank: tCWL + tBL after the command"),
    Distance("mac_latency", "CL + mac_pipeline",
             "a MAC's column reaches the PU CL after the command; the PU pipeline adds "
             "mac_pipeline cycles before the result is in its register (then a move may read it)"),
    Distance("move_spacing", "ceil(32 / sfm_lanes)",
             "the softmax buffer has one write and one read port of sfm_lanes entries per cycle; "
             "a score move carries up to 32 entries (its valid mask) and an MVGB pops as many, "
             "so each holds its port that long (the RTL found this rule: docs/rtl.md)"),
)

_ALLOWED_NODES = ("Expression", "BinOp", "Add", "Sub", "Mult", "Div", "Name", "Load", "Constant",
                  "Call")


def _evaluate(formula: str, values: dict[str, int]) -> int:
    """``formula`` (see :class:`Distance`) with ``values`` substituted; ``ceil(a / b)`` exact."""
    import ast

    tree = ast.parse(formula, mode="eval")
    for node in ast.walk(tree):
        if type(node).__name__ not in _ALLOWED_NODES:
            raise ConfigError(f"distance formula {formula!r}: {type(node).__name__} not allowed")

    def ev(n: ast.AST) -> int:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.Name):
            if n.id not in values:
                raise ConfigError(f"distance formula {formula!r}: unknown name {n.id!r}")
            return int(values[n.id])
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "ceil" \
                and len(n.args) == 1 and isinstance(n.args[0], ast.BinOp) \
                and isinstance(n.args[0].op, ast.Div):
            return -(-ev(n.args[0].left) // ev(n.args[0].right))
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub, ast.Mult)):
            a, b = ev(n.left), ev(n.right)
            return a + b if isinstance(n.op, ast.Add) else a - b if isinstance(n.op, ast.Sub) \
                else a * b
        raise ConfigError(f"distance formula {formula!r}: only +, -, *, integers and "
                          f"ceil(a / b) are allowed")

    return ev(tree)


@dataclass(frozen=True)
class PU:
    """The per-bank processing unit and the channel's data-movement and softmax units."""

    lanes: int
    mult_format: str
    acc_format: str
    mv_cycles: int
    mac_pipeline: int
    sfm_lanes: int
    sfm_passes: int
    sfm_latency: int
    banks_per_pu: int = 1

    def sfm_duration(self, chunks: Any) -> Any:
        """Cycles the softmax unit is busy over ``chunks`` = ``ceil(n / sfm_lanes)`` lane-rows of
        ``n`` valid entries: ``sfm_latency + sfm_passes x chunks`` (docs/commands.md). The one
        formula of the golden model (:meth:`Config.sfm_cycles`), the RTL controller's SFM
        distance and the softmax unit's deadline; ``chunks`` is an int or a gateware value."""
        return self.sfm_latency + self.sfm_passes * chunks

    def _validate(self, org: Organisation) -> None:
        for name in ("lanes", "mv_cycles", "mac_pipeline", "sfm_lanes", "sfm_passes",
                     "sfm_latency", "banks_per_pu"):
            _positive_int("pu", name, getattr(self, name))
        if self.mult_format != "fp16":
            raise ConfigError(f"pu.mult_format must be 'fp16', not {self.mult_format!r}")
        if self.acc_format not in ("fp32", "fp16"):
            raise ConfigError(f"pu.acc_format must be 'fp32' or 'fp16', not {self.acc_format!r}")
        if self.lanes != org.elements_per_column:
            raise ConfigError(
                f"pu.lanes ({self.lanes}) must equal the FP16 elements of one column access "
                f"(organisation.column_bytes / 2 = {org.elements_per_column})")
        if org.banks_per_group % self.banks_per_pu:
            raise ConfigError(f"pu.banks_per_pu ({self.banks_per_pu}) must divide "
                              f"organisation.banks_per_group ({org.banks_per_group})")


@dataclass(frozen=True)
class Energy:
    """Per-event energies (pJ). Defaults of every shipped preset: AttAcc src/config.py (FGDRAM)."""

    act_pj_per_bit: float
    cell_rw_pj_per_bit: float
    bg_mux_pj_per_bit: float
    gio_pj_per_bit: float
    tsv_pj_per_bit: float
    io_pj_per_bit: float
    mac_pj: float
    sram_pj_per_byte: float
    sfm_ops_per_element: int

    def _validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not 0 <= v <= ENERGY_MAX_PJ:
                raise ConfigError(f"energy.{f.name} must be a finite number in [0, "
                                  f"{ENERGY_MAX_PJ:g}], not {v!r}")


@dataclass(frozen=True)
class Config:
    name: str
    description: str
    org: Organisation
    timing: Timing
    pu: PU
    energy: Energy
    source: str = ""

    def __post_init__(self) -> None:
        self.org._validate()
        self.timing._validate()
        self.pu._validate(self.org)
        self.energy._validate()

    # ---- derived figures (docs/presets.md explains each) ----------------------------------------
    @property
    def pus_per_channel(self) -> int:
        return self.org.banks_per_channel // self.pu.banks_per_pu

    def external_bandwidth_gbs(self) -> float:
        """Per stack: pseudo-channels x column bytes per 2 tCK (BL4 on a DDR bus), in GB/s."""
        pcs = self.org.channels * self.org.pseudo_channels
        return pcs * self.org.column_bytes / (2 * self.timing.tCK_ns)

    def internal_bandwidth_tbs(self) -> float:
        """Per stack: every PU reads one column per tCCD_AB, in TB/s."""
        pus = self.org.channels * self.pus_per_channel
        return pus * self.org.column_bytes / (self.timing.tCCD_AB * self.timing.tCK_ns) / 1e3

    def row_period_cycles(self, columns: int | None = None) -> int:
        """All-bank row period with C column MACs: tRCD + (C-1) tCCD_AB + tRTP_L + tRP, >= tRC."""
        c = self.org.columns_per_row if columns is None else columns
        t = self.timing
        return max(t.tRC, t.tRCD + (c - 1) * t.tCCD_AB + t.tRTP_L + t.tRP)

    def streaming_ceiling(self) -> float:
        """Fraction of cycles that issue a column MAC when streaming whole rows (before refresh)."""
        c = self.org.columns_per_row
        return c * self.timing.tCCD_AB / self.row_period_cycles()

    def refresh_tax(self) -> float:
        return self.timing.tRFC / self.timing.tREFI

    def mac_stream_cycles(self, rows: int) -> int:
        """The MAC-stream bound of a program that opens ``rows`` all-bank rows (cycles of tCK):
        the rows x the row period, plus the refreshes that fall in that time (one tRFC per
        tREFI - tRFC of streaming), in our conventions (PRE -> REF tRP, the last row's tRTP_L +
        tRP counted): what a schedule of these rows needs at least in our model
        (``starc.golden.attacc.mac_stream_bound``; AttAcc's conventions can land a little
        under it)."""
        stream = rows * self.row_period_cycles()
        return stream + (stream // (self.timing.tREFI - self.timing.tRFC)) * self.timing.tRFC

    def floor_cycles(self, n_tokens: int, head_dim: int) -> float:
        """The bandwidth floor (cycles of tCK): streaming the K and V bytes of ``n_tokens``
        (FP16) at the channel's internal bandwidth, every PU reading a column each tCCD_AB."""
        bytes_needed = 2 * n_tokens * head_dim * 2
        per_cycle = self.pus_per_channel * self.org.column_bytes / self.timing.tCCD_AB
        return bytes_needed / per_cycle

    def banks_per_token(self, head_dim: int) -> int:
        """AttAcc bank-level layout: banks one token of ``head_dim`` spans (starc.address)."""
        from starc import address
        return address.banks_per_token(self.org, head_dim)

    def tokens_per_bank_row(self) -> int:
        from starc import address
        return address.tokens_per_bank_row(self.org)

    def tokens_per_group_row(self, head_dim: int) -> int:
        from starc import address
        return address.tokens_per_group_row(self.org, head_dim)

    def distances(self) -> dict[str, int]:
        """Every named distance (DRAM cycles): the timing parameters in cycles, ``mv_cycles``,
        and :data:`DISTANCES` (docs/commands.md lists them with their reasons)."""
        cached = self.__dict__.get("_distances")
        if cached is not None:
            return dict(cached)
        values = {f.name: getattr(self.timing, f.name) for f in fields(self.timing)
                  if f.name not in ("tCK_ns", "tRFC_ns")}
        values.update({f.name: getattr(self.pu, f.name) for f in fields(self.pu)
                       if isinstance(getattr(self.pu, f.name), int)})
        out = {k: v for k, v in values.items() if k in _TIMING_DISTANCES}
        out["mv_cycles"] = self.pu.mv_cycles
        for d in DISTANCES:
            out[d.name] = d.evaluate(values)
        object.__setattr__(self, "_distances", out)
        return dict(out)

    def sfm_cycles(self, n: int) -> int:
        """Cycles the softmax unit is busy with ``n`` valid entries: ``sfm_latency + sfm_passes
        x ceil(n / sfm_lanes)`` (docs/commands.md)."""
        return self.pu.sfm_duration(-(-max(int(n), 0) // self.pu.sfm_lanes))

    def rdsb_transfer(self, n: int) -> int:
        """Cycles the channel's data buses carry an RDSB of ``n`` FP32 scores: ``4 n`` bytes in
        ``column_bytes`` bursts of ``tBL`` cycles, the pseudo-channels side by side
        (docs/commands.md). The RDSB completes ``CL`` later (as a RD: ``CL + tBL`` for one
        burst)."""
        bursts = -(-4 * max(int(n), 0) // self.org.column_bytes)
        return self.timing.tBL * -(-bursts // self.org.pseudo_channels)

    def cycles_to_ns(self, cycles: float) -> float:
        return cycles * self.timing.tCK_ns

    def derived(self) -> dict[str, Any]:
        t = self.timing
        return {
            "banks_per_stack": self.org.banks_per_stack,
            "banks_per_channel": self.org.banks_per_channel,
            "groups_per_channel": self.org.groups_per_channel,
            "stack_GiB": self.org.stack_bytes / 2**30,
            "external_bandwidth_GBps": self.external_bandwidth_gbs(),
            "internal_bandwidth_TBps": self.internal_bandwidth_tbs(),
            "row_period_cycles": self.row_period_cycles(),
            "row_period_ns": self.cycles_to_ns(self.row_period_cycles()),
            "streaming_ceiling": self.streaming_ceiling(),
            "tRFC_cycles": t.tRFC,
            "refresh_tax": self.refresh_tax(),
            "tokens_per_bank_row": self.tokens_per_bank_row(),
            "banks_per_token_d128": self.banks_per_token(128)
            if 128 // (2 * self.org.elements_per_column) <= self.org.banks_per_group else None,
            "banks_per_token_d64": self.banks_per_token(64),
        }

    def as_dict(self) -> dict[str, Any]:
        """Every field (the Python names: ``org`` for ``[organisation]``); hashes and build keys
        use it. Output for people uses :meth:`as_toml_dict`."""
        d = dataclasses.asdict(self)
        d["timing"].pop("tRFC")
        return d

    def as_toml_dict(self) -> dict[str, Any]:
        """The preset as its TOML file spells it (``name``, ``description`` and the sections
        ``organisation``, ``timing``, ``pu``, ``energy`` under their TOML names): what
        ``starc config show --json`` prints, and what :func:`from_dict` reads back."""
        d = self.as_dict()
        out: dict[str, Any] = {"name": d["name"], "description": d["description"]}
        for sec, attr in _SECTION_ATTR.items():
            out[sec] = d[attr]
        return out

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)


def ns_to_cycles(ns: float, tck_ns: float) -> int:
    """Convert a minimum time to cycles with ceil (never round below spec). Guard float noise."""
    return math.ceil(ns / tck_ns - 1e-9)


#: Timing parameters that are distances between commands under their own name.
_TIMING_DISTANCES = ("CL", "tRCD", "tRP", "tRAS", "tRC", "tWR", "tRTP_L", "tRTP_S", "tCWL", "tBL",
                     "tCCD_S", "tCCD_L", "tCCD_AB", "tRRD_S", "tRRD_L", "tWTR_S", "tWTR_L", "tFAW",
                     "tRFC", "row_cmd_cycles")

_SECTIONS: dict[str, type] = {"organisation": Organisation, "timing": Timing, "pu": PU,
                              "energy": Energy}
#: TOML section -> Config attribute
_SECTION_ATTR = {"organisation": "org", "timing": "timing", "pu": "pu", "energy": "energy"}


#: the shipped preset files (package data beside this module; a plain path, since
#: importlib.resources costs milliseconds of start-up: bench/bench_startup.py)
_PRESETS = Path(__file__).parent / "presets"


def list_presets() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in _PRESETS.iterdir()
                  if p.name.endswith(".toml"))


def _read_preset(name_or_path: str | Path | None) -> tuple[dict[str, Any], str]:
    if name_or_path is None:
        name_or_path = DEFAULT_PRESET
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or "/" in str(name_or_path):
        if p.is_dir():
            raise ConfigError(f"preset file {str(p)!r} is a folder; give a .toml file")
        if not p.is_file():
            raise ConfigError(f"preset file {str(p)!r} does not exist")
        src = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"preset file {src!r} cannot be read ({e.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"preset file {src!r} is not UTF-8 text (a TOML file)") from None
    else:
        name = str(name_or_path)
        if name not in list_presets():
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(list_presets())}"
                              f" or give a path to a .toml file")
        text = (_PRESETS / f"{name}.toml").read_text(encoding="utf-8")
        src = f"preset:{name}"
    try:
        return tomllib.loads(text), src
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{src}: not valid TOML: {e}") from None


def _coerce(key: str, value: str) -> Any:
    """An override's text as int, else float (finite only), else the string."""
    try:
        return int(value, 10)
    except ValueError:
        pass
    try:
        f = float(value)
    except ValueError:
        return value
    if not math.isfinite(f):
        raise ConfigError(f"override {key}={value}: must be a finite number")
    return f


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> None:
    if not overrides:
        return
    items: list[tuple[str, Any]]
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for o in overrides:
            if "=" not in o:
                raise ConfigError(f"override {o!r} must look like section.field=value, "
                                  f"e.g. timing.tCCD_AB=4")
            k, v = o.split("=", 1)
            items.append((k.strip(), _coerce(k.strip(), v.strip())))
    for key, value in items:
        if not isinstance(key, str) or key.count(".") != 1:
            raise ConfigError(f"override key {key!r} must be section.field, e.g. timing.tRCD")
        sec, name = key.split(".")
        if sec not in _SECTIONS:
            raise ConfigError(f"override {key!r}: unknown section {sec!r}; sections are "
                              f"{', '.join(_SECTIONS)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"override {key}: must be a finite number, not {value!r}")
        table = data.setdefault(sec, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{sec}] of the preset is not a table; cannot override {key}")
        table[name] = value


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    data = dict(data)
    unknown_top = set(data) - set(_SECTIONS) - {"name", "description"}
    if unknown_top:
        raise ConfigError(f"{source}: unknown key(s) {sorted(unknown_top)}; allowed: name, "
                          f"description, {', '.join(_SECTIONS)}")
    built: dict[str, Any] = {}
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{source}: {key} must be a string, not {data[key]!r}")
    for sec, cls in _SECTIONS.items():
        if sec not in data:
            raise ConfigError(f"{source}: missing section [{sec}]")
        if not isinstance(data[sec], dict):
            raise ConfigError(f"{source}: {sec} must be a table ([{sec}] with key = value "
                              f"lines), not {type(data[sec]).__name__} {data[sec]!r}")
        vals = dict(data[sec])
        allowed = {f.name for f in fields(cls) if f.init}
        unknown = set(vals) - allowed
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) in [{sec}]: {sorted(unknown)}; allowed: "
                              f"{', '.join(sorted(allowed))}")
        required = {f.name for f in fields(cls)
                    if f.init and f.default is dataclasses.MISSING}
        missing = required - set(vals)
        if missing:
            raise ConfigError(f"{source}: missing key(s) in [{sec}]: {sorted(missing)}")
        built[sec] = cls(**vals)
    return Config(name=str(data.get("name", Path(source).stem)),
                  description=str(data.get("description", "")),
                  org=built["organisation"], timing=built["timing"], pu=built["pu"],
                  energy=built["energy"], source=source)


def _comments(text: str) -> dict[tuple[str, str], str]:
    """The source comment of every ``key = value  # comment`` line of a preset file, by
    (section, key); indented comment lines that follow continue it."""
    import re

    out: dict[tuple[str, str], str] = {}
    sec, last = "", None
    for line in text.splitlines():
        m = re.match(r"\s*\[([A-Za-z_]+)\]\s*$", line)
        if m:
            sec, last = m.group(1), None
            continue
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*[^#]*?(?:#\s*(.*))?$", line)
        if m and sec:
            last = (sec, m.group(1))
            out[last] = (m.group(2) or "").strip()
            continue
        m = re.match(r"\s+#\s*(.*)$", line)
        if m and last is not None:
            out[last] = (out[last] + " " + m.group(1).strip()).strip()
            continue
        last = None
    return out


def settable_fields(name_or_path: str | Path | None = None,
                    overrides: dict[str, Any] | list[str] | None = None) -> list[dict[str, Any]]:
    """Every field ``--set`` accepts, in file order per section: ``key`` (``section.field``),
    ``value`` (after the overrides), ``origin`` (``--set``, the preset it came from, or
    ``default`` for a field the file leaves out) and ``source`` (the citation comment of its
    line in the preset file, empty when it has none). Validates like :func:`load`."""
    cfg = load(name_or_path, overrides)
    data, src = _read_preset(name_or_path)
    if src.startswith("preset:"):
        text = (_PRESETS / f"{src[7:]}.toml").read_text(encoding="utf-8")
    else:
        text = Path(src).read_text(encoding="utf-8")
    notes = _comments(text)
    over: dict[str, Any] = {}
    _apply_overrides(over, overrides)
    values = cfg.as_toml_dict()
    rows = []
    for sec, cls in _SECTIONS.items():
        for f in fields(cls):
            if not f.init:
                continue
            if f.name in over.get(sec, {}):
                origin = "--set"
            elif isinstance(data.get(sec), dict) and f.name in data[sec]:
                origin = src
            else:
                origin = "default"
            rows.append({"key": f"{sec}.{f.name}", "value": values[sec][f.name],
                         "origin": origin, "source": notes.get((sec, f.name), "")})
    return rows


def load(name_or_path: str | Path | None = None,
         overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Load a shipped preset by name (default :data:`DEFAULT_PRESET`) or a TOML file, then apply
    ``section.field=value`` overrides. Raises :class:`ConfigError` naming the field and rule."""
    data, src = _read_preset(name_or_path)
    _apply_overrides(data, overrides)
    cfg = from_dict(data, src)
    if overrides:
        cfg = dataclasses.replace(cfg, name=cfg.name + "+overrides")
    return cfg

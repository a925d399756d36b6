"""Golden timing model: issue cycle and binding rule of every command of a channel program.

The rule (docs/commands.md, "Scheduling rule") is the contract the RTL controller matches cycle
for cycle: commands issue in program order, each at the earliest cycle every row of the rules
table (:data:`starc.rules.RULES`) allows and at least one cycle after the previous command;
refresh is inserted before an activation that would issue at or after the next due cycle while
every bank is closed. All cycles are DRAM clock cycles (tCK of the preset).

The loop is generated from the rules table and compiled once per configuration
(:mod:`starc.golden.schedgen`); it reports, for every command, the row that decided its cycle
(the *binding rule*: the first row in table order whose bound equals the issue cycle, or
:data:`starc.rules.IN_ORDER`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starc.config import Config
from starc.golden.schedgen import compiled
from starc.isa import Op, program_dtype
from starc.rules import CATEGORIES, rule_name

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CATEGORIES", "ProgramError", "Schedule", "Totals", "mac_latency", "move_spacing",
           "rdsb_transfer", "schedule", "sfm_cycles", "totals"]


class ProgramError(ValueError):
    """A program that cannot run (e.g. MAC to a closed bank). Names the command index."""


def sfm_cycles(cfg: Config, n: int) -> int:
    """Cycles the softmax unit is busy for n valid entries (``Config.sfm_cycles``)."""
    return cfg.sfm_cycles(n)


def rdsb_transfer(cfg: Config, n: int) -> int:
    """Cycles the data buses carry an RDSB of ``n`` scores (``Config.rdsb_transfer``)."""
    return cfg.rdsb_transfer(n)


def move_spacing(cfg: Config) -> int:
    """Minimum distance between two score MVSBs, and between two MVGBs, anywhere in the channel
    (the named distance ``move_spacing``, docs/commands.md)."""
    return cfg.distances()["move_spacing"]


def mac_latency(cfg: Config) -> int:
    """Cycles from a MAC's issue until its result is in its register: the named distance
    ``mac_latency = CL + mac_pipeline``."""
    return cfg.distances()["mac_latency"]


@dataclass
class Schedule:
    """Result of :func:`schedule`.

    ``program`` is the executed program including the inserted REF commands, ``issue`` the issue
    cycle of each of its commands, ``inserted`` a boolean mask of the inserted REFs,
    ``total_cycles`` the latest completion, ``breakdown`` the total split by what each gap
    waited for (docs/commands.md, "Breakdown"), and ``rule`` the binding rule id of each command
    (``starc.rules.rule_name`` names it).
    """

    program: np.ndarray
    issue: np.ndarray
    inserted: np.ndarray
    total_cycles: int
    breakdown: dict[str, int] = field(default_factory=dict)
    refreshes: int = 0
    tck_ns: float = 0.0
    rule: np.ndarray | None = None

    @property
    def total_ns(self) -> float:
        return self.total_cycles * self.tck_ns

    def rule_names(self) -> list[str]:
        """The binding rule of every command, by name."""
        return [rule_name(int(r)) for r in (self.rule if self.rule is not None else [])]


@dataclass(frozen=True)
class Totals:
    """What :func:`totals` reports of a program's schedule: the figures of :class:`Schedule`
    without the per-command arrays. ``commands`` counts the inserted REFs."""

    commands: int
    total_cycles: int
    breakdown: dict[str, int]
    refreshes: int
    tck_ns: float

    @property
    def total_ns(self) -> float:
        return self.total_cycles * self.tck_ns


def totals(commands: Sequence[tuple], cfg: Config, *, refresh: bool = True) -> Totals:
    """The cycles, breakdown and refreshes of the program ``commands`` (full command tuples
    ``(op, group, bank, col, row, arg)``, e.g. :func:`starc.golden.programs.dense_commands`):
    the same schedule loop as :func:`schedule`, without NumPy (``starc timing dense`` starts
    without importing it, bench/bench_startup.py). Raises :class:`ProgramError` likewise."""
    if commands and len(commands[0]) != 6:
        raise ProgramError("commands must be full tuples (op, group, bank, col, row, arg), not "
                           f"{len(commands[0])} fields")
    ops, grps, banks, cols, rows, args = zip(*commands, strict=True) if commands else ((),) * 6
    _, _, ref_at, _, _, complete, cat = compiled(cfg, refresh=refresh)(
        ops, grps, banks, cols, args, rows)
    return Totals(commands=len(commands) + len(ref_at), total_cycles=int(complete),
                  breakdown=cat, refreshes=len(ref_at), tck_ns=cfg.timing.tCK_ns)


def schedule(prog: np.ndarray, cfg: Config, *, refresh: bool = True) -> Schedule:
    """Issue every command of ``prog`` at its earliest legal cycle, in order (see module doc).

    Raises :class:`ProgramError` (naming the command) for a program that cannot run."""
    import numpy as np

    PROGRAM_DTYPE = program_dtype()
    if not isinstance(prog, np.ndarray) or prog.dtype != PROGRAM_DTYPE:
        dtype = getattr(prog, "dtype", type(prog).__name__)
        raise ProgramError(f"program must have dtype starc.isa.PROGRAM_DTYPE, not {dtype}")
    run = compiled(cfg, refresh=refresh)
    out_t, out_r, ref_at, ref_t, ref_r, complete, cat = run(
        prog["op"].tolist(), prog["group"].tolist(), prog["bank"].tolist(),
        prog["col"].tolist(), prog["arg"].tolist(), prog["row"].tolist())
    issue = np.asarray(out_t, dtype=np.int64)
    rule = np.asarray(out_r, dtype=np.int16)
    if ref_at:
        ref_cmd = np.zeros(len(ref_at), dtype=PROGRAM_DTYPE)
        ref_cmd["op"] = int(Op.REF)
        full = np.insert(prog, ref_at, ref_cmd)
        issue = np.insert(issue, ref_at, ref_t)
        rule = np.insert(rule, ref_at, np.asarray(ref_r, dtype=np.int16))
        inserted = np.zeros(len(full), dtype=bool)
        inserted[np.asarray(ref_at) + np.arange(len(ref_at))] = True
    else:
        full = prog.copy()
        inserted = np.zeros(len(full), dtype=bool)
    return Schedule(program=full, issue=issue, inserted=inserted, total_cycles=int(complete),
                    breakdown=cat, refreshes=len(ref_at), tck_ns=cfg.timing.tCK_ns, rule=rule)

"""Reference side of the controller testbenches: expected issues from the golden model, the
scoreboard that compares them one by one, and a Python model of the bank array's timing checker.

Pure Python + NumPy (no cocotb import), so both test tiers (``amaranth.sim`` and cocotb +
Verilator) use the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from starc.config import Config
from starc.golden.timing import Schedule, schedule
from starc.isa import COMMAND_BITS, Op, decode, encode, format_command
from starc.rules import RULE_BITS, rule_name

__all__ = [
    "Issued",
    "IssueScoreboard",
    "ScoreboardError",
    "bank_violations",
    "decode_issue",
    "expected_issues",
]


class ScoreboardError(AssertionError):
    """The design under test disagreed with the golden model."""


@dataclass(frozen=True)
class Issued:
    """One issued command: the packed command word, its issue cycle, inserted by the controller,
    and its binding rule id (``starc.rules``)."""

    word: int
    cycle: int
    inserted: bool
    rule: int = 0

    def describe(self) -> str:
        op, g, b, col, row, arg = decode(self.word)
        rec = np.zeros(1, dtype=[("op", "u1"), ("group", "u1"), ("bank", "u1"), ("col", "u1"),
                                 ("row", "u4"), ("arg", "u4")])[0]
        rec["op"], rec["group"], rec["bank"], rec["col"], rec["row"], rec["arg"] = \
            op, g, b, col, row, arg
        tag = " (inserted)" if self.inserted else ""
        return f"{format_command(rec)}{tag} @ {self.cycle} by {rule_name(self.rule)}"


def decode_issue(word: int, cycle_width: int) -> Issued:
    """Unpack an ``issue_layout(cycle_width)`` payload (command, cycle, inserted, rule; LSB
    first)."""
    cmd = word & ((1 << COMMAND_BITS) - 1)
    cycle = (word >> COMMAND_BITS) & ((1 << cycle_width) - 1)
    inserted = bool((word >> (COMMAND_BITS + cycle_width)) & 1)
    rule = (word >> (COMMAND_BITS + cycle_width + 1)) & ((1 << RULE_BITS) - 1)
    return Issued(cmd, cycle, inserted, rule)


def expected_issues(prog: np.ndarray, cfg: Config, *, refresh: bool = True
                    ) -> tuple[list[Issued], Schedule]:
    """The golden schedule of ``prog`` as a list of :class:`Issued`, and the schedule itself."""
    s = schedule(prog, cfg, refresh=refresh)
    assert s.rule is not None
    items = [Issued(encode(c), int(t), bool(ins), int(r))
             for c, t, ins, r in zip(s.program, s.issue.tolist(), s.inserted.tolist(),
                                     s.rule.tolist(), strict=True)]
    return items, s


@dataclass
class IssueScoreboard:
    """Compares observed issues with the expected list, in order, exactly (command, cycle and
    binding rule).

    ``perturb`` adds 1 to the expected cycle of that index: the test that proves a wrong cycle
    fails the run.
    """

    expected: list[Issued]
    seed: int | str | None = None
    perturb: int | None = None
    observed: list[Issued] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.perturb is not None:
            if not 0 <= self.perturb < len(self.expected):
                raise ValueError(f"perturbed index {self.perturb} outside the "
                                 f"{len(self.expected)} expected issues")
            e = self.expected[self.perturb]
            self.expected = list(self.expected)
            self.expected[self.perturb] = Issued(e.word, e.cycle + 1, e.inserted, e.rule)

    @property
    def done(self) -> bool:
        return len(self.observed) >= len(self.expected)

    def observe(self, item: Issued) -> None:
        i = len(self.observed)
        self.observed.append(item)
        if i >= len(self.expected):
            self.errors.append(f"issue #{i} unexpected: {item.describe()}")
        elif item != self.expected[i] and len(self.errors) < 20:
            self.errors.append(f"issue #{i}: got {item.describe()}, golden "
                               f"{self.expected[i].describe()}")

    def check(self) -> None:
        """Raise :class:`ScoreboardError` (with the seed) if anything differed or is missing."""
        problems = list(self.errors)
        if len(self.observed) < len(self.expected):
            problems.append(f"only {len(self.observed)} of {len(self.expected)} commands issued")
        if problems:
            seed = f" (seed {self.seed})" if self.seed is not None else ""
            raise ScoreboardError(f"{len(problems)} mismatch(es){seed}:\n  "
                                  + "\n  ".join(problems[:20]))


def bank_violations(prog: np.ndarray, issue: np.ndarray, cfg: Config) -> dict[str, int]:
    """What :class:`starc_hw.bank.BankArray` must flag for ``prog`` issued at ``issue``.

    Returns, per rule of ``starc_hw.bank.VIOLATIONS``, the number of commands breaking it (rules
    with none are absent). Same per-bank rules as the gateware, written independently.
    """
    org, tm = cfg.org, cfg.timing
    G, BPG = org.groups_per_channel, org.banks_per_group
    NB = G * BPG
    never = -(1 << 50)
    last = {k: np.full(NB, never, dtype=np.int64) for k in ("act", "pre", "col", "wr", "ref")}
    col_any = np.full(NB, never, dtype=np.int64)
    is_open = np.zeros(NB, dtype=bool)
    counts: dict[str, int] = {}
    bad_cmds = 0
    all_banks = np.arange(NB)
    for c, t in zip(prog, np.asarray(issue).tolist(), strict=True):
        op, g, b = Op(int(c["op"])), int(c["group"]), int(c["bank"])
        if op in (Op.ACTAB, Op.PREA, Op.MACAB, Op.REF):
            bk = all_banks
        elif op in (Op.ACTBG, Op.PREBG, Op.MACBG):
            bk = np.arange(g * BPG, (g + 1) * BPG)
        elif op in (Op.ACTPB, Op.PREPB, Op.RD, Op.WR):
            bk = np.array([g * BPG + b])
        else:
            continue
        hits: set[str] = set()

        def early(kind: np.ndarray, dist: int, name: str, bk: np.ndarray = bk,
                  t: int = t, hits: set[str] = hits) -> None:
            if (t < kind[bk] + dist).any():
                hits.add(name)

        if op in (Op.ACTAB, Op.ACTBG, Op.ACTPB, Op.REF):
            early(last["act"], tm.tRC, "tRC")
            early(last["pre"], tm.tRP, "tRP")
            early(last["ref"], tm.tRFC, "tRFC")
        if op in (Op.ACTAB, Op.ACTBG, Op.ACTPB):
            if is_open[bk].any():
                hits.add("state")
            last["act"][bk] = t
            is_open[bk] = True
        elif op in (Op.PREA, Op.PREBG, Op.PREPB):
            early(last["act"], tm.tRAS, "tRAS")
            early(last["col"], tm.tRTP_L, "tRTP")
            early(last["wr"], cfg.distances()["wr_to_pre"], "tWR")
            last["pre"][bk] = t
            is_open[bk] = False
        elif op == Op.REF:
            if is_open.any():
                hits.add("state")
            last["ref"][bk] = t
        else:
            early(last["act"], tm.tRCD, "tRCD")
            early(col_any, tm.tCCD_L, "tCCD")
            if not is_open[bk].all():
                hits.add("state")
            last["wr" if op == Op.WR else "col"][bk] = t
            col_any[bk] = t
        for h in hits:
            counts[h] = counts.get(h, 0) + 1
        bad_cmds += bool(hits)
    if bad_cmds:
        counts["commands"] = bad_cmds
    return counts

"""The rules table: every timing constraint of the scheduling rule, written once.

A :class:`Rule` row says: a command of class ``later`` issues no earlier than ``t_j + distance``
for every earlier command ``j`` of class ``earlier`` related to it by ``relation``
(docs/commands.md, "One rules table"). :data:`RULES` is the table; its row numbers are the
*binding rule* ids that :func:`starc.golden.timing.schedule` and the RTL controller report for
every issued command (:data:`IN_ORDER` when no row reaches the issue cycle).

Generated from this module:

- ``starc.golden.timing.schedule`` (Python source per configuration, ``starc.golden.schedgen``);
- ``starc_hw.controller.Controller`` (one term register per row);
- the constraint tables of docs/commands.md (``python -m starc.rules docs/commands.md``).

The independent checker ``starc.golden.check`` does not read this table.

:class:`Plan` groups the rows by the state they read: a :class:`Family` is "the latest event of
class E related at level X (with keys)"; several rows share one (``ACT -> ACT`` tRC and
``ACT -> column`` tRCD read the same per-bank activation times). Both generators build their
registers from the families and their terms from the rows.

Extending the table: a row is a new entry of :data:`RULES` (its id is its position; the tie-break
is table order). State per head (several heads per channel, docs/multihead.md) is a :class:`Key`
read from the head field of every opcode involved (:class:`KeyHead`): ``head`` on the score
MACs' wait for their query and the MVGBs' wait for their softmax, and the value accumulators of
head h as register set ``2 + h``. Both generators keep one register per key value, so these
dependencies of different heads do not constrain each other. A key's size grows with the heads
a build holds (:meth:`Key.size_at`); the golden model holds :data:`starc.isa.MAX_HEADS`.

Pure Python; no NumPy, no Amaranth.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from starc.isa import HEAD_OPS, MAX_HEADS, SCOPE, MacArg, MoveFlag, Op, Scope

__all__ = [
    "CATEGORIES",
    "CATEGORY",
    "COMPLETION",
    "DYNAMIC_DISTANCES",
    "IN_ORDER",
    "PLAN",
    "RULES",
    "RULE_BITS",
    "Cls",
    "Family",
    "Key",
    "KeyBit",
    "KeyHead",
    "KeyIf",
    "Plan",
    "Relation",
    "Rule",
    "Test",
    "rule_name",
    "render",
]

# ---- command classes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Test:
    """A condition on one flag of a command field: ``(field & flag) != 0`` equals ``is_set``."""

    field: str
    flag: int
    is_set: bool

    def __post_init__(self) -> None:
        if self.field not in ("col", "arg"):
            raise ValueError(f"a class test reads 'col' or 'arg', not {self.field!r}")


@dataclass(frozen=True)
class Cls:
    """A command class: a set of opcodes, optionally narrowed by one flag :class:`Test`."""

    name: str
    ops: frozenset[Op]
    test: Test | None = None

    def __contains__(self, op: object) -> bool:
        return op in self.ops

    def matches(self, op: Op, col: int, arg: int) -> bool:
        if op not in self.ops:
            return False
        if self.test is None:
            return True
        v = col if self.test.field == "col" else arg
        return bool(v & self.test.flag) == self.test.is_set


def _cls(name: str, *ops: Op, test: Test | None = None) -> Cls:
    return Cls(name, frozenset(ops), test)


ACT = _cls("ACT", Op.ACTAB, Op.ACTBG, Op.ACTPB)
PRE = _cls("PRE", Op.PREA, Op.PREBG, Op.PREPB)
REF = _cls("REF", Op.REF)
ROW = _cls("ROW", *ACT.ops, *PRE.ops, Op.REF)
MAC = _cls("MAC", Op.MACAB, Op.MACBG)
MACAB = _cls("MACAB", Op.MACAB)
MACBG = _cls("MACBG", Op.MACBG)
MAC_SCORE = _cls("MAC.score", Op.MACAB, Op.MACBG, test=Test("arg", int(MacArg.VALUE), False))
MAC_VALUE = _cls("MAC.value", Op.MACAB, Op.MACBG, test=Test("arg", int(MacArg.VALUE), True))
RD = _cls("RD", Op.RD)
WR = _cls("WR", Op.WR)
RDWR = _cls("RD/WR", Op.RD, Op.WR)
READS = _cls("MAC/RD", Op.MACAB, Op.MACBG, Op.RD)
COLUMN = _cls("MAC/RD/WR", Op.MACAB, Op.MACBG, Op.RD, Op.WR)
DATA = _cls("DATA", Op.RD, Op.WR, Op.WRGB, Op.MVSB, Op.MVGB, Op.SFM, Op.RDSB)
WRGB = _cls("WRGB", Op.WRGB)
MVSB = _cls("MVSB", Op.MVSB)
MVSB_SCORE = _cls("MVSB.score", Op.MVSB, test=Test("col", int(MoveFlag.VALUE), False))
MVGB = _cls("MVGB", Op.MVGB)
SFM = _cls("SFM", Op.SFM)
RDSB = _cls("RDSB", Op.RDSB)
SFM_RDSB = _cls("SFM/RDSB", Op.SFM, Op.RDSB)
GROUP_DATA = _cls("RD/WR/MVSB/MVGB", Op.RD, Op.WR, Op.MVSB, Op.MVGB)
BAR = _cls("BAR", Op.BAR)
ANY = _cls("any", *(o for o in Op if o != Op.NOP))

# ---- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyBit:
    """Key value 1 if ``field & flag`` else 0."""

    field: str
    flag: int


@dataclass(frozen=True)
class KeyHead:
    """Key value ``base + head``: the head index a :data:`starc.isa.HEAD_OPS` command names in
    its ``row`` field (:data:`starc.isa.HEAD_FIELD`)."""

    base: int = 0
    field: str = "row"


@dataclass(frozen=True)
class KeyIf:
    """Key value ``then`` if ``field & flag``, else the value of ``other``."""

    field: str
    flag: int
    then: int | KeyHead
    other: KeyBit


KeyExpr = KeyBit | KeyIf | KeyHead


@dataclass(frozen=True)
class Key:
    """A named attribute two related commands must share, with its value per opcode."""

    name: str
    size: int                  # values with one head
    of: tuple[tuple[Op, KeyExpr], ...]
    per_head: bool = False     # one more value per further head

    def size_at(self, heads: int) -> int:
        """Values of the key in a build holding ``heads`` heads."""
        return self.size + (heads - 1 if self.per_head else 0)

    def expr(self, op: Op) -> KeyExpr:
        for o, e in self.of:
            if o == op:
                return e
        raise KeyError(f"key {self.name!r} has no value for {op.name}")

    def value(self, op: Op, col: int, arg: int, row: int = 0) -> int:
        e: KeyExpr = self.expr(op)
        if isinstance(e, KeyIf):
            v = col if e.field == "col" else arg
            if not v & e.flag:
                e = e.other
            elif isinstance(e.then, KeyHead):
                e = e.then
            else:
                return e.then
        if isinstance(e, KeyHead):
            return e.base + row
        v = col if e.field == "col" else arg
        return 1 if v & e.flag else 0


_MAC_SET = KeyIf("arg", int(MacArg.VALUE), KeyHead(2), KeyBit("arg", int(MacArg.BUF)))
#: The PU register set: score sets 0 / 1 (MacArg.BUF, MoveFlag.BUF, shared by the heads), the
#: value accumulators of head h: 2 + h.
SET = Key("set", 3, ((Op.MACAB, _MAC_SET), (Op.MACBG, _MAC_SET), (Op.MVSB, KeyIf(
    "col", int(MoveFlag.VALUE), KeyHead(2), KeyBit("col", int(MoveFlag.BUF))))), per_head=True)
#: The head a command names (its query, softmax-buffer part, accumulators).
HEAD = Key("head", 1, tuple((op, KeyHead()) for op in sorted(HEAD_OPS)), per_head=True)
#: The probability slot: MacArg.BUF of a value MAC, MoveFlag.BUF of an MVGB.
SLOT = Key("slot", 2, ((Op.MACAB, KeyBit("arg", int(MacArg.BUF))),
                       (Op.MACBG, KeyBit("arg", int(MacArg.BUF))),
                       (Op.MVGB, KeyBit("col", int(MoveFlag.BUF)))))

# ---- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """How the earlier command relates to the later one: they touch a common instance of
    ``level`` (``CHANNEL``: always), and agree on every key."""

    level: Scope
    keys: tuple[Key, ...] = ()

    def describe(self) -> str:
        name = {Scope.CHANNEL: "channel", Scope.PSEUDO_CHANNEL: "same pseudo-channel",
                Scope.RANK: "same rank", Scope.GROUP: "same group", Scope.BANK: "same bank",
                Scope.UNIT: "same unit"}[self.level]
        return " + ".join([name, *(f"same {k.name}" for k in self.keys)])


#: Distances that depend on the earlier command (evaluated per command, not per configuration).
DYNAMIC_DISTANCES = {
    "buffer_busy": "how long the softmax unit and the buffer's read port stay busy after the "
                   "earlier command: SFM sfm_cycles(n) = sfm_latency + sfm_passes x ceil(n / "
                   "sfm_lanes); RDSB CL + rdsb_transfer(n)",
    "rdsb_transfer": "the data-bus transfer of the earlier RDSB: tBL x ceil(ceil(4 n / "
                     "column_bytes) / pseudo_channels)",
    "completion": "cycles until the earlier command is complete (its COMPLETION entry)",
}

#: When a command is complete, after its issue: a distance name per opcode.
COMPLETION: dict[Op, str] = {
    Op.ACTAB: "row_cmd_cycles", Op.ACTBG: "row_cmd_cycles", Op.ACTPB: "row_cmd_cycles",
    Op.PREA: "row_cmd_cycles", Op.PREBG: "row_cmd_cycles", Op.PREPB: "row_cmd_cycles",
    Op.REF: "tRFC", Op.MACAB: "mac_latency", Op.MACBG: "mac_latency", Op.RD: "rd_done",
    Op.WR: "wr_done", Op.WRGB: "mv_cycles", Op.MVSB: "mv_cycles", Op.MVGB: "mv_cycles",
    Op.SFM: "buffer_busy", Op.RDSB: "buffer_busy", Op.BAR: "issue_spacing",
}

CATEGORIES = ("mac_issue", "row_switch", "refresh", "data_movement", "softmax", "drain")

#: Breakdown category of a command's wait, by opcode (a row's ``books`` overrides it).
CATEGORY: dict[Op, str] = {
    **dict.fromkeys((Op.MACAB, Op.MACBG), "mac_issue"),
    **dict.fromkeys((*ACT.ops, *PRE.ops), "row_switch"),
    Op.REF: "refresh",
    **dict.fromkeys((Op.RD, Op.WR, Op.WRGB, Op.MVSB, Op.MVGB, Op.RDSB), "data_movement"),
    Op.SFM: "softmax",
    Op.BAR: "drain",
}


@dataclass(frozen=True)
class Rule:
    """One row: ``later`` issues no earlier than ``t_j + distance`` for every earlier ``j`` of
    class ``earlier`` with ``relation``; with ``nth > 1`` only the ``nth``-latest such ``j``
    counts (a window: tFAW). ``books``: the breakdown category of a wait this row decides."""

    later: Cls
    earlier: Cls
    relation: Relation
    distance: str
    topic: str
    nth: int = 1
    books: str | None = None


def _r(later: Cls, earlier: Cls, level: Scope, distance: str, topic: str,
       keys: tuple[Key, ...] = (), **kw: object) -> Rule:
    return Rule(later, earlier, Relation(level, keys), distance, topic, **kw)  # type: ignore


_CH, _PC, _RK, _GR, _BK = (Scope.CHANNEL, Scope.PSEUDO_CHANNEL, Scope.RANK, Scope.GROUP,
                           Scope.BANK)

#: The table. Order is the tie-break of the binding rule: the first row whose bound equals the
#: issue cycle is reported.
RULES: tuple[Rule, ...] = (
    _r(ROW, ROW, _CH, "row_cmd_cycles", "row command bus"),
    _r(ACT, ACT, _BK, "tRC", "bank"),
    _r(ACT, PRE, _BK, "tRP", "bank"),
    _r(ACT, REF, _BK, "tRFC", "bank", books="refresh"),
    _r(PRE, ACT, _BK, "tRAS", "bank"),
    _r(PRE, READS, _BK, "tRTP_L", "bank"),
    _r(PRE, WR, _BK, "wr_to_pre", "bank"),
    _r(COLUMN, ACT, _BK, "tRCD", "bank"),
    _r(REF, PRE, _BK, "tRP", "bank"),
    _r(REF, ACT, _BK, "tRC", "bank"),
    _r(REF, REF, _BK, "tRFC", "bank"),
    _r(ACT, ACT, _GR, "tRRD_L", "activation window"),
    _r(ACT, ACT, _RK, "tRRD_S", "activation window"),
    _r(ACT, ACT, _RK, "tFAW", "activation window", nth=4),
    _r(MAC, MACAB, _CH, "tCCD_AB", "column"),
    _r(MACAB, MACBG, _CH, "tCCD_AB", "column"),
    _r(MACBG, MACBG, _CH, "tCCD_S", "column"),
    _r(MACBG, MACBG, _GR, "tCCD_L", "column"),
    _r(MAC, RDWR, _GR, "tCCD_L", "column"),
    _r(RDWR, MACAB, _CH, "tCCD_AB", "column"),
    _r(RDWR, MACBG, _GR, "tCCD_L", "column"),
    _r(RD, WR, _GR, "wr_to_rd_l", "column"),
    _r(RD, WR, _RK, "wr_to_rd_s", "column"),
    _r(WR, RD, _RK, "rd_to_wr", "column"),
    _r(DATA, DATA, _GR, "tCCD_L", "data path"),
    _r(DATA, DATA, _RK, "tCCD_S", "data path"),
    _r(DATA, DATA, _PC, "tBL", "data path"),
    _r(GROUP_DATA, RDSB, _CH, "rdsb_transfer", "data path"),
    _r(MVSB_SCORE, MVSB_SCORE, _CH, "move_spacing", "softmax buffer ports"),
    _r(MVGB, MVGB, _CH, "move_spacing", "softmax buffer ports"),
    _r(MAC_SCORE, WRGB, _CH, "mv_cycles", "dependency", keys=(HEAD,)),
    _r(MAC_VALUE, MVGB, _GR, "mv_cycles", "dependency", keys=(SLOT,)),
    _r(MVSB, MAC, _GR, "mac_latency", "dependency", keys=(SET,)),
    _r(SFM_RDSB, MVSB, _CH, "mv_cycles", "dependency"),
    _r(SFM_RDSB, SFM_RDSB, _CH, "buffer_busy", "dependency"),
    _r(MVGB, SFM_RDSB, _CH, "buffer_busy", "dependency", keys=(HEAD,), books="softmax"),
    _r(BAR, ANY, _CH, "completion", "dependency"),
)

#: Binding rule id of a command no row reached: it issued one cycle after its predecessor (the
#: first command: at cycle 0). Row ``k`` of :data:`RULES` has id ``k + 1``.
IN_ORDER = 0
#: Bits of a binding rule id (the RTL issue stream's ``rule`` field).
RULE_BITS = len(RULES).bit_length()


def rule_name(rule_id: int) -> str:
    """``"#12 ACT <- ACT, same group: tRRD_L"`` for a row id; ``"in order"`` for IN_ORDER."""
    if rule_id == IN_ORDER:
        return "in order"
    return _describe(rule_id, RULES[rule_id - 1])


def _describe(rule_id: int, r: Rule) -> str:
    nth = f" ({r.nth}th latest)" if r.nth > 1 else ""
    return (f"#{rule_id} {r.later.name} <- {r.earlier.name}{nth}, {r.relation.describe()}: "
            f"{r.distance}")


# ---- the plan: families of "latest event" state --------------------------------------------------


@dataclass
class Family:
    """The latest events of class ``earlier`` related at ``level`` with ``keys``: what one or
    more rows read.

    ``value`` is None when the family keeps issue cycles (a row adds its constant distance when
    it reads), or the name of a dynamic distance: then it keeps the maximum of ``t + d(event)``.
    ``nth > 1``: the ``nth``-latest event (a window). ``write_levels``: where events are written
    (``min(scope(e), level)`` for each earlier opcode); ``read_levels``: where later commands
    read (``min(scope(l), level)``).
    """

    index: int
    earlier: Cls
    level: Scope
    keys: tuple[Key, ...]
    value: str | None
    nth: int
    rules: list[int] = field(default_factory=list)   # row ids
    write_levels: dict[Op, Scope] = field(default_factory=dict)
    read_levels: dict[Op, Scope] = field(default_factory=dict)

    @property
    def key_size(self) -> int:
        """Key combinations with :data:`starc.isa.MAX_HEADS` heads (the golden model)."""
        return self.key_size_at(MAX_HEADS)

    def key_size_at(self, heads: int) -> int:
        """Key combinations in a build holding ``heads`` heads."""
        n = 1
        for k in self.keys:
            n *= k.size_at(heads)
        return n

    @property
    def name(self) -> str:
        keys = "".join(f"_{k.name}" for k in self.keys)
        kind = f"_{self.value}" if self.value else (f"_w{self.nth}" if self.nth > 1 else "")
        return (f"{self.earlier.name.replace('/', '_').replace('.', '_').lower()}"
                f"_{self.level.name.lower()}{keys}{kind}")


@dataclass
class Plan:
    families: list[Family]
    family_of: dict[int, Family]   # row id -> family


_TREE = (Scope.CHANNEL, Scope.PSEUDO_CHANNEL, Scope.RANK, Scope.GROUP, Scope.BANK)


def _plan(rules: tuple[Rule, ...]) -> Plan:
    families: dict[tuple, Family] = {}
    family_of: dict[int, Family] = {}
    for rid, r in enumerate(rules, start=1):
        rel = r.relation
        where = f"rule {_describe(rid, r)}"
        if rel.level not in _TREE:
            raise ValueError(f"{where}: relation level {rel.level.name} is not one of the nested "
                             f"scopes channel / pseudo-channel / rank / group / bank")
        for op in (*r.later.ops, *r.earlier.ops):
            if SCOPE.get(op) not in _TREE:
                raise ValueError(f"{where}: {op.name} has no nested scope")
            for k in rel.keys:
                k.expr(op)  # raises if the key has no value for an opcode of the row
        dynamic = r.distance in DYNAMIC_DISTANCES
        if dynamic and (rel.level != Scope.CHANNEL or r.nth != 1):
            raise ValueError(f"{where}: a dynamic distance needs a channel relation without "
                             f"window")
        if r.nth != 1 and (rel.keys or r.nth < 1):
            raise ValueError(f"{where}: a window (nth > 1) takes no keys")
        if r.books is not None and r.books not in CATEGORIES:
            raise ValueError(f"{where}: unknown breakdown category {r.books!r}")
        ident = (r.earlier, rel.level, rel.keys, r.distance if dynamic else None, r.nth)
        fam = families.get(ident)
        if fam is None:
            fam = Family(len(families), r.earlier, rel.level, rel.keys,
                         r.distance if dynamic else None, r.nth)
            fam.write_levels = {op: Scope(min(SCOPE[op], rel.level)) for op in
                                sorted(r.earlier.ops)}
            families[ident] = fam
        fam.rules.append(rid)
        for op in sorted(r.later.ops):
            fam.read_levels[op] = Scope(min(SCOPE[op], rel.level))
        family_of[rid] = fam
    return Plan(list(families.values()), family_of)


#: The plan of :data:`RULES` (configuration-independent).
PLAN = _plan(RULES)

# ---- rendering (docs/commands.md) ---------------------------------------------------------------

BEGIN, END = "<!-- rules-table:begin -->", "<!-- rules-table:end -->"


def render(cfg: object | None = None) -> str:
    """The Markdown of docs/commands.md between the rules-table markers: the rows with their
    values on ``cfg`` (default: the default preset) and the named distances with their reasons."""
    from starc import config

    cfg = cfg if cfg is not None else config.load()
    d = cfg.distances()  # type: ignore[attr-defined]
    lines = [
        BEGIN,
        "<!-- generated by `python -m starc.rules docs/commands.md` from starc.rules.RULES;"
        " do not edit by hand -->",
        "",
        f"Rows (id = binding rule id; values in DRAM cycles of the default preset, "
        f"`{cfg.name}`; id {IN_ORDER} = in order):",  # type: ignore[attr-defined]
        "",
        "| id | topic | later command | earlier command | relation | distance | cycles |",
        "|---|---|---|---|---|---|---|",
    ]
    for rid, r in enumerate(RULES, start=1):
        nth = f" ({r.nth}th latest)" if r.nth > 1 else ""
        dist = r.distance if r.distance in DYNAMIC_DISTANCES else f"`{r.distance}`"
        val = "per command" if r.distance in DYNAMIC_DISTANCES else str(d[r.distance])
        books = f"; books `{r.books}`" if r.books else ""
        lines.append(f"| {rid} | {r.topic}{books} | {_ops(r.later)} | {_ops(r.earlier)}{nth} | "
                     f"{r.relation.describe()} | {dist} | {val} |")
    lines += [
        "",
        "Classes: " + "; ".join(f"`{c.name}` = {', '.join(o.name for o in sorted(c.ops))}"
                                + (f" with `{_test(c.test)}`" if c.test else "")
                                for c in _classes()) + ".",
        "",
        "Named distances (`Config.distances()`; the preset's own parameters such as `tRCD` and "
        "`pu.mv_cycles` are distances under their own names):",
        "",
        "| distance | formula | cycles | reason |",
        "|---|---|---|---|",
    ]
    for x in config.DISTANCES:
        lines.append(f"| `{x.name}` | `{x.formula}` | {d[x.name]} | {x.reason} |")
    for name, why in DYNAMIC_DISTANCES.items():
        lines.append(f"| {name} | per earlier command | - | {why} |")
    lines += ["", "Completion of a command (`completion`; the program's cycle count is the latest "
              "completion): " + ", ".join(f"{o.name} `{n}`" for o, n in COMPLETION.items()) + ".",
              "", END]
    return "\n".join(lines)


def _ops(c: Cls) -> str:
    return f"`{c.name}`"


def _test(t: Test) -> str:
    flag = (MacArg if t.field == "arg" else MoveFlag)(t.flag)
    return f"{t.field} & {type(flag).__name__}.{flag.name} {'set' if t.is_set else 'clear'}"


def _classes() -> list[Cls]:
    seen: dict[str, Cls] = {}
    for r in RULES:
        for c in (r.later, r.earlier):
            if len(c.ops) > 1 or c.test is not None:
                seen.setdefault(c.name, c)
    return list(seen.values())


def splice(text: str, table: str) -> str:
    """``text`` with the part between the markers replaced by ``table``."""
    a, b = text.find(BEGIN), text.find(END)
    if a < 0 or b < a:
        raise ValueError(f"the page has no {BEGIN} ... {END} section")
    return text[:a] + table + text[b + len(END):]


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m starc.rules PAGE [--check]``: re-render the rules tables of PAGE in place, or
    (``--check``) exit 1 if they are not current."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    pages = [a for a in args if a != "--check"]
    if len(pages) != 1:
        print("usage: python -m starc.rules docs/commands.md [--check]", file=sys.stderr)
        return 2
    page = Path(pages[0])
    if not page.is_file():
        print(f"error: {page} does not exist", file=sys.stderr)
        return 2
    text = page.read_text()
    try:
        new = splice(text, render())
    except ValueError as e:
        print(f"error: {page}: {e}", file=sys.stderr)
        return 2
    if check:
        if new != text:
            print(f"{page} is not current; run: python -m starc.rules {page}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        tmp = page.with_name(page.name + ".tmp")
        tmp.write_text(new)
        tmp.replace(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

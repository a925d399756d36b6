"""Generates the golden schedule's inner loop from the rules table, as Python source.

:func:`compiled` returns, per configuration (organisation, named distances, refresh on/off), a
function compiled once from source written out of :data:`starc.rules.RULES` and
:data:`starc.rules.PLAN`: one branch per opcode, one comparison per term of every row that applies
to it (in table order, so the first row reaching the issue cycle is the binding rule), and the
writes of the command into every family it belongs to. Distances, organisation sizes and node
arithmetic are literals in the source, which is what keeps it above a million commands per second
in plain Python (bench/bench_timing.py).

State per family (docs/commands.md, "How the generators store the latest event"): ``A<f>_<l>``
is the latest event written at level ``l`` (an all-bank event at level 0), ``S<f>_<l>`` the
latest event at or below an instance of level ``l``; a later command at level ``m`` reads
``max(A<f>_<l>[its ancestor] for l < m, S<f>_<m>[itself])``. Keyed families index
``node * keys + key``. Dynamic families (``D<f>``) keep the maximum of ``t + d(event)``; windows
(``W<f>``, ``WI<f>``) a ring of the last ``nth`` events per instance.

``python -m starc.golden.schedgen [PRESET]`` prints the generated source.
"""

from __future__ import annotations

import re
import sys

from starc.config import Config
from starc.isa import MAX_HEADS, SCOPE, Op, Scope
from starc.rules import (
    CATEGORIES,
    CATEGORY,
    COMPLETION,
    IN_ORDER,
    PLAN,
    RULES,
    Cls,
    Family,
    Key,
    KeyBit,
    KeyHead,
    KeyIf,
)

__all__ = ["compiled", "source"]

NEG = -(1 << 40)


class _Org:
    """Organisation sizes and the node index of a command at each scope level."""

    def __init__(self, cfg: Config) -> None:
        org = cfg.org
        self.G = org.groups_per_channel
        self.BPG = org.banks_per_group
        self.BGS = org.bank_groups
        self.GPP = org.sids * org.bank_groups  # groups per pseudo-channel
        self.count = {Scope.CHANNEL: 1, Scope.PSEUDO_CHANNEL: org.pseudo_channels,
                      Scope.RANK: org.ranks_per_channel, Scope.GROUP: self.G,
                      Scope.BANK: self.G * self.BPG}

    def node(self, level: Scope) -> str:
        """Index expression of the command's ancestor at ``level`` (locals g, b, r, pc, bi)."""
        return {Scope.CHANNEL: "0", Scope.PSEUDO_CHANNEL: "pc", Scope.RANK: "r",
                Scope.GROUP: "g", Scope.BANK: "bi"}[level]

    def ratio(self, upper: Scope, lower: Scope) -> int:
        return self.count[lower] // self.count[upper]


def _key_expr(e: KeyBit | KeyIf | KeyHead) -> str:
    if isinstance(e, KeyHead):
        return f"({e.base} + hd)" if e.base else "hd"
    v = "col" if e.field == "col" else "arg"
    if isinstance(e, KeyBit):
        return f"(1 if {v} & {e.flag} else 0)"
    then = _key_expr(e.then) if isinstance(e.then, KeyHead) else e.then
    return f"({then} if {v} & {e.flag} else {_key_expr(e.other)})"


def _key_value(keys: tuple[Key, ...], op: Op) -> str:
    """Expression of the combined key index of ``op`` (mixed radix, first key most significant)."""
    expr = "0"
    for k in keys:
        part = _key_expr(k.expr(op))
        expr = part if expr == "0" else f"({expr}) * {k.size} + {part}"
    return expr


def _test(c: Cls) -> str | None:
    if c.test is None:
        return None
    v = "col" if c.test.field == "col" else "arg"
    return f"{v} & {c.test.flag}" if c.test.is_set else f"not {v} & {c.test.flag}"


class _Gen:
    def __init__(self, cfg: Config, refresh: bool) -> None:
        self.cfg = cfg
        self.o = _Org(cfg)
        self.d = cfg.distances()
        self.refresh = refresh
        self.lines: list[str] = []
        self.fam_at: dict[int, list[Scope]] = {}
        self.fam_sub: dict[int, list[Scope]] = {}
        for f in PLAN.families:
            reads = set(f.read_levels.values())
            top = max(reads)
            self.fam_at[f.index] = sorted({lv for lv in f.write_levels.values() if lv < top})
            self.fam_sub[f.index] = sorted(reads)
        # the completion family is the program's `complete` register
        self.complete_family = next((f.index for f in PLAN.families
                                     if f.value == "completion" and len(f.earlier.ops) == len(
                                         COMPLETION)), None)

    # ---- small emitters ---------------------------------------------------------------------
    def emit(self, indent: int, text: str) -> None:
        for line in text.splitlines():
            self.lines.append("    " * indent + line)

    def dist(self, name: str, op: Op | None = None) -> str:
        if name == "completion":
            assert op is not None
            return self.dist(COMPLETION[op], op)
        if name == "buffer_busy":
            if op == Op.SFM:
                return "sfm_cycles(arg)"
            assert op == Op.RDSB, op
            return f"({self.d['CL']} + {self.dist('rdsb_transfer', op)})"
        if name == "rdsb_transfer":
            assert op == Op.RDSB, op
            return "rdsb_transfer(arg)"
        return str(self.d[name])

    def reg(self, f: Family, kind: str, level: Scope) -> str:
        return f"{kind}{f.index}_{int(level)}"

    def indexed(self, f: Family, kind: str, level: Scope, node: str, key: str) -> str:
        name = self.reg(f, kind, level)
        K = f.key_size
        if level == Scope.CHANNEL and K == 1:
            return name
        if K == 1:
            return f"{name}[{node}]"
        if node == "0":
            return f"{name}[{key}]"
        return f"{name}[{node} * {K} + {key}]"

    # ---- state ------------------------------------------------------------------------------
    def state(self) -> None:
        o = self.o
        for f in PLAN.families:
            if f.value is not None:
                if f.index != self.complete_family:
                    self.emit(1, f"D{f.index} = NEG" if f.key_size == 1 else
                              f"D{f.index} = [NEG] * {f.key_size}")
                continue
            if f.nth > 1:
                n = o.count[f.level]
                self.emit(1, f"W{f.index} = [[NEG] * {f.nth} for _ in range({n})]")
                self.emit(1, f"WI{f.index} = [0] * {n}")
                continue
            for kind, levels in (("A", self.fam_at[f.index]), ("S", self.fam_sub[f.index])):
                for lv in levels:
                    size = o.count[lv] * f.key_size
                    if lv == Scope.CHANNEL and f.key_size == 1:
                        self.emit(1, f"{self.reg(f, kind, lv)} = NEG")
                    else:
                        self.emit(1, f"{self.reg(f, kind, lv)} = [NEG] * {size}")

    # ---- the terms of one opcode ------------------------------------------------------------
    def bound(self, op: Op, indent: int) -> None:
        """Code that sets t (issue cycle) and rr (binding rule) for ``op``; prev is the previous
        command's cycle."""
        self.emit(indent, "t = prev\nrr = 0")
        for rid, rule in enumerate(RULES, start=1):
            if op not in rule.later.ops:
                continue
            f = PLAN.family_of[rid]
            test = _test(rule.later)
            ind = indent
            if test:
                self.emit(indent, f"if {test}:")
                ind = indent + 1
            for term in self.terms(f, op, rule.distance):
                self.emit(ind, f"a = {term}\nif a > t:\n    t = a\n    rr = {rid}")
        self.emit(indent, f"if t <= prev:\n    t = prev + 1\n    rr = {IN_ORDER}")

    def terms(self, f: Family, op: Op, distance: str) -> list[str]:
        o = self.o
        mu = f.read_levels[op]
        if f.value is not None:
            if f.index == self.complete_family:
                return ["complete"]
            return [f"D{f.index}" if f.key_size == 1 else
                    f"D{f.index}[{_key_value(f.keys, op)}]"]
        d = self.dist(distance)
        if f.nth > 1:
            if mu == f.level:
                node = o.node(mu)
                return [f"W{f.index}[{node}][WI{f.index}[{node}]] + {d}"]
            # a command above the window's level: every instance under it (ACTAB: all ranks)
            ratio = o.ratio(mu, f.level)
            base = "0" if mu == Scope.CHANNEL else f"{o.node(mu)} * {ratio}"
            return [f"max(W{f.index}[q][WI{f.index}[q]] for q in range({base}, {base} + {ratio}))"
                    f" + {d}"]
        key = _key_value(f.keys, op)
        out = []
        for lv in self.fam_at[f.index]:
            if lv < mu:
                out.append(f"{self.indexed(f, 'A', lv, o.node(lv), key)} + {d}")
        out.append(f"{self.indexed(f, 'S', mu, o.node(mu), key)} + {d}")
        return out

    # ---- the writes of one opcode -----------------------------------------------------------
    def record(self, op: Op, indent: int) -> None:
        o = self.o
        for f in PLAN.families:
            if op not in f.earlier.ops:
                continue
            test = _test(f.earlier)
            ind = indent
            if test:
                self.emit(indent, f"if {test}:")
                ind = indent + 1
            lam = f.write_levels[op]
            if f.value is not None:
                if f.index == self.complete_family:
                    continue  # written below with every command
                v = f"t + {self.dist(f.value, op)}"
                d = f"D{f.index}" if f.key_size == 1 else f"D{f.index}[{_key_value(f.keys, op)}]"
                self.emit(ind, f"v = {v}\nif v > {d}:\n    {d} = v")
                continue
            if f.nth > 1:
                ratio = o.ratio(lam, f.level)
                base = "0" if lam == Scope.CHANNEL else f"{o.node(lam)} * {ratio}"
                mod = f"& {f.nth - 1}" if f.nth & (f.nth - 1) == 0 else f"% {f.nth}"
                if ratio == 1:
                    q = base if lam != Scope.CHANNEL else "0"
                    self.emit(ind, f"q = {q}\nW{f.index}[q][WI{f.index}[q]] = t\n"
                                   f"WI{f.index}[q] = (WI{f.index}[q] + 1) {mod}")
                else:
                    self.emit(ind, f"for q in range({base}, {base} + {ratio}):\n"
                                   f"    W{f.index}[q][WI{f.index}[q]] = t\n"
                                   f"    WI{f.index}[q] = (WI{f.index}[q] + 1) {mod}")
                continue
            key = _key_value(f.keys, op)
            targets = []
            if lam in self.fam_at[f.index]:
                targets.append(self.indexed(f, "A", lam, o.node(lam), key))
            for mu in self.fam_sub[f.index]:
                if mu <= lam:
                    targets.append(self.indexed(f, "S", mu, o.node(mu), key))
            if targets:
                self.emit(ind, " = ".join(targets) + " = t")

    # ---- per-opcode blocks ------------------------------------------------------------------
    def locals_for(self, op: Op, indent: int, body: str) -> None:
        """g, b, r, pc, bi, col, arg, hd where the body uses them, with the range checks (hd:
        the head a command names in its row field, below :data:`starc.isa.MAX_HEADS`)."""
        o = self.o
        s = SCOPE[op]

        def uses(name: str) -> bool:
            return re.search(rf"\b{name}\b", body) is not None

        if s >= Scope.GROUP:
            self.emit(indent, f"g = grps[i]\nif g >= {o.G}:\n"
                              f"    raise _err(i, f\"group {{g}} out of range (0..{o.G - 1})\")")
            if uses("r"):
                self.emit(indent, f"r = g // {o.BGS}")
            if uses("pc"):
                self.emit(indent, f"pc = g // {o.GPP}")
        if s == Scope.BANK:
            self.emit(indent, f"b = banks[i]\nif b >= {o.BPG}:\n"
                              f"    raise _err(i, f\"group {{g}} / bank {{b}} out of range\")\n"
                              f"bi = g * {o.BPG} + b")
        if uses("col"):
            self.emit(indent, "col = cols[i]")
        if uses("arg"):
            self.emit(indent, "arg = args[i]")
        if uses("hd"):
            self.emit(indent, f"hd = rows[i]\nif hd >= {MAX_HEADS}:\n"
                              f"    raise _err(i, f\"head {{hd}} out of range "
                              f"(0..{MAX_HEADS - 1})\")")

    def category(self, op: Op, indent: int) -> None:
        default = CATEGORY[op]
        overrides = [(rid, r.books) for rid, r in enumerate(RULES, start=1)
                     if op in r.later.ops and r.books and r.books != default]
        if not overrides:
            self.emit(indent, f"c_{default} += t - gb")
            return
        first = True
        for rid, books in overrides:
            self.emit(indent, f"{'if' if first else 'elif'} rr == {rid}:\n    c_{books} += t - gb")
            first = False
        self.emit(indent, f"else:\n    c_{default} += t - gb")

    def state_update(self, op: Op, indent: int) -> None:
        o = self.o
        NB, BPG = o.G * o.BPG, o.BPG
        text = {
            Op.ACTAB: f"n_open = {NB}\ngrp_open = [{BPG}] * {o.G}\nbank_open = [True] * {NB}",
            Op.ACTBG: f"n_open += {BPG}\ngrp_open[g] = {BPG}\n"
                      f"bank_open[g * {BPG}:(g + 1) * {BPG}] = [True] * {BPG}",
            Op.ACTPB: "n_open += 1\ngrp_open[g] += 1\nbank_open[bi] = True",
            Op.PREA: f"n_open = 0\ngrp_open = [0] * {o.G}\nbank_open = [False] * {NB}",
            Op.PREBG: f"n_open -= grp_open[g]\ngrp_open[g] = 0\n"
                      f"bank_open[g * {BPG}:(g + 1) * {BPG}] = [False] * {BPG}",
            Op.PREPB: "if bank_open[bi]:\n    bank_open[bi] = False\n    n_open -= 1\n"
                      "    grp_open[g] -= 1",
        }.get(op)
        if text:
            self.emit(indent, text)

    def legality(self, op: Op, indent: int) -> None:
        o = self.o
        NB, BPG = o.G * o.BPG, o.BPG
        text = {
            Op.MACAB: f"if n_open != {NB}:\n    raise _err(i, \"MACAB needs a row open in every "
                      f"bank\")",
            Op.MACBG: f"if grp_open[g] != {BPG}:\n    raise _err(i, f\"MACBG needs a row open in "
                      f"every bank of group {{g}}\")",
            Op.ACTAB: "if n_open:\n    raise _err(i, \"ACTAB needs every bank closed\")",
            Op.ACTBG: "if grp_open[g]:\n    raise _err(i, f\"ACTBG needs every bank of group "
                      "{g} closed\")",
            Op.ACTPB: "if bank_open[bi]:\n    raise _err(i, f\"ACTPB needs bank {b} of group {g} "
                      "closed\")",
            Op.RD: "if not bank_open[bi]:\n    raise _err(i, f\"bank {b} of group {g} has no "
                   "open row\")",
            Op.WR: "if not bank_open[bi]:\n    raise _err(i, f\"bank {b} of group {g} has no "
                   "open row\")",
            Op.REF: "if n_open:\n    raise _err(i, \"REF needs every bank closed\")",
        }.get(op)
        if text:
            self.emit(indent, text)

    def block(self, op: Op, indent: int) -> None:
        outer, self.lines = self.lines, []
        self.body(op, indent)
        body, self.lines = self.lines, []
        self.locals_for(op, indent, "\n".join(body))
        self.lines = outer + self.lines + body

    def body(self, op: Op, indent: int) -> None:
        self.legality(op, indent)
        if op in (Op.ACTAB, Op.ACTBG, Op.ACTPB) and self.refresh:
            self.emit(indent, "while True:")
            self.bound(op, indent + 1)
            self.emit(indent + 1, "if t < next_due or n_open:\n    break")
            self.inserted_ref(indent + 1)
        else:
            self.bound(op, indent)
        self.record(op, indent)
        self.state_update(op, indent)
        if op == Op.REF:
            tREFI = self.cfg.timing.tREFI
            self.emit(indent, f"nd = (t // {tREFI} + 1) * {tREFI}\nif nd > next_due:\n"
                              f"    next_due = nd")
        self.emit(indent, f"v = t + {self.dist('completion', op)}\nif v > complete:\n"
                          f"    complete = v")
        self.category(op, indent)

    def inserted_ref(self, indent: int) -> None:
        """A REF before the activation: its own cycle from the REF rows, recorded like an
        explicit one; then the activation is decided again."""
        self.bound(Op.REF, indent)
        self.record(Op.REF, indent)
        self.emit(indent, f"v = t + {self.dist('completion', Op.REF)}\nif v > complete:\n"
                          f"    complete = v")
        self.emit(indent, "c_refresh += t - gb\ngb = t\nref_at.append(i)\nref_t.append(t)\n"
                          f"ref_r.append(rr)\nnext_due += {self.cfg.timing.tREFI}\nprev = t")

    def function(self) -> str:
        o = self.o
        tREFI = self.cfg.timing.tREFI
        self.emit(0, "def run(ops, grps, banks, cols, args, rows):")
        self.emit(1, f"n_open = 0\ngrp_open = [0] * {o.G}\nbank_open = [False] * {o.G * o.BPG}")
        self.state()
        # `complete` starts at "never" (a BAR first in a program is bound by in-order, not by the
        # completion of nothing); the program's cycle count is at least 0
        self.emit(1, "complete = NEG\nprev = -1\ngb = 0")
        self.emit(1, f"next_due = {tREFI if self.refresh else 1 << 62}")
        for c in CATEGORIES:
            self.emit(1, f"c_{c} = 0")
        self.emit(1, "out_t = []\nout_r = []\nref_at = []\nref_t = []\nref_r = []")
        self.emit(1, "put_t = out_t.append\nput_r = out_r.append")
        self.emit(1, "def _err(i, msg):\n    return ProgramError(f\"command #{i} "
                     "({Op(ops[i]).name}): {msg}\")")
        self.emit(1, "for i in range(len(ops)):")
        self.emit(2, "op = ops[i]")
        # most frequent first: the MAC stream dominates every attention program
        order = [Op.MACAB, Op.MVSB, Op.MVGB, Op.MACBG, Op.ACTAB, Op.PREA, Op.ACTBG, Op.PREBG,
                 Op.RD, Op.WR, Op.WRGB, Op.SFM, Op.ACTPB, Op.PREPB, Op.REF, Op.BAR, Op.RDSB]
        assert set(order) == set(COMPLETION)
        for k, op in enumerate(order):
            self.emit(2, f"{'if' if k == 0 else 'elif'} op == {int(op)}:  # {op.name}")
            self.block(op, 3)
        self.emit(2, "else:\n    raise (_err(i, \"not a valid command in a program\") if op in "
                     "Op._value2member_map_ else ProgramError(f\"command #{i}: unknown opcode "
                     "{op}\"))")
        self.emit(2, "put_t(t)\nput_r(rr)\nprev = t\ngb = t")
        cats = ", ".join(f"{c!r}: c_{c}" for c in CATEGORIES if c != "drain")
        self.emit(1, "if complete < 0:\n    complete = 0")
        self.emit(1, f"c_drain += complete - gb\nreturn (out_t, out_r, ref_at, ref_t, ref_r, "
                     f"complete, {{{cats}, 'drain': c_drain}})")
        return "\n".join(self.lines) + "\n"


def source(cfg: Config, *, refresh: bool = True) -> str:
    """The generated Python source of the schedule loop for ``cfg``."""
    return _Gen(cfg, refresh).function()


def _key(cfg: Config, refresh: bool) -> tuple:
    org, pu = cfg.org, cfg.pu
    return (org.pseudo_channels, org.sids, org.bank_groups, org.banks_per_group, org.column_bytes,
            tuple(sorted(cfg.distances().items())), pu.sfm_latency, pu.sfm_passes, pu.sfm_lanes,
            cfg.timing.tREFI, refresh)


def _compile(key: tuple, src: str, cfg: Config):  # noqa: ANN202 - the generated function
    """``src`` compiled; the dynamic distances (``sfm_cycles``, ``rdsb_transfer``) are ``cfg``'s
    own methods (their one definition), which depend only on fields of ``key``."""
    from starc.golden.timing import ProgramError

    namespace = {"NEG": NEG, "ProgramError": ProgramError, "Op": Op,
                 "sfm_cycles": cfg.sfm_cycles, "rdsb_transfer": cfg.rdsb_transfer}
    exec(compile(src, f"<starc.golden.schedgen {hash(key) & 0xFFFF:04x}>", "exec"), namespace)
    return namespace["run"]


def compiled(cfg: Config, *, refresh: bool = True):  # noqa: ANN201
    """The schedule loop for ``cfg``, generated and compiled on first use, then cached:
    ``run(ops, grps, banks, cols, args, rows) -> (issue, rule, ref_at, ref_t, ref_rule, complete,
    breakdown)`` over Python lists of the program's fields."""
    key = _key(cfg, refresh)
    fn = _CACHE.get(key)
    if fn is None:
        fn = _compile(key, source(cfg, refresh=refresh), cfg)
        _CACHE[key] = fn
    return fn


_CACHE: dict[tuple, object] = {}


if __name__ == "__main__":
    from starc import config

    sys.stdout.write(source(config.load(sys.argv[1] if len(sys.argv) > 1 else None)))

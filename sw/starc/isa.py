"""The PIM command set: one definition for the planner, the golden model, the gateware and cocotb.

A program is a NumPy structured array of :data:`PROGRAM_DTYPE`, one row per command, executed in
order on one channel. Each command also has a packed 72-bit encoding (:data:`COMMAND_FIELDS`, LSB
first) that the gateware's command stream carries; :func:`encode` / :func:`decode` convert.

Field use per opcode (unused fields must be 0; docs/commands.md has the full table):

=========  ======================================  =============================================
opcode     fields                                  meaning
=========  ======================================  =============================================
ACTAB      row                                     activate ``row`` in every bank of the channel
ACTBG      group, row                              activate ``row`` in every bank of one group
ACTPB      group, bank, row                        activate ``row`` in one bank
PREA       -                                       precharge every bank
PREBG      group                                   precharge every bank of one group
PREPB      group, bank                             precharge one bank
MACAB      col, arg=MacArg                         MAC of column ``col`` in every bank (open rows)
MACBG      group, col, arg=MacArg                  MAC of column ``col`` in the banks of one group
RD         group, bank, col                        read one column to the host
WR         group, bank, col, arg=data index        write one column (data from the side table)
WRGB       col=slot, arg=data index                write one column into every GEMV buffer slot
MVSB       group, col=MoveFlag, arg=mask           accumulators of a group -> softmax buffer
MVGB       group, col=MoveFlag                     softmax output -> GEMV buffer slot of a group
SFM        arg=n                                   softmax over the n valid softmax-buffer entries
REF        -                                       all-bank refresh (normally inserted by timing)
BAR        -                                       wait until every earlier command has completed
RDSB       arg=n                                   read the n valid pending softmax-buffer scores
                                                   to the host (selection passes)
=========  ======================================  =============================================

Several heads per channel (docs/multihead.md): the commands of :data:`HEAD_OPS` name the head
whose state they use in their ``row`` field, which they do not use otherwise (:func:`head_of`).

Every command has a scope (:data:`SCOPE`, :class:`Scope`): the part of the channel it touches,
which the timing rules relate (docs/commands.md, "One rules table").
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "COMMAND_BITS",
    "COMMAND_FIELDS",
    "MacArg",
    "MoveFlag",
    "Op",
    "SCOPE",
    "Scope",
    "PROGRAM_DTYPE",  # noqa: F822 - made on first use (module __getattr__)
    "FIELD_NAMES",
    "program_dtype",
    "program_from_commands",
    "READ_ADDRESS_FIELDS",
    "ROW_OPS",
    "ACT_OPS",
    "PRE_OPS",
    "MAC_OPS",
    "DATA_OPS",
    "HEAD_FIELD",
    "HEAD_OPS",
    "MAX_HEADS",
    "decode",
    "head_of",
    "bit",
    "encode",
    "make_program",
]


class Op(IntEnum):
    """Opcodes. Values are the ``op`` field of the packed encoding (6 bits)."""

    NOP = 0
    ACTAB = 1
    ACTBG = 2
    ACTPB = 3
    PREA = 4
    PREBG = 5
    PREPB = 6
    MACAB = 7
    MACBG = 8
    RD = 9
    WR = 10
    WRGB = 11
    MVSB = 12
    MVGB = 13
    SFM = 14
    REF = 15
    BAR = 16
    RDSB = 17


class MacArg(IntFlag):
    """``arg`` bits of MACAB/MACBG.

    VALUE selects the value phase (scale a column by a probability, accumulate per lane); without it
    the score phase (dot product of a column with the query slice). BUF selects which of the two
    score/partial-output register sets accumulates, so that a move (MVSB) of one set overlaps MACs
    into the other.
    """

    SCORE = 0
    VALUE = 1
    BUF = 2


class MoveFlag(IntFlag):
    """``col`` bits of MVSB and MVGB.

    A score MVSB (VALUE clear) moves register set BUF of its group's score registers (the set
    MACs with ``MacArg.BUF`` fill). A value MVSB (VALUE set) moves output half HALF of the value
    accumulators into the channel output accumulator; BUF must be clear (one set of value
    accumulators). An MVGB writes the probabilities into slot BUF of its group (the slot value
    MACs with ``MacArg.BUF`` read).
    """

    SCORE = 0
    BUF = 1
    VALUE = 2
    HALF = 4


class Scope(IntEnum):
    """What part of a channel a command touches. The first five nest (each contains the next:
    a pseudo-channel holds ranks, a rank (pseudo-channel, SID) holds bank groups, a group holds
    banks); UNIT is AttAcc's data-movement scope, one (SID, bank group) across both
    pseudo-channels (docs/architecture.md), named for the compatibility model."""

    CHANNEL = 0
    PSEUDO_CHANNEL = 1
    RANK = 2
    GROUP = 3
    BANK = 4
    UNIT = 5


def bit(flag: IntFlag) -> int:
    """Bit position of a single-bit flag (``bit(MoveFlag.VALUE) == 1``), for gateware that
    selects the bit of a field."""
    v = int(flag)
    if v <= 0 or v & (v - 1):
        raise ValueError(f"{flag!r} is not a single-bit flag")
    return v.bit_length() - 1


#: Packed command word, LSB first: (name, width in bits).
COMMAND_FIELDS: tuple[tuple[str, int], ...] = (
    ("op", 6),
    ("group", 5),
    ("bank", 3),
    ("col", 6),
    ("row", 20),
    ("arg", 32),
)
COMMAND_BITS = sum(w for _, w in COMMAND_FIELDS)

#: The program's fields in order: a command tuple ``(op, group, bank, col, row, arg)``.
FIELD_NAMES: tuple[str, ...] = tuple(n for n, _ in COMMAND_FIELDS)
#: NumPy type of each field of :data:`PROGRAM_DTYPE`.
_FIELD_TYPES = ("u1", "u1", "u1", "u1", "u4", "u4")


def program_dtype() -> np.dtype:
    """:data:`PROGRAM_DTYPE`, made on first use: the commands that never build a program array
    (``starc timing dense``, ``starc config``) start without importing NumPy
    (bench/bench_startup.py)."""
    dtype = globals().get("PROGRAM_DTYPE")
    if dtype is None:
        import numpy as np

        dtype = np.dtype(list(zip(FIELD_NAMES, _FIELD_TYPES, strict=True)))
        globals()["PROGRAM_DTYPE"] = dtype
    return dtype


def __getattr__(name: str) -> Any:
    if name == "PROGRAM_DTYPE":
        return program_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

ACT_OPS = frozenset({Op.ACTAB, Op.ACTBG, Op.ACTPB})
PRE_OPS = frozenset({Op.PREA, Op.PREBG, Op.PREPB})
ROW_OPS = ACT_OPS | PRE_OPS | {Op.REF}
MAC_OPS = frozenset({Op.MACAB, Op.MACBG})
DATA_OPS = frozenset({Op.RD, Op.WR, Op.WRGB, Op.MVSB, Op.MVGB, Op.SFM, Op.RDSB})

# ---- several heads per channel (docs/multihead.md) -------------------------------------------
#: Commands that act on one head's state (query, softmax-buffer part, value accumulators, output)
#: and name it; every other command leaves the head field alone.
HEAD_OPS = frozenset({Op.MACAB, Op.MACBG, Op.WRGB, Op.MVSB, Op.MVGB, Op.SFM, Op.RDSB})
#: The field that carries the head index of a :data:`HEAD_OPS` command: ``row``, which these
#: commands (they open no row) do not use otherwise, so the encoding is unchanged and a program
#: of one head (head 0) is bit for bit what it was.
HEAD_FIELD = "row"
#: Heads one channel program may name: 0 .. MAX_HEADS - 1. AttAcc's trace generator takes 1 to 8
#: heads per channel (gen_trace_attacc_bank.py; starc.golden.attacc checks the same range).
MAX_HEADS = 8


def head_of(cmd: np.void | tuple) -> int:
    """The head a command names (0 for commands outside :data:`HEAD_OPS`)."""
    v = _values(cmd)
    return int(v[4]) if Op(int(v[0])) in HEAD_OPS else 0


#: The scope of every program command: channel commands touch every bank (WRGB, SFM and RDSB
#: every group's data path), group commands the banks of ``group``, bank commands bank ``bank`` of
#: ``group``.
SCOPE: dict[Op, Scope] = {
    Op.ACTAB: Scope.CHANNEL, Op.PREA: Scope.CHANNEL, Op.MACAB: Scope.CHANNEL,
    Op.WRGB: Scope.CHANNEL, Op.SFM: Scope.CHANNEL, Op.REF: Scope.CHANNEL, Op.BAR: Scope.CHANNEL,
    Op.RDSB: Scope.CHANNEL,
    Op.ACTBG: Scope.GROUP, Op.PREBG: Scope.GROUP, Op.MACBG: Scope.GROUP, Op.MVSB: Scope.GROUP,
    Op.MVGB: Scope.GROUP,
    Op.ACTPB: Scope.BANK, Op.PREPB: Scope.BANK, Op.RD: Scope.BANK, Op.WR: Scope.BANK,
}

#: The address fields of a RD's data word (the bank array returns them with the column):
#: the command's own fields, so a RD's reply names the command it answers.
READ_ADDRESS_FIELDS: tuple[tuple[str, int], ...] = tuple(
    (n, w) for n, w in COMMAND_FIELDS if n in ("group", "bank", "col"))


def make_program(commands: list[tuple] | None = None) -> np.ndarray:
    """Build a program from tuples ``(op, group, bank, col, row, arg)``; trailing fields may go."""
    import numpy as np

    commands = commands or []
    prog = np.zeros(len(commands), dtype=program_dtype())
    for i, c in enumerate(commands):
        c = tuple(int(x) for x in c) + (0,) * (6 - len(c))
        prog[i] = c
    return prog


def program_from_commands(commands: list[tuple]) -> np.ndarray:
    """The program array of full command tuples ``(op, group, bank, col, row, arg)``."""
    import numpy as np

    return np.array(commands, dtype=program_dtype()).reshape(-1)


def encode(cmd: np.void | tuple) -> int:
    """Pack one command into its integer command word (see :data:`COMMAND_FIELDS`)."""
    word, shift = 0, 0
    for (name, width), value in zip(COMMAND_FIELDS, _values(cmd), strict=True):
        v = int(value)
        if v < 0 or v >= 1 << width:
            raise ValueError(f"command field {name}={v} does not fit in {width} bits")
        word |= v << shift
        shift += width
    return word


def decode(word: int) -> tuple[int, ...]:
    """Unpack a command word into ``(op, group, bank, col, row, arg)``."""
    out = []
    for _, width in COMMAND_FIELDS:
        out.append(word & ((1 << width) - 1))
        word >>= width
    if out[0] not in Op._value2member_map_:
        raise ValueError(f"unknown opcode {out[0]}")
    return tuple(out)


def encode_program(prog: np.ndarray) -> list[int]:
    return [encode(c) for c in prog]


def _values(cmd: np.void | tuple) -> tuple[int, ...]:
    if not isinstance(cmd, (tuple, list)):      # a record of a program array
        return tuple(int(cmd[n]) for n, _ in COMMAND_FIELDS)
    return tuple(cmd) + (0,) * (6 - len(cmd))


def format_command(cmd: np.void) -> str:
    op = Op(int(cmd["op"]))
    parts = [op.name]
    for name in ("group", "bank", "col", "row", "arg"):
        v = int(cmd[name])
        if v:
            parts.append(f"{name}={v}")
    return " ".join(parts)

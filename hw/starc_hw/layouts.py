"""``lib.data`` layouts and signature members of the formats the gateware shares with the host.

Built from :mod:`starc.isa` (:data:`~starc.isa.COMMAND_FIELDS`,
:data:`~starc.isa.READ_ADDRESS_FIELDS`), so a command word packed by :func:`starc.isa.encode` is
bit for bit the :data:`COMMAND` view the gateware sees (and the cocotb side can pack and unpack
with the same layout: ``COMMAND.const({...}).as_bits()``, ``COMMAND.from_bits(word)``).

One definition each, used by every block that carries it:

- :data:`COMMAND`, :func:`issue_layout`: a command word; an issued command;
- :func:`read_data_layout`: a RD's data word (the bank array, the channel, the host link);
- :class:`Fault`, :data:`VIOLATIONS`, :func:`status_members`: a channel's status bundle (the
  channel, the program feeder, the attention channel, the host link's status reply).
"""

from __future__ import annotations

from amaranth.lib import data, enum
from amaranth.lib.wiring import Out
from starc.isa import COMMAND_BITS, COMMAND_FIELDS, READ_ADDRESS_FIELDS
from starc.rules import RULE_BITS

__all__ = ["COMMAND", "RULE_BITS", "STATUS_NAMES", "VIOLATIONS", "Fault", "issue_layout",
           "read_data_layout", "status_members"]

#: One packed command word, LSB first (starc.isa.COMMAND_FIELDS).
COMMAND = data.StructLayout({name: width for name, width in COMMAND_FIELDS})
assert COMMAND.size == COMMAND_BITS


class Fault(enum.Enum, shape=3):
    """Why a controller stopped (the golden model raises ``ProgramError`` for the same)."""

    NONE = 0
    OPCODE = 1   #: NOP or an unknown opcode
    RANGE = 2    #: group or bank index outside the organisation
    CLOSED = 3   #: MAC / RD / WR to a bank without an open row
    OPEN = 4     #: activation of an open bank, or REF with a bank open


#: The bank array's sticky timing flags, one per checked rule (docs/rtl.md lists the distances).
VIOLATIONS = data.StructLayout({
    "tRCD": 1,   # ACT -> column command (MAC, RD, WR)
    "tRAS": 1,   # ACT -> PRE
    "tRP": 1,    # PRE -> ACT or REF
    "tRC": 1,    # ACT -> ACT or REF
    "tRTP": 1,   # MAC / RD -> PRE (tRTP_L)
    "tWR": 1,    # WR -> PRE (wr_to_pre = tCWL + tBL + tWR)
    "tCCD": 1,   # column -> column, same bank (tCCD_L)
    "tRFC": 1,   # REF -> ACT or REF
    "state": 1,  # column command to a closed bank, ACT to an open bank, REF with a bank open
})


def _check_width(what: str, width: object) -> int:
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise TypeError(f"{what} must be a positive integer, not {width!r}")
    return width


def issue_layout(cycle_width: int) -> data.StructLayout:
    """An issued command: the command word, the DRAM cycle it issued at, whether the controller
    inserted it (a refresh) rather than taking it from the program, and its binding rule id
    (``starc.rules``: the row that decided the cycle, 0 = in order)."""
    _check_width("Cycle width", cycle_width)
    return data.StructLayout({"cmd": COMMAND, "cycle": cycle_width, "inserted": 1,
                              "rule": RULE_BITS})


def read_data_layout(column_bits: int) -> data.StructLayout:
    """A RD's data: the address fields of the RD command (``group``, ``bank``, ``col``, their
    command-word widths) and the column's ``column_bits`` of data."""
    _check_width("Column bits", column_bits)
    return data.StructLayout({**dict(READ_ADDRESS_FIELDS), "data": column_bits})


#: The members of a channel's status bundle, in this order (:func:`status_members`).
STATUS_NAMES = ("cycle", "complete", "issued", "fault", "violations", "violation_count")


def status_members(cycle_width: int) -> dict[str, Out]:
    """Signature members of a channel's status (every block that reports it splices these in):
    ``cycle`` (the current DRAM cycle), ``complete`` (latest completion so far: the program's
    cycle count at the end), ``issued`` (commands issued, inserted refreshes included),
    ``fault`` (:class:`Fault`, sticky), ``violations`` (:data:`VIOLATIONS`, sticky) and
    ``violation_count`` (issued commands that broke at least one bank timing rule)."""
    _check_width("Cycle width", cycle_width)
    shapes = {"cycle": cycle_width, "complete": cycle_width, "issued": 32, "fault": Fault,
              "violations": VIOLATIONS, "violation_count": 32}
    return {name: Out(shapes[name]) for name in STATUS_NAMES}

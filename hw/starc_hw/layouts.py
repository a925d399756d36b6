"""``lib.data`` layouts of the packed formats the gateware shares with the host.

Built from :data:`starc.isa.COMMAND_FIELDS`, so a command word packed by :func:`starc.isa.encode`
is bit for bit the :data:`COMMAND` view the gateware sees (and the cocotb side can pack and unpack
with the same layout: ``COMMAND.const({...}).as_bits()``, ``COMMAND.from_bits(word)``).
"""

from __future__ import annotations

from amaranth.lib import data
from starc.isa import COMMAND_BITS, COMMAND_FIELDS

__all__ = ["COMMAND", "issue_layout"]

#: One packed command word, LSB first (starc.isa.COMMAND_FIELDS).
COMMAND = data.StructLayout({name: width for name, width in COMMAND_FIELDS})
assert COMMAND.size == COMMAND_BITS


def issue_layout(cycle_width: int) -> data.StructLayout:
    """An issued command: the command word, the DRAM cycle it issued at, and whether the
    controller inserted it (a refresh) rather than taking it from the program."""
    if isinstance(cycle_width, bool) or not isinstance(cycle_width, int) or cycle_width <= 0:
        raise TypeError(f"Cycle width must be a positive integer, not {cycle_width!r}")
    return data.StructLayout({"cmd": COMMAND, "cycle": cycle_width, "inserted": 1})

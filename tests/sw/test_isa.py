"""The command set's shared definitions: flags, scopes, encodings."""

import pytest
from starc.isa import (
    COMMAND_FIELDS,
    READ_ADDRESS_FIELDS,
    SCOPE,
    MacArg,
    MoveFlag,
    Op,
    Scope,
    bit,
)


def test_every_program_command_has_a_scope():
    assert set(SCOPE) == set(Op) - {Op.NOP}
    # the scope is what the command's fields address: channel commands use neither group nor
    # bank, group commands the group, bank commands both (docs/commands.md, encoding table)
    assert {o for o, s in SCOPE.items() if s == Scope.BANK} == {Op.ACTPB, Op.PREPB, Op.RD, Op.WR}
    assert {o for o, s in SCOPE.items() if s == Scope.GROUP} == {
        Op.ACTBG, Op.PREBG, Op.MACBG, Op.MVSB, Op.MVGB}


def test_move_flags_and_bit_positions():
    assert int(MoveFlag.VALUE | MoveFlag.HALF) == 6
    assert [bit(f) for f in (MoveFlag.BUF, MoveFlag.VALUE, MoveFlag.HALF)] == [0, 1, 2]
    assert [bit(f) for f in (MacArg.VALUE, MacArg.BUF)] == [0, 1]
    with pytest.raises(ValueError, match="not a single-bit flag"):
        bit(MoveFlag.VALUE | MoveFlag.HALF)


def test_read_address_fields_are_the_command_fields():
    widths = dict(COMMAND_FIELDS)
    assert tuple((n, widths[n]) for n in ("group", "bank", "col")) == READ_ADDRESS_FIELDS

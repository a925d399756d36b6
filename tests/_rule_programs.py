"""Directed programs that make each row of the rules table bind.

``rule_programs(overrides)`` returns, per binding rule id, the preset overrides and a program whose
*last* command's issue cycle is decided by that row (or by in-order issue, id 0). Each program is
written from docs/commands.md and the default preset's distances, not from the table: the test
that the golden model reports the expected id is what ties the two together. The organisation
comes from ``overrides`` (the RTL tiers run the same programs on their small organisations); rows
that need more of the channel than the organisation has (a second rank, pseudo-channel, or
eight groups) are left out.
"""

from __future__ import annotations

from typing import Any

from starc import config
from starc.isa import MacArg, MoveFlag, Op

Program = list[tuple[int, ...]]


def rule_programs(overrides: dict[str, Any] | None = None
                  ) -> dict[int, tuple[dict[str, Any], Program]]:
    base = dict(overrides or {})
    cfg = config.load(overrides=base)
    org = cfg.org
    G = org.groups_per_channel
    same_rank = org.group_of(0, 0, 1) if org.bank_groups > 1 else None
    other_rank = org.group_of(0, 1, 0) if org.sids > 1 else None
    other_pc = org.group_of(1, 0, 0) if org.pseudo_channels > 1 else None
    b1 = 1 if org.banks_per_group > 1 else None
    V = int(MacArg.VALUE)
    MV_VALUE = int(MoveFlag.VALUE)
    score_mac = (Op.MACAB, 0, 0, 0)
    out: dict[int, tuple[dict[str, Any], Program]] = {}

    def add(rid: int, cmds: Program, **more: Any) -> None:
        out[rid] = ({**base, **more}, cmds)

    acts_in_rank0 = [(Op.ACTPB, g, b, 0, 0) for g in range(org.bank_groups)
                     for b in range(org.banks_per_group)]
    add(0, [(Op.ACTAB,), (Op.WRGB,)])                                   # in order
    if other_rank is not None:
        add(1, [(Op.ACTBG, 0), (Op.ACTBG, other_rank)])                 # row bus
    slow_trc = {"timing.tRC": cfg.timing.tRAS + cfg.timing.tRP + 6}
    add(2, [(Op.ACTPB, 0, 0), (Op.PREPB, 0, 0), (Op.ACTPB, 0, 0)], **slow_trc)
    add(3, [(Op.ACTPB, 0, 0), (Op.PREPB, 0, 0), (Op.ACTPB, 0, 0)])
    add(4, [(Op.REF,), (Op.ACTAB,)])
    add(5, [(Op.ACTAB,), (Op.PREA,)])
    add(6, [(Op.ACTAB,)] + [(Op.MACAB, 0, 0, c) for c in range(5)] + [(Op.PREA,)])
    add(7, [(Op.ACTPB, 0, 0), (Op.WR, 0, 0), (Op.PREPB, 0, 0)])
    add(8, [(Op.ACTAB,), score_mac])
    add(9, [(Op.ACTAB,), (Op.PREA,), (Op.REF,)])
    add(10, [(Op.ACTAB,), (Op.PREA,), (Op.REF,)], **slow_trc)
    add(11, [(Op.REF,), (Op.REF,)])
    if b1 is not None:
        add(12, [(Op.ACTPB, 0, 0), (Op.ACTPB, 0, b1)])
    if same_rank is not None:
        add(13, [(Op.ACTPB, 0, 0), (Op.ACTPB, same_rank, 0)],
            **{"timing.tRRD_S": cfg.timing.row_cmd_cycles + 1})
    if len(acts_in_rank0) >= 5:
        add(14, acts_in_rank0[:5])
    else:
        # fewer than five banks in a rank: re-open the first one under a long window
        add(14, acts_in_rank0 + [(Op.PREPB, 0, 0), (Op.ACTPB, 0, 0)],
            **{"timing.tFAW": 4 * cfg.timing.tRC})
    add(15, [(Op.ACTAB,), score_mac, score_mac])
    add(16, [(Op.ACTAB,), (Op.MACBG, 0), score_mac])
    if G > 1:
        add(17, [(Op.ACTAB,), (Op.MACBG, 0), (Op.MACBG, 1)])
    add(18, [(Op.ACTAB,), (Op.MACBG, 0), (Op.MACBG, 0)])
    add(19, [(Op.ACTBG, 0), (Op.RD, 0, 0, 1), (Op.MACBG, 0)])
    add(20, [(Op.ACTAB,), score_mac, (Op.RD, 0, 0)])
    add(21, [(Op.ACTAB,), (Op.MACBG, 0), (Op.RD, 0, 0)])
    if b1 is not None:
        add(22, [(Op.ACTBG, 0), (Op.WR, 0, 0), (Op.RD, 0, b1)])
        add(24, [(Op.ACTBG, 0), (Op.RD, 0, 0), (Op.WR, 0, b1)])
    if same_rank is not None:
        add(23, [(Op.ACTBG, 0), (Op.ACTBG, same_rank), (Op.WR, 0, 0), (Op.RD, same_rank, 0)])
    add(25, [(Op.WRGB,), (Op.WRGB,)])
    if same_rank is not None:
        add(26, [(Op.MVSB, 0, 0, MV_VALUE), (Op.MVSB, same_rank, 0, MV_VALUE)])
    if other_rank is not None:
        add(27, [(Op.MVSB, 0, 0, MV_VALUE), (Op.MVSB, other_rank, 0, MV_VALUE)])
    if other_pc is not None:
        add(29, [(Op.MVSB, 0, 0, 0, 0, 1), (Op.MVSB, other_pc, 0, 0, 0, 1)])
        add(30, [(Op.MVGB, 0), (Op.MVGB, other_pc)])
    # the read-back of 100 scores holds the data buses for rdsb_transfer(100) > tCCD_L
    add(28, [(Op.RDSB, 0, 0, 0, 0, 100), (Op.MVSB, 0, 0, MV_VALUE)])
    # five query chunks after the activation: the last arrives after tRCD
    add(31, [(Op.ACTAB,)] + [(Op.WRGB, 0, 0, c) for c in range(5)] + [score_mac])
    # probability moves spaced move_spacing (different pseudo-channels when there are two)
    mvgbs = [(Op.MVGB, g % G) for g in range(10)]
    add(32, [(Op.ACTAB,)] + mvgbs + [(Op.MACAB, 0, 0, 0, 0, V)])
    add(33, [(Op.ACTAB,), score_mac, (Op.MVSB, 0, 0, 0, 0, 1)])
    add(34, [(Op.MVSB, 0, 0, MV_VALUE), (Op.SFM,)],
        **{"pu.mv_cycles": cfg.timing.tCCD_L + 2})
    add(35, [(Op.SFM,), (Op.SFM,)])
    add(36, [(Op.SFM, 0, 0, 0, 0, 16), (Op.MVGB, 0)])
    add(37, [(Op.ACTAB,), (Op.BAR,)])
    return out

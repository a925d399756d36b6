"""Reference program generators: dense attention in the AttAcc bank-level layout, stream-at-peak.

The dense program of one KV head on one channel (docs/commands.md, functional semantics):

1. WRGB the d/16 query chunks.
2. Score phase, per row r of keys: ACTAB r, 32 score MACABs into register set r % 2; the score
   MVSBs of row r - 1 interleave with the MACs of row r (one after each of the first MACs) so data
   movement overlaps compute, as AttAcc's trace does; PREA.
3. SFM over the L valid entries.
4. Value phase, per row r of values: the MVGBs of row r + 1 interleave with the MACs of row r
   (the probabilities of row 0 are moved before the first activation); 32 value MACABs reading
   probability slot r % 2; PREA.
5. Value MVSBs: every (group, half).

Several heads (``heads`` > 1, docs/multihead.md): each head has its own key and value rows and
query; the phases run in the overlapped order S_0, S_1, V_0, S_2, V_1, ..., V_{H-1}, with every
move placed under another phase's MACs by :func:`starc.golden.multihead.emit` (``compact``
edges). One head gives the program above, command for command.

Token t of a dense cache is stored at row ``t // (G * tpgr)``, group ``(t // tpgr) % G``, set
``(t % tpgr) // 16``, slot ``t % 16`` (tpgr = tokens per group row):
:func:`starc.address.dense_token_address`, re-exported here.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from starc.address import dense_token_address
from starc.config import Config
from starc.isa import MAX_HEADS, MacArg, MoveFlag, Op, program_from_commands

if TYPE_CHECKING:
    import numpy as np

    from starc.golden.multihead import HeadWork, Round

#: A command tuple (op, group, bank, col, row, arg), as ``starc.golden.multihead.Cmd``.
Cmd = tuple[int, int, int, int, int, int]

__all__ = ["command_counts", "dense_commands", "dense_program", "dense_rounds",
           "dense_token_address", "stream_program"]


class _Builder:
    def __init__(self) -> None:
        self.rows: list[Cmd] = []

    def add(self, op: Op, group: int = 0, bank: int = 0, col: int = 0, row: int = 0,
            arg: int = 0) -> None:
        self.rows.append((int(op), group, bank, col, row, arg))

    def build(self) -> np.ndarray:
        return program_from_commands(self.rows)


def _masks(cfg: Config, head_dim: int, L: int, row: int) -> list[int]:
    G = cfg.org.groups_per_channel
    tpgr = cfg.tokens_per_group_row(head_dim)
    out = []
    for g in range(G):
        first = (row * G + g) * tpgr
        valid = max(0, min(tpgr, L - first))
        out.append((1 << valid) - 1)
    return out


def dense_program(cfg: Config, L: int, head_dim: int, *, value_row_base: int | None = None,
                  query_data_index: int = 0, heads: int = 1) -> np.ndarray:
    """The program array of :func:`dense_commands` (same arguments)."""
    return program_from_commands(dense_commands(cfg, L, head_dim, value_row_base=value_row_base,
                                                query_data_index=query_data_index, heads=heads))


def dense_commands(cfg: Config, L: int, head_dim: int, *, value_row_base: int | None = None,
                   query_data_index: int = 0, heads: int = 1) -> list[Cmd]:
    """Dense attention over L tokens of one KV head on one channel (see module docstring), as
    command tuples ``(op, group, bank, col, row, arg)`` (what :func:`starc.golden.timing.totals`
    and :func:`starc.golden.energy.account` take without building an array).

    Key rows are 0 .. R-1, value rows ``value_row_base`` .. (default R). WRGB chunk c carries
    ``arg = query_data_index + c`` (the row of the caller's ``wdata`` table).

    With ``heads`` = H > 1, H KV heads of L tokens each in the overlapped order: head k's key
    rows are ``2 R k ..``, its value rows ``2 R k + R ..``, its query chunk c is ``wdata`` row
    ``query_data_index + k d / 16 + c``, and its commands name head k (docs/multihead.md).
    """
    if L <= 0:
        raise ValueError(f"context length must be positive, not {L}")
    if isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= MAX_HEADS:
        raise ValueError(f"heads must be an integer in 1..{MAX_HEADS}, not {heads!r}")
    if heads > 1:
        return _dense_heads(cfg, L, head_dim, heads, query_data_index, value_row_base)
    org = cfg.org
    G = org.groups_per_channel
    C = org.columns_per_row
    tpgr = cfg.tokens_per_group_row(head_dim)
    n_rows = -(-L // (G * tpgr))
    vbase = n_rows if value_row_base is None else value_row_base
    if vbase + n_rows > org.rows_per_bank:
        raise ValueError(f"L={L} needs {2 * n_rows} rows per bank; the preset has "
                         f"{org.rows_per_bank}")
    bppu = cfg.pu.banks_per_pu
    # command tuples of plain ints, the MAC columns of a row built once (this runs for every
    # length `starc timing dense` reports, at start-up: bench/bench_startup.py)
    ACTAB, MACAB, PREA, MVSB, MVGB = (int(o) for o in (Op.ACTAB, Op.MACAB, Op.PREA, Op.MVSB,
                                                        Op.MVGB))
    BUF, VALUE = int(MacArg.BUF), int(MacArg.VALUE)
    rows: list[Cmd] = []
    add = rows.append
    for c in range(head_dim // org.elements_per_column):
        add((int(Op.WRGB), 0, 0, c, 0, query_data_index + c))

    def mac_columns(arg: int) -> list[list[Cmd]]:
        # per column, the MACs of the banks a PU serves (a shared PU works on the banks with
        # b % bppu == k)
        return [[(MACAB, 0, k, c, 0, arg) for k in range(bppu)] for c in range(C)]

    def row_of_macs(columns: list[list[Cmd]], pending: list[Cmd]) -> list[Cmd]:
        # one pending move after each column's MACs; returns the moves left over
        moves = iter(pending)
        for macs in columns:
            rows.extend(macs)
            move = next(moves, None)
            if move is not None:
                add(move)
        return list(moves)

    def mvsb_score(row: int) -> list[Cmd]:
        masks = _masks(cfg, head_dim, L, row)
        flags = int(MoveFlag.BUF) if row & 1 else 0
        return [(MVSB, g, 0, flags, 0, masks[g]) for g in range(G)]

    score = [mac_columns(0), mac_columns(BUF)]
    pending: list[Cmd] = []
    for r in range(n_rows):
        add((ACTAB, 0, 0, 0, r, 0))
        pending = row_of_macs(score[r & 1], pending)       # left-over moves wait for the next row
        add((PREA, 0, 0, 0, 0, 0))
        pending.extend(mvsb_score(r))
    rows.extend(pending)
    add((int(Op.SFM), 0, 0, 0, 0, L))
    rows.extend((MVGB, g, 0, 0, 0, 0) for g in range(G))
    value = [mac_columns(VALUE), mac_columns(VALUE | BUF)]
    slot = int(MoveFlag.BUF)
    for r in range(n_rows):
        add((ACTAB, 0, 0, 0, vbase + r, 0))
        pending = ([(MVGB, g, 0, slot if (r + 1) & 1 else 0, 0, 0) for g in range(G)]
                   if r + 1 < n_rows else [])
        rows.extend(row_of_macs(value[r & 1], pending))   # left-over moves before the PREA
        add((PREA, 0, 0, 0, 0, 0))
    for g in range(G):
        for h in range(2):
            add((MVSB, g, 0, int(MoveFlag.VALUE | (MoveFlag.HALF if h else 0)), 0, 0))
    return rows


def stream_program(cfg: Config, n_rows: int) -> np.ndarray:
    """Stream whole rows at peak: ACTAB, every column MAC'd, PREA; nothing else."""
    b = _Builder()
    for r in range(n_rows):
        b.add(Op.ACTAB, row=r % cfg.org.rows_per_bank)
        for c in range(cfg.org.columns_per_row):
            for k in range(cfg.pu.banks_per_pu):
                b.add(Op.MACAB, bank=k, col=c)
        b.add(Op.PREA)
    return b.build()


def command_counts(prog: np.ndarray, cfg: Config, *, per_pseudo_channel: bool = False
                   ) -> dict[str, int]:
    """Commands by opcode name. With ``per_pseudo_channel``, the commands pseudo-channel 0 sees:
    channel-scope commands count once, group-scope ones only when their group is in PC 0."""
    import numpy as np

    ops = prog["op"]
    if per_pseudo_channel:
        group_scoped = np.isin(ops, [int(o) for o in (Op.ACTBG, Op.ACTPB, Op.PREBG, Op.PREPB,
                                                      Op.MACBG, Op.RD, Op.WR, Op.MVSB, Op.MVGB)])
        gpp = cfg.org.sids * cfg.org.bank_groups
        keep = ~group_scoped | (prog["group"] < gpp)
        ops = ops[keep]
    c = Counter(ops.tolist())
    return {Op(k).name: int(v) for k, v in sorted(c.items())}


def dense_rounds(cfg: Config, L: int, head_dim: int, head: int, *, key_row_base: int,
                 value_row_base: int) -> tuple[list[Round], list[Round]]:
    """The score and value rounds of one head's dense attention (all-bank rows, every column),
    for :func:`starc.golden.multihead.emit`."""
    from starc.golden.multihead import Pass, Round  # several heads only (start-up)

    org = cfg.org
    G, C = org.groups_per_channel, org.columns_per_row
    n_rows = -(-L // (G * cfg.tokens_per_group_row(head_dim)))
    bppu = cfg.pu.banks_per_pu
    slots = [[(int(Op.MACAB), 0, k, c, 0, 0) for k in range(bppu)] for c in range(C)]
    dt = [bppu * cfg.timing.tCCD_AB] * C
    groups = list(range(G))

    def rnd(row: int, value: bool, masks: list[int]) -> Round:
        return Round([(int(Op.ACTAB), 0, 0, 0, row, 0)],
                     [Pass(head, value, slots, dt, groups, masks)],
                     [(int(Op.PREA), 0, 0, 0, 0, 0)])

    score = [rnd(key_row_base + r, False, _masks(cfg, head_dim, L, r)) for r in range(n_rows)]
    value = [rnd(value_row_base + r, True, [0] * G) for r in range(n_rows)]
    return score, value


def _dense_heads(cfg: Config, L: int, head_dim: int, heads: int, query_data_index: int,
                 value_row_base: int | None) -> list[Cmd]:
    if value_row_base is not None:
        raise ValueError("value_row_base places one head's values; with several heads each "
                         "head's rows follow the previous head's (leave it unset)")
    org = cfg.org
    from starc.golden.multihead import HeadWork, emit_commands, overlapped_order

    G = org.groups_per_channel
    R = -(-L // (G * cfg.tokens_per_group_row(head_dim)))
    if 2 * R * heads > org.rows_per_bank:
        raise ValueError(f"{heads} heads of L={L} need {2 * R * heads} rows per bank; the preset "
                         f"has {org.rows_per_bank}")
    chunks = head_dim // org.elements_per_column
    phases: dict[tuple[int, bool], list[Round]] = {}
    work: dict[int, HeadWork] = {}
    for h in range(heads):
        score, value = dense_rounds(cfg, L, head_dim, h, key_row_base=2 * R * h,
                                    value_row_base=2 * R * h + R)
        phases[(h, False)], phases[(h, True)] = score, value
        work[h] = HeadWork(query=[query_data_index + h * chunks + c for c in range(chunks)],
                           n_valid=L, out_groups=list(range(G)))
    rounds = [rd for phase in overlapped_order(heads) for rd in phases[phase]]
    return emit_commands(rounds, work, cfg, compact=True)

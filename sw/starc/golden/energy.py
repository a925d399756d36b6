"""Energy of a channel program, with a breakdown, in two conventions.

- ``attacc_pj``: AttAcc's convention (src/config.py, PIMType.BA): every byte a PU reads costs
  (ACT/PRE + cell RD) = (0.11 + 0.44) pJ/bit, so activation is folded into a per-byte rate and a
  half-used row costs what its used bytes cost.
- ``total_pj``: activation charged explicitly per activated bank row (act_pj_per_bit x row bits,
  about 0.9 nJ for a 1 KiB row), plus cell RD/WR per byte actually read. This is the figure that
  shows what row-aligned clustering changes.

Both add the same MAC, data-movement, buffer and softmax terms. A selection read-back (RDSB)
reads its FP32 scores from the softmax buffer (SRAM) and sends them over the interposer I/O to the
host (``host_io``). Per-event constants come from the
preset's ``[energy]`` section (AttAcc src/config.py citing FGDRAM, MICRO 2017). Refresh energy is
not included: no sourced per-refresh constant exists in the presets (stated in docs/presets.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starc.config import Config
from starc.isa import MoveFlag, Op

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Energy", "EventCounts", "account", "count_events"]


@dataclass(frozen=True)
class EventCounts:
    bank_activations: int   # bank rows opened
    bank_column_reads: int  # 32 B column reads by PUs (MAC) or the host (RD)
    bank_column_writes: int
    mac_lane_ops: int       # FP16 MACs (lanes x bank column accesses by MACs)
    moved_bytes: int        # bytes between bank PUs and the buffer die (MVSB/MVGB/WRGB)
    host_bytes: int         # RD/WR bytes crossing the interposer
    softmax_elements: int
    refreshes: int
    readback_bytes: int = 0  # RDSB: scores from the softmax buffer to the host


@dataclass
class Energy:
    total_pj: float
    attacc_pj: float
    breakdown: dict[str, float] = field(default_factory=dict)
    attacc_breakdown: dict[str, float] = field(default_factory=dict)
    counts: EventCounts | None = None


def _reductions(prog: np.ndarray | Sequence[tuple]) -> tuple[dict[int, int], int, int, int]:
    """Of ``prog``: commands per opcode, value MVSBs, the SFMs' entries and the RDSBs' scores.
    Counted with NumPy from an array (fast on long programs), in Python from command tuples (no
    NumPy import: ``starc timing dense``); tests/sw/test_command_tuples.py checks both alike."""
    mvsb, value, sfm, rdsb = int(Op.MVSB), int(MoveFlag.VALUE), int(Op.SFM), int(Op.RDSB)
    if hasattr(prog, "dtype"):
        import numpy as np

        ops = prog["op"]
        count = {int(o): int(c) for o, c in enumerate(np.bincount(ops)) if c}
        args = prog["arg"].astype(np.int64)
        return (count, int(np.count_nonzero((ops == mvsb) & ((prog["col"] & value) != 0))),
                int(args[ops == sfm].sum()), int(args[ops == rdsb].sum()))
    count = Counter(c[0] for c in prog)
    return (count, sum(1 for c in prog if c[0] == mvsb and c[3] & value),
            sum(c[5] for c in prog if c[0] == sfm), sum(c[5] for c in prog if c[0] == rdsb))


def count_events(prog: np.ndarray | Sequence[tuple], cfg: Config,
                 head_dim: int = 128) -> EventCounts:
    """The events of ``prog`` (an array, or full command tuples ``(op, group, bank, col, row,
    arg)``) that :func:`account` charges."""
    org, pu = cfg.org, cfg.pu
    count, value_moves, sfm, readback_scores = _reductions(prog)
    n = {o: count.get(int(o), 0) for o in Op}
    nb_ch, bpg = org.banks_per_channel, org.banks_per_group
    acts = n[Op.ACTAB] * nb_ch + n[Op.ACTBG] * bpg + n[Op.ACTPB]
    mac_cols = n[Op.MACAB] * nb_ch // pu.banks_per_pu + n[Op.MACBG] * bpg // pu.banks_per_pu
    reads = mac_cols + n[Op.RD]
    colb = org.column_bytes
    sets = org.banks_per_group // cfg.banks_per_token(head_dim)
    # score move: sets x 16 FP32 scores; value move: bpg x 16 FP32 partial outputs;
    # MVGB: sets x 16 FP16 probabilities to every bank of the group; WRGB: one column to every bank.
    score_moves = n[Op.MVSB] - value_moves
    moved = (score_moves * sets * 16 * 4 + value_moves * bpg * 16 * 4
             + n[Op.MVGB] * sets * 16 * 2 * bpg + n[Op.WRGB] * colb * nb_ch)
    readback = 4 * readback_scores
    return EventCounts(
        bank_activations=acts, bank_column_reads=reads, bank_column_writes=n[Op.WR],
        mac_lane_ops=mac_cols * pu.lanes, moved_bytes=moved,
        host_bytes=(n[Op.RD] + n[Op.WR]) * colb, softmax_elements=sfm, refreshes=n[Op.REF],
        readback_bytes=readback)


def account(prog: np.ndarray | Sequence[tuple], cfg: Config, head_dim: int = 128) -> Energy:
    """Energy (pJ) of one channel program (an array or command tuples); see the module
    docstring for the two conventions."""
    e, org = cfg.energy, cfg.org
    c = count_events(prog, cfg, head_dim)
    row_bits = org.row_bytes * 8
    col_bits = org.column_bytes * 8
    io_path = e.bg_mux_pj_per_bit + e.gio_pj_per_bit + e.tsv_pj_per_bit  # bank PU <-> buffer die
    common = {
        "mac": c.mac_lane_ops * e.mac_pj,
        "data_movement": c.moved_bytes * 8 * io_path + c.moved_bytes * e.sram_pj_per_byte,
        "host_io": c.host_bytes * 8 * (io_path + e.io_pj_per_bit)
        + c.readback_bytes * (8 * e.io_pj_per_bit + e.sram_pj_per_byte),
        "softmax": c.softmax_elements * e.sfm_ops_per_element * e.mac_pj,
    }
    explicit = {
        "activation": c.bank_activations * row_bits * e.act_pj_per_bit,
        "column_access": (c.bank_column_reads + c.bank_column_writes) * col_bits
        * e.cell_rw_pj_per_bit,
        **common,
    }
    attacc = {
        "activation": 0.0,
        "column_access": (c.bank_column_reads + c.bank_column_writes) * col_bits
        * (e.act_pj_per_bit + e.cell_rw_pj_per_bit),
        **common,
    }
    return Energy(total_pj=float(sum(explicit.values())), attacc_pj=float(sum(attacc.values())),
                  breakdown=explicit, attacc_breakdown=attacc, counts=c)

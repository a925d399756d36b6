"""Address math of the AttAcc bank-level layout (docs/commands.md, "Functional semantics").

Vocabulary used by the compiler and the planner:

- *slice*: 16 token slots of one token set in one group row (``cfg.tokens_per_bank_row()``);
  a token of head size ``d`` spans ``bpt = d / 32`` banks, so a slice is ``bpt`` bank rows.
- *block*: one group row, ``tpgr = cfg.tokens_per_group_row(d)`` token slots = ``sets`` slices
  side by side (``sets = banks_per_group / bpt``; 1 for d = 128, 2 for d = 64). A block is the unit
  one ACTBG opens, so it is the unit of placement and of activation accounting.
- Slot ``i`` of a block (0 .. tpgr-1) is token set ``j = i // 16``, slot ``s = i % 16``. In bank
  ``b = j * bpt + h`` it occupies columns ``2s`` (dims ``32h + [0, 16)``) and ``2s + 1``
  (dims ``32h + [16, 32)``). Keys and values use the same layout in separate rows.
"""

from __future__ import annotations

import math

import numpy as np

from starc.config import Config

__all__ = [
    "SLICE",
    "Geometry",
    "blocks_to_banks",
    "banks_to_blocks",
    "rows_needed_upper_bound",
]

SLICE = 16  # token slots per bank row slice (2 columns of 16 lanes per token)


class Geometry:
    """The numbers the compiler needs for one (preset, head size)."""

    def __init__(self, cfg: Config, head_dim: int) -> None:
        self.cfg = cfg
        self.d = head_dim
        self.bpt = cfg.banks_per_token(head_dim)
        self.bpg = cfg.org.banks_per_group
        self.sets = self.bpg // self.bpt
        self.tpgr = cfg.tokens_per_group_row(head_dim)
        self.G = cfg.org.groups_per_channel
        self.cols = cfg.org.columns_per_row
        self.lanes = cfg.org.elements_per_column
        if cfg.tokens_per_bank_row() != SLICE:
            raise ValueError(f"preset {cfg.name!r}: {cfg.tokens_per_bank_row()} tokens per bank "
                             f"row; the layout assumes {SLICE} (32 columns of 16 lanes)")

    def __repr__(self) -> str:
        return f"Geometry(d={self.d}, bpt={self.bpt}, sets={self.sets}, tpgr={self.tpgr})"


def blocks_to_banks(x: np.ndarray, geo: Geometry) -> np.ndarray:
    """Tokens ``[n_blocks, tpgr, d]`` (uint16 FP16 bits) -> bank rows
    ``[n_blocks, banks_per_group, columns, lanes]``."""
    nb = x.shape[0]
    L = geo.lanes
    # [nb, sets, 16 slots, bpt, 2 halves, lanes] -> [nb, sets, bpt, 16, 2, lanes]
    y = x.reshape(nb, geo.sets, SLICE, geo.bpt, 2, L).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(y).reshape(nb, geo.bpg, 2 * SLICE, L)


def banks_to_blocks(rows: np.ndarray, geo: Geometry) -> np.ndarray:
    """Inverse of :func:`blocks_to_banks`."""
    nb = rows.shape[0]
    L = geo.lanes
    y = rows.reshape(nb, geo.sets, geo.bpt, SLICE, 2, L).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(y).reshape(nb, geo.tpgr, geo.d)


def region_rows_upper_bound(cfg: Config, head_dim: int, T: int) -> int:
    """Rows per bank one (layer, KV head) region may need in any mode: keys and values of every
    block (plus one padding block and a 128-token recent buffer) and the centroid rows."""
    geo = Geometry(cfg, head_dim)
    blocks = math.ceil(T / geo.tpgr) + 1 + math.ceil(128 / geo.tpgr)
    krows = math.ceil(blocks / geo.G) + 1
    centroids = math.ceil(T / SLICE) + 8  # densest mode: one centroid per 16 tokens
    crows = math.ceil(math.ceil(centroids / geo.tpgr) / geo.G)
    return 2 * krows + crows


def rows_needed_upper_bound(cfg: Config, head_dim: int, T: int, n_layers: int,
                            n_kv_heads: int) -> int:
    """Rows per bank on the busiest channel (KV head h on channel h mod channels)."""
    per_channel = math.ceil(n_kv_heads / cfg.org.channels) * n_layers
    return per_channel * region_rows_upper_bound(cfg, head_dim, T)

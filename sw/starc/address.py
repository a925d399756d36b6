"""Address arithmetic of the PIM memory: the one module the compiler, the planner and the KV
loader read (docs/architecture.md, docs/commands.md "Functional semantics").

It depends on the preset (:mod:`starc.config`) alone, so nothing below the compiler imports the
compiler to size a layout.

Scopes of one channel (``org`` is a :class:`starc.config.Organisation`):

- *group* = (pseudo-channel, SID, bank group): ``group = (pc * sids + sid) * bank_groups + bg``;
- *rank* = (pseudo-channel, SID) = ``group // bank_groups`` (the tRRD / tFAW scope);
- *unit* = (SID, bank group) = ``group mod (sids * bank_groups)`` (HBM3 broadcasts data-movement
  commands to both pseudo-channels of a unit).

The AttAcc bank-level layout of one head of size ``d``:

- a token spans ``bpt = d / 32`` banks of one group (:func:`banks_per_token`); a group of
  ``banks_per_group`` banks holds ``sets = banks_per_group / bpt`` token sets side by side;
- *slice*: 16 token slots of one token set in one group row (:data:`SLICE`,
  :func:`tokens_per_bank_row`); a slice is ``bpt`` bank rows;
- *block*: one group row, ``tpgr = sets x 16`` token slots (:func:`tokens_per_group_row`), the
  unit one ACTBG opens, so the unit of placement and of activation accounting;
- slot ``i`` of a block is token set ``j = i // 16``, slot ``s = i % 16``; in bank
  ``b = j * bpt + h`` it occupies columns ``2s`` (dims ``32h + [0, 16)``) and ``2s + 1`` (dims
  ``32h + [16, 32)``). Keys and values use the same layout in separate rows;
- the valid-slot mask of a score move has bit ``16 j + s`` for slot ``(j, s)`` (:func:`lane_bit`).

Blocks dealt *round-robin* (the dense layout, recent buffers, selection metadata) put block ``b``
in group ``b mod G`` at row ``b // G`` (:func:`round_robin`). Token ``t`` of a dense cache is
stream slot ``t`` (:func:`dense_token_address`).

A (layer, KV head) *region* of a channel holds, from its ``row_base``: ``n_krows`` key rows, as
many value rows (the value of the key at ``(g, r)`` is at ``(g, r + n_krows)``), then ``n_crows``
rows of selection metadata (STARC centroids, or Quest's page bounds), ``tpgr`` vectors per block,
dealt round-robin (:func:`meta_rows`, :func:`meta_address`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

# NumPy is imported inside the functions that use it: the preset's scalar rules (config delegates
# here) then load without it, which keeps `starc config show` fast (issue 13 item 6).
if TYPE_CHECKING:  # pragma: no cover - typing only (config imports this module lazily)
    import numpy as np

    from starc.config import Config, Organisation

__all__ = [
    "MOVE_MASK_SLOTS",
    "QUEST_PAGE",
    "SLICE",
    "Geometry",
    "banks_per_token",
    "banks_to_blocks",
    "blocks_to_banks",
    "check_geometry",
    "legal_banks_per_group",
    "legal_head_dims",
    "dense_token_address",
    "group_of",
    "lane_bit",
    "meta_address",
    "meta_rows",
    "quest_bound_index",
    "quest_meta_rows",
    "quest_meta_vectors",
    "rank_of_group",
    "region_rows_upper_bound",
    "round_robin",
    "rows_needed_upper_bound",
    "slot_fields",
    "split_group",
    "tokens_per_bank_row",
    "tokens_per_group_row",
    "unit_of_group",
]

SLICE = 16  #: token slots per bank-row slice (2 columns of 16 lanes per token)
QUEST_PAGE = 16  #: Quest's page: 16 positional tokens, one min and one max vector each


# ---- channel scopes ------------------------------------------------------------------------------
def group_of(org: Organisation, pc: int, sid: int, bg: int) -> int:
    return (pc * org.sids + sid) * org.bank_groups + bg


def split_group(org: Organisation, group: int) -> tuple[int, int, int]:
    """(pseudo-channel, SID, bank group) of a group index."""
    bg = group % org.bank_groups
    rank = group // org.bank_groups
    return rank // org.sids, rank % org.sids, bg


def rank_of_group(org: Organisation, group: int) -> int:
    return group // org.bank_groups


def unit_of_group(org: Organisation, group: int) -> int:
    return group % (org.sids * org.bank_groups)


# ---- the bank-level layout -------------------------------------------------------------------
def banks_per_token(org: Organisation, head_dim: int) -> int:
    """AttAcc bank-level layout: a bank row holds 2-column (32-element) slices of tokens."""
    from starc.config import ConfigError

    slice_elems = 2 * org.elements_per_column
    if head_dim <= 0 or head_dim % slice_elems:
        raise ConfigError(
            f"head_dim {head_dim} must be a positive multiple of {slice_elems} (two column "
            f"accesses of {org.elements_per_column} FP16 lanes per bank slice)")
    b = head_dim // slice_elems
    if b > org.banks_per_group or org.banks_per_group % b:
        raise ConfigError(
            f"head_dim {head_dim} needs {b} banks per token, which must divide "
            f"banks_per_group ({org.banks_per_group}); this preset cannot hold it "
            f"({_legal(org, head_dim)})")
    return b


def _pow2_upto(n: int) -> list[int]:
    return [1 << i for i in range(n.bit_length()) if 1 << i <= n]


def legal_banks_per_group(org: Organisation, head_dim: int) -> list[int]:
    """organisation.banks_per_group values (powers of two up to the command word's 8) whose
    layout holds ``head_dim``: d / 32 banks per token divide it and a group row holds at most
    :data:`MOVE_MASK_SLOTS` token slots (one score move's mask)."""
    slice_elems = 2 * org.elements_per_column
    if head_dim <= 0 or head_dim % slice_elems:
        return []
    b = head_dim // slice_elems
    return [g for g in _pow2_upto(8) if g % b == 0 and g >= b
            and tokens_per_bank_row(org) * (g // b) <= MOVE_MASK_SLOTS]


def legal_head_dims(org: Organisation) -> list[int]:
    """Head dimensions the layout of ``org`` holds (the score move's mask included)."""
    slice_elems = 2 * org.elements_per_column
    return [b * slice_elems for b in _pow2_upto(org.banks_per_group)
            if org.banks_per_group % b == 0
            and tokens_per_bank_row(org) * (org.banks_per_group // b) <= MOVE_MASK_SLOTS]


def _legal(org: Organisation, head_dim: int) -> str:
    """``legal values: ...`` for an error message about ``head_dim`` on ``org``."""
    bpg = legal_banks_per_group(org, head_dim)
    dims = legal_head_dims(org)
    parts = []
    if bpg:
        parts.append(f"at head_dim {head_dim}, organisation.banks_per_group may be "
                     f"{', '.join(map(str, bpg))}")
    if dims:
        parts.append(f"at banks_per_group {org.banks_per_group}, head_dim may be "
                     f"{', '.join(map(str, dims))}")
    return "; ".join(parts) or "no banks_per_group up to 8 holds it"


def tokens_per_bank_row(org: Organisation) -> int:
    return org.columns_per_row // 2


def tokens_per_group_row(org: Organisation, head_dim: int) -> int:
    return tokens_per_bank_row(org) * (org.banks_per_group // banks_per_token(org, head_dim))


class Geometry:
    """The layout numbers of one (preset, head size): ``bpt``, ``sets``, ``tpgr``, ``G``..."""

    def __init__(self, cfg: Config, head_dim: int) -> None:
        org = cfg.org
        self.cfg = cfg
        self.d = head_dim
        self.bpt = banks_per_token(org, head_dim)
        self.bpg = org.banks_per_group
        self.sets = self.bpg // self.bpt
        self.tpgr = tokens_per_group_row(org, head_dim)
        self.G = org.groups_per_channel
        self.cols = org.columns_per_row
        self.lanes = org.elements_per_column
        if tokens_per_bank_row(org) != SLICE:
            raise ValueError(f"preset {cfg.name!r}: {tokens_per_bank_row(org)} tokens per bank "
                             f"row; the layout assumes {SLICE} (32 columns of 16 lanes)")

    @property
    def tokens_per_row(self) -> int:
        """Token slots of one row index over every group (what one ACTAB opens)."""
        return self.G * self.tpgr

    def __repr__(self) -> str:
        return f"Geometry(d={self.d}, bpt={self.bpt}, sets={self.sets}, tpgr={self.tpgr})"


def slot_fields(slot_in_block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token set, slot within the slice) of a slot index within its block."""
    import numpy as np

    s = np.asarray(slot_in_block)
    return s // SLICE, s % SLICE


def lane_bit(token_set: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Bit of a score move's valid-slot mask for ``(token set, slot)``: ``16 set + slot``."""
    import numpy as np

    return SLICE * np.asarray(token_set) + np.asarray(slot)


def round_robin(blocks: np.ndarray | int, G: int) -> tuple[np.ndarray, np.ndarray]:
    """(group, row) of blocks dealt round-robin: block ``b`` -> group ``b mod G``, row
    ``b // G``. ``blocks``: a count (blocks 0 .. blocks - 1) or an array of block indices."""
    import numpy as np

    b = np.arange(blocks) if isinstance(blocks, (int, np.integer)) else np.asarray(blocks)
    return b % G, b // G


def dense_token_address(cfg: Config, head_dim: int, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Row, group, set and slot of each token index of the dense (positional) layout."""
    import numpy as np

    G = cfg.org.groups_per_channel
    tpgr = tokens_per_group_row(cfg.org, head_dim)
    t = np.asarray(tokens, dtype=np.int64)
    g, r = round_robin(t // tpgr, G)
    j, s = slot_fields(t % tpgr)
    return {"row": r, "group": g, "set": j, "slot": s}


def blocks_to_banks(x: np.ndarray, geo: Geometry) -> np.ndarray:
    """Tokens ``[n_blocks, tpgr, d]`` (uint16 FP16 bits) -> bank rows
    ``[n_blocks, banks_per_group, columns, lanes]``."""
    import numpy as np

    nb = x.shape[0]
    L = geo.lanes
    # [nb, sets, 16 slots, bpt, 2 halves, lanes] -> [nb, sets, bpt, 16, 2, lanes]
    y = x.reshape(nb, geo.sets, SLICE, geo.bpt, 2, L).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(y).reshape(nb, geo.bpg, 2 * SLICE, L)


def banks_to_blocks(rows: np.ndarray, geo: Geometry) -> np.ndarray:
    """Inverse of :func:`blocks_to_banks`."""
    import numpy as np

    nb = rows.shape[0]
    L = geo.lanes
    y = rows.reshape(nb, geo.sets, geo.bpt, SLICE, 2, L).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(y).reshape(nb, geo.tpgr, geo.d)


#: Token slots one score move's valid mask covers (its 32-bit ``arg`` field, docs/commands.md).
MOVE_MASK_SLOTS = 32


def check_geometry(geo: Geometry) -> None:
    """Raise ValueError if programs cannot address this layout: a score move's mask must cover a
    group row (the compiler checks it so such a cache is refused at compile time)."""
    if geo.tpgr > MOVE_MASK_SLOTS:
        raise ValueError(f"head_dim {geo.d} puts {geo.tpgr} tokens in a group row "
                         f"(banks_per_group {geo.bpg}), but a score move's valid mask covers "
                         f"{MOVE_MASK_SLOTS} slots; {_legal(geo.cfg.org, geo.d)}")


# ---- selection metadata rows ---------------------------------------------------------------------
def meta_rows(n_vectors: int, geo: Geometry) -> int:
    """Rows per bank that ``n_vectors`` metadata vectors take (``tpgr`` per block, round-robin)."""
    blocks = -(-int(n_vectors) // geo.tpgr)
    return -(-blocks // geo.G)


def meta_address(index: np.ndarray, geo: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                            np.ndarray]:
    """(group, metadata row, token set, slot) of metadata vector ``index`` (rows relative to the
    first metadata row of the region)."""
    import numpy as np

    i = np.asarray(index, np.int64)
    g, r = round_robin(i // geo.tpgr, geo.G)
    j, s = slot_fields(i % geo.tpgr)
    return g, r, j, s


def quest_meta_vectors(T: int) -> int:
    """Quest's page-bound vectors of a ``T``-token positional head: one max and one min vector per
    16-token page (max vectors first, then min vectors, each block-aligned: see
    :func:`quest_bound_index`)."""
    return 2 * -(-int(T) // QUEST_PAGE)


def quest_bound_index(pages: np.ndarray, T: int, geo: Geometry, *, upper: bool) -> np.ndarray:
    """Metadata vector index of the max (``upper``) or min bound of ``pages`` of a ``T``-token
    head. The min vectors start on a row boundary after the max vectors, so the two scans open
    disjoint rows."""
    import numpy as np

    p = np.asarray(pages, np.int64)
    if upper:
        return p
    n_pages = -(-int(T) // QUEST_PAGE)
    return meta_rows(n_pages, geo) * geo.G * geo.tpgr + p


def quest_meta_rows(T: int, geo: Geometry) -> int:
    """Rows per bank of Quest's page bounds for a ``T``-token head (max rows, then min rows)."""
    return 2 * meta_rows(-(-int(T) // QUEST_PAGE), geo)


# ---- region sizes --------------------------------------------------------------------------------
def region_rows_upper_bound(cfg: Config, head_dim: int, T: int) -> int:
    """Rows per bank one (layer, KV head) region may need in any mode: keys and values of every
    block (plus one padding block and a 128-token recent buffer) and the metadata rows (the
    densest: one centroid per 16 tokens, or Quest's two bounds per 16-token page)."""
    geo = Geometry(cfg, head_dim)
    blocks = math.ceil(T / geo.tpgr) + 1 + math.ceil(128 / geo.tpgr)
    krows = math.ceil(blocks / geo.G) + 1
    centroids = math.ceil(T / SLICE) + 8
    crows = max(meta_rows(centroids, geo), quest_meta_rows(T, geo))
    return 2 * krows + crows


def rows_needed_upper_bound(cfg: Config, head_dim: int, T: int, n_layers: int,
                            n_kv_heads: int) -> int:
    """Rows per bank on the busiest channel (KV head h on channel h mod channels)."""
    per_channel = math.ceil(n_kv_heads / cfg.org.channels) * n_layers
    return per_channel * region_rows_upper_bound(cfg, head_dim, T)

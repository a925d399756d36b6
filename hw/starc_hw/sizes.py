"""The one table of hardware sizes: what ``starc rtl verilog`` generates and ``starc fpga``
builds, under the same names.

A size scales the default preset's channel (its DRAM timing is never changed): the organisation
(pseudo-channels, SIDs, bank groups, banks per group), the column width (``lanes`` FP16 elements,
``pu.lanes``), the rows each bank stores, and, with ``head_dim > 0``, the attention datapath
(bank PUs, softmax, moves, output accumulator) for that head dimension. How the datapath is
implemented is part of the size:

* ``lanes_per_clock == lanes`` and ``fold == 1``: the reference units (``starc_hw.pu``,
  ``starc_hw.softmax``, ``starc_hw.attention``): one column per clock, one clock per emulated
  DRAM cycle.
* otherwise the FPGA-shaped units (``starc_hw.folded``): ``lanes_per_clock`` lanes of a column
  per FPGA clock, and at least ``fold`` FPGA clocks per emulated DRAM cycle. The emulated
  schedule, the outputs and the bank timing checks are the golden model's whatever the fold
  (docs/fpga.md, "Modelled time and FPGA clocks").

The board facts sit on top: whether the ULX3S's LFE5U-85F holds the size (``board``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from starc import config
from starc.config import Config

__all__ = ["BASE_PRESET", "SIZES", "Size", "board_sizes", "make_design", "size"]

#: Base preset whose timing (and everything a size does not override) every size uses.
BASE_PRESET = "attacc-hbm3-5.2"

#: ``Size.board``: placed and routed for the LFE5U-85F / synthesis only (does not fit) /
#: not a board design (simulation and Verilog only).
BOARD_KINDS = ("place", "synth", "none")


def _pow2(x: int) -> bool:
    return x > 0 and not x & (x - 1)


@dataclass(frozen=True)
class Size:
    """One hardware size (see the module docstring)."""

    name: str
    #: Why the size exists, in a few words.
    note: str
    pseudo_channels: int
    sids: int
    bank_groups: int
    banks_per_group: int
    #: FP16 elements per column access (``pu.lanes``; ``column_bytes = 2 * lanes``).
    lanes: int
    #: Rows stored per bank (power of two; row addresses wrap).
    rows: int
    columns: int = 32
    #: d of the attention datapath; 0: the command front end and bank array only.
    head_dim: int = 0
    #: Softmax-buffer entries (tokens one SFM may hold).
    max_entries: int = 64
    #: Score-move beats one SFM may hold (None: ``2 * max_entries / slots``).
    max_beats: int | None = None
    #: Lanes of a column the datapath processes per FPGA clock (None: all of them).
    lanes_per_clock: int | None = None
    #: Minimum FPGA clocks per emulated DRAM cycle.
    fold: int = 1
    #: ``"place"``: fits the LFE5U-85F (placed and routed); ``"synth"``: synthesis only;
    #: ``"none"``: not a board design.
    board: str = "place"

    def __post_init__(self) -> None:
        for f in ("pseudo_channels", "sids", "bank_groups", "banks_per_group", "lanes", "rows",
                  "columns"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or not _pow2(v):
                raise ValueError(f"size {self.name!r}: {f} must be a power of two, not {v!r}")
        lpc = self.lanes_per_clock
        if lpc is not None and (isinstance(lpc, bool) or not isinstance(lpc, int)
                                or not _pow2(lpc) or lpc > self.lanes):
            raise ValueError(f"size {self.name!r}: lanes_per_clock must be a power of two of at "
                             f"most lanes ({self.lanes}), not {lpc!r}")
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or self.fold < 1:
            raise ValueError(f"size {self.name!r}: fold must be a positive integer, not "
                             f"{self.fold!r}")
        if self.board not in BOARD_KINDS:
            raise ValueError(f"size {self.name!r}: board must be one of {BOARD_KINDS}, not "
                             f"{self.board!r}")
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) \
                or self.head_dim < 0:
            raise ValueError(f"size {self.name!r}: head_dim must be a non-negative integer, not "
                             f"{self.head_dim!r}")

    @property
    def banks(self) -> int:
        return self.pseudo_channels * self.sids * self.bank_groups * self.banks_per_group

    @property
    def clock_lanes(self) -> int:
        """Lanes per FPGA clock (``lanes_per_clock``, or all lanes)."""
        return self.lanes if self.lanes_per_clock is None else self.lanes_per_clock

    @property
    def folded(self) -> bool:
        """The datapath is the FPGA-shaped one (``starc_hw.folded``)."""
        return self.clock_lanes < self.lanes or self.fold > 1

    @property
    def place(self) -> bool:
        """The size fits the LFE5U-85F (placed and routed by ``starc fpga build``)."""
        return self.board == "place"

    def overrides(self) -> dict[str, Any]:
        """Config overrides of the base preset (organisation and column width only)."""
        return {
            "organisation.pseudo_channels": self.pseudo_channels,
            "organisation.sids": self.sids,
            "organisation.bank_groups": self.bank_groups,
            "organisation.banks_per_group": self.banks_per_group,
            "organisation.columns_per_row": self.columns,
            "organisation.column_bytes": 2 * self.lanes,
            "pu.lanes": self.lanes,
        }

    def config(self) -> Config:
        """:data:`BASE_PRESET` with this size's organisation."""
        return config.load(BASE_PRESET, overrides=self.overrides())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        org = (f"{self.banks} banks ({self.pseudo_channels} PC x {self.sids} SID x "
               f"{self.bank_groups} BG x {self.banks_per_group}), {self.lanes} lanes "
               f"({16 * self.lanes}-bit columns), {self.columns} columns x {self.rows} rows "
               f"per bank")
        if self.head_dim:
            org += (f"; attention datapath, d {self.head_dim}, {self.max_entries} softmax "
                    f"entries")
        if self.folded:
            org += f"; {self.clock_lanes} lane(s) per clock, fold {self.fold}"
        return org


#: Every size, by name. Bank storage is ``rows x columns`` entries of ``16 x lanes`` bits per
#: bank; an ECP5 DP16KD holds 512 x 36 bits. Columns stay 32 (16 token slots per bank row),
#: which the compiler's layout needs.
SIZES: dict[str, Size] = {s.name: s for s in (
    Size("tiny", "2 banks in one bank group: the smallest channel with a bank-level choice",
         1, 1, 1, 2, lanes=4, rows=8),
    Size("small", "4 banks, two bank groups", 1, 1, 2, 2, lanes=4, rows=8),
    Size("small-wide", "small with 128-bit columns: what the column width costs", 1, 1, 2, 2,
         lanes=8, rows=8),
    Size("medium", "16 banks: every pseudo-channel / SID / bank-group path, half width",
         2, 2, 2, 2, lanes=8, rows=16),
    Size("large", "32 banks: half the preset's channel, four banks per group", 2, 2, 2, 4,
         lanes=4, rows=16),
    # fits since the controller's relative state (7fe57a5): 35947 LUTs (43 %) and 129 of the 208
    # block RAMs after synthesis (docs/fpga.md), 27003 LUTs with the bank array's relative timing
    # checker (0312452); 108300 LUTs by the estimate fitted before them
    Size("full", "the preset's 64-bank channel at 64-bit columns", 2, 2, 4, 4, lanes=4,
         rows=16),
    # The attention datapath on the board: 2 banks of the preset's 16 lanes (256-bit columns),
    # d 32 (one bank per token, two token sets per group row); one lane per clock.
    Size("pim-tiny", "the whole attention datapath, 2 banks, d 32", 1, 1, 1, 2, lanes=16,
         rows=8, head_dim=32, max_entries=64, lanes_per_clock=1, fold=4),
    # 4 banks (two pseudo-channels of one 2-bank group), d 64: one token set per group row, the
    # score move's tree over two banks.
    Size("pim-mid", "4 banks x 16 lanes, d 64", 2, 1, 1, 2, lanes=16, rows=16, head_dim=64,
         max_entries=256, lanes_per_clock=1, fold=4),
    # 8 banks (two pseudo-channels of one 4-bank group), d 64 (SmolLM2-135M's): two banks per
    # token, two token sets per group row; 32 rows per bank hold a planned SmolLM2 head step.
    Size("pim-smol", "8 banks x 16 lanes, d 64: a real SmolLM2 head step on the board",
         2, 1, 1, 4, lanes=16, rows=32, head_dim=64, max_entries=512, lanes_per_clock=1,
         fold=4),
    # 16 banks, d 64: twice pim-smol (48610 LUTs with the relative state, docs/fpga.md), about
    # 85000 LUTs by the model fitted to the builds (starc_fpga.build.estimate), beyond the
    # LFE5U-85F's 83640: synthesis only.
    Size("pim-large", "16 banks x 16 lanes, d 64: beyond the LFE5U-85F (synthesis only)",
         2, 2, 1, 4, lanes=16, rows=16, head_dim=64, max_entries=512, lanes_per_clock=1,
         fold=4, board="synth"),
    # The co-simulation model of docs/rtl.md (full-width reference units).
    Size("pim-small", "16 banks x 16 lanes, d 64: the reference co-simulation model",
         2, 2, 2, 2, lanes=16, rows=64, head_dim=64, max_entries=1024, max_beats=256,
         board="none"),
    # The default preset's whole channel with the reference datapath.
    Size("pim-full", "the preset's channel: 64 banks x 16 lanes, d 128", 2, 2, 4, 4, lanes=16,
         rows=16, head_dim=128, max_entries=512, max_beats=64, board="none"),
)}


def size(name: str) -> Size:
    """The size called ``name``; ValueError naming the choices."""
    try:
        return SIZES[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown size {name!r}; choose one of {', '.join(SIZES)}") from None


def board_sizes() -> dict[str, Size]:
    """The sizes ``starc fpga build`` builds (placed, or synthesis only)."""
    return {k: v for k, v in SIZES.items() if v.board != "none"}


def make_design(sz: Size, *, cfg: Config | None = None, design: str = "auto",
                head_dim: int | None = None, rows: int | None = None,
                max_entries: int | None = None, cycle_width: int = 48,
                pu_instances: bool = False) -> Any:
    """The gateware of a size (what ``starc rtl verilog`` writes; the board wraps the same):
    the reference units, or on a folded size the FPGA-shaped ones (``starc_hw.folded``) with
    the emulated DRAM clock.

    ``design``: ``"attention"`` (the attention channel; needs a head dimension), ``"channel"``
    (the command front end and bank array only) or ``"auto"`` (attention when the size has a
    head dimension). ``pu_instances``: the reference channel's bank PUs as instances of one
    module (``AttentionChannel(pu_instances=True)``). ``cfg`` defaults to :meth:`Size.config`;
    ``head_dim``, ``rows`` and ``max_entries`` to the size's. ValueError (with what to change)
    when the combination cannot be built."""
    if design not in ("auto", "attention", "channel"):
        raise ValueError(f"design must be 'auto', 'attention' or 'channel', not {design!r}")
    cfg = sz.config() if cfg is None else cfg
    d = sz.head_dim if head_dim is None else head_dim
    rows = sz.rows if rows is None else rows
    entries = sz.max_entries if max_entries is None else max_entries
    if design == "auto":
        design = "attention" if d else "channel"
    if design == "channel":
        if sz.fold > 1:
            from .folded.channel import FoldedChannel

            return FoldedChannel(cfg=cfg, rows=rows, fold=sz.fold, cycle_width=cycle_width)
        from .channel import Channel

        return Channel(cfg=cfg, rows=rows, cycle_width=cycle_width)
    if not d:
        attention = ", ".join(k for k, v in SIZES.items() if v.head_dim)
        raise ValueError(f"size {sz.name!r} has no attention datapath (head_dim 0): give a head "
                         f"dimension or use one of {attention}")
    beats = sz.max_beats if max_entries is None else None
    if sz.folded:
        from .folded.channel import FoldedAttentionChannel

        return FoldedAttentionChannel(cfg=cfg, head_dim=d, lanes_per_clock=sz.clock_lanes,
                                      fold=sz.fold, rows=rows, max_entries=entries,
                                      max_beats=beats, cycle_width=cycle_width)
    from .attention import AttentionChannel

    return AttentionChannel(cfg=cfg, head_dim=d, rows=rows, max_entries=entries,
                            max_beats=beats, cycle_width=cycle_width,
                            pu_instances=pu_instances)

"""AttAcc compatibility model: AttAcc's own simulator, re-implemented cycle for cycle.

The STARC paper's figures come from AttAcc's Ramulator 2 fork (GitHub scale-snu/attacc_simulator,
commit c600051, on CMU-SAFARI/ramulator2 b7c7027). This module reproduces what that simulator
computes for bank-level AttAcc (``pim_ramulator_src/attacc_bank.yaml``, the configuration
``src/ramulator_wrapper.py`` writes): the same command trace, the same controller and scheduler
decisions, the same issue cycle of every command in every channel and the same
``memory_system_cycles``. It is a separate model from :mod:`starc.golden.timing` (our RTL-exact
schedule); docs/attacc.md puts the two side by side, term by term, and
tests/data/attacc/ holds the simulator's own figures that the tests compare against.

Data flow::

    Workload --trace()--> global request order (AttAcc's trace generator, all 16 channels)
             --simulate()--> per-channel controllers (AttAcc's HBM3-PIM controller + PIM
                             scheduler + all-bank refresh), one shared in-order frontend
             --> AttAccRun: cycles, request and command counts, AttAcc-convention energy

What is reproduced (file names are AttAcc's, under ``pim_ramulator_src/``):

- Trace (``trace_gen/gen_trace_attacc_bank.py``): per head WRGB the query, score MACABs with one
  8-move MVSB group per 16 token slices, SFM, MVGB the probabilities, value MACABs with an 8-move
  MVSB group per 16 output elements, separated by BARRIERs; heads in pairs with the overlapped
  schedule (the second head's WRGBs spread over the first head's score loop, each head's SFM and
  MVGBs under the other head's MACs, one extra MACAB before the first barrier), an odd last head
  alone. Addresses are generated as the generator computes them (including its head offset from
  ``--maxlen``, default 4096, and its reuse of the first head's value addresses for the second
  head's value phase) and decoded by the ``HBM3-PIM`` linear mapper.
- Frontend (``pim_loadstore_trace.cpp``): one request order for the whole stack; each cycle it
  sends requests until the first one whose channel buffer is full (a buffer accepts while it holds
  at most 32, so it holds 33). Channels therefore couple through the frontend.
- Controller (``hbm3_pim_controller.cpp``): per cycle a first command, then a second one of the
  other kind (row vs column) in the same cycle. Refresh requests (priority buffer) come first; while
  one is not ready nothing else is chosen as the first command, but a column command may still go
  as the second.
- Scheduler (``pim_scheduler.cpp``): a BARRIER at the head of the buffer is dropped; requests
  before the first BARRIER are all candidates, those after it only while their next command is a
  row command (ACTAB or PREA): a barrier is an issue-order fence that row commands may pass. The
  candidate is the oldest ready one, except that a ready request that is not a row hit is passed
  over while another request hits the open row of its bank.
- Device (``HBM3-PIM.cpp``): the timing table. MACAB needs every bank open on its row (ACTAB
  opens all 64 banks, PREA closes all); all-bank spacing tCCD_AB; WRGB/MVSB/MVGB/SFM only spaced
  by tBL per pseudo-channel, tCCD_S per SID and tCCD_L per bank group, with no latency after a
  MACAB; SFM has no duration and checks nothing. REFab is per pseudo-channel and checks only the
  channel-level rule (so it may follow PREA by one cycle); tRFC = ``JEDEC_rounding(350 ns)``.
- The count ends at the cycle of the last issued command (``memory_system_cycles``).

Every cycle count is in DRAM clock cycles (tCK of the preset). Cycle numbering starts at 1, as in
Ramulator (the first tick is cycle 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starc.config import Config

__all__ = [
    "AttAccError",
    "AttAccRun",
    "Workload",
    "ATTACC_ORGANISATION",
    "SUPPORTED",
    "check_preset",
    "trace",
    "simulate",
    "run",
    "energy_pj",
    "tRFC_cycles",
    "trace_text",
    "COMMAND_NAMES",
    "KIND_NAMES",
    "Phases",
    "attacc_phases",
    "ours_phases",
    "mac_stream_bound",
]


class AttAccError(ValueError):
    """An option the compatibility model cannot honour; the message names what it supports."""


# ---- AttAcc's organisation and generator constants ---------------------------------------------
#: AttAcc's HBM3 organisation (HBM3-PIM.cpp org preset HBM3_8Gb_2R, 16 channels in
#: attacc_bank.yaml). The trace generator hard-codes the same numbers (n_channel, n_pch, ...).
ATTACC_ORGANISATION = {
    "channels": 16, "pseudo_channels": 2, "sids": 2, "bank_groups": 4, "banks_per_group": 4,
    "rows_per_bank": 1 << 14, "columns_per_row": 32, "column_bytes": 32,
}
_N_CH, _N_PCH, _N_RANK, _N_BG, _N_BANK = 16, 2, 2, 4, 4
_N_MAC = 16                  # gen_trace_attacc_bank.py: n_mac = 32 B / 2 B (FP16)
_GROUPS = _N_PCH * _N_RANK * _N_BG   # 16 (pseudo-channel, SID, bank group) groups per channel
# Address bits of the HBM3-PIM linear mapper (hbm3_pim_linear_mappers.cpp, HBM3PIMMap):
# 5 offset bits (32 B), then column 5, row 14, bank 2, bank group 2, rank (SID) 1, pch 1, ch 4.
_ADDR_COL, _ADDR_ROW, _ADDR_BA, _ADDR_BG, _ADDR_RA, _ADDR_PCH, _ADDR_CH = 5, 10, 24, 26, 28, 29, 30
_GS_BA, _GS_BG, _GS_RA, _GS_CH = 1 << _ADDR_BA, 1 << _ADDR_BG, 1 << _ADDR_RA, 1 << _ADDR_CH
_V_OFFSET = 1 << 23          # gen_trace_attacc_bank.py run_attention: v_offset = 2^23
_BUFFER_HOLDS = 33           # ReqBuffer::enqueue accepts while size() <= max_size (32)
DEFAULT_MAX_LEN = 4096       # gen_trace_attacc_bank.py --maxlen default (the wrapper never sets it)

#: What the model takes; every other option gets an :class:`AttAccError` naming this.
SUPPORTED = {
    "head_dim": "a positive multiple of 64 (the generator's dhead / (4 banks x 16 lanes) k-steps; "
                "validated against the simulator at 64, 128 and 256)",
    "length": "a positive multiple of 256 (whole all-bank rows of 16 tokens x 16 groups; "
              "validated at 256 to 32768)",
    "heads_per_channel": "an integer from 1 to 8 (the generator's --nhead = 16 x heads per "
                         "channel; validated at 1 to 4)",
}
_MAX_HEADS = 8

# ---- request kinds and commands ----------------------------------------------------------------
K_MAC, K_WRGB, K_MVSB, K_MVGB, K_SFM, K_BARRIER = range(6)
KIND_NAMES = ("PIM_MAC_AB", "PIM_WR_GB", "PIM_MV_SB", "PIM_MV_GB", "PIM_SFM", "PIM_BARRIER")
C_ACTAB, C_PREA, C_REFAB, C_MACAB, C_WRGB, C_MVSB, C_MVGB, C_SFM = range(8)
COMMAND_NAMES = ("ACTAB", "PREA", "REFab", "MACAB", "WRGB", "MVSB", "MVGB", "SFM")
_ROW_COMMANDS = (True, True, True, False, False, False, False, False)
_NEVER = 1 << 62


@dataclass(frozen=True)
class Workload:
    """One run of AttAcc's bank-level trace generator: ``--nhead 16 x heads_per_channel``."""

    length: int
    head_dim: int = 128
    heads_per_channel: int = 1
    max_len: int = DEFAULT_MAX_LEN

    def validate(self) -> None:
        def bad(name: str, value: Any) -> AttAccError:
            return AttAccError(f"AttAcc compatibility model: {name} {value!r} is not supported; "
                               f"it takes {name} {SUPPORTED[name]}")
        for name, value in (("length", self.length), ("head_dim", self.head_dim),
                            ("heads_per_channel", self.heads_per_channel)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise bad(name, value)
        if self.head_dim % (_N_BANK * _N_MAC):
            raise bad("head_dim", self.head_dim)
        if self.length % (_GROUPS * _N_MAC):
            raise bad("length", self.length)
        if self.heads_per_channel > _MAX_HEADS:
            raise bad("heads_per_channel", self.heads_per_channel)
        if isinstance(self.max_len, bool) or not isinstance(self.max_len, int) \
                or self.max_len <= 0:
            raise AttAccError(f"AttAcc compatibility model: max_len must be a positive integer "
                              f"(the generator's --maxlen, default {DEFAULT_MAX_LEN}), not "
                              f"{self.max_len!r}")

    @property
    def nhead(self) -> int:
        """The generator's ``--nhead`` (heads per HBM stack, 16 channels)."""
        return _N_CH * self.heads_per_channel

    def command_line(self, output: str = "attacc_bank.trace") -> str:
        """The trace-generator command line that produces this workload's trace."""
        extra = "" if self.max_len == DEFAULT_MAX_LEN else f" --maxlen {self.max_len}"
        return (f"python gen_trace_attacc_bank.py --dhead {self.head_dim} --nhead {self.nhead} "
                f"--seqlen {self.length} --dbyte 2{extra} --output {output}")


# ---- the trace generator -----------------------------------------------------------------------
# kind, pch, rank, bg, bank, row, col, the generator's byte address (for trace_text), and a
# readiness key: requests with equal keys are ready at the same cycle (see _Channel._pick)
Request = tuple[int, int, int, int, int, int, int, int, int]


def _decode(kind: int, addr: int) -> tuple[int, Request]:
    p, r, g = (addr >> _ADDR_PCH) & 1, (addr >> _ADDR_RA) & 1, (addr >> _ADDR_BG) & 3
    row = (addr >> _ADDR_ROW) & ((1 << 14) - 1)
    if kind == K_MAC:
        key = -1 - 2 * row - p                # MACAB / ACTAB / PREA: row and pseudo-channel
    elif kind == K_SFM:
        key = 1 << 20                         # always ready
    elif kind == K_BARRIER:
        key = 1 << 21
    else:
        key = (p * _N_RANK + r) * _N_BG + g   # data moves: pseudo-channel, SID, bank group
    return ((addr >> _ADDR_CH) & 15,
            (kind, p, r, g, (addr >> _ADDR_BA) & 3, row, (addr >> _ADDR_COL) & 31, addr, key))


class _Head:
    """The command groups of one head (itr) of gen_trace_attacc_bank.py's Attention(), each a
    list of (channel, request) over all 16 channels, channel innermost."""

    def __init__(self, w: Workload, itr: int) -> None:
        d, L = w.head_dim, w.length
        ksteps = -(-d // (_N_BANK * _N_MAC))           # k-steps per token slice (2 at d = 128)
        slices = -(-L // _GROUPS)                        # token slices per group, L / 16
        partition = -(-w.max_len * d // (_GROUPS * _N_BANK))
        key = itr * partition
        val = key + _V_OFFSET
        chans = range(_N_CH)

        def group(kind: int, addrs: Iterable[int]) -> list[tuple[int, Request]]:
            return [_decode(kind, a) for a in addrs]

        self.wrgb = group(K_WRGB, (key + c * _GS_CH + ba * _GS_BA + col
                                   for ba in range(_N_BANK) for col in range(ksteps)
                                   for c in chans))
        self.score_mac = [group(K_MAC, (key + c * _GS_CH + (k + n * ksteps) * 32
                                        for k in range(ksteps) for c in chans))
                          for n in range(slices)]
        ends = [n for n in range(slices) if n % 16 == 15 or n == slices - 1]
        self.score_mvsb = [group(K_MVSB, (key + c * _GS_CH + ra * _GS_RA + bg * _GS_BG
                                          for bg in range(_N_BG) for ra in range(_N_RANK)
                                          for c in chans)) for _ in ends]
        cols = -(-L // (_GROUPS * _N_MAC))
        self.mvgb = group(K_MVGB, (val + c * _GS_CH + ra * _GS_RA + bg * _GS_BG + col
                                   for ra in range(_N_RANK) for bg in range(_N_BG)
                                   for col in range(cols) for c in chans))
        self.value_mac = [group(K_MAC, (val + c * _GS_CH + (k + n * slices) * 32
                                        for k in range(slices) for c in chans))
                          for n in range(ksteps)]
        self.value_mvsb = [group(K_MVSB, (val + c * _GS_CH + ra * _GS_RA + ba * _GS_BA
                                          for ba in range(_N_BANK) for ra in range(_N_RANK)
                                          for c in chans)) for _ in range(ksteps)]
        self.sfm = group(K_SFM, (c * _GS_CH for c in chans))
        self.ksteps, self.slices, self.cols = ksteps, slices, cols


def _barrier() -> list[tuple[int, Request]]:
    return [_decode(K_BARRIER, c * _GS_CH) for c in range(_N_CH)]


class _Spread:
    """A command group handed out in fixed strides, as the generator's WRGB and MVGB loops do
    (``stride = int(total / steps)``; whatever the last stride does not reach is never sent)."""

    def __init__(self, items: list[tuple[int, Request]], steps: int) -> None:
        self.items, self.steps, self.stride = items, steps, int(len(items) / steps)
        self.sent = 0

    def take(self, step: int) -> list[tuple[int, Request]]:
        part = self.items[step * self.stride:(step + 1) * self.stride]
        self.sent += len(part)
        return part

    def check(self, what: str, w: Workload) -> None:
        if self.sent != len(self.items):
            raise AttAccError(
                f"AttAcc compatibility model: at L = {w.length}, head_dim = {w.head_dim} with "
                f"{w.heads_per_channel} heads per channel AttAcc's trace generator drops "
                f"{len(self.items) - self.sent} of the {len(self.items)} {what} commands it "
                f"spreads over the {self.steps} steps of an overlapped two-head phase (its "
                f"stride int({len(self.items)} / {self.steps}) truncates); it takes two or more "
                f"heads per channel only where the step count divides the command count (at "
                f"head_dim 128: L = 256, 512, 1024, ..., 32768)")


def trace(w: Workload) -> list[tuple[int, Request]]:
    """The generator's request order for the whole stack: (channel, request) pairs.

    Mirrors ``run_attention`` of gen_trace_attacc_bank.py: heads in pairs (the overlapped
    schedule), then an odd last head alone. Raises :class:`AttAccError` for a workload the
    generator would emit incompletely."""
    w.validate()
    heads = [_Head(w, i) for i in range(w.heads_per_channel)]
    out: list[tuple[int, Request]] = []
    bar = _barrier()
    Step = list[tuple[int, Request]]
    score_steps = -(-w.length // (_GROUPS * 16))       # 16 token slices per score step

    def loop(macs: list[Step], per_step: int, mvsb: list[Step], overlap: list[Step]) -> None:
        # step j: its MACs, then the previous step's MVSBs, then what the caller overlaps, then
        # a barrier; one last step with the last MVSBs only
        steps = len(mvsb)
        for j in range(steps + 1):
            if j < steps:
                for mac in macs[j * per_step:(j + 1) * per_step]:
                    out.extend(mac)
            if j > 0:
                out.extend(mvsb[j - 1])
            if j < len(overlap):
                out.extend(overlap[j])
            if j < steps:
                out.extend(bar)

    def softmax_under(h: _Head, steps: int) -> list[Step]:
        # the other head's SFM at step 0, its MVGBs spread over the second half of the steps
        spread = _Spread(h.mvgb, -(-steps // 2))
        over = [list(h.sfm) if j == 0 else [] for j in range(steps)]
        for j in range(steps // 2, steps):
            over[j] += spread.take(j - steps // 2)
        spread.check("MVGB", w)
        return over

    H = w.heads_per_channel
    for i in range(0, H - 1, 2):
        h0, h1 = heads[i], heads[i + 1]
        # head 0 score, with head 1's WRGBs spread over its steps
        out.extend(h0.wrgb)
        if i == 0:
            out.extend(h0.score_mac[0][:_N_CH])    # the generator's extra ("dummy") MACAB
        out.extend(bar)
        wrgb1 = _Spread(h1.wrgb, score_steps)
        loop(h0.score_mac, 16, h0.score_mvsb, [wrgb1.take(j) for j in range(score_steps)])
        wrgb1.check("WRGB", w)
        # head 1 score under head 0's softmax and MVGBs
        loop(h1.score_mac, 16, h1.score_mvsb, softmax_under(h0, score_steps))
        # head 0 value under head 1's softmax and MVGBs
        loop(h0.value_mac, 1, h0.value_mvsb, softmax_under(h1, h1.ksteps))
        # head 1 value phase: the generator issues head 0's value MACs and MVSBs again
        loop(h0.value_mac, 1, h0.value_mvsb, [])
    if H % 2:
        h = heads[H - 1]
        out.extend(h.wrgb)
        out.extend(bar)
        loop(h.score_mac, 16, h.score_mvsb, [])
        out.extend(h.sfm)
        out.extend(h.mvgb)
        out.extend(bar)
        loop(h.value_mac, 1, h.value_mvsb, [])
    return out


def trace_text(w: Workload) -> str:
    """The trace file the generator writes (``PIM_... 0x%08x`` per line), for provenance checks."""
    lines = [f"{KIND_NAMES[q[0]]} 0x{q[7]:0>8x}" for _, q in trace(w)]
    return "\n".join(lines) + "\n"


# ---- timing ------------------------------------------------------------------------------------
def tRFC_cycles(cfg: Config) -> int:
    """tRFC as AttAcc's Ramulator derives it: ``JEDEC_rounding(tRFC_ns, tCK_ps)`` with an integer
    tCK in ps, i.e. floor(t_ps * 1000 / tCK_ps + 0.974) (base/utils.cpp); 456 at 350 ns / 769 ps
    where our ceil gives 455."""
    tck_ps = int(cfg.timing.tCK_ns * 1000 + 1e-6)
    t_ps = int(cfg.timing.tRFC_ns * 1000)
    return (t_ps * 1000 // tck_ps + 974) // 1000


def check_preset(cfg: Config) -> None:
    """Raise :class:`AttAccError` unless the preset has AttAcc's HBM3 organisation."""
    org = cfg.org
    wrong = [f"{k} = {getattr(org, k)} (AttAcc: {v})" for k, v in ATTACC_ORGANISATION.items()
             if getattr(org, k) != v]
    if wrong or cfg.pu.banks_per_pu != 1:
        if cfg.pu.banks_per_pu != 1:
            wrong.append(f"pu.banks_per_pu = {cfg.pu.banks_per_pu} (AttAcc bank-level: 1)")
        raise AttAccError(
            f"AttAcc compatibility model: preset {cfg.name!r} does not have AttAcc's bank-level "
            f"HBM3 organisation ({'; '.join(wrong)}); it takes a preset with "
            f"{', '.join(f'{k} = {v}' for k, v in ATTACC_ORGANISATION.items())} and one PU per "
            f"bank, e.g. attacc-hbm3-5.2 or attacc-hbm3-5.2-npc")


@dataclass(frozen=True)
class _Timing:
    tRCD: int
    tRP: int
    tRAS: int
    tRC: int
    tRTP: int
    tCCD_AB: int
    tBL: int
    tCCD_S: int
    tCCD_L: int
    tREFI: int
    tRFC: int
    row_cmd: int

    @classmethod
    def of(cls, cfg: Config) -> _Timing:
        t = cfg.timing
        return cls(tRCD=t.tRCD, tRP=t.tRP, tRAS=t.tRAS, tRC=t.tRC, tRTP=t.tRTP_L,
                   tCCD_AB=t.tCCD_AB, tBL=t.tBL, tCCD_S=t.tCCD_S, tCCD_L=t.tCCD_L,
                   tREFI=t.tREFI, tRFC=tRFC_cycles(cfg), row_cmd=t.row_cmd_cycles)


class _Channel:
    """One channel: HBM3-PIM controller, PIM scheduler and the device timing it checks.

    Only the timing-table rows whose commands occur are kept, each as the ready cycle Ramulator
    keeps per (node, command): at the channel (ACTAB, MACAB, PREA, REFab), per pseudo-channel
    (ACTAB after REFab) and, for the data-movement class (WRGB, MVSB, MVGB, SFM share every
    row), per pseudo-channel (tBL), SID (tCCD_S) and bank group (tCCD_L)."""

    __slots__ = ("t", "buf", "prio", "open_row", "ch_act", "ch_mac", "ch_pre", "ch_ref",
                 "pch_act", "mv_pch", "mv_rank", "mv_bg", "log", "counts", "wake", "index")

    def __init__(self, t: _Timing, index: int, log: bool) -> None:
        self.t = t
        self.index = index
        self.buf: list[Request] = []
        self.prio: list[int] = []          # pending REFab requests: their pseudo-channel
        self.open_row = -1                 # every bank shares one state: closed or one row open
        self.ch_act = self.ch_mac = self.ch_pre = self.ch_ref = -1
        self.pch_act = [-1] * _N_PCH
        self.mv_pch = [-1] * _N_PCH
        self.mv_rank = [-1] * (_N_PCH * _N_RANK)
        self.mv_bg = [-1] * (_N_PCH * _N_RANK * _N_BG)
        self.log: list[tuple[int, int, int, int, int, int, int, int]] | None = [] if log else None
        self.counts = [0] * len(COMMAND_NAMES)
        self.wake = 1

    def _ref_command(self) -> int:
        return C_PREA if self.open_row >= 0 else C_REFAB

    def _ref_ready_at(self, c: int) -> int:
        return self.ch_pre if c == C_PREA else self.ch_ref

    def _issue(self, clk: int, c: int, q: Request | None, pch: int = 0) -> None:
        t = self.t
        if c == C_MACAB:
            self.ch_mac = max(self.ch_mac, clk + t.tCCD_AB)
            self.ch_pre = max(self.ch_pre, clk + t.tRTP)
        elif c >= C_WRGB:
            assert q is not None
            p, r, g = q[1], q[2], q[3]
            k = p * _N_RANK + r
            self.mv_pch[p] = max(self.mv_pch[p], clk + t.tBL)
            self.mv_rank[k] = max(self.mv_rank[k], clk + t.tCCD_S)
            self.mv_bg[k * _N_BG + g] = max(self.mv_bg[k * _N_BG + g], clk + t.tCCD_L)
        elif c == C_ACTAB:
            assert q is not None
            self.ch_act = max(self.ch_act, clk + t.row_cmd, clk + t.tRC)
            self.ch_mac = max(self.ch_mac, clk + t.tRCD)
            self.ch_pre = max(self.ch_pre, clk + t.row_cmd, clk + t.tRAS)
            self.ch_ref = max(self.ch_ref, clk + t.row_cmd)
            self.open_row = q[5]
        elif c == C_PREA:
            self.ch_act = max(self.ch_act, clk + t.tRP)
            self.open_row = -1
        else:                                # C_REFAB of one pseudo-channel
            self.pch_act[pch] = max(self.pch_act[pch], clk + t.tRFC)
        self.counts[c] += 1
        if self.log is not None:
            if q is None:
                self.log.append((clk, c, pch, -1, -1, -1, -1, -1))
            else:
                self.log.append((clk, c, q[1], q[2], q[3], q[4], q[5], q[6]))

    def _pick(self, clk: int) -> tuple[int, int, bool, int]:
        """PIM::get_best_request + check_ready: (index, command, ready, earliest future ready
        cycle of a candidate). Drops a BARRIER at the head, as the scheduler does.

        The oldest ready candidate wins (PIM::compare keeps a ready candidate and falls back to
        arrival order), so the scan stops at the first one. Requests whose readiness is already
        known to be "not yet" (the same row for MACs, the same pseudo-channel/SID/bank group for
        moves, as the previous request) are skipped: they would give the same answer."""
        buf = self.buf
        if not buf:
            return -1, -1, False, _NEVER
        if buf[0][0] == K_BARRIER:
            del buf[0]
            if not buf:
                return -1, -1, False, _NEVER
            if buf[0][0] == K_BARRIER:
                raise AssertionError("two barriers in a row: not a trace AttAcc generates")
        orow = self.open_row
        ch_mac, ch_pre, ch_act, pch_act = self.ch_mac, self.ch_pre, self.ch_act, self.pch_act
        mv_pch, mv_rank, mv_bg = self.mv_pch, self.mv_rank, self.mv_bg
        wake = _NEVER
        head_c = -1
        barrier = False
        hits: set[tuple[int, int, int, int]] | None = None
        skip_key = None
        for i, q in enumerate(buf):
            if q[8] == skip_key:
                continue
            k = q[0]
            if k == K_MAC:
                row = q[5]
                if row == orow:
                    if barrier:
                        continue
                    c, ra = C_MACAB, ch_mac
                elif orow < 0:
                    c, ra = C_ACTAB, max(ch_act, pch_act[q[1]])
                else:
                    c, ra = C_PREA, ch_pre
            elif k == K_BARRIER:
                barrier = True
                continue
            else:
                if barrier:
                    continue
                if k == K_SFM:                 # SFM's scope is the channel, with no rule there
                    c, ra = C_SFM, -1
                else:
                    c = k + (C_WRGB - K_WRGB)
                    p, r, g = q[1], q[2], q[3]
                    m = p * _N_RANK + r
                    ra = max(mv_pch[p], mv_rank[m], mv_bg[m * _N_BG + g])
            if i == 0:
                head_c = c
            if clk >= ra:
                if i and c != C_MACAB:
                    # PIM::compare: a ready request that is not a row hit is passed over while
                    # another request in the buffer hits the open row of its bank
                    if hits is None:
                        hits = ({(x[1], x[2], x[3], x[4]) for x in buf
                                 if x[0] == K_MAC and x[5] == orow} if orow >= 0 else set())
                    if (q[1], q[2], q[3], q[4]) in hits:
                        continue
                return i, c, True, _NEVER
            skip_key = q[8]
            if ra < wake:
                wake = ra
        return 0, head_c, False, wake

    def tick(self, clk: int, refresh_due: bool) -> bool:
        """HBM3PIMController::tick at cycle clk. Returns whether the channel's state changed."""
        if refresh_due:
            self.prio.extend(range(_N_PCH))
        before = len(self.buf)
        changed = refresh_due
        wake = _NEVER
        # -- 2. first command --
        first = -1                           # the command handed to the second schedule
        if self.prio:
            c = self._ref_command()
            first = c
            ra = self._ref_ready_at(c)
            if clk >= ra:
                self._issue(clk, c, None, self.prio[0])
                if c == C_REFAB:
                    del self.prio[0]
                changed = True
            else:
                wake = ra
        else:
            i, c, ok, w = self._pick(clk)
            if ok:
                q = self.buf[i]
                self._issue(clk, c, q)
                if c != C_ACTAB and c != C_PREA:
                    del self.buf[i]
                first = c
                changed = True
            else:
                wake = min(wake, w)
        # -- 5. second command, of the other kind (row vs column), same cycle --
        if first >= 0:
            handled = False
            if self.prio:
                c = self._ref_command()
                if _ROW_COMMANDS[c] != _ROW_COMMANDS[first]:
                    handled = True
                    ra = self._ref_ready_at(c)
                    if clk >= ra:
                        self._issue(clk, c, None, self.prio[0])
                        if c == C_REFAB:
                            del self.prio[0]
                        changed = True
                    else:
                        wake = min(wake, ra)
            if not handled:
                i, c, ok, w = self._pick(clk)
                if i >= 0 and _ROW_COMMANDS[c] != _ROW_COMMANDS[first]:
                    if ok:
                        q = self.buf[i]
                        self._issue(clk, c, q)
                        if c != C_ACTAB and c != C_PREA:
                            del self.buf[i]
                        changed = True
                    else:
                        wake = min(wake, w)
                elif i >= 0:
                    wake = min(wake, w if not ok else clk + 1)
        if len(self.buf) != before:
            changed = True
        self.wake = clk + 1 if changed else wake
        return changed


@dataclass(frozen=True)
class AttAccRun:
    """What AttAcc's simulator reports for one workload, and what its command logs show.

    ``cycles`` is ``memory_system_cycles`` (DRAM tCK of the preset). ``requests`` are the
    simulator's per-stack request counters as src/ramulator_wrapper.py parses them (mac, sfm,
    mvgb, mvsb, wrgb). ``commands`` counts the issued commands of every channel (what its
    HBM3TraceRecorder logs), summed over the stack, and ``commands_per_channel`` per channel."""

    workload: Workload
    preset: str
    cycles: int
    tck_ns: float
    requests: dict[str, int]
    commands: dict[str, int]
    commands_per_channel: list[dict[str, int]]
    symmetric: bool
    tRFC: int
    energy_pj: dict[str, float] = field(default_factory=dict)
    logs: list[list[tuple[int, int, int, int, int, int, int, int]]] | None = None

    @property
    def ns(self) -> float:
        return self.cycles * self.tck_ns

    @property
    def attacc_time_s(self) -> float:
        """The time AttAcc's wrapper reports: cycles x tCK in whole picoseconds (0.769 ns at
        5.2 Gbps, src/ramulator_wrapper.py), against our ``ns`` at the preset's exact tCK."""
        return self.cycles * int(self.tck_ns * 1000 + 1e-6) * 1e-12

    @property
    def refreshes(self) -> int:
        """REFab commands per channel (one per pseudo-channel per refresh)."""
        return self.commands_per_channel[0]["REFab"]

    def log_lines(self, channel: int = 0) -> list[str]:
        """A channel's command log in the HBM3TraceRecorder format:
        ``cycle, CMD, ch, pch, rank, bg, bank, row, col``."""
        if self.logs is None:
            raise ValueError("run with log=True to keep the command logs")
        src = self.logs[0 if self.symmetric else channel]
        return [f"{clk}, {COMMAND_NAMES[c]}, {channel}, {p}, {r}, {g}, {b}, {row}, {col}"
                for clk, c, p, r, g, b, row, col in src]

    def log_digest(self, channel: int = 0) -> str:
        """SHA-256 of :meth:`log_lines` joined with newlines (each line newline-terminated)."""
        return hashlib.sha256(("\n".join(self.log_lines(channel)) + "\n").encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        w = self.workload
        return {
            "L": w.length, "head_dim": w.head_dim, "heads_per_channel": w.heads_per_channel,
            "max_len": w.max_len, "preset": self.preset, "cycles": self.cycles, "ns": self.ns,
            "attacc_time_s": self.attacc_time_s,
            "requests": dict(self.requests), "commands": dict(self.commands),
            "commands_per_channel": dict(self.commands_per_channel[0]) if self.symmetric
            else None, "refreshes": self.refreshes, "tRFC_cycles": self.tRFC,
            "energy_nJ": {k: v / 1e3 for k, v in self.energy_pj.items()},
        }


def _is_symmetric(tr: list[tuple[int, Request]]) -> bool:
    """True when the trace is 16-channel rounds of one identical request each, channels in
    order; then every channel behaves alike and one channel stands for all (see simulate)."""
    if len(tr) % _N_CH:
        return False
    for base in range(0, len(tr), _N_CH):
        q0 = tr[base][1]
        for c in range(_N_CH):
            ch, q = tr[base + c]
            if ch != c or q[:7] != q0[:7]:
                return False
    return True


def simulate(cfg: Config, w: Workload, *, log: bool = False, all_channels: bool = False
             ) -> AttAccRun:
    """Run the compatibility model: trace, frontend, 16 channel controllers, until the last
    command issues. See the module docstring for what each part reproduces.

    When the trace is channel-symmetric (every 16-entry round holds the same request for channels
    0 to 15), every channel receives and issues the same commands at the same cycles (the
    frontend refills each buffer to 33 every cycle), so one channel is simulated; otherwise (two
    heads at L >= 4096, where the second head's WRGBs reach the channels in different steps) all
    16 are, coupled through the shared frontend. ``all_channels`` simulates all 16 regardless
    (the tests use it to check that reduction)."""
    check_preset(cfg)
    tr = trace(w)
    t = _Timing.of(cfg)
    sym = not all_channels and _is_symmetric(tr)
    if sym:
        order = [q for ch, q in tr if ch == 0]
        chans = [_Channel(t, 0, log)]
        route = [0] * len(order)
    else:
        order = [q for _, q in tr]
        route = [ch for ch, _ in tr]
        chans = [_Channel(t, c, log) for c in range(_N_CH)]
    n = len(order)
    pos = 0
    clk = 0
    next_ref = t.tREFI
    while True:
        # frontend tick: send in order until the first request whose channel buffer is full
        while pos < n:
            ch = chans[route[pos]]
            if len(ch.buf) >= _BUFFER_HOLDS:
                break
            ch.buf.append(order[pos])
            ch.wake = clk + 1
            pos += 1
        clk += 1
        refresh_due = clk == next_ref
        if refresh_due:
            next_ref += t.tREFI
        for ch in chans:
            if refresh_due or ch.wake <= clk:
                ch.tick(clk, refresh_due)
        if pos >= n and not any(ch.buf or ch.prio for ch in chans):
            break
        # skip cycles in which no channel can change and the frontend cannot send
        nxt = min(ch.wake for ch in chans)
        if pos < n and len(chans[route[pos]].buf) < _BUFFER_HOLDS:
            nxt = clk + 1
        nxt = min(nxt, next_ref)
        if nxt > clk + 1:
            clk = nxt - 1
    per_channel = [{COMMAND_NAMES[c]: ch.counts[c] for c in range(len(COMMAND_NAMES))}
                   for ch in chans]
    if sym:
        per_channel = per_channel * _N_CH
    commands = {k: sum(pc[k] for pc in per_channel) for k in COMMAND_NAMES}
    requests = {"mac": commands["MACAB"], "sfm": commands["SFM"], "mvgb": commands["MVGB"],
                "mvsb": commands["MVSB"], "wrgb": commands["WRGB"]}
    run_ = AttAccRun(workload=w, preset=cfg.name, cycles=clk, tck_ns=cfg.timing.tCK_ns,
                     requests=requests, commands=commands, commands_per_channel=per_channel,
                     symmetric=sym, tRFC=t.tRFC,
                     logs=[ch.log for ch in chans] if log else None)  # type: ignore[misc]
    return AttAccRun(**{**run_.__dict__, "energy_pj": energy_pj(run_)})


def run(cfg: Config, length: int, head_dim: int = 128, heads_per_channel: int = 1,
        *, max_len: int = DEFAULT_MAX_LEN, log: bool = False) -> AttAccRun:
    """Convenience wrapper: :func:`simulate` of one :class:`Workload`."""
    return simulate(cfg, Workload(length, head_dim, heads_per_channel, max_len), log=log)


# ---- energy ------------------------------------------------------------------------------------
def energy_pj(r: AttAccRun) -> dict[str, float]:
    """AttAcc's attention energy for one stack, as its src/devices.py PIM.get_time_and_energy
    computes it for the 'score' layer from the simulator's request counts (src/ramulator_wrapper.py
    traffic; src/config.py ENERGY_TABLE['PIM'][PIMType.BA], FGDRAM MICRO 2017).

    - ``cell``: every MAC reads 32 B in each of the 64 banks of a channel, at
      (0.11 + 0.44) pJ/bit x 8 per byte (activation folded into a per-byte rate);
    - ``io``: bytes of WRGB (interposer) and of WRGB + MVSB + MVGB (TSV, GIO mux, bank-group mux)
      times AttAcc's 'io' table [0.3, 0.5, 1.23, 1.01]; AttAcc applies these pJ/bit figures to
      bytes, and so does this function, to reproduce its numbers;
    - ``alu``: score-layer FLOPs / 2 x 0.32 pJ, i.e. L x d x heads (AttAcc books no energy for
      the value layer, and the softmax as a separate layer outside the simulator).
    The sum is ``total``. Refresh and row activations have no term."""
    q = r.requests
    w = r.workload
    mem_acc = q["mac"] * 32 * (_N_PCH * _N_RANK * _N_BG * _N_BANK)
    moved = (q["wrgb"] + q["mvsb"] + q["mvgb"]) * 32
    io = q["wrgb"] * 32 * 0.3 + moved * 0.5 + moved * 1.23 + moved * 1.01
    cell = mem_acc * (0.11 + 0.44) * 8
    alu = 2 * 1 * w.length * w.head_dim * w.nhead / 2 * 0.32
    return {"cell": cell, "io": io, "alu": alu, "total": cell + io + alu}




# ---- side by side with our model (docs/attacc.md) -----------------------------------------------
@dataclass(frozen=True)
class Phases:
    """Where one head's dense attention spends its cycles, from the issue cycles of its MACs.

    ``query``: start to the first score MAC; ``score``: first to last score MAC;
    ``transition``: last score MAC to the first value MAC (score moves, softmax, probability
    moves, the row switch); ``value``: first to last value MAC; ``tail``: last value MAC to the
    end of the count (the last move, or in our model the last completion). The five add up to
    ``total``. Times count elapsed cycles: a command AttAcc issues in its cycle c (from 1) issued
    at time c - 1; ours issues at its own cycle (from 0)."""

    query: int
    score: int
    transition: int
    value: int
    tail: int
    total: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def attacc_phases(r: AttAccRun) -> Phases:
    """The phase split of a one-head run kept with ``log=True`` (channel 0)."""
    if r.logs is None or r.workload.heads_per_channel != 1:
        raise ValueError("attacc_phases needs a one-head run simulated with log=True")
    vrow = _V_OFFSET >> _ADDR_ROW
    score = [e[0] - 1 for e in r.logs[0] if e[1] == C_MACAB and e[6] < vrow]
    value = [e[0] - 1 for e in r.logs[0] if e[1] == C_MACAB and e[6] >= vrow]
    return _phases(score, value, r.cycles)


def ours_phases(s: Any) -> Phases:
    """The phase split of our model's schedule (:class:`starc.golden.timing.Schedule`) of a
    dense program (:func:`starc.golden.programs.dense_program`)."""
    from starc.isa import MacArg, Op
    mac = s.program["op"] == int(Op.MACAB)
    val = (s.program["arg"] & int(MacArg.VALUE)) != 0
    return _phases(s.issue[mac & ~val].tolist(), s.issue[mac & val].tolist(), s.total_cycles)


def _phases(score: list[int], value: list[int], total: int) -> Phases:
    return Phases(query=score[0], score=score[-1] - score[0], transition=value[0] - score[-1],
                  value=value[-1] - value[0], tail=total - value[-1], total=total)


def mac_stream_bound(cfg: Config, rows: int) -> int:
    """The opened rows x the all-bank row period, plus the refreshes that fall in that time
    (one tRFC per tREFI - tRFC of streaming), in our conventions (PRE -> REF tRP, the last row's
    tRTP_L + tRP counted): what a schedule of these rows needs at least in our model. AttAcc's
    conventions (count to the last issue, REFab right after PREA) can land a little under it."""
    return cfg.mac_stream_cycles(rows)      # one definition (`starc timing dense` prints it)

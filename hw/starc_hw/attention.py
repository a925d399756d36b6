"""The attention channel: the command front end and bank array with the whole datapath attached.

::

    host cmd ───> Controller ─issue─> host monitor           host wdata ─> BankArray (WR) / query
                      │ fire                                                 │
                      v                                                      v
                  BankArray ── column[i], one cycle after a MAC ──> BankPU[i]   (one per bank)
                      │                                   │ scores[2][slots], acc[2][lanes]
                      │   score MVSB ──> ScoreMove: group mux, tree over the bpt banks of each set
                      │        └─ one beat per token set ──> SoftmaxUnit.wr ──> score monitor
                      │   SFM ─────────> SoftmaxUnit.start
                      │   MVGB ────────> ProbMove: pops `sets` beats of SoftmaxUnit.rd -> PUs
                      │                                                    └──> probability monitor
                      │   value MVSB ──> OutputAccumulator: out[dims] += acc (set order), clears acc
                      v
                  out_fp16 (the step's output, RNE to FP16), out_acc (the accumulator)

Everything follows docs/commands.md ("Functional semantics") and is bit-exact with
:func:`starc.golden.functional.execute`. Every datapath effect happens at a fixed number of clocks
after its command issues (reads in the first cycle after the issue, writes later), so program
order is kept for every read-after-write and write-after-read pair that the golden timing rule
spaces; the latencies meet that rule's contract (``mac_latency``, ``mv_cycles``,
``sfm_cycles``, ``move_spacing``), which the sticky :data:`DP_ERRORS` flags watch at run time.

Clock: an emulated DRAM cycle (tCK) lasts at least one clock (the controller's decisions and a
slow host stand the cycle counter still: docs/rtl.md); the datapath runs on real clocks, the
controller on emulated time, so a stall only makes datapath results earlier in emulated time,
never later.
"""

from __future__ import annotations

import dataclasses

from amaranth.hdl import (
    Array,
    Cat,
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Instance,
    Module,
    Mux,
    ResetInserter,
    ResetSignal,
    Signal,
    Value,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import HEAD_OPS, MAX_HEADS, MacArg, MoveFlag, Op, bit
from starc.numerics import FP16

from . import fp
from .channel import Channel
from .layouts import COMMAND, STATUS_NAMES, issue_layout, status_members
from .pu import BankPU
from .softmax import SoftmaxUnit

__all__ = ["DP_ERRORS", "PU_MODULE", "UNIT_PREFIX", "AttentionChannel", "PUShell",
           "check_attention_config", "falling_edge_domain", "gate_clock", "gate_pu"]

#: Verilog module name of the bank PU when the channel instantiates it (``pu_instances``).
PU_MODULE = "starc_bank_pu"
#: Prefix of the Verilog modules of the glue's FP units with ``pu_instances`` (``fp.SharedUnits``).
UNIT_PREFIX = "starc_fp"

#: Sticky contract flags of the datapath (all zero in a correct run).
DP_ERRORS = data.StructLayout({
    "sfm_start": 1,      # SFM issued while the softmax unit could not start
    "sfm_count": 1,      # SFM n differs from the valid entries written (the golden ProgramError)
    "move_overrun": 1,   # a score move arrived before the previous one left for the buffer
    "prob_missing": 1,   # MVGB found no probabilities waiting when it needed them
    "prob_group": 1,     # MVGB popped probabilities of another group (golden ProgramError)
    "buffer_full": 1,    # the softmax buffer refused a beat (more entries than it holds)
    "head": 1,           # a command named a head the channel holds no state for (heads)
})


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def falling_edge_domain(m: Module) -> None:
    """Add the local domain ``gate_n`` to ``m``: the ``sync`` clock's falling edge, no reset. The
    gates of :func:`gate_clock` are registers in it."""
    m.domains.gate_n = ClockDomain("gate_n", clk_edge="neg", reset_less=True, local=True)
    m.d.comb += ClockSignal("gate_n").eq(ClockSignal())


def gate_clock(m: Module, domain: str, enable: Value, *, name: str, init: int = 0,
               reset: bool = False) -> Signal:
    """Drive ``domain``'s clock with the ``sync`` clock while ``enable`` is high. ``enable`` is
    latched on the falling edge (:func:`falling_edge_domain`, added to ``m`` before), so the gate
    opens and closes only while the clock is low: no glitch, no shortened pulse. The latch,
    ``name``, holds ``init`` until the first falling edge; ``reset``: ``domain``'s reset is
    ``sync``'s. A register of ``domain`` sees the same rising edges as one of ``sync`` on every
    cycle the gate is open, so a design whose ``enable`` is high whenever one of its registers
    would change behaves the same, cycle for cycle (the softmax unit's twin test,
    tests/hw/test_hw_softmax.py, checks exactly this with this function). Returns the latch."""
    gate = Signal(name=name, init=init)
    m.d.gate_n += gate.eq(enable)
    m.d.comb += ClockSignal(domain).eq(ClockSignal() & gate)
    if reset:
        m.d.comb += ResetSignal(domain).eq(ResetSignal())
    return gate


def check_attention_config(cfg: Config, head_dim: int) -> tuple[int, int]:
    """``(banks_per_token, sets)`` of ``head_dim`` on ``cfg``; ValueError when the datapath
    cannot hold it (with what to change)."""
    org, pu = cfg.org, cfg.pu
    slots = cfg.tokens_per_bank_row()
    if pu.lanes != 16 or org.column_bytes != 32:
        raise ValueError(f"the attention datapath needs 16 FP16 lanes per 32-byte column; this "
                         f"configuration has pu.lanes {pu.lanes} and {org.column_bytes}-byte "
                         f"columns")
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0 \
            or head_dim % 32:
        raise ValueError(f"head_dim must be a positive multiple of 32, not {head_dim!r}")
    bpt = cfg.banks_per_token(head_dim)
    B = org.banks_per_group
    if bpt > B or B % bpt:
        raise ValueError(f"head_dim {head_dim} spans {bpt} banks; a group has {B} banks "
                         f"(banks_per_group must be a multiple of head_dim / 32)")
    sets = B // bpt
    if sets * slots > 32:
        raise ValueError(f"head_dim {head_dim} on {B}-bank groups gives {sets * slots} entries "
                         f"per score move; the 32-bit valid mask holds 32 (use a larger head_dim "
                         f"or fewer banks per group)")
    if pu.sfm_lanes != slots:
        raise ValueError(f"pu.sfm_lanes ({pu.sfm_lanes}) must equal the token slots of a bank row "
                         f"({slots}): one softmax-buffer beat is one token set")
    return bpt, sets


def gate_pu(top: Module, m: Module, name: str, ports: dict[str, Value], reset: Value,
            rst: Value, domain: str, mac_pipeline: int) -> Signal:
    """The gated clock ``domain`` of a clock-gated PU (:class:`AttentionChannel`
    ``clock_gating``; its signals named after ``name``). The PU's input registers
    (:class:`PUShell` ``registered``) run on it too, so it is on in the cycle a beat or an
    accumulator clear reaches the PU's ports (``ports``, captured at its end), the cycle after
    (the PU acts on the registered beat), the ``mac_pipeline`` cycles after that (results still
    in its pipeline), and with the channel's reset or restart ``reset`` and its registered copy
    ``rst`` (the PU's reset); the enable goes through a falling-edge register (returned: high
    while the clock runs).

    Why no input is lost or taken twice: the gate is on in cycle t whenever the PU acts on its
    registers in t (a registered beat, clear or reset, or a result in the pipeline), and each of
    those implies that it was on in t - 1 too, so the registers hold exactly the ports of
    t - 1, as an always-clocked register would. A cycle the gate is on only for a beat arriving
    at the ports follows at least ``mac_pipeline`` idle cycles (or the start): the PU then takes
    registers that were written at the last edge after a beat, which carry no beat and no
    clear (a bubble through an empty pipeline)."""
    P = mac_pipeline
    beat = Signal(name=f"{name}_beat")          # at the ports, taken at the end of the cycle
    clear = Signal(name=f"{name}_clear")
    m.d.comb += [beat.eq(ports["mac_valid"] | ports["wrgb_valid"] | ports["prob_valid"]),
                 clear.eq(ports["acc_clear"].any())]
    held_beat = Signal(name=f"{name}_held_beat")    # the same, in the PU's input registers
    held_clear = Signal(name=f"{name}_held_clear")
    recent = Signal(P, name=f"{name}_recent")       # a registered beat 1 .. P cycles ago
    m.d.sync += [held_beat.eq(beat), held_clear.eq(clear),
                 recent.eq(Cat(held_beat, recent[:-1]))]
    en = Signal(name=f"{name}_en")
    m.d.comb += en.eq(beat | clear | held_beat | held_clear | recent.any() | reset | rst)
    return gate_clock(top, domain, en, name=f"{name}_gate")


class AttentionChannel(wiring.Component):
    """One PIM channel computing one decode step of attention for one query head.

    Parameters
    ----------
    cfg : Config
        The preset (after overrides); ``pu.banks_per_pu`` > 1 is honoured by masking the MACs of
        the banks a command does not select (one :class:`BankPU` per bank holds the state).
    head_dim : int
        Head dimension d (fixes banks per token and token sets per group row).
    rows : int
        Rows stored per bank (power of two; row addresses wrap).
    max_entries : int
        Valid entries one SFM may hold (the softmax buffer; rounded up to a power of two).
    max_beats : int | None
        Score-move beats (token sets) one SFM may hold; default ``2 * max_entries / slots``.
    refresh, cycle_width : as :class:`starc_hw.channel.Channel`.
    pu_instances : bool
        Instantiate the bank PUs as instances of one Verilog module :data:`PU_MODULE`, and the
        glue's combinational FP units (the moves' adders, the output's rounding) as instances of
        one module per kind (:data:`UNIT_PREFIX`; :class:`~starc_hw.fp.SharedUnits`), whose
        sources :meth:`extra_verilog` returns, instead of elaborating each one: Verilog
        generation then costs one PU and one unit of each kind instead of one per use (Verilator
        and Yosys see each module definition once; the 64-bank channel's glue held 240 such
        units, a quarter of its Verilog). Not for ``amaranth.sim``, which cannot simulate
        instances.
    heads : int
        Heads the datapath holds state for (docs/multihead.md; default 1): per head a query and
        value accumulators in every PU, a softmax-buffer part, an output accumulator. The
        commands of :data:`starc.isa.HEAD_OPS` name their head in the ``row`` field; with one
        head the field is not looked at, with more a head out of range raises
        ``dp_error.head``. With ``heads`` > 1 ``out_acc`` / ``out_fp16`` hold every head's
        output, head-major (``[head * head_dim + e]``), the beat monitors carry the head, and an
        MVGB's beats reach the PUs two cycles later than with one head (the softmax unit reads
        the named head's buffer on demand; the value MACs wait ``mv_cycles`` = 4 in any case).
    clock_gating : bool
        Clock each bank PU only in the cycles it has work (ASIC-style clock gating). Every input
        of a PU (MAC column, query chunk, probabilities, accumulator clear, and its reset:
        reset or ``restart``) goes through a register first (the data inputs inside the PU's
        module, on its own clock: :class:`PUShell` ``registered``), and the PU behind has one
        of its ``mac_pipeline`` stages fewer, so every result lands in the same cycle with the
        same bits as without gating (the co-simulation tests check both). The PU's clock runs
        in the cycle an input arrives, the cycle its registers carry it and the
        ``mac_pipeline`` cycles after (:func:`gate_pu`); the enable is latched on the falling
        edge (a glitch-free gate), so the channel's signals must change on the rising edge, as
        the co-simulation harness (:class:`starc_hw.attention_sim.AttentionSim`) drives its
        ports. Idle PUs then cost a simulator nothing; FPGA builds leave it off (gated clocks).
        The softmax unit
        runs on a gated clock of its own too (``softmax_gating``, default: as
        ``clock_gating``), on while its ``active`` says it has work (a beat or an SFM offered,
        a softmax running or draining, a read-out that can move), in reset and on restart. Its
        inputs are not registered (nothing moves in time), so its enable follows them in the
        same cycle: the ports must change on the rising edge, as the co-simulation harness
        (:class:`starc_hw.attention_sim.AttentionSim`) drives them.

    Members
    -------
    cmd, wdata, issue, rdata, rdata_valid, cycle, complete, issued, fault, violations,
    violation_count : as :class:`starc_hw.channel.Channel`.
    score_valid, score_beat : Out
        Strobe: a beat (one token set of a score move) entering the softmax buffer: ``group``,
        ``mask`` (its valid slots), ``scores`` (FP32 bits).
    prob_valid, prob_beat : Out
        Strobe: a beat of probabilities an MVGB writes into the PUs: ``group``, ``set``,
        ``slot`` (probability slot), ``probs`` (FP16 bits).
    out_acc : Out(ArrayLayout(acc_width, head_dim))
        The channel output accumulator (FP32, or FP16 with ``pu.acc_format = "fp16"``).
    out_fp16 : Out(ArrayLayout(16, head_dim))
        The step's output: ``out_acc`` rounded to FP16 (RNE).
    dp_error : Out(DP_ERRORS)
        Sticky datapath contract flags.
    restart : In(1)
        A pulse resets every register (controller time and timestamps, PU state, softmax, output
        accumulator) and keeps the bank storage, so that a memory image loaded by one program
        serves the next (testbenches and host links).
    busy : Out(1)
        A datapath operation is in flight (a move, a softmax, probabilities waiting).
    """

    def __init__(self, *, cfg: Config, head_dim: int, rows: int = 4, max_entries: int = 256,
                 max_beats: int | None = None, refresh: bool = True,
                 cycle_width: int = 48, pu_instances: bool = False,
                 clock_gating: bool = False, heads: int = 1,
                 softmax_gating: bool | None = None) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        if isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= MAX_HEADS:
            raise ValueError(f"heads must be an integer in 1..{MAX_HEADS}, not {heads!r}")
        self._heads = heads
        self._bpt, self._sets = check_attention_config(cfg, head_dim)
        if clock_gating and cfg.pu.mac_pipeline < 2:
            raise ValueError(f"clock_gating needs pu.mac_pipeline of at least 2 (the gated PU "
                             f"registers its inputs in one stage), not {cfg.pu.mac_pipeline}")
        self._gating = bool(clock_gating)
        self._sfm_gating = self._gating if softmax_gating is None else bool(softmax_gating)
        self._cfg = cfg
        self._d = head_dim
        slots = cfg.tokens_per_bank_row()
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries <= 0:
            raise ValueError(f"max_entries must be a positive integer, not {max_entries!r}")
        self._entries = _pow2_at_least(max(max_entries, cfg.pu.sfm_lanes))
        self._beats = _pow2_at_least(max_beats if max_beats is not None
                                     else 2 * self._entries // slots)
        self._fmt = fp.acc_format(cfg.pu.acc_format)
        self._pu_instances = bool(pu_instances)
        self._ch = Channel(cfg=cfg, rows=rows, refresh=refresh, cycle_width=cycle_width,
                           heads=heads)
        self._sfm = SoftmaxUnit(cfg=cfg, entries=self._entries, beats=self._beats, heads=heads)
        G = cfg.org.groups_per_channel
        bits = cfg.org.column_bytes * 8
        head = {"head": range(heads)} if heads > 1 else {}
        self.score_layout = data.StructLayout({
            "group": range(G), "mask": slots, "scores": data.ArrayLayout(32, slots), **head})
        self.prob_layout = data.StructLayout({
            "group": range(G), "set": range(max(2, self._sets)), "slot": 1,
            "probs": data.ArrayLayout(16, slots), **head})
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "wdata": In(stream.Signature(bits)),
            "issue": Out(stream.Signature(issue_layout(cycle_width))),
            "rdata": Out(self._ch.rdata.shape()),
            "rdata_valid": Out(1),
            "score_valid": Out(1),
            "score_beat": Out(self.score_layout),
            "prob_valid": Out(1),
            "prob_beat": Out(self.prob_layout),
            "out_acc": Out(data.ArrayLayout(self._fmt.width, heads * head_dim)),
            "out_fp16": Out(data.ArrayLayout(16, heads * head_dim)),
            **status_members(cycle_width),
            "dp_error": Out(DP_ERRORS),
            "busy": Out(1),
            "restart": In(1),
        })

    @property
    def sets(self) -> int:
        return self._sets

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def beats(self) -> int:
        return self._beats

    @property
    def heads(self) -> int:
        return self._heads

    def elaborate(self, platform: object) -> Module:  # noqa: C901 (one datapath, read in order)
        cfg, fmt, d = self._cfg, self._fmt, self._d
        org = cfg.org
        G, B = org.groups_per_channel, org.banks_per_group
        NB, Ln, S = G * B, cfg.pu.lanes, cfg.tokens_per_bank_row()
        bpt, sets = self._bpt, self._sets
        bppu = cfg.pu.banks_per_pu
        top = Module()
        m = Module()          # the glue logic; its registers restart with the rest
        top.submodules.glue = ResetInserter(self.restart)(m)
        top.submodules.channel = ResetInserter(self.restart)(self._ch)
        ch, sfm = self._ch, self._sfm
        if self._gating or self._sfm_gating:   # enables latched on the falling edge (glitch-free)
            falling_edge_domain(top)
        if self._sfm_gating:
            # the softmax unit on its own gated clock: on while it has work (``active``: a
            # beat or an SFM offered, a softmax running or draining, a read-out that can move),
            # in reset and on restart; its inputs stay as they are, so nothing moves in time
            top.submodules.softmax = DomainRenamer("sfm")(ResetInserter(self.restart)(sfm))
            top.domains += ClockDomain("sfm", local=True)
            gate_clock(top, "sfm", sfm.active | ResetSignal() | self.restart, name="sfm_gate",
                       init=1, reset=True)   # open until the first falling edge
        else:
            top.submodules.softmax = ResetInserter(self.restart)(sfm)

        # ---- the channel's host side passes through ----------------------------------------------
        wiring.connect(m, wiring.flipped(self.cmd), ch.cmd)
        wiring.connect(m, wiring.flipped(self.wdata), ch.wdata)
        wiring.connect(m, ch.issue, wiring.flipped(self.issue))
        m.d.comb += [self.rdata.eq(ch.rdata), self.rdata_valid.eq(ch.rdata_valid)]
        m.d.comb += [getattr(self, k).eq(getattr(ch, k)) for k in STATUS_NAMES]
        fire = ch.issue.valid & self.issue.ready
        cmd = ch.issue.payload.cmd
        err = self.dp_error
        H = self._heads
        hb = (H - 1).bit_length()           # bits of a head index (0 with one head)
        cmd_head = cmd.row[:hb] if H > 1 else None
        if H > 1:   # a command naming a head beyond the ones held
            names_head = Cat(*[cmd.op == op for op in sorted(HEAD_OPS)]).any()
            with m.If(fire & names_head & (cmd.row >= H)):
                m.d.sync += err.head.eq(1)

        # ---- processing units --------------------------------------------------------------------
        vbit, bbit = bit(MacArg.VALUE), bit(MacArg.BUF)
        ccmd = ch.column_cmd
        pus = []
        gating = self._gating
        proto = PUShell(cfg=cfg, registered=gating, heads=H) if self._pu_instances else None
        if proto is not None:   # only a port template: never elaborated
            proto._MustUse__silence = True
            proto._pu._MustUse__silence = True
        for i in range(NB):
            shell = proto if proto is not None else PUShell(cfg=cfg, registered=gating, heads=H)
            ports = shell.ports(f"pu{i}_") if self._pu_instances else \
                {name: getattr(shell, name) for name in shell.signature.members}
            domain, rst = "sync", ResetSignal() | self.restart
            pu = dict(ports)
            if gating:   # the PU registers its inputs on its own clock (see clock_gating)
                domain = f"pu{i}"
                top.domains += ClockDomain(domain, local=True)
                rst = Signal(name=f"pu{i}_rst", reset_less=True)
                m.d.sync += rst.eq(ResetSignal() | self.restart)
                gate_pu(top, m, f"pu{i}", ports, ResetSignal() | self.restart, rst, domain,
                        cfg.pu.mac_pipeline)
            if self._pu_instances:
                top.submodules[f"pu{i}"] = Instance(
                    PU_MODULE, i_clk=ClockSignal(domain), i_rst=rst,
                    **{f"{'o' if name in PUShell.OUTPUTS else 'i'}_{name}": sig.as_value()
                       if hasattr(sig, "as_value") else sig for name, sig in ports.items()})
            elif gating:
                top.submodules[f"pu{i}"] = DomainRenamer(domain)(shell)
                top.d.comb += ResetSignal(domain).eq(rst)
            else:
                top.submodules[f"pu{i}"] = ResetInserter(self.restart)(shell)
            pus.append(pu)
            b = i % B
            sel = ch.column_valid[i]
            if bppu > 1:
                sel = sel & (ccmd.bank == b % bppu)
            m.d.comb += [
                pu["bank_slice"].eq(b % bpt),
                pu["mac_valid"].eq(sel),
                pu["mac"].data.eq(ch.column[i]),
                pu["mac"].col.eq(ccmd.col),
                pu["mac"].value.eq(ccmd.arg[vbit]),
                pu["mac"].buf.eq(ccmd.arg[bbit]),
                pu["wrgb_valid"].eq(ch.wrgb_valid),
                pu["wrgb"].chunk.eq(ch.wrgb_chunk),
                pu["wrgb"].data.eq(ch.wrgb_data),
            ]
            if H > 1:   # the MAC's head (its query / accumulators), the WRGB's (issued now)
                m.d.comb += [pu["mac"].head.eq(ccmd.row[:hb]), pu["wrgb"].head.eq(cmd_head)]

        # the glue's combinational FP units: instances of one module per kind with pu_instances
        units = self._glue_units()
        add = units.add if units is not None else fp.add
        widen = units.widen if units is not None else fp.widen
        narrow = units.narrow if units is not None else fp.narrow

        def to32(m: Module, x: Value) -> Value:
            return x if fmt.width == 32 else widen(m, x)

        # ---- score move: group mux, tree over the banks of each set, one beat per set ------------
        mv_valid = Signal()
        mv_group = Signal(range(G))
        mv_buf = Signal()
        mv_mask = Signal(32)
        mv_head = Signal(range(H))
        is_mvsb = fire & (cmd.op == Op.MVSB)
        m.d.sync += [mv_valid.eq(is_mvsb & ~cmd.col[bit(MoveFlag.VALUE)]),
                     mv_group.eq(cmd.group), mv_buf.eq(cmd.col[bit(MoveFlag.BUF)]),
                     mv_mask.eq(cmd.arg[:32])]
        if H > 1:
            m.d.sync += mv_head.eq(cmd_head)
        pend = [Signal(self._sfm.wr_layout, name=f"pend{j}") for j in range(sets)]
        pend_valid = Signal(sets)
        for j in range(sets):
            sums = []
            for s in range(S):
                parts = []
                for k in range(bpt):
                    b = j * bpt + k
                    regs = Array(pus[g * B + b]["scores"][q][s] for g in range(G) for q in range(2))
                    x = Signal(fmt.width, name=f"mvsel_{j}_{s}_{k}")
                    m.d.comb += x.eq(regs[Cat(mv_buf, mv_group)])
                    parts.append(x)
                sums.append(to32(m, fp.tree(m, fmt, parts, adder=add)))
            with m.If(mv_valid):
                m.d.sync += [pend[j].scores[s].eq(sums[s]) for s in range(S)]
                m.d.sync += [pend[j].mask.eq(mv_mask[j * S:(j + 1) * S]),
                             pend[j].tag.eq(mv_group)]
                if H > 1:
                    m.d.sync += pend[j].head.eq(mv_head)
        # the lowest pending beat goes to the softmax buffer
        head = Signal(range(max(2, sets)))
        for j in reversed(range(sets)):
            with m.If(pend_valid[j]):
                m.d.comb += head.eq(j)
        pend_arr = Array(pend)
        m.d.comb += [sfm.wr.valid.eq(pend_valid.any()), sfm.wr.payload.eq(pend_arr[head])]
        taken = Signal(sets)
        with m.If(sfm.wr.valid & sfm.wr.ready):
            m.d.comb += taken.eq(1 << head)
        with m.If(sfm.wr.valid & ~sfm.wr.ready):
            m.d.sync += err.buffer_full.eq(1)
        with m.If(mv_valid):
            m.d.sync += pend_valid.eq((1 << sets) - 1)
            with m.If((pend_valid & ~taken).any()):
                m.d.sync += err.move_overrun.eq(1)
        with m.Else():
            m.d.sync += pend_valid.eq(pend_valid & ~taken)
        m.d.comb += [
            self.score_valid.eq(sfm.wr.valid & sfm.wr.ready),
            self.score_beat.group.eq(sfm.wr.payload.tag),
            self.score_beat.mask.eq(sfm.wr.payload.mask),
            self.score_beat.scores.eq(sfm.wr.payload.scores),
        ]
        if H > 1:
            m.d.comb += self.score_beat.head.eq(sfm.wr.payload.head)

        # ---- softmax -----------------------------------------------------------------------------
        is_sfm = fire & (cmd.op == Op.SFM)
        m.d.comb += sfm.start.valid.eq(is_sfm)
        if H > 1:
            m.d.comb += [sfm.start.payload.n.eq(cmd.arg[:32]), sfm.start.payload.head.eq(cmd_head)]
        else:
            m.d.comb += sfm.start.payload.eq(cmd.arg[:32])
        with m.If(is_sfm & ~sfm.start.ready):
            m.d.sync += err.sfm_start.eq(1)
        with m.If(sfm.error):
            m.d.sync += err.sfm_count.eq(1)

        # ---- probability move: pop `sets` beats into the PUs of the group -----------------------
        if H == 1:
            pg_busy = self._prob_move(m, cmd, fire, sfm, pus)
        else:
            pg_busy = self._prob_move_heads(m, cmd, fire, sfm, pus)

        # ---- value move: output accumulator ------------------------------------------------------
        # with several heads "half" indexes 2 * head + h (the head's accumulators and output)
        vm_valid = Signal()
        vm_group = Signal(range(G))
        vm_half = Signal(range(2 * H))
        vhalf = cmd.col[bit(MoveFlag.HALF)]
        m.d.sync += [vm_valid.eq(is_mvsb & cmd.col[bit(MoveFlag.VALUE)]), vm_group.eq(cmd.group),
                     vm_half.eq(Cat(vhalf, cmd_head) if H > 1 else vhalf)]
        out = self.out_acc

        def dim(hh: int, e: int) -> int:      # out index of head hh // 2, half hh % 2, dim e
            return (hh // 2) * d + e

        for k in range(bpt):
            for lane in range(Ln):
                x = Signal(fmt.width, name=f"vmcur_{k}_{lane}")
                m.d.comb += x.eq(Array(out[dim(hh, 32 * k + 16 * (hh % 2) + lane)]
                                       for hh in range(2 * H))[vm_half])
                for j in range(sets):
                    b = j * bpt + k
                    regs = Array(pus[g * B + b]["acc"][hh][lane] for g in range(G)
                                 for hh in range(2 * H))
                    part = Signal(fmt.width, name=f"vmsel_{k}_{lane}_{j}")
                    m.d.comb += part.eq(regs[Cat(vm_half, vm_group) if H & (H - 1) == 0
                                             else vm_group * (2 * H) + vm_half])
                    x = add(m, fmt, x, part)
                for hh in range(2 * H):
                    with m.If(vm_valid & (vm_half == hh)):
                        m.d.sync += out[dim(hh, 32 * k + 16 * (hh % 2) + lane)].eq(x)
        for i, pu in enumerate(pus):
            m.d.comb += pu["acc_clear"].eq(
                Mux(vm_valid & (vm_group == i // B), 1 << vm_half, 0)[:2 * H])
        for e in range(H * d):
            v = out[e]
            m.d.comb += self.out_fp16[e].eq(v if fmt == FP16 else narrow(m, v))
        if units is not None and units.modules != self._glue_units(declared=True).modules:
            raise RuntimeError(f"the glue instantiates {units.modules}, but extra_verilog "
                               f"declares {self._glue_units(declared=True).modules}")

        m.d.comb += self.busy.eq(mv_valid | pend_valid.any() | sfm.busy | pg_busy
                                 | vm_valid | sfm.rd.valid)
        return top

    def _prob_move(self, m: Module, cmd: Value, fire: Value, sfm: SoftmaxUnit,
                   pus: list[dict]) -> Value:
        """One head: pop ``sets`` beats of the read-out stream into the PUs of the MVGB's group.
        Returns "beats still to pop"."""
        G, B = self._cfg.org.groups_per_channel, self._cfg.org.banks_per_group
        sets, bpt = self._sets, self._bpt
        err = self.dp_error
        # The first beat pops in the MVGB's own issue cycle, so that the next MVGB (move_spacing
        # later) finds the port free.
        pg_group = Signal(range(G))
        pg_slot = Signal()
        pg_left = Signal(range(sets + 1))
        pg_set = Signal(range(max(2, sets)))
        is_mvgb = fire & (cmd.op == Op.MVGB)
        cur_group = Signal(range(G))
        cur_slot = Signal()
        cur_left = Signal(range(sets + 1))
        cur_set = Signal(range(max(2, sets)))
        m.d.comb += [
            cur_group.eq(Mux(is_mvgb, cmd.group, pg_group)),
            cur_slot.eq(Mux(is_mvgb, cmd.col[bit(MoveFlag.BUF)], pg_slot)),
            cur_left.eq(Mux(is_mvgb, sets, pg_left)),
            cur_set.eq(Mux(is_mvgb, 0, pg_set)),
        ]
        with m.If(is_mvgb & (pg_left != 0)):
            m.d.sync += err.move_overrun.eq(1)
        pop = Signal()
        m.d.comb += [sfm.rd.ready.eq(cur_left != 0), pop.eq(sfm.rd.valid & sfm.rd.ready)]
        m.d.sync += [pg_group.eq(cur_group), pg_slot.eq(cur_slot)]
        with m.If(pop):
            m.d.sync += [pg_left.eq(cur_left - 1), pg_set.eq(cur_set + 1)]
            with m.If(sfm.rd.payload.tag != cur_group):
                m.d.sync += err.prob_group.eq(1)
        with m.Elif(cur_left != 0):
            m.d.sync += [pg_left.eq(cur_left), pg_set.eq(cur_set), err.prob_missing.eq(1)]
        for i, pu in enumerate(pus):
            g, b = divmod(i, B)
            m.d.comb += [
                pu["prob_valid"].eq(pop & (cur_group == g) & (cur_set == b // bpt)),
                pu["prob"].slot.eq(cur_slot),
                pu["prob"].data.eq(sfm.rd.payload.probs),
            ]
        m.d.comb += [
            self.prob_valid.eq(pop),
            self.prob_beat.group.eq(cur_group),
            self.prob_beat.set.eq(cur_set),
            self.prob_beat.slot.eq(cur_slot),
            self.prob_beat.probs.eq(sfm.rd.payload.probs),
        ]

        return pg_left != 0

    def _prob_move_heads(self, m: Module, cmd: Value, fire: Value, sfm: SoftmaxUnit,
                         pus: list[dict]) -> Value:
        """Several heads: an MVGB pops ``sets`` beats of its head, one per cycle from its issue
        cycle on; each comes back from the softmax unit two cycles after its pop and goes into
        the PUs of (group, set j), probability slot ``MoveFlag.BUF``. Returns "a beat in
        flight"."""
        G, B = self._cfg.org.groups_per_channel, self._cfg.org.banks_per_group
        sets, bpt, H = self._sets, self._bpt, self._heads
        err = self.dp_error
        is_mvgb = fire & (cmd.op == Op.MVGB)
        left = Signal(range(sets + 1))
        g_r, slot_r, head_r = Signal(range(G)), Signal(), Signal(range(H))
        set_r = Signal(range(max(2, sets)))
        with m.If(is_mvgb & (left != 0)):
            m.d.sync += err.move_overrun.eq(1)
        cur = {"group": Mux(is_mvgb, cmd.group, g_r),
               "slot": Mux(is_mvgb, cmd.col[bit(MoveFlag.BUF)], slot_r),
               "head": Mux(is_mvgb, cmd.row[:(H - 1).bit_length()], head_r),
               "set": Mux(is_mvgb, 0, set_r), "left": Mux(is_mvgb, sets, left)}
        popping = cur["left"] != 0
        m.d.comb += [sfm.pop.valid.eq(popping), sfm.pop.payload.eq(cur["head"])]
        m.d.sync += [g_r.eq(cur["group"]), slot_r.eq(cur["slot"]), head_r.eq(cur["head"])]
        with m.If(popping):
            m.d.sync += [left.eq(cur["left"] - 1), set_r.eq(cur["set"] + 1)]
        # what each pop is for, two cycles later when its beat comes back
        tags = data.StructLayout({"valid": 1, "group": range(G), "set": range(max(2, sets)),
                                  "slot": 1, "head": range(H)})
        d1, d2 = Signal(tags), Signal(tags)
        m.d.sync += [d1.valid.eq(popping), d1.group.eq(cur["group"]), d1.set.eq(cur["set"]),
                     d1.slot.eq(cur["slot"]), d1.head.eq(cur["head"]), d2.eq(d1)]
        beat = sfm.rd.valid & d2.valid
        with m.If(d2.valid & ~sfm.rd.valid):
            m.d.sync += err.prob_missing.eq(1)
        with m.If(sfm.missing):
            m.d.sync += err.prob_missing.eq(1)
        with m.If(beat & (sfm.rd.payload.tag != d2.group)):
            m.d.sync += err.prob_group.eq(1)
        for i, pu in enumerate(pus):
            g, b = divmod(i, B)
            m.d.comb += [
                pu["prob_valid"].eq(beat & (d2.group == g) & (d2.set == b // bpt)),
                pu["prob"].slot.eq(d2.slot),
                pu["prob"].data.eq(sfm.rd.payload.probs),
            ]
        m.d.comb += [
            self.prob_valid.eq(beat),
            self.prob_beat.group.eq(d2.group),
            self.prob_beat.set.eq(d2.set),
            self.prob_beat.slot.eq(d2.slot),
            self.prob_beat.head.eq(d2.head),
            self.prob_beat.probs.eq(sfm.rd.payload.probs),
        ]
        return (left != 0) | d1.valid | d2.valid

    def _glue_units(self, *, declared: bool = False) -> fp.SharedUnits | None:
        """With ``pu_instances``, the glue's combinational FP units as instances
        (:class:`~starc_hw.fp.SharedUnits`, modules ``starc_fp_*``; None without). ``declared``:
        the units with every kind the glue instantiates already declared, without elaborating it:
        the adders of the moves in the accumulation format, and for the output the rounding to
        FP16 (FP32 accumulators) or the scores' widening to FP32 (FP16 accumulators)."""
        if not self._pu_instances:
            return None
        units = fp.SharedUnits(UNIT_PREFIX)
        if declared:
            units.declare(f"add{self._fmt.width}", "widen" if self._fmt == FP16 else "narrow")
        return units

    def extra_verilog(self) -> str:
        """Verilog of the modules the instances refer to (empty without ``pu_instances``): the
        glue's FP units (:data:`UNIT_PREFIX`) and the bank PU (:data:`PU_MODULE`, last)."""
        units = self._glue_units(declared=True)
        if units is None:
            return ""
        from amaranth.back import verilog

        shell = PUShell(cfg=self._cfg, registered=self._gating, heads=self._heads)
        return units.verilog() + verilog.convert(shell, name=PU_MODULE, emit_src=False)


class PUShell(wiring.Component):
    """:class:`~starc_hw.pu.BankPU` with plain ports (valid bits and payloads side by side), the
    module :class:`AttentionChannel` instantiates once per bank with ``pu_instances``.

    ``registered``: the shell of a clock-gated PU (:class:`AttentionChannel` ``clock_gating``),
    which registers its inputs (:data:`REGISTERED`) on its own clock before the PU: its PU has
    one pipeline stage fewer (``pu.mac_pipeline - 1``), so that results land in the same cycles.
    The registers are inside the shell, so that no logic of the PU depends combinationally on
    its ports: a simulator that compiles the shell apart (a Verilator hierarchical block)
    evaluates it only on its own clock edges, not on every change of the channel's signals."""

    OUTPUTS = ("scores", "acc")
    #: The inputs a clock-gated PU takes through a register.
    REGISTERED = ("mac_valid", "mac", "wrgb_valid", "wrgb", "prob_valid", "prob", "acc_clear")

    def __init__(self, *, cfg: Config, registered: bool = False, heads: int = 1) -> None:
        self._registered = bool(registered)
        if registered:
            cfg = cfg.replace(pu=dataclasses.replace(cfg.pu,
                                                     mac_pipeline=cfg.pu.mac_pipeline - 1))
        self._pu = BankPU(cfg=cfg, heads=heads)
        pu = self._pu
        super().__init__({
            "mac_valid": In(1), "mac": In(pu.mac_layout),
            "wrgb_valid": In(1), "wrgb": In(pu.wrgb_layout),
            "prob_valid": In(1), "prob": In(pu.prob_layout),
            "bank_slice": In(pu.bank_slice.shape()), "acc_clear": In(pu.acc_clear.shape()),
            "scores": Out(pu.scores.shape()), "acc": Out(pu.acc.shape()),
        })

    def ports(self, prefix: str = "pu_", names: tuple[str, ...] | None = None, *,
              reset_less: bool = False) -> dict[str, object]:
        """Fresh signals shaped like this shell's ports (all, or ``names``)."""
        members = self.signature.members
        return {name: Signal(members[name].shape, name=f"{prefix}{name}", reset_less=reset_less)
                for name in (names or tuple(members))}

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.pu = pu = self._pu
        inp = {name: getattr(self, name) for name in self.REGISTERED}
        if self._registered:   # reset-less: they hold the ports of the last clock, as before
            regs = self.ports("in_", self.REGISTERED, reset_less=True)
            m.d.sync += [regs[n].eq(inp[n]) for n in self.REGISTERED]
            inp = regs
        m.d.comb += [
            pu.mac.valid.eq(inp["mac_valid"]), pu.mac.payload.eq(inp["mac"]),
            pu.wrgb.valid.eq(inp["wrgb_valid"]), pu.wrgb.payload.eq(inp["wrgb"]),
            pu.prob.valid.eq(inp["prob_valid"]), pu.prob.payload.eq(inp["prob"]),
            pu.bank_slice.eq(self.bank_slice), pu.acc_clear.eq(inp["acc_clear"]),
            self.scores.eq(pu.scores), self.acc.eq(pu.acc),
        ]
        return m

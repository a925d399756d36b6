"""Simulation harness of the attention channel: stimulus and capture memories around the DUT, so
that a decode step runs under a simulator with no testbench code on any clock.

::

                 ld_* (one word per clock, before start)          rd_* (after done)
                    │                                                  ^
                    v                                                  │
    program memory ──cmd──> ┌────────────────────┐ ──issue──> issue capture memory
    (idle: xorshift)        │  AttentionChannel   │  (backpressure: xorshift)
    wdata memory ──wdata──> │  (starc_hw.attention)│ ──score beats──> score capture memory
    (idle: xorshift)        └────────────────────┘ ──prob beats───> probability capture memory
                                     │ busy, cycle                     done, last_cycle

A testbench loads the program and its data beats through ``ld_*`` (and, for a memory image,
writes the bank memories by simulator access: ``starc_sim.tb_attention``), sets the expected
counts, pulses ``start`` and waits for ``done``: every expected command issued, every expected
beat captured, the datapath idle (or a controller fault). Then it reads the captures through
``rd_*``. Idle cycles on the command and data streams and backpressure on the issue stream come
from seeded xorshift generators (``seed``; ``idle`` and ``backpressure`` are probabilities in
units of 2^-16), so a run repeats exactly from its seed. Emulated time (the controller's) does
not depend on them: only the number of clocks does.

With ``host`` high the channel's host streams are the top-level ``cmd`` / ``wdata`` / ``issue``
ports instead (a testbench that drives every clock, as a host would); the outputs of the channel
are passed through under their own names in both modes.

**Registered inputs.** The channel runs in the domain ``core``: the ``sync`` clock, with the
``sync`` reset one register later; ``host``, ``restart``, ``idle``, ``backpressure``, ``n_cmds``
and ``n_wdata`` are registered before use (each takes effect one clock later, the order of a
testbench's writes kept), and the host streams pass through two-entry FIFOs whose channel side
is registered. The inputs left combinational feed the harness alone (``ld_*`` the stimulus
memories' write ports, ``rd_*`` the capture read port, ``start``, ``seed`` and ``expect_*`` its
counters). No emulated cycle depends on any of this. (The work Verilator repeated on every
evaluation went away with the ports-only visibility of the build, not with this: docs/rtl.md,
"Registered inputs" and "Only the ports are visible".)

This is a simulation harness, not part of the modelled device; its memories are sized for one
decode step (``prog_depth`` commands, ``beat_depth`` beats of each kind).
"""

from __future__ import annotations

from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Module,
    Mux,
    ResetSignal,
    Signal,
    Value,
)
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from starc.config import Config

from .attention import AttentionChannel
from .layouts import COMMAND, issue_layout

__all__ = ["CAPTURES", "LOADS", "AttentionSim"]

#: ``ld_sel`` values: the memory ``ld_*`` writes.
LOADS = {"program": 0, "wdata": 1}
#: ``rd_sel`` values: the capture memory ``rd_*`` reads.
CAPTURES = {"issue": 0, "score": 1, "prob": 2}

#: Passed through from the channel under the same names.
_OUTPUTS = ("rdata", "rdata_valid", "score_valid", "score_beat", "prob_valid", "prob_beat",
            "out_acc", "out_fp16", "cycle", "complete", "issued", "fault", "violations",
            "violation_count", "dp_error", "busy")


def _xorshift(m: Module, name: str) -> Signal:
    """A 32-bit xorshift generator (Marsaglia's 13/17/5 triple); its state, a new value every
    clock."""
    x = Signal(32, init=1, name=name)
    t1 = Signal(32, name=f"{name}_a")
    t2 = Signal(32, name=f"{name}_b")
    t3 = Signal(32, name=f"{name}_c")
    m.d.comb += [t1.eq(x ^ (x << 13)[:32]), t2.eq(t1 ^ (t1 >> 17)), t3.eq(t2 ^ (t2 << 5)[:32])]
    m.d.core += x.eq(t3)
    return x


class AttentionSim(wiring.Component):
    """:class:`~starc_hw.attention.AttentionChannel` with stimulus and capture memories.

    Parameters
    ----------
    cfg, head_dim, rows, max_entries, max_beats, refresh, cycle_width, pu_instances,
    clock_gating, heads, softmax_gating :
        The channel's (:class:`~starc_hw.attention.AttentionChannel`).
    prog_depth : int
        Commands (and data beats) the stimulus memories hold; also the issue capture depth.
    beat_depth : int
        Score beats and probability beats the capture memories hold.

    Members
    -------
    host : In(1)
        The channel's host streams are the ``cmd`` / ``wdata`` / ``issue`` ports (otherwise the
        stimulus memories and the issue capture).
    cmd, wdata, issue, restart : as the channel's (used with ``host``).
    ld_en, ld_sel, ld_addr, ld_data : In
        Write ``ld_data`` at ``ld_addr`` of the memory ``ld_sel`` (:data:`LOADS`) this clock.
    n_cmds : In(16)
        Commands (and, separately, ``n_wdata`` data beats) to stream after ``start``.
    idle, backpressure : In(16)
        Probability of an idle cycle on each source and of backpressure on the issue stream, in
        units of 2^-16 (a cycle is idle when the generator's low 16 bits are below it).
    seed : In(32)
        Seed of the generators, taken at ``start``.
    expect_issues, expect_scores, expect_probs : In(16)
        What ``done`` waits for.
    start : In(1)
        Pulse: stream the loaded program (until ``done``; the counts are taken as they are, so
        set them before).
    done : Out(1)
        Every expected command issued and beat captured, and the datapath idle; or a fault.
        The sources stop; the captures keep what they hold until the next ``start``.
    issues_seen, scores_seen, probs_seen : Out(16)
        Captured so far.
    last_cycle : Out(cycle_width)
        Latest emulated cycle with datapath activity (busy or a beat), 0 if none.
    rd_sel, rd_addr : In
        The capture memory (:data:`CAPTURES`) and entry ``rd_data`` shows (combinationally).
    rd_data : Out
        That entry: an issue (``issue_layout``), a score beat or a probability beat (the
        channel's ``score_layout`` / ``prob_layout``), zero-extended.
    """

    def __init__(self, *, cfg: Config, head_dim: int, rows: int = 4, max_entries: int = 256,
                 max_beats: int | None = None, refresh: bool = True, cycle_width: int = 48,
                 pu_instances: bool = False, clock_gating: bool = False,
                 prog_depth: int = 8192, beat_depth: int = 512, heads: int = 1,
                 softmax_gating: bool | None = None) -> None:
        for name, v in (("prog_depth", prog_depth), ("beat_depth", beat_depth)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 1 << 16:
                raise ValueError(f"{name} must be an integer from 1 to 65536, not {v!r}")
        self._dut = AttentionChannel(cfg=cfg, head_dim=head_dim, rows=rows,
                                     max_entries=max_entries, max_beats=max_beats,
                                     refresh=refresh, cycle_width=cycle_width,
                                     pu_instances=pu_instances, clock_gating=clock_gating,
                                     heads=heads, softmax_gating=softmax_gating)
        self._prog_depth = prog_depth
        self._beat_depth = beat_depth
        self._cw = cycle_width
        dut = self._dut
        members = dut.signature.members
        self.issue_layout = issue_layout(cycle_width)
        self.column_bits = cfg.org.column_bytes * 8
        self.rd_width = max(self.issue_layout.size, dut.score_layout.size, dut.prob_layout.size)
        super().__init__({
            "host": In(1),
            "cmd": members["cmd"], "wdata": members["wdata"], "issue": members["issue"],
            "restart": In(1),
            "ld_en": In(1), "ld_sel": In(1), "ld_addr": In(16),
            "ld_data": In(max(COMMAND.size, self.column_bits)),
            "n_cmds": In(16), "n_wdata": In(16),
            "idle": In(16), "backpressure": In(16), "seed": In(32),
            "expect_issues": In(16), "expect_scores": In(16), "expect_probs": In(16),
            "start": In(1),
            "done": Out(1),
            "issues_seen": Out(16), "scores_seen": Out(16), "probs_seen": Out(16),
            "last_cycle": Out(cycle_width),
            "rd_sel": In(2), "rd_addr": In(16), "rd_data": Out(self.rd_width),
            **{name: members[name] for name in _OUTPUTS},
        })

    @property
    def channel(self) -> AttentionChannel:
        return self._dut

    def extra_verilog(self) -> str:
        return self._dut.extra_verilog()

    def elaborate(self, platform: object) -> Module:
        m = Module()
        # Everything runs in ``core``: the ``sync`` clock, and its reset one register later, so
        # that no logic of the channel depends combinationally on a top-level input (module
        # doc, "Registered inputs").
        m.domains.core = ClockDomain("core", local=True)
        rst_q = Signal(init=1)
        m.d.sync += rst_q.eq(0)
        m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")), ResetSignal("core").eq(rst_q)]
        m.submodules.dut = dut = DomainRenamer("core")(self._dut)
        dut = self._dut
        D, B = self._prog_depth, self._beat_depth

        def registered(v: Value, name: str) -> Signal:
            r = Signal(v.shape(), name=name)
            m.d.core += r.eq(v)
            return r

        host = registered(self.host, "host_q")
        restart = registered(self.restart, "restart_q")
        idle = registered(self.idle, "idle_q")
        backpressure = registered(self.backpressure, "backpressure_q")
        n_cmds = registered(self.n_cmds, "n_cmds_q")
        n_wdata = registered(self.n_wdata, "n_wdata_q")

        # ---- stimulus memories ---------------------------------------------------------------
        prog = Memory(shape=COMMAND.size, depth=D, init=[])
        wmem = Memory(shape=self.column_bits, depth=D, init=[])
        m.submodules.prog_mem = prog
        m.submodules.wdata_mem = wmem
        for sel, mem in ((LOADS["program"], prog), (LOADS["wdata"], wmem)):
            wp = mem.write_port(domain="core")
            m.d.comb += [wp.addr.eq(self.ld_addr), wp.data.eq(self.ld_data),
                         wp.en.eq(self.ld_en & (self.ld_sel == sel))]

        running = Signal()      # from start until done: the sources stream, captures count

        def gen(name: str) -> Signal:
            g = _xorshift(m, name)
            salt = {"gen_cmd": 0x9E3779B9, "gen_wdata": 0x85EBCA6B, "gen_issue": 0xC2B2AE35}[name]
            with m.If(self.start):
                m.d.core += g.eq((self.seed ^ salt) | 1)
            return g

        def source(mem: Memory, count: Value, name: str) -> stream.Interface:
            """A stream of the first ``count`` words of ``mem`` with seeded idle cycles."""
            g = gen(name)
            ptr = Signal(range(D + 1), name=f"{name}_ptr")
            holding = Signal(name=f"{name}_holding")
            rp = mem.read_port(domain="comb")
            out = stream.Signature(mem.shape).create()
            idle_now = g[:16] < idle
            m.d.comb += [rp.addr.eq(ptr), out.payload.eq(rp.data),
                         out.valid.eq(running & (ptr < count) & (holding | ~idle_now))]
            with m.If(self.start):
                m.d.core += [ptr.eq(0), holding.eq(0)]
            with m.Elif(out.valid & out.ready):
                m.d.core += [ptr.eq(ptr + 1), holding.eq(0)]
            with m.Elif(out.valid):
                m.d.core += holding.eq(1)
            return out

        cmd_src = source(prog, n_cmds, "gen_cmd")
        wdata_src = source(wmem, n_wdata, "gen_wdata")

        # ---- host streams: the ports through two-entry FIFOs (registered on the channel's
        # side), or the stimulus and the issue capture --------------------------------------
        g_issue = gen("gen_issue")
        sink_ready = running & ~(g_issue[:16] < backpressure)

        def fifo(name: str, width: int) -> SyncFIFOBuffered:
            f = DomainRenamer("core")(SyncFIFOBuffered(width=width, depth=2))
            m.submodules[name] = f
            return f

        for name, src in (("cmd", cmd_src), ("wdata", wdata_src)):
            port, into = getattr(self, name), getattr(dut, name)
            f = fifo(f"host_{name}", Value.cast(port.payload).shape().width)
            m.d.comb += [
                f.w_data.eq(port.payload), f.w_en.eq(host & port.valid),
                port.ready.eq(host & f.w_rdy),
                into.valid.eq(Mux(host, f.r_rdy, src.valid)),
                into.payload.eq(Mux(host, f.r_data, src.payload)),
                f.r_en.eq(host & into.ready),
                src.ready.eq(~host & into.ready),
            ]
        f = fifo("host_issue", Value.cast(self.issue.payload).shape().width)
        m.d.comb += [
            f.w_data.eq(dut.issue.payload), f.w_en.eq(host & dut.issue.valid),
            dut.issue.ready.eq(Mux(host, f.w_rdy, sink_ready)),
            self.issue.valid.eq(host & f.r_rdy),
            self.issue.payload.eq(f.r_data),
            f.r_en.eq(self.issue.ready),
            dut.restart.eq(restart),
        ]
        for name in _OUTPUTS:
            m.d.comb += getattr(self, name).eq(getattr(dut, name))

        # ---- capture memories ----------------------------------------------------------------
        issue_mem = Memory(shape=self.issue_layout.size, depth=D, init=[])
        score_mem = Memory(shape=dut.score_layout.size, depth=B, init=[])
        prob_mem = Memory(shape=dut.prob_layout.size, depth=B, init=[])
        m.submodules.issue_mem = issue_mem
        m.submodules.score_mem = score_mem
        m.submodules.prob_mem = prob_mem
        captures = (
            (issue_mem, ~host & dut.issue.valid & dut.issue.ready, dut.issue.payload,
             self.issues_seen, D),
            (score_mem, dut.score_valid, dut.score_beat, self.scores_seen, B),
            (prob_mem, dut.prob_valid, dut.prob_beat, self.probs_seen, B),
        )
        reads = []
        for mem, strobe, payload, seen, depth in captures:
            wp = mem.write_port(domain="core")
            m.d.comb += [wp.addr.eq(seen), wp.data.eq(payload),
                         wp.en.eq(running & strobe & (seen < depth))]
            with m.If(self.start):
                m.d.core += seen.eq(0)
            with m.Elif(running & strobe):
                m.d.core += seen.eq(seen + 1)
            rp = mem.read_port(domain="comb")
            m.d.comb += rp.addr.eq(self.rd_addr)
            reads.append(rp.data)
        with m.Switch(self.rd_sel):
            for i, data in enumerate(reads):
                with m.Case(i):
                    m.d.comb += self.rd_data.eq(data)

        # ---- completion ----------------------------------------------------------------------
        active = dut.busy | dut.score_valid | dut.prob_valid
        with m.If(self.start):
            m.d.core += self.last_cycle.eq(0)
        with m.Elif(running & active & (dut.cycle > self.last_cycle)):
            m.d.core += self.last_cycle.eq(dut.cycle)
        finished = ((self.issues_seen >= self.expect_issues) & ~dut.busy
                    & (self.scores_seen >= self.expect_scores)
                    & (self.probs_seen >= self.expect_probs))
        with m.If(self.start):
            m.d.core += [self.done.eq(0), running.eq(1)]
        with m.Elif(running & (finished | (dut.fault.as_value() != 0))):
            m.d.core += [self.done.eq(1), running.eq(0)]
        return m

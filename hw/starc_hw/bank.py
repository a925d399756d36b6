"""DRAM bank array of one channel: row storage, row buffers and a per-bank timing checker.

:class:`BankArray` watches the controller's issued commands and does what each does to the banks it
touches (docs/commands.md, "Scopes"): ACT opens a row, PRE closes it, WR writes a column of the
open row, RD and MAC read one (RD to the host, MAC to the processing units), REF needs every bank
closed. Independently of the controller it checks, per bank, the minimum distances between those
commands and raises a sticky flag for any command that came too early. It is the check that the
controller (and the golden rule it implements) never violates DRAM timing.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import Op

from .layouts import COMMAND, VIOLATIONS, issue_layout, read_data_layout

__all__ = ["BankArray", "VIOLATIONS"]



def _log2(n: int) -> int:
    return n.bit_length() - 1


class BankArray(wiring.Component):
    """Every bank of a channel, with ``rows`` rows of storage each.

    Parameters
    ----------
    cfg : Config
        Organisation (groups, banks per group, columns, column width) and timing.
    rows : int
        Rows stored per bank (power of two); a row address is taken modulo ``rows``.
    cycle_width : int
        Width of the issue-cycle field (as the controller's).
    bram_stage : bool
        No block RAM control input depends on the issue handshake (the board's folded
        channels): a WR's address, data and enable go to the write port from registers, one
        clock after the command issued, and the read port reads the column of the command on
        ``cmd`` whether or not it issues (its data is only used the clock after an issue). The
        read / written values are those without the stage whenever a WR and a later MAC or RD
        of the same bank are at least two clocks apart: DRAM timing keeps two column commands
        of a bank ``tCCD_L`` emulated cycles apart (the preset's tCK; 4, checked here as
        ``tCCD``) and every emulated cycle takes at least one clock.

    Members
    -------
    cmd : In(stream.Signature(issue_layout(cycle_width), always_ready=True))
        Issued commands (the controller's ``issue`` transfers).
    wdata : In(column_bits)
        Data of a WR, sampled with the command.
    rdata : Out(stream.Signature(read_data_layout(column_bits), always_ready=True))
        RD data (the RD's group, bank, col and the column), one cycle after the command.
    column : Out(ArrayLayout(column_bits, banks))
        Processing-unit interface: the column each bank read for a MAC, one cycle after the
        command; ``column_valid`` has one bit per bank (flat index ``group * banks_per_group +
        bank``) and ``column_cmd`` is the MAC command (its ``col`` and ``arg``).
    column_valid : Out(banks)
    column_cmd : Out(COMMAND)
    violations : Out(VIOLATIONS)
        Sticky flags, one per rule (:data:`starc_hw.layouts.VIOLATIONS`); set three clocks
        after the offending command issued.
    violation_count : Out(32)
        Number of issued commands that broke at least one rule (also three clocks late).
    """

    def __init__(self, *, cfg: Config, rows: int = 4, cycle_width: int = 48,
                 bram_stage: bool = False) -> None:
        if not isinstance(bram_stage, bool):
            raise TypeError(f"Block RAM stage must be a bool, not {bram_stage!r}")
        self._stage = bram_stage
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0 or rows & (rows - 1):
            raise ValueError(f"Rows per bank must be a positive power of two, not {rows!r}")
        if rows > cfg.org.rows_per_bank:
            raise ValueError(f"Rows per bank ({rows}) must not exceed the organisation's "
                             f"rows_per_bank ({cfg.org.rows_per_bank})")
        self._cfg = cfg
        self._rows = rows
        self._w = cycle_width
        org = cfg.org
        nb = org.banks_per_channel
        bits = org.column_bytes * 8
        rd_layout = read_data_layout(bits)
        super().__init__({
            "cmd": In(stream.Signature(issue_layout(cycle_width), always_ready=True)),
            "wdata": In(bits),
            "rdata": Out(stream.Signature(rd_layout, always_ready=True)),
            "column": Out(data.ArrayLayout(bits, nb)),
            "column_valid": Out(nb),
            "column_cmd": Out(COMMAND),
            "violations": Out(VIOLATIONS),
            "violation_count": Out(32),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        org, tm = self._cfg.org, self._cfg.timing
        W = self._w
        G, BPG, C = org.groups_per_channel, org.banks_per_group, org.columns_per_row
        NB = G * BPG
        lg_rows, lg_c = _log2(self._rows), _log2(C)

        c = self.cmd.payload.cmd
        t = self.cmd.payload.cycle  # unsigned
        op = c.op
        valid = self.cmd.valid
        is_act = (op == Op.ACTAB) | (op == Op.ACTBG) | (op == Op.ACTPB)
        is_pre = (op == Op.PREA) | (op == Op.PREBG) | (op == Op.PREPB)
        is_mac = (op == Op.MACAB) | (op == Op.MACBG)
        is_rd, is_wr, is_ref = op == Op.RD, op == Op.WR, op == Op.REF
        scope_all = (op == Op.ACTAB) | (op == Op.PREA) | (op == Op.MACAB) | is_ref
        scope_grp = (op == Op.ACTBG) | (op == Op.PREBG) | (op == Op.MACBG)
        scope_bank = (op == Op.ACTPB) | (op == Op.PREPB) | is_rd | is_wr

        is_open = Signal(NB)
        any_open = is_open.any()
        flags = {name: [] for name, _ in VIOLATIONS}
        mac_valid = Signal(NB)
        # The RD data select in two levels: a bank within each group (a register per group,
        # written only by that group's RDs, so it sits next to the group's block RAM and no
        # synthesis pass merges the copies), then the group. One select register for all the
        # banks drove every bank's column outputs: 2041 LUT inputs on one bit across the whole
        # block RAM area in medium's netlist (16 banks x 128 bits), docs/fpga.md.
        # (at least one bit each: no zero-width vectors in Verilog)
        rd_bank = [Signal(range(max(BPG, 2)), name=f"rd_bank_{gi}") for gi in range(G)]
        rd_grp = Signal(range(max(G, 2)))
        # The timing checker works one clock behind the command (its stage B): the command's
        # scope per bank, its kind and the emulated cycles since the previous issued command
        # (``delta``, saturated) are registered here, and the rules are checked and their state
        # updated in the next clock, so neither the issue handshake nor the cycle field's carry
        # chain reaches the 8 x banks comparators (the flags and the count lag one more clock).
        # Each rule keeps, per bank, its remaining distance relative to the previous issued
        # command: ``s = deadline - 1 - t_prev`` (the deadline: the event's cycle + the rule's
        # distance), -1 once passed; a command at ``t = t_prev + delta`` breaks the rule iff
        # ``s - delta >= 0`` (that is ``t < deadline``), and then ``s`` becomes ``max(s - delta,
        # -1)``, or ``distance - 1`` when the command is the rule's event for the bank. Issued
        # cycles never decrease, so this is `t < deadline` of the absolute deadlines exactly; the
        # state is a few bits per rule (the distance's width + 1: 51 bits per bank for the
        # preset's distances) where the absolute deadlines took the cycle field's width + 1 (33
        # on the board) each: 64 x 8 comparators of 33 bits on the full channel were 8448 of its
        # 10504 carry cells and 16896 of its 22927 flip-flops. ``delta`` is saturated at the
        # largest distance's width, every rule's is saturated at its own.
        dist = {"tRC": ("act", tm.tRC), "tRAS": ("act", tm.tRAS), "tRCD": ("act", tm.tRCD),
                "tRP": ("pre", tm.tRP), "tRFC": ("ref", tm.tRFC),
                "tRTP": ("col", tm.tRTP_L), "tWR": ("wr", self._cfg.distances()["wr_to_pre"]),
                "tCCD": ("col_any", tm.tCCD_L)}
        width = {r: max(d, 1).bit_length() for r, (_, d) in dist.items()}
        t_prev = Signal(W)
        delta = Signal(W)
        m.d.comb += delta.eq(t - t_prev)
        with m.If(valid):
            m.d.sync += t_prev.eq(t)
        # stage B's registers: delta saturated at each rule width, validity, kind, scope
        delta_b = {}
        for D in sorted(set(width.values())):
            delta_b[D] = Signal(D, name=f"delta_b_{D}")
            over = delta[D:].any() if W > D else 0
            m.d.sync += delta_b[D].eq(Mux(over, (1 << D) - 1, delta[:D]))
        valid_b = Signal()
        sel_b = Signal(NB)
        kind_b = {k: Signal(name=f"is_{k}_b") for k in ("act", "pre", "col", "wr", "ref")}
        check_b = {k: Signal(name=f"check_{k}_b") for k in ("actref", "pre", "column")}
        m.d.sync += [valid_b.eq(valid),
                     kind_b["act"].eq(is_act), kind_b["pre"].eq(is_pre),
                     kind_b["col"].eq(is_mac | is_rd), kind_b["wr"].eq(is_wr),
                     kind_b["ref"].eq(is_ref),
                     check_b["actref"].eq(is_act | is_ref), check_b["pre"].eq(is_pre),
                     check_b["column"].eq(is_mac | is_rd | is_wr)]
        # which events each command kind is
        kinds_of = {"act": ("act",), "pre": ("pre",), "col": ("col", "col_any"),
                    "wr": ("wr", "col_any"), "ref": ("ref",)}
        checked_by = {"tRC": "actref", "tRP": "actref", "tRFC": "actref", "tRAS": "pre",
                      "tRTP": "pre", "tWR": "pre", "tRCD": "column", "tCCD": "column"}
        for i in range(NB):
            gi, bi = divmod(i, BPG)
            # sel: the command touches this bank; hit: and it is issued. The flags are computed
            # from sel and gated by `valid` only at the end, which keeps the issue handshake off
            # the checker's comparators and OR trees.
            sel = Signal(name=f"sel_{i}")
            hit = Signal(name=f"hit_{i}")
            m.d.comb += [sel.eq(scope_all | (scope_grp & (c.group == gi))
                                | (scope_bank & (c.group == gi) & (c.bank == bi))),
                         hit.eq(valid & sel)]
            m.d.sync += sel_b[i].eq(sel)
            # the remaining distances need no reset: a bit per event kind says whether the bank
            # saw one since the reset, and a rule's state counts only then
            rem = {r: Signal(signed(width[r] + 1), name=f"{r}_{i}", reset_less=True)
                   for r in dist}
            seen = {k: Signal(name=f"seen_{k}_{i}") for k, _ in dist.values()}
            row = Signal(max(lg_rows, 1), name=f"row_{i}")  # no zero-width vectors in Verilog
            opened = is_open[i]
            hit_b = Signal(name=f"hit_b_{i}")
            m.d.comb += hit_b.eq(valid_b & sel_b[i])
            for r, (k, d) in dist.items():
                left = Signal(signed(width[r] + 1), name=f"{r}_left_{i}")
                m.d.comb += left.eq(rem[r] - delta_b[width[r]])
                flags[r] += [sel_b[i] & seen[k] & ~left[-1] & check_b[checked_by[r]]]
                event = Cat(*(kind_b[e] for e, ks in kinds_of.items() if k in ks)).any()
                with m.If(hit_b & event):
                    m.d.sync += [rem[r].eq(d - 1), seen[k].eq(1)]
                with m.Elif(valid_b):
                    m.d.sync += rem[r].eq(Mux(left[-1], -1, left))
            flags["state"] += [sel & ((is_act & opened) | ((is_mac | is_rd | is_wr) & ~opened))]

            with m.If(hit):
                with m.If(is_act):
                    m.d.sync += [is_open[i].eq(1), row.eq(c.row[:lg_rows])]
                with m.If(is_pre):
                    m.d.sync += is_open[i].eq(0)

            mem = Memory(shape=org.column_bytes * 8, depth=self._rows * C, init=[])
            m.submodules[f"mem_{i}"] = mem
            rp = mem.read_port()
            wp = mem.write_port()
            addr = Cat(c.col[:lg_c], row[:lg_rows])
            if self._stage:
                m.d.sync += [wp.addr.eq(addr), wp.data.eq(self.wdata),
                             wp.en.eq(hit & is_wr & opened)]
                m.d.comb += [rp.addr.eq(addr), rp.en.eq(sel & (is_mac | is_rd))]
            else:
                m.d.comb += [rp.addr.eq(addr), wp.addr.eq(addr), wp.data.eq(self.wdata),
                             wp.en.eq(hit & is_wr & opened),
                             rp.en.eq(hit & (is_mac | is_rd))]
            m.d.comb += self.column[i].eq(rp.data)
            m.d.sync += mac_valid[i].eq(hit & is_mac & opened)
            with m.If(hit & is_rd):
                m.d.sync += [rd_bank[gi].eq(bi), rd_grp.eq(gi)]

        # REF needs every bank closed; it touches all banks, so flag it once here.
        flags["state"] += [is_ref & any_open]

        # the state rule is checked in the command's own clock (it needs the open rows as they
        # are then) and registered to meet the timing rules of the same command in stage B
        state_b = Signal()
        m.d.sync += state_b.eq(valid & Cat(*flags["state"]).any())
        fired = Signal(VIOLATIONS)
        for name, _ in VIOLATIONS:
            if name == "state":
                m.d.comb += fired.state.eq(state_b)
            else:
                m.d.comb += getattr(fired, name).eq(valid_b & Cat(*flags[name]).any())
        fired_q = Signal(VIOLATIONS)
        m.d.sync += fired_q.eq(fired)
        with m.If(fired_q.as_value().any()):
            m.d.sync += [self.violations.eq(self.violations.as_value() | fired_q.as_value()),
                         self.violation_count.eq(self.violation_count + 1)]

        rd_group = []
        for gi in range(G):
            d = Signal(len(self.column[0]), name=f"rd_data_{gi}")
            m.d.comb += d.eq(Array(self.column[gi * BPG + bi] for bi in range(BPG))[rd_bank[gi]])
            rd_group.append(d)

        # outputs one cycle after the command (synchronous memory read)
        cmd_q = Signal(COMMAND)
        rd_q = Signal()
        m.d.sync += [cmd_q.eq(c), rd_q.eq(valid & is_rd)]
        m.d.comb += [
            self.column_valid.eq(mac_valid),
            self.column_cmd.eq(cmd_q),
            self.rdata.valid.eq(rd_q),
            self.rdata.payload.group.eq(cmd_q.group),
            self.rdata.payload.bank.eq(cmd_q.bank),
            self.rdata.payload.col.eq(cmd_q.col),
            self.rdata.payload.data.eq(Array(rd_group)[rd_grp]),
        ]
        return m

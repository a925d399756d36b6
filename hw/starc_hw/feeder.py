"""A program memory in front of a :class:`~starc_hw.channel.Channel`, for runs without a host in
the loop (benchmarks, FPGA self-test).

The host loads the program once (one command word per ``load`` transfer), then pulses ``start``;
the feeder streams the program ``repeat`` times into the channel at full rate and accepts every
issued command itself. ``done`` rises when the last command has issued.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from starc.config import Config

from .channel import Channel
from .layouts import COMMAND, STATUS_NAMES, status_members

__all__ = ["FedChannel"]


class FedChannel(wiring.Component):
    """Program memory (``depth`` words) + channel.

    Members
    -------
    load : In(stream.Signature(COMMAND))
        Program words, in order, before ``start``.
    start : In(1)
        Pulse: run the loaded program ``repeat`` times.
    repeat : In(16)
        How many times to run it (sampled at ``start``; 0 counts as 1).
    done : Out(1)
        The last command of the last repetition has issued (one cycle later).
    cycle, complete, issued, fault, violations, violation_count : Out
        The channel's status bundle (:func:`starc_hw.layouts.status_members`).
    """

    def __init__(self, *, cfg: Config, depth: int = 4096, rows: int = 1, refresh: bool = True,
                 cycle_width: int = 48) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth <= 0:
            raise ValueError(f"Program depth must be a positive integer, not {depth!r}")
        self._depth = depth
        self._chan = Channel(cfg=cfg, rows=rows, refresh=refresh, cycle_width=cycle_width)
        super().__init__({
            "load": In(stream.Signature(COMMAND)),
            "start": In(1),
            "repeat": In(16),
            "done": Out(1),
            **status_members(cycle_width),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.chan = chan = self._chan
        m.submodules.mem = mem = Memory(shape=COMMAND.size, depth=self._depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port()

        length = Signal(range(self._depth + 1))
        running = Signal()
        addr = Signal(range(self._depth + 1))     # next word to read
        left = Signal(16)                         # repetitions left after this one
        pending = Signal()                        # rp.data holds the word at addr - 1
        fed = Signal()                            # every word went to the channel
        m.d.comb += [
            self.load.ready.eq(~running),
            wp.addr.eq(length), wp.data.eq(self.load.payload), wp.en.eq(self.load.valid
                                                                        & ~running),
        ]
        with m.If(self.load.valid & self.load.ready):
            m.d.sync += length.eq(length + 1)

        # The read port answers one cycle after the address; ``pending`` says rp.data is a word
        # that still has to go to the channel (kept by disabling the port while it waits).
        take = chan.cmd.valid & chan.cmd.ready
        m.d.comb += [chan.cmd.valid.eq(pending), chan.cmd.payload.eq(rp.data),
                     chan.issue.ready.eq(1), chan.wdata.valid.eq(1), chan.wdata.payload.eq(0),
                     rp.addr.eq(addr), rp.en.eq(~pending | take)]
        with m.If(self.start & ~running & (length != 0)):
            m.d.sync += [running.eq(1), addr.eq(0), pending.eq(0), fed.eq(0), self.done.eq(0),
                         left.eq(self.repeat - (self.repeat != 0))]
        with m.Elif(running & (~pending | take)):
            with m.If(addr < length):
                m.d.sync += [addr.eq(addr + 1), pending.eq(1)]
            with m.Elif(left != 0):
                m.d.sync += [addr.eq(0), left.eq(left - 1), pending.eq(0)]
            with m.Else():
                m.d.sync += [running.eq(0), pending.eq(0), fed.eq(1)]
        # the controller takes a new word only when its head is empty or issuing
        with m.If(fed & chan.cmd.ready):
            m.d.sync += self.done.eq(1)

        for name in STATUS_NAMES:
            m.d.comb += getattr(self, name).eq(getattr(chan, name))
        return m

"""Board top: a scaled PIM channel (banks in block RAM) behind a UART host link, for the ULX3S.

::

    uart rx pin ─> UARTRx ─> HostLink ─cmd/wdata─> Channel (controller + bank array)
    uart tx pin <─ UARTTx <─ HostLink <─issue/rdata/status─┘

:class:`ChannelSystem` is everything but the pins and the clock; it is what the co-simulation
runs (``tests/test_fpga_cosim.py``). :class:`ULX3STop` puts it on the ULX3S (a PLL clock from the
25 MHz oscillator, the FTDI UART, eight LEDs). The size presets (:data:`SIZES`) scale the default
preset's organisation and column width down to what one LFE5U-85F holds; DRAM timing stays the
preset's (one FPGA clock is one emulated DRAM cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Instance, Module, ResetInserter, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out
from starc import config
from starc.config import Config
from starc.isa import Op
from starc_hw.attention import AttentionChannel
from starc_hw.channel import Channel
from starc_hw.hostlink import HostLink
from starc_hw.uart import UARTRx, UARTTx, divisor_for

__all__ = ["BOARD_CLOCK_HZ", "DEFAULT_BAUD", "DEFAULT_CLOCK_HZ", "SIZES", "BoardSize",
           "ChannelSystem", "ULX3STop", "board_config", "board_size", "pll_params"]

#: ULX3S oscillator (amaranth_boards.ulx3s: clk25).
BOARD_CLOCK_HZ = 25_000_000
#: System clock on the board: 25 MHz / 4 from the PLL, below the measured Fmax of every size
#: (docs/fpga.md); the channel's controller decides a command's issue in one cycle.
DEFAULT_CLOCK_HZ = 6_250_000
#: Default baud rate: 6.25 MHz / 25, exact, and exact for the FT231X on the ULX3S (3 MHz / 12).
DEFAULT_BAUD = 250_000
#: Cycle counter width on the FPGA: 2^30 emulated DRAM cycles before a RESET is needed.
CYCLE_WIDTH = 32
#: Base preset whose timing (and everything not overridden) the board channel uses.
BASE_PRESET = "attacc-hbm3-5.2"
#: Commands that take one beat of the channel's write-data stream (starc_hw.channel.Channel:
#: "one beat per WR and per WRGB command"); tests/test_fpga_link.py checks the contract.
WDATA_OPS = (Op.WR, Op.WRGB)


@dataclass(frozen=True)
class BoardSize:
    """One scaled channel: organisation, column width (lanes) and stored rows per bank."""

    name: str
    lanes: int
    pseudo_channels: int
    sids: int
    bank_groups: int
    banks_per_group: int
    columns: int
    rows: int
    #: False: the design does not fit the LFE5U-85F; the bench synthesises it only.
    place: bool = True
    #: d of the attention datapath (bank PUs, softmax, moves, output accumulator:
    #: starc_hw.attention.AttentionChannel); 0: the command front end and banks only. The
    #: datapath needs 16 lanes and d a multiple of 32 (check_attention_config).
    head_dim: int = 0
    #: Softmax-buffer entries (tokens one SFM may hold) of the attention datapath.
    max_entries: int = 64

    @property
    def banks(self) -> int:
        return self.pseudo_channels * self.sids * self.bank_groups * self.banks_per_group

    def overrides(self) -> dict[str, Any]:
        return {
            "organisation.pseudo_channels": self.pseudo_channels,
            "organisation.sids": self.sids,
            "organisation.bank_groups": self.bank_groups,
            "organisation.banks_per_group": self.banks_per_group,
            "organisation.columns_per_row": self.columns,
            "organisation.column_bytes": 2 * self.lanes,
            "pu.lanes": self.lanes,
        }

    def describe(self) -> str:
        pim = (f"; attention datapath, d {self.head_dim}, {self.max_entries} softmax entries"
               if self.head_dim else "")
        return (f"{self.banks} banks ({self.pseudo_channels} PC x {self.sids} SID x "
                f"{self.bank_groups} BG x {self.banks_per_group}), {self.lanes} lanes "
                f"({16 * self.lanes}-bit columns), {self.columns} columns x {self.rows} rows "
                f"per bank{pim}")


#: Size presets. Bank storage is rows x columns entries of 16 x lanes bits per bank; an ECP5
#: DP16KD holds 512 x 36 bits, so a 512-entry bank costs ceil(16 lanes / 36) block RAMs. Columns
#: stay 32 (16 token slots per bank row): the compiler's layout needs them.
SIZES: dict[str, BoardSize] = {s.name: s for s in (
    # 2 banks in one bank group: the smallest channel with a bank-level choice to make.
    BoardSize("tiny", lanes=4, pseudo_channels=1, sids=1, bank_groups=1, banks_per_group=2,
              columns=32, rows=8),
    # 4 banks, the co-simulation's size.
    BoardSize("small", lanes=4, pseudo_channels=1, sids=1, bank_groups=2, banks_per_group=2,
              columns=32, rows=8),
    # small with 8 lanes (128-bit columns): what the column width costs at a fixed bank count.
    BoardSize("small-wide", lanes=8, pseudo_channels=1, sids=1, bank_groups=2, banks_per_group=2,
              columns=32, rows=8),
    # The whole PIM datapath on the board: 2 banks of the preset's 16 lanes (256-bit columns),
    # a bank PU each, the softmax unit, the moves and the output accumulator; d 32 (one bank per
    # token, two token sets per group row). Co-simulated in make test; its synthesis for the
    # LFE5U-85F did not finish in 90 minutes and likely exceeds the device (docs/fpga.md).
    BoardSize("pim-tiny", lanes=16, pseudo_channels=1, sids=1, bank_groups=1, banks_per_group=2,
              columns=32, rows=8, head_dim=32, max_entries=64),
    # 16 banks: every pseudo-channel / SID / bank-group path of the real channel, half width.
    BoardSize("medium", lanes=8, pseudo_channels=2, sids=2, bank_groups=2, banks_per_group=2,
              columns=32, rows=16),
    # 32 banks: half the preset's channel (four banks per group as in the preset).
    BoardSize("large", lanes=4, pseudo_channels=2, sids=2, bank_groups=2, banks_per_group=4,
              columns=32, rows=16),
    # The preset's full 64-bank channel organisation, 64-bit columns: synthesis only (too large
    # to place and route on the LFE5U-85F; docs/fpga.md has its synthesis numbers).
    BoardSize("full", lanes=4, pseudo_channels=2, sids=2, bank_groups=4, banks_per_group=4,
              columns=32, rows=16, place=False),
)}


def board_size(name: str) -> BoardSize:
    try:
        return SIZES[name]
    except KeyError:
        raise ValueError(f"Unknown board size {name!r}; choose one of "
                         f"{', '.join(SIZES)}") from None


def board_config(size: BoardSize) -> Config:
    """The preset of a board size: :data:`BASE_PRESET` with the size's organisation."""
    if not isinstance(size, BoardSize):
        raise TypeError(f"Board size must be a BoardSize, not {size!r}")
    return config.load(BASE_PRESET, overrides=size.overrides())


class ChannelSystem(wiring.Component):
    """UART + host link + channel: the board top without pins and clock.

    Parameters
    ----------
    size : BoardSize
        The channel's organisation, lanes and stored rows.
    divisor : int
        UART bit period in clock cycles (:func:`starc_hw.uart.divisor_for`).
    table_depth, rx_depth : int
        Host-link side table entries and receive FIFO bytes (:class:`HostLink`).

    Members
    -------
    rx : In(1, init=1)
        UART line from the host.
    tx : Out(1, init=1)
        UART line to the host.
    leds : Out(8)
        0: heartbeat, 1: receiving, 2: sending, 3: tracing, 4: channel fault, 5: DRAM timing
        violation, 6: link error, 7: a command is in the channel.
    """

    def __init__(self, *, size: BoardSize, divisor: int, table_depth: int = 32,
                 rx_depth: int = 512) -> None:
        self._size = size
        self._cfg = board_config(size)
        self._rx = UARTRx(divisor=divisor)
        self._tx = UARTTx(divisor=divisor)
        self._link = HostLink(cfg=self._cfg, rows=size.rows, cycle_width=CYCLE_WIDTH,
                              table_depth=table_depth, rx_depth=rx_depth,
                              wdata_ops=WDATA_OPS, divisor=divisor, head_dim=size.head_dim)
        self._channel: Channel | AttentionChannel
        if size.head_dim:
            self._channel = AttentionChannel(cfg=self._cfg, head_dim=size.head_dim,
                                             rows=size.rows, max_entries=size.max_entries,
                                             refresh=True, cycle_width=CYCLE_WIDTH)
        else:
            self._channel = Channel(cfg=self._cfg, rows=size.rows, refresh=True,
                                    cycle_width=CYCLE_WIDTH)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(8)})

    @property
    def cfg(self) -> Config:
        return self._cfg

    @property
    def link(self) -> HostLink:
        return self._link

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.uart_rx = rx = self._rx
        m.submodules.uart_tx = tx = self._tx
        m.submodules.link = link = self._link
        chan = self._channel
        m.submodules.channel = ResetInserter(link.channel_reset)(chan)

        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), rx.clear.eq(link.rx_clear),
                     link.rx_overrun.eq(rx.overrun), link.rx_frame_error.eq(rx.frame_error)]
        wiring.connect(m, rx.o, link.rx)
        wiring.connect(m, link.tx, tx.i)
        wiring.connect(m, link.cmd, chan.cmd)
        wiring.connect(m, link.wdata, chan.wdata)
        wiring.connect(m, chan.issue, link.issue)
        m.d.comb += [
            link.rdata.eq(chan.rdata), link.rdata_valid.eq(chan.rdata_valid),
            link.cycle.eq(chan.cycle), link.complete.eq(chan.complete),
            link.issued.eq(chan.issued), link.fault.eq(chan.fault),
            link.violations.eq(chan.violations), link.violation_count.eq(chan.violation_count),
        ]
        dp_error = Signal()
        if isinstance(chan, AttentionChannel):
            m.d.comb += [link.out.eq(chan.out_fp16), link.dp_error.eq(chan.dp_error),
                         link.busy.eq(chan.busy), dp_error.eq(chan.dp_error.as_value() != 0)]

        heartbeat = Signal(24)
        m.d.sync += heartbeat.eq(heartbeat + 1)

        def stretch(event: Any) -> Signal:
            """Keep an LED on for 2^16 cycles (10 ms at 6.25 MHz) after an event."""
            count = Signal(16)
            with m.If(event):
                m.d.sync += count.eq(0xFFFF)
            with m.Elif(count != 0):
                m.d.sync += count.eq(count - 1)
            return count != 0

        m.d.comb += self.leds.eq(Cat(
            heartbeat[-1], stretch(~rx.rx), stretch(~tx.tx), link.trace,
            (chan.fault.as_value() != 0) | dp_error, chan.violation_count != 0,
            link.link_errors != 0,
            chan.issue.valid | link.cmd.valid,
        ))
        return m


#: ECP5 PLL (EHXPLLL) limits: phase-detector and VCO frequency ranges (Lattice FPGA-TN-02200).
PFD_RANGE_HZ = (3.125e6, 400e6)
VCO_RANGE_HZ = (400e6, 800e6)


def pll_params(fin_hz: float, fout_hz: float, *, tolerance: float = 1e-3) -> dict[str, int]:
    """EHXPLLL dividers for ``fout_hz`` from ``fin_hz`` with CLKOP fed back:
    ``fout = fin / CLKI_DIV * CLKFB_DIV`` and ``VCO = fout * CLKOP_DIV``. Raises ValueError
    (naming the nearest frequencies it can make) when none is within ``tolerance``."""
    if not fout_hz > 0:
        raise ValueError(f"Clock frequency must be positive, not {fout_hz!r}")
    options: list[tuple[float, int, int, int]] = []
    for clki in range(1, 129):
        pfd = fin_hz / clki
        if not PFD_RANGE_HZ[0] <= pfd <= PFD_RANGE_HZ[1]:
            continue
        for fb in range(1, 81):
            f = pfd * fb
            op = next((d for d in range(1, 129)
                       if VCO_RANGE_HZ[0] <= f * d <= VCO_RANGE_HZ[1]), None)
            if op is not None:
                options.append((f, clki, fb, op))
    f, clki, fb, op = min(options, key=lambda o: abs(o[0] - fout_hz))
    if abs(f - fout_hz) > tolerance * fout_hz:
        near = sorted({round(o[0] / 1e6, 4) for o in options}, key=lambda x: abs(x - fout_hz / 1e6))
        raise ValueError(f"The PLL cannot make {fout_hz / 1e6:g} MHz from {fin_hz / 1e6:g} MHz; "
                         f"nearest: {', '.join(f'{x:g}' for x in near[:4])} MHz")
    return {"CLKI_DIV": clki, "CLKFB_DIV": fb, "CLKOP_DIV": op}


class ULX3STop(wiring.Component):
    """:class:`ChannelSystem` on the ULX3S: the 25 MHz oscillator through a PLL, the FTDI UART,
    the eight LEDs.

    Parameters
    ----------
    size : BoardSize
    clock_hz : float
        The system clock, made by the ECP5 PLL from the 25 MHz oscillator (25 MHz: no PLL). The
        channel's single-cycle command issue limits it (docs/fpga.md has the measured Fmax).
    baud : int
        UART baud rate (the divisor is ``clock_hz / baud``, rounded; see :func:`divisor_for`).
    """

    def __init__(self, *, size: BoardSize, clock_hz: float = DEFAULT_CLOCK_HZ,
                 baud: int = DEFAULT_BAUD) -> None:
        if not isinstance(size, BoardSize):
            raise TypeError(f"Board size must be a BoardSize, not {size!r}")
        self._size = size
        self._pll = None if clock_hz == BOARD_CLOCK_HZ else pll_params(BOARD_CLOCK_HZ, clock_hz)
        self._clock_hz = clock_hz
        self._divisor = divisor_for(clock_hz, baud)
        super().__init__({})

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def clock_hz(self) -> float:
        return self._clock_hz

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        if self._pll is not None:
            m.domains.sync = ClockDomain("sync")
            osc = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
            m.submodules.osc_buffer = osc
            clk = Signal()
            locked = Signal()
            p = self._pll
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{BOARD_CLOCK_HZ / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self._clock_hz / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=(p["CLKOP_DIV"] - 1) // 2, p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP",
                i_CLKI=osc.i, i_CLKFB=clk, o_CLKOP=clk, o_LOCK=locked, i_RST=0, i_STDBY=0,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0)
            m.d.comb += ClockSignal("sync").eq(clk)
            m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
            # No explicit constraint: nextpnr-ecp5 derives the PLL output's (CLKOP) from the
            # oscillator's 25 MHz and the divider parameters ("Derived frequency constraint of
            # 6.2 MHz for net clk" in pnr.log). An explicit one names a net that netlist
            # flattening renames (nextpnr warned and ignored it).
        m.submodules.system = system = ChannelSystem(size=self._size, divisor=self._divisor)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [system.rx.eq(rx.i), tx.o.eq(system.tx)]
        for i in range(8):
            m.submodules[f"led_buffer_{i}"] = led = io.Buffer("o", platform.request("led", i,
                                                                                  dir="-"))
            m.d.comb += led.o.eq(system.leds[i])
        return m

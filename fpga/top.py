"""Board top: a scaled PIM channel (banks in block RAM) behind a UART host link, for the ULX3S.

::

    uart rx pin ─> UARTRx ─> HostLink ─cmd/wdata─> Channel (controller + bank array)
    uart tx pin <─ UARTTx <─ HostLink <─issue/rdata/status─┘

:class:`ChannelSystem` is everything but the pins and the clock; it is what the co-simulation
runs (``tests/test_fpga_cosim.py``). :class:`ULX3STop` puts it on the ULX3S (a PLL clock from the
25 MHz oscillator, the FTDI UART, eight LEDs). The sizes (:data:`BOARD_SIZES`, from the one size
table :data:`starc_hw.sizes.SIZES`) scale the default preset's organisation and column width down
to what one LFE5U-85F holds; DRAM timing stays the preset's.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, ClockDomain, ClockSignal, DomainRenamer, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import Op
from starc_hw.hostlink import HostLink
from starc_hw.sizes import BASE_PRESET, Size, board_sizes, make_design
from starc_hw.uart import UARTRx, UARTTx, divisor_for

__all__ = ["BASE_PRESET", "BOARD_CLOCK_HZ", "BOARD_SIZES", "DEFAULT_BAUD", "DEFAULT_CLOCK_HZ",
           "MEASURED_CLOCK_HZ", "ChannelSystem", "ULX3STop", "UnitHarness", "board_config",
           "board_size", "default_clock_hz", "pll_params", "system_clock"]

#: ULX3S oscillator (amaranth_boards.ulx3s: clk25).
BOARD_CLOCK_HZ = 25_000_000
#: System clock of a size without a measured build of its own: 25 MHz / 4 from the PLL, below
#: the Fmax measured for every size with the single-clock controller (8.6 to 10.5 MHz,
#: docs/fpga.md "Measured resources and Fmax"), which the pipelined controller only raised.
DEFAULT_CLOCK_HZ = 6_250_000
#: Sizes whose place and route with the pipelined controller met a faster clock (docs/fpga.md,
#: "Measured"): their default system clock. tiny 59.14 MHz, small 56.56 MHz (with the counter
#: copies of ``starc_hw.controller.TERMS_PER_COUNTER``; 49.63 MHz without) and pim-tiny
#: 57.00 MHz (main of 2026-12-07 12:24 from a fresh clone, nextpnr's default router1; 53.71 MHz
#: at 04:43, 51.59 MHz before the copies) and small-wide 64.72 MHz (main at d72f7da, 2026-12-07
#: 13:14, router1) and pim-mid 50.45 MHz (main at 4fdfadb, 2026-12-07 14:02, router2 seed 2;
#: 48.38 MHz with seed 1 before the link's ISSUE register) and medium 53.35 MHz and large
#: 54.74 MHz (main at 7fe57a5, the controller's relative state, 2026-12-08 00:24 and 00:42,
#: router2 seed 1) met 50 MHz, and full 53.01 MHz (main at 0312452, the bank array's relative
#: timing checker, 2026-12-08 03:24, router2 seed 2; seed 1 did not route); pim-mid rebuilt at
#: 54.95 MHz with the relative state and checker (main at 7bbcc98, 03:48, router2 seed 2).
MEASURED_CLOCK_HZ = {"tiny": 50_000_000, "small": 50_000_000, "small-wide": 50_000_000,
                     "medium": 50_000_000, "large": 50_000_000, "full": 50_000_000,
                     "pim-tiny": 50_000_000, "pim-mid": 50_000_000}
#: Default baud rate: 6.25 MHz / 25, exact, and exact for the FT231X on the ULX3S (3 MHz / 12).
DEFAULT_BAUD = 250_000
#: Cycle counter width on the FPGA: 2^30 emulated DRAM cycles before a RESET is needed.
CYCLE_WIDTH = 32
#: Commands that take one beat of the channel's write-data stream (starc_hw.channel.Channel:
#: "one beat per WR and per WRGB command"); tests/test_fpga_link.py checks the contract.
WDATA_OPS = (Op.WR, Op.WRGB)


#: The sizes of :data:`starc_hw.sizes.SIZES` that ``starc fpga build`` builds.
BOARD_SIZES: dict[str, Size] = board_sizes()


def board_size(name: str) -> Size:
    """The board size called ``name``; ValueError naming the choices."""
    if name not in BOARD_SIZES:
        raise ValueError(f"Unknown board size {name!r}; choose one of "
                         f"{', '.join(BOARD_SIZES)}")
    return BOARD_SIZES[name]


def default_clock_hz(name: str) -> int:
    """The system clock ``starc fpga build --size name`` uses unless given one: the clock its
    measured build met (:data:`MEASURED_CLOCK_HZ`), else :data:`DEFAULT_CLOCK_HZ`."""
    return MEASURED_CLOCK_HZ.get(name, DEFAULT_CLOCK_HZ)


def board_config(size: Size) -> Config:
    """The preset of a size: :data:`starc_hw.sizes.BASE_PRESET` with the size's organisation."""
    if not isinstance(size, Size):
        raise TypeError(f"Size must be a starc_hw.sizes.Size, not {size!r}")
    return size.config()


class ChannelSystem(wiring.Component):
    """UART + host link + channel: the board top without pins and clock.

    Parameters
    ----------
    size : starc_hw.sizes.Size
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

    def __init__(self, *, size: Size, divisor: int, table_depth: int = 32,
                 rx_depth: int = 512) -> None:
        self._size = size
        self._cfg = board_config(size)
        self._rx = UARTRx(divisor=divisor)
        self._tx = UARTTx(divisor=divisor)
        self._link = HostLink(cfg=self._cfg, rows=size.rows, cycle_width=CYCLE_WIDTH,
                              table_depth=table_depth, rx_depth=rx_depth,
                              wdata_ops=WDATA_OPS, divisor=divisor, head_dim=size.head_dim)
        self._channel = make_design(size, cfg=self._cfg, cycle_width=CYCLE_WIDTH)
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
        # The channel runs in a domain of its own on the same clock whose reset is one register:
        # the link's RESET pulse or the system reset, a clock later. Its fan-out (the LSR input
        # of every channel flip-flop, about 14000 in pim-mid) then starts at a flip-flop the
        # placer can put near its loads, not behind an OR of two resets from opposite corners of
        # the device (pim-mid's critical path with the OR: 21.6 ns, 20.2 ns of it routing).
        m.domains.chan = chan_domain = ClockDomain("chan", local=True)
        chan_reset = Signal(init=1)
        m.d.sync += chan_reset.eq(link.channel_reset)
        m.d.comb += [chan_domain.clk.eq(ClockSignal("sync")), chan_domain.rst.eq(chan_reset)]
        m.submodules.channel = DomainRenamer("chan")(chan)

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
        if self._size.head_dim and self._size.folded:
            m.d.comb += link.stalls.eq(chan.stalls)
        if self._size.head_dim:
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


def system_clock(m: Module, platform: Any, clock_hz: float) -> None:
    """The ``sync`` domain at ``clock_hz`` on the ULX3S: the 25 MHz oscillator through the ECP5
    PLL (EHXPLLL, :func:`pll_params`), reset until the PLL locks; 25 MHz uses the platform's
    default clock directly."""
    if clock_hz == BOARD_CLOCK_HZ:
        return
    p = pll_params(BOARD_CLOCK_HZ, clock_hz)
    m.domains.sync = ClockDomain("sync")
    osc = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
    m.submodules.osc_buffer = osc
    clk = Signal()
    locked = Signal()
    m.submodules.pll = Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{BOARD_CLOCK_HZ / 1e6:g}",
        a_FREQUENCY_PIN_CLKOP=f"{clock_hz / 1e6:g}",
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
    # oscillator's 25 MHz and the divider parameters ("Derived frequency constraint of 6.2 MHz
    # for net clk" in pnr.log). An explicit one names a net that netlist flattening renames
    # (nextpnr warned and ignored it).


class UnitHarness(wiring.Component):
    """Any block on the ULX3S for a resource and Fmax measurement of the block alone: every
    input is driven from a shift register fed by an LFSR, every output bit is folded into a
    register driving LED 0 (so synthesis keeps all the logic), clocked by the PLL at
    ``clock_hz``.

    Parameters
    ----------
    make : callable
        Returns the block (a ``wiring.Component`` whose ports are all plain signals or
        interfaces of them).
    clock_hz : float
        The clock nextpnr times the design against.
    """

    def __init__(self, *, make: Any, clock_hz: float) -> None:
        pll_params(BOARD_CLOCK_HZ, clock_hz)
        self._make = make
        self._clock_hz = clock_hz
        super().__init__({})

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        system_clock(m, platform, self._clock_hz)
        m.submodules.unit = unit = self._make()
        ins: list[Any] = []
        outs: list[Any] = []
        for _path, member, value in unit.signature.flatten(unit):
            (ins if member.flow == wiring.In else outs).append(value)
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[6] ^ lfsr[7]))
        width = sum(len(v.as_value() if hasattr(v, "as_value") else v) for v in ins)
        chain = Signal(max(1, width))
        m.d.sync += chain.eq(Cat(lfsr[0], chain[:-1]))
        pos = 0
        for v in ins:
            n = len(v.as_value() if hasattr(v, "as_value") else v)
            m.d.comb += v.eq(chain[pos:pos + n])
            pos += n
        fold = Signal()
        m.d.sync += fold.eq(Cat(*[(v.as_value() if hasattr(v, "as_value") else v).xor()
                                  for v in outs]).xor())
        led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.led_buffer = led
        m.d.comb += led.o.eq(fold)
        return m


class ULX3STop(wiring.Component):
    """:class:`ChannelSystem` on the ULX3S: the 25 MHz oscillator through a PLL, the FTDI UART,
    the eight LEDs.

    Parameters
    ----------
    size : starc_hw.sizes.Size
    clock_hz : float
        The system clock, made by the ECP5 PLL from the 25 MHz oscillator (25 MHz: no PLL). The
        channel's single-cycle command issue limits it (docs/fpga.md has the measured Fmax).
    baud : int
        UART baud rate (the divisor is ``clock_hz / baud``, rounded; see :func:`divisor_for`).
    """

    def __init__(self, *, size: Size, clock_hz: float = DEFAULT_CLOCK_HZ,
                 baud: int = DEFAULT_BAUD) -> None:
        if not isinstance(size, Size):
            raise TypeError(f"Size must be a starc_hw.sizes.Size, not {size!r}")
        self._size = size
        if clock_hz != BOARD_CLOCK_HZ:
            pll_params(BOARD_CLOCK_HZ, clock_hz)
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
        system_clock(m, platform, self._clock_hz)
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

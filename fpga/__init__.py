"""FPGA prototype of one PIM channel: ULX3S board top, open-toolchain build, host driver.

``fpga.top`` (gateware around ``starc_hw``), ``fpga.build`` (Yosys / nextpnr / ecppack through
YoWASP), ``fpga.driver`` (the host side of the link protocol), ``fpga.cli`` (``starc fpga``).
docs/fpga.md describes all of it.
"""

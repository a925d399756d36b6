"""FPGA prototype of one PIM channel (import name ``starc_fpga``; the folder is ``fpga/``).

``starc_fpga.top`` (ULX3S board top around ``starc_hw``), ``starc_fpga.build`` (Yosys / nextpnr
/ ecppack through YoWASP), ``starc_fpga.driver`` (the host side of the link protocol),
``starc_fpga.cli`` (``starc fpga``). The sizes are ``starc_hw.sizes``. docs/fpga.md describes all
of it.
"""

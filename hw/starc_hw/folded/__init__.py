"""The FPGA-shaped attention datapath: the bank PU, the softmax unit and the moves of
``starc_hw.attention`` folded over FPGA clocks (a fraction of the lanes per clock, one FP step
per clock), bit-exact with :mod:`starc.numerics` and the reference units, and the emulated DRAM
clock that lets them take several FPGA clocks per DRAM cycle (docs/fpga.md, "Modelled time and
FPGA clocks").

``pipe`` (pipelined FP operations), ``pu`` (:class:`FoldedPU`), ``softmax``
(:class:`FoldedSoftmax`), ``moves`` (score, probability and value moves), ``channel``
(:class:`FoldedAttentionChannel`, the emulated clock).
"""

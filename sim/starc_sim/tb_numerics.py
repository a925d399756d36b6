"""cocotb module of :mod:`starc_sim.numerics_check`: applies every operand vector of
``STARC_TB_VECTORS`` to :class:`starc_hw.numerics_sim.FPUnits` (one simulated step each) and
writes every output to ``STARC_TB_RESULT``; the comparison with the golden numerics is done by
the caller."""

from __future__ import annotations

import os
from typing import Any

import cocotb
import numpy as np
from cocotb.triggers import Timer

from starc_sim.numerics_check import UNITS


@cocotb.test()
async def vectors(dut: Any) -> None:
    v = np.load(os.environ["STARC_TB_VECTORS"])
    ins = {k: v[k].tolist() for k in ("a16", "b16", "a32", "b32")}
    ports = {k: getattr(dut, k) for k in ins}
    outs = {u: getattr(dut, u) for u in UNITS}
    got: dict[str, list[int]] = {u: [] for u in UNITS}
    for i in range(len(ins["a16"])):
        for k, port in ports.items():
            port.value = ins[k][i]
        await Timer(1, "step")
        for u, port in outs.items():
            got[u].append(port.value.to_unsigned())
    path = os.environ["STARC_TB_RESULT"]
    np.savez(path + ".tmp.npz", **{u: np.array(x, np.uint64) for u, x in got.items()})
    os.replace(path + ".tmp.npz", path)
    dut._log.info("%d vectors through %d units", len(ins["a16"]), len(UNITS))

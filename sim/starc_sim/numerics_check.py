"""The FP units at volume under Verilator, bit for bit against :mod:`starc.numerics`.

:func:`vectors` makes the operands: every pairing of the special classes (signed zeros,
subnormals, smallest normals, ones, largest finite values, infinities, quiet, signalling and
negative NaNs, and operand pairs whose exact result is a rounding tie) followed by ``n`` seeded
random operands drawn rich in edge cases. :func:`run` sends them through the Verilated
:class:`starc_hw.numerics_sim.FPUnits` (``tb_numerics``, one vector per simulated step) and
compares every output with :func:`starc.numerics.mul`, :func:`~starc.numerics.add`,
:func:`~starc.numerics.fp32_to_fp16` and :func:`~starc.numerics.fp16_to_fp32`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SPECIAL16", "SPECIAL32", "UNITS", "expected", "run", "vectors"]

#: FP16 special classes: name -> bit patterns.
SPECIAL16: dict[str, list[int]] = {
    "zero": [0x0000, 0x8000],
    "subnormal": [0x0001, 0x8001, 0x03FF, 0x0200, 0x8155],
    "min normal": [0x0400, 0x8400],
    "one": [0x3C00, 0xBC00, 0x3C01],
    "tie operand": [0x3E00, 0x3A00, 0x3401],       # 1.5, 0.75, 0.25 (1 + 2^-10): RNE ties
    "largest finite": [0x7BFF, 0xFBFF],
    "infinity": [0x7C00, 0xFC00],
    "nan": [0x7E00, 0x7C01, 0xFE00],                 # quiet, signalling, negative
}
#: FP32 special classes.
SPECIAL32: dict[str, list[int]] = {
    "zero": [0x00000000, 0x80000000],
    "subnormal": [0x00000001, 0x80000001, 0x007FFFFF, 0x00400000],
    "min normal": [0x00800000, 0x80800000],
    "one": [0x3F800000, 0xBF800000, 0x3F800001],
    "tie operand": [0x33800000, 0x33000000, 0x33000001, 0xB3800000],  # 2^-24, 2^-25: halfway
    "fp16 edges": [0x477FF000, 0x477FEFFF, 0x387FE000, 0x38800000, 0x33000000],
    "largest finite": [0x7F7FFFFF, 0xFF7FFFFF],
    "infinity": [0x7F800000, 0xFF800000],
    "nan": [0x7FC00000, 0x7F800001, 0xFFC00000],
}
#: Each unit: the output port and the operands it reads.
UNITS: dict[str, tuple[str, ...]] = {
    "mul32": ("a16", "b16"), "mul16": ("a16", "b16"), "add32": ("a32", "b32"),
    "add16": ("a16", "b16"), "narrow": ("a32",), "widen": ("a16",),
}


def _flat(classes: dict[str, list[int]]) -> list[int]:
    return [x for xs in classes.values() for x in xs]


def interesting16(rng: np.random.Generator, n: int) -> np.ndarray:
    """FP16 patterns rich in edge cases: zeros, subnormals, extremes, infinities, NaNs (half of
    the exponents drawn from the edges, a fifth of the fractions from their edges)."""
    sign = rng.integers(0, 2, n, dtype=np.uint16) << 15
    e = np.where(rng.random(n) < 0.5, rng.integers(0, 32, n), rng.choice([0, 1, 14, 15, 30, 31],
                                                                          n))
    f = np.where(rng.random(n) < 0.2, rng.choice([0, 1, 0x3FF, 0x200], n),
                 rng.integers(0, 1 << 10, n))
    return (sign | (e.astype(np.uint16) << 10) | f.astype(np.uint16)).astype(np.uint16)


def interesting32(rng: np.random.Generator, n: int) -> np.ndarray:
    """FP32 patterns rich in edge cases, as :func:`interesting16`."""
    sign = rng.integers(0, 2, n, dtype=np.uint32) << 31
    exps = np.array([0, 1, 2, 24, 100, 112, 113, 126, 127, 128, 142, 143, 200, 253, 254, 255])
    e = np.where(rng.random(n) < 0.5, rng.integers(0, 256, n), rng.choice(exps, n))
    f = np.where(rng.random(n) < 0.2, rng.choice([0, 1, 0x7FFFFF, 0x400000, 0x1000], n),
                 rng.integers(0, 1 << 23, n))
    return (sign | (e.astype(np.uint32) << 23) | f.astype(np.uint32)).astype(np.uint32)


def vectors(n: int, seed: int) -> dict[str, np.ndarray]:
    """Every pairing of the special classes (FP16 x FP16 and FP32 x FP32, zipped to one vector
    per pair), then ``n`` seeded random vectors."""
    s16, s32 = _flat(SPECIAL16), _flat(SPECIAL32)
    p16 = [(a, b) for a in s16 for b in s16]
    p32 = [(a, b) for a in s32 for b in s32]
    k = max(len(p16), len(p32))
    rng = np.random.default_rng(seed)
    a16 = np.array([p16[i % len(p16)][0] for i in range(k)], np.uint16)
    b16 = np.array([p16[i % len(p16)][1] for i in range(k)], np.uint16)
    a32 = np.array([p32[i % len(p32)][0] for i in range(k)], np.uint32)
    b32 = np.array([p32[i % len(p32)][1] for i in range(k)], np.uint32)
    r32a, r32b = interesting32(rng, n), interesting32(rng, n)
    near = rng.random(n) < 1 / 3   # a third nearly cancel (b close to -a): the adder's hard case
    r32b[near] = (r32a[near] ^ np.uint32(1 << 31)) + rng.integers(0, 3, int(near.sum())).astype(
        np.uint32)
    return {"a16": np.concatenate([a16, interesting16(rng, n)]),
            "b16": np.concatenate([b16, interesting16(rng, n)]),
            "a32": np.concatenate([a32, r32a]), "b32": np.concatenate([b32, r32b]),
            "specials": np.int64(k)}


def expected(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from starc import numerics as nm
    from starc.numerics import FP16, FP32

    return {
        "mul32": nm.mul(v["a16"], v["b16"], "fp32").astype(np.uint64),
        "mul16": nm.mul(v["a16"], v["b16"], "fp16").astype(np.uint64),
        "add32": nm.add(v["a32"], v["b32"], FP32).astype(np.uint64),
        "add16": nm.add(v["a16"], v["b16"], FP16).astype(np.uint64),
        "narrow": nm.fp32_to_fp16(v["a32"]).astype(np.uint64),
        "widen": nm.fp16_to_fp32(v["a16"]).astype(np.uint64),
    }


def build(progress: bool = False) -> Any:
    from starc_hw.numerics_sim import FPUnits

    from starc_sim.runner import build_design

    return build_design("fpunits", lambda: FPUnits(), params={"units": sorted(UNITS)},
                        internals=False, config="O2", progress=progress)


def run(n: int = 10_000, seed: int = 1, *, model: Any = None) -> dict[str, Any]:
    """Check every unit on the special pairings and ``n`` random vectors; returns per unit the
    vectors checked and the mismatches (the first ten with their operands)."""
    model = model or build()
    v = vectors(n, seed)
    want = expected(v)
    run_dir = Path(tempfile.mkdtemp(prefix="numerics-", dir=model.build_dir))
    np.savez(run_dir / "vectors.npz", **{k: v[k] for k in ("a16", "b16", "a32", "b32")})
    model.run("starc_sim.tb_numerics", testcase="vectors", seed=seed, test_dir=run_dir,
              quiet=True, extra_env={"STARC_TB_VECTORS": str(run_dir / "vectors.npz"),
                                     "STARC_TB_RESULT": str(run_dir / "outputs.npz")})
    got = np.load(run_dir / "outputs.npz")
    report: dict[str, Any] = {"seed": seed, "random": n, "special_pairs": int(v["specials"]),
                              "units": {}}
    for unit, ops in UNITS.items():
        bad = np.flatnonzero(got[unit].astype(np.uint64) != want[unit])
        report["units"][unit] = {
            "vectors": len(want[unit]), "mismatches": len(bad),
            "first": [{**{o: int(v[o][i]) for o in ops}, "rtl": int(got[unit][i]),
                       "golden": int(want[unit][i])} for i in bad[:10]]}
    report["ok"] = all(u["mismatches"] == 0 for u in report["units"].values())
    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report

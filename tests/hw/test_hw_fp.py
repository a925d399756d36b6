# amaranth: UnusedElaboratable=no
"""starc_hw.fp in amaranth.sim against starc.numerics, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from _fpref import interesting16, interesting32
from _simbench import Bench, comb_vectors
from amaranth.sim import SimulatorContext
from starc import numerics as nm
from starc.numerics import FP16, FP32
from starc_hw import fp

SEED = 99173
N = 250

EDGE16 = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF,
          0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF, 0x3555, 0x0200]
EDGE32 = [0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x3F800000,
          0xBF800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
          0xFFFFFFFF, 0x33800000, 0x33000000, 0x33000001, 0x477FF000, 0x477FEFFF, 0x387FE000,
          0x38800000, 0x4B800000, 0x4B7FFFFF]


def pairs(edge: list[int], rnd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of edge cases, then random vectors."""
    a = np.array([x for x in edge for _ in edge] + list(rnd[0]), dtype=np.uint64)
    b = np.array([y for _ in edge for y in edge] + list(rnd[1]), dtype=np.uint64)
    return a, b


def check(got: list[int], want: np.ndarray, a: np.ndarray, b: np.ndarray | None = None) -> None:
    bad = np.nonzero(np.array(got, dtype=np.uint64) != want.astype(np.uint64))[0]
    if len(bad):
        i = bad[0]
        ops = f"{int(a[i]):#x}" + ("" if b is None else f", {int(b[i]):#x}")
        raise AssertionError(f"seed {SEED}: {len(bad)} mismatches, first ({ops}): got "
                             f"{got[i]:#x}, want {int(want[i]):#x}")


@pytest.mark.parametrize("acc", ["fp32", "fp16"])
def test_multiplier(acc: str) -> None:
    rng = np.random.default_rng(SEED)
    a, b = pairs(EDGE16, np.stack([interesting16(rng, N), interesting16(rng, N)]))
    got = comb_vectors(fp.Multiplier(acc=acc), ["a", "b"], "p", list(zip(a, b, strict=True)))
    check(got, nm.mul(a.astype(np.uint16), b.astype(np.uint16), acc), a, b)  # type: ignore[arg-type]


def test_fp32_adder() -> None:
    rng = np.random.default_rng(SEED)
    x, y = interesting32(rng, N), interesting32(rng, N)
    y[:N // 3] = (x[:N // 3] ^ np.uint32(1 << 31)) + rng.integers(0, 3, N // 3).astype(np.uint32)
    a, b = pairs(EDGE32, np.stack([x, y]))
    got = comb_vectors(fp.Adder(fmt=FP32), ["a", "b"], "s", list(zip(a, b, strict=True)))
    check(got, nm.add(a.astype(np.uint32), b.astype(np.uint32)), a, b)


def test_fp16_adder() -> None:
    rng = np.random.default_rng(SEED)
    x, y = interesting16(rng, N), interesting16(rng, N)
    y[:N // 3] = (x[:N // 3] ^ np.uint16(1 << 15)) + rng.integers(0, 3, N // 3).astype(np.uint16)
    a, b = pairs(EDGE16, np.stack([x, y]))
    got = comb_vectors(fp.Adder(fmt=FP16), ["a", "b"], "s", list(zip(a, b, strict=True)))
    check(got, nm.add(a.astype(np.uint16), b.astype(np.uint16), FP16), a, b)


def test_conversions() -> None:
    rng = np.random.default_rng(SEED)
    a = np.concatenate([EDGE32, interesting32(rng, 2 * N),
                        (rng.integers(100, 145, N) << 23 | rng.integers(0, 1 << 23, N))])
    got = comb_vectors(fp.Narrow(), ["a"], "h", [(x,) for x in a])
    check(got, nm.fp32_to_fp16(a.astype(np.uint32)), a)
    h = np.concatenate([EDGE16, interesting16(rng, N)])
    got = comb_vectors(fp.Widen(), ["h"], "a", [(x,) for x in h])
    check(got, nm.fp16_to_fp32(h.astype(np.uint16)), h)


@pytest.mark.parametrize(("n", "stages"), [(16, 0), (16, 4), (5, 2), (4, 5)])
def test_reduction_tree(n: int, stages: int) -> None:
    """Values equal starc.numerics.tree_sum; the sum appears exactly ``stages`` cycles later."""
    rng = np.random.default_rng(SEED + n + stages)
    vecs = nm.to_bits(rng.normal(0, 1, (12, n)) * 10.0 ** rng.integers(-8, 8, (12, n)), FP32)
    vecs[0, :] = [0x80000000] * n                       # all -0 stays -0
    vecs[1, 0], vecs[2, 1] = FP32.inf, 0x7F800001
    want = nm.tree_sum(vecs)
    dut = fp.ReductionTree(fmt=FP32, n=n, stages=stages)
    got: dict[int, int] = {}

    async def job(ctx: SimulatorContext) -> None:
        for cycle in range(len(vecs) + stages + 1):
            if cycle < len(vecs):
                ctx.set(dut.i.payload, [int(v) for v in vecs[cycle]])
            ctx.set(dut.i.valid, cycle < len(vecs))
            if ctx.get(dut.o.valid):
                got[cycle - stages] = ctx.get(dut.o.payload)
            if stages:
                await ctx.tick()

    Bench(dut, clock=stages > 0).run(job)
    assert sorted(got) == list(range(len(vecs))), f"latency is not {stages}"
    check([got[k] for k in range(len(vecs))], want, vecs[:, 0])


def test_parameter_messages() -> None:
    with pytest.raises(ValueError, match=r"^Accumulation format must be 'fp32' or 'fp16', not "
                                         r"'bf16'$"):
        fp.Multiplier(acc="bf16")
    with pytest.raises(TypeError, match=r"^Format must be starc.numerics.FP32 or "
                                        r"starc.numerics.FP16, not 'fp32'$"):
        fp.Adder(fmt="fp32")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Operand count must be a positive integer, not 0$"):
        fp.ReductionTree(fmt=FP32, n=0)
    with pytest.raises(TypeError, match=r"^Stage count must be a non-negative integer, not -1$"):
        fp.ReductionTree(fmt=FP32, n=4, stages=-1)
    assert [fp.tree_levels(n) for n in (1, 2, 3, 4, 5, 16, 17)] == [0, 1, 2, 2, 3, 4, 5]


class _Piped:
    """One operation of starc_hw.fp with register cuts, registered inputs and output."""

    def __init__(self, op: str, cuts: tuple[int, ...]) -> None:
        from amaranth.hdl import Module, Signal

        self.m = Module()
        self.a, self.b = Signal(32), Signal(32)
        self.latency = len(cuts)
        tick = Signal()                  # a sync domain even without cuts
        self.m.d.sync += tick.eq(~tick)
        if op == "mul":
            self.out = fp.mul16(self.m, self.a[:16], self.b[:16], cuts=cuts)
        elif op == "add32":
            self.out = fp.add(self.m, FP32, self.a, self.b, cuts=cuts)
        elif op == "add16":
            self.out = fp.add(self.m, FP16, self.a[:16], self.b[:16], cuts=cuts)
        elif op == "exp":
            self.out = fp.exp_fixed(self.m, self.a, cuts=cuts)
        elif op == "scale":
            # b: the reciprocal's 25-bit significand and the sum's bit length (6 bits)
            self.out = fp.scale_round16(self.m, self.a[:31], self.b[:25], self.b[25:31],
                                        cuts=cuts)
        else:
            self.out = fp.narrow(self.m, self.a, cuts=cuts)


@pytest.mark.parametrize(("op", "cuts"), [
    ("mul", (1,)), ("mul", (2,)), ("mul", (3,)), ("mul", (1, 2, 3)),
    ("add32", (1,)), ("add32", (2,)), ("add32", (3,)), ("add32", (4,)), ("add32", (5,)),
    ("add32", (1, 2, 3, 4, 5)), ("add16", (1, 3, 5)), ("narrow", (1,)), ("narrow", (1, 2)),
    ("exp", ()), ("exp", (1, 2, 3, 4, 5, 6, 7, 8)), ("exp", (2, 5, 7)),
    ("scale", ()), ("scale", (1, 2, 3, 4)), ("scale", (2,)), ("scale", (3,)), ("scale", (4,)),
])
def test_pipelined_units(op: str, cuts: tuple[int, ...]) -> None:
    """With registers between any of its steps a unit computes the same bits, ``len(cuts)``
    clocks later, one operation per clock."""
    rng = np.random.default_rng(SEED + len(cuts))
    if op == "mul":
        a, b = pairs(EDGE16, np.stack([interesting16(rng, N), interesting16(rng, N)]))
        want = nm.mul(a.astype(np.uint16), b.astype(np.uint16))
    elif op == "add32":
        x, y = interesting32(rng, N), interesting32(rng, N)
        y[:N // 3] = (x[:N // 3] ^ np.uint32(1 << 31)) + rng.integers(0, 3, N // 3).astype(
            np.uint32)
        a, b = pairs(EDGE32, np.stack([x, y]))
        want = nm.add(a.astype(np.uint32), b.astype(np.uint32))
    elif op == "add16":
        a, b = pairs(EDGE16, np.stack([interesting16(rng, N), interesting16(rng, N)]))
        want = nm.add(a.astype(np.uint16), b.astype(np.uint16), FP16)
    elif op == "exp":
        # the softmax's arguments t = x - m <= 0, and the edges of the domain
        t = -np.abs(rng.normal(0, 1, 3 * N) * 10.0 ** rng.integers(-9, 2, 3 * N))
        a = np.concatenate([EDGE32, nm.to_bits(t, FP32),
                            interesting32(rng, N) | np.uint32(1 << 31)]).astype(np.uint64)
        b = np.zeros_like(a)
        want = nm.exp_fixed(a.astype(np.uint32))
    elif op == "scale":
        # numerators E <= 2^30 and the reciprocal of their sum, as the softmax has them
        e = rng.integers(0, (1 << 30) + 1, 3 * N).astype(np.uint64)
        e[:10] = [0, 1, 2, 1 << 30, (1 << 30) - 1, 3, 1 << 20, 7, 1 << 29, 5]
        sums = e + rng.integers(0, 1 << 36, 3 * N).astype(np.uint64) * rng.integers(0, 2, 3 * N)
        sums = np.maximum(sums, np.uint64(1 << 30))
        qb = [nm.reciprocal(int(x)) for x in sums]
        q = np.array([x[0] for x in qb], np.uint64)
        bl = np.array([x[1] for x in qb], np.uint64)
        a, b = e, q | (bl << np.uint64(25))
        want = nm.round_scaled(e * q, bl.astype(np.int64) + 23, FP16)
    else:
        a = np.concatenate([EDGE32, interesting32(rng, 2 * N)]).astype(np.uint64)
        b = np.zeros_like(a)
        want = nm.fp32_to_fp16(a.astype(np.uint32))
    u = _Piped(op, cuts)
    got: list[int] = []

    async def job(ctx: SimulatorContext) -> None:
        for i in range(len(a) + u.latency):
            if i < len(a):
                ctx.set(u.a, int(a[i]))
                ctx.set(u.b, int(b[i]))
            if i >= u.latency:
                got.append(ctx.get(u.out))
            await ctx.tick()

    Bench(u.m).run(job)
    check(got, want, a, b)


def test_cut_validation() -> None:
    from amaranth.hdl import Module, Signal

    with pytest.raises(ValueError, match=r"Cuts of add must be step numbers from 1 to 5, not "
                                         r"\[0, 6\]"):
        fp.add(Module(), FP32, Signal(32), Signal(32), cuts=(0, 6))


def test_shared_units_are_the_components_once_each() -> None:
    """``fp.SharedUnits``: one instance per use, one module per kind, and each module is the
    Verilog of the component it stands for (:class:`fp.Adder`, :class:`fp.Narrow`,
    :class:`fp.Widen`), so instancing changes no output bit."""
    from amaranth.back import verilog
    from amaranth.hdl import Fragment, Module, Signal

    units = fp.SharedUnits("u")
    m = Module()
    a32, b32, a16, b16 = Signal(32), Signal(32), Signal(16), Signal(16)
    outs = [units.add(m, FP32, a32, b32), units.add(m, FP32, b32, a32),
            units.add(m, FP16, a16, b16), units.narrow(m, a32), units.widen(m, a16)]
    assert [len(o) for o in outs] == [32, 32, 16, 16, 32]
    frag = Fragment.get(m, None)
    types = sorted(sub.type for sub, _, _ in frag.subfragments)
    assert types == ["u_add16", "u_add32", "u_add32", "u_narrow", "u_widen"]
    assert units.modules == ("u_add16", "u_add32", "u_narrow", "u_widen")
    # the kinds the FP16-accumulator channel uses (the FP32 ones run in every co-simulation)
    some = fp.SharedUnits("u").declare("widen", "add16")
    assert some.modules == ("u_add16", "u_widen")
    want = "".join(verilog.convert(c, name=n, emit_src=False) for n, c in [
        ("u_add16", fp.Adder(fmt=FP16)), ("u_widen", fp.Widen())])
    assert some.verilog() == want
    with pytest.raises(ValueError, match=r"unknown unit kinds \['mul'\]: use \['add16', "):
        units.declare("mul")

"""Floating-point datapath: FP16 multiplier, FP16/FP32 adder, conversions, pairwise reduction tree.

Every unit is bit-exact with :mod:`starc.numerics` (IEEE 754 round-to-nearest-even, subnormals
supported, canonical NaN) and takes its format from :data:`starc.numerics.FP16` /
:data:`starc.numerics.FP32`. Amaranth 0.5 has no floating-point type, so each operation is a
function that adds combinational logic to a module and returns the result
(:func:`mul16`, :func:`add`, :func:`narrow`, :func:`widen`); the pipelined blocks of
``starc_hw.pu`` and ``starc_hw.softmax`` are built from these. The components of this module wrap
them for test and reuse: the combinational :class:`Multiplier`, :class:`Adder`, :class:`Narrow`,
:class:`Widen`, and the pipelined :class:`ReductionTree`.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from starc.numerics import FP16, FP32, FloatFormat

__all__ = [
    "Adder",
    "Multiplier",
    "Narrow",
    "ReductionTree",
    "Widen",
    "acc_format",
    "add",
    "leading_zeros",
    "mul16",
    "narrow",
    "shift_right_sticky",
    "tree",
    "widen",
]

_FORMATS = {"fp32": FP32, "fp16": FP16}


def acc_format(name: str) -> FloatFormat:
    """The :class:`~starc.numerics.FloatFormat` of ``pu.acc_format``."""
    try:
        return _FORMATS[name]
    except KeyError:
        raise ValueError(f"Accumulation format must be 'fp32' or 'fp16', not {name!r}") from None


def _check_format(fmt: object) -> FloatFormat:
    if fmt not in (FP32, FP16):
        raise TypeError(f"Format must be starc.numerics.FP32 or starc.numerics.FP16, not {fmt!r}")
    return fmt  # type: ignore[return-value]


def leading_zeros(m: Module, v: Value) -> Signal:
    """Number of leading zeros of ``v`` (``len(v)`` when ``v`` is 0), combinational.

    Written as a priority chain: it simulates fastest, and synthesis restructures it (an FP32 adder
    reached the same ECP5 Fmax with a log-depth tree; the carry chains are its critical path)."""
    n = len(v)
    lz = Signal(range(n + 1), init=n)
    for i in range(n):          # later assignments win: the highest set bit decides
        with m.If(v[i]):
            m.d.comb += lz.eq(n - 1 - i)
    return lz


def shift_right_sticky(m: Module, v: Value, amount: Value, width: int) -> tuple[Value, Value]:
    """``(v >> amount)[:width]`` and the OR of every bit shifted out; ``amount`` may exceed
    ``len(v)`` (then everything is shifted out)."""
    n = len(v)
    wide = Signal(2 * n)
    m.d.comb += wide.eq(Cat(Const(0, n), v) >> amount)
    return wide[n:n + width], wide[:n].any()


def _unit(parent: Module) -> Module:
    """A submodule per operation: the simulator then re-evaluates only the units whose inputs
    changed, instead of the whole datapath."""
    sub = Module()
    parent.submodules += sub
    return sub


def _unpack(fmt: FloatFormat, x: Value) -> tuple[Value, Value, Value]:
    M, E = fmt.man_bits, fmt.exp_bits
    return x[M + E], x[M:M + E], x[:M]


def mul16(m: Module, a: Value, b: Value) -> Signal:
    """FP16 x FP16 -> exact FP32 product (bits). Subnormal inputs are normalised; the product of
    two FP16 numbers is always a normal FP32 number, so there is nothing to round."""
    m = _unit(m)
    sa, ea, fa = _unpack(FP16, a)
    sb, eb, fb = _unpack(FP16, b)
    emax = FP16.exp_max
    nan_a, nan_b = (ea == emax) & fa.any(), (eb == emax) & fb.any()
    inf_a, inf_b = (ea == emax) & ~fa.any(), (eb == emax) & ~fb.any()
    zero_a, zero_b = (ea == 0) & ~fa.any(), (eb == 0) & ~fb.any()
    ma, mb = Cat(fa, ea != 0), Cat(fb, eb != 0)
    xa, xb = Mux(ea == 0, 1, ea), Mux(eb == 0, 1, eb)
    prod = Signal(22)
    m.d.comb += prod.eq(ma * mb)
    lz = leading_zeros(m, prod)
    sig = Signal(24)
    m.d.comb += sig.eq((prod << lz).shift_left(2))
    # value = prod * 2^(xa + xb - 50); top bit of prod at 21 - lz, so the biased FP32 exponent is
    # 21 - lz + xa + xb - 50 + 127 (79 .. 158: never subnormal, never overflowing)
    exp = Signal(8)
    m.d.comb += exp.eq(98 + xa + xb - lz)
    sign = sa ^ sb
    out = Signal(32, name="product")
    m.d.comb += out.eq(Mux(nan_a | nan_b | (inf_a & zero_b) | (zero_a & inf_b), FP32.nan,
                           Cat(Mux(inf_a | inf_b, FP32.inf,
                                   Mux(zero_a | zero_b, 0, Cat(sig[:23], exp)))[:31], sign)))
    return out


def add(m: Module, fmt: FloatFormat, a: Value, b: Value) -> Signal:
    """IEEE 754 addition in ``fmt`` with round-to-nearest-even, gradual underflow, overflow to
    infinity and canonical NaN; ``x + (-x) = +0``, ``(-0) + (-0) = -0``."""
    m = _unit(m)
    M, E, W = fmt.man_bits, fmt.exp_bits, fmt.width
    emax = fmt.exp_max
    swap = b[:W - 1] > a[:W - 1]
    x, y = Signal(W), Signal(W)
    m.d.comb += [x.eq(Mux(swap, b, a)), y.eq(Mux(swap, a, b))]   # |x| >= |y|
    sx, ex, fx = _unpack(fmt, x)
    sy, ey, fy = _unpack(fmt, y)
    nan = ((ex == emax) & fx.any()) | ((ey == emax) & fy.any())
    inf_x, inf_y = (ex == emax) & ~fx.any(), (ey == emax) & ~fy.any()
    sub = sx ^ sy
    xe = Signal(E)
    m.d.comb += xe.eq(Mux(ex == 0, 1, ex))
    d = Signal(E)
    m.d.comb += d.eq(xe - Mux(ey == 0, 1, ey))
    # align y with guard, round and sticky bits below the LSB of x
    dc = Signal(range(M + 5))
    m.d.comb += dc.eq(Mux(d > M + 4, M + 4, d))
    ya, sticky = shift_right_sticky(m, Cat(Const(0, 3), fy, ey != 0), dc, M + 4)
    xa = Cat(Const(0, 3), fx, ex != 0)
    yb = Cat(ya[0] | sticky, ya[1:])
    s = Signal(M + 5)
    m.d.comb += s.eq(Mux(sub, xa - yb, xa + yb))
    # normalise: right by one on carry, else left by the leading zeros without going below the
    # smallest exponent (the result is then subnormal)
    norm = Signal(M + 4)
    e_res = Signal(E + 1)
    lz = leading_zeros(m, s[:M + 4])
    sl = Signal(range(M + 5))
    m.d.comb += sl.eq(Mux(lz > xe - 1, xe - 1, lz))
    m.d.comb += [norm.eq(Mux(s[M + 4], Cat(s[0] | s[1], s[2:]), s[:M + 4] << sl)),
                 e_res.eq(Mux(s[M + 4], xe + 1, xe - sl))]
    mant = norm[3:]
    up = norm[2] & (norm[1] | norm[0] | mant[0])
    # (biased exponent - 1) << M plus the significand (hidden bit included): a subnormal result has
    # e_res = 1 and no hidden bit; a rounding carry moves into the exponent by itself
    packed = Signal(E + M + 2)
    m.d.comb += packed.eq(((e_res - 1) << M) + mant + up)
    mag = Mux(packed >= fmt.inf, fmt.inf, packed)
    zero = ~s.any()
    out = Signal(W, name="sum")
    m.d.comb += out.eq(Mux(nan | (inf_x & inf_y & sub), fmt.nan,
                           Mux(inf_x, Cat(Const(fmt.inf, W - 1), sx),
                               Mux(zero, Cat(Const(0, W - 1), sx & ~sub),
                                   Cat(mag[:W - 1], sx)))))
    return out


def narrow(m: Module, a: Value) -> Signal:
    """FP32 -> FP16 with round-to-nearest-even, gradual underflow and overflow to infinity."""
    m = _unit(m)
    s, e, f = _unpack(FP32, a)
    nan = (e == FP32.exp_max) & f.any()
    inf = (e == FP32.exp_max) & ~f.any()
    xe = Signal(8)
    m.d.comb += xe.eq(Mux(e == 0, 1, e))
    # FP16 biased exponent would be xe - 112; below 1 the value is subnormal and loses
    # 126 - xe bits instead of 13; from 25 bits on, only sticky bits remain.
    normal = xe >= 113
    # shift by one less (12 .. 24) to keep the guard bit: q = the 11 bits above it
    sh = Signal(range(25))
    m.d.comb += sh.eq(Mux(normal, 12, Mux(xe < 101, 24, 125 - xe)))
    qg, sticky = shift_right_sticky(m, Cat(f, e != 0), sh, 12)
    q = qg[1:]
    up = qg[0] & (sticky | q[0])
    packed = Signal(19)
    m.d.comb += packed.eq(Mux(normal, (xe - 113) << 10, 0) + q + up)
    out = Signal(16, name="half")
    m.d.comb += out.eq(Mux(nan, FP16.nan,
                           Cat(Mux(inf | (packed >= FP16.inf), FP16.inf, packed)[:15], s)))
    return out


def widen(m: Module, a: Value) -> Signal:
    """FP16 -> FP32, exact (subnormal FP16 values become normal FP32 values)."""
    m = _unit(m)
    s, e, f = _unpack(FP16, a)
    lz = leading_zeros(m, f)
    out = Signal(32, name="single")
    with m.If(e == FP16.exp_max):
        m.d.comb += out.eq(Mux(f.any(), FP32.nan, Cat(Const(FP32.inf, 31), s)))
    with m.Elif(e != 0):
        m.d.comb += out.eq(Cat(Const(0, 13), f, (e + 112)[:8], s))
    with m.Elif(f.any()):
        # value f * 2^-24 with the top bit of f at 9 - lz: exponent -15 - lz, biased 112 - lz
        frac, exp = Signal(10), Signal(8)
        m.d.comb += [frac.eq(f << (lz + 1)), exp.eq(112 - lz)]
        m.d.comb += out.eq(Cat(Const(0, 13), frac, exp, s))
    with m.Else():
        m.d.comb += out.eq(Cat(Const(0, 31), s))
    return out


def tree(m: Module, fmt: FloatFormat, xs: Sequence[Value], *,
         register_after: frozenset[int] = frozenset(), domain: str = "sync") -> Value:
    """Fixed pairwise tree sum of ``xs`` (``starc.numerics.Arith.tree``); with an odd count the
    last value of a level passes through. A register stage follows every level whose number
    (1 = first level of adds) is in ``register_after``."""
    level, vals = 0, list(xs)
    while len(vals) > 1:
        level += 1
        nxt = [add(m, fmt, vals[i], vals[i + 1]) for i in range(0, len(vals) - 1, 2)]
        if len(vals) % 2:
            nxt.append(vals[-1])
        if level in register_after:
            regs = [Signal(fmt.width, name=f"tree_l{level}_{i}") for i in range(len(nxt))]
            m.d[domain] += [r.eq(v) for r, v in zip(regs, nxt, strict=True)]
            nxt = regs
        vals = nxt
    return vals[0]


def tree_levels(n: int) -> int:
    """Adder levels of the pairwise tree over ``n`` values."""
    levels = 0
    while n > 1:
        n = (n + 1) // 2
        levels += 1
    return levels


# ---- components ------------------------------------------------------------------------------

class Multiplier(wiring.Component):
    """FP16 x FP16 product in the accumulation format of the PU, combinational.

    Members
    -------
    a, b : In(16)
        FP16 operands.
    p : Out(32 or 16)
        ``"fp32"``: the exact FP32 product. ``"fp16"``: the product rounded once to FP16 (RNE).
    """

    def __init__(self, *, acc: str = "fp32") -> None:
        self._fmt = acc_format(acc)
        super().__init__({"a": In(16), "b": In(16), "p": Out(self._fmt.width)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        p = mul16(m, self.a, self.b)
        m.d.comb += self.p.eq(p if self._fmt == FP32 else narrow(m, p))
        return m


class Adder(wiring.Component):
    """IEEE RNE adder of ``fmt`` (``starc.numerics.FP32`` or ``FP16``), combinational.

    Members
    -------
    a, b : In(fmt.width)
    s : Out(fmt.width)
        ``a + b`` (see :func:`add`).
    """

    def __init__(self, *, fmt: FloatFormat) -> None:
        self._fmt = _check_format(fmt)
        super().__init__({"a": In(fmt.width), "b": In(fmt.width), "s": Out(fmt.width)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.d.comb += self.s.eq(add(m, self._fmt, self.a, self.b))
        return m


class Narrow(wiring.Component):
    """FP32 -> FP16 (RNE), combinational. Members: ``a`` In(32), ``h`` Out(16)."""

    def __init__(self) -> None:
        super().__init__({"a": In(32), "h": Out(16)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.d.comb += self.h.eq(narrow(m, self.a))
        return m


class Widen(wiring.Component):
    """FP16 -> FP32 (exact), combinational. Members: ``h`` In(16), ``a`` Out(32)."""

    def __init__(self) -> None:
        super().__init__({"h": In(16), "a": Out(32)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.d.comb += self.a.eq(widen(m, self.h))
        return m


class ReductionTree(wiring.Component):
    """Pipelined fixed pairwise tree sum of ``n`` values of ``fmt``.

    Members
    -------
    i : In(stream.Signature(ArrayLayout(fmt.width, n), always_ready=True))
        Operands; one set per cycle.
    o : Out(stream.Signature(fmt.width))
        The sum, ``stages`` cycles after the operands (``stages = 0``: combinational). ``o`` has
        no back-pressure: ``o.ready`` is ignored.

    Registers follow evenly spaced adder levels: with L levels and S stages, after level
    ``ceil(k * L / S)`` for k = 1..S (levels beyond L are plain delay registers).
    """

    def __init__(self, *, fmt: FloatFormat, n: int, stages: int = 0) -> None:
        self._fmt = _check_format(fmt)
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise TypeError(f"Operand count must be a positive integer, not {n!r}")
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 0:
            raise TypeError(f"Stage count must be a non-negative integer, not {stages!r}")
        self._n, self._stages = n, stages
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(fmt.width, n), always_ready=True)),
            "o": Out(stream.Signature(fmt.width)),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        levels = tree_levels(self._n)
        cuts = [-(-k * levels // self._stages) if levels else 0
                for k in range(1, self._stages + 1)]
        in_tree = frozenset(c for c in cuts if 1 <= c <= levels)
        after = len(cuts) - len(in_tree)             # delay registers after the tree
        s = tree(m, self._fmt, [self.i.payload[k] for k in range(self._n)],
                 register_after=in_tree)
        valid: Value = self.i.valid
        # a level cut twice (more stages than levels) becomes delay as well
        for _ in range(len(in_tree)):
            v = Signal()
            m.d.sync += v.eq(valid)
            valid = v
        for _ in range(after):
            r, v = Signal(self._fmt.width), Signal()
            m.d.sync += [r.eq(s), v.eq(valid)]
            s, valid = r, v
        m.d.comb += [self.o.payload.eq(s), self.o.valid.eq(valid)]
        return m

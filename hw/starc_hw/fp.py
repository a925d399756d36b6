"""Floating-point datapath: FP16 multiplier, FP16/FP32 adder, conversions, pairwise reduction tree.

Every unit is bit-exact with :mod:`starc.numerics` (IEEE 754 round-to-nearest-even, subnormals
supported, canonical NaN) and takes its format from :data:`starc.numerics.FP16` /
:data:`starc.numerics.FP32`. Amaranth 0.5 has no floating-point type, so each operation is a
function that adds combinational logic to a module and returns the result
(:func:`mul16`, :func:`add`, :func:`narrow`, :func:`widen`); the pipelined blocks of
``starc_hw.pu`` and ``starc_hw.softmax`` are built from these. The components of this module wrap
them for test and reuse: the combinational :class:`Multiplier`, :class:`Adder`, :class:`Narrow`,
:class:`Widen`, and the pipelined :class:`ReductionTree`. :class:`SharedUnits` places the
combinational ones as instances of one Verilog module per kind (for Verilog outputs, where a
design's hundred identical units would otherwise be written, and compiled, one by one).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from amaranth.hdl import Array, Cat, Const, Instance, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from starc.numerics import FP16, FP32, FloatFormat

__all__ = [
    "ADD_STEPS",
    "EXP_STEPS",
    "MUL_STEPS",
    "NARROW_STEPS",
    "SCALE_STEPS",
    "Adder",
    "Multiplier",
    "Narrow",
    "ReductionTree",
    "SharedUnits",
    "Widen",
    "acc_format",
    "add",
    "exp_fixed",
    "leading_zeros",
    "mul16",
    "narrow",
    "scale_round16",
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


class _Cuts:
    """Register stages between the steps of a multi-step unit: ``cut(k, values)`` registers the
    live ``values`` after step ``k`` when ``k`` is one of the cuts (else passes them through).

    A unit of ``steps`` steps accepts cuts 1 .. steps - 1; its latency is the number of cuts."""

    def __init__(self, cuts: Collection[int], steps: int, unit: str, domain: str) -> None:
        cuts = frozenset(cuts)
        bad = sorted(c for c in cuts if isinstance(c, bool) or not isinstance(c, int)
                     or not 1 <= c < steps)
        if bad:
            raise ValueError(f"Cuts of {unit} must be step numbers from 1 to {steps - 1}, not "
                             f"{bad}")
        self._cuts, self._domain, self._unit = cuts, domain, unit
        self._m: Module | None = None

    def unit(self, parent: Module) -> Module:
        """The submodule of the operation (see :func:`_unit`), once the cuts are valid."""
        self._m = _unit(parent)
        return self._m

    def __call__(self, step: int, **values: Value) -> dict[str, Value]:
        if step not in self._cuts:
            return values
        regs = {}
        for k, v in values.items():
            r = Signal(Value.cast(v).shape(), name=f"{self._unit}{step}_{k}")
            self._m.d[self._domain] += r.eq(v)  # type: ignore[union-attr]
            regs[k] = r
        return regs


def _unpack(fmt: FloatFormat, x: Value) -> tuple[Value, Value, Value]:
    M, E = fmt.man_bits, fmt.exp_bits
    return x[M + E], x[M:M + E], x[:M]


#: Steps of :func:`mul16`: unpack, multiply (11 x 11 bits, one DSP block), count, normalise.
MUL_STEPS = 4


def mul16(m: Module, a: Value, b: Value, *, cuts: Collection[int] = (),
          domain: str = "sync") -> Signal:
    """FP16 x FP16 -> exact FP32 product (bits). Subnormal inputs are normalised; the product of
    two FP16 numbers is always a normal FP32 number, so there is nothing to round.

    ``cuts``: register stages after steps 1 .. 3 of :data:`MUL_STEPS` (the latency is their
    number); registers around step 2 let synthesis use the DSP block's own."""
    c = _Cuts(cuts, MUL_STEPS, "mul", domain)
    m = c.unit(m)
    # step 1: unpack; special values; significands (hidden bit 0 for subnormals)
    sa, ea, fa = _unpack(FP16, a)
    sb, eb, fb = _unpack(FP16, b)
    emax = FP16.exp_max
    nan_a, nan_b = (ea == emax) & fa.any(), (eb == emax) & fb.any()
    inf_a, inf_b = (ea == emax) & ~fa.any(), (eb == emax) & ~fb.any()
    zero_a, zero_b = (ea == 0) & ~fa.any(), (eb == 0) & ~fb.any()
    v = c(1, ma=Cat(fa, ea != 0), mb=Cat(fb, eb != 0),
          xs=Mux(ea == 0, 1, ea) + Mux(eb == 0, 1, eb),
          nan=nan_a | nan_b | (inf_a & zero_b) | (zero_a & inf_b), inf=inf_a | inf_b,
          zero=zero_a | zero_b, sign=sa ^ sb)
    # step 2: the 22-bit significand product
    prod = Signal(22)
    m.d.comb += prod.eq(v["ma"] * v["mb"])
    flags = {k: v[k] for k in ("xs", "nan", "inf", "zero", "sign")}
    v = c(2, prod=prod, **flags)
    # step 3: leading zeros
    v = c(3, prod=v["prod"], lz=leading_zeros(m, v["prod"]), **{k: v[k] for k in flags})
    # step 4: normalise and pack. value = prod * 2^(xa + xb - 50); top bit of prod at 21 - lz,
    # so the biased FP32 exponent is 21 - lz + xa + xb - 50 + 127 (79 .. 158: never subnormal,
    # never overflowing)
    sig = Signal(24)
    m.d.comb += sig.eq((v["prod"] << v["lz"]).shift_left(2))
    exp = Signal(8)
    m.d.comb += exp.eq(98 + v["xs"] - v["lz"])
    out = Signal(32, name="product")
    m.d.comb += out.eq(Mux(v["nan"], FP32.nan,
                           Cat(Mux(v["inf"], FP32.inf,
                                   Mux(v["zero"], 0, Cat(sig[:23], exp)))[:31], v["sign"])))
    return out


#: Steps of :func:`add`: order the operands, align, add, count, normalise, round.
ADD_STEPS = 6


def add(m: Module, fmt: FloatFormat, a: Value, b: Value, *, cuts: Collection[int] = (),
        domain: str = "sync") -> Signal:
    """IEEE 754 addition in ``fmt`` with round-to-nearest-even, gradual underflow, overflow to
    infinity and canonical NaN; ``x + (-x) = +0``, ``(-0) + (-0) = -0``.

    ``cuts``: register stages after steps 1 .. 5 of :data:`ADD_STEPS` (the latency is their
    number)."""
    c = _Cuts(cuts, ADD_STEPS, "add", domain)
    m = c.unit(m)
    M, E, W = fmt.man_bits, fmt.exp_bits, fmt.width
    emax = fmt.exp_max
    # step 1: |x| >= |y|, the larger exponent and the exponent difference
    swap = b[:W - 1] > a[:W - 1]
    x, y = Signal(W), Signal(W)
    m.d.comb += [x.eq(Mux(swap, b, a)), y.eq(Mux(swap, a, b))]
    ex, ey = x[M:M + E], y[M:M + E]
    xe = Signal(E)
    m.d.comb += xe.eq(Mux(ex == 0, 1, ex))
    d = Signal(E)
    m.d.comb += d.eq(xe - Mux(ey == 0, 1, ey))
    v = c(1, x=x, y=y, xe=xe, d=d)
    # step 2: align y with guard, round and sticky bits below the LSB of x
    sx, ex, fx = _unpack(fmt, v["x"])
    sy, ey, fy = _unpack(fmt, v["y"])
    flags = {"nan": ((ex == emax) & fx.any()) | ((ey == emax) & fy.any()),
             "inf_x": (ex == emax) & ~fx.any(), "inf_y": (ey == emax) & ~fy.any(),
             "sub": sx ^ sy, "sx": sx}
    dc = Signal(range(M + 5))
    m.d.comb += dc.eq(Mux(v["d"] > M + 4, M + 4, v["d"]))
    ya, sticky = shift_right_sticky(m, Cat(Const(0, 3), fy, ey != 0), dc, M + 4)
    v = c(2, xa=Cat(Const(0, 3), fx, ex != 0), yb=Cat(ya[0] | sticky, ya[1:]), xe=v["xe"],
          **flags)
    flags = {k: v[k] for k in flags}
    # step 3: add or subtract
    s = Signal(M + 5)
    m.d.comb += s.eq(Mux(v["sub"], v["xa"] - v["yb"], v["xa"] + v["yb"]))
    v = c(3, s=s, xe=v["xe"], **flags)
    flags = {k: v[k] for k in flags}
    # step 4: leading zeros
    v = c(4, s=v["s"], lz=leading_zeros(m, v["s"][:M + 4]), xe=v["xe"], **flags)
    flags = {k: v[k] for k in flags}
    # step 5: normalise: right by one on carry, else left by the leading zeros without going
    # below the smallest exponent (the result is then subnormal)
    s, xe, lz = v["s"], v["xe"], v["lz"]
    norm = Signal(M + 4)
    e_res = Signal(E + 1)
    sl = Signal(range(M + 5))
    m.d.comb += sl.eq(Mux(lz > xe - 1, xe - 1, lz))
    m.d.comb += [norm.eq(Mux(s[M + 4], Cat(s[0] | s[1], s[2:]), s[:M + 4] << sl)),
                 e_res.eq(Mux(s[M + 4], xe + 1, xe - sl))]
    v = c(5, norm=norm, e_res=e_res, zero=~s.any(), **flags)
    # step 6: round. (biased exponent - 1) << M plus the significand (hidden bit included): a
    # subnormal result has e_res = 1 and no hidden bit; a rounding carry moves into the exponent
    # by itself
    norm = v["norm"]
    mant = norm[3:]
    up = norm[2] & (norm[1] | norm[0] | mant[0])
    packed = Signal(E + M + 2)
    m.d.comb += packed.eq(((v["e_res"] - 1) << M) + mant + up)
    mag = Mux(packed >= fmt.inf, fmt.inf, packed)
    sx, sub = v["sx"], v["sub"]
    out = Signal(W, name="sum")
    m.d.comb += out.eq(Mux(v["nan"] | (v["inf_x"] & v["inf_y"] & sub), fmt.nan,
                           Mux(v["inf_x"], Cat(Const(fmt.inf, W - 1), sx),
                               Mux(v["zero"], Cat(Const(0, W - 1), sx & ~sub),
                                   Cat(mag[:W - 1], sx)))))
    return out


#: Steps of :func:`narrow`: unpack, shift, round.
NARROW_STEPS = 3


def narrow(m: Module, a: Value, *, cuts: Collection[int] = (), domain: str = "sync") -> Signal:
    """FP32 -> FP16 with round-to-nearest-even, gradual underflow and overflow to infinity.

    ``cuts``: register stages after steps 1 .. 2 of :data:`NARROW_STEPS`."""
    c = _Cuts(cuts, NARROW_STEPS, "narrow", domain)
    m = c.unit(m)
    s, e, f = _unpack(FP32, a)
    xe = Signal(8)
    m.d.comb += xe.eq(Mux(e == 0, 1, e))
    # FP16 biased exponent would be xe - 112; below 1 the value is subnormal and loses
    # 126 - xe bits instead of 13; from 25 bits on, only sticky bits remain.
    normal = xe >= 113
    # shift by one less (12 .. 24) to keep the guard bit: q = the 11 bits above it
    sh = Signal(range(25))
    m.d.comb += sh.eq(Mux(normal, 12, Mux(xe < 101, 24, 125 - xe)))
    v = c(1, sig=Cat(f, e != 0), sh=sh, xe=xe, normal=normal, s=s,
          nan=(e == FP32.exp_max) & f.any(), inf=(e == FP32.exp_max) & ~f.any())
    qg, sticky = shift_right_sticky(m, v["sig"], v["sh"], 12)
    rest = {k: v[k] for k in ("xe", "normal", "s", "nan", "inf")}
    v = c(2, qg=qg, sticky=sticky, **rest)
    qg = v["qg"]
    q = qg[1:]
    up = qg[0] & (v["sticky"] | q[0])
    packed = Signal(19)
    m.d.comb += packed.eq(Mux(v["normal"], (v["xe"] - 113) << 10, 0) + q + up)
    out = Signal(16, name="half")
    m.d.comb += out.eq(Mux(v["nan"], FP16.nan,
                           Cat(Mux(v["inf"] | (packed >= FP16.inf), FP16.inf, packed)[:15],
                               v["s"])))
    return out


#: Steps of :func:`exp_fixed`: unpack, |t| log2(e) product, shift, split and r ln 2 (with the
#: table), A^2, the polynomial, the table product, its rounding, the final shift.
EXP_STEPS = 9


def exp_fixed(m: Module, t: Value, *, cuts: Collection[int] = (),
              domain: str = "sync") -> Signal:
    """``E ~= exp(t) 2^30`` of an FP32 ``t <= 0`` (:func:`starc.numerics.exp_fixed`, bit for
    bit): an unsigned U1.30 number, ``0 <= E <= 2^30``.

    ``cuts``: register stages after steps 1 .. 8 of :data:`EXP_STEPS`."""
    from starc.numerics import (
        EXP_ARG_FRAC_BITS,
        EXP_FRAC_BITS,
        EXP_LN2_Q,
        EXP_LOG2E_Q,
        EXP_MAX_ARG_EXPONENT,
        EXP_TABLE,
        EXP_TABLE_BITS,
    )

    c = _Cuts(cuts, EXP_STEPS, "exp", domain)
    m = c.unit(m)
    # step 1: unpack; |t| >= 32 and NaN give 0, +-0 and subnormals give U = 0 (E = 2^30)
    ex, frac, neg = t[23:31], t[:23], t[31]
    sh = Signal(8)
    m.d.comb += sh.eq(151 - ex)
    v = c(1, mant=Cat(frac, 1), sh=sh, small=~neg | (ex == 0),
          kill=(neg & (ex >= EXP_MAX_ARG_EXPONENT)) | ((ex == 0xFF) & frac.any()))
    keep = {"kill": v["kill"]}
    # step 2: the 24 x 32-bit product |t| log2(e)
    v = c(2, prod=v["mant"] * EXP_LOG2E_Q, sh=v["sh"], small=v["small"], **keep)
    keep = {"kill": v["kill"]}
    # step 3: U = floor(|t| log2(e) 2^30)
    u = Signal(36)
    m.d.comb += u.eq(Mux(v["small"], 0, v["prod"] >> v["sh"]))
    v = c(3, u=u, **keep)
    keep = {"kill": v["kill"]}
    # step 4: integer part n, table index, remainder r; A = r ln 2 (fixed point)
    low = EXP_ARG_FRAC_BITS - EXP_TABLE_BITS
    idx, r = v["u"][low:EXP_ARG_FRAC_BITS], v["u"][:low]
    table = Array(Const(x, 31) for x in EXP_TABLE)
    v = c(4, n=v["u"][EXP_ARG_FRAC_BITS:], T=table[idx], A=((r * EXP_LN2_Q) >> 30)[:low],
          **keep)
    keep = {k: v[k] for k in ("kill", "n", "T")}
    # step 5: A^2
    v = c(5, A=v["A"], AA=v["A"] * v["A"], **keep)
    keep = {k: v[k] for k in keep}
    # step 6: 2^-r ~ 1 - a + a^2 / 2
    v = c(6, poly=((1 << 30) - v["A"] + (v["AA"] >> 31))[:31], **keep)
    keep = {k: v[k] for k in ("kill", "n")}
    # step 7: the table product
    v = c(7, TP=v["T"] * v["poly"], **keep)
    keep = {k: v[k] for k in keep}
    # step 8: P = 2^-f, rounded half up
    v = c(8, P=((v["TP"] + (1 << 29)) >> 30)[:31], **keep)
    # step 9: E = P 2^-n, rounded half up
    half = (Const(1, 1) << v["n"]) >> 1
    out = Signal(EXP_FRAC_BITS + 1, name="exp")
    m.d.comb += out.eq(Mux(v["kill"], 0, (v["P"] + half) >> v["n"]))
    return out


#: Steps of :func:`scale_round16`: product, bit length, shift amount, shift, round.
SCALE_STEPS = 5


def scale_round16(m: Module, e: Value, q: Value, b: Value, *, cuts: Collection[int] = (),
                  domain: str = "sync") -> Signal:
    """``fp16(e q 2^-(b + 23))``: the exact product of a softmax numerator ``e`` and the
    reciprocal's significand ``q`` (``b``: bit length of the sum) rounded once to FP16 (RNE,
    subnormals kept, overflow to infinity): :func:`starc.numerics.round_scaled` with the
    softmax's scale.

    ``cuts``: register stages after steps 1 .. 4 of :data:`SCALE_STEPS`. The shift amount
    (a comparison and a subtraction on the bit length, two carry chains) and the wide shift with
    its sticky bit are steps of their own, so a cut between them takes the carry chains out of
    the shift's clock (pim-mid's routed critical path with both in one clock, docs/fpga.md)."""
    c = _Cuts(cuts, SCALE_STEPS, "scale", domain)
    m = c.unit(m)
    # step 1: the exact product
    prod = Signal(len(e) + len(q))
    m.d.comb += prod.eq(e * q)
    v = c(1, prod=prod, b=b)
    # step 2: its bit length
    L = Signal(range(len(prod) + 1))
    m.d.comb += L.eq(len(prod) - leading_zeros(m, v["prod"]))
    v = c(2, prod=v["prod"], b=v["b"], L=L)
    # step 3: the shift to 11 bits and a guard bit; the subnormal quantum 2^-24 is bit b - 1
    k_lo = v["b"] - 1
    normal = Signal()
    m.d.comb += normal.eq(k_lo <= v["L"] - 11)
    sh1 = Signal(range(len(prod) + 1))
    m.d.comb += sh1.eq(Mux(normal, v["L"] - 12, k_lo - 1))
    v = c(3, prod=v["prod"], sh1=sh1, normal=normal, ebase=v["L"] - v["b"] - 10)
    # step 4: shift, and the sticky OR of the bits shifted out
    qg, sticky = shift_right_sticky(m, v["prod"], v["sh1"], 12)
    v = c(4, qg=qg, sticky=sticky, normal=v["normal"], ebase=v["ebase"])
    # step 5: round; a rounding carry runs into the exponent, overflow gives infinity
    q11 = v["qg"][1:]
    up = v["qg"][0] & (v["sticky"] | q11[0])
    packed = Signal(17)
    m.d.comb += packed.eq(Mux(v["normal"], v["ebase"] << 10, 0) + q11 + up)
    out = Signal(16, name="prob")
    m.d.comb += out.eq(Mux(packed >= FP16.inf, FP16.inf, packed))
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
         register_after: frozenset[int] = frozenset(), domain: str = "sync",
         adder: Callable[[Module, FloatFormat, Value, Value], Value] | None = None) -> Value:
    """Fixed pairwise tree sum of ``xs`` (``starc.numerics.Arith.tree``); with an odd count the
    last value of a level passes through. A register stage follows every level whose number
    (1 = first level of adds) is in ``register_after``. ``adder``: the combinational adder
    (default :func:`add`; :meth:`SharedUnits.add` for instances)."""
    adder = add if adder is None else adder
    level, vals = 0, list(xs)
    while len(vals) > 1:
        level += 1
        nxt = [adder(m, fmt, vals[i], vals[i + 1]) for i in range(0, len(vals) - 1, 2)]
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


class SharedUnits:
    """The combinational units :func:`add`, :func:`narrow` and :func:`widen` as instances of one
    Verilog module per kind (``{prefix}_add32``, ``{prefix}_add16``, ``{prefix}_narrow``,
    ``{prefix}_widen``), whose source :meth:`verilog` returns for the kinds used or declared.

    The same logic as calling the functions: each module is the :class:`Adder`, :class:`Narrow`
    or :class:`Widen` component, so a design's output bits do not change; only its Verilog
    holds one definition per kind instead of one copy per use (each copy Amaranth would write
    as a module of its own, named after its place). For Verilog outputs only:
    ``amaranth.sim`` cannot simulate instances."""

    #: kind -> (the component, its output port)
    KINDS: dict[str, tuple[Callable[[], wiring.Component], str]] = {
        "add32": (lambda: Adder(fmt=FP32), "s"),
        "add16": (lambda: Adder(fmt=FP16), "s"),
        "narrow": (lambda: Narrow(), "h"),
        "widen": (lambda: Widen(), "a"),
    }

    def __init__(self, prefix: str = "starc_fp") -> None:
        self._prefix = prefix
        self._used: set[str] = set()

    def declare(self, *kinds: str) -> SharedUnits:
        """Count ``kinds`` (of :data:`KINDS`) as used, without an instance; returns self."""
        bad = [k for k in kinds if k not in self.KINDS]
        if bad:
            raise ValueError(f"unknown unit kinds {bad}: use {sorted(self.KINDS)}")
        self._used.update(kinds)
        return self

    def _instance(self, m: Module, kind: str, out: Signal, **ins: Value) -> Signal:
        """An instance of the module of ``kind`` with inputs ``ins``, its output driving
        ``out``."""
        self.declare(kind)
        port = self.KINDS[kind][1]
        m.submodules += Instance(f"{self._prefix}_{kind}",
                                 **{f"i_{k}": v for k, v in ins.items()}, **{f"o_{port}": out})
        return out

    def add(self, m: Module, fmt: FloatFormat, a: Value, b: Value) -> Signal:
        """:func:`add` (combinational, no cuts) as an instance of ``{prefix}_add{width}``."""
        fmt = _check_format(fmt)
        return self._instance(m, f"add{fmt.width}", Signal(fmt.width, name="sum"), a=a, b=b)

    def narrow(self, m: Module, a: Value) -> Signal:
        """:func:`narrow` (combinational) as an instance of ``{prefix}_narrow``."""
        return self._instance(m, "narrow", Signal(16, name="half"), a=a)

    def widen(self, m: Module, a: Value) -> Signal:
        """:func:`widen` as an instance of ``{prefix}_widen``."""
        return self._instance(m, "widen", Signal(32, name="single"), h=a)

    @property
    def modules(self) -> tuple[str, ...]:
        """Names of the modules used or declared so far, sorted."""
        return tuple(sorted(f"{self._prefix}_{k}" for k in self._used))

    def verilog(self) -> str:
        """Verilog of every module used or declared so far (one definition each), by name."""
        from amaranth.back import verilog

        names = {k: f"{self._prefix}_{k}" for k in sorted(self._used)}
        return "".join(verilog.convert(self.KINDS[k][0](), name=n, emit_src=False)
                       for k, n in names.items())


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

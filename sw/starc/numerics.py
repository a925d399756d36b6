"""Bit-exact model of the PIM arithmetic: FP16/FP32 formats, products, adds, trees and softmax.

This module is the definition the golden functional model (``starc.golden.functional``) and the
gateware (``starc_hw.fp``, ``starc_hw.pu``, ``starc_hw.softmax``) both follow bit for bit;
docs/numerics.md explains every choice and the measured error bounds. Pure NumPy, vectorised.

Conventions
-----------
* Values cross the public functions as IEEE 754 bit patterns: ``uint16`` for binary16 (FP16),
  ``uint32`` for binary32 (FP32). NaN results are always the canonical quiet NaN
  (:attr:`FloatFormat.nan`: ``0x7E00`` / ``0x7FC00000``); NaN inputs of any payload are accepted.
* Rounding is round-to-nearest-even (RNE) with gradual underflow: subnormal inputs and outputs are
  supported everywhere (nothing is flushed). Overflow rounds to infinity.
* ``acc_format`` ``"fp32"``: FP16 x FP16 products are exact in FP32 (22-bit significand product,
  exponent range 2^-48 .. 2^32, always normal) and every add rounds to FP32.
  ``"fp16"`` (Aquabolt-XL): the product is rounded once to FP16 and every add rounds to FP16.
* Trees are fixed and pairwise: ``((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))``; with an
  odd count the last element of a level passes to the next level unchanged.

Softmax (``softmax``): ``m`` = max of the valid scores; ``t = x - m`` (FP32 RNE subtract);
``e = exp_fixed(t)``, an unsigned fixed-point number with :data:`EXP_FRAC_BITS` fraction bits;
``S`` = the exact integer sum of the valid ``e`` (the same for any order, so also in buffer
order); ``r = 1 / sum`` correctly rounded to a 24-bit significand (:func:`reciprocal`);
``p = fp16(e * r)``, the exact product rounded once to FP16 (RNE, subnormals kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FP16",
    "FP32",
    "FloatFormat",
    "Arith",
    "EXP_ARG_FRAC_BITS",
    "EXP_FRAC_BITS",
    "EXP_LN2_Q",
    "EXP_LOG2E_Q",
    "EXP_MAX_ARG_EXPONENT",
    "EXP_TABLE",
    "EXP_TABLE_BITS",
    "RECIP_BITS",
    "SoftmaxTrace",
    "add",
    "arith",
    "bit_length",
    "exp_fixed",
    "fp16_to_fp32",
    "fp32_to_fp16",
    "from_bits",
    "is_nan",
    "max_key",
    "mul",
    "reciprocal",
    "reciprocal_fp32",
    "round_scaled",
    "softmax",
    "to_bits",
    "tree_sum",
]

AccFormat = Literal["fp32", "fp16"]


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE 754 binary format: the one description gateware and model share."""

    name: str
    exp_bits: int
    man_bits: int

    @property
    def width(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def exp_max(self) -> int:
        """All-ones exponent field (infinity and NaN)."""
        return (1 << self.exp_bits) - 1

    @property
    def sign_mask(self) -> int:
        return 1 << (self.exp_bits + self.man_bits)

    @property
    def inf(self) -> int:
        return self.exp_max << self.man_bits

    @property
    def nan(self) -> int:
        """Canonical quiet NaN: positive, top fraction bit set, rest zero."""
        return self.inf | (1 << (self.man_bits - 1))

    @property
    def uint(self) -> type[np.unsignedinteger]:
        return {16: np.uint16, 32: np.uint32}[self.width]

    @property
    def float(self) -> type[np.floating]:
        return {16: np.float16, 32: np.float32}[self.width]


FP16 = FloatFormat("fp16", 5, 10)
FP32 = FloatFormat("fp32", 8, 23)


# ---- bit patterns -----------------------------------------------------------------------------

def is_nan(bits: ArrayLike, fmt: FloatFormat) -> NDArray[np.bool_]:
    b = np.asarray(bits).astype(np.uint64)
    return (b & np.uint64(fmt.sign_mask - 1)) > np.uint64(fmt.inf)


def _canonical(bits: NDArray, fmt: FloatFormat) -> NDArray:
    return np.where(is_nan(bits, fmt), fmt.uint(fmt.nan), bits).astype(fmt.uint)


def to_bits(x: ArrayLike, fmt: FloatFormat) -> NDArray:
    """Bit patterns of ``x`` converted to ``fmt`` (NumPy's RNE conversion), NaN canonical."""
    with np.errstate(all="ignore"):
        v = np.asarray(x).astype(fmt.float)
    return _canonical(v.view(fmt.uint), fmt)


def from_bits(bits: ArrayLike, fmt: FloatFormat) -> NDArray:
    """The floating-point values (``float16`` / ``float32``) of bit patterns."""
    return np.asarray(bits).astype(fmt.uint).view(fmt.float)


def fp16_to_fp32(bits16: ArrayLike) -> NDArray[np.uint32]:
    """Exact widening FP16 -> FP32 (subnormals become normal FP32)."""
    return to_bits(from_bits(bits16, FP16).astype(np.float32), FP32)


def fp32_to_fp16(bits32: ArrayLike) -> NDArray[np.uint16]:
    """FP32 -> FP16 with RNE, gradual underflow and overflow to infinity."""
    return to_bits(from_bits(bits32, FP32), FP16)


def bit_length(x: ArrayLike) -> NDArray[np.int64]:
    """Vectorised ``int.bit_length`` of unsigned 64-bit integers."""
    y = np.asarray(x, dtype=np.uint64).copy()
    n = np.zeros(y.shape, dtype=np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        big = y >= np.uint64(1 << s)
        n += big * s
        y = np.where(big, y >> np.uint64(s), y)
    return n + (y > 0)


def round_scaled(mant: ArrayLike, shift: ArrayLike, fmt: FloatFormat = FP16) -> NDArray:
    """Bits of ``mant * 2**-shift`` rounded once to ``fmt`` (RNE, subnormals, overflow to inf).

    ``mant`` is a non-negative integer below 2^63; the result is non-negative. This is the single
    rounding of the softmax normalisation, ``p = fp16(e * r)``, mirrored by the gateware.
    """
    m = np.asarray(mant, dtype=np.uint64)
    k = np.broadcast_to(np.asarray(shift, dtype=np.int64), m.shape)
    p = fmt.man_bits + 1
    emin = 1 - fmt.bias                              # exponent of the smallest normal
    L = bit_length(m)
    # bits below the quantum are dropped: the significand keeps p bits, or the subnormal
    # quantum 2^(emin - man_bits) when the value is below the smallest normal
    sh = np.maximum(L - p, k + emin - fmt.man_bits)
    normal = (L - p) >= (k + emin - fmt.man_bits)
    right = np.clip(sh, 0, 63).astype(np.uint64)
    left = np.clip(-sh, 0, 63).astype(np.uint64)
    q = np.where(sh > 0, m >> right, m << left)
    g_sh = np.clip(sh - 1, 0, 63).astype(np.uint64)
    guard = np.where(sh > 0, (m >> g_sh) & np.uint64(1), np.uint64(0))
    sticky = np.where(sh > 1, (m & ((np.uint64(1) << g_sh) - np.uint64(1))) != 0, False)
    q = q + (guard & ((q & np.uint64(1)) | sticky.astype(np.uint64)))
    # biased exponent - 1 of a normal result; adding the significand (hidden bit included)
    # carries into the exponent, so a round-up to the next binade needs no special case
    ebase = np.where(normal, L - 1 - k + fmt.bias - 1, 0).astype(np.int64)
    packed = (ebase << fmt.man_bits) + q.astype(np.int64)
    packed = np.where(m == 0, 0, np.minimum(packed, fmt.inf))
    return packed.astype(fmt.uint)


# ---- arithmetic on values (fast path of the functional model) ----------------------------------

@dataclass(frozen=True)
class Arith:
    """PU arithmetic on NumPy float arrays: float32 for ``acc_format`` fp32, float16 for fp16.

    NumPy's float32 operations are IEEE RNE. For fp16, ``add`` computes in float32 and rounds to
    float16: binary32 has 24 >= 2 x 11 + 2 significand bits, so this double rounding equals one
    correct rounding of the exact sum (Figueroa 1995). NaN payloads are not canonical here; the
    bit-level functions canonicalise.
    """

    fmt: FloatFormat

    @property
    def dtype(self) -> type[np.floating]:
        return self.fmt.float

    def product(self, a16: NDArray, b16: NDArray) -> NDArray:
        """FP16 x FP16 (float16 arrays): exact in FP32, then rounded once for fp16."""
        with np.errstate(all="ignore"):
            p = a16.astype(np.float32) * b16.astype(np.float32)
            return p if self.fmt == FP32 else p.astype(np.float16)

    def add(self, a: NDArray, b: NDArray) -> NDArray:
        with np.errstate(all="ignore"):
            if self.fmt == FP32:
                return np.add(a, b, dtype=np.float32)
            return np.add(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)

    def tree(self, x: NDArray, axis: int = -1) -> NDArray:
        """Fixed pairwise tree along ``axis`` (see module docstring)."""
        v = np.moveaxis(np.asarray(x, dtype=self.dtype), axis, -1)
        while v.shape[-1] > 1:
            n = v.shape[-1]
            s = self.add(v[..., 0:n - 1:2], v[..., 1:n:2])
            v = np.concatenate([s, v[..., n - 1:]], axis=-1) if n % 2 else s
        return v[..., 0]


_ARITH = {"fp32": Arith(FP32), "fp16": Arith(FP16)}


def arith(acc_format: AccFormat) -> Arith:
    """The :class:`Arith` of ``pu.acc_format`` (``"fp32"`` or ``"fp16"``)."""
    try:
        return _ARITH[acc_format]
    except KeyError:
        raise ValueError(f"acc_format must be 'fp32' or 'fp16', not {acc_format!r}") from None


def mul(a16: ArrayLike, b16: ArrayLike, acc_format: AccFormat = "fp32") -> NDArray:
    """Product of FP16 bit patterns, as FP32 bits (exact) or FP16 bits (one RNE rounding)."""
    ar = arith(acc_format)
    return to_bits(ar.product(from_bits(a16, FP16), from_bits(b16, FP16)), ar.fmt)


def add(a: ArrayLike, b: ArrayLike, fmt: FloatFormat = FP32) -> NDArray:
    """IEEE RNE addition of two bit-pattern arrays of ``fmt`` (FP32 or FP16)."""
    ar = arith("fp32" if fmt == FP32 else "fp16")
    return to_bits(ar.add(from_bits(a, fmt), from_bits(b, fmt)), fmt)


def tree_sum(bits: ArrayLike, fmt: FloatFormat = FP32, axis: int = -1) -> NDArray:
    """Fixed pairwise tree sum of bit patterns along ``axis``."""
    ar = arith("fp32" if fmt == FP32 else "fp16")
    return to_bits(ar.tree(from_bits(bits, fmt), axis), fmt)


# ---- exp, reciprocal, softmax ------------------------------------------------------------------

#: Fraction bits of the fixed-point exponential: ``e = E / 2**EXP_FRAC_BITS``, ``0 <= E <= 2**30``.
EXP_FRAC_BITS = 30
#: Fraction bits of ``u = |t| * log2(e)`` (truncated).
EXP_ARG_FRAC_BITS = 30
#: ``round(log2(e) * 2**31)``.
EXP_LOG2E_Q = 3098164009
#: ``round(ln(2) * 2**30)``.
EXP_LN2_Q = 744261118
#: Index bits of the 2^-f table.
EXP_TABLE_BITS = 7
#: ``round(2**(30 - i / 128))``, i = 0..127, from 60-digit decimal arithmetic (no entry lies
#: within 0.0096 of a rounding tie, so any correct evaluation gives these integers).
EXP_TABLE: tuple[int, ...] = (
    0x40000000, 0x3FA78457, 0x3F4F8303, 0x3EF7FB5B, 0x3EA0ECB7, 0x3E4A566F, 0x3DF437DD, 0x3D9E905B,
    0x3D495F45, 0x3CF4A3F8, 0x3CA05DCF, 0x3C4C8C2A, 0x3BF92E67, 0x3BA643E6, 0x3B53CC08, 0x3B01C62E,
    0x3AB031BA, 0x3A5F0E10, 0x3A0E5A94, 0x39BE16AB, 0x396E41BA, 0x391EDB28, 0x38CFE25D, 0x388156C0,
    0x383337BB, 0x37E584B8, 0x37983D21, 0x374B6061, 0x36FEEDE6, 0x36B2E51C, 0x36674571, 0x361C0E53,
    0x35D13F33, 0x3586D780, 0x353CD6AB, 0x34F33C26, 0x34AA0764, 0x346137D9, 0x3418CCF7, 0x33D0C634,
    0x33892305, 0x3341E2E2, 0x32FB0540, 0x32B48998, 0x326E6F62, 0x3228B617, 0x31E35D32, 0x319E642D,
    0x3159CA84, 0x31158FB3, 0x30D1B337, 0x308E348C, 0x304B1333, 0x30084EA8, 0x2FC5E66E, 0x2F83DA02,
    0x2F4228E8, 0x2F00D2A0, 0x2EBFD6AD, 0x2E7F3491, 0x2E3EEBD2, 0x2DFEFBF3, 0x2DBF6479, 0x2D8024EA,
    0x2D413CCD, 0x2D02ABA9, 0x2CC47105, 0x2C868C6A, 0x2C48FD60, 0x2C0BC373, 0x2BCEDE2B, 0x2B924D15,
    0x2B560FBB, 0x2B1A25A9, 0x2ADE8E6D, 0x2AA34995, 0x2A6856AD, 0x2A2DB546, 0x29F364ED, 0x29B96534,
    0x297FB5AA, 0x294655E2, 0x290D456C, 0x28D483DA, 0x289C10C1, 0x2863EBB3, 0x282C1444, 0x27F48A09,
    0x27BD4C98, 0x27865B86, 0x274FB66A, 0x27195CDA, 0x26E34E6E, 0x26AD8ABF, 0x26781165, 0x2642E1F9,
    0x260DFC14, 0x25D95F52, 0x25A50B4E, 0x2570FFA2, 0x253D3BEA, 0x2509BFC4, 0x24D68ACC, 0x24A39C9F,
    0x2470F4DD, 0x243E9323, 0x240C7711, 0x23DAA046, 0x23A90E63, 0x2377C108, 0x2346B7D7, 0x2315F271,
    0x22E57079, 0x22B53191, 0x2285355D, 0x22557B81, 0x222603A0, 0x21F6CD60, 0x21C7D866, 0x21992457,
    0x216AB0DA, 0x213C7D96, 0x210E8A31, 0x20E0D654, 0x20B361A6, 0x20862BD1, 0x2059347D, 0x202C7B54,
)
#: Biased FP32 exponent from which ``|t| >= 32`` gives ``E = 0`` outright (exp(-32) < 2^-46).
EXP_MAX_ARG_EXPONENT = 127 + 5
#: Significand bits of the reciprocal (24, as FP32).
RECIP_BITS = 24

_U64 = np.uint64


def exp_fixed(t_bits: ArrayLike) -> NDArray[np.uint64]:
    """``E ~= exp(t) * 2**30`` for FP32 ``t <= 0`` (docs/numerics.md, "Exponential").

    1. ``U = floor(|t| * log2(e) * 2**30)``: the 24-bit significand times :data:`EXP_LOG2E_Q`
       (a 56-bit product), shifted right by ``151 - exponent``; ``|t| >= 32`` gives ``E = 0``.
    2. ``n = U >> 30`` (integer part), ``f`` = the 30 fraction bits; ``i`` = the top 7 bits of
       ``f``, ``r`` = the low 23 (``r * 2**-30 < 2**-7``).
    3. ``A = (r * LN2_Q) >> 30`` (``a = r ln 2``), ``poly = 2**30 - A + (A*A >> 31)``
       (``2**-r ~ 1 - a + a^2/2``), ``P = (EXP_TABLE[i] * poly + 2**29) >> 30`` (``2**-f``,
       round half up), ``E = (P + 2**(n-1)) >> n`` (round half up; ``n = 0``: ``E = P``).

    ``exp(+-0) = 2**30`` exactly, subnormal ``t`` give ``2**30``, ``-inf`` gives 0. Outside the
    softmax's domain: positive ``t`` (including ``+inf``) are treated as 0 and NaN gives 0 (the
    softmax handles NaN itself).
    """
    t = np.asarray(t_bits, dtype=np.uint32).astype(_U64)
    ex = (t >> _U64(23)) & _U64(0xFF)
    frac = t & _U64(0x7FFFFF)
    neg = (t >> _U64(31)) == 1
    nan = (ex == 0xFF) & (frac != 0)
    big = neg & (ex >= EXP_MAX_ARG_EXPONENT)
    small = ~neg | (ex == 0)
    ma = frac | _U64(1 << 23)
    sh = np.clip(151 - ex.astype(np.int64), 0, 63).astype(_U64)
    U = np.where(small | big, _U64(0), (ma * _U64(EXP_LOG2E_Q)) >> sh)
    n = U >> _U64(EXP_ARG_FRAC_BITS)
    f = U & _U64((1 << EXP_ARG_FRAC_BITS) - 1)
    low = EXP_ARG_FRAC_BITS - EXP_TABLE_BITS
    i = (f >> _U64(low)).astype(np.intp)
    r = f & _U64((1 << low) - 1)
    A = (r * _U64(EXP_LN2_Q)) >> _U64(30)
    poly = _U64(1 << 30) - A + ((A * A) >> _U64(31))
    P = (np.asarray(EXP_TABLE, dtype=_U64)[i] * poly + _U64(1 << 29)) >> _U64(30)
    n = np.minimum(n, _U64(63))
    E = (P + ((_U64(1) << n) >> _U64(1))) >> n
    return np.where(big | nan, _U64(0), E)


def reciprocal(S: int) -> tuple[int, int]:
    """``1 / (S * 2**-30)`` correctly rounded (RNE) to :data:`RECIP_BITS` significant bits.

    Returns ``(Q, b)`` with ``b = S.bit_length()`` and ``r = Q * 2**(7 - b)``; ``Q`` lies in
    ``[2**23, 2**24]`` (``2**24`` only when ``S`` is a power of two). This is exact integer long
    division: ``Q = RNE(2**(b + 23) / S)`` from the 25-bit quotient ``floor(2**(b + 24) / S)`` and
    the remainder.
    """
    if S <= 0:
        raise ValueError(f"the softmax sum must be positive, not {S}")
    b = S.bit_length()
    q, rem = divmod(1 << (b + 24), S)
    half, lsb = q & 1, (q >> 1) & 1
    return (q >> 1) + (half & (lsb | (rem != 0))), b


def reciprocal_fp32(S: int) -> int:
    """FP32 bits of ``r = 2**30 / S`` from :func:`reciprocal` (a normal FP32 for S >= 1)."""
    q, b = reciprocal(S)
    if q == 1 << RECIP_BITS:
        q, b = q >> 1, b - 1
    exp = (RECIP_BITS - 1) + 7 - b + FP32.bias
    return (exp << 23) | (q & ((1 << 23) - 1))


def max_key(bits32: ArrayLike) -> NDArray[np.uint32]:
    """Unsigned key with the order of the FP32 values (``-0 < +0``), for the max of the softmax."""
    b = np.asarray(bits32, dtype=np.uint32)
    return np.where(b >> 31 == 1, ~b, b | np.uint32(0x80000000)).astype(np.uint32)


@dataclass(frozen=True)
class SoftmaxTrace:
    """Result of :func:`softmax`: probabilities and the intermediates the gateware exposes."""

    p: NDArray[np.uint16]          #: FP16 bits per entry (0 for invalid entries)
    m: int                         #: FP32 bits of the max (0 if no valid entry)
    E: NDArray[np.uint64]          #: fixed-point exponentials (0 for invalid entries)
    S: int                         #: exact sum of E
    Q: int                         #: reciprocal significand (0 if not computed)
    b: int                         #: reciprocal scale: r = Q * 2**(7 - b)
    nan: bool                      #: a valid score is NaN or the max is infinite


def softmax(scores: ArrayLike, valid: ArrayLike | None = None) -> SoftmaxTrace:
    """Softmax of FP32 score bits over the valid entries (docs/numerics.md, "Softmax").

    Special values: if a valid score is NaN or the max is infinite (``x - m`` would be NaN), every
    valid probability is NaN (``0x7E00``); otherwise ``-inf`` scores get 0. Invalid entries always
    get ``+0``. With no valid entry nothing is computed and every probability is 0.
    """
    x = np.asarray(scores, dtype=np.uint32)
    v = np.ones(x.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    p = np.zeros(x.shape, dtype=np.uint16)
    E = np.zeros(x.shape, dtype=_U64)
    if not v.any():
        return SoftmaxTrace(p, 0, E, 0, 0, 0, False)
    xv = x[v]
    m = int(xv[np.argmax(max_key(xv))])
    nan = bool(is_nan(xv, FP32).any()) or (m >> 23) & 0xFF == 0xFF
    if nan:
        p[v] = FP16.nan
        return SoftmaxTrace(p, m, E, 0, 0, 0, True)
    with np.errstate(all="ignore"):
        t = (from_bits(xv, FP32) - from_bits(np.uint32(m), FP32)).astype(np.float32)
    E[v] = exp_fixed(t.view(np.uint32))
    S = int(E.sum(dtype=_U64))
    Q, b = reciprocal(S)
    p[v] = round_scaled(E[v] * _U64(Q), b + 23, FP16)
    return SoftmaxTrace(p, m, E, S, Q, b, False)

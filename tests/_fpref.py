"""Independent scalar reference for IEEE binary16/binary32: exact rationals, explicit rounding.

Shared by the numerics and gateware tests; it uses nothing of starc.numerics except the format
description, so a bug there cannot hide in both. The edge-rich random operands
(``interesting16`` / ``interesting32``) are the regression's own (``starc_sim.numerics_check``):
inputs, not a reference.
"""

from __future__ import annotations

from fractions import Fraction

from starc.numerics import FloatFormat
from starc_sim.numerics_check import interesting16, interesting32  # noqa: F401 - for the tests

NAN = "nan"


def value(bits: int, fmt: FloatFormat) -> Fraction | float | str:
    """Exact value of a bit pattern: a Fraction, +-inf as float, or NAN."""
    m, e = fmt.man_bits, fmt.exp_bits
    s = -1 if bits >> (m + e) & 1 else 1
    ex = (bits >> m) & fmt.exp_max
    f = bits & ((1 << m) - 1)
    if ex == fmt.exp_max:
        return NAN if f else s * float("inf")
    if ex == 0:
        return s * Fraction(f, 1 << (m + fmt.bias - 1))
    return s * Fraction((1 << m) | f) * Fraction(2) ** (ex - fmt.bias - m)


def round_to(x: Fraction, fmt: FloatFormat, negative_zero: bool = False) -> int:
    """Bits of x rounded to nearest, ties to even, with subnormals and overflow to infinity."""
    sign = 1 if x < 0 or (x == 0 and negative_zero) else 0
    x = abs(x)
    sbit = sign << (fmt.width - 1)
    if x == 0:
        return sbit
    p = fmt.man_bits
    emin = 1 - fmt.bias
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    e = max(e, emin)
    q = x / Fraction(2) ** (e - p)
    n = q.numerator // q.denominator
    rem = q - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n & 1):
        n += 1
    if n == 1 << (p + 1):
        n >>= 1
        e += 1
    if e > fmt.bias:
        return sbit | fmt.inf
    if n < 1 << p:
        return sbit | n
    return sbit | ((e + fmt.bias) << p) | (n - (1 << p))


def add(a: int, b: int, fmt: FloatFormat) -> int:
    va, vb = value(a, fmt), value(b, fmt)
    if va == NAN or vb == NAN:
        return fmt.nan
    if isinstance(va, float) or isinstance(vb, float):
        if isinstance(va, float) and isinstance(vb, float) and va != vb:
            return fmt.nan
        inf = va if isinstance(va, float) else vb
        return fmt.inf | (fmt.sign_mask if inf < 0 else 0)
    total = va + vb
    sign_a, sign_b = a & fmt.sign_mask, b & fmt.sign_mask
    return round_to(total, fmt, negative_zero=bool(total == 0 and sign_a and sign_b))


def mul(a: int, b: int, src: FloatFormat, dst: FloatFormat) -> int:
    va, vb = value(a, src), value(b, src)
    neg = bool((a ^ b) & src.sign_mask)
    if va == NAN or vb == NAN:
        return dst.nan
    if isinstance(va, float) or isinstance(vb, float):
        if va == 0 or vb == 0:
            return dst.nan
        return dst.inf | (dst.sign_mask if neg else 0)
    return round_to(va * vb, dst, negative_zero=neg)


def convert(a: int, src: FloatFormat, dst: FloatFormat) -> int:
    v = value(a, src)
    neg = bool(a & src.sign_mask)
    if v == NAN:
        return dst.nan
    if isinstance(v, float):
        return dst.inf | (dst.sign_mask if neg else 0)
    return round_to(v, dst, negative_zero=neg)

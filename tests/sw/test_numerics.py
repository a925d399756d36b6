"""starc.numerics against exact rational arithmetic and float64: bit-exactness and error bounds."""

from __future__ import annotations

from decimal import Decimal, getcontext
from fractions import Fraction

import _fpref as ref
import numpy as np
import pytest
from _fpref import interesting16, interesting32
from hypothesis import given, settings
from hypothesis import strategies as st
from starc import numerics as nm
from starc.numerics import FP16, FP32

SEED = 20240611
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


# ---- formats, products, adds, conversions -------------------------------------------------------

def test_formats() -> None:
    assert (FP16.width, FP16.bias, FP16.inf, FP16.nan) == (16, 15, 0x7C00, 0x7E00)
    assert (FP32.width, FP32.bias, FP32.inf, FP32.nan) == (32, 127, 0x7F800000, 0x7FC00000)


@settings(max_examples=200, deadline=None)
@given(u16, u16)
def test_product_exact_in_fp32(a: int, b: int) -> None:
    assert int(nm.mul(a, b)) == ref.mul(a, b, FP16, FP32)


@settings(max_examples=200, deadline=None)
@given(u16, u16)
def test_product_fp16_mode_rounds_once(a: int, b: int) -> None:
    assert int(nm.mul(a, b, "fp16")) == ref.mul(a, b, FP16, FP16)


def test_products_edge_cases() -> None:
    tiny, big, one = 0x0001, 0x7BFF, 0x3C00
    assert int(nm.mul(tiny, tiny)) == 79 << 23                  # 2^-48, normal in FP32
    assert int(nm.mul(big, big)) == ref.mul(big, big, FP16, FP32)
    assert int(nm.mul(0x8000, one)) == 0x80000000                # -0
    assert int(nm.mul(0x7C00, 0x0000)) == FP32.nan               # inf x 0
    assert int(nm.mul(0xFC00, one)) == 0xFF800000
    assert int(nm.mul(0x7C01, one)) == FP32.nan                  # NaN payload canonical
    assert int(nm.mul(big, big, "fp16")) == 0x7C00               # overflows FP16
    assert int(nm.mul(tiny, one, "fp16")) == tiny                # subnormal kept


def test_products_vectors_against_reference() -> None:
    rng = np.random.default_rng(SEED)
    a, b = interesting16(rng, 3000), interesting16(rng, 3000)
    for fmt, acc in ((FP32, "fp32"), (FP16, "fp16")):
        got = nm.mul(a, b, acc)   # type: ignore[arg-type]
        want = [ref.mul(int(x), int(y), FP16, fmt) for x, y in zip(a, b, strict=True)]
        bad = np.nonzero(got != np.array(want))[0]
        assert not len(bad), f"seed {SEED}: {acc} product of {a[bad[0]]:#x} {b[bad[0]]:#x}"


@settings(max_examples=200, deadline=None)
@given(u32, u32)
def test_fp32_add_rne(a: int, b: int) -> None:
    assert int(nm.add(np.uint32(a), np.uint32(b))) == ref.add(a, b, FP32)


@settings(max_examples=200, deadline=None)
@given(u16, u16)
def test_fp16_add_rne(a: int, b: int) -> None:
    assert int(nm.add(np.uint16(a), np.uint16(b), FP16)) == ref.add(a, b, FP16)


def test_adds_vectors_against_reference() -> None:
    rng = np.random.default_rng(SEED)
    a = interesting32(rng, 4000)
    b = interesting32(rng, 4000)
    # cancellation and near-equal magnitudes, the hard part of an adder
    b[:1000] = (a[:1000] ^ np.uint32(1 << 31)) + rng.integers(0, 3, 1000).astype(np.uint32)
    b[1000:1500] = a[1000:1500] + rng.integers(0, 1 << 24, 500).astype(np.uint32)
    got = nm.add(a, b)
    want = np.array([ref.add(int(x), int(y), FP32) for x, y in zip(a, b, strict=True)])
    bad = np.nonzero(got != want)[0]
    assert not len(bad), f"seed {SEED}: {a[bad[0]]:#x} + {b[bad[0]]:#x}"
    h, k = interesting16(rng, 4000), interesting16(rng, 4000)
    got16 = nm.add(h, k, FP16)
    want16 = np.array([ref.add(int(x), int(y), FP16) for x, y in zip(h, k, strict=True)])
    assert (got16 == want16).all(), f"seed {SEED}"


def test_signed_zero_and_specials() -> None:
    add = lambda x, y: int(nm.add(np.uint32(x), np.uint32(y)))  # noqa: E731
    assert add(0x80000000, 0x80000000) == 0x80000000              # -0 + -0 = -0
    assert add(0x80000000, 0x00000000) == 0x00000000
    assert add(0x3F800000, 0xBF800000) == 0x00000000              # x + (-x) = +0
    assert add(0x7F800000, 0xFF800000) == FP32.nan
    assert add(0x7F7FFFFF, 0x7F7FFFFF) == 0x7F800000              # overflow to inf
    assert add(0x00000001, 0x00000001) == 0x00000002              # subnormals
    assert add(0x00800000, 0x80000001) == 0x007FFFFF              # normal - tiny -> subnormal
    assert add(0xFFC00001, 0x3F800000) == FP32.nan


@settings(max_examples=200, deadline=None)
@given(u32)
def test_fp32_to_fp16(a: int) -> None:
    assert int(nm.fp32_to_fp16(np.uint32(a))) == ref.convert(a, FP32, FP16)


def test_conversions_vectors() -> None:
    rng = np.random.default_rng(SEED)
    a = interesting32(rng, 5000)
    got = nm.fp32_to_fp16(a)
    assert (got == np.array([ref.convert(int(x), FP32, FP16) for x in a])).all()
    # every FP16 pattern widens exactly: value (-1)^s (f + 2^10 [e > 0]) 2^(max(e, 1) - 25)
    h = np.arange(1 << 16, dtype=np.uint32)
    e, f = (h >> 10) & 31, h & 1023
    mag = (f + 1024.0 * (e > 0)) * np.exp2(np.maximum(e, 1) - 25.0)
    want = np.where(h >> 15 == 1, -mag, mag)
    w = nm.fp16_to_fp32(h.astype(np.uint16))
    finite = e < 31
    assert (nm.from_bits(w[finite], FP32).astype(np.float64) == want[finite]).all()
    assert ((w[finite] >> 31) == (h[finite] >> 15)).all()                  # signed zeros too
    assert (w[~finite & (f == 0)] & 0x7FFFFFFF == FP32.inf).all()
    assert (w[~finite & (f != 0)] == FP32.nan).all()


def test_round_scaled_against_reference() -> None:
    rng = np.random.default_rng(SEED)
    mant = rng.integers(0, 1 << 60, 4000, dtype=np.uint64) >> rng.integers(0, 60, 4000).astype(
        np.uint64)
    shift = rng.integers(0, 100, 4000)
    got = nm.round_scaled(mant, shift)
    want = [ref.round_to(Fraction(int(x), 1 << int(k)), FP16) for x, k in zip(mant, shift,
                                                                              strict=True)]
    assert (got == np.array(want)).all(), f"seed {SEED}"


def test_tree_order_is_fixed_pairwise() -> None:
    rng = np.random.default_rng(SEED)
    for n in (1, 2, 3, 5, 8, 16):
        x = nm.to_bits(rng.normal(0, 1, n) * 10.0 ** rng.integers(-6, 6, n), FP32)
        vals = [int(v) for v in x]
        while len(vals) > 1:
            nxt = [ref.add(vals[i], vals[i + 1], FP32) for i in range(0, len(vals) - 1, 2)]
            vals = nxt + ([vals[-1]] if len(vals) % 2 else [])
        assert int(nm.tree_sum(x)) == vals[0]
    # the order is visible: (big + -big) + small != big + (-big + small) in general
    x = nm.to_bits(np.array([1e8, 1.0, -1e8, 1.0]), FP32)
    assert nm.from_bits(nm.tree_sum(x), FP32) == np.float32(1e8 + 1.0) - np.float32(1e8 - 1.0)


# ---- exp, reciprocal, softmax -------------------------------------------------------------------

def test_constants_recomputed() -> None:
    getcontext().prec = 60
    ln2 = Decimal(2).ln()
    log2e = int((Decimal(2) ** 31 / ln2).to_integral_value())
    ln2q = int((ln2 * 2 ** 30).to_integral_value())
    table = tuple(int((Decimal(2) ** (Decimal(30) - Decimal(i) / 128)).to_integral_value())
                  for i in range(128))
    assert (log2e, ln2q, table) == (nm.EXP_LOG2E_Q, nm.EXP_LN2_Q, nm.EXP_TABLE)


EXP_REL = 2.0 ** -25    # measured 2^-25.08: the omitted cubic term of 2^-r
EXP_ABS = 2.0 ** -31    # final rounding to 30 fraction bits


def test_exp_error_bound() -> None:
    """|e - exp(t)| <= 2^-25 exp(t) + 2^-31 for every tested FP32 t <= 0."""
    rng = np.random.default_rng(SEED)
    t = np.concatenate([
        -rng.uniform(0, 24, 400_000),
        -rng.uniform(0, 2 ** -10, 50_000),
        -np.exp2(rng.uniform(-40, 5, 50_000)),
    ]).astype(np.float32)
    e = nm.exp_fixed(t.view(np.uint32)).astype(np.float64) / 2 ** 30
    exact = np.exp(t.astype(np.float64))
    slack = np.abs(e - exact) - (EXP_REL * exact + EXP_ABS)
    worst = int(np.argmax(slack))
    assert slack[worst] <= 0, f"seed {SEED}: t={t[worst]!r} e={e[worst]!r} exp={exact[worst]!r}"
    rel = np.abs(e - exact)[t > -5] / exact[t > -5]
    assert rel.max() <= 2.0 ** -23


def test_exp_edge_cases() -> None:
    one = 1 << 30
    cases = {0x00000000: one, 0x80000000: one, 0x80000001: one, 0x807FFFFF: one,
             0xFF800000: 0, 0xC2000000: 0, 0xC3000000: 0, 0x7FC00000: 0, 0xFFC00000: 0,
             0x3F800000: one, 0x7F800000: one}
    got = nm.exp_fixed(np.array(list(cases), dtype=np.uint32))
    assert [int(x) for x in got] == list(cases.values())
    # exp(-ln 2 * k) halves: 2^-k up to the fixed-point rounding
    for k in range(0, 31):
        t = np.float32(-k * np.log(2))
        e = int(nm.exp_fixed(t.view(np.uint32)))
        assert abs(e - (one >> k)) <= 1 + (one >> k) * 2 ** -24


def test_reciprocal_correctly_rounded() -> None:
    rng = np.random.default_rng(SEED)
    samples = [1 << 30, (1 << 30) + 1, (1 << 31) - 1, 3 << 29, (1 << 47) - 1, 1 << 45]
    samples += [int(x) for x in rng.integers(1 << 30, 1 << 47, 3000, dtype=np.int64)]
    for S in samples:
        Q, b = nm.reciprocal(S)
        assert b == S.bit_length()
        want = _rne_int(Fraction(1 << (b + 23), S))
        assert want == Q
        assert nm.reciprocal_fp32(S) == ref.round_to(Fraction(1 << 30, S), FP32)


def _rne_int(x: Fraction) -> int:
    n = x.numerator // x.denominator
    rem = x - n
    return n + (1 if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n & 1) else 0)


def softmax64(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    v = nm.from_bits(x, FP32).astype(np.float64)
    p = np.zeros(len(v))
    e = np.exp(v[valid] - v[valid].max())
    p[valid] = e / e.sum()
    return p


SFM_REL = 2.0 ** -11 + 2.0 ** -19   # half an FP16 ulp, plus exp / reciprocal / FP32 t
SFM_ABS = 2.0 ** -25                # half the FP16 subnormal quantum


@pytest.mark.parametrize("scale", [0.1, 1.0, 4.0, 30.0])
def test_softmax_error_bound(scale: float) -> None:
    rng = np.random.default_rng(SEED + int(scale * 10))
    for n in (1, 7, 256, 4096):
        x = nm.to_bits(rng.normal(0, scale, n), FP32)
        valid = rng.random(n) < 0.8
        valid[rng.integers(n)] = True
        out = nm.softmax(x, valid)
        p = nm.from_bits(out.p, FP16).astype(np.float64)
        exact = softmax64(x, valid)
        err = np.abs(p - exact) - (SFM_REL * exact + SFM_ABS)
        assert err.max() <= 0, f"seed {SEED}: n={n} scale={scale}"
        assert (out.p[~valid] == 0).all()


def test_softmax_special_values() -> None:
    f = lambda *v: nm.to_bits(np.array(v, dtype=np.float32), FP32)  # noqa: E731
    inf, nan = np.inf, np.nan
    assert list(nm.softmax(f(1.0, nan, 2.0)).p) == [FP16.nan] * 3
    assert list(nm.softmax(f(1.0, nan, 2.0), [True, False, True]).p) == \
        list(nm.softmax(f(1.0, 0.0, 2.0), [True, False, True]).p)
    assert list(nm.softmax(f(1.0, inf)).p) == [FP16.nan] * 2
    assert list(nm.softmax(f(-inf, -inf)).p) == [FP16.nan] * 2
    assert list(nm.softmax(f(-inf, 3.0)).p) == [0, 0x3C00]
    assert list(nm.softmax(f(5.0)).p) == [0x3C00]
    assert list(nm.softmax(f(5.0, 1.0), [False, False]).p) == [0, 0]
    assert list(nm.softmax(f(-0.0, 0.0)).p) == [0x3800, 0x3800]
    big = nm.softmax(f(3e38, -3e38))                 # x - m overflows to -inf: e = 0
    assert list(big.p) == [0x3C00, 0]


def test_softmax_uniform() -> None:
    """n equal scores give 1/n to within one rounding of FP16 (the reciprocal is exact for
    powers of two)."""
    for n in range(1, 600):
        p = int(nm.softmax(np.zeros(n, dtype=np.uint32)).p[0])
        want = ref.round_to(Fraction(1, n), FP16)
        assert abs(p - want) <= 1, n
        if n & (n - 1) == 0:
            assert p == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-60, 60, width=32), min_size=1, max_size=64), st.data())
def test_softmax_properties(xs: list[float], d: st.DataObject) -> None:
    x = nm.to_bits(np.array(xs, dtype=np.float32), FP32)
    valid = np.array(d.draw(st.lists(st.booleans(), min_size=len(xs), max_size=len(xs))))
    out = nm.softmax(x, valid)
    p = nm.from_bits(out.p, FP16).astype(np.float64)
    assert (out.p[~valid] == 0).all()
    if valid.any():
        vals = nm.from_bits(x, FP32)
        top = np.argmax(np.where(valid, vals, -np.inf))
        assert p[top] == p.max()
        assert abs(p.sum() - 1) <= valid.sum() * 2.0 ** -11 + 2.0 ** -20
        assert out.E[top] == 1 << 30


def test_attention_error_against_float64() -> None:
    """One head of dense attention done with the PU arithmetic (16-lane trees, pairwise tree
    over the slices, FP32 softmax input, FP32 value accumulation): relative L2 error of the FP16
    output against float64 on the same FP16 inputs."""
    rng = np.random.default_rng(SEED)
    ar = nm.arith("fp32")
    worst = 0.0
    for L, d in ((64, 64), (1024, 128), (4096, 128)):
        q = (rng.normal(0, 1, d) / np.sqrt(d)).astype(np.float16)
        K = rng.normal(0, 1, (L, d)).astype(np.float16)
        V = rng.normal(0, 1, (L, d)).astype(np.float16)
        lanes = ar.tree(ar.product(K.reshape(L, d // 16, 16), q.reshape(d // 16, 16)), -1)
        halves = ar.add(lanes[:, 0::2], lanes[:, 1::2])            # the two columns of a bank
        scores = ar.tree(halves, -1)                                # the group tree
        p = nm.from_bits(nm.softmax(nm.to_bits(scores, FP32)).p, FP16)
        acc = np.zeros(d, dtype=np.float32)
        for t in range(L):
            acc = ar.add(acc, ar.product(np.full(d, p[t]), V[t]))
        out = acc.astype(np.float16).astype(np.float64)
        s = K.astype(np.float64) @ q.astype(np.float64)
        w = np.exp(s - s.max())
        exact = (w / w.sum()) @ V.astype(np.float64)
        worst = max(worst, float(np.linalg.norm(out - exact) / np.linalg.norm(exact)))
    assert worst < 1e-3, worst

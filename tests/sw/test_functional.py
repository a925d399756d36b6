"""starc.golden.functional: dense attention against float64, bit-exact against a scalar model."""

from __future__ import annotations

from fractions import Fraction

import _fpref as ref
import numpy as np
import pytest
from starc import config
from starc import numerics as nm
from starc.golden import programs
from starc.golden.functional import execute
from starc.golden.timing import ProgramError
from starc.isa import PROGRAM_DTYPE, MacArg, MoveFlag, Op, make_program
from starc.numerics import FP16, FP32

SEED = 7321


# ---- a small program generator of the test's own ------------------------------------------------

def token_place(cfg: config.Config, d: int, t: int) -> tuple[int, int, int, int]:
    """(row, group, set, slot) of token t in the dense AttAcc layout."""
    G, S = cfg.org.groups_per_channel, cfg.tokens_per_bank_row()
    per_group_row = S * (cfg.org.banks_per_group // cfg.banks_per_token(d))
    return (t // (G * per_group_row), (t // per_group_row) % G, (t % per_group_row) // S, t % S)


def dense_case(cfg: config.Config, q: np.ndarray, K: np.ndarray, V: np.ndarray, *,
               group_scope: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Program, wdata and image of one dense attention step (keys rows 0.., values after)."""
    L, d = K.shape
    G, C, Ln = cfg.org.groups_per_channel, cfg.org.columns_per_row, cfg.pu.lanes
    bpt, S, bppu = cfg.banks_per_token(d), cfg.tokens_per_bank_row(), cfg.pu.banks_per_pu
    rows = token_place(cfg, d, L - 1)[0] + 1
    image: dict = {}
    masks = np.zeros((rows, G), dtype=np.int64)
    for t in range(L):
        r, g, j, s = token_place(cfg, d, t)
        masks[r, g] |= 1 << (S * j + s)
        for k in range(bpt):
            for base, X in ((r, K), (rows + r, V)):
                a = image.setdefault((g, j * bpt + k, base), np.zeros((C, Ln), np.uint16))
                a[2 * s] = X[t, 32 * k:32 * k + 16].view(np.uint16)
                a[2 * s + 1] = X[t, 32 * k + 16:32 * k + 32].view(np.uint16)
    cmds: list[tuple] = [(Op.WRGB, 0, 0, c, 0, c) for c in range(d // Ln)]

    def macs(row: int, arg: int) -> None:
        if group_scope:
            for g in range(G):
                cmds.append((Op.ACTBG, g, 0, 0, row))
            for g in range(G):
                for c in range(C):
                    cmds.extend((Op.MACBG, g, sub, c, 0, arg) for sub in range(bppu))
                cmds.append((Op.PREBG, g))
        else:
            cmds.append((Op.ACTAB, 0, 0, 0, row))
            for c in range(C):
                cmds.extend((Op.MACAB, 0, sub, c, 0, arg) for sub in range(bppu))
            cmds.append((Op.PREA,))

    for r in range(rows):
        macs(r, int(MacArg.BUF) if r & 1 else 0)
        flags = MoveFlag.BUF if r & 1 else MoveFlag.SCORE
        cmds.extend((Op.MVSB, g, 0, flags, 0, int(masks[r, g])) for g in range(G))
    cmds.append((Op.SFM, 0, 0, 0, 0, L))
    for r in range(rows):
        cmds.extend((Op.MVGB, g, 0, MoveFlag.BUF if r & 1 else 0) for g in range(G))
        macs(rows + r, int(MacArg.VALUE) | (int(MacArg.BUF) if r & 1 else 0))
    cmds.extend((Op.MVSB, g, 0, MoveFlag.VALUE | (MoveFlag.HALF if h else 0))
                for g in range(G) for h in range(2))
    wdata = q.view(np.uint16).reshape(-1, Ln)
    return make_program(cmds), wdata, image


def attention64(q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:
    s = K.astype(np.float64) @ q.astype(np.float64)
    w = np.exp(s - s.max())
    return (w / w.sum()) @ V.astype(np.float64)


def random_head(rng: np.random.Generator, L: int, d: int, spread: float = 1.0):
    q = (rng.normal(0, spread, d) / np.sqrt(d)).astype(np.float16)
    return q, rng.normal(0, 1, (L, d)).astype(np.float16), rng.normal(0, 1, (L, d)).astype(
        np.float16)


# ---- an independent scalar re-implementation -----------------------------------------------------

class Scalar:
    """Straightforward per-element model of docs/commands.md: Python loops, one value at a time,
    float64 arithmetic rounded per operation (innocuous double rounding: 53 >= 2p + 2), and the
    softmax redone with Python integers from the algorithm's description."""

    def __init__(self, cfg: config.Config, d: int) -> None:
        self.cfg, self.d = cfg, d
        self.fp16 = cfg.pu.acc_format == "fp16"
        self.G, self.B = cfg.org.groups_per_channel, cfg.org.banks_per_group
        self.Ln, self.S = cfg.pu.lanes, cfg.tokens_per_bank_row()
        self.bpt = cfg.banks_per_token(d)
        self.sets = self.B // self.bpt

    def rnd(self, x: float) -> float:
        return float(np.float16(x)) if self.fp16 else float(np.float32(x))

    def tree(self, xs: list[float]) -> float:
        while len(xs) > 1:
            xs = [self.rnd(xs[i] + xs[i + 1]) for i in range(0, len(xs) - 1, 2)] + \
                 ([xs[-1]] if len(xs) % 2 else [])
        return xs[0]

    @staticmethod
    def h(bits: int) -> float:
        return float(np.uint16(bits).view(np.float16))

    def softmax(self, scores: list[float], valid: list[bool]) -> list[int]:
        idx = [i for i, v in enumerate(valid) if v]
        m = max(scores[i] for i in idx)
        E = {i: self.exp(float(np.float32(scores[i] - m))) for i in idx}
        S = sum(E.values())
        b = S.bit_length()
        q, rem = divmod(1 << (b + 24), S)
        Q = (q >> 1) + (q & 1 and ((q >> 1) & 1 or rem != 0))
        return [ref.round_to(Fraction(E[i] * Q, 1 << (b + 23)), FP16) if valid[i] else 0
                for i in range(len(scores))]

    @staticmethod
    def exp(t: float) -> int:
        bits = int(np.float32(t).view(np.uint32))
        ex, frac = (bits >> 23) & 0xFF, bits & 0x7FFFFF
        if ex >= nm.EXP_MAX_ARG_EXPONENT:
            return 0
        U = 0 if ex == 0 else (((1 << 23) | frac) * nm.EXP_LOG2E_Q) >> (151 - ex)
        n, f = U >> 30, U & ((1 << 30) - 1)
        i, r = f >> 23, f & ((1 << 23) - 1)
        A = (r * nm.EXP_LN2_Q) >> 30
        P = (nm.EXP_TABLE[i] * ((1 << 30) - A + ((A * A) >> 31)) + (1 << 29)) >> 30
        return (P + ((1 << n) >> 1)) >> n

    def run(self, prog: np.ndarray, wdata: np.ndarray, image: dict) -> dict:
        cfg, Ln, S = self.cfg, self.Ln, self.S
        C = cfg.org.columns_per_row
        zero_row = [[0] * Ln for _ in range(C)]
        opened: dict = {}
        query = [[0] * Ln for _ in range(self.d // Ln)]
        score = {}
        acc = {}
        prob = {}
        buffer: list = []
        fifo: list = []
        out = [0.0] * self.d
        entries_scores: list[int] = []
        entries_probs: list[int] = []
        for c in prog:
            op, g, bk, col, row, arg = (int(c[n]) for n in ("op", "group", "bank", "col", "row",
                                                             "arg"))
            if op in (Op.ACTAB, Op.ACTBG, Op.ACTPB):
                for gg in range(self.G):
                    for bb in range(self.B):
                        if op == Op.ACTAB or (gg == g and (op == Op.ACTBG or bb == bk)):
                            data = image.get((gg, bb, row))
                            opened[gg, bb] = zero_row if data is None else data.tolist()
            elif op in (Op.PREA, Op.PREBG, Op.PREPB):
                for key in list(opened):
                    if op == Op.PREA or (key[0] == g and (op == Op.PREBG or key[1] == bk)):
                        del opened[key]
            elif op == Op.WRGB:
                query[col] = [int(x) for x in wdata[arg]]
            elif op in (Op.MACAB, Op.MACBG):
                hh, s, k = col % 2, col // 2, 1 if arg & MacArg.BUF else 0
                for gg in range(self.G) if op == Op.MACAB else [g]:
                    for bb in range(bk, self.B, cfg.pu.banks_per_pu):
                        col_data = opened[gg, bb][col]
                        if arg & MacArg.VALUE:
                            p = self.h(prob[gg, k][S * (bb // self.bpt) + s])
                            for lane in range(Ln):
                                a = acc.get((gg, bb, hh, lane), 0.0)
                                acc[gg, bb, hh, lane] = self.rnd(
                                    a + self.rnd(p * self.h(col_data[lane])))
                        else:
                            qq = query[2 * (bb % self.bpt) + hh]
                            dot = self.tree([self.rnd(self.h(col_data[lane]) * self.h(qq[lane]))
                                             for lane in range(Ln)])
                            key = (gg, bb, k, s)
                            score[key] = self.rnd(score.get(key, 0.0) + dot) if hh else dot
            elif op == Op.MVSB and col & 2:
                hh = (col >> 2) & 1
                for j in range(self.sets):
                    for kk in range(self.bpt):
                        for lane in range(Ln):
                            dim = 32 * kk + 16 * hh + lane
                            out[dim] = self.rnd(out[dim] + acc.get((g, j * self.bpt + kk, hh,
                                                                    lane), 0.0))
                            acc[g, j * self.bpt + kk, hh, lane] = 0.0
            elif op == Op.MVSB:
                move = []
                for j in range(self.sets):
                    for s in range(S):
                        v = self.tree([score.get((g, j * self.bpt + kk, col & 1, s), 0.0)
                                       for kk in range(self.bpt)])
                        move.append((v, bool(arg >> (S * j + s) & 1)))
                buffer.append((g, move))
            elif op == Op.SFM:
                flat = [e for _, mv in buffer for e in mv]
                p = self.softmax([v for v, _ in flat], [ok for _, ok in flat])
                at = 0
                for g2, mv in buffer:
                    fifo.append((g2, p[at:at + len(mv)]))
                    at += len(mv)
                entries_scores += [int(np.float32(v).view(np.uint32)) for v, _ in flat]
                entries_probs += p
                buffer = []
            elif op == Op.MVGB:
                g2, p = fifo.pop(0)
                assert g2 == g
                prob[g, col] = p
        return {"output": [int(np.float16(x).view(np.uint16)) for x in out],
                "scores": entries_scores, "probs": entries_probs}


# ---- tests --------------------------------------------------------------------------------------

CASES = [("attacc-hbm3-5.2", 64, 70, False), ("attacc-hbm3-5.2", 128, 300, True),
         ("samsung-hbm2-pim", 128, 90, False), ("samsung-hbm2-pim", 64, 45, True)]


@pytest.mark.parametrize(("preset", "d", "L", "group_scope"), CASES)
def test_bit_exact_against_scalar_model(preset: str, d: int, L: int, group_scope: bool) -> None:
    cfg = config.load(preset)
    rng = np.random.default_rng(SEED + L)
    q, K, V = random_head(rng, L, d, spread=3.0)
    prog, wdata, image = dense_case(cfg, q, K, V, group_scope=group_scope)
    res = execute(prog, wdata, image, cfg, d)
    want = Scalar(cfg, d).run(prog, wdata, image)
    assert res.scores.tolist() == want["scores"], f"seed {SEED + L}"
    assert res.probs.tolist() == want["probs"], f"seed {SEED + L}"
    assert res.output_bits.tolist() == want["output"], f"seed {SEED + L}"
    assert int(res.valid.sum()) == L


#: Relative L2 error of the FP16 output against float64 attention on the same FP16 inputs.
#: FP32 accumulation: FP16 rounding of the output dominates (measured 2.5e-4 .. 3.2e-4).
#: FP16 accumulation (Samsung preset): summing 1/L-sized terms in FP16 (measured up to 6e-3).
BOUND = {"fp32": 1e-3, "fp16": 2e-2}


@pytest.mark.parametrize(("preset", "d", "L"), [("attacc-hbm3-5.2", 128, 4096),
                                                ("attacc-hbm3-5.2", 64, 1000),
                                                ("jedec-hbm3-6400", 128, 777),
                                                ("samsung-hbm2-pim", 128, 2048),
                                                ("samsung-hbm2-pim", 64, 500)])
def test_dense_attention_against_float64(preset: str, d: int, L: int) -> None:
    cfg = config.load(preset)
    rng = np.random.default_rng(SEED)
    q, K, V = random_head(rng, L, d)
    prog, wdata, image = dense_case(cfg, q, K, V)
    res = execute(prog, wdata, image, cfg, d)
    exact = attention64(q, K, V)
    err = np.linalg.norm(res.output - exact) / np.linalg.norm(exact)
    assert err < BOUND[cfg.pu.acc_format], f"seed {SEED}: relative error {err:.2e}"
    p = nm.from_bits(res.probs, FP16).astype(np.float64)
    s = K.astype(np.float64) @ q.astype(np.float64)
    w = np.exp(s - s.max())
    assert abs(p.sum() - 1) < 1e-2
    assert np.isclose(p.max(), (w / w.sum()).max(), rtol=2e-3)


@pytest.mark.parametrize("preset", ["attacc-hbm3-5.2", "samsung-hbm2-pim"])
def test_lead_dense_program_runs(preset: str) -> None:
    """The reference generator of starc.golden.programs computes attention (shared PUs too)."""
    cfg = config.load(preset)
    d, L = 128, 1000
    rng = np.random.default_rng(SEED)
    q, K, V = random_head(rng, L, d)
    _, wdata, image = dense_case(cfg, q, K, V)
    prog = programs.dense_program(cfg, L, d)
    res = execute(prog, wdata, image, cfg, d)
    exact = attention64(q, K, V)
    assert np.linalg.norm(res.output - exact) / np.linalg.norm(exact) < BOUND[cfg.pu.acc_format]


def test_result_layout() -> None:
    cfg = config.load()
    d, L = 64, 40                  # bpt 2, 2 sets of 16 slots per group row
    rng = np.random.default_rng(SEED)
    q, K, V = random_head(rng, L, d)
    prog, wdata, image = dense_case(cfg, q, K, V)
    res = execute(prog, wdata, image, cfg, d)
    G = cfg.org.groups_per_channel
    assert len(res.scores) == G * 32 and res.valid.sum() == L
    assert res.entry_group.tolist()[:64] == [0] * 32 + [1] * 32
    assert res.entry_set.tolist()[:33] == [0] * 16 + [1] * 16 + [0]
    assert res.entry_slot.tolist()[:18] == list(range(16)) + [0, 1]
    assert (res.probs[~res.valid] == 0).all() and (res.entry_sfm == res.entry_sfm[0]).all()
    # scores are q.k in FP32 within rounding, token t -> entry via the layout
    for t in (0, 17, 39):
        _, g, j, s = token_place(cfg, d, t)
        e = g * 32 + j * 16 + s
        assert res.valid[e]
        assert abs(nm.from_bits(res.scores[e], FP32) - float(K[t].astype(np.float64)
                                                                @ q.astype(np.float64))) < 1e-3
    assert res.output_bits.dtype == np.uint16 and res.output_acc.dtype == np.uint32


def test_write_then_read() -> None:
    cfg = config.load()
    wdata = np.arange(48, dtype=np.uint16).reshape(3, 16)
    img = {(1, 2, 5): np.full((32, 16), 7, np.uint16)}
    prog = make_program([(Op.ACTPB, 1, 2, 0, 5), (Op.RD, 1, 2, 3), (Op.WR, 1, 2, 3, 0, 2),
                         (Op.RD, 1, 2, 3), (Op.PREPB, 1, 2), (Op.ACTBG, 1, 0, 0, 5),
                         (Op.RD, 1, 2, 3), (Op.RD, 1, 0, 3)])
    res = execute(prog, wdata, img, cfg, 128)
    assert res.read_index.tolist() == [1, 3, 6, 7]
    assert res.reads[0].tolist() == [7] * 16
    assert res.reads[1].tolist() == res.reads[2].tolist() == list(range(32, 48))
    assert res.reads[3].tolist() == [0] * 16
    assert img[(1, 2, 5)][3].tolist() == [7] * 16           # the caller's image is untouched
    assert res.image[(1, 2, 5)][3].tolist() == list(range(32, 48))


def _err(prog: list[tuple], match: str, cfg: config.Config | None = None) -> None:
    with pytest.raises(ProgramError, match=match):
        execute(make_program(prog), np.zeros((4, 16), np.uint16), {}, cfg or config.load(), 128)


def test_illegal_programs_name_the_command() -> None:
    _err([(Op.ACTAB, 0, 0, 0, 1), (Op.PREBG, 3), (Op.MACAB, 0, 0, 4)],
         r"command 2 \(MACAB col=4\): MAC to a closed bank \(group 3, bank 0\)")
    _err([(Op.ACTBG, 2, 0, 0, 1), (Op.MACBG, 2, 0, 0), (Op.MACBG, 1, 0, 0)],
         r"command 2 .*MAC to a closed bank \(group 1, bank 0\)")
    _err([(Op.ACTAB,), (Op.ACTPB, 0, 1, 0, 3)], r"command 1 .*already has row 0 open")
    _err([(Op.WRGB,), (Op.ACTAB,), (Op.MACAB,), (Op.MVSB, 0, 0, 0, 0, 3), (Op.PREA,),
          (Op.SFM, 0, 0, 0, 0, 3)], r"command 5 \(SFM arg=3\): SFM n=3 but the softmax buffer "
                                    r"holds 2 valid entries")
    _err([(Op.ACTAB,), (Op.MVSB, 4, 0, 0, 0, 1), (Op.SFM, 0, 0, 0, 0, 1), (Op.MVGB, 5)],
         r"command 3 \(MVGB group=5\): MVGB to group 5 pops the probabilities of group 4 "
         r"\(score move at command 1\)")
    _err([(Op.MVGB, 5)], r"command 0 .*no softmax output is waiting")
    _err([(Op.SFM, 0, 0, 0, 0, 2)], r"command 0 .*buffer is empty")
    _err([(Op.RD, 0, 0, 0)], r"command 0 .*RD to a closed bank")
    _err([(Op.NOP,)], r"command 0 .*NOP is not allowed")
    _err([(Op.ACTAB,), (Op.REF,)], r"command 1 .*REF needs every bank closed")
    _err([(Op.ACTAB,), (Op.MACAB, 0, 1, 0)], r"command 1 .*bank field 1 .*banks_per_pu \(1\)")
    _err([(Op.MVSB, 0, 0, int(MoveFlag.BUF | MoveFlag.VALUE))],
         r"command 0 .*a value move takes flags VALUE and HALF only")
    _err([(Op.MVSB, 0, 0, 0, 0, 1 << 16)], r"command 0 .*mask 0x10000 has bits beyond the "
                                           r"group's 16 entries")
    _err([(Op.WRGB, 0, 0, 8)], r"command 0 .*query chunk 8 out of range \(0..7\)")
    _err([(Op.WRGB, 0, 0, 0, 0, 9)], r"command 0 .*data index 9 beyond wdata")
    _err([(Op.ACTPB, 16, 0, 0, 0)], r"command 0 .*group 16 out of range")
    _err([(Op.ACTAB, 0, 0, 0, 1 << 14)], r"command 0 .*row 16384 out of range")


def test_argument_validation() -> None:
    cfg = config.load()
    prog = make_program([(Op.BAR,)])
    with pytest.raises(ValueError, match=r"wdata must have shape \[n, 16\]"):
        execute(prog, np.zeros((2, 8), np.uint16), {}, cfg, 128)
    with pytest.raises(ValueError, match="uint16"):
        execute(prog, np.zeros((2, 16), np.float32), {}, cfg, 128)
    with pytest.raises(config.ConfigError, match="head_dim 48"):
        execute(prog, np.zeros((2, 16), np.uint16), {}, cfg, 48)
    with pytest.raises(ProgramError, match="PROGRAM_DTYPE"):
        execute(np.zeros(1, dtype=[("op", "u1")]), np.zeros((2, 16), np.uint16), {}, cfg, 128)
    bad = {(0, 0, 0): np.zeros((32, 8), np.uint16)}
    with pytest.raises(ProgramError, match=r"image row \(0, 0, 0\) has shape \(32, 8\)"):
        execute(make_program([(Op.ACTAB,)]), np.zeros((2, 16), np.uint16), bad, cfg, 128)
    assert prog.dtype == PROGRAM_DTYPE

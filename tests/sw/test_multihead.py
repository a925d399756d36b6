"""Several heads per channel (docs/multihead.md): the overlapped order, its functional results."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starc import config
from starc.golden import multihead, programs
from starc.golden.functional import execute
from starc.golden.timing import ProgramError
from starc.isa import HEAD_OPS, MAX_HEADS, Op, head_of, make_program

SEED = 5150
CFG = config.load()


def _single(cfg: config.Config, L: int, d: int, *, compact: bool,
            query_data_index: int = 0, head: int = 0) -> np.ndarray:
    G = cfg.org.groups_per_channel
    R = -(-L // (G * cfg.tokens_per_group_row(d)))
    score, value = programs.dense_rounds(cfg, L, d, head, key_row_base=0, value_row_base=R)
    work = {head: multihead.HeadWork([query_data_index + c for c in range(d // 16)], L,
                                     list(range(G)))}
    return multihead.emit(score + value, work, cfg, compact=compact)


def _image(cfg: config.Config, d: int, heads: list[tuple[np.ndarray, np.ndarray]],
           row_base: list[tuple[int, int]]) -> dict:
    """Memory image of the dense layout: head k's keys at rows ``row_base[k][0] ..``, values at
    ``row_base[k][1] ..``."""
    C, Ln, bpt = cfg.org.columns_per_row, cfg.pu.lanes, cfg.banks_per_token(d)
    image: dict = {}
    for (K, V), (kb, vb) in zip(heads, row_base, strict=True):
        a = programs.dense_token_address(cfg, d, np.arange(len(K)))
        for t in range(len(K)):
            r, g, j, s = (int(a[f][t]) for f in ("row", "group", "set", "slot"))
            for k in range(bpt):
                for base, X in ((kb + r, K), (vb + r, V)):
                    row = image.setdefault((g, j * bpt + k, base), np.zeros((C, Ln), np.uint16))
                    row[2 * s] = X[t, 32 * k:32 * k + 16].view(np.uint16)
                    row[2 * s + 1] = X[t, 32 * k + 16:32 * k + 32].view(np.uint16)
    return image


def _attention64(q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:
    s = K.astype(np.float64) @ q.astype(np.float64)
    w = np.exp(s - s.max())
    return (w / w.sum()) @ V.astype(np.float64)


@pytest.mark.parametrize(("preset", "L", "d"), [("attacc-hbm3-5.2", 256, 128),
                                                ("attacc-hbm3-5.2", 3000, 128),
                                                ("attacc-hbm3-5.2-npc", 1024, 64),
                                                ("samsung-hbm2-pim", 700, 64)])
def test_one_head_is_the_reference_program(preset: str, L: int, d: int) -> None:
    """emit() of one head without ``compact`` is the single-head program, command for command
    (shared PUs included: samsung's banks_per_pu = 2)."""
    cfg = config.load(preset)
    assert np.array_equal(_single(cfg, L, d, compact=False), programs.dense_program(cfg, L, d))


def test_overlapped_order() -> None:
    assert multihead.overlapped_order(1) == [(0, False), (0, True)]
    assert multihead.overlapped_order(3) == [(0, False), (1, False), (0, True), (2, False),
                                             (1, True), (2, True)]
    with pytest.raises(ValueError):
        multihead.overlapped_order(0)


@pytest.mark.parametrize(("H", "L", "d"), [(2, 1000, 128), (3, 300, 64), (2, 256, 64)])
def test_heads_compute_their_own_attention(H: int, L: int, d: int) -> None:
    """Every head of the overlapped program computes, bit for bit, what a single-head program
    with the same edges computes on that head's data; and attention within the FP32 bound."""
    rng = np.random.default_rng(SEED + H + L)
    G = CFG.org.groups_per_channel
    R = -(-L // (G * CFG.tokens_per_group_row(d)))
    qs = [(rng.normal(0, 1, d) / np.sqrt(d)).astype(np.float16) for _ in range(H)]
    kv = [(rng.normal(0, 1, (L, d)).astype(np.float16),
           rng.normal(0, 1, (L, d)).astype(np.float16)) for _ in range(H)]
    wdata = np.concatenate([q.view(np.uint16).reshape(-1, 16) for q in qs])
    prog = programs.dense_program(CFG, L, d, heads=H)
    res = execute(prog, wdata, _image(CFG, d, kv, [(2 * R * k, 2 * R * k + R) for k in range(H)]),
                  CFG, d)
    assert res.heads == H and res.outputs_bits.shape == (H, d)
    assert np.array_equal(res.output_bits, res.outputs_bits[0])
    for k in range(H):
        one = _single(CFG, L, d, compact=True, query_data_index=k * (d // 16))
        r1 = execute(one, wdata, _image(CFG, d, [kv[k]], [(0, R)]), CFG, d)
        assert np.array_equal(res.outputs_bits[k], r1.output_bits), f"seed {SEED}, head {k}"
        assert np.array_equal(res.outputs_acc[k], r1.output_acc)
        mine = res.entry_head == k
        assert np.array_equal(res.scores[mine], r1.scores)
        assert np.array_equal(res.probs[mine], r1.probs)
        exact = _attention64(qs[k], *kv[k])
        err = np.linalg.norm(res.outputs_bits[k].view(np.float16) - exact) / np.linalg.norm(exact)
        assert err < 1e-3, f"seed {SEED}, head {k}: relative error {err:.2e}"


@settings(max_examples=25, deadline=None)
@given(H=st.integers(1, MAX_HEADS), L=st.integers(1, 1500), d=st.sampled_from([64, 128]),
       preset=st.sampled_from(["attacc-hbm3-5.2", "samsung-hbm2-pim"]))
def test_overlapped_program_invariants(H: int, L: int, d: int, preset: str) -> None:
    """H heads: H times one head's commands of every kind; each head's commands name it; each
    head's moves come in the order of its phases; the program runs (no ProgramError)."""
    cfg = config.load(preset)
    G = cfg.org.groups_per_channel
    if 2 * H * -(-L // (G * cfg.tokens_per_group_row(d))) > cfg.org.rows_per_bank:
        return
    prog = programs.dense_program(cfg, L, d, heads=H)
    one = programs.command_counts(programs.dense_program(cfg, L, d), cfg)
    assert programs.command_counts(prog, cfg) == {k: H * v for k, v in one.items()}
    heads = np.array([head_of(c) for c in prog])
    ops = prog["op"]
    for op in HEAD_OPS - {Op.RDSB, Op.MACBG}:
        for k in range(H):
            assert (heads[ops == int(op)] == k).sum() == one[op.name]
    # per head: its WRGBs before its first score MAC, its SFM after its score moves and before
    # its MVGBs, its value moves after its value MACs
    for k in range(H):
        mine = heads == k
        idx = {op: np.flatnonzero(mine & (ops == int(op))) for op in
               (Op.WRGB, Op.MACAB, Op.MVSB, Op.SFM, Op.MVGB)}
        score_mac = idx[Op.MACAB][(prog["arg"][idx[Op.MACAB]] & 1) == 0]
        value_mvsb = idx[Op.MVSB][(prog["col"][idx[Op.MVSB]] & 2) != 0]
        score_mvsb = idx[Op.MVSB][(prog["col"][idx[Op.MVSB]] & 2) == 0]
        assert idx[Op.WRGB].max() < score_mac.min()
        assert score_mvsb.max() < idx[Op.SFM][0] < idx[Op.MVGB].min()
        assert value_mvsb.min() > idx[Op.MACAB].max()
    wdata = np.zeros((H * d // 16, 16), np.uint16)
    execute(prog, wdata, {}, cfg, d)


def test_head_index_is_checked() -> None:
    with pytest.raises(ProgramError, match="head 8 out of range"):
        execute(make_program([(Op.WRGB, 0, 0, 0, MAX_HEADS, 0)]), np.zeros((1, 16), np.uint16),
                {}, CFG, 64)
    with pytest.raises(ValueError, match="heads must be an integer"):
        programs.dense_program(CFG, 256, 128, heads=MAX_HEADS + 1)
    with pytest.raises(ValueError, match="rows per bank"):
        programs.dense_program(CFG, 1 << 20, 128, heads=8)
    with pytest.raises(ValueError, match="value_row_base"):
        programs.dense_program(CFG, 256, 128, heads=2, value_row_base=4)


def test_softmax_and_moves_are_per_head() -> None:
    """An MVGB pops its own head's probabilities; an SFM takes its own head's pending scores."""
    g = 0
    prog = make_program([
        (Op.ACTAB, 0, 0, 0, 0), (Op.MACAB, 0, 0, 0, 0, 0), (Op.MACAB, 0, 0, 0, 1, 0),
        (Op.PREA,), (Op.MVSB, g, 0, 0, 0, 1), (Op.MVSB, g, 0, 0, 1, 3),
        (Op.SFM, 0, 0, 0, 1, 2),                      # head 1: its two valid entries
        (Op.MVGB, g, 0, 0, 0, 0)])                    # head 0 has no softmax output yet
    with pytest.raises(ProgramError, match=r"no softmax output is waiting \(head 0\)"):
        execute(prog, np.zeros((1, 16), np.uint16), {}, CFG, 128)
    bad = make_program([(Op.ACTAB,), (Op.MACAB,), (Op.PREA,), (Op.MVSB, g, 0, 0, 0, 1),
                        (Op.SFM, 0, 0, 0, 1, 1)])
    with pytest.raises(ProgramError, match="SFM over 1 entries but the softmax buffer is empty"):
        execute(bad, np.zeros((1, 16), np.uint16), {}, CFG, 128)


def test_cli_runs_the_overlapped_schedule(capsys) -> None:
    """`starc timing dense --heads-per-channel 2` times dense_program(heads=2); the MAC-stream
    bound is the opened rows x the row period (tRCD + (C - 1) tCCD_AB + tRTP_L + tRP, at
    least tRC) plus refresh."""
    import json

    from starc import cli
    from starc.golden import timing
    assert cli.main(["timing", "dense", "--heads-per-channel", "2", "--lengths", "1024", "3000",
                     "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "ours" and d["heads_per_channel"] == 2
    tm, C = CFG.timing, CFG.org.columns_per_row
    period = max(tm.tRC, tm.tRCD + (C - 1) * tm.tCCD_AB + tm.tRTP_L + tm.tRP)
    for row in d["rows"]:
        L = row["L"]
        prog = programs.dense_program(CFG, L, 128, heads=2)
        assert row["cycles"] == timing.schedule(prog, CFG).total_cycles
        rows = 2 * 2 * -(-L // (CFG.org.groups_per_channel * CFG.tokens_per_group_row(128)))
        stream = rows * period
        assert row["mac_stream_cycles"] == stream + stream // (tm.tREFI - tm.tRFC) * tm.tRFC
        assert row["ratio_to_mac_stream"] == pytest.approx(row["cycles"] / row["mac_stream_cycles"])


def test_cli_heads_errors(capsys) -> None:
    from starc import cli
    assert cli.main(["timing", "dense", "--heads-per-channel", "8", "--lengths", "400000"]) == 2
    err = capsys.readouterr().err
    assert "rows per bank" in err and "fewer heads" in err

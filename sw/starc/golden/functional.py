"""Golden functional model: what a channel program computes, bit for bit.

:func:`execute` runs a program (``starc.isa.PROGRAM_DTYPE``) on one channel following the
functional semantics of docs/commands.md with the arithmetic of :mod:`starc.numerics`. It is the
reference the gateware's results are compared with; timing is :mod:`starc.golden.timing`'s job, so
commands here take effect in program order.

State (reset to zero at the start): the open row of every bank (a copy of its data), the query
chunks of the GEMV buffers, per bank two score register sets of ``slots`` entries and the value
accumulators ``acc[h][lane]``, per group two probability slots, the softmax buffer (entries
appended by score moves, consumed by SFM), the FIFO of probabilities (filled by SFM, popped by
MVGB), and the channel output accumulator.

Several heads (docs/multihead.md): the commands of :data:`starc.isa.HEAD_OPS` name a head in
their ``row`` field. Per head: the query chunks, the value accumulators, the softmax buffer's
pending entries and its FIFO of probabilities, the output accumulator. Shared by the heads: the
score register sets and the probability slots.

Precisions of the contract that docs/commands.md leaves open (docs/numerics.md repeats them):

* ``pu.banks_per_pu > 1``: a MAC's ``bank`` field selects which bank of every shared PU works:
  banks ``b`` with ``b % banks_per_pu == bank``; ``bank`` must be below ``banks_per_pu``.
* Value MVSB (``MoveFlag.VALUE``): ``MoveFlag.HALF`` selects the half ``h`` of the accumulators it
  moves (lanes of dims ``32 k + 16 h + l``); the move reads and clears them. ``MoveFlag.BUF``
  must be clear (there is one set of value accumulators).
* The score-move mask has one bit per entry, ``sets * slots <= 32``; bits beyond are an error.
* SFM with no entries and ``n = 0`` does nothing.
* RDSB (selection read-back): takes every pending score move off the softmax buffer (they take
  no part in a later SFM and get probability 0) and returns their valid scores, in buffer order,
  in :attr:`Result.host_scores`; ``n`` must equal their number.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from starc import numerics as nm
from starc.config import Config
from starc.golden.timing import ProgramError
from starc.isa import MAX_HEADS, PROGRAM_DTYPE, MacArg, MoveFlag, Op, format_command

__all__ = ["Result", "execute"]

RowKey = tuple[int, int, int]


@dataclass
class Result:
    """What a program computed.

    Softmax-buffer entries are listed in buffer order over the whole program (every score move,
    ``slots`` entries per token set, set-major); ``entry_sfm`` is the index of the SFM command that
    processed an entry (-1: none did, its probability is 0).

    ``output_bits`` / ``output`` / ``output_acc`` are head 0's; ``outputs_bits`` and
    ``outputs_acc`` hold every head's (``heads`` = 1 + the highest head the program names).
    """

    output_bits: NDArray[np.uint16]     #: [d] FP16 bits of head 0's output accumulator
    output: NDArray[np.float32]         #: [d] the same values
    output_acc: NDArray[np.uint32]      #: [d] the accumulator (FP32 bits; fp16 mode widened)
    scores: NDArray[np.uint32]          #: FP32 bits per softmax-buffer entry
    valid: NDArray[np.bool_]
    probs: NDArray[np.uint16]           #: FP16 bits per entry
    entry_group: NDArray[np.int64]
    entry_set: NDArray[np.int64]
    entry_slot: NDArray[np.int64]
    entry_move: NDArray[np.int64]       #: index of the MVSB command that produced the entry
    entry_sfm: NDArray[np.int64]
    reads: NDArray[np.uint16]           #: [n_rd, lanes] data of the RD commands, in order
    read_index: NDArray[np.int64]       #: command index of each RD
    image: dict[RowKey, NDArray[np.uint16]] = field(repr=False)  #: image after the WRs
    #: per RDSB, in order: FP32 bits of the valid scores it read to the host (buffer order)
    host_scores: list[NDArray[np.uint32]] = field(default_factory=list)
    heads: int = 1                      #: 1 + the highest head index the program names
    #: [heads, d] FP16 bits of every head's output accumulator
    outputs_bits: NDArray[np.uint16] = field(default_factory=lambda: np.zeros((0, 0), np.uint16))
    #: [heads, d] every head's accumulator (FP32 bits)
    outputs_acc: NDArray[np.uint32] = field(default_factory=lambda: np.zeros((0, 0), np.uint32))
    #: head of each softmax-buffer entry (the head its score move named)
    entry_head: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class _Move:
    group: int
    index: int
    scores: NDArray[np.uint32]
    valid: NDArray[np.bool_]
    head: int = 0
    probs: NDArray[np.uint16] | None = None
    sfm: int = -1


class _Machine:
    def __init__(self, prog: np.ndarray, wdata: NDArray, image: Mapping[RowKey, NDArray],
                 cfg: Config, head_dim: int) -> None:
        org = cfg.org
        self.prog = prog
        self.cfg = cfg
        self.G, self.B, self.C = org.groups_per_channel, org.banks_per_group, org.columns_per_row
        self.Ln = cfg.pu.lanes
        self.S = cfg.tokens_per_bank_row()
        self.bpt = cfg.banks_per_token(head_dim)
        self.sets = self.B // self.bpt
        self.d = head_dim
        self.bppu = cfg.pu.banks_per_pu
        self.ar = nm.arith(cfg.pu.acc_format)  # type: ignore[arg-type]
        self.wdata = _as_bits(np.asarray(wdata), "wdata")
        if self.wdata.ndim != 2 or self.wdata.shape[1] != self.Ln:
            raise ValueError(f"wdata must have shape [n, {self.Ln}] (FP16 bits), not "
                             f"{self.wdata.shape}")
        self.image: dict[RowKey, NDArray[np.uint16]] = dict(image)
        dt = self.ar.dtype
        G, B, C, Ln, S = self.G, self.B, self.C, self.Ln, self.S
        self.open_row = np.full((G, B), -1, dtype=np.int64)
        self.rows = np.zeros((G, B, C, Ln), dtype=np.uint16)
        H = MAX_HEADS
        self.query = np.zeros((H, head_dim // Ln, Ln), dtype=np.uint16)
        self.score = np.zeros((G, B, 2, S), dtype=dt)
        self.acc = np.zeros((G, B, H, 2, Ln), dtype=dt)
        self.prob = np.zeros((G, 2, self.sets * S), dtype=np.uint16)
        self.out = np.zeros((H, head_dim), dtype=dt)
        self.heads = 1
        self.moves: list[_Move] = []
        self.pending: list[list[_Move]] = [[] for _ in range(H)]
        self.fifo: list[deque[_Move]] = [deque() for _ in range(H)]
        self.reads: list[NDArray[np.uint16]] = []
        self.host_scores: list[NDArray[np.uint32]] = []
        self.read_index: list[int] = []
        bank = np.arange(B)
        self.q_chunk = 2 * (bank % self.bpt)                      # + h
        self.prob_col = S * (bank // self.bpt)                    # + s
        k = bank % self.bpt
        self.out_dim = (2 * Ln * k)[:, None] + np.arange(Ln)[None, :]   # + Ln * h
        if self.sets * S > 32:
            self.mask_bits = None
        else:
            self.mask_bits = np.arange(self.sets * S, dtype=np.uint64)

    # ---- helpers --------------------------------------------------------------------------------
    def err(self, i: int, msg: str) -> ProgramError:
        return ProgramError(f"command {i} ({format_command(self.prog[i])}): {msg}")

    def check_group(self, i: int, g: int) -> None:
        if g >= self.G:
            raise self.err(i, f"group {g} out of range (0..{self.G - 1})")

    def check_bank(self, i: int, g: int, b: int) -> None:
        self.check_group(i, g)
        if b >= self.B:
            raise self.err(i, f"bank {b} out of range (0..{self.B - 1})")

    def check_col(self, i: int, c: int) -> None:
        if c >= self.C:
            raise self.err(i, f"column {c} out of range (0..{self.C - 1})")

    def check_head(self, i: int, head: int) -> int:
        if head >= MAX_HEADS:
            raise self.err(i, f"head {head} out of range (0..{MAX_HEADS - 1}; the row field of "
                              f"this command names its head, docs/multihead.md)")
        if head >= self.heads:
            self.heads = head + 1
        return head

    def check_data(self, i: int, a: int) -> None:
        if a >= len(self.wdata):
            raise self.err(i, f"data index {a} beyond wdata ({len(self.wdata)} rows)")

    def load_row(self, i: int, g: int, b: int, row: int) -> None:
        if row >= self.cfg.org.rows_per_bank:
            raise self.err(i, f"row {row} out of range (0..{self.cfg.org.rows_per_bank - 1})")
        data = self.image.get((g, b, row))
        if data is None:
            self.rows[g, b] = 0
        else:
            a = _as_bits(np.asarray(data), f"image row {(g, b, row)}")
            if a.shape != (self.C, self.Ln):
                raise self.err(i, f"image row {(g, b, row)} has shape {a.shape}, not "
                                  f"({self.C}, {self.Ln})")
            self.rows[g, b] = a
        self.open_row[g, b] = row

    # ---- commands -------------------------------------------------------------------------------
    def act(self, i: int, groups: range, banks: range, row: int) -> None:
        opened = self.open_row[groups.start:groups.stop, banks.start:banks.stop] >= 0
        if opened.any():
            g, b = (int(x) for x in np.argwhere(opened)[0])
            raise self.err(i, f"bank {banks.start + b} of group {groups.start + g} already has "
                              f"row {self.open_row[groups.start + g, banks.start + b]} open")
        for g in groups:
            for b in banks:
                self.load_row(i, g, b, row)

    def mac(self, i: int, gs: slice, bank: int, c: int, arg: int, head: int) -> None:
        if arg & ~int(MacArg.VALUE | MacArg.BUF):
            raise self.err(i, f"MAC arg {arg:#x} has bits other than VALUE and BUF")
        if bank >= self.bppu:
            raise self.err(i, f"bank field {bank} selects a bank of each PU and must be below "
                              f"pu.banks_per_pu ({self.bppu})")
        self.check_col(i, c)
        bs = slice(bank, None, self.bppu)
        closed = self.open_row[gs, bs] < 0
        if closed.any():
            g, b = (int(x) for x in np.argwhere(closed)[0])
            raise self.err(i, f"MAC to a closed bank (group {(gs.start or 0) + g}, bank "
                              f"{bank + b * self.bppu})")
        h, s = c & 1, c >> 1
        data = self.rows[gs, bs, c, :].view(np.float16)                 # [g, nb, Ln]
        ar = self.ar
        k = 1 if arg & MacArg.BUF else 0
        if arg & MacArg.VALUE:
            p = self.prob[gs, k][:, self.prob_col[bs] + s].view(np.float16)  # [g, nb]
            prod = ar.product(p[..., None], data)
            self.acc[gs, bs, head, h, :] = ar.add(self.acc[gs, bs, head, h, :], prod)
        else:
            q = self.query[head, self.q_chunk[bs] + h].view(np.float16)       # [nb, Ln]
            dot = ar.tree(ar.product(data, q[None]), -1)                     # [g, nb]
            if h:
                dot = ar.add(self.score[gs, bs, k, s], dot)
            self.score[gs, bs, k, s] = dot

    def mvsb(self, i: int, g: int, flags: int, mask: int, head: int) -> None:
        self.check_group(i, g)
        ar = self.ar
        if flags & MoveFlag.VALUE:
            if flags & ~(MoveFlag.VALUE | MoveFlag.HALF):
                raise self.err(i, "a value move takes flags VALUE and HALF only; the value "
                                  "accumulators have one set")
            h = 1 if flags & MoveFlag.HALF else 0
            for j in range(self.sets):
                banks = slice(j * self.bpt, (j + 1) * self.bpt)
                dims = (self.out_dim[banks] + self.Ln * h).ravel()
                part = self.acc[g, banks, head, h, :].ravel()
                self.out[head, dims] = ar.add(self.out[head, dims], part)
            self.acc[g, :, head, h, :] = 0
            return
        if flags & ~MoveFlag.BUF:
            raise self.err(i, f"score move flags {flags:#x}: only MoveFlag.BUF (register set) is "
                              f"allowed")
        if self.mask_bits is None:
            raise self.err(i, f"a group holds {self.sets * self.S} entries per score move; the "
                              f"32-bit mask cannot describe them")
        n = self.sets * self.S
        if mask >> n:
            raise self.err(i, f"mask {mask:#x} has bits beyond the group's {n} entries")
        k = 1 if flags & MoveFlag.BUF else 0
        sums = ar.tree(self.score[g, :, k, :].reshape(self.sets, self.bpt, self.S), 1)
        bits = nm.to_bits(sums.ravel().astype(np.float32), nm.FP32)
        valid = ((np.uint64(mask) >> self.mask_bits) & np.uint64(1)).astype(bool)
        mv = _Move(g, i, bits, valid, head)
        self.moves.append(mv)
        self.pending[head].append(mv)

    def sfm(self, i: int, n: int, head: int) -> None:
        moves, self.pending[head] = self.pending[head], []
        if not moves:
            if n:
                raise self.err(i, f"SFM over {n} entries but the softmax buffer is empty")
            return
        x = np.concatenate([mv.scores for mv in moves])
        v = np.concatenate([mv.valid for mv in moves])
        count = int(v.sum())
        if count != n:
            raise self.err(i, f"SFM n={n} but the softmax buffer holds {count} valid entries")
        p = nm.softmax(x, v).p
        at = 0
        for mv in moves:
            mv.probs, mv.sfm = p[at:at + len(mv.scores)], i
            at += len(mv.scores)
            self.fifo[head].append(mv)

    def rdsb(self, i: int, n: int, head: int) -> None:
        moves, self.pending[head] = self.pending[head], []
        got = [mv.scores[mv.valid] for mv in moves]
        x = np.concatenate(got) if got else np.zeros(0, np.uint32)
        if x.size != n:
            raise self.err(i, f"RDSB n={n} but the softmax buffer holds {x.size} valid entries")
        self.host_scores.append(x)

    def mvgb(self, i: int, g: int, slot: int, head: int) -> None:
        self.check_group(i, g)
        if slot > 1:
            raise self.err(i, f"probability slot {slot} out of range (0..1)")
        if not self.fifo[head]:
            raise self.err(i, f"MVGB but no softmax output is waiting (head {head})")
        mv = self.fifo[head].popleft()
        if mv.group != g:
            raise self.err(i, f"MVGB to group {g} pops the probabilities of group {mv.group} "
                              f"(score move at command {mv.index})")
        assert mv.probs is not None
        self.prob[g, slot] = mv.probs

    def run(self) -> None:
        G, B = self.G, self.B
        cols = {n: self.prog[n].tolist() for n in ("op", "group", "bank", "col", "row", "arg")}
        ops, grp, bnk = cols["op"], cols["group"], cols["bank"]
        col, row, arg = cols["col"], cols["row"], cols["arg"]
        for i in range(len(ops)):
            op, g, b, c = ops[i], grp[i], bnk[i], col[i]
            if op == Op.MACAB:
                self.mac(i, slice(None), b, c, arg[i], self.check_head(i, row[i]))
            elif op == Op.MACBG:
                self.check_group(i, g)
                self.mac(i, slice(g, g + 1), b, c, arg[i], self.check_head(i, row[i]))
            elif op == Op.MVSB:
                self.mvsb(i, g, c, arg[i], self.check_head(i, row[i]))
            elif op == Op.MVGB:
                self.mvgb(i, g, c, self.check_head(i, row[i]))
            elif op == Op.ACTAB:
                self.act(i, range(G), range(B), row[i])
            elif op == Op.ACTBG:
                self.check_group(i, g)
                self.act(i, range(g, g + 1), range(B), row[i])
            elif op == Op.ACTPB:
                self.check_bank(i, g, b)
                self.act(i, range(g, g + 1), range(b, b + 1), row[i])
            elif op == Op.PREA:
                self.open_row[:] = -1
            elif op == Op.PREBG:
                self.check_group(i, g)
                self.open_row[g] = -1
            elif op == Op.PREPB:
                self.check_bank(i, g, b)
                self.open_row[g, b] = -1
            elif op in (Op.RD, Op.WR):
                self.check_bank(i, g, b)
                self.check_col(i, c)
                r = int(self.open_row[g, b])
                if r < 0:
                    raise self.err(i, f"{Op(op).name} to a closed bank (group {g}, bank {b})")
                if op == Op.RD:
                    self.reads.append(self.rows[g, b, c].copy())
                    self.read_index.append(i)
                else:
                    self.check_data(i, arg[i])
                    self.rows[g, b, c] = self.wdata[arg[i]]
                    self.image[(g, b, r)] = self.rows[g, b].copy()
            elif op == Op.WRGB:
                nq = self.query.shape[1]
                if c >= nq:
                    raise self.err(i, f"query chunk {c} out of range (0..{nq - 1}) for head_dim "
                                      f"{self.d}")
                self.check_data(i, arg[i])
                self.query[self.check_head(i, row[i]), c] = self.wdata[arg[i]]
            elif op == Op.SFM:
                self.sfm(i, arg[i], self.check_head(i, row[i]))
            elif op == Op.RDSB:
                self.rdsb(i, arg[i], self.check_head(i, row[i]))
            elif op == Op.REF:
                if (self.open_row >= 0).any():
                    raise self.err(i, "REF needs every bank closed")
            elif op == Op.BAR:
                pass
            elif op == Op.NOP:
                raise self.err(i, "NOP is not allowed in programs")
            else:
                raise ProgramError(f"command {i}: unknown opcode {op}")

    def result(self) -> Result:
        outs = self.out[:self.heads]
        outs_bits = nm.to_bits(outs, nm.FP16).reshape(outs.shape)
        out_bits = outs_bits[0]
        moves = self.moves
        entries = self.sets * self.S

        def per_entry(f: object) -> NDArray[np.int64]:
            return np.repeat(np.array([f(mv) for mv in moves], dtype=np.int64), entries) \
                if moves else np.zeros(0, dtype=np.int64)

        def cat(xs: list[NDArray], dt: type) -> NDArray:
            return np.concatenate(xs) if xs else np.zeros(0, dtype=dt)

        zeros = np.zeros(entries, dtype=np.uint16)
        return Result(
            output_bits=out_bits,
            output=nm.from_bits(out_bits, nm.FP16).astype(np.float32),
            output_acc=nm.to_bits(self.out[0].astype(np.float32), nm.FP32),
            scores=cat([mv.scores for mv in moves], np.uint32),
            valid=cat([mv.valid for mv in moves], np.bool_),
            probs=cat([zeros if mv.probs is None else mv.probs for mv in moves], np.uint16),
            entry_group=per_entry(lambda mv: mv.group),
            entry_set=np.tile(np.repeat(np.arange(self.sets), self.S), len(moves)),
            entry_slot=np.tile(np.arange(self.S), self.sets * len(moves)),
            entry_move=per_entry(lambda mv: mv.index),
            entry_sfm=per_entry(lambda mv: mv.sfm),
            reads=np.array(self.reads, dtype=np.uint16).reshape(-1, self.Ln),
            read_index=np.array(self.read_index, dtype=np.int64),
            image=self.image,
            host_scores=self.host_scores,
            heads=self.heads,
            outputs_bits=outs_bits,
            outputs_acc=nm.to_bits(outs.astype(np.float32), nm.FP32).reshape(outs.shape),
            entry_head=per_entry(lambda mv: mv.head),
        )


def _as_bits(a: NDArray, what: str) -> NDArray[np.uint16]:
    if a.dtype == np.float16:
        return a.view(np.uint16)
    if a.dtype != np.uint16:
        raise ValueError(f"{what} must hold FP16 bit patterns (uint16) or float16, not {a.dtype}")
    return a


def execute(prog: np.ndarray, wdata: NDArray, image: Mapping[RowKey, NDArray], cfg: Config,
            head_dim: int) -> Result:
    """Run ``prog`` on one channel and return what it computed.

    ``wdata``: uint16 ``[n, lanes]`` FP16 bit patterns (float16 accepted), rows addressed by the
    ``arg`` of WR and WRGB. ``image``: mapping ``(group, bank, row) -> uint16 [columns, lanes]``;
    missing rows read as zeros. The mapping is not modified: WRs go to a copy
    (:attr:`Result.image`). Illegal programs raise :class:`~starc.golden.timing.ProgramError`
    naming the command index.
    """
    if prog.dtype != PROGRAM_DTYPE:
        raise ProgramError(f"program must have dtype starc.isa.PROGRAM_DTYPE, not {prog.dtype}")
    m = _Machine(prog, wdata, image, cfg, head_dim)
    m.run()
    return m.result()

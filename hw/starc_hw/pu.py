"""Bank processing unit: score-phase dot products and value-phase scale-accumulate of one bank.

The arithmetic is that of :mod:`starc.numerics` (and :func:`starc.golden.functional.execute`) bit
for bit; the functional contract is docs/commands.md, "Functional semantics".
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from starc.config import Config
from starc.isa import MAX_HEADS
from starc.numerics import FP32

from . import fp

__all__ = ["BankPU", "pipeline_stages"]


def pipeline_stages(steps: int, stages: int) -> list[int]:
    """Stage (0-based cycle after the operands arrive) of each of ``steps`` combinational steps
    spread over ``stages`` register stages; the last step is always in the last stage.

    With ``stages <= steps`` step k goes to stage ``k * stages // steps`` (at most
    ``ceil(steps / stages)`` steps per stage); with more stages than steps the surplus stages are
    delay registers before the last step.
    """
    if stages <= steps:
        return [k * stages // steps for k in range(steps)]
    return [*range(steps - 1), stages - 1]


class BankPU(wiring.Component):
    """The processing unit of one bank: 16 (``pu.lanes``) FP16 multipliers, a pairwise adder tree,
    two score register sets and the value accumulators.

    Parameters
    ----------
    cfg : :class:`starc.config.Config`
        Lanes, slots (``tokens_per_bank_row``), accumulation format and pipeline depth
        (``pu.mac_pipeline``) come from here.
    heads : int
        Heads whose query and value accumulators the PU holds (docs/multihead.md; default 1:
        one of each). With ``heads`` > 1 the MAC and WRGB payloads carry a ``head`` field, and
        ``acc`` / ``acc_clear`` index ``2 * head + h``. The score register sets and the
        probability slots are shared by the heads.

    Members
    -------
    mac : In(stream.Signature(mac_layout, always_ready=True))
        One column MAC: ``data`` (lanes x FP16 column data), ``col`` (column: ``h = col % 2``,
        token slot ``s = col // 2``), ``value`` (value phase), ``buf`` (score register set, or
        probability slot in the value phase). Score phase: ``p = tree(data[l] * q[h][l])``;
        ``score[buf][s] = p`` if ``h = 0`` else ``score[buf][s] + p``. Value phase:
        ``acc[h][l] += prob[buf][s] * data[l]``. With several heads the query and the
        accumulators are the payload's ``head``'s.
    wrgb : In(stream.Signature(StructLayout({"chunk", "data"}), always_ready=True))
        Query chunk ``chunk`` (16 FP16); kept when ``chunk // 2 == bank_slice`` as ``q[chunk % 2]``.
    prob : In(stream.Signature(StructLayout({"slot", "data"}), always_ready=True))
        The ``slots`` FP16 probabilities of this bank's token set into probability slot ``slot``.
    bank_slice : In(range(banks_per_group))
        ``bank % banks_per_token``: which 32-dimension slice of the head this bank holds.
    scores : Out(ArrayLayout(ArrayLayout(acc, slots), 2))
        The two score register sets (FP32, or FP16 with ``pu.acc_format = "fp16"``).
    acc : Out(ArrayLayout(ArrayLayout(acc, lanes), 2 * heads))
        The value accumulators ``acc[2 * head + h][lane]``.
    acc_clear : In(2 * heads)
        Bit ``2 * head + h`` clears that half at the next clock edge (a value move); must not
        coincide with the last stage of a value MAC into the same half.

    Timing: a MAC whose operands are presented in cycle t updates ``scores`` / ``acc`` as seen
    from cycle ``t + pu.mac_pipeline`` on; one MAC per cycle may be issued. The multiply, each
    adder level of the tree and the accumulate are the ``log2(lanes) + 2`` steps spread over the
    stages by :func:`pipeline_stages`. WRGB / probability writes are seen by MACs from the next
    cycle on.
    """

    def __init__(self, *, cfg: Config, heads: int = 1) -> None:
        if not isinstance(cfg, Config):
            raise TypeError(f"Configuration must be a starc.config.Config, not {cfg!r}")
        if isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= MAX_HEADS:
            raise ValueError(f"heads must be an integer in 1..{MAX_HEADS}, not {heads!r}")
        self._cfg = cfg
        self._heads = heads
        head = {"head": range(heads)} if heads > 1 else {}
        self._fmt = fp.acc_format(cfg.pu.acc_format)
        lanes, slots = cfg.pu.lanes, cfg.tokens_per_bank_row()
        bpg = cfg.org.banks_per_group
        w = self._fmt.width
        self.mac_layout = data.StructLayout({
            "data": data.ArrayLayout(16, lanes),
            "col": range(cfg.org.columns_per_row),
            "value": 1,
            "buf": 1,
            **head,
        })
        self.wrgb_layout = data.StructLayout({"chunk": range(2 * bpg),
                                              "data": data.ArrayLayout(16, lanes), **head})
        self.prob_layout = data.StructLayout({"slot": 1, "data": data.ArrayLayout(16, slots)})
        super().__init__({
            "mac": In(stream.Signature(self.mac_layout, always_ready=True)),
            "wrgb": In(stream.Signature(self.wrgb_layout, always_ready=True)),
            "prob": In(stream.Signature(self.prob_layout, always_ready=True)),
            "bank_slice": In(range(bpg)),
            "scores": Out(data.ArrayLayout(data.ArrayLayout(w, slots), 2)),
            "acc": Out(data.ArrayLayout(data.ArrayLayout(w, lanes), 2 * heads)),
            "acc_clear": In(2 * heads),
        })

    @property
    def latency(self) -> int:
        return self._cfg.pu.mac_pipeline

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg, fmt = self._cfg, self._fmt
        lanes = cfg.pu.lanes
        levels = fp.tree_levels(lanes)
        stage = pipeline_stages(levels + 2, cfg.pu.mac_pipeline)

        H = self._heads
        query = Signal(data.ArrayLayout(data.ArrayLayout(16, lanes), 2 * H))
        probs = Signal(data.ArrayLayout(data.ArrayLayout(16, cfg.tokens_per_bank_row()), 2))
        w = self.wrgb.payload
        with m.If(self.wrgb.valid & (w.chunk >> 1 == self.bank_slice)):
            m.d.sync += query[Cat(w.chunk[0], w.head) if H > 1 else w.chunk[0]].eq(w.data)
        with m.If(self.prob.valid):
            m.d.sync += probs[self.prob.payload.slot].eq(self.prob.payload.data)

        # step 0: operand select and multiply
        p = self.mac.payload
        # with several heads, "h" is the 2 * head + h index of the query and the accumulators
        hsel = Cat(p.col[0], p.head) if H > 1 else p.col[0]
        ctl: dict[str, Value] = {"valid": self.mac.valid, "value": p.value, "h": hsel,
                                 "s": p.col[1:], "buf": p.buf}
        scale = probs[p.buf][p.col[1:]]
        qrow = query[hsel]
        prods: list[Value] = []
        for lane in range(lanes):
            prod = fp.mul16(m, p.data[lane], Mux(p.value, scale, qrow[lane]))
            prods.append(prod if fmt == FP32 else fp.narrow(m, prod))
        sums: list[Value] = prods

        def register(n: int) -> None:
            nonlocal ctl, prods, sums
            for _ in range(n):
                new_ctl = {k: Signal.like(v, name=f"ctl_{k}") for k, v in ctl.items()}
                m.d.sync += [new_ctl[k].eq(v) for k, v in ctl.items()]
                new_prods = [Signal(fmt.width, name=f"prod_{i}") for i in range(len(prods))]
                m.d.sync += [r.eq(v) for r, v in zip(new_prods, prods, strict=True)]
                if sums is prods:
                    new_sums = new_prods
                else:
                    new_sums = [Signal(fmt.width, name=f"psum_{i}") for i in range(len(sums))]
                    m.d.sync += [r.eq(v) for r, v in zip(new_sums, sums, strict=True)]
                ctl, prods, sums = new_ctl, new_prods, new_sums

        # steps 1 .. levels: the pairwise tree (the value phase carries its products alongside)
        for level in range(1, levels + 1):
            register(stage[level] - stage[level - 1])
            nxt = [fp.add(m, fmt, sums[i], sums[i + 1]) for i in range(0, len(sums) - 1, 2)]
            sums = nxt + ([sums[-1]] if len(sums) % 2 else [])
        register(stage[levels + 1] - stage[levels])

        # last step: accumulate into the architectural registers
        for h in range(2 * H):
            with m.If(self.acc_clear[h]):
                m.d.sync += self.acc[h].eq(0)
        with m.If(ctl["valid"]):
            with m.If(ctl["value"]):
                accs = self.acc[ctl["h"]]
                for lane in range(lanes):
                    m.d.sync += accs[lane].eq(fp.add(m, fmt, accs[lane], prods[lane]))
            with m.Else():
                reg = self.scores[ctl["buf"]][ctl["s"]]
                total = fp.add(m, fmt, reg, sums[0])
                m.d.sync += reg.eq(Mux(ctl["h"][0], total, sums[0]))
        return m

# amaranth: UnusedElaboratable=no
"""Gateware for several heads per channel (docs/multihead.md) in amaranth.sim: the softmax unit
with one buffer per head (beats of several heads written, run and read out concurrently),
bit-exact with starc.numerics.softmax, on time, and the pop -> beat latency of two cycles."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from _simbench import Bench
from amaranth.sim import SimulatorContext
from starc import config
from starc import numerics as nm
from starc.numerics import FP32
from starc_hw.softmax import MIN_LATENCY, SoftmaxUnit

SEED = 808
LANES = 4
_benches: dict[int, Bench] = {}


def bench(heads: int) -> Bench:
    if heads not in _benches:
        cfg = config.load(overrides={"pu.sfm_lanes": LANES, "pu.sfm_latency": MIN_LATENCY})
        _benches[heads] = Bench(SoftmaxUnit(cfg=cfg, entries=64, beats=16, heads=heads))
    return _benches[heads]


@dataclass
class Job:
    head: int
    scores: np.ndarray              # [beats, lanes] FP32 bits
    masks: list[int]
    tags: list[int]
    written: int = 0
    t0: int = -1
    pops: list[int] = field(default_factory=list)
    got: list[tuple[list[int], int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(bin(m).count("1") for m in self.masks)

    def want(self) -> np.ndarray:
        valid = np.array([[(m >> i) & 1 for i in range(LANES)] for m in self.masks], bool)
        return nm.softmax(self.scores.ravel(), valid.ravel()).p.reshape(self.scores.shape)


def job(rng: np.random.Generator, head: int, beats: int) -> Job:
    scores = nm.to_bits(rng.normal(0, 4.0, (beats, LANES)), FP32)
    masks = [int(sum(1 << i for i in range(LANES) if rng.random() < 0.7)) for _ in range(beats)]
    return Job(head, scores, masks, [int(t) for t in rng.integers(0, 16, beats)])


def drive(heads: int, jobs: list[Job], seed: int, *, pop_rate: float = 0.6,
          limit: int = 4000) -> dict[str, list[int]]:
    """Jobs of one head run in list order. Each cycle: start the next job whose beats are all
    written (the softmax is free), else write a beat of any job whose head's buffer is free,
    interleaving heads; pop a beat of a random head whose softmax is done. Returns traces."""
    dut = bench(heads).dut
    unit = dut
    rng = np.random.default_rng(seed)
    trace: dict[str, list[int]] = {"missing": [], "error": []}

    async def run(ctx: SimulatorContext) -> None:
        pops: dict[int, Job] = {}         # cycle of a pop -> its job
        done = [False] * len(jobs)
        for cycle in range(limit):
            active = {}                   # head -> its first unfinished job
            for k, jb in enumerate(jobs):
                if not done[k] and jb.head not in active:
                    active[jb.head] = k
            # start: a job whose beats are written; SFMs in list order
            nxt = next((k for k, jb in enumerate(jobs) if jb.t0 < 0), None)
            start = (nxt is not None and active.get(jobs[nxt].head) == nxt
                     and jobs[nxt].written == len(jobs[nxt].masks) and not ctx.get(dut.busy))
            writes = [k for k in active.values() if jobs[k].t0 < 0
                      and jobs[k].written < len(jobs[k].masks)]
            wk = int(rng.choice(writes)) if writes and not start else None
            if wk is not None:
                jb = jobs[wk]
                b = jb.written
                ctx.set(dut.wr.payload, {"scores": [int(x) for x in jb.scores[b]],
                                         "mask": jb.masks[b], "tag": jb.tags[b], "head": jb.head})
            ctx.set(dut.wr.valid, wk is not None)
            if start:
                ctx.set(dut.start.payload, {"n": jobs[nxt].count, "head": jobs[nxt].head})
            ctx.set(dut.start.valid, start)
            # pop: a head whose softmax is done and beats are left
            ready = [k for k in active.values() if jobs[k].t0 >= 0
                     and cycle >= jobs[k].t0 + unit.cycles(jobs[k].count)
                     and len(jobs[k].pops) < len(jobs[k].masks)]
            pk = int(rng.choice(ready)) if ready and rng.random() < pop_rate else None
            ctx.set(dut.pop.valid, pk is not None)
            if pk is not None:
                ctx.set(dut.pop.payload, jobs[pk].head)
                jobs[pk].pops.append(cycle)
                pops[cycle] = jobs[pk]
            # outputs of this cycle
            if ctx.get(dut.rd.valid):
                jb = pops.pop(cycle - 2, None)
                assert jb is not None, f"seed {seed}: a beat in cycle {cycle} nobody popped"
                word = ctx.get(dut.rd.payload.as_value())
                jb.got.append(([(word >> (16 * i)) & 0xFFFF for i in range(LANES)],
                               word >> (16 * LANES)))
            else:
                assert cycle - 2 not in pops, f"seed {seed}: pop of cycle {cycle - 2} lost"
            if wk is not None and ctx.get(dut.wr.ready):
                jobs[wk].written += 1
            if start and ctx.get(dut.start.ready):
                jobs[nxt].t0 = cycle
            for k, jb in enumerate(jobs):
                if len(jb.got) == len(jb.masks) and jb.t0 >= 0:
                    done[k] = True
            trace["missing"].append(ctx.get(dut.missing))
            trace["error"].append(ctx.get(dut.error))
            if all(done):
                return
            await ctx.tick()
        raise AssertionError(f"seed {seed}: timeout after {limit} cycles")

    bench(heads).run(run)
    return trace


@pytest.mark.parametrize(("heads", "seed"), [(2, SEED), (3, SEED + 1), (3, SEED + 2)])
def test_heads_interleaved(heads: int, seed: int) -> None:
    """Several jobs per head, beats of different heads interleaved, pops of different heads
    interleaved with writes and softmaxes: every head's probabilities bit-exact, in order, two
    cycles after their pop; no missing beat, no count error."""
    rng = np.random.default_rng(seed)
    jobs = [job(rng, h, int(rng.integers(1, 9))) for _ in range(2) for h in range(heads)]
    trace = drive(heads, jobs, seed)
    for k, jb in enumerate(jobs):
        got = np.array([p for p, _ in jb.got], dtype=np.uint16).reshape(jb.scores.shape)
        want = jb.want()
        bad = np.argwhere(got != want)
        assert not len(bad), f"seed {seed}: job {k} (head {jb.head}) beat {bad[0][0]} differs"
        assert [t for _, t in jb.got] == jb.tags, f"seed {seed}: job {k} groups"
    assert not any(trace["missing"]) and not any(trace["error"])


def test_first_pop_exactly_on_time() -> None:
    """A pop in the cycle the contract allows (t0 + sfm_cycles(n)) gets the probabilities; the
    pop -> beat latency is two cycles; writes of another head go on meanwhile."""
    rng = np.random.default_rng(SEED + 3)
    jobs = [job(rng, 1, 5), job(rng, 0, 7), job(rng, 1, 2)]
    trace = drive(2, jobs, SEED + 3, pop_rate=1.0)
    for jb in jobs:
        assert jb.pops[0] == jb.t0 + bench(2).dut.cycles(jb.count)
        assert np.array_equal(np.array([p for p, _ in jb.got], np.uint16), jb.want())
    assert not any(trace["missing"])


def test_pop_too_early_is_flagged() -> None:
    dut = bench(2).dut

    async def run(ctx: SimulatorContext) -> None:
        ctx.set(dut.pop.valid, 1)
        ctx.set(dut.pop.payload, 1)
        await ctx.tick()
        ctx.set(dut.pop.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.missing) == 1
        assert ctx.get(dut.rd.valid) == 0

    bench(2).run(run)


def test_heads_parameter() -> None:
    cfg = config.load(overrides={"pu.sfm_latency": MIN_LATENCY})
    with pytest.raises(ValueError, match=r"heads must be an integer in 1\.\.8, not 9"):
        SoftmaxUnit(cfg=cfg, entries=64, beats=8, heads=9)
    one = SoftmaxUnit(cfg=cfg, entries=64, beats=8)
    assert "pop" not in one.signature.members and "head" not in one.wr_layout.members


def test_instantiated_pu_module_has_the_heads_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``pu_instances`` the channel instantiates one PU module (``extra_verilog``): it must
    be the PU of the channel's head count (its MAC and WRGB payloads carry the head, its
    accumulator clear has two bits per head), or Verilator would silently drop the head bit."""
    from amaranth.back import verilog
    from starc_hw.attention import AttentionChannel, PUShell

    seen: list[PUShell] = []
    monkeypatch.setattr(verilog, "convert", lambda top, **kw: seen.append(top) or "")
    cfg = config.load()
    for heads in (1, 2):
        ch = AttentionChannel(cfg=cfg, head_dim=128, pu_instances=True, heads=heads)
        ch.extra_verilog()
        want = PUShell(cfg=cfg, heads=heads)
        assert isinstance(seen[-1], PUShell)   # the PU's module comes last (after the FP units)
        assert seen[-1].signature == want.signature
        assert seen[-1].acc_clear.shape().width == 2 * heads


def test_cosim_refuses_more_heads_than_the_model_holds(tmp_path) -> None:  # noqa: ANN001
    """A two-head step on a model built for one head is refused before the simulator starts,
    with the reason and the fix; on a model of two heads its bundle carries both heads' outputs
    (head-major) and every beat's head, as the golden model computes them."""
    import dataclasses

    from starc.golden import functional
    from starc_sim.cosim import MULTIHEAD_MODEL, dense_heads_scenario, write_bundle

    two = MULTIHEAD_MODEL
    scn = dense_heads_scenario(two, length=64, heads=2)
    one = dataclasses.replace(scn, spec=dataclasses.replace(two, heads=1))
    with pytest.raises(ValueError, match="the step has 2 heads; the model holds 1"):
        write_bundle(one, tmp_path / "one.npz")
    assert not (tmp_path / "one.npz").exists()
    meta = write_bundle(scn, tmp_path / "two.npz")
    gold = functional.execute(scn.prog, scn.wdata, scn.image, two.cfg, two.head_dim)
    assert meta["outputs"] == gold.outputs_bits.ravel().tolist()
    b = np.load(tmp_path / "two.npz")
    assert sorted(set(b["score_head"].tolist())) == [0, 1] == sorted(set(b["prob_head"].tolist()))


@pytest.mark.parametrize("acc", ["fp32", "fp16"])
def test_instantiated_units_are_the_ones_declared(acc: str) -> None:
    """With ``pu_instances`` the glue's FP units are instances too (``fp.SharedUnits``): every
    module the elaborated channel instantiates is one ``extra_verilog`` defines, for both
    accumulation formats (FP32: adders and rounding to FP16; FP16: adders and widening)."""
    from amaranth.hdl import Fragment, Instance
    from starc_hw.attention import PU_MODULE, UNIT_PREFIX, AttentionChannel
    from starc_sim.programs import TINY

    cfg = config.load(overrides={**TINY, "pu.acc_format": acc})
    ch = AttentionChannel(cfg=cfg, head_dim=32, pu_instances=True)
    types: set[str] = set()

    def walk(frag: object) -> None:
        for sub, _, _ in frag.subfragments:
            if isinstance(sub, Instance) or type(sub).__name__ == "Instance":
                types.add(sub.type)
            else:
                walk(sub)
    walk(Fragment.get(ch, None))
    width = 32 if acc == "fp32" else 16
    units = {f"{UNIT_PREFIX}_add{width}", f"{UNIT_PREFIX}_{'narrow' if width == 32 else 'widen'}"}
    assert types == units | {PU_MODULE}
    declared = ch._glue_units(declared=True)
    assert set(declared.modules) == units

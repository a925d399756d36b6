"""amaranth.sim helpers: one compiled simulator per design, reused by several testbenches.

Building the simulator of a wide datapath costs seconds; running a few hundred cycles costs
milliseconds. :class:`Bench` builds once and runs each job as a fresh simulation (``reset``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from amaranth.hdl import Value
from amaranth.sim import Simulator, SimulatorContext

Job = Callable[[SimulatorContext], Awaitable[None]]


class Bench:
    def __init__(self, dut: Any, *, clock: bool = True) -> None:
        self.dut, self._clock = dut, clock
        self._job: Job | None = None
        self._sim: Simulator | None = None

    def _build(self) -> Simulator:
        sim = Simulator(self.dut)
        if self._clock:
            sim.add_clock(1e-6)

        async def testbench(ctx: SimulatorContext) -> None:
            assert self._job is not None
            await self._job(ctx)

        sim.add_testbench(testbench)
        return sim

    def run(self, job: Job) -> None:
        """Run ``job`` from the initial state; a failed run rebuilds the simulator next time."""
        self._job = job
        if self._sim is None:
            self._sim = self._build()
        else:
            self._sim.reset()
        try:
            self._sim.run()
        except BaseException:
            self._sim = None
            raise


async def wait_until(ctx: SimulatorContext, signal: Value, *, limit: int, what: str) -> int:
    """Tick until ``signal`` is high (sampled at the edge); return the ticks taken. Fails after
    ``limit`` ticks so a deadlock shows as an assertion, not a hang."""
    for n in range(1, limit + 1):
        _, _, value = await ctx.tick().sample(signal)
        if value:
            return n
    raise AssertionError(f"timeout after {limit} cycles waiting for {what}")


def comb_vectors(dut: Any, inputs: Sequence[str], output: str,
                 vectors: Sequence[Sequence[int]]) -> list[int]:
    """Apply vectors to a combinational component; collect the output for each."""
    out: list[int] = []

    async def job(ctx: SimulatorContext) -> None:
        for v in vectors:
            for name, x in zip(inputs, v, strict=True):
                ctx.set(getattr(dut, name), int(x))
            out.append(ctx.get(getattr(dut, output)))

    Bench(dut, clock=False).run(job)
    return out

"""The cost-sampling rule: which plans of a cell the golden model times, and the interval a mean
over a sample carries. One rule for ``starc eval``, ``starc sweep`` and ``starc demo``.

A *cell* is one (policy, budget) of one cache: its plans are every (decode step, sparse layer,
query head). Quality and row counts are computed for every plan; cycles and energy need a
program each, so:

- **all plans** when a cell has at most :data:`ALL_UP_TO` of them (the mean is then exact);
- otherwise a **seeded simple random sample** of :data:`SAMPLE_N` plans without replacement, the
  same plans for every policy and budget of the cache (paired comparisons), and every mean comes
  with its **95 % interval**: Student's t with the finite-population correction,
  ``t(0.975, n - 1) s / sqrt(n) sqrt((N - n) / (N - 1))``.

``cost_programs`` overrides the rule: ``-1`` times every plan, ``k > 0`` a sample of ``k``.
Tables print n, N and the interval; JSON rows carry ``cost_n``, ``cost_N`` and ``<metric>_ci95``
(the half-width; 0 when every plan was timed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ALL_UP_TO", "SAMPLE_N", "CostSample", "cost_sample", "mean_ci95"]

ALL_UP_TO = 128   #: a cell with at most this many plans is timed whole
SAMPLE_N = 128    #: otherwise this many plans are timed (about 1-8 ms each on the golden model)


@dataclass(frozen=True)
class CostSample:
    N: int                   # plans per cell
    indices: np.ndarray      # sorted plan indices that are timed

    @property
    def n(self) -> int:
        return int(self.indices.size)

    @property
    def exact(self) -> bool:
        return self.n == self.N

    def describe(self) -> str:
        if self.exact:
            return f"all {self.N} plans per cell timed"
        return (f"{self.n} of {self.N} plans per cell timed (seeded random sample), "
                f"+- = 95 % interval")


def cost_sample(N: int, cost_programs: int | None = None, seed: int = 0) -> CostSample:
    """The plans to time among ``N`` (see the module docstring)."""
    if N < 0:
        raise ValueError(f"plan count must be non-negative, not {N}")
    if cost_programs is not None and (isinstance(cost_programs, bool) or
                                      not isinstance(cost_programs, (int, np.integer)) or
                                      cost_programs < -1):
        raise ValueError(f"cost_programs must be -1 (all), 0, a positive count or None (the "
                         f"rule), not {cost_programs!r}")
    if cost_programs is None:
        n = N if N <= ALL_UP_TO else SAMPLE_N
    else:
        n = N if cost_programs == -1 else min(int(cost_programs), N)
    if n >= N:
        return CostSample(N, np.arange(N))
    rng = np.random.default_rng([int(seed), 0x5A3B1E])
    return CostSample(N, np.sort(rng.choice(N, size=n, replace=False)))


def mean_ci95(xs: np.ndarray | list[float], N: int) -> tuple[float, float]:
    """Mean of a simple random sample ``xs`` of a population of ``N`` and the half-width of its
    95 % interval (Student's t, finite-population correction); 0 when ``xs`` is the population."""
    x = np.asarray(xs, np.float64)
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    mean = float(x.mean())
    if n >= N or n < 2:
        return mean, 0.0 if n >= N else float("nan")
    # Student's t quantile: scipy.special.stdtrit(df, p) is what scipy.stats.t.ppf(p, df) calls
    # (equal for every df 1..20000 at p = 0.975, scipy 1.17.1), without importing scipy.stats
    # (1.1 s more per process; every sampled cost figure of a command goes through here)
    from scipy.special import stdtrit

    half = float(stdtrit(n - 1, 0.975) * x.std(ddof=1) / math.sqrt(n)
                 * math.sqrt((N - n) / (N - 1)))
    return mean, half

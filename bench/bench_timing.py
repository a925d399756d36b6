"""Golden timing model speed: commands per second on a long dense program (L = 32K, d = 128).

Baseline measured side by side in the same run: the independent constraint checker
(starc.golden.check), which verifies the same schedule pair by pair with NumPy.
Target (issue 2): >= 1 million commands per second on a 2-core machine.
"""

import time

from starc import config
from starc.golden import check, programs, timing


def best_of(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    cfg = config.load()
    prog = programs.dense_program(cfg, 32768, 128)
    n = len(prog)
    t_sched = best_of(lambda: timing.schedule(prog, cfg))
    s = timing.schedule(prog, cfg)
    t_check = best_of(lambda: check.violations(s.program, s.issue, cfg), repeat=2)
    rate = n / t_sched
    print(f"dense program L=32768 d=128: {n} commands, {s.total_cycles} cycles "
          f"({s.total_ns / 1e3:.1f} us), {s.refreshes} refreshes")
    print(f"timing.schedule : {t_sched * 1e3:8.2f} ms  {rate / 1e6:6.2f} M commands/s "
          f"(target >= 1.00)")
    print(f"check.violations: {t_check * 1e3:8.2f} ms  {n / t_check / 1e6:6.2f} M commands/s "
          f"(baseline)")
    print(f"ratio schedule/check speed: {t_check / t_sched:.1f}x")
    heads = 30 * 3  # a SmolLM2 decode step: 30 layers x 3 KV heads, one program each
    print(f"one SmolLM2-sized decode step at 32K (90 channel programs): "
          f"{heads * t_sched:.2f} s")


if __name__ == "__main__":
    main()

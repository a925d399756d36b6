"""The system model's figures, in one place: latency and energy per generated token along the
decode trajectory, and the per-token breakdowns. Colours and markers per policy are the
project's (:data:`starc.sweep.quality.POLICY_STYLE`)."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_breakdown", "plot_trajectory"]

_DASH = {"attacc": "-", "balanced": ":", "replicate": "--"}


def _style(policy: str) -> tuple[str, str]:
    from starc.sweep.quality import POLICY_STYLE
    return POLICY_STYLE.get(policy, ("tab:red", "o"))


def plot_trajectory(steps: list[dict[str, Any]], *, title: str) -> Any:
    """Latency (us) and energy (mJ) of the attention per generated token against the context,
    one line per (policy, mapping); the GPU-only dense attention beside them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for res in steps for r in res["rows"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4))
    keys = sorted({(r["mapping"], r["policy"]) for r in rows})
    for mapping, policy in keys:
        rs = sorted((r for r in rows if r["policy"] == policy and r["mapping"] == mapping),
                    key=lambda r: r["context"])
        x = [r["context"] for r in rs]
        col, mk = _style(policy)
        lab = f"{policy} ({mapping})" if len({k[0] for k in keys}) > 1 else policy
        ls = _DASH.get(mapping, "-.")
        a1.plot(x, [r["latency_us"] for r in rs], ls, color=col, marker=mk, ms=4, label=lab)
        a2.plot(x, [r["energy_uJ"] / 1e3 for r in rs], ls, color=col, marker=mk, ms=4,
                label=lab)
    gx = sorted({(r["context"], r["gpu_dense_us"], r["gpu_dense_energy_uJ"]) for r in rows})
    a1.plot([g[0] for g in gx], [g[1] for g in gx], color="0.5", lw=2, alpha=0.6,
            label="GPU-only dense (HBM bound)")
    a2.plot([g[0] for g in gx], [g[2] / 1e3 for g in gx], color="0.5", lw=2, alpha=0.6,
            label="GPU-only dense (DRAM + ALU)")
    for ax, lab in ((a1, "attention latency per token (us)"),
                    (a2, "attention energy per token (mJ)")):
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(lab)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    a2.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


_TIME = ("selection", "mac_issue", "row_switch", "refresh", "data_movement", "softmax", "drain")
_ENERGY = ("selection", "activation", "column_access", "mac", "data_movement", "softmax",
           "host_io")


def plot_breakdown(summary: list[dict[str, Any]], *, title: str) -> Any:
    """Stacked bars per (policy, mapping): the time breakdown of the per-token latency (us) and
    the energy breakdown (mJ), trajectory means."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = sorted(summary, key=lambda r: (r["mapping"], r["policy"]))
    labels = [f"{r['policy']}\n{r['mapping']}" for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.6))
    x = np.arange(len(rows))
    cmap = plt.get_cmap("tab10")
    for ax, cats, key, scale, unit in ((a1, _TIME, "time_breakdown", None, "us"),
                                      (a2, _ENERGY, "energy_breakdown_uJ", 1e-3, "mJ")):
        bottom = np.zeros(len(rows))
        for i, c in enumerate(cats):
            if scale is None:
                vals = np.array([r[key].get(c, 0) / r["latency_cycles"] * r["latency_us"]
                                 if r["latency_cycles"] else 0.0 for r in rows])
            else:
                vals = np.array([r[key].get(c, 0) * scale for r in rows])
            ax.bar(x, vals, bottom=bottom, color=cmap(i), label=c.replace("_", " "))
            bottom += vals
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel(f"per generated token ({unit})")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    a1.set_title("attention latency (slowest channel of each layer)", fontsize=9)
    a2.set_title("attention energy (every channel)", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig

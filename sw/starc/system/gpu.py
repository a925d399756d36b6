"""The GPU-only baseline: the same token on GPUs bound by their HBM bandwidth.

As AttAcc reports its speed-ups against a GPU system (AttAcc, ASPLOS 2024, and its simulator
``src/devices.py``), the per-token time of a kernel on the GPUs is the larger of its memory time
(bytes over the GPUs' aggregate HBM bandwidth at a stated efficiency) and its compute time
(FLOPs over the peak at a stated efficiency), with the work split evenly over the GPUs (tensor
parallelism). Energy is DRAM access energy per byte plus ALU energy per multiply-accumulate, with
AttAcc's constants; the on-chip cache and register energy AttAcc adds from its tiling model is
left out, so the GPU's energy is a lower bound.

Three figures per token (:func:`attention`, :func:`fc_layers`):

- dense attention: every K and V of every layer, batch entry and KV head read once (a
  GQA-aware kernel reads a KV head once for its whole query group);
- sparse attention bound: only the K and V of the tokens a policy attends (the union over a GQA
  group), nothing for its selection: what no real sparse GPU kernel beats;
- the fully connected layers (QKV, output projection, FFN, LM head): every weight read once per
  step for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BW_EFFICIENCY", "COMPUTE_EFFICIENCY", "GPUS", "GPU", "DRAM_PJ_PER_BYTE",
           "MAC_PJ", "attention", "fc_layers", "get", "kernel"]

#: AttAcc src/config.py SCALING_FACTOR['MAX_OFF_MEM_BW_UTIL']: the share of the peak HBM
#: bandwidth a GPU kernel reaches
BW_EFFICIENCY = 0.85
#: AttAcc src/config.py SCALING_FACTOR['MAX_COMPUTE_UTIL']
COMPUTE_EFFICIENCY = 0.8
#: AttAcc src/config.py ENERGY_TABLE['GPU']['mem'] (pJ per byte): cell ACT/PRE 0.11 + cell RD/WR
#: 0.44 + column decoder to bank-group mux 1.01 + bank-group mux to GIO 1.23 + TSV 0.5 +
#: interposer I/O 0.3 pJ/bit (FGDRAM, MICRO 2017), x 8 bits
DRAM_PJ_PER_BYTE = (0.11 + 0.44 + 1.01 + 1.23 + 0.5 + 0.3) * 8
#: AttAcc src/config.py ENERGY_TABLE['GPU']['alu'], charged per FLOP / 2, i.e. per FP16 MAC
MAC_PJ = 0.32


@dataclass(frozen=True)
class GPU:
    name: str
    hbm_bytes_per_s: float
    fp16_flops: float           # dense FP16 tensor peak
    memory_bytes: int
    source: str


#: GPUs by name; AttAcc's E4 system (and the STARC artifact's) is eight H100 SXM.
GPUS: dict[str, GPU] = {
    # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: 80 GB HBM3 at 3.35 TB/s, 989.4 dense
    # FP16 TFLOPS; AttAcc src/config.py make_xpu_config (H100, "Ref: DGX-H100 whitepaper"):
    # 3352 GB/s, 989.4 TFLOPS, 80 GiB.
    "h100-sxm": GPU("H100 SXM 80GB", 3352e9, 989.4e12, 80 * 2**30,
                    "NVIDIA H100 datasheet; AttAcc src/config.py make_xpu_config"),
    # NVIDIA A100 datasheet, A100 80GB SXM: HBM2e at 2039 GB/s, 312 dense FP16 TFLOPS.
    "a100-sxm-80gb": GPU("A100 SXM 80GB", 2039e9, 312e12, 80 * 2**30,
                         "NVIDIA A100 datasheet (A100 80GB SXM)"),
}


def get(name: str) -> GPU:
    try:
        return GPUS[name]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}; choose from {', '.join(GPUS)}") from None


def kernel(gpu: GPU, gpus: int, nbytes: float, macs: float) -> dict[str, float]:
    """Time (s) and energy (pJ) of a kernel reading ``nbytes`` and doing ``macs`` FP16
    multiply-accumulates, split evenly over ``gpus`` GPUs."""
    t_mem = nbytes / (gpus * gpu.hbm_bytes_per_s * BW_EFFICIENCY)
    t_cmp = 2 * macs / (gpus * gpu.fp16_flops * COMPUTE_EFFICIENCY)
    return {"seconds": max(t_mem, t_cmp), "memory_seconds": t_mem, "compute_seconds": t_cmp,
            "bytes": float(nbytes), "energy_pj": nbytes * DRAM_PJ_PER_BYTE + macs * MAC_PJ,
            "bound": "memory" if t_mem >= t_cmp else "compute"}


def attention(gpu: GPU, gpus: int, *, n_layers: int, batch: int, n_kv_heads: int,
              n_q_heads: int, head_dim: int, context: int,
              tokens_read: float | None = None) -> dict[str, float]:
    """One generated token's attention on the GPUs: K and V of ``context`` tokens per (layer,
    batch entry, KV head), or ``tokens_read`` tokens in total when given (a sparse bound); the
    query and output vectors; 2 x d MACs per query head and attended token (scores and values;
    for a sparse bound, per attended token of its group)."""
    kv_tokens = (n_layers * batch * n_kv_heads * context) if tokens_read is None \
        else float(tokens_read)
    nbytes = kv_tokens * 2 * head_dim * 2 + n_layers * batch * n_q_heads * head_dim * 2 * 2
    macs = kv_tokens * (n_q_heads // n_kv_heads) * 2 * head_dim
    return kernel(gpu, gpus, nbytes, macs)


def fc_layers(gpu: GPU, gpus: int, *, params: int, batch: int) -> dict[str, float]:
    """One generated token's fully connected layers for the whole batch: every FP16 weight read
    once, one MAC per weight and batch entry."""
    return kernel(gpu, gpus, params * 2, params * batch)

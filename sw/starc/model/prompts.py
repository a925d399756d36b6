"""Passkey-retrieval prompts written by this project (no third-party text).

A prompt hides a 5-digit number ("the pass key") at a chosen depth inside filler sentences, then
asks for it and already starts the answer ("What is the pass key? The pass key is"), so a greedy
continuation that begins with the number counts as retrieval. By default the prompt is plain text:
with the SmolLM2-Instruct chat template (``chat=True``) the model more often answers with a made-up
description of a physical key (" a small wooden door with a brass handle") at 2K tokens, while the
plain prompt retrieved the number in the same cases (see docs/real-model.md).
The filler is drawn (seeded) from sentences written for this project; it contains no digits, so
the pass key is the only number in the prompt. The number of filler sentences is adjusted until
the whole prompt, template included, is at most the requested length and at most ``tolerance``
tokens shorter.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .tokenizer import SmolTokenizer, chat_prompt

__all__ = ["FILLER", "STANDARD_LENGTHS", "PasskeyPrompt", "find_passkey", "judge_answer",
           "passkey_prompt"]

STANDARD_LENGTHS = (1024, 2048, 4096, 8192)

#: Filler sentences (written for starc-pim). No digits, no mention of keys or numbers.
FILLER: tuple[str, ...] = (
    "The river moved slowly past the old mill and the willows leaned over the water.",
    "A gray cat slept on the warm stones of the garden wall all afternoon.",
    "In the market the farmers set out baskets of apples, pears and late plums.",
    "The wind turned cold in the evening, so the fishermen pulled their boats onto the sand.",
    "Children ran along the path to school, their bags bouncing on their backs.",
    "The library smelled of paper and dust, and the clock above the door ticked quietly.",
    "Clouds gathered over the hills, but the rain never came.",
    "A baker on the corner sold warm bread and small cakes with honey.",
    "The train to the coast left on time and rolled past fields of yellow flowers.",
    "Somebody had painted the little bridge green, and it looked cheerful in the sun.",
    "The old teacher liked to walk by the lake before breakfast.",
    "Snow covered the roofs of the village and muffled every sound.",
    "At the harbor the gulls argued over scraps near the fish stalls.",
    "The gardener planted tulips along the fence and watered them every morning.",
    "A long table in the kitchen held bowls of soup and a loaf of dark bread.",
    "The road climbed through the forest, where the pines stood tall and still.",
    "In summer the square filled with music, and people danced until late.",
    "The lighthouse keeper polished the great lamp and wrote in his journal.",
    "Bees moved from flower to flower in the meadow behind the church.",
    "The shop sold buttons, thread and ribbons in every color one could imagine.",
    "Fog lay over the valley until the sun rose high enough to burn it away.",
    "A small dog waited patiently outside the bakery for its owner.",
    "The students read quietly while the rain tapped against the windows.",
    "Along the canal the houses were narrow and tall, with flowers on every sill.",
    "The musician tuned his violin and began a slow, gentle tune.",
    "Leaves turned red and gold, and the air smelled of wood smoke.",
    "The farmer checked the fences and counted the sheep in the field.",
    "Two friends shared a pot of tea and talked about their travels.",
    "The museum kept old maps, brass instruments and paintings of ships.",
    "Stars filled the sky over the desert, bright and very far away.",
    "The potter shaped a bowl on the wheel, her hands wet with clay.",
    "A quiet street led down to the sea, where the waves rolled in and out.",
    "The market closed at noon, and the square became calm again.",
    "Mountain goats climbed the rocks with surprising ease.",
    "The old bicycle leaned against the barn, its basket full of wild flowers.",
    "Every evening the neighbors sat on their steps and watched the sunset.",
    "The carpenter measured the board twice before he cut it.",
    "Rain filled the puddles, and the ducks were pleased.",
    "It was quiet.",
    "The wind rose.",
    "Birds sang.",
)

_INTRO = ("There is a pass key hidden inside a lot of unrelated text. Find it and remember it. "
          "I will ask you for the pass key at the end.")
_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
_QUESTION = "What is the pass key?"
ANSWER_PREFIX = "The pass key is"


@dataclass(frozen=True)
class PasskeyPrompt:
    """One generated prompt and the facts needed to score an answer."""

    text: str
    token_ids: list[int]
    passkey: str
    depth: float
    needle_token_start: int
    target_tokens: int
    seed: int
    chat: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def needle_depth(self) -> float:
        """Where the needle actually starts, as a fraction of the prompt's tokens."""
        return self.needle_token_start / max(1, self.n_tokens)

    def retrieved(self, answer: str) -> bool:
        """True if the first number in ``answer`` is the pass key."""
        return find_passkey(answer) == self.passkey

    def judge(self, answer: str) -> bool | None:
        """Like :meth:`retrieved`, but ``None`` when ``answer`` is too short to tell (it is
        empty, or ends inside a number that is still a prefix of the key)."""
        return judge_answer(answer, self.passkey)


def judge_answer(answer: str, passkey: str) -> bool | None:
    """Whether ``answer`` gives ``passkey`` first; ``None`` if it is cut off too early to tell."""
    m = re.search(r"\d+", answer)
    if m is None:
        return None if not answer.strip() else False
    digits = m.group(0)
    if m.end() == len(answer) and passkey.startswith(digits) and len(digits) < len(passkey):
        return None
    return digits == passkey


def find_passkey(answer: str) -> str | None:
    """The first run of digits in ``answer`` (a generated continuation), if any."""
    m = re.search(r"\d+", answer)
    return m.group(0) if m else None


def _assemble(filler: list[str], needle: str, depth: float, counts: list[int]) -> tuple[str, int]:
    total = sum(counts)
    acc = 0
    cut = len(filler)
    for i, c in enumerate(counts):
        if acc >= depth * total:
            cut = i
            break
        acc += c
    body = " ".join([*filler[:cut], needle, *filler[cut:]])
    return body, cut


def passkey_prompt(tokenizer: SmolTokenizer, n_tokens: int, *, depth: float = 0.5,
                   seed: int = 0, passkey: str | int | None = None, tolerance: int = 4,
                   chat: bool = False) -> PasskeyPrompt:
    """A passkey prompt of ``n_tokens - tolerance .. n_tokens`` tokens with the key at ``depth``.

    The prompt never exceeds ``n_tokens``, so ``n_tokens`` plus the decode steps can be checked
    against the model's context length up front.

    ``depth`` is the fraction of filler placed before the needle (0 = first, 1 = last). The
    pass key is drawn from ``seed`` unless given. ``chat`` wraps the question in the
    SmolLM2-Instruct chat template (the answer prefix then opens the assistant turn).
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be between 0 and 1, not {depth}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, not {tolerance}")
    rng = random.Random(seed)
    if passkey is None:
        key = str(rng.randint(10000, 99999))
    else:
        key = str(passkey)
        if not key.isdigit():
            raise ValueError(f"the pass key must be a string of digits, not {passkey!r}")
    needle = _NEEDLE.format(key=key)

    def render(body: str) -> str:
        if chat:
            return chat_prompt(f"{_INTRO}\n\n{body}\n\n{_QUESTION}",
                               assistant_prefix=ANSWER_PREFIX)
        return f"{_INTRO}\n\n{body}\n\n{_QUESTION} {ANSWER_PREFIX}"

    fixed = tokenizer.count(render(needle))
    if n_tokens < fixed + 16:
        raise ValueError(f"n_tokens must be at least {fixed + 16} for a passkey prompt, "
                         f"not {n_tokens}")
    sizes = {s: len(tokenizer.encode(" " + s)) for s in FILLER}
    long_pool = [s for s in FILLER if sizes[s] >= 8]
    short_pool = sorted((s for s in FILLER if sizes[s] < 8), key=sizes.__getitem__)

    filler: list[str] = []
    budget = n_tokens - fixed
    while sum(sizes[s] for s in filler) + 8 <= budget:
        filler.append(rng.choice(long_pool))
    for _ in range(64):
        counts = [sizes[s] for s in filler]
        body, cut = _assemble(filler, needle, depth, counts)
        ids = tokenizer.encode(render(body))
        diff = n_tokens - len(ids)
        if 0 <= diff <= tolerance:
            break
        if diff > 0:
            fits = [s for s in FILLER if sizes[s] <= diff]
            filler.append(max(fits, key=sizes.__getitem__) if fits else short_pool[0])
        else:
            over = -diff
            # Drop the sentence that brings the length closest to the target.
            best = min(range(len(filler)), key=lambda i: abs(sizes[filler[i]] - over))
            filler.pop(best)
    else:
        raise RuntimeError(f"could not reach {n_tokens - tolerance}..{n_tokens} tokens "
                           f"(got {len(ids)})")

    prefix = render(body).split(needle, 1)[0]
    needle_start = len(tokenizer.encode(prefix))
    return PasskeyPrompt(text=render(body), token_ids=ids, passkey=key, depth=depth,
                         needle_token_start=needle_start, target_tokens=n_tokens, seed=seed,
                         chat=chat)

"""RULER-style long-context tasks, generated offline and deterministically by this project.

Five synthetic tasks after RULER (Hsieh et al., 2024, "RULER: What's the real context size of
your long-context language models?"), written for starc-pim from the task definitions (no RULER
code or data is used; docs/real-model-eval.md lists every difference):

==================  ===========================================================================
task                what the prompt holds and what the answer must contain
==================  ===========================================================================
passkey             the project's pass-key prompt (:func:`starc.model.prompts.passkey_prompt`),
                    depth ``(0.1, 0.25, 0.5, 0.75, 0.9)[index % 5]``; answer: the 5-digit key
niah_single         one needle "The special magic number for KEY is VALUE." in filler prose;
                    answer: VALUE (a ``digits``-digit number)
niah_multikey       ``keys`` needles with different keys (one asked, the others distractors)
niah_multivalue     ``values`` needles with the same key and different values; answer: all
vt                  variable tracking: one chain ``VAR X1 = N``, ``VAR X2 = VAR X1``, ...
                    (``hops`` hops) in repeated noise lines; answer: every variable equal to N
cwe                 common-word extraction: a numbered word list in which ``n_common`` words
                    appear ``freq_common`` times and the others ``freq_rare`` times, after one
                    worked example; answer: the ``n_common`` most frequent words
==================  ===========================================================================

Scoring is RULER's ``string_match_all``: the fraction of reference strings found (case-insensitive
substring) in the generated answer, so a sample scores 0, 1 or a fraction in between. Because that
score can only grow as the answer gets longer, decoding may stop as soon as every reference is
found without changing any score (:func:`score`).

A sample is a pure function of ``(task, context, index, seed)``: every random choice is drawn from
``random.Random`` seeded with the string ``"{task}/{context}/{index}/{seed}"`` (string seeds hash
with SHA-512, independent of ``PYTHONHASHSEED``), and the filler count is searched so that the
prompt plus the task's generation budget fits in ``context`` tokens (RULER's ``max_seq_length``
includes the generated tokens too). Key words, the haystack prose (the passkey prompts'
sentences), the noise line and the word list are all written for this project.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .prompts import FILLER
from .tokenizer import SmolTokenizer

__all__ = ["TASKS", "TaskSample", "TaskSpec", "generate", "score", "task_names"]

#: adjectives and nouns of needle keys ("quiet-harbor"); written for starc-pim
_ADJECTIVES = (
    "amber", "ancient", "bitter", "bold", "brave", "bright", "broad", "calm", "clever", "crimson",
    "curious", "dusty", "eager", "early", "faint", "fierce", "fragile", "gentle", "golden",
    "grand", "green", "hidden", "hollow", "humble", "icy", "idle", "jolly", "keen", "lively",
    "lonely", "loud", "lucky", "mellow", "misty", "modest", "narrow", "noble", "odd", "pale",
    "patient", "polite", "proud", "quick", "quiet", "rapid", "rare", "restless", "rough", "rusty",
    "sacred", "scarlet", "shy", "silent", "silver", "sleepy", "smooth", "solid", "sour", "steady",
    "stern", "sturdy", "swift", "tall", "tender", "tidy", "tiny", "vast", "velvet", "wary",
    "wild", "wise", "young",
)
_NOUNS = (
    "anchor", "apple", "arrow", "badge", "barrel", "basket", "beacon", "bell", "blanket", "boat",
    "bottle", "bridge", "bucket", "cabin", "candle", "canyon", "castle", "cellar", "chair",
    "chimney", "cloud", "compass", "copper", "cottage", "crown", "desert", "drum", "eagle",
    "engine", "falcon", "feather", "fence", "forest", "fountain", "garden", "glacier", "hammer",
    "harbor", "helmet", "island", "jacket", "kettle", "ladder", "lantern", "letter", "meadow",
    "mirror", "needle", "orchard", "otter", "oven", "palace", "pebble", "pencil", "piano",
    "pillow", "planet", "pocket", "quarry", "rabbit", "ribbon", "river", "saddle", "shovel",
    "signal", "spoon", "statue", "tunnel", "valley", "violin", "wagon", "window",
)

#: words of the common-word lists (concrete, one token-ish each); written for starc-pim
_CWE_WORDS = (
    "acorn", "apron", "attic", "bakery", "banjo", "beetle", "biscuit", "blossom", "bonnet",
    "bramble", "breeze", "brook", "buckle", "butter", "button", "cactus", "camel", "canoe",
    "carpet", "carrot", "cherry", "chestnut", "cider", "clover", "cobble", "coffee", "comet",
    "cookie", "coral", "cotton", "cradle", "crayon", "cricket", "cushion", "daisy", "dolphin",
    "donkey", "dragon", "elbow", "ember", "fabric", "fiddle", "flute", "forest", "fossil",
    "garlic", "ginger", "goblet", "gravel", "guitar", "hazel", "hedge", "heron", "honey",
    "iris", "ivory", "jasmine", "jelly", "juniper", "kayak", "kitten", "lemon", "lily", "lizard",
    "locket", "magnet", "mango", "maple", "marble", "meadow", "melon", "mitten", "monkey",
    "muffin", "mustard", "napkin", "nectar", "noodle", "nutmeg", "oatmeal", "olive", "onion",
    "orange", "oyster", "paddle", "panda", "parrot", "peach", "peanut", "pepper", "pickle",
    "pigeon", "pirate", "plum", "pony", "poppy", "potato", "puddle", "pumpkin", "puppet",
    "quill", "radish", "raisin", "raven", "rocket", "saffron", "salmon", "sandal", "scarf",
    "seashell", "sparrow", "spinach", "sponge", "squirrel", "stable", "sugar", "sunflower",
    "teapot", "thimble", "thistle", "tiger", "timber", "toffee", "tomato", "trumpet", "tulip",
    "turnip", "turtle", "umbrella", "vanilla", "velvet", "walnut", "whistle", "willow", "wizard",
    "yogurt", "zebra",
)

#: the pool of the common-word lists: the words above and the key nouns, once each
_CWE_POOL = tuple(dict.fromkeys(_CWE_WORDS + _NOUNS))

#: the noise line of variable tracking (written for starc-pim)
_NOISE = "The hills are quiet. The road is long. The lamp is lit. On we walk. Home again."


@dataclass(frozen=True)
class TaskSpec:
    """One task: its generator parameters and how many tokens its answer may take."""

    name: str
    kind: str                      # niah | vt | cwe
    gen_tokens: int                # decode budget (counted inside the context, as RULER does)
    params: dict[str, int] = field(default_factory=dict)
    description: str = ""


#: the five tasks; parameters chosen so that dense SmolLM2-135M is well above chance at 1K and 2K
#: (docs/real-model-eval.md, "Task parameters")
TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("passkey", "passkey", 7, {}, "the pass-key prompt of starc kv extract"),
    TaskSpec("niah_single", "niah", 12, {"keys": 1, "values": 1, "digits": 7},
             "one needle (key -> 7-digit number) in filler prose"),
    TaskSpec("niah_multikey", "niah", 12, {"keys": 2, "values": 1, "digits": 7},
             "four needles with different keys; one is asked"),
    TaskSpec("niah_multivalue", "niah", 40, {"keys": 1, "values": 4, "digits": 7},
             "four needles with the same key; all four numbers are asked"),
    TaskSpec("vt", "vt", 24, {"chains": 1, "hops": 2},
             "variable tracking: one chain of 2 hops (3 variables)"),
    TaskSpec("cwe", "cwe", 24, {"n_common": 2, "freq_common": 30, "freq_rare": 2},
             "common-word extraction: 5 words 12 times each, the others twice"),
)}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


@dataclass(frozen=True)
class TaskSample:
    """One generated prompt with its references."""

    task: str
    context: int                   # prompt tokens + gen_tokens <= context
    index: int
    seed: int
    text: str
    token_ids: list[int]
    references: list[str]
    gen_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def score(answer: str, references: Sequence[str]) -> float:
    """RULER ``string_match_all``: fraction of references found in ``answer`` (case-insensitive
    substring). Monotone in the answer's length: appending text never lowers it."""
    if not references:
        raise ValueError("a sample needs at least one reference")
    a = answer.lower()
    return sum(1.0 for r in references if r.lower() in a) / len(references)


# ---------------------------------------------------------------------------------------------
# generators: each returns (text of the prompt for a given filler size, references, meta)

_Render = Callable[[int], str]


def _number(rng: random.Random, digits: int) -> str:
    return str(rng.randint(10 ** (digits - 1), 10 ** digits - 1))


def _keys(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        k = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        if k not in out:
            out.append(k)
    return out


def _niah(rng: random.Random, p: dict[str, int]) -> tuple[_Render, list[str], dict[str, Any]]:
    keys = _keys(rng, p["keys"])
    values: list[list[str]] = []
    needles: list[str] = []
    for k in keys:
        vs: list[str] = []
        while len(vs) < p["values"]:
            v = _number(rng, p["digits"])
            if v not in vs:
                vs.append(v)
        values.append(vs)
        needles += [f"The special magic number for {k} is {v}." for v in vs]
    rng.shuffle(needles)
    asked = rng.randrange(len(keys))
    refs = values[asked]
    depths = sorted(rng.random() for _ in needles)
    pool = [rng.choice(FILLER[:-3]) for _ in range(4096)]   # long sentences only
    many = p["values"] > 1
    head = ("Special magic numbers are hidden in the text below. Remember them: you will be "
            "asked about them at the end.")
    if many:
        question = (f"What are all the special magic numbers for {keys[asked]} in the text "
                    f"above? The special magic numbers for {keys[asked]} are")
    else:
        question = (f"What is the special magic number for {keys[asked]} in the text above? "
                    f"The special magic number for {keys[asked]} is")

    def render(n: int) -> str:
        body = list(pool[:n])
        for i, (dep, nd) in enumerate(zip(depths, needles, strict=True)):
            body.insert(min(len(body), round(dep * n) + i), nd)
        return f"{head}\n{' '.join(body)}\n{question}"

    return render, refs, {"keys": keys, "asked": keys[asked], "depths": depths}


def _var(rng: random.Random, taken: set[str]) -> str:
    while True:
        v = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        if v not in taken:
            taken.add(v)
            return v


def _chain(rng: random.Random, taken: set[str], hops: int) -> tuple[list[str], str, list[str]]:
    names = [_var(rng, taken) for _ in range(hops + 1)]
    value = str(rng.randint(10000, 99999))
    lines = [f"VAR {names[0]} = {value}"]
    lines += [f"VAR {names[j + 1]} = VAR {names[j]}" for j in range(hops)]
    return names, value, lines


def _vt_text(rng: random.Random, chains: list[tuple[list[str], str, list[str]]], n: int,
             slots: list[float]) -> str:
    """``n`` noise lines with every chain line inserted, each chain in its own order."""
    lines = [_NOISE] * n
    order = [(c, j) for c, ch in enumerate(chains) for j in range(len(ch[2]))]
    for i, (s, (c, j)) in enumerate(zip(slots, order, strict=True)):
        lines.insert(min(len(lines), round(s * n) + i), chains[c][2][j])
    return "\n".join(lines)


def _vt(rng: random.Random, p: dict[str, int]) -> tuple[_Render, list[str], dict[str, Any]]:
    taken: set[str] = set()
    head = ("Variables are assigned values in the text below, some directly and some from "
            "other variables. Follow every assignment.")

    def question(value: str, k: int) -> str:
        return (f"Question: which variables have the value {value} in the text above? "
                f"Answer: following the assignments, {k} variables have the value {value}. "
                f"They are:")

    # one worked example first (RULER adds one too): a short text and its answer
    ex = [_chain(rng, taken, p["hops"])]
    ex_slots = sorted(rng.random() for _ in ex[0][2])
    example = (f"{head}\n\n{_vt_text(rng, ex, 6, ex_slots)}\n"
               f"{question(ex[0][1], len(ex[0][0]))} {' '.join(ex[0][0])}\n\n")
    chains = [_chain(rng, taken, p["hops"]) for _ in range(p["chains"])]
    names, value, _ = chains[0]
    slots = sorted(rng.random() for ch in chains for _ in ch[2])

    def render(n: int) -> str:
        return (f"{example}{head}\n\n{_vt_text(rng, chains, n, slots)}\n"
                f"{question(value, len(names))}")

    return render, list(names), {"value": value, "chains": [c[2] for c in chains],
                                 "example": ex[0][2]}


def _cwe_list(rng: random.Random, words: list[str], n_common: int, f_common: int,
              f_rare: int) -> tuple[str, list[str]]:
    common, rare = words[:n_common], words[n_common:]
    seq = common * f_common + rare * f_rare
    rng.shuffle(seq)
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(seq)), common


def _cwe(rng: random.Random, p: dict[str, int]) -> tuple[_Render, list[str], dict[str, Any]]:
    nc, fc, fr = p["n_common"], p["freq_common"], p["freq_rare"]
    head = ("Here is a numbered list of words. Some words occur many more times than the "
            "others. Remember which words occur most often.")
    question = (f"Question: which {nc} words occur most often in the list above? "
                f"Answer: the {nc} most frequent words in the list are:")
    ex_words = rng.sample(_CWE_POOL, nc + 10)
    ex_list, ex_common = _cwe_list(rng, ex_words, nc, 3, 1)
    example = (f"{head}\n{ex_list}\n{question} "
               + " ".join(f"{i + 1}. {w}" for i, w in enumerate(ex_common)))
    words = rng.sample(_CWE_POOL, len(_CWE_POOL))
    # the worked example's answer words are not the answer of the sample
    words = [w for w in words if w not in ex_common] + [w for w in words if w in ex_common]
    lists: dict[int, tuple[str, list[str]]] = {}
    sub = rng.random()

    def render(n: int) -> str:
        if n not in lists:
            lists[n] = _cwe_list(random.Random(f"{sub}/{n}"), words[:nc + n], nc, fc,
                                 fr)
        body, _ = lists[n]
        return f"{example}\n{head}\n{body}\n{question}"

    return render, list(words[:nc]), {"example_answer": ex_common}


_GENERATORS = {"niah": _niah, "vt": _vt, "cwe": _cwe}
_MAX_FILL = {"niah": 4096, "vt": 4096, "cwe": len(_CWE_POOL) - 10}


PASSKEY_DEPTHS = (0.1, 0.25, 0.5, 0.75, 0.9)


def generate(tokenizer: SmolTokenizer, task: str, context: int, index: int, *,
             seed: int = 0) -> TaskSample:
    """Sample ``index`` of ``task`` whose prompt plus generation budget fits ``context`` tokens
    (the filler count is the largest that fits)."""
    spec = TASKS.get(task)
    if spec is None:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if index < 0:
        raise ValueError(f"sample index must be >= 0, not {index}")
    if spec.kind == "passkey":
        from .prompts import passkey_prompt

        depth = PASSKEY_DEPTHS[index % len(PASSKEY_DEPTHS)]
        pk = passkey_prompt(tokenizer, context - spec.gen_tokens, depth=depth,
                            seed=seed * 100003 + index // len(PASSKEY_DEPTHS))
        return TaskSample(task=task, context=context, index=index, seed=seed, text=pk.text,
                          token_ids=pk.token_ids, references=[pk.passkey],
                          gen_tokens=spec.gen_tokens,
                          meta={"depth": depth, "needle_token_start": pk.needle_token_start})
    rng = random.Random(f"{task}/{context}/{index}/{seed}")
    render, refs, meta = _GENERATORS[spec.kind](rng, spec.params)
    limit = context - spec.gen_tokens
    top = _MAX_FILL[spec.kind]
    if tokenizer.count(render(1)) > limit:
        raise ValueError(f"context {context} is too short for task {task!r} "
                         f"({tokenizer.count(render(1))} prompt tokens + {spec.gen_tokens} "
                         f"generated at the least)")
    lo, hi = 1, 2
    while tokenizer.count(render(hi)) <= limit:    # double until the prompt is too long
        if hi == top:
            raise ValueError(f"context {context} is too long for task {task!r}: its filler "
                             f"runs out")
        lo, hi = hi, min(top, 2 * hi)
    while hi - lo > 1:                             # largest filler count that fits
        mid = (lo + hi) // 2
        if tokenizer.count(render(mid)) <= limit:
            lo = mid
        else:
            hi = mid
    text = render(lo)
    ids = tokenizer.encode(text)
    return TaskSample(task=task, context=context, index=index, seed=seed, text=text,
                      token_ids=ids, references=refs, gen_tokens=spec.gen_tokens,
                      meta={**meta, "filler": lo})

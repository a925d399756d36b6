"""RULER-style task generators (``starc.model.tasks``): every answer is re-derived from the prompt
text by an independent parser (needles, assignment chains, word counts), plus determinism, length
and the scoring rule."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starc.model import gguf_loader as gl
from starc.model.tasks import TASKS, generate, score


@pytest.fixture(scope="module")
def tok():
    from starc.model.tokenizer import SmolTokenizer
    try:
        return SmolTokenizer(gl.load_gguf().tokenizer_json)
    except gl.ModelFileError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("context", [1024, 2048])
def test_prompt_fills_the_context_without_exceeding_it(tok, task: str, context: int) -> None:
    s = generate(tok, task, context, 3)
    assert s.n_tokens + s.gen_tokens <= context
    assert s.n_tokens + s.gen_tokens >= context - 48, "filler search left too much room"
    assert tok.encode(s.text) == s.token_ids


@pytest.mark.parametrize("task", list(TASKS))
def test_samples_are_deterministic_and_distinct(tok, task: str) -> None:
    a = generate(tok, task, 1024, 7, seed=1)
    b = generate(tok, task, 1024, 7, seed=1)
    c = generate(tok, task, 1024, 8, seed=1)
    assert a == b
    assert a.text != c.text
    if task != "passkey":                          # pass keys are drawn per group of 5 depths
        assert a.references != c.references


def _needles(text: str) -> list[tuple[str, str]]:
    return re.findall(r"The special magic number for ([a-z]+-[a-z]+) is (\d+)\.", text)


@pytest.mark.parametrize("task", ["niah_single", "niah_multikey", "niah_multivalue"])
@pytest.mark.parametrize("index", range(2))
def test_niah_answer_follows_from_the_needles(tok, task: str, index: int) -> None:
    s = generate(tok, task, 1024, index)
    asked = re.search(r"special magic numbers? for ([a-z]+-[a-z]+) in the text above\?",
                      s.text).group(1)
    needles = _needles(s.text)
    p = TASKS[task].params
    assert len(needles) == p["keys"] * p["values"]
    assert len({k for k, _ in needles}) == p["keys"]
    assert sorted(v for k, v in needles if k == asked) == sorted(s.references)
    assert all(len(v) == p["digits"] for v in s.references)
    # the filler holds no other number
    assert len(re.findall(r"\d+", s.text)) == len(needles)


@pytest.mark.parametrize("index", range(3))
def test_vt_answer_follows_the_assignment_chain(tok, index: int) -> None:
    s = generate(tok, "vt", 1024, index)
    body = s.text.split("\n\n")[-1]               # after the worked example
    value = re.search(r"have the value (\d+) in the text above", body).group(1)
    direct = dict(re.findall(r"^VAR ([A-Z]{5}) = (\d+)$", body, re.M))
    alias = dict(re.findall(r"^VAR ([A-Z]{5}) = VAR ([A-Z]{5})$", body, re.M))
    equal = {v for v, x in direct.items() if x == value}
    grew = True
    while grew:                                   # propagate along the chain (any order)
        new = {v for v, src in alias.items() if src in equal}
        grew = not new <= equal
        equal |= new
    assert equal == set(s.references)
    assert len(s.references) == TASKS["vt"].params["hops"] + 1


@pytest.mark.parametrize("index", range(3))
def test_cwe_answer_is_the_most_frequent_words(tok, index: int) -> None:
    s = generate(tok, "cwe", 1024, index)
    lst = s.text.rsplit("Remember which words occur most often.\n", 1)[1].split("\nQuestion")[0]
    words = re.findall(r"\d+\. ([a-z]+)", lst)
    counts = Counter(words)
    p = TASKS["cwe"].params
    top = [w for w, c in counts.items() if c == p["freq_common"]]
    assert sorted(top) == sorted(s.references)
    assert all(c == p["freq_rare"] for w, c in counts.items() if w not in top)
    # numbering runs 1..N without gaps
    nums = [int(n) for n in re.findall(r"(\d+)\. [a-z]+", lst)]
    assert nums == list(range(1, len(nums) + 1))


def test_passkey_task_uses_the_passkey_prompt(tok) -> None:
    s = generate(tok, "passkey", 1024, 2)
    assert s.meta["depth"] == 0.5
    assert f"The pass key is {s.references[0]}." in s.text


def test_bad_requests_say_what_to_do(tok) -> None:
    with pytest.raises(ValueError, match="unknown task 'nope'; choose from passkey"):
        generate(tok, "nope", 1024, 0)
    with pytest.raises(ValueError, match="too short"):
        generate(tok, "cwe", 64, 0)
    with pytest.raises(ValueError, match=">= 0"):
        generate(tok, "vt", 1024, -1)


def test_score_is_ruler_string_match_all() -> None:
    assert score(" 123, 456", ["123", "456", "789", "000"]) == 0.5
    assert score(" The Quiet-Harbor", ["quiet-harbor"]) == 1.0
    assert score("", ["1"]) == 0.0
    with pytest.raises(ValueError):
        score("x", [])


@given(st.text(max_size=30), st.text(max_size=30),
       st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=4))
def test_score_never_drops_when_the_answer_grows(a: str, b: str, refs: list[str]) -> None:
    # the property that lets decoding stop once every reference is found
    assert score(a + b, refs) >= score(a, refs)

"""Synthesis end to end with the real small model (bundled SmolLM2-135M): budgeted answers in all three modes,
citations, abstention and streaming. No stand-ins: real tokenizer, real weights, real passages.

The model is converted once per session (under the shared ``models_dir`` fixture) and loaded once per process.
The backends themselves are tested in ``test_llm.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.budget import BudgetedPrompt, build_messages, numbered
from rag.models import load_llm
from rag.models.llm import LLM
from rag.models.openai_llm import OpenAILLM
from rag.settings import Settings
from rag.synthesis import (
    ABSTAIN_MESSAGE,
    COMPACT_TEMPLATE,
    SYSTEM_PROMPT,
    CitationFilter,
    abstain,
    clean_citations,
    hits_to_passages,
    model_abstained,
    parse_citations,
    should_abstain,
    stream_answer,
    synthesize,
)
from rag.synthesis.passage_order import KeySentence
from rag.synthesis.run import Run
from rag.types import Answer, Hit
from tests.conftest import QUESTION, SMALL_MAX_NEW, make_hits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tight_llm(small_settings: Settings, small_llm: LLM) -> LLM:
    """The same weights with a window that holds the prompt and the first two passages but not the third, so
    compact must drop or cut one and refine / tree_summarize need several calls."""
    scaffold = small_llm.count_messages(
        build_messages(SYSTEM_PROMPT, COMPACT_TEMPLATE.format(context="", question=QUESTION, evidence=""))
    )
    first_two = sum(small_llm.count_tokens(numbered(p, p.text)) + 2 for p in hits_to_passages(make_hits())[:2])
    window = scaffold + SMALL_MAX_NEW + first_two + 8
    llm = load_llm(small_settings.model_copy(update={"context_window": window}))
    assert llm.gate is small_llm.gate  # weights shared, not reloaded
    return llm


# --- synthesis --------------------------------------------------------------------------------------
def check_answer(answer: Answer, hits: list[Hit], llm: LLM, mode: str) -> None:
    assert answer.text.strip()
    assert not answer.abstained and answer.mode == mode
    usage = answer.usage
    assert usage.context_window == llm.context_window
    assert 0 < usage.prompt_tokens and usage.prompt_tokens + usage.max_new_tokens <= usage.context_window
    assert usage.max_new_tokens == SMALL_MAX_NEW
    assert 0 < usage.completion_tokens <= usage.llm_calls * SMALL_MAX_NEW
    assert usage.chunks_used + usage.chunks_dropped == len(hits)
    assert answer.sources, "provenance is always given"
    for source in answer.sources:  # every [n] maps back to the hit that was numbered n
        hit = hits[source.number - 1]
        assert (source.chunk_id, source.document, source.text) == (hit.chunk_id, hit.document, hit.text)
    shown = set(range(1, usage.chunks_used + 1))
    assert set(parse_citations(answer.text)) <= shown


@pytest.mark.parametrize("mode", ["compact", "refine", "tree_summarize"])
def test_synthesis_modes_answer_within_the_window(
    small_llm: LLM, tight_llm: LLM, small_settings: Settings, mode: str
) -> None:
    hits = make_hits()
    if mode == "compact":
        answer = synthesize(QUESTION, hits, small_llm, small_settings, mode=mode)
        check_answer(answer, hits, small_llm, mode)
        assert answer.usage.llm_calls == 1 and answer.usage.chunks_used == 3  # everything fits in 8k: one call

    tight = synthesize(QUESTION, hits, tight_llm, small_settings, mode=mode)
    check_answer(tight, hits, tight_llm, mode)
    if mode == "compact":
        assert tight.usage.llm_calls == 1 and tight.usage.chunks_dropped + tight.usage.chunks_truncated >= 1
    else:  # the walk sees every passage, over several calls
        assert tight.usage.llm_calls >= 2 and tight.usage.chunks_used == 3


def test_key_sentences_are_quoted_before_the_question_and_the_passages_give_way(
    small_llm: LLM, tight_llm: LLM, small_settings: Settings
) -> None:
    first = KeySentence(number=1, text="Normandy is a region in France.", score=0.8)
    second = KeySentence(number=2, text="The Normans were famed for their martial spirit.", score=0.7)
    third = KeySentence(number=3, text="The Amazon rainforest covers most of the Amazon basin.", score=0.6)
    passages = hits_to_passages(make_hits())

    def fit(quoted: Sequence[KeySentence], llm: LLM = tight_llm, evidence: bool = True) -> BudgetedPrompt:
        run = Run(llm=llm, settings=small_settings, max_new_tokens=SMALL_MAX_NEW, key_sentences=quoted)
        return run.budget(QUESTION, passages, template=COMPACT_TEMPLATE, overflow="truncate", evidence=evidence)

    plain, quoting = fit(()), fit([first])
    asked = quoting.messages[-1]["content"]
    assert asked.index("[1] normans.txt") < asked.index("[1] Normandy is a region") < asked.index("Question:")
    assert "Normandy is a region" not in plain.messages[-1]["content"]
    assert quoting.prompt_tokens + SMALL_MAX_NEW <= tight_llm.context_window
    room = {name: sum(len(p.text) for p in b.passages) for name, b in (("plain", plain), ("quoting", quoting))}
    assert room["quoting"] < room["plain"], "the quote is never cut; the last passage gives it room"
    # The tight window never shows passage [3]: its sentence is not quoted (the model would cite a source nobody
    # can see) and the prompt is refitted without the quote: the plain one.
    assert [p.number for p in plain.passages] == [1, 2]
    assert fit([third]).messages == plain.messages
    # A wide window quotes both; a request that does not ask for evidence (refine's walk) quotes none.
    wide = fit([first, second], llm=small_llm).messages[-1]["content"]
    assert "[1] Normandy is a region" in wide and "[2] The Normans were famed" in wide
    assert "Normandy is a region" not in fit([first], llm=small_llm, evidence=False).messages[-1]["content"]
    # Through synthesis: compact asks with the quote, a longer prompt in the same window.
    answers = {quoted: synthesize(QUESTION, make_hits(), small_llm, small_settings, key_sentences=quoted)
               for quoted in ((), (first,))}
    assert answers[(first,)].usage.prompt_tokens > answers[()].usage.prompt_tokens


def test_abstention_never_calls_the_model(small_settings: Settings) -> None:
    hits = make_hits(dense=0.12)
    assert should_abstain(hits, small_settings) and should_abstain([], small_settings)
    assert not should_abstain(make_hits(), small_settings)
    # A real HTTP backend pointed at a closed port: any model call would raise.
    unreachable = OpenAILLM(
        small_settings.model_copy(update={"llm_backend": "openai", "llm_base_url": "http://127.0.0.1:9/v1"})
    )
    answer = synthesize(QUESTION, hits, unreachable, small_settings)
    assert answer.abstained and answer.text == ABSTAIN_MESSAGE and not answer.sources
    assert answer.usage.llm_calls == 0 and answer.usage.chunks_dropped == 3
    streamed = list(stream_answer(QUESTION, [], unreachable, small_settings, mode="refine"))
    assert streamed[0] == ABSTAIN_MESSAGE and isinstance(streamed[-1], Answer) and streamed[-1].abstained
    assert abstain(hits, "compact", small_settings).to_dict()["abstained"] is True


@pytest.mark.parametrize("mode", ["compact", "tree_summarize"])
def test_stream_yields_pieces_then_the_answer(tight_llm: LLM, small_settings: Settings, mode: str) -> None:
    hits = make_hits()
    items = list(stream_answer(QUESTION, hits, tight_llm, small_settings, mode=mode))
    *pieces, answer = items
    assert isinstance(answer, Answer) and all(isinstance(p, str) for p in pieces)
    assert len(pieces) >= 2  # token by token, not one blob
    assert "".join(pieces).strip() == answer.text
    check_answer(answer, hits, tight_llm, mode)


# --- citations (pure functions) --------------------------------------------------------------------
def test_citation_parsing_and_cleaning() -> None:
    assert parse_citations("a [2] b [1, 3][4] c [2]") == [2, 1, 3, 4]
    assert clean_citations("Paris [1]. Rome [7]. Both [1, 7][2].", {1, 2}) == "Paris [1]. Rome. Both [1][2]."
    assert clean_citations("see [a] and [ 1 ]", {1}) == "see [a] and [ 1 ]"  # not citations: left alone


def test_model_abstention_is_recognised_only_without_citations() -> None:
    assert model_abstained("The documents do not contain the answer to this question.")
    assert model_abstained("This is not mentioned in the sources.")
    assert model_abstained("There is no information about the 1950 census.")
    assert not model_abstained("The documents do not mention a date, but the treaty was signed in Paris [2].")
    assert not model_abstained("Normandy is in France [1].")


@settings(max_examples=150, deadline=None)
@given(
    text=st.lists(st.sampled_from(["Paris", " ", "[", "]", "1", "2", "9", ",", ", ", " [3]", "[12]", ".", "\n"])).map(
        "".join
    ),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_streamed_citation_filter_equals_clean(text: str, cuts: list[int]) -> None:
    """However the model's text is split into pieces, the filtered stream equals the cleaned full text."""
    valid = {1, 2, 3}
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    filt = CitationFilter(valid)
    assert "".join(filt.feed(p) for p in pieces) + filt.flush() == clean_citations(text, valid)

"""Conversations with the real small model (SmolLM2-135M) and embedder: a follow-up that leans on an earlier turn
is rewritten before retrieval and finds the passages it is about; the cheap standalone test; reading chat messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag import RAG
from rag.settings import Settings
from rag.synthesis import read_chat, stands_alone
from tests.conftest import PASSAGES, write_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOCS = {
    "normans.txt": "\n\n".join(text for name, text in PASSAGES if name == "normans.txt"),
    "amazon.txt": next(text for name, text in PASSAGES if name == "amazon.txt"),
    "eiffel.txt": (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
        "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889 as the entrance "
        "to the 1889 World's Fair. The tower is 330 metres tall."
    ),
    "nile.txt": (
        "The Nile is a major north-flowing river in northeastern Africa. It flows into the Mediterranean Sea. The "
        "Nile is about 6,650 km long, and its drainage basin covers eleven countries."
    ),
}
FOLLOW_UP = "How long is it?"
CONVERSATION = [
    {"role": "user", "content": "What is the Eiffel Tower?"},
    {"role": "assistant", "content": "The Eiffel Tower is a wrought-iron lattice tower in Paris [1]."},
    {"role": "user", "content": FOLLOW_UP},
]


@pytest.fixture
def rag(make_rag, tmp_path: Path, small_settings: Settings) -> RAG:
    """The small model over :data:`DOCS`."""
    write_files(tmp_path / "docs", DOCS)
    engine = make_rag(settings=small_settings.model_copy(update={"data_dir": tmp_path / "data", "summarize": False}))
    engine.ingest(tmp_path / "docs")
    return engine


def test_a_follow_up_with_a_pronoun_retrieves_what_it_refers_to(rag: RAG) -> None:
    alone = rag.retrieve(FOLLOW_UP, top_k=2)
    assert Path(alone[0].document).name == "nile.txt", "on its own the follow-up is about the river"
    answer = rag.chat(CONVERSATION, top_k=2)
    assert answer.rewritten and "Eiffel" in answer.question and answer.question != FOLLOW_UP
    assert Path(answer.hits[0].document).name == "eiffel.txt", answer.question
    assert answer.usage.llm_calls == 2  # the rewrite, then the answer
    assert answer.usage.history_messages == 2 and answer.usage.history_dropped == 0
    assert answer.usage.prompt_tokens + answer.usage.max_new_tokens <= answer.usage.context_window


def test_a_question_that_stands_alone_is_not_rewritten(rag: RAG) -> None:
    standalone = [*CONVERSATION[:2], {"role": "user", "content": "How long is the river Nile?"}]
    answer = rag.chat(standalone, top_k=2)
    assert not answer.rewritten and answer.question == "How long is the river Nile?"
    assert answer.usage.llm_calls == 1 and Path(answer.hits[0].document).name == "nile.txt"


def test_hits_retrieved_beforehand_give_the_same_answer_without_a_second_retrieval(rag: RAG) -> None:
    """What the API does for a question it did not abstain on: the hits of its early check are answered from. The
    answer equals the one that retrieves for itself; and these hits are what it answers from even once the store
    would give others (the document deleted), so no second retrieval happened. A follow-up cannot take them."""
    question = "How long is the river Nile?"
    asked = [{"role": "user", "content": question}]
    hits = rag.retrieve(question, top_k=2)
    assert Path(hits[0].document).name == "nile.txt"
    fresh = rag.chat(asked, top_k=2)
    reused = rag.chat(asked, top_k=2, hits=hits)
    assert reused.to_dict() == fresh.to_dict() and reused.hits == fresh.hits == hits
    streamed = list(rag.chat_stream(asked, top_k=2, hits=hits))[-1]
    assert streamed.to_dict() == fresh.to_dict()

    rag.delete(hits[0].document)
    assert all(Path(h.document).name != "nile.txt" for h in rag.retrieve(question, top_k=2))
    after = rag.chat(asked, top_k=2, hits=hits)
    assert after.hits == hits and not after.abstained
    with pytest.raises(ValueError, match="follow-up"):
        rag.chat(CONVERSATION, top_k=2, hits=hits)


def test_passages_far_below_the_best_are_not_shown_but_stay_among_the_hits(
    make_rag, tmp_path: Path, small_settings: Settings
) -> None:
    write_files(tmp_path / "docs", DOCS)
    rag = make_rag(settings=small_settings.model_copy(update={
        "data_dir": tmp_path / "data", "summarize": False, "passage_min_relative_support": 0.95}))
    rag.ingest(tmp_path / "docs")
    question = [{"role": "user", "content": "How long is the river Nile?"}]
    answer = rag.chat(question, top_k=3)
    assert len(answer.hits) == 3 and Path(answer.hits[0].document).name == "nile.txt"
    assert answer.usage.chunks_used + answer.usage.chunks_dropped == 3 and answer.usage.chunks_dropped >= 1
    assert all(s.number <= answer.usage.chunks_used for s in answer.sources), "only shown passages are sources"
    streamed = list(rag.chat_stream(question, top_k=3))[-1]
    assert streamed.hits == answer.hits and streamed.usage.chunks_dropped == answer.usage.chunks_dropped


@pytest.mark.parametrize(("question", "alone"), [
    ("How long is it?", False),  # pronoun
    ("And in 1990?", False),  # continuation, ellipsis
    ("What about the river?", False),
    ("Who founded their colony?", False),
    ("Why?", False),  # too few content words to carry its own topic
    ("How long is the river Nile?", True),
    ("Which engineer designed the Eiffel Tower?", True),
])
def test_the_standalone_test(question: str, alone: bool) -> None:
    earlier = CONVERSATION[:2]
    assert stands_alone(question, earlier) is alone
    assert stands_alone(question, []) is True  # the first turn is never rewritten


def test_reading_chat_messages() -> None:
    chat = read_chat([
        {"role": "system", "content": "Be brief."},
        *CONVERSATION[:2],
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "  How long is it?  "},
    ])
    assert chat.question == "How long is it?" and chat.history == CONVERSATION[:2] and chat.needs_rewrite
    assert not read_chat(CONVERSATION, may_rewrite=False).needs_rewrite
    with pytest.raises(ValueError, match="no user message"):
        read_chat([{"role": "assistant", "content": "Hello"}, {"role": "user", "content": " "}])


def test_a_long_conversation_costs_what_its_last_turns_cost(rag: RAG) -> None:
    """Issue 32: 499 messages took 67.7 s to answer instead of 2.5 s: the history filled the window (~8k tokens of
    prefill for the small model). Now the rewrite and the answer prompt carry at most HISTORY_MAX_TOKENS of earlier
    turns, and only the turns that may be shown are read at all."""
    from rag.budget import HISTORY_MAX_TOKENS, recent_turns

    long_chat = [
        m for i in range(249) for m in (
            {"role": "user", "content": f"Tell me about volcano number {i} in Sicily and its eruptions. " * 5},
            {"role": "assistant", "content": f"Volcano {i} erupted in {1600 + i}; it is tall and active. " * 5},
        )
    ] + CONVERSATION
    llm = rag.llm
    counted: list[str] = []
    count = llm.count_tokens

    def counting(text: str) -> int:
        counted.append(text)
        return count(text)

    recent = recent_turns(type("Counter", (), {"count_tokens": staticmethod(counting)})(), long_chat[:-1],
                          HISTORY_MAX_TOKENS)
    assert recent[0]["role"] == "user" and recent[-2:] == CONVERSATION[:2]
    assert len(counted) <= len(recent) + 2 < 30  # the walk stops past the bound (at most a turn past the kept ones)
    assert sum(count(m["content"]) for m in recent) <= HISTORY_MAX_TOKENS

    answer = rag.chat(long_chat)
    assert answer.rewritten and "Eiffel" in answer.question, answer.question
    short = rag.chat(CONVERSATION)
    # two requests (the rewrite, the answer), each carrying at most HISTORY_MAX_TOKENS of earlier turns
    assert answer.usage.prompt_tokens <= short.usage.prompt_tokens + 2 * HISTORY_MAX_TOKENS, (answer.usage, short.usage)

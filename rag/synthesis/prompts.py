"""What the model reads: the system prompt, one template per kind of call, and how a hit is labelled.

Every template has a ``{context}`` slot that :func:`rag.budget.budget_prompt` fills with as many passages as fit;
``compact``'s has an ``{evidence}`` slot too, for the key sentences (:func:`quote_key_sentences`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

from rag.budget import Passage
from rag.synthesis.passage_order import KeySentence
from rag.types import Hit

# A key sentence is quoted whole up to this many characters: a "sentence" of a table or a list without full stops
# can run for pages, and the quote is never truncated by the budget (it is part of the question's scaffolding).
KEY_SENTENCE_MAX_CHARS = 400

# Wording chosen on SQuAD questions with the bundled Qwen 0.5B: asking for "a short, direct answer, then the source
# number" gave answers with citations; "cite after each statement" made it answer with the citation alone ("[1]").
SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question using only the information in the sources. "
    "Write a complete sentence that answers the question, then give the number of the source you used in square "
    'brackets, for example: "The bridge opened in 1932 [2]." '
    "If the sources do not contain the answer, say that the documents do not contain it."
)

ABSTENTION_START = "The documents do not contain"
"""How the system prompt has the model say that the answer is not there: how likely the model found these words as
its answer's start is one of the answer's confidence signals (:mod:`rag.synthesis.confidence`)."""

COMPACT_TEMPLATE = (
    "Sources:\n\n{context}\n\n"
    "{evidence}"
    "Question: {question}\n\n"
    "Give a short, direct answer to the question in one sentence, then the number of the source it comes from, "
    "like [1]."
)

REFINE_TEMPLATE = (
    "Question: {question}\n\n"
    "Existing answer: {existing_answer}\n\n"
    "More sources:\n\n{context}\n\n"
    "If the new sources give a better answer to the question, write it as a short, direct answer with the source "
    "numbers like [1]; otherwise repeat the existing answer unchanged."
)

REDUCE_TEMPLATE = (
    "Partial answers to the question, with their source numbers:\n\n{context}\n\n"
    "Question: {question}\n\n"
    "Combine them into one short, direct answer to the question. Keep the source numbers like [1] and add nothing "
    "that is not in them."
)


def hit_label(hit: Hit) -> str:
    """The short name shown beside a passage's number: title, else the file name."""
    name = hit.title or PurePath(hit.document).name or hit.document
    return f"summary of {name}" if hit.kind == "summary" else name


def hits_to_passages(hits: Sequence[Hit]) -> list[Passage]:
    """Hits in rank order as passages numbered from 1: the ``[n]`` the model cites is the hit's rank."""
    return [Passage(number=i + 1, text=h.text, label=hit_label(h)) for i, h in enumerate(hits)]


def quote_key_sentences(key_sentences: Sequence[KeySentence]) -> str:
    """The key sentences quoted with their passage numbers, for the ``{evidence}`` slot ("" when there are none)."""
    if not key_sentences:
        return ""
    lines = []
    for k in key_sentences:
        text = k.text if len(k.text) <= KEY_SENTENCE_MAX_CHARS else k.text[:KEY_SENTENCE_MAX_CHARS].rstrip() + "…"
        lines.append(f"[{k.number}] {text}")
    return "Key sentences:\n" + "\n".join(lines) + "\n\n"

"""Two-turn conversations built from the shared SQuAD 2.0 and HotpotQA files, whose second turn only makes sense with
the first: the benchmark of follow-up rewriting (``python bench/answers.py conversations``).

How each one is built, deterministically (no model involved):
- Take a question that names the entity its gold paragraph is about. The entity is the paragraph's title without a
  parenthesis ("Sky (United Kingdom)" → "Sky"); SQuAD titles are the article's ("Normans"), HotpotQA titles the
  paragraph's own ("Scott Derrickson").
- Turn 1: the user says "Tell me about <entity>."; the assistant answers with the first sentence of the entity's
  introduction (HotpotQA: the gold paragraph, itself a Wikipedia introduction; SQuAD: the article's first paragraph,
  not the gold one, so the history does not hand over the gold paragraph's words).
- Turn 2: the question with the entity replaced by a pronoun ("the Normans" → "they", "Normans'" → "their",
  "of Scott Derrickson" → "of him"): plural for a name ending in s, he/she when the paragraph speaks of its subject
  so, else it. Alone it no longer says what it is about; the gold paragraphs are the question's.
Questions are spread evenly over each file and at most ``PER_ENTITY`` are taken per SQuAD article, so one article
(41 SQuAD questions name "Southern California") does not make up the set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from _common import read_jsonl

PER_ENTITY = 6
_PREPOSITIONS = {"of", "in", "by", "for", "with", "to", "from", "about", "at", "on", "than", "and"}
_FORMS = {  # subject, object, possessive
    "they": ("they", "them", "their"), "he": ("he", "him", "his"), "she": ("she", "her", "her"), "it": ("it", "it", "its"),
}


@dataclass(frozen=True)
class Conversation:
    id: str
    source: str  # "squad" or "hotpotqa"
    entity: str
    messages: list[dict[str, str]]  # turn 1 (user, assistant), then the follow-up
    original: str  # the follow-up as the dataset asks it, naming the entity
    gold_ids: list[str]


def entity_of(title: str) -> str:
    return re.sub(r"\s*\(.*\)$", "", title).strip()


def first_sentence(text: str) -> str:
    match = re.search(r"^(.+?[.!?])(?:\s|$)", text.strip())
    return match.group(1) if match else text.strip()[:200]


def pronoun_of(entity: str, paragraph: str) -> str:
    if entity.endswith("s") and not entity.endswith("ss"):
        return "they"
    he = len(re.findall(r"\b(?:he|his|him)\b", paragraph, re.IGNORECASE))
    she = len(re.findall(r"\b(?:she|her|hers)\b", paragraph, re.IGNORECASE))
    if he or she:
        return "he" if he >= she else "she"
    return "it"


def pronominalise(question: str, entity: str, pronoun: str) -> str | None:
    """``question`` with its first mention of ``entity`` (with a leading "the", a possessive) as a pronoun; None when
    the entity is not named."""
    pattern = re.compile(rf"\b(?:the\s+)?{re.escape(entity)}(?P<pos>['’]s?)?(?!\w)", re.IGNORECASE)
    match = pattern.search(question)
    if match is None:
        return None
    subject, obj, possessive = _FORMS[pronoun]
    before = question[: match.start()].split()
    if match.group("pos"):
        word = possessive
    elif before and before[-1].lower() in _PREPOSITIONS:
        word = obj
    else:
        word = subject
    if match.start() == 0:
        word = word.capitalize()
    return question[: match.start()] + word + question[match.end():]


def _conversation(source: str, q: dict, title: str, intro: str, paragraph: str) -> Conversation | None:
    entity = entity_of(title)
    follow_up = pronominalise(q["question"], entity, pronoun_of(entity, paragraph))
    if follow_up is None or follow_up == q["question"]:
        return None
    messages = [
        {"role": "user", "content": f"Tell me about {entity}."},
        {"role": "assistant", "content": first_sentence(intro)},
        {"role": "user", "content": follow_up},
    ]
    return Conversation(q["id"], source, entity, messages, q["question"], list(q["gold_ids"]))


def squad_conversations(folder: Path) -> list[Conversation]:
    corpus = {doc["id"]: doc for doc in read_jsonl(folder / "corpus.jsonl")}
    intro = {}
    for doc in corpus.values():
        intro.setdefault(doc["title"], doc["text"])  # the article's first paragraph (the file keeps article order)
    out: list[Conversation] = []
    per_entity: dict[str, int] = {}
    for q in read_jsonl(folder / "queries.jsonl"):
        gold = corpus[q["gold_ids"][0]]
        if per_entity.get(gold["title"], 0) >= PER_ENTITY:
            continue
        conversation = _conversation("squad", q, gold["title"], intro[gold["title"]], gold["text"])
        if conversation is not None:
            per_entity[gold["title"]] = per_entity.get(gold["title"], 0) + 1
            out.append(conversation)
    return out


def hotpotqa_conversations(folder: Path) -> list[Conversation]:
    corpus = {doc["id"]: doc for doc in read_jsonl(folder / "corpus.jsonl")}
    out: list[Conversation] = []
    for q in read_jsonl(folder / "queries.jsonl"):
        for gold_id in q["gold_ids"]:
            gold = corpus[gold_id]
            conversation = _conversation("hotpotqa", q, gold["title"], gold["text"], gold["text"])
            if conversation is not None:
                out.append(conversation)
                break
    return out

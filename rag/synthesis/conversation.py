"""Conversations: the last user message is the question; a follow-up that leans on earlier turns is rewritten into a
standalone question before retrieval, since "and how long does that take?" finds nothing on its own.

When to rewrite is decided without the model, so most questions cost nothing extra (:func:`stands_alone`): a
question stands alone when there is no earlier turn, or when it has no referring word (it, they, this, that, there,
…), does not open as a continuation ("and …", "what about …") and has at least three content words. Otherwise
one budgeted LLM call rewrites it (:func:`rewrite`): the recent conversation (each message capped at
``REWRITE_MESSAGE_TOKENS``, whole turns, the oldest dropped first until the prompt fits and carries at most
:data:`rag.budget.HISTORY_MAX_TOKENS` of them, :func:`rag.budget.fit_history`; only those last turns are ever read)
and the follow-up, greedy, at most ``REWRITE_MAX_NEW_TOKENS``, after one worked example. A reply that is not a
rewrite (empty, cut off, an answer instead of a question, or adding no word of the conversation to the question) is
replaced by the previous user message followed by the question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rag.budget import HISTORY_MAX_TOKENS, build_messages, fit_history, recent_turns
from rag.models.llm import Message
from rag.synthesis.words import content_words

if TYPE_CHECKING:
    from rag.models.llm import LLM, Generation

REWRITE_MAX_NEW_TOKENS = 64  # a question, not an answer; also bounds the cost of a model that starts answering
REWRITE_MESSAGE_TOKENS = 160  # of each earlier message: the names a follow-up refers to are near the start

REWRITE_SYSTEM = "You rewrite follow-up questions so that they can be understood without the conversation."
REWRITE_TEMPLATE = (
    "Conversation:\n{conversation}\n\n"
    "Follow-up question: {question}\n\n"
    "Rewrite the follow-up question as one standalone question: replace each pronoun (it, they, he, she, its, "
    "their, this, that, there) with the name it refers to in the conversation, and keep everything else it asks. "
    "Reply with the rewritten question only."
)
# One worked exchange before the real one: without it the 0.5B default model often answered the question instead,
# or dropped what it asked for.
REWRITE_EXAMPLE: list[Message] = [
    {"role": "user", "content": REWRITE_TEMPLATE.format(
        conversation="User: Who wrote Hamlet?\nAssistant: William Shakespeare wrote Hamlet around 1600.",
        question="Where was he born?")},
    {"role": "assistant", "content": "Where was William Shakespeare born?"},
]

_REFERRING = re.compile(
    r"\b(?:it|its|itself|they|them|their|theirs|themselves|he|him|his|himself|she|her|hers|herself|this|that|these|"
    r"those|there|then|former|latter|same|such|one|ones)\b",
    re.IGNORECASE,
)
_CONTINUES = re.compile(r"^\W*(?:and|but|also|so|or|what about|how about|what else|why not)\b", re.IGNORECASE)
_ANSWER_PREFIX = re.compile(r"^(?:standalone|rewritten|follow-up)?\s*question\s*:\s*", re.IGNORECASE)
_ROLES = {"user": "User", "assistant": "Assistant"}


@dataclass
class Chat:
    """A conversation as the engine answers it: ``question`` (the last user message), the ``history`` before it
    (user and assistant messages, oldest first) and ``standalone``, what is searched and answered; ``may_rewrite``
    is ``settings.rewrite_followups``."""

    question: str
    history: list[Message] = field(default_factory=list)
    standalone: str = ""
    may_rewrite: bool = True

    def __post_init__(self) -> None:
        self.standalone = self.standalone or self.question

    @property
    def needs_rewrite(self) -> bool:
        """True when the question leans on earlier turns and may be, but has not been, rewritten yet."""
        return self.may_rewrite and self.standalone == self.question and not stands_alone(self.question, self.history)

    @property
    def rewritten(self) -> bool:
        return self.standalone != self.question


def read_chat(messages: Sequence[Message], *, may_rewrite: bool = True) -> Chat:
    """The question and its history from OpenAI-style messages; system messages and empty ones are left out (the
    answer prompt has its own instructions). Raises ValueError when no user message has text."""
    for last in range(len(messages) - 1, -1, -1):
        if messages[last].get("role") == "user" and messages[last].get("content", "").strip():
            history = [
                {"role": m["role"], "content": m["content"]}
                for m in messages[:last]
                if m.get("role") in _ROLES and m.get("content", "").strip()
            ]
            return Chat(question=messages[last]["content"].strip(), history=history, may_rewrite=may_rewrite)
    raise ValueError("the messages contain no user message with text: the last one is the question")


def stands_alone(question: str, history: Sequence[Message]) -> bool:
    """The cheap test of the module docstring: no earlier user turn, or no sign of leaning on one."""
    if not any(m.get("role") == "user" for m in history):
        return True
    return not _REFERRING.search(question) and not _CONTINUES.match(question) and len(content_words(question)) >= 3


def rewrite(llm: LLM, chat: Chat) -> tuple[str, Generation | None]:
    """The follow-up as a standalone question, from one budgeted call (returned too, for the answer's usage); the
    question itself when not even the last turn of the conversation fits beside it."""
    recent = recent_turns(llm, chat.history, HISTORY_MAX_TOKENS, per_message=REWRITE_MESSAGE_TOKENS)
    history = [{"role": m["role"], "content": llm.truncate(m["content"], REWRITE_MESSAGE_TOKENS)} for m in recent]

    def render(recent: Sequence[Message]) -> list[Message]:
        conversation = "\n".join(f"{_ROLES[m['role']]}: {m['content']}" for m in recent)
        prompt = REWRITE_TEMPLATE.format(conversation=conversation, question=chat.question)
        return build_messages(REWRITE_SYSTEM, prompt, REWRITE_EXAMPLE)

    if llm.count_messages(render([])) + REWRITE_MAX_NEW_TOKENS > llm.context_window:
        return chat.question, None
    messages, _, kept = fit_history(llm, render, history, REWRITE_MAX_NEW_TOKENS)
    if not kept:
        return chat.question, None
    reply = llm.generate(messages, max_new_tokens=REWRITE_MAX_NEW_TOKENS, temperature=0.0, top_p=1.0)
    return _clean(reply.text, chat, history[len(history) - kept:], reply.finish_reason), reply


def _clean(reply: str, chat: Chat, shown: Sequence[Message], finish_reason: str) -> str:
    """The first line of the reply without a "Question:" label or quotes, when it is a rewrite: complete, a question
    if one was asked, and bringing in a word of the conversation that the question lacks (else it is the question
    copied). Otherwise (a small model answered, or copied) the previous user message followed by the question:
    crude, but it puts the names back for retrieval."""
    lines = [ln.strip() for ln in reply.splitlines() if ln.strip()]
    line = _ANSWER_PREFIX.sub("", lines[0] if lines else "").strip().strip('"\'“”').strip()
    complete = finish_reason != "length" or len(lines) > 1
    asks = line.endswith("?") or not chat.question.endswith("?")
    earlier = content_words(" ".join(m["content"] for m in shown))
    if line and complete and asks and (content_words(line) - content_words(chat.question)) & earlier:
        return line
    previous = next((m["content"] for m in reversed(shown) if m["role"] == "user"), "")
    return f"{previous} {chat.question}".strip()

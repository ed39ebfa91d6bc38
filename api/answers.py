"""How both question faces (``/v1/query`` and the OpenAI ``rag`` model) turn a conversation into an answer.

One order for both: a question that stands alone gets the early abstention check (no model slot needed when
retrieval finds nothing relevant; otherwise its hits go on to the engine, which does not retrieve again); a
follow-up that the engine will rewrite needs the model first, so it queues for a slot at once and the engine
abstains by itself after the rewrite if it must. Then the answer, as JSON (the slot given back here) or as a primed
stream (the slot given back when the response ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.concurrency import NO_SLOT, LLMGate, abstention, admit
from api.streaming import BlockingStream

if TYPE_CHECKING:
    from rag.engine import RAG
    from rag.synthesis import Chat
    from rag.types import Answer, Hit


@dataclass(frozen=True)
class Ask:
    """What to answer and where to look: the conversation and the retrieval and synthesis options."""

    chat: Chat
    top_k: int | None
    collection: str
    mode: str | None = None
    path_prefix: str | None = None
    document_ids: list[int] | None = None


async def answer(rag: RAG, gate: LLMGate, request: Request, ask: Ask) -> Answer:
    """The whole answer (the model slot, when one was needed, is given back before returning)."""
    hits, early = await _early(rag, request, ask)
    if early is not None:
        return early
    slot = await admit(gate, request)
    try:
        return await run_in_threadpool(
            lambda: rag.chat(ask.chat, ask.top_k, ask.collection, mode=ask.mode, path_prefix=ask.path_prefix,
                             document_ids=ask.document_ids, hits=hits)
        )
    finally:
        slot.release()


async def stream(rag: RAG, gate: LLMGate, request: Request,
                 ask: Ask) -> tuple[BlockingStream[str | Answer], Callable[[], None]]:
    """The answer's text pieces then its ``Answer``, primed (errors before the first piece still become a status
    code), and what to call when the response ends."""
    hits, early = await _early(rag, request, ask)
    if early is not None:
        return BlockingStream(iter([early.text, early])), NO_SLOT.release
    slot = await admit(gate, request)
    try:
        pieces = rag.chat_stream(ask.chat, ask.top_k, ask.collection, mode=ask.mode, path_prefix=ask.path_prefix,
                                 document_ids=ask.document_ids, hits=hits)
        return await BlockingStream(pieces).prime(), slot.release
    except BaseException:
        slot.release()
        raise


async def _early(rag: RAG, request: Request, ask: Ask) -> tuple[list[Hit] | None, Answer | None]:
    """The hits and the abstention, decided before queueing for the model (the hits are then answered from, not
    retrieved again); neither for a follow-up, which is rewritten first and searched as rewritten."""
    if ask.chat.needs_rewrite:
        return None, None
    hits, early = await abstention(rag, request.app.state.retrieval, ask.chat.question, ask.top_k, ask.collection,
                                   ask.mode, ask.path_prefix, ask.document_ids)
    if early is not None:
        early.question = ask.chat.question
    return hits, early

"""OpenAI-compatible face: ``/v1/chat/completions`` and ``/v1/models`` (vLLM-style ``/tokenize`` is in ``api/tokenize.py``).

Two models are listed:
- the configured LLM (``settings.llm_model``), listed first: chat with it is a plain pass-through to the model,
  checked against its context window. With ``/tokenize`` this lets another instance's OpenAI HTTP backend use
  this server as its LLM server (it picks the first listed model when its own model name is a bundled one).
- ``rag``: the conversation is answered from the documents via ``RAG.chat``/``RAG.chat_stream``: the last user
  message is the question, a follow-up is rewritten from the earlier turns when it does not stand alone, and the
  recent turns ride in the answer prompt as far as they fit. The verified sources (with their supporting spans),
  ``groundedness`` and the ``question`` searched ride along as extra fields (response, and final stream chunk,
  which also carries the final ``text``). The RAG options ``collection``, ``top_k`` and ``mode`` may be sent as
  extra body fields (``extra_body`` in the openai client). ``rag`` answers from the key's default collection (or
  ``collection``), never from one the key may not see; ``rag:<collection>`` names the collection in the model.

The official ``openai`` client works against this unchanged; unknown OpenAI parameters are accepted and ignored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from api import answers
from api import schemas as S
from api.access import MODEL_PREFIX, RAG_MODEL, Access, authorize
from api.concurrency import LLMGate, Slot, admit
from api.deps import get_metrics, get_rag, get_settings
from api.errors import APIError, stream_error_body, translate
from api.metrics import Metrics
from api.openai_schemas import ChatRequest, ModelList, plain_messages
from api.sse import sse
from api.streaming import BlockingStream, GatedStreamingResponse
from rag.engine import RAG
from rag.settings import Settings
from rag.types import Answer

router = APIRouter(dependencies=[Depends(authorize)])

Rag = Annotated[RAG, Depends(get_rag)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AccessDep = Annotated[Access, Depends(authorize)]


# --- helpers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Completion:
    """One chat completion's identity (id, creation time, model): its response, or every chunk of its stream."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(self, delta: dict[str, Any], finish: str | None, **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    def usage_chunk(self, prompt: int, completion: int) -> dict[str, Any]:
        """The extra last chunk of ``stream_options.include_usage``: no choices, only the token counts."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": _usage(prompt, completion)}


@dataclass(frozen=True)
class _End:
    """How a chat stream ends: its token counts, OpenAI's finish reason, and extra fields for the final chunk."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    extra: dict[str, Any] = field(default_factory=dict)


async def _chat_events(completion: _Completion, stream: BlockingStream[Any], end_of: Callable[[Any], _End | None],
                       include_usage: bool, metrics: Metrics) -> AsyncIterator[str]:
    """The event stream of a chat, for both models: a role chunk, a chunk per text piece, the final chunk (then the
    usage chunk, when asked), an in-band error if the stream breaks, and ``[DONE]``.

    ``end_of`` tells the stream's last item (an ``Answer``, a ``Generation``) from its text pieces.
    """
    yield sse(None, completion.chunk({"role": "assistant", "content": ""}, None))
    try:
        async for item in stream:
            end = end_of(item)
            if end is not None:
                metrics.add_usage("chat", end.prompt_tokens, end.completion_tokens)
                yield sse(None, completion.chunk({}, end.finish_reason, **end.extra))
                if include_usage:
                    yield sse(None, completion.usage_chunk(end.prompt_tokens, end.completion_tokens))
            elif item:  # an empty piece carries nothing
                yield sse(None, completion.chunk({"content": item}, None))
    except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band (stream_error_body logs it)
        yield sse(None, stream_error_body(exc, "chat"))
    yield sse(None, "[DONE]")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# --- models --------------------------------------------------------------------------------------
@router.get("/v1/models", response_model=ModelList, responses=S.error_responses(401))
def list_models(request: Request, rag: Rag, settings: SettingsDep) -> dict[str, Any]:
    """The LLM itself (plain chat) and ``rag`` (answers from the documents)."""
    created = int(request.app.state.started_at)
    llm_card: dict[str, Any] = {"id": settings.llm_model, "object": "model", "created": created, "owned_by": "rag-service"}
    window = _known_window(request, settings)
    if window:
        llm_card["max_model_len"] = window
    rag_card = {"id": RAG_MODEL, "object": "model", "created": created, "owned_by": "rag-service",
                "description": "answers from the ingested documents, with sources"}
    return {"object": "list", "data": [llm_card, rag_card]}


def _known_window(request: Request, settings: Settings) -> int | None:
    """The LLM's window if it is known without a network call or a model load (listing must stay cheap)."""
    if settings.context_window:
        return settings.context_window
    return getattr(request.app.state, "llm_window", None)


# --- chat ------------------------------------------------------------------------------------------
@router.post("/v1/chat/completions", responses={
    **S.error_responses(400, 401, 404, 413, 422, 503),
    200: {"description": "A chat.completion object, or with stream=true chat.completion.chunk events "
                         "(text/event-stream) ending in `data: [DONE]`; model `rag` adds `sources`.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
})
async def chat_completions(req: ChatRequest, request: Request, rag: Rag, settings: SettingsDep,
                           metrics: MetricsDep, access: AccessDep) -> Any:
    gate: LLMGate = request.app.state.llm_gate
    if access.collection is not None:  # model `rag` or `rag:<collection>` (api.access.chat_collection)
        return await _rag_chat(req, request, rag, metrics, gate, access.collection)
    if req.model == settings.llm_model:
        return await _llm_chat(req, request, rag, settings, metrics, gate)
    raise APIError(404, f"model {req.model!r} does not exist; GET /v1/models lists '{settings.llm_model}' and "
                        f"'{RAG_MODEL}' ('{MODEL_PREFIX}<collection>' answers from one collection)", "model_not_found")


async def _rag_chat(req: ChatRequest, request: Request, rag: RAG, metrics: Metrics, gate: LLMGate,
                    collection: str) -> Any:
    ask = answers.Ask(rag.conversation(plain_messages(req.messages)), req.top_k, collection, req.mode)
    completion = _Completion(req.model)
    if not req.stream:
        answer = await answers.answer(rag, gate, request, ask)
        metrics.add_usage("chat", answer.usage.prompt_tokens, answer.usage.completion_tokens)
        return {
            "id": completion.id, "object": "chat.completion", "created": completion.created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(answer.usage.prompt_tokens, answer.usage.completion_tokens),
            **_answer_fields(answer),
        }
    pieces, release = await answers.stream(rag, gate, request, ask)
    events = _chat_events(completion, pieces, _answer_end, _include_usage(req), metrics)
    return GatedStreamingResponse(events, release)


def _answer_fields(answer: Answer) -> dict[str, Any]:
    """What ``rag`` adds to OpenAI's shape: which path the answer took (``kind``) and its calibrated confidence, the
    verified sources with their spans, abstention, groundedness and the question searched (a follow-up rewritten to
    stand alone)."""
    return {"kind": answer.kind, "confidence": answer.confidence,
            "sources": [s.to_dict() for s in answer.sources], "abstained": answer.abstained,
            "groundedness": answer.groundedness, "question": answer.question, "rewritten": answer.rewritten}


def _answer_end(item: str | Answer) -> _End | None:
    """The end of a ``rag`` stream: its ``Answer``, whose verified sources ride on the final chunk, with the final
    text (its citations may have been re-pointed since they streamed)."""
    if not isinstance(item, Answer):
        return None
    extra = {**_answer_fields(item), "text": item.text}
    return _End(item.usage.prompt_tokens, item.usage.completion_tokens, "stop", extra)


def _include_usage(req: ChatRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def _llm_budget(rag: RAG, settings: Settings, req: ChatRequest, messages: list[dict[str, str]]) -> tuple[Any, int, int]:
    """Load the LLM, count the prompt with its own tokenizer, and refuse what cannot fit its window."""
    llm = rag.llm
    try:
        prompt_tokens = llm.count_messages(messages)
    except Exception as exc:  # e.g. a chat template that refuses this sequence of roles
        if translate(exc) is not None and not isinstance(exc, ValueError):
            raise
        raise APIError(400, f"the model cannot render these messages: {exc}") from None
    window = llm.context_window
    room = window - prompt_tokens
    requested = req.max_completion_tokens or req.max_tokens
    max_new = requested if requested is not None else min(settings.max_new_tokens, room)
    if max_new < 1 or prompt_tokens + max_new > window:
        raise APIError(
            400,
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + max(max_new, 0)} tokens ({prompt_tokens} in the messages, {max(max_new, 0)} in the "
            "completion). Please reduce the length of the messages or completion.",
            "invalid_request_error",
        )
    return llm, prompt_tokens, max_new


async def _llm_chat(req: ChatRequest, request: Request, rag: RAG, settings: Settings, metrics: Metrics,
                    gate: LLMGate) -> Any:
    messages = plain_messages(req.messages)
    slot = await admit(gate, request)
    try:
        return await _llm_chat_in_slot(req, rag, settings, metrics, slot, messages)
    except BaseException:
        slot.release()
        raise


async def _llm_chat_in_slot(req: ChatRequest, rag: RAG, settings: Settings, metrics: Metrics, slot: Slot,
                            messages: list[dict[str, str]]) -> Any:
    """Runs holding a slot; a JSON answer gives it back here, a stream when its response ends."""
    llm, _, max_new = await run_in_threadpool(_llm_budget, rag, settings, req, messages)
    sampling = {
        "max_new_tokens": max_new,
        "temperature": settings.temperature if req.temperature is None else req.temperature,
        "top_p": settings.top_p if req.top_p is None else req.top_p,
    }
    completion = _Completion(req.model)
    if not req.stream:
        gen = await run_in_threadpool(lambda: llm.generate(messages, **sampling))
        slot.release()
        metrics.add_usage("chat", gen.prompt_tokens, gen.completion_tokens)
        return {
            "id": completion.id, "object": "chat.completion", "created": completion.created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                         "finish_reason": _finish(gen.finish_reason), "logprobs": None}],
            "usage": _usage(gen.prompt_tokens, gen.completion_tokens),
        }
    text_stream = await run_in_threadpool(lambda: llm.stream(messages, **sampling))
    pieces = BlockingStream(_with_result(text_stream))
    events = _chat_events(completion, pieces, _generation_end, _include_usage(req), metrics)
    return GatedStreamingResponse(events, slot.release)


def _with_result(text_stream: Any) -> Iterator[Any]:
    """The pieces of a ``TextStream``, then its ``Generation`` (counts and finish reason)."""
    try:
        yield from text_stream
    finally:
        if text_stream.generation is None:
            text_stream.close()
    yield text_stream.generation


def _generation_end(item: Any) -> _End | None:
    """The end of a plain LLM stream: its ``Generation`` (counts and finish reason), after the text pieces."""
    if isinstance(item, str):
        return None
    return _End(item.prompt_tokens, item.completion_tokens, _finish(item.finish_reason))


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"

"""vLLM-style tokenizer endpoints at the server root: ``/tokenize`` and ``/detokenize``.

With ``/v1/models`` they let another instance's OpenAI HTTP backend use this server as its LLM server with exact
token counts and the model's context window (``max_model_len``) instead of estimates.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from api import schemas as S
from api.access import authorize
from api.deps import get_rag
from api.errors import APIError, translate
from api.openai_schemas import DetokenizeRequest, TokenizeRequest, TokenizeResponse, plain_messages
from rag.engine import RAG
from rag.models.tokens import TokenCounter

router = APIRouter(dependencies=[Depends(authorize)])

Rag = Annotated[RAG, Depends(get_rag)]


def _local_tokens(llm: Any) -> TokenCounter | None:
    """The local backend's own tokenizer (llama.cpp's or transformers'): token ids, not just counts."""
    tokens = getattr(llm, "tokens", None)
    return tokens if isinstance(tokens, TokenCounter) else None


@router.post("/tokenize", response_model=TokenizeResponse, responses=S.error_responses(400, 401, 422, 503))
def tokenize(req: TokenizeRequest, rag: Rag) -> dict[str, Any]:
    """Token count of a prompt or of a chat (rendered with the model's template) with the LLM's own tokenizer,
    and the context window (``max_model_len``). Token ids are included when the backend has a local tokenizer."""
    if (req.prompt is None) == (req.messages is None):
        raise APIError(400, "send exactly one of 'prompt' or 'messages'")
    llm = rag.llm
    local = _local_tokens(llm)
    tokens: list[int] | None = None
    try:
        if req.prompt is not None:
            if local is not None:
                tokens = local.encode(req.prompt, add_special=req.add_special_tokens)
                count = len(tokens)
            else:
                count = llm.count_tokens(req.prompt)
        else:
            messages = plain_messages(req.messages or [])
            count = llm.count_messages(messages)
            if local is not None and req.add_generation_prompt:
                tokens = local.encode_messages(messages)
    except Exception as exc:
        if translate(exc) is not None and not isinstance(exc, ValueError):
            raise
        raise APIError(400, f"cannot tokenize this input: {exc}") from None
    return {"count": count, "tokens": tokens, "max_model_len": llm.context_window}


@router.post("/detokenize", responses=S.error_responses(400, 401, 404, 422, 503))
def detokenize(req: DetokenizeRequest, rag: Rag) -> dict[str, str]:
    """Text of token ids (vLLM-style); only where the backend has a local tokenizer."""
    local = _local_tokens(rag.llm)
    if local is None:
        raise APIError(404, "this server's LLM backend has no local tokenizer to detokenize with")
    if req.tokens and max(req.tokens) >= local.vocab_size:
        raise APIError(400, f"token ids must be below the vocabulary size {local.vocab_size}")
    return {"prompt": local.decode(req.tokens)}

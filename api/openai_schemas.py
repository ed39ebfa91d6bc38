"""The request and response bodies of the OpenAI-compatible face (``api/openai_compat.py``).

They follow OpenAI's field names and limits; every model allows extra fields, because OpenAI clients send
parameters this server ignores (and ``extra_body`` carries the RAG options: ``collection``, ``top_k``, ``mode``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.types import SynthesisMode


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(max_length=50)
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type in ("text", "input_text"))
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The OpenAI chat request; RAG options (collection, top_k, mode) ride as extra fields."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=500)
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is supported.")
    collection: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]+$",
                                   description="Model `rag`: the collection to answer from (default: `default`, or "
                                   "the first of a scoped key's list). Model `rag:<collection>` names it instead.")
    top_k: int | None = Field(default=None, ge=1, le=100)
    mode: SynthesisMode | None = None


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = Field(default=None, max_length=500)
    prompt: str | None = Field(default=None, max_length=1_000_000)
    messages: list[ChatMessage] | None = Field(default=None, max_length=500)
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = Field(default=None, max_length=500)
    tokens: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(max_length=1_000_000)


def plain_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """The chat as the LLM takes it: text only, and OpenAI's ``developer`` role as the ``system`` role it replaced."""
    role = {"developer": "system"}
    return [{"role": role.get(m.role, m.role), "content": m.text()} for m in messages]

"""Request and response models: they are the OpenAPI schema, and they bound what a client may send.

Bounds (lengths, ranges, patterns) are part of the contract rather than defensive afterthoughts: they turn
nonsense into a 422 before any engine work, and they let a schema-driven fuzzer explore the API meaningfully.
Responses that carry the engine's result types (``rag.types``: Source, Usage, Hit, DocumentInfo, JobInfo) use those
dataclasses directly, so the API schema cannot drift from what the engine returns.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.types import AnswerKind, DocumentInfo, Hit, JobInfo, JobState, SentenceCheck, Source, SynthesisMode, Usage

COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""Collection names double as folder names for uploads, so they are restricted to a safe alphabet."""
NO_NUL = r"^[^\x00]*$"
"""Text that reaches SQL as a parameter: PostgreSQL refuses a NUL character in a string (a 500, not a 422)."""
MAX_ID = 2**31 - 1
"""Ids are 32-bit on PostgreSQL and 64-bit on SQLite; a larger number is an invalid request, not a driver error."""
DocumentIdValue = Annotated[int, Field(ge=1, le=MAX_ID)]


DEFAULT_COLLECTION = "Default: `default`, or for an API key scoped to collections without it, the first of its list."


def NewCollection() -> Any:
    return Field(default=None, pattern=COLLECTION_PATTERN, description=f"Collection to write to. {DEFAULT_COLLECTION}")


def CollectionRef() -> Any:
    return Field(default=None, min_length=1, max_length=200, pattern=NO_NUL,
                 description=f"Collection to read from. {DEFAULT_COLLECTION}")


RetrievalMode = Literal["hybrid", "dense", "lexical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- ingestion -------------------------------------------------------------------------------------
class IngestRequest(_Strict):
    paths: list[str] = Field(
        min_length=1, max_length=1000,
        description="Files or folders on the server; each must resolve inside an allowed root (RAG_ALLOWED_ROOTS). "
        "Relative paths are relative to the first allowed root.",
    )
    collection: str | None = NewCollection()
    summarize: bool | None = Field(default=None, description="Summarise the documents in the background (default: RAG_SUMMARIZE, on).")


class FileError(BaseModel):
    path: str
    status: str
    error: str | None = None


class JobAccepted(BaseModel):
    job_id: str
    state: JobState
    rejected: list[FileError] = Field(
        default_factory=list, description="Uploads not saved because ingestion would skip them (type or size)."
    )


class JobList(BaseModel):
    jobs: list[JobInfo]


# --- query + retrieve -----------------------------------------------------------------------------
class _Question(_Strict):
    question: str = Field(min_length=1, max_length=8000, description="The question (not empty).")
    top_k: int | None = Field(default=None, ge=1, le=100, description="Passages to retrieve (default: RAG_TOP_K).")
    collection: str | None = CollectionRef()
    path_prefix: str | None = Field(
        default=None, max_length=4096, pattern=NO_NUL, description="Only documents under this path."
    )
    document_ids: list[DocumentIdValue] | None = Field(
        default=None, max_length=1000, description="Only these documents."
    )


class Turn(_Strict):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=8000)


class QueryRequest(_Question):
    mode: SynthesisMode | None = Field(default=None, description="Synthesis mode (default: RAG_SYNTHESIS_MODE).")
    history: list[Turn] = Field(
        default_factory=list, max_length=50, description="Earlier turns of the conversation, oldest first: a "
        "follow-up is rewritten from them, and the answer prompt carries the recent ones that fit.",
    )
    stream: bool = Field(default=False, description="Answer as Server-Sent Events (also with Accept: text/event-stream).")


class RetrieveRequest(_Question):
    mode: RetrievalMode = "hybrid"


class QueryResponse(BaseModel):
    text: str = Field(description="The answer; its [n] citations were checked against the passages.")
    kind: AnswerKind = Field(description="'generated': the model's answer, verified and confident enough; "
                             "'extractive': the documents' best sentences, quoted; 'abstained': no answer.")
    confidence: float | None = Field(description="Calibrated probability (0..1) that the model's answer was right: "
                                     "what decided the kind. None with citation verification off.")
    signals: dict[str, float | None] = Field(description="The evidence the confidence was computed from.")
    sources: list[Source] = Field(description="Cited passages, each with the spans that support its sentences.")
    usage: Usage
    abstained: bool
    mode: str
    question: str = Field(description="What was searched and answered: the question, or the follow-up rewritten.")
    rewritten: bool
    groundedness: float | None = Field(description="Share of the answer's checked sentences a cited passage supports.")
    sentences: list[SentenceCheck]


class RetrieveResponse(BaseModel):
    hits: list[Hit]


# --- documents + collections ----------------------------------------------------------------------
class DocumentList(BaseModel):
    documents: list[DocumentInfo]


class Deleted(BaseModel):
    id: int
    deleted: bool = True
    chunks_removed: int


class CollectionOut(BaseModel):
    name: str
    embed_model: str
    embed_dim: int
    documents: int
    generation: int


class CollectionList(BaseModel):
    collections: list[CollectionOut]


# --- watched folders ----------------------------------------------------------------------------------
class WatchedFolderOut(BaseModel):
    path: str
    collection: str
    state: str = Field(description="scanning (the whole folder, at start and after lost events) | applying (a batch) "
                       "| watching (nothing waiting) | missing (looked for again every few seconds) | failed (retried)")
    observer: str = Field(description="What notices changes: inotify, fsevents or polling.")
    backlog: int = Field(description="Changed paths not applied yet (waiting, or in the batch being applied).")
    last_event: str | None = Field(description="When a file of the folder last changed.")
    last_change: str | None = Field(description="When a batch last changed the collection for this folder.")
    batches: int
    rescans: int
    counts: dict[str, int] = Field(description="Files per outcome since the server started (added, moved …).")
    error: str | None = None


class WatchList(BaseModel):
    folders: list[WatchedFolderOut]


# --- health -----------------------------------------------------------------------------------------
class Health(BaseModel):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)


# --- errors (documented, so clients and fuzzers know the shape) -----------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an endpoint can answer with."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT.get(code, "error")} for code in codes}


_ERROR_TEXT = {
    400: "Bad request", 401: "Missing, invalid, expired or revoked API key",
    403: "The key's role does not allow this (or a path outside the allowed roots)",
    404: "Not found", 409: "Conflict with the current state", 413: "Request body too large",
    422: "Invalid request body", 429: "The key's request or answer limit; see Retry-After",
    503: "A model or the store is not available",
}

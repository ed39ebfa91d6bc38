"""Types shared across the layers: the results the SDK, the CLI and the API show (the API serialises them as JSON),
and the vocabulary of ingestion jobs (their states, the progress callback, the cancel signal) that the faces, the
engine, ingestion and the store all speak. Kept here, at the bottom, so none of them imports another for a name.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field


class SynthesisMode(StrEnum):
    """How an answer is drawn from the passages (:mod:`rag.synthesis` has one module per mode).

    The one list of modes: settings, the engine and the API schema all take it, so a new mode is added here once.
    """

    COMPACT = "compact"  # one call with as many passages as fit
    REFINE = "refine"  # walk the passages in batches, refining the answer so far
    TREE_SUMMARIZE = "tree_summarize"  # map over batches, then reduce the partial answers


# --- ingestion jobs -------------------------------------------------------------------------------------------

JobState = Literal["queued", "running", "cancelling", "done", "failed", "cancelled", "interrupted"]
"""An ingestion job's state as SQL stores it and every face shows it."""
JOB_LIVE: tuple[JobState, ...] = ("queued", "running", "cancelling")
"""Not finished yet: its owner still beats a heartbeat into it, and a sweep may mark it interrupted."""
JOB_STARTED: tuple[JobState, ...] = ("running", "cancelling")
"""Picked up by a worker: the states a started job ends from (a cancel may arrive while it runs)."""
JOB_FINISHED: tuple[JobState, ...] = ("done", "failed", "cancelled", "interrupted")
"""Final: nothing changes a finished job, and cancelling one is refused."""

ProgressFn = Callable[[int, int, str], None]
"""Called as (files done, files total, current path) after each file."""


class Cancelled(Exception):
    """Raised inside a run when its ``should_cancel`` callback says so."""


class JobFinished(Exception):
    """Cancelling a job that has already finished (the API answers 409)."""


class ShuttingDown(Exception):
    """A job submitted while the service is stopping (the API answers 503)."""


def utcnow() -> datetime:
    """The clock every stored timestamp uses (timezone-aware UTC): rows, and the job states the faces stamp."""
    return datetime.now(UTC)


FileStatus = Literal["added", "updated", "unchanged", "moved", "removed", "failed", "skipped"]
"""``moved``: a file found at a new path with the content of a document whose old path is gone (a rename or move);
the document takes the new path and keeps its chunks: nothing is parsed or embedded again."""
SummaryState = Literal["none", "pending", "extractive", "done", "rejected", "failed"]
"""A document's summary: ``extractive`` (its central sentences, an LLM summary may follow), ``done`` (the LLM's,
verified against the document), ``rejected`` (the LLM's was not supported by the document or missed its names: the
extractive one stays, and ``summary_error`` says why), ``failed`` (no summary could be written)."""


@dataclass
class Hit:
    """One retrieved passage: a chunk, or a document summary (``kind == "summary"``)."""

    chunk_id: int
    document_id: int
    document: str
    collection: str
    position: int
    text: str
    score: float
    kind: str = "chunk"
    title: str | None = None
    start_char: int | None = None
    end_char: int | None = None
    dense_score: float | None = None
    lexical_score: float | None = None
    page: int | None = None  # 1-based page (PDF page, pptx slide, xlsx sheet) where the passage starts
    page_starts: list[int] = field(default_factory=list)  # offsets in ``text`` where each later page begins
    sheet: str | None = None  # xlsx: the name of the sheet (page) where the passage starts
    later_sheets: list[str] = field(default_factory=list)  # xlsx: the sheet beginning at each of ``page_starts``

    def page_of(self, offset: int) -> int | None:
        """The page holding character ``offset`` of this passage's text (None for a document without pages)."""
        return None if self.page is None else self.page + bisect_right(self.page_starts, offset)

    def sheet_of(self, offset: int) -> str | None:
        """The name of the sheet holding character ``offset`` of this passage's text (None but for xlsx)."""
        later = bisect_right(self.page_starts, offset)
        if self.sheet is None or later > len(self.later_sheets):
            return None
        return self.sheet if later == 0 else self.later_sheets[later - 1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def page_at(page_starts: Sequence[int], offset: int | None) -> int | None:
    """The 1-based page holding ``offset`` given where each page starts; a page without text starts where the next
    one does, so the last page starting at or before the offset is the one (bisect to the right)."""
    if not page_starts or offset is None:
        return None
    return bisect_right(page_starts, offset)


@dataclass
class FileOutcome:
    path: str
    status: FileStatus
    chunks: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    """What one ingestion run did; ``files`` has one entry per file seen or removed."""

    collection: str
    files: list[FileOutcome] = field(default_factory=list)
    elapsed_s: float = 0.0
    summaries_pending: int = 0  # documents of the collection waiting for their first summary when it returned

    def _count(self, status: FileStatus) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def added(self) -> int:
        return self._count("added")

    @property
    def updated(self) -> int:
        return self._count("updated")

    @property
    def unchanged(self) -> int:
        return self._count("unchanged")

    @property
    def moved(self) -> int:
        return self._count("moved")

    @property
    def removed(self) -> int:
        return self._count("removed")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failures(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status in ("failed", "skipped")]

    def counts(self) -> dict[str, int]:
        return {s: self._count(s) for s in ("added", "updated", "unchanged", "moved", "removed", "failed", "skipped")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "counts": self.counts(),
            "files": [asdict(f) for f in self.files],
            "elapsed_s": self.elapsed_s,
            "summaries_pending": self.summaries_pending,
        }


@dataclass
class DocumentInfo:
    id: int
    path: str
    collection: str
    title: str | None
    doc_type: str
    size: int
    content_hash: str
    chunks: int
    status: str
    error: str | None
    summary: str | None
    summary_state: SummaryState
    summary_model: str | None
    summary_error: str | None  # why the last summary attempt failed (state 'failed') or was not kept ('rejected')
    updated_at: str
    pages: int | None = None  # PDF pages, image frames, slides, sheets (None for a document without pages)
    ocr_pages: int = 0  # pages whose text was read by OCR (scans in a PDF, every frame of an image)
    ocr_engine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Span:
    """The words of a passage that support one sentence of an answer, found after generation.

    ``start``/``end`` index the passage's text, ``doc_start``/``doc_end`` the document's indexed text (None when the
    passage's place in it is unknown); ``score`` mixes the embedder's cosine with lexical overlap (0..1);
    ``sentence`` is the index of the supported sentence in ``Answer.sentences``.
    """

    start: int
    end: int
    score: float
    sentence: int
    page: int | None = None
    doc_start: int | None = None
    doc_end: int | None = None
    sheet: str | None = None  # xlsx: the sheet the span starts on


@dataclass
class Source:
    """A numbered source of an answer: ``[number]`` in the text points here; ``spans`` say which of its words
    support which sentence."""

    number: int
    document: str
    document_id: int
    chunk_id: int
    position: int
    text: str
    score: float
    kind: str = "chunk"
    page: int | None = None
    sheet: str | None = None  # xlsx: the sheet where the passage starts
    spans: list[Span] = field(default_factory=list)

    @classmethod
    def of(cls, hit: Hit, number: int, spans: list[Span]) -> Source:
        """Passage ``[number]`` of an answer: the retrieved ``hit``, with the spans that support the answer."""
        return cls(number=number, document=hit.document, document_id=hit.document_id, chunk_id=hit.chunk_id,
                   position=hit.position, text=hit.text, score=hit.score, kind=hit.kind, page=hit.page,
                   sheet=hit.sheet, spans=spans)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Usage:
    """Token accounting of an answer; ``prompt_tokens`` is the largest single request sent."""

    context_window: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_new_tokens: int = 0
    llm_calls: int = 0
    chunks_used: int = 0
    chunks_dropped: int = 0
    chunks_truncated: int = 0
    history_messages: int = 0  # earlier chat messages the answer prompt carried
    history_dropped: int = 0  # earlier chat messages left out for room (the oldest)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SentenceCheck:
    """One sentence of an answer (``start``/``end`` index ``Answer.text``) and whether a cited passage supports it."""

    start: int
    end: int
    supported: bool
    score: float  # best support found among the passages shown (0..1)
    citations: list[int] = field(default_factory=list)


AnswerKind = Literal["generated", "extractive", "abstained"]
"""Which path an answer took (:mod:`rag.synthesis.decision`): the model's text, verified and confident enough
(``generated``); the documents' own best sentences, quoted (``extractive``); or no answer, with the closest passages
(``abstained``)."""


@dataclass
class Answer:
    """``question`` is what was searched and answered: the question, or a follow-up rewritten to stand alone
    (``rewritten``). ``groundedness`` is the share of checked sentences a cited passage supports (None when
    nothing was checked, e.g. an abstention). ``kind`` says which path the answer took; ``confidence`` is the
    calibrated probability that the model's own answer was right (what decided the path; 0 when retrieval found
    nothing relevant and the model was not asked; None with citation verification off), and ``signals`` the
    evidence it was computed from (:mod:`rag.synthesis.confidence`)."""

    text: str
    sources: list[Source] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    mode: str = SynthesisMode.COMPACT.value
    hits: list[Hit] = field(default_factory=list)
    question: str = ""
    rewritten: bool = False
    groundedness: float | None = None
    sentences: list[SentenceCheck] = field(default_factory=list)
    kind: AnswerKind = "generated"
    confidence: float | None = None
    signals: dict[str, float | None] = field(default_factory=dict)

    @property
    def abstained(self) -> bool:
        """No answer was given (``kind == "abstained"``); kept for clients that read this flag."""
        return self.kind == "abstained"

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "kind": self.kind,
            "confidence": self.confidence,
            "signals": self.signals,
            "sources": [s.to_dict() for s in self.sources],
            "usage": self.usage.to_dict(),
            "abstained": self.abstained,
            "mode": self.mode,
            "question": self.question,
            "rewritten": self.rewritten,
            "groundedness": self.groundedness,
            "sentences": [asdict(s) for s in self.sentences],
        }


@dataclass
class JobInfo:
    """An ingestion job as every face shows it (``rag jobs``, ``GET /v1/jobs/{id}``: the API's response schema is
    this class, so the descriptions below are the OpenAPI ones), as persisted in SQL: a restart or another replica
    shows the same."""

    job_id: str
    state: JobState
    collection: str
    paths: list[str]
    total: Annotated[int, Field(description="Files found so far (0 until discovery is done).")]
    processed: int
    counts: Annotated[dict[str, int], Field(
        description="added / updated / unchanged / moved / removed / failed / skipped (and summaries_pending) when done.")]
    errors: Annotated[list[dict[str, str | None]], Field(description="Files failed or skipped: path, status, error.")]
    message: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    executor: Annotated[str, Field(description="'thread' (this service) or 'queue' (rag worker tasks).")] = "thread"
    bytes: Annotated[int, Field(description="Bytes of the files ingested so far (queued jobs).")] = 0
    summaries: Annotated[dict[str, int], Field(
        description="The job's documents per summary state: pending (none yet), extractive, done (LLM), failed, "
        "rejected. Summaries are written in the background after the documents are searchable.",
    )] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Any) -> JobInfo:
        def iso(value: Any) -> str | None:
            return value.isoformat() if value else None

        return cls(
            job_id=run.id, state=run.state, collection=run.collection, paths=list(run.paths or []),
            total=run.total or 0, processed=run.processed or 0, counts=dict(run.counts or {}),
            errors=list(run.errors or []), message=run.message, created_at=iso(run.created_at),
            started_at=iso(run.started_at), finished_at=iso(run.finished_at), executor=run.executor or "thread",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


WatchState = Literal["starting", "scanning", "applying", "watching", "missing", "failed"]
"""A watched folder: ``scanning`` (comparing the whole folder with the collection: at start, after lost events),
``applying`` (a batch of changes), ``watching`` (nothing waiting), ``missing`` (the folder is not there: looked for
again every few seconds, its documents kept), ``failed`` (the last batch failed: retried with backoff)."""


@dataclass
class WatchStatus:
    """One watched folder as ``rag watch``, ``GET /v1/watch`` and the web page show it."""

    path: str
    collection: str
    state: WatchState
    observer: str  # what notices changes: inotify, fsevents, polling ('' until watching)
    backlog: int  # changed paths not applied yet, waiting or in the batch at work (a whole-folder scan counts one)
    last_event: str | None  # when a file of the folder last changed (ISO 8601)
    last_change: str | None  # when a batch last changed the collection for it
    batches: int  # batches applied
    rescans: int  # whole-folder scans: the catch-up at start, and after events were lost
    counts: dict[str, int] = field(default_factory=dict)  # files per outcome (added, moved ...) since the start
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

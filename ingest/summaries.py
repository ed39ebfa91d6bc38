"""Document summaries: written by the LLM after a document's chunks are committed, stored in SQL, embedded, indexed.

Why it is shaped this way:
- Summaries are a later stage: chunks are searchable as soon as ingestion commits them, and summaries follow (in the
  same run with ``RAG.ingest(summarize=True)``, or later with ``rag summarize``). Each document is committed as soon
  as its summary is written, so an interrupt loses at most the document in progress; the rest stay pending and the
  next run picks them up.
- The text is rebuilt from the stored chunks rather than re-read from the file: the file may have changed or gone
  since, and the chunks are exactly what is indexed. The overlap each chunk repeats from the previous one is dropped
  (:mod:`rag.store.document_text`), so the model does not read every boundary twice.
- Every LLM call is built by :func:`rag.budget.budget_prompt`, the exact-count budgeter synthesis uses, so
  ``prompt + max_new_tokens <= context window`` holds by construction, counted with the model's own tokenizer on the
  rendered chat prompt. A document that fits is summarised in one call; a longer one is map-reduced: runs of
  consecutive chunks that fit are summarised, then the partial summaries are combined in groups that fit, level by
  level, until one is left.
- The LLM runs outside any lock, and each summary commits in its own short transaction (ordered with ingestion's
  by the change log), which first checks that the document still has the content hash that was summarised. If
  ingestion changed the document meanwhile, the summary is dropped and the document stays pending for its new text.
- A summary is stored on the document and as a summary chunk with its embedding, by the store
  (:mod:`rag.store.summary_records`, which holds all of this module's SQL), so both indexes and the change log treat
  it like any chunk and retrieval routes a summary hit to that document's best chunks.
- Two kinds (``method``): ``llm`` writes the summary with the LLM (state ``done``); ``extractive`` picks the
  document's most central sentences with the embedder (:mod:`ingest.extractive`, state ``extractive``), seconds
  where the LLM takes minutes on a CPU, and a later ``llm`` run replaces it. The background pass
  (:mod:`ingest.summary_pass`) decides which to run when.
- **An LLM summary is held to the answer's rule** (:mod:`rag.synthesis.decision`): it is kept only when every
  sentence is supported by the text the model read (the verifier's scorer, ``settings.citation_min_support``) and
  it names the document's most distinctive name (the first key term of the extractive summary,
  :func:`ingest.extractive.key_terms`); otherwise the extractive summary is stored instead, with state ``rejected``
  and the reason in ``summary_error``. The prompt gives the model those names, so it can use them.
- Documents are summarised ``concurrency`` at a time, each in a thread of its own: a server such as vLLM batches
  concurrent requests, and a local model (CPU or CUDA) gathers the threads' calls into one batched decode
  (``rag.models.micro_batch``, ``rag.models.batched_decode``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ingest.extractive import CollectionSample, extractive_summary, key_terms
from rag.budget import BudgetedPrompt, Passage, budget_prompt
from rag.models.embedder import Embedder, check_same_embedder
from rag.models.llm import LLM
from rag.settings import Settings
from rag.store.document_text import text_segments
from rag.store.indexes import decode_vector
from rag.store.schema import Collection
from rag.store.store import Store
from rag.store.summary_records import SummaryRecord, SummarySource
from rag.synthesis.verify import text_sentences, unsupported_claims
from rag.types import Cancelled, ProgressFn

log = logging.getLogger(__name__)

SYSTEM = "You write short, factual summaries of documents. Use only what the text says."

DOCUMENT_TEMPLATE = (
    "Summarize the document below in at most {words} words. Say what kind of document it is, what it is about, "
    "and its key facts (names, dates, figures). {names}Write plain prose, without a preamble.\n\n"
    "Document: {title}\n\n{context}"
)
PART_TEMPLATE = (
    "Below is one part of the document {title}. Summarize this part in at most {words} words, keeping its key "
    "facts (names, dates, figures). Write plain prose, without a preamble.\n\n{context}"
)
COMBINE_TEMPLATE = (
    "Below are summaries of consecutive parts of the document {title}. Combine them into one summary of the whole "
    "document in at most {words} words: what kind of document it is, what it is about, and its key facts. {names}"
    "Write plain prose, without a preamble.\n\n{context}"
)

NAMES_IN_PROMPT = 3
MIN_NAME_CHARS = 4
"""Distinctive names (extractive key terms) the LLM summary prompt asks the model to use."""
CENTRE_SAMPLE = 2000
"""Chunks sampled for what the collection's documents share (extractive summaries)."""
MAX_TITLE_CHARS = 200
"""Titles enter every prompt uncut (budget fields are never truncated), so an absurd one is clipped first."""

_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|okay)[,!.]?\s*)?(?:here(?:'s| is)\b[^\n:]*|(?:in )?summary)\s*:\s*", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_BLANK_LINES = re.compile(r"\n\s*\n(?:\s*\n)+")


class SummaryError(Exception):
    """A document that cannot be summarised (window too small, empty output); recorded on the document."""


@dataclass
class _Source:
    """What one summary is written from: the stored document, and its text as segments without overlaps."""

    stored: SummarySource
    title: str
    segments: list[str]

    @classmethod
    def of(cls, stored: SummarySource) -> _Source:
        name = Path(stored.path).name
        title = f"{stored.title} ({name})" if stored.title and stored.title.strip() != name else name
        return cls(stored, title, text_segments(stored.chunks))

    @property
    def path(self) -> str:
        return self.stored.path

    @property
    def texts(self) -> list[str]:
        """The chunks as stored, for extractive summaries."""
        return [text for text, _, _ in self.stored.chunks]


def drop_repeats(text: str) -> str:
    """Each sentence (or line) once: greedy decoding of small models loops ("A Quarter in Review 3" twenty times),
    and a repeated sentence adds nothing to a summary but noise in its embedding."""
    seen: set[str] = set()
    lines: list[str] = []
    for line in text.splitlines():
        kept = []
        for sentence in _SENTENCE_SPLIT.split(line):
            key = " ".join(sentence.lower().split())
            if key and key not in seen:
                seen.add(key)
                kept.append(sentence)
        if kept or not line.strip():
            lines.append(" ".join(kept))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def clean_summary(text: str, finish_reason: str) -> str:
    """The model's text without a chatty preamble or repeats; cut back to the last full sentence when it ran out of
    tokens."""
    text = drop_repeats(_PREAMBLE.sub("", text.strip(), count=1))
    if finish_reason == "length":
        ends = list(_SENTENCE_END.finditer(text))
        if ends and ends[-1].end() >= 0.4 * len(text):
            text = text[: ends[-1].end()]
    return text


def _verbatim(passage: Passage, text: str) -> str:
    """Document segments go into the prompt as they are: they already carry their own separators."""
    return text


def _bulleted(passage: Passage, text: str) -> str:
    return f"- {text}"


Method = Literal["llm", "extractive"]
"""``llm`` or ``extractive``; see the module docstring."""

_STATE = {"llm": "done", "extractive": "extractive", "rejected": "rejected"}
_TODO = {"llm": ("pending", "none", "extractive"), "extractive": ("pending", "none")}
"""The states each method writes, and those it takes up when no documents are named."""


class Summarizer:
    """Writes the summaries of one collection's documents; see the module docstring for the why."""

    def __init__(
        self, store: Store, embedder: Embedder, llm: LLM | None, settings: Settings, *,
        max_input_tokens: int | None = None, concurrency: int = 1,
    ) -> None:
        """``llm`` may be None for extractive summaries only. ``max_input_tokens`` reads only the beginning of
        longer documents: on slow hardware it bounds the cost of a very long document (a 100-page filing is dozens
        of calls on CPU) at the price of a summary of its lead; ``None`` reads whole documents."""
        self.store = store
        self.embedder = embedder
        self.llm = llm  # type: ignore[assignment]  # checked where an LLM summary is written
        self.settings = settings
        self.max_new_tokens = settings.summary_max_new_tokens
        # About 0.6 words per token leaves the model room to finish its last sentence.
        self.words = max(10, self.max_new_tokens * 5 // 8)
        self.model_name = getattr(llm, "name", None) or settings.llm_model
        self.max_input_tokens = max_input_tokens
        self.concurrency = max(1, concurrency)

    # --- public ------------------------------------------------------------------------------------
    def run(
        self,
        collection: str,
        doc_ids: list[int] | None = None,
        force: bool = False,
        progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
        method: Method = "llm",
        limit: int | None = None,
        states: Sequence[str] | None = None,
    ) -> tuple[int, int]:
        """Summarise the documents that need it (at most ``limit`` of them); returns (written, failed).

        Without ``doc_ids``: every indexed document whose summary is pending, never written (``none``) or only
        extractive (for ``llm``), or in ``states``; failed ones are left alone so a document the model cannot handle does not cost a
        call on every run. With ``doc_ids``: those documents unless already done. ``force`` rewrites done ones too
        (e.g. a new model). Raises :class:`ingest.pipeline.Cancelled` when ``should_cancel`` says so; what was
        written stays.
        """
        if method == "llm" and self.llm is None:
            raise ValueError("LLM summaries need an LLM")
        coll = self.store.collection(collection)
        check_same_embedder(collection, coll.embed_model, self.embedder.name)
        todo = self._select(coll.id, doc_ids, force, method, states)[:limit]
        counts = {True: 0, False: 0}
        finished = 0
        last_save = time.monotonic()

        def one(doc_id: int) -> tuple[bool | None, str]:
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"cancelled after {finished} of {len(todo)} summaries")
            source = self._load(doc_id)
            if source is None:
                return None, ""  # deleted or failed since it was selected
            # LLM summaries are background work wherever they run: on a local model they give way to answers, and
            # the calls of this run's threads are decoded together (rag.models.micro_batch). The mark is per thread.
            with nullcontext() if method == "extractive" else self.llm.background(should_cancel):
                return self._one(coll, source, method, should_cancel, sample), source.path

        sample = self._collection_sample(coll) if todo else None
        workers = 1 if method == "extractive" else self.concurrency
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="summary") as pool:
                for outcome, path in (pool.map(one, todo) if workers > 1 else map(one, todo)):
                    finished += 1
                    if outcome is not None:
                        counts[outcome] += 1
                    if progress is not None and path:
                        progress(finished, len(todo), path)
                    if time.monotonic() - last_save > self.settings.index_save_interval_s:
                        self._save_index(coll)
                        last_save = time.monotonic()
        finally:
            if counts[True]:
                self._save_index(coll)
        return counts[True], counts[False]

    def summarize_text(self, title: str, segments: list[str], should_cancel: Callable[[], bool] | None = None,
                       names: Sequence[str] = ()) -> str:
        """One document's summary from its text segments (the lead of them, with ``max_input_tokens``): one call
        when it fits, else map-reduce. ``names`` (its distinctive names) are given to the model to use."""
        named = f"Name it by {', '.join(names[:NAMES_IN_PROMPT])}. " if names else ""
        fields = {"title": title[:MAX_TITLE_CHARS], "words": str(self.words), "names": named}
        segments = self.read_segments(segments)
        passages = [Passage(n, text) for n, text in enumerate(segments, start=1)]
        whole = self._budget(DOCUMENT_TEMPLATE, fields, passages, 0)
        if whole.next_index == len(passages) and not whole.truncated:
            return self._final(self._generate(whole, should_cancel))

        partials: list[str] = []
        start = 0
        while start < len(passages):
            prompt = self._budget(PART_TEMPLATE, fields, passages, start)
            if prompt.truncated:
                log.warning("summary of %s: a chunk longer than the window was cut to fit", title)
            partials.append(self._generate(prompt, should_cancel))
            start = prompt.next_index
        log.debug("summary of %s: %d segments mapped into %d partial summaries", title, len(passages), len(partials))
        return self._final(self._reduce([p for p in partials if p], fields, should_cancel))

    def read_segments(self, segments: list[str]) -> list[str]:
        """What an LLM summary reads of a document's segments: the lead with ``max_input_tokens``, else all."""
        return segments if self.max_input_tokens is None else self._lead(segments, self.max_input_tokens)

    def _lead(self, segments: list[str], max_tokens: int) -> list[str]:
        """The segments that make up the first ``max_tokens`` model tokens of the text (the last one cut)."""
        lead: list[str] = []
        left = max_tokens
        for segment in segments:
            cost = self.llm.count_tokens(segment)
            if cost > left:
                cut = self.llm.truncate(segment, left)
                if cut.strip():
                    lead.append(cut)
                break
            lead.append(segment)
            left -= cost
        return lead

    # --- selection and loading -----------------------------------------------------------------------
    def _select(
        self, collection_id: int, doc_ids: list[int] | None, force: bool, method: Method, states: Sequence[str] | None
    ) -> list[int]:
        skip = () if force else ("done", _STATE[method])
        todo = () if force else (states or _TODO[method])
        return self.store.summary_todo(collection_id, doc_ids=doc_ids, skip_states=skip, todo_states=todo)

    def _load(self, doc_id: int) -> _Source | None:
        stored = self.store.summary_source(doc_id, with_embeddings=True)
        return None if stored is None else _Source.of(stored)

    def _collection_sample(self, coll: Collection, sample: int = CENTRE_SAMPLE) -> CollectionSample | None:
        """What a sample of the collection's chunks says of all its documents; None for a collection of one."""
        rows = self.store.chunk_sample(coll, sample)
        if len({document_id for _, document_id, _ in rows}) < 2:
            return None
        vectors = np.stack([decode_vector(embedding, self.embedder.dim) for embedding, _, _ in rows])
        return CollectionSample.of(vectors, [text for _, _, text in rows])

    # --- one document --------------------------------------------------------------------------------
    def _one(
        self, coll: Collection, source: _Source, method: Method, should_cancel: Callable[[], bool] | None,
        sample: CollectionSample | None = None,
    ) -> bool | None:
        """Summarise and commit one document: True written, False failed, None superseded by a newer version."""
        started = time.monotonic()
        try:
            if not source.segments:
                raise SummaryError("the document has no text to summarise")
            kind: str = method
            problem: str | None = None
            if method == "extractive":
                summary = self._extractive(source, sample)
            else:
                names = key_terms(source.texts, sample)
                summary = self.summarize_text(source.title, source.segments, should_cancel, names)
                if self.settings.verify_summaries:
                    problem = self.unsupported(summary, self.read_segments(source.segments), names)
                if problem:
                    log.info("LLM summary of %s not kept: %s", source.path, problem)
                    summary, kind = self._extractive(source, sample), "rejected"
            vector = self.embedder.embed([summary])[0]
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - one document's failure (model, budget, embedder) must not stop the rest
            log.warning("summary of %s failed: %s", source.path, exc)
            return False if self._commit_failure(coll, source, f"{type(exc).__name__}: {exc}") else None
        if not self._commit(coll, source, summary, vector, kind, problem):
            log.info("%s changed while it was summarised; its summary waits for the new content", source.path)
            return None
        log.info("summarised %s (%s) in %.1fs (%d words)", source.path, kind, time.monotonic() - started,
                 len(summary.split()))
        return True

    def _extractive(self, source: _Source, sample: CollectionSample | None) -> str:
        vectors = np.stack([decode_vector(v, self.embedder.dim) for v in source.stored.embeddings])
        return extractive_summary(source.title, source.texts, vectors, self.embedder, self.words, sample)

    def unsupported(self, summary: str, read: Sequence[str], names: Sequence[str]) -> str | None:
        """Why an LLM ``summary`` of the text ``read`` is not kept (None: it is): the document's most distinctive name
        (the first of ``names`` of at least :data:`MIN_NAME_CHARS` letters) missing, or a sentence the text does not
        support."""
        named = [n for n in names if len(n) >= MIN_NAME_CHARS]  # "Old" (of "Old Norse") is no name to require
        if named and named[0].lower() not in summary.lower():
            return f"it does not name {named[0]}"
        candidates = [c for segment in read for c in text_sentences(segment)]
        claims = unsupported_claims(summary, candidates, self.embedder, self.settings.citation_min_support)
        if claims:
            return f"{len(claims)} of its sentences are not supported by the document, e.g. “{claims[0][:160]}”"
        return None

    def _budget(
        self, template: str, fields: dict[str, str], passages: list[Passage], start: int, *, bulleted: bool = False
    ) -> BudgetedPrompt:
        return budget_prompt(
            self.llm,
            system=SYSTEM,
            template=template,
            fields=fields,
            passages=passages,
            max_new_tokens=self.max_new_tokens,
            start=start,
            overflow="stop",
            formatter=_bulleted if bulleted else _verbatim,
            separator="\n" if bulleted else "",
        )

    def _generate(self, prompt: BudgetedPrompt, should_cancel: Callable[[], bool] | None) -> str:
        if should_cancel is not None and should_cancel():
            raise Cancelled("cancelled while summarising")
        result = self.llm.generate(
            prompt.messages, max_new_tokens=prompt.max_new_tokens, temperature=0.0, top_p=1.0
        )
        return clean_summary(result.text, result.finish_reason)

    def _reduce(self, partials: list[str], fields: dict[str, str], should_cancel: Callable[[], bool] | None) -> str:
        """Combine partial summaries in groups that fit the window, level by level, until one is left."""
        if not partials:
            raise SummaryError("the model wrote no text for any part of the document")
        while len(partials) > 1:
            items = [Passage(n, text) for n, text in enumerate(partials, start=1)]
            groups: list[BudgetedPrompt] = []
            start = 0
            while start < len(items):
                groups.append(self._budget(COMBINE_TEMPLATE, fields, items, start, bulleted=True))
                start = groups[-1].next_index
            if len(groups) == len(items):
                raise SummaryError(
                    f"the context window of {self.llm.context_window} tokens cannot hold two partial summaries of "
                    f"{self.max_new_tokens} tokens; lower RAG_SUMMARY_MAX_NEW_TOKENS"
                )
            # A group of one (the tail of a level) is carried up as it is, not paraphrased by another call.
            partials = [
                items[g.passages[0].index].text if len(g.passages) == 1 and not g.truncated
                else self._generate(g, should_cancel)
                for g in groups
            ]
            partials = [p for p in partials if p]
            if not partials:
                raise SummaryError("the model wrote no text when combining the partial summaries")
        return partials[0]

    @staticmethod
    def _final(summary: str) -> str:
        if not summary.strip():
            raise SummaryError("the model wrote an empty summary")
        return summary

    # --- commits -------------------------------------------------------------------------------------
    def _commit(self, coll: Collection, source: _Source, summary: str, vector: np.ndarray, kind: str,
                note: str | None = None) -> bool:
        """Store the summary (``kind``: a method, or ``rejected`` for the extractive summary that stands in for an
        LLM one not kept, ``note`` saying why), unless the document changed meanwhile."""
        model = self.model_name if kind == "llm" else f"extractive:{self.embedder.name}"
        record = SummaryRecord(summary, vector, self.embedder.count_tokens(summary), model, _STATE[kind], note)
        return self.store.write_summary(coll, source.stored, record)

    def _commit_failure(self, coll: Collection, source: _Source, error: str) -> bool:
        return self.store.write_summary_failure(coll, source.stored, error)

    def _save_index(self, coll: Collection) -> None:
        self.store.indexes.save(coll)

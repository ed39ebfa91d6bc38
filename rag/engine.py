"""The engine: one object that owns settings, store and models; the SDK, CLI and API all call it.

Models load lazily (a process that only lists documents never loads the embedder; one that only retrieves
never loads the LLM) and are shared per process, so many ``RAG`` objects over one data directory are cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from rag.models.llm import Message
from rag.settings import Settings, WatchedFolder
from rag.store.store import Store, StoreError
from rag.types import Answer, DocumentInfo, Hit, IngestReport, JobInfo, ProgressFn

if TYPE_CHECKING:
    from ingest.watch import Watcher
    from rag.synthesis import Chat

log = logging.getLogger(__name__)


class RAG:
    """Retrieval-augmented QA over the documents of one data directory (or one shared database).

    >>> rag = RAG("./my-data")
    >>> rag.ingest(["docs/"])
    >>> rag.query("How do I configure X?").text
    """

    def __init__(self, data_dir: str | Path | None = None, settings: Settings | None = None, **overrides: Any) -> None:
        if settings is None:
            if data_dir is not None:
                overrides["data_dir"] = data_dir
            settings = Settings(**overrides)
        elif data_dir is not None or overrides:
            settings = settings.model_copy(update={**overrides, **({"data_dir": Path(data_dir).resolve()} if data_dir else {})})
        self.settings = settings
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.settings)
        self._parts: dict[str, Any] = {}
        self._part_locks = {name: threading.Lock() for name in ("embedder", "retriever", "pipeline", "llm", "queue", "summaries")}
        self._watchers: list[Watcher] = []

    # --- lazily loaded parts -------------------------------------------------------------------------
    def _part(self, name: str, build: Callable[[], Any]) -> Any:
        """Build a part once, even when the API's threads ask for it together (two embedders would each load
        the model). One lock per part: loading the LLM (a minute on first use) does not hold up retrieval."""
        part = self._parts.get(name)
        if part is None:
            with self._part_locks[name]:
                part = self._parts.get(name)
                if part is None:
                    part = self._parts[name] = build()
        return part

    @property
    def embedder(self):
        from rag.models.embedder import load_embedder

        return self._part("embedder", lambda: load_embedder(self.settings))

    @property
    def retriever(self):
        from rag.retrieval import Retriever

        return self._part("retriever", lambda: Retriever(self.store, self.embedder, self.settings))

    @property
    def pipeline(self):
        from ingest.pipeline import IngestPipeline

        return self._part("pipeline", lambda: IngestPipeline(self.store, self.embedder, self.settings))

    @property
    def llm(self):
        from rag.models import load_llm

        return self._part("llm", lambda: load_llm(self.settings))

    @property
    def summaries(self):
        """The background summary pass of this engine (started by :meth:`ingest` and ``rag serve``)."""
        from ingest.summary_pass import SummaryPass

        return self._part(
            "summaries", lambda: SummaryPass(self.store, self.settings, lambda: self.embedder, lambda: self.llm)
        )

    @property
    def queue(self):
        from ingest.queue import TaskQueue

        return self._part("queue", lambda: TaskQueue(self.settings))

    # --- ingestion ---------------------------------------------------------------------------------
    def submit(self, paths: str | Path | list[str | Path], collection: str = "default", *,
               summarize: bool | None = None) -> str:
        """Queue an ingestion job for ``rag worker`` processes (``RAG_BROKER_URL``); returns the job id.

        The folders are walked and diffed here, files that are gone leave the collection here, and each file to
        visit becomes one task; :meth:`job` reports progress as workers finish them."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        do_summaries = self.settings.summarize if summarize is None else summarize
        return self.queue.enqueue_job(self, [str(p) for p in paths], collection, do_summaries)

    def job(self, job_id: str) -> JobInfo:
        """An ingestion job's state and progress, wherever it runs (this process, a replica, workers)."""
        run = self.store.get_run(job_id)
        if run is None:
            raise KeyError(f"no job {job_id!r}")
        info = JobInfo.of(run)
        if run.executor == "queue":  # counted from the items its tasks recorded (a cancelled job's too)
            counts, failures, done_bytes, last = self.store.item_summary(job_id)
            info.counts, info.errors, info.processed, info.bytes = counts, failures, sum(counts.values()), done_bytes
            info.message = f"last file: {last}" if last else info.message
        # Summaries of the documents written since the job was created (a later job's too, if one overlaps).
        info.summaries = self.store.summary_states(run.collection, updated_since=run.created_at).get(run.collection, {})
        return info

    def ingest(
        self,
        paths: str | Path | list[str | Path],
        collection: str = "default",
        *,
        summarize: bool | None = None,
        progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> IngestReport:
        """Bring the collection in line with ``paths``: new and changed files are indexed, unchanged files
        skipped, files gone from an ingested folder removed. Returns as soon as the chunks are searchable.

        With ``summarize`` (default: Settings, on), each new or changed document is then summarised by the
        background pass of this engine (:attr:`summaries`); :meth:`wait_for_summaries` waits for it."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        do_summaries = self.settings.summarize if summarize is None else summarize
        report = self.pipeline.run(
            list(paths), collection, progress=progress, should_cancel=should_cancel, summarize_pending=do_summaries
        )
        report.summaries_pending = self.store.summary_states(collection).get(collection, {}).get("pending", 0)
        if do_summaries and report.summaries_pending:
            self.summaries.wake()
        return report

    def watch(self, folders: Sequence[WatchedFolder] | None = None, *, summarize: bool | None = None) -> Watcher:
        """Keep collections in line with folders as their files change (default: ``RAG_WATCH``), until :meth:`close`.

        Returns once watching; each folder's catch-up scan and every later batch run in the watcher's thread, through
        :meth:`ingest` (or :meth:`submit`, for ``rag worker`` processes, with a broker). ``status()`` of the returned
        watcher says how each folder stands. See ``ingest/watch/watcher.py``."""
        from ingest.watch import Watcher

        do_summaries = self.settings.summarize if summarize is None else summarize

        def apply(collection: str, paths: list[Path], drop: list[int], should_cancel: Callable[[], bool]) -> dict[str, int]:
            counts: Counter[str] = Counter()
            if drop:  # left out by a .ragignore rule now: their files remain, so ingestion would keep them
                self.pipeline.delete(collection, drop)
                counts["removed"] = len(drop)
            if paths and self.settings.broker_url:  # moves and removals are settled here, the rest is queued
                job = self.job(self.submit(list(paths), collection, summarize=do_summaries))
                counts.update(job.counts)
                counts["queued"] += job.total - sum(job.counts.values())
            elif paths:
                report = self.ingest(list(paths), collection, summarize=do_summaries, should_cancel=should_cancel)
                counts.update(report.counts())
            return dict(counts)

        folders = list(self.settings.watch if folders is None else folders)
        watcher = Watcher(self.store, self.settings, folders, apply, prepare=lambda: self.pipeline)
        watcher.start()
        self._watchers.append(watcher)
        return watcher

    def wait_for_summaries(
        self, collection: str | None = None, *, timeout: float | None = None, progress: ProgressFn | None = None,
        poll_s: float = 0.5,
    ) -> dict[str, int]:
        """Block until no document (of ``collection``, or of any) waits for its first summary; returns the
        documents per summary state. Runs this engine's background pass unless workers write the summaries
        (``RAG_BROKER_URL``). Extractive summaries may still be upgraded by the LLM afterwards.

        Raises TimeoutError after ``timeout`` seconds and RuntimeError when the pass keeps failing."""
        if not self.settings.broker_url:
            self.summaries.wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            states: dict[str, int] = {}
            for counts in self.store.summary_states(collection).values():
                for state, n in counts.items():
                    states[state] = states.get(state, 0) + n
            total = sum(n for state, n in states.items() if state != "none")
            pending = states.get("pending", 0)
            if progress is not None:
                progress(total - pending, total, "")
            if not pending:
                return states
            passing = self._parts.get("summaries")
            if passing is not None and passing.error:
                raise RuntimeError(f"the summary pass is failing: {passing.error}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{pending} document(s) still wait for a summary after {timeout:.0f}s")
            time.sleep(poll_s)

    def summarize(
        self,
        collection: str = "default",
        *,
        documents: list[str | int] | None = None,
        force: bool = False,
        progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> tuple[int, int]:
        """Write summaries for documents whose summary is pending (or all/the given ones with ``force``);
        resumable: an interrupted run leaves the rest pending. Returns (written, failed)."""
        from ingest.summaries import Summarizer

        doc_ids = None if documents is None else [self._document_id(d, collection) for d in documents]
        summarizer = Summarizer(
            self.store, self.embedder, self.llm, self.settings,
            max_input_tokens=self.summaries.plan.max_input_tokens, concurrency=self.summaries.plan.concurrency,
        )
        return summarizer.run(collection, doc_ids=doc_ids, force=force, progress=progress, should_cancel=should_cancel)

    def delete(self, path_or_id: str | int, collection: str | None = None) -> int:
        """Remove a document (by id or path) from SQL and the index; returns the number of chunks removed.

        An uploaded document's file (under ``<data_dir>/uploads/``) is removed with it, whichever face deletes;
        a document anywhere else is the user's own file and stays on disk."""
        from ingest.uploads import discard_upload

        doc = self.store.find_document(path_or_id, collection)
        if doc is None:
            raise KeyError(f"no document {path_or_id!r}")
        collection_name = self.store.collection_name(doc.collection_id)
        removed = len(self.pipeline.delete(collection_name, [doc.id]))
        discard_upload(self.settings.data_dir, doc.path)
        return removed

    # --- reading -----------------------------------------------------------------------------------
    def documents(self, collection: str | None = None) -> list[DocumentInfo]:
        return self.store.document_infos(collection)

    def document(self, path_or_id: str | int, collection: str | None = None) -> DocumentInfo:
        doc_id = self._document_id(path_or_id, collection)
        return self.store.document_infos(doc_ids=[doc_id])[0]

    def summary(self, path_or_id: str | int, collection: str | None = None) -> str | None:
        return self.document(path_or_id, collection).summary

    def collections(self) -> list[dict[str, Any]]:
        return self.store.collections()

    def _document_id(self, path_or_id: str | int, collection: str | None) -> int:
        doc = self.store.find_document(path_or_id, collection)
        if doc is None:
            raise KeyError(f"no document {path_or_id!r}")
        return doc.id

    def ready(self) -> bool:
        """Whether the store answers a query now; a failure is logged, not raised, since a probe only asks yes or no.

        Models are not asked: they load lazily, and the API tracks their loading itself."""
        try:
            self.store.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means: the database is down or unreachable
            log.warning("readiness: store check failed: %s", exc)
            return False
        return True

    # --- query -------------------------------------------------------------------------------------
    def retrieve(
        self,
        question: str,
        top_k: int | None = None,
        collection: str = "default",
        *,
        path_prefix: str | None = None,
        document_ids: list[int] | None = None,
        mode: str = "hybrid",
    ) -> list[Hit]:
        """Ranked passages for ``question`` (no LLM involved)."""
        if not question or not question.strip():
            raise ValueError("the question is empty")
        return self.retriever.retrieve(
            question, collection=collection, top_k=top_k, path_prefix=path_prefix, document_ids=document_ids, mode=mode
        )

    def query(
        self,
        question: str,
        top_k: int | None = None,
        collection: str = "default",
        *,
        mode: str | None = None,
        path_prefix: str | None = None,
        document_ids: list[int] | None = None,
    ) -> Answer:
        """A grounded answer with numbered, verified citations, or an abstention when nothing relevant was found."""
        return self.chat(_asked(question), top_k, collection, mode=mode, path_prefix=path_prefix,
                         document_ids=document_ids)

    def stream(
        self,
        question: str,
        top_k: int | None = None,
        collection: str = "default",
        *,
        mode: str | None = None,
        path_prefix: str | None = None,
        document_ids: list[int] | None = None,
    ) -> Iterator[str | Answer]:
        """Text pieces as the model writes them, then the final ``Answer`` (sources and usage)."""
        return self.chat_stream(_asked(question), top_k, collection, mode=mode, path_prefix=path_prefix,
                                document_ids=document_ids)

    def conversation(self, messages: Sequence[Message]) -> Chat:
        """The question (last user message) and history of OpenAI-style ``messages``; ``needs_rewrite`` says, without
        the model, whether answering it will first rewrite it (so the API can queue for the model before)."""
        from rag.synthesis import read_chat

        return read_chat(messages, may_rewrite=self.settings.rewrite_followups)

    def chat(
        self,
        messages: Sequence[Message] | Chat,
        top_k: int | None = None,
        collection: str = "default",
        *,
        mode: str | None = None,
        path_prefix: str | None = None,
        document_ids: list[int] | None = None,
        hits: Sequence[Hit] | None = None,
    ) -> Answer:
        """Answer the last user message of a conversation (OpenAI message format): a follow-up that does not stand
        alone is rewritten from the earlier turns first (``Answer.question``), and the answer prompt carries as much
        recent history as the passages leave room for.

        ``hits``: what :meth:`retrieve` already returned for this question with these options (the API retrieves
        before queueing for the model, to abstain early), answered from instead of retrieving again; the answer is
        the same. Only for a question that stands alone: a follow-up is searched as rewritten (ValueError)."""
        replies = self._respond(messages, top_k, collection, mode, path_prefix, document_ids, hits, streaming=False)
        while True:
            try:
                next(replies)
            except StopIteration as stop:
                return stop.value

    def chat_stream(
        self,
        messages: Sequence[Message] | Chat,
        top_k: int | None = None,
        collection: str = "default",
        *,
        mode: str | None = None,
        path_prefix: str | None = None,
        document_ids: list[int] | None = None,
        hits: Sequence[Hit] | None = None,
    ) -> Iterator[str | Answer]:
        """:meth:`chat` streamed: text pieces, then the final ``Answer`` (its text with the verified citations)."""
        answer = yield from self._respond(messages, top_k, collection, mode, path_prefix, document_ids, hits,
                                          streaming=True)
        yield answer

    def _respond(
        self,
        messages: Sequence[Message] | Chat,
        top_k: int | None,
        collection: str,
        mode: str | None,
        path_prefix: str | None,
        document_ids: list[int] | None,
        retrieved: Sequence[Hit] | None,
        *,
        streaming: bool,
    ) -> Generator[str, None, Answer]:
        """Rewrite (when needed) → retrieve (unless ``retrieved``) → abstain, or order the passages, pick the key
        sentences and synthesize with history → verify."""
        from rag.synthesis import Chat, order_for_answer, rewrite, stream_answer, synthesize

        chat = messages if isinstance(messages, Chat) else self.conversation(messages)
        if retrieved is not None and chat.needs_rewrite:
            raise ValueError("hits retrieved beforehand answer a question that stands alone, not a follow-up")
        rewriting = None
        if chat.needs_rewrite:
            chat.standalone, rewriting = rewrite(self.llm, chat)
        if retrieved is None:
            hits, answer = self.evidence(chat.standalone, top_k, collection, mode=mode, path_prefix=path_prefix,
                                         document_ids=document_ids)
        else:
            hits, answer = list(retrieved), None
        mode = mode or self.settings.synthesis_mode
        reading = None
        if answer is not None:
            if streaming:
                yield answer.text
        else:
            reading = order_for_answer(
                chat.standalone, hits, self.embedder, self.settings.passage_order_dense_weight,
                reorder=self.settings.order_passages,
                key_sentences=max(self.settings.key_sentences, self.settings.extractive_quotes),
                min_relative_support=self.settings.passage_min_relative_support,
            )
            hits = reading.hits[: reading.shown]
            options: dict[str, Any] = {
                "apply_abstention": False, "history": chat.history, "key_sentences": reading.key_sentences,
                "embedder": self.embedder if self.settings.verify_citations else None,
            }
            if not streaming:
                answer = synthesize(chat.standalone, hits, self.llm, self.settings, mode, **options)
            else:
                for item in stream_answer(chat.standalone, hits, self.llm, self.settings, mode, **options):
                    if isinstance(item, Answer):
                        answer = item
                    else:
                        yield item
        assert answer is not None
        if reading is not None and reading.shown < len(reading.hits):  # the passages not shown are still hits
            answer.hits = reading.hits
            answer.usage.chunks_dropped += len(reading.hits) - reading.shown
        answer.question, answer.rewritten = chat.standalone, chat.rewritten
        if rewriting is not None:  # the rewrite is one more call of this answer
            answer.usage.llm_calls += 1
            answer.usage.completion_tokens += rewriting.completion_tokens
            answer.usage.prompt_tokens = max(answer.usage.prompt_tokens, rewriting.prompt_tokens)
        return answer

    def evidence(
        self,
        question: str,
        top_k: int | None = None,
        collection: str = "default",
        *,
        mode: str | None = None,
        path_prefix: str | None = None,
        document_ids: list[int] | None = None,
    ) -> tuple[list[Hit], Answer | None]:
        """The one answerability step before the model: the hits for ``question``, and the abstention answer when
        retrieval found nothing relevant (then the model is not asked, nor even loaded). The API runs it before
        queueing for the model and passes the hits on (``chat(..., hits=...)``)."""
        from rag.synthesis import abstain, should_abstain

        hits = self.retrieve(question, top_k, collection, path_prefix=path_prefix, document_ids=document_ids)
        if not should_abstain(hits, self.settings):
            return hits, None
        answer = abstain(hits, mode or self.settings.synthesis_mode, self.settings)
        answer.question = question
        return hits, answer

    def close(self) -> None:
        """Stop the watchers and the summary pass (after the call in hand) and release the store; pending summaries
        stay pending."""
        for watcher in self._watchers:
            watcher.stop()
        summaries = self._parts.get("summaries")
        if summaries is not None:
            summaries.close()
        queue = self._parts.get("queue")
        if queue is not None:
            queue.close()
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _asked(question: str) -> list[Message]:
    """A single question as a conversation of one user message."""
    if not question or not question.strip():
        raise ValueError("the question is empty")
    return [{"role": "user", "content": question}]


__all__ = ["RAG", "StoreError"]

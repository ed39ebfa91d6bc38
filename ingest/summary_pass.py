"""The background summary pass: writes the pending summaries of every collection while this process lives.

Why it is shaped this way:
- Ingestion only marks new and changed documents ``pending``; their chunks are searchable at once. This pass then
  summarises them in a thread of the engine (the embedded default and ``rag serve`` without a broker; with a broker
  the workers run the same :class:`~ingest.summaries.Summarizer` as tasks). SQL is its only state, so a process
  killed mid-pass loses at most the document in hand, and any later pass (the next ``rag serve``, the next SDK
  ingest) takes up what is still pending.
- The methods come from :func:`summary_plan`, by hardware: with a local model on the CPU, every pending document
  first gets an extractive summary (seconds), then the LLM replaces them (minutes each, reading the lead only;
  a few decoded together, see ``rag.models.batched_decode``); with a GPU or a server, the LLM writes them
  directly, several at once. Extractive work always goes first:
  a document ingested while LLM upgrades run gets its extractive summary after the LLM call in hand.
- LLM calls run as background work (:meth:`rag.models.llm.LLM.background`): on a local model they pause whenever
  an answer is waiting, so queries never queue behind a summary.
- The pass wakes when this process ingests, and otherwise looks for pending documents every
  ``POLL_S`` seconds (documents another process ingested into the same store).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ingest.summaries import Method, Summarizer
from rag.models import background_batch, llm_placement
from rag.models.embedder import Embedder
from rag.models.llm import LLM
from rag.settings import Settings
from rag.store.store import Store
from rag.types import Cancelled

log = logging.getLogger(__name__)

POLL_S = 30.0
"""How often an idle pass looks for documents another process left pending (one indexed GROUP BY)."""
CPU_LEAD_TOKENS = 2048
"""What an LLM summary reads of each document with a local model on the CPU (bench/summaries.py recall)."""


@dataclass(frozen=True)
class SummaryPlan:
    """What the background pass runs, in order, and how."""

    methods: tuple[Method, ...]
    max_input_tokens: int | None
    concurrency: int


def summary_plan(settings: Settings, llm_runs_on: str) -> SummaryPlan:
    """The plan for these settings; ``llm_runs_on`` is ``cpu``, ``cuda`` or ``server``. See the module docstring."""
    cpu = llm_runs_on == "cpu"
    method = settings.summary_method
    if method == "auto":
        method = "extractive+llm" if cpu else "llm"
    methods: tuple[Method, ...] = ("extractive", "llm") if method == "extractive+llm" else (method,)  # type: ignore[assignment]
    max_input = settings.summary_max_input_tokens or (CPU_LEAD_TOKENS if cpu else None)
    concurrency = settings.summary_concurrency or background_batch(settings, llm_runs_on)
    return SummaryPlan(methods, max_input, concurrency)


class SummaryPass:
    """One background thread that writes pending summaries; :meth:`wake` after ingesting, :meth:`close` to stop."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        embedder: Callable[[], Embedder],
        llm: Callable[[], LLM],
    ) -> None:
        """Models come as callables so that a pass with nothing to do loads none, and an extractive-only one
        never loads the LLM."""
        self.store = store
        self.settings = settings
        self._embedder, self._llm = embedder, llm
        self._plan: SummaryPlan | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.idle = threading.Event()  # set while the pass finds nothing to do
        self.error: str | None = None  # why the last step failed, until one succeeds

    @property
    def plan(self) -> SummaryPlan:
        if self._plan is None:
            self._plan = summary_plan(self.settings, llm_placement(self.settings))
        return self._plan

    def wake(self) -> None:
        """Start the thread if needed and have it look for pending documents now."""
        self.idle.clear()
        self._wake.set()
        with self._start_lock:
            if self._stop.is_set():
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="summary-pass", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop after the call in hand (an LLM call is not interrupted); what was written stays."""
        with self._start_lock:
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join()

    # --- the thread ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                worked = self._step()
            except Cancelled:
                return
            except Exception as exc:  # a database hiccup or a model that fails to load: log, wait, try again
                log.exception("summary pass failed; retrying in %.0fs", POLL_S)
                self.error = f"{type(exc).__name__}: {exc}"
                worked = False
            else:
                self.error = None
            if not worked:
                self.idle.set()
                self._wake.wait(POLL_S)

    def _step(self) -> bool:
        """Run one unit of work (every pending extractive summary, or a few LLM ones); False when there is none."""
        backlog = self.store.summary_states()
        plan = self.plan
        for method in plan.methods:
            states = ("pending",) if method == "extractive" else ("pending", "extractive")
            for collection, counts in sorted(backlog.items()):
                if any(counts.get(state) for state in states):
                    self._run(collection, method, states)
                    return True
        return False

    def _run(self, collection: str, method: Method, states: tuple[str, ...]) -> None:
        # LLM summaries a few at a time, then back to the backlog: newly ingested documents get their extractive
        # summary (or their turn) without waiting for every LLM upgrade.
        limit = None if method == "extractive" else self.plan.concurrency
        write_summaries(
            self.store, self.settings, self.plan, self._embedder, self._llm, collection, method,
            states=states, limit=limit, should_cancel=self._stop.is_set,
        )


def write_summaries(
    store: Store,
    settings: Settings,
    plan: SummaryPlan,
    embedder: Callable[[], Embedder],
    llm: Callable[[], LLM],
    collection: str,
    method: Method,
    *,
    doc_ids: list[int] | None = None,
    states: tuple[str, ...] | None = None,
    limit: int | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[int, int]:
    """Summaries of one method (LLM calls as background work, see :class:`Summarizer`), for the pass and for a
    worker's summary task."""
    if method == "extractive":
        summarizer = Summarizer(store, embedder(), None, settings)
        return summarizer.run(collection, doc_ids=doc_ids, method=method, states=states, should_cancel=should_cancel)
    model = llm()
    summarizer = Summarizer(
        store, embedder(), model, settings, max_input_tokens=plan.max_input_tokens, concurrency=plan.concurrency
    )
    return summarizer.run(
        collection, doc_ids=doc_ids, method=method, states=states, limit=limit, should_cancel=should_cancel
    )

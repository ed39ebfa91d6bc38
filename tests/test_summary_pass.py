"""Summaries by default, in the background: the pass, its restart, the model gate, and concurrency to a real server.

Real models throughout: SmolLM2-135M (in this process, or behind this service's own OpenAI-compatible API in a
subprocess), the bundled MiniLM embedder, SQLite and FAISS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import rag.models
from rag import RAG
from rag.models.local_llm import LocalLLM
from rag.store.schema import Chunk
from rag.types import Cancelled
from tests.conftest import REPO, SMALL_LLM, write_files
from tests.test_summaries import SHORT_DOCS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MORE_DOCS = {
    "tides.txt": "Ocean tides. Tides are the rise and fall of sea levels caused by the Moon's gravity and the rotation "
    "of the Earth. Most coasts see two high tides and two low tides every lunar day.",
    "glass.txt": "Glassmaking. Glass is made by melting sand, soda ash and limestone at about 1,500 degrees Celsius, "
    "then shaping and slowly cooling the melt so that it does not crack.",
    "tea.txt": "Green tea. Green tea is made from leaves of Camellia sinensis that are steamed or pan-fired soon "
    "after picking, which stops oxidation and keeps the leaves green.",
}
LONG_ANSWER = [{"role": "user", "content": "List the numbers from 1 to 300, separated by commas: 1, 2, 3, 4, 5,"}]
SHORT_ANSWER = [{"role": "user", "content": "Name a colour."}]


def _states(engine: RAG) -> dict[str, str]:
    return {Path(d.path).name: d.summary_state for d in engine.documents()}


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_default_settings_summarize_in_the_background(
    monkeypatch: pytest.MonkeyPatch, make_rag: Callable[..., RAG], tmp_path: Path
) -> None:
    monkeypatch.delenv("RAG_SUMMARIZE", raising=False)  # the suite turns them off; this test is about the default
    docs = tmp_path / "docs"
    write_files(docs, SHORT_DOCS)
    engine = make_rag(tmp_path / "data", llm_model=SMALL_LLM, summary_max_new_tokens=32)
    assert engine.settings.summarize and engine.settings.summary_method == "auto"
    assert engine.summaries.plan.methods == ("extractive", "llm")  # a local model on the CPU

    report = engine.ingest(docs)
    assert report.summaries_pending == 3  # ingest returned before any summary was written
    assert engine.wait_for_summaries(timeout=120).get("pending", 0) == 0
    assert set(_states(engine).values()) <= {"extractive", "done"}

    # The LLM then replaces each extractive summary, in the background, or is checked and not kept (the 135M model's
    # often are not: "rejected", the extractive one stays); each summary is indexed like a chunk.
    _wait(lambda: set(_states(engine).values()) <= {"done", "rejected"}, 300, "the LLM summaries")
    for d in engine.documents():
        assert d.summary_model == (SMALL_LLM if d.summary_state == "done" else f"extractive:{engine.embedder.name}")
    coll = engine.store.collection("default")
    with engine.store.session() as s:
        sql_ids = set(s.scalars(select(Chunk.id).where(Chunk.collection_id == coll.id)))
        assert len(list(s.scalars(select(Chunk.id).where(Chunk.kind == "summary")))) == 3
    assert set(engine.store.index(coll).ids().tolist()) == sql_ids
    job_like = engine.store.summary_states("default")
    assert sum(job_like["default"].values()) == 3 and set(job_like["default"]) <= {"done", "rejected"}


def test_summarize_off_writes_none(monkeypatch: pytest.MonkeyPatch, make_rag: Callable[..., RAG], tmp_path: Path) -> None:
    monkeypatch.setenv("RAG_SUMMARIZE", "off")  # as a person types it
    docs = tmp_path / "docs"
    write_files(docs, SHORT_DOCS)
    engine = make_rag(tmp_path / "data", llm_model=SMALL_LLM)
    assert engine.settings.summarize is False
    assert engine.ingest(docs).summaries_pending == 0
    assert set(_states(engine).values()) == {"none"}
    assert "summaries" not in engine._parts  # no pass was started, no model loaded for it


def test_a_pass_killed_midway_resumes_in_the_next_process(make_rag: Callable[..., RAG], tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(docs, {**SHORT_DOCS, **MORE_DOCS})
    data = tmp_path / "data"
    # The pass is what is tested here, not the summary check: every LLM summary is kept.
    settings = {"llm_model": SMALL_LLM, "summary_method": "llm", "summary_max_new_tokens": 48,
                "verify_summaries": False}
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from rag import RAG
        engine = RAG({str(data)!r}, summarize=True, **{settings!r})
        engine.ingest({str(docs)!r})
        engine.wait_for_summaries()
    """)
    env = {**os.environ, "RAG_SUMMARIZE": "on"}
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env)
    observer = make_rag(data, **settings)
    try:
        _wait(lambda: data.joinpath("rag.db").exists() and "done" in _states(observer).values(), 300,
              "the first summary")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    before = {Path(d.path).name: (d.summary_state, d.summary) for d in observer.documents()}
    assert "pending" in {state for state, _ in before.values()}, "the child finished before it was killed"

    engine = make_rag(data, **settings)
    report = engine.ingest(docs)  # nothing changed on disk; the pending summaries are taken up again
    assert report.unchanged == 6 and report.summaries_pending >= 1
    assert engine.wait_for_summaries(timeout=300) == {"done": 6}
    after = {Path(d.path).name: (d.summary_state, d.summary) for d in engine.documents()}
    for name, (state, summary) in before.items():
        if state == "done":
            assert after[name] == (state, summary), "a summary written before the kill was not redone"


@pytest.fixture
def layer_calls(hf_llm: LocalLLM) -> Iterator[dict[str, Any]]:
    """Counts the first decoder layer's calls, and records the threads that make them."""
    record: dict[str, Any] = {"calls": 0, "threads": set()}
    first = next(m for m in hf_llm.model.modules() if type(m).__name__.endswith("DecoderLayer"))

    def count(_module: Any, _args: Any) -> None:
        record["calls"] += 1
        record["threads"].add(threading.current_thread().name)

    handle = first.register_forward_pre_hook(count)
    yield record
    handle.remove()


def _background(llm: LocalLLM, messages: Sequence[dict[str, str]], result: dict[str, Any],
                cancel: Callable[[], bool] | None = None) -> threading.Thread:
    def run() -> None:
        try:
            with llm.background(cancel):
                result["generation"] = llm.generate(messages, max_new_tokens=200)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            result["error"] = exc

    thread = threading.Thread(target=run, name="test-background")
    thread.start()
    return thread


def test_an_answer_does_not_wait_behind_a_background_summary(hf_llm: LocalLLM, layer_calls: dict[str, Any]) -> None:
    before = layer_calls["calls"]
    alone = hf_llm.generate(SHORT_ANSWER, max_new_tokens=8)
    answer_calls = layer_calls["calls"] - before  # its prefill and one call per further token
    result: dict[str, Any] = {}
    thread = _background(hf_llm, LONG_ANSWER, result)
    _wait(lambda: layer_calls["calls"] >= 20, 60, "the background generation to be decoding")

    before = layer_calls["calls"]
    streamed = hf_llm.stream(SHORT_ANSWER, max_new_tokens=8)
    text = "".join(streamed)
    background_calls = layer_calls["calls"] - before - answer_calls
    assert thread.is_alive(), "the answer waited for the whole background generation"
    assert background_calls <= 1, f"the background call kept running ({background_calls} layer calls) during the answer"
    assert text == alone.text  # the shared weights gave the same greedy answer as when idle
    thread.join(timeout=120)
    assert "error" not in result and result["generation"].completion_tokens > 20
    # Answers, streamed or not, and the summary all ran on the weights' one thread (one OpenMP team: see gate.py).
    assert layer_calls["threads"] == {"llm-model"}


def test_cancel_stops_a_background_generation_at_its_next_layer(
    hf_llm: LocalLLM, layer_calls: dict[str, Any]
) -> None:
    stop = threading.Event()
    result: dict[str, Any] = {}
    thread = _background(hf_llm, LONG_ANSWER, result, cancel=stop.is_set)
    _wait(lambda: layer_calls["calls"] >= 5, 60, "the background generation to start")
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and isinstance(result.get("error"), Cancelled)
    assert hf_llm.generate(SHORT_ANSWER, max_new_tokens=4).completion_tokens > 0  # the model is free again


class _InFlight:
    """The real OpenAI-compatible backend behind a counter of requests in flight at once."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self.llm.generate(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


def test_summaries_go_to_a_server_several_at_once(
    monkeypatch: pytest.MonkeyPatch, make_rag: Callable[..., RAG], models_dir: Path, tmp_path: Path
) -> None:
    from tests.api_server import ApiServer, server_env

    docs = tmp_path / "docs"
    write_files(docs, {**SHORT_DOCS, **MORE_DOCS})
    env = server_env(models_dir)
    env["OMP_NUM_THREADS"] = "1"
    real = rag.models.load_llm
    counted: list[_InFlight] = []

    def load(settings: Any) -> _InFlight:
        if not counted:
            counted.append(_InFlight(real(settings)))
        return counted[0]

    monkeypatch.setattr(rag.models, "load_llm", load)
    with ApiServer(tmp_path / "server-data", env) as server:
        engine = make_rag(
            tmp_path / "data", llm_backend="openai", llm_base_url=f"{server.url}/v1", llm_model=SMALL_LLM,
            summarize=True, summary_max_new_tokens=16, verify_summaries=False,  # the requests are tested here
        )
        assert engine.summaries.plan.methods == ("llm",) and engine.summaries.plan.concurrency == 8
        engine.ingest(docs)
        assert engine.wait_for_summaries(timeout=300) == {"done": 6}
    assert counted[0].most >= 2, "summary requests were sent one at a time"


COMPANIES = {
    "acme.txt": "Quarterly report of Acme Robotics. During the quarter Acme shipped 4,000 units of the Roadrunner "
    "welding arm. Sales of Roadrunner arms rose in Europe, and Acme opened a plant in Ohio. Management expects "
    "Roadrunner demand to stay strong. The board of Acme approved a new buyback.",
    "globex.txt": "Quarterly report of Globex Foods. During the quarter Globex sold more Sunflake cereal in Brazil. "
    "Globex raised Sunflake prices twice, and the Sunflake brand gained share. The board of Globex approved a "
    "dividend. Management expects input costs to fall.",
    "initech.txt": "Quarterly report of Initech Software. During the quarter Initech signed 300 customers for its "
    "Tpsreport cloud suite. Initech moved Tpsreport to a subscription price. The board of Initech approved a "
    "buyback. Management expects churn to fall.",
}


def test_extractive_summaries_name_what_sets_each_document_apart(
    make_rag: Callable[..., RAG], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write_files(docs, COMPANIES)
    engine = make_rag(tmp_path / "data", summarize=True, summary_method="extractive")
    engine.ingest(docs)
    assert engine.wait_for_summaries(timeout=120) == {"extractive": 3}
    summaries = {Path(d.path).stem: d.summary or "" for d in engine.documents()}
    for name, product in (("acme", "Roadrunner"), ("globex", "Sunflake"), ("initech", "Tpsreport")):
        head = summaries[name].split(":", 1)[0]
        assert product in head, f"{name}: the key terms {head!r} miss its product"
        assert "Quarterly" not in head and "Management" not in head  # shared by every document (and sentence starts)
        body = summaries[name].split(":", 1)[1]
        assert all(sentence.strip() in COMPANIES[f"{name}.txt"] for sentence in body.split(". ") if sentence.strip())
    hits = engine.retrieve("Which company makes the Sunflake cereal?", top_k=3)
    assert "globex" in hits[0].document
    # One chunk each: a summary hit would only repeat the chunk it routes to, so the hits are three documents.
    assert [h.kind for h in hits] == ["chunk"] * 3 and len({h.document for h in hits}) == 3


def _report(name: str, product: str, n: int = 12) -> str:
    """A long report (several chunks at chunk_size 48) that names its company and product in every paragraph."""
    return "\n\n".join(
        f"In month {i} {name} sold {100 + i} crates of {product} and hired {i} people at its plant number {i}. "
        f"Freight costs for {product} moved by {i} percent while {name} kept prices steady."
        for i in range(1, n)
    )


def test_summaries_are_ranked_among_themselves_and_follow_the_change_log(
    make_rag: Callable[..., RAG], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write_files(docs, {"acme.txt": _report("Acme", "anvils"), "globex.txt": _report("Globex", "cereal"),
                       "note.txt": "A short note about Initech staplers."})
    engine = make_rag(tmp_path / "data", summarize=True, summary_method="extractive", chunk_size=48, chunk_overlap=0)
    engine.ingest(docs)
    assert engine.wait_for_summaries(timeout=120) == {"extractive": 3}
    coll = engine.store.collection("default")
    summaries = {d.id: d for d in engine.documents()}
    ranked = engine.store.summaries(coll)
    by_doc = {engine.store.chunk_rows([int(i)])[int(i)].document_id for i in ranked.ids()}
    # The one-chunk note's summary is not ranked: its chunk is its route already.
    assert {Path(summaries[d].path).name for d in by_doc} == {"acme.txt", "globex.txt"}

    hits = engine.retrieve("How much cereal did Globex sell?", top_k=4)
    assert all("globex" in h.document for h in hits[:3]), [(h.document, h.kind) for h in hits]
    assert any(h.kind == "summary" for h in hits)

    # A deleted document's summary leaves the ranking at the next query; a new document's arrives with its summary.
    engine.delete(str(docs / "acme.txt"))
    assert len(engine.store.summaries(engine.store.collection("default"))) == 1
    (docs / "acme.txt").unlink()
    write_files(docs, {"hooli.txt": _report("Hooli", "phones")})
    engine.ingest(docs)
    engine.wait_for_summaries(timeout=120)
    ranked = engine.store.summaries(engine.store.collection("default"))
    assert len(ranked) == 2 and ranked.applied == engine.store.generation(coll.id)

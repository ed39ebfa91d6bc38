"""Document summaries end to end with the real small LLM (SmolLM2-135M), real embedder, SQLite and FAISS.

The window is overridden to 1024 tokens so that a document of a few thousand tokens has to go through
map-reduce; every request the model receives is recorded so the test can check the budget held for each call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import rag.models
from ingest.chunking import Chunker
from ingest.pipeline import Cancelled
from ingest.summaries import COMBINE_TEMPLATE, PART_TEMPLATE, Summarizer, clean_summary
from rag import RAG
from rag.models.llm import Generation
from rag.store.document_text import text_segments
from rag.store.schema import Chunk
from tests.conftest import SHARED_DATA, SMALL_LLM, write_files

WINDOW = 1024
# The lifecycle tests keep every LLM summary unverified: the 135M model's are rarely supported, and what the rule
# does with them is tested on its own (test_an_unsupported_llm_summary_gives_way_to_the_extractive_one).
SETTINGS = {"llm_model": SMALL_LLM, "context_window": WINDOW, "summary_max_new_tokens": 48, "summary_method": "llm",
            "verify_summaries": False}

SHORT_DOCS = {
    "volcanoes.md": "# Volcanoes\n\nA volcano is an opening in the Earth's crust through which molten rock, ash and "
    "gases escape. Mount Etna in Sicily is one of the most active volcanoes in Europe. Lava flows, ash clouds and "
    "pyroclastic flows are the main volcanic hazards; geologists monitor earthquakes and gas emissions to forecast "
    "eruptions.",
    "sourdough.txt": "Baking sourdough bread. Sourdough bread is leavened by a starter of wild yeast and lactic acid "
    "bacteria instead of commercial yeast. Feed the starter with flour and water, mix the dough, let it rise slowly "
    "for twelve hours, then bake the loaf in a hot Dutch oven for forty minutes.",
    "chess.txt": "The rules of chess. Chess is a board game for two players on a board of 64 squares. Each player "
    "starts with sixteen pieces: a king, a queen, two rooks, two bishops, two knights and eight pawns. The goal is "
    "to checkmate the opponent's king.",
}
EDITED_CHESS = (
    "Honey bees. Honey bees live in colonies ruled by a single queen. Worker bees collect nectar and pollen from "
    "flowers, make honey and wax, and pollinate crops such as almonds and apples. Beekeepers harvest honey in summer."
)
_PART_MARK = PART_TEMPLATE.split("{title}")[0]
_COMBINE_MARK = COMBINE_TEMPLATE.split("{title}")[0]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RecordingLLM:
    """The real model behind a recorder: every request's size, and optionally a failure for matching prompts."""

    def __init__(self) -> None:
        self.llm: Any = None  # the real model, loaded by the first engine that asks for it
        self.requests: list[tuple[int, int, str]] = []  # (prompt tokens, max_new_tokens, user message)
        self.fail_when: str | None = None
        self.say: str | None = None  # the model's text replaced by this (an invented summary), the call still made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)

    def generate(self, messages: Sequence[dict[str, str]], *, max_new_tokens: int, **kwargs: Any) -> Generation:
        self.requests.append((self.llm.count_messages(messages), max_new_tokens, messages[-1]["content"]))
        if self.fail_when is not None and self.fail_when in messages[-1]["content"]:
            raise ConnectionError("model server unavailable")
        generation = self.llm.generate(messages, max_new_tokens=max_new_tokens, **kwargs)
        if self.say is not None:
            generation.text, generation.finish_reason = self.say, "stop"
        return generation


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> RecordingLLM:
    """Every engine of the test (restarts included) gets the same recorder around the real model."""
    real = rag.models.load_llm
    recorder = RecordingLLM()

    def load(settings: Any) -> RecordingLLM:
        if recorder.llm is None:
            recorder.llm = real(settings)
        return recorder

    monkeypatch.setattr(rag.models, "load_llm", load)
    return recorder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh data directory; converted models live in the session's shared ``models_dir`` (RAG_MODELS_DIR)."""
    path = tmp_path / "data"
    path.mkdir()
    return path


def _long_text() -> str:
    """About 1,300 model tokens (two map calls and a combine at a 1024-token window): the start of Paul Graham's
    essay when the shared data is here, else generated prose."""
    essay = SHARED_DATA / "paul-graham" / "paul_graham_essay.txt"
    if essay.exists():
        return essay.read_text()[:5500]
    topics = ["rivers", "glaciers", "deserts", "forests", "coral reefs", "mountains", "wetlands", "savannas"]
    return "\n\n".join(
        f"Chapter {n}: {t}. " + " ".join(f"The {t} of region {k} shape its climate, soils and wildlife." for k in range(11))
        for n, t in enumerate(topics, start=1)
    )


def _summary_chunks(rag_: RAG) -> dict[int, tuple[int, str]]:
    """document id -> (summary chunk id, text)."""
    with rag_.store.session() as s:
        rows = s.execute(select(Chunk.document_id, Chunk.id, Chunk.text, Chunk.position).where(Chunk.kind == "summary")).all()
    assert all(r.position == -1 for r in rows)
    assert len({r.document_id for r in rows}) == len(rows), "one summary chunk per document"
    return {r.document_id: (r.id, r.text) for r in rows}


def _assert_index_follows_sql(rag_: RAG) -> None:
    coll = rag_.store.collection("default")
    with rag_.store.session() as s:
        sql_ids = set(s.scalars(select(Chunk.id).where(Chunk.collection_id == coll.id)))
    assert set(rag_.store.index(coll).ids().tolist()) == sql_ids


def _assert_summaries_found(engine: RAG, infos: dict) -> None:
    """A one-chunk document is reached through its chunk (its summary would repeat it); the long one's summary is a
    hit of its own."""
    hits = engine.retrieve("What is the document about volcanoes about?", top_k=5)
    assert Path(hits[0].document).name == "volcanoes.md"
    essay = infos["essay.txt"]
    hits = engine.retrieve(engine.summary(essay.id), top_k=5)
    assert any(h.kind == "summary" and h.document_id == essay.id for h in hits)


def test_summaries_lifecycle(make_rag: Callable[..., RAG], data_dir: Path, llm: RecordingLLM, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(docs, {**SHORT_DOCS, "essay.txt": _long_text()})
    engine = make_rag(data_dir, **SETTINGS)

    report = engine.ingest(docs, summarize=True)
    assert report.summaries_pending == 4  # returned as soon as the chunks were searchable
    assert engine.wait_for_summaries(timeout=300) == {"done": 4}
    infos = {Path(d.path).name: d for d in engine.documents()}
    assert {d.summary_state for d in infos.values()} == {"done"}
    assert all(d.summary and d.summary.strip() and d.summary_model == SMALL_LLM for d in infos.values())
    for name, info in infos.items():
        assert engine.summary(str(docs / name)) == info.summary
        assert engine.summary(info.id) == info.summary

    # The long document went through map-reduce, and no request exceeded the window by a single token.
    assert engine.llm.count_tokens(_long_text()) > WINDOW
    prompts = [text for _, _, text in llm.requests]
    assert sum(_PART_MARK in p for p in prompts) >= 2 and any(_COMBINE_MARK in p for p in prompts)
    assert len(llm.requests) == 3 + sum(_PART_MARK in p or _COMBINE_MARK in p for p in prompts)
    assert max(prompt + new for prompt, new, _ in llm.requests) <= WINDOW

    # Summaries are indexed (one chunk each, FAISS follows SQL) and found by retrieval.
    chunks = _summary_chunks(engine)
    assert {chunks[d.id][1] for d in infos.values()} == {d.summary for d in infos.values()}
    _assert_index_follows_sql(engine)
    _assert_summaries_found(engine, infos)

    # Unchanged documents: nothing is summarised again.
    calls = len(llm.requests)
    again = engine.ingest(docs, summarize=True)
    assert engine.wait_for_summaries(timeout=300) == {"done": 4}
    assert (again.unchanged, again.summaries_pending, len(llm.requests)) == (4, 0, calls)
    assert _summary_chunks(engine) == chunks

    # A changed document gets a new summary; the others keep theirs, chunk ids included.
    (docs / "chess.txt").write_text(EDITED_CHESS)
    edited = engine.ingest(docs, summarize=True)
    assert engine.wait_for_summaries(timeout=300) == {"done": 4}
    assert (edited.updated, edited.summaries_pending, len(llm.requests)) == (1, 1, calls + 1)
    after = _summary_chunks(engine)
    chess_id = infos["chess.txt"].id
    assert after[chess_id] != chunks[chess_id] and engine.summary(chess_id) == after[chess_id][1]
    assert {k: v for k, v in after.items() if k != chess_id} == {k: v for k, v in chunks.items() if k != chess_id}
    _assert_index_follows_sql(engine)

    # A restart (a new engine on the same data directory) sees the same summaries and finds them.
    engine.close()
    restarted = make_rag(data_dir, **SETTINGS)
    assert {d.id: (d.summary_state, d.summary) for d in restarted.documents()} == {
        d.id: (d.summary_state, d.summary) for d in engine.documents()
    }
    assert restarted.summary(chess_id) == after[chess_id][1]
    _assert_summaries_found(restarted, infos)
    assert restarted.ingest(docs, summarize=True).summaries_pending == 0
    assert len(llm.requests) == calls + 1


def test_failures_are_recorded_and_runs_resume(
    make_rag: Callable[..., RAG], data_dir: Path, llm: RecordingLLM, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write_files(docs, SHORT_DOCS)
    # One summary at a time (the CPU default decodes several together), so the cancel lands after exactly one.
    engine = make_rag(data_dir, **SETTINGS, summary_concurrency=1)
    engine.ingest(docs)  # no summaries asked for: chunks only
    assert {d.summary_state for d in engine.documents()} == {"none"}

    # Interrupted after the first summary: it is committed, the others wait for the next run.
    written: list[str] = []
    with pytest.raises(Cancelled):
        engine.summarize(progress=lambda done, total, path: written.append(path), should_cancel=lambda: bool(written))
    states = {Path(d.path).name: d.summary_state for d in engine.documents()}
    assert sorted(states.values()) == ["done", "none", "none"]

    # A model error fails that document only; failed documents are not retried by a plain run.
    llm.fail_when = "Mount Etna"
    assert engine.summarize() == (1, 1)
    volcano = engine.document(str(docs / "volcanoes.md"))
    assert volcano.summary_state == "failed" and volcano.summary is None
    assert "model server unavailable" in (volcano.summary_error or "")
    calls = len(llm.requests)
    assert engine.summarize() == (0, 0) and len(llm.requests) == calls

    # Asked for by name, it is retried; force rewrites a done summary.
    llm.fail_when = None
    assert engine.summarize(documents=[str(docs / "volcanoes.md")]) == (1, 0)
    assert engine.document(volcano.id).summary_state == "done"
    assert engine.summarize(documents=[volcano.id]) == (0, 0)
    assert engine.summarize(documents=[volcano.id], force=True) == (1, 0)
    assert len(_summary_chunks(engine)) == 3
    _assert_index_follows_sql(engine)


def test_an_unsupported_llm_summary_gives_way_to_the_extractive_one(
    make_rag: Callable[..., RAG], data_dir: Path, llm: RecordingLLM, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write_files(docs, SHORT_DOCS)
    engine = make_rag(data_dir, **{**SETTINGS, "verify_summaries": True})
    engine.ingest(docs)
    volcano = engine.document(str(docs / "volcanoes.md"))
    llm.say = "Mount Etna erupted in 1850 and destroyed the city of Rome, killing 40,000 people."
    assert engine.summarize(documents=[volcano.id]) == (1, 0)
    kept = engine.document(volcano.id)
    assert kept.summary_state == "rejected" and "not supported" in (kept.summary_error or "")
    assert "Rome" not in kept.summary and kept.summary_model.startswith("extractive:")
    assert "Mount Etna in Sicily" in kept.summary  # the document's own sentences stand instead
    assert _summary_chunks(engine)[volcano.id][1] == kept.summary  # and are what retrieval indexes
    assert engine.summarize() == (2, 0)  # the two never summarised; not the rejected one (a forced run may)
    assert {d.summary_state for d in engine.documents()} == {"rejected"}
    assert engine.document(volcano.id).summary == kept.summary and engine.summarize() == (0, 0)

    llm.say = "This text explains volcanoes: molten rock, ash and gases escape through an opening in the crust."
    assert engine.summarize(documents=[volcano.id], force=True) == (1, 0)
    done = engine.document(volcano.id)
    assert done.summary_state == "done" and done.summary == llm.say and done.summary_error is None

    # The rule on its own: the distinctive name first, then each sentence against the text the model read.
    check = Summarizer(engine.store, engine.embedder, engine.llm, engine.settings)
    text = [SHORT_DOCS["volcanoes.md"]]
    assert check.unsupported("Volcanoes let molten rock and gases escape.", text, ["Etna"]) == "it does not name Etna"
    assert check.unsupported("Mount Etna is an active volcano in Sicily.", text, ["Etna"]) is None


def test_segments_rebuild_the_text_without_overlaps(make_rag: Callable[..., RAG], data_dir: Path) -> None:
    embedder = make_rag(data_dir).embedder
    chunker = Chunker(embedder.token_offsets, 120, 32)
    text = _long_text()
    chunks = chunker.split(text)
    assert len(chunks) > 5
    rebuilt = "".join(text_segments([(c.text, c.start_char, c.end_char) for c in chunks]))
    assert rebuilt.split() == text.split()
    # Without offsets the chunks are kept whole, a newline between them.
    assert text_segments([("a b", None, None), ("b c", None, None)]) == ["a b", "\n\nb c"]


def test_clean_summary() -> None:
    assert clean_summary("Here is a summary of the text:\nEtna erupts often.", "stop") == "Etna erupts often."
    assert clean_summary("Etna erupts often and is in Sicily. Its lava", "length") == "Etna erupts often and is in Sicily."
    assert clean_summary("Summary: short", "stop") == "short"
    looping = "Intel report.\n\nA Quarter in Review 3\n\nA Quarter in Review 3\n\n\nRevenue fell. Revenue fell. Costs rose."
    assert clean_summary(looping, "stop") == "Intel report.\n\nA Quarter in Review 3\n\nRevenue fell. Costs rose."

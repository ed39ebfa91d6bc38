"""Shared fixtures: real models (the bundled ones), real SQLite/FAISS in tmp dirs, the machine's PostgreSQL."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rag import RAG, Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PG_URL = os.environ.get("RAG_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} is not present")
    return path


@pytest.fixture(scope="session", autouse=True)
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One place per test session where models are converted / exported (once) for all tests.

    Exported as ``RAG_MODELS_DIR`` so every Settings — in this process and in the CLI and server subprocesses —
    shares it instead of exporting the embedder to ONNX again in each test's fresh data directory.
    """
    path = tmp_path_factory.mktemp("models")
    previous = os.environ.get("RAG_MODELS_DIR")
    os.environ["RAG_MODELS_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("RAG_MODELS_DIR", None)
    else:
        os.environ["RAG_MODELS_DIR"] = previous


@pytest.fixture
def make_rag(tmp_path: Path) -> Iterator:
    """Build RAG objects on a fresh data directory (SQLite + FAISS), closed at the end of the test."""
    made: list[RAG] = []

    def factory(data_dir: Path | None = None, **overrides) -> RAG:
        rag = RAG(data_dir or tmp_path / "data", **overrides)
        made.append(rag)
        return rag

    yield factory
    for rag in made:
        rag.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose schema is private to this test; skipped where no server is reachable."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(PG_URL)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # no server on this machine (a laptop): skip, as the contract allows
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def write_squad_corpus(folder: Path, limit: int | None = None) -> list[dict]:
    """SQuAD 2.0 dev paragraphs as text files (one per paragraph); returns the answerable questions."""
    src = shared_data("squad2-dev-5")
    folder.mkdir(parents=True, exist_ok=True)
    ids = set()
    for n, line in enumerate((src / "corpus.jsonl").read_text().splitlines()):
        if limit is not None and n >= limit:
            break
        doc = json.loads(line)
        ids.add(doc["id"])
        (folder / f"{doc['id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}")
    questions = [json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()]
    return [q for q in questions if q["answers"] and set(q["gold_ids"]) & ids]

"""Shared fixtures: real models (the bundled ones), real SQLite/FAISS in tmp dirs, the machine's PostgreSQL.

Also what several test modules share: the small test LLM (SmolLM2-135M) with its settings and real passages to
answer from, and file writing helpers.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Summaries are on by default and written by a background thread: in tests about other things they would add summary
# hits to retrieval at a moment that depends on timing. The tests about summaries turn them on (tests/test_summaries.py,
# tests/test_summary_pass.py), the default included; server subprocesses inherit this.
os.environ.setdefault("RAG_SUMMARIZE", "off")

from rag import RAG, Settings
from rag.models import load_llm
from rag.models.llm import LLM
from rag.models.local_llm import LocalLLM
from rag.types import Hit

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PG_URL = os.environ.get("RAG_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

SMALL_LLM = "bundled:smollm2-135m"
SMALL_MAX_NEW = 24  # answer tokens of small_settings: enough for a cited sentence, few enough to stay fast

# Real passages (SQuAD 2.0 dev, Wikipedia "Normans" and "Amazon rainforest" articles, CC BY-SA).
PASSAGES = [
    (
        "normans.txt",
        (
            "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th and "
            "11th centuries gave their name to Normandy, a region in France. They were descended from Norse "
            '("Norman" comes from "Norseman") raiders and pirates from Denmark, Iceland and Norway who, under their '
            "leader Rollo, agreed to swear fealty to King Charles III of West Francia."
        ),
    ),
    (
        "normans.txt",
        (
            "The Norman dynasty had a major political, cultural and military impact on medieval Europe and even the "
            "Near East. The Normans were famed for their martial spirit and eventually for their Christian piety, "
            "becoming exponents of the Catholic orthodoxy into which they assimilated."
        ),
    ),
    (
        "amazon.txt",
        (
            "The Amazon rainforest, also known in English as Amazonia or the Amazon Jungle, is a moist broadleaf "
            "forest that covers most of the Amazon basin of South America. This basin encompasses seven million "
            "square kilometres, of which five and a half million square kilometres are covered by the rainforest."
        ),
    ),
]
QUESTION = "In what country is Normandy located?"


def make_hits(dense: float = 0.62) -> list[Hit]:
    """:data:`PASSAGES` as ranked hits; ``dense`` is the best dense score (below the threshold: abstention)."""
    return [
        Hit(
            chunk_id=100 + i,
            document_id=1 + (i == 2),
            document=f"/corpus/{name}",
            collection="default",
            position=i,
            text=text,
            score=1.0 / (60 + i),
            dense_score=dense - 0.05 * i,
        )
        for i, (name, text) in enumerate(PASSAGES)
    ]


def write_files(folder: Path, files: dict[str, str | bytes]) -> None:
    """Create ``folder`` with these files (names may hold subfolders; text is written as UTF-8)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


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


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread while a module that generates runs: on a shared 2-core machine busy with other jobs,
    two OpenMP threads spin-wait on each other and SmolLM2 decodes 4-9x slower (measured 11 vs 3 tok/s, and 27 s vs
    3 s for 40 tokens); alone, one thread costs little. Use with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_settings(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the small model on the default runtime (llama.cpp where it is installed), one llama.cpp thread
    (see ``one_torch_thread``: the same holds for its threads on a busy 2-core machine)."""
    data_dir = tmp_path_factory.mktemp("small-llm-data")
    return Settings(
        data_dir=data_dir, models_dir=models_dir, llm_model=SMALL_LLM, device="cpu", max_new_tokens=SMALL_MAX_NEW,
        temperature=0.0, top_k=3, llm_threads=1,
    )


@pytest.fixture(scope="session")
def small_llm(small_settings: Settings) -> LLM:
    """The small model loaded in this process on the default runtime (once: ``load_llm`` keeps it)."""
    return load_llm(small_settings)


@pytest.fixture(scope="session")
def hf_llm(small_settings: Settings) -> LocalLLM:
    """The small model on the transformers runtime (converted once into the session's ``models_dir``)."""
    llm = load_llm(small_settings.model_copy(update={"llm_runtime": "transformers"}))
    assert isinstance(llm, LocalLLM)
    return llm


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
    except Exception as exc:  # noqa: BLE001 - no server on this machine (a laptop): skip, as the contract allows
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

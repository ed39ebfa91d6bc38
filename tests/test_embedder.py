"""The embedder's backends on the real bundled MiniLM: the ONNX export must give PyTorch's vectors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from rag.models.build_once import MARKER
from rag.models.embedder import Embedder, resolve_backend

MODEL = "bundled:all-MiniLM-L6-v2"
TEXTS = [
    "What is the role of p53 in apoptosis?",
    "x",
    "Retrieval-augmented generation grounds a language model's answer in passages found for the question. " * 4,
    "hello world",
    "Chunks are sized in the embedder's own word pieces so that nothing is silently truncated.",
]


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(MODEL, device="cpu", backend="torch")


@pytest.fixture(scope="module")
def onnx_embedder(models_dir: Path) -> Embedder:
    return Embedder(MODEL, device="cpu", backend="onnx-int8", models_root=models_dir)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def test_auto_backend_is_onnx_int8_on_cpu_and_torch_on_cuda() -> None:
    assert resolve_backend("auto", "cpu") == "onnx-int8"
    assert resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("onnx", "cuda")


def test_query_vectors_equal_pytorch(torch_embedder: Embedder, onnx_embedder: Embedder) -> None:
    """Queries run on the fp32 graph: the same vectors as sentence-transformers, alone and in a padded batch."""
    reference = torch_embedder.embed(TEXTS)
    alone = np.stack([onnx_embedder.embed_query(t) for t in TEXTS])
    batched = onnx_embedder.embed(TEXTS, query=True)  # padded to the longest text: the mask must hold
    assert cosines(alone, reference).min() > 0.9999
    assert cosines(batched, reference).min() > 0.9999
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_document_vectors_int8_stay_close_and_in_order(torch_embedder: Embedder, onnx_embedder: Embedder) -> None:
    reference = torch_embedder.embed(TEXTS)
    docs = onnx_embedder.embed(TEXTS)
    sims = cosines(docs, reference)
    assert sims.min() > 0.96 and sims.mean() > 0.98, sims
    # rows come back in input order although batches are sorted by length: each row is nearest its own text
    assert (docs @ reference.T).argmax(axis=1).tolist() == list(range(len(TEXTS)))
    assert onnx_embedder.count_tokens(TEXTS[2]) == torch_embedder.count_tokens(TEXTS[2])
    assert onnx_embedder.max_tokens == torch_embedder.max_tokens == 256


def test_export_is_built_once(models_dir: Path, onnx_embedder: Embedder) -> None:
    (folder,) = [p for p in models_dir.iterdir() if p.name.startswith("onnx-") and p.is_dir()]
    built = json.loads((folder / MARKER).read_text())["time"]
    again = Embedder(MODEL, device="cpu", backend="onnx", models_root=models_dir)
    assert json.loads((folder / MARKER).read_text())["time"] == built
    assert again.dim == onnx_embedder.dim == 384


@pytest.mark.parametrize("backend", ["torch", "onnx-int8"])
def test_measuring_documents_while_queries_embed(backend: str, torch_embedder: Embedder, onnx_embedder: Embedder) -> None:
    """The chunker (untruncated counts) and query embedding (truncated, padded) run in different threads of one
    server. Sharing one tokenizer, the counts came back cut at the model's window now and then: a document's tail
    would have been dropped, or the job failed with "Already borrowed"."""
    embedder = torch_embedder if backend == "torch" else onnx_embedder
    document = "Filler paragraph number 3 talks about ordinary things such as tables, chairs and lamps. " * 40
    expected = embedder.count_tokens(document)
    assert expected > 2 * embedder.max_tokens
    counts: list[int] = []
    errors: list[BaseException] = []

    def measure() -> None:
        try:
            counts.extend(embedder.count_tokens(document) for _ in range(300))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def ask() -> None:
        try:
            for _ in range(150):
                embedder.embed_query("What does the waggle dance tell?")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=measure), threading.Thread(target=ask)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert set(counts) == {expected}

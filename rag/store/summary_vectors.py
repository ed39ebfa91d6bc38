"""The document summaries of one collection as a matrix in memory, so that they can be ranked among themselves.

Summaries sit in the FAISS and lexical indexes beside the chunks, where one entry per document competes with
every chunk of every document for the candidate lists, and loses even where it fits the question best. Ranked on
their own (``rag/retrieval.py`` fuses that ranking with the others), they route a question to whole documents:
on sec10q, document recall@4 0.732 without summaries, 0.763 with them competing, 0.885 ranked (extractive
summaries, ``bench/summaries.py recall``).

There is one summary per summarised document, so a million chunks in ten thousand documents make a 15 MB matrix
that one product ranks in well under a millisecond. Like the other indexes it follows the change log: a write
costs the rows it touched, and a process builds it from SQL (the summary rows only) when it first needs it.
The arrays are replaced, never changed in place, so a search reads a consistent pair without a lock.
"""

from __future__ import annotations

import threading

import numpy as np


class SummaryVectors:
    """Summary ids and their normalised vectors, as of change-log sequence ``applied``."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.applied = -1  # nothing loaded yet: build from SQL
        self.lock = threading.Lock()  # held by whoever brings it up to date
        self._state: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros((0, dim), np.float32))

    def __len__(self) -> int:
        return len(self._state[0])

    def ids(self) -> np.ndarray:
        return self._state[0]

    def replace(self, ids: np.ndarray, vectors: np.ndarray, seq: int) -> None:
        self._state = (np.asarray(ids, np.int64), np.asarray(vectors, np.float32).reshape(-1, self.dim))
        self.applied = seq

    def apply(self, remove: np.ndarray, ids: np.ndarray, vectors: np.ndarray, seq: int) -> None:
        """Drop ``remove`` (any ids the log touched: most are chunks, not summaries), then add the new summaries."""
        held, matrix = self._state
        keep = ~np.isin(held, remove)
        self.replace(np.concatenate([held[keep], ids]), np.vstack([matrix[keep], vectors.reshape(-1, self.dim)]), seq)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) by inner product with the normalised ``query``; ``allowed`` restricts the ids."""
        ids, matrix = self._state
        if allowed is not None:
            mask = np.isin(ids, allowed)
            ids, matrix = ids[mask], matrix[mask]
        if not len(ids) or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = matrix @ query.astype(np.float32)
        order = np.argsort(-scores)[:k]
        return scores[order], ids[order]

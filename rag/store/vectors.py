"""FAISS index of one collection: vectors keyed by chunk id, saved atomically, repaired from SQL.

``IndexIDMap2`` over an exhaustive inner-product index on normalised vectors (cosine), stored as float16: a search
for one query reads every vector, so it is bound by memory bandwidth, and half the bytes made it 1.47x faster at
100k chunks (14.8 -> 10.1 ms, 2 cores) with the same top 10 as float32 (recall@10 1.000 on random unit vectors)
and cosines within 1e-3. Indexes saved as float32 by earlier releases load and work unchanged. The file is written to a temporary name,
fsynced and renamed, so a crash leaves either the old or the new index, never half of one; a JSON sidecar
records the embedding model and dimension so an index is never searched with vectors of another model.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

# Searches here are one query vector at a time, where OpenMP threads only fight the embedder's threads (ONNX
# Runtime spins its pool between runs): single-threaded FAISS took hybrid retrieval p50 from 19.7 to 12.5 ms on
# 10k chunks (2 cores, bench/latency.py). A flat index's add and reconstruct do not use OpenMP.
faiss.omp_set_num_threads(1)


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class VectorIndex:
    """A thread-safe FAISS index with chunk ids as FAISS ids."""

    def __init__(self, path: Path, model: str, dim: int) -> None:
        self.path = path
        self.meta_path = path.with_suffix(".json")
        self.model = model
        self.dim = dim
        self.generation = -1  # the SQL generation this index reflects; -1 = unknown, check against SQL
        self._lock = threading.RLock()
        self._index = self._load() or self._empty()

    def _empty(self) -> faiss.IndexIDMap2:
        fp16 = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        return faiss.IndexIDMap2(fp16)

    def _load(self) -> faiss.IndexIDMap2 | None:
        if not (self.path.exists() and self.meta_path.exists()):
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            if meta.get("model") != self.model or meta.get("dim") != self.dim:
                log.warning("index %s was built with %s/%s; rebuilding from SQL", self.path, meta.get("model"), meta.get("dim"))
                return None
            index = faiss.read_index(str(self.path))
            self.generation = int(meta.get("generation", -1))
            return faiss.IndexIDMap2(index) if not isinstance(index, faiss.IndexIDMap2) else index
        except Exception as exc:  # a torn or foreign file is repaired from SQL, never fatal
            log.warning("cannot read index %s (%s); rebuilding from SQL", self.path, exc)
            return None

    def __len__(self) -> int:
        return self._index.ntotal

    def ids(self) -> np.ndarray:
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        with self._lock:
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray | list[int]) -> None:
        if len(ids) == 0:
            return
        with self._lock:
            self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))

    def reset(self) -> None:
        with self._lock:
            self._index = self._empty()

    def vectors(self, ids: list[int]) -> tuple[list[int], np.ndarray]:
        """(ids present in the index, their stored vectors); absent ids are skipped, not an error."""
        found: list[int] = []
        vecs: list[np.ndarray] = []
        with self._lock:
            for i in ids:
                try:
                    vecs.append(self._index.reconstruct(int(i)))
                except RuntimeError:
                    continue
                found.append(int(i))
        return found, (np.vstack(vecs) if vecs else np.zeros((0, self.dim), "float32"))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) for one normalised query vector; ``allowed`` restricts to those ids."""
        with self._lock:
            if self._index.ntotal == 0 or k <= 0:
                return np.zeros(0, "float32"), np.zeros(0, "int64")
            params = None
            if allowed is not None:
                if len(allowed) == 0:
                    return np.zeros(0, "float32"), np.zeros(0, "int64")
                params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)))
            scores, ids = self._index.search(query.reshape(1, -1).astype(np.float32), min(k, self._index.ntotal), params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def save(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = faiss.serialize_index(self._index).tobytes()
            _fsync_write(self.path, data)
            meta = {"model": self.model, "dim": self.dim, "count": int(self._index.ntotal), "generation": self.generation}
            _fsync_write(self.meta_path, json.dumps(meta).encode())

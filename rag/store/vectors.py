"""FAISS index of one collection: vectors keyed by chunk id, exact while small, approximate (IVF) past a size.

- **flat** (below ``Settings.ann_threshold`` chunks): ``IndexIDMap2`` over an exhaustive inner-product index on
  normalised vectors stored as float16. One query reads every vector, so it is bound by memory bandwidth; half
  the bytes of float32 made it 1.47x faster at 100k chunks with the same top 10.
- **ivf** (from the threshold on): ``IndexIVFScalarQuantizer`` — a coarse quantizer of ``nlist`` centroids trained
  on a sample, each vector stored in its list as 8-bit scalar-quantized codes (or float16, ``ann_storage``), and a
  hash-table direct map so deletes and reconstructs by chunk id stay O(1). A query scans ``nprobe`` lists, so its
  cost follows nprobe/nlist of the collection instead of all of it. Recall against exact search is measured by
  ``bench/scale.py``.

Both take adds and deletes in place. The file holds a small JSON header (model, dimension, kind, the change-log
sequence the vectors reflect, the size the quantizer was trained for) followed by the FAISS bytes, written to a
unique temporary name, fsynced and renamed: the sequence and the vectors it describes can never be torn apart,
and a crash leaves the old file or the new one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

_MAGIC = b"RAGFAISS1\n"
_EXACT_FILTER = 4096
"""A filtered search on an IVF index with at most this many allowed ids scores them exactly (milliseconds)."""


@dataclass(frozen=True)
class AnnConfig:
    """When and how the index turns approximate (from ``Settings``)."""

    threshold: int
    nprobe: int
    storage: str  # "sq8" | "fp16"

    def nlist(self, n: int) -> int:
        """Lists for ``n`` vectors: about 4 sqrt(n), within [16, 4096]. At 1M chunks on MiniLM-like vectors
        (bench/scale.py), 4,096 lists reached a given recall scanning fewer vectors than 1,000 lists did (recall@10
        0.942 at 9% scanned vs 0.956 at 16%), and training them on a sample still takes about a minute."""
        return int(min(4096, max(16, 4 * math.sqrt(max(n, 1)))))


def _fsync_write(path: Path, parts: list[bytes]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.writelines(parts)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _flat(dim: int) -> faiss.Index:
    fp16 = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIDMap2(fp16)


def _ivf(vectors: np.ndarray, config: AnnConfig) -> faiss.Index:
    """An untrained-then-trained IVF index for vectors like ``vectors`` (a sample of the collection)."""
    dim = vectors.shape[1]
    nlist = config.nlist(len(vectors))
    qtype = faiss.ScalarQuantizer.QT_8bit if config.storage == "sq8" else faiss.ScalarQuantizer.QT_fp16
    # 8-bit codes of the residual (vector - centroid) use their 256 levels on a narrower range; float16 is precise
    # enough on the vectors themselves, which makes its scores exactly those of the flat float16 index.
    by_residual = config.storage == "sq8"
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, nlist, qtype, faiss.METRIC_INNER_PRODUCT, by_residual
    )
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(len(vectors), size=min(len(vectors), 32 * nlist), replace=False)]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.parallel_mode = 1  # one query at a time: split its probed lists over the threads, not the queries
    return index


@contextmanager
def _omp_threads(n: int | None = None) -> Iterator[None]:
    """OpenMP threads for one FAISS call (every core when ``n`` is None), then back to what the thread had.

    The count is per calling thread, and it is the same OpenMP runtime torch uses: setting it once at import would
    have left the importing thread's model generation on one thread. A flat search is one query vector, where
    threads only fight the embedder's (single-threaded: hybrid p50 19.7 -> 12.5 ms at 10k chunks, 2 cores,
    bench/latency.py); a build or an IVF scan over many lists uses every core."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n or os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


class VectorIndex:
    """A thread-safe FAISS index with chunk ids as FAISS ids, and the change-log sequence it reflects."""

    def __init__(self, path: Path, model: str, dim: int, config: AnnConfig) -> None:
        self.path = path
        self.model = model
        self.dim = dim
        self.config = config
        self.applied = -1  # the change-log sequence these vectors reflect; -1 = nothing usable, rebuild
        self.trained_for = 0  # collection size the IVF quantizer was trained at (0 for flat)
        self.lock = threading.RLock()
        self._index: faiss.Index = self._load() or _flat(dim)
        self._saved: tuple[int, float] = (self.applied, time.monotonic()) if self.applied >= 0 else (-1, 0.0)

    @property
    def dirty(self) -> bool:
        return self._saved[0] != self.applied

    def since_save(self) -> float:
        """Seconds since this process last saved (or loaded) the file; infinite when it never did."""
        return time.monotonic() - self._saved[1] if self._saved[0] >= 0 else float("inf")

    @property
    def kind(self) -> str:
        return "flat" if isinstance(self._index, faiss.IndexIDMap2) else "ivf"

    # --- persistence ------------------------------------------------------------------------------------
    def _load(self) -> faiss.Index | None:
        try:
            with open(self.path, "rb") as fh:
                if fh.read(len(_MAGIC)) != _MAGIC:
                    raise ValueError("not an index file of this release")
                (size,) = struct.unpack("<Q", fh.read(8))
                meta = json.loads(fh.read(size))
                if meta.get("model") != self.model or meta.get("dim") != self.dim:
                    raise ValueError(f"built with {meta.get('model')}/{meta.get('dim')}")
                index = faiss.deserialize_index(np.frombuffer(fh.read(), dtype=np.uint8))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a torn, foreign or old file is rebuilt from SQL, never fatal
            log.warning("cannot use index %s (%s); it will be rebuilt from SQL", self.path, exc)
            return None
        if index.ntotal != meta.get("count"):
            log.warning("index %s holds %d vectors, its header says %s; rebuilding", self.path, index.ntotal, meta.get("count"))
            return None
        self.applied = int(meta["seq"])
        self.trained_for = int(meta.get("trained_for", 0))
        if isinstance(index, faiss.IndexIVF):
            index.parallel_mode = 1  # not serialized
        return index

    def save(self) -> None:
        """Persist the vectors and their sequence together (a copy is taken under the lock, written outside it)."""
        with self.lock:
            data = faiss.serialize_index(self._index)
            meta = {
                "model": self.model, "dim": self.dim, "kind": self.kind, "seq": self.applied,
                "count": int(self._index.ntotal), "trained_for": self.trained_for,
            }
        header = json.dumps(meta).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _fsync_write(self.path, [_MAGIC, struct.pack("<Q", len(header)), header, data.tobytes()])
        self._saved = (meta["seq"], time.monotonic())

    # --- changes ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def apply(self, remove: np.ndarray, add_ids: np.ndarray, add_vectors: np.ndarray, seq: int) -> None:
        """Delete ``remove``, add the new vectors and record ``seq``, atomically for searches."""
        with self.lock:
            if len(remove):
                gone = np.ascontiguousarray(remove, dtype=np.int64)
                # IVF's hash-table direct map deletes only through an explicit id array.
                self._index.remove_ids(faiss.IDSelectorArray(len(gone), faiss.swig_ptr(gone)))
            if len(add_ids):
                self._index.add_with_ids(
                    np.ascontiguousarray(add_vectors, dtype=np.float32), np.asarray(add_ids, dtype=np.int64)
                )
            self.applied = seq

    def replace_with(self, other: VectorIndex) -> None:
        """Swap in a rebuilt index (same model and dimension) under the lock."""
        with self.lock:
            self._index, self.applied, self.trained_for = other._index, other.applied, other.trained_for

    @classmethod
    def build(
        cls, path: Path, model: str, dim: int, config: AnnConfig, ids: np.ndarray, vectors: np.ndarray, seq: int
    ) -> VectorIndex:
        """A new in-memory index over ``vectors`` (flat or IVF by size); nothing is written to ``path`` yet."""
        index = cls.__new__(cls)
        index.path, index.model, index.dim, index.config = path, model, dim, config
        index.lock = threading.RLock()
        index._saved = (-1, 0.0)
        index.applied = -1
        with _omp_threads():
            if len(ids) >= config.threshold:
                index._index, index.trained_for = _ivf(vectors, config), len(ids)
            else:
                index._index, index.trained_for = _flat(dim), 0
            index.apply(np.zeros(0, np.int64), ids, vectors, seq)
        return index

    def wants_retraining(self) -> bool:
        """True when the index type no longer fits its size: flat past the threshold, or an IVF quantizer trained
        for a collection a quarter or four times the size it is now (its lists are then too few or too many)."""
        n = len(self)
        if self.kind == "flat":
            return n >= self.config.threshold
        return n < self.config.threshold // 2 or not (self.trained_for / 4 <= n <= self.trained_for * 4)

    # --- reading ----------------------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        """Every chunk id held (a full scan: for checks and tests, never on the query path)."""
        with self.lock:
            if self.kind == "flat":
                return faiss.vector_to_array(self._index.id_map).astype(np.int64)
            lists = self._index.invlists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(self._index.nlist)
            ]
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def vectors(self, ids: list[int]) -> tuple[list[int], np.ndarray]:
        """(ids present in the index, their stored vectors); absent ids are skipped, not an error."""
        found: list[int] = []
        vecs: list[np.ndarray] = []
        with self.lock:
            for i in ids:
                try:
                    vecs.append(self._index.reconstruct(int(i)))
                except RuntimeError:
                    continue
                found.append(int(i))
        return found, (np.vstack(vecs) if vecs else np.zeros((0, self.dim), "float32"))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) for one normalised query vector; ``allowed`` restricts to those ids."""
        with self.lock:
            if self._index.ntotal == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
                return np.zeros(0, "float32"), np.zeros(0, "int64")
            if self.kind == "ivf" and allowed is not None and len(allowed) <= _EXACT_FILTER:
                return self._exact(query, k, allowed)
            sel = None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            k = min(k, self._index.ntotal)
            if self.kind == "ivf":
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self.config.nprobe)
                with _omp_threads():  # the probed lists are scanned in parallel (parallel_mode 1): 16 -> 8 ms at 1M
                    scores, ids = self._index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
            else:
                params = None if sel is None else faiss.SearchParameters(sel=sel)
                with _omp_threads(1):
                    scores, ids = self._index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _exact(self, query: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores over a small allowed set: the probed lists of an IVF index might hold none of it."""
        present, vecs = self.vectors(allowed.tolist())
        if not present:
            return np.zeros(0, "float32"), np.zeros(0, "int64")
        scores = vecs @ query.astype(np.float32)
        order = np.argsort(-scores)[:k]
        return scores[order].astype(np.float32), np.asarray(present, dtype=np.int64)[order]

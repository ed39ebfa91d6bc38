"""Hybrid retrieval: dense (FAISS) + lexical (BM25) candidates fused by reciprocal rank fusion.

Why each piece:
- BM25 and MiniLM fail on different questions (exact terms, numbers, names vs paraphrase); RRF combines
  their rankings without calibrating their incomparable scores.
- Every returned hit carries its dense cosine too (reconstructed from FAISS for lexical-only candidates), the
  one score with a fixed scale, which abstention compares against a threshold.
- Summaries are indexed like chunks; a summary that matches routes to its document's best chunks, so a
  question phrased at the level of a whole document still reaches the passages.
- Filters (path prefix, document ids) select exact chunk ids in SQL and restrict both retrievers to them,
  rather than over-fetching and hoping enough survive a post-filter.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.tokenization import Tokenizer

from rag.models.embedder import Embedder
from rag.settings import Settings
from rag.store.schema import Collection
from rag.store.store import Store, StoreError
from rag.types import Hit

log = logging.getLogger(__name__)
# bm25s sets its logger to DEBUG when imported, which overrides the application's level (the CLI printed
# "DEBUG bm25s: Building index…" on every search); NOTSET hands the decision back to the application.
logging.getLogger("bm25s").setLevel(logging.NOTSET)


def _tokenizer() -> Tokenizer:
    return Tokenizer(stemmer=Stemmer.Stemmer("english"), stopwords="en")


class LexicalIndex:
    """A BM25 index over one collection's chunk texts at one SQL generation.

    Built from SQL and saved beside the FAISS index (``<collection>.bm25/``), so a new process — every ``rag ask``,
    every API replica — loads it instead of re-tokenising the collection: at 100k chunks a build is ~40 s
    (tokenising ~20 s, indexing ~14 s), a load well under a second.
    """

    _META = "rag_bm25.json"

    def __init__(self, generation: int, ids: np.ndarray, tokenizer: Tokenizer, model: bm25s.BM25 | None) -> None:
        self.generation = generation
        self.ids = ids
        self.tokenizer = tokenizer
        self.model = model

    @classmethod
    def build(cls, store: Store, coll: Collection, generation: int) -> LexicalIndex:
        tokenizer = _tokenizer()
        ids: list[np.ndarray] = []
        tokens: list[list[int]] = []
        for batch_ids, texts in store.iter_texts(coll.id):
            ids.append(batch_ids)
            tokens.extend(tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False))
        model = None
        if ids:
            model = bm25s.BM25()
            vocab = tokenizer.get_vocab_dict()
            model.index(bm25s.tokenization.Tokenized(ids=tokens, vocab=vocab), show_progress=False)
        return cls(generation, np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64), tokenizer, model)

    def save(self, folder: Path, collection_id: int) -> None:
        """Write to a temporary folder, then swap it in: a reader sees the old index, the new one, or none."""
        if self.model is None:
            return
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.model.save(str(tmp), show_progress=False)
        self.tokenizer.save_vocab(str(tmp))
        np.save(tmp / "chunk_ids.npy", self.ids)
        (tmp / self._META).write_text(json.dumps({"collection_id": collection_id, "generation": self.generation}))
        old = folder.with_name(f"{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path, collection_id: int, generation: int) -> LexicalIndex | None:
        """The saved index if it is this collection's at ``generation``; None if absent, stale or unreadable."""
        try:
            meta = json.loads((folder / cls._META).read_text())
            if meta != {"collection_id": collection_id, "generation": generation}:
                return None
            model = bm25s.BM25.load(str(folder), show_progress=False)
            tokenizer = _tokenizer()
            tokenizer.load_vocab(str(folder))
            ids = np.load(folder / "chunk_ids.npy")
        except (OSError, ValueError, KeyError) as exc:  # missing, torn (a crash mid-swap) or foreign: rebuild
            log.info("BM25 index at %s not loaded (%s); rebuilding from SQL", folder, exc)
            return None
        return cls(generation, ids, tokenizer, model)

    def search(self, question: str, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (chunk ids, scores) with a positive BM25 score."""
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if self.model is None:
            return empty
        query = self.tokenizer.tokenize([question], update_vocab=False, return_as="ids", show_progress=False)
        if not query or not query[0]:
            return empty
        mask = None
        if allowed is not None:
            mask = np.isin(self.ids, allowed).astype(np.float32)
            if not mask.any():
                return empty
        docs, scores = self.model.retrieve(
            query, k=min(k, len(self.ids)), show_progress=False, weight_mask=mask, n_threads=1
        )
        keep = scores[0] > 0
        return self.ids[docs[0][keep]], scores[0][keep]


@dataclass
class _Candidate:
    chunk_id: int
    score: float
    dense: float | None = None
    lexical: float | None = None


def reciprocal_rank_fusion(rankings: list[np.ndarray], k: int) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking.tolist()):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank + 1)
    return fused


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, settings: Settings) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self._lexical: dict[str, LexicalIndex] = {}
        self._lock = threading.Lock()

    def lexical(self, coll: Collection, generation: int | None = None, *, wait: bool = False) -> LexicalIndex:
        """The BM25 index of ``coll`` at ``generation`` (read from SQL when not given).

        An index saved at that generation (by the ingestion that wrote it, in any process) is loaded: well under a
        second. Otherwise it must be rebuilt from SQL (~40 s at 100k chunks), which no query should wait for while
        an older index can answer: the query gets the older index and the rebuild runs in a background thread,
        one at a time. Dense retrieval is always current, and chunks the old index still holds but SQL no longer
        has are dropped when hits are read from SQL. ``wait`` (the ingestion's own refresh), and a collection
        with no index in memory yet, block until the index is current.
        """
        if generation is None:
            generation = self.store.generation(coll.id)
        current = self._lexical.get(coll.name)
        if current is not None and current.generation == generation:
            return current
        if not self._lock.acquire(blocking=wait or current is None):
            return current  # a rebuild is under way: the previous index answers meanwhile
        handed_over = False
        try:
            current = self._lexical.get(coll.name)
            if current is not None and current.generation == generation:
                return current
            folder = self.store.index_path(coll, ".bm25")
            loaded = LexicalIndex.load(folder, coll.id, generation)
            if loaded is None and current is not None and not wait:
                threading.Thread(
                    target=self._rebuild_then_release, args=(coll, generation, folder), name=f"bm25-{coll.name}",
                    daemon=True,  # the save is atomic, so an exit mid-build loses only the work
                ).start()
                handed_over = True
                return current
            self._lexical[coll.name] = loaded or self._rebuild(coll, generation, folder)
            return self._lexical[coll.name]
        finally:
            if not handed_over:
                self._lock.release()

    def _rebuild(self, coll: Collection, generation: int, folder: Path) -> LexicalIndex:
        index = LexicalIndex.build(self.store, coll, generation)
        index.save(folder, coll.id)
        return index

    def _rebuild_then_release(self, coll: Collection, generation: int, folder: Path) -> None:
        """The background rebuild: it was handed the lock by the query that started it."""
        try:
            self._lexical[coll.name] = self._rebuild(coll, generation, folder)
        except Exception:  # the next query starts another; meanwhile the old index keeps answering
            log.exception("BM25 rebuild of '%s' failed", coll.name)
        finally:
            self._lock.release()

    def refresh(self, collection: str) -> None:
        """Bring the collection's BM25 index up to date now (after an ingestion), so that no query pays for it."""
        try:
            coll = self.store.collection(collection)
        except StoreError:
            return
        self.lexical(coll, coll.generation, wait=True)

    def retrieve(
        self,
        question: str,
        *,
        collection: str = "default",
        top_k: int | None = None,
        path_prefix: str | None = None,
        document_ids: list[int] | None = None,
        mode: str = "hybrid",
    ) -> list[Hit]:
        """Ranked hits; ``mode`` is 'hybrid', 'dense' or 'lexical' (the last two for evaluation)."""
        top_k = top_k or self.settings.top_k
        try:
            coll = self.store.collection(collection)
        except StoreError:
            return []
        if coll.embed_model != self.embedder.name:
            raise StoreError(
                f"collection '{collection}' was embedded with '{coll.embed_model}' but the loaded embedder is "
                f"'{self.embedder.name}'"
            )
        index = self.store.index(coll, generation=coll.generation)  # the row was just read: no second round trip
        query = self.embedder.embed_query(question)
        allowed = None
        if path_prefix or document_ids is not None:
            allowed = self.store.chunk_ids_where(coll.id, path_prefix=path_prefix, document_ids=document_ids)

        n = max(self.settings.candidates, top_k)
        rankings: list[np.ndarray] = []
        lexical_scores: dict[int, float] = {}
        if mode in ("hybrid", "dense"):
            _, dense_ids = index.search(query, n, allowed)
            rankings.append(dense_ids)
        if mode in ("hybrid", "lexical"):
            lex_ids, lex_scores = self.lexical(coll, coll.generation).search(question, n, allowed)
            rankings.append(lex_ids)
            lexical_scores = dict(zip(lex_ids.tolist(), lex_scores.tolist()))
        fused = reciprocal_rank_fusion(rankings, self.settings.rrf_k)
        ranked = sorted(fused.items(), key=lambda kv: -kv[1])[: top_k * 2]
        candidates = [_Candidate(cid, score, lexical=lexical_scores.get(cid)) for cid, score in ranked]
        self._dense_scores(index, query, candidates)
        return self._materialise(index, query, candidates, top_k, coll.name)

    @staticmethod
    def _dense_scores(index, query: np.ndarray, candidates: list[_Candidate]) -> None:  # noqa: ANN001
        known, vecs = index.vectors([c.chunk_id for c in candidates])
        scores = dict(zip(known, (vecs @ query).tolist()))
        for c in candidates:
            c.dense = scores.get(c.chunk_id)

    def _materialise(self, index, query: np.ndarray, candidates: list[_Candidate], top_k: int, collection: str) -> list[Hit]:  # noqa: ANN001
        rows = self.store.chunk_rows([c.chunk_id for c in candidates])
        hits: list[Hit] = []
        seen: set[int] = set()
        summary_docs = [rows[c.chunk_id].document_id for c in candidates if c.chunk_id in rows and rows[c.chunk_id].kind == "summary"]
        routed = self._route(index, query, summary_docs)
        for c in candidates:
            row = rows.get(c.chunk_id)
            if row is None or c.chunk_id in seen:
                continue  # a chunk FAISS/BM25 knew but SQL no longer has: never cited
            seen.add(c.chunk_id)
            hits.append(_hit(row, collection, c.score, c.dense, c.lexical))
            for cid, dense in routed.get(row.document_id, []) if row.kind == "summary" else []:
                if cid not in seen:
                    seen.add(cid)
                    extra = self.store.chunk_rows([cid]).get(cid)
                    if extra is not None:
                        hits.append(_hit(extra, collection, c.score * 0.999, dense, None))
        return hits[:top_k]

    def _route(self, index, query: np.ndarray, doc_ids: list[int]) -> dict[int, list[tuple[int, float]]]:  # noqa: ANN001
        """For each document whose summary matched: its best chunks by dense score."""
        out: dict[int, list[tuple[int, float]]] = {}
        for doc_id, chunk_ids in self.store.chunk_ids_of_documents(doc_ids).items():
            present, vecs = index.vectors(chunk_ids)
            if not present:
                continue
            scores = vecs @ query
            order = np.argsort(-scores)[: self.settings.summary_route_chunks]
            out[doc_id] = [(present[i], float(scores[i])) for i in order]
        return out


def _hit(row, collection: str, score: float, dense: float | None, lexical: float | None) -> Hit:  # noqa: ANN001
    return Hit(
        chunk_id=row.id,
        document_id=row.document_id,
        document=row.path,
        collection=collection,
        position=row.position,
        text=row.text,
        score=float(score),
        kind=row.kind,
        title=row.title,
        start_char=row.start_char,
        end_char=row.end_char,
        dense_score=None if dense is None else float(dense),
        lexical_score=None if lexical is None else float(lexical),
    )

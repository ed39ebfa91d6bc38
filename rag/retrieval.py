"""Hybrid retrieval: dense (FAISS) + lexical (BM25, tantivy) candidates fused by reciprocal rank fusion.

Why each piece:
- BM25 and MiniLM fail on different questions (exact terms, numbers, names vs paraphrase); RRF combines
  their rankings without calibrating their incomparable scores.
- Every returned hit carries its dense cosine too (reconstructed from FAISS for lexical-only candidates), the
  one score with a fixed scale, which abstention compares against a threshold.
- Summaries are indexed like chunks; a summary that matches routes to its document's best chunks, so a
  question phrased at the level of a whole document still reaches the passages.
- Filters (path prefix, document ids) select exact chunk ids in SQL and restrict both retrievers to them,
  rather than over-fetching and hoping enough survive a post-filter.
- Both indexes follow the store's change log (``rag/store/indexes.py``): dense is always current, lexical may be
  one catch-up behind for a moment after another process's write; hits are re-read from SQL either way.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rag.models.embedder import Embedder, check_same_embedder
from rag.settings import Settings
from rag.store.store import Store, StoreError
from rag.types import Hit

log = logging.getLogger(__name__)
_LEXICAL_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lexical")


@dataclass
class _Candidate:
    chunk_id: int
    score: float
    dense: float | None = None
    lexical: float | None = None


def reciprocal_rank_fusion(rankings: list[np.ndarray], k: int, weights: list[float] | None = None) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, cid in enumerate(ranking.tolist()):
            fused[cid] = fused.get(cid, 0.0) + weight / (k + rank + 1)
    return fused


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, settings: Settings) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings

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
        check_same_embedder(collection, coll.embed_model, self.embedder.name)
        index = self.store.index(coll, generation=coll.generation)  # the row was just read: no second round trip
        allowed = None
        if path_prefix or document_ids is not None:
            allowed = self.store.chunk_ids_where(coll.id, path_prefix=path_prefix, document_ids=document_ids)

        n = max(self.settings.candidates, top_k)
        summaries = None
        if mode == "hybrid" and self.settings.rank_summaries:
            summaries = self.store.summaries(coll, generation=coll.generation)
        lexical = None
        if mode in ("hybrid", "lexical"):
            # BM25 needs no embedding: it runs on the other core while the question is embedded and FAISS
            # searched (tantivy, ONNX Runtime and FAISS all release the GIL), so hybrid costs the slower of the two.
            bm25 = self.store.lexical(coll, generation=coll.generation)
            lexical = _LEXICAL_POOL.submit(bm25.search, question, n, allowed)
        query = self.embedder.embed_query(question)
        rankings: list[np.ndarray] = []
        weights: list[float] = []
        best_dense = None
        if mode in ("hybrid", "dense"):
            dense_scores, dense_ids = index.search(query, n, allowed)
            rankings.append(dense_ids)
            weights.append(1.0)
            best_dense = float(dense_scores[0]) if len(dense_scores) else None
        lexical_summaries = None
        if summaries is not None and len(summaries):
            # Summaries ranked among themselves: one per document, they would otherwise compete for the shared
            # candidate lists with every chunk of every document (rag/store/summary_vectors.py). Only those close
            # enough to the question, and not far behind the best chunk, take part: a lone summary would otherwise
            # top its rankings for any question, and outvote a chunk that answers it outright.
            scores, ids = summaries.search(query, n, allowed)
            floor = self.settings.summary_rank_min_score
            if best_dense is not None:
                floor = max(floor, best_dense - self.settings.summary_rank_max_gap)
            ids = ids[scores >= floor]
            if len(ids):
                rankings.append(ids)
                weights.append(self.settings.summary_rank_weight)
                lexical_summaries = _LEXICAL_POOL.submit(bm25.search, question, n, ids)
        lexical_scores: dict[int, float] = {}
        if lexical is not None:
            lex_ids, lex_scores = lexical.result()
            rankings.append(lex_ids)
            weights.append(1.0)
            lexical_scores = dict(zip(lex_ids.tolist(), lex_scores.tolist()))
        if lexical_summaries is not None:
            lex_ids, lex_scores = lexical_summaries.result()
            rankings.append(lex_ids)
            weights.append(self.settings.summary_rank_weight)
            lexical_scores |= {c: v for c, v in zip(lex_ids.tolist(), lex_scores.tolist()) if c not in lexical_scores}
        fused = reciprocal_rank_fusion(rankings, self.settings.rrf_k, weights)
        ranked = sorted(fused.items(), key=lambda kv: -kv[1])[: top_k * 2]
        candidates = [_Candidate(cid, score, lexical=lexical_scores.get(cid)) for cid, score in ranked]
        self._dense_scores(index, query, candidates)
        return self._materialise(index, query, candidates, top_k, coll.name)

    @staticmethod
    def _dense_scores(index, query: np.ndarray, candidates: list[_Candidate]) -> None:
        known, vecs = index.vectors([c.chunk_id for c in candidates])
        scores = dict(zip(known, (vecs @ query).tolist()))
        for c in candidates:
            c.dense = scores.get(c.chunk_id)

    def _materialise(self, index, query: np.ndarray, candidates: list[_Candidate], top_k: int, collection: str) -> list[Hit]:
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
            best, whole = routed.get(row.document_id, ([], False)) if row.kind == "summary" else ([], False)
            if not whole:  # a summary of a document its routed chunks show whole would only repeat them
                hits.append(_hit(row, collection, c.score, c.dense, c.lexical))
            for cid, dense in best:
                if cid not in seen:
                    seen.add(cid)
                    extra = self.store.chunk_rows([cid]).get(cid)
                    if extra is not None:
                        hits.append(_hit(extra, collection, c.score * 0.999, dense, None))
        return hits[:top_k]

    def _route(self, index, query: np.ndarray, doc_ids: list[int]) -> dict[int, tuple[list[tuple[int, float]], bool]]:
        """For each document whose summary matched: its best chunks by dense score, and whether they are all of
        its chunks."""
        out: dict[int, tuple[list[tuple[int, float]], bool]] = {}
        for doc_id, chunk_ids in self.store.chunk_ids_of_documents(doc_ids).items():
            present, vecs = index.vectors(chunk_ids)
            if not present:
                continue
            scores = vecs @ query
            order = np.argsort(-scores)[: self.settings.summary_route_chunks]
            out[doc_id] = ([(present[i], float(scores[i])) for i in order], len(present) <= len(order))
        return out


def _hit(row, collection: str, score: float, dense: float | None, lexical: float | None) -> Hit:
    meta = row.meta or {}
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
        page=meta.get("page"),
        page_starts=list(meta.get("page_starts", [])),
        sheet=meta.get("sheet"),
        later_sheets=list(meta.get("later_sheets", [])),
    )

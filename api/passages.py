"""Read-only views of stored text for the web page: one passage (a cited chunk, with its page) and a whole document.

Both are built from the chunks in SQL, not from the original file: an upload may be cleaned up, and a server path
may have moved or changed since it was ingested, while the chunks are exactly what the answers were drawn from.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from api import schemas as S
from api.access import authorize
from api.deps import get_rag
from rag.engine import RAG
from rag.store.document_text import indexed_text
from rag.types import page_at

router = APIRouter(prefix="/v1", dependencies=[Depends(authorize)], tags=["documents"])

Rag = Annotated[RAG, Depends(get_rag)]
DocumentId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Document id (from /v1/documents).")]
ChunkId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Chunk id (a source's chunk_id).")]


class Passage(BaseModel):
    chunk_id: int
    document_id: int
    document: str = Field(description="The document's path.")
    title: str | None
    kind: str = Field(description="'chunk', or 'summary' for a document summary.")
    position: int
    text: str
    start_char: int | None
    end_char: int | None
    page: int | None = Field(description="1-based page of the passage's start, for paged documents (PDF page, pptx slide, xlsx sheet).")
    sheet: str | None = Field(None, description="The name of the sheet where the passage starts (xlsx; else null).")
    ocr: bool = Field(False, description="The passage's text was read by OCR (a scanned page, an image).")


class DocumentText(BaseModel):
    id: int
    path: str
    title: str | None
    text: str = Field(description="The document's passages joined in order, their overlaps removed.")
    page_starts: list[int] = Field(description="Where each page begins in the parsed text (PDF pages, pptx slides, xlsx sheets; else empty).")


@router.get("/chunks/{chunk_id}", response_model=Passage, responses=S.error_responses(401, 404))
def passage(chunk_id: ChunkId, rag: Rag) -> dict[str, Any]:
    """A passage as an answer cites it, with its document's name and page."""
    row = rag.store.chunk_rows([chunk_id]).get(chunk_id)
    if row is None:
        raise KeyError(f"no passage {chunk_id} (its document may have been deleted or re-ingested)")
    page, sheet = (row.meta or {}).get("page"), (row.meta or {}).get("sheet")
    if page is None and row.kind == "chunk":  # a passage stored before pages were kept per chunk
        doc = rag.store.find_document(row.document_id)
        page = page_at((doc.meta or {}).get("page_starts", []) if doc is not None else [], row.start_char)
    return {
        "chunk_id": row.id, "document_id": row.document_id, "document": row.path, "title": row.title,
        "kind": row.kind, "position": row.position, "text": row.text, "start_char": row.start_char,
        "end_char": row.end_char, "page": page, "sheet": sheet, "ocr": bool((row.meta or {}).get("ocr_lines")),
    }


@router.get("/documents/{document_id}/text", response_model=DocumentText, responses=S.error_responses(401, 404))
def document_text(document_id: DocumentId, rag: Rag) -> dict[str, Any]:
    """The whole text of a document as it was indexed."""
    doc = rag.store.find_document(document_id)
    if doc is None:
        raise KeyError(f"no document {document_id}")
    ids = rag.store.chunk_ids_of_documents([document_id]).get(document_id, [])
    rows = sorted(rag.store.chunk_rows(ids).values(), key=lambda r: r.position)
    return {
        "id": doc.id, "path": doc.path, "title": doc.title,
        "text": indexed_text([(r.text, r.start_char, r.end_char) for r in rows]),
        "page_starts": list((doc.meta or {}).get("page_starts", [])),
    }

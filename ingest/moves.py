"""Renames and moves: a file at a new path with the exact content of a stored document whose path is gone.

Why by content rather than by event: whatever reports the change — an inotify rename pair, a polling scan's delete
and create, the watcher's catch-up scan after downtime, or ``rag ingest`` over a reorganised folder — the evidence
is the same: a document's path no longer exists, and a file with its bytes (the same sha-256) has appeared. One rule
serves every way into ingestion. The document then takes the new path and keeps its chunks, vectors and summary:
nothing is parsed or embedded again, and the change log gets no entry (no chunk id changes).

Only files of the same size as a gone document are hashed, so a walk in which nothing is gone costs nothing here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from ingest.discover import content_hash
from ingest.readers import ReadError
from rag.store.schema import Collection, Document
from rag.store.store import Changes, Store
from rag.types import FileOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move:
    """``document`` (whose path is gone) is now at ``path``; ``replaces`` is the document that was stored at
    ``path`` before the move overwrote its file (an editor's save renames over the original), removed with it."""

    document: Document
    path: Path
    mtime: float
    replaces: Document | None = None


def find_moves(gone: list[Document], files: list[Path], known: dict[str, Document]) -> list[Move]:
    """Pair documents whose paths are ``gone`` with the ``files`` now holding their content (one file each).

    ``known`` maps stored paths to documents: a known file is a candidate only when its content has changed (it was
    overwritten by a moved file)."""
    by_size: dict[int, list[Document]] = {}
    for doc in gone:
        if doc.status == "indexed":
            by_size.setdefault(doc.size, []).append(doc)
    moves: list[Move] = []
    for path in files:
        if not by_size:
            break
        try:
            st = path.stat()
            docs = by_size.get(st.st_size)
            if not docs:
                continue
            digest = content_hash(path)
        except (OSError, ReadError):  # gone again, or not a regular file: ingestion reports it
            continue
        current = known.get(str(path))
        if current is not None and current.content_hash == digest:
            continue
        match = next((d for d in docs if d.content_hash == digest), None)
        if match is None:
            continue
        docs.remove(match)
        if not docs:
            del by_size[st.st_size]
        moves.append(Move(match, path, st.st_mtime, current))
    return moves


def apply_moves(store: Store, coll: Collection, moves: list[Move]) -> list[FileOutcome]:
    """Give the moved documents their new paths in one transaction (a replaced document leaves in it too)."""
    if not moves:
        return []

    def work(s: Session, changes: Changes) -> None:
        store.remove_documents(s, changes, [m.replaces.id for m in moves if m.replaces is not None])
        store.move_documents(s, [(m.document.id, str(m.path), m.mtime) for m in moves])

    store.write(coll, work, follow=False)
    for m in moves:
        log.info("moved: %s -> %s (%d chunks kept)", m.document.path, m.path, m.document.chunk_count)
    return [FileOutcome(str(m.path), "moved", chunks=m.document.chunk_count) for m in moves]

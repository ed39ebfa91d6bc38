"""Watched folders (``rag watch``, ``RAG_WATCH`` in ``rag serve``): file events feed the incremental ingestion.

``watcher`` runs it; ``backlog`` debounces, batches and bounds the changed paths; ``changes`` turns them into work
for ingestion; ``observers`` picks inotify/FSEvents or polling.
"""

from ingest.watch.watcher import Apply, Watcher

__all__ = ["Apply", "Watcher"]

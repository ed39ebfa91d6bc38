"""Retrieval-augmented question answering over your own documents.

``from rag import RAG`` is the embedded SDK; the CLI (``rag``) and the HTTP API are thin faces over it.
"""

from rag.engine import RAG
from rag.settings import Settings
from rag.types import Answer, DocumentInfo, FileOutcome, Hit, IngestReport, Source, Usage

__all__ = ["RAG", "Answer", "DocumentInfo", "FileOutcome", "Hit", "IngestReport", "Settings", "Source", "Usage"]

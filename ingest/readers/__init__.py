"""Turn one file into normalised text: the *parse* step of ingestion.

Every reader returns a :class:`ParsedDocument` or raises :class:`ReadError` with a sentence a person can act on;
the pipeline records that sentence against the file and goes on with the rest, so no parser exception may escape
(only ``KeyboardInterrupt``, ``SystemExit``, ``MemoryError`` and :class:`ReadCancelled` do). Files are size-checked
from ``stat`` before a byte is read and never read past ``max_bytes``; zip-based formats are also checked for what
they expand to. Parsers check a deadline (and a cancel callback) between units of work (pages, paragraphs, rows,
slides), so one hostile file costs at most ``timeout_s`` and a cancel is seen within one unit.

Text is normalised the same way for every type (see :func:`normalise_text`) so chunk offsets, hashes and BM25
tokens do not depend on which parser produced them.

One module per format family (``text``, ``html``, ``pdf``, ``office``, ``epub``, ``eml``, ``rtf``, ``image``) behind
the table in ``registry``; ``document.read_document`` is the one entry, ``base`` what they all share. Scanned PDF
pages and images go through ``ocr`` (the stage) and ``ocr_engines`` (Tesseract or RapidOCR).
"""

from ingest.readers.base import (
    DEFAULT_MAX_EXPANDED_BYTES,
    DEFAULT_TIMEOUT_S,
    OcrOptions,
    ParsedDocument,
    ReadCancelled,
    ReadError,
    Work,
)
from ingest.readers.document import read_document
from ingest.readers.files import open_regular
from ingest.readers.normalise import normalise_text
from ingest.readers.registry import PARSERS, SUPPORTED_SUFFIXES, doc_type_for

__all__ = [
    "DEFAULT_MAX_EXPANDED_BYTES",
    "DEFAULT_TIMEOUT_S",
    "PARSERS",
    "SUPPORTED_SUFFIXES",
    "OcrOptions",
    "ParsedDocument",
    "ReadCancelled",
    "ReadError",
    "Work",
    "doc_type_for",
    "normalise_text",
    "open_regular",
    "read_document",
]

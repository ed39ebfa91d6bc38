"""PDF: text per page (pypdf), with the offset where each page starts; pypdf's warnings become debug records."""

from __future__ import annotations

import io
import logging
from typing import Any

from ingest.readers.base import Parsed, ReadError, Work, log
from ingest.readers.normalise import join_pages


class _ToDebug(logging.Handler):
    """pypdf logs a WARNING for every recoverable quirk of a PDF; those are noise to an ingestion run."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s: %s", record.name, record.getMessage())


_pypdf_log = logging.getLogger("pypdf")
_pypdf_log.addHandler(_ToDebug())
_pypdf_log.propagate = False


PDF_MAX_ARRAY_ELEMENTS = 2_000_000
"""pypdf refuses arrays over 100,000 elements (a guard against hostile files), which rejects real filings: two
Microsoft 10-Qs (2 MB) hold one array of 100k-1M elements. 2M elements is about 150 MB of Python objects at
worst, and files over ``RAG_MAX_FILE_MB`` never reach the parser."""


def parse_pdf(data: bytes, work: Work) -> Parsed:
    """Text per page, pages joined by paragraph breaks; ``page_starts[i]`` is the offset of page i+1's text."""
    from pypdf import apply_configuration

    with apply_configuration(array_maximum_element_count=PDF_MAX_ARRAY_ELEMENTS):  # per thread (a ContextVar)
        return _read_pdf(data, work)


def _read_pdf(data: bytes, work: Work) -> Parsed:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            if reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise ReadError("PDF is encrypted and needs a password")
        except (DependencyError, NotImplementedError) as exc:
            raise ReadError(f"PDF is encrypted in a way we cannot open: {exc}") from exc
    pages: list[str] = []
    failures = []
    for number, page in enumerate(reader.pages, 1):
        work.check()
        try:
            pages.append(page.extract_text() or "")
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 -- one broken page should not cost the other pages
            log.debug("pdf page %d: text extraction failed: %s", number, exc)
            failures.append(f"page {number}: {exc}")
            pages.append("")
    text, starts = join_pages(pages)
    if not text:
        if failures:
            raise ReadError(f"PDF text extraction failed ({failures[0]})")
        raise ReadError("PDF has no extractable text (scanned image?)")
    meta = reader.metadata
    title = meta.title if meta is not None else None
    metadata: dict[str, Any] = {"pages": len(reader.pages), "page_starts": starts}
    if failures:
        metadata["pages_failed"] = len(failures)
    return text, title if isinstance(title, str) else None, metadata

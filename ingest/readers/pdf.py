"""PDF: text per page (pypdf), with the offset where each page starts; pypdf's warnings become debug records.

A page whose text layer is (nearly) empty but that draws an image is a scan: it is rendered (pypdfium2) and read
by OCR, page by page, so a PDF that mixes text pages and scans keeps its text layer where it has one."""

from __future__ import annotations

import io
import logging
import math
import threading
from typing import Any

from ingest.readers.base import Parsed, ReadError, Work, log
from ingest.readers.ocr import OcrResult, join_with_ocr, read_pages
from ingest.readers.ocr_engines import engine_for


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

SCAN_MAX_CHARS = 16
"""A page with fewer non-space characters in its text layer (none, or a stamped page number) that draws an image
is OCR'd; its text layer, if any, gives way to what OCR reads."""

_PDFIUM = threading.Lock()
"""PDFium is not thread-safe: one call into it at a time in a process (a worker may parse files on threads)."""


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
    candidates = [number for number, page in enumerate(pages, 1) if len("".join(page.split())) < SCAN_MAX_CHARS]
    ocr, not_read = _read_scans(data, candidates, work, has_text=len(candidates) < len(pages)) if candidates else (None, "")
    text, metadata = join_with_ocr(pages, ocr)
    if not text:
        if failures:
            raise ReadError(f"PDF text extraction failed ({failures[0]})")
        if ocr is not None:
            raise ReadError(f"no text found by OCR on the {len(ocr.pages)} scanned pages")
        raise ReadError(f"PDF has no extractable text (scanned image?){not_read}")
    meta = reader.metadata
    title = meta.title if meta is not None else None
    if failures:
        metadata["pages_failed"] = len(failures)
    return text, title if isinstance(title, str) else None, metadata


def _read_scans(data: bytes, candidates: list[int], work: Work, has_text: bool) -> tuple[OcrResult | None, str]:
    """OCR the pages among ``candidates`` (1-based, nearly no text) that draw an image.

    Where OCR is off, or no engine is installed, or PDFium cannot open the file, the scanned pages stay unread:
    returns None and the reason (the file fails with it only when it has no text at all). Any other failure of
    OCR (the page limit, a page's time limit) fails the file."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        engine_for(work.ocr)
        with _PDFIUM:
            pdf = pdfium.PdfDocument(data)
    except (ReadError, pdfium.PdfiumError) as exc:
        reason = str(exc) if isinstance(exc, ReadError) else f"PDFium cannot open it to OCR its pages: {exc}"
        if has_text:
            log.info("PDF: %d pages without text left unread: %s", len(candidates), reason)
        return None, f"; {reason}"

    def render(number: int) -> Any:
        with _PDFIUM:
            page = pdf[number - 1]
            try:
                width, height = page.get_size()
                scale = min(work.ocr.dpi / 72, math.sqrt(work.ocr.max_pixels / max(width * height, 1.0)))
                return page.render(scale=scale, grayscale=True).to_pil()
            finally:
                page.close()

    try:
        with _PDFIUM:
            scanned = [n for n in candidates if _draws_image(pdf, n, pdfium_c.FPDF_PAGEOBJ_IMAGE)]
        return (read_pages(render, scanned, work) if scanned else None), ""
    finally:
        with _PDFIUM:
            pdf.close()


def _draws_image(pdf: Any, number: int, image_type: int) -> bool:
    page = pdf[number - 1]
    try:
        return any(True for _ in page.get_objects(filter=[image_type], max_depth=4))
    finally:
        page.close()

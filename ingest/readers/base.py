"""What every reader shares: the errors a reader may raise, the document it returns, and the budget of one parse
(size limits, deadline, cancel callback) that parsers check between units of work."""

from __future__ import annotations

import io
import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from rag.settings import Settings

# One logger for the whole package (not one per module): what the readers log, pypdf's quirks included, is found
# under one name, "ingest.readers", as it was when the readers were one module.
log = logging.getLogger("ingest.readers")


class ReadError(Exception):
    """A file could not be turned into text; ``str(exc)`` is a human sentence saying why."""


class ReadCancelled(Exception):
    """The caller's ``should_cancel`` said stop while a file was being parsed. Not a ReadError: the file is not at
    fault and must not be recorded as failed."""


DEFAULT_MAX_EXPANDED_BYTES = int(Settings.model_fields["max_expanded_mb"].default * 2**20)
DEFAULT_TIMEOUT_S: float = Settings.model_fields["parse_timeout_s"].default
DEFAULT_MAX_PARAGRAPHS: int = Settings.model_fields["max_paragraphs"].default


@dataclass(frozen=True)
class OcrOptions:
    """The RAG_OCR* settings a reader needs to OCR pages without a text layer (see ``ingest.readers.ocr``)."""

    mode: str  # auto | off | tesseract | rapidocr
    lang: str
    max_pages: int
    page_timeout_s: float
    dpi: int
    max_pixels: int
    batch_pages: int

    @classmethod
    def from_settings(cls, settings: Settings) -> OcrOptions:
        return cls(settings.ocr, settings.ocr_lang, settings.ocr_max_pages, settings.ocr_page_timeout_s,
                   settings.ocr_dpi, int(settings.ocr_max_megapixels * 1_000_000), settings.ocr_batch_pages)


DEFAULT_OCR = OcrOptions.from_settings(Settings.model_construct())  # the defaults, not the environment


class Work:
    """The budget of one parse: the size limits, a deadline and the cancel callback. Parsers call :meth:`check`
    between units of work; it costs a clock read, so they may call it per paragraph."""

    def __init__(self, max_bytes: int, max_expanded_bytes: int, timeout_s: float,
                 should_cancel: Callable[[], bool] | None, what: str = "parsing",
                 max_paragraphs: int = DEFAULT_MAX_PARAGRAPHS, ocr: OcrOptions = DEFAULT_OCR) -> None:
        self.what = what  # named in the timeout's reason
        self.ocr = ocr
        self.max_bytes = max_bytes  # on disk, and the most characters of text a document may have
        self.max_paragraphs = max_paragraphs
        self.max_expanded_bytes = max_expanded_bytes
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.should_cancel = should_cancel

    def check(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise ReadCancelled("cancelled while parsing")
        if time.monotonic() > self.deadline:
            raise ReadError(f"{self.what} took longer than {self.timeout_s:g} s (RAG_PARSE_TIMEOUT_S), so the file is skipped")

    def exclude(self, seconds: float) -> None:
        """Move the deadline by time spent on OCR: a scan's pages are bounded by their own limits (RAG_OCR_MAX_PAGES
        pages of RAG_OCR_PAGE_TIMEOUT_S each), so a 100-page scan is not failed by the parse budget of a text file."""
        self.deadline += seconds


@dataclass
class ParsedDocument:
    """One file's text and what we learned about it; the chunker and the store take it from here."""

    text: str  # normalised: NFC, no NULs/control chars, paragraphs separated by exactly "\n\n"
    title: str | None
    doc_type: str  # 'txt', 'md', 'html', 'pdf', 'docx', 'pptx', 'xlsx', 'odt', 'epub', 'eml', 'rtf', ...
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable only


Parsed = tuple[str, str | None, dict[str, Any]]
"""What a parser returns: (text, title, metadata); :func:`ingest.readers.read_document` normalises the text."""

Parser = Callable[[bytes, Work], Parsed]
"""A reader of one format: the file's bytes and the parse's budget in, :data:`Parsed` out."""


def check_zip(data: bytes, work: Work) -> None:
    """Refuse zip containers (docx, pptx, xlsx, odt, epub) that expand beyond ``max_expanded_bytes`` or 20x the
    file size limit (zip bombs): their XML is parsed whole, so what they expand to is what parsing costs.

    zipfile never inflates a member past its declared size, so the central directory's sizes are a real bound.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        expanded = sum(info.file_size for info in zf.infolist())
    limit = min(20 * work.max_bytes, work.max_expanded_bytes)
    if expanded > limit:
        raise ReadError(f"archive expands to {expanded:,} bytes, over the {limit:,}-byte limit (RAG_MAX_EXPANDED_MB)")


def check_text_size(chars: int, work: Work, what: str = "the text") -> None:
    """Refuse a document whose text is longer than the file size limit, in characters: a small container (a docx,
    an epub) can expand to far more text than any file of that limit holds, and every character costs chunking
    and embedding time."""
    if chars > work.max_bytes:
        raise ReadError(f"{what} is {chars / 2**20:.1f} M characters, over the {work.max_bytes / 2**20:g} M limit "
                        "(RAG_MAX_FILE_MB)")


XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
"""For the XML inside zip containers (odt, epub): no entity expansion, no network, no huge trees."""

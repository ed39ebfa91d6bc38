"""Which files are read, and by which reader: suffix -> doc_type -> parser, one table for every format.

Plain-text formats keep their own doc_type (the chunker may treat them alike) but share one reader. A format whose
parser is an optional package is only listed when that package is installed, so discovery skips those files instead
of failing each one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ingest.readers.base import Parser
from ingest.readers.eml import parse_eml
from ingest.readers.epub import parse_epub
from ingest.readers.html import parse_html
from ingest.readers.image import parse_image
from ingest.readers.office import parse_docx, parse_odt, parse_pptx, parse_xlsx
from ingest.readers.pdf import parse_pdf
from ingest.readers.rtf import parse_rtf
from ingest.readers.text import parse_markdown, parse_text


@dataclass(frozen=True)
class Format:
    """One doc_type: the suffixes read as it, its reader, and the optional package that reader needs (if any)."""

    doc_type: str
    suffixes: tuple[str, ...]
    parse: Parser
    needs: str | None = None


FORMATS: tuple[Format, ...] = (
    Format("txt", (".txt", ".text", ".log"), parse_text),
    Format("rst", (".rst",), parse_text),
    Format("org", (".org",), parse_text),
    Format("csv", (".csv", ".tsv"), parse_text),
    Format("json", (".json",), parse_text),
    Format("md", (".md", ".markdown"), parse_markdown),
    Format("html", (".html", ".htm", ".xhtml"), parse_html),
    Format("pdf", (".pdf",), parse_pdf),
    Format("odt", (".odt",), parse_odt),
    Format("epub", (".epub",), parse_epub),
    Format("eml", (".eml",), parse_eml),
    Format("docx", (".docx",), parse_docx, needs="docx"),
    Format("pptx", (".pptx",), parse_pptx, needs="pptx"),
    Format("xlsx", (".xlsx",), parse_xlsx, needs="openpyxl"),
    Format("rtf", (".rtf",), parse_rtf, needs="striprtf"),
    Format("image", (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"), parse_image),  # read by OCR
)

PARSERS: dict[str, Parser] = {fmt.doc_type: fmt.parse for fmt in FORMATS}
"""doc_type -> reader, looked up on every read (so a test can swap one reader)."""

_SUFFIX_TYPES: dict[str, str] = {
    suffix: fmt.doc_type
    for fmt in FORMATS
    if fmt.needs is None or importlib.util.find_spec(fmt.needs) is not None
    for suffix in fmt.suffixes
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_SUFFIX_TYPES)


def doc_type_for(path: str | Path) -> str | None:
    """The doc_type a path would be parsed as, from its suffix; None when it is not a type we ingest."""
    return _SUFFIX_TYPES.get(Path(path).suffix.lower())

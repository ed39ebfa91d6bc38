"""The OCR stage of the readers: page images in, each page's text and line boxes out, under the file's limits.

Shared by the PDF reader (pages without a text layer) and the image reader (every frame). Pages are rendered and
recognised in batches of ``RAG_OCR_BATCH_PAGES``, so a long scan never holds more than a batch of page images;
a file with more pages to read than ``RAG_OCR_MAX_PAGES`` fails before any is read, a page that takes longer than
``RAG_OCR_PAGE_TIMEOUT_S`` fails its file, and the time OCR takes moves the parse deadline (``Work.exclude``).

A page's text is its lines joined by spaces within a paragraph and by a blank line between paragraphs (a line
break would end a sentence for the chunker and the answer check). Every line keeps its box, as fractions of the
page, with its place in the page's text: ``ingest.chunking.line_meta`` gives each chunk the lines it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from ingest.readers.base import ReadError, Work
from ingest.readers.normalise import join_pages, normalise_text
from ingest.readers.ocr_engines import Line, PageTimeout, engine_for


@dataclass
class OcrPage:
    text: str
    lines: list[tuple[int, int, tuple[float, float, float, float]]] = field(default_factory=list)  # start, end, box


@dataclass
class OcrResult:
    """The pages one file needed read, by 1-based page number, and the engine that read them."""

    engine: str
    pages: dict[int, OcrPage]


def check_pixels(width: int, height: int, work: Work, what: str = "image") -> None:
    """Refuse an image larger than RAG_OCR_MAX_MEGAPIXELS before it is decoded (its header says its size)."""
    if width * height > work.ocr.max_pixels:
        raise ReadError(f"{what} is {width}x{height} px ({width * height / 1e6:.0f} MP), over the "
                        f"{work.ocr.max_pixels / 1e6:g} MP limit (RAG_OCR_MAX_MEGAPIXELS)")


def read_pages(render: Callable[[int], Image.Image], numbers: Sequence[int], work: Work) -> OcrResult:
    """OCR the pages ``numbers`` (1-based), ``render`` giving each page's image, in batches.

    Raises ReadError when OCR is off or no engine is installed, when there are more pages than the limit, or when
    a page takes longer than its limit."""
    options = work.ocr
    if len(numbers) > options.max_pages:
        raise ReadError(f"{len(numbers)} pages need OCR, over the {options.max_pages}-page limit (RAG_OCR_MAX_PAGES)")
    engine = engine_for(options)
    pages: dict[int, OcrPage] = {}
    for first in range(0, len(numbers), options.batch_pages):
        work.check()
        batch = numbers[first : first + options.batch_pages]
        started = time.monotonic()
        images = [render(number) for number in batch]
        try:
            lines = engine.read(images, options.page_timeout_s)
        except PageTimeout as exc:
            raise ReadError(f"OCR of page {batch[exc.index]} took longer than {options.page_timeout_s:g} s "
                            "(RAG_OCR_PAGE_TIMEOUT_S), so the file is skipped") from None
        finally:
            work.exclude(time.monotonic() - started)
        pages.update((number, page_text(page_lines)) for number, page_lines in zip(batch, lines))
    return OcrResult(engine.name, pages)


def page_text(lines: list[Line]) -> OcrPage:
    """A page's text from its lines (normalised as every reader's text is, so the offsets hold in the document)."""
    parts: list[str] = []
    spans = []
    offset, paragraph = 0, None
    for line in lines:
        text = " ".join(normalise_text(line.text).split())
        if not text:
            continue
        if parts:
            separator = " " if line.paragraph == paragraph else "\n\n"
            parts.append(separator)
            offset += len(separator)
        parts.append(text)
        spans.append((offset, offset + len(text), line.box))
        offset += len(text)
        paragraph = line.paragraph
    text = "".join(parts)
    if normalise_text(text) != text:  # e.g. a line that begins with a combining mark: keep the text, not the boxes
        return OcrPage(normalise_text(text))
    return OcrPage(text, spans)


def join_with_ocr(texts: list[str], ocr: OcrResult | None) -> tuple[str, dict]:
    """A document's pages joined (each page's own text, or its OCR'd text), with the metadata that records them:
    ``pages``, ``page_starts`` and, for OCR'd pages, ``ocr_pages``, ``ocr_engine`` and ``ocr_lines``: one
    ``[start, end, page, x0, y0, x1, y1]`` per line (offsets in the text, box as fractions of the page), which the
    pipeline moves into the chunks' meta (``ingest.chunking.line_meta``)."""
    pages = list(texts)
    for number, page in (ocr.pages.items() if ocr else ()):
        pages[number - 1] = page.text
    text, starts = join_pages(pages)
    meta: dict = {"pages": len(pages), "page_starts": starts}
    if ocr is not None:
        meta["ocr_pages"] = len(ocr.pages)
        meta["ocr_engine"] = ocr.engine
        meta["ocr_lines"] = [
            [starts[number - 1] + start, starts[number - 1] + end, number, *box]
            for number, page in sorted(ocr.pages.items()) for start, end, box in page.lines
        ]
    return text, meta

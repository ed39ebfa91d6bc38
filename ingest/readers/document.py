"""One file in, one :class:`ParsedDocument` out: the limits, the reader the registry names, and the promise that no
parser exception escapes as anything but :class:`ReadError` (or :class:`ReadCancelled`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ingest.readers.base import (
    DEFAULT_MAX_EXPANDED_BYTES,
    DEFAULT_MAX_PARAGRAPHS,
    DEFAULT_TIMEOUT_S,
    ParsedDocument,
    ReadCancelled,
    ReadError,
    Work,
    check_text_size,
    log,
)
from ingest.readers.files import read_bounded
from ingest.readers.normalise import clean_title, normalise_text
from ingest.readers.registry import PARSERS, doc_type_for


def read_document(
    path: Path,
    max_bytes: int,
    *,
    max_expanded_bytes: int = DEFAULT_MAX_EXPANDED_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    should_cancel: Callable[[], bool] | None = None,
    max_paragraphs: int = DEFAULT_MAX_PARAGRAPHS,
    work: Work | None = None,
) -> ParsedDocument:
    """Parse one file within ``max_bytes`` on disk (and as many characters of text), ``max_expanded_bytes``
    unzipped, ``max_paragraphs`` (docx) and ``timeout_s`` of parsing; or within ``work``, a budget the caller
    shares with its next steps (the pipeline's chunking) and that carries the OCR settings, when given.

    Raises ReadError, or ReadCancelled when ``should_cancel`` returns True (never anything else but
    KeyboardInterrupt/SystemExit/MemoryError).
    """
    path = Path(path)
    doc_type = doc_type_for(path)
    if doc_type is None:
        raise ReadError(f"unsupported file type {path.suffix or '(no suffix)'!r}")
    if work is None:
        work = Work(max_bytes, max_expanded_bytes, timeout_s, should_cancel, max_paragraphs=max_paragraphs)
    try:
        data = read_bounded(path, max_bytes)
        with _warnings_to_debug():
            text, title, metadata = PARSERS[doc_type](data, work)
    except (ReadError, ReadCancelled, MemoryError):
        raise
    except Exception as exc:  # any parser bug or malformed input: report it, never crash the ingestion run
        detail = str(exc).strip() or type(exc).__name__
        raise ReadError(f"could not parse {doc_type} file: {detail}") from exc
    check_text_size(len(text), work)
    text = normalise_text(text)
    if not text:
        raise ReadError("empty document")
    return ParsedDocument(text=text, title=clean_title(title), doc_type=doc_type, metadata=metadata)


@contextmanager
def _warnings_to_debug() -> Iterator[None]:
    """Parsers (openpyxl, python-docx) also use warnings.warn for recoverable quirks: log them at debug.

    catch_warnings is process-wide; a warning another thread raises meanwhile is logged here too, which is harmless.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        log.debug("parser warning: %s", item.message)

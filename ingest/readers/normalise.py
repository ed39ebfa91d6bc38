"""Text is normalised the same way for every type, so chunk offsets, hashes and BM25 tokens do not depend on which
parser produced them; titles are cleaned of the placeholders tools write."""

from __future__ import annotations

import re
import unicodedata

_NEWLINES = str.maketrans({"\x0b": "\n", "\x0c": "\n\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n\n"})
# C0/C1 controls except \t \n, DEL, BOM/ZWNBSP, lone surrogates (they would break UTF-8 storage later).
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufeff\ud800-\udfff]")
# PDF text often keeps typographic ligatures ("ﬁle"), which then never match "file" in BM25 or the embedder's
# vocabulary. Full NFKC would also rewrite full-width CJK, superscripts etc., so only these are expanded.
_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"}
)
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)  # any whitespace but the newline
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalise_text(text: str) -> str:
    """NFC, unified newlines, no control characters, no trailing spaces, paragraph breaks exactly "\\n\\n"."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_NEWLINES)
    text = unicodedata.normalize("NFC", _CONTROL.sub("", text)).translate(_LIGATURES)
    text = _BLANK_RUNS.sub("\n\n", _TRAILING_SPACE.sub("", text))
    return text.strip()


_PLACEHOLDER_TITLE = re.compile(r"^(untitled.*|title|document|slide \d+|powerpoint presentation)$", re.IGNORECASE)
_FILENAME_TITLE = re.compile(r"\w\.(pdf|docx?|pptx?|xlsx?|odt|rtf|txt|html?|jpe?g|png|gif|tiff?|indd)\b", re.IGNORECASE)


def clean_title(title: str | None) -> str | None:
    """Whitespace-collapsed title, or None for the placeholders tools write ('Untitled', 'Binder1.pdf', 'a_b')."""
    if not title:
        return None
    title = unicodedata.normalize("NFC", " ".join(_CONTROL.sub("", title).split()))[:300]
    if not title or _PLACEHOLDER_TITLE.match(title) or _FILENAME_TITLE.search(title):
        return None
    if "_" in title and re.fullmatch(r"[\w.-]+", title):  # an identifier such as 'sample_pdf_with_headers'
        return None
    return title


def join_pages(pages: list[str]) -> tuple[str, list[int]]:
    """Pages (PDF pages, slides) normalised one by one and joined by paragraph breaks, with the offset where each
    begins; a page without text begins where the next one does. Normalising each page first keeps the offsets
    true: normalising the joined text would fold an empty page's breaks and shift every page after it."""
    texts: list[str] = []
    starts: list[int] = []
    offset = 0
    for page in pages:
        starts.append(offset)
        text = normalise_text(page)
        if text:
            texts.append(text)
            offset += len(text) + 2  # the "\n\n" that joins it to the next page
    joined = "\n\n".join(texts)
    return joined, [min(start, len(joined)) for start in starts]

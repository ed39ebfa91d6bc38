"""Token-aware chunking, linear in the text: sentences merged into chunks measured with the embedder's own tokenizer.

Chunks are sized in embedder tokens (default 254 + [CLS]/[SEP] = MiniLM's 256 window), so no text is silently cut
off at embedding time.

Why not llama-index's ``SentenceSplitter`` (used before, issue 32): it tokenized the whole text, then every sentence,
then every chunk again (0.45 MB/s of prose here), and split sentences with NLTK's punkt, whose regular expressions
run under a 5 s wall-clock guard: on a 12 MB text one match ran past it and its ``TimeoutError`` failed the whole
ingestion job. Here the text is cut into bounded segments at whitespace, each segment is tokenized once (with
offsets), sentence ends are found by a pattern that cannot backtrack (a lookbehind of one character before a run of
whitespace), and sentences are merged by their token counts. Every step is linear in the text, so the time of a
document is proportional to its size (bench/reliability.py, ``--parts chunking``), and a ``check`` callback between
segments lets the caller bound it.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rag.types import page_at

SEGMENT_CHARS = 1 << 16
"""Characters tokenized in one call at most (cut at a paragraph break, a line break or a space before it): bounds
the memory of one call and how long the work runs between two ``check`` calls."""

FORCED_CUT_SLACK = 8
"""Tokens left free in a piece cut inside a word (a run of word pieces longer than a chunk, e.g. base64): the piece,
tokenized alone, may start with a different word piece than it had inside the word."""

_SENTENCE_END = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)\]]))\s+|\n|(?<=[。！？])")
"""Where one sentence ends and the next begins: whitespace after terminal punctuation (closing quotes or brackets
allowed in between), a line break, or right after a CJK full stop. Lookbehinds of fixed width before one run of
whitespace: a failed attempt costs one character, so the scan is linear whatever the text."""

Offsets = Callable[[str], Sequence[tuple[int, int]]]
"""The embedder's tokenizer: a text's word pieces as (start, end) character offsets, special tokens left out."""


@dataclass
class TextChunk:
    position: int
    text: str
    token_count: int
    start_char: int | None
    end_char: int | None


@dataclass
class _Unit:
    """A sentence (or a piece of one too long for a chunk): its character span in the text and its token count."""

    start: int
    end: int
    tokens: int


class Chunker:
    """Splits a document's text into chunks of at most ``chunk_size`` tokens; consecutive chunks share up to
    ``overlap`` tokens of whole sentences."""

    def __init__(self, offsets: Offsets, chunk_size: int, overlap: int) -> None:
        self._offsets = offsets
        self.chunk_size = chunk_size
        self.overlap = min(overlap, chunk_size // 2)

    def split(self, text: str, check: Callable[[], None] | None = None) -> list[TextChunk]:
        """The chunks of ``text`` with their exact character spans. ``check`` is called between segments (it may
        raise to stop: a deadline, a cancel)."""
        chunks: list[TextChunk] = []
        current: list[_Unit] = []
        size = 0
        for unit in self._units(text, check):
            if current and size + unit.tokens > self.chunk_size:
                chunks.append(self._chunk(text, len(chunks), current, size))
                current = self._overlap_of(current)
                size = sum(u.tokens for u in current)
                while current and size + unit.tokens > self.chunk_size:
                    size -= current.pop(0).tokens
            current.append(unit)
            size += unit.tokens
        if current:
            chunks.append(self._chunk(text, len(chunks), current, size))
        return chunks

    def _overlap_of(self, units: list[_Unit]) -> list[_Unit]:
        """The last whole sentences of a chunk that fit in ``overlap`` tokens: where the next chunk begins."""
        kept: list[_Unit] = []
        size = 0
        for unit in reversed(units):
            if size + unit.tokens > self.overlap:
                break
            kept.insert(0, unit)
            size += unit.tokens
        return kept

    @staticmethod
    def _chunk(text: str, position: int, units: list[_Unit], tokens: int) -> TextChunk:
        start, end = units[0].start, units[-1].end
        return TextChunk(position, text[start:end], tokens, start, end)

    def _units(self, text: str, check: Callable[[], None] | None) -> Iterator[_Unit]:
        for base, segment in _segments(text):
            if check is not None:
                check()
            spans = self._offsets(segment)
            if not spans:
                continue
            starts = [s for s, _ in spans]
            first = 0
            for cut in _sentence_cuts(segment):
                last = bisect_left(starts, cut, first)
                yield from self._pieces(segment, base, spans, first, last)
                first = last
            yield from self._pieces(segment, base, spans, first, len(spans))

    def _pieces(self, segment: str, base: int, spans: Sequence[tuple[int, int]], first: int, last: int) -> Iterator[_Unit]:
        """The sentence of tokens ``first..last``: whole when it fits a chunk, else cut before a word that starts
        within the window (inside a word only when none does)."""
        while last - first > self.chunk_size:
            cut = first + self.chunk_size
            while cut > first and not _starts_word(segment, spans, cut):
                cut -= 1
            if cut == first:  # one word longer than a chunk
                cut = first + self.chunk_size - FORCED_CUT_SLACK
            yield _Unit(base + spans[first][0], base + spans[cut - 1][1], cut - first)
            first = cut
        if last > first:
            yield _Unit(base + spans[first][0], base + spans[last - 1][1], last - first)


def _starts_word(segment: str, spans: Sequence[tuple[int, int]], i: int) -> bool:
    """Whether token ``i`` begins after a space or a punctuation token (so a cut before it splits no word)."""
    start = spans[i][0]
    return start == 0 or spans[i - 1][1] < start or not segment[start - 1].isalnum() or not segment[start].isalnum()


def _sentence_cuts(segment: str) -> Iterator[int]:
    for match in _SENTENCE_END.finditer(segment):
        yield match.end()


def _segments(text: str) -> Iterator[tuple[int, str]]:
    """``(offset, piece)`` of at most :data:`SEGMENT_CHARS` each, cut at a paragraph break, else a line break, else
    a space (a word-piece tokenizer splits there anyway, so the tokens are the text's own), else anywhere."""
    pos, n = 0, len(text)
    while pos < n:
        end = pos + SEGMENT_CHARS
        if end >= n:
            end = n
        else:
            for sep in ("\n\n", "\n", " "):
                found = text.rfind(sep, pos + SEGMENT_CHARS // 2, end)
                if found > pos:
                    end = found + len(sep)
                    break
        yield pos, text[pos:end]
        pos = end


def page_meta(
    chunk: TextChunk, page_starts: Sequence[int] | None, page_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """A chunk's page provenance for its ``meta``: the page it starts on, and where in its text each later page
    begins. Stored per chunk at ingestion so a hit (and a supporting span inside it) names its page without
    reading the document; empty for documents without pages or a chunk whose place in the text is unknown.

    Pages that have names (xlsx sheets: ``page_names[i]`` names page i+1) add the name of the page the chunk
    starts on (``sheet``) and of each page beginning inside it (``later_sheets``, one per ``page_starts`` entry)."""
    if not page_starts or chunk.start_char is None or chunk.end_char is None:
        return {}
    page = page_at(page_starts, chunk.start_char)
    meta: dict[str, Any] = {"page": page}
    later = [i for i, s in enumerate(page_starts) if chunk.start_char < s < chunk.end_char]
    if later:
        meta["page_starts"] = [page_starts[i] - chunk.start_char for i in later]
    if page_names and page is not None and len(page_names) == len(page_starts):
        meta["sheet"] = page_names[page - 1]
        if later:
            meta["later_sheets"] = [page_names[i] for i in later]
    return meta


def line_meta(chunk: TextChunk, lines: Sequence[Sequence[float]] | None) -> dict[str, Any]:
    """The OCR'd lines a chunk holds, for its ``meta``: ``ocr_lines``, one ``[start, end, page, x0, y0, x1, y1]``
    per line with its offsets in the chunk's text (clipped to it) and its box as fractions of the page; empty for
    text that was not OCR'd. ``lines`` are the document's (the reader's ``ocr_lines``), ordered by offset."""
    if not lines or chunk.start_char is None or chunk.end_char is None:
        return {}
    first = bisect_left(lines, chunk.start_char + 1, key=lambda line: line[1])  # the first line ending inside it
    held = []
    for start, end, *where in lines[first:]:
        if start >= chunk.end_char:
            break
        held.append([max(start, chunk.start_char) - chunk.start_char, min(end, chunk.end_char) - chunk.start_char,
                     *where])
    return {"ocr_lines": held} if held else {}

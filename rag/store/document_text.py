"""A document's text as it is indexed, rebuilt from its chunks: the one place the chunks' overlaps are cut.

Chunks overlap (each repeats the end of the one before) and the chunker drops the whitespace between them, so the
text is put back together with the character offsets: the part of each chunk the ones before already hold is cut,
and a gap becomes a paragraph break. A chunk without offsets (its start could not be found in the text) is taken
whole: its overlap may then repeat a few words. The summaries read the segments; the web page shows the text.
"""

from __future__ import annotations

from collections.abc import Sequence

ChunkSpan = tuple[str, int | None, int | None]
"""A chunk as (text, start_char, end_char) in the document, in position order."""


def text_segments(chunks: Sequence[ChunkSpan]) -> list[str]:
    """Each chunk's new text (without what the chunks before it already hold), empty ones left out; joined, they
    give the document's text."""
    segments: list[str] = []
    covered: int | None = None  # offset in the document up to which the segments hold it
    for text, start, end in chunks:
        if covered is not None and start is not None and start < covered:
            piece = text[min(covered - start, len(text)) :]
        else:
            piece = ("\n\n" + text) if segments else text
        covered = None if end is None else max(end, covered or 0)
        if piece.strip():
            segments.append(piece)
    return segments


def indexed_text(chunks: Sequence[ChunkSpan]) -> str:
    """The document's text as indexed."""
    return "".join(text_segments(chunks))

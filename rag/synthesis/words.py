"""Sentences and content words: the units that citation checks and the standalone-question test count.

Deliberately crude and fast (regular expressions, no model): they run on every answer, and what they feed is
either a score mixed with the embedder's cosine (:mod:`~rag.synthesis.verify`) or a cheap yes/no
(:mod:`~rag.synthesis.conversation`).
"""

from __future__ import annotations

import re

# A sentence ends at . ! or ? (with any citations written after it) followed by a space or the end, at a blank line,
# or at a line break before a line that starts a block of its own (a list item, a heading, a table row, a quote).
# "3.5" and "e.g.x" do not end one; "U.S. Army" does, which costs a check at worst. A plain line break does not: text
# wrapped at 80 columns (Markdown, plain text, a PDF's lines) would otherwise be checked and quoted line by line.
_SENTENCE_END = re.compile(
    r"[.!?]+(?:\s*\[\d+(?:\s*,\s*\d+)*\])*(?=\s|$)"
    r"|\n[ \t]*(?:\n\s*|(?=[-*+#|>]|\d+[.)][ \t]))"
)
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d(?:[\d,.]*\d)?")
STOPWORDS = frozenset({
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do",
    "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having",
    "here", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "no",
    "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "out", "over", "own", "same",
    "she", "should", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when",
    "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "he", "him", "his",
    "her", "hers", "according", "answer", "answers", "document", "documents", "source", "sources", "passage",
    "passages", "text", "question", "yes",
})


def sentence_bounds(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence in ``text``, without the whitespace around it; citations stay with the
    sentence they follow."""
    bounds: list[tuple[int, int]] = []
    cursor = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() if match.group(0).startswith("\n") else match.end()
        _add(text, cursor, end, bounds)
        cursor = match.end()
    _add(text, cursor, len(text), bounds)
    return bounds


def _add(text: str, start: int, end: int, bounds: list[tuple[int, int]]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        left = start + (len(piece) - len(piece.lstrip()))
        heading_end = stripped.find("\n") if stripped.startswith("#") else -1
        if heading_end > 0:  # a Markdown heading is a sentence of its own, whatever follows it on the next line
            bounds.append((left, left + len(stripped[:heading_end].rstrip())))
            _add(text, left + heading_end, left + len(stripped), bounds)
            return
        bounds.append((left, left + len(stripped)))


def content_words(text: str) -> set[str]:
    """Lower-cased words that carry meaning (no stopwords), cut to five letters so that "located" meets
    "location" and "Normans" meets "Normandy"; numbers are kept whole."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or (len(word) < 3 and not word.isdigit()):
            continue
        words.add(word if word.isdigit() else word[:5])
    return words


def numbers(text: str) -> frozenset[str]:
    """The numbers written in digits in ``text``, thousands separators removed ("1,500" and "1500" meet)."""
    return frozenset(match.group(0).replace(",", "") for match in _NUMBER.finditer(text))

"""Citations in the model's text: parsed, cleaned of numbers that name no passage shown, and filtered in a stream.

The model is asked to cite ``[n]``; ``[1, 2]`` and ``[1][2]`` are understood too. A number that names no passage the
model was shown is removed, so a citation always maps back to a chunk.
"""

from __future__ import annotations

import re

# [3] or [1, 2] (with any spacing); leading whitespace belongs to the match so removing one leaves no gap.
_CITATION = re.compile(r"(\s*)\[(\d+(?:\s*,\s*\d+)*)\]")
# A tail that may still become a citation when more text streams in: whitespace, then maybe "[1, 2".
_OPEN_TAIL = re.compile(r"\s*(?:\[[\d,\s]*)?$")


def parse_citations(text: str) -> list[int]:
    """Numbers cited in ``text`` in order of first appearance (``[1]``, ``[1, 2]``, ``[1][2]``)."""
    seen: dict[int, None] = {}
    for match in _CITATION.finditer(text):
        for number in match.group(2).split(","):
            seen.setdefault(int(number), None)
    return list(seen)


def clean_citations(text: str, valid: set[int]) -> str:
    """Remove cited numbers that point at no passage; drop a bracket (and the space before it) left empty."""

    def fix(match: re.Match[str]) -> str:
        numbers = [int(n) for n in match.group(2).split(",")]
        keep = [n for n in numbers if n in valid]
        if len(keep) == len(numbers):
            return match.group(0)
        if not keep:
            return ""
        return f"{match.group(1)}[{', '.join(str(n) for n in keep)}]"

    return _CITATION.sub(fix, text)


class CitationFilter:
    """Applies :func:`clean_citations` to a stream: holds back a tail that might still become a citation.

    So the joined streamed pieces equal the cleaned full text, however the model's text was split.
    """

    def __init__(self, valid: set[int]) -> None:
        self.valid = valid
        self._pending = ""

    def feed(self, piece: str) -> str:
        """The cleaned text that can be released now; a possible citation's start waits for the next piece."""
        text = self._pending + piece
        tail = _OPEN_TAIL.search(text)
        cut = tail.start() if tail else len(text)
        self._pending = text[cut:]
        return clean_citations(text[:cut], self.valid)

    def flush(self) -> str:
        """What was held back, cleaned: call once the stream has ended."""
        text, self._pending = self._pending, ""
        return clean_citations(text, self.valid)


def strip_citations(text: str) -> str:
    """``text`` without its citation marks: what a sentence claims, for checking it against a passage."""
    return _CITATION.sub("", text)


def recite(sentence: str, numbers: list[int]) -> str:
    """``sentence`` citing exactly ``numbers``: its marks removed, one ``[a, b]`` put before its final punctuation."""
    bare = strip_citations(sentence).rstrip()
    if not numbers:
        return bare
    body = bare.rstrip(".!?")
    return f"{body} [{', '.join(str(n) for n in numbers)}]{bare[len(body):]}"

"""Plain text (txt, rst, org, csv, json) and Markdown: decoded as they are; Markdown also yields its title."""

from __future__ import annotations

import re

from ingest.readers.base import Parsed, Work
from ingest.readers.encoding import decode


def parse_text(data: bytes, _work: Work) -> Parsed:
    text, encoding = decode(data)
    return text, None, {"encoding": encoding}


_ATX_H1 = re.compile(r"^#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


def parse_markdown(data: bytes, _work: Work) -> Parsed:
    """Markdown stays markdown (headings help the chunker); the title is front-matter title or first H1."""
    text, encoding = decode(data)
    return text, _markdown_title(text), {"encoding": encoding}


def _markdown_title(text: str) -> str | None:
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter
        for i, line in enumerate(lines[1:], 1):
            if line.strip() in ("---", "..."):
                lines = lines[i + 1 :]
                break
            if line.lower().startswith("title:"):
                return line[6:].strip().strip("'\"")
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            match = _ATX_H1.match(line)
            heading = match.group(1) if match else None
            if heading is None and line.strip() and i + 1 < len(lines) and re.fullmatch(r"=+\s*", lines[i + 1]):
                heading = line  # setext H1: text underlined with ===
            if heading and heading.strip("#*_ "):
                return re.sub(r"\\(?=[^\w\s])", "", heading.strip().strip("*_").strip())
    return None

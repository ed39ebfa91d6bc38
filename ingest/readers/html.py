"""HTML: the visible text with its block structure, read in the charset the page declares."""

from __future__ import annotations

import codecs
import re
from typing import Any

from bs4 import BeautifulSoup, CData, NavigableString

from ingest.readers.base import Parsed, Work
from ingest.readers.encoding import decode

_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"^\s*<\?xml[^>]+encoding\s*=\s*[\"']([\w.:-]+)")
_DROP_TAGS = {"head", "script", "style", "noscript", "template", "nav", "header", "footer", "svg", "iframe",
              "object", "canvas", "button", "select"}  # fmt: skip
_PARAGRAPH_TAGS = {"p", "div", "section", "article", "main", "aside", "blockquote", "pre", "table", "ul", "ol",
                   "dl", "figure", "figcaption", "form", "fieldset", "details", "summary", "address", "hr",
                   "h1", "h2", "h3", "h4", "h5", "h6", "caption", "body"}  # fmt: skip
_LINE_TAGS = {"li", "dt", "dd", "tr"}
_CELL_TAGS = {"td", "th"}
_PARA, _LINE, _CELL = "\x00para", "\x00line", "\x00cell"  # markers, replaced after the walk
_SEP_TEXT = {_PARA: "\n\n", _LINE: "\n", _CELL: "\t"}
_SEP_RANK = {_CELL: 0, _LINE: 1, _PARA: 2}
_SPACES = re.compile(r"\s+")
_CELL_SEP = re.compile(r" *\t[\t ]*")


def declared_charset(data: bytes) -> str | None:
    """The charset a page declares (meta or XML declaration), as a Python codec name, WHATWG-adjusted."""
    match = _META_CHARSET.search(data[:4096]) or _XML_ENCODING.search(data[:4096])
    if not match:
        return None
    try:
        name = codecs.lookup(match.group(1).decode("ascii")).name
    except LookupError:
        return None
    if name in ("iso8859-1", "ascii", "latin-1"):
        return "cp1252"  # browsers read these labels as windows-1252, and so do the pages written for them
    return None if name.startswith(("utf-16", "utf-32")) else name  # a BOM-less "utf-16" label is a lie


def parse_html(data: bytes, _work: Work) -> Parsed:
    text, encoding = decode(data, declared_charset(data))
    body, title = html_to_text(text)
    return body, title, {"encoding": encoding}


def html_to_text(markup: str) -> tuple[str, str | None]:
    """Visible text with block structure kept: blocks become paragraphs, rows lines, cells ' | '-separated."""
    soup = BeautifulSoup(markup, "lxml")
    title_tag = soup.find("title") or soup.find("h1")
    title = title_tag.get_text(" ", strip=True) if title_tag else None
    out: list[str] = []
    _walk_html(soup, out, pre=False)
    text = "".join(_SEP_TEXT.get(piece, piece) for piece in out)
    lines = (_CELL_SEP.sub(" | ", line).strip().strip("|").strip() for line in text.split("\n"))
    return "\n".join(lines), title


def _walk_html(node: Any, out: list[str], pre: bool) -> None:
    for child in node.children:
        if isinstance(child, NavigableString):
            if type(child) in (NavigableString, CData):  # not comments, doctype, processing instructions
                piece = str(child) if pre else _SPACES.sub(" ", child)
                if pre or piece != " " or (out and out[-1] not in _SEP_TEXT):
                    out.append(piece)  # (whitespace between two blocks would split a pair of separators)
            continue
        name = child.name
        if name == "br":
            out.append("\n")
            continue
        if name in _DROP_TAGS and not (name in ("header", "footer") and child.find_parent(("article", "main"))):
            continue  # site chrome; an article's own <header> holds its heading and stays
        sep = (
            _PARA if name in _PARAGRAPH_TAGS else _LINE if name in _LINE_TAGS else _CELL if name in _CELL_TAGS else None
        )
        if sep is None:
            _walk_html(child, out, pre)
            continue
        _separate(out, sep)
        _walk_html(child, out, pre or name in ("pre", "textarea"))
        _separate(out, sep)


def _separate(out: list[str], sep: str) -> None:
    """Adjacent separators merge into the strongest, so nested blocks or <li><p> never stack blank lines."""
    if out and out[-1] in _SEP_TEXT:
        if _SEP_RANK[sep] > _SEP_RANK[out[-1]]:
            out[-1] = sep
    else:
        out.append(sep)

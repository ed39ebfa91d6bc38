"""Turn one file into normalised text: the *parse* step of ingestion.

Every reader returns a :class:`ParsedDocument` or raises :class:`ReadError` with a sentence a person can act on;
the pipeline records that sentence against the file and goes on with the rest, so no parser exception may escape
(only ``KeyboardInterrupt``, ``SystemExit``, ``MemoryError`` and :class:`ReadCancelled` do). Files are size-checked
from ``stat`` before a byte is read and never read past ``max_bytes``; zip-based formats are also checked for what
they expand to. Parsers check a deadline (and a cancel callback) between units of work (pages, paragraphs, rows,
slides), so one hostile file costs at most ``timeout_s`` and a cancel is seen within one unit.

Text is normalised the same way for every type (see :func:`normalise_text`) so chunk offsets, hashes and BM25
tokens do not depend on which parser produced them.
"""

from __future__ import annotations

import codecs
import email.policy
import importlib.util
import io
import logging
import os
import posixpath
import re
import stat
import time
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bs4 import BeautifulSoup, CData, NavigableString
from charset_normalizer import from_bytes
from lxml import etree

from rag.settings import Settings

log = logging.getLogger(__name__)

# --- public API -----------------------------------------------------------------------------------------------


class ReadError(Exception):
    """A file could not be turned into text; ``str(exc)`` is a human sentence saying why."""


class ReadCancelled(Exception):
    """The caller's ``should_cancel`` said stop while a file was being parsed. Not a ReadError: the file is not at
    fault and must not be recorded as failed."""


DEFAULT_MAX_EXPANDED_BYTES = int(Settings.model_fields["max_expanded_mb"].default * 2**20)
DEFAULT_TIMEOUT_S: float = Settings.model_fields["parse_timeout_s"].default


class _Work:
    """The budget of one parse: the size limits, a deadline and the cancel callback. Parsers call :meth:`check`
    between units of work; it costs a clock read, so they may call it per paragraph."""

    def __init__(self, max_bytes: int, max_expanded_bytes: int, timeout_s: float,
                 should_cancel: Callable[[], bool] | None) -> None:
        self.max_bytes = max_bytes
        self.max_expanded_bytes = max_expanded_bytes
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.should_cancel = should_cancel

    def check(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise ReadCancelled("cancelled while parsing")
        if time.monotonic() > self.deadline:
            raise ReadError(f"parsing took longer than {self.timeout_s:g} s (RAG_PARSE_TIMEOUT_S), so the file is skipped")


@dataclass
class ParsedDocument:
    """One file's text and what we learned about it; the chunker and the store take it from here."""

    text: str  # normalised: NFC, no NULs/control chars, paragraphs separated by exactly "\n\n"
    title: str | None
    doc_type: str  # 'txt', 'md', 'html', 'pdf', 'docx', 'pptx', 'xlsx', 'odt', 'epub', 'eml', 'rtf', ...
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable only


# Suffix -> doc_type. Plain-text formats keep their own name (the chunker may treat them alike) but are all read
# by the same decoder. Formats whose parser is an optional package are only listed when it is installed, so
# discovery skips those files instead of failing each one.
_TEXT_TYPES = {
    ".txt": "txt", ".text": "txt", ".log": "txt", ".rst": "rst", ".org": "org",
    ".csv": "csv", ".tsv": "csv", ".json": "json",
    ".md": "md", ".markdown": "md",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf", ".odt": "odt", ".epub": "epub", ".eml": "eml",
}  # fmt: skip
_OPTIONAL_TYPES = {
    ".docx": ("docx", "docx"),
    ".pptx": ("pptx", "pptx"),
    ".xlsx": ("xlsx", "openpyxl"),
    ".rtf": ("rtf", "striprtf"),
}  # suffix -> (doc_type, module that parses it)
_SUFFIX_TYPES: dict[str, str] = dict(_TEXT_TYPES) | {
    suffix: doc_type
    for suffix, (doc_type, module) in _OPTIONAL_TYPES.items()
    if importlib.util.find_spec(module) is not None
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_SUFFIX_TYPES)


def doc_type_for(path: str | Path) -> str | None:
    """The doc_type a path would be parsed as, from its suffix; None when it is not a type we ingest."""
    return _SUFFIX_TYPES.get(Path(path).suffix.lower())


def read_document(
    path: Path,
    max_bytes: int,
    *,
    max_expanded_bytes: int = DEFAULT_MAX_EXPANDED_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    should_cancel: Callable[[], bool] | None = None,
) -> ParsedDocument:
    """Parse one file within ``max_bytes`` on disk, ``max_expanded_bytes`` unzipped and ``timeout_s`` of parsing.

    Raises ReadError, or ReadCancelled when ``should_cancel`` returns True (never anything else but
    KeyboardInterrupt/SystemExit/MemoryError).
    """
    path = Path(path)
    doc_type = doc_type_for(path)
    if doc_type is None:
        raise ReadError(f"unsupported file type {path.suffix or '(no suffix)'!r}")
    work = _Work(max_bytes, max_expanded_bytes, timeout_s, should_cancel)
    try:
        data = _read_bounded(path, max_bytes)
        with _warnings_to_debug():
            text, title, metadata = _PARSERS[doc_type](data, work)
    except (ReadError, ReadCancelled, MemoryError):
        raise
    except Exception as exc:  # any parser bug or malformed input: report it, never crash the ingestion run
        detail = str(exc).strip() or type(exc).__name__
        raise ReadError(f"could not parse {doc_type} file: {detail}") from exc
    text = normalise_text(text)
    if not text:
        raise ReadError("empty document")
    return ParsedDocument(text=text, title=_clean_title(title), doc_type=doc_type, metadata=metadata)


# --- normalisation --------------------------------------------------------------------------------------------

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


def _clean_title(title: str | None) -> str | None:
    """Whitespace-collapsed title, or None for the placeholders tools write ('Untitled', 'Binder1.pdf', 'a_b')."""
    if not title:
        return None
    title = unicodedata.normalize("NFC", " ".join(_CONTROL.sub("", title).split()))[:300]
    if not title or _PLACEHOLDER_TITLE.match(title) or _FILENAME_TITLE.search(title):
        return None
    if "_" in title and re.fullmatch(r"[\w.-]+", title):  # an identifier such as 'sample_pdf_with_headers'
        return None
    return title


# --- bytes in -------------------------------------------------------------------------------------------------


_FILE_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link"}


def open_regular(path: Path) -> io.BufferedReader:
    """Open a file for reading only if it is a regular file, else ReadError naming what it is.

    Opening a FIFO for reading blocks until a writer appears (for ever, in an ingestion job), and opening a device
    can have effects; so the type is checked with ``stat`` before opening, then again on the open descriptor
    (opened non-blocking: a FIFO swapped in between cannot block either).
    """
    _require_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _require_regular(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _require_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise ReadError(f"not a regular file: it is {_FILE_KINDS.get(stat.S_IFMT(mode), 'a special file')}")


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """Read a regular file, refusing from stat (before reading) anything over max_bytes."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise ReadError(f"file is {size:,} bytes, over the {max_bytes:,}-byte limit")
            if size == 0:
                raise ReadError("empty document")
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ReadError(f"cannot read file: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:  # it grew between stat and read
        raise ReadError(f"file is over the {max_bytes:,}-byte limit")
    return data


_BOMS = [  # (bom, codec, name recorded); UTF-32 first: its LE BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"), (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
]  # fmt: skip
_SNIFF = 8192
_BAD_CONTROL = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")  # ESC (\x1b) allowed: coloured logs


def _decode(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Bytes -> (text, encoding used): BOM, else declared charset, else UTF-8, else detection.

    Raises ReadError for binary data (NULs or many control characters early on) and undecodable bytes.
    """
    for bom, codec, encoding in _BOMS:
        if data.startswith(bom):  # a BOM is a promise; a few bad sequences after it become U+FFFD
            text = data[len(bom) :].decode(codec, "replace")
            break
    else:
        if b"\x00" in data[:_SNIFF]:
            raise ReadError("binary file, not text")
        text, encoding = _decode_unmarked(data, declared)
    head = text[:_SNIFF]
    if head and len(_BAD_CONTROL.findall(head)) > 0.1 * len(head):
        raise ReadError("binary file, not text")
    return text, encoding


def _decode_unmarked(data: bytes, declared: str | None) -> tuple[str, str]:
    if declared:
        try:
            return data.decode(declared), declared
        except UnicodeDecodeError:
            log.debug("declared charset %s does not fit the bytes; detecting", declared)
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # Overwhelmingly UTF-8 with a few stray bytes (e.g. one pasted latin-1 line): keep UTF-8 and replace those,
    # detection would instead re-read every multibyte character as mojibake.
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    if non_ascii - bad >= 10 * bad:
        return text, "utf-8"
    # charset_normalizer reads short Western text as CJK ('johab') or Baltic ('cp1257'). windows-1252, by far the
    # most common legacy encoding, wins unless another reads the bytes clearly better (less "chaos"); Cyrillic,
    # Greek, Hebrew, Central European and CJK text make cp1252 fail outright, so their detection is unchanged.
    best = from_bytes(data).best()
    western = from_bytes(data, cp_isolation=["cp1252"]).best()
    if western is not None and (best is None or western.chaos <= best.chaos + 0.1):
        best = western
    if best is None:
        raise ReadError("not valid UTF-8 and no encoding could be detected")
    return str(best), best.encoding


def _check_zip(data: bytes, work: _Work) -> None:
    """Refuse zip containers (docx, pptx, xlsx, odt, epub) that expand beyond ``max_expanded_bytes`` or 20x the
    file size limit (zip bombs): their XML is parsed whole, so what they expand to is what parsing costs.

    zipfile never inflates a member past its declared size, so the central directory's sizes are a real bound.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        expanded = sum(info.file_size for info in zf.infolist())
    limit = min(20 * work.max_bytes, work.max_expanded_bytes)
    if expanded > limit:
        raise ReadError(f"archive expands to {expanded:,} bytes, over the {limit:,}-byte limit (RAG_MAX_EXPANDED_MB)")


class _ToDebug(logging.Handler):
    """pypdf logs a WARNING for every recoverable quirk of a PDF; those are noise to an ingestion run."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s: %s", record.name, record.getMessage())


_pypdf_log = logging.getLogger("pypdf")
_pypdf_log.addHandler(_ToDebug())
_pypdf_log.propagate = False


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


# --- parsers: (data, work) -> (text, title, metadata) ---------------------------------------------------------

Parsed = tuple[str, str | None, dict[str, Any]]


def _parse_text(data: bytes, _work: _Work) -> Parsed:
    text, encoding = _decode(data)
    return text, None, {"encoding": encoding}


_ATX_H1 = re.compile(r"^#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


def _parse_markdown(data: bytes, _work: _Work) -> Parsed:
    """Markdown stays markdown (headings help the chunker); the title is front-matter title or first H1."""
    text, encoding = _decode(data)
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


def _declared_charset(data: bytes) -> str | None:
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


def _parse_html(data: bytes, _work: _Work) -> Parsed:
    text, encoding = _decode(data, _declared_charset(data))
    body, title = _html_to_text(text)
    return body, title, {"encoding": encoding}


def _html_to_text(markup: str) -> tuple[str, str | None]:
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


PDF_MAX_ARRAY_ELEMENTS = 2_000_000
"""pypdf refuses arrays over 100,000 elements (a guard against hostile files), which rejects real filings: two
Microsoft 10-Qs (2 MB) hold one array of 100k-1M elements. 2M elements is about 150 MB of Python objects at
worst, and files over ``RAG_MAX_FILE_MB`` never reach the parser."""


def _parse_pdf(data: bytes, work: _Work) -> Parsed:
    """Text per page, pages joined by paragraph breaks; ``page_starts[i]`` is the offset of page i+1's text."""
    from pypdf import apply_configuration

    with apply_configuration(array_maximum_element_count=PDF_MAX_ARRAY_ELEMENTS):  # per thread (a ContextVar)
        return _read_pdf(data, work)


def _read_pdf(data: bytes, work: _Work) -> Parsed:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            if reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise ReadError("PDF is encrypted and needs a password")
        except (DependencyError, NotImplementedError) as exc:
            raise ReadError(f"PDF is encrypted in a way we cannot open: {exc}") from exc
    pages: list[str] = []
    starts: list[int] = []
    offset, failures = 0, []
    for number, page in enumerate(reader.pages, 1):
        work.check()
        starts.append(offset)
        try:
            page_text = normalise_text(page.extract_text() or "")
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 -- one broken page should not cost the other pages
            log.debug("pdf page %d: text extraction failed: %s", number, exc)
            failures.append(f"page {number}: {exc}")
            continue
        if page_text:
            pages.append(page_text)
            offset += len(page_text) + 2  # the "\n\n" that joins it to the next page
    if not pages:
        if failures:
            raise ReadError(f"PDF text extraction failed ({failures[0]})")
        raise ReadError("PDF has no extractable text (scanned image?)")
    text = "\n\n".join(pages)
    meta = reader.metadata
    title = meta.title if meta is not None else None
    metadata: dict[str, Any] = {"pages": len(reader.pages), "page_starts": [min(s, len(text)) for s in starts]}
    if failures:
        metadata["pages_failed"] = len(failures)
    return text, title if isinstance(title, str) else None, metadata


def _parse_docx(data: bytes, work: _Work) -> Parsed:
    """Body paragraphs and tables in document order (headers, footers and text boxes are not read).

    Linear in the document: python-docx's ``paragraph.style`` searches every style for each paragraph, and its
    ``row.cells`` walks up a vertically merged cell row by row, both quadratic on a hostile file (a 94 KB docx
    took over 15 CPU-minutes); the title paragraph is found with one XPath query and tables are walked here.
    """
    import docx
    from docx.table import Table

    _check_zip(data, work)
    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    for item in document.iter_inner_content():
        work.check()
        blocks.append(_docx_table(item, work) if isinstance(item, Table) else item.text)
    title = document.core_properties.title or _docx_styled_title(document)
    return "\n\n".join(blocks), title, {}


def _docx_styled_title(document: Any) -> str | None:
    """The text of the first body paragraph in a paragraph style named "Title" (paragraphs name styles by id)."""
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml.ns import nsmap
    from docx.text.paragraph import Paragraph

    body = document.element.body
    for style in document.styles.element.style_lst:
        if style.type == WD_STYLE_TYPE.PARAGRAPH and style.name_val == "Title" and style.styleId:
            found = etree._Element.xpath(  # lxml's own: python-docx's override takes no variables
                body, "./w:p[w:pPr/w:pStyle/@w:val = $id][1]", namespaces={"w": nsmap["w"]}, id=style.styleId
            )
            if found:
                return Paragraph(found[0], document).text
    return None


def _docx_table(table: Any, work: _Work) -> str:
    """One line per row, cells ' | '-separated. A horizontally merged cell counts once; a vertically merged one
    repeats its first row's text (kept per grid column, so no walk back up the table)."""
    from docx.table import _Cell

    rows = []
    above: dict[int, str] = {}  # grid column -> text of the cell that starts a vertical merge there
    for tr in table._tbl.tr_lst:
        work.check()
        cells, column = [], tr.grid_before
        for tc in tr.tc_lst:
            if tc.vMerge == "continue":
                text = above.get(column, "")
            else:
                text = " ".join(_Cell(tc, table).text.split())
                above[column] = text
            cells.append(text)
            column += tc.grid_span
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _parse_pptx(data: bytes, work: _Work) -> Parsed:
    """Per slide: text frames (groups included), tables, then speaker notes."""
    from pptx import Presentation
    from pptx.shapes.group import GroupShape

    def shapes_of(shapes: Any) -> Iterator[Any]:
        for shape in shapes:
            if isinstance(shape, GroupShape):
                yield from shapes_of(shape.shapes)
            else:
                yield shape

    _check_zip(data, work)
    deck = Presentation(io.BytesIO(data))
    slides, title = [], deck.core_properties.title or None
    for slide in deck.slides:
        work.check()
        parts = []
        for shape in shapes_of(slide.shapes):
            if shape.has_text_frame:
                parts.append(shape.text_frame.text)
            elif getattr(shape, "has_table", False):
                rows = [" | ".join(" ".join(c.text.split()) for c in row.cells) for row in shape.table.rows]
                parts.append("\n".join(rows))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            parts.append(slide.notes_slide.notes_text_frame.text)
        if title is None and slide.shapes.title is not None and slide.shapes.title.has_text_frame:
            title = slide.shapes.title.text_frame.text
        slides.append("\n\n".join(parts))
    return "\n\n".join(slides), title, {"slides": len(slides)}


def _parse_xlsx(data: bytes, work: _Work) -> Parsed:
    """Each sheet: its name, then one line per non-empty row with cells ' | '-separated (cached values)."""
    from openpyxl import load_workbook

    _check_zip(data, work)
    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets = []
        for sheet in book.worksheets:
            rows = []
            for row in sheet.iter_rows(values_only=True):
                work.check()
                cells = ["" if value is None else " ".join(str(value).split()) for value in row]
                while cells and not cells[-1]:
                    cells.pop()
                if cells:
                    rows.append(" | ".join(cells))
            if rows:
                sheets.append(f"Sheet: {sheet.title}\n" + "\n".join(rows))
        return "\n\n".join(sheets), book.properties.title, {"sheets": len(book.worksheets)}
    finally:
        book.close()


_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _parse_odt(data: bytes, work: _Work) -> Parsed:
    """OpenDocument text: headings and paragraphs from content.xml (lists and table cells included)."""
    _check_zip(data, work)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        content = etree.fromstring(zf.read("content.xml"), _XML_PARSER)
        title = None
        if "meta.xml" in zf.namelist():
            title = etree.fromstring(zf.read("meta.xml"), _XML_PARSER).findtext(".//{*}title")
    blocks = [f"{{{_ODF_TEXT}}}p", f"{{{_ODF_TEXT}}}h"]
    paragraphs = []
    for element in content.iter(*blocks):
        work.check()
        if next(element.iterancestors(*blocks), None) is None:
            paragraphs.append(_odf_inline(element))
    return "\n\n".join(paragraphs), title, {}


def _odf_inline(element: Any) -> str:
    parts = [element.text or ""]
    for child in element:
        name = etree.QName(child).localname if isinstance(child.tag, str) else None
        if name == "s":  # run of spaces; the count is capped so a hostile file cannot ask for a gigabyte
            parts.append(" " * min(int(child.get(f"{{{_ODF_TEXT}}}c", "1") or 1), 100))
        elif name == "tab":
            parts.append("\t")
        elif name == "line-break":
            parts.append("\n")
        elif name not in (None, "note", "annotation"):
            parts.append(_odf_inline(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _parse_epub(data: bytes, work: _Work) -> Parsed:
    """EPUB: the XHTML documents of the spine, in reading order, each read as HTML."""
    _check_zip(data, work)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        container = etree.fromstring(zf.read("META-INF/container.xml"), _XML_PARSER)
        rootfile = container.find(".//{*}rootfile")
        if rootfile is None or not rootfile.get("full-path"):
            raise ReadError("EPUB has no package document (META-INF/container.xml names none)")
        opf_path = rootfile.get("full-path")
        package = etree.fromstring(zf.read(opf_path), _XML_PARSER)
        manifest = {item.get("id"): item for item in package.iter("{*}item")}
        names = set(zf.namelist())
        chapters = []
        for ref in package.iter("{*}itemref"):
            work.check()
            item = manifest.get(ref.get("idref"))
            if item is None or "html" not in (item.get("media-type") or "") or not item.get("href"):
                continue
            name = posixpath.normpath(posixpath.join(posixpath.dirname(opf_path), unquote(item.get("href"))))
            if name not in names:  # a dangling spine entry costs that chapter, not the book
                log.debug("epub: spine item %s is missing", name)
                continue
            markup = zf.read(name)
            chapters.append(_html_to_text(_decode(markup, _declared_charset(markup))[0])[0])
        title = package.findtext(".//{*}metadata/{*}title")
    return "\n\n".join(chapters), title, {"chapters": len(chapters)}


def _parse_eml(data: bytes, _work: _Work) -> Parsed:
    """An e-mail: the main headers, then the plain-text body (or the HTML body as text); attachments skipped."""
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    headers = {name: str(message[name]) for name in ("Subject", "From", "To", "Date") if message[name]}
    body_part = message.get_body(preferencelist=("plain", "html"))
    body = body_part.get_content() if body_part is not None else ""
    if body_part is not None and body_part.get_content_type() == "text/html":
        body = _html_to_text(body)[0]
    head = "\n".join(f"{name}: {value}" for name, value in headers.items())
    metadata: dict[str, Any] = {name.lower(): value for name, value in headers.items() if name != "Subject"}
    metadata["attachments"] = sum(1 for _ in message.iter_attachments())
    return f"{head}\n\n{body}", headers.get("Subject"), metadata


def _parse_rtf(data: bytes, _work: _Work) -> Parsed:
    from striprtf.striprtf import rtf_to_text

    match = re.search(rb"\\ansicpg(\d+)", data[:4096])
    encoding = f"cp{int(match.group(1))}" if match else "cp1252"
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "cp1252"
    return (
        rtf_to_text(data.decode(encoding, "replace"), encoding=encoding, errors="replace"),
        None,
        {"encoding": encoding},
    )


_PARSERS: dict[str, Callable[[bytes, _Work], Parsed]] = {
    "txt": _parse_text, "rst": _parse_text, "org": _parse_text, "csv": _parse_text, "json": _parse_text,
    "md": _parse_markdown, "html": _parse_html, "pdf": _parse_pdf, "docx": _parse_docx, "pptx": _parse_pptx,
    "xlsx": _parse_xlsx, "odt": _parse_odt, "epub": _parse_epub, "eml": _parse_eml, "rtf": _parse_rtf,
}  # fmt: skip

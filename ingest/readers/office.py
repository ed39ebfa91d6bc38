"""Office documents: Word (docx), PowerPoint (pptx), Excel (xlsx) and OpenDocument text (odt).

Their parsers are optional packages, imported inside each reader so a missing one costs only its format.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from lxml import etree

from ingest.readers.base import XML_PARSER, Parsed, ReadError, Work, check_text_size, check_zip
from ingest.readers.normalise import join_pages


def parse_docx(data: bytes, work: Work) -> Parsed:
    """Body paragraphs and tables in document order (headers, footers and text boxes are not read).

    Linear in the document: python-docx's ``paragraph.style`` searches every style for each paragraph, and its
    ``row.cells`` walks up a vertically merged cell row by row, both quadratic on a hostile file (a 94 KB docx
    took over 15 CPU-minutes); the title paragraph is found with one XPath query and tables are walked here.
    """
    import docx
    from docx.table import Table

    check_zip(data, work)
    _check_docx_body(data, work)
    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    for item in document.iter_inner_content():
        work.check()
        blocks.append(_docx_table(item, work) if isinstance(item, Table) else item.text)
    title = document.core_properties.title or _docx_styled_title(document)
    return "\n\n".join(blocks), title, {}


_DOCX_TEXT = re.compile(rb"<w:t(?:\s[^>]*)?>([^<]*)")
"""A text run's characters in WordprocessingML (``<w:t>`` or ``<w:t xml:space=...>``, not ``<w:tbl>``): negated
classes only, so the scan is linear."""
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))


def _check_docx_body(data: bytes, work: Work) -> None:
    """Count the main part's paragraphs and its text's characters in the raw XML, before python-docx builds a tree
    of it: a 326 KB docx expanding to 2.7M tiny paragraphs took 79 s and 1.8 GB to walk, and one expanding to
    100 MB of prose 141 s to chunk. Byte scans, well under a second for the largest part the zip limit allows."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        try:
            xml = zf.read("word/document.xml")
        except KeyError:
            return  # python-docx names the problem
    paragraphs = xml.count(b"<w:p>") + xml.count(b"<w:p ")
    if paragraphs > work.max_paragraphs:
        raise ReadError(f"docx has {paragraphs:,} paragraphs, over the {work.max_paragraphs:,}-paragraph limit "
                        "(RAG_MAX_PARAGRAPHS)")
    text = b"".join(_DOCX_TEXT.findall(xml))
    check_text_size(len(text.translate(None, delete=_UTF8_CONTINUATION)), work, "the docx's text")  # characters


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


def _docx_table(table: Any, work: Work) -> str:
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


def parse_pptx(data: bytes, work: Work) -> Parsed:
    """Per slide: text frames (groups included), tables, then speaker notes."""
    from pptx import Presentation
    from pptx.shapes.group import GroupShape

    def shapes_of(shapes: Any) -> Iterator[Any]:
        for shape in shapes:
            if isinstance(shape, GroupShape):
                yield from shapes_of(shape.shapes)
            else:
                yield shape

    check_zip(data, work)
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
    text, starts = join_pages(slides)
    return text, title, {"slides": len(slides), "page_starts": starts}  # a slide is a page: hits name their slide


def parse_xlsx(data: bytes, work: Work) -> Parsed:
    """Each sheet: its name, then one line per non-empty row with cells ' | '-separated (cached values).

    A sheet is a page: the sheets are joined by :func:`join_pages` (``page_starts``, so a chunk's ``page`` is its
    sheet's number in workbook order and ``page_starts`` marks the sheet breaks inside it), and ``sheet_names``
    names each page, so hits and spans also name their sheet (:func:`ingest.chunking.page_meta`). An empty sheet
    is a page without text, as an empty PDF page is: it keeps the numbering and no passage falls on it.
    """
    from openpyxl import load_workbook

    check_zip(data, work)
    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets, names = [], []
        for sheet in book.worksheets:
            rows = []
            for row in sheet.iter_rows(values_only=True):
                work.check()
                cells = ["" if value is None else " ".join(str(value).split()) for value in row]
                while cells and not cells[-1]:
                    cells.pop()
                if cells:
                    rows.append(" | ".join(cells))
            names.append(sheet.title)
            sheets.append(f"Sheet: {sheet.title}\n" + "\n".join(rows) if rows else "")
        text, starts = join_pages(sheets)
        return text, book.properties.title, {"sheets": len(names), "page_starts": starts, "sheet_names": names}
    finally:
        book.close()


_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"


def parse_odt(data: bytes, work: Work) -> Parsed:
    """OpenDocument text: headings and paragraphs from content.xml (lists and table cells included)."""
    check_zip(data, work)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        content = etree.fromstring(zf.read("content.xml"), XML_PARSER)
        title = None
        if "meta.xml" in zf.namelist():
            title = etree.fromstring(zf.read("meta.xml"), XML_PARSER).findtext(".//{*}title")
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

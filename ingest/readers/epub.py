"""EPUB: the book's spine, chapter by chapter, each chapter read as HTML."""

from __future__ import annotations

import io
import posixpath
import zipfile
from urllib.parse import unquote

from lxml import etree

from ingest.readers.base import XML_PARSER, Parsed, ReadError, Work, check_zip, log
from ingest.readers.encoding import decode
from ingest.readers.html import declared_charset, html_to_text


def parse_epub(data: bytes, work: Work) -> Parsed:
    """EPUB: the XHTML documents of the spine, in reading order, each read as HTML."""
    check_zip(data, work)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        container = etree.fromstring(zf.read("META-INF/container.xml"), XML_PARSER)
        rootfile = container.find(".//{*}rootfile")
        if rootfile is None or not rootfile.get("full-path"):
            raise ReadError("EPUB has no package document (META-INF/container.xml names none)")
        opf_path = rootfile.get("full-path")
        package = etree.fromstring(zf.read(opf_path), XML_PARSER)
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
            chapters.append(html_to_text(decode(markup, declared_charset(markup))[0])[0])
        title = package.findtext(".//{*}metadata/{*}title")
    return "\n\n".join(chapters), title, {"chapters": len(chapters)}

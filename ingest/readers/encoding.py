"""Bytes to text for every text-based format: BOM, declared charset, UTF-8, then detection; binary is refused."""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

from ingest.readers.base import ReadError, log

_BOMS = [  # (bom, codec, name recorded); UTF-32 first: its LE BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"), (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
]  # fmt: skip
_SNIFF = 8192
_BAD_CONTROL = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")  # ESC (\x1b) allowed: coloured logs


def decode(data: bytes, declared: str | None = None) -> tuple[str, str]:
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

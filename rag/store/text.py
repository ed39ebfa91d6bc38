"""Text every store and every JSON encoder accepts, from file names that are bytes.

A Linux file name is bytes; Python hands one that is not valid UTF-8 over as a ``str`` holding lone surrogates
(``os.fsdecode``'s ``surrogateescape``: byte 0xFF becomes U+DCFF). Such a string cannot be encoded as UTF-8: SQLite
and PostgreSQL refuse it, and a JSON response that holds it fails to serialise (issue 32: one such name failed a
whole API job, and a lone surrogate stored in a job made ``GET /v1/jobs`` answer 400 until the job aged out).

So a path is stored and shown as :func:`path_text`: each undecodable byte as U+FFFD (the replacement character a
person sees) followed by its two hex digits, e.g. ``caf\\xff.txt`` → ``caf�FF.txt``; :func:`fs_path` turns it back
into the name the operating system knows, byte for byte. Valid names are left as they are, so stores written
before keep their paths. Any other lone surrogate (no file name holds one) becomes a bare U+FFFD.

The store's text columns apply :func:`path_text` to every value they are given (:class:`SafeText`,
:class:`SafeJSON`), so no string, wherever it came from (an error message quoting a path, a job's paths), can be
written that a listing could not serialise.
"""

from __future__ import annotations

import os
import re
from typing import Any

from sqlalchemy import JSON, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTE = re.compile("\ufffd([89A-F][0-9A-F])")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\ufffd{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else "\ufffd"


def path_text(path: str | os.PathLike[str]) -> str:
    """``path`` as valid Unicode: each byte that is not UTF-8 (a surrogate-escaped one) as U+FFFD and its hex digits.

    Idempotent, and the identity on every valid name (the common case costs one regex scan)."""
    text = os.fspath(path)
    return _SURROGATE.sub(_escape, text) if _SURROGATE.search(text) else text


def fs_path(text: str) -> str:
    """The file name :func:`path_text` was made from (its undecodable bytes surrogate-escaped again), to open it.

    Ambiguous only for a valid name that itself holds U+FFFD followed by two hex digits 80-FF, which reads back as
    that byte: the price of leaving every valid name unchanged."""
    if "\ufffd" not in text:
        return text
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return path_text(value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class SafeText(TypeDecorator[str]):
    """TEXT whose values are written through :func:`path_text`; lookups by value bind the same way, so a path finds
    its row whichever form the caller holds."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_text(value)


class SafeJSON(TypeDecorator[Any]):
    """JSON whose strings (keys and values, at any depth) are written through :func:`path_text`."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return _clean(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return _clean(value)  # a row written before: SQLite's JSON kept a lone surrogate as a \u escape

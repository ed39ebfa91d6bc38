"""RTF: text through striprtf (an optional package), in the code page the file declares."""

from __future__ import annotations

import codecs
import re

from ingest.readers.base import Parsed, Work


def parse_rtf(data: bytes, _work: Work) -> Parsed:
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

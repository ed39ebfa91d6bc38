"""Saving uploaded files where an ingestion job can read them: ``<data_dir>/uploads/<collection>/<name>``.

A file is written to a temporary name and renamed into place, so a job (or a concurrent upload of the same
name) never reads half a file. Re-uploading a name replaces the file, which the next job sees as an updated
document: the same change detection as for server folders.

Names are kept as the client sent them as far as that is safe, because the name is the document's identity:
letters of any script stay (two Chinese names must not both become ``_.txt`` and replace each other), folders in
the name stay (``a/dup.txt`` and ``b/dup.txt`` of a folder upload are two documents), ``.``/``..`` and
characters that mean something to a shell or filesystem are dropped or replaced, and a long name is shortened
in its stem so its extension (its type) survives. Names that still coincide in one request get `` (2)``,
`` (3)``... An upload no reader would accept (its type, its size) is refused before it is saved, and an upload's
file is removed with its document by the engine (``RAG.delete``, :mod:`ingest.uploads`), whichever face deletes
it, so nothing is kept that nothing uses.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
import uuid
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ingest.readers import doc_type_for

MAX_PART_BYTES = 200
"""A file or folder name's length in UTF-8 bytes: filesystems allow 255, and the temporary name adds 15 bytes and
a collision suffix a few more."""
MAX_FOLDERS = 8
"""Folders kept from a client's name (the deepest ones), so a path stays far below the system's PATH_MAX."""
MAX_SUFFIX_CHARS = 16
"""A longer "extension" is part of the name, not a type, and may be shortened."""
_UNSAFE = re.compile(r"[^\w .,()\[\]{}+=@&#%~'-]+")  # \w: letters and digits of every script


def _clean_part(part: str) -> str:
    """One component of a client's name: NFC (macOS sends NFD), safe characters, no leading or trailing dots or
    spaces (hidden files, Windows), at most ``MAX_PART_BYTES``; empty when nothing usable is left."""
    part = _UNSAFE.sub("_", unicodedata.normalize("NFC", part)).strip(" .")
    return shorten(part) if part else ""


def shorten(name: str, limit: int = MAX_PART_BYTES) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes in its stem, keeping the extension and whole characters."""
    if len(name.encode()) <= limit:
        return name
    stem, suffix = os.path.splitext(name)
    if len(suffix) > MAX_SUFFIX_CHARS:
        stem, suffix = name, ""
    room = limit - len(suffix.encode())
    return stem.encode()[:room].decode("utf-8", "ignore").rstrip(" .") + suffix


def upload_name(raw: str | None) -> PurePosixPath:
    """The relative path a client-supplied name is saved under: its folders (the deepest ``MAX_FOLDERS``) and its
    file name, each cleaned; never absolute, never ``..``, never empty."""
    raw_parts = re.split(r"[\\/]", raw or "")
    if re.fullmatch(r"[A-Za-z]:", raw_parts[0]):  # a Windows drive says nothing about the document
        raw_parts = raw_parts[1:]
    parts = [_clean_part(p) for p in raw_parts]
    parts = [p for p in parts if p]
    if not parts:
        return PurePosixPath("upload")
    return PurePosixPath(*parts[:-1][-MAX_FOLDERS:], parts[-1])


def distinct_names(names: list[PurePosixPath]) -> list[PurePosixPath]:
    """The names with later duplicates renamed ``stem (2).ext``, ``stem (3).ext``... Compared case-blind, as a
    case-insensitive filesystem (macOS, Windows shares) would."""
    taken: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while str(candidate).casefold() in taken:
            n += 1
            stem, suffix = os.path.splitext(name.name)
            candidate = name.with_name(shorten(f"{shorten(stem, MAX_PART_BYTES - 8)} ({n}){suffix}"))
        taken.add(str(candidate).casefold())
        out.append(candidate)
    return out


def refusal(name: PurePosixPath, size: int | None, max_file_bytes: int) -> str | None:
    """Why ingestion would skip this upload (so it is not saved), or None when it is worth saving."""
    if doc_type_for(name.name) is None:
        return f"unsupported file type '{name.suffix or name.name}'"
    if size is not None and size > max_file_bytes:
        return f"file is {size / 2**20:.1f} MB, above the {max_file_bytes / 2**20:g} MB limit (RAG_MAX_FILE_MB)"
    return None


def save_upload(source: BinaryIO, folder: Path, name: PurePosixPath) -> Path:
    """Copy ``source`` to ``folder/name`` atomically; returns the final path."""
    final = folder.joinpath(*name.parts)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final

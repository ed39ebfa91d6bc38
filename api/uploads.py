"""Saving uploaded files where an ingestion job can read them: ``<data_dir>/uploads/<collection>/<name>``.

A file is written to a temporary name and renamed into place, so a job (or a concurrent upload of the same
name) never reads half a file. Re-uploading a name replaces the file, which the next job sees as an updated
document: the same change detection as for server folders. Names are reduced to their last component and a
safe alphabet, so an upload can never write outside its folder.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_filename(name: str | None) -> str:
    """The last path component of a client-supplied name, with anything unusual replaced."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE.sub("_", base).strip(" .")  # no leading dots (hidden files) or trailing dots/spaces
    return base[:200] or "upload"


def upload_dir(data_dir: Path, collection: str) -> Path:
    return data_dir / "uploads" / collection


def save_upload(source: BinaryIO, folder: Path, name: str) -> Path:
    """Copy ``source`` to ``folder/name`` atomically; returns the final path."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.part"
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final

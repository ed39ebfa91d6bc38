"""Finding the files to ingest and fingerprinting them.

Paths are stored absolute and resolved, so the same file ingested from another working directory is the
same document. A ``.ragignore`` file in a walked folder adds fnmatch patterns (one per line, ``#`` comments)
for that folder and below.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

HASH_BLOCK = 1 << 20


@dataclass
class Discovered:
    """What walking the given paths found: files to consider, the folders whose contents they define
    (documents under them that were not found again are removed), paths that do not exist, and files of a
    type no reader handles (reported, so a user sees why a file is not searchable)."""

    files: list[Path]
    roots: list[Path]
    missing: list[Path]
    unsupported: list[Path]


def _ignored(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _read_ignore_file(folder: Path) -> list[str]:
    f = folder / ".ragignore"
    if not f.is_file():
        return []
    lines = (line.strip() for line in f.read_text(errors="replace").splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def discover(paths: list[str | Path], ignore_patterns: list[str], is_supported) -> Discovered:  # noqa: ANN001
    """Walk ``paths`` (files or folders); ``is_supported(path)`` filters by type."""
    files: list[Path] = []
    roots: list[Path] = []
    missing: list[Path] = []
    unsupported: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.exists():
            missing.append(path)
            continue
        if path.is_file():
            if path not in seen:
                seen.add(path)
                (files if is_supported(path) else unsupported).append(path)
            continue
        roots.append(path)
        inherited: dict[Path, list[str]] = {path: list(ignore_patterns) + _read_ignore_file(path)}
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            here = Path(dirpath)
            patterns = inherited.pop(here, list(ignore_patterns))
            dirnames[:] = sorted(d for d in dirnames if not _ignored(d, patterns))
            for d in dirnames:
                inherited[here / d] = patterns + _read_ignore_file(here / d)
            for name in sorted(filenames):
                if _ignored(name, patterns) or name == ".ragignore":
                    continue
                file = here / name
                if file.is_symlink() or file in seen:
                    continue
                seen.add(file)
                (files if is_supported(file) else unsupported).append(file)
    return Discovered(files, roots, missing, unsupported)


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes, read in blocks so a huge file costs no memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()

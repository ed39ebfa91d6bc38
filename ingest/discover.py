"""Finding the files to ingest and fingerprinting them.

Paths are stored absolute and resolved, so the same file ingested from another working directory is the
same document. A ``.ragignore`` file in a walked folder adds fnmatch patterns (one per line, ``#`` comments)
for that folder and below.

Nothing here may block or fail the whole run because of one path: a FIFO, socket or device is passed on as a
file and refused by :func:`content_hash` without being opened for a blocking read (so it is reported as skipped,
with what it is), and a path the operating system cannot even examine (too long, no permission) is passed on
too, so the per-file step reports the system's reason while the other paths are ingested.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest.readers import open_regular

HASH_BLOCK = 1 << 20
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


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
    try:
        if not f.is_file():
            return []
        lines = (line.strip() for line in f.read_text(errors="replace").splitlines())
    except OSError:  # unreadable (or a path too long to open): the folder is walked without it
        return []
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def _is_link(path: Path) -> bool:
    """Whether ``path`` is a symlink (not followed); one that cannot be examined is not, so the file step
    reports the reason."""
    try:
        return stat.S_ISLNK(path.lstat().st_mode)
    except OSError:
        return False


def discover(paths: list[str | Path], ignore_patterns: list[str], is_supported: Callable[[Path], bool]) -> Discovered:
    """Walk ``paths`` (files or folders); ``is_supported(path)`` filters by type."""
    files: list[Path] = []
    roots: list[Path] = []
    missing: list[Path] = []
    unsupported: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)
        except OSError as exc:
            if exc.errno in _ABSENT:
                missing.append(path)
            elif path not in seen:  # e.g. a name too long to look up: reported with its reason by the file step
                seen.add(path)
                files.append(path)
            continue
        if not is_dir:
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
                if _is_link(file) or file in seen:
                    continue
                seen.add(file)
                (files if is_supported(file) else unsupported).append(file)
    return Discovered(files, roots, missing, unsupported)


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes, read in blocks so a huge file costs no memory.

    Raises ``ingest.readers.ReadError`` for anything but a regular file (a FIFO would block the read for ever).
    """
    h = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


class IgnoreRules:
    """Whether a path below ``root`` is left out by the rules a walk of ``root`` applies (the patterns, and the
    ``.ragignore`` files of ``root`` and of each folder on the way down), for a path met without walking to it: a
    watched file event. Each ``.ragignore`` is read once per object; make a new one when they may have changed."""

    def __init__(self, root: Path, patterns: list[str]) -> None:
        self.root = root
        self.patterns = patterns
        self._files: dict[Path, list[str]] = {}

    def _own(self, folder: Path) -> list[str]:
        if folder not in self._files:
            self._files[folder] = _read_ignore_file(folder)
        return self._files[folder]

    def at(self, folder: Path) -> list[str]:
        """The patterns a walk of ``root`` applies to the entries of ``folder`` (``root`` or a folder below it)."""
        patterns = list(self.patterns)
        here = self.root
        patterns += self._own(here)
        for part in folder.relative_to(self.root).parts:
            here = here / part
            patterns += self._own(here)
        return patterns

    def ignored(self, path: Path) -> bool:
        """Whether a walk of ``root`` would skip ``path`` (or one of the folders holding it); ``.ragignore`` files
        themselves are never documents."""
        if path.name == ".ragignore":
            return True
        here = self.root
        for part in path.relative_to(self.root).parts:
            if _ignored(part, self.at(here)):
                return True
            here = here / part
        return False

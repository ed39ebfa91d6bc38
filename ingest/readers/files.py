"""Bytes in: only a regular file is opened, and never read past the size limit (checked from ``stat`` first)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from ingest.readers.base import ReadError

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


def read_bounded(path: Path, max_bytes: int) -> bytes:
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

"""Which watchdog observer notices a folder's changes, and the one signal watchdog gives only in its log.

Native observers (inotify on Linux, FSEvents on macOS) report changes made through this machine's kernel; on a
network file system (NFS, SMB, sshfs ...) changes made by other machines never reach it, so such a folder is
polled instead: a snapshot every ``RAG_WATCH_POLL_S``, compared with the last. ``auto`` decides by the file system
type of the folder's mount, and falls back to polling where a native watch cannot be set up (e.g. the inotify
watch limit, ``fs.inotify.max_user_watches``, is reached).

Lost events: when the kernel's inotify queue overflows (a burst larger than ``fs.inotify.max_queued_events``
before watchdog read it), watchdog re-arms its watches and says so only in a warning of its logger. That warning is
the signal to rescan every natively watched folder (:class:`OverflowSignal`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

Kind = Literal["native", "polling"]

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "ncpfs",
    "davfs", "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse", "fuse.davfs2", "fuse.juicefs",
})
_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"


def filesystem_type(path: Path, mounts: Path = Path("/proc/self/mounts")) -> str | None:
    """The type of the file system holding ``path`` (Linux: the longest mount point above it), or None if unknown."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    best, kind = -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\"))
        if (path == point or path.is_relative_to(point)) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def choose_kind(setting: str, folder: Path) -> Kind:
    """``RAG_WATCH_OBSERVER`` for one folder: ``auto`` polls a network file system, else watches natively."""
    if setting in ("native", "polling"):
        return setting  # type: ignore[return-value]
    fs = filesystem_type(folder) if sys.platform.startswith("linux") else None
    if fs in NETWORK_FILESYSTEMS:
        log.info("%s is on %s (a network file system): polled, since other machines' changes raise no event", folder, fs)
        return "polling"
    return "native"


def make_observer(kind: Kind, poll_s: float) -> BaseObserver:
    return PollingObserver(timeout=poll_s) if kind == "polling" else Observer()


def observer_name(observer: BaseObserver) -> str:
    """What the status shows: ``inotify``, ``fsevents``, ``polling`` ..."""
    return type(observer).__name__.removesuffix("Observer").lower() or "native"


class OverflowSignal(logging.Handler):
    """Calls ``on_overflow`` when watchdog reports that the kernel dropped inotify events (see the module's doc)."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()

    def install(self) -> None:
        logging.getLogger(_OVERFLOW_LOGGER).addHandler(self)

    def remove(self) -> None:
        logging.getLogger(_OVERFLOW_LOGGER).removeHandler(self)

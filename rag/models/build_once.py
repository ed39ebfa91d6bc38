"""A folder built once, atomically and under a file lock: converted or exported model files.

Several processes (API workers, a CLI run, parallel tests) may ask for the same converted model at once, and a
conversion may be killed half-way. So the folder is written under a temporary name, marked complete by a file
written last, fsynced, then renamed into place; a folder without the marker is never used, and leftovers of a
crashed run are removed by the next one under the lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

MARKER = "rag_conversion.json"  # written last inside the temp folder: a folder without it is incomplete


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def build_once(final: Path, write: Callable[[Path], None], *, source: str, what: str) -> Path:
    """Run ``write(tmp_dir)`` once per ``final`` folder; every caller gets the completed folder."""
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if is_complete(final):  # another process finished while we waited
            return final
        _remove_stale_temps(final.parent, final.name)
        if final.exists():  # incomplete folder without marker (cannot come from our rename, but be safe)
            shutil.rmtree(final)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            t0 = time.perf_counter()
            write(tmp)
            elapsed = time.perf_counter() - t0
            (tmp / MARKER).write_text(
                json.dumps({"source": source, "what": what, "seconds": round(elapsed, 2), "time": time.time()})
            )
            _fsync_tree(tmp)
            os.rename(tmp, final)
            log.info("built %s (%s) at %s in %.1fs", source, what, final, elapsed)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _remove_stale_temps(parent: Path, final_name: str) -> None:
    """Called under the lock: any temp folder of this name belongs to a crashed run."""
    for stale in parent.glob(f".{final_name}.tmp-*"):
        log.warning("removing leftover of an interrupted build: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flush files before the rename so a power cut cannot leave a complete-looking folder of empty files."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

"""From the paths a watched folder says changed to the work for ingestion: which files to (re)visit, which stored
documents are gone, which are now left out.

Why paths are looked at again rather than events trusted: the state on disk when a batch runs is the truth; events
only say where to look. So a created-then-deleted temporary file costs nothing, an editor's atomic save is the
original path with new content, a folder moved in is walked, a folder deleted or moved away takes its documents
with it, and a polling scan (which sees deletes and creates, never renames) gives the same result as inotify.
Renames are recognised later, by content (``ingest/moves.py``): a gone document whose bytes turn up at a new path.

The same walk rules as ``rag ingest`` apply (``ingest/discover.py``: ignore patterns, hidden files, ``.ragignore``
files along the way, no symlinks), and nothing inside the data directory is ever a document.
"""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from ingest.discover import IgnoreRules, discover
from ingest.readers import doc_type_for
from ingest.watch.backlog import Signature
from rag.store.store import Store


@dataclass
class Work:
    """One batch for ingestion: ``files`` to visit and ``gone`` paths of stored documents (both handed to the
    pipeline, which diffs by content hash and recognises moves between them), ``drop``: documents whose files remain
    but are left out now (a ``.ragignore`` rule), ``held``: files still being written."""

    files: list[Path] = field(default_factory=list)
    gone: list[Path] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    held: list[tuple[Path, Signature]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.files or self.gone or self.drop)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths not below another one of them: looking at a folder again covers everything in it."""
    kept: set[Path] = set()
    for path in sorted(paths, key=lambda p: len(p.parts)):  # a folder before what it holds
        if path not in kept and not any(parent in kept for parent in path.parents):
            kept.add(path)
    return sorted(kept)


def _supported(path: Path) -> bool:
    return doc_type_for(path) is not None


class Planner:
    """Plans the batches of one watched folder of one collection."""

    def __init__(self, store: Store, root: Path, collection: str, data_dir: Path, patterns: list[str],
                 debounce_s: float) -> None:
        self.store = store
        self.root = root
        self.collection = collection
        self.data_dir = data_dir
        self.patterns = patterns
        self.debounce_s = debounce_s

    def plan(self, paths: dict[Path, Signature | None], *, whole: bool) -> Work:
        """The work for these changed paths (each with the signature it had when last held back), or for the whole
        folder (``whole``: the catch-up scan at start, and after events were lost)."""
        rules = IgnoreRules(self.root, self.patterns)  # .ragignore files as they are now
        work = Work()
        targets = [self.root] if whole else _outermost([p for p in paths if _inside(p, self.root)])
        for path in targets:
            if _inside(path, self.data_dir):
                continue
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and stat.S_ISDIR(mode) and not (path != self.root and rules.ignored(path)):
                present = self._walk(path, rules)
            elif mode is not None and stat.S_ISREG(mode) and not rules.ignored(path) and _supported(path):
                present = {path}
            else:  # gone, or left out (ignored, a symlink, a type no reader handles)
                present = set()
            self._settle(path, present, paths.get(path), work)
        return work

    def _walk(self, folder: Path, rules: IgnoreRules) -> set[Path]:
        """The files a walk of the watched folder would find in ``folder``."""
        inherited = rules.at(folder.parent) if folder != self.root else self.patterns
        found = discover([folder], inherited, _supported)
        return {f for f in found.files if not _inside(f, self.data_dir)}

    def _settle(self, path: Path, present: set[Path], signature: Signature | None, work: Work) -> None:
        """Sort ``present`` (the files now at or below ``path``) and the documents stored there into the work."""
        now = time.time()
        for file in sorted(present):
            try:
                st = file.stat()
            except OSError:
                continue  # gone since the walk: its event follows
            current = (st.st_size, st.st_mtime_ns)
            if now - st.st_mtime < self.debounce_s and current != signature:
                work.held.append((file, current))  # written moments ago: may still be growing
            else:
                work.files.append(file)
        if present and len(present) == 1 and path in present:
            return  # one existing file: the pipeline's diff decides (no stored documents below a file)
        for doc in self.store.documents_under(self.collection, str(path)):
            doc_path = Path(doc.path)
            if doc_path in present or _inside(doc_path, self.data_dir):  # e.g. an upload: not the folder's
                continue
            if doc_path.exists():
                work.drop.append(doc.id)  # still there, but left out now
            else:
                work.gone.append(doc_path)

"""Where uploaded files live (``<data_dir>/uploads/<collection>/``) and how one leaves with its document.

Below the engine, so every face gets the same rule: ``RAG.delete`` removes a document's file when, and only when,
it is an upload inside the data directory's uploads folder (the API saves them there, ``api.uploads``); a user's
own documents anywhere else are never touched.
"""

from __future__ import annotations

from pathlib import Path

from rag.store.text import fs_path


def uploads_root(data_dir: Path) -> Path:
    return data_dir / "uploads"


def upload_dir(data_dir: Path, collection: str) -> Path:
    return uploads_root(data_dir) / collection


def discard_upload(data_dir: Path, path: str | Path) -> bool:
    """Remove an uploaded file (a document's source) and the folders it leaves empty; False when ``path`` is not
    an upload (server files are never touched) or is already gone."""
    root = uploads_root(data_dir).resolve()
    file = Path(fs_path(str(path)))  # a stored path is text (rag/store/text.py): back to the name on disk
    if not file.is_absolute() or not file.resolve().is_relative_to(root):
        return False
    try:
        file.unlink()
    except FileNotFoundError:
        return False
    for folder in file.parents:
        if folder == root or not folder.is_relative_to(root):
            break
        try:
            folder.rmdir()  # only succeeds when empty; the collection's own folder goes too once empty
        except OSError:
            break
    return True

"""Where a model spec's files are: bundled names and .gguf files become converted folders, anything else is loaded
as given (a local folder, else a Hugging Face id read from the offline cache with ``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

from pathlib import Path

from rag.models import bundled


def resolve_model_source(spec: str, root: Path) -> str:
    """A path or HF id ``from_pretrained`` can load: bundled names and .gguf files become converted folders.

    ``root`` is the models folder (``settings.models_root``) where conversions are kept.
    """
    if bundled.is_bundled(spec):
        return str(bundled.ensure_converted(spec, root))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return str(bundled.ensure_converted(str(path), root))
    return str(path) if path.exists() else spec


def resolve_tokenizer_source(spec: str, root: Path) -> str:
    """Like :func:`resolve_model_source` but converts only the tokenizer when the weights are not needed."""
    if bundled.is_bundled(spec):
        return str(bundled.ensure_tokenizer(spec, root))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        return str(bundled.ensure_tokenizer(str(path), root))
    return str(path) if path.exists() else spec

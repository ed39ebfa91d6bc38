"""Private, fixed-configuration copies of a Hugging Face fast tokenizer's Rust backend.

Why: a transformers fast tokenizer re-configures its one shared backend (truncation, padding) on every call whose
settings differ from the previous call's. The chunker measures whole documents (no truncation) while queries and
batches are embedded (truncated to the model's window, padded), often at the same time in two threads: each then
sees the other's settings (a 600-token document measured as 256 tokens, its tail lost) or fails with
``RuntimeError: Already borrowed``. A backend configured once here and afterwards only read is safe to share.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer


def backend_copy(tokenizer: Any, *, truncate_to: int | None = None, pad: bool = False) -> Tokenizer:
    """A new backend with ``tokenizer``'s vocabulary and rules, truncating at ``truncate_to`` tokens (special
    tokens included) if given, padding each batch to its longest text if ``pad``."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer, which the embedder requires")
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    if truncate_to is not None:
        backend.enable_truncation(max_length=truncate_to)
    if pad:
        backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    return backend

"""Token counting with a Hugging Face tokenizer, without the model's weights.

The budgeter needs exact counts from the generating model's own tokenizer; :class:`HFTokenCounter` gives them to
the local backend, to the HTTP backend when its server cannot count, and to tests that budget with no weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.models import bundled
from rag.models.llm import Message
from rag.models.sources import resolve_tokenizer_source


class HFTokenCounter:
    """Token counting with a Hugging Face tokenizer: the piece LocalLLM and the HTTP fallback share.

    It also satisfies what the budgeter needs (``context_window`` + the three counting methods), so budgeting can
    be tested with a real tokenizer and no weights.
    """

    def __init__(self, tokenizer: Any, context_window: int, name: str = "tokenizer", margin: int = 0) -> None:
        self.tokenizer = tokenizer
        self.context_window = context_window
        self.name = name
        self.margin = margin  # added to count_messages when this is not the generating server's own tokenizer
        # Every call here is untruncated and unpadded, but a fast tokenizer loaded with truncation or padding set
        # re-configures its shared backend on the first such call: let that happen now, in one thread, not in
        # two requests at once (see rag.models.fast_tokenizer).
        self.count_tokens("")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        if len(ids) <= max_tokens:
            return text
        # Cut where token ``max_tokens`` starts: byte-level BPE can split one character over several tokens that
        # share its offsets, and the start offset never keeps half of such a character.
        cut = enc["offset_mapping"][max_tokens][0]
        out = text[:cut]
        # Re-tokenising a prefix can, rarely, merge differently; shrink until the count really fits.
        while out and self.count_tokens(out) > max_tokens:
            out = out[: max(0, len(out) - max(1, len(out) // 50))]
        return out

    def render(self, messages: Sequence[Message]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        # A base model without a chat template: a plain transcript ending where the answer starts.
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nassistant:"

    def encode_messages(self, messages: Sequence[Message]) -> list[int]:
        """The exact ids sent to the model; the template writes special tokens as text, so none are added."""
        return self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

    def count_messages(self, messages: Sequence[Message]) -> int:
        return len(self.encode_messages(messages)) + self.margin


def _window_from_config(source: str) -> int | None:
    from transformers import AutoConfig

    window_file = Path(source) / bundled.WINDOW_FILE  # a tokenizer-only conversion of a GGUF
    if window_file.is_file():
        return int(json.loads(window_file.read_text())["max_position_embeddings"])
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError):
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "max_position_embeddings", None)


def load_token_counter(spec: str, root: Path, *, context_window: int | None = None, margin: int = 0) -> HFTokenCounter:
    """A tokenizer-only counter for a model spec (bundled name, .gguf, folder or HF id), without its weights.

    ``root`` is the models folder (``settings.models_root``).
    """
    from transformers import AutoTokenizer

    source = resolve_tokenizer_source(spec, root)
    tokenizer = AutoTokenizer.from_pretrained(source)
    window = context_window or _window_from_config(source)
    if window is None:
        raise ValueError(f"cannot tell the context window of {spec!r}; set RAG_CONTEXT_WINDOW")
    return HFTokenCounter(tokenizer, window, name=spec, margin=margin)

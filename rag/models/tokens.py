"""Token counting with the generating model's own tokenizer, without running the model.

The budgeter needs exact counts from the generating model's own tokenizer. :class:`TokenCounter` holds what every
tokenizer shares (chat rendering, counting, cutting a text at a token boundary); :class:`HFTokenCounter` counts with a
Hugging Face tokenizer (the transformers runtime, the HTTP backend when its server cannot count, tests that budget
with no weights), :class:`rag.models.llamacpp_runtime.GGUFTokenCounter` with llama.cpp's (the GGUF's own vocabulary
and chat template; equal counts, ``tests/test_llamacpp.py``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.models import bundled
from rag.models.llm import Message
from rag.models.sources import resolve_tokenizer_source


def plain_transcript(messages: Sequence[Message]) -> str:
    """A base model without a chat template: a plain transcript ending where the answer starts."""
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nassistant:"


class TokenCounter(ABC):
    """Counting, cutting and chat rendering with one model's tokenizer; also what the budgeter needs
    (``context_window`` + the three counting methods), so budgeting can be tested with no weights.

    Special tokens written as text (``<|im_end|>``) are read as special tokens everywhere, as the chat template
    writes them and as a Hugging Face tokenizer reads text by default, so a count is what is sent."""

    def __init__(self, context_window: int, name: str = "tokenizer", margin: int = 0) -> None:
        self.context_window = context_window
        self.name = name
        self.margin = margin  # added to count_messages when this is not the generating server's own tokenizer

    @abstractmethod
    def encode(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_special``, the special tokens the model adds to a text (e.g. BOS)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (special tokens written out)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def render(self, messages: Sequence[Message]) -> str:
        """The chat prompt as text: the model's template applied, the generation prompt appended."""

    @abstractmethod
    def _prefix(self, text: str, max_tokens: int) -> str:
        """A prefix of ``text`` ending where token ``max_tokens`` starts (``text`` has more tokens than that)."""

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        if self.count_tokens(text) <= max_tokens:
            return text
        out = self._prefix(text, max_tokens)
        # Re-tokenising a prefix can, rarely, merge differently; shrink until the count really fits.
        while out and self.count_tokens(out) > max_tokens:
            out = out[: max(0, len(out) - max(1, len(out) // 50))]
        return out

    def encode_messages(self, messages: Sequence[Message]) -> list[int]:
        """The exact ids sent to the model; the template writes special tokens as text, so none are added."""
        return self.encode(self.render(messages))

    def count_messages(self, messages: Sequence[Message]) -> int:
        return len(self.encode_messages(messages)) + self.margin


class HFTokenCounter(TokenCounter):
    """Token counting with a Hugging Face tokenizer: the piece the transformers runtime and the HTTP fallback share."""

    def __init__(self, tokenizer: Any, context_window: int, name: str = "tokenizer", margin: int = 0) -> None:
        super().__init__(context_window, name, margin)
        self.tokenizer = tokenizer
        # Every call here is untruncated and unpadded, but a fast tokenizer loaded with truncation or padding set
        # re-configures its shared backend on the first such call: let that happen now, in one thread, not in
        # two requests at once (see rag.models.fast_tokenizer).
        self.count_tokens("")

    def encode(self, text: str, *, add_special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def _prefix(self, text: str, max_tokens: int) -> str:
        # Cut where token ``max_tokens`` starts: byte-level BPE can split one character over several tokens that
        # share its offsets, and the start offset never keeps half of such a character.
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return text[: enc["offset_mapping"][max_tokens][0]]

    def render(self, messages: Sequence[Message]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return plain_transcript(messages)


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

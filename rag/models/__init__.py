"""Model loading: the embedder and the generating LLM (local on llama.cpp or transformers, or an OpenAI-compatible
server).

``load_llm`` keeps one LLM per (backend, runtime, model, device, window / base URL) in this process, so several
``RAG`` objects — or an API server creating one per request — share weights instead of reloading them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from rag.models.placement import background_batch, llm_placement, local_runtime

if TYPE_CHECKING:
    from rag.models.llm import LLM
    from rag.settings import Settings

_llm_cache: dict[tuple, LLM] = {}
_llm_cache_lock = threading.Lock()


def _llm_key(settings: Settings) -> tuple:
    if settings.llm_backend == "openai":
        return (
            "openai",
            settings.llm_model,
            settings.llm_base_url,
            settings.llm_api_key,
            settings.llm_tokenizer,
            settings.llm_token_margin,
            settings.context_window,
        )
    # A bundled name or a path means the same weights whatever the data directory; LocalLLM also shares weights
    # between window overrides, so this key only avoids rebuilding the wrapper.
    return ("local", settings.llm_runtime, settings.llm_model, settings.device, settings.context_window,
            settings.llm_threads)


def load_llm(settings: Settings) -> LLM:
    """The LLM for these settings, loaded once per process (by backend, model and device)."""
    key = _llm_key(settings)
    with _llm_cache_lock:  # one loader at a time: two threads must not both load 2 GB of weights
        llm = _llm_cache.get(key)
        if llm is None:
            if settings.llm_backend == "openai":
                from rag.models.openai_llm import OpenAILLM

                llm = OpenAILLM(settings)
            elif local_runtime(settings) == "llamacpp":
                from rag.models.llamacpp_llm import LlamaCppLLM

                llm = LlamaCppLLM(settings)
            else:
                from rag.models.local_llm import LocalLLM

                llm = LocalLLM(settings)
            _llm_cache[key] = llm
        return llm


__all__ = ["background_batch", "llm_placement", "load_llm", "local_runtime"]

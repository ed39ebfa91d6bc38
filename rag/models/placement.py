"""Where the generating LLM runs and on what, and what that implies for background work (summaries)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.settings import Settings

log = logging.getLogger(__name__)


def is_gguf(spec: str) -> bool:
    """A model llama.cpp can load as it is: a bundled name (they ship as GGUF) or a ``.gguf`` file."""
    from rag.models.bundled import is_bundled

    return is_bundled(spec) or Path(spec).suffix.lower() == ".gguf"


def local_runtime(settings: Settings) -> str:
    """``llamacpp`` or ``transformers``: what runs the local model (``RAG_LLM_RUNTIME``).

    ``auto`` takes llama.cpp for a GGUF model on the CPU when its package loads, else transformers (CUDA, an HF
    model, or llama-cpp-python missing or failing to load: said in one log line). An explicit ``llamacpp`` that
    cannot run is an error naming the reason."""
    from rag.models.device import choose_device
    from rag.models.llamacpp_runtime import missing_reason

    wanted = settings.llm_runtime
    if wanted == "transformers":
        return wanted
    if wanted == "llamacpp":
        if not is_gguf(settings.llm_model):
            raise ValueError(f"RAG_LLM_RUNTIME=llamacpp needs a GGUF model (a bundled name or a .gguf file), not "
                             f"{settings.llm_model!r}")
        if reason := missing_reason():
            raise RuntimeError(f"RAG_LLM_RUNTIME=llamacpp but llama-cpp-python cannot be loaded ({reason})")
        return wanted
    if not is_gguf(settings.llm_model) or choose_device(settings.device).startswith("cuda"):
        return "transformers"
    if reason := missing_reason():
        log.warning("llama.cpp is not available (%s): the local model runs on transformers (slower on a CPU); "
                    "`pip install llama-cpp-python` to use it", reason)
        return "transformers"
    return "llamacpp"


def llm_placement(settings: Settings) -> str:
    """Where the LLM runs: ``server`` (an OpenAI-compatible one), ``cuda`` or ``cpu``; summary costs are planned
    by it (``ingest.summary_pass.summary_plan``)."""
    if settings.llm_backend == "openai":
        return "server"
    from rag.models.device import choose_device

    return "cuda" if choose_device(settings.device).startswith("cuda") else "cpu"


BACKGROUND_BATCH = {"cpu": 4, "cuda": 16, "server": 8}
"""Default ``RAG_LLM_BACKGROUND_BATCH`` by where the LLM runs: summaries decoded together by a local model
(``rag.models.batched_decode``; on this CPU 4 gave 1.29x the documents per minute of 1 in ``bench/summaries.py
throughput``; 16 on CUDA is not measured yet), or requests in flight to a server (vLLM batches them itself)."""


def background_batch(settings: Settings, runs_on: str) -> int:
    """How many background calls (summaries) run together where the LLM runs (see :data:`BACKGROUND_BATCH`)."""
    return settings.llm_background_batch or BACKGROUND_BATCH[runs_on]

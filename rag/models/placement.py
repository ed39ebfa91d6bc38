"""Where the generating LLM runs, and what that implies for background work (summaries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.settings import Settings


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

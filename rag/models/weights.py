"""The process-wide cache of local model weights: one load per (source, device, dtype), however many LLMs use it.

A model is gigabytes and a minute to load; ``RAG`` objects with different window overrides (or one per API request)
share the weights and the one gate (:class:`~rag.models.gate.ModelGate`), the thread that runs every call on them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from rag.models.gate import ModelGate


@dataclass
class LoadedWeights:
    """Weights + tokenizer + the one gate (thread) that runs them, shared by every LocalLLM of that model."""

    model: Any
    tokenizer: Any
    source: str
    gate: ModelGate
    load_seconds: float


_weights: dict[tuple[str, str, str], LoadedWeights] = {}
_weights_lock = threading.Lock()


def load_weights(source: str, device: str, dtype: Any) -> LoadedWeights:
    """Load a model folder/id once per (source, device, dtype) in this process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (source, device, str(dtype))
    with _weights_lock:
        if key not in _weights:
            t0 = time.perf_counter()
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
            gate = ModelGate()
            gate.install(model)
            _weights[key] = LoadedWeights(model, tokenizer, source, gate, time.perf_counter() - t0)
        return _weights[key]

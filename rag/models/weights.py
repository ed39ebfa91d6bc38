"""The process-wide cache of local model weights: one load per (source, device, dtype, quantize), however many LLMs
use it.

A model is gigabytes and a minute to load; ``RAG`` objects with different window overrides (or one per API request)
share the weights and the one gate (:class:`~rag.models.gate.ModelGate`) that decides which thread runs them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from rag.models.gate import ModelGate


@dataclass
class LoadedWeights:
    """Weights + tokenizer + the one gate that orders their use, shared by every LocalLLM of that model."""

    model: Any
    tokenizer: Any
    source: str
    gate: ModelGate
    load_seconds: float


_weights: dict[tuple[str, str, str, str], LoadedWeights] = {}
_weights_lock = threading.Lock()


def load_weights(source: str, device: str, dtype: Any, quantize: str = "none") -> LoadedWeights:
    """Load a model folder/id once per (source, device, dtype, quantize) in this process.

    ``quantize`` (``Settings.llm_quantize``, see :mod:`rag.models.quantize`) applies on the CPU only.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rag.models.quantize import quantize_for_cpu

    quantize = quantize if device == "cpu" else "none"
    key = (source, device, str(dtype), quantize)
    with _weights_lock:
        if key not in _weights:
            t0 = time.perf_counter()
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
            model = quantize_for_cpu(model, quantize)
            gate = ModelGate()
            gate.install(model)
            _weights[key] = LoadedWeights(model, tokenizer, source, gate, time.perf_counter() - t0)
        return _weights[key]

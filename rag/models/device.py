"""The one place the compute device is chosen, for the embedder and the local LLM alike."""

from __future__ import annotations


def choose_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; an explicit ``cuda`` without one is an error.

    Failing here names the setting (``RAG_DEVICE``) instead of leaving a deep torch error to the first model call.
    ``cpu`` never imports torch, so choosing it costs nothing.
    """
    if device == "cpu":
        return "cpu"
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise RuntimeError("RAG_DEVICE=cuda but torch sees no CUDA device")
    return device

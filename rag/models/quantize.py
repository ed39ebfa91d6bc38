"""Int8 Linear layers for CPU generation (``Settings.llm_quantize``), applied once when the weights load.

PyTorch dynamic quantisation: each ``nn.Linear`` keeps int8 weights (one scale per output channel) and quantises its
input per call, running fbgemm's int8 GEMM (AVX2 / AVX-512 VNNI). On this 2-core CPU it measured about 2.5x float32
for prefill and decode with SQuAD answer quality unchanged (``bench/decode.py``, ``bench/answers.py squad``).

``torch.ao.quantization`` is deprecated in favour of torchao but present in the pinned torch 2.13; its deprecation
warnings are silenced here. The input embedding stays float32; a tied output head gets its own int8 copy.
"""

from __future__ import annotations

import warnings
from typing import Any

QUANTIZE_SCHEMES = ("none", "int8")


def quantize_for_cpu(model: Any, scheme: str) -> Any:
    """The model with its Linear layers quantised by ``scheme`` (``none`` returns it unchanged)."""
    if scheme == "none":
        return model
    if scheme != "int8":
        raise ValueError(f"unknown quantisation {scheme!r}; known: {', '.join(QUANTIZE_SCHEMES)}")
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)

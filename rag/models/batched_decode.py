"""Greedy generation for several prompts at once: each prompt prefilled alone in chunks, then decoded together.

Why this shape (the local model's background work, i.e. summaries):
- **Decode together.** A decode step reads every weight of the model once, whatever the batch. Summaries are
  mostly decode (~150 new tokens at a few tokens/s on the CPU), so batching them raises the pass's documents per
  minute: 1.29x with 4 on this CPU (a batched step cost ~3.3x a single one, less gain than the weight reads
  predict; not explained yet), more on a GPU (not measured here).
- **Prefill alone, in chunks.** Prefill is compute-bound, so batching it gains nothing, and left-padding it would
  compute the padding. Each prompt is therefore prefilled on its own, :data:`PREFILL_CHUNK` tokens at a time, and the
  caches are then left-padded into one. The chunks also bound the work of one decoder layer call, which is where
  :class:`~rag.models.gate.ModelGate` runs an answer that arrived during background work: a 2,000-token prompt
  prefilled in one go made an answer wait ~0.3 s for the layer in flight; a 256-token chunk takes a few tens of ms.
- The padded positions are masked and position ids follow the attention mask, so each row generates what it would
  alone (``tests/test_batched_decode.py`` compares them token for token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PREFILL_CHUNK = 256
"""Prompt tokens per prefill forward pass."""


def prefill(model: Any, ids: Sequence[int], chunk: int = PREFILL_CHUNK) -> Any:
    """The KV cache of every token of ``ids`` but the last (``generate`` computes the last one and its logits),
    computed by the base model (no LM head: prefill needs no logits) ``chunk`` tokens at a time."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    body = model.base_model
    device = model.device
    for start in range(0, len(ids) - 1, chunk):
        piece = torch.tensor([list(ids[start : min(start + chunk, len(ids) - 1)])], device=device)
        body(input_ids=piece, past_key_values=cache, use_cache=True)
    return cache


def left_padded(caches: Sequence[Any], model: Any) -> Any:
    """One batch cache from single-row caches of different lengths, shorter ones padded with zeros on the left
    (masked by the attention mask, so their values never matter)."""
    import torch
    from transformers import DynamicCache

    longest = max(c.get_seq_length() for c in caches)
    layers = []
    for layer in range(len(caches[0].layers)):
        keys, values = [], []
        for c in caches:
            k, v = c.layers[layer].keys, c.layers[layer].values
            pad = longest - k.shape[-2]
            keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
        layers.append((torch.cat(keys), torch.cat(values)))
    return DynamicCache(ddp_cache_data=layers, config=model.config)


def generate_greedy(
    model: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos: Sequence[int], pad: int
) -> list[list[int]]:
    """The new tokens of each prompt (up to and including its first end-of-sequence token), greedy."""
    import torch

    if min(len(p) for p in prompts) < 2:  # nothing to prefill for a one-token prompt: let generate do all of it
        caches = None
    else:
        caches = left_padded([prefill(model, p) for p in prompts], model)
    longest = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (longest - len(p)) + list(p) for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    output = model.generate(
        input_ids=input_ids, attention_mask=mask, past_key_values=caches, max_new_tokens=max_new_tokens,
        do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=list(eos), pad_token_id=pad,
    )
    rows = []
    for row in output[:, longest:].tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:end])
    return rows

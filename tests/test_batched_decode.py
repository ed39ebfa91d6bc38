"""Background generation in batches: rows equal single generations, threads' calls share one batch, prefill runs
in chunks (what bounds an answer's wait behind a summary). Real SmolLM2-135M in this process."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from rag.models.batched_decode import PREFILL_CHUNK, generate_greedy
from rag.models.local_llm import LocalLLM
from rag.models.micro_batch import MicroBatcher
from tests.conftest import PASSAGES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _messages(k: int) -> list[dict[str, str]]:
    """Prompts of different lengths: ``k`` passages (cycling through the test passages), then a request to
    summarise them."""
    text = "\n\n".join(PASSAGES[i % len(PASSAGES)][1] for i in range(k))
    return [{"role": "user", "content": f"{text}\n\nSummarise the text above in one sentence."}]


def _single(llm: LocalLLM, ids: list[int], max_new_tokens: int) -> list[int]:
    import torch

    with torch.inference_mode():
        t = torch.tensor([ids])
        out = llm.model.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=max_new_tokens,
                                 do_sample=False, temperature=None, top_p=None, top_k=None,
                                 eos_token_id=llm._eos, pad_token_id=llm._pad)
    new = out[0][len(ids):].tolist()
    return new[: next((i + 1 for i, t in enumerate(new) if t in llm._eos), len(new))]


def test_each_row_of_a_batch_equals_its_own_generation(hf_llm: LocalLLM) -> None:
    prompts = [hf_llm.tokens.encode_messages(_messages(k)) for k in (1, 3, 8)]
    lengths = [len(p) for p in prompts]
    assert len(set(lengths)) == 3 and max(lengths) > 2 * PREFILL_CHUNK  # padding and several prefill chunks
    batched = generate_greedy(hf_llm.model, prompts, 24, hf_llm._eos, hf_llm._pad)
    assert batched == [_single(hf_llm, p, 24) for p in prompts]


def test_background_calls_from_threads_share_one_batch(hf_llm: LocalLLM) -> None:
    conversations = [_messages(k) for k in (1, 2, 3)]
    alone = [hf_llm.generate(m, max_new_tokens=16).text for m in conversations]  # foreground: one at a time
    batcher = hf_llm._background_batches
    before = (batcher.batches, batcher.calls)
    results: dict[int, str] = {}
    start = threading.Barrier(3)

    def summarise(i: int) -> None:
        with hf_llm.background():
            start.wait()
            results[i] = hf_llm.generate(conversations[i], max_new_tokens=16).text

    threads = [threading.Thread(target=summarise, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results[i] for i in range(3)] == alone
    assert (batcher.batches - before[0], batcher.calls - before[1]) == (1, 3)


def test_a_long_prompt_is_prefilled_in_chunks(hf_llm: LocalLLM) -> None:
    """An answer waiting behind background work runs at the next decoder-layer entry, so the longest layer call
    bounds its wait: a chunked prefill calls each layer once per chunk instead of once for the whole prompt."""
    messages = _messages(8)
    ids = hf_llm.tokens.encode_messages(messages)
    first = next(m for m in hf_llm.model.modules() if type(m).__name__.endswith("DecoderLayer"))
    widths: list[int] = []
    handle = first.register_forward_pre_hook(lambda _m, args: widths.append(args[0].shape[1]))
    try:
        with hf_llm.background():
            generation = hf_llm.generate(messages, max_new_tokens=8)
    finally:
        handle.remove()
    chunks = math.ceil((len(ids) - 1) / PREFILL_CHUNK)
    assert max(widths) <= PREFILL_CHUNK
    assert len(widths) == chunks + generation.completion_tokens  # the prefill chunks, then one call per new token


def test_an_error_in_a_batch_reaches_every_caller() -> None:
    def run(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("bad item")
        return [i * 2 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4, gather_s=2.0)
    outcomes: dict[int, Any] = {}
    start = threading.Barrier(4)

    def call(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = batcher(i)
        except ValueError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert batcher.batches == 1 and all(isinstance(o, ValueError) for o in outcomes.values()) and len(outcomes) == 4
    assert batcher(5) == 10  # the batcher is usable after a failed batch

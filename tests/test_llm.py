"""The LLM backends with the real small model (bundled SmolLM2-135M): conversion, token counts, generation,
streaming and cancellation in this process (:mod:`rag.models.local_llm`), and the OpenAI-compatible HTTP backend
(:mod:`rag.models.openai_llm`) against a real server. No stand-ins: real tokenizer, real weights.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.models import bundled, load_llm
from rag.models.llm import LLM, ContextWindowExceeded
from rag.models.local_llm import LocalLLM
from rag.models.openai_llm import OpenAILLM
from rag.settings import Settings
from rag.synthesis import synthesize
from tests.conftest import PASSAGES, QUESTION, SMALL_LLM, make_hits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the local backend -----------------------------------------------------------------------------------------
@pytest.fixture(params=["default", "transformers"])
def local_llm(request: pytest.FixtureRequest, small_llm: LLM, hf_llm: LocalLLM) -> LLM:
    """Each local runtime: the default (llama.cpp where installed) and transformers."""
    return small_llm if request.param == "default" else hf_llm


def test_conversion_is_a_plain_safetensors_folder(hf_llm: LocalLLM, small_settings: Settings) -> None:
    folder = bundled.converted_dir(SMALL_LLM, small_settings.models_root)
    assert bundled.is_complete(folder)
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.rglob("*.gguf"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert not list(folder.parent.glob(f".{folder.name}.tmp-*"))
    t0 = time.perf_counter()
    assert bundled.ensure_converted(SMALL_LLM, folder.parent) == folder  # second time: nothing to do
    assert time.perf_counter() - t0 < 1.0
    assert hf_llm.context_window == 8192  # max_position_embeddings, not the tokenizer's model_max_length
    assert load_llm(small_settings.model_copy(update={"llm_runtime": "transformers"})) is hf_llm  # loaded once
    assert hf_llm.dtype.is_floating_point and str(hf_llm.dtype) == "torch.float32"


def test_concurrent_conversions_run_once_and_clean_up_crashes(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    stale = root / ".smollm2-135m.tokenizer.tmp-999-deadbeef"  # what a killed conversion leaves behind
    stale.mkdir()
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(bundled.ensure_tokenizer(SMALL_LLM, root))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert bundled.is_complete(results[0])
    assert not stale.exists()
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == ["smollm2-135m.tokenizer"]


def test_generate_counts_tokens_and_refuses_overflow(local_llm: LLM) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    gen = local_llm.generate(messages, max_new_tokens=8)
    assert gen.text.strip()
    assert gen.prompt_tokens == local_llm.count_messages(messages)
    assert 1 <= gen.completion_tokens <= 8
    too_many = local_llm.context_window - local_llm.count_messages(messages) + 1
    with pytest.raises(ContextWindowExceeded):
        local_llm.generate(messages, max_new_tokens=too_many)
    with pytest.raises(ValueError, match="context window"):
        local_llm.stream(messages, max_new_tokens=too_many)


def test_generation_is_serialised_across_threads(local_llm: LLM) -> None:
    messages = [{"role": "user", "content": "Count from one to five."}]
    expected = local_llm.generate(messages, max_new_tokens=12).text
    out: list[str] = []
    threads = [
        threading.Thread(target=lambda: out.append(local_llm.generate(messages, max_new_tokens=12).text)),
        threading.Thread(target=lambda: out.append("".join(local_llm.stream(messages, max_new_tokens=12)))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert out == [expected, expected]  # greedy + one model call at a time: identical answers


def test_stream_reports_counts_and_can_stop_early(local_llm: LLM) -> None:
    messages = [{"role": "user", "content": "Write a sentence about rivers."}]
    stream = local_llm.stream(messages, max_new_tokens=16)
    pieces = list(stream)
    assert stream.generation is not None
    assert "".join(pieces) == stream.generation.text
    assert stream.generation.completion_tokens <= 16
    early = local_llm.stream(messages, max_new_tokens=200)
    next(early)
    early.close()  # cancels generation: the lock is free again at once
    assert local_llm.generate(messages, max_new_tokens=4).completion_tokens <= 4


# --- the OpenAI-compatible backend against a real server (this service's own API, serving SmolLM2) -------------
@pytest.fixture(scope="module")
def api_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    server_mod = pytest.importorskip("tests.api_server")
    base = tmp_path_factory.mktemp("oai-server")
    env = server_mod.server_env(models_dir)
    env["OMP_NUM_THREADS"] = "1"  # see one_torch_thread: a busy 2-core machine decodes faster on one thread
    with server_mod.ApiServer(base / "data", env) as srv:
        yield srv


def test_openai_backend_against_a_real_server(api_server, small_llm: LocalLLM, small_settings: Settings) -> None:
    settings = small_settings.model_copy(update={"llm_backend": "openai", "llm_base_url": f"{api_server.url}/v1"})
    llm = OpenAILLM(settings)
    assert llm.name == SMALL_LLM  # a bundled name is used as is when the server lists it
    assert llm.exact_counts  # vLLM-style /tokenize: the server's own counts, no margin
    assert llm.context_window == small_llm.context_window == 8192  # max_model_len from /tokenize
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PASSAGES[0][1]}]
    assert llm.count_messages(messages) == small_llm.count_messages(messages)
    assert llm.count_tokens(PASSAGES[2][1]) == small_llm.count_tokens(PASSAGES[2][1])
    cut = llm.truncate(PASSAGES[0][1], 20)  # via /detokenize
    assert PASSAGES[0][1].startswith(cut) and 0 < llm.count_tokens(cut) <= 20

    gen = llm.generate(messages, max_new_tokens=6)
    assert gen.text.strip() and gen.prompt_tokens == small_llm.count_messages(messages)
    assert 1 <= gen.completion_tokens <= 6
    stream = llm.stream(messages, max_new_tokens=6)
    pieces = list(stream)
    assert pieces and stream.generation is not None and "".join(pieces) == stream.generation.text
    with pytest.raises(ContextWindowExceeded):  # refused here, never sent
        llm.generate(messages, max_new_tokens=8192)

    hits = make_hits()
    answer = synthesize(QUESTION, hits, llm, settings.model_copy(update={"max_new_tokens": 8}), mode="compact")
    assert answer.text and answer.usage.llm_calls == 1 and answer.usage.chunks_used == 3
    assert answer.usage.prompt_tokens + answer.usage.max_new_tokens <= answer.usage.context_window


def test_openai_backend_without_tokenize_counts_locally_with_a_margin(
    small_llm: LocalLLM, small_settings: Settings
) -> None:
    """A server that cannot be asked (here: nothing listens) is counted with the configured local tokenizer plus
    the stated margin; without RAG_CONTEXT_WINDOW the window cannot be known and the error says so."""
    closed = {"llm_backend": "openai", "llm_base_url": "http://127.0.0.1:9", "llm_tokenizer": SMALL_LLM}
    llm = OpenAILLM(small_settings.model_copy(update={**closed, "llm_model": "served-model", "context_window": 2048}))
    messages = [{"role": "user", "content": PASSAGES[1][1]}]
    assert not llm.exact_counts
    assert llm.count_messages(messages) == small_llm.count_messages(messages) + small_settings.llm_token_margin
    assert llm.count_tokens(PASSAGES[1][1]) == small_llm.count_tokens(PASSAGES[1][1])
    assert llm.truncate(PASSAGES[1][1], 10) == small_llm.truncate(PASSAGES[1][1], 10)
    assert llm.context_window == 2048
    unknown = OpenAILLM(small_settings.model_copy(update={**closed, "llm_model": "served-model"}))
    with pytest.raises(ValueError, match="RAG_CONTEXT_WINDOW"):
        _ = unknown.context_window

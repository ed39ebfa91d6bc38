"""The llama.cpp runtime with the real small model (SmolLM2-135M ships as a GGUF): token counts equal to the
transformers tokenizer's, streaming equal to blocking, greedy determinism, cancellation, background calls that give
way to answers and are decoded together, budgeting within the window, and the fallback when the package is absent.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rag.models import load_llm, local_runtime
from rag.models.llamacpp_llm import LlamaCppLLM
from rag.models.llamacpp_runtime import Request, _Context, missing_reason
from rag.models.llm import ContextWindowExceeded
from rag.models.tokens import load_token_counter
from rag.settings import Settings
from rag.synthesis import synthesize
from rag.types import Cancelled
from tests.conftest import PASSAGES, QUESTION, REPO, SMALL_LLM, make_hits

if missing_reason():
    pytest.skip(f"llama-cpp-python is not installed here ({missing_reason()})", allow_module_level=True)

LONG_ANSWER = [{"role": "user", "content": "List the numbers from 1 to 300, separated by commas: 1, 2, 3, 4, 5,"}]
SHORT_ANSWER = [{"role": "user", "content": "Name a colour."}]
TEXTS = [
    "Hello world.",
    "Normandy — a région of France; naïve café, Zürich, Ærøskøbing, 東京, Москва, 🚀✨ and 1,234.56 €.",
    "  leading spaces,\ttabs\nand\n\nblank lines  ",
    "<|im_start|>special tokens written as text<|im_end|>",
    "x" * 3000,
    "",
    *(text for _, text in PASSAGES),
]


@pytest.fixture(scope="module")
def cpp(small_llm: Any) -> LlamaCppLLM:
    assert isinstance(small_llm, LlamaCppLLM), "llama.cpp is installed, so the default runtime on the CPU is llama.cpp"
    return small_llm


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_counts_equal_the_transformers_tokenizer(cpp: LlamaCppLLM, small_settings: Settings) -> None:
    hf = load_token_counter(SMALL_LLM, small_settings.models_root)
    for text in TEXTS:
        assert cpp.tokens.encode(text) == hf.encode(text), text[:40]
        assert cpp.count_tokens(text) == hf.count_tokens(text)
        for limit in (1, 3, 7, 20):
            assert cpp.truncate(text, limit) == hf.truncate(text, limit)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXTS[1]},
            {"role": "assistant", "content": "Yes."}, {"role": "user", "content": QUESTION}]
    assert cpp.tokens.render(chat) == hf.render(chat)  # the GGUF's chat template, rendered as transformers does
    assert cpp.tokens.encode_messages(chat) == hf.encode_messages(chat)
    assert cpp.count_messages(chat) == hf.count_messages(chat)
    assert cpp.context_window == 8192  # the GGUF's context length, as transformers reads max_position_embeddings
    assert cpp.tokens.decode(cpp.tokens.encode(TEXTS[1])) == TEXTS[1]


def test_streaming_equals_blocking_and_greedy_repeats(cpp: LlamaCppLLM) -> None:
    messages = [{"role": "user", "content": "Write a sentence about rivers in Zürich and Москва."}]
    first = cpp.generate(messages, max_new_tokens=24)
    assert first.text.strip() and first.prompt_tokens == cpp.count_messages(messages)
    assert 1 <= first.completion_tokens <= 24 and first.finish_reason in ("stop", "length")
    assert len(first.token_logprobs) >= first.completion_tokens - 1
    assert all(lp <= 0 for lp in first.token_logprobs)
    stream = cpp.stream(messages, max_new_tokens=24)
    pieces = list(stream)
    assert stream.generation is not None and "".join(pieces) == stream.generation.text == first.text
    assert stream.generation.token_logprobs == first.token_logprobs
    assert cpp.generate(messages, max_new_tokens=24).text == first.text  # greedy: deterministic


def test_an_alternative_start_is_scored_from_the_same_prompt(cpp: LlamaCppLLM) -> None:
    messages = [{"role": "user", "content": "Write a sentence about rivers."}]
    plain = cpp.generate(messages, max_new_tokens=12)
    assert plain.alternative_logprob is None
    own = cpp.tokens.decode(cpp.tokens.encode(plain.text)[:4])  # the model's own first four tokens
    scored = cpp.generate(messages, max_new_tokens=12, alternative=own)
    assert scored.text == plain.text  # scoring after the answer does not change it
    expected = sum(plain.token_logprobs[:4]) / 4  # the same tokens, as the model generated them
    assert scored.alternative_logprob == pytest.approx(expected, abs=1e-3)
    other = cpp.generate(messages, max_new_tokens=12, alternative="The documents do not contain")
    assert other.alternative_logprob is not None and other.alternative_logprob < expected
    streamed = cpp.stream(messages, max_new_tokens=12, alternative=own)
    assert "".join(streamed) == plain.text and streamed.generation.alternative_logprob == scored.alternative_logprob


def test_refuses_a_request_over_the_window(cpp: LlamaCppLLM) -> None:
    too_many = cpp.context_window - cpp.count_messages(SHORT_ANSWER) + 1
    with pytest.raises(ContextWindowExceeded):
        cpp.generate(SHORT_ANSWER, max_new_tokens=too_many)
    with pytest.raises(ContextWindowExceeded):
        cpp.stream(SHORT_ANSWER, max_new_tokens=too_many)  # at the call, not at the first piece


def test_cancel_stops_within_a_token(cpp: LlamaCppLLM) -> None:
    seen: list[int] = []
    ids = cpp.tokens.encode_messages(LONG_ANSWER)
    out = cpp.gate.run(lambda: cpp.weights.run("foreground", [Request(ids, 200, lambda t: seen.append(t) or False)])[0])
    assert out.finish == "cancelled" and len(out.tokens) == len(seen) == 1
    stream = cpp.stream(LONG_ANSWER, max_new_tokens=200)
    next(stream)
    t0 = time.perf_counter()
    stream.close()  # returns once the model thread has stopped: the next call does not wait for 200 tokens
    assert cpp.generate(SHORT_ANSWER, max_new_tokens=4).completion_tokens <= 4
    assert time.perf_counter() - t0 < 5


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int, float]]]:
    """Records each llama_decode call as (context role, tokens, start time), in order, then runs it."""
    record: list[tuple[str, int, float]] = []
    real = _Context.decode

    def decode(self: _Context, entries: Any) -> None:
        record.append((self.role, len(entries), time.perf_counter()))
        real(self, entries)

    monkeypatch.setattr(_Context, "decode", decode)
    yield record


def _background(llm: LlamaCppLLM, messages: Any, result: dict[str, Any], max_new_tokens: int = 200,
                cancel: Callable[[], bool] | None = None) -> threading.Thread:
    def run() -> None:
        try:
            with llm.background(cancel):
                result["generation"] = llm.generate(messages, max_new_tokens=max_new_tokens)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            result["error"] = exc

    thread = threading.Thread(target=run, name="test-background")
    thread.start()
    return thread


def test_an_answer_overtakes_a_background_call(cpp: LlamaCppLLM, decodes: list[tuple[str, int, float]]) -> None:
    alone = cpp.generate(SHORT_ANSWER, max_new_tokens=8)
    result: dict[str, Any] = {}
    thread = _background(cpp, LONG_ANSWER, result)
    _wait(lambda: sum(role == "background" for role, _, _ in decodes) >= 20, 60, "the background call to decode")
    asked = time.perf_counter()
    streamed = "".join(cpp.stream(SHORT_ANSWER, max_new_tokens=8))
    assert thread.is_alive(), "the answer waited for the whole background call"
    first = next(t for role, _, t in decodes if role == "foreground" and t > asked)
    started_meanwhile = [n for role, n, t in decodes if role == "background" and asked < t < first]
    # The answer waits for the background step in flight, and at most one more that began while it was tokenised.
    assert len(started_meanwhile) <= 1 and all(n == 1 for n in started_meanwhile), started_meanwhile
    assert streamed == alone.text  # the background sequence, in its own context, did not disturb the answer
    thread.join(timeout=120)
    assert "error" not in result and result["generation"].completion_tokens > 20


def test_cancel_stops_a_background_call_at_its_next_step(cpp: LlamaCppLLM,
                                                        decodes: list[tuple[str, int, float]]) -> None:
    stop = threading.Event()
    result: dict[str, Any] = {}
    thread = _background(cpp, LONG_ANSWER, result, cancel=stop.is_set)
    _wait(lambda: len(decodes) >= 5, 60, "the background call to start")
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and isinstance(result.get("error"), Cancelled)
    assert cpp.generate(SHORT_ANSWER, max_new_tokens=4).completion_tokens > 0  # the model is free again


def test_background_calls_decode_together_as_each_would_alone(cpp: LlamaCppLLM,
                                                               decodes: list[tuple[str, int, float]]) -> None:
    prompts = [[{"role": "user", "content": f"{text}\n\nSummarise the text above in one sentence."}]
               for _, text in PASSAGES]
    alone = [cpp.generate(p, max_new_tokens=24).text for p in prompts]
    results: list[dict[str, Any]] = [{} for _ in prompts]
    decodes.clear()
    threads = [_background(cpp, p, r, max_new_tokens=24) for p, r in zip(prompts, results, strict=True)]
    for thread in threads:
        thread.join(timeout=120)
    assert [r["generation"].text for r in results] == alone
    steps = [n for role, n, _ in decodes if role == "background"]
    assert steps.count(len(prompts)) >= 5, f"few decode steps carried every sequence: {steps}"


def test_budgeted_answers_never_exceed_the_window(small_settings: Settings, cpp: LlamaCppLLM) -> None:
    hits = make_hits() * 2  # more passages than fit
    for window in (300, 560):
        llm = load_llm(small_settings.model_copy(update={"context_window": window}))
        assert isinstance(llm, LlamaCppLLM) and llm.weights is cpp.weights  # one model, whatever the window
        for mode in ("compact", "refine", "tree_summarize"):
            answer = synthesize(QUESTION, hits, llm, small_settings.model_copy(update={"max_new_tokens": 8}),
                                mode=mode)
            usage = answer.usage
            assert usage.context_window == window
            assert usage.prompt_tokens + usage.max_new_tokens <= window, (window, mode, usage)


def test_runtime_choice_and_fallback_without_the_package(small_settings: Settings) -> None:
    assert local_runtime(small_settings) == "llamacpp"
    hf_model = small_settings.model_copy(update={"llm_model": str(REPO)})  # a folder, not a GGUF
    assert local_runtime(hf_model) == "transformers"
    with pytest.raises(ValueError, match="GGUF"):
        local_runtime(hf_model.model_copy(update={"llm_runtime": "llamacpp"}))
    script = (
        "import logging, sys; sys.modules['llama_cpp'] = None; logging.basicConfig(level=logging.WARNING)\n"
        "from rag.models import local_runtime; from rag.settings import Settings\n"
        f"print(local_runtime(Settings(llm_model={SMALL_LLM!r}, device='cpu')))\n"
        "try:\n"
        f"    local_runtime(Settings(llm_model={SMALL_LLM!r}, device='cpu', llm_runtime='llamacpp'))\n"
        "except RuntimeError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "transformers"
    assert "refused: RAG_LLM_RUNTIME=llamacpp but llama-cpp-python cannot be loaded" in done.stdout
    warning = [line for line in done.stderr.splitlines() if "llama.cpp is not available" in line]
    assert len(warning) == 1 and "runs on transformers" in warning[0]



"""End to end with the real small model (bundled SmolLM2-135M): conversion, generation, budgeted synthesis in all three
modes, citations, abstention and streaming. No stand-ins: real tokenizer, real weights, real passages.

The model is converted once per session (under the shared ``models_dir`` fixture) and loaded once per module.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.budget import build_messages, numbered
from rag.models import bundled, load_llm
from rag.models.llm import ContextWindowExceeded, LocalLLM
from rag.models.openai_llm import OpenAILLM
from rag.settings import Settings
from rag.synthesis import (
    ABSTAIN_MESSAGE,
    COMPACT_TEMPLATE,
    SYSTEM_PROMPT,
    CitationFilter,
    abstain,
    clean_citations,
    hits_to_passages,
    model_abstained,
    parse_citations,
    should_abstain,
    stream_answer,
    synthesize,
)
from rag.types import Answer, Hit

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL = "bundled:smollm2-135m"
MAX_NEW = 24

# Real passages (SQuAD 2.0 dev, Wikipedia "Normans" and "Amazon rainforest" articles, CC BY-SA).
PASSAGES = [
    (
        "normans.txt",
        (
            "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th and "
            "11th centuries gave their name to Normandy, a region in France. They were descended from Norse "
            '("Norman" comes from "Norseman") raiders and pirates from Denmark, Iceland and Norway who, under their '
            "leader Rollo, agreed to swear fealty to King Charles III of West Francia."
        ),
    ),
    (
        "normans.txt",
        (
            "The Norman dynasty had a major political, cultural and military impact on medieval Europe and even the "
            "Near East. The Normans were famed for their martial spirit and eventually for their Christian piety, "
            "becoming exponents of the Catholic orthodoxy into which they assimilated."
        ),
    ),
    (
        "amazon.txt",
        (
            "The Amazon rainforest, also known in English as Amazonia or the Amazon Jungle, is a moist broadleaf "
            "forest that covers most of the Amazon basin of South America. This basin encompasses seven million "
            "square kilometres, of which five and a half million square kilometres are covered by the rainforest."
        ),
    ),
]
QUESTION = "In what country is Normandy located?"


def make_hits(dense: float = 0.62) -> list[Hit]:
    return [
        Hit(
            chunk_id=100 + i,
            document_id=1 + (i == 2),
            document=f"/corpus/{name}",
            collection="default",
            position=i,
            text=text,
            score=1.0 / (60 + i),
            dense_score=dense - 0.05 * i,
        )
        for i, (name, text) in enumerate(PASSAGES)
    ]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread while this module runs: on a shared 2-core machine with other jobs, two OpenMP threads
    spin-wait on each other and decode ~4x slower (measured 11 vs 3 tok/s); alone, one thread costs little."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_settings(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the small model, converted once into the session's shared ``models_dir``."""
    data_dir = tmp_path_factory.mktemp("synthesis-data")
    return Settings(
        data_dir=data_dir, models_dir=models_dir, llm_model=SMALL, device="cpu", max_new_tokens=MAX_NEW,
        temperature=0.0, top_k=3,
    )


@pytest.fixture(scope="module")
def small_llm(small_settings: Settings) -> LocalLLM:
    llm = load_llm(small_settings)
    assert isinstance(llm, LocalLLM)
    return llm


@pytest.fixture(scope="module")
def tight_llm(small_settings: Settings, small_llm: LocalLLM) -> LocalLLM:
    """The same weights with a window that holds the prompt and the first two passages but not the third, so
    compact must drop or cut one and refine / tree_summarize need several calls."""
    scaffold = small_llm.count_messages(
        build_messages(SYSTEM_PROMPT, COMPACT_TEMPLATE.format(context="", question=QUESTION))
    )
    first_two = sum(small_llm.count_tokens(numbered(p, p.text)) + 2 for p in hits_to_passages(make_hits())[:2])
    window = scaffold + MAX_NEW + first_two + 8
    llm = load_llm(small_settings.model_copy(update={"context_window": window}))
    assert isinstance(llm, LocalLLM) and llm.model is small_llm.model  # weights shared, not reloaded
    return llm


# --- models -----------------------------------------------------------------------------------------
def test_conversion_is_a_plain_safetensors_folder(small_llm: LocalLLM, small_settings: Settings) -> None:
    folder = bundled.converted_dir(SMALL, small_settings.models_root)
    assert bundled.is_complete(folder)
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.rglob("*.gguf"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert not list(folder.parent.glob(f".{folder.name}.tmp-*"))
    t0 = time.perf_counter()
    assert bundled.ensure_converted(SMALL, folder.parent) == folder  # second time: nothing to do
    assert time.perf_counter() - t0 < 1.0
    assert small_llm.context_window == 8192  # max_position_embeddings, not the tokenizer's model_max_length
    assert load_llm(small_settings) is small_llm  # loaded once per process
    assert small_llm.dtype.is_floating_point and str(small_llm.dtype) == "torch.float32"


def test_concurrent_conversions_run_once_and_clean_up_crashes(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    stale = root / ".smollm2-135m.tokenizer.tmp-999-deadbeef"  # what a killed conversion leaves behind
    stale.mkdir()
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(bundled.ensure_tokenizer(SMALL, root))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert bundled.is_complete(results[0])
    assert not stale.exists()
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == ["smollm2-135m.tokenizer"]


def test_generate_counts_tokens_and_refuses_overflow(small_llm: LocalLLM) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    gen = small_llm.generate(messages, max_new_tokens=8)
    assert gen.text.strip()
    assert gen.prompt_tokens == small_llm.count_messages(messages)
    assert 1 <= gen.completion_tokens <= 8
    too_many = small_llm.context_window - small_llm.count_messages(messages) + 1
    with pytest.raises(ContextWindowExceeded):
        small_llm.generate(messages, max_new_tokens=too_many)
    with pytest.raises(ValueError, match="context window"):
        small_llm.stream(messages, max_new_tokens=too_many)


def test_generation_is_serialised_across_threads(small_llm: LocalLLM) -> None:
    messages = [{"role": "user", "content": "Count from one to five."}]
    expected = small_llm.generate(messages, max_new_tokens=12).text
    out: list[str] = []
    threads = [
        threading.Thread(target=lambda: out.append(small_llm.generate(messages, max_new_tokens=12).text)),
        threading.Thread(target=lambda: out.append("".join(small_llm.stream(messages, max_new_tokens=12)))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert out == [expected, expected]  # greedy + one model call at a time: identical answers


def test_stream_reports_counts_and_can_stop_early(small_llm: LocalLLM) -> None:
    messages = [{"role": "user", "content": "Write a sentence about rivers."}]
    stream = small_llm.stream(messages, max_new_tokens=16)
    pieces = list(stream)
    assert stream.generation is not None
    assert "".join(pieces) == stream.generation.text
    assert stream.generation.completion_tokens <= 16
    early = small_llm.stream(messages, max_new_tokens=200)
    next(early)
    early.close()  # cancels generation: the lock is free again at once
    assert small_llm.generate(messages, max_new_tokens=4).completion_tokens <= 4


# --- synthesis --------------------------------------------------------------------------------------
def check_answer(answer: Answer, hits: list[Hit], llm: LocalLLM, mode: str) -> None:
    assert answer.text.strip()
    assert not answer.abstained and answer.mode == mode
    usage = answer.usage
    assert usage.context_window == llm.context_window
    assert 0 < usage.prompt_tokens and usage.prompt_tokens + usage.max_new_tokens <= usage.context_window
    assert usage.max_new_tokens == MAX_NEW
    assert 0 < usage.completion_tokens <= usage.llm_calls * MAX_NEW
    assert usage.chunks_used + usage.chunks_dropped == len(hits)
    assert answer.sources, "provenance is always given"
    for source in answer.sources:  # every [n] maps back to the hit that was numbered n
        hit = hits[source.number - 1]
        assert (source.chunk_id, source.document, source.text) == (hit.chunk_id, hit.document, hit.text)
    shown = set(range(1, usage.chunks_used + 1))
    assert set(parse_citations(answer.text)) <= shown


@pytest.mark.parametrize("mode", ["compact", "refine", "tree_summarize"])
def test_synthesis_modes_answer_within_the_window(
    small_llm: LocalLLM, tight_llm: LocalLLM, small_settings: Settings, mode: str
) -> None:
    hits = make_hits()
    if mode == "compact":
        answer = synthesize(QUESTION, hits, small_llm, small_settings, mode=mode)
        check_answer(answer, hits, small_llm, mode)
        assert answer.usage.llm_calls == 1 and answer.usage.chunks_used == 3  # everything fits in 8k: one call

    tight = synthesize(QUESTION, hits, tight_llm, small_settings, mode=mode)
    check_answer(tight, hits, tight_llm, mode)
    if mode == "compact":
        assert tight.usage.llm_calls == 1 and tight.usage.chunks_dropped + tight.usage.chunks_truncated >= 1
    else:  # the walk sees every passage, over several calls
        assert tight.usage.llm_calls >= 2 and tight.usage.chunks_used == 3


def test_abstention_never_calls_the_model(small_settings: Settings) -> None:
    hits = make_hits(dense=0.12)
    assert should_abstain(hits, small_settings) and should_abstain([], small_settings)
    assert not should_abstain(make_hits(), small_settings)
    # A real HTTP backend pointed at a closed port: any model call would raise.
    unreachable = OpenAILLM(
        small_settings.model_copy(update={"llm_backend": "openai", "llm_base_url": "http://127.0.0.1:9/v1"})
    )
    answer = synthesize(QUESTION, hits, unreachable, small_settings)
    assert answer.abstained and answer.text == ABSTAIN_MESSAGE and not answer.sources
    assert answer.usage.llm_calls == 0 and answer.usage.chunks_dropped == 3
    streamed = list(stream_answer(QUESTION, [], unreachable, small_settings, mode="refine"))
    assert streamed[0] == ABSTAIN_MESSAGE and isinstance(streamed[-1], Answer) and streamed[-1].abstained
    assert abstain(hits, "compact", small_settings).to_dict()["abstained"] is True


@pytest.mark.parametrize("mode", ["compact", "tree_summarize"])
def test_stream_yields_pieces_then_the_answer(tight_llm: LocalLLM, small_settings: Settings, mode: str) -> None:
    hits = make_hits()
    items = list(stream_answer(QUESTION, hits, tight_llm, small_settings, mode=mode))
    *pieces, answer = items
    assert isinstance(answer, Answer) and all(isinstance(p, str) for p in pieces)
    assert len(pieces) >= 2  # token by token, not one blob
    assert "".join(pieces).strip() == answer.text
    check_answer(answer, hits, tight_llm, mode)


# --- citations (pure functions) --------------------------------------------------------------------
def test_citation_parsing_and_cleaning() -> None:
    assert parse_citations("a [2] b [1, 3][4] c [2]") == [2, 1, 3, 4]
    assert clean_citations("Paris [1]. Rome [7]. Both [1, 7][2].", {1, 2}) == "Paris [1]. Rome. Both [1][2]."
    assert clean_citations("see [a] and [ 1 ]", {1}) == "see [a] and [ 1 ]"  # not citations: left alone


def test_model_abstention_is_recognised_only_without_citations() -> None:
    assert model_abstained("The documents do not contain the answer to this question.")
    assert model_abstained("This is not mentioned in the sources.")
    assert model_abstained("There is no information about the 1950 census.")
    assert not model_abstained("The documents do not mention a date, but the treaty was signed in Paris [2].")
    assert not model_abstained("Normandy is in France [1].")


@settings(max_examples=150, deadline=None)
@given(
    text=st.lists(st.sampled_from(["Paris", " ", "[", "]", "1", "2", "9", ",", ", ", " [3]", "[12]", ".", "\n"])).map(
        "".join
    ),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_streamed_citation_filter_equals_clean(text: str, cuts: list[int]) -> None:
    """However the model's text is split into pieces, the filtered stream equals the cleaned full text."""
    valid = {1, 2, 3}
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    filt = CitationFilter(valid)
    assert "".join(filt.feed(p) for p in pieces) + filt.flush() == clean_citations(text, valid)


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
    assert llm.name == SMALL  # a bundled name is used as is when the server lists it
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
    closed = {"llm_backend": "openai", "llm_base_url": "http://127.0.0.1:9", "llm_tokenizer": SMALL}
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

"""Context-window budgeting, as properties over the real tokenizers of both bundled models.

For any passages, question, window and max_new_tokens: the rendered chat prompt + max_new_tokens never exceeds the
window (not by one token), the question is never cut, passages keep rank order and only the last placed one may be
truncated (to a prefix). Only tokenizers are loaded (no weights), so this runs in seconds after a one-time
tokenizer conversion per session.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rag.budget import BudgetError, Passage, budget_prompt, build_messages, numbered, plain
from rag.models.tokens import HFTokenCounter, load_token_counter
from rag.synthesis import COMPACT_TEMPLATE, REFINE_TEMPLATE, SYSTEM_PROMPT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger(__name__)

BUNDLED = ["bundled:smollm2-135m", "bundled:qwen2.5-coder-0.5b"]


@pytest.fixture(scope="session")
def bundled_tokenizers(models_dir: Path) -> dict[str, HFTokenCounter]:
    """Real tokenizers of both bundled models (converted once per session, weights never loaded)."""
    return {spec: load_token_counter(spec, models_dir) for spec in BUNDLED}


# Words that stress token boundaries: multi-byte characters, emoji, digits, brackets like citations, markup, and
# strings that look like chat-template control tokens.
WORDS = [
    "the",
    "answer",
    "is",
    "Paris",
    "naïve",
    "café",
    "日本語",
    "テキスト",
    "emoji🙂",
    "👍🏽",
    "x²",
    "—",
    "...",
    "[1]",
    "[2, 3]",
    "{braces}",
    "<b>",
    "</b>",
    "<|im_end|>",
    "<|im_start|>",
    "\\n",
    "12345",
    "3.14159",
    "e̊",
    "Straße",
    "ﬁ",
    "\t",
    "def",
    "foo(bar):",
    "  ",
    "URL:https://example.com/a?b=c",
    "ʻokina",
    "Ωmega",
    "\u200b",
]
SEPARATORS = [" ", " ", " ", "\n", "\n\n", "", "  ", ", ", ". "]

word_texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=400).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)
long_word_texts = st.lists(
    st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), min_size=40, max_size=400
).map(lambda pairs: "".join(w + s for w, s in pairs))
any_texts = st.text(max_size=300)
passage_texts = st.one_of(word_texts, long_word_texts, long_word_texts, any_texts)
questions = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=60).map(" ".join),
    st.text(min_size=1, max_size=120),
)


def with_window(counter: HFTokenCounter, window: int) -> HFTokenCounter:
    return HFTokenCounter(counter.tokenizer, window, name=counter.name)


def scaffold_tokens(counter: HFTokenCounter, question: str, template: str = COMPACT_TEMPLATE, **fields: str) -> int:
    return counter.count_messages(
        build_messages(SYSTEM_PROMPT, template.format(context="", question=question, **{"evidence": "", **fields}))
    )


def check_result(counter: HFTokenCounter, result, question: str, passages: list[Passage], max_new: int) -> None:
    real = counter.count_messages(result.messages)
    assert real == result.prompt_tokens
    assert real + max_new <= counter.context_window, (real, max_new, counter.context_window)
    user = result.messages[-1]["content"]
    assert f"Question: {question}\n" in user  # never truncated
    numbers = [p.number for p in result.passages]
    assert numbers == sorted(numbers)
    for placed in result.passages:
        original = passages[placed.index].text
        if placed.truncated:
            assert original.startswith(placed.text) and len(placed.text) < len(original)
            assert counter.count_tokens(placed.text) >= 28  # 32 asked; a cut never splits a multi-token character
        else:
            assert placed.text == original
    assert all(not p.truncated for p in result.passages[:-1])  # only the last placed one may be cut


@pytest.mark.parametrize("spec", BUNDLED)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(passage_texts, max_size=8),
    question=questions,
    max_new=st.integers(1, 400),
    fraction=st.floats(0.0, 1.25),
    jitter=st.integers(-8, 48),
)
def test_compact_budget_never_exceeds_window(
    bundled_tokenizers: dict[str, HFTokenCounter],
    spec: str,
    texts: list[str],
    question: str,
    max_new: int,
    fraction: float,
    jitter: int,
) -> None:
    base = bundled_tokenizers[spec]
    passages = [Passage(number=i + 1, text=t, label=f"doc{i}.txt") for i, t in enumerate(texts)]
    # Room for passages: a random fraction of what they need, so cut-offs fall inside passages and at the edges.
    slack = int(fraction * sum(base.count_tokens(numbered(p, p.text)) + 2 for p in passages)) + jitter
    window = max(1, scaffold_tokens(base, question) + max_new + slack)
    counter = with_window(base, window)
    kwargs = {"system": SYSTEM_PROMPT, "template": COMPACT_TEMPLATE, "fields": {"question": question, "evidence": ""}}
    if slack < 0:
        with pytest.raises(BudgetError):
            budget_prompt(counter, passages=passages, max_new_tokens=max_new, **kwargs)
        return
    result = budget_prompt(counter, passages=passages, max_new_tokens=max_new, **kwargs)
    check_result(counter, result, question, passages, max_new)
    event(f"placed {len(result.passages)}/{len(passages)}, truncated {result.truncated}")
    event(f"room left {'<8' if window - max_new - result.prompt_tokens < 8 else '>=8'}")
    event(f"shrunk after rendering: {result.shrinks > 0}")
    # Rank order: placed passages are exactly the first ones; everything else is counted as dropped.
    assert [p.index for p in result.passages] == list(range(len(result.passages)))
    assert result.dropped == len(passages) - len(result.passages)
    assert result.truncated <= 1
    if result.dropped and result.passages and not result.passages[-1].truncated:
        # Tightness: a whole passage was left out only because it (or a useful cut of it) did not fit.
        nxt = passages[len(result.passages)]
        room = window - max_new - result.prompt_tokens
        whole = counter.count_tokens(f"\n\n[{nxt.number}] {nxt.label}\n{nxt.text}")
        overhead = counter.count_tokens(f"\n\n[{nxt.number}] {nxt.label}\n")
        assert room < min(whole, overhead + 32) + 4, (room, whole, overhead)


@pytest.mark.parametrize("spec", BUNDLED)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(passage_texts, min_size=1, max_size=8),
    question=questions,
    existing=st.one_of(st.none(), word_texts),
    max_new=st.integers(1, 200),
    slack=st.integers(40, 900),
)
def test_batched_walk_covers_every_passage_once(
    bundled_tokenizers: dict[str, HFTokenCounter],
    spec: str,
    texts: list[str],
    question: str,
    existing: str | None,
    max_new: int,
    slack: int,
) -> None:
    """refine / tree_summarize: consecutive budgeted batches take every passage exactly once, each fitting."""
    base = bundled_tokenizers[spec]
    passages = [Passage(number=i + 1, text=t) for i, t in enumerate(texts)]
    template, fields = COMPACT_TEMPLATE, {"question": question, "evidence": ""}
    if existing is not None:
        template, fields = REFINE_TEMPLATE, {"question": question, "existing_answer": existing}
    window = scaffold_tokens(base, question, template, **{k: v for k, v in fields.items() if k != "question"})
    counter = with_window(base, window + max_new + slack)
    start, seen = 0, []
    while start < len(passages):
        result = budget_prompt(
            counter, system=SYSTEM_PROMPT, template=template, fields=fields, passages=passages,
            max_new_tokens=max_new, start=start, overflow="stop",
        )  # fmt: skip
        check_result(counter, result, question, passages, max_new)
        assert result.passages, "a batch must make progress"
        assert result.passages[0].index == start
        seen.extend(p.index for p in result.passages)
        start = result.next_index
    assert seen == list(range(len(passages)))


def test_plain_formatter_and_exact_fit(bundled_tokenizers: dict[str, HFTokenCounter]) -> None:
    """A window with exactly enough room is used to the last token and not one more."""
    base = bundled_tokenizers["bundled:smollm2-135m"]
    passages = [Passage(number=1, text="alpha beta gamma " * 30)]
    kwargs = {
        "system": SYSTEM_PROMPT,
        "template": COMPACT_TEMPLATE,
        "fields": {"question": "What?", "evidence": ""},
        "passages": passages,
    }
    full = budget_prompt(with_window(base, 10_000), max_new_tokens=50, formatter=plain, **kwargs)
    exact = full.prompt_tokens + 50
    fits = budget_prompt(with_window(base, exact), max_new_tokens=50, formatter=plain, **kwargs)
    assert fits.prompt_tokens == full.prompt_tokens and fits.truncated == 0
    cut = budget_prompt(with_window(base, exact - 1), max_new_tokens=50, formatter=plain, **kwargs)
    assert cut.truncated == 1 and cut.prompt_tokens + 50 <= exact - 1


def test_question_that_cannot_fit_raises(bundled_tokenizers: dict[str, HFTokenCounter]) -> None:
    base = with_window(bundled_tokenizers["bundled:qwen2.5-coder-0.5b"], 256)
    with pytest.raises(BudgetError, match="question"):
        budget_prompt(
            base, system=SYSTEM_PROMPT, template=COMPACT_TEMPLATE, fields={"question": "why " * 300, "evidence": ""},
            passages=[Passage(1, "text")], max_new_tokens=16,
        )  # fmt: skip


def test_truncate_cuts_at_token_boundary(bundled_tokenizers: dict[str, HFTokenCounter]) -> None:
    for counter in bundled_tokenizers.values():
        text = "Straße 日本語テキスト emoji🙂👍🏽 naïve café " * 20
        for n in (0, 1, 5, 17, 64):
            cut = counter.truncate(text, n)
            assert text.startswith(cut)
            assert counter.count_tokens(cut) <= n
        assert counter.truncate(text, 10_000) == text


@pytest.mark.parametrize("spec", BUNDLED)
def test_history_is_trimmed_oldest_first_and_never_past_the_window(
    bundled_tokenizers: dict[str, HFTokenCounter], spec: str
) -> None:
    """Passages first; then the most recent whole turns that fit, oldest dropped first, the question never cut, and
    the request never over the window, at every window size from none of the history to all of it."""
    base = bundled_tokenizers[spec]
    history = []
    for turn in range(6):
        history += [{"role": "user", "content": f"Question {turn} about the harbour and its {turn} cranes?"},
                    {"role": "assistant", "content": f"Answer {turn}: the harbour has {turn * 7} cranes [1]."}]
    question = "And how many of them are electric?"
    kwargs = {"system": SYSTEM_PROMPT, "template": COMPACT_TEMPLATE, "fields": {"question": question, "evidence": ""},
              "passages": [Passage(number=1, text="The harbour has forty cranes, a third of them electric. " * 4)]}
    bare = budget_prompt(with_window(base, 100_000), max_new_tokens=32, **kwargs)
    full = budget_prompt(with_window(base, 100_000), max_new_tokens=32, history=history, **kwargs)
    assert full.history == len(history) and full.history_dropped == 0
    kept_before = -1
    for window in range(bare.prompt_tokens + 32, full.prompt_tokens + 32 + 1, 7):
        result = budget_prompt(with_window(base, window), max_new_tokens=32, history=history, **kwargs)
        assert result.prompt_tokens == base.count_messages(result.messages)
        assert result.prompt_tokens + 32 <= window
        assert result.passages and not result.truncated  # history never takes the passages' room
        assert result.history % 2 == 0 and result.history + result.history_dropped == len(history)
        carried = result.messages[1:-1]  # between the system prompt and the request
        assert carried == history[len(history) - result.history:]  # a suffix: the oldest turns went first
        assert question in result.messages[-1]["content"]
        assert result.history >= kept_before  # more room never carries less
        kept_before = result.history
    assert 0 < kept_before

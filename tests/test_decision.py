"""The answer's confidence and the decision it drives (rag/synthesis/confidence.py, rag/synthesis/decision.py):
pure rules on constructed answers, then the engine with the real small model and embedder: a question the documents
cannot answer is not answered with an invented claim, a supported answer stays generated, blocking and streaming
decide the same.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rag.settings import Settings
from rag.synthesis.confidence import WITH_LOGPROBS, WITHOUT_LOGPROBS, Signals, confidence
from rag.synthesis.decision import EXTRACTIVE_LEAD, decide
from rag.synthesis.passage_order import KeySentence
from rag.types import Answer, Hit, SentenceCheck
from tests.conftest import PASSAGES, make_hits, write_files

STRONG = Signals(retrieval=0.7, question_support=0.8, answer_in_best_sentence=1.0, groundedness=1.0,
                 claim_support=0.8, token_logprob=-0.2, abstention_unlikely=4.0)
WEAK = Signals(retrieval=0.35, question_support=0.3, answer_in_best_sentence=0.0, groundedness=0.0,
               claim_support=0.2, token_logprob=-2.5, abstention_unlikely=0.3)


def test_confidence_is_monotone_in_every_signal() -> None:
    for calibration in (WITH_LOGPROBS, WITHOUT_LOGPROBS):
        assert all(w > 0 for w in calibration.weights.values()), "a signal that lowers confidence as it grows"
    for name in WITH_LOGPROBS.weights:  # every signal the fitted combination reads raises it
        more = dataclasses.replace(WEAK, **{name: getattr(STRONG, name)})
        assert confidence(more) > confidence(WEAK), name
    for name in set(Signals.__dataclass_fields__) - set(WITH_LOGPROBS.weights):  # and none lowers it
        assert confidence(dataclasses.replace(WEAK, **{name: getattr(STRONG, name)})) >= confidence(WEAK), name
    assert 0.0 <= confidence(WEAK) < confidence(STRONG) <= 1.0
    assert confidence(dataclasses.replace(STRONG, token_logprob=None, abstention_unlikely=None)) > confidence(
        dataclasses.replace(WEAK, token_logprob=None, abstention_unlikely=None))


def _answer(text: str, supported: bool) -> Answer:
    return Answer(text=text, sentences=[SentenceCheck(0, len(text), supported, 0.8 if supported else 0.2, [1])],
                  groundedness=1.0 if supported else 0.0)


def _quotes(hits: list[Hit]) -> list[KeySentence]:
    first, second = hits[0].text, hits[2].text
    one = first.index("They were descended")
    two = second.index("This basin")
    return [KeySentence(1, first[one:], 0.71, one, len(first)), KeySentence(3, second[two:], 0.64, two, len(second))]


def test_decide_keeps_a_supported_confident_answer(small_settings: Settings) -> None:
    hits = make_hits(dense=0.7)
    answer = decide(_answer("Normandy is in France [1].", True), hits, _quotes(hits), [-0.1] * 6,
                    small_settings.model_copy(update={"min_confidence": 0.0}))
    assert answer.kind == "generated" and answer.text == "Normandy is in France [1]."
    assert 0 < answer.confidence <= 1 and answer.signals["question_support"] == 0.71
    assert answer.signals["answer_in_best_sentence"] == 1.0  # "Normandy", "France" meet "Norman", "Francia" (5 letters)


def test_decide_quotes_the_documents_instead_of_an_unsupported_answer(small_settings: Settings) -> None:
    hits = make_hits(dense=0.7)
    hits[2].page, hits[2].page_starts = 4, []
    settings = small_settings.model_copy(update={"min_confidence": 0.0})  # even at no bar: unsupported is never shown
    answer = decide(_answer("The Normans came from Mars [1].", False), hits, _quotes(hits), [], settings)
    assert answer.kind == "extractive" and answer.text.startswith(EXTRACTIVE_LEAD)
    assert "Mars" not in answer.text and "(p. 4)" in answer.text
    assert [s.number for s in answer.sources] == [1, 3] and answer.groundedness == 1.0
    for source, sentence in zip(answer.sources, answer.sentences, strict=True):
        span = source.spans[0]
        quoted = source.text[span.start:span.end]
        assert f"“{quoted}” [{source.number}]" in answer.text  # the quote is the passage's own words, cited
        assert answer.text[sentence.start:sentence.end].startswith(f"“{quoted}”") and sentence.supported
    assert hits[2].start_char is None or answer.sources[1].spans[0].doc_start is not None


def test_decide_abstains_with_the_closest_passages_when_nothing_supports_the_question(
        small_settings: Settings) -> None:
    hits = make_hits(dense=0.7)
    weak = [dataclasses.replace(q, score=0.2) for q in _quotes(hits)]
    answer = decide(_answer("The Normans came from Mars [1].", False), hits, weak, [], small_settings)
    assert answer.kind == "abstained" and answer.abstained and not answer.sentences
    assert [s.number for s in answer.sources] == [1, 2, 3] and all(not s.spans for s in answer.sources)
    assert "Mars" not in answer.text
    said = decide(Answer(text="The documents do not say.", kind="abstained"), hits, _quotes(hits), [],
                  small_settings)
    assert said.kind == "extractive"  # the model said no, but the passages hold sentences that answer it well


# --- the engine, real small model and embedder ---------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, small_settings: Settings):
    from rag import RAG

    folder = tmp_path_factory.mktemp("decision-docs")
    write_files(folder, {f"{i}-{name}": text for i, (name, text) in enumerate(PASSAGES)})
    rag = RAG(tmp_path_factory.mktemp("decision-data"), settings=small_settings.model_copy(
        update={"data_dir": tmp_path_factory.mktemp("decision-data")}))
    rag.ingest(folder, summarize=False)
    yield rag
    rag.close()


def test_a_near_topic_question_the_documents_cannot_answer_gets_no_invented_claim(engine) -> None:
    for question in ("How much money did King Charles III pay Rollo to swear fealty?",
                     "What was the population of the Amazon basin in 1900?"):
        answer = engine.query(question)
        assert answer.confidence is not None
        if answer.kind == "generated":  # only ever a verified answer the calibration is confident in
            assert answer.confidence >= engine.settings.min_confidence
        assert all(s.supported for s in answer.sentences), answer.text
        assert answer.kind in ("generated", "extractive", "abstained")


def test_blocking_and_streaming_decide_the_same(engine) -> None:
    for question in ("In what country is Normandy located?", "Who was the leader of the Norse raiders?"):
        blocking = engine.query(question)
        *pieces, streamed = list(engine.stream(question))
        assert isinstance(streamed, Answer) and all(isinstance(p, str) for p in pieces)
        assert (streamed.kind, streamed.text, streamed.confidence) == \
            (blocking.kind, blocking.text, blocking.confidence)
        if streamed.kind == "generated":
            assert "".join(pieces).strip() == streamed.text or streamed.sources


def test_confidence_rises_with_the_evidence(engine, tmp_path: Path) -> None:
    """The same question, asked where the documents answer it and where only their topic is there."""
    question = "Who was the leader of the Norse raiders who agreed to swear fealty to King Charles III?"
    with_answer = engine.query(question)
    only_topic = engine.query(question, document_ids=[d.id for d in engine.documents() if "amazon" in d.path])
    assert with_answer.confidence > only_topic.confidence
    assert with_answer.signals["question_support"] > only_topic.signals.get("question_support", 0.0)

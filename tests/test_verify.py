"""Citation verification with the real bundled embedder (MiniLM): citations re-pointed, dropped or added, spans whose
offsets select the supporting words in the passage and in the stored document, and pages of a PDF; and the order
the passages are read in, by the same sentence scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.readers import read_document
from rag.models.embedder import Embedder, load_embedder
from rag.settings import Settings
from rag.synthesis import parse_citations, verify_citations
from rag.synthesis.passage_order import best_sentence_scores, order_for_answer
from rag.types import Hit
from tests.conftest import make_hits, write_files

MIN_SUPPORT = Settings.model_fields["citation_min_support"].default


@pytest.fixture(scope="module")
def embedder(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    return load_embedder(Settings(data_dir=tmp_path_factory.mktemp("verify"), models_dir=models_dir))


def test_citations_are_repointed_dropped_or_added(embedder: Embedder) -> None:
    hits = make_hits()  # [1] and [2]: the Normans, [3]: the Amazon rainforest
    text = (
        "Normandy is a region in France [3]. "  # cites the rainforest: moved to [1]
        "The Amazon basin encompasses seven million square kilometres [1]. "  # cites the Normans: moved to [3]
        "Bananas are a good source of potassium [2]. "  # no passage supports it: dropped, marked unsupported
        "The Normans descended from Norse raiders and pirates."  # cited nothing: gets [1]
    )
    checked = verify_citations(text, hits, {1, 2, 3}, embedder, MIN_SUPPORT)
    sentences = [checked.text[s.start:s.end] for s in checked.sentences]
    assert [s.citations for s in checked.sentences] == [[1], [3], [], [1]], sentences
    assert sentences[0] == "Normandy is a region in France [1]."
    assert sentences[2] == "Bananas are a good source of potassium."
    assert [s.supported for s in checked.sentences] == [True, True, False, True]
    assert checked.groundedness == 0.75
    assert parse_citations(checked.text) == [1, 3]
    # Each span selects the passage sentence that supports its answer sentence.
    by_sentence = {span.sentence: (n, span) for n, spans in checked.spans.items() for span in spans}
    n, span = by_sentence[0]
    assert hits[n - 1].text[span.start:span.end].endswith("gave their name to Normandy, a region in France.")
    n, span = by_sentence[1]
    assert hits[n - 1].text[span.start:span.end].startswith("This basin encompasses seven million")
    assert span.score >= MIN_SUPPORT and span.page is None


def test_a_sentence_without_content_words_is_not_checked(embedder: Embedder) -> None:
    checked = verify_citations("Yes [2].", make_hits(), {1, 2, 3}, embedder, MIN_SUPPORT)
    assert checked.text == "Yes [2]." and checked.sentences == [] and checked.groundedness is None


LONG_DOC = " ".join(
    f"Paragraph {i} describes harbour crane number {i}, which lifts {i * 10} tonnes." for i in range(1, 80)
) + " The lighthouse at the end of the pier was painted red and white in 1911."


def test_span_offsets_select_the_text_of_the_stored_document(make_rag, tmp_path: Path, embedder: Embedder) -> None:
    write_files(tmp_path / "docs", {"harbour.txt": LONG_DOC})
    rag = make_rag(summarize=False)
    rag.ingest(tmp_path / "docs")
    hits = rag.retrieve("When was the lighthouse painted red and white?", top_k=3)
    assert hits[0].position > 0, "the sentence sits in a later chunk, so chunk and document offsets differ"
    checked = verify_citations("The lighthouse was painted red and white in 1911 [1].", hits, {1, 2, 3}, embedder,
                               MIN_SUPPORT)
    [span] = checked.spans[1]
    stored = read_document(tmp_path / "docs" / "harbour.txt", 10**7).text  # the text as indexed
    assert stored[span.doc_start:span.doc_end] == hits[0].text[span.start:span.end]
    assert stored[span.doc_start:span.doc_end] == "The lighthouse at the end of the pier was painted red and white in 1911."


def _passages(*texts: str) -> list[Hit]:
    return [Hit(chunk_id=10 + i, document_id=1 + i, document=f"/corpus/{i}.txt", collection="default", position=0,
                text=text, score=1.0 / (60 + i)) for i, text in enumerate(texts)]


def test_a_short_answer_is_checked_with_its_question(embedder: Embedder) -> None:
    """"It was 1911." is true of both passages' years; only the question says which one it answers."""
    hits = _passages(
        "The harbour crane was installed in 1911. It lifts forty tonnes.",
        "The lighthouse at the end of the pier was painted red and white in 1911.",
    )
    alone = verify_citations("It was 1911 [1].", hits, {1, 2}, embedder, MIN_SUPPORT, margin=0.1)
    asked = verify_citations("It was 1911 [1].", hits, {1, 2}, embedder, MIN_SUPPORT, margin=0.1,
                             question="When was the lighthouse painted red and white?")
    assert alone.text == "It was 1911 [1]."
    assert asked.text == "It was 1911 [2]."
    [span] = asked.spans[2]
    assert hits[1].text[span.start:span.end] == hits[1].text


def test_a_supported_citation_moves_only_to_a_clearly_better_passage(embedder: Embedder) -> None:
    hits = _passages(
        "The Normans settled Normandy in the 10th century.",  # supports it (0.74): cited, kept within the margin
        "In the 10th century the Normans gave their name to Normandy, a region in the north of France.",  # 0.97
    )
    text = "The Normans gave their name to Normandy in the 10th century [1]."
    moved = verify_citations(text, hits, {1, 2}, embedder, MIN_SUPPORT, margin=0.1)
    kept = verify_citations(text, hits, {1, 2}, embedder, MIN_SUPPORT, margin=1.0)
    assert moved.sentences[0].citations == [2]
    assert kept.sentences[0].citations == [1], "the model's choice stands when no passage beats it by the margin"


def test_the_passage_whose_sentence_answers_is_read_first(embedder: Embedder) -> None:
    hits = make_hits()  # [2] says what the Normans were famed for; [1] is about them too, [3] is not
    question = "What were the Normans famed for?"
    ordered = order_for_answer(question, hits, embedder, dense_weight=0.5).hits
    assert [h.chunk_id for h in ordered] == [hits[1].chunk_id, hits[0].chunk_id, hits[2].chunk_id]
    scores = best_sentence_scores(question, hits, embedder)
    assert scores[1] > scores[0] > scores[2]


def test_the_sentences_that_answer_are_quoted_with_their_number_in_reading_order(embedder: Embedder) -> None:
    hits = make_hits()
    question = "What were the Normans famed for?"
    famed = "The Normans were famed for their martial spirit and eventually for their Christian piety, becoming " \
        "exponents of the Catholic orthodoxy into which they assimilated."
    reading = order_for_answer(question, hits, embedder, dense_weight=0.5, key_sentences=2)
    first, second = reading.key_sentences
    assert (first.number, first.text) == (1, famed), "the passage that says it is read first, as [1]"
    assert first.score > second.score and second.number in (1, 2)
    assert reading.hits[second.number - 1].document != "/corpus/amazon.txt"
    kept = order_for_answer(question, hits, embedder, dense_weight=0.5, reorder=False, key_sentences=1)
    assert [h.chunk_id for h in kept.hits] == [h.chunk_id for h in hits]
    assert [(k.number, k.text) for k in kept.key_sentences] == [(2, famed)], "numbered as retrieval ranked it"
    assert order_for_answer(question, hits, embedder, dense_weight=0.5, reorder=False).key_sentences == []


def test_a_passage_far_below_the_best_is_not_shown_and_gives_no_key_sentence(embedder: Embedder) -> None:
    hits = make_hits()  # [2] says what the Normans were famed for, [1] is about them, [3] (the Amazon) is not
    question = "What were the Normans famed for?"
    scores = best_sentence_scores(question, hits, embedder)
    between = (scores[2] + scores[0]) / 2 / scores[1]  # the Amazon passage under it, both Normans passages over it
    reading = order_for_answer(question, hits, embedder, dense_weight=0.5, key_sentences=3,
                               min_relative_support=between)
    assert reading.shown == 2 and reading.hits[2].document == "/corpus/amazon.txt"
    assert {k.number for k in reading.key_sentences} <= {1, 2}, "nothing is quoted from a passage not shown"
    assert len(reading.key_sentences) == 3
    in_order = order_for_answer(question, hits, embedder, dense_weight=0.5, reorder=False, min_relative_support=between)
    assert [h.chunk_id for h in in_order.hits] == [h.chunk_id for h in hits] and in_order.shown == 2
    assert order_for_answer(question, hits, embedder, dense_weight=0.5, min_relative_support=0.0).shown == 3
    # The passage not shown goes last even when retrieval ranked it first.
    amazon_first = [hits[2], hits[0], hits[1]]
    moved = order_for_answer(question, amazon_first, embedder, dense_weight=0.5, reorder=False,
                             min_relative_support=between)
    assert [h.document for h in moved.hits][-1] == "/corpus/amazon.txt" and moved.shown == 2

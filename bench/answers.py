"""Answer quality and latency of the whole query path (retrieve → budget → LLM → citations), default model, CPU.

    python bench/answers.py squad   [--answerable 100] [--unanswerable 50] [--mode compact]
    python bench/answers.py replay
    python bench/answers.py latency [--questions 8]
    python bench/answers.py sec10q  [--questions 20]
    python bench/answers.py conversations [--conversations 60] [--answer]

``squad``: ``../shared/data/squad2-dev-5`` (173 paragraphs, one file each). Answerable questions count as right when
one of the reference answers is contained in the answer (case, punctuation and articles ignored, as SQuAD's own
normalisation does); the answer's cited sources are checked against the gold paragraph. Unanswerable questions count
as right when the service abstains, whether by the retrieval threshold (the model is not called) or because the
model said the sources do not contain it. Questions are taken at an even stride over the file, so every article is
represented. Citation verification is measured on the same generations: the citations the model wrote are recorded
before verification (``answering.verify_citations`` is wrapped with a probe that also times it), so "gold cited"
is reported before and after it, among the answerable questions whose gold paragraph was retrieved, both as the
sources list (which lists every passage shown when nothing is cited) and strictly (the ``[n]`` in the text); with
groundedness and verification's share of each answer's time.

``replay``: citation verification as the code now does it, on the generations the last ``squad`` run recorded
(``bench/results/answers-squad.json``: raw answers, passages shown, hits), so a change to verification is measured
in seconds on the same questions, without the LLM.

``conversations``: two-turn conversations from SQuAD and HotpotQA whose second turn needs the first (built as
``bench/conversations.py`` says). Recall@5 of the gold paragraphs for the second turn: asked as the dataset asks it
(single turn), the follow-up alone (no rewrite), the previous user message + the follow-up (the rewrite's fallback,
no model), and the engine's rewrite (``RAG.conversation`` + one LLM call). With ``--answer`` the second turns are
also answered (``RAG.chat``), for groundedness.

``latency``: per synthesis mode, time to the first streamed text piece (retrieval and prefill included) and to the
whole answer, prompt tokens (the largest request) and LLM calls per answer; p50 over the questions.

``sec10q``: the 20 SEC 10-Q PDFs, ingested end to end, and an even sample of the 195 questions. Reference answers
are long, so it reports what can be checked without a judge model: whether a gold filing is among the cited
sources, and the share of the reference answer's figures (numbers of 3+ digits) that the answer contains.

The ingested corpora and the converted model are kept under ``--work`` and reused. Results go to stdout and to
``bench/results/answers-<task>.json``.

The passage order (``rag/synthesis/passage_order.py``), ``squad --unanswerable 0`` (100 answerable questions), 3 Dec
2026, 2-core AMD EPYC; among the 92 answered with the gold paragraph retrieved, gold read as [1] / gold cited /
contains a reference answer (all 100): ``RAG_ORDER_PASSAGES=off`` 0.739 / 0.761 / 0.47 (identical to the Xeon run
of the same day: greedy texts did not change with the CPU); rank fusion of retrieval and best sentence (5dcba14)
0.804 / 0.804 / 0.48; best sentence + 0.5 x dense cosine (the default, 3a48490) 0.826 / 0.783 / 0.46. Against
``off``, the default gains 7 gold citations and loses 5 (contains +3 / -4): the model reads the gold paragraph
first 8 more times but answers right from it only once more (41 of 76 when first vs 40 of 68), so the citation
figure is held by the 0.5B model's answers, not by where the gold paragraph is.

Key sentences (``RAG_KEY_SENTENCES``, ``rag/synthesis/passage_order.py``), 6 Dec 2026, same EPYC, 0 / 2 (default):
``squad --unanswerable 0`` contains 0.46 / 0.56 (+15 -5 questions), gold cited 0.783 / 0.824 (strict 0.717 /
0.758), gold cited when correct 1.0 / 0.982, when wrong 0.574 / 0.583, groundedness 0.918 / 0.932, p50 4.13 / 4.51
s; ``--shift 0.5`` (held out) contains 0.51 / 0.59 (+14 -6), gold cited 0.835 / 0.859 (strict 0.791 / 0.815),
groundedness 0.958 / 0.958, p50 4.58 / 4.63 s. Verification: p50 ~50 ms, ~1.1% of an answer's time. 1 and 3
key sentences on the first sample: contains 0.52 / 0.56, gold cited 0.793 / 0.815, groundedness 0.904 / 0.906.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import string
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

from _common import DATA, REPO, doc_ranking, read_jsonl  # first: sets the offline env, puts the repo on sys.path
from conversations import Conversation, hotpotqa_conversations, squad_conversations

from rag import RAG
from rag.synthesis import answering, parse_citations, rewrite
from rag.types import Answer, Hit

log = logging.getLogger("bench.answers")
T = TypeVar("T")


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def contains(references: list[str], text: str) -> bool:
    """Whether ``text`` contains one of the reference answers (SQuAD's normalisation)."""
    return any(normalize(a) in normalize(text) for a in references)


def spread(items: list[T], n: int, shift: float = 0.0) -> list[T]:
    """``n`` items at an even stride, so a sample covers the whole file (its articles / companies); ``shift`` (a
    fraction of the stride) takes another sample of the same spread, disjoint when the stride is over one item:
    the held-out questions a setting chosen on the first sample is checked on."""
    if n <= 0:
        return []
    if n >= len(items):
        return items
    step = len(items) / n
    return [items[int((i + shift) * step)] for i in range(n)]


def open_rag(work: Path, name: str, args: argparse.Namespace) -> RAG:
    overrides: dict[str, Any] = {"models_dir": work / "models", "llm_runtime": args.runtime}
    if args.model:
        overrides["llm_model"] = args.model
    return RAG(work / name, **overrides)


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


class VerifyProbe:
    """Wraps ``answering.verify_citations``: records the text the model wrote (its citations before verification),
    the passages shown, and how long verification took, for the answer in progress."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.raw_text = ""
        self.shown: set[int] = set()
        self._verify = answering.verify_citations
        answering.verify_citations = self._timed

    def _timed(self, text: str, hits: list[Hit], shown: set[int], embedder: Any, min_support: float, **kw: Any) -> Any:
        t0 = time.perf_counter()
        result = self._verify(text, hits, shown, embedder, min_support, **kw)
        self.seconds, self.raw_text, self.shown = time.perf_counter() - t0, text, set(shown)
        return result

    def reset(self) -> None:
        self.seconds, self.raw_text, self.shown = 0.0, "", set()


class DecisionProbe:
    """Wraps ``answering.decide``: records the model's verified answer before the decision (its text and whether the
    model said the documents do not hold it) and the sentences an extractive answer would quote, so
    ``bench/calibrate.py`` can fit the confidence and choose the decision rule offline, on these generations."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {}
        self._decide = answering.decide
        answering.decide = self._probed

    def _probed(self, answer: Answer, hits: list[Hit], quotes: list[Any], logprobs: list[float], settings: Any,
                abstention: float | None = None) -> Any:
        self.record = {"generated": answer.text, "model_abstained": answer.kind == "abstained",
                       "quotes": [[q.text, q.score] for q in quotes], "token_logprobs": [round(x, 4) for x in logprobs]}
        return self._decide(answer, hits, quotes, logprobs, settings, abstention)

    def reset(self) -> None:
        self.record = {}


def cited_documents(text: str, shown: set[int], hits: list[Hit], fallback: bool) -> set[str]:
    """Document stems cited by ``[n]`` in ``text``; with ``fallback``, every shown passage when nothing is cited
    (what ``Answer.sources`` lists then)."""
    numbers = [n for n in parse_citations(text) if n in shown] or (sorted(shown) if fallback else [])
    return {Path(hits[n - 1].document).stem for n in numbers}


def share(rows: list[dict], key: str) -> float:
    return round(sum(bool(r[key]) for r in rows) / max(1, len(rows)), 3)


def by_correctness(rows: list[dict]) -> dict:
    """Gold cited among answers that contain a reference answer and among those that do not: a wrong answer usually
    comes from a wrong paragraph, and citing that one is faithful, so the split separates citation errors from
    answer errors."""
    return {
        "correct_n": sum(r["contains"] for r in rows),
        "gold_cited_when_correct": share([r for r in rows if r["contains"]], "gold_cited"),
        "gold_cited_when_wrong": share([r for r in rows if not r["contains"]], "gold_cited"),
    }


def decisions(rows: list[dict]) -> dict:
    """What the decision step did (``rag/synthesis/decision.py``), against the issue's targets: answerable questions'
    answers by kind, how often a ``generated`` one contains a reference, how often one whose gold paragraph was
    retrieved was abstained on; unanswerable ones not answered by the model (abstained or quoted)."""
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    generated = [r for r in ans if r["kind"] == "generated"]
    retrieved = [r for r in ans if r["gold_retrieved"]]
    return {
        "answerable_kinds": {k: sum(r["kind"] == k for r in ans) for k in ("generated", "extractive", "abstained")},
        "generated_contains": share(generated, "contains"),
        "contains_any_kind": share(ans, "contains"),
        "gold_retrieved_abstained": round(sum(r["kind"] == "abstained" for r in retrieved) / max(1, len(retrieved)), 3),
        "unanswerable_not_generated": round(sum(r["kind"] != "generated" for r in una) / max(1, len(una)), 3),
        "unanswerable_kinds": {k: sum(r["kind"] == k for r in una) for k in ("generated", "extractive", "abstained")},
        "generated_ungrounded": sum(r["kind"] == "generated" and not r["groundedness"] for r in rows),
    }


def bench_squad(args: argparse.Namespace) -> dict:
    src = DATA / "squad2-dev-5"
    corpus = args.work / "squad-corpus"
    if not corpus.exists():
        corpus.mkdir(parents=True)
        for doc in read_jsonl(src / "corpus.jsonl"):
            (corpus / f"{doc['id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}", encoding="utf-8")
    rag = open_rag(args.work, "squad-data", args)
    rag.ingest(corpus, summarize=False)  # as when the reference numbers were taken (summaries were off by default)
    probe = VerifyProbe()
    decision = DecisionProbe()
    answerable = spread(read_jsonl(src / "queries.jsonl"), args.answerable, args.shift)
    unanswerable = spread(read_jsonl(src / "queries_unanswerable.jsonl"), args.unanswerable, args.shift)
    rows = []
    for n, q in enumerate(answerable + unanswerable, 1):
        probe.reset()
        decision.reset()
        t0 = time.perf_counter()
        answer = rag.query(q["question"], mode=args.mode)
        seconds = time.perf_counter() - t0
        cited = {Path(s.document).stem for s in answer.sources}
        gold = set(q["gold_ids"])
        before = probe.raw_text or answer.text
        made = decision.record
        quoted = " ".join(text for text, _ in made.get("quotes", [])[: rag.settings.extractive_quotes])
        rows.append(
            {
                "id": q["id"],
                "article": q["gold_ids"][0].rsplit("_", 1)[0] if q["gold_ids"] else "",
                "answerable": bool(q["answers"]),
                "contains": contains(q["answers"], answer.text),
                "kind": answer.kind,
                "confidence": answer.confidence,
                "signals": answer.signals,
                # the model's verified answer before the decision, and what an extractive answer would quote
                "generated": made.get("generated"),
                "generated_contains": contains(q["answers"], made.get("generated") or ""),
                "model_abstained": made.get("model_abstained", answer.abstained),
                "quotes": made.get("quotes", []),
                "quotes_contain": contains(q["answers"], quoted),
                "abstained": answer.abstained,
                "model_called": answer.usage.llm_calls > 0,
                "gold_cited": bool(cited & gold),
                "gold_cited_before": bool(cited_documents(before, probe.shown, answer.hits, True) & gold),
                "gold_cited_strict": bool(cited_documents(answer.text, probe.shown, answer.hits, False) & gold),
                "gold_cited_strict_before": bool(cited_documents(before, probe.shown, answer.hits, False) & gold),
                "gold_retrieved": any(Path(h.document).stem in q["gold_ids"] for h in answer.hits),
                "gold_first": bool(answer.hits) and Path(answer.hits[0].document).stem in gold,  # read as [1]
                "groundedness": answer.groundedness,
                "verify_seconds": round(probe.seconds, 4),
                "answer_before": before,
                "seconds": round(seconds, 2),
                "prompt_tokens": answer.usage.prompt_tokens,
                "question": q["question"],
                "answer": answer.text,
                # what verification saw, so its rules can be replayed offline on these generations
                "shown": sorted(probe.shown),
                "hits": [{"document": Path(h.document).stem, "document_id": h.document_id, "kind": h.kind,
                          "text": h.text, "start_char": h.start_char, "score": h.score} for h in answer.hits],
            }
        )
        flags = {k: rows[-1][k] for k in ("answerable", "contains", "abstained", "gold_retrieved", "gold_cited")}
        log.info("%d/%d %.1fs %s %s -> %s", n, len(answerable) + len(unanswerable), seconds, json.dumps(flags),
                 q["question"], answer.text)  # the flags let a cut run be tallied from its log
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    found = [r for r in ans if r["gold_retrieved"] and not r["abstained"]]
    checked = [r["groundedness"] for r in rows if r["groundedness"] is not None]
    verified = [r for r in rows if r["verify_seconds"]]
    return {
        "task": "squad",
        "mode": args.mode,
        "model": rag.settings.llm_model,
        "answerable": {
            "n": len(ans),
            "contains_answer": round(sum(r["contains"] for r in ans) / max(1, len(ans)), 3),
            "abstained": round(sum(r["abstained"] for r in ans) / max(1, len(ans)), 3),
            "gold_retrieved": round(sum(r["gold_retrieved"] for r in ans) / max(1, len(ans)), 3),
            "gold_cited": round(sum(r["gold_cited"] for r in ans) / max(1, len(ans)), 3),
        },
        "gold_retrieved_answered": {
            "n": len(found),
            "gold_first": share(found, "gold_first"),
            "gold_cited": share(found, "gold_cited"),
            "gold_cited_before_verification": share(found, "gold_cited_before"),
            "gold_cited_strict": share(found, "gold_cited_strict"),
            "gold_cited_strict_before_verification": share(found, "gold_cited_strict_before"),
            **by_correctness(found),
        },
        "groundedness_mean": round(statistics.mean(checked), 3) if checked else None,
        "groundedness_n": len(checked),
        "decisions": decisions(rows),
        "verification": {
            "answers": len(verified),
            "p50_ms": round(1000 * statistics.median([r["verify_seconds"] for r in verified]), 1) if verified else None,
            "share_of_answer_time_p50": p50([r["verify_seconds"] / r["seconds"] for r in verified]),
            "share_of_total_time": round(sum(r["verify_seconds"] for r in verified)
                                         / max(1e-9, sum(r["seconds"] for r in verified)), 4),
        },
        "unanswerable": {
            "n": len(una),
            "abstained": round(sum(r["abstained"] for r in una) / max(1, len(una)), 3),
            "abstained_by_threshold": round(sum(r["abstained"] and not r["model_called"] for r in una) / max(1, len(una)), 3),
        },
        "p50_seconds": p50([r["seconds"] for r in rows]),
        "p50_prompt_tokens": p50([r["prompt_tokens"] for r in rows if r["prompt_tokens"]]),
        "rows": rows,
    }


def bench_replay(args: argparse.Namespace) -> dict:
    """Citation verification as the code now does it, replayed on the generations a ``squad`` run recorded (its
    raw answers, passages shown and hits): no LLM call, seconds instead of half an hour, the same questions."""
    recorded = json.loads((REPO / "bench" / "results" / "answers-squad.json").read_text())["rows"]
    gold = {q["id"]: set(q["gold_ids"]) for q in read_jsonl(DATA / "squad2-dev-5" / "queries.jsonl")}
    rag = open_rag(args.work, "squad-data", args)
    settings = rag.settings
    rows = []
    for r in recorded:
        if not (r["answerable"] and r["gold_retrieved"] and not r["abstained"] and r.get("hits")):
            continue
        hits = [Hit(chunk_id=i, document_id=h["document_id"], document=h["document"], collection="default",
                    position=0, text=h["text"], score=h["score"], kind=h["kind"], start_char=h["start_char"])
                for i, h in enumerate(r["hits"], 1)]
        shown = set(r["shown"])
        checked = answering.verify_citations(r["answer_before"], hits, shown, rag.embedder,
                                             settings.citation_min_support, margin=settings.citation_switch_margin,
                                             question=r["question"])
        rows.append({"contains": r["contains"],
                     "gold_cited": bool(cited_documents(checked.text, shown, hits, True) & gold[r["id"]]),
                     "gold_cited_strict": bool(cited_documents(checked.text, shown, hits, False) & gold[r["id"]]),
                     "gold_cited_recorded": r["gold_cited"]})
    return {
        "task": "replay",
        "n": len(rows),
        "gold_cited": share(rows, "gold_cited"),
        "gold_cited_as_recorded": share(rows, "gold_cited_recorded"),
        "gold_cited_strict": share(rows, "gold_cited_strict"),
        **by_correctness(rows),
    }


def bench_latency(args: argparse.Namespace) -> dict:
    rag = open_rag(args.work, "squad-data", args)
    if not rag.documents():
        sys.exit("run `python bench/answers.py squad` first: it ingests the corpus this uses")
    questions = spread(read_jsonl(DATA / "squad2-dev-5" / "queries.jsonl"), args.questions)
    rag.query(questions[0]["question"])  # load the model outside the timings
    out: dict[str, Any] = {"task": "latency", "model": rag.settings.llm_model, "questions": len(questions)}
    for mode in ("compact", "refine", "tree_summarize"):
        ttft, total, prompt, calls, completion = [], [], [], [], []
        for q in questions:
            t0 = time.perf_counter()
            first = None
            for piece in rag.stream(q["question"], mode=mode):
                if isinstance(piece, Answer):
                    answer = piece
                elif first is None and piece.strip():
                    first = time.perf_counter() - t0
            total.append(time.perf_counter() - t0)
            ttft.append(first if first is not None else total[-1])
            prompt.append(answer.usage.prompt_tokens)
            calls.append(answer.usage.llm_calls)
            completion.append(answer.usage.completion_tokens)
        out[mode] = {
            "ttft_p50_s": p50(ttft),
            "total_p50_s": p50(total),
            "prompt_tokens_p50": p50(prompt),
            "completion_tokens_p50": p50(completion),
            "llm_calls_p50": p50(calls),
        }
        log.info("%s: %s", mode, out[mode])
    return out


_FIGURE = re.compile(r"\d[\d,]*\.?\d*")


def figures(text: str) -> set[str]:
    """Numbers of 3+ digits with separators removed: the checkable facts of a 10-Q answer."""
    found = {m.group(0).replace(",", "").rstrip(".") for m in _FIGURE.finditer(text)}
    return {f for f in found if len(f.replace(".", "")) >= 3}


def bench_sec10q(args: argparse.Namespace) -> dict:
    src = DATA / "sec10q"
    rag = open_rag(args.work, "sec10q-data", args)
    t0 = time.perf_counter()
    report = rag.ingest(src / "pdfs")
    ingest_s = time.perf_counter() - t0
    questions = spread(read_jsonl(src / "queries.jsonl"), args.questions)
    rows = []
    for q in questions:
        t0 = time.perf_counter()
        answer = rag.query(q["question"], mode=args.mode)
        seconds = time.perf_counter() - t0
        cited = {Path(s.document).stem for s in answer.sources}
        gold = set(q["gold_ids"])
        ref = figures(" ".join(q["answers"]))
        rows.append(
            {
                "id": q["id"],
                "gold_cited": bool(cited & gold),
                "figure_recall": round(len(ref & figures(answer.text)) / len(ref), 3) if ref else None,
                "abstained": answer.abstained,
                "seconds": round(seconds, 2),
                "prompt_tokens": answer.usage.prompt_tokens,
                "question": q["question"],
                "answer": answer.text,
            }
        )
        log.info("%.1fs %s -> %s", seconds, q["question"], answer.text)
    with_figures = [r["figure_recall"] for r in rows if r["figure_recall"] is not None]
    return {
        "task": "sec10q",
        "mode": args.mode,
        "model": rag.settings.llm_model,
        "ingest": {"seconds": round(ingest_s, 1), "added": report.added, "failed": report.failed},
        "n": len(rows),
        "gold_cited": round(sum(r["gold_cited"] for r in rows) / max(1, len(rows)), 3),
        "figure_recall_mean": round(statistics.mean(with_figures), 3) if with_figures else None,
        "abstained": round(sum(r["abstained"] for r in rows) / max(1, len(rows)), 3),
        "p50_seconds": p50([r["seconds"] for r in rows]),
        "p50_prompt_tokens": p50([r["prompt_tokens"] for r in rows]),
        "rows": rows,
    }


def ingest_paragraphs(rag: RAG, folder: Path, src: Path) -> dict[str, str]:
    """The corpus as one text file per paragraph (named by line number: HotpotQA ids hold slashes); returns the
    file stem → paragraph id map."""
    ids: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for n, doc in enumerate(read_jsonl(src / "corpus.jsonl")):
        ids[f"{n:05d}"] = doc["id"]
        path = folder / f"{n:05d}.txt"
        if not path.exists():
            path.write_text(f"{doc['title']}\n\n{doc['text']}", encoding="utf-8")
    rag.ingest(folder, summarize=False)
    return ids


def recall(rag: RAG, question: str, gold: list[str], ids: dict[str, str], k: int = 5) -> float:
    top = {ids[stem] for stem in doc_ranking(h.document for h in rag.retrieve(question, top_k=k))}
    return len(top & set(gold)) / len(gold)


def bench_conversations(args: argparse.Namespace) -> dict:
    sets = {"squad": (squad_conversations, DATA / "squad2-dev-5"), "hotpotqa": (hotpotqa_conversations,
                                                                                 DATA / "hotpotqa-dev-53")}
    conversations: list[tuple[RAG, dict[str, str], Conversation]] = []
    for name, (build, src) in sets.items():
        rag = open_rag(args.work, f"conv-{name}-data", args)
        ids = ingest_paragraphs(rag, args.work / f"conv-{name}-corpus", src)
        conversations += [(rag, ids, c) for c in build(src)]
    conversations = spread(conversations, args.conversations or len(conversations))
    rows = []
    for n, (rag, ids, c) in enumerate(conversations, 1):
        follow_up = c.messages[-1]["content"]
        chat = rag.conversation(c.messages)
        flagged = chat.needs_rewrite
        t0 = time.perf_counter()
        generation = None
        if flagged:
            chat.standalone, generation = rewrite(rag.llm, chat)
        rewrite_s = time.perf_counter() - t0
        fallback = f"{c.messages[0]['content']} {follow_up}"
        row = {
            "id": c.id, "source": c.source, "follow_up": follow_up, "original": c.original,
            "standalone": chat.standalone, "flagged": flagged, "rewrite_seconds": round(rewrite_s, 2),
            "model_rewrite_used": flagged and generation is not None and chat.standalone != fallback,
            "recall_single": recall(rag, c.original, c.gold_ids, ids),
            "recall_no_rewrite": recall(rag, follow_up, c.gold_ids, ids),
            "recall_previous_plus_follow_up": recall(rag, fallback, c.gold_ids, ids),
            "recall_rewrite": recall(rag, chat.standalone, c.gold_ids, ids),
        }
        if args.answer:
            answer = rag.chat(chat)
            row.update(groundedness=answer.groundedness, answer=answer.text, answer_seconds=None)
        rows.append(row)
        log.info("%d/%d %s -> %s (%.1fs)", n, len(conversations), follow_up, chat.standalone, rewrite_s)
    out: dict[str, Any] = {"task": "conversations", "model": conversations[0][0].settings.llm_model, "k": 5}
    for source in ("all", "squad", "hotpotqa"):
        part = [r for r in rows if source in ("all", r["source"])]
        summary = {key: round(statistics.mean(r[key] for r in part), 3) for key in (
            "recall_single", "recall_no_rewrite", "recall_previous_plus_follow_up", "recall_rewrite")}
        summary.update(n=len(part), flagged=share(part, "flagged"), model_rewrite_used=share(part, "model_rewrite_used"),
                       rewrite_seconds_p50=p50([r["rewrite_seconds"] for r in part if r["flagged"]]))
        summary["rewrite_vs_single"] = round(summary["recall_rewrite"] / max(1e-9, summary["recall_single"]), 3)
        grounded = [r["groundedness"] for r in part if r.get("groundedness") is not None]
        if grounded:
            summary["groundedness_mean"] = round(statistics.mean(grounded), 3)
        out[source] = summary
    out["rows"] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["squad", "replay", "latency", "sec10q", "conversations"])
    parser.add_argument("--answerable", type=int, default=100)
    parser.add_argument("--unanswerable", type=int, default=50)
    parser.add_argument("--questions", type=int, default=None, help="latency: 8, sec10q: 20")
    parser.add_argument("--conversations", type=int, default=None, help="conversations: how many (default all)")
    parser.add_argument("--answer", action="store_true", help="conversations: also answer the second turns")
    parser.add_argument("--shift", type=float, default=0.0, help="squad: 0.5 takes the held-out questions")
    parser.add_argument("--mode", default="compact", choices=["compact", "refine", "tree_summarize"])
    parser.add_argument("--model", default=None, help="RAG_LLM_MODEL for this run (default: the Settings default)")
    parser.add_argument("--runtime", choices=["auto", "llamacpp", "transformers"], default="auto",
                        help="RAG_LLM_RUNTIME for this run")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/answers-<task>.json")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work" / "answers")
    args = parser.parse_args()
    args.questions = args.questions or (8 if args.task == "latency" else 20)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "bm25s", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not DATA.exists():
        sys.exit(f"{DATA} not found")
    args.work.mkdir(parents=True, exist_ok=True)
    tasks = {"squad": bench_squad, "replay": bench_replay, "latency": bench_latency, "sec10q": bench_sec10q,
             "conversations": bench_conversations}
    result = tasks[args.task](args)
    out = args.out or REPO / "bench" / "results" / f"answers-{args.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()

"""Answer quality and latency of the whole query path (retrieve → budget → LLM → citations), default model, CPU.

    python bench/answers.py squad   [--answerable 100] [--unanswerable 50] [--mode compact]
    python bench/answers.py latency [--questions 8]
    python bench/answers.py sec10q  [--questions 20]

``squad``: ``../shared/data/squad2-dev-5`` (173 paragraphs, one file each). Answerable questions count as right when
one of the reference answers is contained in the answer (case, punctuation and articles ignored, as SQuAD's own
normalisation does); the answer's cited sources are checked against the gold paragraph. Unanswerable questions count
as right when the service abstains, whether by the retrieval threshold (the model is not called) or because the
model said the sources do not contain it. Questions are taken at an even stride over the file, so every article is
represented.

``latency``: per synthesis mode, time to the first streamed text piece (retrieval and prefill included) and to the
whole answer, prompt tokens (the largest request) and LLM calls per answer; p50 over the questions.

``sec10q``: the 20 SEC 10-Q PDFs, ingested end to end, and an even sample of the 195 questions. Reference answers
are long, so it reports what can be checked without a judge model: whether a gold filing is among the cited
sources, and the share of the reference answer's figures (numbers of 3+ digits) that the answer contains.

The ingested corpora and the converted model are kept under ``--work`` and reused. Results go to stdout and to
``bench/results/answers-<task>.json``.
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
from typing import Any

from _common import DATA, REPO, read_jsonl  # first: sets the offline env, puts the repo on sys.path

from rag import RAG
from rag.types import Answer

log = logging.getLogger("bench.answers")


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def spread(items: list[dict], n: int) -> list[dict]:
    """``n`` items at an even stride, so a sample covers the whole file (its articles / companies)."""
    if n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def open_rag(work: Path, name: str, args: argparse.Namespace) -> RAG:
    overrides: dict[str, Any] = {"models_dir": work / "models"}
    if args.model:
        overrides["llm_model"] = args.model
    return RAG(work / name, **overrides)


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def bench_squad(args: argparse.Namespace) -> dict:
    src = DATA / "squad2-dev-5"
    corpus = args.work / "squad-corpus"
    if not corpus.exists():
        corpus.mkdir(parents=True)
        for doc in read_jsonl(src / "corpus.jsonl"):
            (corpus / f"{doc['id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}", encoding="utf-8")
    rag = open_rag(args.work, "squad-data", args)
    rag.ingest(corpus)
    answerable = spread(read_jsonl(src / "queries.jsonl"), args.answerable)
    unanswerable = spread(read_jsonl(src / "queries_unanswerable.jsonl"), args.unanswerable)
    rows = []
    for n, q in enumerate(answerable + unanswerable, 1):
        t0 = time.perf_counter()
        answer = rag.query(q["question"], mode=args.mode)
        seconds = time.perf_counter() - t0
        cited = {Path(s.document).stem for s in answer.sources}
        rows.append(
            {
                "id": q["id"],
                "answerable": bool(q["answers"]),
                "contains": any(normalize(a) in normalize(answer.text) for a in q["answers"]),
                "abstained": answer.abstained,
                "model_called": answer.usage.llm_calls > 0,
                "gold_cited": bool(cited & set(q["gold_ids"])),
                "gold_retrieved": any(Path(h.document).stem in q["gold_ids"] for h in answer.hits),
                "seconds": round(seconds, 2),
                "prompt_tokens": answer.usage.prompt_tokens,
                "question": q["question"],
                "answer": answer.text,
            }
        )
        log.info("%d/%d %.1fs %s -> %s", n, len(answerable) + len(unanswerable), seconds, q["question"], answer.text)
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
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
        "unanswerable": {
            "n": len(una),
            "abstained": round(sum(r["abstained"] for r in una) / max(1, len(una)), 3),
            "abstained_by_threshold": round(sum(r["abstained"] and not r["model_called"] for r in una) / max(1, len(una)), 3),
        },
        "p50_seconds": p50([r["seconds"] for r in rows]),
        "p50_prompt_tokens": p50([r["prompt_tokens"] for r in rows if r["prompt_tokens"]]),
        "rows": rows,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["squad", "latency", "sec10q"])
    parser.add_argument("--answerable", type=int, default=100)
    parser.add_argument("--unanswerable", type=int, default=50)
    parser.add_argument("--questions", type=int, default=None, help="latency: 8, sec10q: 20")
    parser.add_argument("--mode", default="compact", choices=["compact", "refine", "tree_summarize"])
    parser.add_argument("--model", default=None, help="RAG_LLM_MODEL for this run (default: the Settings default)")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work" / "answers")
    args = parser.parse_args()
    args.questions = args.questions or (8 if args.task == "latency" else 20)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "bm25s", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not DATA.exists():
        sys.exit(f"{DATA} not found")
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"squad": bench_squad, "latency": bench_latency, "sec10q": bench_sec10q}[args.task](args)
    out = REPO / "bench" / "results" / f"answers-{args.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()

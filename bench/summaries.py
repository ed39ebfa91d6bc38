"""Document summaries: how fast they are written, and what they add to retrieval.

    python bench/summaries.py throughput [--model bundled:qwen2.5-coder-0.5b] [--docs 10] [--threads 1]
    python bench/summaries.py recall [--model bundled:smollm2-135m] [--max-input-tokens 4096] [--threads 1]
    python bench/summaries.py recall --method extractive
    python bench/summaries.py searchable [--docs 5] [--rounds 2]
    python bench/summaries.py yield [--model bundled:qwen2.5-coder-0.5b] [--rounds 7]

``throughput``: docs/minute of :class:`ingest.summaries.Summarizer` on short real documents (the first SQuAD 2.0 dev
paragraphs, one file each), after ingestion and with the model already loaded, so the number is the summary stage
alone.

``recall``: document-level recall@k on the 195 questions of ``../shared/data/sec10q`` (20 SEC 10-Q filings; 65
questions need 4 filings each), before and after the filings get summaries. The same chunk store is evaluated twice:
a copy of it receives the summaries, so the only difference is the summary entries and the routing they trigger.
Documents are ranked by their first appearance among the top hits of ``RAG.retrieve`` (hybrid), and recall@k counts
the gold filings among the first k documents. A 10-Q is about 50k tokens, dozens of LLM calls on CPU, so
``--max-input-tokens`` summarises each filing's beginning only (cover page, statements of operations); the result
records which model and cap wrote the summaries.

``searchable``: seconds until ``RAG.ingest`` returns (every chunk searchable) with summaries off and with the
defaults (on), alternating, then until the background pass has given every document a summary.

``yield``: how much longer an answer takes when a background summary call is running on the same local model
(see :func:`yield_to_queries`).

Work folders (ingested chunks, summaries, converted models) are kept under ``--work`` and reused: summaries are
resumable, so an interrupted run goes on where it stopped.

Measured on the shared 2-core CPU (other jobs running, so one torch thread: two spin-wait there), Nov 2026:
- ``throughput --model bundled:qwen2.5-coder-0.5b --docs 10 --threads 1``: 3.6 docs/min (115-word documents,
  73-word summaries, one call each).
- ``recall --model bundled:qwen2.5-coder-0.5b --max-input-tokens 2048 --threads 1``: 18 filings summarised at
  1.5 docs/min (2023 Q1/Q2 MSFT fail to parse and have no chunks in either run). Multi-doc questions, document
  recall@4 0.604 -> 0.665, @5 0.685 -> 0.727; all 195 questions @5 0.710 -> 0.755.
- ``recall --model bundled:smollm2-135m --max-input-tokens 4096 --threads 1``: no gain (@5 0.710 -> 0.712): the
  135M model copies tables or loops instead of summarising a filing, and its summaries rarely match a question.

Dec 2026 (same machine, two other jobs running; all 20 filings now parse, so the baseline moved):
- ``recall --method extractive --threads 1``: 20 filings at 58 docs/min (0.9 s each, the collection sample
  included); all 195 questions recall@4 0.731 -> 0.767, @5 0.790 -> 0.822; single-doc multi-chunk @4 0.685 ->
  0.741, single-chunk 0.816 -> 0.868; multi-doc @4 unchanged (0.669), @5 0.754 -> 0.758. Every summary names its
  company (20/20; the file name carries the ticker, and the key terms the company: "Microsoft, Office, Windows").
  Before the collection sample (plain centrality, boilerplate cover sentences): all @4 0.751.
- ``searchable --docs 5 --rounds 2 --threads 1``: searchable after 215 s with summaries off and 148 s with them on
  (medians; the difference is the machine's noise: ingestion does the same work either way, it only marks the
  documents pending); every filing had its extractive summary 5 s after ingest returned.
- ``yield --rounds 5`` (machine quiet, qwen 0.5B, 2 threads; a 32-token answer to a 700-token prompt, the summary
  call on a 2,000-token document): idle, first token 2.61 s and the answer 5.73 s (medians); during a summary call,
  2.92 s and 6.70 s: +0.31 s to the first token (about one decoder layer of the summary's prefill, the one in
  flight when the answer arrives) and +0.97 s in all. ``--plain-lock --rounds 3`` (the summary an ordinary call, as
  before the gate): first token 26.3 s vs 2.8 s idle, +23.5 s: the answer waited for the whole summary.
- ``throughput --model bundled:qwen2.5-coder-0.5b --docs 8 --concurrency 4`` vs ``--concurrency 1`` (3 Dec, quiet
  machine, one run each): 4.62 vs 3.58 docs/min (1.29x), mean batch 4.0. A batch of 4 costs ~3.3x a single
  sequence's decode step here, far from the weight-bandwidth bound; not explained yet.
- An LLM pass over the same 20 filings (qwen 0.5B, 2,048-token lead) was stopped after 4 filings: 98-306 s each
  with the machine shared three ways (1.5 docs/min, 40 s each, when it was shared two ways in Nov).

3 Dec 2026, a 2-core AMD EPYC (AVX2; decode 0.173 s/token, prefill 157 tok/s), quiet, 2 threads, chunked prefill:
- ``yield --rounds 5``: first token 4.98 s idle vs 5.68 s during a summary (+0.69 s), whole answer 10.48 vs
  11.64 s (+1.16 s, 6.7 decode steps); per round the first-token wait was +0.95, +1.20, -0.05, -0.17, +1.00 s.
  A traced run (layer entries per thread) showed the background call parked from the layer after the answer
  arrived (~70 ms per layer for a 256-token chunk) and the answer not slower than idle, while identical idle
  answers vary by over 1 s here: the benchmark's extra second is not yet attributed.
- ``yield --rounds 15``: first token 5.04 s idle vs 5.40 s during a summary (+0.36 s, 1.9 decode steps of
  0.191 s), whole answer 10.91 vs 11.56 s (+0.65 s); the paired first-token differences range -1.14..+1.76 s (5 of
  15 negative; mean +0.29 s, s.e. ~0.2 s), so the 5-round +0.69 s was mostly noise.

3 Dec 2026 (later), a 2-core Intel Xeon (AVX-512), quiet; ``recall --method extractive`` (same 20 filings; this
ingest's baseline is all @4 0.732):
- summaries competing with the chunks for the candidate lists only (as before): all @4 0.763 (+0.031), @5 0.822;
  multi-doc @4 0.673 (+0.000); 421 docs/min.
- summaries also ranked among themselves (``RAG_RANK_SUMMARIES``, rag/store/summary_vectors.py): all @4 **0.885**
  (+0.153), @5 0.928; multi-doc @4 **0.838** (+0.165), @5 0.892; single-doc multi-chunk @4 0.907, single-chunk
  0.908. Without the floor / gap that keeps far-off summaries out of their rankings: all @4 0.854; with a gap of
  0.2 / 0.3 instead of 0.25: 0.887 / 0.878; with their rankings at weight 0.5: 0.823 (no floor).
- SQuAD paragraphs (one chunk each, extractive summaries, the 500 answerable questions): document hit@5 0.958 ->
  0.976 once a summary that only repeats its one-chunk document is no longer shown; ranking those summaries too
  gave 0.942, so summaries of documents no larger than their route are left out of the ranking (hit@5 0.976).
- ``recall --model bundled:qwen2.5-coder-0.5b --max-input-tokens 2048`` (ranked): all @4 **0.909** (+0.177), @5
  0.933; multi-doc @4 **0.896** (+0.223); 16/20 name their company; 2.55 docs/min (20 in 471 s, batch 4).
- ``yield --rounds 15``: first token 2.55 s idle vs 2.71 s during a summary (+0.155 s, 1.7 decode steps of
  0.093 s), whole answer 5.39 vs 6.31 s (+0.92 s, 9.9 steps): the loss is in the answer's decoding, every step.
  ``--load cpu`` (control: busy cores that stop as the answer starts): +0.07 s whole answer, so it is not the
  machine having been busy. Traced (``--rounds 6``): the background thread sat parked at the gate in 7,402 of
  7,437 samples (the other 35: the prefill layer in flight), so it is not computing either. Per-token timing: decode
  steps 0.089 s idle vs ~0.12 s with a parked background call; with ``OMP_WAIT_POLICY=PASSIVE`` ~0.117 s in both
  cases. Cause: libgomp shortens its spin-wait ("throttled") once it manages more threads than CPUs, and the parked
  thread's OpenMP team counts, so the answer's threads sleep and wake between the ops of every step. Confirmed by
  giving the background thread a single OpenMP thread (``omp_set_num_threads(1)`` from torch's libgomp, in that
  thread only; scratch script, 3 rounds): busy steps 0.091-0.107 s against 0.088-0.101 s idle, the whole decode
  +0.04 to +0.25 s instead of +0.77 s. Its price: a background call (2,000-token prompt, 64 new tokens) took 25.2 s
  instead of 14.1 s. Not adopted yet; the fix that costs neither is one model thread for answers and summaries.

3 Dec 2026 (night), a 2-core AMD EPYC (AVX2; decode ~0.17 s/token), quiet; one model thread runs every call on the
weights (rag/models/gate.py), so a parked summary leaves no OpenMP team of its own:
- ``yield --rounds 15``, before (HEAD 6b7e20e): first token 4.00 s idle vs 4.64 s during a summary (+0.64 s, 3.8
  decode steps of 0.168 s), whole answer 9.24 vs 9.90 s (+0.66 s).
- after (d524bfb): first token 4.56 vs 4.67 s (**+0.11 s, 0.64 of a decode step of 0.178 s**), whole answer 10.31
  vs 10.15 s (-0.16 s: no loss in decoding). The idle figures of the two runs differ by ~10%; three alternating
  processes of 5 idle answers each (old / new code, same machine) gave medians 9.44 / 10.35, 10.53 / 10.62,
  11.32 / 9.46 s: the drift is the machine's, not the thread's.

7 Dec 2026, a 2-core AMD EPYC, quiet, llama.cpp, the summary rule of issue 26 on (an LLM summary is kept only when
every sentence is supported and it names the document's most distinctive name):
``RAG_SUMMARIZE=off python bench/summaries.py recall --model bundled:qwen2.5-coder-0.5b --max-input-tokens 2048
--runtime llamacpp``: 20 filings in 776 s (1.55 docs/min, batch 4, mean batch 2.2); 5 LLM summaries kept, 15
rejected (the extractive one shown instead): 8 for sentences the filing does not support ("This document is a
quarterly report for Microsoft Corporation …"), 7 for a missing name, of which only one ("Intel") is the company:
the others are "Company" (2), "October", "March", "Participant", "Awardee" — key terms weighted by how
few sampled *chunks* hold them, which favours cover-page and exhibit words over the company's name (a next step:
weight by documents). Shown summaries name their company 20/20 (16/20 before the rule). Routing, this ingest's
baseline all @4 0.746: with the summaries all @4 **0.895** (+0.149), @5 0.924; multi-doc @4 0.823 (+0.123),
single-doc multi-chunk 0.926, single-chunk 0.934 (before the rule, 3 Dec on the Xeon: all @4 0.909, multi-doc 0.896
over a 0.732 baseline; extractive only: 0.885 / 0.838).
- ``throughput --model bundled:qwen2.5-coder-0.5b --docs 10 --runtime llamacpp`` vs ``--runtime transformers``
  (same machine, one run each, batch 4, mean batch 3.3): **8.21 vs 3.27 docs/min (2.51x)**; kept / rejected by the
  rule 2 / 8 and 3 / 7 (short SQuAD paragraphs: "it does not name French", unsupported "This document is a text
  about …" sentences).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, doc_ranking, read_jsonl  # first: sets the offline env, puts the repo on sys.path

from ingest.summaries import Summarizer
from rag import RAG
from rag.types import Cancelled

log = logging.getLogger("bench.summaries")

KS = (1, 2, 4, 5, 10)
HITS = 40
"""Hits retrieved per question before collapsing to documents: enough to rank 10 of the 20 filings."""


def data_dir(work: Path, name: str) -> Path:
    """A data directory under ``work`` whose converted models are shared with the others (converted once)."""
    path = work / name
    path.mkdir(parents=True, exist_ok=True)
    models = work / "models"
    models.mkdir(exist_ok=True)
    link = path / "models"
    if not link.exists():
        link.symlink_to(models, target_is_directory=True)
    return path


def summarize_timed(
    rag: RAG, max_input_tokens: int | None, method: str = "llm", concurrency: int | None = None
) -> dict[str, Any]:
    """Run the summary stage with the model already loaded; returns its counts and rate. ``concurrency``: documents
    in flight (default: the service's plan for this hardware; a local model decodes them together)."""
    llm = rag.llm if method == "llm" else None  # loaded (and converted on first use) before the clock starts
    rag.embedder.embed(["warm-up"])
    done_states = ("done", "rejected") if method == "llm" else ("extractive",)  # rejected: the LLM's was not kept
    before = {d.id for d in rag.documents() if d.summary_state in done_states}
    concurrency = concurrency or rag.summaries.plan.concurrency
    summarizer = Summarizer(
        rag.store, rag.embedder, llm, rag.settings, max_input_tokens=max_input_tokens, concurrency=concurrency
    )
    batches = getattr(llm, "_background_batches", None)
    before_batches = (batches.batches, batches.calls) if batches else (0, 0)
    started = time.perf_counter()
    written, failed = summarizer.run(
        "default", method=method,  # type: ignore[arg-type]
        progress=lambda done, total, path: log.info("summary %d/%d %s", done, total, Path(path).name),
    )
    elapsed = time.perf_counter() - started
    docs = [d for d in rag.documents() if d.summary_state in done_states]
    return {
        "runtime": getattr(llm, "runtime", None),
        "states": {state: sum(d.summary_state == state for d in docs) for state in done_states},
        "rejected_because": [d.summary_error for d in docs if d.summary_state == "rejected"][:5],
        "method": method,
        "model": llm.name if llm else rag.embedder.name,
        "context_window": llm.context_window if llm else None,
        "max_input_tokens": max_input_tokens,
        "concurrency": concurrency if method == "llm" else 1,
        "mean_batch": round((batches.calls - before_batches[1]) / max(1, batches.batches - before_batches[0]), 2)
        if batches else None,
        "written": written,
        "failed": failed,
        "already_done": len(before),
        "seconds": round(elapsed, 1),
        "docs_per_minute": round(60 * written / elapsed, 2) if written else None,
        "mean_summary_words": round(statistics.mean(len(d.summary.split()) for d in docs), 1) if docs else None,
        "example": {"document": Path(docs[0].path).name, "summary": docs[0].summary} if docs else None,
    }


def runtime(args: argparse.Namespace) -> dict[str, Any]:
    """Settings for ``--runtime`` and ``--threads`` (llama.cpp's threads; torch's are set in main)."""
    return {"llm_runtime": args.runtime, **({"llm_threads": args.threads} if args.threads else {})}


# --- throughput --------------------------------------------------------------------------------------
def throughput(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work)
    folder = work / f"squad-{args.docs}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (DATA / "squad2-dev-5" / "corpus.jsonl").read_text().splitlines()[: args.docs]
    for line in lines:
        doc = json.loads(line)
        (folder / f"{doc['id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}")
    slug = args.model.replace(":", "_").replace("/", "_")
    target = data_dir(work, f"throughput-{slug}-{args.docs}")
    shutil.rmtree(target / "indexes", ignore_errors=True)
    (target / "rag.db").unlink(missing_ok=True)  # a fresh store: every document needs its summary
    rag = RAG(target, llm_model=args.model, summary_max_new_tokens=args.max_new_tokens,
              summarize=False, **runtime(args))  # the stage is timed alone: no background pass beside it
    rag.ingest(folder)
    words = [len(json.loads(line)["text"].split()) for line in lines]
    result = summarize_timed(rag, None, concurrency=args.concurrency)
    result.update(documents=len(lines), mean_document_words=round(statistics.mean(words), 1))
    return result


# --- recall ------------------------------------------------------------------------------------------
def evaluate(rag: RAG, queries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean document recall@k per question type (and overall), and how often a summary is among the top 10."""
    per_type: dict[str, dict[int, list[float]]] = {}
    summary_in_top10 = 0
    for q in queries:
        hits = rag.retrieve(q["question"], top_k=HITS)
        summary_in_top10 += any(h.kind == "summary" for h in hits[:10])
        ranking = doc_ranking(h.document for h in hits)
        gold = set(q["gold_ids"])
        for group in (q["question_type"], "all"):
            for k in KS:
                per_type.setdefault(group, {}).setdefault(k, []).append(len(gold & set(ranking[:k])) / len(gold))
    return {
        "recall": {
            group: {f"@{k}": round(statistics.mean(v), 4) for k, v in by_k.items()} | {"questions": len(by_k[KS[0]])}
            for group, by_k in sorted(per_type.items())
        },
        "questions_with_a_summary_in_top10": summary_in_top10,
    }


def names_subject(summaries: dict[str, str | None]) -> str:
    """How many summaries name their filing's company (ticker, or the company's name as the filing's cover spells
    it): a summary that does not cannot route a question about that company."""
    names = {"AAPL": "apple", "AMZN": "amazon", "INTC": "intel", "MSFT": "microsoft", "NVDA": "nvidia"}
    hits = 0
    for stem, text in summaries.items():
        ticker = next((t for t in names if t in stem.upper()), None)
        low = (text or "").lower()
        hits += ticker is not None and (ticker.lower() in low or names[ticker] in low)
    return f"{hits}/{len(summaries)}"


def recall(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work)
    queries = read_jsonl(DATA / "sec10q" / "queries.jsonl")
    chunks_dir = data_dir(work, "sec10q-chunks")
    base = RAG(chunks_dir, summarize=False)
    if len(base.documents()) < 20:
        report = base.ingest(DATA / "sec10q" / "pdfs")
        log.info("ingested the filings: %s in %.0fs", report.counts(), report.elapsed_s)
    without = evaluate(base, queries)
    base.close()

    slug = "extractive" if args.method == "extractive" else args.model.replace(":", "_").replace("/", "_")
    summaries_dir = work / f"sec10q-summaries-{slug}-{args.max_input_tokens}"
    if not summaries_dir.exists():
        shutil.copytree(chunks_dir, summaries_dir, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    rag = RAG(summaries_dir, llm_model=args.model, summary_max_new_tokens=args.max_new_tokens, summarize=False,
              **runtime(args))
    stage = summarize_timed(rag, args.max_input_tokens, args.method, args.concurrency)
    summaries = {Path(d.path).stem: d.summary for d in rag.documents()}
    with_summaries = evaluate(rag, queries)
    return {
        "summaries": stage,
        "summaries_naming_their_company": names_subject(summaries),
        "without_summaries": without,
        "with_summaries": with_summaries,
        "summary_texts": summaries,
    }


# --- searchable --------------------------------------------------------------------------------------
def searchable(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds until every chunk of ``--docs`` sec10q filings is searchable (``RAG.ingest`` returned), with
    summaries off and with the default settings (on), alternating; then, for the default, seconds until the
    background pass has given every document a summary (extractive first on a CPU) and how many it covers."""
    work = Path(args.work)
    filings = sorted((DATA / "sec10q" / "pdfs").glob("*.pdf"))[: args.docs]
    folder = work / f"sec10q-{len(filings)}"
    folder.mkdir(parents=True, exist_ok=True)
    for pdf in filings:
        if not (folder / pdf.name).exists():
            shutil.copy(pdf, folder / pdf.name)  # a symlink would be skipped: ingestion does not follow them
    rows: dict[str, list[float]] = {"off": [], "on": [], "covered_after_s": []}
    coverage = []
    for n in range(args.rounds):
        for mode in ("off", "on"):
            target = data_dir(work, f"searchable-{mode}")
            shutil.rmtree(target / "indexes", ignore_errors=True)
            (target / "rag.db").unlink(missing_ok=True)
            rag = RAG(target, summarize=mode == "on")
            rag.embedder.embed(["warm-up"])  # the model load is not ingestion
            started = time.perf_counter()
            report = rag.ingest(folder)
            rows[mode].append(time.perf_counter() - started)
            if mode == "on":
                states = rag.wait_for_summaries(timeout=3600)
                rows["covered_after_s"].append(time.perf_counter() - started)
                covered = sum(n for state, n in states.items() if state in ("extractive", "done"))
                coverage.append(covered / max(1, sum(states.values())))
            rag.close()
            log.info("round %d %s: searchable after %.1fs (%s)", n + 1, mode, rows[mode][-1], report.counts())
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "filings": len(filings),
        "rounds": args.rounds,
        "median_searchable_s": {"summaries_off": round(med["off"], 1), "summaries_on": round(med["on"], 1)},
        "ratio_on_vs_off": round(med["on"] / med["off"], 3),
        "median_all_summarised_after_s": round(med["covered_after_s"], 1),
        "documents_with_a_summary": coverage,
        "per_round": {k: [round(x, 1) for x in v] for k, v in rows.items()},
    }


# --- yield -------------------------------------------------------------------------------------------
def _answer_timed(llm: Any, messages: list[dict[str, str]], max_new_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first piece, seconds in all, tokens) of one streamed answer."""
    started = time.perf_counter()
    stream = llm.stream(messages, max_new_tokens=max_new_tokens)
    first = None
    for _ in stream:
        first = first or time.perf_counter() - started
    total = time.perf_counter() - started
    return first or total, total, stream.generation.completion_tokens


def yield_to_queries(args: argparse.Namespace) -> dict[str, Any]:
    """How long an answer waits because a background summary call is running on the same local model.

    Each round times one streamed answer with the model idle, then the same answer while a summary call (a
    2,000-token document, 160 new tokens) runs in the background, started a random 0-3 s earlier so the answer lands
    in its prefill or its decoding. The model thread runs the answer at the background call's next decoder layer, so
    the answer's extra time is what that layer costs."""
    import random
    import threading

    rag = RAG(data_dir(Path(args.work), "yield"), llm_model=args.model, **runtime(args))
    llm = rag.llm
    corpus = [json.loads(line) for line in (DATA / "squad2-dev-5" / "corpus.jsonl").read_text().splitlines()]
    context = "\n\n".join(doc["text"] for doc in corpus[:6])
    question = [{"role": "user", "content": f"{llm.truncate(context, 700)}\n\nQuestion: Who were the Normans?"}]
    essay = (DATA / "paul-graham" / "paul_graham_essay.txt").read_text()
    document = [{"role": "user", "content": f"Summarize this document.\n\n{llm.truncate(essay, 2000)}"}]
    stop = threading.Event()

    def cpu_load() -> None:
        # --load cpu: no model call in the background, only the cores kept busy until the answer starts (the stop
        # is set just before it): what an answer loses to a machine that was busy, whatever ran there.
        a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
        while not stop.is_set():
            a = np.tanh(a @ a)

    def summaries() -> None:
        # --plain-lock: the summary call is an ordinary call, as before the gate: the answer queues behind it.
        with nullcontext() if args.plain_lock else llm.background(stop.is_set):
            while not stop.is_set():
                try:
                    llm.generate(document, max_new_tokens=160)
                except Cancelled:
                    return

    _answer_timed(llm, question, args.answer_tokens)  # warm-up
    rows: dict[str, list[float]] = {k: [] for k in ("idle_ttft", "idle_total", "busy_ttft", "busy_total", "step")}
    rng = random.Random(0)
    for n in range(args.rounds):
        first, total, tokens = _answer_timed(llm, question, args.answer_tokens)
        rows["idle_ttft"].append(first)
        rows["idle_total"].append(total)
        rows["step"].append((total - first) / max(tokens - 1, 1))
        stop.clear()
        worker = threading.Thread(target=cpu_load if args.load == "cpu" else summaries)
        worker.start()
        time.sleep(rng.uniform(0, 3))
        if args.load == "cpu":
            stop.set()
        first, total, _ = _answer_timed(llm, question, args.answer_tokens)
        rows["busy_ttft"].append(first)
        rows["busy_total"].append(total)
        stop.set()
        worker.join()
        log.info("round %d: idle %.2fs, during a summary %.2fs", n + 1, rows["idle_total"][-1], total)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "model": llm.name,
        "plain_lock": args.plain_lock,
        "load": args.load,
        "rounds": args.rounds,
        "answer_tokens": args.answer_tokens,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "added_wait_ttft_s": round(med["busy_ttft"] - med["idle_ttft"], 3),
        "added_wait_total_s": round(med["busy_total"] - med["idle_total"], 3),
        "added_wait_in_decode_steps": round((med["busy_total"] - med["idle_total"]) / med["step"], 2),
        "per_round": {k: [round(x, 3) for x in v] for k, v in rows.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["throughput", "recall", "yield", "searchable"])
    parser.add_argument("--model", default=None, help="LLM (default: qwen for throughput, smollm2 for recall)")
    parser.add_argument("--docs", type=int, default=10, help="throughput / searchable: documents to use")
    parser.add_argument("--max-input-tokens", type=int, default=4096, help="recall: tokens of each filing read")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="RAG_SUMMARY_MAX_NEW_TOKENS")
    parser.add_argument("--method", choices=["llm", "extractive"], default="llm", help="recall: summary kind")
    parser.add_argument("--rounds", type=int, default=7, help="yield / searchable: rounds")
    parser.add_argument("--answer-tokens", type=int, default=32, help="yield: tokens of each timed answer")
    parser.add_argument("--plain-lock", action="store_true", help="yield: summaries as ordinary calls (no gate)")
    parser.add_argument("--load", choices=["llm", "cpu"], default="llm", help="yield: what runs in the background "
                        "(cpu: matrix products that stop as the answer starts, a control for the machine's own cost)")
    parser.add_argument("--concurrency", type=int, default=None, help="throughput / recall: summaries in flight "
                        "(default: the service's plan, RAG_LLM_BACKGROUND_BATCH)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op and llama.cpp threads")
    parser.add_argument("--runtime", choices=["auto", "llamacpp", "transformers"], default="auto",
                        help="RAG_LLM_RUNTIME: what runs the local model")
    parser.add_argument("--work", default="/tmp/rag-bench-summaries")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args()
    args.model = args.model or ("bundled:smollm2-135m" if args.what == "recall" else "bundled:qwen2.5-coder-0.5b")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    commands = {"throughput": throughput, "recall": recall, "yield": yield_to_queries, "searchable": searchable}
    result = commands[args.what](args)
    result["torch_threads"] = torch.get_num_threads()
    result["command"] = " ".join(["python", "bench/summaries.py", *sys.argv[1:]])
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

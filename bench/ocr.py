"""OCR: the two engines whose models ship in a package, measured on pages whose text we know (issue 28).

The set: the shared SQuAD 2.0 dev paragraphs, laid out as A4 pages of 11 pt DejaVu Serif prose (1-inch margins,
about 3,500 characters a page) and rendered with PIL
- at 300 dpi, clean;
- at 150 dpi, degraded: Gaussian blur (radius 0.8 px), 2 degree rotation, Gaussian noise (sigma 12 grey levels),
  JPEG at quality 50 — a cheap office scan or a fax;
- as a scanned PDF (the 300 dpi pages wrapped as PDF pages, no text layer), read through the PDF reader.
Character error rate = edit distance / reference length, on whitespace-collapsed text, summed over the pages.

  python bench/ocr.py engines [--pages 4] [--runs 3]   accuracy and pages/s of each engine installed
  python bench/ocr.py retrieval [--engine auto]         evidence recall@5: SQuAD paragraphs as images vs as text
  python bench/ocr.py mixed                             shared mixed-docs: ingest all, ask about each scan
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, doc_ranking, read_jsonl  # first: sets the offline env, puts the repo on sys.path
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ingest.readers import Work, read_document
from ingest.readers.base import DEFAULT_OCR
from ingest.readers.ocr import read_pages

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
SQUAD = DATA / "squad2-dev-5"
A4_INCHES = (8.27, 11.69)


def layout(text: str, dpi: int) -> tuple[Image.Image, str]:
    """``text`` set as an A4 page at ``dpi``; returns the page and the text that fitted on it."""
    width, height = int(A4_INCHES[0] * dpi), int(A4_INCHES[1] * dpi)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(FONT, round(11 * dpi / 72))
    leading, margin = round(11 * dpi / 72 * 1.4), dpi
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width - 2 * margin:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines.append(line)
    fitted = lines[: (height - 2 * margin) // leading]
    for i, words in enumerate(fitted):
        draw.text((margin, margin + i * leading), words, fill=0, font=font)
    return page, " ".join(fitted)


def degrade(page: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    page = page.filter(ImageFilter.GaussianBlur(0.8)).rotate(2, resample=Image.BICUBIC, expand=True, fillcolor=255)
    noisy = np.asarray(page, dtype=np.float32) + rng.normal(0, 12, (page.height, page.width))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=50)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy row per character of ``a`` (insertions by a running minimum)."""
    codes = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    ramp = np.arange(len(b) + 1)
    row = ramp.copy()
    for i, char in enumerate(a, 1):
        new = np.empty_like(row)
        new[0] = i
        new[1:] = np.minimum(row[1:] + 1, row[:-1] + (codes != ord(char)))
        row = np.minimum.accumulate(new - ramp) + ramp
    return int(row[-1])


def collapse(text: str) -> str:
    return " ".join(text.split())


def pages_of_prose(count: int) -> list[str]:
    paragraphs = [doc["text"] for doc in read_jsonl(SQUAD / "corpus.jsonl")]
    return [" ".join(paragraphs[i * 6 : i * 6 + 6]) for i in range(count)]


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def engines(args: argparse.Namespace) -> None:
    texts = pages_of_prose(args.pages)
    sets: dict[str, list[tuple[Image.Image, str]]] = {"300 dpi clean": [], "150 dpi degraded": [], "150 dpi clean": []}
    for n, text in enumerate(texts):
        clean300, fitted = layout(text, 300)
        clean150, fitted150 = layout(text, 150)
        sets["300 dpi clean"].append((clean300, fitted))
        sets["150 dpi clean"].append((clean150, fitted150))
        sets["150 dpi degraded"].append((degrade(clean150, n), fitted150))
    available = ["rapidocr"] + (["tesseract"] if shutil.which("tesseract") else [])
    results = {}
    for engine in available:
        options = dataclasses.replace(DEFAULT_OCR, mode=engine, page_timeout_s=600, batch_pages=args.pages)
        work = Work(10**9, 10**9, 10**6, None, ocr=options)
        read_pages(lambda n: sets["150 dpi clean"][0][0], [1], work)  # load the engine before timing
        row: dict[str, object] = {}
        for name, pages in sets.items():
            walls, cpus, errors, chars = [], [], 0, 0
            for run in range(args.runs):
                wall, cpu = time.perf_counter(), cpu_seconds()
                result = read_pages(lambda n, pages=pages: pages[n - 1][0], range(1, len(pages) + 1), work)
                walls.append(time.perf_counter() - wall)
                cpus.append(cpu_seconds() - cpu)
                if run == 0:
                    for n, (_, truth) in enumerate(pages, 1):
                        errors += edit_distance(collapse(result.pages[n].text), truth)
                        chars += len(truth)
            row[name] = {"cer": round(errors / chars, 4), "pages_per_s": round(len(pages) / statistics.median(walls), 2),
                         "cpu_s_per_page": round(statistics.median(cpus) / len(pages), 2)}
            print(engine, name, row[name], flush=True)
        with tempfile.TemporaryDirectory() as tmp:  # the 300 dpi pages as a scanned PDF, through the PDF reader
            pdf = Path(tmp) / "scan.pdf"
            first, *rest = [page for page, _ in sets["300 dpi clean"]]
            first.save(pdf, "PDF", resolution=300, save_all=True, append_images=rest)
            started = time.perf_counter()
            doc = read_document(pdf, 10**9, work=Work(10**9, 10**9, 10**6, None, ocr=options))
            elapsed = time.perf_counter() - started
            truth = " ".join(t for _, t in sets["300 dpi clean"])
            row["scanned PDF (300 dpi pages, rendered at RAG_OCR_DPI)"] = {
                "cer": round(edit_distance(collapse(doc.text), truth) / len(truth), 4),
                "pages_per_s": round((1 + len(rest)) / elapsed, 2)}
            print(engine, "scanned PDF", row["scanned PDF (300 dpi pages, rendered at RAG_OCR_DPI)"], flush=True)
        results[engine] = row
    print(json.dumps(results, indent=1))


def retrieval(args: argparse.Namespace) -> None:
    """Every SQuAD paragraph as a 150 dpi degraded image (cropped below its last line) and as a text file, each
    ingested by the real pipeline into its own store; recall@5 of the gold paragraph over the answerable questions."""
    from rag import RAG

    corpus = read_jsonl(SQUAD / "corpus.jsonl")
    questions = read_jsonl(SQUAD / "queries.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "text").mkdir()
        (root / "images").mkdir()
        for n, doc in enumerate(corpus):
            (root / "text" / f"{doc['id']}.txt").write_text(doc["text"])
            page, fitted = layout(doc["text"], 150)
            assert fitted == collapse(doc["text"]), doc["id"]  # every paragraph fits one page
            ink = np.where(np.asarray(page).min(axis=1) < 128)[0]
            degrade(page.crop((0, 0, page.width, min(page.height, int(ink[-1]) + 150))), n).save(
                root / "images" / f"{doc['id']}.png")
        recalls = {}
        for kind in ("text", "images"):
            rag = RAG(root / f"data-{kind}", ocr=args.engine, summarize=False)
            started = time.perf_counter()
            report = rag.ingest(root / kind)
            print(kind, "ingest", report.counts(), f"{time.perf_counter() - started:.0f} s", flush=True)
            found = sum(bool(set(doc_ranking(h.document for h in rag.retrieve(q["question"], top_k=5)))
                             & set(q["gold_ids"])) for q in questions)
            recalls[kind] = round(found / len(questions), 4)
            rag.close()
        print(json.dumps({"questions": len(questions), "recall@5": recalls,
                          "difference": round(recalls["text"] - recalls["images"], 4)}))


SCAN_QUESTIONS = {
    "private_gpt__tests_components_readers_files_file_scanned.pdf":
        "In facsimile, what is a photocell caused to perform over the subject copy?",
    "haystack__test_test_files_pdf_non_text_searchable.pdf":
        "Why can the text of a non-text-searchable PDF not be selected?",
}


def mixed(args: argparse.Namespace) -> None:
    """Every file of the shared mixed-docs set ingested; a question about each scanned PDF answered from it."""
    from rag import RAG

    folder = DATA / "mixed-docs"
    with tempfile.TemporaryDirectory() as tmp:
        rag = RAG(Path(tmp) / "data", ocr=args.engine, summarize=False)
        report = rag.ingest(folder)
        print(json.dumps({"files": len(report.files), "counts": report.counts(),
                          "failures": [(Path(f.path).name, f.error) for f in report.failures]}), flush=True)
        ocrd = {Path(d.path).name: (d.ocr_pages, d.pages) for d in rag.documents() if d.ocr_pages}
        print("OCR'd documents (pages OCR'd, pages):", ocrd)
        for name, question in SCAN_QUESTIONS.items():
            answer = rag.query(question)
            cited = [(Path(s.document).name, s.page) for s in answer.sources]
            print(json.dumps({"question": question, "kind": answer.kind, "answer": answer.text,
                              "cited": cited, "from the scan": any(doc == name for doc, _ in cited)}), flush=True)
        rag.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    part = sub.add_parser("engines")
    part.add_argument("--pages", type=int, default=4)
    part.add_argument("--runs", type=int, default=3)
    for name in ("retrieval", "mixed"):
        part = sub.add_parser(name)
        part.add_argument("--engine", default="auto", choices=["auto", "tesseract", "rapidocr"])
    args = parser.parse_args()
    {"engines": engines, "retrieval": retrieval, "mixed": mixed}[args.part](args)


if __name__ == "__main__":
    main()

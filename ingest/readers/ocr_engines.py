"""The two OCR engines whose models ship in a package, behind one small interface, and the choice between them.

- **Tesseract** (Debian's ``tesseract-ocr``, run as a subprocess): about 1.6 CPU seconds for an A4 page of prose at
  150 dpi, one process per page of a batch so every core works; a per-page subprocess timeout is a real limit.
- **RapidOCR** (``rapidocr``: PP-OCRv6 small detection and recognition models inside its wheel, on ONNX Runtime):
  about 5x the CPU of Tesseract for the same page and the same accuracy on prose (bench/ocr.py), but
  ``pip install`` is all it needs, so a pip-only install still reads scans.

``RAG_OCR=auto`` takes Tesseract where it is installed and RapidOCR otherwise. Models are always loaded from the
files inside the package (never the library's download-on-first-use path), so OCR works offline.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ingest.readers.base import OcrOptions, ReadError, log


@dataclass(frozen=True)
class Line:
    """One line of text as an engine read it."""

    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the page's width and height
    paragraph: int  # lines of one paragraph share the number (in reading order)


class PageTimeout(Exception):
    """Page ``index`` of a batch took longer than the per-page limit."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class Engine(Protocol):
    name: str

    def read(self, pages: Sequence[Image.Image], timeout_s: float) -> list[list[Line]]:
        """The lines of each page (grayscale images); raises PageTimeout for a page over ``timeout_s``."""
        ...


class Tesseract:
    """Tesseract 4/5 (LSTM) as a subprocess: one per page, each limited to one thread (its OpenMP threads only
    contend with each other on a page: 6 CPU seconds a page with 4 threads, 1.6 with one)."""

    def __init__(self, binary: str, lang: str, version: str) -> None:
        self.binary, self.lang = binary, lang
        self.name = f"tesseract {version}"

    def read(self, pages: Sequence[Image.Image], timeout_s: float) -> list[list[Line]]:
        workers = max(1, min(len(pages), os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="tesseract") as pool:
            futures = [pool.submit(self._page, page, timeout_s) for page in pages]
            results = []
            for index, future in enumerate(futures):
                try:
                    results.append(future.result())
                except subprocess.TimeoutExpired:
                    for other in futures:
                        other.cancel()
                    raise PageTimeout(index) from None
        return results

    def _page(self, page: Image.Image, timeout_s: float) -> list[Line]:
        buffer = io.BytesIO()
        page.save(buffer, "PPM")  # uncompressed (PGM for a grayscale page): no PNG encoding on the way in
        done = subprocess.run(
            [self.binary, "stdin", "stdout", "-l", self.lang, "--psm", "3", "tsv"], input=buffer.getvalue(),
            capture_output=True, timeout=timeout_s, env={**os.environ, "OMP_THREAD_LIMIT": "1"}, check=False,
        )
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ReadError(f"tesseract failed: {message[-1] if message else f'exit status {done.returncode}'}")
        return _tsv_lines(done.stdout.decode("utf-8", "replace"), page.width, page.height)


def _tsv_lines(tsv: str, width: int, height: int) -> list[Line]:
    """Tesseract's TSV (one row per word, numbered by block, paragraph and line) as lines with their boxes."""
    words: dict[tuple[int, int, int], list[tuple[str, int, int, int, int]]] = {}
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        text = (row.get("text") or "").strip()
        if row.get("level") != "5" or not text:
            continue
        key = (int(row["block_num"]), int(row["par_num"]), int(row["line_num"]))
        left, top = int(row["left"]), int(row["top"])
        words.setdefault(key, []).append((text, left, top, left + int(row["width"]), top + int(row["height"])))
    paragraphs = {key[:2]: n for n, key in enumerate(dict.fromkeys(k[:2] for k in words))}
    return [
        Line(" ".join(w[0] for w in line), _fraction(min(w[1] for w in line), min(w[2] for w in line),
                                                       max(w[3] for w in line), max(w[4] for w in line), width, height),
             paragraphs[key[:2]])
        for key, line in words.items()
    ]


class RapidOcr:
    """RapidOCR's detection and recognition, called step by step so a page's time limit is checked between
    recognition batches (a noisy page can yield a thousand boxes). No angle classifier: pages are upright
    (a 2-degree skew is read as it is, bench/ocr.py), and it would cost a third more time."""

    DET_MAX_SIDE = 960
    """Detection runs on the page scaled to this longest side: 3x faster than the library's default (the page's
    own size, at least 736 px on the shorter side) and no loss on prose from 150 to 300 dpi (bench/ocr.py)."""
    REC_BATCH = 12
    MIN_SCORE = 0.5  # the library's default: lines recognised with less confidence are dropped

    def __init__(self) -> None:
        from importlib.metadata import version

        import rapidocr
        from rapidocr import RapidOCR

        models = Path(rapidocr.__file__).parent / "models"
        self._ocr = RapidOCR(params={
            "Global.log_level": "error", "Global.use_cls": False,
            "Det.model_path": str(models / "PP-OCRv6_det_small.onnx"),
            "Rec.model_path": str(models / "PP-OCRv6_rec_small.onnx"),
            "Det.limit_side_len": self.DET_MAX_SIDE, "Det.limit_type": "max",
            "Rec.rec_batch_num": self.REC_BATCH,
        })
        self.name = f"rapidocr {version('rapidocr')} (PP-OCRv6 small)"

    def read(self, pages: Sequence[Image.Image], timeout_s: float) -> list[list[Line]]:
        results = []
        for index, page in enumerate(pages):
            deadline = time.monotonic() + timeout_s
            results.append(self._page(page, deadline, index))
        return results

    def _page(self, page: Image.Image, deadline: float, index: int) -> list[Line]:
        from rapidocr.main import RapidOCRError
        from rapidocr.utils.process_img import map_boxes_to_original

        image = np.asarray(page.convert("RGB"))
        scaled, record = self._ocr.preprocess_img(image)
        try:
            crops, det = self._ocr.detect_and_crop(scaled, record)
        except RapidOCRError:  # "The text detection result is empty"
            return []
        boxes = map_boxes_to_original(det.boxes, record, image.shape[0], image.shape[1])
        texts: list[tuple[str, float]] = []
        for start in range(0, len(crops), self.REC_BATCH):
            if time.monotonic() > deadline:
                raise PageTimeout(index)
            rec = self._ocr.recognize_txt(crops[start : start + self.REC_BATCH])
            texts.extend(zip(rec.txts, rec.scores))
        if time.monotonic() > deadline:
            raise PageTimeout(index)
        lines = [
            (text.strip(), _fraction(float(box[:, 0].min()), float(box[:, 1].min()), float(box[:, 0].max()),
                                     float(box[:, 1].max()), page.width, page.height))
            for (text, score), box in zip(texts, boxes) if score >= self.MIN_SCORE and text.strip()
        ]
        return _paragraphs(lines)


def _paragraphs(lines: list[tuple[str, tuple[float, float, float, float]]]) -> list[Line]:
    """Lines in reading order (the detector's order: top to bottom) grouped into paragraphs (RapidOCR reports lines
    only): a vertical gap of over half the median line height (a blank line), or a line indented from the one before
    by more than a line height (a first-line indent), begins a new one."""
    if not lines:
        return []
    heights = sorted(box[3] - box[1] for _, box in lines)
    line_height = heights[len(heights) // 2]
    out: list[Line] = []
    paragraph = 0
    for i, (text, box) in enumerate(lines):
        if i:
            before = lines[i - 1][1]
            gap = box[1] - before[3]
            if gap > line_height / 2 or box[0] - before[0] > line_height:
                paragraph += 1
        out.append(Line(text, box, paragraph))
    return out


def _fraction(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> tuple[float, float, float, float]:
    return (round(x0 / width, 4), round(y0 / height, 4), round(x1 / width, 4), round(y1 / height, 4))


_engine_lock = threading.Lock()


def engine_for(options: OcrOptions) -> Engine:
    """The engine ``RAG_OCR`` names (loaded once per process), or ReadError with the one-line reason there is
    none: OCR turned off, or the engine named is not installed."""
    with _engine_lock:
        return _engine(options.mode, options.lang)


@functools.cache
def _engine(mode: str, lang: str) -> Engine:
    if mode == "off":
        raise ReadError("OCR is off (RAG_OCR=off)")
    if mode in ("auto", "tesseract"):
        tesseract = _tesseract(lang, required=mode == "tesseract")
        if tesseract is not None:
            log.info("OCR engine: %s (%s)", tesseract.name, lang)
            return tesseract
    try:
        engine = RapidOcr()
    except ImportError as exc:
        raise ReadError(f"no OCR engine is installed (pip install rapidocr, or apt-get install tesseract-ocr): {exc}") from exc
    log.info("OCR engine: %s", engine.name)
    return engine


def _tesseract(lang: str, required: bool) -> Tesseract | None:
    """Tesseract when its binary and every language of ``lang`` are installed; else None (``auto`` moves on to
    RapidOCR) or, when Tesseract was asked for by name, ReadError saying what to install."""
    binary = shutil.which("tesseract")
    if binary is None:
        if required:
            raise ReadError("RAG_OCR=tesseract but tesseract is not installed (apt-get install tesseract-ocr)")
        return None
    listed = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=30, check=False)
    installed = set(listed.stdout.split())
    missing = [code for code in lang.split("+") if code not in installed]
    if missing:
        if required:
            raise ReadError(f"tesseract has no language data for {'+'.join(missing)} "
                            f"(apt-get install {' '.join('tesseract-ocr-' + m.lower() for m in missing)})")
        log.warning("tesseract has no language data for %s; OCR falls back to RapidOCR", "+".join(missing))
        return None
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    words = (version.stdout or version.stderr).split()
    return Tesseract(binary, lang, words[1] if len(words) > 1 else "")

"""OCR of scanned PDF pages and image files, on real images rendered here with PIL and read by the real engines
(RapidOCR's bundled models always; Tesseract where Debian's tesseract-ocr is installed), ingested into real SQLite,
and inside a real `rag worker`."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter

from ingest.readers import ReadError, Work, read_document
from ingest.readers.base import DEFAULT_OCR
from ingest.readers.ocr_engines import _tesseract
from rag import RAG
from tests import test_workers
from tests.test_cli import rag_cli
from tests.test_readers import make_pdf
from tests.test_workers import AMQP, Workers, _wait_job

queue_name = test_workers.queue_name  # the fixture: a RabbitMQ queue private to the test

LIMIT = 10 * 1024 * 1024
ENGINES = ["rapidocr", pytest.param("tesseract", marks=pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="Debian's tesseract-ocr is not installed"))]

HARBOUR = ["The harbour master logged forty ships", "arriving from Lisbon in the spring of 1841."]
LIGHTHOUSE = ["The lighthouse keeper painted the tower red", "after the storm of October 1902."]
TEXT_PAGE = "Quarterly revenue of the Fenwick Mill rose by twelve percent."


def page_image(lines: list[str], size: tuple[int, int] = (1400, 420), font_size: int = 44) -> Image.Image:
    """Black text on white paper, one line per entry: what a scanner sees of a printed page."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    for i, line in enumerate(lines):
        draw.text((60, 60 + i * int(font_size * 1.6)), line, fill=0, font=font)
    return image


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def scanned_pdf(*pages: Image.Image) -> bytes:
    """A scan as a scanner writes it: each page one image, no text layer."""
    return encoded(pages[0], "PDF", resolution=150, save_all=True, append_images=list(pages[1:]))


def read(path: Path, engine: str = "auto", **ocr: object) -> object:
    options = dataclasses.replace(DEFAULT_OCR, mode=engine, **ocr)
    return read_document(path, LIMIT, work=Work(LIMIT, LIMIT * 10, 120, None, ocr=options))


def words(text: str) -> set[str]:
    return {w.strip(".,").lower() for w in text.split()}


def assert_reads(text: str, lines: list[str]) -> None:
    """OCR is not exact: at least 90% of the words of every line, and the distinctive ones all."""
    for line in lines:
        expected = words(line)
        assert len(expected & words(text)) >= 0.9 * len(expected), (line, text)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_an_image_is_read_with_its_line_boxes(tmp_path: Path, engine: str, fmt: str, suffix: str) -> None:
    doc = read(write(tmp_path, "note" + suffix, encoded(page_image(HARBOUR), fmt)), engine)
    assert doc.doc_type == "image" and doc.metadata["format"] == fmt
    assert doc.metadata["pages"] == doc.metadata["ocr_pages"] == 1 and doc.metadata["page_starts"] == [0]
    assert doc.metadata["ocr_engine"].startswith(engine)
    assert_reads(doc.text, HARBOUR)
    lines = doc.metadata["ocr_lines"]
    assert len(lines) == 2
    first, second = lines
    assert "harbour" in doc.text[first[0] : first[1]].lower() and "lisbon" in doc.text[second[0] : second[1]].lower()
    for start, end, page, x0, y0, x1, y1 in lines:
        assert page == 1 and 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert first[4] < second[4]  # the second line is below the first
    assert 0.02 < first[3] < 0.1  # drawn 60 px from the left of 1400


@pytest.mark.parametrize("engine", ENGINES)
def test_a_multipage_tiff_keeps_its_page_numbers(tmp_path: Path, engine: str) -> None:
    data = encoded(page_image(HARBOUR), "TIFF", save_all=True, append_images=[page_image(LIGHTHOUSE)])
    doc = read(write(tmp_path, "fax.tiff", data), engine)
    assert doc.metadata["pages"] == doc.metadata["ocr_pages"] == 2
    second = doc.metadata["page_starts"][1]
    assert_reads(doc.text[:second], HARBOUR)
    assert_reads(doc.text[second:], LIGHTHOUSE)
    assert {line[2] for line in doc.metadata["ocr_lines"] if line[0] >= second} == {2}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_scanned_pdf_is_read_page_by_page(tmp_path: Path, engine: str) -> None:
    doc = read(write(tmp_path, "scan.pdf", scanned_pdf(page_image(HARBOUR), page_image(LIGHTHOUSE))), engine)
    assert doc.doc_type == "pdf" and doc.metadata["pages"] == doc.metadata["ocr_pages"] == 2
    second = doc.metadata["page_starts"][1]
    assert_reads(doc.text[:second], HARBOUR)
    assert_reads(doc.text[second:], LIGHTHOUSE)


def mixed_pdf() -> bytes:
    """Page 1 has a text layer; page 2 is a scan."""
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(make_pdf([TEXT_PAGE]))))
    writer.append(PdfReader(io.BytesIO(scanned_pdf(page_image(LIGHTHOUSE)))))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_pdf_mixing_text_and_scanned_pages_keeps_its_text_layer(tmp_path: Path) -> None:
    doc = read(write(tmp_path, "mixed.pdf", mixed_pdf()))
    assert doc.metadata["pages"] == 2 and doc.metadata["ocr_pages"] == 1
    second = doc.metadata["page_starts"][1]
    assert doc.text[:second].strip() == TEXT_PAGE  # the layer's text exactly, not a reading of it
    assert_reads(doc.text[second:], LIGHTHOUSE)
    assert all(line[2] == 2 and line[0] >= second for line in doc.metadata["ocr_lines"])


def test_ocr_off_leaves_scans_unread_with_a_reason(tmp_path: Path) -> None:
    doc = read(write(tmp_path, "mixed.pdf", mixed_pdf()), "off")
    assert doc.text == TEXT_PAGE and "ocr_pages" not in doc.metadata
    with pytest.raises(ReadError, match=r"^PDF has no extractable text \(scanned image\?\); OCR is off \(RAG_OCR=off\)$"):
        read(write(tmp_path, "scan.pdf", scanned_pdf(page_image(HARBOUR))), "off")
    with pytest.raises(ReadError, match=r"^OCR is off \(RAG_OCR=off\)$"):
        read(write(tmp_path, "note.png", encoded(page_image(HARBOUR), "PNG")), "off")


def test_an_image_without_text_says_so(tmp_path: Path) -> None:
    photo = Image.linear_gradient("L").resize((900, 600))  # smooth shading, nothing to read
    ImageDraw.Draw(photo).ellipse((300, 200, 600, 400), fill=40)
    with pytest.raises(ReadError, match="^no text found in the image"):
        read(write(tmp_path, "photo.png", encoded(photo, "PNG")))
    with pytest.raises(ReadError, match="^no text found by OCR on the 1 scanned pages"):
        read(write(tmp_path, "blank.pdf", scanned_pdf(photo)))


def test_a_corrupt_image_fails_alone_with_a_reason(tmp_path: Path) -> None:
    data = encoded(page_image(HARBOUR), "PNG")
    with pytest.raises(ReadError, match="^not a readable image"):
        read(write(tmp_path, "cut.png", data[: len(data) // 2]))
    with pytest.raises(ReadError, match="^not a readable image"):
        read(write(tmp_path, "junk.jpg", b"\xff\xd8\xff\xe0 not really a jpeg" * 50))


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    huge = write(tmp_path, "poster.png", encoded(Image.new("1", (12_000, 9_000), 1), "PNG"))  # 108 MP, ~15 kB
    started = time.perf_counter()
    with pytest.raises(ReadError, match=r"^image is 12000x9000 px \(108 MP\), over the 50 MP limit \(RAG_OCR_MAX_MEGAPIXELS\)$"):
        read(huge)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("engine", ENGINES)
def test_page_and_time_limits_fail_the_file_with_a_reason(tmp_path: Path, engine: str) -> None:
    scan = write(tmp_path, "scan.pdf", scanned_pdf(page_image(HARBOUR), page_image(LIGHTHOUSE), page_image(HARBOUR)))
    with pytest.raises(ReadError, match=r"^3 pages need OCR, over the 2-page limit \(RAG_OCR_MAX_PAGES\)$"):
        read(scan, engine, max_pages=2)
    with pytest.raises(ReadError, match=r"^OCR of page 1 took longer than 0.01 s \(RAG_OCR_PAGE_TIMEOUT_S\)"):
        read(scan, engine, page_timeout_s=0.01)


def test_tesseract_missing_is_a_reason_or_a_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A pip-only install (no tesseract on PATH): auto falls back to RapidOCR; asking for Tesseract by name gives
    each file that needs OCR the install command as its reason."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _tesseract("eng", required=False) is None
    with pytest.raises(ReadError, match=r"^RAG_OCR=tesseract but tesseract is not installed \(apt-get install tesseract-ocr\)$"):
        _tesseract("eng", required=True)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="Debian's tesseract-ocr is not installed")
def test_tesseract_without_a_language_names_its_package() -> None:
    with pytest.raises(ReadError, match=r"tesseract has no language data for zzz \(apt-get install tesseract-ocr-zzz\)"):
        _tesseract("eng+zzz", required=True)


def test_ingested_scans_are_searchable_with_their_pages(tmp_path: Path) -> None:
    """Through the CLI (a real subprocess, the default settings): the text page and the scanned page of a PDF, and
    an image, are found with their page numbers; `rag docs` says what was OCR'd; an unchanged scan costs a hash."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "mixed.pdf").write_bytes(mixed_pdf())
    (folder / "note.png").write_bytes(encoded(page_image(HARBOUR), "PNG"))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    data = tmp_path / "data"
    done = rag_cli("ingest", str(folder), "--json", data_dir=data)
    assert done.returncode == 0, done.stderr
    outcomes = {Path(f["path"]).name: f for f in json.loads(done.stdout)["files"]}
    assert outcomes["mixed.pdf"]["status"] == outcomes["note.png"]["status"] == "added"
    assert outcomes["broken.png"]["status"] == "failed" and outcomes["broken.png"]["error"].startswith("not a readable image")

    docs = {Path(d["path"]).name: d for d in json.loads(rag_cli("docs", "--json", data_dir=data).stdout)}
    assert (docs["mixed.pdf"]["pages"], docs["mixed.pdf"]["ocr_pages"]) == (2, 1)
    assert (docs["note.png"]["pages"], docs["note.png"]["ocr_pages"]) == (1, 1)
    assert docs["mixed.pdf"]["ocr_engine"]
    table = rag_cli("docs", data_dir=data, env={"COLUMNS": "300"}).stdout
    assert "OCR 1/2 p." in table and "OCR 1/1 p." in table

    rag = RAG(data)
    try:
        fenwick, lighthouse, harbour = (rag.retrieve(q, top_k=1)[0] for q in (
            "Fenwick Mill revenue", "lighthouse keeper storm", "harbour master ships"))
        # The two short pages of mixed.pdf are one passage: it starts on page 1, its words from page 2 say page 2.
        assert fenwick.document.endswith("mixed.pdf") and fenwick.page_of(fenwick.text.index("Fenwick")) == 1
        assert lighthouse.document.endswith("mixed.pdf")
        assert lighthouse.page_of(lighthouse.text.lower().index("lighthouse")) == 2
        assert harbour.document.endswith("note.png") and harbour.page == 1
        # The OCR'd lines carry their boxes into the chunk's meta, with offsets in its text.
        lines = rag.store.chunk_rows([lighthouse.chunk_id])[lighthouse.chunk_id].meta["ocr_lines"]
        assert lines and all(line[2] == 2 for line in lines)
        assert "lighthouse" in lighthouse.text[lines[0][0] : lines[0][1]].lower()
        assert lines[0][0] > lighthouse.text.index("Fenwick")  # the text layer's line has no OCR box
    finally:
        rag.close()

    started = time.perf_counter()
    again = json.loads(rag_cli("ingest", str(folder), "--json", data_dir=data).stdout)
    statuses = {Path(f["path"]).name: f["status"] for f in again["files"]}
    assert statuses["mixed.pdf"] == statuses["note.png"] == "unchanged"
    assert again["elapsed_s"] < 1.0, again  # a hash, not a parse: OCR of the two pages alone takes longer
    assert time.perf_counter() - started < 60


def test_ocr_runs_in_a_rag_worker(tmp_path: Path, pg_url: str, queue_name: str) -> None:
    """A scanned PDF queued to a real `rag worker` (RabbitMQ, PostgreSQL) is read there, page numbers and all."""
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "scan.pdf").write_bytes(scanned_pdf(page_image(HARBOUR), page_image(LIGHTHOUSE)))
    workers = Workers(tmp_path, pg_url, queue_name)
    workers.start(1)
    rag = RAG(tmp_path / "api", database_url=pg_url, broker_url=AMQP, queue_name=queue_name)
    try:
        job = _wait_job(rag, rag.submit(folder, summarize=False), workers)
        assert job.state == "done" and job.counts == {"added": 1}, (job, workers.logs())
        (doc,) = rag.documents()
        assert (doc.pages, doc.ocr_pages) == (2, 2)
        hit = rag.retrieve("lighthouse keeper painted the tower", top_k=1)[0]
        assert hit.document.endswith("scan.pdf") and hit.page_of(hit.text.lower().index("lighthouse")) == 2
        assert "OCR engine:" in workers.logs()  # the worker, not this process, loaded the engine
    finally:
        rag.close()
        workers.stop()


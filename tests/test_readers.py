"""ingest.readers on real files: ones written here (every encoding and failure mode we promise to handle) and the
52 third-party files in ../shared/data/mixed-docs (parser robustness on files nobody here wrote)."""

from __future__ import annotations

import io
import json
import logging
import random
import time
import zipfile
from pathlib import Path

import pytest

from ingest import readers
from ingest.readers import SUPPORTED_SUFFIXES, ParsedDocument, ReadError, doc_type_for, read_document

LIMIT = 10 * 1024 * 1024
MIXED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mixed-docs"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def make_pdf(pages: list[str], title: str | None = None, startxref_shift: int = 0, page_extra: str = "") -> bytes:
    """A minimal but valid PDF written by hand: one Helvetica text line per page, optional /Title, and
    ``page_extra`` entries in every page dictionary."""
    n = len(pages)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, text in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R {page_extra}>>".encode()
        )
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("cp1252")
        stream = b"BT /F1 12 Tf 72 720 Td (" + escaped + b") Tj ET"
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    if title:
        objects.append(f"<< /Title ({title}) >>".encode())
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    info = b" /Info %d 0 R" % len(objects) if title else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, info, xref + startxref_shift)  # fmt: skip
    return bytes(out)


# --- plain text and encodings ---------------------------------------------------------------------------------

ACCENTED = "Café naïve résumé — “quoted” déjà vu; le cœur, 5 €.\nSecond line: Ærøskøbing, garçon.\n"


def test_utf8(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, "a.txt", ACCENTED + "emoji 🎉\n"), LIMIT)
    assert doc == ParsedDocument(ACCENTED.strip() + "\nemoji 🎉", None, "txt", {"encoding": "utf-8"})


def test_utf8_bom(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, "a.txt", b"\xef\xbb\xbf" + ACCENTED.encode()), LIMIT)
    assert doc.text == ACCENTED.strip() and not doc.text.startswith("\ufeff")
    assert doc.metadata["encoding"] == "utf-8-sig"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_32_with_bom(tmp_path: Path, codec: str) -> None:
    data = ACCENTED.encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data  # the -be codec writes no BOM of its own
    doc = read_document(write(tmp_path, "a.log", data), LIMIT)
    assert doc.text == ACCENTED.strip()
    assert doc.metadata["encoding"] == codec[:6]


@pytest.mark.parametrize(
    "text, codec",
    [
        (ACCENTED, "cp1252"),
        ("Le cœur a ses raisons que la raison ne connaît point. Ça va très bien, merci.\n", "cp1252"),
        ("Straße, Müller, Größe, über, schön. El niño comió piña.\n", "latin-1"),
        ("Привет, как дела? Москва — столица России. Это тестовый текст.\n", "cp1251"),
        ("日本語のテキストです。これはシフトJISでエンコードされています。東京は日本の首都です。\n", "shift_jis"),
    ],
)
def test_legacy_encodings_are_detected(tmp_path: Path, text: str, codec: str) -> None:
    doc = read_document(write(tmp_path, "legacy.txt", text.encode(codec)), LIMIT)
    assert doc.text == text.strip()
    assert doc.metadata["encoding"] != "utf-8"


def test_mostly_utf8_with_a_stray_byte_stays_utf8(tmp_path: Path) -> None:
    good = "Le café est très bon. Ça coûte deux euros à Paris. " * 20
    doc = read_document(write(tmp_path, "mixed.txt", good.encode() + b" caf\xe9 au lait"), LIMIT)
    assert doc.metadata["encoding"] == "utf-8"
    assert doc.text.startswith("Le café est très bon.") and doc.text.endswith("caf\ufffd au lait")


def test_normalisation(tmp_path: Path) -> None:
    raw = "  Title\r\n\r\n\r\n\r\nE\u0301cole\x00 of \ufb01ne   \t\r\nart\x0cnext page\u2029para\n\n\n \n\nend \n"
    doc = read_document(write(tmp_path, "n.txt", b"\xef\xbb\xbf" + raw.encode()), LIMIT)  # BOM: NUL allowed
    assert doc.text == "Title\n\nÉcole of fine\nart\n\nnext page\n\npara\n\nend"


def test_binary_file(tmp_path: Path) -> None:
    png_like = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
    with pytest.raises(ReadError, match="binary file, not text"):
        read_document(write(tmp_path, "image.txt", png_like), LIMIT)
    control_soup = bytes([1, 2, 3, 4, 5, 6, 65, 66]) * 500  # no NUL, but mostly control characters
    with pytest.raises(ReadError, match="binary file, not text"):
        read_document(write(tmp_path, "data.csv", control_soup), LIMIT)


@pytest.mark.parametrize("content", [b"", b"   \n\n\t \r\n", b"\xef\xbb\xbf\n"])
def test_empty_document(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ReadError, match="empty document"):
        read_document(write(tmp_path, "empty.md", content), LIMIT)


def test_over_the_limit_is_refused_from_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "big.txt", "x" * 5000)

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was opened although stat already said it is too big")

    monkeypatch.setattr(Path, "open", no_reading)
    with pytest.raises(ReadError, match=r"5,000 bytes.*4,096-byte limit"):
        read_document(path, 4096)


def test_unsupported_and_missing(tmp_path: Path) -> None:
    assert doc_type_for("sound.MP3") is None and doc_type_for("Makefile") is None
    assert doc_type_for("photo.JPG") == "image"  # read by OCR (tests/test_ocr.py)
    assert doc_type_for("Notes.MD") == "md" and doc_type_for(Path("x/y.htm")) == "html"
    assert {".txt", ".md", ".html", ".pdf", ".docx", ".json", ".csv"} <= SUPPORTED_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in SUPPORTED_SUFFIXES)
    with pytest.raises(ReadError, match="unsupported file type '.exe'"):
        read_document(write(tmp_path, "tool.exe", b"MZ"), LIMIT)
    with pytest.raises(ReadError, match="cannot read file"):
        read_document(tmp_path / "missing.txt", LIMIT)
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(ReadError, match="not a regular file"):
        read_document(tmp_path / "folder.txt", LIMIT)


def test_unexpected_parser_errors_become_read_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a.txt", "hello")

    def broken(data: bytes, max_bytes: int) -> None:
        raise ValueError("the parser tripped")

    monkeypatch.setitem(readers.PARSERS, "txt", broken)
    with pytest.raises(ReadError, match="could not parse txt file: the parser tripped"):
        read_document(path, LIMIT)

    def out_of_memory(data: bytes, max_bytes: int) -> None:
        raise MemoryError

    monkeypatch.setitem(readers.PARSERS, "txt", out_of_memory)
    with pytest.raises(MemoryError):
        read_document(path, LIMIT)


# --- markup ---------------------------------------------------------------------------------------------------

HTML_1252 = (
    "<!DOCTYPE html><html><head><meta charset='iso-8859-1'><title>  Les Misérables\n  résumé </title>"
    "<style>body { color: red }</style><script>var secret = 'do not index';</script></head><body>"
    "<nav><a href='/'>Home</a> | <a href='/x'>Menu item</a></nav><header>Site banner</header>"
    "<article><header><h1>Chapitre premier</h1></header><p>Jean Valjean’s  sœur était\n   à Faverolles.</p>"
    "<p>Second<br>line</p><ul><li>un</li><li>deux</li></ul>"
    "<table><tr><th>Nom</th><th>Âge</th></tr><tr><td>Cosette</td><td>8</td></tr></table>"
    "<pre>  code  kept\n  as is</pre><!-- a comment --></article><footer>© footer</footer></body></html>"
)


def test_html_with_title_script_and_legacy_charset(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, "page.html", HTML_1252.encode("cp1252")), LIMIT)
    assert doc.doc_type == "html" and doc.title == "Les Misérables résumé"
    assert doc.metadata == {"encoding": "cp1252"}  # 'iso-8859-1' is read as windows-1252, as browsers do
    assert doc.text == (
        "Chapitre premier\n\nJean Valjean’s sœur était à Faverolles.\n\nSecond\nline\n\nun\ndeux\n\n"
        "Nom | Âge\nCosette | 8\n\ncode  kept\nas is"  # <pre> keeps its inner spacing
    )


def test_html_declared_charset_that_lies_falls_back(tmp_path: Path) -> None:
    page = "<html><head><meta charset='utf-8'><title>Déjà</title></head><body><p>Crème brûlée</p></body></html>"
    doc = read_document(write(tmp_path, "lie.htm", page.encode("cp1252")), LIMIT)
    assert doc.title == "Déjà" and doc.text == "Crème brûlée"


def test_markdown_title(tmp_path: Path) -> None:
    md = "---\nlayout: post\n---\n```sh\n# not a title\n```\nIntro\n\n# The *Real* Title #\n\n## Section\n\nBody.\n"
    doc = read_document(write(tmp_path, "post.markdown", md), LIMIT)
    assert doc.doc_type == "md" and doc.title == "The *Real* Title"
    assert "## Section\n\nBody." in doc.text  # markdown is kept as markdown for the chunker
    front = read_document(write(tmp_path, "f.md", "---\ntitle: 'From front matter'\n---\n# H1\n"), LIMIT)
    assert front.title == "From front matter"
    setext = read_document(write(tmp_path, "s.md", "**Setext \\[title]**\n=====\n\ntext\n"), LIMIT)
    assert setext.title == "Setext [title]"
    assert read_document(write(tmp_path, "n.md", "just text\n"), LIMIT).title is None


def test_eml_html_only(tmp_path: Path) -> None:
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "Réunion demain"
    message["From"] = "alice@example.com"
    message["To"] = "bob@example.com"
    message.set_content("<html><body><p>Ordre du jour :</p><ul><li>budget</li></ul></body></html>", subtype="html")
    message.add_attachment(b"\x00\x01", maintype="application", subtype="octet-stream", filename="x.bin")
    doc = read_document(write(tmp_path, "m.eml", message.as_bytes()), LIMIT)
    assert doc.title == "Réunion demain" and doc.metadata["attachments"] == 1
    assert doc.text.endswith("Ordre du jour :\n\nbudget") and "From: alice@example.com" in doc.text


# --- PDF ------------------------------------------------------------------------------------------------------


def test_pdf(tmp_path: Path) -> None:
    doc = read_document(
        write(tmp_path, "r.pdf", make_pdf(["Hello PDF world", "", "Café (third) page"], "A Report")), LIMIT
    )
    assert doc.doc_type == "pdf" and doc.title == "A Report"
    assert doc.text == "Hello PDF world\n\nCafé (third) page"
    assert doc.metadata == {"pages": 3, "page_starts": [0, 17, 17]}


def test_pdf_with_a_huge_array(tmp_path: Path) -> None:
    """pypdf's default limit (100,000 array elements) rejects whole real filings; ours is 2M."""
    big = "/PieceInfo [" + "0 " * 300_000 + "] "
    doc = read_document(write(tmp_path, "filing.pdf", make_pdf(["Quarterly report"], page_extra=big)), LIMIT)
    assert doc.text == "Quarterly report"


def test_pdf_without_text(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match=r"PDF has no extractable text \(scanned image\?\)"):
        read_document(write(tmp_path, "scan.pdf", make_pdf(["", ""])), LIMIT)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_corrupt_pdf(tmp_path: Path, cut: float) -> None:
    data = make_pdf(["Some text that will be cut off"] * 3)
    with pytest.raises(ReadError):
        read_document(write(tmp_path, "cut.pdf", data[: int(len(data) * cut)]), LIMIT)
    with pytest.raises(ReadError):
        read_document(write(tmp_path, "junk.pdf", b"%PDF-1.7\n" + b"garbage " * 200), LIMIT)


def test_encrypted_pdf(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    for algorithm in ("RC4-128", "AES-256"):
        writer = PdfWriter(clone_from=io.BytesIO(make_pdf(["Owner-locked but readable"])))
        writer.encrypt(user_password="", owner_password="owner", algorithm=algorithm)
        buffer = io.BytesIO()
        writer.write(buffer)
        doc = read_document(write(tmp_path, "open.pdf", buffer.getvalue()), LIMIT)
        assert doc.text == "Owner-locked but readable"
    writer = PdfWriter(clone_from=io.BytesIO(make_pdf(["Secret"])))
    writer.encrypt(user_password="secret", algorithm="AES-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(ReadError, match="encrypted and needs a password"):
        read_document(write(tmp_path, "locked.pdf", buffer.getvalue()), LIMIT)


def test_pypdf_warnings_go_to_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What an application's root handler sees: no pypdf chatter, only our own debug line about it."""

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    root_handler = Collect()
    logging.getLogger().addHandler(root_handler)
    caplog.set_level(logging.DEBUG, logger="ingest.readers")
    try:
        broken_xref = make_pdf(["Recoverable"], startxref_shift=7)  # pypdf repairs it and logs a warning
        assert read_document(write(tmp_path, "x.pdf", broken_xref), LIMIT).text == "Recoverable"
    finally:
        logging.getLogger().removeHandler(root_handler)
    assert not [r for r in root_handler.records if r.name.startswith("pypdf")]
    assert any(r.name == "ingest.readers" and r.levelno == logging.DEBUG and "startxref" in r.getMessage()
               for r in root_handler.records)  # fmt: skip


# --- Office and other containers ------------------------------------------------------------------------------


def test_docx(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = "Quarterly Plan"
    document.add_heading("Goals", level=1)
    document.add_paragraph("Ship the reader. Naïve tests are not enough.")
    table = document.add_table(rows=2, cols=3)
    for r, row in enumerate([["Owner", "Task", "Due"], ["Ana", "Parsing", "Friday"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(0, 1).merge(table.cell(0, 2))
    document.add_paragraph("After the table.")
    path = tmp_path / "plan.docx"
    document.save(path)
    doc = read_document(path, LIMIT)
    assert doc.doc_type == "docx" and doc.title == "Quarterly Plan"
    assert doc.text == (
        "Goals\n\nShip the reader. Naïve tests are not enough.\n\nOwner | Task Due\nAna | Parsing | Friday\n\n"
        "After the table."
    )


def test_docx_title_falls_back_to_title_style(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Styled Title", level=0)
    document.add_paragraph("body")
    path = tmp_path / "t.docx"
    document.save(path)
    assert read_document(path, LIMIT).title == "Styled Title"


def test_corrupt_office_files(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="could not parse docx file"):
        read_document(write(tmp_path, "bad.docx", b"PK\x03\x04 this is not really a zip"), LIMIT)
    with pytest.raises(ReadError, match="could not parse epub file"):
        read_document(write(tmp_path, "bad.epub", b"not a zip at all"), LIMIT)


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"\x00" * 5_000_000)  # ~5 KB compressed
    with pytest.raises(ReadError, match="archive expands to 5,000,000 bytes"):
        read_document(write(tmp_path, "bomb.docx", buffer.getvalue()), 100_000)


def test_pptx(tmp_path: Path) -> None:
    pptx = pytest.importorskip("pptx")
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[0])
    slide.shapes.title.text = "Roadmap 2025"
    slide.placeholders[1].text = "Team Parsing"
    slide.notes_slide.notes_text_frame.text = "Speaker notes here"
    second = deck.slides.add_slide(deck.slide_layouts[1])
    second.shapes.title.text = "Milestones"
    second.placeholders[1].text_frame.text = "Readers\nChunker"
    path = tmp_path / "deck.pptx"
    deck.save(path)
    doc = read_document(path, LIMIT)
    assert doc.doc_type == "pptx" and doc.title == "Roadmap 2025"
    assert doc.text == "Roadmap 2025\n\nTeam Parsing\n\nSpeaker notes here\n\nMilestones\n\nReaders\nChunker"
    assert doc.metadata == {"slides": 2, "page_starts": [0, doc.text.index("Milestones")]}  # a slide is a page


def test_xlsx(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Budget"
    for row in [["Item", "Cost"], ["Café", 3.5], [None, None], ["Total", "=B2"]]:
        sheet.append(row)
    path = tmp_path / "b.xlsx"
    book.save(path)
    doc = read_document(path, LIMIT)
    assert doc.doc_type == "xlsx" and doc.metadata == {"sheets": 1, "page_starts": [0], "sheet_names": ["Budget"]}
    assert doc.text.startswith("Sheet: Budget\nItem | Cost\nCafé | 3.5\nTotal")


def test_rtf(tmp_path: Path) -> None:
    pytest.importorskip("striprtf")
    rtf = rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Times;}}\f0 Caf\'e9 cr\'e8me.\par Second \u8364? line.\par}"
    doc = read_document(write(tmp_path, "a.rtf", rtf), LIMIT)
    assert doc.text == "Café crème.\nSecond € line." and doc.metadata == {"encoding": "cp1252"}


# --- the third-party files in ../shared/data/mixed-docs --------------------------------------------------------

MIXED_FILES = sorted(p for p in MIXED.rglob("*") if p.is_file() and p.name != "MANIFEST.json") if MIXED.is_dir() else []
needs_mixed = pytest.mark.skipif(not MIXED_FILES, reason="../shared/data/mixed-docs is not present")


def mixed(name: str) -> Path:
    matches = [p for p in MIXED_FILES if p.name == name]
    if not matches:
        pytest.skip(f"{name} is not in mixed-docs")
    return matches[0]


@needs_mixed
@pytest.mark.parametrize("path", MIXED_FILES, ids=lambda p: p.name[:60])
def test_every_mixed_file_reads_or_fails_cleanly(path: Path) -> None:
    started = time.perf_counter()
    try:
        doc = read_document(path, 25 * 1024 * 1024)
    except ReadError as exc:
        assert str(exc)
    else:
        assert doc.text.strip() and doc.doc_type == doc_type_for(path)
        assert "\x00" not in doc.text and "\n\n\n" not in doc.text
        json.dumps(doc.metadata)
    assert time.perf_counter() - started < 20


@needs_mixed
@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".pptx", ".xlsx", ".odt", ".epub", ".html", ".eml"])
def test_damaged_copies_of_mixed_files_fail_cleanly(tmp_path: Path, suffix: str) -> None:
    """Truncated, holed and bit-flipped copies of real files: a ParsedDocument or a ReadError, nothing else."""
    rng = random.Random(suffix)
    for path in [p for p in MIXED_FILES if p.suffix == suffix and doc_type_for(p)][:4]:
        data = path.read_bytes()
        flipped = bytearray(data)
        for _ in range(10):
            flipped[rng.randrange(len(data))] = rng.randrange(256)
        hole = rng.randrange(len(data))
        for damaged in (data[: len(data) // 2], data[:hole] + data[hole + 300 :], bytes(flipped)):
            try:
                doc = read_document(write(tmp_path, "damaged" + suffix, damaged), LIMIT)
            except ReadError as exc:
                assert str(exc)
            else:
                assert doc.text.strip()


@needs_mixed
def test_mixed_docs_mostly_parse() -> None:
    supported = [p for p in MIXED_FILES if doc_type_for(p)]
    outcomes = {}
    for path in supported:
        try:
            outcomes[path.name] = f"ok {len(read_document(path, 25 * 1024 * 1024).text)} chars"
        except ReadError as exc:
            outcomes[path.name] = f"ReadError: {exc}"
    logging.getLogger(__name__).info("mixed-docs outcomes:\n%s", json.dumps(outcomes, indent=1))
    parsed = sum(v.startswith("ok") for v in outcomes.values())
    assert len(supported) >= 0.9 * len(MIXED_FILES)
    assert parsed >= 0.9 * len(supported), outcomes


@needs_mixed
@pytest.mark.parametrize(
    "name,expected", [("private_gpt__tests_components_readers_files_file_scanned.pdf", "facsimile transmission"),
                      ("haystack__test_test_files_pdf_non_text_searchable.pdf", "non-text-searchable PDF")],
)  # fmt: skip
def test_mixed_scanned_pdfs_are_read_by_ocr(name: str, expected: str) -> None:
    """The two scans have no text layer: OCR reads them (tests/test_ocr.py for the rest)."""
    doc = read_document(mixed(name), LIMIT)
    assert expected in doc.text and doc.metadata["ocr_pages"] == doc.metadata["pages"] == 1


@needs_mixed
def test_mixed_non_utf8_html() -> None:
    doc = read_document(mixed("private_gpt__tests_components_readers_files_file_no_utf8.html"), LIMIT)
    assert doc.metadata["encoding"] == "cp1252"
    assert doc.title and doc.title.startswith("Executive Council Resolution No. (101) of 2024")
    assert "the Taxable Person’s office" in doc.text and "©2025" in doc.text
    essay = read_document(mixed("r2r__py_core_examples_data_pg_essay_1.html"), LIMIT)
    assert essay.title == "A Project of One's Own" and "say — not just" in essay.text
    assert "@font-face" not in essay.text


@needs_mixed
def test_mixed_pdfs() -> None:
    columns = read_document(mixed("private_gpt__tests_components_readers_files_file_multicolumn.pdf"), LIMIT)
    assert columns.metadata["pages"] == 3 and "Two-Column Document with Lorem Ipsum" in columns.text
    assert len(columns.text) > 5000
    react = read_document(mixed("haystack__test_test_files_pdf_react_paper.pdf"), LIMIT)
    assert react.metadata["pages"] == 31 and "Synergizing" in react.text.title()
    starts = react.metadata["page_starts"]
    assert starts == sorted(starts) and len(starts) == 31 and starts[0] == 0
    ligatures = read_document(mixed("haystack__test_test_files_pdf_sample_pdf_1.pdf"), LIMIT)
    assert "A sample PDF file" in ligatures.text and "\ufb01" not in ligatures.text


@needs_mixed
def test_mixed_known_files() -> None:
    gatsby = read_document(mixed("private_gpt__tests_components_readers_files_file_unknown.txt"), LIMIT)
    assert gatsby.metadata["encoding"] == "utf-8-sig"
    assert gatsby.text.startswith("The Project Gutenberg eBook of The Great Gatsby") and "\r" not in gatsby.text
    assert read_document(mixed("txtai__docs_faq.md"), LIMIT).title == "FAQ"
    assert read_document(mixed("haystack__test_test_files_markdown_sample.md"), LIMIT).title is None
    docx_doc = read_document(mixed("r2r__py_core_examples_supported_file_types_docx.docx"), LIMIT)
    assert docx_doc.title and docx_doc.title.startswith("Technical Documentation")
    mail = read_document(mixed("r2r__py_core_examples_supported_file_types_eml.eml"), LIMIT)
    assert mail.title == "Meeting Summary - Q4 Planning" and "Revenue targets increased by 15%" in mail.text
    book = read_document(mixed("r2r__py_core_examples_supported_file_types_epub.epub"), LIMIT)
    assert book.title and book.title.startswith("The Geography of Bliss") and book.metadata["chapters"] > 1
    assert "Lorem ipsum" in read_document(mixed("r2r__py_core_examples_supported_file_types_odt.odt"), LIMIT).text
    if doc_type_for("x.pptx"):
        deck = read_document(mixed("haystack__test_test_files_pptx_sample_pptx.pptx"), LIMIT)
        assert "Sample Title Slide" in deck.text and deck.metadata["slides"] == 2
    if doc_type_for("x.xlsx"):
        sheets = read_document(mixed("haystack__test_test_files_xlsx_basic_tables_two_sheets.xlsx"), LIMIT)
        assert "Sheet: Basic Table\ncol_a | col_b\n1.5 | test" in sheets.text
    wiki = read_document(mixed("khoj__tests_data_plaintext_wikipedia_tardigrades.html"), LIMIT)
    assert wiki.title == "Tardigrade - Wikipedia" and "water bears" in wiki.text and "mw.config" not in wiki.text

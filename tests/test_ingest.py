"""Ingestion end to end: real files, real embedder, real SQLite and FAISS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from rag import RAG
from rag.store.schema import Chunk, Document
from tests.conftest import REPO, shared_data, write_files


def assert_consistent(rag: RAG, collection: str = "default") -> set[int]:
    """FAISS holds exactly the chunk ids SQL holds, and every indexed document has its chunks."""
    coll = rag.store.collection(collection)
    index = rag.store.index(coll)
    with rag.store.session() as s:
        sql_ids = set(s.scalars(select(Chunk.id).where(Chunk.collection_id == coll.id)))
        for doc in s.scalars(select(Document).where(Document.collection_id == coll.id)):
            n = s.scalar(select(func.count(Chunk.id)).where(Chunk.document_id == doc.id, Chunk.kind == "chunk"))
            assert n == (doc.chunk_count if doc.status == "indexed" else 0), doc.path
    assert set(index.ids().tolist()) == sql_ids
    return sql_ids


GARDEN = {
    "plants/tomato.md": "# Tomatoes\n\nTomatoes need full sun and about 2.5 cm of water per week. Stake them early.",
    "plants/basil.txt": "Basil is an annual herb. Pinch the flower buds so the plant keeps producing leaves.",
    "pests.html": "<html><head><title>Garden pests</title><script>var x=1;</script></head><body><h1>Aphids</h1>"
    "<p>Aphids cluster under leaves; a strong spray of water or ladybirds keep them down.</p></body></html>",
}


def test_change_detection_edit_delete_rename(make_rag, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(docs, GARDEN)
    rag = make_rag()
    first = rag.ingest(docs)
    assert first.counts() == {"added": 3, "updated": 0, "unchanged": 0, "moved": 0, "removed": 0, "failed": 0,
                              "skipped": 0}
    ids_before = assert_consistent(rag)

    again = rag.ingest(docs)
    assert again.unchanged == 3 and again.added == again.updated == again.removed == 0
    assert assert_consistent(rag) == ids_before  # nothing re-embedded

    (docs / "plants/basil.txt").write_text("Basil hates cold nights; bring pots indoors below 10 degrees Celsius.")
    edited = rag.ingest(docs)
    assert (edited.updated, edited.unchanged) == (1, 2)
    hit = rag.retrieve("what temperature is too cold for basil", top_k=1)[0]
    assert hit.document.endswith("basil.txt") and "10 degrees" in hit.text
    assert not any("Pinch the flower" in h.text for h in rag.retrieve("pinch flower buds", top_k=5))

    (docs / "pests.html").unlink()
    removed = rag.ingest(docs)
    assert removed.removed == 1 and removed.unchanged == 2
    assert all(not h.document.endswith("pests.html") for h in rag.retrieve("aphids ladybirds", top_k=5))

    ids_before = assert_consistent(rag)
    (docs / "plants/tomato.md").rename(docs / "plants/tomatoes.md")
    renamed = rag.ingest(docs)  # the same content at a new path: the document moves, its chunks stay
    assert (renamed.moved, renamed.added, renamed.removed, renamed.unchanged) == (1, 0, 0, 1)
    assert sorted(Path(d.path).name for d in rag.documents()) == ["basil.txt", "tomatoes.md"]
    assert assert_consistent(rag) == ids_before  # nothing re-embedded
    assert rag.retrieve("how much water do tomatoes need", top_k=1)[0].document.endswith("tomatoes.md")


def test_lexical_index_is_shared_by_processes_on_one_data_directory(make_rag, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(docs, GARDEN)
    writer = make_rag()
    writer.ingest(docs)  # the ingestion brings the lexical index up to its last commit
    coll = writer.store.collection("default")
    lexical = writer.store.lexical(coll)
    assert lexical.applied == coll.generation
    assert sorted(lexical.ids().tolist()) == sorted(assert_consistent(writer))

    reader = make_rag()  # a second process on the same data directory opens the same folder
    ids, _ = reader.store.lexical(reader.store.collection("default")).search("ladybirds aphids", 3, None)
    assert reader.store.chunk_rows(ids.tolist())[int(ids[0])].path.endswith("pests.html")

    (docs / "pests.html").write_text("<p>Slugs eat seedlings at night; beer traps catch them.</p>")
    writer.ingest(docs)
    hits = reader.retrieve("beer traps for slugs", top_k=1, mode="lexical")  # picked up from the shared folder
    assert hits and "beer traps" in hits[0].text

    folder = writer.store.index_path(coll, ".lexical")
    writer.store.drop_collection("default")
    assert not folder.exists()


def test_a_query_behind_another_writer_is_answered_at_once_and_catches_up_behind_it(make_rag, tmp_path: Path) -> None:
    """Another process (here: another data directory on the same database) commits; a query must not wait for the
    lexical index to apply it: the previous state answers, a background thread catches up, dense is current."""
    docs = tmp_path / "docs"
    write_files(docs, GARDEN)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    reader = make_rag(tmp_path / "reader", database_url=url)
    writer = make_rag(tmp_path / "writer", database_url=url)
    writer.ingest(docs)
    assert reader.retrieve("aphids", top_k=1)[0].document.endswith("pests.html")

    (docs / "pests.html").write_text("<p>Slugs eat seedlings at night; beer traps catch them.</p>")
    writer.ingest(docs)
    coll = reader.store.collection("default")
    behind = reader.store.lexical(coll, generation=coll.generation)
    assert behind.applied < coll.generation  # answered as it was; the catch-up runs in the background
    dense = reader.retrieve("beer traps for slugs", top_k=1, mode="dense")
    assert dense and "beer traps" in dense[0].text  # dense follows the log before it answers
    deadline = time.monotonic() + 30
    while reader.store.lexical(coll, generation=coll.generation).applied < coll.generation:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hits = reader.retrieve("beer traps for slugs", top_k=1, mode="lexical")
    assert hits and "beer traps" in hits[0].text


def test_bad_inputs_are_reported_and_lose_nothing(make_rag, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(
        docs,
        {
            **GARDEN,
            "binary.txt": bytes(range(256)) * 40,
            "empty.md": "",
            "latin1.txt": "Caf\xe9 cr\xe8me br\xfbl\xe9e: the na\xefve g\xe2teau recipe of our fa\xe7ade bakery, with "
            "cr\xe8me fra\xeeche and p\xe2te bris\xe9e, served \xe0 la carte.".encode("cp1252"),
            "broken.pdf": b"%PDF-1.4\n1 0 obj<<>>\nthis is not really a pdf",
            "image.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
            "sound.mp3": b"ID3\x04\x00" + b"\x00" * 100,
        },
    )
    huge = docs / "huge.txt"
    with open(huge, "wb") as fh:  # 50 MB of real text, above the default 25 MB limit
        line = b"a line of log text that repeats to make a very large file\n"
        fh.writelines(line for _ in range(50 * 2**20 // len(line) + 1))
    rag = make_rag()
    report = rag.ingest([docs, tmp_path / "does-not-exist"])
    by_name = {Path(f.path).name: f for f in report.files}
    assert by_name["binary.txt"].status == "failed" and "binary" in by_name["binary.txt"].error
    assert by_name["empty.md"].status == "failed" and "empty" in by_name["empty.md"].error
    assert by_name["broken.pdf"].status == "failed" and by_name["broken.pdf"].error
    assert by_name["huge.txt"].status == "skipped" and "MB" in by_name["huge.txt"].error
    assert by_name["image.png"].status == "failed" and "not a readable image" in by_name["image.png"].error
    assert by_name["sound.mp3"].status == "skipped" and "unsupported" in by_name["sound.mp3"].error
    assert by_name["does-not-exist"].status == "failed" and "no such file" in by_name["does-not-exist"].error
    assert by_name["latin1.txt"].status == "added"
    assert report.added == 4  # the three garden files + latin1
    hit = rag.retrieve("crème fraîche pâte brisée", top_k=1)[0]
    assert hit.document.endswith("latin1.txt") and "crème fraîche" in hit.text
    failed = {Path(d.path).name: d for d in rag.documents() if d.status == "failed"}
    assert {"binary.txt", "empty.md", "broken.pdf", "image.png"} <= set(failed)
    assert_consistent(rag)


def test_empty_folder_and_vanishing_file(make_rag, tmp_path: Path) -> None:
    rag = make_rag()
    (tmp_path / "empty").mkdir()
    report = rag.ingest(tmp_path / "empty")
    assert report.files == []

    docs = tmp_path / "docs"
    write_files(docs, {f"note{i:02d}.txt": f"Note number {i} about topic {i * 7}." for i in range(20)})
    victim = docs / "note19.txt"

    def progress(done: int, total: int, path: str) -> None:
        if done == 1:
            victim.unlink()  # vanishes after discovery, before it is read

    report = rag.ingest(docs, progress=progress)
    assert report.added == 19
    assert [f.status for f in report.files if f.path == str(victim)] == ["failed"]
    assert_consistent(rag)


def test_index_is_repaired_from_sql_at_open(make_rag, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(docs, GARDEN)
    data = tmp_path / "data"
    rag = make_rag(data)
    rag.ingest(docs)
    ids = assert_consistent(rag)
    index_file = rag.store.index(rag.store.collection("default")).path
    rag.close()

    index_file.write_bytes(b"torn write")  # a crash that left garbage where the index was
    reopened = make_rag(data)
    assert assert_consistent(reopened) == ids
    assert reopened.retrieve("aphids", top_k=1)[0].document.endswith("pests.html")


def test_killed_ingestion_ends_consistent(make_rag, tmp_path: Path) -> None:
    """kill -9 in the middle of an ingest, then run it again: a consistent store with every document."""
    docs = tmp_path / "docs"
    write_files(docs, {f"doc{i:03d}.txt": f"Document {i}. " + " ".join(f"word{i}_{j}" for j in range(150)) for i in range(150)})
    data = tmp_path / "data"
    env = {**os.environ, "RAG_DATA_DIR": str(data), "RAG_EMBED_BATCH_SIZE": "4"}  # commits every 32 chunks
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "ingest", str(docs)], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    db = data / "rag.db"
    deadline = time.monotonic() + 120
    killed_mid_run = False
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            rag = RAG(data)
            n = len(rag.documents())
            rag.close()
            if n >= 10:
                proc.send_signal(signal.SIGKILL)
                killed_mid_run = n < 150
                break
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert killed_mid_run, "the ingestion finished before it could be killed"

    rag = make_rag(data)
    assert_consistent(rag)  # FAISS was behind SQL; the open repaired it
    report = rag.ingest(docs)
    assert report.added + report.unchanged == 150 and report.failed == 0
    assert len(rag.documents()) == 150
    assert len(assert_consistent(rag)) >= 150


def test_concurrent_writers_serialise(make_rag, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_files(a, {f"a{i}.txt": f"Alpha file {i} mentions apples and {i} oranges." for i in range(15)})
    write_files(b, {f"b{i}.txt": f"Beta file {i} mentions bicycles and {i} wheels." for i in range(15)})
    rag = make_rag()
    reports = {}
    threads = [threading.Thread(target=lambda p=p: reports.__setitem__(p.name, rag.ingest(p))) for p in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reports["a"].added == 15 and reports["b"].added == 15
    assert len(rag.documents()) == 30
    assert_consistent(rag)


def make_workbook(sheets: dict[str, list[list[object]]]) -> bytes:
    """An xlsx of these sheets (in order; an empty list makes an empty sheet), written by openpyxl."""
    import io

    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_xlsx_sheets_are_stored_per_chunk(make_rag, tmp_path: Path) -> None:
    """A sheet is a page with a name: a hit for a value on sheet 2 names that sheet (where it starts, or at the sheet
    break inside it), the empty third sheet keeps the numbering, and the API's JSON carries the name."""
    from api.passages import passage
    from api.schemas import RetrieveResponse

    fruit = [["Fruit", "Price", "Origin"]] + [[f"fruit{i} apple", 1 + i / 100, f"orchard {i}"] for i in range(150)]
    metals = [["Metal", "Density"], ["Osmium", 22.59], ["Iridium", 22.56], ["Platinum", 21.45]]
    birds = [["Bird", "Wingspan"], ["Wandering albatross", "3.5 m"]]
    sheets = {"Fruit prices": fruit, "Metals": metals, "Notes": [], "Birds": birds}
    write_files(tmp_path / "docs", {"book.xlsx": make_workbook(sheets)})
    rag = make_rag(summarize=False)
    assert rag.ingest(tmp_path / "docs").added == 1

    hit = rag.retrieve("Osmium density", top_k=3)[0]
    offset = hit.text.index("Osmium")
    assert (hit.sheet_of(offset), hit.page_of(offset)) == ("Metals", 2), (hit.sheet, hit.later_sheets, hit.page_starts)
    albatross = next(h for h in rag.retrieve("Wandering albatross wingspan", top_k=5) if "albatross" in h.text)
    assert albatross.sheet_of(albatross.text.index("albatross")) == "Birds"
    assert albatross.page_of(albatross.text.index("albatross")) == 4  # "Notes" is page 3, without text
    starts = {h.sheet for h in rag.retrieve("fruit apple orchard", top_k=20, mode="lexical")}
    assert "Fruit prices" in starts and starts <= set(sheets)
    spanning = [h for h in rag.retrieve("Metal Density Osmium fruit149", top_k=10, mode="lexical") if h.later_sheets]
    assert spanning and all(len(h.later_sheets) == len(h.page_starts) for h in spanning)

    # The API's JSON: hits (and sources, the same dataclass fields) and the passage view name the sheet.
    dumped = RetrieveResponse.model_validate({"hits": [hit.to_dict()]}).model_dump(mode="json")["hits"][0]
    assert dumped["sheet"] == hit.sheet and dumped["later_sheets"] == hit.later_sheets
    assert passage(hit.chunk_id, rag)["sheet"] == hit.sheet


def test_delete_and_filters(make_rag, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(docs, GARDEN)
    rag = make_rag()
    rag.ingest(docs)
    plants = str(docs / "plants")
    hits = rag.retrieve("water", top_k=5, path_prefix=plants)
    assert hits and all(h.document.startswith(plants) for h in hits)
    pests = next(d for d in rag.documents() if d.path.endswith("pests.html"))
    assert pests.title == "Garden pests"
    assert rag.delete(pests.id) >= 1
    assert all(d.id != pests.id for d in rag.documents())
    with pytest.raises(KeyError):
        rag.delete(pests.id)
    assert_consistent(rag)


def test_sdk_delete_removes_upload_files_only(make_rag, tmp_path: Path) -> None:
    """``RAG.delete`` (not only the API route) removes an uploaded document's file and the folders it leaves empty;
    a document outside ``<data_dir>/uploads`` stays on disk, and so does an upload's neighbour."""
    data = tmp_path / "data"
    uploads = data / "uploads" / "default"
    write_files(uploads, {"reports/2024/otters.txt": "Otters were counted near the river in May.",
                          "reports/herons.txt": "Herons nest in the tall alders by the lake."})
    write_files(tmp_path / "mine", {"badgers.txt": "Badgers dig their setts under the old hedge."})
    rag = make_rag(data, summarize=False)
    assert rag.ingest([uploads, tmp_path / "mine"]).added == 3

    assert rag.delete(str(uploads / "reports/2024/otters.txt")) >= 1
    assert not (uploads / "reports/2024").exists(), "the upload and its emptied folder are gone"
    assert (uploads / "reports/herons.txt").exists(), "a neighbour upload is kept"
    herons = next(d for d in rag.documents() if d.path.endswith("herons.txt"))
    rag.delete(herons.id)  # by id too
    assert not (data / "uploads" / "default").exists() and (data / "uploads").is_dir()

    assert rag.delete(str(tmp_path / "mine" / "badgers.txt")) >= 1
    assert (tmp_path / "mine" / "badgers.txt").read_text().startswith("Badgers"), "a user's own file is never deleted"
    assert rag.documents() == []
    assert_consistent(rag)


def test_mixed_real_files(make_rag) -> None:
    mixed = shared_data("mixed-docs")
    rag = make_rag()
    report = rag.ingest(mixed)
    assert len(report.files) >= 40
    assert report.added >= 20
    for f in report.failures:
        assert f.error, f.path
    assert_consistent(rag)


def test_retrieval_quality_on_squad_paragraphs(make_rag, tmp_path: Path) -> None:
    from tests.conftest import write_squad_corpus

    questions = write_squad_corpus(tmp_path / "squad")
    rag = make_rag()
    report = rag.ingest(tmp_path / "squad")
    assert report.added >= 150
    sample = questions[::5]
    found = 0
    for q in sample:
        names = {Path(h.document).stem for h in rag.retrieve(q["question"], top_k=5)}
        found += bool(names & set(q["gold_ids"]))
    assert found / len(sample) >= 0.8, f"hit@5 {found}/{len(sample)}"
    dense = rag.retrieve(sample[0]["question"], top_k=3, mode="dense")
    assert all(h.dense_score is not None for h in dense)
    assert np.all(np.diff([h.score for h in dense]) <= 0)


def test_postgres_store(pg_url: str, make_rag, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(docs, GARDEN)
    rag = make_rag(tmp_path / "pgdata", database_url=pg_url)
    assert rag.ingest(docs).added == 3
    assert rag.ingest(docs).unchanged == 3
    assert rag.retrieve("aphids", top_k=1)[0].document.endswith("pests.html")
    assert_consistent(rag)


def deep_folder(base: Path, min_bytes: int = 3000) -> Path:
    """A real nested folder whose path is at least ``min_bytes`` long, of random (incompressible) names: PostgreSQL
    compresses an index entry before checking its size, so a repetitive path would slip under the btree's limit."""
    folder = base
    while len(str(folder).encode()) < min_bytes:
        folder = folder / os.urandom(100).hex()
    folder.mkdir(parents=True)
    return folder


def test_postgres_takes_paths_over_the_btree_limit(pg_url: str, make_rag, tmp_path: Path) -> None:
    """A ~3 KB path (over PostgreSQL's 2,704-byte btree entry) is stored, for an indexed file and for a failed one
    (whose record once failed the whole job with "index row size exceeds btree maximum"); lookups by path work."""
    docs = tmp_path / "docs"
    deep = deep_folder(docs)
    (deep / "otters.txt").write_text("Otters were counted near the river in May.")
    (deep / "broken.pdf").write_bytes(b"not a pdf at all")
    (docs / "herons.txt").write_text("Herons nest in the tall alders by the lake.")
    assert len(str(deep / "otters.txt").encode()) > 3000
    rag = make_rag(tmp_path / "pgdata", database_url=pg_url, summarize=False)
    report = rag.ingest(docs)
    assert (report.added, report.failed) == (2, 1), report.to_dict()
    failed = next(d for d in rag.documents() if d.status == "failed")
    assert failed.path == str(deep / "broken.pdf") and failed.error
    assert rag.retrieve("otters river", top_k=1)[0].document == str(deep / "otters.txt")
    assert rag.ingest(docs).unchanged == 2  # the long path's row is found again, not added twice
    assert rag.delete(str(deep / "otters.txt")) >= 1
    assert_consistent(rag)


def test_a_delete_does_not_wait_for_a_running_ingestion(make_rag, tmp_path: Path) -> None:
    """A delete is one short transaction ordered by the change log: it must not queue behind the ingestion's
    collection lock (which once froze API threads for a whole job)."""
    docs, more = tmp_path / "docs", tmp_path / "more"
    write_files(docs, GARDEN)
    write_files(more, {f"m{i:03d}.txt": f"Document {i}. " + " ".join(f"word{i}_{j}" for j in range(200)) for i in range(40)})
    rag = make_rag(embed_batch_size=4)
    rag.ingest(docs)
    started = threading.Event()
    job = threading.Thread(target=lambda: rag.ingest(more, progress=lambda *_: started.set()))
    job.start()
    assert started.wait(120)
    t = time.monotonic()
    removed = rag.delete(str(docs / "pests.html"))
    took = time.monotonic() - t
    still_running = job.is_alive()
    job.join()
    assert removed > 0 and still_running, "the ingestion ended before the delete could overlap it"
    assert took < 10, f"the delete waited {took:.1f}s"
    assert all(not h.document.endswith("pests.html") for h in rag.retrieve("aphids ladybirds", top_k=5))
    assert_consistent(rag)


ANIMALS = ["otters", "herons", "badgers", "falcons", "beavers", "lynxes", "walruses"]


def test_pdf_pages_are_stored_per_chunk(make_rag, tmp_path: Path) -> None:
    """Each passage knows the page it starts on and where later pages begin inside it, so a hit (and a span in it)
    names the right page of a generated multi-page PDF; page 3 has no text and must be skipped in the count."""
    from tests.test_readers import make_pdf

    pages = [
        " ".join(f"On page {k} the report counts {animal} near river {k}, site {j}." for j in range(12))
        if animal else ""
        for k, animal in enumerate([*ANIMALS[:2], None, *ANIMALS[2:]], 1)
    ]
    write_files(tmp_path / "docs", {"report.pdf": make_pdf(pages)})
    rag = make_rag(summarize=False)
    assert rag.ingest(tmp_path / "docs").added == 1
    seen_inside, found = False, set()
    for k, text in enumerate(pages, 1):
        if not text:
            continue
        phrase = text.split(" ")[6]  # the animal: one word, on one page only
        for hit in rag.retrieve(phrase, top_k=8, mode="lexical"):
            offset = hit.text.find(f"the report counts {phrase}")
            if offset >= 0:
                assert hit.page_of(offset) == k, (k, hit.page, hit.page_starts)
                seen_inside |= bool(hit.page_starts)
                found.add(k)
    assert found == {1, 2, 4, 5, 6, 7, 8}
    assert seen_inside, "some chunk spans a page break"
    assert {h.page for h in rag.retrieve("report counts", top_k=20, mode="lexical")} <= {1, 2, 4, 5, 6, 7, 8}

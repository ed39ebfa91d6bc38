"""Watched folders: real files in a temporary folder, real inotify (and polling) events through watchdog, the real
embedder, SQLite, FAISS and tantivy; ``rag serve`` and ``rag watch`` as real subprocesses.

"Nothing re-embedded" is read from the embedder itself: its ``embed`` is wrapped (the real model still runs) to
record every document text it is given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select

from rag import RAG
from rag.settings import Settings, WatchedFolder, describe_settings_error
from rag.store.schema import IndexLogEntry
from rag.types import WatchStatus
from tests.api_server import ApiServer, server_env
from tests.conftest import REPO, write_files
from tests.test_workers import AMQP, Workers, queue_name, workers  # noqa: F401 - the fixtures, by name

T = TypeVar("T")
COLLECTION = "notes"
TEXTS = {
    "normans": "The Normans gave their name to Normandy, a region in northern France settled by Norse raiders.",
    "amazon": "The Amazon rainforest covers most of the Amazon basin of South America, seven million square km.",
    "volcano": "Mount Etna is an active volcano on the east coast of Sicily whose lava flows shaped Catania.",
    "bees": "Honey bees tell the direction of flowers with a waggle dance; a colony has one queen and many workers.",
    "trains": "The Shinkansen high-speed railway in Japan opened in 1964 between Tokyo and Osaka at 210 km/h.",
    "cheese": "Parmigiano Reggiano is a hard cheese from northern Italy aged for at least twelve months.",
}


def wait_for(check: Callable[[], T], what: str, timeout: float = 45.0) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout:.0f}s: {what}")
        time.sleep(0.05)


class Embedded:
    """The document texts the shared embedder embeds (questions are not counted)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def wrap(self, embed: Callable[..., Any]) -> Callable[..., Any]:
        def counting(texts: list[str], *, query: bool = False) -> Any:
            if not query:
                self.texts.extend(texts)
            return embed(texts, query=query)

        return counting

    def about(self, word: str) -> list[str]:
        return [t for t in self.texts if word in t]


@pytest.fixture
def embedded(make_rag: Callable[..., RAG], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Embedded:
    """Every RAG of this test process shares one embedder (``load_embedder``): its document embeddings recorded."""
    recorder = Embedded()
    embedder = make_rag(tmp_path / "probe").embedder
    monkeypatch.setattr(embedder, "embed", recorder.wrap(embedder.embed))
    return recorder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "docs"
    path.mkdir()
    return path


def start(rag: RAG, folder: Path, collection: str = COLLECTION) -> Any:
    """Watch ``folder`` and wait for its catch-up scan to end."""
    watcher = rag.watch([WatchedFolder(path=folder, collection=collection)])
    wait_for(lambda: watching(watcher), "the catch-up scan ends")
    return watcher


def watching(watcher: Any) -> WatchStatus | None:
    """The folder's status once everything noticed is applied (the catch-up scan included)."""
    status = watcher.status()[0]
    return status if status.state == "watching" and status.backlog == 0 and status.rescans else None


def paths(rag: RAG, collection: str = COLLECTION) -> set[str]:
    return {d.path for d in rag.documents(collection)}


def hit_paths(rag: RAG, query: str, mode: str, collection: str = COLLECTION) -> list[str]:
    return [h.document for h in rag.retrieve(query, top_k=3, collection=collection, mode=mode)]


def found_by_both(rag: RAG, path: Path, text: str, word: str) -> bool:
    """Both retrievers return ``path``: dense for its own text, lexical for a word of it."""
    if str(path) not in paths(rag):
        return False
    return hit_paths(rag, text, "dense")[:1] == [str(path)] and str(path) in hit_paths(rag, word, "lexical")


def log_entries(rag: RAG) -> int:
    with rag.store.session() as s:
        return int(s.scalar(select(func.count()).select_from(IndexLogEntry)) or 0)


# --- every kind of change ---------------------------------------------------------------------------------------
def test_create_modify_delete_reach_both_retrievers(make_rag, folder: Path, embedded: Embedded) -> None:
    rag = make_rag()
    watcher = start(rag, folder)
    note = folder / "sub" / "history.txt"
    write_files(folder, {"sub/history.txt": TEXTS["normans"]})
    wait_for(lambda: found_by_both(rag, note, TEXTS["normans"], "Normandy"), "a created file is searchable")

    note.write_text(TEXTS["amazon"])
    wait_for(lambda: found_by_both(rag, note, TEXTS["amazon"], "rainforest"), "a modified file's new text is found")
    assert str(note) not in hit_paths(rag, "Normandy", "lexical")  # the old text left the lexical index
    assert len(embedded.about("Normans")) == len(embedded.about("rainforest")) == 1

    note.unlink()
    wait_for(lambda: not paths(rag), "a deleted file leaves the collection")
    assert hit_paths(rag, "rainforest", "lexical") == [] and hit_paths(rag, TEXTS["amazon"], "dense") == []
    status = wait_for(lambda: watching(watcher), "the batch ends")
    assert status.observer == "inotify" and status.counts["added"] == 1 and status.counts["updated"] == 1
    assert status.counts["removed"] == 1 and status.last_change is not None


def test_atomic_saves_replace_the_original(make_rag, folder: Path, embedded: Embedded) -> None:
    """An editor writes a temporary file and renames it over the original: the original path gets the new text,
    the temporary file never becomes a document of its own."""
    write_files(folder, {"plan.txt": TEXTS["volcano"]})
    rag = make_rag()
    start(rag, folder)
    doc_id = rag.document(str(folder / "plan.txt")).id

    temp = folder / ".plan.txt.swx3f1"  # hidden, as editors name them
    temp.write_text(TEXTS["bees"])
    os.replace(temp, folder / "plan.txt")
    wait_for(lambda: found_by_both(rag, folder / "plan.txt", TEXTS["bees"], "waggle"), "the saved text is found")
    assert paths(rag) == {str(folder / "plan.txt")} and rag.document(doc_id).path == str(folder / "plan.txt")

    # A temporary name ingestion would take, already indexed when the rename lands: the document with that
    # content takes the original's path (the original's old document goes), nothing is embedded again.
    draft = folder / "plan-draft.txt"
    draft.write_text(TEXTS["trains"])
    wait_for(lambda: str(draft) in paths(rag), "the draft is indexed")
    before = len(embedded.texts)
    os.replace(draft, folder / "plan.txt")
    wait_for(lambda: found_by_both(rag, folder / "plan.txt", TEXTS["trains"], "Shinkansen"), "the draft is the plan")
    assert paths(rag) == {str(folder / "plan.txt")}
    assert len(embedded.texts) == before
    assert hit_paths(rag, "waggle", "lexical") == []


def test_renaming_a_file_reembeds_nothing(make_rag, folder: Path, embedded: Embedded) -> None:
    write_files(folder, {"a.txt": TEXTS["cheese"], "b.txt": TEXTS["normans"]})
    rag = make_rag()
    watcher = start(rag, folder)
    old, new = folder / "a.txt", folder / "kept" / "parmesan.txt"
    doc_id = rag.document(str(old)).id
    embedded_before, log_before = len(embedded.texts), log_entries(rag)

    new.parent.mkdir()
    old.rename(new)
    wait_for(lambda: paths(rag) == {str(new), str(folder / "b.txt")}, "the document takes the new path")
    assert len(embedded.texts) == embedded_before  # no chunk embedded again
    assert log_entries(rag) == log_before  # no chunk added or removed: nothing for the indexes to apply
    assert rag.document(doc_id).path == str(new)  # the same document, its summary and links kept
    assert hit_paths(rag, "Parmigiano", "lexical") == [str(new)]
    assert hit_paths(rag, TEXTS["cheese"], "dense")[0] == str(new)
    assert wait_for(lambda: watching(watcher), "the batch ends").counts.get("moved") == 1


def test_renaming_a_folder_reembeds_nothing(make_rag, folder: Path, embedded: Embedded) -> None:
    files = {f"projects/alpha/{name}.txt": text for name, text in TEXTS.items()}
    files["projects/alpha/deeper/more.md"] = "# Deeper\n\nA nested note about the Danube delta and its pelicans."
    write_files(folder, files)
    rag = make_rag()
    start(rag, folder)
    embedded_before, log_before = len(embedded.texts), log_entries(rag)

    (folder / "archive").mkdir()
    (folder / "projects" / "alpha").rename(folder / "archive" / "alpha-2024")
    moved = {str(folder / name.replace("projects/alpha", "archive/alpha-2024")) for name in files}
    wait_for(lambda: paths(rag) == moved, "every document of the folder takes its new path")
    assert len(embedded.texts) == embedded_before and log_entries(rag) == log_before
    assert hit_paths(rag, "pelicans Danube", "lexical") == [str(folder / "archive/alpha-2024/deeper/more.md")]
    assert hit_paths(rag, TEXTS["volcano"], "dense")[0] == str(folder / "archive/alpha-2024/volcano.txt")

    # Moved out of the watched folder: gone from the collection. Moved back in: walked and added.
    outside = folder.parent / "elsewhere"
    (folder / "archive" / "alpha-2024").rename(outside)
    wait_for(lambda: not paths(rag), "a folder moved away takes its documents")
    outside.rename(folder / "back")
    wait_for(lambda: len(paths(rag)) == len(files), "a folder moved in is ingested")


def test_a_burst_becomes_batches(make_rag, folder: Path) -> None:
    rag = make_rag()
    (folder / "memo-0000.txt").write_text("Memo 0: the quarterly figure for region 0 is 0 units.")
    watcher = start(rag, folder)
    generation = rag.store.collection(COLLECTION).generation
    n = 300
    for i in range(1, n):
        (folder / f"memo-{i:04d}.txt").write_text(f"Memo {i}: the quarterly figure for region {i} is {i * 7} units.")
    status = wait_for(lambda: len(paths(rag)) == n and watching(watcher), f"all {n} files indexed", timeout=180)
    commits = rag.store.collection(COLLECTION).generation - generation
    assert status.counts["added"] == n  # the catch-up's one, then the burst's
    assert commits <= status.batches < n // 10  # one commit per batch here (< 512 chunks each), not one per file
    assert hit_paths(rag, "region 123", "lexical")[0] == str(folder / "memo-0123.txt")


def test_a_full_backlog_turns_into_a_rescan(make_rag, folder: Path) -> None:
    rag = make_rag(watch_max_backlog=10)
    watcher = start(rag, folder)
    for i in range(60):
        (folder / f"log-{i:02d}.txt").write_text(f"Entry {i} of the ship's log: wind force {i % 12}.")
    status = wait_for(lambda: len(paths(rag)) == 60 and watching(watcher), "all files indexed after the rescan")
    assert status.rescans >= 2  # the catch-up at start, then the one that replaced the overflowing backlog


def test_a_file_still_being_written_is_ingested_once_complete(make_rag, folder: Path, embedded: Embedded) -> None:
    rag = make_rag(watch_debounce_s=1.0)
    start(rag, folder)
    with open(folder / "growing.txt", "w") as fh:
        for piece in range(6):  # 2 s of writing, a write every 0.4 s: never quiet for the debounce
            fh.write(f"Part {piece} of the expedition diary: camp {piece} reached at dawn. ")
            fh.flush()
            time.sleep(0.4)
    wait_for(lambda: "Part 5" in " ".join(embedded.about("expedition")), "the whole file is indexed")
    assert len(embedded.about("expedition")) == 1  # embedded once, complete: never a partial version


# --- restarts, ignore rules, observers ----------------------------------------------------------------------------
def test_a_restart_applies_what_changed_while_stopped(make_rag, folder: Path, tmp_path: Path,
                                                      embedded: Embedded) -> None:
    write_files(folder, {f"{name}.txt": text for name, text in list(TEXTS.items())[:4]})
    first = make_rag()
    start(first, folder)
    first.close()  # stops the watcher

    (folder / "normans.txt").write_text(TEXTS["trains"])  # modified
    (folder / "amazon.txt").unlink()  # deleted
    (folder / "volcano.txt").rename(folder / "etna.txt")  # renamed
    (folder / "cheese.txt").write_text(TEXTS["cheese"])  # added
    before = len(embedded.texts)

    again = make_rag(tmp_path / "data")  # the same data directory, a new process's engine
    start(again, folder)
    assert paths(again) == {str(folder / n) for n in ("normans.txt", "etna.txt", "bees.txt", "cheese.txt")}
    assert sorted(embedded.texts[before:]) == sorted([TEXTS["trains"], TEXTS["cheese"]])  # the rename: none
    assert hit_paths(again, "Etna Sicily", "lexical") == [str(folder / "etna.txt")]
    assert hit_paths(again, "Shinkansen", "lexical") == [str(folder / "normans.txt")]


def test_ragignore_hidden_files_and_the_data_directory_stay_out(make_rag, folder: Path) -> None:
    data = folder / "index-data"  # the data directory inside the watched folder, under a name no rule ignores
    rag = make_rag(data)
    upload = data / "uploads" / "notes" / "report.txt"
    write_files(upload.parent, {"report.txt": TEXTS["amazon"]})
    rag.ingest(upload, COLLECTION)  # an uploaded document of the same collection: not the folder's to remove
    write_files(folder, {".ragignore": "drafts\n*.log\n"})
    watcher = start(rag, folder)

    write_files(folder, {
        "drafts/idea.txt": TEXTS["bees"], "build.log": "log line about the waggle", ".hidden.txt": TEXTS["cheese"],
        "index-data/stray.txt": TEXTS["trains"], "kept.txt": TEXTS["normans"],
    })
    wait_for(lambda: str(folder / "kept.txt") in paths(rag), "the file no rule leaves out is indexed")
    time.sleep(1.5)  # what was left out would have come in the same batch or right after it
    assert paths(rag) == {str(upload), str(folder / "kept.txt")}

    with open(folder / ".ragignore", "a") as fh:
        fh.write("kept.txt\n")
    wait_for(lambda: paths(rag) == {str(upload)}, "a file a new .ragignore rule leaves out leaves the collection")
    assert wait_for(lambda: watching(watcher), "the batch ends").error is None


def test_polling_sees_creates_and_renames(make_rag, folder: Path, embedded: Embedded) -> None:
    """The observer for network mounts: snapshots compared every RAG_WATCH_POLL_S (a rename is a delete and a
    create there; the content hash still makes it a move)."""
    rag = make_rag(watch_observer="polling", watch_poll_s=0.3)
    watcher = start(rag, folder)
    assert watcher.status()[0].observer == "polling"
    (folder / "one.txt").write_text(TEXTS["bees"])
    wait_for(lambda: found_by_both(rag, folder / "one.txt", TEXTS["bees"], "waggle"), "a created file is found")
    before = len(embedded.texts)
    (folder / "one.txt").rename(folder / "two.txt")
    wait_for(lambda: paths(rag) == {str(folder / "two.txt")}, "the rename is applied")
    assert len(embedded.texts) == before


def test_a_missing_folder_is_waited_for(make_rag, tmp_path: Path) -> None:
    later = tmp_path / "mounted-later"
    rag = make_rag()
    watcher = rag.watch([WatchedFolder(path=later, collection=COLLECTION)])
    assert wait_for(lambda: watcher.status()[0].state == "missing", "the folder is reported missing")
    write_files(later, {"arrived.txt": TEXTS["volcano"]})
    wait_for(lambda: str(later / "arrived.txt") in paths(rag), "the folder is watched once it exists", timeout=60)


def test_watch_settings_as_a_person_types_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", watch=f"{tmp_path}/docs=handbook, {tmp_path}/wiki")
    assert settings.watch == [WatchedFolder(path=tmp_path / "docs", collection="handbook"),
                              WatchedFolder(path=tmp_path / "wiki", collection="default")]
    for bad, says in [("=handbook", "names no folder"), (f"{tmp_path}/docs=", "names no collection"),
                      (f"{tmp_path}/data/uploads=x", "inside the data directory")]:
        with pytest.raises(ValueError) as caught:
            Settings(data_dir=tmp_path / "data", watch=bad)
        line = describe_settings_error(caught.value)  # type: ignore[arg-type]
        assert line.startswith("invalid setting RAG_WATCH: ") and says in line and "\n" not in line


def test_with_a_broker_batches_become_tasks_for_workers(make_rag, folder: Path, pg_url: str,
                                                        request: pytest.FixtureRequest, embedded: Embedded) -> None:
    """The watcher only plans (moves and deletes are short transactions it makes itself); `rag worker` processes
    parse, embed and commit. The database is shared (PostgreSQL), as the workers' processes need."""
    pool: Workers = request.getfixturevalue("workers")  # tests/test_workers.py's: skipped without RabbitMQ
    pool.start(1)
    rag = make_rag(database_url=pg_url, broker_url=AMQP, queue_name=pool.queue)
    write_files(folder, {"minutes.txt": TEXTS["trains"]})
    watcher = start(rag, folder)
    wait_for(lambda: str(folder / "minutes.txt") in paths(rag), "a worker ingests the file",
             timeout=240)
    (folder / "minutes.txt").rename(folder / "minutes-2024.txt")
    wait_for(lambda: paths(rag) == {str(folder / "minutes-2024.txt")}, "the watcher moves the document")
    assert embedded.texts == []  # this process embedded nothing: the worker did, and the move needs nobody
    assert hit_paths(rag, "Shinkansen", "lexical") == [str(folder / "minutes-2024.txt")]
    status = wait_for(lambda: watching(watcher), "the batch ends")
    assert status.counts["queued"] == 1 and status.counts["moved"] == 1


# --- the faces ------------------------------------------------------------------------------------------------------
def test_rag_watch_in_the_foreground(tmp_path: Path, folder: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "watch", str(folder), "--collection", COLLECTION, "--data-dir", str(data)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        (folder / "field-notes.txt").write_text(TEXTS["volcano"])
        reader = RAG(data)
        try:
            wait_for(lambda: proc.poll() is None and str(folder / "field-notes.txt") in paths(reader),
                     "rag watch indexes a saved file", timeout=240)
        finally:
            reader.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "watching 1 folder(s)" in err and "1 added" in err  # the status line


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    base = tmp_path_factory.mktemp("serve-watch")
    folder = base / "handbook"
    write_files(folder, {"leave.txt": "Employees get 25 days of paid leave a year, booked through the HR portal."})
    env = server_env(tmp_path_factory.getbasetemp() / "shared-models", watch=f"{folder}={COLLECTION}")
    with ApiServer(base / "data", env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield client, folder


def test_serve_watches_its_folders(served: tuple[httpx.Client, Path]) -> None:
    client, folder = served

    def top(question: str) -> str | None:
        hits = client.post("/v1/retrieve", json={"question": question, "collection": COLLECTION, "top_k": 1})
        found = hits.raise_for_status().json()["hits"]
        return found[0]["document"] if found else None

    wait_for(lambda: top("How many days of paid leave?") == str(folder / "leave.txt"), "the catch-up scan's file")
    (folder / "expenses.txt").write_text("Travel expenses are refunded within 30 days when filed with receipts.")
    wait_for(lambda: top("When are travel expenses refunded?") == str(folder / "expenses.txt"), "a saved file")
    (folder / "expenses.txt").rename(folder / "travel-expenses.txt")
    wait_for(lambda: top("When are travel expenses refunded?") == str(folder / "travel-expenses.txt"), "the rename")

    answer = client.post("/v1/query", json={"question": "When are travel expenses refunded?",
                                            "collection": COLLECTION}).raise_for_status().json()
    assert answer["sources"][0]["document"] == str(folder / "travel-expenses.txt")
    (status,) = client.get("/v1/watch").raise_for_status().json()["folders"]
    assert status["path"] == str(folder) and status["collection"] == COLLECTION and status["state"] == "watching"
    assert status["observer"] == "inotify" and status["backlog"] == 0 and status["last_change"]
    assert status["counts"]["added"] == 2 and status["counts"]["moved"] == 1 and status["rescans"] == 1


def test_the_web_page_shows_the_watched_folders(served: tuple[httpx.Client, Path]) -> None:
    """The Documents screen in a real headless Chromium (as tests/test_web.py drives it): the folder with its state,
    and a file saved into it appears in the document list by itself."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (scripts/test installs it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api")
    client, folder = served
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium))
        try:
            page = browser.new_page(base_url=str(client.base_url))
            page.goto("/#documents")
            card = page.locator("#watch-list .watched")
            sync_api.expect(card).to_have_attribute("data-state", "watching", timeout=60_000)
            sync_api.expect(card).to_contain_text(f"{folder} into {COLLECTION}")
            (folder / "holidays.txt").write_text("The office closes for public holidays on 25 and 26 December.")
            sync_api.expect(page.locator("#doc-list")).to_contain_text("holidays.txt", timeout=60_000)
            sync_api.expect(card).to_contain_text("added")
        finally:
            browser.close()

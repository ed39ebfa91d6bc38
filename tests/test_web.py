"""The web page at ``/`` in a real headless browser: Debian's Chromium driven by Playwright, against a real
``rag serve`` (uvicorn, the small SmolLM2 model) that requires an API key.

One server and one browser tab (module scope) carry the session a person would have: enter the key once, upload,
ask, open a citation, delete. The wrong-key test gets a fresh browser context. Every request the page makes to any
origin other than the server is refused and recorded, so the tests also show the page works offline.

Screenshots of each screen go to ``$WEB_SCREENSHOTS`` when set (``docs/images`` for the README), else a temp dir.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_server import ApiServer, server_env

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (scripts/test installs it with apt-get)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

KEY = "web-test-key"
UPLOADS = {
    "volcanoes.txt": "Mount Etna is an active volcano on the east coast of Sicily. It erupts frequently and its lava "
    "flows have shaped the city of Catania.",
    "bees.md": "# Honey bees\n\nHoney bees communicate the direction of flowers with a waggle dance. A colony has one "
    "queen, thousands of workers and a few hundred drones.",
    "trains.txt": "The Shinkansen is a network of high-speed railway lines in Japan. Its trains reach 320 km/h and the "
    "first line opened in 1964 between Tokyo and Osaka.",
}
FOLDER_DOC = ("cheese.txt", ("Parmigiano Reggiano is a hard cheese from northern Italy, aged for at least twelve "
                            "months and made from raw cow's milk."))
TRAINS_QUESTION = "How fast do the Shinkansen trains in Japan go?"
SLOW = 180_000  # ms: model loads and ingestion on a shared 2-core CPU


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("WEB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's allowed root, with one folder to ingest from the page."""
    base = tmp_path_factory.mktemp("web")
    folder = base / "root" / "handbook"
    folder.mkdir(parents=True)
    (folder / FOLDER_DOC[0]).write_text(FOLDER_DOC[1])
    return base / "root"


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = server_env(models, api_keys=[KEY], allowed_roots=[str(root)], max_new_tokens=32,
                     summary_max_new_tokens=40)
    with ApiServer(root.parent / "data", env) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


class Session:
    """A browser context on the server: every request elsewhere is aborted and remembered, as are page errors."""

    def __init__(self, browser: Any, server: ApiServer, **context: Any) -> None:
        self.context = browser.new_context(base_url=server.url, **context)
        self.foreign: list[str] = []
        self.page_errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        self._origin = server.url

    def _route(self, route: Any) -> None:
        if route.request.url.startswith(self._origin):
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def check(self) -> None:
        assert self.foreign == [], f"the page reached outside the server: {self.foreign}"
        assert self.page_errors == [], f"errors in the page: {self.page_errors}"

    def close(self) -> None:
        self.check()
        self.context.close()


@pytest.fixture(scope="module")
def session(browser: Any, server: ApiServer) -> Iterator[Session]:
    """The person's tab: the key entered once, at desktop width."""
    s = Session(browser, server, viewport={"width": 1100, "height": 800})
    page = s.page
    page.goto("/")
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_role("button", name="Use this key").click()
    expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
    yield s
    s.close()


@pytest.fixture(scope="module")
def uploaded(session: Session) -> Any:
    """Three files dropped on the page together (with summaries), the job followed to its end; the job card."""
    page = session.page
    page.get_by_role("link", name="Documents").click()
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, text] of files) transfer.items.add(new File([text], name, { type: "text/plain" }));
            return transfer;
        }""",
        list(UPLOADS.items()),
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    page.get_by_label("Write summaries").check()
    page.get_by_role("button", name="Upload 3 files").click()
    card = page.locator(".job").first
    expect(card).to_have_attribute("data-state", "done", timeout=SLOW)
    return card


def _answer(page: Any, question: str) -> tuple[Any, bool]:
    """Ask on the Ask screen; the answer's list item, and whether text showed while it was still being written."""
    page.get_by_role("link", name="Ask").click()
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")  # Enter sends
    answer = page.locator(".turn.answer").last
    streamed = page.wait_for_function(
        """() => {
            const answer = [...document.querySelectorAll(".turn.answer")].pop();
            if (!answer) return false;
            if (answer.getAttribute("aria-busy") === "false") return "finished";
            return answer.querySelector(".answer-text").textContent.length > 0 ? "partial" : false;
        }""",
        timeout=SLOW,
    ).json_value() == "partial"
    expect(answer).to_have_attribute("aria-busy", "false", timeout=SLOW)
    return answer, streamed


@pytest.fixture(scope="module")
def answered(session: Session, uploaded: Any) -> tuple[Any, bool]:
    return _answer(session.page, TRAINS_QUESTION)


def test_page_and_assets_need_no_key_but_the_api_does(server: ApiServer) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/style.css", "/static/js/app.js", "/static/js/api.js"):
        assert httpx.get(f"{server.url}{asset}").status_code == 200, asset
    assert httpx.get(f"{server.url}/v1/documents").status_code == 401
    assert httpx.get(f"{server.url}/v1/nope").json()["error"]  # unknown API paths still answer the API's JSON


def test_passage_and_document_text_routes(server: ApiServer, uploaded: Any) -> None:
    """The two read-only routes the page adds: a cited passage with its page, and a document's text."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        doc = next(d for d in client.get("/v1/documents").json()["documents"] if d["path"].endswith("trains.txt"))
        text = client.get(f"/v1/documents/{doc['id']}/text").json()
        assert text["text"] == UPLOADS["trains.txt"] and text["page_starts"] == []
        hit = client.post("/v1/retrieve", json={"question": "Shinkansen", "top_k": 1}).json()["hits"][0]
        passage = client.get(f"/v1/chunks/{hit['chunk_id']}").json()
        assert passage["document_id"] == doc["id"] and passage["page"] is None and "Shinkansen" in passage["text"]
        assert client.get("/v1/chunks/2147483647").status_code == 404
        assert client.get("/v1/documents/2147483647/text").status_code == 404
        assert client.get("/v1/chunks/0").status_code == 422
    assert httpx.get(f"{server.url}/v1/documents/{doc['id']}/text").status_code == 401


def test_page_of_an_offset() -> None:
    from rag.types import page_at

    starts = [0, 17, 17, 40]  # page 2 has no text
    assert [page_at(starts, o) for o in (0, 16, 17, 39, 40, 99)] == [1, 1, 3, 3, 4, 4]
    assert page_at([], 5) is None and page_at(starts, None) is None


def test_stitch_cuts_the_overlap_between_chunks() -> None:
    from rag.store.document_text import indexed_text

    def stitch(rows: list) -> str:
        return indexed_text([(r.text, r.start_char, r.end_char) for r in rows])
    from rag.store.store import ChunkRow

    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota."

    def row(position: int, start: int | None, end: int) -> ChunkRow:
        return ChunkRow(position, 1, "x.txt", None, "chunk", position, text[start or 0:end], start, end)

    assert stitch([row(0, 0, 37), row(1, 18, 53)]) == text  # "Delta epsilon zeta." is in both
    assert stitch([row(0, 0, 17), row(1, 18, 53)]) == "Alpha beta gamma.\n\nDelta epsilon zeta. Eta theta iota."
    assert stitch([row(0, 0, 53), row(1, 18, 37)]) == text  # a chunk inside the one before adds nothing
    assert stitch([row(0, 0, 17), row(1, None, 53)]).count("Alpha") == 2  # no offsets: appended whole


def test_upload_three_files_and_watch_the_job(session: Session, uploaded: Any, shots: Path) -> None:
    page = session.page
    expect(uploaded.locator(".job-count")).to_have_text("3 of 3 files")
    expect(uploaded).to_contain_text("3 added")
    names = page.locator(".doc-name")
    expect(names).to_have_count(3)
    shown = " ".join(names.all_inner_texts())
    assert all(name in shown for name in UPLOADS), shown
    expect(page.locator(".doc").first.locator(".facts")).to_contain_text("indexed")
    expect(page.locator(".doc .summary")).to_have_count(3, timeout=SLOW)  # written in the background, then shown
    page.screenshot(path=shots / "web-documents.png", full_page=True)


def test_an_api_error_is_shown_in_plain_words(session: Session, root: Path, uploaded: Any, shots: Path) -> None:
    page = session.page
    page.get_by_role("link", name="Documents").click()
    page.get_by_label("Or a folder on the server").fill("/etc")
    page.get_by_role("button", name="Ingest folder").click()
    banner = page.get_by_role("alert").filter(has_text="could not be ingested")
    expect(banner.locator("p")).to_have_text(
        "The folder could not be ingested. Path '/etc' is outside the allowed roots.")
    page.screenshot(path=shots / "web-error.png")
    page.get_by_role("button", name="Dismiss").click()
    expect(banner).to_be_hidden()

    page.get_by_label("Or a folder on the server").fill(str(root / "handbook"))
    page.get_by_role("button", name="Ingest folder").click()
    expect(page.locator(".job").first).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(page.locator(".doc-name", has_text=FOLDER_DOC[0])).to_be_visible()


def test_ask_streams_a_cited_answer(session: Session, answered: tuple[Any, bool], shots: Path) -> None:
    answer, streamed = answered
    assert streamed, "the answer appeared all at once: no partial text was ever on screen"
    expect(answer).not_to_have_class("failed")
    expect(answer.locator(".answer-text")).not_to_be_empty()
    expect(answer.locator(".sources li").first).to_contain_text("trains.txt")
    expect(answer.locator("button.cite").first).to_be_visible()
    # Which path the answer took, in words, and its confidence.
    kind = answer.get_attribute("data-kind")
    who = {"generated": "Answer", "extractive": "Quoted from the documents", "abstained": "No answer in the documents"}
    assert kind in who
    expect(answer.locator(".who")).to_have_text(who[kind])
    expect(answer.locator(".meta").last).to_contain_text(re.compile(r"confidence \d+%"))
    session.page.screenshot(path=shots / "web-ask.png")


def test_a_citation_opens_its_passage_highlighted(session: Session, answered: tuple[Any, bool], shots: Path) -> None:
    page = session.page
    answer, _ = answered
    inline = answer.locator(".answer-text button.cite")
    (inline if inline.count() else answer.locator(".sources button.cite")).first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_contain_text("trains.txt")
    expect(dialog.locator(".passage-text")).to_contain_text("Shinkansen")
    expect(dialog.locator(".passage-text mark").first).to_be_visible()
    expect(dialog.locator(".meta")).to_contain_text("passage 1")
    page.screenshot(path=shots / "web-passage.png")

    dialog.get_by_role("link", name="Read the whole document").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#document-title")).to_have_text("trains.txt")
    expect(page.locator("#document-text")).to_contain_text("first line opened in 1964")
    expect(page.locator("#document-text mark")).to_contain_text("Shinkansen")
    page.screenshot(path=shots / "web-document.png")


def test_delete_a_document_removes_it_from_the_list_and_the_answers(
    session: Session, answered: tuple[Any, bool], shots: Path
) -> None:
    page = session.page
    page.get_by_role("link", name="Documents").click()
    page.get_by_role("button", name="Delete trains.txt").click()
    confirm = page.get_by_role("dialog")
    expect(confirm).to_contain_text("Delete trains.txt?")
    page.screenshot(path=shots / "web-delete.png")
    confirm.get_by_role("button", name="Delete").click()
    expect(page.locator(".doc-name", has_text="trains.txt")).to_have_count(0)
    expect(page.locator(".doc-name")).to_have_count(len(UPLOADS))  # two uploads and the folder's document

    answer, _ = _answer(page, TRAINS_QUESTION)
    expect(answer.locator(".answer-text")).not_to_be_empty()
    assert "trains.txt" not in " ".join(answer.locator(".sources").all_inner_texts())


def test_phone_width_and_keyboard_only(browser: Any, server: ApiServer, uploaded: Any, shots: Path) -> None:
    s = Session(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = s.page
    page.goto("/")
    key = page.get_by_label("API key", exact=True)
    expect(key).to_be_focused()  # the key form takes the focus on arrival
    page.keyboard.type(KEY)
    page.keyboard.press("Enter")
    question = page.get_by_label("Question")
    expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
    for _ in range(12):  # tab forward until the question field has the focus
        if question.evaluate("el => el === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(question).to_be_focused()
    page.keyboard.type("Which volcano shaped Catania?")
    page.keyboard.press("Enter")
    answer = page.locator(".turn.answer").last
    expect(answer).to_have_attribute("aria-busy", "false", timeout=SLOW)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways at phone width"
    page.screenshot(path=shots / "web-phone.png")
    s.close()


def test_a_wrong_key_is_refused_and_nothing_is_shown(browser: Any, server: ApiServer, uploaded: Any,
                                                      shots: Path) -> None:
    s = Session(browser, server, viewport={"width": 1100, "height": 800})
    page = s.page
    page.goto("/")
    page.get_by_label("API key", exact=True).fill("not-the-key")
    page.get_by_role("button", name="Use this key").click()
    refused = page.get_by_role("alert").filter(has_text="refused")
    expect(refused).to_be_visible()
    expect(refused).to_have_text("The server refused this key. Check it and try again.")
    expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
    assert page.locator(".doc, .turn, .job").count() == 0
    assert page.evaluate("sessionStorage.length + localStorage.length") == 0  # a refused key is not kept
    page.screenshot(path=shots / "web-key.png")
    s.close()

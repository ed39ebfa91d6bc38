"""Access control (issue 29) against real ``rag serve`` processes: keys scoped to collections and roles.

One SQLite server (module scope) holds two collections, ``alpha`` (A) and ``bravo`` (B), and carries the matrix:
every operation of its OpenAPI schema × seven principals × an object in A and one in B, asserting each status and
that no byte of B's documents reaches a key scoped to A (answers, sources, hits, listings, passages, SSE and
OpenAI streams). An operation the matrix has no case for fails it, as does a case whose role disagrees with the
``x-access`` the server publishes. The same server then shows the page in Chromium to a reader of A, and is
restarted to show that keys survive. Per-key limits get a small server of their own; revocation across replicas
gets two servers on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api_server import ApiServer, server_env, wait_job

A, B = "alpha", "bravo"
ENV_ADMIN = "env-admin-key"
DOCS = {
    A: {"volcano.txt": "Mount Etna is an active volcano on the east coast of Sicily. Its lava flows have shaped the "
                       "city of Catania.",
        "bees.txt": "Honey bees communicate the direction of flowers with a waggle dance."},
    B: {"b-ledger.txt": "The Zemvix corporation manufactures purple quorblats in a factory near Tallinn. Zemvix sold "
                        "4,200 quorblats last year.",
        "b-memo.txt": "Quorblat polishing at Zemvix requires a licence from the harbour office in Tallinn."},
}
LEAKS = ("zemvix", "quorblat", "bravo-files", "b-ledger", "b-memo", "bravo-spare")
"""What of B's documents (words only they hold, their folders and names) must never reach a key scoped to A."""
QUESTION = "What does the corporation near Tallinn manufacture?"  # B's documents answer it; none of LEAKS in it

UNAUTHENTICATED = ("no key", "wrong key", "expired key", "revoked key")
PRINCIPALS = ("no key", "wrong key", "reader of A", "writer of A", "admin", "expired key", "revoked key")
SCOPED_TO_A = ("reader of A", "writer of A")
ROLE = {"reader of A": "reader", "writer of A": "writer", "admin": "admin"}
RANK = {"reader": 0, "writer": 1, "admin": 2}
SLUG = {p: p.replace(" ", "-") for p in PRINCIPALS}


# --- the world: one server, two collections, a key per principal ------------------------------------------------
@dataclass
class World:
    server: ApiServer
    root: Path
    keys: dict[str, str | None]
    doc: dict[str, int]  # collection → a document that stays
    chunk: dict[str, int]
    job: dict[str, str]
    spare: dict[tuple[str, str], int]  # (principal, collection) → a document that cell may delete
    throwaway: dict[tuple[str, str], str]  # (principal, collection) → a key that cell may revoke
    writes: list[tuple[str, str, str | None, str]] = field(default_factory=list)  # (key, action, collection, target)

    def client(self, who: str = "env admin") -> httpx.Client:
        secret = ENV_ADMIN if who == "env admin" else self.keys[who]
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=300)


def _write_folder(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _ingest(admin: httpx.Client, folder: Path, collection: str) -> dict[str, Any]:
    r = admin.post("/v1/ingest", json={"paths": [str(folder)], "collection": collection})
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["job_id"])
    assert job["state"] == "done" and not job["errors"], job
    return job


def _key(admin: httpx.Client, name: str, role: str, collections: list[str] | None, **extra: Any) -> str:
    r = admin.post("/v1/keys", json={"name": name, "role": role, "collections": collections, **extra})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["key"].startswith("rag_") and body["name"] == name and body["collections"] == collections
    return body["key"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("access")
    root = base / "root"
    for collection, folder in ((A, "alpha-files"), (B, "bravo-files")):
        _write_folder(root / folder, DOCS[collection])
    for collection, prefix, word in ((A, "alpha-spare", "Etna"), (B, "bravo-spare", "Zemvix")):
        _write_folder(root / prefix, {f"{prefix}-{SLUG[p]}.txt": f"Spare note {p}: {word} {i}."
                                      for i, p in enumerate(PRINCIPALS)})
    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = server_env(models, api_keys=[ENV_ADMIN], allowed_roots=[str(root)])
    with ApiServer(base / "data", env) as server, httpx.Client(base_url=server.url, timeout=300,
                                                                headers={"Authorization": f"Bearer {ENV_ADMIN}"}) as admin:
        jobs = {c: _ingest(admin, root / f"{c}-files", c) for c in (A, B)}
        for c in (A, B):
            _ingest(admin, root / f"{c}-spare", c)
        docs = admin.get("/v1/documents").json()["documents"]
        by_name = {Path(d["path"]).name: d["id"] for d in docs}
        keys: dict[str, str | None] = {
            "no key": None, "wrong key": "rag_" + "x" * 43,
            "reader of A": _key(admin, "reader-a", "reader", [A]),
            "writer of A": _key(admin, "writer-a", "writer", [A]),
            "admin": _key(admin, "matrix-admin", "admin", None),
            "revoked key": _key(admin, "revoked-a", "writer", [A]),
        }
        assert admin.delete("/v1/keys/revoked-a").status_code == 200
        keys["expired key"] = _expired_key(base / "data")
        doc = {A: by_name["volcano.txt"], B: by_name["b-ledger.txt"]}  # documents that stay (spares go)
        chunk = {c: admin.post("/v1/retrieve", json={"question": "Etna" if c == A else "Zemvix", "collection": c,
                                                    "document_ids": [doc[c]], "top_k": 1}).json()["hits"][0]["chunk_id"]
                 for c in (A, B)}
        throwaway = {(p, c): f"throwaway-{SLUG[p]}-{c}" for p in PRINCIPALS for c in (A, B)}
        for name in throwaway.values():
            _key(admin, name, "reader", [name.rsplit("-", 1)[1]])
        yield World(
            server=server, root=root, keys=keys,
            doc=doc, chunk=chunk,
            job={c: jobs[c]["job_id"] for c in (A, B)},
            spare={(p, c): by_name[f"{c}-spare-{SLUG[p]}.txt"] for p in PRINCIPALS for c in (A, B)},
            throwaway=throwaway,
        )


def _expired_key(data_dir: Path) -> str:
    """A reader of A whose expiry has passed, written by the store as `rag keys create` would (the API only takes
    expiries in the future)."""
    from rag import Settings
    from rag.store.store import Store

    store = Store(Settings(data_dir=data_dir))
    try:
        return store.create_key("expired-a", "reader", [A], expires_in=timedelta(seconds=-1), actor="test")[1]
    finally:
        store.close()


# --- the matrix -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One request shape of an operation: what it needs, what it answers, and the request for a principal and a
    collection (``(method, url, httpx keyword arguments)``)."""

    role: str
    ok: int
    build: Callable[[World, str, str], dict[str, Any]]
    scoped: bool = True  # the request names an object or collection; A-scoped keys get 404 for B's
    every_collection: bool = False
    write: str | None = None  # the audit action a success records
    label: str = ""


def _json(body: dict[str, Any]) -> Callable[[World, str, str], dict[str, Any]]:
    return lambda w, who, c: {"json": {k: (c if v is _C else v) for k, v in body.items()}}


_C = object()  # "the cell's collection" inside a body template


def _chat(stream: bool) -> Callable[[World, str, str], dict[str, Any]]:
    return lambda w, who, c: {"json": {"model": f"rag:{c}", "messages": [{"role": "user", "content": QUESTION}],
                                       "top_k": 2, "stream": stream}}


def _upload(w: World, who: str, c: str) -> dict[str, Any]:
    text = f"Uploaded by {who}: " + ("Zemvix quorblats." if c == B else "Etna lava.")
    prefix = "bravo-spare" if c == B else "alpha"
    return {"files": [("files", (f"{prefix}-upload-{SLUG[who]}.txt", text.encode(), "text/plain"))],
            "data": {"collection": c}}


CASES: dict[tuple[str, str], list[Case]] = {
    ("POST", "/v1/ingest"): [
        Case("writer", 202, lambda w, who, c: {"json": {"paths": [str(w.root / f"{c}-files")], "collection": c}},
             write="ingest", label="server path"),
        Case("writer", 202, _upload, write="upload", label="upload"),
    ],
    ("GET", "/v1/jobs"): [Case("reader", 200, lambda w, who, c: {}, scoped=False)],
    ("GET", "/v1/jobs/{job_id}"): [Case("reader", 200, lambda w, who, c: {"path": {"job_id": w.job[c]}})],
    ("POST", "/v1/jobs/{job_id}/cancel"): [  # the job has finished: a key allowed to cancel gets 409
        Case("writer", 409, lambda w, who, c: {"path": {"job_id": w.job[c]}})],
    ("POST", "/v1/query"): [
        Case("reader", 200, _json({"question": QUESTION, "collection": _C, "top_k": 2}), label="json"),
        Case("reader", 200, _json({"question": QUESTION, "collection": _C, "top_k": 2, "stream": True}),
             label="sse"),
    ],
    ("POST", "/v1/retrieve"): [Case("reader", 200, _json({"question": QUESTION, "collection": _C, "top_k": 5}))],
    ("GET", "/v1/documents"): [
        Case("reader", 200, lambda w, who, c: {"params": {"collection": c}}, label="one collection"),
        Case("reader", 200, lambda w, who, c: {}, scoped=False, label="all"),
    ],
    ("GET", "/v1/documents/{document_id}"): [
        Case("reader", 200, lambda w, who, c: {"path": {"document_id": w.doc[c]}})],
    ("DELETE", "/v1/documents/{document_id}"): [
        Case("writer", 200, lambda w, who, c: {"path": {"document_id": w.spare[(who, c)]}}, write="delete")],
    ("GET", "/v1/documents/{document_id}/text"): [
        Case("reader", 200, lambda w, who, c: {"path": {"document_id": w.doc[c]}})],
    ("GET", "/v1/chunks/{chunk_id}"): [Case("reader", 200, lambda w, who, c: {"path": {"chunk_id": w.chunk[c]}})],
    ("GET", "/v1/collections"): [Case("reader", 200, lambda w, who, c: {}, scoped=False)],
    ("GET", "/v1/watch"): [Case("reader", 200, lambda w, who, c: {}, scoped=False)],
    ("GET", "/v1/models"): [Case("reader", 200, lambda w, who, c: {}, scoped=False)],
    ("POST", "/v1/chat/completions"): [Case("reader", 200, _chat(False), label="json"),
                                       Case("reader", 200, _chat(True), label="stream")],
    ("POST", "/tokenize"): [Case("reader", 200, lambda w, who, c: {"json": {"prompt": "hello"}}, scoped=False)],
    ("POST", "/detokenize"): [Case("reader", 200, lambda w, who, c: {"json": {"tokens": [1, 2]}}, scoped=False)],
    ("GET", "/metrics"): [Case("reader", 200, lambda w, who, c: {}, scoped=False, every_collection=True)],
    ("POST", "/v1/keys"): [Case("admin", 201, lambda w, who, c: {"json": {
        "name": f"made-by-{SLUG[who]}-{c}", "role": "reader", "collections": [c]}}, scoped=False, write="key.create")],
    ("GET", "/v1/keys"): [Case("admin", 200, lambda w, who, c: {}, scoped=False)],
    ("DELETE", "/v1/keys/{name}"): [
        Case("admin", 200, lambda w, who, c: {"path": {"name": w.throwaway[(who, c)]}}, scoped=False,
             write="key.revoke")],
    ("GET", "/v1/audit"): [Case("admin", 200, lambda w, who, c: {}, scoped=False)],
}
"""Every operation of the schema, as the test expects it to be guarded (independently of ``api/access.py``)."""


def expected_status(case: Case, who: str, collection: str) -> int:
    if who in UNAUTHENTICATED:
        return 401
    if RANK[ROLE[who]] < RANK[case.role] or (case.every_collection and who in SCOPED_TO_A):
        return 403
    if case.scoped and collection == B and who in SCOPED_TO_A:
        return 404
    return case.ok


def _send(w: World, who: str, method: str, path: str, request: dict[str, Any]) -> httpx.Response:
    url = path.format(**request.pop("path", {}))
    with w.client(who) as client:
        return client.request(method, url, **request)


@dataclass
class MatrixRun:
    cells: int = 0
    responses: dict[tuple[str, str, str, str], httpx.Response] = field(default_factory=dict)


@pytest.fixture(scope="module")
def matrix(world: World) -> MatrixRun:
    """Every case × principal × collection, sent once; each status is checked here, the rest by the tests below."""
    schema = httpx.get(f"{world.server.url}/openapi.json").json()
    operations = [(m.upper(), p, op) for p, ops in schema["paths"].items() for m, op in ops.items()
                  if p not in ("/healthz", "/readyz")]
    uncovered = [f"{m} {p}" for m, p, _ in operations if (m, p) not in CASES]
    assert not uncovered, f"operations without an access case in tests/test_access.py: {uncovered}"
    assert len(operations) == len(CASES), "a case for an operation the schema no longer has"
    run = MatrixRun()
    failures: list[str] = []
    for method, path, operation in operations:
        for case in CASES[(method, path)]:
            assert operation["x-access"] == {"role": case.role, "every_collection": case.every_collection}, \
                (method, path, operation["x-access"])
            for who in PRINCIPALS:
                for collection in (A, B):
                    request = case.build(world, who, collection)
                    target = dict(request.get("path", {}))
                    r = _send(world, who, method, path, request)
                    run.cells += 1
                    run.responses[(method, path, case.label, f"{who}|{collection}")] = r
                    want = expected_status(case, who, collection)
                    if r.status_code != want:
                        failures.append(f"{method} {path} {case.label} as {who} on {collection}: {r.status_code} "
                                        f"(expected {want}): {r.text[:200]}")
                    elif 200 <= want < 300 and case.write is not None:
                        world.writes.append(_audited(case, who, collection, target, r))
    assert not failures, f"{len(failures)} of {run.cells} cells:\n" + "\n".join(failures)
    return run


def _audited(case: Case, who: str, collection: str, target: dict[str, Any], r: httpx.Response) -> tuple:
    """What the audit log must hold for a write that succeeded: (key name, action, collection, target)."""
    name = {"writer of A": "writer-a", "admin": "matrix-admin"}[who]
    if case.write in ("ingest", "upload"):
        return name, case.write, collection, r.json()["job_id"]
    if case.write == "delete":
        return name, "delete", collection, str(target["document_id"])
    if case.write == "key.create":
        return name, "key.create", None, r.json()["name"]
    return name, "key.revoke", None, target["name"]


def test_matrix_statuses(matrix: MatrixRun) -> None:
    """Statuses are asserted while the matrix runs; here, its size: 22 operations, 26 request shapes."""
    assert matrix.cells == sum(len(cases) for cases in CASES.values()) * len(PRINCIPALS) * 2
    assert len(CASES) == 22 and matrix.cells == 364


def test_no_byte_of_b_reaches_a_key_scoped_to_a(matrix: MatrixRun) -> None:
    leaked = [f"{key}: {word}" for key, r in matrix.responses.items() if key[3].split("|")[0] in SCOPED_TO_A
              for word in LEAKS if word in r.text.lower()]
    assert not leaked, leaked
    # The check can fail: the same requests by the admin on B carry B's words.
    for shape in (("POST", "/v1/retrieve", ""), ("GET", "/v1/documents/{document_id}/text", ""),
                  ("POST", "/v1/query", "sse"), ("POST", "/v1/chat/completions", "stream")):
        assert "zemvix" in matrix.responses[(*shape, f"admin|{B}")].text.lower(), shape


def test_listings_show_only_the_keys_collections(world: World, matrix: MatrixRun) -> None:
    for who in SCOPED_TO_A:
        with world.client(who) as c:
            assert [x["name"] for x in c.get("/v1/collections").json()["collections"]] == [A]
            assert {d["collection"] for d in c.get("/v1/documents").json()["documents"]} == {A}
            jobs = c.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
            assert jobs and {j["collection"] for j in jobs} == {A}
    with world.client("admin") as c:
        assert {x["name"] for x in c.get("/v1/collections").json()["collections"]} == {A, B}
        assert {j["collection"] for j in c.get("/v1/jobs", params={"limit": 500}).json()["jobs"]} == {A, B}


def test_the_audit_log_holds_every_write_of_the_matrix(world: World, matrix: MatrixRun) -> None:
    with world.client() as admin:
        entries = admin.get("/v1/audit", params={"limit": 10_000}).json()["entries"]
        assert admin.get("/v1/audit", params={"key": "writer-a", "action": "delete"}).json()["entries"]
    logged = {(e["key"], e["action"], e["collection"], e["target"]) for e in entries}
    assert len(world.writes) == 13, world.writes  # writer of A: ingest, upload, delete in A; admin: 10 in A and B
    missing = [w for w in world.writes if w not in logged]
    assert not missing, missing
    deletes = [e for e in entries if e["action"] == "delete" and e["key"] == "matrix-admin"]
    assert len(deletes) == 2 and all(e["counts"]["chunks"] >= 1 for e in deletes)
    assert ("RAG_API_KEYS#1", "key.revoke", None, "revoked-a") in logged  # the fixture's own key change


def test_the_403_404_rule_leaks_no_existence(world: World, matrix: MatrixRun) -> None:
    """A key scoped to A gets the same answer for B's objects as for objects that do not exist, and a reader gets
    403 for a delete whatever the id."""
    with world.client("writer of A") as c:
        for path in ("/v1/documents/{}", "/v1/documents/{}/text"):
            hidden, absent = c.get(path.format(world.doc[B])), c.get(path.format(2_000_000_000))
            assert hidden.status_code == absent.status_code == 404
            assert hidden.json()["error"]["message"].replace(str(world.doc[B]), "N") == \
                absent.json()["error"]["message"].replace("2000000000", "N")
        assert c.get(f"/v1/jobs/{world.job[B]}").json()["error"]["message"] == f"no job {world.job[B]!r}"
        assert c.get("/v1/documents", params={"collection": "no-such-collection"}).status_code == 404
        assert c.get("/v1/documents/%C2%B2").status_code == 422  # "²" is a digit to str.isdigit, not to int()
    with world.client("reader of A") as c:
        assert c.delete(f"/v1/documents/{world.doc[B]}").status_code == 403
        assert c.delete("/v1/documents/2000000000").status_code == 403


def test_scoped_key_answers_from_its_own_collections(world: World, matrix: MatrixRun) -> None:
    """Model ``rag`` (and a query without a collection) answers from the key's default collection — the first of
    its list when ``default`` is not on it — and ``rag:<collection>`` names one, through the official client."""
    oai = openai.OpenAI(base_url=f"{world.server.url}/v1", api_key=world.keys["reader of A"], max_retries=0,
                        timeout=300)
    resp = oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": "Which volcano shaped "
                                                                                          "Catania?"}],
                                       extra_body={"top_k": 1})
    assert resp.model == "rag" and [Path(s["document"]).name for s in resp.model_extra["sources"]] == ["volcano.txt"]
    stream = list(oai.chat.completions.create(model=f"rag:{A}", stream=True, extra_body={"top_k": 1},
                                              messages=[{"role": "user", "content": QUESTION}]))
    assert stream[-1].model == f"rag:{A}" and "zemvix" not in json.dumps([c.model_dump() for c in stream]).lower()
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model=f"rag:{B}", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": QUESTION}],
                                    extra_body={"collection": B})
    with world.client("reader of A") as c:
        body = c.post("/v1/query", json={"question": "Which volcano shaped Catania?", "top_k": 1}).json()
        assert [Path(s["document"]).name for s in body["sources"]] == ["volcano.txt"], body


def test_keys_are_stored_hashed_and_listed_without_secrets(world: World, matrix: MatrixRun) -> None:
    with world.client("admin") as c:
        listed = c.get("/v1/keys").json()["keys"]
        every = c.get("/v1/keys", params={"revoked": True}).json()["keys"]
    names = {k["name"] for k in listed}
    assert {"reader-a", "writer-a", "matrix-admin"} <= names and "revoked-a" not in names
    assert any(k["name"] == "revoked-a" and k["revoked_at"] for k in every)
    secrets = [world.keys[who] or "" for who in ("reader of A", "writer of A", "admin", "expired key", "revoked key")]
    assert all(s.startswith("rag_") and s not in json.dumps(every) for s in secrets)
    raw = b"".join(f.read_bytes() for f in world.server.data_dir.glob("rag.db*"))
    assert all(s.encode() not in raw for s in secrets)  # only their hashes are on disk
    assert all(s not in world.server.log_tail(1_000_000) for s in secrets)


# --- the web page in Chromium -----------------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")


def test_web_page_shows_a_reader_of_a_nothing_of_b(world: World, matrix: MatrixRun) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/test installs it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_context(base_url=world.server.url).new_page()
            responses: list[Any] = []  # every API response the page received
            page.on("response", lambda r: responses.append(r) if "/v1/" in r.url else None)
            page.goto("/")
            page.get_by_label("API key", exact=True).fill(world.keys["reader of A"] or "")
            page.get_by_role("button", name="Use this key").click()
            expect(page.locator("#collection option")).to_have_count(1)
            assert page.locator("#collection option").all_inner_texts() == [A]
            page.get_by_role("link", name="Documents").click()
            expect(page.locator(".doc-name").first).to_be_visible()
            names = page.locator(".doc-name").all_inner_texts()
            assert "volcano.txt" in names and not [n for n in names if "bravo" in n], names
            page.get_by_role("link", name="Ask").click()
            page.get_by_label("Question").fill(QUESTION)
            page.get_by_label("Question").press("Enter")
            expect(page.locator(".turn.answer").last).to_have_attribute("aria-busy", "false", timeout=300_000)
            html = page.content().lower()
            seen = [r.text() for r in responses]
        finally:
            browser.close()
    assert f">{B}<" not in html and f"'{B}'" not in html
    leaked = [w for w in LEAKS if w in html or any(w in text.lower() for text in seen)]
    assert not leaked, leaked
    calls = {r.url.split("/v1/", 1)[1].split("?")[0] for r in responses}
    assert {"collections", "documents", "jobs", "query"} <= calls, calls  # what was checked is what the page read


# --- restart ----------------------------------------------------------------------------------------------------
def test_keys_survive_a_restart(world: World, matrix: MatrixRun) -> None:
    """Last in the module: the server stops and starts again on the same data directory."""
    world.server.stop()
    world.server.proc = None
    world.server.start()
    with world.client("reader of A") as c:
        assert c.get("/v1/collections").json()["collections"][0]["name"] == A
        assert c.get(f"/v1/documents/{world.doc[B]}").status_code == 404
    with world.client("revoked key") as c:
        assert c.get("/v1/collections").status_code == 401
    with world.client("expired key") as c:
        assert c.get("/v1/collections").json()["error"]["message"] == "this API key has expired"
    with world.client("admin") as c:
        assert c.get("/v1/audit", params={"limit": 1}).status_code == 200


# --- per-key limits ---------------------------------------------------------------------------------------------
COUNTING = [{"role": "user", "content": "Count from 1 to 1000, separated by commas. Do not stop."}]


def test_per_key_limits(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Also: a server whose only keys are stored ones (no RAG_API_KEYS) starts with authentication on."""
    from rag import Settings
    from rag.store.store import Store

    store = Store(Settings(data_dir=tmp_path / "data"))
    keys = {n: store.create_key(n, "reader", None, actor="test")[1] for n in ("busy", "other", "third")}
    store.close()
    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = {**server_env(models, key_requests_per_minute=40, key_concurrent_answers=1), "RAG_AUTH": "on"}
    with ApiServer(tmp_path / "data", env) as srv, httpx.Client(base_url=srv.url, timeout=300) as c:
        assert c.get("/v1/collections").status_code == 401
        busy, other, third = ({"Authorization": f"Bearer {keys[n]}"} for n in ("busy", "other", "third"))
        llm = c.get("/v1/models", headers=busy).json()["data"][0]["id"]
        long = {"model": llm, "messages": COUNTING, "max_tokens": 400, "stream": True}
        short = {"model": llm, "messages": COUNTING, "max_tokens": 1}
        with c.stream("POST", "/v1/chat/completions", headers=busy, json=long) as held:
            assert held.status_code == 200
            next(held.iter_lines())  # the answer is in progress
            refused = c.post("/v1/chat/completions", headers=busy, json=short)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert c.post("/v1/chat/completions", headers=other, json=short).status_code == 200
        deadline = time.monotonic() + 30  # the slot is given back when the closed stream's response ends
        while (r := c.post("/v1/chat/completions", headers=busy, json=short)).status_code == 429:
            assert time.monotonic() < deadline, r.text
            time.sleep(1)  # "busy" stays under its 40 requests a minute
        assert r.status_code == 200
        # Requests per minute: "other" has made 1 of its 40.
        statuses = [c.get("/v1/collections", headers=other).status_code for _ in range(40)]
        assert statuses == [200] * 39 + [429], statuses
        limited = c.get("/v1/collections", headers=other)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
        assert c.get("/v1/collections", headers=third).status_code == 200  # another key is not held back


# --- two replicas on PostgreSQL ---------------------------------------------------------------------------------
def test_a_revoked_key_is_refused_within_a_second_on_every_replica(pg_url: str, tmp_path: Path,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = server_env(models, api_keys=[ENV_ADMIN], database_url=pg_url, llm_backend="openai",
                     llm_base_url="http://127.0.0.1:9/v1", llm_model="none")  # no LLM: these replicas only list
    replicas = [ApiServer(tmp_path / f"data-{i}", env) for i in (1, 2)]
    threads = [threading.Thread(target=r.start) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        one, two = (httpx.Client(base_url=r.url, timeout=60) for r in replicas)
        admin = {"Authorization": f"Bearer {ENV_ADMIN}"}
        secret = one.post("/v1/keys", headers=admin, json={"name": "roaming", "role": "reader",
                                                           "collections": [A]}).json()["key"]
        key = {"Authorization": f"Bearer {secret}"}
        assert one.get("/v1/collections", headers=key).status_code == 200
        assert two.get("/v1/collections", headers=key).status_code == 200  # made on one, known to the other
        assert two.delete("/v1/keys/roaming", headers=admin).status_code == 200
        revoked_at = time.monotonic()
        delays = {}
        for name, client in (("one", one), ("two", two)):
            while client.get("/v1/collections", headers=key).status_code != 401:
                assert time.monotonic() - revoked_at < 1.0, f"replica {name} still serves a revoked key"
            delays[name] = time.monotonic() - revoked_at
        assert max(delays.values()) < 1.0, delays
        print(f"revoked key refused after {delays} s")  # the measured delay, for the record (-s)
        audit = one.get("/v1/audit", headers=admin).json()["entries"]
        assert [(e["key"], e["action"], e["target"]) for e in audit[:2]] == [
            ("RAG_API_KEYS#1", "key.revoke", "roaming"), ("RAG_API_KEYS#1", "key.create", "roaming")]
    finally:
        for r in replicas:
            r.stop()


# --- no server needed -------------------------------------------------------------------------------------------
def test_a_route_without_a_rule_stops_the_server_from_starting(tmp_path: Path) -> None:
    from fastapi import FastAPI

    from api.access import check_rules
    from api.app import create_app
    from rag import Settings

    app = create_app(Settings(data_dir=tmp_path, auth=False))
    bare = FastAPI()

    @bare.get("/v1/new-thing")
    def new_thing() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="GET /v1/new-thing: no access rule"):
        check_rules(bare)
    assert app.state.access_rules  # the real app passed the same check


def test_key_records_and_durations(tmp_path: Path) -> None:
    from rag import Settings
    from rag.store.keys import Role, parse_duration
    from rag.store.store import Store

    assert parse_duration("30d") == timedelta(days=30) and parse_duration("90m") == timedelta(minutes=90)
    for bad in ("30", "0d", "3x", "-1d", "1.5h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert Role.ADMIN.covers(Role.WRITER) and Role.WRITER.covers(Role.READER) and not Role.READER.covers(Role.WRITER)
    store = Store(Settings(data_dir=tmp_path))
    try:
        info, secret = store.create_key("hr", "reader", ["hr", " handbook ", "hr"], actor="t")
        assert info.collections == ("hr", "handbook") and info.default_collection == "hr"
        assert store.key_for(secret) == info and store.key_for(secret + "x") is None
        with pytest.raises(ValueError, match="exists already"):
            store.create_key("hr", "writer", None, actor="t")
        with pytest.raises(ValueError, match="admin key sees every collection"):
            store.create_key("boss", "admin", ["hr"], actor="t")
        store.revoke_key("hr", actor="t")
        assert store.key_for(secret).refusal() == "this API key was revoked"
        again, _ = store.create_key("hr", "writer", None, actor="t")  # the name is free once revoked
        assert again.default_collection == "default" and again.sees("anything")
        with pytest.raises(KeyError):
            store.revoke_key("nobody", actor="t")
        assert [e.action for e in store.audit_log()] == ["key.create", "key.revoke", "key.create"]
    finally:
        store.close()

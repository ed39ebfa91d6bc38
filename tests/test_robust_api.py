"""Issue 16 against a real ``rag serve`` (uvicorn, small model) on 127.0.0.1: what an attacker or an unlucky client
sends must not overwrite, hang, keep useless files, or answer 500; and the model's queue holds only work that needs
the model.

The server is configured the way a person types settings (``RAG_API_KEYS=k1, k2``, a plain ``RAG_ALLOWED_ROOTS``,
comma-separated CORS origins), so every request here also proves those reach the server intact.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api_server import SMALL_LLM, ApiServer, server_env, wait_job

KEYS = ("key-one", "key-two")
FILE_LIMIT_MB = 0.02  # RAG_MAX_FILE_MB: 20 KB, so an upload under the request limit can be over the file limit
DOCS = {
    "volcanoes.txt": "Mount Etna is an active volcano on the east coast of Sicily. Its lava flows have shaped the city "
    "of Catania.",
    "bees.md": "# Honey bees\n\nHoney bees communicate the direction of flowers with a waggle dance.",
}
OFF_TOPIC = "qzx vbnm plokij wuxt?"  # nothing in the documents: the engine abstains without the model
COUNTING = [{"role": "user", "content": "Count from 1 to 1000, separated by commas. Do not stop."}]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("robust-api") / "root"
    docs = base / "docs"
    docs.mkdir(parents=True)
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    return base


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = server_env(models, max_upload_mb=1, max_file_mb=FILE_LIMIT_MB)
    env.update(RAG_ALLOWED_ROOTS=str(root), RAG_API_KEYS=" , ".join(KEYS), RAG_AUTH="on",
               RAG_CORS_ORIGINS="https://a.example, https://b.example")
    with ApiServer(root.parent / "data", env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {KEYS[1]}"}) as c:
        yield c


@pytest.fixture(scope="module")
def ingested(client: httpx.Client, root: Path) -> dict:
    job = wait_job(client, client.post("/v1/ingest", json={"paths": [str(root / "docs")]}).json()["job_id"])
    assert job["state"] == "done" and job["counts"]["added"] == len(DOCS), job
    return job


def _status(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text
    return r.json() if r.content else {}


def _documents(client: httpx.Client, collection: str) -> dict[str, dict]:
    listing = client.get("/v1/documents", params={"collection": collection}).json()["documents"]
    return {d["path"]: d for d in listing}


# --- settings as typed ----------------------------------------------------------------------------------------
def test_plain_and_comma_separated_settings_reach_the_server(server: ApiServer, client: httpx.Client,
                                                             ingested: dict) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/v1/collections").status_code == 401
        assert anonymous.get("/v1/collections", headers={"Authorization": f"Bearer {KEYS[0]}"}).status_code == 200
        preflight = anonymous.options("/v1/query", headers={"Origin": "https://b.example",
                                                            "Access-Control-Request-Method": "POST"})
        assert preflight.headers.get("access-control-allow-origin") == "https://b.example"
    assert ingested["state"] == "done"  # RAG_ALLOWED_ROOTS=<one plain path>
    assert "without API keys" not in server.log_tail(200_000)  # loopback and keys: no warning


# --- uploads: distinct, readable, and nothing kept that nothing uses -----------------------------------------
def test_uploads_keep_distinct_readable_names(server: ApiServer, client: httpx.Client) -> None:
    long_name = "quarterly-report-" + "x" * 300 + ".txt"
    files = [
        ("files", ("报告.txt", "报告: the harbour extension opens in March.".encode(), "text/plain")),
        ("files", ("合同.txt", "合同: the contract covers dredging the harbour basin.".encode(), "text/plain")),
        ("files", ("a/dup.txt", b"Folder a: lighthouse keepers log the weather.", "text/plain")),
        ("files", ("b/dup.txt", b"Folder b: ferries leave the pier every hour.", "text/plain")),
        ("files", ("same.txt", b"First same: gulls nest on the breakwater.", "text/plain")),
        ("files", ("same.txt", b"Second same: seals rest on the sandbank.", "text/plain")),
        ("files", (long_name, b"A long name: tugboats guide tankers to the berth.", "text/plain")),
    ]
    r = client.post("/v1/ingest", files=files, data={"collection": "up"})
    body = _status(r, 202)
    assert body["rejected"] == []
    job = wait_job(client, body["job_id"])
    assert job["state"] == "done" and job["counts"]["added"] == len(files), job

    folder = server.data_dir.resolve() / "uploads" / "up"
    docs = _documents(client, "up")
    names = {str(Path(p).relative_to(folder)) for p in docs}
    assert {"报告.txt", "合同.txt", "a/dup.txt", "b/dup.txt", "same.txt", "same (2).txt"} <= names, names
    long_saved = [n for n in names if n.startswith("quarterly-report-")]
    assert len(long_saved) == 1 and long_saved[0].endswith(".txt") and len(long_saved[0].encode()) <= 200
    assert all(d["status"] == "indexed" for d in docs.values())

    # Re-uploading one name updates that document and no other.
    again = [("files", ("报告.txt", "报告: the harbour extension now opens in May.".encode(), "text/plain"))]
    job = wait_job(client, _status(client.post("/v1/ingest", files=again, data={"collection": "up"}), 202)["job_id"])
    assert job["counts"]["updated"] == 1 and job["counts"]["added"] == 0, job
    assert len(_documents(client, "up")) == len(files)


def test_uploads_not_kept_when_unusable_or_deleted(server: ApiServer, client: httpx.Client) -> None:
    big = b"Waves. " * int(FILE_LIMIT_MB * 2**20)  # over RAG_MAX_FILE_MB, under RAG_MAX_UPLOAD_MB
    files = [("files", ("tool.exe", b"MZ\x90\x00", "application/octet-stream")),
             ("files", ("huge.txt", big, "text/plain")),
             ("files", ("keep.txt", b"Breakwaters protect the harbour from storm waves.", "text/plain"))]
    body = _status(client.post("/v1/ingest", files=files, data={"collection": "tidy"}), 202)
    assert {r["path"]: r["status"] for r in body["rejected"]} == {"tool.exe": "skipped", "huge.txt": "skipped"}
    assert "unsupported file type" in body["rejected"][0]["error"] and "RAG_MAX_FILE_MB" in body["rejected"][1]["error"]
    job = wait_job(client, body["job_id"])
    assert job["state"] == "done" and job["counts"]["added"] == 1, job
    folder = server.data_dir.resolve() / "uploads" / "tidy"
    assert sorted(p.name for p in folder.rglob("*")) == ["keep.txt"]

    nothing = _status(client.post("/v1/ingest", files=files[:2], data={"collection": "tidy"}), 422)
    assert "no upload can be ingested" in nothing["error"]["message"]
    assert sorted(p.name for p in folder.rglob("*")) == ["keep.txt"]

    (doc,) = _documents(client, "tidy").values()
    _status(client.delete(f"/v1/documents/{doc['id']}"), 200)
    assert not Path(doc["path"]).exists() and not folder.exists()


# --- ingestion jobs: a FIFO, an overlong path -----------------------------------------------------------------
def test_fifo_and_overlong_path_fail_alone_in_a_job(client: httpx.Client, root: Path) -> None:
    folder = root / "mixed"
    folder.mkdir()
    (folder / "quay.txt").write_text("The quay wall was rebuilt in granite after the storm of 1953.")
    os.mkfifo(folder / "pipe.txt")
    overlong = root / ("n" * 300 + ".txt")
    started = time.monotonic()
    r = client.post("/v1/ingest", json={"paths": [str(folder), str(overlong)], "collection": "jobs"})
    job = wait_job(client, _status(r, 202)["job_id"], timeout_s=120)
    assert job["state"] == "done", job
    assert time.monotonic() - started < 120
    assert job["counts"]["added"] == 1 and job["counts"]["skipped"] == 1 and job["counts"]["failed"] == 1, job
    errors = {Path(e["path"]).name: e for e in job["errors"]}
    assert "named pipe (FIFO)" in errors["pipe.txt"]["error"]
    assert "too long" in errors[overlong.name]["error"].lower()


# --- bad input is a 4xx ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ids", [[2**63], [2**64 + 5], [2**31], [0], [-1]])
def test_out_of_range_document_ids_are_422(client: httpx.Client, ingested: dict, ids: list[int]) -> None:
    for route in ("/v1/query", "/v1/retrieve"):
        _status(client.post(route, json={"question": "Where is Etna?", "document_ids": ids}), 422)
    assert client.get("/healthz").status_code == 200  # the same keep-alive connection still works


def test_largest_document_id_is_accepted(client: httpx.Client, ingested: dict) -> None:
    r = client.post("/v1/retrieve", json={"question": "Where is Etna?", "document_ids": [2**31 - 1]})
    assert _status(r, 200)["hits"] == []


def test_nul_characters_are_422(client: httpx.Client, ingested: dict) -> None:
    for route in ("/v1/query", "/v1/retrieve"):
        _status(client.post(route, json={"question": "Etna?", "collection": "de\x00fault"}), 422)
        _status(client.post(route, json={"question": "Etna?", "path_prefix": "/tmp\x00"}), 422)
    _status(client.get("/v1/documents", params={"collection": "a\x00"}), 422)


def test_deeply_nested_json_is_4xx(client: httpx.Client) -> None:
    body = b"[" * 50_000
    headers = {"content-type": "application/json"}
    error = _status(client.post("/v1/ingest", content=body, headers=headers), 422)["error"]
    assert "nested too deeply" in error["message"]
    for route in ("/v1/query", "/v1/retrieve", "/v1/chat/completions"):
        r = client.post(route, content=body, headers=headers)
        assert 400 <= r.status_code < 500, (route, r.status_code, r.text)


# --- the model's queue ------------------------------------------------------------------------------------------
def _open_counting_stream(client: httpx.Client, max_tokens: int, generating: bool = True) -> tuple[httpx.Response,
                                                                                                   Iterator[str]]:
    """A passthrough chat stream, which holds a model slot until it ends. Read up to its first piece of text
    (``generating``: the model is at work on it), or only to its first event (it holds a slot and waits for the
    model, which generates one request at a time)."""
    request = client.build_request("POST", "/v1/chat/completions", json={
        "model": SMALL_LLM, "messages": COUNTING, "max_tokens": max_tokens, "stream": True})
    response = client.send(request, stream=True)
    assert response.status_code == 200, response.read()
    lines = response.iter_lines()
    if generating:
        _skip_pieces(lines, 1)
    else:
        next(line for line in lines if line.startswith("data: "))
    return response, lines


def _skip_pieces(lines: Iterator[str], n: int) -> None:
    """Read ``n`` content pieces of a chat stream."""
    got = 0
    while got < n:
        line = next(lines)
        got += line.startswith("data: {") and '"content": "' in line and '"content": ""' not in line


def _drain(lines: Iterator[str]) -> None:
    for _ in lines:
        pass


def _clients(server: ApiServer, n: int, timeout: float = 600) -> list[httpx.Client]:
    return [httpx.Client(base_url=server.url, timeout=timeout, headers={"Authorization": f"Bearer {KEYS[0]}"})
            for _ in range(n)]


def test_abstaining_query_does_not_queue_behind_answers(server: ApiServer, ingested: dict) -> None:
    a, b, c = _clients(server, 3)
    with a, b, c:
        generating, generating_lines = _open_counting_stream(a, 100)  # both model slots taken (local backend: 2)
        waiting, waiting_lines = _open_counting_stream(b, 2, generating=False)
        try:
            started = time.monotonic()
            answer = c.post("/v1/query", json={"question": OFF_TOPIC})
            answered = time.monotonic()
            streamed = c.post("/v1/query", json={"question": OFF_TOPIC, "stream": True})
            _drain(generating_lines)
            still_generating = time.monotonic() - answered
            _drain(waiting_lines)
        finally:
            generating.close()
            waiting.close()
    assert answer.status_code == 200 and answer.json()["abstained"] is True, answer.text
    assert streamed.status_code == 200 and "event: done" in streamed.text and '"abstained": true' in streamed.text
    # The abstention came back while the first answer was still being generated: it did not wait for a slot.
    assert still_generating > 0.3, (answered - started, still_generating)


def test_generation_stops_when_the_client_goes_away(server: ApiServer, ingested: dict) -> None:
    a, b = _clients(server, 2)
    with a, b:
        # Left alone, it writes 400 tokens (temperature 0, counting to 1000): long enough that the abandoned rest
        # (~7 s on llama.cpp at ~55 tokens/s) stands far apart from the next request's own time (~0.5 s).
        response, lines = _open_counting_stream(a, 400)
        _skip_pieces(lines, 10)
        t0 = time.monotonic()
        _skip_pieces(lines, 10)
        rate = 10 / (time.monotonic() - t0)  # pieces per second while generating
        response.close()  # the client leaves with ~380 tokens to go
        started = time.monotonic()
        r = b.post("/v1/chat/completions", json={"model": SMALL_LLM, "messages": COUNTING, "max_tokens": 2})
        waited = time.monotonic() - started
    assert r.status_code == 200, r.text
    left = 380 / rate
    assert waited < left / 3, f"the next request waited {waited:.1f}s; the abandoned stream had {left:.1f}s to go"


def test_queued_request_whose_client_left_is_not_answered(server: ApiServer, ingested: dict) -> None:
    a, b, impatient = _clients(server, 3)
    impatient.timeout = httpx.Timeout(1.0)
    with a, b, impatient:
        # Both model slots taken; the (response, lines) pairs are kept, as dropping the lines closes the stream.
        streams = [_open_counting_stream(a, 200), _open_counting_stream(b, 200, generating=False)]
        try:
            with pytest.raises(httpx.ReadTimeout):  # it queues behind both slots, and its client gives up
                impatient.post("/v1/query", json={"question": "Which volcano shaped Catania?"})
            # Noticed while both answers are still being generated, not when a slot comes free.
            deadline = time.monotonic() + 30
            while "the client left while waiting for the model" not in server.log_tail(200_000):
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
        finally:
            for response, _ in streams:
                response.close()


# --- issue 32: no stored string breaks a listing, every client string checked at the edge ----------------------
def test_a_folder_with_a_name_that_is_not_utf8_is_ingested_whole(client: httpx.Client, root: Path) -> None:
    """Before: the job's progress message (``last file: <path>``) could not be written to SQL and the whole job
    failed with 0 documents. Now every file is stored (the odd name shown with U+FFFD and its byte in hex), the
    corrupt one fails alone, and the listings serialise."""
    folder = root / "bytes"
    folder.mkdir()
    (folder / "a_small.txt").write_text("Mount Etna is an active stratovolcano on the east coast of Sicily.")
    (folder / os.fsdecode(b"caf\xff.txt")).write_text("The old cafe by the harbour serves grilled sardines on Fridays.")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (folder / "z_small.txt").write_text("The Strait of Messina separates Sicily from the Italian mainland.")
    job = wait_job(client, _status(client.post("/v1/ingest", json={"paths": [str(folder)], "collection": "bytes"}),
                                   202)["job_id"])
    assert job["state"] == "done" and job["counts"]["added"] == 3 and job["counts"]["failed"] == 1, job
    assert [Path(e["path"]).name for e in job["errors"]] == ["broken.pdf"]
    shown = str(folder / "caf\ufffdFF.txt")
    assert shown in _documents(client, "bytes")
    hits = _status(client.post("/v1/retrieve", json={"question": "grilled sardines", "collection": "bytes",
                                                     "top_k": 1}), 200)["hits"]
    assert hits[0]["document"] == shown
    _status(client.get("/v1/jobs"), 200)
    _status(client.get(f"/v1/jobs/{job['job_id']}"), 200)


@pytest.mark.parametrize(("route", "body", "field"), [
    ("/v1/ingest", {"paths": ["docs/\udfff.txt"]}, "paths.0"),
    ("/v1/query", {"question": "Where is Etna \udfff?"}, "question"),
    ("/v1/retrieve", {"question": "Etna", "path_prefix": "/srv/\ud800"}, "path_prefix"),
    ("/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": "Etna \udfff?"}]},
     "messages.0.content"),
    ("/v1/chat/completions", {"model": "rag", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Etna \udfff?"}]}]}, "messages.0.content.0.text"),
    ("/v1/chat/completions", {"model": SMALL_LLM, "messages": [{"role": "user", "content": "hi"}], "user": "\udfff"},
     "user"),
    ("/tokenize", {"prompt": "Etna \udfff?"}, "prompt"),
    ("/v1/retrieve", {"question": "Etna", "\udfff": 1}, "\\udfff"),
])
def test_lone_surrogates_are_422_naming_the_field(client: httpx.Client, ingested: dict, route: str, body: dict,
                                                  field: str) -> None:
    """A lone surrogate spelled in JSON (``"\\udfff"``): /v1/chat/completions answered 500 (the tokenizer's
    TypeError), /v1/ingest accepted it and then GET /v1/jobs answered 400 for as long as the job was listed."""
    r = client.post(route, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    error = _status(r, 422)["error"]
    assert error["message"].startswith(f"{field}: lone surrogate U+"), error
    assert error["type"] == "invalid_request_error" and error["details"][0]["type"] == "string_unicode"
    assert r.headers["x-content-type-options"] == "nosniff"
    pair = json.dumps({"question": "Where is Etna \ud83c\udf0b?"}).encode()  # a pair is a character: no error
    assert client.post("/v1/retrieve", content=pair, headers={"content-type": "application/json"}).status_code == 200
    jobs = _status(client.get("/v1/jobs"), 200)["jobs"]
    assert not any("\ufffd" in p and "docs/" in p for j in jobs for p in j["paths"])


def test_json_responses_say_nosniff(client: httpx.Client, ingested: dict) -> None:
    for r in (client.get("/v1/collections"), client.get("/v1/documents/999999"), client.get("/healthz")):
        assert r.headers["x-content-type-options"] == "nosniff", (r.url, r.headers)

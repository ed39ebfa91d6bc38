"""The HTTP API against a real uvicorn server on 127.0.0.1 with the small model (SmolLM2-135M, 8 new tokens).

One server (module scope) carries most tests over a few short text files; auth and PostgreSQL each get their own
short-lived server. What is checked is the contract a client sees: status codes, JSON shapes, SSE framing, the
official ``openai`` client, path confinement, size limits, and that queries are served while a job runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest

from tests.api_server import ApiServer, server_env, wait_job

DOCS = {
    "volcanoes.txt": "Mount Etna is an active volcano on the east coast of Sicily. It erupts frequently and its "
    "lava flows have shaped the city of Catania.",
    "bees.md": "# Honey bees\n\nHoney bees communicate the direction of flowers with a waggle dance. A colony has "
    "one queen, thousands of workers and a few hundred drones.",
    "trains.txt": "The Shinkansen is a network of high-speed railway lines in Japan. Its trains reach 320 km/h "
    "and the first line opened in 1964 between Tokyo and Osaka.",
    "cheese.txt": "Parmigiano Reggiano is a hard cheese from northern Italy, aged for at least twelve months and "
    "made from raw cow's milk.",
}
UPLOAD_LIMIT_MB = 0.05  # 50 KB: an oversized upload is cheap to send
REQUEST_LIMIT_KB = 64
BIG_FILES = 1200  # ~26 s of ingestion for 300 on a busy 2-core CI box: the queries below once outlasted it


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("api")
    root = base / "root"
    docs = root / "docs"
    docs.mkdir(parents=True)
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    # Enough work that an ingestion job is still running while we query: ~4 chunks per file, so the pipeline
    # embeds and commits several batches while it walks the files (and checks for a cancel between files).
    big = root / "big"
    big.mkdir()
    sentence = "Filler paragraph number {i} talks about ordinary things such as tables, chairs and lamps. "
    for i in range(BIG_FILES):
        (big / f"filler-{i:03d}.txt").write_text((sentence.format(i=i)) * 40)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The password is swordfish.")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "escape-file.txt").symlink_to(outside / "secret.txt")
    return {"base": base, "root": root, "docs": docs, "big": big, "outside": outside}


@pytest.fixture(scope="module")
def server(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = server_env(models, allowed_roots=[str(corpus["root"])], max_upload_mb=UPLOAD_LIMIT_MB,
                     max_request_kb=REQUEST_LIMIT_KB)
    with ApiServer(corpus["base"] / "data", env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def ingested(client: httpx.Client, corpus: dict[str, Path]) -> dict:
    """The docs folder ingested through a job, polled to the end."""
    r = client.post("/v1/ingest", json={"paths": [str(corpus["docs"])], "collection": "default"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = wait_job(client, job_id)
    assert job["state"] == "done", job
    return job


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"] and body["error"]["type"], body
    assert "Traceback" not in r.text
    return body["error"]


def _sse(text: str) -> list[tuple[str | None, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        events.append((name, "\n".join(data)))
    return events


# --- health, ingestion ---------------------------------------------------------------------------
def test_health_readiness_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["store"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/ingest", "/v1/jobs/{job_id}", "/v1/query", "/v1/retrieve", "/v1/documents",
              "/v1/documents/{document_id}", "/v1/collections", "/v1/chat/completions", "/v1/models"):
        assert p in paths


def test_ingest_job_runs_to_done(client: httpx.Client, ingested: dict, corpus: dict[str, Path]) -> None:
    assert ingested["counts"]["added"] == len(DOCS)
    assert ingested["processed"] == ingested["total"] == len(DOCS)
    assert ingested["errors"] == [] and ingested["finished_at"]
    assert ingested["job_id"] in [j["job_id"] for j in client.get("/v1/jobs").json()["jobs"]]

    docs = client.get("/v1/documents", params={"collection": "default"}).json()["documents"]
    assert sorted(Path(d["path"]).name for d in docs) == sorted(DOCS)
    assert all(d["status"] == "indexed" and d["summary_state"] in ("none", "pending", "extractive", "done") for d in docs)
    one = client.get(f"/v1/documents/{docs[0]['id']}").json()
    assert one["id"] == docs[0]["id"] and "summary" in one
    colls = client.get("/v1/collections").json()["collections"]
    assert any(c["name"] == "default" and c["documents"] == len(DOCS) for c in colls)

    # Ingesting the same folder again: a new job, nothing changed.
    again = wait_job(client, client.post("/v1/ingest", json={"paths": [str(corpus["docs"])]}).json()["job_id"])
    assert again["state"] == "done" and again["counts"]["unchanged"] == len(DOCS)


# --- query, retrieve --------------------------------------------------------------------------------
def test_retrieve(client: httpx.Client, ingested: dict) -> None:
    r = client.post("/v1/retrieve", json={"question": "Which volcano is near Catania?", "top_k": 2})
    hits = r.json()["hits"]
    assert r.status_code == 200 and 1 <= len(hits) <= 2
    assert Path(hits[0]["document"]).name == "volcanoes.txt"
    assert {"chunk_id", "document_id", "text", "score", "dense_score"} <= set(hits[0])


def test_query_json(client: httpx.Client, ingested: dict) -> None:
    r = client.post("/v1/query", json={"question": "When did the first Shinkansen line open?", "top_k": 2,
                                       "stream": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"text", "kind", "confidence", "signals", "sources", "usage", "abstained"} <= set(body)
    assert body["abstained"] is False and body["text"].strip()
    _check_verdict(body)
    assert any(Path(s["document"]).name == "trains.txt" for s in body["sources"])
    assert 0 < body["usage"]["completion_tokens"] <= 8
    assert body["usage"]["prompt_tokens"] + body["usage"]["max_new_tokens"] <= body["usage"]["context_window"]


def test_query_with_history_rewrites_the_follow_up(client: httpx.Client, ingested: dict) -> None:
    history = [{"role": "user", "content": "What is the Shinkansen?"},
               {"role": "assistant", "content": "A network of high-speed railway lines in Japan [1]."}]
    r = client.post("/v1/query", json={"question": "When did its first line open?", "history": history, "top_k": 2})
    body = r.json()
    assert r.status_code == 200 and body["rewritten"] is True, r.text
    assert any(Path(s["document"]).name == "trains.txt" for s in body["sources"])
    assert body["usage"]["history_messages"] == 2 and body["usage"]["llm_calls"] == 2
    r = client.post("/v1/query", json={"question": "Why?", "history": [{"role": "system", "content": "x"}]})
    assert r.status_code == 422  # only user and assistant turns


def test_query_sse(client: httpx.Client, ingested: dict) -> None:
    question = {"question": "How do honey bees communicate?", "top_k": 2}
    for kwargs in ({"json": {**question, "stream": True}},
                   {"json": question, "headers": {"Accept": "text/event-stream"}}):
        with client.stream("POST", "/v1/query", **kwargs) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = _sse(r.read().decode())
        names = [n for n, _ in events]
        assert names[-1] == "done" and names.count("done") == 1
        assert "token" in names and set(names[:-1]) == {"token"}
        text = "".join(json.loads(d)["text"] for n, d in events if n == "token")
        assert text.strip()
        done = json.loads(events[-1][1])
        assert done["sources"] and done["usage"]["completion_tokens"] > 0 and done["abstained"] is False
        assert done["text"].strip() and done["question"] == question["question"] and not done["rewritten"]
        _check_verdict(done)
        if done["kind"] == "generated":  # the streamed text was the answer (its citations may have been checked)
            assert text.strip().split("[")[0] == done["text"].split("[")[0]


def test_query_unknown_collection_abstains(client: httpx.Client, ingested: dict) -> None:
    body = client.post("/v1/query", json={"question": "anything?", "collection": "nope"}).json()
    assert body["abstained"] is True and body["sources"] == []


# --- OpenAI compatibility --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oai(server: ApiServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list().data]
    assert ids == ["bundled:smollm2-135m", "rag"]


def test_openai_chat_completion(oai: openai.OpenAI, ingested: dict) -> None:
    resp = oai.chat.completions.create(
        model="rag",
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What is Parmigiano Reggiano made from?"}],
        extra_body={"top_k": 1},  # one passage: the 135M model cites a second, unrelated one at random
    )
    assert resp.object == "chat.completion" and resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop" and resp.usage.completion_tokens > 0
    sources = resp.model_extra["sources"]
    assert [Path(s["document"]).name for s in sources] == ["cheese.txt"]  # top_k from extra_body was applied
    _check_spans(sources, resp.model_extra["groundedness"])
    _check_verdict({**resp.model_extra, "text": resp.choices[0].message.content})


def _check_verdict(answer: dict) -> None:
    """The path the answer took and its confidence, as every face reports them (rag/synthesis/decision.py)."""
    assert answer["kind"] in ("generated", "extractive", "abstained")
    assert 0.0 <= answer["confidence"] <= 1.0
    assert answer["abstained"] == (answer["kind"] == "abstained")
    if answer["kind"] == "extractive":
        assert answer["text"].startswith("The documents say:") and answer["groundedness"] == 1.0


def _check_spans(sources: list[dict], groundedness: float | None) -> None:
    """Every source carries its supporting spans (inside its text); a supported answer has at least one."""
    for source in sources:
        for span in source["spans"]:
            assert 0 <= span["start"] < span["end"] <= len(source["text"]) and 0 < span["score"] <= 1
    if groundedness:
        assert any(source["spans"] for source in sources)


def test_openai_chat_follow_up_is_rewritten(oai: openai.OpenAI, ingested: dict) -> None:
    resp = oai.chat.completions.create(model="rag", extra_body={"top_k": 2}, messages=[
        {"role": "user", "content": "What is Mount Etna?"},
        {"role": "assistant", "content": "Mount Etna is an active volcano on the east coast of Sicily [1]."},
        {"role": "user", "content": "How often does it erupt?"},
    ])
    extra = resp.model_extra
    assert extra["rewritten"] is True and extra["question"] != "How often does it erupt?"
    assert any(Path(s["document"]).name == "volcanoes.txt" for s in extra["sources"])
    _check_spans(extra["sources"], extra["groundedness"])


def test_openai_chat_stream(oai: openai.OpenAI, ingested: dict) -> None:
    stream = oai.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "What is Mount Etna?"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "stop"
    extra = final[0].model_extra
    assert any(Path(s["document"]).name == "volcanoes.txt" for s in extra["sources"])
    _check_spans(extra["sources"], extra["groundedness"])
    assert extra["text"].strip() and extra["question"] == "What is Mount Etna?"
    _check_verdict(extra)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_llm_passthrough_and_tokenize(oai: openai.OpenAI, client: httpx.Client) -> None:
    resp = oai.chat.completions.create(model="bundled:smollm2-135m", messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=3)
    assert resp.usage.completion_tokens <= 3 and resp.choices[0].finish_reason in ("stop", "length")
    pieces = list(oai.chat.completions.create(model="bundled:smollm2-135m", max_tokens=3, stream=True,
                                              messages=[{"role": "user", "content": "Hi"}]))
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        oai.chat.completions.create(model="bundled:smollm2-135m", messages=[{"role": "user", "content": "Hi"}],
                                    max_tokens=900_000)
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "Hi"}])

    tok = client.post("/tokenize", json={"prompt": "hello world", "add_special_tokens": False}).json()
    assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] > 0
    chat = client.post("/tokenize", json={"messages": [{"role": "user", "content": "hello world"}]}).json()
    assert chat["count"] > tok["count"]
    assert client.post("/detokenize", json={"tokens": tok["tokens"]}).json()["prompt"] == "hello world"


def test_server_as_llm_server_for_the_openai_backend(server: ApiServer, tmp_path: Path) -> None:
    """Another instance's HTTP backend can use this server as its LLM server (exact counts via /tokenize)."""
    from rag import Settings
    from rag.models.openai_llm import OpenAILLM

    llm = OpenAILLM(Settings(data_dir=tmp_path, llm_backend="openai", llm_base_url=f"{server.url}/v1",
                             llm_model="bundled:smollm2-135m"))
    assert llm.exact_counts and llm.context_window == 8192
    messages = [{"role": "user", "content": "Name a colour."}]
    assert llm.count_messages(messages) > llm.count_tokens("Name a colour.")
    assert llm.truncate("one two three four five six", 3) == "one two three"
    gen = llm.generate(messages, max_new_tokens=4)
    assert 0 < gen.completion_tokens <= 4 and gen.prompt_tokens == llm.count_messages(messages)
    stream = llm.stream(messages, max_new_tokens=4)
    assert "".join(stream) == stream.generation.text and stream.generation.completion_tokens <= 4


# --- confinement, limits, malformed input ------------------------------------------------------
def test_path_escapes_are_forbidden(client: httpx.Client, corpus: dict[str, Path]) -> None:
    root = corpus["root"]
    for path in (f"{root}/../outside", f"{root}/docs/../../outside/secret.txt", "../outside",
                 str(root / "escape"), str(root / "escape" / "secret.txt"), str(root / "escape-file.txt"),
                 str(corpus["outside"] / "secret.txt"), "/etc/passwd", "/"):
        r = client.post("/v1/ingest", json={"paths": [str(corpus["docs"]), path]})
        assert _error(r, 403)["type"] == "permission_error", path
    names = {Path(d["path"]).name for d in client.get("/v1/documents").json()["documents"]}
    assert "secret.txt" not in names


def test_upload_and_size_limits(client: httpx.Client) -> None:
    files = [("files", ("notes.txt", b"Kiwi birds are flightless and live in New Zealand.", "text/plain")),
             ("files", ("../../sneaky.txt", b"Axolotls are salamanders that keep their gills.", "text/plain"))]
    r = client.post("/v1/ingest", files=files, data={"collection": "uploads"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    assert job["state"] == "done" and job["counts"]["added"] == 2
    paths = [d["path"] for d in client.get("/v1/documents", params={"collection": "uploads"}).json()["documents"]]
    assert len(paths) == 2 and all("/uploads/uploads/" in p for p in paths)  # the ../ in a file name is dropped

    big = b"x" * int(UPLOAD_LIMIT_MB * 2**20 * 1.5)
    _error(client.post("/v1/ingest", files={"files": ("big.txt", big, "text/plain")}), 413)
    huge_question = "why " * (REQUEST_LIMIT_KB * 1024 // 4 + 10)
    _error(client.post("/v1/query", json={"question": huge_question}), 413)

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while the body streams in
        yield b'{"question": "'
        for _ in range(REQUEST_LIMIT_KB + 8):
            yield b"a" * 1024
        yield b'"}'

    _error(client.post("/v1/retrieve", content=chunked(), headers={"content-type": "application/json"}), 413)


def test_malformed_requests(client: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    _error(client.post("/v1/query", content=b'{"question": ', headers=headers), 422)
    _error(client.post("/v1/ingest", content=b"{not json", headers=headers), 422)
    _error(client.post("/v1/query", json={"question": ""}), 422)
    _error(client.post("/v1/query", json={"question": "x", "top_k": "many"}), 422)
    _error(client.post("/v1/query", json={"question": "x", "mode": "poetry"}), 422)
    _error(client.post("/v1/ingest", json={"paths": []}), 422)
    _error(client.post("/v1/ingest", json={"paths": ["docs"], "collection": "../evil"}), 422)
    _error(client.post("/v1/ingest", content=b"paths=/", headers={"content-type": "text/plain"}), 415)
    _error(client.post("/v1/chat/completions", json={"model": "rag", "messages": []}), 422)
    _error(client.get("/v1/documents/999999"), 404)
    _error(client.delete("/v1/documents/999999"), 404)
    _error(client.get("/v1/jobs/no-such-job"), 404)
    _error(client.post("/v1/jobs/no-such-job/cancel"), 404)
    _error(client.get("/v1/no-such-route"), 404)
    _error(client.put("/v1/query", json={}), 405)


# --- concurrency, cancel, delete ---------------------------------------------------------------------
def test_query_during_ingestion_then_cancel(client: httpx.Client, ingested: dict, corpus: dict[str, Path]) -> None:
    job_id = client.post("/v1/ingest", json={"paths": [str(corpus["big"])], "collection": "big"}).json()["job_id"]
    job = wait_job(client, job_id, until=("running", "done", "failed"))
    assert job["state"] == "running", job

    t0 = time.monotonic()
    hits = client.post("/v1/retrieve", json={"question": "Japanese high-speed trains", "top_k": 1})
    answer = client.post("/v1/query", json={"question": "What does the waggle dance tell?", "top_k": 1})
    elapsed = time.monotonic() - t0
    assert hits.status_code == 200 and Path(hits.json()["hits"][0]["document"]).name == "trains.txt"
    assert answer.status_code == 200 and answer.json()["text"]
    during = client.get(f"/v1/jobs/{job_id}").json()
    assert during["state"] == "running", f"the job ended before the queries did ({elapsed:.1f}s): {during}"
    assert during["total"] in (0, BIG_FILES) and 0 <= during["processed"] <= BIG_FILES

    cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] in ("cancelling", "cancelled")
    final = wait_job(client, job_id)
    assert final["state"] == "cancelled" and final["finished_at"], (final["state"], final["message"])
    _error(client.post(f"/v1/jobs/{job_id}/cancel"), 409)


def test_delete_document(client: httpx.Client, ingested: dict) -> None:
    docs = client.get("/v1/documents", params={"collection": "default"}).json()["documents"]
    cheese = next(d for d in docs if Path(d["path"]).name == "cheese.txt")
    r = client.delete(f"/v1/documents/{cheese['id']}")
    assert r.status_code == 200 and r.json()["chunks_removed"] >= 1
    _error(client.get(f"/v1/documents/{cheese['id']}"), 404)
    hits = client.post("/v1/retrieve", json={"question": "hard Italian cheese", "top_k": 5}).json()["hits"]
    assert all(h["document_id"] != cheese["id"] for h in hits)


def test_metrics(client: httpx.Client, ingested: dict) -> None:
    text = client.get("/metrics").text
    assert 'rag_http_requests_total{method="POST",route="/v1/query",status="200"}' in text
    assert "rag_http_request_duration_seconds_bucket" in text
    assert 'rag_ingest_jobs_total{state="done"}' in text
    assert 'rag_tokens_generated_total{endpoint="query"}' in text


# --- auth ---------------------------------------------------------------------------------------------
def test_api_keys(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = server_env(models, api_keys=["key-one", "key-two"], cors_origins=["https://app.example"])
    with ApiServer(tmp_path / "data", env) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        r = c.get("/v1/collections")
        assert _error(r, 401)["type"] == "authentication_error" and r.headers["www-authenticate"] == "Bearer"
        _error(c.get("/v1/collections", headers={"Authorization": "Bearer key-three"}), 401)
        _error(c.get("/v1/collections", headers={"Authorization": "key-one"}), 401)
        _error(c.post("/v1/query", json={"question": "x"}), 401)
        _error(c.get("/metrics"), 401)
        for key in ("key-one", "key-two"):
            assert c.get("/v1/collections", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{srv.url}/v1", api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="key-two", max_retries=0)
        assert "rag" in [m.id for m in ok.models.list().data]
        assert "key-one" not in srv.log_tail(100_000) and "key-three" not in srv.log_tail(100_000)

        preflight = c.options("/v1/query", headers={"Origin": "https://app.example",
                                                    "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_cors_off_by_default(client: httpx.Client) -> None:
    r = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers


# --- PostgreSQL ---------------------------------------------------------------------------------------
def test_postgres_backed_server(pg_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                corpus: dict[str, Path]) -> None:
    from rag import Settings
    from rag.store.schema import utcnow
    from rag.store.store import Store

    seed = Store(Settings(data_dir=tmp_path / "seed", database_url=pg_url))
    seed.create_run("stale-job", "default", ["/nowhere"], state="running")  # left by a process that died
    seed.update_run("stale-job", heartbeat_at=utcnow() - timedelta(minutes=5))
    seed.create_run("live-job", "default", ["/nowhere"], state="running")  # another replica's, heartbeat fresh
    seed.close()

    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = server_env(models, database_url=pg_url, allowed_roots=[str(corpus["root"])])
    with ApiServer(tmp_path / "data", env) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        assert c.get("/v1/jobs/stale-job").json()["state"] == "interrupted"
        assert c.get("/v1/jobs/live-job").json()["state"] == "running"
        job = wait_job(c, c.post("/v1/ingest", json={"paths": [str(corpus["docs"])]}).json()["job_id"])
        assert job["state"] == "done" and job["counts"]["added"] == len(DOCS)
        hits = c.post("/v1/retrieve", json={"question": "Which volcano is near Catania?", "top_k": 1}).json()["hits"]
        assert Path(hits[0]["document"]).name == "volcanoes.txt"
        body = c.post("/v1/query", json={"question": "Which volcano is near Catania?", "top_k": 1}).json()
        assert body["sources"] and body["text"]
        doc_id = hits[0]["document_id"]
        assert c.delete(f"/v1/documents/{doc_id}").status_code == 200
        _error(c.get(f"/v1/documents/{doc_id}"), 404)
        # Job records live in PostgreSQL: a fresh store on the same schema sees them.
        check = Store(Settings(data_dir=tmp_path / "check", database_url=pg_url))
        try:
            run = check.get_run(job["job_id"])
            assert run is not None and run.state == "done"
        finally:
            check.close()


# --- admission control (no server needed) -----------------------------------------------------------
def test_llm_gate_queues_then_refuses() -> None:
    import asyncio

    from api.concurrency import LLMGate
    from api.errors import APIError

    async def scenario() -> None:
        gate = LLMGate(slots=1, max_waiting=1)
        held = await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        assert gate.waiting == 1 and not waiter.done()
        with pytest.raises(APIError) as refused:
            await gate.acquire()
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "5"}
        held.release()
        held.release()  # idempotent: a second release must not free a second slot
        second = await asyncio.wait_for(waiter, 1)
        assert gate._sem.locked()
        second.release()

    asyncio.run(scenario())


def test_retrieval_limit_bounds_the_threads_at_work() -> None:
    """Twelve retrievals at once with two slots: never more than two in threads together, and all twelve run."""
    import asyncio
    import threading
    import time

    from api.concurrency import RetrievalLimit

    lock, running, peak, done = threading.Lock(), [0], [0], []

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        done.append(i)
        return i

    async def scenario() -> list[int]:
        limit = RetrievalLimit(2)
        return await asyncio.gather(*(limit.run(lambda i=i: work(i)) for i in range(12)))

    assert asyncio.run(scenario()) == list(range(12))
    assert peak[0] == 2 and sorted(done) == list(range(12))

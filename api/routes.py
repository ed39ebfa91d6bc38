"""The ``/v1`` endpoints of the engine: ingestion jobs, query (JSON or SSE), retrieve, documents, collections.

Each handler validates, calls one ``RAG`` method in the threadpool (the engine is blocking; the event loop must
stay free for other requests), and serialises the engine's result type. Engine exceptions propagate to
``api.errors``, which maps them to status codes in one place.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path as FsPath
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api import answers
from api import schemas as S
from api.access import Access, authorize
from api.concurrency import LLMGate
from api.deps import get_jobs, get_metrics, get_rag, get_settings
from api.errors import APIError, stream_error_body
from api.metrics import Metrics
from api.security import resolve_allowed
from api.sse import sse
from api.streaming import BlockingStream, GatedStreamingResponse
from api.uploads import distinct_names, refusal, save_upload, upload_name
from ingest.uploads import discard_upload, upload_dir
from rag.engine import RAG
from rag.jobs import JobManager
from rag.settings import Settings
from rag.types import Answer, JobInfo

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

Rag = Annotated[RAG, Depends(get_rag)]
Jobs = Annotated[JobManager, Depends(get_jobs)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AccessDep = Annotated[Access, Depends(authorize)]
DocumentId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Document id (from /v1/documents).")]
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Job id (from POST /v1/ingest).")]
CollectionQuery = Annotated[
    str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$", description="Only this collection.")
]

_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "Files to ingest."},
        "collection": {"type": "string", "pattern": S.COLLECTION_PATTERN, "default": "default"},
        "summarize": {"type": "boolean"},
    },
}
_INGEST_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": S.IngestRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}


# --- ingestion -------------------------------------------------------------------------------------
@router.post(
    "/ingest", status_code=202, response_model=S.JobAccepted, openapi_extra=_INGEST_OPENAPI,
    responses=S.error_responses(400, 401, 403, 413, 415, 422, 503),
    summary="Start an ingestion job from server paths (JSON) or uploaded files (multipart)",
)
async def ingest(request: Request, jobs: Jobs, settings: SettingsDep, access: AccessDep) -> JSONResponse:
    """Paths must resolve inside ``RAG_ALLOWED_ROOTS`` (symlinks and ``..`` resolved first), else 403.
    Uploads are saved under ``<data_dir>/uploads/<collection>/`` within ``RAG_MAX_UPLOAD_MB`` (else 413), their
    names kept (folders and any script's letters; duplicates in one request get " (2)"); uploads of a type or
    size ingestion would skip are not saved and are listed in ``rejected`` (all of them rejected: 422).
    Poll ``GET /v1/jobs/{job_id}`` for progress. Without a collection, the key's default one (``default``, or the
    first of its list)."""
    collection = access.collection or "default"
    if not _valid_collection(collection):
        raise APIError(422, f"collection must match {S.COLLECTION_PATTERN}")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    rejected: list[dict[str, str]] = []
    uploaded = content_type == "multipart/form-data"
    if uploaded:
        paths, summarize, rejected = await _save_uploads(request, settings, collection)
    elif content_type in ("application/json", "") or content_type.endswith("+json"):
        body = await _json_body(request)
        try:
            req = S.IngestRequest.model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        paths = [str(resolve_allowed(p, settings.allowed_roots)) for p in req.paths]
        summarize = req.summarize
    else:
        raise APIError(415, f"unsupported content type {content_type!r}: send application/json or multipart/form-data")
    try:
        job_id = await run_in_threadpool(jobs.submit, paths, collection, summarize)
    except BaseException:
        if uploaded:  # saved for a job that will never run
            _discard_all(settings, paths)
        raise
    counts = {"files": len(paths), "rejected": len(rejected)} if uploaded else {"paths": len(paths)}
    await access.audit(request, "upload" if uploaded else "ingest", target=job_id, counts=counts)
    return JSONResponse({"job_id": job_id, "state": "queued", "rejected": rejected}, status_code=202,
                        headers={"Location": f"/v1/jobs/{job_id}"})


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        why = f"JSON decode error: {exc}"
    except RecursionError:  # e.g. 50,000 '[': the decoder recurses per level
        why = "JSON nested too deeply"
    raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": why, "input": {}}])


async def _save_uploads(
    request: Request, settings: Settings, collection: str
) -> tuple[list[str], bool | None, list[dict[str, str]]]:
    """Save the uploads a job can use into ``collection``; returns their paths, summarize, and the refused ones."""
    # The same limits as api.access.ingest_collection, which parsed this form first to find its collection.
    async with request.form(max_files=1000, max_fields=100) as form:
        summarize_raw = form.get("summarize")
        summarize: bool | None = None
        if isinstance(summarize_raw, str) and summarize_raw:
            if summarize_raw.lower() not in ("true", "false", "1", "0"):
                raise APIError(422, "summarize must be true or false")
            summarize = summarize_raw.lower() in ("true", "1")
        uploads = [f for key in ("files", "file") for f in form.getlist(key)]
        if not uploads or not all(isinstance(f, UploadFile) for f in uploads):
            raise APIError(422, "multipart ingestion needs one or more files in the 'files' field")
        files = [f for f in uploads if isinstance(f, UploadFile)]
        names = distinct_names([upload_name(f.filename) for f in files])
        folder = upload_dir(settings.data_dir, collection)
        saved: list[str] = []
        rejected: list[dict[str, str]] = []
        for upload, name in zip(files, names):
            why = refusal(name, upload.size, settings.max_file_bytes)
            if why is not None:
                rejected.append({"path": upload.filename or str(name), "status": "skipped", "error": why})
                continue
            saved.append(str(await _save_one(upload, folder, name, saved, settings)))
        if not saved:
            raise APIError(422, "no upload can be ingested: " + "; ".join(f"{r['path']}: {r['error']}" for r in rejected))
        log.info("saved %d upload(s) for collection '%s' (%d refused)", len(saved), collection, len(rejected))
        return saved, summarize, rejected


async def _save_one(upload: UploadFile, folder: FsPath, name: PurePosixPath, saved: list[str],
                    settings: Settings) -> FsPath:
    """Save one upload; when the filesystem refuses (a name that is a folder already, a full disk), the request
    fails as a 422 and the uploads saved for it so far are removed."""
    try:
        return await run_in_threadpool(save_upload, upload.file, folder, name)
    except OSError as exc:
        _discard_all(settings, saved)
        raise APIError(422, f"cannot save upload {upload.filename!r} as {str(name)!r}: {exc.strerror or exc}") from None


def _discard_all(settings: Settings, paths: list[str]) -> None:
    for path in paths:
        discard_upload(settings.data_dir, path)


def _valid_collection(name: str) -> bool:
    return re.fullmatch(S.COLLECTION_PATTERN, name) is not None


@router.get("/jobs", response_model=S.JobList, responses=S.error_responses(401))
def list_jobs(jobs: Jobs, access: AccessDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Most recent jobs first, as persisted (jobs of earlier runs of the server included), of the collections the
    key sees."""
    return {"jobs": jobs.list_jobs(limit, access.visible)}


@router.get("/jobs/{job_id}", response_model=JobInfo, responses=S.error_responses(401, 404))
def get_job(job_id: JobId, jobs: Jobs) -> dict[str, Any]:
    return jobs.get(job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobInfo, responses=S.error_responses(401, 404, 409))
async def cancel_job(job_id: JobId, jobs: Jobs, request: Request, access: AccessDep) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one stops after the file in hand (state ``cancelling``,
    then ``cancelled``). A finished job answers 409."""
    job = await run_in_threadpool(jobs.cancel, job_id)
    await access.audit(request, "cancel", target=job_id)
    return job


# --- query + retrieve ----------------------------------------------------------------------------
@router.post(
    "/query", response_model=S.QueryResponse, responses={
        **S.error_responses(400, 401, 413, 422, 503),
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "JSON answer, or with stream=true / Accept: text/event-stream, Server-Sent Events: "
                             "`event: token` (data: {\"text\": piece}) repeated, then `event: done` (data: the "
                             "answer as JSON: its text with verified citations, which may differ from the streamed "
                             "pieces, sources with their supporting spans, usage, groundedness, the question "
                             "searched), or `event: error` (data: {\"error\": ...})."},
    },
)
async def query(req: S.QueryRequest, request: Request, rag: Rag, metrics: MetricsDep, access: AccessDep) -> Any:
    """A grounded answer with numbered, verified sources, or an abstention when the documents hold nothing relevant
    (given at once: it does not wait for the model). With ``history`` (the earlier turns), a follow-up that does not
    stand alone is first rewritten into a question that does (returned as ``question``)."""
    messages = [*(m.model_dump() for m in req.history), {"role": "user", "content": req.question}]
    ask = answers.Ask(rag.conversation(messages), req.top_k, access.collection or "default", req.mode,
                      req.path_prefix, req.document_ids)
    gate: LLMGate = request.app.state.llm_gate
    if not (req.stream or "text/event-stream" in request.headers.get("accept", "")):
        answer = await answers.answer(rag, gate, request, ask)
        metrics.add_usage("query", answer.usage.prompt_tokens, answer.usage.completion_tokens)
        return answer.to_dict()
    pieces, release = await answers.stream(rag, gate, request, ask)
    return GatedStreamingResponse(_query_events(pieces, metrics), release)


async def _query_events(stream: BlockingStream[str | Answer], metrics: Metrics) -> Any:
    try:
        async for item in stream:
            if isinstance(item, Answer):
                metrics.add_usage("query", item.usage.prompt_tokens, item.usage.completion_tokens)
                yield sse("done", item.to_dict())
            elif item:
                yield sse("token", {"text": item})
    except Exception as exc:  # noqa: BLE001 - the status line has gone out: report in-band (logged there)
        yield sse("error", stream_error_body(exc, "query"))


@router.post("/retrieve", response_model=S.RetrieveResponse, responses=S.error_responses(400, 401, 413, 422, 503))
async def retrieve(req: S.RetrieveRequest, rag: Rag, request: Request, access: AccessDep) -> dict[str, Any]:
    """Ranked passages with their scores; no LLM involved. At most RAG_RETRIEVE_CONCURRENCY run at once."""
    collection = access.collection or "default"
    hits = await request.app.state.retrieval.run(
        lambda: rag.retrieve(req.question, req.top_k, collection, path_prefix=req.path_prefix,
                             document_ids=req.document_ids, mode=req.mode))
    return {"hits": [h.to_dict() for h in hits]}


# --- documents + collections ---------------------------------------------------------------------
@router.get("/documents", response_model=S.DocumentList, responses=S.error_responses(401))
def list_documents(rag: Rag, access: AccessDep, collection: CollectionQuery = None) -> dict[str, Any]:
    """Documents with their indexing state and summary state (summaries themselves: GET one document), of one
    collection or of every collection the key sees."""
    return {"documents": [d.to_dict() for d in rag.store.document_infos(collection, collections=access.visible)]}


@router.get("/documents/{document_id}", response_model=S.DocumentInfo, responses=S.error_responses(401, 404))
def get_document(document_id: DocumentId, rag: Rag) -> dict[str, Any]:
    return rag.document(document_id).to_dict()


@router.delete("/documents/{document_id}", response_model=S.Deleted, responses=S.error_responses(401, 404))
async def delete_document(document_id: DocumentId, rag: Rag, request: Request, access: AccessDep) -> dict[str, Any]:
    """Remove the document from SQL and the index; answers cite it no more. An uploaded document's file goes too."""
    removed = await run_in_threadpool(rag.delete, document_id)
    await access.audit(request, "delete", target=str(document_id), counts={"chunks": removed})
    return {"id": document_id, "deleted": True, "chunks_removed": removed}


@router.get("/collections", response_model=S.CollectionList, responses=S.error_responses(401))
def list_collections(rag: Rag, access: AccessDep) -> dict[str, Any]:
    """The collections the key sees."""
    return {"collections": rag.store.collections(access.visible)}


@router.get("/watch", response_model=S.WatchList, responses=S.error_responses(401))
def watched_folders(request: Request, access: AccessDep) -> dict[str, Any]:
    """The folders this server keeps in line with collections (RAG_WATCH): state, backlog, last change; those of
    the collections the key sees."""
    watcher = getattr(request.app.state, "watcher", None)
    folders = watcher.status() if watcher is not None else []
    return {"folders": [f.to_dict() for f in folders if access.visible is None or f.collection in access.visible]}

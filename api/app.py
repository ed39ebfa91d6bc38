"""The FastAPI application: one ``RAG`` engine per app, opened in the lifespan, plus the HTTP plumbing.

``create_app(settings)`` builds the app; ``rag serve`` runs it under uvicorn. The lifespan opens the engine (the
store), marks jobs left running by a dead process as interrupted, and loads the models in a background thread:
``RAG_WATCH`` folders are watched from the start (their catch-up scans in the watcher's thread);
``/healthz`` answers at once (the process is alive) while ``/readyz`` says 503 until the store answers and the
embedder (and a local LLM) are loaded, so a load balancer only sends traffic to a replica that can serve it.

Middleware, outermost first: metrics (so 401/413 are counted too), nosniff, CORS (only when origins are configured,
and outside the limits so error responses carry CORS headers), the body-size limit, then the check of the JSON
body's text (``api/text_input.py``: inside the limit, so what it reads is bounded).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse

from api import errors, web
from api.access import authorize, check_rules
from api.admin import router as admin_router
from api.concurrency import RetrievalLimit, gate_for
from api.limits import KeyLimits
from api.metrics import Metrics, MetricsMiddleware
from api.openai_compat import router as openai_router
from api.passages import router as passages_router
from api.routes import router as v1_router
from api.schemas import Health
from api.security import BodyLimitMiddleware, NoSniffMiddleware, check_auth
from api.text_input import LoneSurrogateMiddleware
from api.tokenize import router as tokenize_router
from rag.engine import RAG
from rag.jobs import JobManager
from rag.settings import Settings

log = logging.getLogger(__name__)

API_VERSION = "0.1.0"


class Readiness:
    """What the warm-up thread has loaded so far, and why it failed if it did."""

    def __init__(self, needs_llm: bool) -> None:
        self.embedder = False
        self.llm = not needs_llm  # a remote (openai) LLM is the server's business, not a local load
        self.error: str | None = None

    @property
    def models_loaded(self) -> bool:
        return self.embedder and self.llm


def _warm_up(app: FastAPI, rag: RAG, ready: Readiness) -> None:
    """Load the models once, off the event loop; requests that need them meanwhile simply wait for the load."""
    try:
        t0 = time.perf_counter()
        _ = rag.embedder
        ready.embedder = True
        log.info("embedder loaded in %.1fs", time.perf_counter() - t0)
        if not ready.llm:
            t0 = time.perf_counter()
            app.state.llm_window = rag.llm.context_window
            ready.llm = True
            log.info("LLM loaded in %.1fs", time.perf_counter() - t0)
    except Exception as exc:  # readiness reports it; the server stays up for diagnosis
        log.exception("model warm-up failed")
        ready.error = f"{type(exc).__name__}: {exc}"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment). The engine opens when the app starts.

    Raises ValueError when authentication is on and no key is configured (:func:`api.security.check_auth`), and
    RuntimeError when a route has no access rule (:func:`api.access.check_rules`)."""
    settings = settings or Settings()
    check_auth(settings, lambda: _has_stored_keys(settings))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rag = RAG(settings=settings)
        ready = Readiness(needs_llm=settings.llm_backend == "local")
        app.state.rag, app.state.readiness = rag, ready
        app.state.jobs = JobManager(rag, metrics)
        threading.Thread(target=_warm_up, args=(app, rag, ready), name="warm-up", daemon=True).start()
        if settings.summarize and not settings.broker_url:  # with a broker, workers write the summaries
            rag.summaries.wake()  # takes up what an earlier run left pending
        app.state.watcher = rag.watch() if settings.watch else None  # its scans run in its thread
        try:
            yield
        finally:
            t0 = time.perf_counter()
            app.state.jobs.shutdown()
            log.info("jobs stopped in %.1fs", time.perf_counter() - t0)
            app.state.jobs = None
            app.state.watcher = None
            app.state.rag = None
            rag.close()  # stops the watcher first

    app = FastAPI(
        title="RAG service",
        version=API_VERSION,
        description="Retrieval-augmented question answering over your own documents: ingestion jobs, answers with "
        "sources (JSON or SSE), retrieval, documents, and an OpenAI-compatible chat endpoint. Errors are "
        '`{"error": {"message", "type"}}`. Send `Authorization: Bearer <key>` (a key of RAG_API_KEYS) unless the '
        "server runs with RAG_AUTH=off.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.started_at = time.time()
    app.state.llm_window = None
    app.state.llm_gate = gate_for(settings.llm_backend)
    app.state.retrieval = RetrievalLimit(settings.retrieve_concurrency)
    app.state.key_limits = KeyLimits(settings.key_requests_per_minute, settings.key_concurrent_answers,
                                     enabled=settings.auth)
    errors.install(app)

    app.add_middleware(LoneSurrogateMiddleware)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
        )
    app.add_middleware(NoSniffMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    app.include_router(v1_router)
    app.include_router(passages_router)
    app.include_router(openai_router)
    app.include_router(tokenize_router)
    app.include_router(admin_router)
    _add_operational_routes(app)
    web.install(app)
    check_rules(app)
    return app


def _has_stored_keys(settings: Settings) -> bool:
    """Whether the store holds a key made by `rag keys create` (asked only when RAG_API_KEYS is empty)."""
    from rag.store.store import Store

    store = Store(settings)
    try:
        return store.has_keys()
    finally:
        store.close()


def _add_operational_routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers. Never needs a key. Answered on the event loop, not in the threadpool, so
        a pool busy with retrievals and deletes cannot delay it (bench/reliability.py)."""
        return {"status": "ok", "checks": {}}

    @app.get("/readyz", response_model=Health, tags=["operations"], responses={503: {"model": Health}})
    def readyz(request: Request) -> Any:
        """Readiness: the store answers a query and the models are loaded. Never needs a key."""
        rag: RAG | None = getattr(request.app.state, "rag", None)
        ready: Readiness | None = getattr(request.app.state, "readiness", None)
        checks: dict[str, Any] = {}
        ok = rag is not None and ready is not None
        if rag is not None:
            store_ok = rag.ready()
            checks["store"] = "ok" if store_ok else "unavailable"
            ok = ok and store_ok
        if ready is not None:
            checks["embedder"] = "loaded" if ready.embedder else "loading"
            checks["llm"] = "loaded" if ready.llm else "loading"
            if ready.error:
                checks["error"] = ready.error
            ok = ok and ready.models_loaded
        status = "ready" if ok else "not ready"
        return JSONResponse({"status": status, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], dependencies=[Depends(authorize)],
             response_class=PlainTextResponse)
    def prometheus_metrics(request: Request) -> Any:
        """Prometheus exposition: request counts/latencies by route and status, ingestion jobs and files, tokens.
        Counts over every collection, so only a key that sees every collection reads them."""
        return request.app.state.metrics.render()

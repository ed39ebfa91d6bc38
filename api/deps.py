"""Request-scoped access to the per-app singletons created in the lifespan (engine, jobs, metrics, settings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from api.errors import APIError

if TYPE_CHECKING:
    from api.metrics import Metrics
    from rag.engine import RAG
    from rag.jobs import JobManager
    from rag.settings import Settings


def get_rag(request: Request) -> RAG:
    rag = getattr(request.app.state, "rag", None)
    if rag is None:
        raise APIError(503, "the engine is not open (the server is starting or stopping)")
    return rag


def get_jobs(request: Request) -> JobManager:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise APIError(503, "the job manager is not running (the server is starting or stopping)")
    return jobs


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_settings(request: Request) -> Settings:
    return request.app.state.settings

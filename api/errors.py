"""Every error leaves the API as ``{"error": {"message", "type"}}`` with a meaningful status, never a traceback.

Engine exceptions are translated here, in one place, so endpoints can simply call the engine and let its
exceptions propagate: a missing document or job (``KeyError``) is a 404, a finished job cancelled a 409, a bad argument (``ValueError``, which includes
budget and context-window errors) a 400, an unreachable LLM server a 503. Anything unexpected is logged with its
traceback server-side and answered with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.store.store import StoreError
from rag.types import JobFinished, ShuttingDown

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error with an HTTP status, raised by endpoints and turned into the JSON error body."""

    def __init__(self, status: int, message: str, type_: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or _TYPES.get(status, "error")
        self.headers = headers


def error_body(message: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, **extra}}


def stream_error_body(exc: Exception, what: str) -> dict[str, Any]:
    """The error body a stream sends in-band once its status line has gone out; a bug is logged here, with its
    traceback, since the client only gets the generic message."""
    mapped = translate(exc)
    if mapped is None:
        log.error("%s stream failed", what, exc_info=exc)
        return error_body("internal server error; the server log has the details", "server_error")
    return error_body(mapped.message, mapped.type)


def error_response(status: int, message: str, type_: str | None = None, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(message, type_ or _TYPES.get(status, "error"), **extra), status, headers=headers)


def translate(exc: BaseException) -> APIError | None:
    """The API error an engine exception stands for, or None when it is a bug (a 500)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, KeyError):
        return APIError(404, str(exc.args[0]) if exc.args else "not found")
    if isinstance(exc, JobFinished):
        return APIError(409, str(exc))
    if isinstance(exc, ShuttingDown):
        return APIError(503, str(exc))
    if isinstance(exc, StoreError):
        # StoreError carries no code: an unknown collection is a 404, a model mismatch and the like a conflict.
        message = str(exc)
        return APIError(404 if "does not exist" in message else 409, message)
    if type(exc).__name__ == "LLMServerError":  # rag.models.openai_llm, imported lazily there
        return APIError(503, f"the language model server is unavailable: {exc}")
    if isinstance(exc, ValueError):  # BudgetError, ContextWindowExceeded, empty question, unknown mode ...
        return APIError(400, str(exc))
    return None


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            why = (err.get("ctx") or {}).get("error") or err.get("msg", "")
            parts.append(f"the body is not valid JSON ({why})")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure the same JSON shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()[:20]
        ]
        return error_response(422, _validation_message(exc), details=details)

    async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
        mapped = translate(exc)
        if mapped is not None:
            log.info("%s %s -> %d: %s", request.method, request.url.path, mapped.status, mapped.message)
            return error_response(mapped.status, mapped.message, mapped.type, mapped.headers)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal server error; the server log has the details")

    # Specific classes are handled inside the app (no re-raise); ``Exception`` is the outermost safety net.
    for cls in (KeyError, ValueError, StoreError, JobFinished, ShuttingDown, RuntimeError, OSError, Exception):
        app.add_exception_handler(cls, _engine_error)

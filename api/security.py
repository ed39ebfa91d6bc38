"""What protects the server: bearer API keys, request size limits, and the allowed-roots rule for server paths.

- Keys of RAG_API_KEYS are compared with ``hmac.compare_digest`` against every one (no early exit); stored keys are
  found by the hash of what is presented (``rag/store/keys.py``). Keys are never logged. What a key may do is
  decided in ``api/access.py``.
- Size limits are enforced while the body streams in, not after it has been buffered: a declared
  ``Content-Length`` over the limit is refused before reading, and a chunked body is cut off at the limit.
  Uploads (multipart) get ``max_upload_mb``; everything else ``max_request_kb``.
- Every response says ``X-Content-Type-Options: nosniff``: a browser must not guess a type for what we send
  (a JSON error echoing a client's text rendered as HTML, say).
- Keys are required unless turned off: an empty key list (``RAG_API_KEYS=''``, ``','`` or ``'[]'``, or unset) with
  no stored key is refused at start-up unless ``RAG_AUTH=off`` says the API is meant to be open (:func:`check_auth`).
- A server path is resolved (symlinks, ``..``) before it is compared with the allowed roots, so neither a
  ``../`` nor a symlink inside a root can reach a file outside it. Folder walks do not follow symlinks
  (``ingest.discover``), so only the top-level paths need this check.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import get_rag
from api.errors import APIError, error_response
from rag.settings import Settings
from rag.store.keys import KEY_PREFIX, KeyInfo, Role

log = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(auto_error=False, description="An API key (of RAG_API_KEYS, or made by `rag keys create`), "
                           "as `Authorization: Bearer <key>`.")

OPEN = KeyInfo(name="open", role=Role.ADMIN, collections=None)
"""Who a request is with authentication off (RAG_AUTH=off): an admin of everything, as before keys had scopes."""


def env_key_index(presented: str, keys: list[str]) -> int | None:
    """The position of ``presented`` among ``keys``, compared in constant time against every key (the loop does
    not stop at the first match)."""
    given = presented.encode()
    found: int | None = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(given, key.encode()):
            found = index
    return found


def check_auth(settings: Settings, stored_keys: Callable[[], bool]) -> None:
    """Refuse to serve with authentication on and no key at all, neither in RAG_API_KEYS nor in the store (one
    line, for the operator who typed an empty list). ``stored_keys`` is asked only when the list is empty."""
    if settings.auth and not settings.api_keys and not stored_keys():
        raise ValueError("RAG_API_KEYS holds no key and none was made with `rag keys create`: set one key or a "
                         "comma-separated list, or RAG_AUTH=off to serve the API without authentication")


async def authenticate(request: Request) -> KeyInfo:
    """The key a request presents: a key of RAG_API_KEYS (an admin of every collection, named by its position), or
    a stored key, read from SQL on every request so that a revocation holds at once on every replica. 401 for no
    key, an unknown, expired or revoked one; the presented key is never logged."""
    settings: Settings = request.app.state.settings
    if not settings.auth:
        return OPEN
    credentials: HTTPAuthorizationCredentials | None = await bearer_scheme(request)
    if credentials is None:
        raise _unauthorized(request, "missing or invalid API key (send Authorization: Bearer <key>)")
    secret = credentials.credentials
    index = env_key_index(secret, settings.api_keys)
    if index is not None:
        return KeyInfo(name=f"RAG_API_KEYS#{index + 1}", role=Role.ADMIN, collections=None)
    key = None
    if secret.startswith(KEY_PREFIX):
        key = await run_in_threadpool(get_rag(request).store.key_for, secret)
    if key is None:
        raise _unauthorized(request, "missing or invalid API key (send Authorization: Bearer <key>)")
    why = key.refusal()
    if why is not None:
        raise _unauthorized(request, why)
    return key


def _unauthorized(request: Request, why: str) -> APIError:
    log.info("rejected request to %s: %s", request.url.path, why)
    return APIError(401, why, headers={"WWW-Authenticate": "Bearer"})


class BodyTooLarge(HTTPException):
    """Raised from inside ``receive`` so FastAPI's body parsing passes it through as an HTTP error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {_human(limit)}")


def _human(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n / 1024:g} KB"


class BodyLimitMiddleware:
    """Refuses request bodies over the configured size with 413, for declared and streamed lengths alike."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.upload_limit = int(settings.max_upload_mb * 2**20)
        self.request_limit = int(settings.max_request_kb * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        is_upload = headers.get("content-type", "").lower().startswith("multipart/")
        limit = self.upload_limit if is_upload else self.request_limit
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(413, f"request body of {_human(int(declared))} exceeds the limit of {_human(limit)}")
            await response(scope, receive, send)  # the unread body is discarded by the server
            return

        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class NoSniffMiddleware:
    """Adds ``X-Content-Type-Options: nosniff`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_nosniff)


def resolve_allowed(raw: str, roots: list[Path]) -> Path:
    """The resolved path, if it lies inside an allowed root; otherwise a 403.

    Relative paths are taken relative to the first allowed root (the server's working directory means nothing
    to a client). Resolution follows symlinks and ``..`` before the comparison.
    """
    if not roots:
        raise APIError(403, "ingestion from server paths is disabled: no allowed roots are configured (RAG_ALLOWED_ROOTS)")
    if "\x00" in raw:
        raise APIError(400, "a path contains a NUL byte")
    resolved_roots = [Path(r).expanduser().resolve() for r in roots]
    path = Path(raw)  # no ~ expansion: the server's home directory means nothing to a client
    if not path.is_absolute():
        path = resolved_roots[0] / path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise APIError(400, f"cannot resolve path {raw!r}: {exc}") from None
    if not any(resolved == root or resolved.is_relative_to(root) for root in resolved_roots):
        raise APIError(403, f"path {raw!r} is outside the allowed roots")
    return resolved

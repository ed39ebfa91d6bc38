"""Client text checked once, at the edge: a JSON body holding a lone surrogate is a 422 naming the field, on every route.

JSON may spell a UTF-16 surrogate alone (``"\\udfff"``), which Python decodes into a string that no UTF-8 encoder
takes. Pydantic refuses it only in fields with a length or pattern constraint, so before this a lone surrogate
reached the tokenizer (an HTTP 500 on ``/v1/chat/completions``) or SQL (a job whose listing then failed to
serialise for as long as it was listed). Raw UTF-8 cannot hold a surrogate at all (it is not valid JSON then), and
URLs are percent-decoded with replacement characters, so the escaped form in a JSON body is the only way in.

Runs inside the body-size limit, so the body it reads is bounded; bodies without such an escape cost one bytes scan.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_at(value: Any, loc: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], str] | None:
    """Where in a decoded JSON value the first string (a key or a value) holding a lone surrogate is, and which."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return (loc, found.group()) if found else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and (found := _SURROGATE.search(key)):
            return (*loc, key.encode("utf-8", "backslashreplace").decode()), found.group()  # named, not echoed
        if (where := lone_surrogate_at(item, (*loc, key))) is not None:
            return where
    return None


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return scope.get("method") in ("POST", "PUT", "PATCH")  # no content type: /v1/ingest reads it as JSON


class LoneSurrogateMiddleware:
    """Answers 422 to a JSON request body with a lone surrogate anywhere in it; passes every other request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except HTTPException as exc:  # the body-size limit, raised while the body streams in
            await error_response(exc.status_code, str(exc.detail))(scope, receive, send)
            return
        body = b"".join(chunks)
        where = _lone_surrogate(body)
        if where is not None:
            loc, char = where
            field = ".".join(str(p) for p in loc) or "body"
            msg = f"lone surrogate U+{ord(char):04X} is not valid Unicode text"
            detail = {"loc": ["body", *loc], "msg": msg, "type": "string_unicode"}
            await error_response(422, f"{field}: {msg}", details=[detail])(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _lone_surrogate(body: bytes) -> tuple[tuple[str | int, ...], str] | None:
    if not _ESCAPED_SURROGATE.search(body):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # the route reports invalid JSON in its own words
        return None
    return lone_surrogate_at(value)

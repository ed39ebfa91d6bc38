"""Who may do what: one dependency, :func:`authorize`, decides for every protected route from one table, :data:`RULES`.

A rule names the role a route needs and how its request names a collection (a body or query field, the model
``rag:<collection>``, or the document, passage or job in its path). The dependency, in this order:

1. authenticates the bearer key (401; ``api/security.py``) and counts it against its per-minute limit (429);
2. refuses an action the key's role lacks with 403 — before looking at any object, so a 403 says nothing about
   what exists;
3. finds the collection the request acts on and answers 404 when the key may not see it, with the very message a
   missing object gets: a key cannot tell "not yours" from "not there";
4. for an answer, holds one of the key's concurrent-answer slots until the response ends (429 past the limit).

Routes receive the result as :class:`Access` and act on ``access.collection`` (and list only ``access.visible``);
none checks anything by hand. :func:`check_rules` runs at start-up: a route that is neither public nor ruled, a
ruled route without the dependency, or a rule for a route that does not exist stops the server from starting.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import get_rag
from api.errors import APIError
from api.limits import KeyLimits
from api.security import authenticate
from rag.store.keys import KeyInfo, Role

if TYPE_CHECKING:
    from rag.engine import RAG

RAG_MODEL = "rag"
"""The OpenAI-compatible model that answers from the documents (``api/openai_compat.py``)."""
MODEL_PREFIX = RAG_MODEL + ":"
"""``rag:<collection>``: the same, from one named collection."""


@dataclass(frozen=True)
class Access:
    """What :func:`authorize` decided for one request."""

    key: KeyInfo
    collection: str | None  # the collection the request acts on; None when it names none (listings, models)

    @property
    def visible(self) -> tuple[str, ...] | None:
        """The collections the key may see (None: every one): what a listing is filtered to."""
        return self.key.collections

    def audit(self, request: Request, action: str, *, target: str | None = None,
              counts: dict[str, int] | None = None) -> Awaitable[None]:
        """Record a write in the audit log under this key's name (awaited: the store is blocking)."""
        store = get_rag(request).store
        return run_in_threadpool(store.record, self.key.name, action, collection=self.collection, target=target,
                                 counts=counts)


Locator = Callable[[Request, KeyInfo], Awaitable[str | None]]
"""Finds the collection a request acts on (None: it names none); raises the 404 of an object that does not exist."""


@dataclass(frozen=True)
class Rule:
    role: Role
    locate: Locator | None = None
    every_collection: bool = False  # only a key that sees every collection (aggregates over all of them)
    answers: bool = False  # holds one of the key's concurrent-answer slots


# --- locators ------------------------------------------------------------------------------------------
async def _json_body(request: Request) -> dict[str, Any]:
    """The JSON body's top-level fields ({} when it is no JSON object: the route's validation answers that)."""
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _named(value: Any, key: KeyInfo) -> str:
    return value if isinstance(value, str) and value else key.default_collection


async def body_collection(request: Request, key: KeyInfo) -> str:
    """``collection`` of the JSON body, else the key's default collection."""
    return _named((await _json_body(request)).get("collection"), key)


async def ingest_collection(request: Request, key: KeyInfo) -> str | None:
    """The collection of an ingestion: the JSON body's, or the multipart form's ``collection`` field (the form is
    parsed here, within the route's limits, and the route reads the same parsed form)."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        form = await request.form(max_files=1000, max_fields=100)
        value = form.get("collection")
        return _named(value if not isinstance(value, UploadFile) else None, key)
    return await body_collection(request, key)


async def query_collection(request: Request, key: KeyInfo) -> str | None:
    """``?collection=`` when given; a listing without it shows every collection the key sees."""
    return request.query_params.get("collection") or None


async def chat_collection(request: Request, key: KeyInfo) -> str | None:
    """Model ``rag:<collection>`` names it; model ``rag`` takes ``collection`` (extra body) or the key's default;
    any other model is the plain LLM and reads no collection."""
    body = await _json_body(request)
    model = body.get("model")
    if isinstance(model, str) and model.startswith(MODEL_PREFIX) and model != MODEL_PREFIX:
        name = model.removeprefix(MODEL_PREFIX)
        if len(name) > 200 or "\x00" in name:  # what the `collection` field's own bounds refuse
            raise APIError(422, "the collection of a 'rag:<collection>' model is at most 200 characters, without NUL")
        return name
    if model == RAG_MODEL:
        return _named(body.get("collection"), key)
    return None


def _path_id(request: Request, name: str) -> int | None:
    """A numeric path parameter, or None when it is malformed (the route's validation then answers 422 before the
    route runs)."""
    raw = request.path_params.get(name, "")
    return int(raw) if _is_number(raw) and 1 <= int(raw) <= 2**31 - 1 else None


def _is_number(raw: str) -> bool:
    return raw.isascii() and raw.isdigit()  # "²".isdigit() too, which int() refuses


def _owner(find: Callable[[RAG, Any], str | None], what: str, param: str, parse: Callable[[Request, str], Any]) -> Locator:
    """A locator for an object in the path: its collection, or 404 when there is no such object."""

    async def locate(request: Request, key: KeyInfo) -> str | None:
        ref = parse(request, param)
        if ref is None:
            return None
        owner = await run_in_threadpool(find, get_rag(request), ref)
        if owner is None:
            raise APIError(404, f"no {what} {ref!r}")
        return owner

    return locate


def _job_id(request: Request, name: str) -> str:
    return request.path_params.get(name, "")


def _run_collection(rag: RAG, job_id: str) -> str | None:
    run = rag.store.get_run(job_id)
    return run.collection if run is not None else None


document = _owner(lambda rag, ref: rag.store.document_collection(ref), "document", "document_id", _path_id)
chunk = _owner(lambda rag, ref: rag.store.chunk_collection(ref), "passage", "chunk_id", _path_id)
job = _owner(_run_collection, "job", "job_id", _job_id)

READER, WRITER, ADMIN = Role.READER, Role.WRITER, Role.ADMIN

RULES: dict[tuple[str, str], Rule] = {
    ("POST", "/v1/ingest"): Rule(WRITER, ingest_collection),
    ("GET", "/v1/jobs"): Rule(READER),
    ("GET", "/v1/jobs/{job_id}"): Rule(READER, job),
    ("POST", "/v1/jobs/{job_id}/cancel"): Rule(WRITER, job),
    ("POST", "/v1/query"): Rule(READER, body_collection, answers=True),
    ("POST", "/v1/retrieve"): Rule(READER, body_collection),
    ("GET", "/v1/documents"): Rule(READER, query_collection),
    ("GET", "/v1/documents/{document_id}"): Rule(READER, document),
    ("DELETE", "/v1/documents/{document_id}"): Rule(WRITER, document),
    ("GET", "/v1/documents/{document_id}/text"): Rule(READER, document),
    ("GET", "/v1/chunks/{chunk_id}"): Rule(READER, chunk),
    ("GET", "/v1/collections"): Rule(READER),
    ("GET", "/v1/watch"): Rule(READER),
    ("GET", "/v1/models"): Rule(READER),
    ("POST", "/v1/chat/completions"): Rule(READER, chat_collection, answers=True),
    ("POST", "/tokenize"): Rule(READER),
    ("POST", "/detokenize"): Rule(READER),
    ("GET", "/metrics"): Rule(READER, every_collection=True),
    ("GET", "/v1/keys"): Rule(ADMIN),
    ("POST", "/v1/keys"): Rule(ADMIN),
    ("DELETE", "/v1/keys/{name}"): Rule(ADMIN),
    ("GET", "/v1/audit"): Rule(ADMIN),
}
"""Every protected route: (method, path template) → its rule. A route missing here stops the server at start-up."""

PUBLIC = frozenset({"/healthz", "/readyz", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/static"})
"""Routes served without a key: health for load balancers, the page and its assets (the page asks for a key), the
API's description."""


# --- the dependency ------------------------------------------------------------------------------------
async def authorize(request: Request) -> AsyncIterator[Access]:
    """The one access decision of a protected route (see the module's docstring for its order)."""
    rules: dict[tuple[int, str], Rule] = request.app.state.access_rules
    rule = rules.get((id(request.scope.get("route")), request.method))
    if rule is None:  # check_rules makes this unreachable; refuse rather than serve unruled
        raise APIError(403, "this route has no access rule")
    key = await authenticate(request)
    limits: KeyLimits = request.app.state.key_limits
    limits.admit(key.name)
    if not key.role.covers(rule.role):
        raise APIError(403, f"a {key.role} key may not do this: it needs the {rule.role} role")
    if rule.every_collection and key.collections is not None:
        raise APIError(403, "this needs a key that sees every collection")
    collection = await rule.locate(request, key) if rule.locate is not None else None
    if collection is not None and not key.sees(collection):
        await request.close()  # an upload's form, parsed to find its collection
        raise APIError(404, _not_found(request, collection))
    access = Access(key, collection)
    if rule.answers:
        async with limits.answering(key.name):
            yield access
    else:
        yield access


def _not_found(request: Request, collection: str) -> str:
    """The 404 message for an object outside the key's scope: the one its absence would get."""
    for param, what in (("document_id", "document"), ("chunk_id", "passage"), ("job_id", "job")):
        if param in request.path_params:
            ref = request.path_params[param]
            return f"no {what} {int(ref) if _is_number(ref) else ref!r}"
    return f"no collection {collection!r}"


# --- the start-up check ----------------------------------------------------------------------------------
def _depends_on(dependant: Dependant | None, call: Callable[..., Any]) -> bool:
    return dependant is not None and any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def check_rules(app: FastAPI) -> None:
    """Refuse to start unless every route is public or has a rule and the dependency, and every rule has a route;
    then index the rules by route for :func:`authorize` (``app.state.access_rules``) and publish each in the
    OpenAPI schema as ``x-access``, so a client can read which role an operation needs."""
    problems: list[str] = []
    by_route: dict[tuple[int, str], Rule] = {}
    for context in iter_route_contexts(app.routes):
        path = context.path or ""
        if path in PUBLIC:
            continue
        if not isinstance(context.original_route, APIRoute):
            problems.append(f"{path}: not an API route and not public")
            continue
        for method in sorted(context.methods or ()):
            rule = RULES.get((method, path))
            if rule is None:
                problems.append(f"{method} {path}: no access rule (add it to api.access.RULES)")
            elif not _depends_on(context.dependant, authorize):
                problems.append(f"{method} {path}: has a rule but not the authorize dependency")
            else:
                by_route[(id(context.original_route), method)] = rule
    problems += [f"{m} {p}: a rule for a route that does not exist" for m, p in sorted(set(RULES) - _served(app))]
    if problems:
        raise RuntimeError("access rules do not match the routes: " + "; ".join(problems))
    app.state.access_rules = by_route
    app.openapi = _openapi_with_access(app)  # type: ignore[method-assign]


def _served(app: FastAPI) -> set[tuple[str, str]]:
    return {(m, c.path or "") for c in iter_route_contexts(app.routes) for m in (c.methods or ())}


def _openapi_with_access(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema, with each operation's rule as ``x-access`` (FastAPI's documented way to extend it)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for (method, path), rule in RULES.items():
                operation = schema["paths"].get(path, {}).get(method.lower())
                if operation is not None:
                    operation["x-access"] = {"role": rule.role.value, "every_collection": rule.every_collection}
        return app.openapi_schema or schema

    return openapi

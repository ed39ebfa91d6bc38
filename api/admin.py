"""Admin routes: API keys (``/v1/keys``) and the audit log (``/v1/audit``). The admin role is required by the rules of
``api/access.py``, like every other route's; these only translate HTTP to the store's key and audit records."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from api import schemas as S
from api.access import Access, authorize
from api.deps import get_rag
from rag.engine import RAG
from rag.store.keys import NAME_PATTERN, parse_duration

router = APIRouter(prefix="/v1", dependencies=[Depends(authorize)], tags=["access"])

Rag = Annotated[RAG, Depends(get_rag)]
AccessDep = Annotated[Access, Depends(authorize)]
KeyName = Annotated[str, Path(pattern=NAME_PATTERN, description="The key's name.")]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, description="A name for the key, unique among active keys.")
    role: Literal["reader", "writer", "admin"] = Field(
        description="reader: retrieve, ask, read documents; writer: also ingest, upload, delete; admin: also keys, "
        "audit, and every collection.")
    collections: list[Annotated[str, Field(min_length=1, max_length=200, pattern=S.NO_NUL)]] | None = Field(
        default=None, max_length=1000, description="The collections it may see (none: every collection).")
    expires: str | None = Field(default=None, max_length=20, description="How long it stays valid: 30d, 12h, 90m, 2w.")


class KeyOut(BaseModel):
    name: str
    role: str
    collections: list[str] | None
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None = None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret, shown this once: only its hash is stored.")


class KeyList(BaseModel):
    keys: list[KeyOut]


class AuditOut(BaseModel):
    id: int
    at: str
    key: str = Field(description="The name of the key that acted.")
    action: str = Field(description="ingest, upload, delete, cancel, key.create or key.revoke.")
    collection: str | None
    target: str | None = Field(description="The job id, document id or key name acted on.")
    counts: dict[str, int]


class AuditList(BaseModel):
    entries: list[AuditOut]


@router.post("/keys", status_code=201, response_model=KeyCreated, responses=S.error_responses(400, 401, 403, 422))
def create_key(req: KeyCreate, rag: Rag, access: AccessDep) -> dict[str, Any]:
    """A new key; its secret is in this response only."""
    expires_in = parse_duration(req.expires) if req.expires else None
    info, secret = rag.store.create_key(req.name, req.role, req.collections, expires_in=expires_in,
                                        actor=access.key.name)
    return {**info.to_dict(), "key": secret}


@router.get("/keys", response_model=KeyList, responses=S.error_responses(401, 403))
def list_keys(rag: Rag, revoked: Annotated[bool, Query(description="Include revoked keys.")] = False) -> dict[str, Any]:
    """The stored keys (never their secrets); keys of RAG_API_KEYS are not listed."""
    return {"keys": [k.to_dict() for k in rag.store.list_keys(revoked=revoked)]}


@router.delete("/keys/{name}", response_model=KeyOut, responses=S.error_responses(401, 403, 404))
def revoke_key(name: KeyName, rag: Rag, access: AccessDep) -> dict[str, Any]:
    """Revoke the active key ``name``: refused from the next request on, on every server of the database."""
    return rag.store.revoke_key(name, actor=access.key.name).to_dict()


@router.get("/audit", response_model=AuditList, responses=S.error_responses(401, 403))
def audit_log(
    rag: Rag,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    collection: Annotated[str | None, Query(max_length=200, pattern=S.NO_NUL)] = None,
    key: Annotated[str | None, Query(max_length=100, pattern=S.NO_NUL)] = None,
    action: Annotated[str | None, Query(max_length=20, pattern=S.NO_NUL)] = None,
) -> dict[str, Any]:
    """Writes and key changes, newest first."""
    entries = rag.store.audit_log(limit, collection=collection, key=key, action=action)
    return {"entries": [e.to_dict() for e in entries]}

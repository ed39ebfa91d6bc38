"""API keys in SQL: a name, a role, the collections it may see, an expiry; only a hash of the secret is stored.

Why these choices:
- The secret is 32 random bytes made here (``secrets``), never chosen by a person, so a fast hash is the right one:
  SHA-256 of a 256-bit secret cannot be reversed or guessed, and it lets a request find its key with one indexed
  lookup. A slow password hash (bcrypt, argon2) protects low-entropy secrets and would cost every request ~100 ms.
- Roles are ordered (reader < writer < admin): each can do what the one below can, and more. An admin sees every
  collection; the others see their list, or every collection when created without one.
- A key change and its audit entry commit in one transaction: the log cannot miss a change that happened.
- Nothing is cached: every request reads its key (one indexed row), so a revoked key is refused at once, on every
  process that shares the database.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rag.store.audit import audit_entry
from rag.store.schema import ApiKey, utcnow

KEY_PREFIX = "rag_"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"
_DURATION = re.compile(r"^\s*(\d{1,4})\s*([mhdw])\s*$")  # at most 9999 weeks: a date stays representable
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Role(StrEnum):
    READER = "reader"  # retrieve, ask, read documents and passages
    WRITER = "writer"  # also ingest, upload, delete, cancel jobs
    ADMIN = "admin"  # also manage keys, read the audit log; sees every collection

    def covers(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may (roles are ordered)."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class KeyInfo:
    """What a key may do, as every face shows it (never its secret or hash)."""

    name: str
    role: Role
    collections: tuple[str, ...] | None  # None: every collection
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def sees(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    @property
    def default_collection(self) -> str:
        """Where a request that names no collection goes: ``default``, unless the key's list leaves it out (then
        the first collection of the list)."""
        if self.collections is None or "default" in self.collections:
            return "default"
        return self.collections[0]

    def refusal(self, now: datetime | None = None) -> str | None:
        """Why the key cannot be used now (revoked, expired), or None."""
        now = now or utcnow()
        if self.revoked_at is not None:
            return "this API key was revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "this API key has expired"
        return None

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {"name": self.name, "role": self.role.value,
                "collections": list(self.collections) if self.collections is not None else None,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "revoked_at": iso(self.revoked_at)}

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(name=row.name, role=Role(row.role),
                   collections=tuple(row.collections) if row.collections is not None else None,
                   created_at=_aware(row.created_at), expires_at=_aware(row.expires_at),
                   revoked_at=_aware(row.revoked_at))


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes for the UTC values it was given."""
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``: how long a new key stays valid."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"expiry {text!r} is not a duration such as 30d, 12h, 90m or 2w")
    return timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})


class KeyRecords:
    sessions: sessionmaker[Session]

    def create_key(self, name: str, role: Role | str, collections: list[str] | None = None, *,
                   expires_in: timedelta | None = None, actor: str) -> tuple[KeyInfo, str]:
        """A new key and its secret (shown once: only its hash is stored). ``actor`` names who made it (audit)."""
        role = Role(role)
        if re.fullmatch(NAME_PATTERN, name) is None:
            raise ValueError(f"key name {name!r} must be letters, digits, '.', '_', '@' or '-' (at most 100)")
        if role is Role.ADMIN and collections is not None:
            raise ValueError("an admin key sees every collection: give it no collections")
        if collections is not None:
            collections = list(dict.fromkeys(c.strip() for c in collections if c.strip()))
            if not collections:
                raise ValueError("name at least one collection, or none for every collection")
            if any(len(c) > 200 or "\x00" in c for c in collections):
                raise ValueError("a collection name is at most 200 characters, without NUL")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        row = ApiKey(name=name, key_hash=key_hash(secret), role=role.value, collections=collections, created_at=now,
                     expires_at=now + expires_in if expires_in is not None else None)
        try:
            with self.sessions.begin() as s:
                s.add(row)
                s.add(audit_entry(actor, "key.create", target=name, counts={"collections": len(collections or [])}))
        except IntegrityError:
            raise ValueError(f"a key named {name!r} exists already (revoke it first)") from None
        return KeyInfo.of(row), secret

    def key_for(self, secret: str) -> KeyInfo | None:
        """The key this secret is, revoked and expired ones included (the caller says why it refuses them)."""
        with self.sessions() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash(secret)))
            return KeyInfo.of(row) if row is not None else None

    def list_keys(self, *, revoked: bool = False) -> list[KeyInfo]:
        with self.sessions() as s:
            q = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
            if not revoked:
                q = q.where(ApiKey.revoked_at.is_(None))
            return [KeyInfo.of(row) for row in s.scalars(q)]

    def has_keys(self) -> bool:
        """Whether any key could still be used (not revoked; expiry is not checked)."""
        with self.sessions() as s:
            return s.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def revoke_key(self, name: str, *, actor: str) -> KeyInfo:
        """Revoke the active key ``name``; KeyError when there is none."""
        with self.sessions.begin() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).with_for_update())
            if row is None:
                raise KeyError(f"no key named {name!r}")
            revoked = replace(KeyInfo.of(row), revoked_at=utcnow())
            s.execute(update(ApiKey).where(ApiKey.id == row.id).values(revoked_at=revoked.revoked_at))
            s.add(audit_entry(actor, "key.revoke", target=name))
        return revoked

"""E-mail (.eml): the main headers and the body; attachments are counted, not read."""

from __future__ import annotations

import email.policy
from email.parser import BytesParser
from typing import Any

from ingest.readers.base import Parsed, Work
from ingest.readers.html import html_to_text


def parse_eml(data: bytes, _work: Work) -> Parsed:
    """An e-mail: the main headers, then the plain-text body (or the HTML body as text); attachments skipped."""
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    headers = {name: str(message[name]) for name in ("Subject", "From", "To", "Date") if message[name]}
    body_part = message.get_body(preferencelist=("plain", "html"))
    body = body_part.get_content() if body_part is not None else ""
    if body_part is not None and body_part.get_content_type() == "text/html":
        body = html_to_text(body)[0]
    head = "\n".join(f"{name}: {value}" for name, value in headers.items())
    metadata: dict[str, Any] = {name.lower(): value for name, value in headers.items() if name != "Subject"}
    metadata["attachments"] = sum(1 for _ in message.iter_attachments())
    return f"{head}\n\n{body}", headers.get("Subject"), metadata

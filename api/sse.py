"""Server-Sent Events framing: the one place an event's bytes are written, for ``/v1/query`` and the OpenAI face.

Routes choose what to send; this decides how it looks on the wire (``event:`` line, ``data:`` line, blank line)
and which headers keep proxies from buffering the stream.
"""

from __future__ import annotations

import json
from typing import Any

SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering by nginx (``X-Accel-Buffering``): each event must reach the client as it is sent."""


def sse(event: str | None, data: Any) -> str:
    """One Server-Sent Event; ``data`` is JSON-encoded so newlines and leading spaces survive (a str is sent as is).

    ``event`` names the event (``token``, ``done``, ``error``); None sends an unnamed one, as OpenAI's stream does.
    """
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"

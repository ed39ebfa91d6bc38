"""The web page at ``/`` of ``rag serve``: plain HTML, CSS and ES modules vendored in this package.

No build step and no third-party front-end code: the page is small enough to write by hand, so installing the
service needs no Node.js and running it needs no network (nothing is fetched from a CDN; the Content-Security-Policy
below makes the browser refuse any other origin). The page and its assets are served without an API key; every
``/v1`` call the page makes carries the key the user typed in.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def install(app: FastAPI) -> None:
    """``GET /`` answers the page; ``/static/…`` its assets. Mounted apart from ``/v1`` so unknown API paths still
    answer the API's JSON 404."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
        return FileResponse(STATIC / "index.html", headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

"""GET / - a one-page client to try every endpoint in a browser (no API key needed for the page itself)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
# The page's own files and nothing else: no path is ever built from the request.
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# Everything the page needs comes from this server; the API answers with JSON, images stay in blob: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(
        STATIC / "index.html", media_type="text/html", headers={**HEADERS, "Content-Security-Policy": CSP}
    )


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    if name not in FILES:
        raise HTTPException(404, f"no static file named {name!r}")
    return FileResponse(STATIC / name, media_type=FILES[name], headers=HEADERS)

"""The console's page and its assets (``/console``): plain HTML, CSS and
JavaScript shipped in the package, no build step and nothing fetched from
elsewhere. The page holds no data: everything it shows comes from the API,
with the session cookie (``POST /api/session``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from actionq.errors import NotFoundError

__all__ = ["STATIC", "console_router"]

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_ASSETS = frozenset(p.name for p in STATIC.iterdir() if p.suffix in _TYPES)

# Only this origin's own scripts, styles and requests; never framed. Origin:
# same-origin requests keep their Origin header (the cookie's CSRF check reads
# it; "no-referrer" would send "Origin: null" with a POST).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

console_router = APIRouter(include_in_schema=False)


@console_router.get("/console")
def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=308)


@console_router.get("/console/")
def console_page() -> FileResponse:
    return _asset("index.html")


@console_router.get("/console/static/{name}")
def console_asset(name: str) -> FileResponse:
    if name not in _ASSETS:  # a fixed set: no path from the request reaches the disk
        raise NotFoundError(f"no console asset {name!r}")
    return _asset(name)


def _asset(name: str) -> FileResponse:
    path = STATIC / name
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)

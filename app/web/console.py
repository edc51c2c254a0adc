"""The operator's console at `/console`: a static page (app/web/console/) that calls the
admin API with a token the operator pastes. The page holds no data, so its routes are
open; every data call it makes needs the token.

Served with a strict Content-Security-Policy: no inline script or style and nothing from
another origin, so text from a peer's answer (a dong name in an exit message) that the
page failed to treat as text still could not run next to the token.

The page shows dates and hours in the service's zone (APP_TIMEZONE), not the browser's:
the zone is written into the page's `app-timezone` meta element as it is loaded.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

CONSOLE_PATH = "/console"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The names do not change with the content: revalidate every time (a 304 mostly).
    "Cache-Control": "no-cache",
}
TIMEZONE_MARK = b"{{APP_TIMEZONE}}"  # in index.html
# path -> (file in app/web/console, content type)
ASSETS = {
    CONSOLE_PATH: ("index.html", "text/html"),
    f"{CONSOLE_PATH}/console.js": ("console.js", "text/javascript"),
    f"{CONSOLE_PATH}/console.css": ("console.css", "text/css"),
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _load(name: str, content_type: str, timezone: str) -> _Asset:
    body = files("app.web").joinpath("console", name).read_bytes()
    body = body.replace(TIMEZONE_MARK, html.escape(timezone).encode())
    return _Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def _handler(asset: _Asset) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        headers = {**SECURITY_HEADERS, "ETag": asset.etag}
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
        )

    return serve


def console_routes(timezone: str) -> list[web.RouteDef]:
    """The page (showing times in `timezone`) and its two assets, read once (a few
    kilobytes)."""
    return [
        web.get(path, _handler(_load(name, content_type, timezone)))
        for path, (name, content_type) in ASSETS.items()
    ]

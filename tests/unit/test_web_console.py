"""The console's page and assets: served open, with a strict CSP and revalidation; the page
itself keeps to what that CSP allows (no inline script, style or handler)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.web.app import create_app
from app.web.console import CONSOLE_PATH
from tests.fakes import memory_launcher

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@pytest.fixture
async def client() -> TestClient:
    app = create_app(memory_launcher([]), {})
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (CONSOLE_PATH, "text/html"),
        (f"{CONSOLE_PATH}/console.js", "text/javascript"),
        (f"{CONSOLE_PATH}/console.css", "text/css"),
    ],
)
async def test_served_without_a_token_with_the_security_headers(
    client: TestClient, path: str, content_type: str
) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.content_type == content_type
    assert resp.charset == "utf-8"
    headers = resp.headers
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"
    assert "Set-Cookie" not in headers
    body = await resp.read()
    assert len(body) > 100

    again = await client.get(path, headers={"If-None-Match": headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == headers["ETag"]
    assert again.headers["Content-Security-Policy"] == CSP


async def test_other_paths_under_the_console_are_json_404s(client: TestClient) -> None:
    for path in (f"{CONSOLE_PATH}/", f"{CONSOLE_PATH}/index.html", f"{CONSOLE_PATH}/../app.py"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert (await resp.json())["error"]["code"] == "NOT_FOUND"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "script":
            self.script_text += data.strip()


async def test_the_page_uses_nothing_the_policy_refuses(client: TestClient) -> None:
    parser = _Tags()
    parser.feed(await (await client.get(CONSOLE_PATH)).text())
    tags = parser.tags
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert scripts == [{"type": "module", "src": "/console/console.js"}]
    assert parser.script_text == ""
    assert not [tag for tag, _ in tags if tag == "style"]
    for tag, attrs in tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], tag
        for name in ("src", "href", "action"):
            value = attrs.get(name)
            assert value is None or value.startswith(("/console/", "data:")), (tag, value)


async def test_the_script_writes_text_only(client: TestClient) -> None:
    script = await (await client.get(f"{CONSOLE_PATH}/console.js")).text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert not re.search(r"\bnew Function\b|setTimeout\(\s*[\"'`]", script)
    assert "localStorage" not in script
    assert "document.cookie" not in script


@pytest.mark.parametrize("zone", ["Asia/Seoul", "America/Argentina/Buenos_Aires"])
async def test_the_page_names_the_service_zone(zone: str) -> None:
    app = create_app(memory_launcher([], APP_TIMEZONE=zone), {})
    async with TestClient(TestServer(app)) as client:
        parser = _Tags()
        parser.feed(await (await client.get(CONSOLE_PATH)).text())
    metas = [attrs for tag, attrs in parser.tags if tag == "meta" and "name" in attrs]
    assert {"name": "app-timezone", "content": zone} in metas

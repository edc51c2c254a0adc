"""The OpenAPI document and the app's routes describe the same API."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.composition import JOBS
from app.web.app import create_app
from app.web.console import CONSOLE_PATH
from app.web.openapi import openapi
from tests.fakes import memory_launcher

OPENAPI = openapi(JOBS)
METHODS = {"get", "post", "put", "patch", "delete"}


def app() -> web.Application:
    # The routes need no database: the launcher's job repository is in memory.
    return create_app(memory_launcher(JOBS), {})


def routes(application: web.Application) -> set[tuple[str, str]]:
    """The API's routes: the console's page is a client of the API, not part of it."""
    return {
        (route.method.lower(), route.resource.canonical)
        for route in application.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and not route.resource.canonical.startswith(CONSOLE_PATH)
    }


def documented() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, operations in OPENAPI["paths"].items()
        for method in operations
        if method in METHODS
    }


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    assert routes(app()) == documented()


def test_path_parameters_match_the_templates() -> None:
    for path, operations in OPENAPI["paths"].items():
        in_template = set(re.findall(r"{(\w+)}", path))
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_template, (method, path)


def test_admin_routes_and_only_they_declare_the_token() -> None:
    for path, operations in OPENAPI["paths"].items():
        for operation in operations.values():
            secured = operation.get("security") == [{"bearerAuth": []}]
            assert secured == path.startswith("/api/"), path
            if secured:
                assert {"401", "403"} <= set(operation["responses"]), path


def test_every_schema_reference_resolves() -> None:
    text = repr(OPENAPI)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in OPENAPI["components"]["schemas"]


async def test_the_document_is_served_without_a_token() -> None:
    async with TestClient(TestServer(app())) as client:
        resp = await client.get("/v3/api-docs")
        assert resp.status == 200
        assert await resp.json() == OPENAPI

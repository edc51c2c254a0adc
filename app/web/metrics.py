"""`/actuator/prometheus`: the project's registry plus process metrics, every series labelled
with the application name (as Spring's `management.metrics.tags.application` does)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from app.metrics import HTTP_SERVER_REQUESTS, REGISTRY
from app.web.errors import UNEXPECTED_ERROR
from app.web.repository_metrics import RepositoryMetrics

EXPOSITION = web.AppKey("exposition", CollectorRegistry)
REPOSITORY_METRICS = web.AppKey("repository_metrics", RepositoryMetrics)


class _Labelled(Collector):
    """Re-labels the samples of other registries at collect time."""

    def __init__(self, registries: Iterable[CollectorRegistry], labels: dict[str, str]) -> None:
        self._registries = tuple(registries)
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries:
            for family in registry.collect():
                labelled = Metric(family.name, family.documentation, family.type, family.unit)
                labelled.samples = [
                    sample._replace(labels={**sample.labels, **self._labels})
                    for sample in family.samples
                ]
                yield labelled


def exposition_registry(application: str, *collectors: Collector) -> CollectorRegistry:
    """What `/actuator/prometheus` exposes: app.metrics.REGISTRY, the process metrics
    (kept out of prometheus_client's global registry) and `collectors`, all with
    `application=...`."""
    local = CollectorRegistry()
    ProcessCollector(registry=local)
    PlatformCollector(registry=local)
    GCCollector(registry=local)
    for collector in collectors:
        local.register(collector)
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(_Labelled((REGISTRY, local), {"application": application}))
    return exposed


async def prometheus(request: web.Request) -> web.Response:
    await request.app[REPOSITORY_METRICS].refresh()
    body = generate_latest(request.app[EXPOSITION])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _uri(request: web.Request, status: int) -> str:
    """The route's template (`/api/v1/jobs/executions/{id}`), never the raw path: an
    unbounded label would grow the registry with every probe of a random URL. Without
    a route, Spring MVC's names: NOT_FOUND, REDIRECTION, else UNKNOWN."""
    resource = request.match_info.route.resource
    if resource is not None:
        return resource.canonical
    if status == 404:
        return "NOT_FOUND"
    return "REDIRECTION" if 300 <= status < 400 else "UNKNOWN"


# Spring's HttpOutcome, by the status's first digit
_OUTCOMES = {
    1: "INFORMATIONAL",
    2: "SUCCESS",
    3: "REDIRECTION",
    4: "CLIENT_ERROR",
    5: "SERVER_ERROR",
}


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Records http_server_requests_seconds with Spring MVC's tags; outermost, so it
    sees the final status. `exception` and `error` name the class of an unexpected
    exception answered 500 (`none` for the rest: the answers the API means, like those
    of a Spring @ExceptionHandler)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        failure = request.get(UNEXPECTED_ERROR)
        exception = "none" if failure is None else type(failure).__name__
        HTTP_SERVER_REQUESTS.labels(
            request.method,
            _uri(request, status),
            str(status),
            _OUTCOMES.get(status // 100, "UNKNOWN"),
            exception,
            exception,
        ).record(time.perf_counter() - started)

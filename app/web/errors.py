"""Every error answer in the platform's JSON shape (CONTRACTS section 4): a refusal by its
class's code and status (`app.errors`), anything else a generic 500."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, tzinfo
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger
from aiohttp.typedefs import Handler, Middleware

from app.errors import Refusal
from app.model import LaunchRefused

log = logging.getLogger(__name__)


class ApiError(Refusal):
    """A refusal of the API's own, not the service's (an unknown path, a method not
    allowed, a job without an estimate): its status and code given where it is raised."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code
        self.headers = dict(headers or {})


def execution_url(execution_id: int) -> str:
    return f"/api/v1/jobs/executions/{execution_id}"


# The exception a request met that the API does not mean (answered 500): the
# `exception` tag of http_server_requests_seconds
UNEXPECTED_ERROR = web.RequestKey("unexpected_error", Exception)


def _status_text(status: int) -> str:
    """`400 BAD_REQUEST`: Spring's HttpStatus rendering."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"{status} {phrase.upper().replace(' ', '_').replace('-', '_')}"


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return ApiError(404, "NOT_FOUND", f"no resource at {request.path}")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ApiError(
            405,
            "METHOD_NOT_ALLOWED",
            f"{request.method} is not allowed here; allowed: {allowed}",
            {"Allow": exc.headers["Allow"]},
        )
    code = _status_text(exc.status).split(" ", 1)[1]
    return ApiError(exc.status, code, exc.reason)


def _answer(refusal: Refusal) -> tuple[str, dict[str, str]]:
    """A refusal's message and headers: a refused launch points to the execution in its
    way (Location)."""
    if isinstance(refusal, LaunchRefused):
        url = execution_url(refusal.execution_id)
        return f"{refusal}; see {url}", {"Location": url}
    if isinstance(refusal, ApiError):
        return str(refusal), refusal.headers
    return str(refusal), {}


def error_middleware(tz: tzinfo) -> Middleware:
    """Renders a refusal by its class (`app.errors`) and aiohttp's HTTP errors; any other
    exception, a fault included, is logged and answered 500 with a generic message (never
    a stack trace)."""

    @web.middleware
    async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error: Refusal = _from_http_exception(request, exc)
        except Refusal as exc:
            error = exc
        except Exception as exc:
            log.exception("unexpected error: %s %s", request.method, request.path)
            request[UNEXPECTED_ERROR] = exc
            error = ApiError(500, "INTERNAL_SERVER_ERROR", "an unexpected error occurred")
        message, headers = _answer(error)
        body = {
            "error": {
                "status": _status_text(error.http_status),
                "code": error.code,
                "message": message,
                "requestUrl": request.path,
                # ISO 8601 in the service's zone with its offset, the clock of the logs
                "timestamp": datetime.now(tz).isoformat(),
            }
        }
        return web.json_response(body, status=error.http_status, headers=headers)

    return render_errors


_MAX_SUMMARY_CHARS = 200


class ServerLog(logging.LoggerAdapter):
    """aiohttp's server logger, for `web.Application(handler_args={"logger": ...})`.

    aiohttp answers a request it cannot parse (an unknown method, a garbage request line,
    a malformed header) with 400 before any middleware sees it, and logs it with a
    traceback: at ERROR, except an unknown method as the first request of a connection
    (DEBUG). Any client could flood the log so. Such a request is the client's error:
    here it is one INFO line, whatever the case; every other record passes unchanged.
    """

    def __init__(self) -> None:
        super().__init__(server_logger, {})

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError) and 400 <= error.code < 500:
            where = str(msg) % args if args else str(msg)
            self.logger.info("%s: %d %s", where, error.code, _summary(error))
            return
        super().log(level, msg, *args, **kwargs)


def _summary(error: HttpProcessingError) -> str:
    """aiohttp's message on one line, without its caret line: `Invalid method
    encountered: b'BREW / HTTP/1.1'` (the request's bytes are in repr, so escaped)."""
    parts = [p.strip() for p in error.message.splitlines() if p.strip() and p.strip() != "^"]
    text = " ".join(parts)
    return text if len(text) <= _MAX_SUMMARY_CHARS else text[: _MAX_SUMMARY_CHARS - 3] + "..."

"""A live admin app for the reliability tests: the real `create_app` over a real launcher
on MariaDB, served on a loopback port by an event loop of its own (a background thread),
with the fake store and notification services beside it.

Its own loop and thread let a test drive it the way a peer does: over TCP, from a
synchronous client (schemathesis) or from the test's event loop (aiohttp), without the
test's awaits and the server's work taking turns on one loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from app.web.app import create_app, resource_checks
from tests.settings import TEST_JWT_KEY, make_settings

T = TypeVar("T")
_START_SECONDS = 30
_SHUTDOWN_GRACE_SECONDS = 5

# The fields of every error body (CONTRACTS section 4).
ERROR_FIELDS = frozenset({"status", "code", "message", "requestUrl", "timestamp"})


@dataclass
class LiveApp:
    url: str
    fake: FakePeers  # its `control` may be changed from the test's thread
    launcher: Launcher
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coro` on the app's loop (its pool belongs there) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def count(self, table: str) -> int:
        ((n,),) = self.run(fetch_all(self.launcher.resources.pool, f"SELECT COUNT(*) FROM {table}"))
        return int(n)


@contextmanager
def live_app(
    settings: Settings,
    stores: Mapping[int, str] | None = None,
    *,
    tokens: Mapping[int, list[str]] | None = None,
    broker: bool = False,
    **overrides: object,
) -> Iterator[LiveApp]:
    """The app on 127.0.0.1 (an ephemeral port) until exit; `overrides` are settings.

    Tokens must be signed with TEST_JWT_KEY, the fake peers' too. `tokens` are the push
    tokens of members the fake notification service knows. Without `broker` (publishing
    to RABBITMQ_VHOST) the health answer has the `db` component only. On exit, running
    jobs are asked to stop (as on SIGTERM) and the thread ends.
    """
    started: Future[tuple[LiveApp, asyncio.Event]] = Future()
    peer_data = {
        "stores": {str(k): v for k, v in (stores or {}).items()},
        "tokens": {str(k): v for k, v in (tokens or {}).items()},
    }

    async def serve() -> None:
        stop = asyncio.Event()
        try:
            async with run_fake_peers(peer_data, key=TEST_JWT_KEY) as fake:
                values: dict[str, object] = {
                    "DB_URL": settings.DB_URL,
                    "STORE_SERVICE_URL": fake.store_url,
                    "NOTIFICATION_SERVICE_URL": fake.notification_url,
                    **overrides,
                }
                app_settings = make_settings(**values)
                async with open_resources(app_settings, broker=broker) as resources:
                    launcher = Launcher(resources, JOBS)
                    runner = web.AppRunner(
                        create_app(launcher, resource_checks(resources)), access_log=None
                    )
                    await runner.setup()
                    try:
                        await web.TCPSite(runner, "127.0.0.1", 0).start()
                        host, port = runner.addresses[0][:2]
                        loop = asyncio.get_running_loop()
                        app = LiveApp(f"http://{host}:{port}", fake, launcher, loop)
                        started.set_result((app, stop))
                        await stop.wait()
                    finally:
                        fake.control.update({"latency_ms": 0, "fail_status": None})
                        await launcher.shutdown(_SHUTDOWN_GRACE_SECONDS)
                        await runner.cleanup()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="live-app", daemon=True)
    thread.start()
    app, stop = started.result(_START_SECONDS)
    try:
        yield app
    finally:
        app.loop.call_soon_threadsafe(stop.set)
        thread.join(_START_SECONDS)
        assert not thread.is_alive(), "the live app did not stop"


def is_error_body(body: object, status: int, path: str) -> bool:
    """Whether `body` is the platform's error JSON for this status and request path."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    error = body["error"]
    return (
        set(error) == ERROR_FIELDS
        and isinstance(error["status"], str)
        and error["status"].split(" ", 1)[0] == str(status)
        and isinstance(error["code"], str)
        and error["code"].isupper()
        and isinstance(error["message"], str)
        and error["message"] != ""
        and error["requestUrl"] == path
        and isinstance(error["timestamp"], str)
        and error["timestamp"] != ""
    )

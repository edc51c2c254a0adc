"""Fake store and notification services (CONTRACTS section 2) for tests, the demo and benchmarks.

Failures are injected through `FakePeerControl`, in process or from another process with
`POST /__control` on either service. Run standalone with

    python -m app.devtools.fake_peers --data FILE --store-port 8082 --notification-port 8084
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import signal
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from app.edges.auth import AuthError, verify_token
from app.edges.peers import FCM_TOKENS, REGIONS, STORE_SEARCH

log = logging.getLogger(__name__)

SAMPLE_DATA = Path(__file__).with_name("sample_peers.json")
GARBAGE_MODES = ("html", "wrong_types", "missing_fields", "huge", "never_ends")
HUGE_BODY_BYTES = 10 * 1024 * 1024
CONTROL_PATH = "/__control"


@dataclass
class FakePeerControl:
    """Failure switches shared by both fake services; change them at any time.

    `fail_status` answers the next `fail_times` calls with that status (-1: until switched
    off), with a `Retry-After: <retry_after>` header if that is set (seconds, or an
    HTTP-date); `garbage` answers 200 with a body that breaks the contract in the named way;
    `reject` answers 400 to every call that asks for one of these keys (member ids,
    store ids or dongs), as a service refuses a request naming an item it rejects.
    """

    latency_ms: float = 0
    fail_status: int | None = None
    fail_times: int = -1
    retry_after: str | None = None
    garbage: str | None = None
    reject: list[int | str] = field(default_factory=list)

    def __post_init__(self) -> None:
        number = (int, float)
        if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, number):
            raise ValueError("latency_ms must be a number")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        if self.fail_status is not None and not (
            isinstance(self.fail_status, int) and 400 <= self.fail_status <= 599
        ):
            raise ValueError("fail_status must be null or an HTTP status 400..599")
        if not isinstance(self.fail_times, int) or self.fail_times < -1:
            raise ValueError("fail_times must be an integer >= -1")
        if self.retry_after is not None and not isinstance(self.retry_after, str):
            raise ValueError("retry_after must be null or a string (seconds or an HTTP-date)")
        if self.garbage is not None and self.garbage not in GARBAGE_MODES:
            raise ValueError(f"garbage must be null or one of {', '.join(GARBAGE_MODES)}")
        if not isinstance(self.reject, list) or not all(
            isinstance(key, int | str) and not isinstance(key, bool) for key in self.reject
        ):
            raise ValueError("reject must be a list of integers and strings")

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply the fields in `changes` (the JSON of `POST /__control`); all or nothing."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown control fields: {', '.join(sorted(unknown))}")
        checked = replace(self, **changes)
        for name, value in asdict(checked).items():
            setattr(self, name, value)

    def take_failure(self) -> int | None:
        """The status to fail this call with, counting it against `fail_times`."""
        if self.fail_status is None or self.fail_times == 0:
            return None
        if self.fail_times > 0:
            self.fail_times -= 1
        return self.fail_status


@dataclass
class FakePeerData:
    stores: dict[int, str]
    tokens: dict[int, list[str]]

    @classmethod
    def load(cls, source: Mapping[str, Any] | Path) -> FakePeerData:
        """From `{"stores": {"<id>": "<dong>"}, "tokens": {"<id>": [...]}}` or such a file."""
        raw = json.loads(source.read_text(encoding="utf-8")) if isinstance(source, Path) else source
        return cls(
            stores={int(k): str(v) for k, v in raw.get("stores", {}).items()},
            tokens={int(k): [str(t) for t in v] for k, v in raw.get("tokens", {}).items()},
        )


@dataclass
class FakePeers:
    """What `run_fake_peers` yields."""

    store_url: str
    notification_url: str
    control: FakePeerControl
    calls: dict[str, list[Any]] = field(repr=False)


class _Services:
    """The request handlers of both fake services."""

    def __init__(self, data: FakePeerData, key: bytes | None, control: FakePeerControl) -> None:
        self.data = data
        self.key = key
        self.control = control
        self.calls: dict[str, list[Any]] = defaultdict(list)
        self._stores_by_dong: dict[str, list[int]] = defaultdict(list)
        for store_id in sorted(data.stores):
            self._stores_by_dong[data.stores[store_id]].append(store_id)

    def store_app(self) -> web.Application:
        return self._app(
            {
                REGIONS: (int, self._regions),
                STORE_SEARCH: (str, self._search),
            }
        )

    def notification_app(self) -> web.Application:
        return self._app({FCM_TOKENS: (int, self._tokens)})

    def _app(
        self, endpoints: Mapping[str, tuple[type, Callable[[list[Any]], list[Any]]]]
    ) -> web.Application:
        app = web.Application()
        for path, (item_type, answer) in endpoints.items():
            app.router.add_post(path, self._endpoint(item_type, answer))
        app.router.add_post(CONTROL_PATH, self._set_control)
        app.router.add_get(CONTROL_PATH, self._get_control)
        return app

    def _regions(self, store_ids: list[int]) -> list[dict[str, Any]]:
        stores = self.data.stores
        return [{"storeId": s, "dong": stores[s]} for s in dict.fromkeys(store_ids) if s in stores]

    def _search(self, dongs: list[str]) -> list[dict[str, Any]]:
        index = self._stores_by_dong
        return [{"dong": d, "storeIds": index[d]} for d in dict.fromkeys(dongs) if d in index]

    def _tokens(self, member_ids: list[int]) -> list[dict[str, Any]]:
        tokens = self.data.tokens
        return [
            {"memberId": m, "fcmTokens": tokens[m]}
            for m in dict.fromkeys(member_ids)
            if tokens.get(m)
        ]

    def _endpoint(
        self, item_type: type, answer: Callable[[list[Any]], list[Any]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                self._authorize(request.headers.get("Authorization"))
            except AuthError as exc:
                return _error(exc.http_status, exc.code, exc.message)
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, list) or not all(
                isinstance(v, item_type) and not isinstance(v, bool) for v in body
            ):
                return _error(
                    400, "INVALID_REQUEST", f"expected a JSON list of {item_type.__name__}"
                )
            self.calls[request.path].append(body)

            control = self.control
            if control.latency_ms:
                await asyncio.sleep(control.latency_ms / 1000)
            status = control.take_failure()
            if status is not None:
                failure = _error(status, "INJECTED_FAILURE", "failure injected by the fake")
                if control.retry_after is not None:
                    failure.headers["Retry-After"] = control.retry_after
                return failure
            rejected = set(control.reject).intersection(body)
            if rejected:
                return _error(400, "INVALID_REQUEST", f"rejected: {sorted(rejected, key=str)}")
            if control.garbage:
                return await _garbage(request, control.garbage)
            return web.json_response({"data": answer(body)})

        return handle

    def _authorize(self, authorization: str | None) -> None:
        if self.key is not None:
            verify_token(authorization, self.key)
        elif not (header := authorization or "").startswith("Bearer ") or not header[7:].strip():
            raise AuthError(401, "INVALID_TOKEN", "expected an Authorization: Bearer header")

    async def _set_control(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            self.control.update(changes)
        except ValueError as exc:
            return _error(400, "INVALID_CONTROL", str(exc))
        return await self._get_control(request)

    async def _get_control(self, request: web.Request) -> web.Response:
        counts = {path: len(bodies) for path, bodies in self.calls.items()}
        return web.json_response({**asdict(self.control), "calls": counts})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _garbage(request: web.Request, mode: str) -> web.StreamResponse:
    if mode == "html":
        return web.Response(
            text="<html><body><h1>Whitelabel Error Page</h1></body></html>",
            content_type="text/html",
        )
    if mode == "wrong_types":
        item = {"storeId": "1", "dong": 1, "storeIds": "1,8", "memberId": "101", "fcmTokens": "t"}
        return web.json_response({"data": [item]})
    if mode == "missing_fields":
        return web.json_response({"data": [{"id": 1}]})
    # huge and never_ends stream a chunked body: its size is not known up front
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(b'{"data": [')
    if mode == "never_ends":
        await asyncio.Event().wait()  # until the client gives up or the server stops
    filler = b'"' + b"x" * (64 * 1024 - 3) + b'",'
    try:
        for _ in range(HUGE_BODY_BYTES // len(filler) + 1):
            await resp.write(filler)
        await resp.write(b'"x"]}')
        await resp.write_eof()
    except ConnectionResetError:  # the client stopped reading at its size cap
        pass
    return resp


@asynccontextmanager
async def _serve(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    # handler_cancellation: a client that gives up (a timeout) cancels a hanging handler
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def run_fake_peers(
    data: Mapping[str, Any] | Path = SAMPLE_DATA,
    store_port: int = 0,
    notification_port: int = 0,
    key: bytes | None = None,
    control: FakePeerControl | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[FakePeers]:
    """Both fake services on `host` (port 0: an ephemeral port), stopped on exit.

    `data` is the JSON shape of sample_peers.json, or a path to such a file. With `key`,
    tokens must be signed with it; without, any `Bearer` token passes.
    """
    services = _Services(FakePeerData.load(data), key, control or FakePeerControl())
    async with AsyncExitStack() as stack:
        store_url = await stack.enter_async_context(_serve(services.store_app(), host, store_port))
        notification_url = await stack.enter_async_context(
            _serve(services.notification_app(), host, notification_port)
        )
        yield FakePeers(store_url, notification_url, services.control, services.calls)


async def _run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    key = base64.b64decode(args.key_base64, validate=True) if args.key_base64 else None
    async with run_fake_peers(
        args.data,
        args.store_port,
        args.notification_port,
        key=key,
        control=FakePeerControl(latency_ms=args.latency_ms),
        host=args.host,
    ) as fake:
        log.info("fake peers: store %s notification %s", fake.store_url, fake.notification_url)
        await stop.wait()
    log.info("fake peers stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLE_DATA)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--store-port", type=int, default=8082)
    parser.add_argument("--notification-port", type=int, default=8084)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--key-base64", help="verify token signatures with this key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()

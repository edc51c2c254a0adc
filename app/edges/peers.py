"""Clients of the store and notification services (CONTRACTS section 2).

No retries here: the step runner retries whole chunks, deciding with
`errors.is_availability_fault`. aiohttp's exceptions and the answers' statuses are
translated here into the service's faults: a timeout, a connection failure, HTTP 408,
429 and 5xx are PeerUnavailable (with the peer's Retry-After, if it sent one); any other
4xx and an answer that breaks the contract are PeerAnswerError.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from app.concurrency import gather_first_error
from app.config import PeerSettings
from app.edges.auth import SystemToken
from app.errors import AvailabilityError, DataError, Fault
from app.metrics import PEER_ERRORS, PEER_REQUESTS
from app.outages import OUTAGES

if TYPE_CHECKING:
    import aiohttp

REGIONS = "/internal/v1/stores/regions"
STORE_SEARCH = "/internal/v1/stores/search"
FCM_TOKENS = "/internal/v1/fcm-tokens/search"
MAX_BATCH = 200
CONNECTION_LIMIT = 64
# Statuses a later try may clear: request timeout, too many requests, and every 5xx.
_UNAVAILABLE_4XX = frozenset({408, 429})

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class PeerError(Fault):
    """A failed peer call; `kind` is the PEER_ERRORS label."""

    def __init__(self, peer: str, endpoint: str, kind: str, reason: str) -> None:
        super().__init__(f"{peer} service {endpoint}: {reason}", dependency=f"{peer} service")
        self.peer = peer
        self.endpoint = endpoint
        self.kind = kind


class PeerUnavailable(PeerError, AvailabilityError):
    """408, 429, 5xx, connection failure or timeout: another attempt may succeed."""


class PeerAnswerError(PeerError, DataError):
    """Another 4xx, or an answer that breaks the contract: another attempt will not help."""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """An HTTP Retry-After header as seconds from now (delay-seconds or an HTTP-date);
    None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, per RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _import_peer_modules() -> None:
    for name in ("aiohttp", "jwt"):
        importlib.import_module(name)


class PeerClient:
    """`async with PeerClient(settings, token) as peers:` one HTTP session for all peer
    calls, opened by the first, which imports aiohttp (unless `preload` has): a run that
    asks no peer (an empty window) starts without it (docs/performance.md)."""

    def __init__(self, settings: PeerSettings, token: SystemToken) -> None:
        self._store_url = settings.store_url.rstrip("/")
        self._notification_url = settings.notification_url.rstrip("/")
        self._timeout = settings.timeout_seconds
        self._max_body = settings.max_body_bytes
        self._batch = min(settings.lookup_batch, MAX_BATCH)
        self._token = token
        self._entered = False
        self._session: aiohttp.ClientSession | None = None
        self._preloading: threading.Thread | None = None

    def preload(self) -> None:
        """aiohttp and PyJWT imported in a thread: for a job that will ask a peer to call as
        a wait of its own begins (the stats read, while the server sorts), so that its
        first call finds them imported (docs/performance.md). That call's own imports wait
        for the thread's, if still under way, on Python's import lock: nothing awaits
        the thread, so no cancellation reaches it."""
        if self._preloading is None:
            self._preloading = threading.Thread(target=_import_peer_modules, name="preload")
            self._preloading.start()

    async def __aenter__(self) -> PeerClient:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _opened(self) -> aiohttp.ClientSession:
        if not self._entered:
            raise RuntimeError("PeerClient used outside `async with`")
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT),
            )
        return self._session

    async def store_dongs(self, store_ids: Collection[int]) -> dict[int, str]:
        """storeId -> dong; stores the store service does not know are absent."""
        return await self._batched("store", self._store_url, REGIONS, store_ids, _parse_regions)

    async def stores_by_dong(self, dongs: Collection[str]) -> dict[str, list[int]]:
        """dong -> its store ids; dongs without stores are absent."""
        return await self._batched("store", self._store_url, STORE_SEARCH, dongs, _parse_search)

    async def fcm_tokens(self, member_ids: Collection[int]) -> dict[int, list[str]]:
        """memberId -> its FCM tokens; members without tokens are absent."""
        return await self._batched(
            "notification", self._notification_url, FCM_TOKENS, member_ids, _parse_tokens
        )

    async def _batched(
        self,
        peer: str,
        base_url: str,
        endpoint: str,
        keys: Collection[Any],
        parse: Callable[[list[Any]], dict[K, V]],
    ) -> dict[K, V]:
        """Ask for `keys` in concurrent batches and merge the answers."""
        batches = list(_chunks(list(dict.fromkeys(keys)), self._batch))
        calls = [self._post(peer, base_url, endpoint, batch, parse) for batch in batches]
        merged: dict[K, V] = {}
        for answer in await gather_first_error(*calls):
            merged.update(answer)
        return merged

    async def _post(
        self,
        peer: str,
        base_url: str,
        endpoint: str,
        body: list[Any],
        parse: Callable[[list[Any]], T],
    ) -> T:
        session = self._opened()
        import aiohttp  # imported by _opened

        started = time.perf_counter()
        try:
            try:
                async with session.post(
                    base_url + endpoint,
                    json=body,
                    headers={"Authorization": f"Bearer {self._token.get()}"},
                    allow_redirects=False,
                ) as resp:
                    if resp.status >= 500 or resp.status in _UNAVAILABLE_4XX:
                        raise _unavailable(peer, endpoint, resp)
                    if resp.status >= 400:
                        raise PeerAnswerError(peer, endpoint, "status_4xx", f"HTTP {resp.status}")
                    if resp.status != 200:
                        reason = f"unexpected HTTP {resp.status}"
                        raise PeerAnswerError(peer, endpoint, "malformed", reason)
                    raw = await self._read_capped(resp, peer, endpoint)
                result = parse(_unwrap(json.loads(raw)))
            except TimeoutError as exc:
                reason = f"no answer within {self._timeout:g}s"
                raise PeerUnavailable(peer, endpoint, "timeout", reason) from exc
            except aiohttp.ClientError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                raise PeerUnavailable(peer, endpoint, "connection", reason) from exc
            except ValueError as exc:  # not JSON, not UTF-8, or not the contract's shape
                raise PeerAnswerError(peer, endpoint, "malformed", str(exc)) from exc
        except PeerError as exc:
            PEER_ERRORS.labels(peer, endpoint, exc.kind).inc()
            PEER_REQUESTS.labels(peer, endpoint, "error").observe(time.perf_counter() - started)
            raise
        PEER_REQUESTS.labels(peer, endpoint, "ok").observe(time.perf_counter() - started)
        OUTAGES.ended(f"{peer} service")
        return result

    async def _read_capped(self, resp: aiohttp.ClientResponse, peer: str, endpoint: str) -> bytes:
        """The body, refused as soon as it is known to exceed PEER_MAX_BODY_BYTES."""
        too_big = PeerAnswerError(
            peer, endpoint, "malformed", f"answer larger than {self._max_body} bytes"
        )
        if resp.content_length is not None and resp.content_length > self._max_body:
            raise too_big
        body = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self._max_body:
                raise too_big
        return bytes(body)


def _unavailable(peer: str, endpoint: str, resp: aiohttp.ClientResponse) -> PeerUnavailable:
    """408, 429 or 5xx, with the wait the peer asked for, if it did."""
    retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
    reason = f"HTTP {resp.status}"
    if retry_after is not None:
        reason += f", Retry-After {retry_after:g} s"
    kind = "status_5xx" if resp.status >= 500 else "status_4xx"
    fault = PeerUnavailable(peer, endpoint, kind, reason)
    fault.retry_after = retry_after
    return fault


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _unwrap(answer: Any) -> list[Any]:
    if not isinstance(answer, dict) or "data" not in answer:
        raise ValueError('expected an object {"data": [...]}')
    data = answer["data"]
    if not isinstance(data, list):
        raise ValueError(f"expected data to be a list, got {type(data).__name__}")
    return data


def _field(item: Any, name: str, check: Callable[[Any], bool], expected: str) -> Any:
    if not isinstance(item, dict):
        raise ValueError(f"expected objects in data, got {type(item).__name__}")
    if name not in item:
        raise ValueError(f"an element of data lacks {name!r}")
    value = item[name]
    if not check(value):
        raise ValueError(f"{name!r} must be {expected}, got {value!r:.60}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_DONG_MAX_CHARS = 255  # coupon_usage_stats.top_dong is VARCHAR(255)


def _is_dong(value: Any) -> bool:
    """A name `coupon_usage_stats.top_dong` can hold: 1..255 characters of valid UTF-8."""
    if not isinstance(value, str) or not 0 < len(value) <= _DONG_MAX_CHARS:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: valid JSON, not valid UTF-8
        return False
    return True


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(v) for v in value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _parse_regions(data: list[Any]) -> dict[int, str]:
    return {
        _field(item, "storeId", _is_int, "an integer"): _field(
            item, "dong", _is_dong, "a name of 1 to 255 characters"
        )
        for item in data
    }


def _parse_search(data: list[Any]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for item in data:
        dong = _field(item, "dong", _is_dong, "a name of 1 to 255 characters")
        found.setdefault(dong, []).extend(
            _field(item, "storeIds", _is_int_list, "a list of integers")
        )
    return found


def _parse_tokens(data: list[Any]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for item in data:
        member_id = _field(item, "memberId", _is_int, "an integer")
        tokens = _field(item, "fcmTokens", _is_str_list, "a list of strings")
        if tokens:
            found[member_id] = tokens
    return found

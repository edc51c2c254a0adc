from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import ClientResponse
from aioresponses import CallbackResult, aioresponses

from app.edges.auth import SystemToken, verify_token
from app.edges.peers import (
    FCM_TOKENS,
    REGIONS,
    STORE_SEARCH,
    PeerAnswerError,
    PeerClient,
    PeerUnavailable,
    retry_after_seconds,
)
from app.errors import is_availability_fault
from app.metrics import REGISTRY
from tests.settings import TEST_JWT_KEY, make_settings
from tests.waits import waiting

STORE = "http://store.test"
NOTIFICATION = "http://notification.test"
REGIONS_URL = STORE + REGIONS
SEARCH_URL = STORE + STORE_SEARCH
TOKENS_URL = NOTIFICATION + FCM_TOKENS


def _client(**overrides: object) -> PeerClient:
    settings = make_settings(
        STORE_SERVICE_URL=STORE, NOTIFICATION_SERVICE_URL=NOTIFICATION, **overrides
    )
    return PeerClient(settings.peers, SystemToken(settings.jwt_key, settings.APPLICATION_NAME))


@pytest.fixture
async def peers() -> AsyncIterator[PeerClient]:
    async with _client(PEER_MAX_BODY_BYTES=4096) as client:
        yield client


class _CompatResponse(ClientResponse):
    """aioresponses 0.7.9 omits `stream_writer`, required since aiohttp 3.14 (aioresponses#289)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        monkeypatch.setattr("aioresponses.core.ClientResponse", _CompatResponse)
    with aioresponses() as m:
        yield m


def _errors(endpoint: str, kind: str, peer: str = "store") -> float:
    labels = {"peer": peer, "uri": endpoint, "kind": kind}
    return REGISTRY.get_sample_value("batch_peer_errors_total", labels) or 0.0


def _requests(endpoint: str, outcome: str, peer: str = "store") -> float:
    labels = {"peer": peer, "uri": endpoint, "outcome": outcome}
    return REGISTRY.get_sample_value("batch_peer_request_seconds_count", labels) or 0.0


def _sent(mocked: aioresponses, url: str) -> list[dict[str, Any]]:
    return [
        call.kwargs
        for key, calls in mocked.requests.items()
        if str(key[1]) == url
        for call in calls
    ]


async def test_store_dongs_sends_the_ids_with_a_valid_system_token(
    peers: PeerClient, mocked: aioresponses
) -> None:
    mocked.post(REGIONS_URL, payload={"data": [{"storeId": 1, "dong": "노량진동"}]})

    assert await peers.store_dongs([1, 99]) == {1: "노량진동"}

    (sent,) = _sent(mocked, REGIONS_URL)
    assert sent["json"] == [1, 99]
    scheme, token = sent["headers"]["Authorization"].split(" ")
    assert scheme == "Bearer"
    claims = verify_token(f"Bearer {token}", TEST_JWT_KEY)
    assert (claims["sub"], claims["username"], claims["memberType"]) == (
        "0",
        "batch-service",
        "SYSTEM",
    )


async def test_each_call_fetches_the_token_so_it_rotates(mocked: aioresponses) -> None:
    now = [1_760_000_000.0]
    settings = make_settings(STORE_SERVICE_URL=STORE)
    token = SystemToken(settings.jwt_key, "batch-service", clock=lambda: now[0])
    mocked.post(REGIONS_URL, payload={"data": []}, repeat=True)
    async with PeerClient(settings.peers, token) as peers:
        await peers.store_dongs([1])
        now[0] += 3600
        await peers.store_dongs([1])
    first, second = (s["headers"]["Authorization"] for s in _sent(mocked, REGIONS_URL))
    assert first != second
    assert jwt.decode(second[7:], options={"verify_signature": False})["iat"] == 1_760_003_600


async def test_450_ids_go_in_batches_of_200_200_50_concurrently(mocked: aioresponses) -> None:
    all_in_flight = asyncio.Barrier(3)
    sizes: list[int] = []

    async def answer(url: object, **kwargs: Any) -> CallbackResult:
        ids = kwargs["json"]
        sizes.append(len(ids))
        async with waiting(2, "the three batches in flight at once"):
            await all_in_flight.wait()
        return CallbackResult(payload={"data": [{"storeId": i, "dong": f"d{i}"} for i in ids]})

    mocked.post(REGIONS_URL, callback=answer, repeat=True)

    async with _client() as peers:
        found = await peers.store_dongs(range(1, 451))

    assert sorted(sizes) == [50, 200, 200]
    assert found == {i: f"d{i}" for i in range(1, 451)}


async def test_the_batch_size_follows_the_setting_but_never_exceeds_200(
    mocked: aioresponses,
) -> None:
    mocked.post(REGIONS_URL, payload={"data": []}, repeat=True)
    async with _client(STORE_LOOKUP_BATCH=50) as peers:
        await peers.store_dongs(range(120))
    assert [len(s["json"]) for s in _sent(mocked, REGIONS_URL)] == [50, 50, 20]

    mocked.requests.clear()
    async with _client(STORE_LOOKUP_BATCH=1000) as peers:
        await peers.store_dongs(range(401))
    assert sorted(len(s["json"]) for s in _sent(mocked, REGIONS_URL)) == [1, 200, 200]


async def test_duplicates_are_asked_once_and_nothing_is_asked_for_nothing(
    peers: PeerClient, mocked: aioresponses
) -> None:
    mocked.post(REGIONS_URL, payload={"data": [{"storeId": 3, "dong": "상도동"}]}, repeat=True)
    assert await peers.store_dongs([3, 3, 8, 3]) == {3: "상도동"}
    assert await peers.store_dongs([]) == {}
    assert [s["json"] for s in _sent(mocked, REGIONS_URL)] == [[3, 8]]


async def test_stores_by_dong(peers: PeerClient, mocked: aioresponses) -> None:
    mocked.post(
        SEARCH_URL,
        payload={
            "data": [{"dong": "상도동", "storeIds": [3, 8]}, {"dong": "흑석동", "storeIds": [4]}]
        },
    )
    assert await peers.stores_by_dong(["상도동", "흑석동", "없는동"]) == {
        "상도동": [3, 8],
        "흑석동": [4],
    }
    assert _sent(mocked, SEARCH_URL)[0]["json"] == ["상도동", "흑석동", "없는동"]


async def test_fcm_tokens_drop_members_without_tokens(
    peers: PeerClient, mocked: aioresponses
) -> None:
    mocked.post(
        TOKENS_URL,
        payload={
            "data": [
                {"memberId": 101, "fcmTokens": ["t1", "t2"]},
                {"memberId": 4, "fcmTokens": []},
            ]
        },
    )
    assert await peers.fcm_tokens([101, 4, 5]) == {101: ["t1", "t2"]}


async def test_503_is_transient_and_named(peers: PeerClient, mocked: aioresponses) -> None:
    before = _errors(REGIONS, "status_5xx"), _requests(REGIONS, "error")
    mocked.post(REGIONS_URL, status=503, body="busy")

    with pytest.raises(PeerUnavailable) as caught:
        await peers.store_dongs([1])

    assert is_availability_fault(caught.value)
    assert str(caught.value) == f"store service {REGIONS}: HTTP 503"
    assert (_errors(REGIONS, "status_5xx"), _requests(REGIONS, "error")) == (
        before[0] + 1,
        before[1] + 1,
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_4xx_is_permanent(peers: PeerClient, mocked: aioresponses, status: int) -> None:
    before = _errors(FCM_TOKENS, "status_4xx", "notification")
    mocked.post(TOKENS_URL, status=status)

    with pytest.raises(PeerAnswerError) as caught:
        await peers.fcm_tokens([1])

    assert not is_availability_fault(caught.value)
    assert str(caught.value) == f"notification service {FCM_TOKENS}: HTTP {status}"
    assert _errors(FCM_TOKENS, "status_4xx", "notification") == before + 1


@pytest.mark.parametrize(
    ("status", "retry_after", "seconds"),
    [(429, "3", 3.0), (429, None, None), (408, None, None), (503, "120", 120.0)],
)
async def test_408_429_and_5xx_are_transient_with_the_wait_asked_for(
    peers: PeerClient,
    mocked: aioresponses,
    status: int,
    retry_after: str | None,
    seconds: float | None,
) -> None:
    """A service shedding load or timing out the request: a later try may pass (issue 26;
    before: 408 and 429 were data faults, their members skipped for good)."""
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    mocked.post(TOKENS_URL, status=status, headers=headers)

    with pytest.raises(PeerUnavailable) as caught:
        await peers.fcm_tokens([1])

    assert is_availability_fault(caught.value)
    assert caught.value.retry_after == seconds
    assert caught.value.dependency == "notification service"
    asked = "" if seconds is None else f", Retry-After {seconds:g} s"
    assert str(caught.value) == f"notification service {FCM_TOKENS}: HTTP {status}{asked}"


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2025, 10, 26, 1, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Sun, 26 Oct 2025 01:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Sun, 26 Oct 2025 00:59:00 GMT", now) == 0.0  # past: at once
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("-1", now) is None
    assert retry_after_seconds(None, now) is None


async def test_a_redirect_is_not_followed(peers: PeerClient, mocked: aioresponses) -> None:
    mocked.post(REGIONS_URL, status=302, headers={"Location": "http://elsewhere.test/"})
    with pytest.raises(PeerAnswerError, match="unexpected HTTP 302"):
        await peers.store_dongs([1])


async def test_timeout_is_transient(peers: PeerClient, mocked: aioresponses) -> None:
    before = _errors(STORE_SEARCH, "timeout")
    mocked.post(SEARCH_URL, exception=TimeoutError())

    with pytest.raises(PeerUnavailable, match="no answer within 10s") as caught:
        await peers.stores_by_dong(["상도동"])

    assert is_availability_fault(caught.value)
    assert _errors(STORE_SEARCH, "timeout") == before + 1


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = _errors(REGIONS, "connection")
    settings = make_settings(STORE_SERVICE_URL=f"http://127.0.0.1:{port}")

    async with PeerClient(settings.peers, SystemToken(settings.jwt_key, "batch-service")) as peers:
        with pytest.raises(PeerUnavailable, match="ClientConnectorError") as caught:
            await peers.store_dongs([1])

    assert is_availability_fault(caught.value)
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    assert _errors(REGIONS, "connection") == before + 1


async def test_a_failed_batch_fails_the_call_with_its_own_error(
    peers: PeerClient, mocked: aioresponses
) -> None:
    async def answer(url: object, **kwargs: Any) -> CallbackResult:
        if kwargs["json"][0] == 200:
            return CallbackResult(status=503)
        await asyncio.sleep(0.05)
        return CallbackResult(payload={"data": []})

    mocked.post(REGIONS_URL, callback=answer, repeat=True)

    with pytest.raises(PeerUnavailable, match="HTTP 503"):  # not an ExceptionGroup
        await peers.store_dongs(range(450))


async def test_html_is_malformed(peers: PeerClient, mocked: aioresponses) -> None:
    before = _errors(REGIONS, "malformed")
    mocked.post(REGIONS_URL, body="<html><body>Login</body></html>", content_type="text/html")

    with pytest.raises(PeerAnswerError, match=f"^store service {REGIONS}: ") as caught:
        await peers.store_dongs([1])

    assert not is_availability_fault(caught.value)
    assert _errors(REGIONS, "malformed") == before + 1


@pytest.mark.parametrize(
    ("url", "body"),
    [
        pytest.param(REGIONS_URL, {"data": {"storeId": 1, "dong": "x"}}, id="data not a list"),
        pytest.param(REGIONS_URL, {"result": []}, id="no data"),
        pytest.param(REGIONS_URL, [{"storeId": 1, "dong": "x"}], id="not wrapped"),
        pytest.param(REGIONS_URL, {"data": [[1, "x"]]}, id="element not an object"),
        pytest.param(REGIONS_URL, {"data": [{"storeId": "1", "dong": "x"}]}, id="storeId str"),
        pytest.param(REGIONS_URL, {"data": [{"storeId": True, "dong": "x"}]}, id="storeId bool"),
        pytest.param(REGIONS_URL, {"data": [{"storeId": 1.0, "dong": "x"}]}, id="storeId float"),
        pytest.param(REGIONS_URL, {"data": [{"storeId": 1, "dong": ""}]}, id="dong empty"),
        pytest.param(REGIONS_URL, {"data": [{"storeId": 1, "dong": None}]}, id="dong null"),
        pytest.param(REGIONS_URL, {"data": [{"storeId": 1}]}, id="dong missing"),
        pytest.param(REGIONS_URL, {"data": [{"dong": "x"}]}, id="storeId missing"),
        pytest.param(SEARCH_URL, {"data": [{"dong": "x", "storeIds": "1,2"}]}, id="storeIds str"),
        pytest.param(
            SEARCH_URL, {"data": [{"dong": "x", "storeIds": [1, "2"]}]}, id="storeIds mixed"
        ),
        pytest.param(SEARCH_URL, {"data": [{"storeIds": [1]}]}, id="search dong missing"),
        pytest.param(TOKENS_URL, {"data": [{"memberId": "1", "fcmTokens": []}]}, id="memberId str"),
        pytest.param(TOKENS_URL, {"data": [{"memberId": 1, "fcmTokens": "t"}]}, id="tokens str"),
        pytest.param(TOKENS_URL, {"data": [{"memberId": 1, "fcmTokens": [1]}]}, id="token int"),
        pytest.param(TOKENS_URL, {"data": [{"memberId": 1}]}, id="tokens missing"),
    ],
)
async def test_answers_that_break_the_contract_are_malformed(
    peers: PeerClient, mocked: aioresponses, url: str, body: object
) -> None:
    mocked.post(url, payload=body)
    call = {
        REGIONS_URL: peers.store_dongs,
        SEARCH_URL: peers.stores_by_dong,
        TOKENS_URL: peers.fcm_tokens,
    }[url]
    with pytest.raises(PeerAnswerError) as caught:
        await call([1] if url != SEARCH_URL else ["x"])
    assert caught.value.kind == "malformed"


async def test_a_body_over_the_cap_is_refused_while_reading(
    peers: PeerClient, mocked: aioresponses
) -> None:
    before = _errors(REGIONS, "malformed")
    huge = '{"data": [' + ",".join(['{"storeId": 1, "dong": "x"}'] * 200) + "]}"
    assert len(huge) > 4096
    mocked.post(REGIONS_URL, body=huge)  # no Content-Length: found out by counting

    with pytest.raises(PeerAnswerError, match="answer larger than 4096 bytes"):
        await peers.store_dongs([1])
    assert _errors(REGIONS, "malformed") == before + 1


async def test_a_declared_body_over_the_cap_is_refused_before_reading(
    peers: PeerClient, mocked: aioresponses
) -> None:
    mocked.post(REGIONS_URL, body='{"data": []}', headers={"Content-Length": "999999"})
    with pytest.raises(PeerAnswerError, match="answer larger than 4096 bytes"):
        await peers.store_dongs([1])


async def test_errors_never_show_the_token(peers: PeerClient, mocked: aioresponses) -> None:
    mocked.post(REGIONS_URL, status=500, repeat=True)
    with pytest.raises(PeerUnavailable) as caught:
        await peers.store_dongs([1])
    token = peers._token.get()
    assert token not in str(caught.value)
    assert token not in repr(caught.value)


async def test_success_is_timed(peers: PeerClient, mocked: aioresponses) -> None:
    before = _requests(FCM_TOKENS, "ok", "notification")
    mocked.post(TOKENS_URL, payload={"data": []})
    await peers.fcm_tokens([1])
    assert _requests(FCM_TOKENS, "ok", "notification") == before + 1


async def test_calls_need_the_context() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await _client().store_dongs([1])

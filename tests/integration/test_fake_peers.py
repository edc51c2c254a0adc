"""The real fake peers over HTTP, driven by the real PeerClient."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from app.devtools.fake_peers import FakePeerControl, FakePeers, run_fake_peers
from app.edges.auth import SystemToken
from app.edges.peers import (
    FCM_TOKENS,
    REGIONS,
    STORE_SEARCH,
    PeerAnswerError,
    PeerClient,
    PeerUnavailable,
)
from app.errors import is_availability_fault
from tests.samples import SAMPLE_STORES
from tests.settings import TEST_JWT_KEY, make_settings
from tests.waits import waiting

ALL_STORES = SAMPLE_STORES


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    async with run_fake_peers(key=TEST_JWT_KEY) as running:
        yield running


def _client(fake: FakePeers, **overrides: object) -> PeerClient:
    settings = make_settings(
        STORE_SERVICE_URL=fake.store_url,
        NOTIFICATION_SERVICE_URL=fake.notification_url,
        **overrides,
    )
    return PeerClient(settings.peers, SystemToken(settings.jwt_key, settings.APPLICATION_NAME))


@pytest.fixture
async def peers(fake: FakePeers) -> AsyncIterator[PeerClient]:
    async with _client(fake, PEER_TIMEOUT_SECONDS=2) as client:
        yield client


async def _post(url: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def _token() -> str:
    return SystemToken(TEST_JWT_KEY, "batch-service").get()


async def test_wire_shapes_follow_the_contract(fake: FakePeers) -> None:
    assert await _post(fake.store_url + REGIONS, [3, 999, 1], _token()) == (
        200,
        {"data": [{"storeId": 3, "dong": "상도동"}, {"storeId": 1, "dong": "노량진동"}]},
    )
    assert await _post(fake.store_url + STORE_SEARCH, ["상도동", "없는동"], _token()) == (
        200,
        {"data": [{"dong": "상도동", "storeIds": [3, 8]}]},
    )
    assert await _post(fake.notification_url + FCM_TOKENS, [101, 4, 77], _token()) == (
        200,
        {"data": [{"memberId": 101, "fcmTokens": ["token-101-a", "token-101-b"]}]},
    )


async def test_sample_data_through_the_client(fake: FakePeers, peers: PeerClient) -> None:
    assert await peers.store_dongs(range(0, 12)) == ALL_STORES
    assert await peers.stores_by_dong(set(ALL_STORES.values()) | {"없는동"}) == {
        "노량진동": [1],
        "풍무동": [2],
        "상도동": [3, 8],
        "흑석동": [4],
        "대방동": [5],
        "신대방동": [6],
        "사당동": [7],
        "서교동": [9],
    }
    assert await peers.fcm_tokens([101, 1, 2, 3, 4, 5, 6]) == {
        101: ["token-101-a", "token-101-b"],
        1: ["token-1-a"],
        2: ["token-2-a"],
        3: ["token-3-a"],
        5: ["token-5-a"],
    }
    assert fake.calls[REGIONS] == [list(range(0, 12))]
    assert len(fake.calls[STORE_SEARCH]) == len(fake.calls[FCM_TOKENS]) == 1


async def test_calls_without_a_valid_token_are_401(fake: FakePeers) -> None:
    status, body = await _post(fake.store_url + REGIONS, [1])
    assert (status, body["error"]["code"]) == (401, "INVALID_TOKEN")
    other_key = SystemToken(b"another-key-of-thirty-two-bytes!", "batch-service").get()
    assert (await _post(fake.notification_url + FCM_TOKENS, [1], other_key))[0] == 401
    assert fake.calls == {}


async def test_without_a_key_any_bearer_token_passes() -> None:
    async with run_fake_peers() as fake:
        assert (await _post(fake.store_url + REGIONS, [1], "anything"))[0] == 200
        assert (await _post(fake.store_url + REGIONS, [1]))[0] == 401


async def test_a_body_that_is_not_a_list_of_ids_is_400(fake: FakePeers) -> None:
    assert (await _post(fake.store_url + REGIONS, {"ids": [1]}, _token()))[0] == 400
    assert (await _post(fake.store_url + REGIONS, ["1"], _token()))[0] == 400
    assert (await _post(fake.store_url + STORE_SEARCH, [1], _token()))[0] == 400


async def test_failures_then_recovery(fake: FakePeers, peers: PeerClient) -> None:
    fake.control.update({"fail_status": 503, "fail_times": 2})
    for _ in range(2):
        with pytest.raises(PeerUnavailable, match="HTTP 503"):
            await peers.store_dongs([1])
    assert await peers.store_dongs([1]) == {1: "노량진동"}
    assert len(fake.calls[REGIONS]) == 3


async def test_failing_until_switched_off(fake: FakePeers, peers: PeerClient) -> None:
    fake.control.fail_status = 500  # fail_times defaults to -1
    for _ in range(3):
        with pytest.raises(PeerUnavailable):
            await peers.fcm_tokens([1])
    fake.control.fail_status = None
    assert await peers.fcm_tokens([1]) == {1: ["token-1-a"]}


async def test_a_4xx_failure_is_permanent(fake: FakePeers, peers: PeerClient) -> None:
    fake.control.update({"fail_status": 404, "fail_times": 1})
    with pytest.raises(PeerAnswerError, match="HTTP 404"):
        await peers.stores_by_dong(["상도동"])


async def test_latency_switch(fake: FakePeers) -> None:
    fake.control.latency_ms = 300
    async with _client(fake, PEER_TIMEOUT_SECONDS=2) as patient:
        started = time.perf_counter()
        assert await patient.store_dongs([2]) == {2: "풍무동"}
        assert time.perf_counter() - started >= 0.3
    async with _client(fake, PEER_TIMEOUT_SECONDS=0.1) as hasty:
        with pytest.raises(PeerUnavailable, match=r"no answer within 0\.1s"):
            await hasty.store_dongs([2])


async def test_control_endpoint(fake: FakePeers, peers: PeerClient) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            fake.notification_url + "/__control", json={"fail_status": 503, "fail_times": 1}
        ) as resp:
            assert resp.status == 200
            state = await resp.json()
        assert state["fail_status"] == 503
        assert state["fail_times"] == 1
        assert fake.control.fail_status == 503  # one control for both services

        with pytest.raises(PeerUnavailable):
            await peers.store_dongs([1])
        assert await peers.store_dongs([1]) == {1: "노량진동"}

        async with session.post(fake.store_url + "/__control", json={"bogus": 1}) as resp:
            assert resp.status == 400
        async with session.post(fake.store_url + "/__control", json={"garbage": "x"}) as resp:
            assert resp.status == 400
        async with session.post(
            fake.store_url + "/__control", json={"latency_ms": 5, "fail_times": -2}
        ) as resp:
            assert resp.status == 400
        assert fake.control.latency_ms == 0  # a refused change changes nothing

        async with session.get(fake.store_url + "/__control") as resp:
            state = await resp.json()
        assert state["calls"] == {REGIONS: 2}


def test_control_validates_at_construction() -> None:
    with pytest.raises(ValueError, match="garbage"):
        FakePeerControl(garbage="zip")
    with pytest.raises(ValueError, match="fail_status"):
        FakePeerControl(fail_status=200)
    with pytest.raises(ValueError, match="reject"):
        FakePeerControl(reject=[True])


@pytest.mark.parametrize("mode", ["html", "wrong_types", "missing_fields", "huge"])
async def test_garbage_is_a_permanent_error(fake: FakePeers, peers: PeerClient, mode: str) -> None:
    fake.control.garbage = mode
    for call in (peers.store_dongs([1]), peers.stores_by_dong(["상도동"]), peers.fcm_tokens([1])):
        with pytest.raises(PeerAnswerError) as caught:
            await call
        assert caught.value.kind == "malformed"
        assert not is_availability_fault(caught.value)
    fake.control.garbage = None
    assert await peers.store_dongs([1]) == {1: "노량진동"}


async def test_a_body_that_never_ends_times_out(fake: FakePeers) -> None:
    fake.control.garbage = "never_ends"
    async with _client(fake, PEER_TIMEOUT_SECONDS=0.3) as peers:
        started = time.perf_counter()
        with pytest.raises(PeerUnavailable) as caught:
            await peers.store_dongs([1])
        assert caught.value.kind == "timeout"
        assert time.perf_counter() - started < 2
        fake.control.garbage = None
        assert await peers.store_dongs([1]) == {1: "노량진동"}


async def test_the_process_serves_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.devtools.fake_peers",
        "--store-port",
        "0",
        "--notification-port",
        "0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with waiting(10, "the fake peers' line naming their URLs"):
            line = (await process.stderr.readline()).decode()
        urls = re.findall(r"http://127\.0\.0\.1:\d+", line)
        assert len(urls) == 2, line
        assert (await _post(urls[0] + REGIONS, [9], "t")) == (
            200,
            {"data": [{"storeId": 9, "dong": "서교동"}]},
        )
        process.send_signal(signal.SIGTERM)
        async with waiting(5, "the fake peers' exit on SIGTERM"):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

from __future__ import annotations

import hashlib
import json
from datetime import date

import aio_pika
import pytest

from app import contracts
from app.contracts import PushRequest, amqp_properties, encode_body, to_json_line, trace_id


def _java_name_uuid(name: str) -> str:
    """Java's UUID.nameUUIDFromBytes, bit by bit, independently of app.contracts."""
    b = bytearray(hashlib.md5(name.encode("utf-8")).digest())
    b[6] = (b[6] & 0x0F) | 0x30  # version 3
    b[8] = (b[8] & 0x3F) | 0x80  # IETF variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def test_trace_id_of_the_contract_example() -> None:
    got = trace_id(date(2025, 10, 25), 101, "token-101-a", "노량진동", 10)
    assert got == "f85971b0-2d71-3dc0-b533-047f9a578d93"


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (
            (date(2024, 12, 1), 7, "fcm:AbC-_9", "상도동", 0),
            "2024-12-01:7:fcm:AbC-_9:상도동:0",
        ),
        (
            (date(2025, 1, 9), 9_000_000_001, "t", "Seongsu-dong 1(il)-ga", 23),
            "2025-01-09:9000000001:t:Seongsu-dong 1(il)-ga:23",
        ),
    ],
)
def test_trace_id_is_javas_name_uuid(args: tuple, name: str) -> None:
    assert trace_id(*args) == _java_name_uuid(name)


def test_for_token_computes_the_trace_id() -> None:
    req = PushRequest.for_token(date(2025, 10, 25), 101, "token-101-a", "노량진동", 10, 3)
    assert req == PushRequest(
        "f85971b0-2d71-3dc0-b533-047f9a578d93", 101, "token-101-a", "노량진동", 10, 3
    )


REQ = PushRequest("f85971b0-2d71-3dc0-b533-047f9a578d93", 101, "token-101-a", "노량진동", 10, 3)
BODY = (
    '{"traceId":"f85971b0-2d71-3dc0-b533-047f9a578d93","memberId":101,'
    '"token":"token-101-a","topDong":"노량진동","topHour":10,"activeEventCount":3}'
).encode()


def test_body_is_compact_utf8_json_in_contract_order() -> None:
    assert encode_body(REQ) == BODY
    assert b"\xeb\x85\xb8\xeb\x9f\x89\xec\xa7\x84\xeb\x8f\x99" in BODY  # 노량진동, raw UTF-8
    assert list(json.loads(BODY)) == [
        "traceId",
        "memberId",
        "token",
        "topDong",
        "topHour",
        "activeEventCount",
    ]


def test_json_line_is_the_body_as_text() -> None:
    assert to_json_line(REQ) == BODY.decode("utf-8")


def test_body_escapes_what_json_must() -> None:
    req = PushRequest("id", 1, 'a"b\\c\n', "동", 1, 0)
    assert json.loads(encode_body(req))["token"] == 'a"b\\c\n'


def test_amqp_properties() -> None:
    props = amqp_properties(REQ)
    assert props.content_type == "application/json"
    assert props.content_encoding == "UTF-8"
    assert props.delivery_mode == aio_pika.DeliveryMode.PERSISTENT.value == 2
    assert props.priority == 0
    assert props.headers == {
        "__TypeId__": (
            "com.couponpop.couponpopcoremodule.dto.coupon.event.model."
            "CouponUsageStatsFcmSendMessage"
        )
    }
    assert props.message_id == REQ.trace_id


def test_wire_names() -> None:
    assert contracts.EXCHANGE == "coupon.exchange"
    assert contracts.ROUTING_KEY == "coupon.usage.stats.fcm.send"
    assert contracts.CONSUMER_QUEUE == "coupon.usage.stats.fcm.send.queue.v1"
    assert contracts.CONSUMER_QUEUE_ARGUMENTS == {
        "x-message-ttl": 300000,
        "x-dead-letter-exchange": "coupon.exchange.dlx",
        "x-dead-letter-routing-key": "coupon.usage.stats.fcm.send.dlq",
    }

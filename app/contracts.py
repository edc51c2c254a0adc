"""The push request to the notification service: CONTRACTS section 3, byte for byte.

The notification service is a Spring AMQP consumer: it picks the Java type from the
`__TypeId__` header, parses the body as UTF-8 JSON, and drops a `traceId` it has
seen in the last 7 days. Everything here is fixed by that consumer.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import date

from aiormq import spec
from pamqp.common import FieldTable

EXCHANGE = "coupon.exchange"
ROUTING_KEY = "coupon.usage.stats.fcm.send"
CONSUMER_QUEUE = "coupon.usage.stats.fcm.send.queue.v1"
# Declared by the notification service, never by this one: for tests and docs.
CONSUMER_QUEUE_ARGUMENTS: dict[str, str | int] = {
    "x-message-ttl": 300000,
    "x-dead-letter-exchange": "coupon.exchange.dlx",
    "x-dead-letter-routing-key": "coupon.usage.stats.fcm.send.dlq",
}
TYPE_ID = "com.couponpop.couponpopcoremodule.dto.coupon.event.model.CouponUsageStatsFcmSendMessage"
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "UTF-8"
PERSISTENT = 2  # delivery mode

# Shared by every message; aio-pika does not mutate it.
_HEADERS: FieldTable = {"__TypeId__": TYPE_ID}
# A JSON string as Jackson writes it: raw UTF-8 (no \u escapes for non-ASCII), quoted.
_string = json.encoder.encode_basestring


def trace_id(aggregated_at: date, member_id: int, token: str, top_dong: str, top_hour: int) -> str:
    """Java's `UUID.nameUUIDFromBytes` of the contract's key: the consumer's idempotency key.

    Stable forever for the same inputs, which is what makes a rerun safe.
    """
    name = f"{aggregated_at.isoformat()}:{member_id}:{token}:{top_dong}:{top_hour}"
    return str(uuid.UUID(bytes=hashlib.md5(name.encode()).digest(), version=3))


@dataclass(frozen=True, slots=True)
class PushRequest:
    """One push to one FCM token of a member."""

    trace_id: str
    member_id: int
    token: str
    top_dong: str
    top_hour: int
    active_event_count: int

    @classmethod
    def for_token(
        cls,
        aggregated_at: date,
        member_id: int,
        token: str,
        top_dong: str,
        top_hour: int,
        active_event_count: int,
    ) -> PushRequest:
        return cls(
            trace_id(aggregated_at, member_id, token, top_dong, top_hour),
            member_id,
            token,
            top_dong,
            top_hour,
            active_event_count,
        )


def to_json_line(req: PushRequest) -> str:
    """The body as text, fields in the contract's order: a template, several times as
    fast as the encoder's walk over a dict (docs/performance.md)."""
    return (
        f'{{"traceId":{_string(req.trace_id)},"memberId":{req.member_id:d},'
        f'"token":{_string(req.token)},"topDong":{_string(req.top_dong)},'
        f'"topHour":{req.top_hour:d},"activeEventCount":{req.active_event_count:d}}}'
    )


def encode_body(req: PushRequest) -> bytes:
    return to_json_line(req).encode()


def amqp_properties(req: PushRequest) -> spec.Basic.Properties:
    """The message's properties (its body is `encode_body`): the frame aio-pika's Message
    would build, built directly (building that Message cost the publish rate more than
    the bench's 5%; docs/performance.md)."""
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        delivery_mode=PERSISTENT,
        priority=0,  # sent by Spring AMQP's publisher too (and aio-pika's Message)
        headers=_HEADERS,
        message_id=req.trace_id,
    )

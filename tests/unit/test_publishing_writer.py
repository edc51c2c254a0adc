"""The publishing writer over a publisher (`app.ports.Publisher`): a chunk's delivery
succeeds once every message is confirmed, and a retry publishes only the unconfirmed."""

from __future__ import annotations

import pytest
from aiormq import spec

from app.edges.broker import BrokerUnavailable, OutgoingMessage
from app.pipeline.writers import PublishingWriter
from tests.fakes import FakePublisher


def messages(count: int) -> list[OutgoingMessage]:
    return [OutgoingMessage("push", f"{i}".encode(), spec.Basic.Properties()) for i in range(count)]


async def test_a_retry_publishes_only_what_was_not_confirmed() -> None:
    publisher = FakePublisher(lose=2)
    writer = PublishingWriter(publisher)
    output = messages(5)
    with pytest.raises(BrokerUnavailable) as lost:
        await writer.deliver(output)
    assert str(lost.value) == "broker: 2 of 5 messages lost their confirmation"
    assert lost.value.dependency == "broker (fake)"
    assert [m.body for m in output] == [b"3", b"4"]  # left for the retry
    await writer.deliver(output)
    assert output == []
    assert [m.body for m in publisher.published] == [b"0", b"1", b"2", b"3", b"4", b"3", b"4"]
    assert writer.report() == {"published": 7, "confirmed": 5}

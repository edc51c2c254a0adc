"""One bad item among 1,000: the notification service answers 400 to any token lookup
naming member 637. The chunk is tried again by halves down to that member alone: it is
skipped and named, and the 999 others' messages reach the consumer (before: the whole
chunk of 1,000 was skipped)."""

from __future__ import annotations

import logging

import pytest
from asyncmy.pool import Pool

from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.edges.peers import FCM_TOKENS
from tests.integration.test_fcm_send_job import (
    counts,
    expected_body,
    insert_events,
    insert_stats,
    job_settings,
    run_job,
)
from tests.reliability.support import (
    FANOUT_HOUR,
    FANOUT_PARAMETERS,
    FANOUT_RUN_DATE,
    drain,
    skipped_items,
)

MEMBERS = 1000
BAD = 637
DONG = "노량진동"
STEP = "couponUsageStatsFcmSendStep"


async def test_a_member_whose_token_lookup_answers_400_is_skipped_alone(
    pool: Pool, settings: Settings, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    members = range(1, MEMBERS + 1)
    await insert_stats(pool, [(m, DONG, FANOUT_HOUR, FANOUT_RUN_DATE) for m in members])
    await insert_events(pool, [(1, "2025-10-25 09:00:00", "2025-10-25 11:00:00", 100, 0)])
    peers = {"stores": {"1": DONG}, "tokens": {str(m): [f"tok-{m}"] for m in members}}
    async with run_fake_peers(peers) as fake:
        fake.control.reject = [BAD]
        job = job_settings(settings, queue, fake, CHUNK_SIZE=MEMBERS, SKIP_LIMIT=10)
        with caplog.at_level(logging.WARNING):
            execution = await run_job(job, FANOUT_PARAMETERS)
        lookups = fake.calls[FCM_TOKENS]

    assert (execution.status, execution.exit_code) == ("COMPLETED", "COMPLETED WITH SKIPS")
    assert counts(execution) == {"read": 1000, "written": 999, "filtered": 0, "skipped": 1}
    [(ids, error)] = skipped_items(caplog.records, STEP)
    assert ids == [BAD]
    assert str(error) == "notification service /internal/v1/fcm-tokens/search: HTTP 400"
    assert execution.steps[0].context["skipped"] == [BAD]

    received = [m.body for m in await drain(queue)]
    expected = [
        expected_body(FANOUT_RUN_DATE, m, f"tok-{m}", DONG, FANOUT_HOUR, 1)
        for m in members
        if m != BAD
    ]
    assert sorted(received) == sorted(expected)  # 999 messages, each once

    # Smaller and smaller sets are asked for, down to the bad member alone.
    assert [BAD] in lookups
    assert min(len(batch) for batch in lookups if BAD in batch) == 1

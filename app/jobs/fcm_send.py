"""couponUsageStatsFcmSendJob: each member's latest favourite hour, pushed at that hour.

For `runDate` and `targetHour`: each member's latest `coupon_usage_stats` row of the
last three days (runDate - 2 .. runDate) whose `top_hour` is `targetHour`; their push
tokens from the notification service, their dong's stores from the store service,
the dong's coupon events running at `runDate targetHour:00`; one push request per
token, published with confirms (or, in a dry run, written as JSON lines).

A chunk's output is its push requests. The publishing writer publishes them with
confirms, and the runtime records the chunk's counts and its checkpoint (the last
member id) once the broker has confirmed every one; a dry run is the same job with the
dry-run writer (JSON lines). A rerun publishes again; the notification service drops
what it has seen by `traceId`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

from app.concurrency import SharedLookup, SharedValue, gather_first_error
from app.contracts import ROUTING_KEY, PushRequest, amqp_properties, encode_body
from app.edges.broker import OutgoingMessage
from app.edges.db import DbPool, fetch_all
from app.jobs.fcm_send_spec import LOOKBACK_DAYS
from app.pipeline.chunk import Chunk, Processed, Rows, StepDefinition
from app.pipeline.isolate import run_wide
from app.pipeline.writers import DryRunWriter, PublishingWriter, Writer
from app.ports import Peers
from app.runtime.job import Estimate, JobContext, NoSettings
from app.runtime.resources import Resources

STEP_NAME = "couponUsageStatsFcmSendStep"


# --- the rules: pure functions -------------------------------------------------------


class LatestStats(NamedTuple):
    """A member's latest stats row of the window, with `top_hour` = targetHour."""

    member_id: int
    top_dong: str
    top_hour: int
    aggregated_at: date


class Filtered(enum.Enum):
    """Why a member gets no push."""

    NO_TOKENS = "no push token"
    NO_STORE = "no store in the dong"
    NO_ACTIVE_EVENT = "no active coupon event in the dong"


def stats_window(run_date: date) -> tuple[date, date]:
    """The `aggregated_at` dates whose rows count, both included."""
    return run_date - timedelta(days=LOOKBACK_DAYS), run_date


def reference_time(run_date: date, target_hour: int) -> datetime:
    """The moment events must be running at: `runDate targetHour:00` (local, naive)."""
    return datetime.combine(run_date, time(hour=target_hour))


def active_event_count(store_ids: Iterable[int], events_by_store: Mapping[int, int]) -> int:
    """A dong's active events: the sum over its stores."""
    return sum(events_by_store.get(store_id, 0) for store_id in store_ids)


def decide(
    stats: LatestStats,
    tokens: Sequence[str] | None,
    store_ids: Collection[int] | None,
    active_events: int,
) -> Filtered | list[PushRequest]:
    """Why `stats`' member is filtered, or their push requests: one per token."""
    if not tokens:
        return Filtered.NO_TOKENS
    if not store_ids:
        return Filtered.NO_STORE
    if active_events <= 0:
        return Filtered.NO_ACTIVE_EVENT
    return [
        PushRequest.for_token(
            stats.aggregated_at,
            stats.member_id,
            token,
            stats.top_dong,
            stats.top_hour,
            active_events,
        )
        for token in dict.fromkeys(tokens)  # a token listed twice is pushed once
    ]


def to_message(req: PushRequest) -> OutgoingMessage:
    """The push request as the notification service receives it (CONTRACTS section 3)."""
    return OutgoingMessage(ROUTING_KEY, encode_body(req), amqp_properties(req))


# --- the queries ---------------------------------------------------------------------

# Latest = greatest aggregated_at, then greatest id. The window is evaluated before the
# top_hour filter: a member whose latest row names another hour is not pushed at all.
# Filtering member_id > checkpoint inside is safe: the partitions are members.
# The window runs over narrow columns only and fetches top_dong by primary key for the
# rows kept: a VARCHAR(255) in the window's temporary table makes it ~30 times wider.
_RANKED = """
    SELECT id, member_id, top_hour,
           ROW_NUMBER() OVER (PARTITION BY member_id
                              ORDER BY aggregated_at DESC, id DESC) AS latest
    FROM coupon_usage_stats
    WHERE aggregated_at BETWEEN %s AND %s{after}
"""
_LATEST_STATS = f"""
SELECT s.member_id, s.top_dong, s.top_hour, s.aggregated_at
FROM ({_RANKED}) ranked
JOIN coupon_usage_stats s ON s.id = ranked.id
WHERE ranked.latest = 1 AND ranked.top_hour = %s
ORDER BY ranked.member_id
"""
# The members a run reads: the rows of _LATEST_STATS, counted.
_LATEST_STATS_COUNT = f"""
SELECT COUNT(*) FROM ({_RANKED.format(after="")}) ranked
WHERE ranked.latest = 1 AND ranked.top_hour = %s
"""

# The window sorts every row of the three days in a temporary table before the first
# row comes out; past the default 16 MiB that table goes to disk, several times slower
# (docs/performance.md). The reading session may hold up to this much.
_WINDOW_TABLE_BYTES = 256 * 1024 * 1024
_WIDEN_TEMP_TABLES = (
    f"SET SESSION tmp_table_size = {_WINDOW_TABLE_BYTES},"
    f" max_heap_table_size = {_WINDOW_TABLE_BYTES}"
)

# One scan of coupon_events per run, whatever the number of dongs and members.
_ACTIVE_EVENTS_BY_STORE = """
SELECT store_id, COUNT(*) FROM coupon_events
WHERE event_start_at <= %s AND event_end_at >= %s AND total_count > issued_count
GROUP BY store_id
"""


def latest_stats(run_date: date, target_hour: int, after_member: int | None) -> Rows[LatestStats]:
    """The members' latest stats in member order, after `after_member`."""
    start, end = stats_window(run_date)
    args: list[Any] = [start, end]
    after = ""
    if after_member is not None:
        after = " AND member_id > %s"
        args.append(after_member)
    args.append(target_hour)
    return Rows(
        [(_LATEST_STATS.format(after=after), args)], _latest_stats, session=[_WIDEN_TEMP_TABLES]
    )


def _latest_stats(rows: list[tuple]) -> list[LatestStats]:
    return [
        LatestStats(int(member_id), top_dong, int(top_hour), aggregated_at)
        for member_id, top_dong, top_hour, aggregated_at in rows
    ]


async def estimate(resources: Resources, values: Mapping[str, str]) -> Estimate:
    """The members a run of `values` (parsed: runDate, targetHour) would read, before the
    peers filter any: what the console's confirmation of a real fan-out names."""
    start, end = stats_window(date.fromisoformat(values["runDate"]))
    rows = await fetch_all(
        resources.pool, _LATEST_STATS_COUNT, (start, end, int(values["targetHour"]))
    )
    return Estimate(int(rows[0][0]), "members")


async def active_events_by_store(pool: DbPool, at: datetime) -> dict[int, int]:
    rows = await fetch_all(pool, _ACTIVE_EVENTS_BY_STORE, (at, at))
    return {int(store_id): int(count) for store_id, count in rows}


# --- per-run lookups, shared by the concurrent chunks ----------------------------------


class _RunLookups:
    """What every chunk of a run shares: each dong's stores (asked once per run), the
    active events per store (one query at the first need), each dong's event count."""

    def __init__(self, peers: Peers, pool: DbPool, at: datetime) -> None:
        self.stores = SharedLookup(peers.stores_by_dong)
        self.events = SharedValue(lambda: active_events_by_store(pool, at))
        self._dong_events: dict[str, int] = {}

    def dong_events(self, dong: str, store_ids: list[int], events: Mapping[int, int]) -> int:
        count = self._dong_events.get(dong)
        if count is None:
            count = self._dong_events[dong] = active_event_count(store_ids, events)
        return count


# --- the step ------------------------------------------------------------------------


def message_lines(messages: list[OutgoingMessage]) -> Iterator[str]:
    """A dry run's output: each message's JSON body, a line each."""
    return (message.body.decode() for message in messages)


def build(context: JobContext[NoSettings]) -> StepDefinition[LatestStats, list[OutgoingMessage]]:
    run_date = date.fromisoformat(context.parameters["runDate"])
    target_hour = int(context.parameters["targetHour"])
    writer: Writer[list[OutgoingMessage]]
    if context.dry_run_output is not None:
        writer = DryRunWriter(context.dry_run_output, message_lines)
    elif context.broker is not None:
        writer = PublishingWriter(context.broker)
    else:
        raise RuntimeError("this job publishes, but no broker connection was opened")
    peers = context.peers
    lookups = _RunLookups(peers, context.pool, reference_time(run_date, target_hour))

    async def read(checkpoint: Any) -> Rows[LatestStats]:
        return latest_stats(run_date, target_hour, None if checkpoint is None else int(checkpoint))

    async def process(chunk: Chunk[LatestStats]) -> Processed[list[OutgoingMessage]]:
        items = chunk.items
        dongs = list(dict.fromkeys(stats.top_dong for stats in items))
        tokens, stores, events = await gather_first_error(
            peers.fcm_tokens([stats.member_id for stats in items]),
            lookups.stores.get(dongs),
            run_wide(lookups.events.get()),  # the same query for every chunk of the run
        )
        messages: list[OutgoingMessage] = []
        filtered = 0
        for stats in items:
            store_ids = stores.get(stats.top_dong)
            count = lookups.dong_events(stats.top_dong, store_ids, events) if store_ids else 0
            decision = decide(stats, tokens.get(stats.member_id), store_ids, count)
            if isinstance(decision, Filtered):
                filtered += 1
            else:
                messages.extend(map(to_message, decision))
        return Processed(output=messages, filtered=filtered)

    return StepDefinition(
        name=STEP_NAME,
        read=read,
        process=process,
        writer=writer,
        item_key=lambda stats: stats.member_id,
    )

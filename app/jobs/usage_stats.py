"""couponUsageStatsJob: each regular member's favourite dong and hour (issue 4).

Rows: the USED `coupon_histories` of the window in member order, read as READ_STREAMS
queries that the server scans and sorts at the same time, merged here. The table has
no index but its primary key, and its ids follow time: the queries share the window's
span of ids, found by a binary search over ids (`history_window`); where an index
starts with `created_at`, they share the window's time instead and the server ranges
over that index; with STATS_READ=full, they share the table's ids.

A chunk is whole members: up to CHUNK_SIZE candidates (members with MIN_ROWS rows or
more) and the members with fewer rows between them, up to ten times CHUNK_SIZE members
in all. Those with fewer rows can never be eligible: each is carried as its first row
alone, read and filtered, with no rows kept, no store looked up and no commit of its
own. Processing computes each candidate's favourite, looking a store up the first time
a member meets it (once per run each); writing replaces the runDate's rows of the
chunk's member-id range (after the previous checkpoint, up to this one; the last
chunk's range is open), so a rerun or a restart leaves exactly the rows a first run
writes, members who no longer qualify or no longer appear at all included. A dry run
writes the rows it would store as JSON lines instead, and stores nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from itertools import chain, groupby, pairwise
from operator import itemgetter
from typing import Any

from app.concurrency import SharedLookup, in_slices
from app.edges.db import fetch_all
from app.jobs.history_window import IdRange, created_at_index, window_span
from app.jobs.usage_stats_spec import SPEC, WINDOW_DAYS, StatsSettings
from app.pipeline.chunk import Chunk, Processed, Rows, StepDefinition
from app.pipeline.writers import DryRunWriter, KeyRangeWriter, Writer
from app.runtime.job import JobContext

JOB_NAME = SPEC.name
STEP_NAME = "couponUsageStatsStep"
MIN_ROWS = 5
_SECONDS_PER_DAY = 86400

# A row as read: (member_id, store_id, created_at as TO_SECONDS). Integers decode
# faster than DATETIMEs and compare as times; the hour of day is TO_SECONDS % 86400
# // 3600 (TO_SECONDS counts whole days from year 0).
Row = tuple[int, int, int]
Candidate = tuple[int, list[Row]]  # (member_id, its rows): MIN_ROWS rows or more
# A member as read: a candidate, or the first row alone of a member with fewer rows (never
# eligible: it is read and filtered, and nothing is built, looked up or computed for it)
Member = Candidate | Row
Favourite = tuple[int, str, int]  # (member_id, top_dong, top_hour)
TimeRange = tuple[datetime | None, datetime | None]  # from (included) .. to (excluded)
Bounds = list[tuple[str, Any]]  # conditions of one query beside the window's, their values
_member = itemgetter(0)  # of a Row or a Favourite
_store = itemgetter(1)  # of a Row
_rows = itemgetter(1)  # of a Candidate

_READ = (
    "SELECT member_id, store_id, TO_SECONDS(created_at) FROM coupon_histories"
    " WHERE coupon_status = 'USED' AND created_at BETWEEN %s AND %s"
)
_ID_SPAN = "SELECT MIN(id), MAX(id) FROM coupon_histories"
# A chunk ends at CHUNK_SIZE candidates or at this many times as many members in all,
# so that a window of occasional members alone still commits bounded chunks.
_MEMBERS_PER_CANDIDATE = 10
# Members computed between two turns of the event loop: a small part of a chunk, so that
# the sink's round trips are not held up behind a whole chunk's CPU.
_MEMBERS_PER_SLICE = 100

log = logging.getLogger(__name__)


# ---- the rules (pure) ------------------------------------------------------------


def window(day: date) -> tuple[datetime, datetime]:
    """The first and last second of the window of `day`, both included."""
    return (
        datetime.combine(day - timedelta(days=WINDOW_DAYS), time(0, 0, 0)),
        datetime.combine(day, time(23, 59, 59)),
    )


def id_ranges(low: int, high: int, parts: int, ends: IdRange = (None, None)) -> list[IdRange]:
    """Up to `parts` ranges of about equal width over the ids low..high that cover every
    id from ends[0] to ends[1]; open ends (None) let no row added meanwhile be lost."""
    first, last = ends
    cuts = sorted({low + (high - low + 1) * part // parts for part in range(1, parts)})
    cuts = [c for c in cuts if (first is None or c > first) and (last is None or c < last)]
    return list(pairwise([first, *cuts, last]))


def time_ranges(start: datetime, end: datetime, parts: int) -> list[TimeRange]:
    """Up to `parts` ranges of about equal length over start..end, to the second; the
    first and the last are open (the window's own condition closes them)."""
    step = (end - start) / parts
    cuts = sorted({(start + step * part).replace(microsecond=0) for part in range(1, parts)})
    return list(pairwise([None, *[c for c in cuts if c > start], None]))


def _bounds(column: str, first: Any, last: Any) -> Bounds:
    found = [(f" AND {column} >= %s", first), (f" AND {column} < %s", last)]
    return [(condition, value) for condition, value in found if value is not None]


def hour_of(seconds: int) -> int:
    """The hour of day of a TO_SECONDS value (favourite inlines the same arithmetic)."""
    return seconds % _SECONDS_PER_DAY // 3600


def favourite(rows: Sequence[Row], dong_of: Mapping[int, str | None]) -> tuple[str, int] | None:
    """(top dong, top hour) of one member from its rows, in any order; None when the
    member is not eligible.

    `dong_of` names the dong of every store of `rows`, None for a store without one;
    a store it lacks (not looked up yet) raises KeyError, unless the member has fewer
    than MIN_ROWS rows: such a member is not eligible whatever its stores, and nothing
    is looked up for it. Rows of a store without a dong are dropped first. Eligible:
    MIN_ROWS rows or more. Top dong: most rows, then the latest row, then the greatest
    name in code-point order. Top hour: among the top dong's rows, most rows, then the
    latest row, then the greatest hour.

    Plain loops, lists of times and a max over (count, latest, name) tuples for the
    dong on purpose: for the handful of rows of a member they beat Counter and key
    functions, the dong of each row is looked up once, and this runs once per member
    of the window.
    """
    if len(rows) < MIN_ROWS:
        return None
    times: dict[str, list[int]] = {}  # dong -> the times of its rows
    dropped = 0
    for _, store, at in rows:
        dong = dong_of[store]
        if dong is None:
            dropped += 1
            continue
        found = times.get(dong)
        if found is None:
            times[dong] = [at]
        else:
            found.append(at)
    if len(rows) - dropped < MIN_ROWS:
        return None
    if len(times) == 1:
        ((top, top_times),) = times.items()
    else:
        _, _, top = max([(len(ats), max(ats), dong) for dong, ats in times.items()])
        top_times = times[top]
    # The top hour as the rows are counted in time order: each row is the latest of
    # its hour so far, so the hour just counted beats the top one when its count is at
    # least as high. Rows of the same time have the same hour: no tie is left for the
    # rule's last step (the greater hour).
    top_times.sort()
    counts = [0] * 24
    top_hour = top_count = 0
    for at in top_times:
        hour = at % _SECONDS_PER_DAY // 3600
        count = counts[hour] + 1
        counts[hour] = count
        if count >= top_count:
            top_hour, top_count = hour, count
    return top, top_hour


async def _favourites(
    members: Sequence[Candidate],
    dong_of: Mapping[int, str | None],
    unseen: list[Candidate] | None,
) -> list[Favourite]:
    """The eligible members' favourites in member order, a slice of members at a time,
    the event loop running between. A member with a store `dong_of` lacks goes to
    `unseen`; with no `unseen`, the KeyError is raised."""
    output: list[Favourite] = []
    async for some in in_slices(members, _MEMBERS_PER_SLICE):
        for member in some:
            try:
                found = favourite(member[1], dong_of)
            except KeyError:
                if unseen is None:
                    raise
                unseen.append(member)
                continue
            if found is not None:
                output.append((member[0], *found))
    return output


def members(rows: list[Row]) -> list[Member]:
    """A batch of rows, every row of its members, as members in member order."""
    found: list[Member] = []
    for member_id, group in groupby(rows, _member):
        member = list(group)
        found.append(member[0] if len(member) < MIN_ROWS else (member_id, member))
    return found


def _is_candidate(member: Member) -> int:
    """A chunk's weight: the candidates it holds (see the module)."""
    return len(member) == 2


# ---- the step --------------------------------------------------------------------


class UsageStatsStep:
    """One execution's step: reader and processor around the run's state."""

    def __init__(self, context: JobContext[StatsSettings]) -> None:
        self.day = date.fromisoformat(context.parameters["runDate"])
        self.pool = context.pool
        self.settings = context.settings
        self.peers = context.peers
        # storeId -> dong (None: no dong), each store asked once per run
        self.dongs = SharedLookup(context.peers.store_dongs)
        # Whether the window may hold rows, as `shares` found (False: nothing yet, only an
        # open end read in case rows come, or no query at all)
        self.rows_expected = True

    async def read(self, checkpoint: Any) -> Rows[Member]:
        queries = [self._query(bounds, checkpoint) for bounds in await self.shares()]
        if self.rows_expected:
            self.peers.preload()  # for the first chunk's store lookups, while the server sorts
        return Rows(queries, members)

    async def shares(self) -> list[Bounds]:
        """The bounds of each read query beside the window's condition (see the module)."""
        pool, parts = self.pool, self.settings.READ_STREAMS
        start, end = window(self.day)
        if self.settings.STATS_READ == "window":
            index = await created_at_index(pool)
            if index is not None:
                log.info("stats read: the window's time over index %s", index)
                return [_bounds("created_at", *times) for times in time_ranges(start, end, parts)]
            slack = timedelta(minutes=self.settings.WINDOW_SLACK_MINUTES)
            span = await window_span(pool, start, end, slack)
            if span is not None:
                bounds = span.bounds
                log.info(
                    "stats read: ids %s of coupon_histories (%d rows looked up)",
                    "none" if bounds is None else f"{bounds[0]}..{bounds[1]}",
                    span.lookups,
                )
                if bounds is None:  # nothing yet; an open end still reads what comes
                    self.rows_expected = False
                    return [] if span.ids[1] is not None else [_bounds("id", *span.ids)]
                ranges = id_ranges(*bounds, parts, span.ids)
                return [_bounds("id", *ids) for ids in ranges]
            log.warning(
                "stats read: ids of coupon_histories do not follow created_at within"
                " WINDOW_SLACK_MINUTES=%d; reading the whole table",
                self.settings.WINDOW_SLACK_MINUTES,
            )
        [(low, high)] = await fetch_all(pool, _ID_SPAN)
        if low is None:
            self.rows_expected = False
            return []
        return [_bounds("id", *ids) for ids in id_ranges(low, high, parts)]

    def _query(self, bounds: Bounds, checkpoint: Any) -> tuple[str, list[Any]]:
        """The window's rows within `bounds`, of the members after the checkpoint."""
        sql, args = [_READ], list[Any](window(self.day))
        for condition, value in bounds:
            sql.append(condition)
            args.append(value)
        if checkpoint is not None:
            sql.append(" AND member_id > %s")
            args.append(int(checkpoint))
        sql.append(" ORDER BY member_id")
        return "".join(sql), args

    async def process(self, chunk: Chunk[Member]) -> Processed[list[Favourite]]:
        members = chunk.items
        candidates = [member for member in members if len(member) == 2]
        unseen: list[Candidate] = []
        output = await _favourites(candidates, self.dongs.known, unseen)
        if unseen:
            # Members with a store not looked up yet (in the first chunks mostly): their
            # stores are looked up and they are computed again. Later chunks meet a new
            # store rarely, and no pass over every row gathers each chunk's stores.
            stores = set(map(_store, chain.from_iterable(map(_rows, unseen))))
            found = await _favourites(unseen, await self.dongs.get(stores), None)
            output = sorted(output + found, key=_member)  # member order, as read
        return Processed(output=output, filtered=len(members) - len(output))


def row_lines(day: date) -> Callable[[list[Favourite]], Iterator[str]]:
    """A dry run's output: the rows a run would store for `day`, as JSON lines."""

    def lines(output: list[Favourite]) -> Iterator[str]:
        for member_id, dong, hour in output:
            row = {"member_id": member_id, "top_dong": dong, "top_hour": hour}
            yield json.dumps({**row, "aggregated_at": day.isoformat()}, ensure_ascii=False)

    return lines


def build(context: JobContext[StatsSettings]) -> StepDefinition[Member, list[Favourite]]:
    step = UsageStatsStep(context)
    writer: Writer[list[Favourite]] = KeyRangeWriter(
        "coupon_usage_stats",
        key="member_id",
        columns=("member_id", "top_dong", "top_hour"),
        scope={"aggregated_at": step.day},
    )
    if context.dry_run_output is not None:
        writer = DryRunWriter(context.dry_run_output, row_lines(step.day))
    return StepDefinition(
        name=STEP_NAME,
        read=step.read,
        process=step.process,
        writer=writer,
        item_key=_member,
        weight=_is_candidate,
        chunk_cap=_MEMBERS_PER_CANDIDATE,
        final_chunk=True,
    )

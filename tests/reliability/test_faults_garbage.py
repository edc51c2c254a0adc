"""Fault 5: a peer answering garbage (HTML, wrong JSON types, missing fields, a 10 MB
body, a body that never ends) in the middle of a run.

Each answer is bounded (PEER_TIMEOUT_SECONDS, PEER_MAX_BODY_BYTES) and named in the
exit message. Garbage for every request is met alike by every part of a chunk: not about
its items (issue 26), so it is retried within the budget and fails the step, nothing
skipped (before: the first item skipped failed the step, SKIP_LIMIT=0). The process
survives, the execution ends FAILED as recorded, and the job's event loop never stalls
meanwhile (the fake peers run in a process of their own, so the loop
measured is the job's only). Once the peer is healthy again, a restart resumes from the
checkpoint and loses nothing.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.model import JobExecution
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from tests.integration.test_fcm_send_job import JOB as FANOUT_JOB
from tests.integration.test_usage_stats_job import counts, stats
from tests.reliability.support import (
    FANOUT_PARAMETERS,
    STATS_RUN_DATE,
    LoopLag,
    PeerProcess,
    after_commits,
    drain,
    fake_peers_process,
    fanout_world,
    free_port,
    skipped_items,
    stats_world,
    trace_ids_of,
    until_serving,
)
from tests.settings import make_settings

pytestmark = pytest.mark.slow

STATS = stats_world(300)
FANOUT = fanout_world(600)
CHUNK = 25
# The longest the job's loop may go without running the probe, its own doing only: LoopLag
# subtracts the time its thread waited for a CPU, which a loaded machine adds at random
# (0.118 s at load 4.7 on 2 cores failed this bound when it was measured in wall time).
# What is left stays under 0.04 s up to load 6 on 2 cores, while the stall this guards
# against, a multi-MB answer parsed on the loop, costs 0.1-0.5 s of the loop's own time.
MAX_LAG_SECONDS = 0.1
TIMEOUT_SECONDS = 1
RETRY_BUDGET_SECONDS = 2
REGIONS = "store service /internal/v1/stores/regions"
TOKENS = "notification service /internal/v1/fcm-tokens/search"

# What the skip warning and the exit message say, per garbage mode: (error type, text).
STORE_ERRORS = {
    "html": ("PeerAnswerError", f"{REGIONS}: Expecting value: line 1 column 1 (char 0)"),
    "wrong_types": ("PeerAnswerError", f"{REGIONS}: 'storeId' must be an integer, got '1'"),
    "missing_fields": ("PeerAnswerError", f"{REGIONS}: an element of data lacks 'storeId'"),
    "huge": ("PeerAnswerError", f"{REGIONS}: answer larger than 1048576 bytes"),
    "never_ends": ("PeerUnavailable", f"{REGIONS}: no answer within {TIMEOUT_SECONDS}s"),
}
TOKEN_ERRORS = {
    "html": ("PeerAnswerError", f"{TOKENS}: Expecting value: line 1 column 1 (char 0)"),
    "wrong_types": ("PeerAnswerError", f"{TOKENS}: 'memberId' must be an integer, got '101'"),
    "missing_fields": ("PeerAnswerError", f"{TOKENS}: an element of data lacks 'memberId'"),
    "huge": ("PeerAnswerError", f"{TOKENS}: answer larger than 1048576 bytes"),
    "never_ends": ("PeerUnavailable", f"{TOKENS}: no answer within {TIMEOUT_SECONDS}s"),
}
MODES = list(STORE_ERRORS)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PeerProcess, PeerProcess]]:
    """(store, notification): two fake-peer processes, so garbage from one leaves the
    other healthy."""
    data = {
        "stores": {**STATS.peer_data()["stores"], **FANOUT.peers["stores"]},
        "tokens": FANOUT.peers["tokens"],
    }
    with (
        fake_peers_process(data, tmp_path_factory.mktemp("store")) as store,
        fake_peers_process(data, tmp_path_factory.mktemp("notification")) as notification,
    ):
        yield store, notification


@pytest.fixture
async def healthy(peers: tuple[PeerProcess, PeerProcess]) -> tuple[PeerProcess, PeerProcess]:
    for peer in peers:
        await peer.control(garbage=None, fail_status=None, latency_ms=20)
    return peers


def job_settings(
    settings: Settings, store: PeerProcess, notification: PeerProcess, **overrides: object
) -> Settings:
    return make_settings(
        DB_URL=settings.DB_URL,
        STORE_SERVICE_URL=store.store_url,
        NOTIFICATION_SERVICE_URL=notification.notification_url,
        CHUNK_SIZE=CHUNK,
        ENRICH_WORKERS=2,
        QUEUE_SIZE=2,
        RETRY_BUDGET_SECONDS=RETRY_BUDGET_SECONDS,
        SKIP_LIMIT=0,
        PEER_TIMEOUT_SECONDS=TIMEOUT_SECONDS,
        **overrides,
    )


async def run_into_garbage(
    job: Settings, job_path: str, parameters: dict[str, str], garbage: PeerProcess, mode: str
) -> tuple[JobExecution, LoopLag]:
    """Launch; after two commits the peer turns to garbage; the execution as it ended, and
    the loop lag measured meanwhile."""
    async with LoopLag() as lag, open_resources(job, broker=job_path == FANOUT_JOB) as resources:
        launcher = Launcher(resources, JOBS)
        run = await launcher.launch(find_job(JOBS, job_path), parameters, rerun=False)
        await after_commits(run, 2)
        await garbage.control(garbage=mode)
        started = time.monotonic()
        await run.task
        # Bounded: at worst the retry budget, plus one attempt waiting out the peer timeout.
        assert time.monotonic() - started < RETRY_BUDGET_SECONDS + TIMEOUT_SECONDS + 3
        execution = await launcher.repository.get_execution(run.execution.id)
    await garbage.control(garbage=None, latency_ms=0)
    assert execution is not None
    return execution, lag


def assert_failed_clearly(
    execution: JobExecution,
    lag: LoopLag,
    records: list[logging.LogRecord],
    step: str,
    expected: tuple[str, str],
) -> None:
    assert lag.samples and lag.worst < MAX_LAG_SECONDS, lag
    assert execution.status == "FAILED"
    assert not skipped_items(records, step)
    assert execution.steps[0].skip_count == 0
    if expected[0] == "PeerUnavailable":  # an availability fault: the step fails
        assert execution.exit_message == f"{expected[0]}: {expected[1]}"
    else:  # a data fault, but the whole chunk, its halves, quarters and eighths all meet
        # it alike: not about the items, retried as availability, then the step fails
        assert execution.exit_message == (
            f"NotAboutItems: {expected[0]}: {expected[1]} (met alike by every part of a chunk)"
        )
    (recorded,) = execution.steps
    assert recorded.status == "FAILED"
    assert recorded.exit_message == execution.exit_message
    assert recorded.checkpoint is not None


@pytest.mark.parametrize("mode", MODES)
async def test_store_service_garbage_during_the_stats_job(
    pool: Pool,
    settings: Settings,
    healthy: tuple[PeerProcess, PeerProcess],
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    store, notification = healthy
    await STATS.load(pool)
    caplog.set_level(logging.INFO)
    job = job_settings(settings, store, notification)
    parameters = {"runDate": STATS_RUN_DATE}
    failed, lag = await run_into_garbage(job, "coupon-usage-stats", parameters, store, mode)
    assert_failed_clearly(failed, lag, caplog.records, "couponUsageStatsStep", STORE_ERRORS[mode])
    checkpoint = failed.steps[0].checkpoint
    assert await stats(pool) == STATS.expected_upto(checkpoint)

    async with open_resources(job, broker=False) as resources:
        resumed = await Launcher(resources, JOBS).run(
            find_job(JOBS, "coupon-usage-stats"), parameters, rerun=False
        )
    assert resumed.status == "COMPLETED", resumed.exit_message
    assert counts(resumed)["read"] == STATS.members - checkpoint
    assert await stats(pool) == STATS.expected


@pytest.mark.parametrize("mode", MODES)
async def test_notification_service_garbage_during_the_fanout_job(
    pool: Pool,
    settings: Settings,
    healthy: tuple[PeerProcess, PeerProcess],
    queue: str,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    store, notification = healthy
    await FANOUT.load(pool)
    caplog.set_level(logging.INFO)
    job = job_settings(settings, store, notification, RABBITMQ_VHOST=queue)
    failed, lag = await run_into_garbage(job, FANOUT_JOB, FANOUT_PARAMETERS, notification, mode)
    assert_failed_clearly(
        failed, lag, caplog.records, "couponUsageStatsFcmSendStep", TOKEN_ERRORS[mode]
    )
    checkpoint = failed.steps[0].checkpoint
    delivered = set(trace_ids_of(await drain(queue)))
    assert world_up_to(checkpoint) <= delivered <= FANOUT.trace_ids()

    async with open_resources(job, broker=True) as resources:
        resumed = await Launcher(resources, JOBS).run(
            find_job(JOBS, FANOUT_JOB), FANOUT_PARAMETERS, rerun=False
        )
    assert resumed.status == "COMPLETED", resumed.exit_message
    assert resumed.steps[0].read_count == len([m for m in FANOUT.bodies if m > checkpoint])
    assert delivered | set(trace_ids_of(await drain(queue))) == FANOUT.trace_ids()


def world_up_to(checkpoint: int) -> set[str]:
    return FANOUT.trace_ids(m for m in FANOUT.bodies if m <= checkpoint)


# A peer answering a well-formed body of 200,000 stores (8.3 MB, under the 8 MiB cap
# this service once had) for the 25 a chunk asked about. Plain http.server in a
# process of its own.
BULKY_PEER = """
import http.server, json, sys
body = json.dumps(
    {"data": [{"storeId": i, "dong": "상도동"} for i in range(200_000)]}, ensure_ascii=False
).encode()
assert len(body) < 8388608
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204)
        self.end_headers()
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture
def bulky_peer() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", BULKY_PEER, str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        until_serving(process, [url])
        yield url
    finally:
        process.kill()
        process.wait()


async def test_a_bulky_answer_is_refused_without_stalling_the_loop(
    pool: Pool, settings: Settings, bulky_peer: str
) -> None:
    """A well-formed 8.3 MB answer (200,000 entries for 25 asked ids) is over the
    default PEER_MAX_BODY_BYTES (1 MiB): refused while reading, never parsed on the
    loop (parsing it took the loop 0.27 s when the cap was 8 MiB), however often asked."""
    world = stats_world(50)
    await world.load(pool)
    job = make_settings(
        DB_URL=settings.DB_URL,
        STORE_SERVICE_URL=bulky_peer,
        NOTIFICATION_SERVICE_URL=bulky_peer,
        CHUNK_SIZE=CHUNK,
    )
    async with LoopLag() as lag, open_resources(job, broker=False) as resources:
        execution = await Launcher(resources, JOBS).run(
            find_job(JOBS, "coupon-usage-stats"), {"runDate": STATS_RUN_DATE}, rerun=False
        )
    # Every lookup refused alike: not about the chunk's items, so the step fails once the
    # budget is spent, nothing skipped (issue 26; before: all 50 skipped, COMPLETED).
    assert execution.status == "FAILED"
    assert execution.exit_message == (
        f"NotAboutItems: PeerAnswerError: {REGIONS}: answer larger than 1048576 bytes"
        " (met alike by every part of a chunk)"
    )
    assert execution.steps[0].skip_count == 0
    assert execution.steps[0].write_count == 0
    assert lag.samples and lag.worst < MAX_LAG_SECONDS, lag

"""The JobOperator's commands (`app.runtime.operator`) status by status, over a job
repository and a launcher that record what they are asked: which commands an execution
offers, which restart, stop, abandon and backfill are refused and why, and what each
hands the launcher. Whole runs through the operator on the in-memory job repository are
in test_operator_rules.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest

from app.jobs import fcm_send_spec, usage_stats_spec
from app.model import AlreadyComplete, JobExecution, JobParameter, Status
from app.repository.rules import allowed
from app.runtime.job import UnknownJob
from app.runtime.launcher import ON_REQUEST, RunningJob, ShuttingDown
from app.runtime.operator import (
    JobOperator,
    NoSuchExecution,
    NotAbandonable,
    NotRestartable,
    NotRunning,
    Refused,
    Stopped,
)
from app.runtime.parameters import ParameterError

F, S, R = Status.FAILED, Status.STOPPED, Status.STARTED
STATS = usage_stats_spec.SPEC.name


def execution(id: int, status: Status, instance: int = 7) -> JobExecution:
    return JobExecution(id=id, instance_id=instance, job_name=STATS, status=status, parameters={})


@dataclass
class Repository:
    """The job repository as the operator reads and changes it: executions by id, each
    instance's in order."""

    executions: dict[int, JobExecution] = field(default_factory=dict)
    stop_failed_answers: list[bool] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, *executions: JobExecution) -> Repository:
        for found in executions:
            self.executions[found.id] = found
        return self

    async def get_execution(self, execution_id: int) -> JobExecution | None:
        return self.executions.get(execution_id)

    async def last_execution(self, instance_id: int) -> JobExecution:
        return max(
            (e for e in self.executions.values() if e.instance_id == instance_id),
            key=lambda e: e.id,
        )

    async def get_parameters(self, execution_id: int) -> list[JobParameter]:
        return [JobParameter("runDate", "java.time.LocalDate", f"2025-10-{execution_id:02}")]

    async def executions_since(self, execution_id: int) -> list[tuple[int, Status]]:
        asked = self.executions.get(execution_id)
        if asked is None:
            return []
        return [
            (e.id, e.status)
            for e in sorted(self.executions.values(), key=lambda e: e.id)
            if e.instance_id == asked.instance_id and e.id >= execution_id
        ]

    async def stop_failed(self, execution_id: int) -> bool:
        self.calls.append(("stop_failed", execution_id))
        if self.stop_failed_answers and not self.stop_failed_answers.pop(0):
            # the run moved on meanwhile: its successor started
            self.add(execution(execution_id + 1, R, self.executions[execution_id].instance_id))
            return False
        self.executions[execution_id].status = S
        return True

    async def request_stop(self, execution_id: int) -> Status | None:
        self.calls.append(("request_stop", execution_id))
        found = self.executions[execution_id].status
        if found in (Status.STARTING, R):
            self.executions[execution_id].status = Status.STOPPING
        return found

    async def abandon(self, execution_id: int) -> Status | None:
        found = self.executions.get(execution_id)
        if found is None:
            return None
        was = found.status
        if was in (S, F, Status.STOPPING):
            found.status = Status.ABANDONED
        return was

    async def find_executions(self, **filters: Any) -> list[JobExecution]:
        self.calls.append(("find_executions", filters))
        return [self.executions[id] for id in sorted(self.executions, reverse=True)]


class Launcher:
    """Records what the operator hands it; refuses the dates in `refused`."""

    def __init__(self, repository: Repository, *, accepting: bool = True) -> None:
        self.repository = repository
        self.accepting = accepting
        self.launched: list[tuple[str, dict[str, str], bool, object]] = []
        self.relaunched: list[tuple[str, list[JobParameter], object]] = []
        self.refused: set[str] = set()
        self.running: dict[int, RunningJob] = {}

    jobs = (STATS, fcm_send_spec.SPEC.name)

    def find(self, name: str) -> Any:
        specs = {spec.path: spec for spec in (usage_stats_spec.SPEC, fcm_send_spec.SPEC)}
        found = specs.get(name) or {STATS: usage_stats_spec.SPEC}.get(name)
        if found is None:
            raise UnknownJob(name)
        return found

    def refuse_if_shutting_down(self) -> None:
        if not self.accepting:
            raise ShuttingDown("shutting down")

    async def launch(
        self, spec: Any, raw: Mapping[str, str], *, rerun: bool, dry_run_output: object = None
    ) -> RunningJob:
        self.refuse_if_shutting_down()
        if raw.get("runDate") in self.refused:
            raise AlreadyComplete(f"{raw['runDate']} completed", 3)
        self.launched.append((spec.name, dict(raw), rerun, dry_run_output))
        return RunningJob(spec, execution(100 + len(self.launched), Status.STARTING))

    async def relaunch(
        self, spec: Any, parameters: Sequence[JobParameter], *, automatic: object = None
    ) -> RunningJob:
        self.relaunched.append((spec.name, list(parameters), automatic))
        return RunningJob(spec, execution(200, Status.STARTING))


def operator(*executions: JobExecution, accepting: bool = True) -> JobOperator:
    repository = Repository().add(*executions)
    return JobOperator(repository, Launcher(repository, accepting=accepting))


def launcher_of(job_operator: JobOperator) -> Launcher:
    return job_operator.launcher


def repository_of(job_operator: JobOperator) -> Repository:
    return job_operator.repository


@pytest.mark.parametrize(
    ("status", "latest", "commands"),
    [
        (Status.STARTING, 1, ("stop",)),
        (Status.STARTED, 1, ("stop",)),
        (Status.STOPPING, 1, ("abandon",)),
        (Status.FAILED, 1, ("restart", "abandon")),
        (Status.STOPPED, 1, ("restart", "abandon")),
        (Status.COMPLETED, 1, ()),
        (Status.ABANDONED, 1, ()),
        (Status.UNKNOWN, 1, ()),
        # an older execution of its instance: neither restarted nor abandoned
        (Status.FAILED, 2, ()),
        (Status.STOPPING, 2, ()),
        (Status.STARTED, 2, ("stop",)),
    ],
)
def test_the_commands_an_execution_offers(
    status: Status, latest: int, commands: tuple[str, ...]
) -> None:
    assert allowed(execution(1, status), latest) == commands


def test_an_operator_without_a_launcher_launches_nothing() -> None:
    job_operator = JobOperator(Repository())
    with pytest.raises(RuntimeError, match=r"^this operator launches nothing: it has no launcher$"):
        job_operator.launcher  # noqa: B018


def test_an_operator_of_a_launcher_uses_its_repository() -> None:
    repository = Repository()
    launcher = Launcher(repository)
    job_operator = JobOperator.of(launcher)
    assert job_operator.repository is repository
    assert job_operator.launcher is launcher


async def test_start_launches_the_job_found_by_its_path() -> None:
    job_operator = operator()
    output = object()

    run = await job_operator.start(
        "coupon-usage-stats",
        {"runDate": "2025-10-01"},
        rerun=True,
        dry_run_output=output,
    )

    assert launcher_of(job_operator).launched == [(STATS, {"runDate": "2025-10-01"}, True, output)]
    assert run.execution.id == 101


async def test_a_backfill_launches_each_date_and_collects_the_refusals() -> None:
    job_operator = operator()
    launcher_of(job_operator).refused = {"2025-10-02"}

    launched, refused = await job_operator.backfill(
        "coupon-usage-stats", "2025-10-01", "2025-10-03", {"dryRun": "false"}, rerun=True
    )

    assert [(day, run.execution.id) for day, run in launched] == [
        (date(2025, 10, 1), 101),
        (date(2025, 10, 3), 102),
    ]
    assert [(day, str(exc), exc.execution_id) for day, exc in refused] == [
        (date(2025, 10, 2), "2025-10-02 completed", 3)
    ]
    assert launcher_of(job_operator).launched == [
        (STATS, {"dryRun": "false", "runDate": "2025-10-01"}, True, None),
        (STATS, {"dryRun": "false", "runDate": "2025-10-03"}, True, None),
    ]


async def test_a_backfill_takes_no_run_date() -> None:
    with pytest.raises(ParameterError) as raised:
        await operator().backfill(
            "coupon-usage-stats", "2025-10-01", "2025-10-02", {"runDate": "x"}, rerun=False
        )
    assert (raised.value.parameter, raised.value.message) == (
        "runDate",
        "give either runDate or from/to",
    )


async def test_only_a_job_that_backfills_is_backfilled() -> None:
    job_operator = operator()
    with pytest.raises(ParameterError) as raised:
        await job_operator.backfill(
            "coupon-usage-stats-fcm-send", "2025-10-01", "2025-10-02", {}, rerun=False
        )
    assert (raised.value.parameter, raised.value.message) == (
        "from",
        "coupon-usage-stats-fcm-send does not backfill: it takes no from, to",
    )
    assert launcher_of(job_operator).launched == []


async def test_a_backfill_past_a_shutdown_stops_at_the_refusal() -> None:
    job_operator = operator(accepting=False)
    with pytest.raises(ShuttingDown):
        await job_operator.backfill(
            "coupon-usage-stats", "2025-10-01", "2025-10-02", {}, rerun=False
        )


@pytest.mark.parametrize("status", [F, S])
async def test_a_failed_or_stopped_last_execution_restarts_with_its_parameters(
    status: Status,
) -> None:
    job_operator = operator(execution(3, F), execution(4, status))
    automatic = object()

    run = await job_operator.restart(4, automatic=automatic)

    assert launcher_of(job_operator).relaunched == [
        (STATS, [JobParameter("runDate", "java.time.LocalDate", "2025-10-04")], automatic)
    ]
    assert run.execution.id == 200


@pytest.mark.parametrize("later", [R, Status.STARTING, Status.STOPPING, Status.COMPLETED])
async def test_an_earlier_execution_whose_instance_runs_or_completed_is_left_to_the_launch_rules(
    later: Status,
) -> None:
    job_operator = operator(execution(4, F), execution(5, later))

    await job_operator.restart(4)

    assert len(launcher_of(job_operator).relaunched) == 1


@pytest.mark.parametrize("later", [F, S, Status.ABANDONED])
async def test_an_earlier_execution_whose_instance_ran_on_does_not_restart(later: Status) -> None:
    job_operator = operator(execution(4, F), execution(5, later))

    with pytest.raises(NotRestartable) as raised:
        await job_operator.restart(4)

    assert str(raised.value) == (
        f"execution 4 is not its instance's last: execution 5 ran on after it and is {later};"
        " only the last one restarts"
    )
    assert launcher_of(job_operator).relaunched == []


@pytest.mark.parametrize(
    "status", [Status.COMPLETED, Status.ABANDONED, R, Status.STARTING, Status.STOPPING]
)
async def test_only_a_failed_or_stopped_execution_restarts(status: Status) -> None:
    with pytest.raises(NotRestartable) as raised:
        await operator(execution(4, status)).restart(4)
    assert str(raised.value) == (
        f"execution 4 is {status}: only a FAILED or STOPPED execution restarts"
    )
    assert raised.value.status == status


async def test_restarting_an_unknown_execution_is_refused() -> None:
    with pytest.raises(NoSuchExecution, match=r"^no job execution 9$"):
        await operator().restart(9)


async def test_no_restart_while_shutting_down() -> None:
    with pytest.raises(ShuttingDown):
        await operator(execution(4, F), accepting=False).restart(4)


async def test_a_running_execution_is_asked_to_stop_and_its_runner_here_told() -> None:
    job_operator = operator(execution(4, R))
    running = RunningJob(usage_stats_spec.SPEC, execution(4, R))
    launcher_of(job_operator).running[4] = running

    assert await job_operator.stop(4) == Stopped(4, R)

    assert repository_of(job_operator).executions[4].status == Status.STOPPING
    assert running.stop.is_set() and running.stop_reason == ON_REQUEST


async def test_a_stop_of_a_run_taken_over_reaches_its_successor() -> None:
    job_operator = operator(execution(4, F), execution(5, Status.STARTING))

    assert await job_operator.stop(4) == Stopped(5, Status.STARTING)
    assert repository_of(job_operator).calls == [("request_stop", 5)]


async def test_a_stop_of_a_failed_run_awaiting_its_restart_stops_it_at_once() -> None:
    job_operator = operator(execution(4, F))

    assert await job_operator.stop(4) == Stopped(4, F)
    assert repository_of(job_operator).executions[4].status == S


async def test_a_stop_whose_run_moved_on_meanwhile_is_tried_again_on_its_successor() -> None:
    job_operator = operator(execution(4, F))
    repository_of(job_operator).stop_failed_answers = [False]

    assert await job_operator.stop(4) == Stopped(5, R)
    assert repository_of(job_operator).calls == [("stop_failed", 4), ("request_stop", 5)]


async def test_a_stop_of_an_operator_without_a_launcher_changes_the_repository_only() -> None:
    repository = Repository().add(execution(4, R))
    assert await JobOperator(repository).stop(4) == Stopped(4, R)


async def test_a_stop_that_finds_the_run_ended_is_refused_with_its_status() -> None:
    job_operator = operator(execution(4, Status.COMPLETED))

    with pytest.raises(NotRunning) as raised:
        await job_operator.stop(4)

    assert str(raised.value) == "execution 4 is COMPLETED, not running"
    assert raised.value.status == Status.COMPLETED
    assert isinstance(raised.value, Refused)


async def test_a_stop_of_a_run_that_ended_later_says_how_it_ended() -> None:
    job_operator = operator(execution(4, F), execution(5, Status.COMPLETED))

    with pytest.raises(NotRunning) as raised:
        await job_operator.stop(4)

    assert str(raised.value) == (
        "execution 4 is FAILED, not running; its run ended COMPLETED (execution 5 is its"
        " instance's latest)"
    )
    assert raised.value.status == F


async def test_a_stop_that_found_the_execution_no_longer_running_stopped_nothing() -> None:
    """The execution ended between the read and the request: the stop is read again."""
    job_operator = operator(execution(4, R))
    repository = repository_of(job_operator)
    original = repository.request_stop

    async def ended_meanwhile(execution_id: int) -> Status | None:
        repository.executions[execution_id].status = Status.COMPLETED
        return await original(execution_id)

    repository.request_stop = ended_meanwhile

    with pytest.raises(NotRunning, match=r"^execution 4 is COMPLETED, not running$"):
        await job_operator.stop(4)


async def test_stopping_an_unknown_execution_is_refused() -> None:
    with pytest.raises(NoSuchExecution, match=r"^no job execution 9$"):
        await operator().stop(9)


@pytest.mark.parametrize("status", [S, F, Status.STOPPING])
async def test_a_stopped_failed_or_stopping_execution_is_abandoned(status: Status) -> None:
    job_operator = operator(execution(4, status))

    assert await job_operator.abandon(4) == status
    assert repository_of(job_operator).executions[4].status == Status.ABANDONED


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.ABANDONED, R, Status.STARTING])
async def test_other_executions_are_not_abandoned(status: Status) -> None:
    with pytest.raises(NotAbandonable) as raised:
        await operator(execution(4, status)).abandon(4)
    assert str(raised.value) == (
        f"execution 4 is {status}: only a STOPPED, FAILED or STOPPING execution is abandoned"
    )
    assert raised.value.status == status


async def test_abandoning_an_unknown_execution_is_refused() -> None:
    with pytest.raises(NoSuchExecution, match=r"^no job execution 9$"):
        await operator().abandon(9)


async def test_get_finds_an_execution_or_refuses() -> None:
    job_operator = operator(execution(4, F))
    assert (await job_operator.get(4)).id == 4
    with pytest.raises(NoSuchExecution, match=r"^no job execution 5$"):
        await job_operator.get(5)


async def test_the_executions_are_listed_with_the_filters_given() -> None:
    job_operator = operator(execution(4, F), execution(5, R))

    found = await job_operator.executions(
        job_name=STATS, status="FAILED", run_date=date(2025, 10, 1), before=9, limit=2
    )
    assert [e.id for e in found] == [5, 4]
    assert await job_operator.executions() == found
    assert repository_of(job_operator).calls == [
        (
            "find_executions",
            {
                "job_name": STATS,
                "status": "FAILED",
                "run_date": date(2025, 10, 1),
                "before": 9,
                "limit": 2,
            },
        ),
        (
            "find_executions",
            {"job_name": None, "status": None, "run_date": None, "before": None, "limit": 50},
        ),
    ]


async def test_an_execution_of_a_job_this_service_does_not_run_does_not_restart() -> None:
    other = JobExecution(id=4, instance_id=7, job_name="otherJob", status=F, parameters={})
    job_operator = operator(other)

    with pytest.raises(NotRestartable) as raised:
        await job_operator.restart(4)

    assert str(raised.value) == (
        "execution 4 is of otherJob, a job this service does not run (it runs"
        " couponUsageStatsJob, couponUsageStatsFcmSendJob)"
    )
    assert raised.value.status == F
    assert launcher_of(job_operator).relaunched == []

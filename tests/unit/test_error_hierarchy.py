"""One error hierarchy (issue 29, item 5): every exception class of app/ is a BatchError
whose class carries the admin API's code and status and the CLI's exit code; the API and
the CLI map them by class, once each; docs/errors.md lists every class as it is."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import app
from app.__main__ import NotTaken, _refused
from app.composition import CannotListen
from app.config import ConfigError
from app.devtools.consumer_queue import CannotDeclare
from app.edges.auth import AuthError
from app.errors import (
    EXIT_FAILED,
    EXIT_REFUSED,
    EXIT_USAGE,
    AvailabilityError,
    BatchError,
    DataError,
    Refusal,
)
from app.model import (
    AlreadyComplete,
    AlreadyRunning,
    JobParameter,
    LaunchRefused,
    RestartLimitReached,
    Status,
    Superseded,
)
from app.repository.rules import LeaseLost
from app.runtime.job import JobSpec, Parameter, UnknownJob
from app.runtime.launcher import ShuttingDown
from app.runtime.operator import (
    NoSuchExecution,
    NotAbandonable,
    NotRestartable,
    NotRunning,
    Refused,
)
from app.runtime.parameters import INTEGER, Integer, ParameterError
from app.schema.migrate import MigrationDenied
from app.web.errors import ApiError, error_middleware
from tests.settings import make_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def exception_classes() -> Iterator[type[BaseException]]:
    """Every exception class defined in app/."""
    for module in pkgutil.walk_packages(app.__path__, "app."):
        for value in vars(importlib.import_module(module.name)).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.name
            ):
                yield value


# One of each refusal, as it is raised.
REFUSALS: list[Refusal] = [
    ParameterError("runDate", "is required, as YYYY-MM-DD"),
    NotTaken("coupon-usage-stats takes no --target-hour (its options: --run-date, --dry-run)"),
    UnknownJob("unknown job 'nope'; known: coupon-usage-stats"),
    NoSuchExecution("no job execution 5"),
    NotRunning("execution 5 is COMPLETED, not running", Status.COMPLETED),
    NotAbandonable("execution 5 is COMPLETED: only a STOPPED, ...", Status.COMPLETED),
    NotRestartable("execution 5 is COMPLETED: only a FAILED or STOPPED ...", Status.COMPLETED),
    AlreadyRunning("couponUsageStatsJob is already running as execution 7", 7),
    AlreadyComplete("couponUsageStatsJob already completed as execution 7", 7),
    Superseded("execution 7 was launched since", 7),
    RestartLimitReached("FAILED after 4 executions", 7),
    ShuttingDown("the service is shutting down and launches no more jobs"),
    AuthError(403, "ACCESS_DENIED", "an admin token is required"),
    ApiError(404, "NO_ESTIMATE", "job coupon-usage-stats has no estimate"),
    ConfigError("invalid configuration: DB_URL is required"),
    MigrationDenied("V3 needs ALTER"),
    CannotListen("port 8080 is in use by another process; stop it or set SERVER_PORT"),
    CannotDeclare("AMQPConnectionError: refused"),
]


def test_every_exception_class_of_app_is_in_the_hierarchy() -> None:
    outside = [cls.__qualname__ for cls in exception_classes() if not issubclass(cls, BatchError)]
    assert outside == []


@pytest.mark.parametrize("cls", sorted(exception_classes(), key=lambda c: c.__name__))
def test_every_class_has_a_code_a_status_and_an_exit_code(cls: type[BatchError]) -> None:
    assert re.fullmatch(r"[A-Z]+(_[A-Z]+)*", cls.code)
    assert HTTPStatus(cls.http_status) >= 400
    if issubclass(cls, Refusal):
        # bad usage (nothing done) or a refusal of the command itself
        assert cls.exit_code in (EXIT_USAGE, EXIT_REFUSED)
    else:
        assert (cls.http_status, cls.exit_code) == (500, EXIT_FAILED)


def test_every_refusal_class_has_a_sample_here() -> None:
    """A new refusal class needs its mapping thought about: add it to REFUSALS."""
    sampled = {type(refusal) for refusal in REFUSALS}
    refusals = {cls for cls in exception_classes() if issubclass(cls, Refusal)}
    abstract = {Refusal, Refused, LaunchRefused}  # never raised as such
    assert refusals - abstract - sampled == set()


def test_the_operator_s_refusals_are_refused_with_its_codes() -> None:
    """NotRestartable was not a Refused like its siblings."""
    codes = {
        cls.__name__: (cls.code, cls.http_status, cls.exit_code) for cls in Refused.__subclasses__()
    }
    assert codes == {
        "NotRestartable": ("JOB_NOT_RESTARTABLE", 409, EXIT_REFUSED),
        "NotRunning": ("JOB_NOT_RUNNING", 409, EXIT_REFUSED),
        "NotAbandonable": ("JOB_NOT_ABANDONABLE", 409, EXIT_REFUSED),
    }


# ---- the API: one middleware maps by class -------------------------------------------------


RAISE = web.AppKey("raise", list[BaseException])


@pytest.fixture
async def raising() -> Iterator[TestClient]:
    """A client of an app whose one route raises what `answer` gives it, behind the error
    middleware."""
    app_ = web.Application(middlewares=[error_middleware(ZoneInfo("Asia/Seoul"))])
    app_[RAISE] = []

    async def handler(request: web.Request) -> web.Response:
        raise request.app[RAISE].pop()

    app_.router.add_post("/raise", handler)
    async with TestClient(TestServer(app_)) as client:
        yield client


async def answer(client: TestClient, exc: BaseException) -> tuple[int, dict[str, str], dict]:
    client.server.app[RAISE].append(exc)
    resp = await client.post("/raise")
    return resp.status, dict(resp.headers), (await resp.json())["error"]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda r: type(r).__name__)
async def test_the_api_answers_a_refusal_by_its_class(
    raising: TestClient, refusal: Refusal
) -> None:
    status, headers, error = await answer(raising, refusal)
    assert (status, error["code"]) == (refusal.http_status, refusal.code)
    assert error["status"].startswith(f"{refusal.http_status} ")
    if isinstance(refusal, LaunchRefused):
        # the execution in its way
        assert error["message"] == f"{refusal}; see /api/v1/jobs/executions/7"
        assert headers["Location"] == "/api/v1/jobs/executions/7"
    else:
        assert error["message"] == str(refusal)
        assert "Location" not in headers


@pytest.mark.parametrize(
    "fault",
    [
        DataError("store service: malformed answer"),
        AvailabilityError("database 127.0.0.1:3306 away", dependency="database"),
        LeaseLost("execution 5 was taken over"),
        ValueError("a bug"),
    ],
    ids=lambda f: type(f).__name__,
)
async def test_the_api_answers_a_fault_as_a_generic_500(
    raising: TestClient, fault: BaseException
) -> None:
    status, _, error = await answer(raising, fault)
    assert (status, error["status"], error["code"], error["message"]) == (
        500,
        "500 INTERNAL_SERVER_ERROR",
        "INTERNAL_SERVER_ERROR",
        "an unexpected error occurred",
    )


# ---- the CLI: one function maps by class -------------------------------------------------


@pytest.mark.parametrize(
    ("command", "refusal", "said", "code"),
    [
        ("run", ParameterError("runDate", "is required"), "error: runDate: is required", 2),
        ("stop", NoSuchExecution("no job execution 5"), "error: no job execution 5", 2),
        ("serve", CannotListen("port 8080 is in use"), "error: port 8080 is in use", 2),
        (
            "run",
            AlreadyComplete("couponUsageStatsJob already completed as execution 7", 7),
            "not launched: couponUsageStatsJob already completed as execution 7"
            " (use --rerun to run it again)",
            3,
        ),
        (
            "run",
            AlreadyRunning("couponUsageStatsJob is already running as execution 7", 7),
            "not launched: couponUsageStatsJob is already running as execution 7",
            3,
        ),
        (
            "restart",
            AlreadyComplete("couponUsageStatsJob already completed as execution 7", 7),
            "not restarted: couponUsageStatsJob already completed as execution 7",
            3,
        ),
        (
            "restart",
            NotRestartable("execution 5 is COMPLETED", Status.COMPLETED),
            "not restarted: execution 5 is COMPLETED",
            3,
        ),
        (
            "abandon",
            NotAbandonable("execution 5 is COMPLETED", Status.COMPLETED),
            "not done: execution 5 is COMPLETED",
            3,
        ),
    ],
)
def test_the_cli_says_a_refusal_in_one_line_and_exits_by_its_class(
    capsys: pytest.CaptureFixture[str], command: str, refusal: Refusal, said: str, code: int
) -> None:
    """The --rerun hint by class (before: `"completed" in str(exc)`), for `run` alone."""
    assert _refused(make_settings(), command, refusal) == code == refusal.exit_code
    assert capsys.readouterr() == ("", said + "\n")


# ---- a job's typed parameter: a bad value is a 400 naming it, before its parse ------------


TOY = JobSpec(
    name="toyCountJob",
    path="toy-count",
    title="Toy",
    parameters=(Parameter("limit", Integer(), "at most this many", default="10"),),
    build=lambda context: pytest.fail("not built"),
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "limit: must be an integer, got 'x'"),
        ("1.5", "limit: must be an integer, got '1.5'"),
        ("٣", "limit: must be an integer, got '٣'"),  # a digit int() reads, not ASCII
        ("9" * 19, f"limit: must be an integer, got '{'9' * 19}'"),
    ],
)
def test_a_value_that_is_not_of_its_declared_type_is_refused_naming_it(
    value: str, message: str
) -> None:
    with pytest.raises(ParameterError) as refused:
        TOY.read({"limit": value}, datetime(2025, 10, 26))
    assert (refused.value.parameter, str(refused.value)) == ("limit", message)


def test_a_value_of_its_declared_type_reaches_the_job_s_parse() -> None:
    assert TOY.read({"limit": "-3"}, datetime(2025, 10, 26)) == [
        JobParameter("limit", INTEGER, "-3")
    ]
    assert TOY.read({"limit": ""}, datetime(2025, 10, 26)) == [JobParameter("limit", INTEGER, "10")]


def test_an_integer_parameter_with_choices_says_its_range() -> None:
    hour = Parameter("targetHour", Integer(0, 23), "0..23", default="now")
    with pytest.raises(ParameterError) as refused:
        hour.parse({"targetHour": "x"}, datetime(2025, 10, 26))
    assert str(refused.value) == "targetHour: must be an integer from 0 to 23, got 'x'"


# ---- docs/errors.md lists every class as it is ------------------------------------------


def test_the_docs_table_lists_every_class_with_its_code_status_and_exit_code() -> None:
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            name, code, status, exit_code, _ = cells
            rows[name] = (code, int(status), int(exit_code))
    assert rows == {
        cls.__name__: (cls.code, cls.http_status, cls.exit_code) for cls in exception_classes()
    }

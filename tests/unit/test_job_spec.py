"""A job is handed what it declares: its settings, its policy over the defaults, its
parameters parsed by their kinds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from app.model import JobParameter
from app.runtime.job import DRY_RUN_PARAMETER, JobSpec, Parameter, Policy
from app.runtime.parameters import INTEGER, LOCAL_DATE, Integer, LocalDate, ParameterError
from tests.settings import make_settings


@dataclass(frozen=True)
class ToySettings:
    CHUNK_SIZE: int
    STATS_READ: str


def toy(**declared: Any) -> JobSpec:
    return JobSpec(
        name="toyJob",
        path="toy",
        title="Toy",
        parameters=(
            Parameter("runDate", LocalDate(lookback_days=1), "YYYY-MM-DD"),
            Parameter(
                "limit", Integer(1, 99), "how many", default="now's minute",
                default_of=lambda now: str(now.minute),
            ),
            DRY_RUN_PARAMETER,
        ),
        build=lambda context: None,  # type: ignore[arg-type, return-value]
        **declared,
    )  # fmt: skip


def test_a_job_gets_the_settings_it_declares_and_its_policy_over_the_defaults() -> None:
    settings = make_settings(CHUNK_SIZE=500, SKIP_LIMIT=7, STATS_READ="full")
    resources = SimpleNamespace(settings=settings, pool="pool", peers="peers", broker=None)
    spec = toy(settings=ToySettings, policy=Policy(chunk_size=20, skip_limit=0))
    context = spec.context(resources, 4, {"runDate": "2025-10-31"})  # type: ignore[arg-type]
    assert context.settings == ToySettings(CHUNK_SIZE=500, STATS_READ="full")
    assert (context.policy.chunk_size, context.policy.skip_limit) == (20, 0)
    assert context.policy.workers == settings.ENRICH_WORKERS
    assert (context.pool, context.peers, context.execution_id) == ("pool", "peers", 4)


def test_parameters_parse_by_their_kind_with_their_defaults() -> None:
    now = datetime(2025, 11, 1, 9, 42)
    assert toy().parse({"runDate": "2025-10-31"}, now) == [
        JobParameter("runDate", LOCAL_DATE, "2025-10-31"),
        JobParameter("limit", INTEGER, "42"),
        JobParameter("dryRun", "java.lang.Boolean", "false", identifying=False),
    ]
    assert toy().parse({"runDate": "2025-10-31", "limit": "07"}, now)[1] == JobParameter(
        "limit", INTEGER, "7"
    )


def test_a_blank_is_the_default_but_never_a_real_run() -> None:
    """`limit=` takes its default (as the old service's runDate= and targetHour= did);
    `dryRun=` is refused (the parametrised case above), never read as dryRun=false."""
    parsed = toy().parse({"runDate": "2025-10-31", "limit": ""}, datetime(2025, 11, 1, 9, 42))
    assert parsed[1] == JobParameter("limit", INTEGER, "42")


LIMIT = "limit: must be an integer from 1 to 99"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "runDate: is required, as YYYY-MM-DD"),
        ({"runDate": ""}, "runDate: is required, as YYYY-MM-DD"),
        ({"runDate": "0001-01-01"}, "runDate: must be 0001-01-02 or later"),
        ({"runDate": "2025-10-31", "limit": "0"}, f"{LIMIT}, got '0'"),
        ({"runDate": "2025-10-31", "limit": "100"}, f"{LIMIT}, got '100'"),
        ({"runDate": "2025-10-31", "dryRun": "no"}, "dryRun: must be true or false, got 'no'"),
        ({"runDate": "2025-10-31", "dryRun": ""}, "dryRun: must be true or false, got ''"),
    ],
)  # fmt: skip
def test_a_value_its_kind_refuses_names_the_parameter(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ParameterError) as refused:
        toy().parse(raw, datetime(2025, 11, 1))
    assert str(refused.value) == message


def test_few_values_are_choices() -> None:
    assert Integer(0, 23).choices == tuple(str(hour) for hour in range(24))
    assert Integer(1, 99).choices == ()

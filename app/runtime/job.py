"""What a job is to the runtime: a name, its parameters, and how to build its step."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from app.model import JobParameter
from app.pipeline.chunk import StepDefinition
from app.runtime.resources import Resources


@dataclass(frozen=True)
class JobContext:
    """One execution's view of the world, handed to the job's step builder."""

    resources: Resources
    execution_id: int
    parameters: Mapping[str, str]  # as recorded: runDate=2025-10-31, targetHour=10, ...
    dry_run_output: TextIO | None = None  # a dry run: where its writer writes


@dataclass(frozen=True)
class Estimate:
    """How much a run would process, counted before it is launched."""

    count: int
    unit: str  # what is counted, plural: "members"


@dataclass(frozen=True)
class JobSpec:
    name: str  # the Spring job name, as recorded in BATCH_JOB_INSTANCE
    path: str  # its name in the CLI and the admin API
    parse: Callable[[Mapping[str, str], datetime], list[JobParameter]]  # raises ParameterError
    build: Callable[[JobContext], StepDefinition[Any, Any]]
    publishes: bool = False  # its writer needs the broker, unless in a dry run
    # What a run with these parsed parameters would process (the console's confirmation
    # before a real fan-out); None: the job has no estimate.
    estimate: Callable[[Resources, Mapping[str, str]], Awaitable[Estimate]] | None = None


def job_in(
    module: str, name: str, path: str, *, publishes: bool = False, estimates: bool = False
) -> JobSpec:
    """The job whose module `module` defines SPEC, imported the first time the job parses
    parameters, builds a step or estimates: a run loads its own job's code and libraries
    alone (the fan-out job's broker client is no part of a stats run's start-up). `name`,
    `path`, `publishes` and whether it `estimates` are the module's SPEC's, known without
    importing it."""

    def loaded() -> JobSpec:
        spec: JobSpec = importlib.import_module(module).SPEC
        declared = (spec.name, spec.path, spec.publishes, spec.estimate is not None)
        if declared != (name, path, publishes, estimates):
            raise RuntimeError(f"{module}.SPEC is {spec}, registered as {name}, {path}")
        return spec

    async def estimate(resources: Resources, values: Mapping[str, str]) -> Estimate:
        count = loaded().estimate
        assert count is not None  # checked by loaded()
        return await count(resources, values)

    return JobSpec(
        name=name,
        path=path,
        parse=lambda raw, now: loaded().parse(raw, now),
        build=lambda context: loaded().build(context),
        publishes=publishes,
        estimate=estimate if estimates else None,
    )


class UnknownJob(LookupError):
    pass


def find_job(jobs: Iterable[JobSpec], name: str) -> JobSpec:
    """By CLI/API path (`coupon-usage-stats`) or Spring name (`couponUsageStatsJob`)."""
    known = []
    for spec in jobs:
        if name in (spec.path, spec.name):
            return spec
        known.append(spec.path)
    raise UnknownJob(f"unknown job {name!r}; known: {', '.join(known)}")

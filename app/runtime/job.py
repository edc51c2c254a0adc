"""What a job is: its declaration (name, path, parameters, settings, policy, schedule,
what its writer needs), from which the CLI, the admin API's document, the console's forms and the
schedules derive, and how to build its step."""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TextIO, TypeVar

from app.config import StepPolicy
from app.edges.db import DbPool
from app.errors import Refusal
from app.model import JobParameter
from app.pipeline.chunk import StepDefinition
from app.ports import Peers, Publisher
from app.runtime.parameters import DRY_RUN, DryRunFlag, Kind, ParameterError
from app.runtime.resources import Resources

SettingsT = TypeVar("SettingsT")


@dataclass(frozen=True)
class JobContext(Generic[SettingsT]):
    """One execution's view of the world, handed to the job's step builder: what the job
    declares (its settings, its policy) and the connections it uses, nothing else."""

    settings: SettingsT  # the job's own settings (JobSpec.settings)
    policy: StepPolicy  # the process-wide defaults, as the job declares otherwise
    pool: DbPool
    peers: Peers  # the store and notification services (app.edges.peers.PeerClient)
    broker: Publisher | None  # None where nothing will be published (dry runs, ...)
    execution_id: int
    parameters: Mapping[str, str]  # as recorded: runDate=2025-10-31, targetHour=10, ...
    dry_run_output: TextIO | None = None  # a dry run: where its writer writes


@dataclass(frozen=True)
class Estimate:
    """How much a run would process, counted before it is launched."""

    count: int
    unit: str  # what is counted, plural: "members"


@dataclass(frozen=True)
class Parameter:
    """A parameter as operators give it: `--run-date` in the CLI, `runDate` in the API;
    its `kind` parses it, so what a job takes is what it declares."""

    name: str  # as recorded and in the API: runDate
    kind: Kind  # parses its value: LocalDate(), Integer(0, 23), ...
    help: str  # what it is: the CLI's help, the OpenAPI document, the console's form
    default: str | None = None  # its value when not given, in words; None: required
    # The default's value from the time of the launch (APP_TIMEZONE); None: the words are
    # the value.
    default_of: Callable[[datetime], str] | None = None

    @property
    def type(self) -> str:
        """The Java type Spring records: java.time.LocalDate (parameters.LOCAL_DATE)."""
        return self.kind.java

    @property
    def choices(self) -> tuple[str, ...]:
        """The values it takes, where they are few (a select)."""
        return self.kind.choices

    @property
    def flag(self) -> str:
        """Its CLI option: runDate is --run-date."""
        return "--" + re.sub(r"(?<!^)(?=[A-Z])", "-", self.name).lower()

    @property
    def required(self) -> bool:
        return self.default is None

    def parse(self, raw: Mapping[str, str], now: datetime) -> list[JobParameter]:
        """Its value in `raw` as recorded, parsed by its kind (a value it refuses is a
        ParameterError naming it); absent (or blank, where its kind says so), its default."""
        value = raw.get(self.name)
        if value or (value == "" and not self.kind.blank_is_absent):
            return self.kind.parse(self.name, value)
        if self.default_of is not None:  # from the time of the launch
            return [JobParameter(self.name, self.type, self.default_of(now))]
        if self.default is None:
            raise ParameterError(self.name, f"is required, as {self.kind.form}")
        return self.kind.parse(self.name, self.default)  # words that are a value (false)


# The parameter of a job that can dry-run: it declares this among its parameters (its step
# then writes to the dry run's output).
DRY_RUN_PARAMETER = Parameter(
    DRY_RUN,
    DryRunFlag(),
    "everything but storing or publishing: what the run would store or publish goes as JSON"
    " lines to DRY_RUN_DIR (the CLI: stdout or --output); an instance of its own (dryRun=true"
    " and a fresh run.id), which no real run meets",
    default="false",
)


@dataclass(frozen=True)
class Policy:
    """A job's step policy where it is not the process-wide one (None: the setting's)."""

    chunk_size: int | None = None  # CHUNK_SIZE
    workers: int | None = None  # ENRICH_WORKERS
    retry_budget_seconds: float | None = None  # RETRY_BUDGET_SECONDS
    skip_limit: int | None = None  # SKIP_LIMIT

    def over(self, defaults: StepPolicy) -> StepPolicy:
        mine = {name: value for name, value in asdict(self).items() if value is not None}
        return replace(defaults, **mine)


@dataclass(frozen=True)
class NoSettings:
    """The settings of a job that reads none."""


@dataclass(frozen=True)
class Cron:
    """When the daemon launches the job, in APP_TIMEZONE."""

    cron: str
    parameters: Callable[[datetime], dict[str, str]]  # from the scheduled time
    punctual: bool = False  # worth running only within the misfire grace of its time
    # How long after its time a scheduled run may take to end COMPLETED: a run still
    # not COMPLETED then raises the alert BatchScheduledRunNotCompleted (the metric
    # batch_job_scheduled_run_timestamp_seconds), whichever job it is.
    completes_within: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class JobSpec:
    name: str  # the Spring job name, as recorded in BATCH_JOB_INSTANCE
    path: str  # its name in the CLI and the admin API
    title: str  # its name for people: the console's form, the API's job list
    # What it takes, as declared to operators; nothing else is taken (`read`). A job that
    # declares DRY_RUN_PARAMETER can dry-run; one that does not refuses dryRun.
    parameters: tuple[Parameter, ...]
    build: Callable[[JobContext[Any]], StepDefinition[Any, Any]]
    # A dataclass whose fields are the settings the job reads, by their names (STATS_READ):
    # the job is handed those alone, never the whole Settings.
    settings: type = NoSettings
    policy: Policy = Policy()
    publishes: bool = False  # its writer needs the broker, unless in a dry run
    backfills: bool = False  # `backfill` runs it for every date of a range (runDate)
    schedule: Cron | None = None  # None: launched by operators only
    # The console's question before a real run of a job that publishes: {name} is the
    # form's value of that parameter, {zone} APP_TIMEZONE, {estimate} what it would read.
    confirm: str = ""
    # What a run with these parsed parameters would process (the console's confirmation
    # before a real fan-out); None: the job has no estimate.
    estimate: Callable[[Resources, Mapping[str, str]], Awaitable[Estimate]] | None = None

    @property
    def dry_runs(self) -> bool:
        """Whether the job can dry-run (it declares dryRun); one that cannot refuses it."""
        return any(parameter.name == DRY_RUN for parameter in self.parameters)

    def undeclared(self, names: Iterable[str]) -> list[str]:
        """Those of `names` that are not parameters of this job, in their order."""
        declared = {parameter.name for parameter in self.parameters}
        return [name for name in names if name not in declared]

    def parse(self, raw: Mapping[str, str], now: datetime) -> list[JobParameter]:
        """The declared parameters from `raw`, as recorded; raises ParameterError. `now`
        (in APP_TIMEZONE) gives the defaults that depend on it."""
        return [found for parameter in self.parameters for found in parameter.parse(raw, now)]

    def context(
        self,
        resources: Resources,
        execution_id: int,
        parameters: Mapping[str, str],
        dry_run_output: TextIO | None = None,
    ) -> JobContext[Any]:
        """What a run of the job is handed: its settings and policy out of the process's,
        the connections it may use."""
        settings = resources.settings
        own = {f.name: getattr(settings, f.name) for f in fields(self.settings)}
        return JobContext(
            settings=self.settings(**own),
            policy=self.policy.over(settings.step),
            pool=resources.pool,
            peers=resources.peers,
            broker=resources.broker,
            execution_id=execution_id,
            parameters=parameters,
            dry_run_output=dry_run_output,
        )

    def read(self, raw: Mapping[str, str], now: datetime) -> list[JobParameter]:
        """The parameters an operator (or a schedule) gave, parsed: a name the job does
        not declare is a ParameterError naming it, never dropped (a `dryRun` given to a
        job that cannot dry-run would otherwise make a real run)."""
        for name in self.undeclared(raw):
            takes = ", ".join(parameter.name for parameter in self.parameters) or "none"
            raise ParameterError(name, f"is not a parameter of {self.path} (it takes {takes})")
        return self.parse(raw, now)


def code(target: str) -> Callable[..., Any]:
    """The function `module:name`, imported at its first call: a job's declaration names
    its step code so, and a run loads its own job's code and libraries alone (the
    fan-out job's broker client is no part of a stats run's start-up)."""
    module, _, name = target.partition(":")

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args)

    call.__qualname__ = call.__name__ = target
    return call


def declared_parameters(jobs: Iterable[JobSpec]) -> dict[str, tuple[Parameter, list[JobSpec]]]:
    """Every job's parameters by name (as the first job declares each), with the jobs
    that take it: the CLI's `run` options, the API's query parameters."""
    declared: dict[str, tuple[Parameter, list[JobSpec]]] = {}
    for spec in jobs:
        for parameter in spec.parameters:
            declared.setdefault(parameter.name, (parameter, []))[1].append(spec)
    return declared


def takers(name: str, jobs: Iterable[JobSpec]) -> str:
    """Which of `jobs` take the parameter `name`, each with its default or `required`,
    and its own help where it differs from the first's: the CLI's help, the OpenAPI
    document's description (`coupon-usage-stats: required; ...: default today`)."""
    found = [(spec, p) for spec in jobs for p in spec.parameters if p.name == name]
    first = found[0][1].help if found else ""
    return "; ".join(
        f"{spec.path}: "
        + ("required" if mine.required else f"default {mine.default}")
        + ("" if mine.help == first else f", {mine.help}")
        for spec, mine in found
    )


class UnknownJob(Refusal):
    code = "INVALID_PARAMETER"


def find_job(jobs: Iterable[JobSpec], name: str) -> JobSpec:
    """By CLI/API path (`coupon-usage-stats`) or Spring name (`couponUsageStatsJob`)."""
    known = []
    for spec in jobs:
        if name in (spec.path, spec.name):
            return spec
        known.append(spec.path)
    raise UnknownJob(f"unknown job {name!r}; known: {', '.join(known)}")

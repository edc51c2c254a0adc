"""What a job is to the runtime: a name, its parameters, and how to build its step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from app.pipeline.chunk import StepDefinition
from app.runtime.repository import JobParameter
from app.runtime.resources import Resources


@dataclass(frozen=True)
class JobContext:
    """One execution's view of the world, handed to the job's step builder."""

    resources: Resources
    execution_id: int
    parameters: Mapping[str, str]  # as recorded: runDate=2025-10-31, targetHour=10, ...
    dry_run_output: TextIO | None = None  # set: write messages here instead of publishing


@dataclass(frozen=True)
class JobSpec:
    name: str  # the Spring job name, as recorded in BATCH_JOB_INSTANCE
    path: str  # its name in the CLI and the admin API
    parse: Callable[[Mapping[str, str], datetime], list[JobParameter]]  # raises ParameterError
    build: Callable[[JobContext], StepDefinition[Any, Any]]
    publishes: bool = False  # needs the broker unless it is a dry run

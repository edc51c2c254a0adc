"""What a run loads: the composition root imports a job's module when the job is launched,
so a stats run starts without the fan-out job, the broker client, PyJWT or aiohttp."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from app.composition import JOBS
from app.jobs import fcm_send, usage_stats
from app.runtime.job import find_job, job_in

# Not needed to start a stats run: aiohttp is imported by the first peer call (none on
# an empty window); `cryptography` is, by asyncmy (caching_sha2_password's RSA).
NOT_LOADED = ("app.jobs.fcm_send", "app.edges.broker", "aio_pika", "aiormq", "jwt", "aiohttp")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


def test_the_command_line_loads_no_job() -> None:
    loaded = _loaded_after("import app.__main__")
    assert [name for name in loaded if name.startswith("app.jobs.")] == []
    assert [name for name in NOT_LOADED if name in loaded] == []


def test_a_stats_run_loads_neither_the_broker_nor_pyjwt_nor_aiohttp() -> None:
    loaded = _loaded_after(
        "import app.__main__, app.jobs.usage_stats, app.pipeline.step, app.runtime.launcher"
    )
    assert "app.jobs.usage_stats" in loaded
    assert [name for name in NOT_LOADED if name in loaded] == []


@pytest.mark.parametrize("module", [usage_stats, fcm_send])
def test_the_registry_names_each_job_as_its_module_does(module: object) -> None:
    spec = module.SPEC  # type: ignore[attr-defined]
    registered = find_job(JOBS, spec.path)
    assert (registered.name, registered.path, registered.publishes) == (
        spec.name,
        spec.path,
        spec.publishes,
    )
    assert (registered.estimate is None) == (spec.estimate is None)
    now = datetime(2025, 11, 1, 9, 30)
    raw = {"runDate": "2025-10-31", "targetHour": "10"}
    assert registered.parse(raw, now) == spec.parse(raw, now)


def test_a_job_registered_under_another_name_fails_when_loaded() -> None:
    wrong = job_in("app.jobs.usage_stats", "couponUsageStatsJob", "coupon-usage-stat")
    with pytest.raises(RuntimeError, match="registered as"):
        wrong.parse({"runDate": "2025-10-31"}, datetime(2025, 11, 1))

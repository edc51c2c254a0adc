"""What a run loads: the composition root imports the jobs' declarations, and a job's code
is imported when a run builds its step, so a stats run starts without the fan-out job, the
broker client, PyJWT or aiohttp."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.composition import JOBS

# Not needed to start a stats run: aiohttp is imported by the first peer call (none on
# an empty window); `cryptography` is, by asyncmy (caching_sha2_password's RSA).
JOB_CODE = ("app.jobs.usage_stats", "app.jobs.fcm_send", "app.jobs.history_window")
NOT_LOADED = ("app.jobs.fcm_send", "app.edges.broker", "aio_pika", "aiormq", "jwt", "aiohttp")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


def test_the_command_line_loads_no_job_code() -> None:
    """The jobs' declarations only (`*_spec`), not their steps' code."""
    loaded = _loaded_after("import app.__main__")
    assert [name for name in loaded if name in JOB_CODE] == []
    assert [name for name in NOT_LOADED if name in loaded] == []


def test_a_stats_run_loads_neither_the_broker_nor_pyjwt_nor_aiohttp() -> None:
    loaded = _loaded_after(
        "import app.__main__, app.jobs.usage_stats, app.pipeline.step, app.runtime.launcher"
    )
    assert "app.jobs.usage_stats" in loaded
    assert [name for name in NOT_LOADED if name in loaded] == []


def test_a_job_s_code_is_imported_at_its_first_call() -> None:
    loaded = _loaded_after(
        "from datetime import date; import sys; from app.runtime.job import code;"
        " window = code('app.jobs.fcm_send:stats_window');"
        " assert 'app.jobs.fcm_send' not in sys.modules;"
        " assert window(date(2025, 10, 31)) == (date(2025, 10, 29), date(2025, 10, 31))"
    )
    assert "app.jobs.fcm_send" in loaded


@pytest.mark.parametrize("path", [spec.path for spec in JOBS])
def test_parsing_a_job_s_parameters_loads_no_job_code(path: str) -> None:
    loaded = _loaded_after(
        "from datetime import datetime; from app.composition import JOBS;"
        " from app.runtime.job import find_job;"
        f" find_job(JOBS, {path!r}).parse({{'runDate': '2025-10-31'}}, datetime(2025, 11, 1))"
    )
    assert [name for name in loaded if name in JOB_CODE] == []


def test_the_peers_preload_imports_aiohttp_and_pyjwt_in_one_thread_started_once() -> None:
    loaded = _loaded_after(
        "import sys, threading; from app.config import PeerSettings;"
        " from app.edges.auth import SystemToken; from app.edges.peers import PeerClient;"
        " peers = PeerClient(PeerSettings('http://s', 'http://n', 1.0, 1000, 100),"
        " SystemToken(b'k' * 32, 'batch'));"
        " assert 'aiohttp' not in sys.modules and 'jwt' not in sys.modules;"
        " before = threading.active_count(); peers.preload(); peers.preload();"
        " assert threading.active_count() <= before + 1;"
        " [t.join() for t in threading.enumerate() if t.name == 'preload']"
    )
    assert "aiohttp" in loaded
    assert "jwt" in loaded

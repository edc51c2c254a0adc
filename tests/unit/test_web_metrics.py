"""The exposition registry: the project's metrics and the process metrics, all labelled."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import JOB_OUTCOMES
from app.web.metrics import exposition_registry


def test_every_sample_carries_the_application_label() -> None:
    JOB_OUTCOMES.labels("someJob", "COMPLETED").inc()
    text = generate_latest(exposition_registry("other-app")).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"batch_job_executions", "process_cpu_seconds", "python_info"} <= set(families)
    samples = [s for f in families.values() for s in f.samples]
    assert samples
    assert all(s.labels["application"] == "other-app" for s in samples)
    outcome = next(
        s
        for s in families["batch_job_executions"].samples
        if s.labels.get("spring_batch_job_name") == "someJob"
    )
    assert outcome.labels == {
        "spring_batch_job_name": "someJob",
        "status": "COMPLETED",
        "application": "other-app",
    }


def test_two_expositions_do_not_collide() -> None:
    """Each app gets its own process collectors: no 'Duplicated timeseries' error."""
    first = generate_latest(exposition_registry("a"))
    second = generate_latest(exposition_registry("b"))
    assert b'application="a"' in first and b'application="b"' in second

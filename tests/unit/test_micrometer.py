"""app.micrometer: Timers and LongTaskTimers as Micrometer's Prometheus registry writes them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app import micrometer
from app.micrometer import LongTaskTimerChild, Meter, TimerChild


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(micrometer.time, "monotonic", clock)
    return clock


def test_a_timer_is_a_summary_and_a_max_gauge(clock: Clock) -> None:
    registry = CollectorRegistry()
    timer = Meter(TimerChild, "spring_batch_job_seconds", "Jobs", ["name", "status"], registry)
    timer.labels("a", "COMPLETED").record(2.5)
    timer.labels("a", "COMPLETED").record(0.5)
    assert generate_latest(registry).decode() == (
        "# HELP spring_batch_job_seconds Jobs\n"
        "# TYPE spring_batch_job_seconds summary\n"
        'spring_batch_job_seconds_count{name="a",status="COMPLETED"} 2.0\n'
        'spring_batch_job_seconds_sum{name="a",status="COMPLETED"} 3.0\n'
        "# HELP spring_batch_job_seconds_max Jobs\n"
        "# TYPE spring_batch_job_seconds_max gauge\n"
        'spring_batch_job_seconds_max{name="a",status="COMPLETED"} 2.5\n'
    )


def test_items_timed_together_count_each_and_share_the_time(clock: Clock) -> None:
    child = TimerChild()
    child.record(2.0, 400)  # a chunk of 400 items read in 2 s
    child.record(0.001)  # the read that found the end
    assert child.figures() == (401, 2.001, 0.005)  # the max: the largest share


def test_the_max_is_that_of_about_the_last_minute(clock: Clock) -> None:
    child = TimerChild()
    child.record(3.0)
    clock.now += 30
    child.record(1.0)
    assert child.figures()[2] == 3.0
    clock.now += 25  # 55 s after the 3 s
    assert child.figures()[2] == 3.0
    clock.now += 10  # 65 s after the 3 s: cleared; 35 s after the 1 s
    assert child.figures()[2] == 1.0
    clock.now += 35
    assert child.figures() == (2, 4.0, 0.0)  # the count and sum stay
    clock.now += 3600  # long idle: rotations past a whole ring
    child.record(0.25)
    assert child.figures()[2] == 0.25


def test_a_long_task_timer_counts_the_tasks_running(clock: Clock) -> None:
    child = LongTaskTimerChild()
    assert child.figures() == (0, 0.0, 0.0)
    with child.running():
        clock.now += 10
        with child.running():
            clock.now += 5
            assert child.figures() == (2, 20.0, 15.0)
        assert child.figures() == (1, 15.0, 15.0)
    assert child.figures() == (0, 0.0, 0.0)
    with pytest.raises(RuntimeError), child.running():
        raise RuntimeError("the job failed")
    assert child.figures() == (0, 0.0, 0.0)

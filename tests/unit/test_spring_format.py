"""JOB_KEY and execution contexts against the vectors computed by Spring Batch 5.2's own
code and Java's ObjectOutputStream (shared CONTRACTS section 7)."""

from __future__ import annotations

import hashlib

import pytest

from app.model import JobParameter
from app.spring_format import (
    UNDECODABLE,
    decode_context,
    encode_context,
    instance_keys,
    job_key,
    legacy_job_key,
)

LOCAL_DATE, STRING, INTEGER, LONG = (
    "java.time.LocalDate",
    "java.lang.String",
    "java.lang.Integer",
    "java.lang.Long",
)
DRY_RUN_FALSE = JobParameter("dryRun", "java.lang.Boolean", "false", identifying=False)

EMPTY = (
    "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3RvckkACXRocmVzaG9sZHhwP0AA"
    "AAAAAAB3CAAAABAAAAAAeA=="
)
CHECKPOINT_5 = (
    "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3RvckkACXRocmVzaG9sZHhwP0AA"
    "AAAAAAx3CAAAABAAAAABdAAKY2hlY2twb2ludHNyAA5qYXZhLmxhbmcuTG9uZzuL5JDMjyPfAgABSgAFdmFsdWV4"
    "cgAQamF2YS5sYW5nLk51bWJlcoaslR0LlOCLAgAAeHAAAAAAAAAABXg="
)
CHECKPOINT_AND_SKIPPED = (
    "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3RvckkACXRocmVzaG9sZHhwP0AA"
    "AAAAAAx3CAAAABAAAAACdAAKY2hlY2twb2ludHNyAA5qYXZhLmxhbmcuTG9uZzuL5JDMjyPfAgABSgAFdmFsdWV4"
    "cgAQamF2YS5sYW5nLk51bWJlcoaslR0LlOCLAgAAeHAAAAEfcfsEy3QAB3NraXBwZWR0AAUxNyw0Mng="
)


@pytest.mark.parametrize(
    ("parameters", "key"),
    [
        ([JobParameter("runDate", LOCAL_DATE, "2025-10-31")], "85e04c2961a946d5d9c8b33fd48a65ab"),
        ([JobParameter("runDate", STRING, "2025-10-31")], "fc97f8f5bd1cc20f3e87e658905e8189"),
        (
            [
                JobParameter("targetHour", INTEGER, "10"),
                DRY_RUN_FALSE,
                JobParameter("runDate", LOCAL_DATE, "2025-10-25"),
            ],
            "3e8b9023c2d1676364fe03291bbdb688",
        ),
        (
            [
                JobParameter("runDate", LOCAL_DATE, "2025-10-25"),
                JobParameter("targetHour", LONG, "10"),
                DRY_RUN_FALSE,
            ],
            "294573cc895ff838927734fbac7a4c94",
        ),
        (
            [
                JobParameter("targetHour", INTEGER, "10"),
                JobParameter("runDate", LOCAL_DATE, "2025-10-25"),
                JobParameter("run.id", LONG, "1796250287064916"),
                JobParameter("dryRun", "java.lang.Boolean", "true"),
            ],
            "70014255eedb8989a6c5d43555d8de8c",
        ),
    ],
)
def test_job_key_is_spring_batch_5_2s(parameters: list[JobParameter], key: str) -> None:
    assert job_key(parameters) == key


def test_an_instance_is_looked_up_under_every_key_the_old_service_may_have_written() -> None:
    parameters = [
        JobParameter("runDate", LOCAL_DATE, "2025-10-25"),
        JobParameter("targetHour", INTEGER, "10"),
        DRY_RUN_FALSE,
    ]
    keys = instance_keys(parameters)
    assert keys[0] == "3e8b9023c2d1676364fe03291bbdb688"  # a new instance: this service's types
    assert "294573cc895ff838927734fbac7a4c94" in keys  # targetHour as JobParametersBuilder.addLong
    variants = {
        job_key(
            [JobParameter("runDate", date_type, "2025-10-25"), JobParameter("targetHour", t, "10")]
        )
        for date_type in (LOCAL_DATE, STRING)
        for t in (INTEGER, LONG, STRING)
    }
    assert set(keys[:-1]) == variants and len(keys) == 7
    assert (
        keys[-1]
        == legacy_job_key(parameters)
        == hashlib.md5(b"runDate=2025-10-25;targetHour=10;").hexdigest()
    )  # the key this service wrote before
    assert instance_keys([JobParameter("runDate", LOCAL_DATE, "2025-10-31")]) == [
        "85e04c2961a946d5d9c8b33fd48a65ab",
        "fc97f8f5bd1cc20f3e87e658905e8189",
        "906de330107f7227c6faf497c9812ee5",  # the key this service wrote before
    ]


@pytest.mark.parametrize(
    ("context", "stored"),
    [
        ({}, EMPTY),
        ({"checkpoint": 5}, CHECKPOINT_5),
        ({"checkpoint": 1234567890123, "skipped": "17,42"}, CHECKPOINT_AND_SKIPPED),
    ],
)
def test_contexts_are_written_byte_for_byte_as_java_writes_them(context: dict, stored: str) -> None:
    assert encode_context(context) == (stored, None)
    assert decode_context(stored, None) == context


def test_what_the_steps_and_jobs_keep_round_trips() -> None:
    context = {
        "checkpoint": 4242,
        "skipped": [17, 42],
        "messages": {"published": 3, "confirmed": 2},
        "dryRunOutput": "var/dry-run/노량진동 😀.jsonl",
    }
    short, serialized = encode_context(context)
    assert short.startswith("rO0AB") and serialized is None
    assert decode_context(short, serialized) == context
    # no checkpoint yet: Spring's ExecutionContext has no key for a null value
    assert encode_context({"checkpoint": None}) == (EMPTY, None)


def test_a_context_past_2500_characters_goes_whole_to_serialized_context() -> None:
    context = {"skipped": list(range(10**12, 10**12 + 300))}
    short, serialized = encode_context(context)
    assert serialized is not None and len(serialized) > 2500
    assert short == serialized[:2492] + " ..."
    assert decode_context(short, serialized) == context


def test_json_contexts_written_before_still_read() -> None:
    assert decode_context('{"checkpoint": 4242, "skipped": [1]}', None) == {
        "checkpoint": 4242,
        "skipped": [1],
    }
    assert decode_context("", None) == {} and decode_context(None, None) == {}


@pytest.mark.parametrize("stored", ["{not json", "rO0ABXNy", "not base64 at all!", "WzFd"])
def test_an_undecodable_context_says_so_and_has_no_checkpoint(stored: str) -> None:
    decoded = decode_context(stored, None)
    assert list(decoded) == [UNDECODABLE]
    assert decoded.get("checkpoint") is None

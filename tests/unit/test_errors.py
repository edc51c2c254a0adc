"""Classifying a fault never depends on import timing (issue 26): the edges translate
their libraries' exceptions where they arise, so `app.errors` needs no third-party module
(before: it read `sys.modules["aiohttp"]` while a thread imported aiohttp, and a CLI run
crashed on the partially initialized module)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from app.errors import AvailabilityError, DataError, NotAboutItems, is_availability_fault

LIBRARIES = ("aiohttp", "asyncmy", "aio_pika", "aiormq", "pamqp")


def test_the_fault_classes_import_no_client_library() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, app.errors; print(sorted({m.split('.')[0] for m in sys.modules}"
            f" & set({LIBRARIES!r})))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert loaded == "[]\n"


def test_classifying_while_aiohttp_is_half_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """What another thread's `import aiohttp` shows meanwhile: a module without its names."""
    monkeypatch.setitem(sys.modules, "aiohttp", types.ModuleType("aiohttp"))
    assert not is_availability_fault(ValueError("a bug"))
    assert not is_availability_fault(DataError("malformed"))
    assert is_availability_fault(AvailabilityError("down"))
    assert is_availability_fault(ConnectionResetError())
    assert is_availability_fault(TimeoutError())


def test_a_fault_not_about_the_items_is_availability_and_names_its_cause() -> None:
    cause = DataError("notification service /internal/v1/fcm-tokens/search: HTTP 401")
    cause.dependency = "notification service"
    fault = NotAboutItems(cause, "met alike by every part of a chunk")
    assert is_availability_fault(fault)
    assert fault.dependency == "notification service"
    assert str(fault) == (
        "DataError: notification service /internal/v1/fcm-tokens/search: HTTP 401"
        " (met alike by every part of a chunk)"
    )

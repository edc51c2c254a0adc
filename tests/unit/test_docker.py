"""The Dockerfile and docker-compose.yml, read (no Docker engine here, issue 28 item 7): the
fake peers' own health check, run for real against the fake peers; the image running the
installed package, its bytecode compiled as it is installed, from a folder with no source.
What still needs an engine to check is listed in docs/deployment.md, "Infrastructure"."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from app.devtools.fake_peers import run_fake_peers

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PORT = "8080"  # the image's SERVER_PORT, which its HEALTHCHECK probes


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def final_stage() -> list[str]:
    """The Dockerfile's instructions after its last FROM, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line.strip()]
    instructions = [line for line in lines if not line.lstrip().startswith("#")]
    last = max(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    return instructions[last + 1 :]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_fake_peers_have_a_health_check_of_their_own_on_their_ports() -> None:
    """Before: none, so the image's (on :8080, where nothing listens) made them unhealthy."""
    services = compose()["services"]
    peers = services["fake-peers"]
    ports = {option(peers["command"], f"--{name}-port") for name in ("store", "notification")}
    check = peers["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    probed = set(re.findall(r"\b(\d{4,5})\b", check[3]))
    assert probed == ports and IMAGE_PORT not in probed
    # The packaged sample data: the image holds no source folder to name a file in.
    assert "--data" not in peers["command"]
    assert services["batch"]["depends_on"]["fake-peers"] == {"condition": "service_healthy"}
    # No notification service runs there: the consumer's queue is declared as it would.
    assert "python -m app migrate --dev-schema --dev-queue" in services["batch"]["command"][-1]


async def test_the_fake_peers_health_check_passes_when_they_answer_and_only_then() -> None:
    peers = compose()["services"]["fake-peers"]
    code = peers["healthcheck"]["test"][3]
    listening = {option(peers["command"], f"--{n}-port") for n in ("store", "notification")}

    async def check(ports: dict[str, str]) -> int:
        probe = code
        for port, there in ports.items():
            probe = probe.replace(port, there)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", probe, stderr=subprocess.DEVNULL
        )
        return await process.wait()

    async with run_fake_peers() as fake:
        live = {fake.store_url.rsplit(":", 1)[1], fake.notification_url.rsplit(":", 1)[1]}
        assert await check(dict(zip(sorted(listening), sorted(live), strict=True))) == 0
    assert await check(dict(zip(sorted(listening), sorted(live), strict=True))) != 0


def test_the_image_runs_the_installed_package_compiled_from_a_folder_without_source() -> None:
    """Before: app/ was copied into the working directory, so `python -m app` imported that
    copy, and compiled it on every start (PYTHONDONTWRITEBYTECODE)."""
    stage = final_stage()
    workdirs = [line.split()[1] for line in stage if line.startswith("WORKDIR ")]
    home = workdirs[-1]
    assert home == "/srv/couponpop-batch"
    copied = [line.split()[-2:] for line in stage if line.startswith("COPY ")]
    # Nothing of app/ lands where the service runs; the stub of the dependencies' layer
    # goes elsewhere, and is removed.
    assert [source for source, target in copied if "app" in source] == ["app/__init__.py"]
    assert ["app/__init__.py", "app/__init__.py"] in copied
    assert not any(target.startswith(home) or target in (".", "./") for _, target in copied[2:])
    installs = [line for line in stage if line.startswith("RUN ") and "--no-deps" in line]
    assert len(installs) == 1
    assert "pip install --no-cache-dir --no-deps --compile /tmp/wheels/*.whl" in installs[0]
    assert "rm -rf /tmp/wheels /tmp/dependencies" in installs[0]
    assert stage[-1] == 'CMD ["sh", "-c", "python -m app migrate && exec python -m app serve"]'

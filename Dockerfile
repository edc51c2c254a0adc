# couponpop-batch: one asyncio process (admin API, metrics, schedules, jobs).
# Not built on the development machines (no Docker engine there): kept right by reading
# (tests/unit/test_docker.py reads it) and by the steps README "Infrastructure" names.

# The package as a wheel: the image installs it, and keeps no source folder.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVER_PORT=8080

# Dependencies first, for the layer cache: resolved from pyproject.toml with a stub of the
# package, which is then removed. asyncmy ships manylinux wheels, no compiler needed.
WORKDIR /tmp/dependencies
COPY pyproject.toml README.md ./
COPY app/__init__.py app/__init__.py
RUN pip install --no-cache-dir . && pip uninstall -y couponpop-batch

# The package, installed from its wheel with its bytecode compiled now (pip --compile;
# PYTHONDONTWRITEBYTECODE only stops the interpreter from writing .pyc at import, so
# nothing is compiled at start-up). The defaults (app/defaults.toml), the migrations and
# the fake peers' sample data ship inside it. The working directory holds no source:
# `python -m app` imports the installed copy.
WORKDIR /srv/couponpop-batch
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps --compile /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/dependencies \
    && useradd --system --uid 10001 batch \
    && mkdir -p var && chown batch var
USER batch

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"SERVER_PORT\"]}/actuator/health', timeout=2)"
# SIGTERM stops launches, lets running steps commit their chunks in flight (STOPPED,
# restartable), closes the pools and exits 0 within SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
# `migrate` issues DDL only for a pending migration: run as the service's user (SELECT,
# INSERT, UPDATE, DELETE) it checks that the schema is up to date, and a pending migration
# stops the start (exit 2) until the privileged migration step has run (README).
CMD ["sh", "-c", "python -m app migrate && exec python -m app serve"]

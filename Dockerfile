# couponpop-batch: one asyncio process (admin API, metrics, schedules, jobs).
# Not built on the development machines (no Docker engine there): kept right by reading.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVER_PORT=8080

WORKDIR /srv/couponpop-batch
# Dependencies first, for the layer cache: asyncmy ships manylinux wheels, no compiler needed.
COPY pyproject.toml README.md ./
COPY app/__init__.py app/__init__.py
RUN pip install --no-cache-dir . && pip uninstall -y couponpop-batch
COPY app app
# The defaults (app/defaults.toml) and the migrations ship inside the package.
RUN pip install --no-cache-dir --no-deps . \
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

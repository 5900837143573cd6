# syntax=docker/dockerfile:1
# Multi-stage: the build stage installs the runtime requirements into a venv with the same two pip
# commands as `make run`; the runtime stage is slim, has no torch, runs as a non-root user and can
# run on a read-only root filesystem.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt pyproject.toml README.md ./
RUN pip install --quiet -r requirements.txt
COPY app ./app
COPY export ./export
RUN pip install --quiet --no-deps .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOCSVC_MODELS_DIR=/srv/models \
    LOCSVC_OPENVINO_CACHE_DIR=/var/cache/locsvc
# OpenVINO's compiled models (Intel CPUs): a volume there keeps them across restarts (docker-compose.yml); on a
# read-only root filesystem with nothing mounted there, the service starts without the cache and says so.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin locsvc \
    && install -d -o 10001 -g 10001 -m 0700 /var/cache/locsvc
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY --chown=root:root models ./models
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"]
# --limit-concurrency: connections and tasks at once (beyond: 503), above LOCSVC_MAX_CONCURRENCY + LOCSVC_MAX_QUEUE
# (10 by default) to leave room for health checks and metrics.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "30", "--no-server-header", "--limit-concurrency", "32"]

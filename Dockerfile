# syntax=docker/dockerfile:1
# The streamrec image: the `streamrec` command with the core dependencies and the HTTP API
# (`serve` extra; no `embedded` extra: Kafka and Redis run as their own services, see docker-compose.yml).
#
#   docker build -t streamrec .
#   docker run --rm -e STREAMREC_BROKER_URL=kafka://broker:9092 -e STREAMREC_REDIS_URL=redis://redis:6379/0 \
#       -e STREAMREC_REDIS_PASSWORD streamrec            # `streamrec worker`
#   docker run --rm ... streamrec produce --synthetic 10000
#
# Every setting comes from STREAMREC_* environment variables (`docker run --rm streamrec settings`).
# numpy, orjson, aiokafka and faust-streaming install from wheels: no compiler needed.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtualenv ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/streamrec
WORKDIR /src
COPY pyproject.toml ./
COPY models/ models/
COPY streams/ streams/
RUN /opt/streamrec/bin/pip install '.[serve]' \
 && /opt/streamrec/bin/streamrec --help > /dev/null

# --- runtime: the virtualenv only, run by an unprivileged user -----------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/streamrec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 streamrec \
 && useradd --system --uid 10001 --gid streamrec --home-dir /var/lib/streamrec --create-home \
        --shell /usr/sbin/nologin streamrec
COPY --from=build /opt/streamrec /opt/streamrec
# Faust creates its data directory (<app_id>-data) in the working directory: it must be writable.
WORKDIR /var/lib/streamrec
USER 10001:10001
ENTRYPOINT ["streamrec"]
CMD ["worker"]

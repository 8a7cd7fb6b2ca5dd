# syntax=docker/dockerfile:1
#
# hookrelay's container image: the daemon in a virtualenv on Debian's slim Python, running as
# an unprivileged user (10001:10001, the UID/GID deploy/kubernetes/base/deployment.yaml runs
# it as) with nothing written at run time, so a read-only root filesystem works.
#
#   docker build -t hookrelay:0.1.0 .
#   docker run --rm -p 9464:9464 -v /path/to/your/config:/etc/hookrelay:ro hookrelay:0.1.0
#
# (with admin.listen: 0.0.0.0:9464 in that hookrelay.yaml, for /metrics and the probes).
#
# The build context is only pyproject.toml, README.md and daemon/ (.dockerignore): no
# configuration, keys or tests go into the image. Configuration is mounted at /etc/hookrelay;
# signing keys come from the environment or mounted files at run time.

# The base image, pinned by tag and by the digest of its multi-architecture index (linux/amd64
# and linux/arm64 among others), so that every build starts from the same bytes. To update:
# docker buildx imagetools inspect python:3.11-slim-bookworm, then take the tag and digest.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ── build: the hookrelay wheel ─────────────────────────────────────────────────────────────────
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon/ daemon/
# Only hookrelay's own wheel here; its dependencies are resolved in the runtime stage, so
# the wheel is built exactly as `pip wheel . --no-deps` builds it on a developer's machine.
RUN python -m pip wheel --no-deps --wheel-dir /dist .

# ── runtime ────────────────────────────────────────────────────────────────────────────────────
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="hookrelay" \
      org.opencontainers.image.description="Kafka to Logto-compatible signed webhook fan-out daemon" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/hookrelay/bin:$PATH \
    HOOKRELAY_CONFIG=/etc/hookrelay/hookrelay.yaml

RUN groupadd --system --gid 10001 hookrelay \
 && useradd --system --uid 10001 --gid hookrelay --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin hookrelay

# The wheel is bind-mounted from the build stage, so it never becomes a layer of this image.
# uvloop (the "fast" extra) is the event loop hookrelay uses when it is installed; the
# "tracing" extra lets tracing.enabled work without another image. pip compiles the bytecode
# now, since the running container cannot write it.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m venv /opt/hookrelay \
 && /opt/hookrelay/bin/pip install "$(echo /dist/hookrelay-*.whl)[fast,tracing]" \
 && /opt/hookrelay/bin/hookrelay --version

USER 10001:10001
WORKDIR /etc/hookrelay

# admin.listen: /metrics, /healthz, /readyz (bind it to 0.0.0.0:9464 in a container).
EXPOSE 9464
# hookrelay drains on SIGTERM (shutdown.grace_s) and exits by shutdown.hard_deadline_s.
STOPSIGNAL SIGTERM

ENTRYPOINT ["hookrelay"]
CMD ["run", "-c", "/etc/hookrelay/hookrelay.yaml"]

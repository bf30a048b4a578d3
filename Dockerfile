# pipeserve server image (README, "Docker"). CI builds the CPU variant and serves a model from
# it (scripts/image_check.sh).
#
# GPU, the default: torch==2.13.0's wheel on PyPI brings the CUDA 13.0 libraries itself
# (cuda-toolkit 13.0, nvidia-cudnn-cu13), so the base needs no cuDNN or cuBLAS of its own,
# only to be CUDA 13.0 too: its NVIDIA_REQUIRE_CUDA tells the NVIDIA container runtime to refuse
# a driver too old for it. Changing TORCH_SPEC to another CUDA major means changing this base.
# CPU: --build-arg BASE_IMAGE=python:3.11-slim-bookworm
#      --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
FROM ${BASE_IMAGE}

ARG TORCH_SPEC=torch==2.13.0
# Where torch comes from. Empty: pip's own index, where a plain torch on Linux is the CUDA
# build (several GB of nvidia-* wheels). PyTorch's CPU index serves the CPU build instead.
ARG TORCH_INDEX_URL=
# pipeserve's extras. A CPU image serves faster with server,openvino (--backend auto, the
# default, then runs OpenVINO; about 400 MB more): CI's check keeps the smaller image.
ARG EXTRAS=server
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
# Same steps as the README's install: torch first (the build for this base), then the extras.
# hadolint ignore=DL3013
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC}" \
    && pip install ".[${EXTRAS}]"

USER 10001
# /models is the Hugging Face cache (HF_HOME) and where checkpoints are mounted. It is no
# VOLUME: an image volume would hide a bind mount made there by some runtimes (buildah run) and
# leave an anonymous volume behind every container of the others.
EXPOSE 50051
# Told nothing: the probe reads the running server's own settings (port, TLS, token).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-m", "pipeserve.server.healthcheck"]
ENTRYPOINT ["pipeserve", "serve"]

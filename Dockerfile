# syntax=docker/dockerfile:1.7
#
# seco-deploy container images: the `seco` command line, two targets.
#
#   cpu   python slim base, CPU PyTorch (from the PyTorch CPU wheel index), ONNX Runtime.
#         docker build --target cpu -t seco-deploy:cpu .
#   gpu   NVIDIA CUDA 13.0 + cuDNN 9 base (the CUDA and cuDNN majors of the pinned PyTorch
#         build), CUDA PyTorch, onnxruntime-gpu and TensorRT (the project's `gpu` extra).
#         docker build --target gpu -t seco-deploy:gpu .
#
# Each target is multi-stage: a builder stage with compilers turns the project and every
# dependency into wheels under /wheels; the runtime stage installs only those wheels (no
# index, no compilers) into /opt/venv and runs as the unprivileged user `seco` (uid 10001).
# Needs BuildKit (the default builder of Docker 23+) for RUN --mount.
#
# Mount points (nothing is baked in: no data, no models, no credentials):
#   /data     inputs (images, datasets); read-only is enough
#   /models   checkpoints (.pt), model.onnx, model.engine
#   /out      everything seco writes; the working directory
# docs/deploy.md has the build, run and scale-out commands.

# The torch line. Keep it equal to the Makefile's TORCH (tests/test_deploy_docker.py checks).
ARG TORCH="torch==2.14.1 torchvision==0.29.1"
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# CUDA 13.0 and cuDNN 9: what torch 2.14.1 (cu130), onnxruntime-gpu 1.31 and TensorRT 11 are built for.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04


# ---------------------------------------------------------------------------------------------
# gpu: base (Python, no compilers) and builder
# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# DL3008: apt packages are not pinned to versions; the base image tag fixes the Ubuntu release
# and Ubuntu drops superseded package versions from its archive, so exact pins break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

FROM gpu-base AS gpu-builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# DL3008: as above, the base image tag fixes the release; compilers build sdists (pydensecrf2).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3-dev \
 && rm -rf /var/lib/apt/lists/*
ARG TORCH
# The CUDA 13.0 wheels of torch; pinned versions of the gpu extra's packages built for
# CUDA 13 / cuDNN 9 (each satisfies pyproject.toml's `gpu` extra; the tests check).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG GPU_PINS="onnxruntime-gpu==1.31.1 tensorrt==11.4.0.106"
ARG GPU_EXTRAS=gpu,crf
WORKDIR /src
COPY pyproject.toml README.md ./
COPY seco_deploy ./seco_deploy
RUN python3 -m venv /opt/build \
 && echo "${TORCH}" | tr ' ' '\n' > /tmp/torch.txt \
 && echo "${TORCH} ${GPU_PINS}" | tr ' ' '\n' > /tmp/constraints.txt \
 && /opt/build/bin/pip wheel --wheel-dir /wheels --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
 && /opt/build/bin/pip wheel --wheel-dir /wheels --find-links /wheels -c /tmp/constraints.txt ".[${GPU_EXTRAS}]"


# ---------------------------------------------------------------------------------------------
# gpu: runtime
# ---------------------------------------------------------------------------------------------
FROM gpu-base AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG GPU_EXTRAS=gpu,crf
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH}
# seco-deploy depends on onnxruntime (CPU); the gpu extra adds onnxruntime-gpu, and both
# install the same `onnxruntime` module. Drop the CPU one and reinstall the GPU one over it,
# then check that the CUDA provider is compiled in and the `seco` entry point runs.
# DL3013: the project and its dependencies come only from the wheels built above (--no-index),
# pinned by the builder's constraints; there is no index to float against.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=gpu-builder,source=/wheels,target=/wheels \
    python3 -m venv /opt/venv \
 && pip install --no-index --find-links /wheels "seco-deploy[${GPU_EXTRAS}]" \
 && pip uninstall -y onnxruntime \
 && pip install --no-index --find-links /wheels --no-deps --force-reinstall onnxruntime-gpu \
 && python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' in ort.get_available_providers()" \
 && seco --version
RUN useradd --uid 10001 --user-group --create-home seco \
 && mkdir -p /data /models /out \
 && chown seco:seco /out
LABEL org.opencontainers.image.title="seco-deploy (gpu)" \
      org.opencontainers.image.description="SeCo weakly supervised segmentation: train, export, predict (CUDA, ONNX Runtime GPU, TensorRT)" \
      org.opencontainers.image.licenses="MIT"
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /out
VOLUME ["/data", "/models", "/out"]
ENTRYPOINT ["seco"]
CMD ["--help"]


# ---------------------------------------------------------------------------------------------
# cpu: builder
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# DL3008: the base image tag fixes the Debian release; exact pins break when Debian's
# security archive supersedes a version. Compilers build sdists (pydensecrf2).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
ARG TORCH
# The CPU-only torch wheels (no CUDA libraries): its +cpu local version sorts above PyPI's
# build of the same version, so pip takes it. Point it at a mirror with --build-arg.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG CPU_EXTRAS=crf
WORKDIR /src
COPY pyproject.toml README.md ./
COPY seco_deploy ./seco_deploy
RUN echo "${TORCH}" | tr ' ' '\n' > /tmp/torch.txt \
 && python -m pip wheel --wheel-dir /wheels --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
 && python -m pip wheel --wheel-dir /wheels --find-links /wheels -c /tmp/torch.txt ".[${CPU_EXTRAS}]"


# ---------------------------------------------------------------------------------------------
# cpu: runtime (the last stage, so a plain `docker build .` gives the CPU image)
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG CPU_EXTRAS=crf
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH}
# DL3013: the project and its dependencies come only from the wheels built above (--no-index),
# pinned by the builder's constraints; there is no index to float against.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=cpu-builder,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && pip install --no-index --find-links /wheels "seco-deploy[${CPU_EXTRAS}]" \
 && seco --version
RUN useradd --uid 10001 --user-group --create-home seco \
 && mkdir -p /data /models /out \
 && chown seco:seco /out
LABEL org.opencontainers.image.title="seco-deploy (cpu)" \
      org.opencontainers.image.description="SeCo weakly supervised segmentation: train, export, predict (CPU, ONNX Runtime)" \
      org.opencontainers.image.licenses="MIT"
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /out
VOLUME ["/data", "/models", "/out"]
ENTRYPOINT ["seco"]
CMD ["--help"]

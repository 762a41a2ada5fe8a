# seco-deploy container images: the `seco` command line, two targets on one Debian base.
#
#   cpu   PyTorch, ONNX Runtime (CPU).
#   gpu   the same with onnxruntime-gpu (CUDA provider) and TensorRT where its wheels could be
#         had. PyTorch's CUDA wheels bring the CUDA and cuDNN libraries themselves (the nvidia-*
#         wheels), so no CUDA base image is needed: only the host's NVIDIA driver (--gpus, via the
#         NVIDIA Container Toolkit).
#
# Build with `make image` / `make image-gpu` (docker/build_image.py), not a bare `docker build`:
# every Python package comes from a wheelhouse made beforehand with `pip download` and passed in
# as the image WHEELS_IMAGE, so the build reaches no package index (as on an air-gapped site).
# BASE_IMAGE and BUILD_BASE_IMAGE are Debian bookworm: debian:bookworm-slim from Docker Hub, or
# made locally with debootstrap (`make image IMAGE_BASE=local`: no container registry at all),
# where the packages below are already installed and the apt step does nothing.
#
# Stages: `builder` installs the pinned wheelhouse into /opt/venv (compiling its sdists, e.g.
# pydensecrf2); `project` builds seco-deploy's own wheel from the source, so the image holds what
# the wheel holds (package data included); `runtime` has no compilers: it copies /opt/venv and
# installs that wheel; `cpu` and `gpu` check the result and set the user, entry point and labels.
# No RUN --mount and no `# syntax` line (which would pull a frontend image): the legacy builder and
# BuildKit both build this file. The legacy builder builds every stage before the target, so `gpu`
# comes last and the `cpu` checks pass on a gpu venv too.
#
# Mount points (nothing is baked in: no data, no models, no credentials):
#   /data     inputs (images, datasets); read-only is enough
#   /models   checkpoints (.pt), model.onnx, model.engine
#   /out      everything seco writes; the working directory
# docs/deploy.md has the build, run and scale-out commands.

ARG BASE_IMAGE=debian:bookworm-slim
ARG BUILD_BASE_IMAGE=debian:bookworm-slim
ARG WHEELS_IMAGE=seco-deploy-wheels:cpu


# ---------------------------------------------------------------------------------------------
# The wheelhouse (FROM scratch: /wheels, /wheels/requirements.txt, /wheels/build-deps)
# ---------------------------------------------------------------------------------------------
FROM ${WHEELS_IMAGE} AS wheels


# ---------------------------------------------------------------------------------------------
# builder: the pinned dependencies, installed into /opt/venv from the wheelhouse only
# ---------------------------------------------------------------------------------------------
FROM ${BUILD_BASE_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# Python, venv and the compilers for sdists; docker/build_image.py reads this list for --base local.
ARG BUILD_PACKAGES="python3 python3-venv python3-dev build-essential"
# DL3008: not pinned: the base fixes the Debian release, and Debian drops superseded versions
# from its archive, so exact pins break rebuilds. Nothing is fetched when the base has them all.
# hadolint ignore=DL3008
RUN set --; \
    for package in ${BUILD_PACKAGES}; do \
        dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed \
            || set -- "$@" "$package"; \
    done; \
    if [ "$#" -gt 0 ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends "$@" \
        && rm -rf /var/lib/apt/lists/*; \
    fi
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY --from=wheels /wheels /wheels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels --find-links /wheels/build-deps \
        -r /wheels/requirements.txt


# ---------------------------------------------------------------------------------------------
# project: seco-deploy's wheel, built from the source (the only stage that reads the context)
# ---------------------------------------------------------------------------------------------
FROM builder AS project
WORKDIR /src
COPY pyproject.toml README.md ./
COPY seco_deploy ./seco_deploy
RUN /opt/venv/bin/pip wheel --no-index --find-links /wheels/build-deps --no-deps --wheel-dir /dist /src


# ---------------------------------------------------------------------------------------------
# runtime: Python without compilers, /opt/venv and the project
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# Python and tini (an init as PID 1: passes SIGTERM from `docker stop` or Kubernetes on to seco).
ARG RUNTIME_PACKAGES="python3 tini"
# DL3008: as in the builder: the base fixes the release; nothing is fetched when it has them all.
# hadolint ignore=DL3008
RUN set --; \
    for package in ${RUNTIME_PACKAGES}; do \
        dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed \
            || set -- "$@" "$package"; \
    done; \
    if [ "$#" -gt 0 ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends "$@" \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN useradd --uid 10001 --user-group --create-home seco \
 && mkdir -p /data /models /out \
 && chown seco:seco /out
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH}
COPY --from=builder /opt/venv /opt/venv
# The project's wheel is small; copying it in (rather than the whole venv again) keeps a source
# change from re-copying the dependencies' layer.
COPY --from=project /dist /tmp/dist
RUN pip install --no-index --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/dist


# ---------------------------------------------------------------------------------------------
# cpu
# ---------------------------------------------------------------------------------------------
FROM runtime AS cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The console script runs and every runtime module imports (the CRF one where its extra is in).
RUN seco --version \
 && python -c "import cv2, onnx, onnxruntime, onnxscript, timm, torch, torchvision; \
print('torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
 && python -c "import importlib.util as u; u.find_spec('pydensecrf') is None or __import__('pydensecrf.densecrf')"
ARG INPUTS=""
LABEL org.opencontainers.image.title="seco-deploy (cpu)" \
      org.opencontainers.image.description="SeCo weakly supervised segmentation: train, export, predict (CPU, ONNX Runtime)" \
      org.opencontainers.image.licenses="MIT" \
      org.seco-deploy.tensorrt="absent: the cpu image has no TensorRT (use the gpu image)" \
      org.seco-deploy.inputs="${INPUTS}"
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /out
VOLUME ["/data", "/models", "/out"]
# -s: tini stays a subreaper when it is not PID 1 (docker run --init, apptainer run).
ENTRYPOINT ["tini", "-s", "--", "seco"]
CMD ["--help"]


# ---------------------------------------------------------------------------------------------
# gpu (last: the legacy builder builds every stage before the target)
# ---------------------------------------------------------------------------------------------
FROM runtime AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The nvidia-* wheels' libraries, where any process finds them (onnxruntime-gpu's CUDA provider
# links libcudart, cuBLAS, cuFFT, cuRAND and cuDNN; torch finds them on its own). Then check: the
# CUDA provider is compiled in and every library it links resolves, but the driver's libcuda.so.1,
# which the host provides at run time.
RUN find /opt/venv/lib -type d -path '*/site-packages/nvidia/*/lib' | sort > /etc/ld.so.conf.d/seco-nvidia.conf \
 && ldconfig \
 && seco --version \
 && python -c "import onnxruntime as ort; p = ort.get_available_providers(); \
assert 'CUDAExecutionProvider' in p, f'onnxruntime has no CUDA provider ({p}): build with the gpu wheelhouse'; \
print('onnxruntime', ort.__version__, p)" \
 && provider="$(python -c "import onnxruntime, pathlib; \
print(next(pathlib.Path(onnxruntime.__file__).parent.glob('capi/libonnxruntime_providers_cuda.so')))")" \
 && missing="$(ldd "$provider" | grep 'not found' | grep -v 'libcuda\.so' || true)" \
 && { [ -z "$missing" ] || { echo "unresolved libraries of $provider: $missing" >&2; exit 1; }; } \
 && python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
ARG INPUTS=""
# What docker/build_image.py found for TensorRT: its pin, or why it is absent.
ARG TENSORRT_NOTE="not requested"
LABEL org.opencontainers.image.title="seco-deploy (gpu)" \
      org.opencontainers.image.description="SeCo weakly supervised segmentation: train, export, predict (CUDA, ONNX Runtime GPU, TensorRT where present)" \
      org.opencontainers.image.licenses="MIT" \
      org.seco-deploy.tensorrt="${TENSORRT_NOTE}" \
      org.seco-deploy.inputs="${INPUTS}"
USER 10001:10001
WORKDIR /out
VOLUME ["/data", "/models", "/out"]
ENTRYPOINT ["tini", "-s", "--", "seco"]
CMD ["--help"]

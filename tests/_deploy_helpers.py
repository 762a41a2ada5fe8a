"""Helpers for the deployment tests: read the Dockerfile, match `.dockerignore` patterns the way
Docker does, load docker/build_image.py, run containers, check argument lists against the live
`seco` Typer commands, and run the scale-out scripts in their dry-run mode."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import typer

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY = REPO / "deploy"
BUILD_SCRIPT = REPO / "docker" / "build_image.py"


# ----------------------------------------------------------------------------------------------
# Dockerfile
# ----------------------------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ARG, ...
    args: str  # the rest of the instruction, continuation lines joined with spaces
    line: int  # 1-based line of the keyword


@dataclass
class Stage:
    name: str
    base: str  # the FROM image (may be a ${VAR} or another stage's name)
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def arg_defaults(self) -> dict[str, str]:
        return parse_arg_defaults(self.all("ARG"))


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]


def parse_arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """`ARG NAME=value` (value may be double-quoted) -> {NAME: value}; `ARG NAME` -> {NAME: ""}."""
    out: dict[str, str] = {}
    for ins in instructions:
        name, _, value = ins.args.partition("=")
        out[name.strip()] = shlex.split(value)[0] if value.strip() else ""
    return out


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """Split a Dockerfile into the ARGs before the first FROM and named stages. Comment lines are
    dropped (also inside continued instructions, as Docker does); `\\` continues a line."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            text = " ".join(pending)
            keyword, _, rest = text.partition(" ")
            instructions.append(Instruction(keyword.upper(), rest.strip(), start))
            pending = []
    global_args: list[Instruction] = []
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for ins in instructions:
        if ins.keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", ins.args, flags=re.IGNORECASE)
            assert match, f"cannot read FROM at line {ins.line}: {ins.args}"
            name = match.group(2) or f"stage{len(stages)}"
            current = Stage(name=name, base=match.group(1))
            stages[name] = current
        elif current is None:
            assert ins.keyword == "ARG", f"only ARG may come before the first FROM (line {ins.line})"
            global_args.append(ins)
        else:
            current.instructions.append(ins)
    return Dockerfile(parse_arg_defaults(global_args), stages)


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT/CMD/VOLUME/SHELL; fails on the shell form."""
    value = json.loads(instruction.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


# ----------------------------------------------------------------------------------------------
# .dockerignore
# ----------------------------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus `**`) as a regex over '/' paths."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # `**/` matches zero or more whole folders
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "!" + body[1:]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out)


def read_dockerignore(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    """The rules of a .dockerignore file (see `parse_dockerignore`)."""
    return parse_dockerignore(path.read_text(encoding="utf-8"))


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """[(is_exception, regex)] in file order; comments and blank lines dropped, paths cleaned."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if exception else line).lstrip("/")
        rules.append((exception, _pattern_regex(pattern)))
    return rules


def is_ignored(relative_path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides;
    a `!` pattern lets the path back in."""
    parts = relative_path.strip("/").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    ignored = False
    for exception, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not exception
    return ignored


# ----------------------------------------------------------------------------------------------
# docker/build_image.py and a Docker engine
# ----------------------------------------------------------------------------------------------
def build_script() -> ModuleType:
    """docker/build_image.py as a module (it is a script, not part of the package)."""
    name = "seco_build_image"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BUILD_SCRIPT)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules[name]


def docker_unavailable() -> str | None:
    """Why no container can be built or run here (no docker client, or no daemon it can reach), or None."""
    binary = shutil.which("docker")
    if binary is None:
        return "docker is not installed (Debian: apt-get install docker.io)"
    done = subprocess.run([binary, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return f"no Docker daemon answers `docker info` ({(done.stderr or done.stdout).strip()[:200]})"
    return None


def docker(*args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess[str]:
    """`docker ARGS...`, output captured as text."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False

    def flag(self) -> str:
        return f"type=bind,source={self.source},target={self.target}" + (",readonly" if self.read_only else "")


def container_args(image: str, argv: Sequence[str], mounts: Sequence[Mount] = (), *, name: str | None = None,
                   detach: bool = False, entrypoint: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """`docker run` arguments for one seco command in the hardened setting every test uses: no
    network, a read-only root filesystem (seco may write only to its mounts and /tmp), the image's
    own user, passive OpenMP waits (a shared CPU)."""
    args = ["run", "--network", "none", "--read-only", "--tmpfs", "/tmp", "-e", "OMP_WAIT_POLICY=PASSIVE"]
    args += ["--name", name] if name else ["--rm"]
    args += ["--detach"] if detach else []
    args += ["--entrypoint", entrypoint] if entrypoint else []
    for mount in mounts:
        args += ["--mount", mount.flag()]
    return [*args, *extra, image, *argv]


# ----------------------------------------------------------------------------------------------
# The live CLI
# ----------------------------------------------------------------------------------------------
def seco_command(name: str) -> Any:
    """The command object behind `seco NAME`, built from the Typer app as `seco` runs it (Typer's
    click-style command: `.params`, `.make_context`)."""
    from seco_deploy.cli import app

    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    assert name in commands, f"`seco {name}` is not a command of the app ({sorted(commands)})"
    return commands[name]


def check_args(command: Any, argv: list[str]) -> dict[str, list[str | None]]:
    """Check `argv` as the arguments of `command` against the parameters it declares, then parse it
    with the command's own parser. Every `--option` must be one of its options, a value-taking
    option must have a value, the positional arguments must all be given and the required options
    present; the real parse then converts the values with their declared types (a path that does
    not exist on this machine is accepted). Returns {param name: [raw values]} (None for flags)."""
    options: dict[str, Any] = {}
    arguments = []
    for param in command.params:
        if param.param_type_name == "option":
            for flag in [*param.opts, *param.secondary_opts]:
                options[flag] = param
        elif param.param_type_name == "argument":
            arguments.append(param)
    seen: dict[str, list[str | None]] = {}
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("-") and token != "-":
            flag, has_inline, inline = token.partition("=")
            assert flag in options, f"`{flag}` is not an option of `seco {command.name}`; it has {sorted(options)}"
            param = options[flag]
            value: str | None
            if param.is_flag or param.count:
                assert not has_inline, f"`{flag}` is a flag and takes no value"
                value = None
            elif has_inline:
                value = inline
            else:
                i += 1
                assert i < len(argv), f"`{flag}` needs a value"
                value = argv[i]
            seen.setdefault(param.name or flag, []).append(value)
        else:
            positionals.append(token)
        i += 1
    names = [a.name for a in arguments]
    assert len(positionals) == len(arguments), f"`seco {command.name}` takes {names} positionally, got {positionals}"
    for param in command.params:
        if param.param_type_name == "option" and param.required:
            assert param.name in seen, f"`seco {command.name}` requires {param.opts[0]}"
    for argument, value in zip(arguments, positionals, strict=True):
        seen[argument.name or "argument"] = [value]
    try:
        command.make_context(command.name, list(argv))
    except Exception as error:  # the command's own usage error, e.g. `--batch eight`
        if "does not exist" not in str(error):
            raise AssertionError(f"`seco {command.name}` rejects {argv}: {error}") from error
    return seen


# ----------------------------------------------------------------------------------------------
# The scale-out scripts
# ----------------------------------------------------------------------------------------------
def dry_run(script: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run a deploy script with SECO_DRY_RUN=1 in a clean environment (PATH, HOME and `env` only)."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    clean["SECO_DRY_RUN"] = "1"
    return subprocess.run(
        ["bash", str(script), *args], env=clean, capture_output=True, text=True, timeout=30, check=False
    )


def dry_run_argv(script: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> list[str]:
    """The command a deploy script would run, as an argv list (its dry-run output, shell-split)."""
    done = dry_run(script, env, args)
    assert done.returncode == 0, f"{script.name} failed ({done.returncode}): {done.stderr}"
    return shlex.split(done.stdout)

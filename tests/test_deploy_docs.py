"""docs/deploy.md and the README's Deploy section against what they describe: every recipe file
is documented and every documented file exists, the build-argument table matches the Dockerfile,
and every `docker run IMAGE COMMAND ...` example parses with the live `seco` command."""

from __future__ import annotations

import re
import shlex

import pytest
from _deploy_helpers import DEPLOY, REPO, check_args, read_dockerfile, seco_command

DOCS = REPO / "docs" / "deploy.md"


def _shell_lines(markdown: str) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL):
        pending = ""
        for raw in block.splitlines():
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            lines.append(pending + line)
            pending = ""
    return lines


@pytest.fixture(scope="module")
def docs() -> str:
    return DOCS.read_text(encoding="utf-8")


def test_every_recipe_is_documented_and_every_documented_file_exists(docs: str) -> None:
    recipes = {p.relative_to(REPO).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    mentioned = set(re.findall(r"(?<![\w/.-])deploy/[\w./-]+\w", docs))
    assert recipes <= mentioned, f"not in docs/deploy.md: {sorted(recipes - mentioned)}"
    assert mentioned <= recipes, f"docs/deploy.md names missing files: {sorted(mentioned - recipes)}"


def test_build_targets_and_arguments_match_the_dockerfile(docs: str) -> None:
    dockerfile = read_dockerfile()
    # build targets as `docker build` uses them (`seco export --target` is another option)
    targets = set(re.findall(r"docker (?:build|buildx build)[^\n]*?--target ([\w.-]+)", docs))
    assert {"cpu", "gpu"} <= targets and targets <= set(dockerfile.stages)
    defaults = dict(dockerfile.global_args)
    for stage in dockerfile.stages.values():
        for name, value in stage.arg_defaults().items():
            if value:
                defaults.setdefault(name, value)
    rows = re.findall(r"^\| `([A-Z_]+)` \| (.+?) \| .+ \|$", docs, flags=re.MULTILINE)
    documented = {name for name, _ in rows}
    used = {name for name in defaults if name != "DEBIAN_FRONTEND"}
    assert used <= documented, f"build arguments not documented: {sorted(used - documented)}"
    for name, cell in rows:
        if name in defaults and cell.count("`") == 2:  # a single default value
            assert cell.strip("` ") == defaults[name], f"docs say {name}={cell}, the Dockerfile {defaults[name]}"


def _readme_deploy_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Deploy\n(.*?)(?=^## |\Z)", readme, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no `## Deploy` section"
    return match.group(1)


@pytest.mark.parametrize(("source", "least"), [("docs", 6), ("readme", 2)])
def test_docker_run_examples_parse_with_the_live_cli(docs: str, source: str, least: int) -> None:
    text = docs if source == "docs" else _readme_deploy_section()
    runs = [shlex.split(line) for line in _shell_lines(text) if line.startswith("docker run ")]
    images = re.compile(r"^(?:[\w.-]+/)*seco-deploy:(\w+)$")
    checked = 0
    for argv in runs:
        (position,) = [i for i, token in enumerate(argv) if images.match(token)]
        rest = argv[position + 1 :]
        if "--entrypoint" in argv[:position]:
            continue  # runs another program of the image (bash, torchrun)
        assert images.match(argv[position]).group(1) in read_dockerfile().stages
        assert rest, f"no seco command in: {shlex.join(argv)}"
        check_args(seco_command(rest[0]), rest[1:])
        checked += 1
    assert checked >= least, f"{source}: only {checked} `docker run` examples checked"


def test_readme_has_a_deploy_section_pointing_here() -> None:
    section = _readme_deploy_section()
    assert "docs/deploy.md" in section and "--gpus all" in section
    for word in ("/data", "/models", "/out", "deploy/k8s", "deploy/slurm", "deploy/torchrun"):
        assert word in section, f"the README's Deploy section does not mention {word}"

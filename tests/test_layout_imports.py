"""The house's import rules, read from the code: lower layers never import higher ones, and
``train/``, ``infer/`` and ``export/`` never import each other (README, "Layout").

Every ``import`` and ``from ... import`` of a ``seco_deploy`` module counts, at module level or inside
a function (lazy imports too), so a rule cannot be dodged by importing late.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "seco_deploy"

# What each part of the package may import (besides itself). "root" is seco_deploy/__init__.py
# (the version). One row per part; the layers read from the top: a part imports only rows above it.
ALLOWED: dict[str, set[str]] = {
    "root": set(),
    "config": set(),
    "console": set(),
    "losses": set(),
    "assets": set(),
    "data": {"root", "config"},
    "model": {"root", "config", "losses", "assets"},
    "cam": {"model"},
    "metrics": {"data"},
    "runtime": {"root", "config", "model", "data"},
    "train": {"root", "config", "console", "losses", "data", "model", "cam", "metrics", "runtime"},
    "infer": {"root", "config", "console", "data", "model", "cam", "metrics", "runtime"},
    "export": {"root", "config", "console", "data", "model", "cam", "runtime"},
    "demo": {"root", "assets", "config", "console", "losses", "data", "model", "cam", "metrics", "runtime", "train",
             "infer", "export"},
    "pretrain": {"root", "config", "console", "data", "model", "assets"},
    "bench": {"root", "config", "console", "data", "model", "cam", "metrics", "runtime", "infer", "export"},
    "cli": {"root", "config", "console", "losses", "data", "model", "cam", "metrics", "runtime", "train", "infer",
            "export", "demo", "pretrain", "assets", "bench"},
}


def _part(module: str) -> str:
    """``seco_deploy.infer.predictor`` -> ``infer``; ``seco_deploy`` -> ``root``."""
    parts = module.split(".")
    if parts[0] != "seco_deploy":
        raise ValueError(module)
    return parts[1] if len(parts) > 1 else "root"


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported seco_deploy module) for every import in the file, relative ones resolved."""
    return _imports_in(path.read_text(encoding="utf-8"), _module_of(path), path.name == "__init__.py")


def _imports_in(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "seco_deploy"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "seco_deploy":
                # `from seco_deploy import cam` imports the module seco_deploy.cam
                if name == "seco_deploy":  # a submodule (`cam`) or a name of the package face (`__version__`)
                    found += [(node.lineno, f"seco_deploy.{a.name}" if _is_module(a.name) else name)
                              for a in node.names]
                else:
                    found.append((node.lineno, name))
    return found


def test_every_part_has_a_rule() -> None:
    parts = {_part(_module_of(p)) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(ALLOWED), f"parts without an import rule: {sorted(parts - set(ALLOWED))}"


def test_imports_follow_the_layers() -> None:
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _part(_module_of(path))
        for line, target in _imports(path):
            other = _part(target)
            if other != me and other not in ALLOWED[me]:
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({me}) imports {target} ({other})")
    assert not broken, "imports against the layout rules:\n" + "\n".join(broken)


def test_the_rule_checker_sees_lazy_and_relative_imports() -> None:
    source = "def f():\n    from seco_deploy.train import trainer\n    from . import predictor\n"
    found = {name for _, name in _imports_in(source, "seco_deploy.infer.probe", is_package=False)}
    assert found == {"seco_deploy.train", "seco_deploy.infer"}


def _readme_layout() -> set[str]:
    """Paths (``data/synth/scenes.py``, ``runtime/``) named in the README's Layout block."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    names, stack = set(), []
    for line in block.splitlines()[2:]:  # after the language line and "seco_deploy/"
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2 - 1
        name = line.split()[0]
        stack = stack[:depth] + [name]
        names.add("".join(stack))
    return names


def test_readme_layout_matches_the_tree() -> None:
    tree = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.name not in ("__init__.py", "__main__.py") or rel.parent == Path("."):
            tree.add(rel.as_posix())
        for parent in list(rel.parents)[:-1]:
            tree.add(parent.as_posix() + "/")
    listed = _readme_layout()
    assert not tree - listed, f"README's Layout does not name {sorted(tree - listed)}"
    assert not listed - tree, f"README's Layout names what is not there: {sorted(listed - tree)}"

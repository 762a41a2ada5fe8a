"""Turn a prediction SOURCE into a sorted list of inputs with safe output names, and shard it.

A SOURCE is one of (checked in this order):

- a ``.txt`` file: a list of image paths, one a line; blank lines and lines starting with ``#``
  are skipped, whitespace around a line is removed, a path listed twice is taken once.
  Relative entries are relative to the list file's folder.
- a folder: its image files (extensions of :data:`seco_deploy.data.io.IMAGE_EXTENSIONS`, any
  case), and with ``recursive`` those of every subfolder. Hidden files and folders (names
  starting with ``.``) are skipped. Symlinked folders are followed, but a folder already visited
  (same device and inode) is never entered twice, so a symlink loop ends the walk, not the run.
- a single file: that image.
- a glob pattern (``*``, ``?``, ``[``; ``**`` spans folders): the files it matches.

Every input gets an output **name**: a relative POSIX path without extension (``sub/img``);
outputs go to ``OUT/masks/<name>.png`` and so on. Names are data, never instructions:

- a folder or glob input is named by its path relative to the folder (the glob's fixed
  prefix); a single file by its file name;
- a list entry inside the list's folder is named by its relative path; entries outside it
  (absolute paths, ``..``) are named by their path relative to the deepest folder holding all
  such entries;
- every name component is cleaned: ``.``/``..``/empty components dropped, control characters
  replaced by ``_``, components longer than :data:`MAX_COMPONENT_BYTES` UTF-8 bytes shortened
  with a hash; unicode and spaces are kept. So ``OUT/<kind>/<name>.<ext>`` always lies inside
  ``OUT``;
- inputs whose names collide (``a.jpg`` and ``a.png``) keep their extension in the name
  (``a.jpg``, ``a.png``); any collision left gets ``~2``, ``~3``... in sorted order.

Sharding (:func:`select_shard`) takes contiguous slices of the list sorted by name, so the
union of the n shards is exactly the unsharded list and a name is the same in every shard.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from seco_deploy.data.io import IMAGE_EXTENSIONS

__all__ = [
    "MAX_COMPONENT_BYTES",
    "InputItem",
    "SourceError",
    "expand_source",
    "parse_shard",
    "safe_component",
    "select_shard",
    "shard_from_env",
]

MAX_COMPONENT_BYTES = 180  # leaves room for ".<stem>.<hex>.tmp.png" under NAME_MAX = 255
_GLOB_CHARS = re.compile(r"[*?\[]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SourceError(ValueError):
    """SOURCE cannot be expanded (missing, empty, unreadable list); a usage error."""


@dataclass(frozen=True)
class InputItem:
    """One input image: ``path`` to read, ``name`` (safe relative output name, no extension),
    ``source`` the path as the user wrote it (for the manifest)."""

    path: str
    name: str
    source: str


# ---------------------------------------------------------------------------- names
def safe_component(part: str) -> str:
    """One cleaned path component: control characters -> ``_``; too long -> prefix + hash.

    Returns ``""`` for components that must be dropped (empty, ``.``, ``..``).
    """
    if part in ("", ".", ".."):
        return ""
    part = _CONTROL.sub("_", part).replace("/", "_").replace("\\", "_")
    encoded = part.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_COMPONENT_BYTES:
        digest = hashlib.sha1(encoded).hexdigest()[:12]
        head = encoded[: MAX_COMPONENT_BYTES - 13].decode("utf-8", "ignore")
        part = f"{head}~{digest}"
    # A surrogate-escaped (non-UTF-8) file name must become writable text.
    return part.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _safe_name(parts: Iterable[str]) -> str:
    cleaned = [c for c in (safe_component(p) for p in parts) if c]
    return "/".join(cleaned) if cleaned else "_"


def _strip_ext(name: str) -> str:
    """``sub/a.jpg`` -> ``sub/a``; a name without a suffix is returned unchanged."""
    path = PurePosixPath(name)
    return str(path.with_suffix("")) if path.suffix else name


def _finalise(entries: list[tuple[str, str, str]]) -> list[InputItem]:
    """``(path, name with extension, source)`` -> items with unique extension-less names, sorted."""
    stems: dict[str, int] = {}
    for _, full, _ in entries:
        key = _strip_ext(full)
        stems[key] = stems.get(key, 0) + 1
    named = sorted(
        ((_strip_ext(full) if stems[_strip_ext(full)] == 1 else full), path, source)
        for path, full, source in entries
    )
    seen: dict[str, int] = {}
    items: list[InputItem] = []
    taken = {n for n, _, _ in named}
    for name, path, source in named:
        if name in seen:
            k = seen[name] + 1
            while f"{name}~{k}" in taken:
                k += 1
            seen[name] = k
            unique = f"{name}~{k}"
            taken.add(unique)
        else:
            seen[name] = 1
            unique = name
        items.append(InputItem(path=path, name=unique, source=source))
    return items


def _has_image_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# ---------------------------------------------------------------------------- expansion
def expand_source(
    source: str | os.PathLike[str],
    recursive: bool = False,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> list[InputItem]:
    """Expand SOURCE (see the module docstring) into items sorted by name.

    ``exclude``: folders never walked into (the output folder, when it lies inside SOURCE).
    Raises :class:`SourceError` when SOURCE does not exist, matches nothing or holds no image.
    """
    text = os.fspath(source)
    path = Path(text)
    excluded = {_real(e) for e in exclude}
    if path.is_file() and path.suffix.lower() == ".txt":
        items = _from_list(path)
        what = f"the list {text}"
    elif path.is_dir():
        items = _from_folder(path, recursive, excluded)
        what = f"the folder {text}" + ("" if recursive else " (use --recursive to include subfolders)")
    elif path.exists() or path.is_symlink():
        items = _finalise([(text, safe_component(path.name) or "_", text)])
        what = text
    elif _GLOB_CHARS.search(text):
        items = _from_glob(text, excluded)
        what = f"the pattern {text}"
    else:
        raise SourceError(f"SOURCE {text} does not exist (give a folder, an image, a .txt list or a glob pattern)")
    if not items:
        raise SourceError(f"no image found in {what}")
    return items


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(path))


def _from_folder(root: Path, recursive: bool, excluded: set[str]) -> list[InputItem]:
    entries: list[tuple[str, str, str]] = []
    visited: set[tuple[int, int]] = set()
    root_text = os.fspath(root)

    def visit(folder: str, rel_parts: tuple[str, ...]) -> None:
        try:
            st = os.stat(folder)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in visited or _real(folder) in excluded:
            return
        visited.add(key)
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in children:
            if entry.name.startswith("."):
                continue
            full = os.path.join(folder, entry.name)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                if recursive:
                    visit(full, (*rel_parts, entry.name))
                continue
            if _has_image_ext(entry.name):
                entries.append((full, _safe_name((*rel_parts, entry.name)), full))

    visit(root_text, ())
    return _finalise(entries)


def _from_glob(pattern: str, excluded: set[str]) -> list[InputItem]:
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    base = os.path.join(*fixed) if fixed else "."
    base_abs = os.path.abspath(base)
    entries = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        if not os.path.isfile(match):
            continue
        if any(_real(match).startswith(e + os.sep) for e in excluded):
            continue
        rel = os.path.relpath(os.path.abspath(match), base_abs)
        entries.append((match, _safe_name(Path(rel).parts), match))
    return _finalise(entries)


def _from_list(list_path: Path) -> list[InputItem]:
    try:
        text = list_path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise SourceError(f"cannot read the list {list_path}: {exc}") from exc
    base = os.path.abspath(list_path.parent)
    inside: list[tuple[str, str, str]] = []
    outside: list[tuple[str, str]] = []  # (absolute normalised path, source line)
    seen: set[str] = set()
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        absolute = os.path.normpath(os.path.join(base, entry))
        if absolute in seen:  # the same file listed twice (maybe by another route): predict it once
            continue
        seen.add(absolute)
        rel = os.path.relpath(absolute, base)
        if not os.path.isabs(entry) and rel != ".." and not rel.startswith(".." + os.sep):
            inside.append((absolute, _safe_name(Path(rel).parts), entry))
        else:
            outside.append((absolute, entry))
    if outside:
        common = os.path.commonpath([os.path.dirname(a) for a, _ in outside])
        for absolute, entry in outside:
            rel = os.path.relpath(absolute, common)
            inside.append((absolute, _safe_name(Path(rel).parts), entry))
    return _finalise(inside)


# ---------------------------------------------------------------------------- sharding
def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; raises :class:`SourceError` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise SourceError(f"--shard {text!r} must look like i/n (e.g. 0/4: the first of 4 slices)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise SourceError(f"--shard {text!r}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return index, count


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when running under torchrun with more than one process, else None."""
    env = os.environ if environ is None else environ
    rank, world = env.get("RANK"), env.get("WORLD_SIZE")
    if rank is None or world is None:
        return None
    try:
        index, count = int(rank), int(world)
    except ValueError as exc:
        raise SourceError(f"RANK={rank!r} and WORLD_SIZE={world!r} must be integers") from exc
    if count <= 1:
        return None
    if not 0 <= index < count:
        raise SourceError(f"RANK={index} is outside WORLD_SIZE={count}")
    return index, count


def select_shard(items: list[InputItem], index: int, count: int) -> list[InputItem]:
    """The ``index``-th of ``count`` contiguous slices of ``items`` (sizes differ by at most 1)."""
    n = len(items)
    return items[n * index // count : n * (index + 1) // count]


def output_path(out_dir: str | os.PathLike[str], kind: str, name: str, suffix: str) -> Path:
    """``OUT/<kind>/<name><suffix>``, checked to lie inside ``OUT`` (names are already safe)."""
    out = Path(out_dir)
    parts = PurePosixPath(name).parts
    if not parts or any(p in ("", ".", "..") for p in parts) or PurePosixPath(name).is_absolute():
        raise ValueError(f"unsafe output name {name!r}")
    return out.joinpath(kind, *parts[:-1], parts[-1] + suffix)

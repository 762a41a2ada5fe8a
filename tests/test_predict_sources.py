"""SOURCE expansion, safe output names and sharding (seco_deploy.infer.sources)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seco_deploy.infer.sources import (
    MAX_COMPONENT_BYTES,
    SourceError,
    expand_source,
    output_path,
    parse_shard,
    safe_component,
    select_shard,
    shard_from_env,
)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(items) -> list[str]:
    return [i.name for i in items]


def test_folder_flat_and_recursive_skip_hidden_and_other_extensions(tmp_path: Path) -> None:
    for rel in ["b.jpg", "a.PNG", "notes.txt", ".hidden.jpg", "sub/c.jpeg", ".git/d.jpg", "sub/deeper/e.webp"]:
        touch(tmp_path / rel)
    assert names(expand_source(tmp_path)) == ["a", "b"]
    assert names(expand_source(tmp_path, recursive=True)) == ["a", "b", "sub/c", "sub/deeper/e"]


def test_recursive_walk_survives_symlink_loops_and_visits_each_folder_once(tmp_path: Path) -> None:
    touch(tmp_path / "sub" / "x.jpg")
    os.symlink("..", tmp_path / "sub" / "loop")  # sub/loop -> tmp_path
    os.symlink(tmp_path / "sub", tmp_path / "alias")  # a second route to sub
    items = expand_source(tmp_path, recursive=True)
    assert len(items) == 1 and items[0].path.endswith("x.jpg")


def test_output_folder_inside_source_is_not_walked(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "out" / "overlays" / "a.jpg")
    assert names(expand_source(tmp_path, recursive=True, exclude=[tmp_path / "out"])) == ["a"]


def test_name_collisions_keep_extensions(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.png")
    touch(tmp_path / "b.png")
    assert names(expand_source(tmp_path)) == ["a.jpg", "a.png", "b"]


def test_unicode_spaces_and_control_characters(tmp_path: Path) -> None:
    touch(tmp_path / "über bild 1.jpg")
    touch(tmp_path / "tab\there.jpg")
    assert names(expand_source(tmp_path)) == ["tab_here", "über bild 1"]


def test_safe_component_drops_dots_and_shortens_long_names() -> None:
    assert safe_component("..") == "" and safe_component(".") == "" and safe_component("") == ""
    long = "é" * 300
    short = safe_component(long)
    assert len(short.encode()) <= MAX_COMPONENT_BYTES
    assert short != safe_component("é" * 299)  # the hash keeps distinct names distinct


def test_list_file_with_dotdot_and_absolute_paths_names_stay_inside(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    outside = tmp_path / "data" / "x"
    touch(outside / "a.jpg")
    touch(outside / "deep" / "b.jpg")
    touch(lists / "in.jpg")
    (lists / "l.txt").write_text(
        "# a comment\n\n"
        "../data/x/a.jpg\n"
        f"{outside / 'deep' / 'b.jpg'}\n"
        "in.jpg\n"
        "sub/../../data/x/a.jpg\n"  # the same file again by another route
        "missing.jpg\n",
        encoding="utf-8",
    )
    items = expand_source(lists / "l.txt")
    got = names(items)
    assert "in" in got and "missing" in got and "deep/b" in got
    assert sorted(got) == got and len(set(got)) == len(got) == 4, got
    for item in items:
        path = output_path(tmp_path / "out", "masks", item.name, ".png").resolve()
        assert path.is_relative_to((tmp_path / "out" / "masks").resolve())
        assert ".." not in Path(item.name).parts and not item.name.startswith("/")


def test_glob_and_single_file(tmp_path: Path) -> None:
    touch(tmp_path / "d" / "a.jpg")
    touch(tmp_path / "d" / "s" / "b.jpg")
    touch(tmp_path / "d" / "c.png")
    assert names(expand_source(str(tmp_path / "d" / "**" / "*.jpg"))) == ["a", "s/b"]
    assert names(expand_source(tmp_path / "d" / "c.png")) == ["c"]


def test_missing_and_empty_sources_are_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        expand_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image found"):
        expand_source(tmp_path / "empty")
    with pytest.raises(SourceError, match="no image found"):
        expand_source(str(tmp_path / "*.jpg"))


def test_output_path_refuses_unsafe_names(tmp_path: Path) -> None:
    for bad in ["../x", "/etc/x", "a/../../b", ""]:
        with pytest.raises(ValueError):
            output_path(tmp_path, "masks", bad, ".png")


def test_shards_partition_the_list() -> None:
    items = list(range(10))
    for n in (1, 2, 3, 4, 11):
        parts = [select_shard(items, i, n) for i in range(n)]
        assert [x for p in parts for x in p] == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(SourceError):
            parse_shard(bad)


def test_shard_from_torchrun_environment() -> None:
    assert shard_from_env({}) is None
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    with pytest.raises(SourceError):
        shard_from_env({"RANK": "3", "WORLD_SIZE": "3"})

"""`seco predict` end to end on a tiny real checkpoint: outputs, failures, re-runs, shards, paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _cli import said
from _predict_helpers import (
    CLASSES,
    checkpoint,
    every_file,
    image_size,
    manifest,
    one_thread,
    outputs_of,
    read_palette_png,
    seco,
    write_image,
)
from PIL import Image

__all__ = ["checkpoint", "one_thread"]  # fixtures


def mixed_folder(root: Path) -> dict[str, Path]:
    """Odd-sized JPEG, portrait PNG, grayscale, RGBA and 16-bit inputs."""
    files = {
        "odd": write_image(root / "odd.jpg", 37, 53, seed=1),
        "portrait": write_image(root / "portrait.png", 64, 31, seed=2),
        "gray": write_image(root / "gray.png", 45, 45, mode="L", seed=3),
        "rgba": write_image(root / "sub" / "rgba.png", 33, 50, mode="RGBA", seed=4),
    }
    wide = (np.random.default_rng(5).random((20, 70)) * 65535).astype(np.uint16)
    Image.fromarray(wide).save(root / "deep16.png")
    files["deep16"] = root / "deep16.png"
    return files


@pytest.mark.parametrize("mode", ["mask", "pseudo"])
def test_outputs_are_palette_pngs_of_the_original_size(tmp_path: Path, checkpoint: Path, mode: str) -> None:
    files = mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = seco("predict", tmp_path / "in", "--model", checkpoint, "--out", out, "--mode", mode, "-r",
                  "--overlay", "--workers", "1", "--batch", "2")
    assert result.exit_code == 0, result.output
    for name, path in files.items():
        rel = "sub/rgba.png" if name == "rgba" else f"{name}.png"
        mask = read_palette_png(out / "masks" / rel)
        assert mask.shape == image_size(path)
        assert mask.max() < len(CLASSES)
        assert (out / "overlays" / rel.replace(".png", ".jpg")).is_file()
    records = manifest(out / "manifest.jsonl")
    images = [r for r in records if r["type"] == "image"]
    assert {r["status"] for r in images} == {"ok"} and len(images) == len(files)
    for r in images:
        assert abs(sum(r["classes"].values()) - 1.0) < 1e-3 and r["seconds"] >= 0
    assert records[-1]["type"] == "summary" and records[-1]["ok"] == len(files)


def test_unreadable_inputs_fail_the_rest_are_written(tmp_path: Path, checkpoint: Path) -> None:
    src = tmp_path / "in"
    write_image(src / "good1.png", 40, 40, seed=1)
    write_image(src / "good2.jpg", 30, 50, seed=2)
    (src / "empty.jpg").write_bytes(b"")
    full = write_image(src / "full.jpg", 64, 64, seed=3).read_bytes()
    (src / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (src / "notes.jpg").write_text("this is not a picture\n", encoding="utf-8")
    (src / "full.jpg").unlink()
    out = tmp_path / "out"
    result = seco("predict", src, "--model", checkpoint, "--out", out, "--workers", "1")
    assert result.exit_code == 3, result.output
    by_name = {r["name"]: r for r in manifest(out / "manifest.jsonl") if r["type"] == "image"}
    assert {n for n, r in by_name.items() if r["status"] == "failed"} == {"empty", "truncated", "notes"}
    assert "empty" in by_name["empty"]["reason"] and "truncated" in by_name["truncated"]["reason"].lower()
    assert "not an image" in by_name["notes"]["reason"]
    assert sorted(outputs_of(out)) == ["good1.png", "good2.png"]
    assert said(result, "3 failed")


def test_rerun_skips_complete_outputs_redoes_missing_or_broken(tmp_path: Path, checkpoint: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", 32, 40, seed=i)
    out = tmp_path / "out"
    args = ("predict", tmp_path / "in", "--model", checkpoint, "--out", out, "--workers", "0")
    assert seco(*args).exit_code == 0
    first = outputs_of(out)
    mtimes = {p: (out / "masks" / p).stat().st_mtime_ns for p in first}
    assert seco(*args).exit_code == 0
    assert {r["status"] for r in manifest(out / "manifest.jsonl") if r["type"] == "image"} == {"skipped"}
    assert {p: (out / "masks" / p).stat().st_mtime_ns for p in first} == mtimes
    (out / "masks" / "0.png").unlink()
    (out / "masks" / "1.png").write_bytes(first["1.png"][:20])  # a truncated file from elsewhere
    assert seco(*args).exit_code == 0
    status = {r["name"]: r["status"] for r in manifest(out / "manifest.jsonl") if r["type"] == "image"}
    assert status == {"0": "ok", "1": "ok", "2": "skipped"}
    assert outputs_of(out) == first
    assert seco(*args, "--overwrite").exit_code == 0
    assert {r["status"] for r in manifest(out / "manifest.jsonl") if r["type"] == "image"} == {"ok"}


def test_other_settings_over_existing_outputs_are_refused(tmp_path: Path, checkpoint: Path) -> None:
    write_image(tmp_path / "in" / "a.png", 32, 32)
    out = tmp_path / "out"
    assert seco("predict", tmp_path / "in", "--model", checkpoint, "--out", out).exit_code == 0
    before = outputs_of(out)
    result = seco("predict", tmp_path / "in", "--model", checkpoint, "--out", out, "--mode", "pseudo")
    assert result.exit_code == 2 and said(result, "--overwrite", "mode")
    assert outputs_of(out) == before


def test_two_shards_equal_one_run(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        write_image(tmp_path / "in" / f"img {i}.png", 30 + 3 * i, 40, seed=i)
    common = ("--model", checkpoint, "--overlay", "--save-probs", "--workers", "0")
    assert seco("predict", tmp_path / "in", "--out", tmp_path / "one", *common).exit_code == 0
    assert seco("predict", tmp_path / "in", "--out", tmp_path / "two", "--shard", "0/2", *common).exit_code == 0
    monkeypatch.setenv("RANK", "1")  # the second shard as torchrun's rank 1 of 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert seco("predict", tmp_path / "in", "--out", tmp_path / "two", *common).exit_code == 0
    for kind in ("masks", "overlays", "probs"):
        one, two = outputs_of(tmp_path / "one", kind), outputs_of(tmp_path / "two", kind)
        assert len(one) == 5 and sorted(one) == sorted(two)
        if kind != "probs":  # npz archives hold zip timestamps; compare their arrays instead
            assert one == two
    for name in outputs_of(tmp_path / "one", "probs"):
        a, b = np.load(tmp_path / "one" / "probs" / name), np.load(tmp_path / "two" / "probs" / name)
        assert np.array_equal(a["probs"], b["probs"])
    shard_logs = sorted(p.name for p in (tmp_path / "two").glob("manifest*.jsonl"))
    assert shard_logs == ["manifest.shard-0-of-2.jsonl", "manifest.shard-1-of-2.jsonl"]


@pytest.mark.parametrize("refine", ["none", "par", "crf"])
def test_pseudo_labels_keep_to_the_tags(tmp_path: Path, checkpoint: Path, refine: str) -> None:
    rows = {"a": ["cat"], "b": ["dog", "boat"], "c": [], "d": ["boat"]}
    for i, name in enumerate(rows):
        write_image(tmp_path / "in" / f"{name}.jpg", 40 + 4 * i, 48, seed=10 + i)
    lines = ["image,tags"] + [f"{n}.jpg,{';'.join(t)}" for n, t in rows.items()]
    (tmp_path / "tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = seco("predict", tmp_path / "in", "--model", checkpoint, "--out", out, "--mode", "pseudo",
                  "--tags", tmp_path / "tags.csv", "--refine", refine, "--bkg-thre", "0.2", "--workers", "0")
    assert result.exit_code == 0, result.output
    for name, tags in rows.items():
        allowed = {0} | {CLASSES.index(t) for t in tags}
        assert set(np.unique(read_palette_png(out / "masks" / f"{name}.png"))) <= allowed
    records = {r["name"]: r for r in manifest(out / "manifest.jsonl") if r["type"] == "image"}
    assert records["b"]["tags"] == ["dog", "boat"]
    # The restriction does work: with every class allowed, classes outside the tags do appear.
    free = tmp_path / "free"
    assert seco("predict", tmp_path / "in", "--model", checkpoint, "--out", free, "--mode", "pseudo",
                "--cls-threshold", "-1e9", "--bkg-thre", "0.2", "--workers", "0").exit_code == 0
    seen = set(np.unique(read_palette_png(free / "masks" / "a.png")))
    assert seen - {0, 1}


def test_tags_file_naming_an_unknown_class_is_refused_before_any_work(tmp_path: Path, checkpoint: Path) -> None:
    write_image(tmp_path / "in" / "a.png", 32, 32)
    (tmp_path / "tags.csv").write_text("image,tags\na.png,cat\nb.png,dog;unicorn\n", encoding="utf-8")
    out = tmp_path / "out"
    result = seco("predict", tmp_path / "in", "--model", checkpoint, "--out", out, "--mode", "pseudo",
                  "--tags", tmp_path / "tags.csv")
    assert result.exit_code == 2
    assert said(result, "unicorn", "line 3")
    assert not out.exists()


def test_list_with_dotdot_and_absolute_paths_writes_only_inside_out(tmp_path: Path, checkpoint: Path) -> None:
    work = tmp_path / "work"
    write_image(tmp_path / "elsewhere" / "x.png", 32, 32, seed=1)
    write_image(tmp_path / "elsewhere" / "deeper" / "y z.png", 32, 40, seed=2)
    write_image(work / "lists" / "here.png", 40, 32, seed=3)
    write_image(work / "ünï cødé.png", 36, 36, seed=4)
    os.symlink(tmp_path / "elsewhere" / "x.png", work / "lists" / "link.png")
    (work / "lists" / "l.txt").write_text(
        "../../elsewhere/x.png\n"
        f"{tmp_path / 'elsewhere' / 'deeper' / 'y z.png'}\n"
        "here.png\nlink.png\n../ünï cødé.png\n"
        "../../../../../../../../../../../../etc/hostname\n",
        encoding="utf-8",
    )
    out = work / "lists" / "out"
    before = every_file(tmp_path)
    result = seco("predict", work / "lists" / "l.txt", "--model", checkpoint, "--out", out, "--overlay",
                  "--workers", "0")
    assert result.exit_code in (0, 3), result.output
    created = every_file(tmp_path) - before
    assert created and all(Path(p).resolve().is_relative_to(out.resolve()) for p in created)
    written = sorted(outputs_of(out))
    assert "here.png" in written and "link.png" in written and len(written) >= 5


def test_usage_errors_exit_2(tmp_path: Path, checkpoint: Path) -> None:
    write_image(tmp_path / "in" / "a.png", 32, 32)
    out = tmp_path / "out"
    cases = [
        (tmp_path / "nothing", "--model", checkpoint),
        (tmp_path / "in", "--model", checkpoint, "--shard", "2/2"),
        (tmp_path / "in", "--model", checkpoint, "--mode", "bogus"),
        (tmp_path / "in", "--model", checkpoint, "--refine", "par"),
        (tmp_path / "in", "--model", checkpoint, "--scales", "1,x"),
        (tmp_path / "in", "--model", tmp_path / "missing.pt"),
        (tmp_path / "in", "--model", tmp_path / "in" / "a.png"),
        (tmp_path / "in", "--model", checkpoint, "--tags", tmp_path / "no.csv", "--mode", "pseudo"),
        (tmp_path / "in", "--model", checkpoint, "--device", "tpu"),
        (tmp_path / "in", "--model", checkpoint, "--threads", "0"),
        (tmp_path / "in", "--model", checkpoint, "--probs-scale", "2"),
    ]
    for args in cases:
        result = seco("predict", *args, "--out", out)
        assert result.exit_code == 2, (args, result.output)
    assert not (out / "masks").exists()

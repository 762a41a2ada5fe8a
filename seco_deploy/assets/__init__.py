"""Weights shipped inside the package, named ``builtin:NAME`` wherever a weights file is accepted.

``BUILTIN`` maps each name to its file in this folder and the timm backbone it fits:
``vit-tiny-fractal`` (the default recipe, 2000 iterations; the start of the shipped ladder) and
``vit-tiny-fractal-5k`` (the same recipe for 5000 iterations; the ``cpu`` preset's start). Each file
has a ``.json`` card beside it (written by ``seco pretrain``): the recipe that made it, its
sha256 and exactly what it has seen; ``docs/method.md`` ("Pretrained start") says how to
reproduce it.

``LADDERS`` maps a synthetic profile to the co-occurrence ladder measured on it with
``benchmarks/ladder.py`` (its ``ladder.json``; the command, the start and the seeds inside):
``hard`` from ``builtin:vit-tiny-fractal``, ``partial`` (the demo's default set) from
``builtin:vit-tiny-fractal-5k``. ``seco demo`` shows the one of its own profile beside its run:
a 3-seed comparison does not fit the demo's budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PREFIX = "builtin:"
FOLDER = Path(__file__).resolve().parent
BUILTIN: dict[str, tuple[str, str]] = {
    "vit-tiny-fractal": ("vit_tiny_fractal.safetensors", "vit_tiny_patch16_224"),  # 2000 iterations
    "vit-tiny-fractal-5k": ("vit_tiny_fractal_5k.safetensors", "vit_tiny_patch16_224"),  # 5000: the cpu preset's
}
LADDERS: dict[str, str] = {"hard": "ladder_hard.json", "partial": "ladder_partial.json"}


def is_builtin(spec: str) -> bool:
    return str(spec).startswith(PREFIX)


def builtin_weights(spec: str) -> Path:
    """``builtin:NAME`` (or ``NAME``) -> the shipped file; ``ValueError`` naming the known ones otherwise."""
    name = str(spec)[len(PREFIX):] if is_builtin(spec) else str(spec)
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in weights {name!r}; known: {', '.join(PREFIX + n for n in BUILTIN)}")
    path = FOLDER / BUILTIN[name][0]
    if not path.is_file():
        raise FileNotFoundError(f"built-in weights {name!r} are missing from this installation ({path}); "
                                "reinstall seco-deploy or make them with `seco pretrain` (docs/method.md)")
    return path


def shipped_ladder(difficulty: str) -> dict[str, Any] | None:
    """The shipped ladder of the synthetic profile ``difficulty`` (see ``LADDERS``), or None when there is none."""
    if difficulty not in LADDERS:
        return None
    path = FOLDER / LADDERS[difficulty]
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))

"""What a synthetic set holds: its classes, contexts and couplings, and the sampling profiles.

Six foreground classes with distinct shapes and textures (drawn by :mod:`.objects`):

============  ==================================================  ==========================
class         shape / texture                                     coupling
============  ==================================================  ==========================
boat          hull with a bow, cabin, mast and sail; hull planks  on ``water`` (context)
train         long body with car joints, window row, wheels       on ``rails`` (context)
person        head, torso, arms, legs; flat cloth                 rides a horse (partner)
horse         body, neck, head, four legs, tail; mottled coat     carries a person (partner)
bird          small body with two wings, in the sky; speckled     none
car           body, cabin with windows, two wheels; glossy        none
============  ==================================================  ==========================

``water`` (a rippled band at the bottom) and ``rails`` (gravel, sleepers and two rails across
the image) are contexts: background in the ground-truth masks, recorded in the context masks
with their index in :data:`CONTEXTS`. Class indices are positions in :data:`CLASSES`
(background 0).

A :class:`SynthProfile` gives the rates at which a scene holds each class and context, per
image. :data:`PROFILES` (``--difficulty``):

- ``easy``: loose coupling, large objects with one colour family per class;
- ``cooccur``: the co-occurrence trap: a boat is on water and a train on rails 97 % of the
  time, and a context shows up without its class in only about 7 % of the images, so a
  classifier trained from image tags can score "boat" by looking at the water, and its CAM
  lights the water up; objects share one palette, so colour alone does not tell classes apart;
- ``hard`` (the default of ``seco data synth``): contexts never absent from their class and
  almost never alone, smaller objects, more clutter and noise. On it a plain-CAM classifier
  trained on this CPU measurably falls into the trap (docs/benchmarks.md); on ``cooccur`` it did
  not. Its objects are also too small for a ViT/16 at the ``cpu`` preset's 160 px: a perfect CAM
  on that token grid scores 51 mIoU (``benchmarks/cam_ceiling.py``);
- ``partial`` (the default of ``seco demo``): ``easy``'s large objects with one colour family per
  class, under a partial trap: contexts always with their class and each alone in ~4 % of the
  images. The colours stand in for what an ImageNet encoder knows of objects, which no encoder
  pretrained on this CPU does (docs/benchmarks.md), so that a 10-minute run learns the objects
  and the co-occurrence is what is left to get right.
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSES: tuple[str, ...] = ("background", "boat", "train", "person", "horse", "bird", "car")
CONTEXTS: tuple[str, ...] = ("none", "water", "rails")  # index = value in ContextMasks
CONTEXT_OF: dict[str, str] = {"boat": "water", "train": "rails"}
PAIRS: tuple[tuple[str, str], ...] = (("horse", "person"),)

CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
CONTEXT_INDEX: dict[str, int] = {name: i for i, name in enumerate(CONTEXTS)}


@dataclass(frozen=True)
class SynthProfile:
    """How a synthetic set is sampled. Rates are probabilities per image."""

    name: str
    description: str
    p_boat: float = 0.3
    p_train: float = 0.3
    p_horse: float = 0.25
    p_person_alone: float = 0.15  # a person without a horse
    p_bird: float = 0.2
    p_car: float = 0.25
    context_given_class: float = 0.97  # P(water | boat) = P(rails | train)
    context_alone: float = 0.05  # per context: fraction of all images showing it without its class
    pair_rate: float = 0.8  # P(a person rides | horse)
    object_scale: tuple[float, float] = (0.24, 0.4)  # object height / image side (before perspective)
    class_colours: bool = False  # True: one colour family per class (trivially distinctive)
    clutter: tuple[int, int] = (2, 5)
    noise: float = 7.0  # std of per-pixel sensor noise (0-255 scale)
    texture: float = 14.0  # amplitude of object textures


PROFILES: dict[str, SynthProfile] = {
    "easy": SynthProfile(
        name="easy",
        description="loose coupling (each context alone in ~25% of images), big objects, one colour per class",
        context_given_class=0.7,
        context_alone=0.25,
        pair_rate=0.4,
        object_scale=(0.32, 0.5),
        class_colours=True,
        clutter=(0, 2),
        noise=4.0,
        texture=18.0,
    ),
    "cooccur": SynthProfile(
        name="cooccur",
        description="the co-occurrence trap: boats on water and trains on rails 97% of the time, "
        "each context alone in ~5% of images, shared colours",
    ),
    "hard": SynthProfile(
        name="hard",
        description="contexts always with their class and alone in ~1.5% of images, small objects, heavy clutter",
        context_given_class=1.0,
        context_alone=0.015,
        pair_rate=0.92,
        object_scale=(0.18, 0.3),
        clutter=(4, 8),
        noise=11.0,
        texture=10.0,
    ),
    "partial": SynthProfile(
        name="partial",
        description="large objects with one colour family per class; contexts always with their class and alone in "
        "~4% of images (a partial trap, as on VOC)",
        context_given_class=1.0,
        context_alone=0.04,
        pair_rate=0.92,
        object_scale=(0.32, 0.5),
        class_colours=True,
        clutter=(0, 2),
        noise=4.0,
        texture=18.0,
    ),
}

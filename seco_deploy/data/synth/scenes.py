"""One synthetic scene: what it holds (the plan), where things go, and the rendered arrays.

:func:`render_scene` ``(rng, size, profile) -> Scene`` is a pure function of its generator:
every random draw comes from ``rng`` in a fixed order, so the same generator state gives the
same scene. The order is:

1. the plan (:func:`_plan`): 12 uniforms decide how many boats, trains, horses, riders,
   standing persons, birds and cars the image holds, then 4 more whether water and rails show
   (with the class: ``context_given_class``; without it: a rate chosen so that about
   ``context_alone`` of all images show the context alone);
2. the horizon (28-45 % of the side) and the top of the water band (leaving ground for land
   objects and rails);
3. the background (:mod:`.backgrounds`): sky and ground; the rails' height, their centre row
   and the rails; the water; the number of clutter things and the clutter, on the free ground
   and in the sky;
4. the objects (:mod:`.objects`): boats on the water (on the ground without it), trains on the
   rails (on the ground without them), horses, cars and persons on the ground, birds in the sky;
   each height follows ``object_scale`` and grows towards the viewer; drawn far to near (by
   baseline row); when the plan has a rider, it is stamped onto the first (farthest) horse;
5. per-pixel sensor noise (std ``profile.noise``), a Gaussian blur of sigma 0.6, rounding to
   uint8.

A :class:`Scene` holds ``image`` uint8 ``(S, S, 3)`` RGB, ``mask`` uint8 ``(S, S)`` (class
indices of :data:`.profiles.CLASSES`, exact: the pixels each object covers after occlusion) and
``context`` uint8 ``(S, S)`` (indices of :data:`.profiles.CONTEXTS` on the context pixels that
stay visible; 0 elsewhere and under objects).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from seco_deploy.data.synth.backgrounds import draw_clutter, draw_rails, draw_sky_and_ground, draw_water
from seco_deploy.data.synth.canvas import Canvas
from seco_deploy.data.synth.objects import DRAWERS
from seco_deploy.data.synth.profiles import CLASS_INDEX, CLASSES, SynthProfile


@dataclass
class Scene:
    """One rendered image: ``image`` uint8 (S, S, 3), ``mask`` and ``context`` uint8 (S, S)."""

    image: np.ndarray
    mask: np.ndarray
    context: np.ndarray

    @property
    def tags(self) -> np.ndarray:
        """Multi-hot ``float32 (C,)`` of the classes visible in the mask."""
        counts = np.bincount(self.mask.ravel(), minlength=len(CLASSES))[: len(CLASSES)]
        return (counts[1:] > 0).astype(np.float32)


@dataclass
class _Plan:
    boats: int = 0
    trains: int = 0
    horses: int = 0
    riders: int = 0
    persons: int = 0  # standing persons
    birds: int = 0
    cars: int = 0
    water: bool = False
    rails: bool = False


def _plan(rng: np.random.Generator, p: SynthProfile) -> _Plan:
    """Draw what the image holds; every draw is made in a fixed order."""
    plan = _Plan()
    draws = rng.random(12)
    plan.boats = int(draws[0] < p.p_boat) * (1 + int(draws[6] < 0.25))
    plan.trains = int(draws[1] < p.p_train)
    plan.horses = int(draws[2] < p.p_horse) * (1 + int(draws[7] < 0.2))
    plan.riders = int(plan.horses > 0 and draws[8] < p.pair_rate)
    plan.persons = int(draws[3] < p.p_person_alone) * (1 + int(draws[9] < 0.3))
    plan.birds = int(draws[4] < p.p_bird) * (1 + int(draws[10] * 3))
    plan.cars = int(draws[5] < p.p_car)
    # P(context | class) and a share of context-only images; q keeps the overall alone rate.
    coupled = rng.random(4)
    q_water = min(1.0, p.context_alone / max(1e-6, 1 - p.p_boat))
    q_rails = min(1.0, p.context_alone / max(1e-6, 1 - p.p_train))
    plan.water = bool(coupled[0] < p.context_given_class) if plan.boats else bool(coupled[1] < q_water)
    plan.rails = bool(coupled[2] < p.context_given_class) if plan.trains else bool(coupled[3] < q_rails)
    return plan


def render_scene(rng: np.random.Generator, size: int, profile: SynthProfile) -> Scene:
    """Draw one scene of ``size`` x ``size`` pixels with ``rng`` under ``profile``."""
    s = int(size)
    c = Canvas(s, rng, profile)
    plan = _plan(rng, profile)
    land = (
        plan.horses
        + plan.persons
        + plan.cars
        + plan.trains * (1 - int(plan.rails))
        + plan.boats * (1 - int(plan.water))
    )
    horizon = int(s * rng.uniform(0.28, 0.45))
    if plan.water:
        need = (0.2 if land else 0.0) + (0.14 if plan.rails else 0.0)
        low = horizon + need * s
        water_top = int(rng.uniform(low, max(low + 1, s * 0.72 if need else horizon + 0.15 * s)))
        water_top = min(water_top, int(s * 0.8))
    else:
        water_top = s
    draw_sky_and_ground(c, horizon)
    rail_h = max(6, int(s * rng.uniform(0.16, 0.24)))
    rails_center = 0
    if plan.rails:
        lo, hi = horizon + rail_h, max(horizon + rail_h + 1, water_top - rail_h // 2)
        rails_center = int(rng.uniform(lo + 0.3 * (hi - lo), hi))
        draw_rails(c, rails_center, rail_h)
    if plan.water:
        draw_water(c, water_top)
    ground_end = water_top if plan.water else s
    if plan.rails:
        ground_end_free = rails_center - rail_h // 2
    else:
        ground_end_free = ground_end
    n_clutter = int(rng.integers(profile.clutter[0], profile.clutter[1] + 1))
    draw_clutter(c, horizon, max(horizon + 1, ground_end_free), n_clutter)

    # (baseline row, class, height, x centre) of every object; drawn far to near.
    items: list[tuple[float, str, float, float]] = []
    lo_scale, hi_scale = profile.object_scale

    def size_at(row: float, factor: float) -> float:
        depth = (row - horizon) / max(1.0, s - horizon)
        return s * rng.uniform(lo_scale, hi_scale) * factor * (0.65 + 0.5 * depth)

    for _ in range(plan.boats):
        if plan.water:
            row = rng.uniform(water_top + 0.25 * (s - water_top), s * 0.97)
        else:
            row = rng.uniform(horizon + 0.3 * (ground_end - horizon), ground_end)
        items.append((row, "boat", size_at(row, 1.2), rng.uniform(0.12, 0.88) * s))
    for _ in range(plan.trains):
        if plan.rails:
            row = rails_center - rail_h * 0.08
            height = max(rail_h * 1.3, size_at(row, 0.7))
        else:
            row = rng.uniform(horizon + 0.3 * (ground_end - horizon), ground_end)
            height = size_at(row, 0.75)
        items.append((row, "train", height, rng.uniform(0.1, 0.9) * s))
    ground_lo = horizon + 0.15 * (ground_end_free - horizon)
    ground_hi = max(ground_lo + 1, ground_end_free if not plan.rails else ground_end)
    for _ in range(plan.horses):
        row = rng.uniform(ground_lo, ground_hi)
        items.append((row, "horse", size_at(row, 1.0), rng.uniform(0.15, 0.85) * s))
    for _ in range(plan.cars):
        row = rng.uniform(ground_lo, ground_hi)
        items.append((row, "car", size_at(row, 0.7), rng.uniform(0.12, 0.88) * s))
    for _ in range(plan.persons):
        row = rng.uniform(ground_lo, ground_hi)
        items.append((row, "person", size_at(row, 1.0), rng.uniform(0.1, 0.9) * s))
    for _ in range(plan.birds):
        row = rng.uniform(0.08, 0.9) * horizon
        height = s * rng.uniform(0.09, 0.15) * (1.3 if lo_scale > 0.3 else 1.0)
        items.append((row, "bird", height, rng.uniform(0.1, 0.9) * s))
    items.sort(key=lambda item: item[0])

    riders_left = plan.riders
    for row, cls, height, xc in items:
        sprite, texture = DRAWERS[cls](c, height)
        x = int(round(xc - sprite.w / 2))
        y = int(round(row - sprite.h))
        c.stamp(sprite, x, y, CLASS_INDEX[cls], texture)
        if cls == "horse" and riders_left > 0:
            riders_left -= 1
            rider, rider_tex = DRAWERS["person"](c, sprite.h * 0.9)
            rx = x + int(sprite.w * rng.uniform(0.35, 0.55)) - rider.w // 2
            ry = y + int(sprite.h * 0.5) - rider.h
            c.stamp(rider, rx, ry, CLASS_INDEX["person"], rider_tex)

    noise = rng.standard_normal((s, s, 3), dtype=np.float32) * profile.noise
    image = cv2.GaussianBlur(c.image + noise, (0, 0), 0.6)
    return Scene(image=np.clip(image + 0.5, 0, 255).astype(np.uint8), mask=c.mask, context=c.context)

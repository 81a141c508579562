"""PixMo-like data made offline, deterministic from a seed.

So far: scenes of coloured shapes and captions that name each shape's colour, kind and position -- enough for the
tiny CLIP pre-training of chapter 02 (a contrastive objective whose captions mention positions teaches the ViT where
things are). Chapter 07 adds pointing, counting, clocks, charts and QA on top of the same scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
    "purple": (140, 60, 180), "orange": (245, 130, 20), "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
# 3 x 3 regions of the image, named as a person would
ROWS, COLS = ("top", "middle", "bottom"), ("left", "centre", "right")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    x: float  # centre, percent of the width (0-100), as Molmo's points
    y: float  # centre, percent of the height
    radius: float  # percent of the image side

    @property
    def region(self) -> str:
        row, col = ROWS[min(2, int(self.y // (100 / 3)))], COLS[min(2, int(self.x // (100 / 3)))]
        return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}" if row != "middle" else f"middle {col}"


def random_scene(rng: np.random.Generator, max_objects: int = 3, min_objects: int = 1) -> list[SceneObject]:
    """1..max_objects shapes of distinct (shape, colour), each in a different 3x3 region so captions are unambiguous."""
    n = int(rng.integers(min_objects, max_objects + 1))
    regions = rng.permutation(9)[:n]
    kinds = rng.permutation(len(SHAPES) * len(COLOURS))[:n]
    objects = []
    for region, kind in zip(regions, kinds):
        row, col = divmod(int(region), 3)
        radius = float(rng.uniform(7, 13))
        x = (col + rng.uniform(0.3, 0.7)) * 100 / 3
        y = (row + rng.uniform(0.3, 0.7)) * 100 / 3
        objects.append(SceneObject(SHAPES[kind % len(SHAPES)], list(COLOURS)[kind // len(SHAPES)], round(x, 1),
                                   round(y, 1), round(radius, 1)))
    return objects


def render_scene(objects: list[SceneObject], size: int = 56, background: tuple[int, int, int] | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw the shapes on a plain (or given) background -> uint8 [size, size, 3]. Drawn at 4x and downsampled."""
    scale = 4
    bg = background or (tuple(int(v) for v in rng.integers(90, 170, size=3)) if rng is not None else (128, 128, 128))
    canvas = Image.new("RGB", (size * scale, size * scale), bg)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        cx, cy, r = (v / 100 * size * scale for v in (obj.x, obj.y, obj.radius))
        colour = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif obj.shape == "square":
            draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=colour)
    return np.asarray(canvas.resize((size, size), Image.LANCZOS))


def caption_scene(objects: list[SceneObject]) -> str:
    """'a red circle at the top left and an orange square at the centre' (objects in reading order)."""
    ordered = sorted(objects, key=lambda o: (o.y // (100 / 3), o.x))
    parts = [f"{'an' if o.colour[0] in 'aeiou' else 'a'} {o.colour} {o.shape} at the {o.region}" for o in ordered]
    return " and ".join(parts)


def caption_scenes(n: int, seed: int, size: int = 56, max_objects: int = 3) -> tuple[np.ndarray, list[str]]:
    """n seeded (image, caption) pairs: uint8 images [n, size, size, 3] and their captions."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(n):
        objects = random_scene(rng, max_objects=max_objects)
        images.append(render_scene(objects, size=size, rng=rng))
        captions.append(caption_scene(objects))
    return np.stack(images), captions

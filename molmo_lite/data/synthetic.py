"""PixMo-like data made offline, deterministic from a seed.

So far: scenes of coloured shapes and captions that name each shape's colour, kind and position -- enough for the
tiny CLIP pre-training of chapter 02 (a contrastive objective whose captions mention positions teaches the ViT where
things are). Chapter 07 adds pointing, counting, clocks, charts and QA on top of the same scenes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..pointing import count_to_text, points_to_text
from ..prompts import Message
from .examples import Example, examples_of

COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
    "purple": (140, 60, 180), "orange": (245, 130, 20), "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
TEXTURES = ("solid", "outlined", "shadowed")  # drawn so that the centre of every object shows its own colour
# 3 x 3 regions of the image, named as a person would
ROWS, COLS = ("top", "middle", "bottom"), ("left", "centre", "right")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    x: float  # centre, percent of the width (0-100), as Molmo's points
    y: float  # centre, percent of the height
    radius: float  # percent of the image side
    texture: str = "solid"  # one of TEXTURES

    @property
    def region(self) -> str:
        row, col = ROWS[min(2, int(self.y // (100 / 3)))], COLS[min(2, int(self.x // (100 / 3)))]
        return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}" if row != "middle" else f"middle {col}"


def random_scene(rng: np.random.Generator, max_objects: int = 3, min_objects: int = 1,
                 radius: tuple[float, float] = (7, 13), textured: bool = False) -> list[SceneObject]:
    """min..max_objects shapes of distinct (shape, colour), each in a different 3x3 region so captions are
    unambiguous; radius in percent of the side; textured: each a random texture (as in the pointing scenes)."""
    n = int(rng.integers(min_objects, max_objects + 1))
    regions = rng.permutation(9)[:n]
    kinds = rng.permutation(len(SHAPES) * len(COLOURS))[:n]
    objects = []
    for region, kind in zip(regions, kinds):
        row, col = divmod(int(region), 3)
        r = float(rng.uniform(*radius))
        x = (col + rng.uniform(0.3, 0.7)) * 100 / 3
        y = (row + rng.uniform(0.3, 0.7)) * 100 / 3
        texture = str(rng.choice(TEXTURES)) if textured else "solid"
        objects.append(SceneObject(SHAPES[kind % len(SHAPES)], list(COLOURS)[kind // len(SHAPES)], round(x, 1),
                                   round(y, 1), round(r, 1), texture))
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
        if obj.texture == "shadowed":  # a dark copy offset down-right, under the shape
            _draw_shape(draw, obj.shape, cx + 0.25 * r, cy + 0.25 * r, r, (50, 50, 50), None, 0)
        outline = (20, 20, 20) if obj.colour != "black" else (245, 245, 245)
        width = max(1, round(0.18 * r)) if obj.texture == "outlined" else 0
        _draw_shape(draw, obj.shape, cx, cy, r, COLOURS[obj.colour], outline if width else None, width)
    return np.asarray(canvas.resize((size, size), Image.LANCZOS))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple, outline,
                width: int) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)
    elif shape == "square":
        draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill, outline=outline,
                       width=width)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill, outline=outline,
                     width=width)


def caption_scene(objects: list[SceneObject]) -> str:
    """'a red circle at the top left and an orange square at the centre' (objects in reading order)."""
    ordered = sorted(objects, key=lambda o: (o.y // (100 / 3), o.x))
    parts = [f"{'an' if o.colour[0] in 'aeiou' else 'a'} {o.colour} {o.shape} at the {o.region}" for o in ordered]
    return " and ".join(parts)


def caption_scenes(n: int, seed: int, size: int = 56, max_objects: int = 3, min_objects: int = 1,
                   radius: tuple[float, float] = (7, 13), textured: bool = False) -> tuple[np.ndarray, list[str]]:
    """n seeded (image, caption) pairs: uint8 images [n, size, size, 3] and their captions (``random_scene``'s
    options: the defaults are chapter 02's; (4, 8), 4 to 8 objects, textured: the small objects of crowded scenes)."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(n):
        objects = random_scene(rng, max_objects, min_objects, radius, textured)
        images.append(render_scene(objects, size=size, rng=rng))
        captions.append(caption_scene(objects))
    return np.stack(images), captions


# --------------------------------------------------------------------------------------------------------------------
# Chapter 07: crowded scenes for pointing and counting, dense captions, transcripts and free-form QA.
# --------------------------------------------------------------------------------------------------------------------

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
POINT_QUESTIONS = ("Point to the {label}.", "Point to all the {label}.", "Where are the {label}?",
                   "Show me every {singular} in the image.", "Point to any {label} in the image.")
COUNT_QUESTIONS = ("How many {label} are there?", "Count the {label} in the image.", "How many {label} are in the image?",
                   "What is the number of {label}?")


def place_objects(rng: np.random.Generator, kinds: list[tuple[str, str, str]], radius: tuple[float, float],
                  gap: float = 1.5, attempts: int = 200) -> list[SceneObject]:
    """Put one object per (shape, colour, texture) at random, none overlapping (centres at least r1 + r2 + gap
    apart, in percent), all inside the image; shrinks the radii and retries when they do not fit."""
    low, high = radius
    for _ in range(20):
        objects: list[SceneObject] = []
        for shape, colour, texture in kinds:
            r = float(rng.uniform(low, high))
            for _ in range(attempts):
                x, y = rng.uniform(r + 1, 99 - r, size=2)
                if all(math.hypot(x - o.x, y - o.y) >= r + o.radius + gap for o in objects):
                    objects.append(SceneObject(shape, colour, round(float(x), 1), round(float(y), 1), round(r, 1),
                                               texture))
                    break
            else:
                break
        if len(objects) == len(kinds):
            return objects
        low, high = low * 0.9, high * 0.9
    raise ValueError(f"could not place {len(kinds)} objects without overlap")


@dataclass(frozen=True)
class Query:
    """What a pointing / counting question asks for: a colour, a shape, or both (None = any)."""

    colour: str | None
    shape: str | None

    def matches(self, obj: SceneObject) -> bool:
        return (self.colour is None or obj.colour == self.colour) and (self.shape is None or obj.shape == self.shape)

    @property
    def singular(self) -> str:
        return " ".join(w for w in (self.colour, self.shape or "shape") if w)

    @property
    def label(self) -> str:
        """The plural the question and the answer use: 'red circles', 'triangles', 'green shapes'."""
        return self.singular + "s"

    @classmethod
    def from_label(cls, label: str) -> Query:
        """The query a label names: 'red circles' -> Query('red', 'circle'), 'green shapes' -> Query('green', None)."""
        words = label.removesuffix("s").split()
        colour = words[0] if words[0] in COLOURS else None
        shape = words[-1] if words[-1] in SHAPES else None
        if (not label.endswith("s") or len(words) != (colour is not None) + 1
                or words[-1] not in (*SHAPES, "shape")):
            raise ValueError(f"not a label of a query: {label!r}")
        return cls(colour, shape)


def random_query(rng: np.random.Generator) -> Query:
    how = int(rng.integers(3))
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    return Query(colour if how != 1 else None, shape if how != 2 else None)


def counting_scene(rng: np.random.Generator, query: Query, count: int, distractors: int) -> list[SceneObject]:
    """``count`` objects matching ``query`` and ``distractors`` that do not, placed without overlap."""
    kinds = []
    while len(kinds) < count + distractors:
        kind = (str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(TEXTURES)))
        if query.matches(SceneObject(kind[0], kind[1], 0, 0, 0)) == (len(kinds) < count):
            kinds.append(kind)
    total = count + distractors
    radius = (4.0, 6.0) if total > 10 else (5.0, 8.0) if total > 5 else (7.0, 11.0)
    order = rng.permutation(total)
    return place_objects(rng, [kinds[i] for i in order], radius)


def _count_distribution(rng: np.random.Generator, max_count: int) -> int:
    """0 one time in eight (the "There are none." answers), else uniform over 1..max_count."""
    return 0 if rng.random() < 0.125 else int(rng.integers(1, max_count + 1))


def pointing_example(rng: np.random.Generator, size: int = 56, max_count: int = 10, max_distractors: int = 6,
                     min_count: int | None = None, min_distractors: int = 0, render: bool = True) -> Example:
    """One scene with 0..max_count objects of a queried class among min_distractors..max_distractors others, and
    three annotations: pointing at the class, counting it by pointing (PixMo-Points style), and pointing at another
    class. min_count None: 0 one time in eight, else uniform 1..max_count (the held-out distribution); an integer:
    uniform min_count..max_count (the curriculum's easy scenes). meta: label, points (every matching object's centre,
    0-100), count, objects. render False: image None (the oracle harness reads ``meta["objects"]`` alone; the
    background's random numbers are drawn all the same, so the scenes are those of the rendered stream)."""
    query = random_query(rng)
    count = _count_distribution(rng, max_count) if min_count is None else int(rng.integers(min_count, max_count + 1))
    objects = counting_scene(rng, query, count, int(rng.integers(min_distractors, max_distractors + 1)))
    points = [(o.x, o.y) for o in objects if query.matches(o)]
    other = random_query(rng)
    other_points = [(o.x, o.y) for o in objects if other.matches(o)]
    fill = {"label": query.label, "singular": query.singular}
    messages = [
        [Message(str(rng.choice(POINT_QUESTIONS)).format(**fill), points_to_text(points, query.label), "pointing")],
        [Message(str(rng.choice(COUNT_QUESTIONS)).format(**fill), count_to_text(points, query.label),
                 "point_count")],
        [Message(f"Point to the {other.label}.", points_to_text(other_points, other.label), "pointing")],
    ]
    if render:
        image = render_scene(objects, size=size, rng=rng)
    else:  # the background's random numbers all the same, so that the next scenes are those of the rendered stream
        rng.integers(90, 170, size=3)
        image = None
    return Example(image, messages, "pointing",
                   {"label": query.label, "points": points, "count": len(points), "objects": objects,
                    "other_label": other.label, "other_points": other_points})


def pointing_examples(n: int, seed: int = 0, split: str = "train", size: int = 56, max_count: int = 15,
                      max_distractors: int = 6) -> list[Example]:
    """n ``pointing_example`` scenes of the (seed, split) stream (the first k of n are those of n=k)."""
    return examples_of(lambda rng: pointing_example(rng, size, max_count, max_distractors), n, seed, split)


# --------------------------------------------------------------------------------------------------------------------
# A second renderer, for held-out checks only (never used in training): are the eyes tuned to one way of drawing?
# --------------------------------------------------------------------------------------------------------------------

SHIFT_BACKGROUNDS = ("plain", "noisy")


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """The pixels whose centres fall inside the shape (the geometry of ``_draw_shape``)."""
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - cx) <= 0.85 * r) & (np.abs(yy - cy) <= 0.85 * r)
    # the triangle of _draw_shape: apex (cx, cy - r), base at cy + 0.8 r from cx - r to cx + r
    return (yy <= cy + 0.8 * r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 1.8)


def render_scene_shifted(objects: list[SceneObject], size: int = 112, rng: np.random.Generator | None = None,
                         background: str = "plain") -> np.ndarray:
    """The same objects drawn another way -> uint8 [size, size, 3]: one sample per pixel (hard, aliased edges, where
    ``render_scene`` draws at 4x and smooths), every object's colour jittered by up to 20 per channel, and a
    background the training scenes never have: "plain", one grey level (40-200, not a tint of 90-170), or "noisy",
    a tint with Gaussian noise (sd 25) on every pixel. Outlines and shadows as ``render_scene``'s textures."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if background not in SHIFT_BACKGROUNDS:
        raise ValueError(f"background must be one of {SHIFT_BACKGROUNDS}, got {background!r}")
    if background == "plain":
        canvas = np.full((size, size, 3), float(rng.integers(40, 201)))
    else:
        canvas = rng.integers(90, 171, size=3).astype(float) + rng.normal(0, 25, size=(size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for obj in objects:
        cx, cy, r = (v / 100 * size for v in (obj.x, obj.y, obj.radius))
        if obj.texture == "shadowed":
            canvas[_shape_mask(obj.shape, xx, yy, cx + 0.25 * r, cy + 0.25 * r, r)] = (50, 50, 50)
        inside = _shape_mask(obj.shape, xx, yy, cx, cy, r)
        canvas[inside] = np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-20, 21, size=3), 0, 255)
        if obj.texture == "outlined":
            width = max(1.0, 0.18 * r)
            ring = inside & ~_shape_mask(obj.shape, xx, yy, cx, cy, r - width)
            canvas[ring] = (20, 20, 20) if obj.colour != "black" else (245, 245, 245)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def shifted_pointing_example(rng: np.random.Generator, size: int = 112, max_count: int = 6,
                             max_distractors: int = 4) -> Example:
    """A ``pointing_example`` scene (1..max_count of the class among 0..max_distractors others, all three
    annotations) drawn by ``render_scene_shifted`` at ``size`` px, on a plain or a noisy background in turn at
    random; meta["background"] says which."""
    example = pointing_example(rng, max_count=max_count, max_distractors=max_distractors, min_count=1, render=False)
    background = str(rng.choice(SHIFT_BACKGROUNDS))
    image = render_scene_shifted(example.meta["objects"], size, rng, background)
    return Example(image, example.messages, example.task, example.meta | {"background": background})


def shifted_pointing_examples(n: int, seed: int = 0, size: int = 112, max_count: int = 6,
                              max_distractors: int = 4) -> list[Example]:
    """n ``shifted_pointing_example`` scenes of the "shift" seed stream: held-out scenes of another renderer (the
    shift check of chapter 10; no training stream draws them)."""
    return examples_of(lambda rng: shifted_pointing_example(rng, size, max_count, max_distractors), n, seed, "shift")


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _kind_phrase(count: int, colour: str, shape: str) -> str:
    return f"{_a(colour)} {colour} {shape}" if count == 1 else f"{NUMBER_WORDS[count]} {colour} {shape}s"


def _relation(a: SceneObject, b: SceneObject) -> str:
    """Where a is relative to b, by the larger offset: 'to the left of', 'above', ..."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def dense_caption(objects: list[SceneObject], rng: np.random.Generator) -> str:
    """A long PixMo-Cap-like caption: the total, the counts per kind, where the single ones are, textures and a few
    relations. Deterministic given the rng."""
    kinds: dict[tuple[str, str], list[SceneObject]] = {}
    for o in sorted(objects, key=lambda o: (o.y // (100 / 3), o.x)):
        kinds.setdefault((o.colour, o.shape), []).append(o)
    parts = [f"{_kind_phrase(len(v), c, s)}" for (c, s), v in kinds.items()]
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    total = len(objects)
    sentences = [f"The image shows {NUMBER_WORDS[total]} shape{'s' if total != 1 else ''} on a plain "
                 f"background: {listing}."]
    for (colour, shape), group in kinds.items():
        if len(group) == 1:
            o = group[0]
            extra = {"outlined": " with a dark outline", "shadowed": " that casts a shadow"}.get(o.texture, "")
            sentences.append(f"The {colour} {shape}{extra} is at the {o.region}.")
        else:
            regions = [f"the {r}" for r in sorted({o.region for o in group})]
            where = regions[0] if len(regions) == 1 else ", ".join(regions[:-1]) + " and " + regions[-1]
            sentences.append(f"The {colour} {shape}s are at {where}.")
    singles = [g[0] for g in kinds.values() if len(g) == 1]
    for _ in range(min(2, len(singles) - 1)):
        a, b = (singles[int(i)] for i in rng.permutation(len(singles))[:2])
        sentences.append(f"The {a.colour} {a.shape} is {_relation(a, b)} the {b.colour} {b.shape}.")
    return " ".join(sentences)


def spoken_transcript(objects: list[SceneObject], rng: np.random.Generator) -> str:
    """A "transcript" variant, as PixMo-Cap's annotators spoke their descriptions: informal, fillers, same facts."""
    fillers = ("um, ", "uh, ", "so ", "okay, ", "")
    said = []
    for o in sorted(objects, key=lambda o: o.x):
        said.append(f"{str(rng.choice(fillers))}there's {_a(o.colour)} {o.colour} {o.shape} at the {o.region}")
    return f"{str(rng.choice(('So', 'Okay so', 'Alright')))} this is a picture of some shapes. " + \
        ", and ".join(said) + f". That's {NUMBER_WORDS[len(objects)]} in total, I think."


def caption_example(rng: np.random.Generator, size: int = 56, max_objects: int = 8) -> Example:
    """One stage-1 scene with a dense caption and a spoken transcript (two annotations per image, as Molmo's caption
    + one transcript). meta: objects."""
    total = int(rng.integers(1, max_objects + 1))
    kinds = [(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)[:6])), str(rng.choice(TEXTURES)))
             for _ in range(total)]
    objects = place_objects(rng, kinds, (6.0, 10.0) if total > 4 else (8.0, 13.0))
    messages = [[Message(None, dense_caption(objects, rng), "long_caption")],
                [Message(None, spoken_transcript(objects, rng), "transcript")]]
    return Example(render_scene(objects, size=size, rng=rng), messages, "caption", {"objects": objects})


def caption_examples(n: int, seed: int = 0, split: str = "train", size: int = 56,
                     max_objects: int = 8) -> list[Example]:
    """n ``caption_example`` scenes of the (seed, split) stream."""
    return examples_of(lambda rng: caption_example(rng, size, max_objects), n, seed, split)


def scene_questions(objects: list[SceneObject], rng: np.random.Generator) -> list[tuple[str, str]]:
    """Free-form (AskModelAnything-like) questions with answers computed from the objects."""
    a = objects[int(rng.integers(len(objects)))]
    leftmost, lowest = min(objects, key=lambda o: o.x), max(objects, key=lambda o: o.y)
    colours = sorted({o.colour for o in objects})
    absent = [c for c in COLOURS if c not in colours]
    qa = [
        (f"What colour is the {a.shape} at the {a.region}?", f"It is {a.colour}."),
        (f"What is at the {a.region} of the image?", f"{_a(a.colour).capitalize()} {a.colour} {a.shape}."),
        ("Which shape is furthest to the left?", f"The {leftmost.colour} {leftmost.shape}."),
        ("Which shape is closest to the bottom?", f"The {lowest.colour} {lowest.shape}."),
        ("What colours do you see?", (", ".join(colours[:-1]) + (" and " if len(colours) > 1 else "")
                                      + colours[-1]).capitalize() + "."),
        ("How many shapes are there in total?", f"There are {len(objects)}." if len(objects) != 1 else "There is 1."),
    ]
    if absent:
        c = str(rng.choice(absent))
        qa.append((f"Is there anything {c} in the image?", f"No, there is nothing {c}."))
    if len(objects) > 1:
        b = next(o for o in objects[::-1] if o is not a)
        qa.append((f"Where is the {a.colour} {a.shape} compared to the {b.colour} {b.shape}?",
                   f"It is {_relation(a, b)} the {b.colour} {b.shape}."))
    return qa


def qa_example(rng: np.random.Generator, size: int = 56, questions: int = 4) -> Example:
    """One scene with several free-form QA annotations (style user_qa). meta: objects.

    Each scene has objects of distinct (colour, shape), so "the red circle" is never ambiguous."""
    objects = random_scene(rng, max_objects=5, min_objects=2)
    qa = scene_questions(objects, rng)
    picked = rng.permutation(len(qa))[:questions]
    messages = [[Message(qa[int(i)][0], qa[int(i)][1], "user_qa")] for i in picked]
    return Example(render_scene(objects, size=size, rng=rng), messages, "scene_qa", {"objects": objects})


def qa_examples(n: int, seed: int = 0, split: str = "train", size: int = 56, questions: int = 4) -> list[Example]:
    """n ``qa_example`` scenes of the (seed, split) stream."""
    return examples_of(lambda rng: qa_example(rng, size, questions), n, seed, split)

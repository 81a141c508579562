"""Analog clocks to read, PixMo-Clocks style, made offline and deterministic from a seed (chapter 07).

PixMo-Clocks (allenai/pixmo-clocks, ~800k rows) renders hundreds of real watch faces (``watchface_id``) at random
times, with or without a seconds hand, and asks what time it is; Molmo trains on it with the style ``clocks`` and its
eval reads the answer as "H:MM(:SS)": exact, or "close" when the hour is right and the minutes within 3.

    Example(image=uint8 [56, 56, 3],
            messages=[[Message("What time is shown?", "3:47", "clocks")]],
            task="clocks", meta={"hour": 3, "minute": 47, "second": None, "face": "station"})

What we simplify: eight hand-made faces (``FACES``: dial and rim colours, round or square, marks as bars, dots,
minute ticks or quarters, with or without numerals, hand colours and widths) instead of real watch designs, always
centred and upright, drawn with PIL at 4x and downsampled (as ``synthetic.render_scene``). The hands move as on a
real clock: the hour hand stands at (h % 12 + m / 60) * 30 degrees, the minute hand at (m + s / 60) * 6 degrees;
the seconds hand is drawn under the other two, so that it never hides the answer.

``read_clock`` reads the hands back from the pixels alone; the tests use it to check that every picture shows the
time its answer says.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..prompts import Message
from .corpus import CLOCK_PROMPTS
from .examples import Example, examples_of

RGB = tuple[int, int, int]
SECONDS_PROBABILITY = 0.2  # share of clocks with a seconds hand, answered "H:MM:SS" (as corpus.clock_line)
SCALE = 4  # drawn at 4x the output size, then downsampled: smooth edges at 56 px

# Lengths, as fractions of the dial's radius R.
HOUR_LENGTH, MINUTE_LENGTH, SECOND_LENGTH, TAIL = 0.5, 0.78, 0.86, 0.1
HUB = 0.08  # the disc that covers the hands' pivot, in the hands' colour


@dataclass(frozen=True)
class ClockFace:
    """How one clock looks. Widths are fractions of the dial's radius R."""

    name: str
    dial: RGB
    rim: RGB
    rim_width: float  # 0: no rim
    marks: str  # "bars" (12), "minutes" (60 ticks, every 5th longer), "dots" (12), "quarters" (4), "none"
    numerals: bool  # 1..12 inside the marks
    ink: RGB  # marks and numerals
    hands: RGB  # hour and minute hands (and the hub)
    hour_width: float
    minute_width: float
    seconds: RGB  # the seconds hand, when drawn
    shape: str = "round"  # or "square"


FACES = {face.name: face for face in (
    ClockFace("classic", (250, 250, 244), (35, 35, 35), 0.06, "minutes", True, (30, 30, 30), (20, 20, 20), 0.11,
              0.07, (215, 30, 30)),
    ClockFace("station", (255, 255, 255), (125, 125, 130), 0.10, "bars", False, (15, 15, 15), (15, 15, 15), 0.13,
              0.09, (225, 25, 25)),
    ClockFace("night", (25, 30, 48), (185, 185, 195), 0.05, "dots", False, (230, 230, 230), (240, 240, 240), 0.11,
              0.07, (255, 150, 30)),
    ClockFace("minimal", (238, 230, 212), (238, 230, 212), 0.0, "quarters", False, (90, 80, 70), (70, 60, 50), 0.09,
              0.06, (200, 60, 40)),
    ClockFace("kitchen", (255, 222, 90), (40, 90, 200), 0.09, "bars", True, (40, 60, 140), (30, 45, 125), 0.12, 0.08,
              (225, 30, 30)),
    ClockFace("pilot", (28, 68, 48), (20, 20, 20), 0.07, "minutes", True, (235, 235, 220), (250, 250, 232), 0.11,
              0.07, (255, 205, 0)),
    ClockFace("square", (232, 238, 250), (60, 60, 72), 0.07, "bars", False, (60, 60, 72), (40, 40, 60), 0.12, 0.08,
              (230, 50, 100), "square"),
    ClockFace("ocean", (30, 82, 160), (212, 212, 218), 0.06, "minutes", False, (255, 255, 255), (255, 255, 255), 0.11,
              0.07, (255, 95, 60)),
)}


# --------------------------------------------------------------------------------------------------------------------
# 1. Drawing.
# --------------------------------------------------------------------------------------------------------------------


def hand_angles(hour: int, minute: int, second: int | None = None) -> tuple[float, float, float | None]:
    """Angles in degrees, clockwise from 12: hour (h % 12 + m / 60 + s / 3600) * 30, minute (m + s / 60) * 6,
    second s * 6 (None without seconds)."""
    s = second or 0
    hour_angle = (hour % 12 + minute / 60 + s / 3600) * 30
    minute_angle = (minute + s / 60) * 6
    return hour_angle, minute_angle, None if second is None else second * 6.0


def _polar(cx: float, cy: float, r: float, degrees: float) -> tuple[float, float]:
    """The point at distance r from (cx, cy) in the direction of a clock angle (0 = up, clockwise)."""
    a = math.radians(degrees)
    return cx + r * math.sin(a), cy - r * math.cos(a)


def _hand(draw: ImageDraw.ImageDraw, cx: float, cy: float, degrees: float, length: float, width: float,
          colour: RGB) -> None:
    """A hand from a short tail behind the pivot to its tip, tapering to 70% of its width (a polygon)."""
    a = math.radians(degrees)
    ux, uy, nx, ny = math.sin(a), -math.cos(a), math.cos(a), math.sin(a)  # along the hand, across it
    base, tip = width / 2, width * 0.35
    tail = TAIL / MINUTE_LENGTH * length if length > 0 else 0
    x0, y0 = cx - tail * ux, cy - tail * uy
    x1, y1 = cx + length * ux, cy + length * uy
    draw.polygon([(x0 + base * nx, y0 + base * ny), (x1 + tip * nx, y1 + tip * ny),
                  (x1 - tip * nx, y1 - tip * ny), (x0 - base * nx, y0 - base * ny)], fill=colour)


@functools.lru_cache(maxsize=16)
def _font(pixels: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at a given pixel size (no system fonts: the same glyphs everywhere)."""
    return ImageFont.load_default(size=max(pixels, 4))


def _dial(draw: ImageDraw.ImageDraw, face: ClockFace, cx: float, cy: float, radius: float) -> None:
    """Rim and dial, marks, numerals: everything but the hands."""
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    inner = radius * (1 - face.rim_width)
    inner_box = [cx - inner, cy - inner, cx + inner, cy + inner]
    if face.shape == "square":
        draw.rounded_rectangle(box, radius * 0.12, fill=face.rim)
        draw.rounded_rectangle(inner_box, inner * 0.1, fill=face.dial)
    else:
        draw.ellipse(box, fill=face.rim)
        draw.ellipse(inner_box, fill=face.dial)
    outer = inner * 0.95
    for k in range(60 if face.marks == "minutes" else 12):
        degrees = k * (6 if face.marks == "minutes" else 30)
        on_hour = face.marks != "minutes" or k % 5 == 0
        if face.marks == "quarters" and k % 3:
            continue
        if face.marks == "dots":
            x, y = _polar(cx, cy, outer * 0.92, degrees)
            d = radius * (0.07 if k % 3 == 0 else 0.045)
            draw.ellipse([x - d, y - d, x + d, y + d], fill=face.ink)
        elif face.marks != "none":
            length = 0.16 if on_hour else 0.06
            width = radius * (0.06 if on_hour else 0.02) * (1.5 if face.marks == "quarters" else 1)
            draw.line([_polar(cx, cy, outer * (1 - length), degrees), _polar(cx, cy, outer, degrees)],
                      fill=face.ink, width=max(1, round(width)))
    if face.numerals:
        font = _font(round(radius * 0.2))
        for k in range(1, 13):
            draw.text(_polar(cx, cy, outer * 0.68, k * 30), str(k), fill=face.ink, font=font, anchor="mm")


def render_clock(hour: int, minute: int, second: int | None = None, size: int = 56,
                 face: ClockFace | str = "classic", rng: np.random.Generator | None = None) -> np.ndarray:
    """An analog clock showing hour:minute(:second) -> uint8 [size, size, 3].

    The dial is centred; rng (optional) picks the background colour and the dial's radius (40-47% of the side,
    else 45% on grey). The seconds hand (only when ``second`` is given) goes under the hour and minute hands, so it
    never hides them; the hub goes on top in the hands' colour, so the centre pixel always has that colour. The hands
    are at least 2.5 (hour) and 1.6 (minute) output pixels wide: a 56 px clock still shows both."""
    face = FACES[face] if isinstance(face, str) else face
    if not (1 <= hour <= 12 and 0 <= minute < 60 and (second is None or 0 <= second < 60)):
        raise ValueError(f"need hour 1-12, minute and second 0-59, got {hour}, {minute}, {second}")
    side = size * SCALE
    background = tuple(int(v) for v in rng.integers(60, 200, size=3)) if rng is not None else (128, 128, 128)
    radius = side * (float(rng.uniform(0.40, 0.47)) if rng is not None else 0.45)
    canvas = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(canvas)
    cx = cy = side / 2
    _dial(draw, face, cx, cy, radius)
    hour_angle, minute_angle, second_angle = hand_angles(hour, minute, second)
    if second_angle is not None:  # under the others: it never hides the hour or the minute
        _hand(draw, cx, cy, second_angle, SECOND_LENGTH * radius, max(0.025 * radius, SCALE), face.seconds)
    _hand(draw, cx, cy, hour_angle, HOUR_LENGTH * radius, max(face.hour_width * radius, 2.5 * SCALE), face.hands)
    _hand(draw, cx, cy, minute_angle, MINUTE_LENGTH * radius, max(face.minute_width * radius, 1.6 * SCALE),
          face.hands)
    hub = HUB * radius
    draw.ellipse([cx - hub, cy - hub, cx + hub, cy + hub], fill=face.hands)
    return np.asarray(canvas.resize((size, size), Image.LANCZOS))


# --------------------------------------------------------------------------------------------------------------------
# 2. Examples.
# --------------------------------------------------------------------------------------------------------------------


def clock_text(hour: int, minute: int, second: int | None = None) -> str:
    """The answer as PixMo-Clocks and the course write it: 'H:MM', or 'H:MM:SS' when a seconds hand is drawn."""
    return f"{hour}:{minute:02d}" + ("" if second is None else f":{second:02d}")


def clock_example(rng: np.random.Generator, size: int = 56, seconds_probability: float = SECONDS_PROBABILITY
                  ) -> Example:
    """One clock at a uniformly random time (hour 1-12, minute 0-59), a seconds hand with ``seconds_probability``,
    with one question (style ``clocks``) answered 'H:MM(:SS)'. Image uint8 [size, size, 3]; meta: hour, minute,
    second (None without a seconds hand), face (a FACES name)."""
    names = list(FACES)
    hour, minute, second = int(rng.integers(1, 13)), int(rng.integers(60)), int(rng.integers(60))
    second = second if rng.random() < seconds_probability else None
    face = names[int(rng.integers(len(names)))]
    question = CLOCK_PROMPTS[int(rng.integers(len(CLOCK_PROMPTS)))]
    image = render_clock(hour, minute, second, size=size, face=face, rng=rng)
    return Example(image, [[Message(question, clock_text(hour, minute, second), "clocks")]], "clocks",
                   {"hour": hour, "minute": minute, "second": second, "face": face})


def clock_examples(n: int, seed: int = 0, split: str = "train", size: int = 56,
                   seconds_probability: float = SECONDS_PROBABILITY) -> list[Example]:
    """n ``clock_example`` clocks of the (seed, split) stream. Deterministic: the same (seed, split) gives the same
    examples, and the first k of n are those of n=k."""
    return examples_of(lambda rng: clock_example(rng, size, seconds_probability), n, seed, split)


# --------------------------------------------------------------------------------------------------------------------
# 3. Reading a clock back from its pixels (what the tests check the pictures with).
# --------------------------------------------------------------------------------------------------------------------


def _ray_reach(mask: np.ndarray, r0: float, r1: float, widen: bool, step_deg: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray]:
    """For rays from the image centre every ``step_deg`` degrees (clockwise from up): how far, in pixels, the
    hand pixels of ``mask`` (bool [H, W]) reach without a gap from r0 on -> angles [A], reach [A] (0 where the ray
    does not start on a hand). widen: a point of a ray is on a hand when any of the 4 pixels around it is (a
    1-2 pixel wide minute hand then never falls between the samples); else the nearest pixel decides."""
    h, w = mask.shape
    angles = np.arange(0, 360, step_deg)
    radii = np.arange(r0, r1, 0.25)
    a = np.radians(angles)[:, None]
    xs = w / 2 - 0.5 + radii * np.sin(a)  # [A, R], in pixel-centre coordinates
    ys = h / 2 - 0.5 - radii * np.cos(a)
    if widen:
        x0, y0 = np.clip(np.floor(xs).astype(int), 0, w - 2), np.clip(np.floor(ys).astype(int), 0, h - 2)
        on = mask[y0, x0] | mask[y0 + 1, x0] | mask[y0, x0 + 1] | mask[y0 + 1, x0 + 1]
    else:
        on = mask[np.clip(np.rint(ys).astype(int), 0, h - 1), np.clip(np.rint(xs).astype(int), 0, w - 1)]
    unbroken = np.cumprod(on, axis=1).astype(bool)  # still on the hand at this radius
    return angles, np.where(unbroken, radii, 0.0).max(axis=1)


def _circular_mean(angles: np.ndarray) -> float:
    """The mean direction of angles in degrees (so that 359 and 1 average to 0, not 180)."""
    a = np.radians(angles)
    return float(np.degrees(np.arctan2(np.sin(a).mean(), np.cos(a).mean())) % 360)


def read_clock(image: np.ndarray, seconds: RGB | None = None) -> tuple[int, float]:
    """Read an upright, centred analog clock from its pixels -> (hour 1-12, minutes past the hour as a float in
    [0, 60)). image: uint8 [H, W, 3].

    The hands' colour is the centre pixel's (the hub), the dial's the median of a ring around it; a pixel is "hand"
    when it lies nearer the hands' colour than the dial's (and than ``seconds``, the seconds hand's colour, when
    given). Along rays from the centre, the minute hand is the one that reaches furthest; the hour hand is the
    furthest-reaching one at least 15 degrees away from it or, when none reaches 15% of the image's side, it lies
    under the minute hand. The minutes come from the minute hand's angle, the hour from the hour hand's, which
    stands at (h + minutes / 60) * 30 degrees."""
    img = image.astype(np.float32)
    h, w, _ = img.shape
    side = min(h, w)
    hands = np.median(img[h // 2 - 1:h // 2 + 1, w // 2 - 1:w // 2 + 1].reshape(-1, 3), axis=0)
    yy, xx = np.mgrid[:h, :w]
    ring = np.abs(np.hypot(yy - h / 2 + 0.5, xx - w / 2 + 0.5) - 0.3 * side) < 1
    dial = np.median(img[ring], axis=0)
    to_hands = np.linalg.norm(img - hands, axis=-1)
    mask = to_hands < np.linalg.norm(img - dial, axis=-1)
    if seconds is not None:
        mask &= to_hands < np.linalg.norm(img - np.asarray(seconds, np.float32), axis=-1)
    angles, reach = _ray_reach(mask, r0=0.07 * side, r1=0.48 * side, widen=True)
    minute_angle = _circular_mean(angles[reach >= reach.max() - 0.5])
    _, reach = _ray_reach(mask, r0=0.07 * side, r1=0.48 * side, widen=False)  # the wide hour hand needs no help
    apart = np.abs((angles - minute_angle + 180) % 360 - 180) > 15
    hour_reach = np.where(apart, reach, 0.0)
    if hour_reach.max() >= 0.15 * side:  # the hour hand reaches 0.2 * side (half a radius of 40-47% of it)
        hour_angle = _circular_mean(angles[hour_reach >= hour_reach.max() - 0.5])
    else:
        hour_angle = minute_angle
    minute = minute_angle / 6
    total = (round(hour_angle / 30 - minute / 60) % 12) * 60 + minute  # minutes past 12 o'clock
    return int(total // 60) or 12, float(total % 60)

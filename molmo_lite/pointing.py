"""Pointing and counting as text: Molmo's formats, a parser that never raises, matching and F1 (chapter 06).

Molmo has no detection head. It points by *writing* coordinates, as ordinary tokens, in a small HTML-like format
(allenai/molmo, olmo/data/data_formatter.py, ``DataFormatter.points_to_text`` and ``format_points``):

    one point   <point x="61.5" y="40.6" alt="red circle">red circle</point>
    several     <points x1="10.0" y1="20.5" x2="70.3" y2="80.1" alt="circles">circles</points>
    none        There are none.
    counting    Counting the <points x1="..." y1="..." ... alt="circles">circles</points> shows a total of 2.

Coordinates are percent of the image width and height (0-100, resolution independent), rounded to one decimal,
printed ``%.1f`` and sorted by x, then y. ``alt`` and the text are the label (``alt`` may differ in Molmo's
point-explanation data, where the text is the words of a sentence that the point illustrates).

Reading them back (allenai/molmo, olmo/util.py ``extract_points``) Molmo runs a few regexes over the whole answer:
``x\\d*="num" y\\d*="num"`` pairs, ``(x, y)`` pairs and a legacy 0-1000 form, and drops a point with a coordinate
above 100. ``parse_points`` here reads the tags instead (any attribute order, any number of indices, spaces or
newlines around ``=``, single quotes, several tags in prose, truncated tags), and Molmo's ``(61.5, 40.6)`` pairs
outside tags (with a decimal point, so that "(1, 2)" in prose is not a point); it skips the legacy 0-1000 form that
no released model writes. It never raises: None, bytes, broken or huge input give ``[]``, with no regex that can
backtrack catastrophically. Labels may not contain ``<``, ``>`` or ``"``: Molmo writes them unescaped, so such a
label could not be read back (``points_to_text`` refuses it).

Evaluation follows Molmo's ``PointingEval`` and ``PointCountEval`` (olmo/eval/evaluators.py):

* pointing, per example: ground truth empty -> precision = recall = F1 = 1 if nothing was predicted, else 0; an answer
  that is not exactly one tag (or "(x, y)" lines) -> 0; otherwise Hungarian matching on Euclidean distance, and a
  matched prediction counts when it lies inside its ground-truth object's mask (pixmo-points-eval has masks). Without
  masks we count it when it is within ``threshold`` percent of the image diagonal. Scores are averaged over examples.
* counting: lower-case, strip the final ".", read the last word as an integer or a number word, else
  "a total of N", else "none" -> 0; "correct" (exact, the reported accuracy) and "close" (off by at most one).

Quirks of the released code (docs/molmo_recipe.md §10), decided deliberately:

* (2) One loader inverted the pointing/counting mode flag. Here there is no flag: the caller picks the answer by name,
  ``points_to_text`` for pointing, ``count_to_text`` for counting (pixmo-points' ``collection_method == "counting"``
  goes to ``count_to_text``).
* (3) The pointing eval compared predictions in pixels with ground truth in 0-100. Here predictions and ground truth
  are both 0-100 points; ``match_points`` converts both to pixels with the same image size, or neither.
* (5) The "none" regex ``".*\\bnone\\b.*"`` was not a raw string (``\\b`` became a backspace), so "There are none."
  never counted as 0. ``parse_count`` uses a real word boundary: "There are none." -> 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 5.0  # percent of the image diagonal within which a matched prediction counts (no masks)
NONE_TEXT = "There are none."
NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # Molmo's WORD_TO_NUM


@dataclass(frozen=True)
class Point:
    """One point read from an answer: x, y in percent of the width / height (0-100), its tag's alt and text."""

    x: float
    y: float
    alt: str = ""
    text: str = ""


# --------------------------------------------------------------------------------------------------------------------
# Writing: points -> Molmo's text.
# --------------------------------------------------------------------------------------------------------------------


def as_xy(points: Any) -> np.ndarray:
    """Points as a float64 array [N, 2] of (x, y): from Points, (x, y) pairs, {"x": .., "y": ..} dicts (PixMo rows)
    or an [N, 2] array. None or an empty sequence -> [0, 2]."""
    if points is None:
        return np.zeros((0, 2))
    if isinstance(points, np.ndarray) or hasattr(points, "detach"):
        arr = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points, dtype=np.float64)
        if arr.size == 0:
            return np.zeros((0, 2))
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"points must be an [N, 2] array of (x, y), got shape {tuple(arr.shape)}")
        return arr
    rows = []
    for p in points:
        if isinstance(p, Point):
            rows.append((p.x, p.y))
        elif isinstance(p, Mapping):
            rows.append((p["x"], p["y"]))
        else:
            pair = tuple(p)
            if len(pair) != 2:
                raise ValueError(f"a point must be (x, y), got {p!r}")
            rows.append(pair)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def _check_label(label: str, what: str) -> None:
    if not isinstance(label, str):
        raise TypeError(f"{what} must be a str, got {type(label).__name__}")
    bad = sorted(set(label) & set('<>"'))
    if bad:
        raise ValueError(f"{what} {label!r} contains {''.join(bad)!r}: Molmo writes labels unescaped, so it could "
                         "not be read back")


def points_to_text(points: Any, label: str, alt: str | None = None) -> str:
    """Molmo's pointing answer for ``points`` (percent of width / height, 0-100) labelled ``label``.

    Rounded to one decimal, sorted by x then y; ``<point ...>`` for one point, ``<points x1= y1= ...>`` for several,
    "There are none." for zero. ``alt`` defaults to the label. ValueError for coordinates outside 0-100 (pixels passed
    by mistake) or a label with ``<``, ``>`` or ``"``.
    """
    alt = label if alt is None else alt
    _check_label(label, "label")
    _check_label(alt, "alt")
    xy = as_xy(points)
    if len(xy) == 0:
        return NONE_TEXT
    if not (np.isfinite(xy).all() and (xy >= 0).all() and (xy <= 100).all()):
        raise ValueError(f"point coordinates must be percent of the image (0-100), got {xy.tolist()}")
    rounded = sorted((round(float(x), 1), round(float(y), 1)) for x, y in xy)  # Molmo rounds, then sorts
    if len(rounded) == 1:
        x, y = rounded[0]
        return f'<point x="{x:.1f}" y="{y:.1f}" alt="{alt}">{label}</point>'
    coords = " ".join(f'x{i}="{x:.1f}" y{i}="{y:.1f}"' for i, (x, y) in enumerate(rounded, start=1))
    return f'<points {coords} alt="{alt}">{label}</points>'


def count_to_text(points: Any, label: str) -> str:
    """Molmo's counting answer: "Counting the <points ...>label</points> shows a total of N." (a single ``<point>``
    tag for one object), "There are none." for zero. The points come first, the number last."""
    n = len(as_xy(points))
    if n == 0:
        return NONE_TEXT
    return f"Counting the {points_to_text(points, label)} shows a total of {n}."


# --------------------------------------------------------------------------------------------------------------------
# Reading: any text -> points, count. Every pattern below is linear: no nested or adjacent overlapping repeats.
# --------------------------------------------------------------------------------------------------------------------

# An opening tag: its attributes run to the next ">" (or to the next "<" / the end when the tag was cut short).
_OPEN_TAG = re.compile(r"<\s*(points?)\b([^<>]*)(>?)", re.IGNORECASE)
_TEXT_AND_CLOSE = re.compile(r"([^<]*)<\s*/\s*points?\s*>", re.IGNORECASE)
_ALT = re.compile(r"""(?<![\w-])alt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]*))""", re.IGNORECASE)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_COORD = re.compile(rf"""(?<![\w-])([xy])(\d{{0,9}})\s*=\s*(?:(["'])\s*)?({_NUMBER})\s*(?(3)\3)""", re.IGNORECASE)
_PAIR = re.compile(r"\(\s*(\d{1,3}\.\d+)\s*,\s*(\d{1,3}\.\d+)\s*\)")  # Molmo's "(61.5, 40.6)" form


def _as_text(text: Any) -> str | None:
    """str as is, bytes decoded as UTF-8 (bad bytes replaced), anything else None."""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="replace")
    return None


def _valid(x: float, y: float) -> bool:
    return math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 100.0 and 0.0 <= y <= 100.0


def _tag_points(attributes: str, text: str) -> list[Point]:
    """The points of one tag's attribute string: x<i>/y<i> pairs by index, in order of first appearance."""
    alt_match = _ALT.search(attributes)
    alt = ""
    if alt_match:
        alt = next((g for g in alt_match.groups() if g is not None), "")
        start, end = alt_match.span()
        attributes = attributes[:start] + " " * (end - start) + attributes[end:]  # no coordinates inside alt
    coords: dict[str, dict[str, float]] = {}
    for m in _COORD.finditer(attributes):
        axis, index = m.group(1).lower(), m.group(2)
        coords.setdefault(index, {}).setdefault(axis, float(m.group(4)))
    points = []
    for xy in coords.values():
        if "x" in xy and "y" in xy and _valid(xy["x"], xy["y"]):
            points.append(Point(xy["x"], xy["y"], alt, text))
    return points


def _pair_points(text: str, start: int, end: int) -> list[Point]:
    points = []
    for m in _PAIR.finditer(text, start, end):
        x, y = float(m.group(1)), float(m.group(2))
        if _valid(x, y):
            points.append(Point(x, y))
    return points


def _parse(text: str) -> list[Point]:
    points: list[Point] = []
    done = 0  # text before this index has been read
    for tag in _OPEN_TAG.finditer(text):
        if tag.start() < done:
            continue
        points += _pair_points(text, done, tag.start())
        label, done = "", tag.end()
        if tag.group(3):  # a complete opening tag: its text runs to the closing tag
            close = _TEXT_AND_CLOSE.match(text, tag.end())
            if close:
                label, done = close.group(1), close.end()
        points += _tag_points(tag.group(2), label)
    return points + _pair_points(text, done, len(text))


def parse_points(text: Any) -> list[Point]:
    """Every point in a model's answer, in reading order, as ``Point(x, y, alt, text)`` with x, y in 0-100.

    Reads ``<point>`` and ``<points>`` tags anywhere in the text (prose with several tags too) and Molmo's
    "(x, y)" pairs outside tags; drops points with a coordinate outside 0-100 or not finite. Never raises:
    anything unreadable (None, not text, broken tags) gives ``[]``; bytes are decoded as UTF-8.
    """
    try:
        text = _as_text(text)
        return [] if text is None else _parse(text)
    except Exception:  # noqa: BLE001  (the contract is "never raises": a bug must not stop an evaluation)
        return []


_LAST_INT = re.compile(r"[0-9]{1,18}")
_TOTAL = re.compile(r"a total of ([0-9]{1,18})")
_NONE = re.compile(r"\bnone\b")  # raw string: Molmo's "\bnone\b" was a backspace (quirk 5)


def parse_count(text: Any) -> int | None:
    """The count in a model's answer, as Molmo's counting eval reads it, or None when there is none.

    Lower-case, strip the final "."; the last word as an integer or a number word ("zero".."twenty"); else
    "a total of N"; else the word "none" -> 0. Never raises.
    """
    try:
        text = _as_text(text)
        if text is None:
            return None
        answer = text.strip().lower().rstrip(".").strip()
        words = answer.split()
        if words:
            if _LAST_INT.fullmatch(words[-1]):
                return int(words[-1])
            if words[-1] in NUMBER_WORDS:
                return NUMBER_WORDS[words[-1]]
        total = _TOTAL.search(answer)
        if total:
            return int(total.group(1))
        return 0 if _NONE.search(answer) else None
    except Exception:  # noqa: BLE001  (never raises)
        return None


_VALID_FORMAT = re.compile(
    r'(?:\(\s*-?\d+(?:\.\d+)?\s*,\s*-?\d+(?:\.\d+)?\s*\)\n?)+'
    r'|<point\s+x="\s*\d+(?:\.\d+)?"\s+y="\s*\d+(?:\.\d+)?"\s+alt="[^"]*">[^<]*</point>'
    r'|<points\s+(?:x\d+="\s*\d+(?:\.\d+)?"\s+y\d+="\s*\d+(?:\.\d+)?"\s+)+alt="[^"]*">[^<]*</points>'
)


def is_valid_format(text: Any) -> bool:
    """Molmo's pointing-eval format check: the whole answer is one ``<point>`` / ``<points>`` tag, or "(x, y)" lines.
    (Molmo lets alt contain ``"`` and the text ``<``; we do not, as our labels never do.) Never raises."""
    try:
        text = _as_text(text)
        return text is not None and _VALID_FORMAT.fullmatch(text.strip()) is not None
    except Exception:  # noqa: BLE001  (never raises)
        return False


# --------------------------------------------------------------------------------------------------------------------
# Matching and metrics.
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matching:
    """The Hungarian assignment between predictions and ground truth, and which pairs count.

    pairs: (prediction index, ground-truth index) for every assigned pair (min(n_pred, n_gt) of them);
    hits: per pair, whether it counts (within the threshold, or inside the ground-truth object's mask);
    distances: per pair, in pixels (or in 0-100 units without an image size).
    """

    pairs: tuple[tuple[int, int], ...]
    hits: tuple[bool, ...]
    distances: tuple[float, ...]
    n_pred: int
    n_gt: int

    @property
    def matched(self) -> list[tuple[int, int]]:
        """The pairs that count (true positives)."""
        return [pair for pair, hit in zip(self.pairs, self.hits) if hit]

    @property
    def true_positives(self) -> int:
        return sum(self.hits)


def _scale(image_size: tuple[float, float] | None) -> tuple[float, float]:
    """(width, height) that 100 percent maps to; (100, 100) without an image size."""
    if image_size is None:
        return 100.0, 100.0
    width, height = (float(v) for v in image_size)
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise ValueError(f"image_size must be a positive (width, height), got {image_size!r}")
    return width, height


def to_pixels(points: Any, image_size: tuple[float, float] | None = None) -> np.ndarray:
    """0-100 points -> [N, 2] pixel coordinates ``p / 100 * (width, height)`` as Molmo converts them; without an
    image size the points stay in 0-100 units."""
    width, height = _scale(image_size)
    return as_xy(points) / 100.0 * np.array([width, height])


def _inside(point: np.ndarray, mask: np.ndarray) -> bool:
    """Molmo's is_point_in_region: round the pixel position to the nearest integer and look the mask up."""
    x, y = round(float(point[0])), round(float(point[1]))  # Python rounds half to even, as Molmo
    height, width = mask.shape
    return 0 <= x < width and 0 <= y < height and bool(mask[y, x])


def match_points(
    pred: Any,
    gt: Any,
    threshold: float = DEFAULT_THRESHOLD,
    image_size: tuple[float, float] | None = None,
    masks: Sequence[Any] | None = None,
) -> Matching:
    """Match predicted and ground-truth points (both 0-100) one to one with the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``) on their Euclidean distance in pixels.

    Coordinates become pixels with ``image_size = (width, height)``; without it (and without masks) both axes stay
    0-100, so the "image" is a 100 x 100 square. Without masks a pair counts when its distance is at most
    ``threshold`` percent of the image diagonal. With ``masks`` (one boolean [H, W] array per ground-truth point, as
    in pixmo-points-eval; the image size defaults to the masks' size) a pair counts when the prediction lies inside
    its ground-truth object's mask, whatever the distance. As in Molmo, the assignment minimises the total distance
    first and the pairs are judged afterwards.
    """
    from scipy.optimize import linear_sum_assignment

    if masks is not None:
        masks = [np.asarray(m, dtype=bool) for m in masks]
        if len(masks) != len(as_xy(gt)) or any(m.ndim != 2 for m in masks):
            raise ValueError(f"masks must be one 2-D [H, W] array per ground-truth point: {len(masks)} masks for "
                             f"{len(as_xy(gt))} points")
        if image_size is None and masks:
            image_size = (masks[0].shape[1], masks[0].shape[0])
    pred_px, gt_px = to_pixels(pred, image_size), to_pixels(gt, image_size)
    if len(pred_px) == 0 or len(gt_px) == 0:
        return Matching((), (), (), len(pred_px), len(gt_px))
    distances = np.linalg.norm(pred_px[:, None, :] - gt_px[None, :, :], axis=-1)  # [n_pred, n_gt]
    rows, cols = linear_sum_assignment(distances)
    limit = threshold / 100.0 * math.hypot(*_scale(image_size))
    pairs = tuple((int(r), int(c)) for r, c in zip(rows, cols))
    if masks is None:
        hits = tuple(bool(distances[r, c] <= limit) for r, c in pairs)
    else:
        hits = tuple(_inside(pred_px[r], masks[c]) for r, c in pairs)
    return Matching(pairs, hits, tuple(float(distances[r, c]) for r, c in pairs), len(pred_px), len(gt_px))


@dataclass(frozen=True)
class PointingScores:
    """Precision, recall and F1 of one example, or their means over examples."""

    precision: float
    recall: float
    f1: float


def f1_score(precision: float, recall: float) -> float:
    """2PR / (P + R); 0 when either is 0 (Molmo adds 1e-10 to the denominator, which we leave out)."""
    return 0.0 if precision == 0 or recall == 0 else 2 * precision * recall / (precision + recall)


def pointing_metrics(
    pred: Any,
    gt: Any,
    threshold: float = DEFAULT_THRESHOLD,
    image_size: tuple[float, float] | None = None,
    masks: Sequence[Any] | None = None,
    check_format: bool = True,
) -> PointingScores:
    """Precision, recall and F1 of one example with Molmo's rules.

    ``pred``: the model's answer (text, parsed with ``parse_points``) or its points; ``gt``: ground-truth points
    (0-100). Ground truth empty: P = R = F1 = 1 if nothing is predicted, else 0. Text that is not exactly one tag
    (``is_valid_format``; ``check_format=False`` skips this) or no predicted point: 0. Otherwise precision = hits /
    predictions, recall = hits / ground-truth points, hits from ``match_points``.
    """
    text = _as_text(pred) if isinstance(pred, (str, bytes, bytearray, memoryview)) else None
    pred_points = parse_points(text) if text is not None else pred
    n_pred, n_gt = len(as_xy(pred_points)), len(as_xy(gt))
    if n_gt == 0:
        score = float(n_pred == 0)
        return PointingScores(score, score, score)
    if n_pred == 0 or (text is not None and check_format and not is_valid_format(text)):
        return PointingScores(0.0, 0.0, 0.0)
    hits = match_points(pred_points, gt, threshold, image_size, masks).true_positives
    precision, recall = hits / n_pred, hits / n_gt
    return PointingScores(precision, recall, f1_score(precision, recall))


def average_pointing_metrics(scores: Iterable[PointingScores]) -> PointingScores:
    """The mean precision, recall and F1 over examples (Molmo averages per example, not over all points)."""
    scores = list(scores)
    if not scores:
        raise ValueError("average_pointing_metrics needs at least one example")
    return PointingScores(*(float(np.mean([getattr(s, k) for s in scores])) for k in ("precision", "recall", "f1")))


@dataclass(frozen=True)
class CountingScores:
    """correct: the count is exact (Molmo's reported accuracy); close: off by at most one; valid: a count was read.
    0 or 1 for one example, their means over examples."""

    correct: float
    close: float
    valid: float


def counting_metrics(pred: Any, gt: int) -> CountingScores:
    """Score one counting answer (text, read with ``parse_count``, or an int / None) against the true count."""
    count = pred if isinstance(pred, (int, np.integer)) and not isinstance(pred, bool) else parse_count(pred)
    if count is None:
        return CountingScores(0.0, 0.0, 0.0)
    return CountingScores(float(count == gt), float(abs(count - gt) <= 1), 1.0)


def average_counting_metrics(scores: Iterable[CountingScores]) -> CountingScores:
    """Counting accuracy ("correct"), close accuracy and the share of valid answers over examples."""
    scores = list(scores)
    if not scores:
        raise ValueError("average_counting_metrics needs at least one example")
    return CountingScores(*(float(np.mean([getattr(s, k) for s in scores])) for k in ("correct", "close", "valid")))


# --------------------------------------------------------------------------------------------------------------------
# Drawing.
# --------------------------------------------------------------------------------------------------------------------


def _image_array(image: Any) -> np.ndarray | None:
    """A displayable [H, W(, C)] array from a PIL image, a path, an array or a [3, H, W] tensor; None stays None."""
    if image is None:
        return None
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        from PIL import Image

        with Image.open(image) as img:
            return np.asarray(img.convert("RGB"))
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.transpose(1, 2, 0)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must be [H, W] or [H, W, C], got shape {arr.shape}")
    return arr


def _axes_for(image: Any, ax: Any) -> tuple[Any, float, float]:
    """The axes (made if None) with the image shown; returns it and the (width, height) that 100 percent maps to."""
    import matplotlib.pyplot as plt

    arr = _image_array(image)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    if arr is None:  # no image: a 100 x 100 square in percent
        ax.set_xlim(0, 100)
        ax.set_ylim(100, 0)
        ax.set_aspect("equal")
        return ax, 100.0, 100.0
    height, width = arr.shape[:2]
    ax.imshow(arr)
    ax.set_axis_off()
    return ax, float(width), float(height)


def _plot_xy(points: Any, width: float, height: float, offset: float) -> np.ndarray:
    """0-100 points -> plot coordinates (pixel edges at -0.5 with imshow)."""
    return as_xy(points) / 100.0 * np.array([width, height]) - offset


def draw_points(image: Any, points: Any, ax: Any = None, color: str = "#ff2d55", marker: str = "o",
                size: float = 70, labels: bool | Sequence[str] = True, title: str | None = None) -> Any:
    """Draw points (0-100) on ``image`` (PIL image, path, array or None for a blank 0-100 square); returns the axes.

    ``labels``: True writes each Point's text (or alt) beside it, a list gives one label per point, False none.
    """
    ax, width, height = _axes_for(image, ax)
    xy = _plot_xy(points, width, height, 0.0 if image is None else 0.5)
    ax.scatter(xy[:, 0], xy[:, 1], s=size, c=color, marker=marker, edgecolors="white", linewidths=1.5, zorder=3)
    if labels is True:
        names = [(p.text or p.alt) if isinstance(p, Point) else "" for p in (points if len(xy) else [])]
    else:
        names = list(labels) if labels else []
    for (x, y), name in zip(xy, names):
        if name:
            ax.annotate(name, (x, y), xytext=(6, -6), textcoords="offset points", fontsize=8, color="white",
                        bbox={"boxstyle": "round,pad=0.2", "fc": color, "ec": "none", "alpha": 0.85}, zorder=4)
    if title:
        ax.set_title(title)
    return ax


def draw_matching(image: Any, pred: Any, gt: Any, threshold: float = DEFAULT_THRESHOLD, ax: Any = None,
                  masks: Sequence[Any] | None = None, title: str | None = None) -> Any:
    """Predictions and ground truth with their matching: ground truth as rings (with the threshold circle when there
    are no masks), predictions as crosses, green when they count, red / orange when they do not; returns the axes."""
    from matplotlib.patches import Circle

    ax, width, height = _axes_for(image, ax)
    offset = 0.0 if image is None else 0.5
    size = None if image is None else (width, height)
    matching = match_points(pred, gt, threshold, size, masks)
    p_xy, g_xy = _plot_xy(pred, width, height, offset), _plot_xy(gt, width, height, offset)
    hit_pred = {i for i, _ in matching.matched}
    hit_gt = {j for _, j in matching.matched}
    radius = threshold / 100.0 * math.hypot(width, height)
    for j, (x, y) in enumerate(g_xy):
        colour = "#34c759" if j in hit_gt else "#ff9500"
        if masks is None:
            ax.add_patch(Circle((x, y), radius, fill=False, ls="--", lw=1, ec=colour, zorder=2))
        ax.scatter([x], [y], s=120, facecolors="none", edgecolors=colour, linewidths=2.5, zorder=3)
    for i, j in matching.matched:
        ax.plot([p_xy[i, 0], g_xy[j, 0]], [p_xy[i, 1], g_xy[j, 1]], color="#34c759", lw=1.5, zorder=2)
    for i, (x, y) in enumerate(p_xy):
        ax.scatter([x], [y], s=70, marker="X", c="#34c759" if i in hit_pred else "#ff3b30", edgecolors="white",
                   linewidths=1, zorder=4)
    if title:
        ax.set_title(title)
    return ax

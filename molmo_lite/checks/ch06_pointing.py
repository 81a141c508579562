"""Chapter 06 exercise checks: pointing and counting as text, compared with molmo_lite.pointing.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading_core).
"""

from __future__ import annotations

import math
import random
from typing import Any

from molmo_lite.grading_core import _compare_on_cases, _student_function, _with_hint, check

LABELS = ("red circle", "dogs", "people in the back", "café tables", "猫", "the 3 boats", "apples")
TOLERANCE = 1e-9


def _random_points(rng: random.Random, n: int) -> list[tuple[float, float]]:
    """n points in 0-100 with two decimals (so rounding matters); now and then two share an x (so y decides)."""
    points = [(round(rng.uniform(0, 100), 2), round(rng.uniform(0, 100), 2)) for _ in range(n)]
    if n >= 2 and rng.random() < 0.3:
        points[1] = (points[0][0], round(rng.uniform(0, 100), 2))
    return points


def _sizes(rng: random.Random, k: int, high: int = 12) -> int:
    """0, 1, 2 points often (the three formats), more now and then."""
    return k % 4 if k % 4 < 3 else rng.randint(3, high)


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 1: parse_points, robust to what models write
# ---------------------------------------------------------------------------------------------------------------------


def _points_mismatch(got: Any, expected: list[tuple[float, float]]) -> str | None:
    """A list of (x, y) numbers equal to the expected ones, in the same order."""
    try:
        pairs = [(float(x), float(y)) for x, y in got]
    except (TypeError, ValueError):
        return f"returned {got!r}, expected a list of (x, y) float pairs like {expected!r}"
    same = len(pairs) == len(expected) and all(
        abs(x - ex) <= TOLERANCE and abs(y - ey) <= TOLERANCE for (x, y), (ex, ey) in zip(pairs, expected))
    return None if same else f"returned {pairs!r}, expected {expected!r}"


def _answers(rng: random.Random, k: int) -> str:
    """A model answer of one of five kinds: pointing, counting, none, prose with several tags, an invalid point."""
    from molmo_lite import pointing

    points, label = _random_points(rng, _sizes(rng, k)), rng.choice(LABELS)
    kind = k % 5
    if kind == 0:
        return pointing.points_to_text(points, label)
    if kind == 1:
        return pointing.count_to_text(points, label)
    if kind == 2:
        others = _random_points(rng, rng.randint(1, 3))
        return (f"I see {pointing.points_to_text(points[:1] or others, label)} near "
                f"{pointing.points_to_text(others, 'a lamp')}, and that is all.")
    if kind == 3:
        return "There are none." if rng.random() < 0.5 else "I cannot see any in this image."
    bad = f'<point x="{rng.uniform(100.1, 400):.1f}" y="{rng.uniform(0, 100):.1f}" alt="{label}">{label}</point>'
    return f"{bad} {pointing.points_to_text(points, label)}"  # a point outside the image, then valid ones


def _messy(rng: random.Random, text: str, k: int) -> Any:
    """An answer as models and APIs hand it over: single quotes, spaces around "=", unquoted numbers, cut short by
    max_new_tokens, bytes, or no text at all (chapter 06, "Reading answers back")."""
    import re

    kind = k % 7
    if kind == 1:
        return text.replace('"', "'")
    if kind == 2:
        return re.sub(r'([xy]\d*)="', lambda m: m.group(1) + rng.choice((" = ", "= ", " =", "=")) + '"', text)
    if kind == 3:
        return re.sub(r'([xy]\d*)="([0-9.]+)"', r"\1=\2", text)
    if kind == 4:
        return text[: rng.randint(0, len(text))]
    if kind == 5:
        return text.encode("utf-8")
    if kind == 6 and k % 14 == 6:
        return rng.choice((None, 42, 3.5))
    return text


def _simple_reader(text: Any) -> Any:
    """Chapter 06's my_parse_points: the clean format only."""
    import re

    points = []
    for tag in re.finditer(r"<points?\s[^>]*>", text):
        coords: dict = {}
        for axis, index, value in re.findall(r'([xy])(\d*)="([0-9.]+)"', tag.group(0)):
            coords.setdefault(index, {})[axis] = float(value)
        points += [(c["x"], c["y"]) for c in coords.values() if c.keys() == {"x", "y"} and max(c.values()) <= 100]
    return points


def _parse_variants(text: Any) -> dict[str, Any]:
    import re

    if not isinstance(text, str):
        return {}
    try:
        simple = _simple_reader(text)
    except Exception:  # noqa: BLE001
        simple = None
    wrong = {"the chapter's reader, which knows the clean format only (double quotes, no spaces around \"=\", a "
             "complete tag)": simple}
    unclosed = [(float(x), float(y)) for x, y in re.findall(
        r"""x\d*\s*=\s*["']?([0-9]+(?:\.[0-9]*)?)["']?\s+y\d*\s*=\s*["']?([0-9]+(?:\.[0-9]*)?)""", text)]
    wrong["a value whose quote is never closed (the answer was cut inside it) read as a number: it does not count"] = [
        p for p in unclosed if max(p) <= 100]
    return {hint: v for hint, v in wrong.items() if v is not None}


@check("06_pointing", "parse_points")
def check_parse_points(namespace: dict) -> None:
    """parse_points(text) returns the (x, y) pairs of molmo_lite.pointing.parse_points on 120 answers: Molmo's
    pointing and counting formats, "There are none.", prose with several tags, points outside 0-100, and the same
    with single quotes, spaces around "=", unquoted numbers, cut short, as bytes, or not text at all."""
    from molmo_lite import pointing

    rng = random.Random(62)
    cases = [(_messy(rng, _answers(rng, k), k),) for k in range(120)]

    def reference(text: Any) -> tuple:
        return [(p.x, p.y) for p in pointing.parse_points(text)], _parse_variants(text)

    student = _student_function(namespace, "parse_points")
    _compare_on_cases("parse_points", ("text",), student, reference, cases, _with_hint(_points_mismatch))


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 2: max_hits_f1
# ---------------------------------------------------------------------------------------------------------------------


def _float_mismatch(got: Any, expected: float) -> str | None:
    try:
        value = float(got)
    except (TypeError, ValueError):
        return f"returned {got!r}, expected the number {expected:.6g}"
    return None if abs(value - expected) <= 1e-6 else f"returned {value:.6g}, expected {expected:.6g}"


def _f1_cases(rng: random.Random, n: int) -> list[tuple]:
    """(pred, gt, threshold): the worked examples, configurations where matching by total distance loses hits,
    jittered copies of the ground truth, extra and missing points, crowds around one point, empty sets."""
    cases = [([], [], 5.0), ([(10.0, 10.0)], [], 5.0), ([], [(10.0, 10.0)], 5.0),
             ([(51.0, 50.0), (49.0, 50.0)], [(50.0, 50.0)], 5.0), ([(17.0, 10.0)], [(10.0, 10.0)], 5.0),
             ([(45.0, 41.0), (40.0, 57.0)], [(41.0, 42.0), (57.0, 41.0)], 5.0)]
    while len(cases) < n:
        if len(cases) % 3 == 0:  # a crowded patch: where the total distance and the number of hits disagree
            k = rng.randint(2, 5)
            gt = [(rng.uniform(40, 60), rng.uniform(40, 60)) for _ in range(k)]
            pred = [(rng.uniform(40, 60), rng.uniform(40, 60)) for _ in range(rng.randint(1, 5))]
            cases.append((pred, gt, rng.choice((3.0, 5.0, 8.0))))
            continue
        gt = _random_points(rng, rng.randint(0, 6))
        noise = rng.choice((0.5, 3.0, 6.0, 12.0))
        pred = [(min(100.0, max(0.0, x + rng.gauss(0, noise))), min(100.0, max(0.0, y + rng.gauss(0, noise))))
                for x, y in gt if rng.random() < 0.8]
        pred += _random_points(rng, rng.randint(0, 2))
        if gt and rng.random() < 0.3:  # a crowd of predictions around one point
            x, y = gt[0]
            pred += [(x + rng.uniform(-2, 2), y + rng.uniform(-2, 2)) for _ in range(2)]
        rng.shuffle(pred)
        cases.append((pred, gt, rng.choice((2.0, 5.0, 10.0))))
    return cases


def _max_hits(pred: list, gt: list, limit: float) -> int:
    """The largest number of one-to-one (prediction, ground truth) pairs within ``limit``: a maximum bipartite
    matching by augmenting paths (Kuhn's algorithm), no assignment solver involved."""
    near = [[j for j, g in enumerate(gt) if math.dist(p, g) <= limit] for p in pred]
    owner: dict[int, int] = {}  # ground-truth point -> the prediction matched to it

    def augment(i: int, seen: set) -> bool:
        for j in near[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(pred)))


@check("06_pointing", "max_hits_f1")
def check_max_hits_f1(namespace: dict) -> None:
    """max_hits_f1(pred, gt, threshold) equals the F1 of a maximum one-to-one matching of the pairs within the
    threshold (found by augmenting paths) on 90 cases: the empty cases, crowded patches where Molmo's matching by
    total distance loses hits, jittered, extra and missing points, crowds around one point."""
    from molmo_lite import pointing

    cases = _f1_cases(random.Random(63), 90)

    def reference(pred: list, gt: list, threshold: float) -> tuple:
        wrong = {"Molmo's matching (Hungarian on the distances, pairs judged afterwards), which can lose hits: "
                 "maximise the number of pairs within the threshold instead":
                 pointing.pointing_metrics(pred, gt, threshold).f1}
        if not gt:
            return float(not pred), wrong
        if not pred:
            return 0.0, wrong
        limit = threshold / 100 * math.hypot(100, 100)
        near = [[math.dist(p, g) <= limit for g in gt] for p in pred]
        greedy_pred, greedy_gt = sum(any(row) for row in near), sum(any(row[j] for row in near) for j in range(len(gt)))
        wrong["a prediction counted for every ground-truth point near it (no one-to-one matching)"] = (
            pointing.f1_score(greedy_pred / len(pred), greedy_gt / len(gt)))
        hits = _max_hits(pred, gt, limit)
        return 2 * hits / (len(pred) + len(gt)), wrong

    student = _student_function(namespace, "max_hits_f1")
    _compare_on_cases("max_hits_f1", ("pred", "gt", "threshold"), student, reference, cases,
                      _with_hint(_float_mismatch))


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 3: hit_radius
# ---------------------------------------------------------------------------------------------------------------------


def _largest_hit_offset(threshold: float, image_size: Any, axis: int) -> float:
    """By bisection on molmo_lite.pointing.pointing_metrics: the largest offset along ``axis`` (0 = x, 1 = y), in
    percent, at which a prediction still hits a ground-truth point at (0, 0)."""
    from molmo_lite import pointing

    def hit(offset: float) -> bool:
        pred = (offset, 0.0) if axis == 0 else (0.0, offset)
        return pointing.pointing_metrics([pred], [(0.0, 0.0)], threshold, image_size=image_size).f1 == 1.0

    low, high = 0.0, 100.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if hit(middle) else (low, middle)
    return low


def _pair_mismatch(got: Any, expected: tuple[float, float]) -> str | None:
    try:
        dx, dy = (float(v) for v in got)
    except (TypeError, ValueError):
        return f"returned {got!r}, expected a pair (dx, dy) like ({expected[0]:.6g}, {expected[1]:.6g})"
    if abs(dx - expected[0]) <= 1e-6 and abs(dy - expected[1]) <= 1e-6:
        return None
    return f"returned ({dx:.6g}, {dy:.6g}), expected ({expected[0]:.6g}, {expected[1]:.6g})"


@check("06_pointing", "hit_radius")
def check_hit_radius(namespace: dict) -> None:
    """hit_radius(threshold, image_size) equals the largest horizontal and vertical offsets (percent of the width
    and of the height) at which molmo_lite.pointing.pointing_metrics still counts a hit, found by bisection, on 30
    cases: no image size (0-100 on both axes), square, landscape, portrait and panorama images, thresholds 1 to 10."""
    rng = random.Random(64)
    cases = [(5.0, None), (5.0, (640, 480)), (5.0, (1000, 1000)), (2.0, (4000, 1000)), (10.0, (480, 640))]
    while len(cases) < 30:
        w = rng.randint(50, 4000)
        h = max(50, min(4000, int(w * rng.choice((1.0, 0.75, 1 / 3, 0.2, 4 / 3, 3.0, 5.0)))))
        cases.append((rng.choice((1.0, 2.5, 5.0, 7.5, 10.0)), rng.choice(((w, h), (w, h), None))))

    def reference(threshold: float, image_size: Any) -> tuple:
        w, h = image_size or (100, 100)
        square = threshold * math.sqrt(2)
        diagonal = threshold / 100 * math.hypot(w, h)
        wrong = {
            "the 0-100 square's radius, threshold * sqrt(2): the image's own diagonal and sides decide":
                (square, square),
            "the axes swapped: a horizontal offset is a percent of the WIDTH": (diagonal / h * 100, diagonal / w * 100),
            "the threshold itself: it is a percent of the image diagonal, not of a side": (threshold, threshold),
        }
        return (_largest_hit_offset(threshold, image_size, 0), _largest_hit_offset(threshold, image_size, 1)), wrong

    student = _student_function(namespace, "hit_radius")
    _compare_on_cases("hit_radius", ("threshold", "image_size"), student, reference, cases,
                      _with_hint(_pair_mismatch))


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 4: parse_count
# ---------------------------------------------------------------------------------------------------------------------


def _count_mismatch(got: Any, expected: int | None) -> str | None:
    if expected is None:
        return None if got is None else f"returned {got!r}, expected None (no count in the answer)"
    if isinstance(got, bool) or not isinstance(got, int):
        return f"returned {got!r}, expected the int {expected}"
    return None if got == expected else f"returned {got!r}, expected {expected}"


def _count_answers(rng: random.Random, n: int) -> list[tuple[str]]:
    from molmo_lite import pointing

    words = list(pointing.NUMBER_WORDS)
    fixed = ["There are none.", "there are none", "3", "12.", "Seven.", "TWENTY", "zero", "I cannot tell.",
             "3 apples", "Counting shows a total of 4 apples.", "A total of 15 cars, I think", "", "None of them."]
    answers = list(fixed)
    while len(answers) < n:
        k = rng.randrange(4)
        if k == 0:
            answers.append(pointing.count_to_text(_random_points(rng, rng.randint(0, 12)), rng.choice(LABELS)))
        elif k == 1:
            answers.append(f"There are {rng.choice(words).capitalize()}.")
        elif k == 2:
            answers.append(f"I count a total of {rng.randint(0, 99)} {rng.choice(LABELS)} here")
        else:
            answers.append(f"{rng.randint(0, 50)}")
    return [(a,) for a in answers]


@check("06_pointing", "parse_count")
def check_parse_count(namespace: dict) -> None:
    """parse_count(text) equals molmo_lite.pointing.parse_count on 50 answers: counting answers, bare numbers,
    number words, "a total of N" in prose, "There are none." and answers with no count."""
    from molmo_lite import pointing

    def reference(text: str) -> tuple:
        expected = pointing.parse_count(text)
        wrong = {}
        if expected == 0 and "none" in text.lower():
            wrong["\"There are none.\" read as no count: the word none means 0 (Molmo's regex for it was a non-raw "
                  "string and never matched; a raw r\"\\bnone\\b\" does)"] = None
        return expected, wrong

    student = _student_function(namespace, "parse_count")
    _compare_on_cases("parse_count", ("text",), student, reference, _count_answers(random.Random(64), 50),
                      _with_hint(_count_mismatch))

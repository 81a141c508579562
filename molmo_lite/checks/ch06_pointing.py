"""Chapter 06 exercise checks: pointing and counting as text, compared with molmo_lite.pointing.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from molmo_lite.grading import _compare_on_cases, _student_function, _with_hint, check

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


def _text_mismatch(got: Any, expected: str) -> str | None:
    if not isinstance(got, str):
        return f"returned a {type(got).__name__}, expected the str {expected!r}"
    return None if got == expected else f"returned {got!r}, expected {expected!r}"


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 1: points_to_text
# ---------------------------------------------------------------------------------------------------------------------


def _format_variants(points: list[tuple[float, float]], label: str) -> dict[str, str]:
    """Plausible wrong answers, each with the mistake it shows."""
    ordered = sorted((round(x, 1), round(y, 1)) for x, y in points)
    unsorted = [(round(x, 1), round(y, 1)) for x, y in points]

    def tag(pts: list[tuple[float, float]], start: int = 1, fmt: Callable[[float], str] = "{:.1f}".format) -> str:
        coords = " ".join(f'x{i}="{fmt(x)}" y{i}="{fmt(y)}"' for i, (x, y) in enumerate(pts, start=start))
        return f'<points {coords} alt="{label}">{label}</points>'

    wrong = {
        "the points are not sorted: Molmo writes them sorted by x, then by y": tag(unsorted),
        "indices counted from 0: Molmo numbers them x1, y1, x2, y2, ...": tag(ordered, start=0),
        "coordinates not printed with one decimal: round to 0.1 and print with %.1f (61.5, 40.0)": tag(
            [(x, y) for x, y in points], fmt=str),
    }
    if len(points) == 1:
        wrong["a single point written as <points x1= y1=>: one point is <point x=\"..\" y=\"..\" ...>"] = tag(ordered)
    if not points:
        wrong['an empty tag for no points: Molmo answers "There are none."'] = tag([])
    return wrong


@check("06_pointing", "points_to_text")
def check_points_to_text(namespace: dict) -> None:
    """points_to_text(points, label) equals molmo_lite.pointing.points_to_text on 60 random point sets (0, 1, 2 and
    up to 12 points, two decimals, shared x coordinates)."""
    from molmo_lite import pointing

    rng = random.Random(61)
    cases = [(_random_points(rng, _sizes(rng, k)), rng.choice(LABELS)) for k in range(60)]

    def reference(points: list, label: str) -> tuple:
        return pointing.points_to_text(points, label), _format_variants(points, label)

    student = _student_function(namespace, "points_to_text")
    _compare_on_cases("points_to_text", ("points", "label"), student, reference, cases, _with_hint(_text_mismatch))


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 2: parse_points
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


def _parse_variants(text: str) -> dict[str, list[tuple[float, float]]]:
    import re

    from molmo_lite import pointing

    all_points = [(float(x), float(y)) for x, y in re.findall(r'x\d*="([0-9.]+)"\s+y\d*="([0-9.]+)"', text)]
    first_tag = text.split("</point", 1)[0]
    return {
        "kept a point with a coordinate above 100: drop it, as Molmo does": all_points,
        "read only the first tag: an answer may hold several tags": [
            (p.x, p.y) for p in pointing.parse_points(first_tag)],
    }


@check("06_pointing", "parse_points")
def check_parse_points(namespace: dict) -> None:
    """parse_points(text) returns the (x, y) pairs of molmo_lite.pointing.parse_points on 60 answers in Molmo's
    format: pointing, counting, "There are none.", prose with several tags, and points outside 0-100."""
    from molmo_lite import pointing

    rng = random.Random(62)
    cases = [(_answers(rng, k),) for k in range(60)]

    def reference(text: str) -> tuple:
        return [(p.x, p.y) for p in pointing.parse_points(text)], _parse_variants(text)

    student = _student_function(namespace, "parse_points")
    _compare_on_cases("parse_points", ("text",), student, reference, cases, _with_hint(_points_mismatch))


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 3: pointing_f1
# ---------------------------------------------------------------------------------------------------------------------


def _float_mismatch(got: Any, expected: float) -> str | None:
    try:
        value = float(got)
    except (TypeError, ValueError):
        return f"returned {got!r}, expected the number {expected:.6g}"
    return None if abs(value - expected) <= 1e-6 else f"returned {value:.6g}, expected {expected:.6g}"


def _f1_cases(rng: random.Random, n: int) -> list[tuple]:
    """(pred, gt, threshold): jittered copies of the ground truth, extra and missing points, crowds around one point,
    empty ground truth or predictions."""
    cases = [([], [], 5.0), ([(10.0, 10.0)], [], 5.0), ([], [(10.0, 10.0)], 5.0),
             ([(51.0, 50.0), (49.0, 50.0)], [(50.0, 50.0)], 5.0), ([(17.0, 10.0)], [(10.0, 10.0)], 5.0)]
    while len(cases) < n:
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


def _f1_variants(pred: list, gt: list, threshold: float) -> dict[str, float]:
    from molmo_lite import pointing

    def f1(hits_pred: int, hits_gt: int) -> float:
        if not pred or not gt:
            return 0.0
        return pointing.f1_score(hits_pred / len(pred), hits_gt / len(gt))

    limit = threshold / 100 * math.hypot(100, 100)
    near = [[math.dist(p, g) <= limit for g in gt] for p in pred]
    wrong = {
        "a prediction counted for every ground-truth point near it (no one-to-one matching): match them with the "
        "Hungarian algorithm, scipy.optimize.linear_sum_assignment": f1(
            sum(any(row) for row in near), sum(any(row[j] for row in near) for j in range(len(gt)))),
        "the threshold used as a distance: it is a percent of the image diagonal, 100 * sqrt(2) in 0-100 units":
            pointing.pointing_metrics(pred, gt, threshold / math.sqrt(2)).f1,
    }
    if not gt:
        wrong["the empty ground-truth rule: with nothing to find, F1 is 1 when nothing is predicted, else 0"] = (
            1.0 - float(not pred))
    return wrong


@check("06_pointing", "pointing_f1")
def check_pointing_f1(namespace: dict) -> None:
    """pointing_f1(pred, gt, threshold) equals molmo_lite.pointing.pointing_metrics(pred, gt, threshold).f1 on 60
    cases: empty ground truth or predictions, jittered, extra and missing points, crowds around one point."""
    from molmo_lite import pointing

    cases = _f1_cases(random.Random(63), 60)

    def reference(pred: list, gt: list, threshold: float) -> tuple:
        return pointing.pointing_metrics(pred, gt, threshold).f1, _f1_variants(pred, gt, threshold)

    student = _student_function(namespace, "pointing_f1")
    _compare_on_cases("pointing_f1", ("pred", "gt", "threshold"), student, reference, cases,
                      _with_hint(_float_mismatch))


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

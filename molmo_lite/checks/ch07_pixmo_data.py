"""Chapter 07 exercise checks: PixMo data, compared with molmo_lite.data.pixmo, clocks and collate.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading_core).
"""

from __future__ import annotations

import random
from typing import Any

from molmo_lite.grading_core import (
    _compare_on_cases,
    _float_array_mismatch,
    _student_function,
    _with_hint,
    check,
)


def _dict_mismatch(got: Any, expected: Any) -> str | None:
    """{name: rate} dicts with the same keys and values within 1e-9."""
    if not isinstance(got, dict):
        return f"returned a {type(got).__name__}, expected a dict {{dataset: rate}}"
    if set(got) != set(expected):
        return f"returned keys {sorted(got)}, expected {sorted(expected)}"
    wrong = [k for k in expected if not abs(float(got[k]) - expected[k]) <= 1e-9]
    if wrong:
        k = wrong[0]
        return f"gave {k!r} the rate {float(got[k]):.6g} instead of {expected[k]:.6g}"
    return None


@check("07_pixmo_data", "percent_points")
def check_percent_points(namespace: dict) -> None:
    """percent_points(points, width, height) equals molmo_lite.data.pixmo.percent_points(points, (width, height))
    on 20 random pixmo-count-like rows (pixel points inside the image)."""
    import numpy as np

    from molmo_lite.data import pixmo

    rng = random.Random(71)
    cases = []
    for _ in range(20):
        w, h = rng.randint(20, 2000), rng.randint(20, 2000)
        n = rng.randint(0, 6)
        cases.append(({"x": [rng.uniform(0, w) for _ in range(n)], "y": [rng.uniform(0, h) for _ in range(n)]}, w, h))

    def reference(points: Any, width: int, height: int) -> tuple:
        xy = pixmo.points_xy(points)
        wrong = {"x divided by the height and y by the width: x goes with the width":
                 np.clip(xy / np.asarray([height, width], float) * 100, 0, 100) if len(xy) else xy,
                 "a fraction (0-1): Molmo's points are percent, multiply by 100":
                 xy / np.asarray([width, height], float) if len(xy) else xy}
        return pixmo.percent_points(points, (width, height)), wrong

    student = _student_function(namespace, "percent_points")
    _compare_on_cases("percent_points", ("points", "width", "height"), student, reference, cases,
                      _with_hint(_float_array_mismatch))


@check("07_pixmo_data", "hand_angles")
def check_hand_angles(namespace: dict) -> None:
    """hand_angles(hour, minute, second) equals molmo_lite.data.clocks.hand_angles for the hour and minute hands on
    every minute of 12 hours and 40 random times with seconds."""
    from molmo_lite.data import clocks

    rng = random.Random(72)
    cases = [(h, m, None) for h in range(1, 13) for m in range(0, 60, 7)]
    cases += [(rng.randint(1, 12), rng.randint(0, 59), rng.randint(0, 59)) for _ in range(40)]

    def reference(hour: int, minute: int, second: int | None) -> tuple:
        expected = clocks.hand_angles(hour, minute, second)[:2]
        wrong = {"the hour hand jumps from hour to hour; it moves on with the minutes ((h % 12 + m / 60) * 30)":
                 ((hour % 12) * 30.0, expected[1]),
                 "the hour hand at 6 degrees per hour: a full turn is 12 hours, 30 degrees each":
                 ((hour % 12 + minute / 60) * 6, expected[1])}
        return expected, wrong

    student = _student_function(namespace, "hand_angles")

    def student_pair(hour: int, minute: int, second: int | None) -> Any:
        return tuple(float(a) for a in tuple(student(hour, minute, second))[:2])  # the hour and minute hands

    _compare_on_cases("hand_angles", ("hour", "minute", "second"), student_pair, reference, cases,
                      _with_hint(lambda got, exp: _float_array_mismatch(got, exp, tolerance=1e-6)))


def _time_mismatch(got: Any, expected: tuple[int, int]) -> str | None:
    try:
        hour, minute = (int(v) for v in got)
        exact = all(float(v) == int(v) for v in got)
    except (TypeError, ValueError):
        return f"returned {got!r}, expected the time (hour, minute) = {expected!r}"
    if not exact or (hour, minute) != tuple(expected):
        return f"returned {tuple(got)!r}, expected {tuple(expected)!r}"
    return None


@check("07_pixmo_data", "read_clock")
def check_read_clock(namespace: dict) -> None:
    """read_clock(hour_angle, minute_angle) returns the time whose hands molmo_lite.data.clocks.hand_angles draws,
    from angles measured with an error below 3 degrees (minute hand) and 15 degrees (hour hand): every hour at
    minutes 0, 1, 29, 30, 31, 59 with the largest errors either way, and 150 random times with random errors."""
    from molmo_lite.data import clocks

    rng = random.Random(74)
    cases, truth = [], {}

    def add(hour: int, minute: int, hour_error: float, minute_error: float) -> None:
        hour_angle, minute_angle, _ = clocks.hand_angles(hour, minute)
        case = ((hour_angle + hour_error) % 360.0, (minute_angle + minute_error) % 360.0)
        truth[case] = (hour, minute)
        cases.append(case)

    for hour in range(1, 13):
        for minute in (0, 1, 29, 30, 31, 59):
            add(hour, minute, 0.0, 0.0)
            add(hour, minute, rng.choice((-14.9, 14.9)), rng.choice((-2.95, 2.95)))
    for _ in range(150):
        add(rng.randint(1, 12), rng.randint(0, 59), rng.uniform(-14.9, 14.9), rng.uniform(-2.95, 2.95))

    def reference(hour_angle: float, minute_angle: float) -> tuple:
        expected = truth[(hour_angle, minute_angle)]
        floor_hour = int(hour_angle // 30) % 12 or 12
        wrong = {"the hour read off the hour hand alone, floor(angle / 30): near the hour it is off by one; the "
                 "minute hand says how far past the hour the hour hand must be": (floor_hour, expected[1]),
                 "hour 0 for twelve o'clock: clocks say 12": (expected[0] % 12, expected[1])}
        return expected, {hint: t for hint, t in wrong.items() if t != expected}

    student = _student_function(namespace, "read_clock")
    _compare_on_cases("read_clock", ("hour_angle", "minute_angle"), student, reference, cases,
                      _with_hint(_time_mismatch))


@check("07_pixmo_data", "sqrt_mixture_rates")
def check_sqrt_mixture_rates(namespace: dict) -> None:
    """sqrt_mixture_rates(sizes, groups) equals molmo_lite.data.collate.mixture_rates on 20 random mixtures."""
    from molmo_lite.data.collate import mixture_rates

    rng = random.Random(73)
    cases = []
    for _ in range(20):
        names = [f"set{i}" for i in range(rng.randint(2, 7))]
        sizes = {n: rng.choice((1, 4, 100, 2500, 36_916, 2_380_000)) for n in names}
        cut = rng.randint(1, len(names) - 1)
        groups = {"a": (rng.choice((0.15, 0.5, 1.0)), names[:cut]), "b": (rng.choice((0.35, 0.5)), names[cut:])}
        cases.append((sizes, groups))

    def reference(sizes: dict, groups: dict) -> tuple:
        total = sum(sizes.values())
        wrong = {"proportional to the size itself; Molmo uses its square root":
                 {k: v / total for k, v in sizes.items()} if len(groups) == 1 else {
                     n: rate / sum(r for r, _ in groups.values()) * sizes[n] / sum(sizes[m] for m in names)
                     for rate, names in groups.values() for n in names},
                 "the group rates are ignored (sqrt of the size over all datasets)": mixture_rates(sizes)}
        return mixture_rates(sizes, groups), wrong

    student = _student_function(namespace, "sqrt_mixture_rates")
    _compare_on_cases("sqrt_mixture_rates", ("sizes", "groups"), student, reference, cases, _with_hint(_dict_mismatch))

"""Chapter 01 exercise checks: crops and image tokens, compared with molmo_lite.preprocessing.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading).
"""

from __future__ import annotations

import random

from molmo_lite.grading import (
    _compare_on_cases,
    _index_array_mismatch,
    _int_mismatch,
    _student_function,
    _tuple_mismatch,
    check,
)


def _random_sizes(rng: random.Random, n: int, low: int = 1, high: int = 4000) -> list[tuple[int, int]]:
    """(height, width) pairs: half uniform, half extreme aspect ratios (one side tiny, the other huge)."""
    sizes = []
    for k in range(n):
        if k % 2 == 0:
            sizes.append((rng.randint(low, high), rng.randint(low, high)))
        else:
            thin, long = rng.randint(low, low + 60), rng.randint(high // 2, high)
            sizes.append((thin, long) if k % 4 == 1 else (long, thin))
    return sizes


@check("01_crops", "select_tiling")
def check_select_tiling(namespace: dict) -> None:
    """select_tiling(height, width, window, max_crops) agrees with molmo_lite's on 200 seeded random cases."""
    from molmo_lite import preprocessing

    rng = random.Random(1)
    windows = (224, 336, 28)
    cases = [(h, w, rng.choice(windows), rng.randint(1, 36)) for h, w in _random_sizes(rng, 200)]
    student = _student_function(namespace, "select_tiling")
    _compare_on_cases(
        "select_tiling", ("height", "width", "window", "max_crops"), student, preprocessing.select_tiling, cases,
        _tuple_mismatch,
    )


@check("01_crops", "num_image_tokens")
def check_num_image_tokens(namespace: dict) -> None:
    """num_image_tokens(height, width, max_crops) agrees with molmo_lite's on the worked examples, tiny images and
    100 random cases."""
    from molmo_lite import preprocessing

    rng = random.Random(2)
    worked = [(480, 640, 12), (1080, 1920, 12), (336, 336, 12), (1000, 500, 12), (64, 64, 12), (30, 2000, 12)]
    cases = worked + [(h, w, rng.randint(1, 36)) for h, w in _random_sizes(rng, 100, low=120)]
    student = _student_function(namespace, "num_image_tokens")

    def reference(height: int, width: int, max_crops: int) -> int:
        return preprocessing.num_image_tokens(height, width, max_crops=max_crops)

    _compare_on_cases("num_image_tokens", ("height", "width", "max_crops"), student, reference, cases, _int_mismatch)


@check("01_crops", "stitched_patch_index")
def check_stitched_patch_index(namespace: dict) -> None:
    """stitched_patch_index(rows, cols, crop_patches, overlap_margins) equals molmo_lite's on random tilings."""
    from molmo_lite import preprocessing

    rng = random.Random(3)
    geometries = [(p, m) for p in (4, 6, 24) for m in ((1, 1), (2, 2), (4, 4), (1, 2)) if sum(m) < p]
    cases = [(rng.randint(1, 4), rng.randint(1, 4), *rng.choice(geometries)) for _ in range(40)]
    student = _student_function(namespace, "stitched_patch_index")
    _compare_on_cases(
        "stitched_patch_index", ("rows", "cols", "crop_patches", "overlap_margins"), student,
        preprocessing.stitched_patch_index, cases, _index_array_mismatch,
    )

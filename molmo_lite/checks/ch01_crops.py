"""Chapter 01 exercise checks: crops and image tokens, compared with molmo_lite.preprocessing.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading_core).
"""

from __future__ import annotations

import math
import random
from typing import Any

from molmo_lite.grading_core import (
    _compare_on_cases,
    _int_mismatch,
    _student_function,
    _tuple_mismatch,
    _with_hint,
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


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 1: select_tiling, the bug hunt
# ---------------------------------------------------------------------------------------------------------------------


def _tiling_with_bug(height: int, width: int, window: int, max_crops: int, bug: str) -> tuple[int, int] | None:
    """Molmo's select_tiling with one of the three bugs of the notebook's `buggy_select_tiling` (None if it raises)."""
    import numpy as np

    if bug == "clamp":
        height, width = max(height, 1), max(width, 1)
    stop = 0 if bug == "range" else 1  # the buggy range(1, max_crops // i) stops one column short
    tilings = [(i, j) for i in range(1, max_crops + 1) for j in range(1, max_crops // i + stop)]
    if not tilings:
        return None
    tilings.sort(key=lambda t: (t[0] * t[1], t[0]))
    tiled = np.array(tilings, dtype=np.float32) * np.float32(window)
    with np.errstate(divide="ignore"):
        scales = (tiled / np.array([height, width], dtype=np.float32)).min(axis=1)
    if (scales < 1).all():
        return tilings[int(scales.argmax())]
    if bug == "filtered":
        return tilings[int(scales[scales >= 1].argmin())]
    return tilings[int(np.where(scales < 1, np.inf, scales).argmin())]


_TILING_BUGS = {
    "range": "the candidates stop one column short (range(1, max_crops // i) leaves out j = max_crops // i, "
             "e.g. the 3 x 4 tiling of a 1080 x 1920 image, and every tiling when max_crops is 1)",
    "filtered": "argmin over the filtered array scales[scales >= 1] gives a position in THAT array, not in "
                "`tilings`: mask the shrinking candidates instead of dropping them",
    "clamp": "sizes clamped to at least 1 pixel: Molmo keeps a negative size (an image thinner than the 112 px "
             "of margins), for which every scale is negative and the answer is a single crop (1, 1)",
}


@check("01_crops", "select_tiling")
def check_select_tiling(namespace: dict) -> None:
    """select_tiling(height, width, window, max_crops) agrees with molmo_lite's on 200 seeded random cases, images
    thinner than the margins, max_crops = 1 and the tilings the buggy version leaves out; when the answer equals one
    of the three planted bugs, the message says which."""
    from molmo_lite import preprocessing

    rng = random.Random(1)
    windows = (224, 336, 28)
    cases = [(h, w, rng.choice(windows), rng.randint(1, 36)) for h, w in _random_sizes(rng, 200)]
    cases += [(1080 - 112, 1920 - 112, 224, 12), (480 - 112, 640 - 112, 224, 12), (50 - 112, 4000 - 112, 224, 12),
              (4000 - 112, 30 - 112, 224, 36), (4000, 4000, 224, 1), (336 - 112, 336 - 112, 224, 1), (0, 500, 224, 6)]
    student = _student_function(namespace, "select_tiling")

    def reference(height: int, width: int, window: int, max_crops: int) -> tuple:
        wrong = {}
        for bug, hint in _TILING_BUGS.items():
            answer = _tiling_with_bug(height, width, window, max_crops, bug)
            if answer is not None:
                wrong[hint] = answer
        return preprocessing.select_tiling(height, width, window, max_crops), wrong

    _compare_on_cases(
        "select_tiling", ("height", "width", "window", "max_crops"), student, reference, cases,
        _with_hint(_tuple_mismatch),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 2: num_image_tokens for any geometry
# ---------------------------------------------------------------------------------------------------------------------


def _geometries() -> list[Any]:
    """Molmo's presets and geometries the course never uses: 378 px crops of 27 patches (odd grids), 3 x 3 and
    2 x 3 pooling, uneven and zero margins, a huge crop budget. Shown in messages by their geometry fields only."""
    from dataclasses import asdict, dataclass, fields

    from molmo_lite.config import PREPROCESSOR_PRESETS, PreprocessorConfig

    @dataclass(frozen=True, repr=False)
    class Geometry(PreprocessorConfig):
        def __repr__(self) -> str:
            shown = ("crop_size", "patch_size", "max_crops", "overlap_margins", "pooling")
            return f"PreprocessorConfig({', '.join(f'{k}={getattr(self, k)!r}' for k in shown)})"

    def short(config: PreprocessorConfig) -> PreprocessorConfig:
        return Geometry(**{f.name: asdict(config)[f.name] for f in fields(config)})

    return [short(c) for c in PREPROCESSOR_PRESETS.values()] + [short(c) for c in (
        PreprocessorConfig(crop_size=378, patch_size=14, max_crops=12, overlap_margins=(4, 4), pooling=(2, 2)),
        PreprocessorConfig(crop_size=378, patch_size=14, max_crops=8, overlap_margins=(3, 3), pooling=(3, 3)),
        PreprocessorConfig(crop_size=56, patch_size=14, max_crops=6, overlap_margins=(1, 2), pooling=(2, 3)),
        PreprocessorConfig(crop_size=112, patch_size=14, max_crops=9, overlap_margins=(0, 0), pooling=(2, 2)),
        PreprocessorConfig(crop_size=224, patch_size=16, max_crops=24, overlap_margins=(2, 1), pooling=(1, 1)),
    )]


@check("01_crops", "num_image_tokens")
def check_num_image_tokens(namespace: dict) -> None:
    """num_image_tokens(height, width, config) equals the token count of molmo_lite.preprocessing.crop_geometry on
    the worked examples and 30 random sizes, for each of 9 geometries (Molmo's presets, 378 px crops with odd grids,
    3 x 3 and 2 x 3 pooling, uneven and zero margins)."""
    from molmo_lite import preprocessing

    rng = random.Random(2)
    worked = [(480, 640), (1080, 1920), (336, 336), (1000, 500), (64, 64), (30, 2000), (2160, 3840)]
    cases = [(h, w, config) for config in _geometries()
             for h, w in worked + _random_sizes(rng, 30, low=1, high=3000)]
    student = _student_function(namespace, "num_image_tokens")

    def reference(height: int, width: int, config: Any) -> tuple:
        rows, cols = preprocessing.crop_geometry(height, width, config).tiling
        wrong = {"Molmo's 336 px formula 158 + (8 rows + 4)(8 cols + 5) + 2, which holds for its geometry only":
                 158 + (8 * rows + 4) * (8 * cols + 5) + 2}
        return preprocessing.crop_geometry(height, width, config).num_image_tokens, wrong

    _compare_on_cases("num_image_tokens", ("height", "width", "config"), student, reference, cases,
                      _with_hint(_int_mismatch))


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 3: the crop budget beyond which nothing changes
# ---------------------------------------------------------------------------------------------------------------------

_BUDGET_LIMIT = 100  # above every saturating budget of the check's sizes (at most 9 x 9 tiles for 2000 px)


def _saturating_by_search(height: int, width: int) -> int:
    """The smallest max_crops from which Molmo's tiling stays the same up to _BUDGET_LIMIT, by trying them all."""
    from molmo_lite import preprocessing

    tilings = [preprocessing.select_tiling(height - 112, width - 112, 224, m) for m in range(1, _BUDGET_LIMIT + 1)]
    m = _BUDGET_LIMIT
    while m > 1 and tilings[m - 2] == tilings[-1]:
        m -= 1
    return m


@check("01_crops", "saturating_max_crops")
def check_saturating_max_crops(namespace: dict) -> None:
    """saturating_max_crops(height, width) equals the budget found by trying every max_crops from 1 to 100 with
    molmo_lite.preprocessing.select_tiling (Molmo's geometry), on 60 random sizes up to 2000 px, strips thinner than
    the margins, sizes exactly at a crop boundary and the worked examples."""
    rng = random.Random(3)
    cases = [(480, 640), (1080, 1920), (336, 336), (337, 336), (560, 560), (561, 560), (112, 112), (112, 1500),
             (111, 1500), (50, 2000), (2000, 30), (1, 1), (600, 512)]
    cases += _random_sizes(rng, 60, low=1, high=2000)
    student = _student_function(namespace, "saturating_max_crops")

    def reference(height: int, width: int) -> tuple:
        wrong = {}
        if height < 112 or width < 112:
            wrong["an image thinner than the margins (a negative side once they are removed) gets one crop whatever "
                  "the budget: every scale is negative, so the tiling that shrinks least is (1, 1)"] = (
                math.ceil(max(height - 112, 1) / 224) * math.ceil(max(width - 112, 1) / 224))
        rows, cols = (math.ceil(max(side, 1) / 224) for side in (height, width))
        wrong["the margins were not removed first: Molmo tiles height - 112 and width - 112 in steps of 224 px"] = (
            rows * cols)
        return _saturating_by_search(height, width), wrong

    _compare_on_cases("saturating_max_crops", ("height", "width"), student, reference, cases,
                      _with_hint(_int_mismatch))

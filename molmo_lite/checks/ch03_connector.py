"""Chapter 03 exercise checks: the connector, compared with molmo_lite.connector.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading_core).
"""

from __future__ import annotations

import random
from typing import Any

from molmo_lite.grading_core import (
    _compare_on_cases,
    _float_array_mismatch,
    _index_array_mismatch,
    _int_mismatch,
    _randomize_,
    _student_function,
    _torch_generator,
    _with_hint,
    check,
)


def _random_windows(gen: Any, n_tokens: int, k: int, dim: int, empty_rows: bool) -> tuple:
    """windows [T, k, dim] with large junk in the padding slots (they must be ignored), valid bool [T, k] with full
    rows, partial rows and, if ``empty_rows``, rows without any valid slot."""
    import torch

    valid = torch.rand(n_tokens, k, generator=gen) < 0.6
    valid[0] = True  # a full window
    if n_tokens > 1:
        valid[1] = False
        valid[1, 0] = True  # a window of one
    if empty_rows and n_tokens > 2:
        valid[2] = False
    windows = torch.randn(n_tokens, k, dim, generator=gen)
    junk = 10 * torch.randn(n_tokens, k, dim, generator=gen)
    return torch.where(valid[..., None], windows, junk), valid


@check("03_connector", "pooling_windows")
def check_pooling_windows(namespace: dict) -> None:
    """pooling_windows(grid_h, grid_w, pool_h, pool_w) equals molmo_lite.preprocessing.arange_for_pooling on the
    grid's raster indices for 40 grids of 1 to 13 patches a side and pooling windows of 1 x 1 to 4 x 4 (even, odd,
    square and not), including Molmo's 24 x 24 and Molmo2's 27 x 27 grids."""
    import numpy as np

    from molmo_lite import preprocessing

    rng = random.Random(31)
    cases = [(24, 24, 2, 2), (27, 27, 2, 2), (27, 27, 3, 3), (3, 3, 2, 2), (5, 7, 3, 3), (1, 1, 2, 2), (6, 4, 4, 4)]
    cases += [(rng.randint(1, 13), rng.randint(1, 13), rng.randint(1, 4), rng.randint(1, 4)) for _ in range(33)]

    def reference(grid_h: int, grid_w: int, pool_h: int, pool_w: int) -> tuple:
        grid = np.arange(grid_h * grid_w).reshape(grid_h, grid_w)
        pad_h, pad_w = (-grid_h) % pool_h, (-grid_w) % pool_w
        at_end = np.pad(grid, [(0, pad_h), (0, pad_w)], constant_values=-1)
        gh, gw = at_end.shape[0] // pool_h, at_end.shape[1] // pool_w
        wrong = {"all the padding after the grid (bottom / right): split it, the smaller half before":
                 at_end.reshape(gh, pool_h, gw, pool_w).transpose(0, 2, 1, 3).reshape(gh * gw, -1)}
        return preprocessing.arange_for_pooling(grid, pool_h, pool_w), wrong

    student = _student_function(namespace, "pooling_windows")
    _compare_on_cases("pooling_windows", ("grid_h", "grid_w", "pool_h", "pool_w"), student, reference, cases,
                      _with_hint(_index_array_mismatch))


@check("03_connector", "mean_query")
def check_mean_query(namespace: dict) -> None:
    """mean_query(windows, valid) is the mean of each window's valid members (0 without any) on 20 random cases, the
    query molmo_lite.connector.AttentionPool computes."""

    rng, gen = random.Random(32), _torch_generator(32)
    cases = [_random_windows(gen, rng.randint(3, 8), rng.choice((1, 2, 4, 9)), rng.choice((1, 3, 8)), True)
             for _ in range(20)]

    def reference(windows: Any, valid: Any) -> tuple:
        members = windows.masked_fill(~valid[..., None], 0.0)  # as AttentionPool.forward does
        mean = members.sum(1) / valid.sum(-1, keepdim=True).clamp(min=1).to(windows.dtype)
        wrong = {"the mean over all k slots, padding included": windows.mean(1),
                 "the sum of the valid members divided by k": members.mean(1)}
        return mean, wrong

    student = _student_function(namespace, "mean_query")
    _compare_on_cases("mean_query", ("windows", "valid"), student, reference, cases, _with_hint(_float_array_mismatch))


@check("03_connector", "attention_pool")
def check_attention_pool(namespace: dict) -> None:
    """attention_pool(windows, valid, wq, wk, wv, wo, heads) equals molmo_lite.connector.AttentionPool with the same
    random layers on 20 cases (1 to 4 heads, padding slots holding junk, windows without any valid slot)."""
    import torch

    from molmo_lite import connector

    rng, gen = random.Random(33), _torch_generator(33)
    cases = []
    for k in range(20):
        dim, heads, head_dim = rng.choice((4, 8, 12)), rng.choice((1, 2, 4)), rng.choice((2, 4))
        pool_dim = rng.choice((3, 8))
        pool = _randomize_(connector.AttentionPool(dim, pool_dim, heads, head_dim), gen)
        windows, valid = _random_windows(gen, rng.randint(3, 6), rng.choice((1, 4, 9)), dim, empty_rows=k % 2 == 1)
        cases.append((windows, valid, pool.wq, pool.wk, pool.wv, pool.wo, heads))

    def reference(windows: Any, valid: Any, wq: Any, wk: Any, wv: Any, wo: Any, heads: int) -> Any:
        pool = connector.AttentionPool(wq.in_features, wo.out_features, heads, wq.out_features // heads)
        pool.wq, pool.wk, pool.wv, pool.wo = wq, wk, wv, wo
        with torch.no_grad():
            return pool(windows, valid)

    student = _student_function(namespace, "attention_pool")
    _compare_on_cases(
        "attention_pool", ("windows", "valid", "wq", "wk", "wv", "wo", "heads"), student, reference, cases,
        _float_array_mismatch,
    )


def _straddling_by_counting(rows: int, cols: int, crop_patches: int, margins: tuple[int, int]) -> int:
    """Tokens whose 2 x 2 window of the stitched grid holds patches of two or more crops, counted from molmo_lite's
    own stitched index and pooling windows."""
    import numpy as np

    from molmo_lite import preprocessing

    stitched = preprocessing.stitched_patch_index(rows, cols, crop_patches, margins)
    windows = preprocessing.arange_for_pooling(stitched, 2, 2)
    crops = np.where(windows >= 0, windows // crop_patches**2, -1)
    return sum(len({int(c) for c in row if c >= 0}) > 1 for row in crops)


@check("03_connector", "straddling_windows")
def check_straddling_windows(namespace: dict) -> None:
    """straddling_windows(rows, cols, crop_patches, margins) equals the count of 2 x 2 windows mixing crops in
    molmo_lite's stitched index (preprocessing.stitched_patch_index + arange_for_pooling) on Molmo's, the tiny and
    the small presets' geometries, 27-patch crops and 40 random geometries (even and odd margins and steps)."""
    rng = random.Random(34)
    cases = [(2, 3, 24, (4, 4)), (2, 2, 4, (1, 1)), (1, 1, 4, (1, 1)), (3, 4, 27, (4, 4)), (2, 3, 8, (2, 2)),
             (1, 4, 6, (1, 2)), (4, 1, 5, (0, 0)), (3, 3, 7, (0, 1))]
    while len(cases) < 48:
        p = rng.randint(2, 27)
        m0 = rng.randint(0, (p - 1) // 2)
        m1 = rng.randint(0, p - 1 - m0)
        if m0 + m1 < p:
            cases.append((rng.randint(1, 5), rng.randint(1, 5), p, (m0, m1)))

    def reference(rows: int, cols: int, crop_patches: int, margins: tuple[int, int]) -> tuple:
        m0, m1 = margins
        step = crop_patches - m0 - m1
        per_axis = [sum((m0 + t * step) % 2 for t in range(1, n)) for n in (rows, cols)]
        windows = [-(-(n * step + m0 + m1) // 2) for n in (rows, cols)]
        wrong = {"windows straddling both axes counted twice: a window that mixes crops across a row boundary and a "
                 "column boundary is one token": per_axis[0] * windows[1] + windows[0] * per_axis[1]}
        return _straddling_by_counting(rows, cols, crop_patches, margins), wrong

    student = _student_function(namespace, "straddling_windows")
    _compare_on_cases("straddling_windows", ("rows", "cols", "crop_patches", "margins"), student, reference, cases,
                      _with_hint(_int_mismatch))

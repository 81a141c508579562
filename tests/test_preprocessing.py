"""Molmo's multi-crop preprocessing: worked examples of docs/molmo_recipe.md §1 and parity with transformers' Molmo2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.molmo2.image_processing_molmo2 import Molmo2ImageProcessor

from molmo_lite.config import CLIP_MEAN, CLIP_STD, IM_COL, IM_END, IM_PATCH, IM_START
from molmo_lite.preprocessing import (
    MolmoImageProcessor,
    arange_for_pooling,
    image_token_layout,
    num_image_tokens,
    patchify,
    resize_and_pad,
    select_tiling,
    stitched_patch_index,
)

# Molmo2 rounds its resized pixels to uint8; we keep floats. Half a grey level, after dividing by the smallest std:
PIXEL_TOL = 0.5 / 255 / min(CLIP_STD) + 1e-4


def molmo2_processor(crop_size=336, patch_size=14, max_crops=12, margins=(4, 4), pooling=(2, 2)):
    return Molmo2ImageProcessor(
        size={"height": crop_size, "width": crop_size},
        patch_size=patch_size,
        max_crops=max_crops,
        overlap_margins=list(margins),
        pooling_size=list(pooling),
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def run_molmo2(processor, image: np.ndarray):
    """The reference on an [H, W, 3] array (told the layout: it would read a 1 x W x 3 image as channels-first)."""
    return processor(image, return_tensors="pt", input_data_format="channels_last")


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def parity_cases(n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """n seeded (height, width, max_crops): log-uniform sizes, plus extreme aspect ratios and tiny images."""
    rng = np.random.default_rng(seed)
    fixed = [(1, 5000, 12), (5000, 1, 12), (1, 1, 12), (20, 3000, 12), (3000, 20, 6), (113, 4000, 12),
             (336, 336, 1), (480, 640, 12), (1080, 1920, 12), (1000, 500, 12), (224, 224, 36), (2000, 90, 36)]
    cases = list(fixed)
    while len(cases) < n:
        h, w = (int(x) for x in np.exp(rng.uniform(0, np.log(2600), size=2)))
        if rng.random() < 0.15:  # extreme aspect ratio: one side very short
            h, w = (max(h, 1), int(rng.integers(1, 40))) if rng.random() < 0.5 else (int(rng.integers(1, 40)), w)
        max_crops = int(rng.choice([12, 12, 12, rng.integers(1, 37)]))
        cases.append((max(h, 1), max(w, 1), max_crops))
    return cases


@pytest.fixture(scope="module")
def molmo2_parity_results():
    """Run both processors on the same 500 random images (stretch mode: Molmo2 resizes without padding)."""
    rng = np.random.default_rng(1)
    ours_by_crops, theirs_by_crops, rows = {}, {}, []
    for h, w, max_crops in parity_cases(500):
        if max_crops not in ours_by_crops:
            ours_by_crops[max_crops] = MolmoImageProcessor(max_crops=max_crops, resize="stretch", antialias=False)
            theirs_by_crops[max_crops] = molmo2_processor(max_crops=max_crops)
        image = random_image(rng, h, w)
        ours = ours_by_crops[max_crops](image)
        theirs = run_molmo2(theirs_by_crops[max_crops], image)
        rows.append(((h, w, max_crops), ours, theirs))
    return rows


def test_select_tiling_matches_molmo2_processor(molmo2_parity_results):
    """Same tiling and number of crops (global image included) on 500 random sizes and crop budgets."""
    for (h, w, max_crops), ours, theirs in molmo2_parity_results:
        grid = theirs["image_grids"][0].tolist()  # [global rows, global cols, crop rows, crop cols] pooled
        assert ours.num_crops == int(theirs["image_num_crops"][0]), (h, w, max_crops)
        assert list(ours.geometry.global_grid) + list(ours.geometry.crop_grid) == grid, (h, w, max_crops)
        # the tiling itself, recovered from the pooled crop grid: 2 * pooled = 16 * tiles + 8 patches
        assert ours.tiling == ((2 * grid[2] - 8) // 16, (2 * grid[3] - 8) // 16), (h, w, max_crops)


def test_pooled_patches_idx_matches_molmo2_image_token_pooling(molmo2_parity_results):
    for (h, w, max_crops), ours, theirs in molmo2_parity_results:
        assert ours.pooled_patches_idx.dtype == torch.long
        assert torch.equal(ours.pooled_patches_idx, theirs["image_token_pooling"].long()), (h, w, max_crops)


def test_crop_pixels_match_molmo2_within_rounding(molmo2_parity_results):
    """Molmo2 stretches (no padding) and rounds to uint8; our stretch mode matches within half a grey level."""
    worst = 0.0
    for (h, w, max_crops), ours, theirs in molmo2_parity_results:
        diff = (ours.patches - theirs["pixel_values"]).abs().max().item()
        worst = max(worst, diff)
        assert diff <= PIXEL_TOL, ((h, w, max_crops), diff)
    assert worst > 0  # the comparison really looked at resized pixels


@pytest.mark.parametrize(
    "geometry",
    [
        dict(crop_size=56, patch_size=14, max_crops=4, margins=(1, 1), pooling=(2, 2)),  # the tiny preset
        dict(crop_size=378, patch_size=14, max_crops=8, margins=(4, 4), pooling=(2, 2)),  # Molmo2: odd 27x27 grid
        dict(crop_size=112, patch_size=14, max_crops=6, margins=(1, 2), pooling=(3, 3)),  # uneven margins, 3x3 pool
    ],
)
def test_other_geometries_match_molmo2(geometry):
    rng = np.random.default_rng(2)
    g = geometry
    ours_proc = MolmoImageProcessor(g["crop_size"], g["patch_size"], g["max_crops"], g["margins"], g["pooling"],
                                    resize="stretch", antialias=False)
    ref = molmo2_processor(g["crop_size"], g["patch_size"], g["max_crops"], g["margins"], g["pooling"])
    for h, w, _ in parity_cases(25, seed=3):
        image = random_image(rng, min(h, 900), min(w, 900))
        ours, theirs = ours_proc(image), run_molmo2(ref, image)
        assert ours.num_crops == int(theirs["image_num_crops"][0])
        assert torch.equal(ours.pooled_patches_idx, theirs["image_token_pooling"].long())
        assert (ours.patches - theirs["pixel_values"]).abs().max().item() <= PIXEL_TOL


@pytest.mark.parametrize(
    "size, tiling, canvas, crop_grid, n_crops, n_tokens",
    [
        ((480, 640), (2, 3), (560, 784), (20, 28), 7, 740),
        ((1080, 1920), (3, 4), (784, 1008), (28, 36), 13, 1196),
        ((336, 336), (1, 1), (336, 336), (12, 12), 2, 316),
        ((224, 224), (1, 1), (336, 336), (12, 12), 2, 316),
        ((1000, 500), (4, 2), (1008, 560), (36, 20), 9, 916),
    ],
)
def test_worked_examples_of_the_spec(size, tiling, canvas, crop_grid, n_crops, n_tokens):
    out = MolmoImageProcessor()(np.zeros((*size, 3), dtype=np.uint8))
    assert out.tiling == tiling
    assert out.geometry.canvas_size == canvas
    assert out.geometry.global_grid == (12, 12) and out.geometry.crop_grid == crop_grid
    assert out.num_crops == n_crops and out.crops.shape == (n_crops, 3, 336, 336)
    assert out.num_image_tokens == n_tokens == num_image_tokens(*size)
    assert out.pooled_patches_idx.shape == (144 + crop_grid[0] * crop_grid[1], 4)
    rows, cols = tiling
    assert n_tokens == 158 + (8 * rows + 4) * (8 * cols + 5) + 2  # the spec's closed form


def test_molmo2_feature_counts_quoted_in_the_issue():
    """Measured on transformers' Molmo2: 7 crops / 704 pooled features for 480x640, 13 / 1152 for 1080x1920."""
    ref = molmo2_processor()
    for (h, w), (n_crops, n_features) in {(480, 640): (7, 704), (1080, 1920): (13, 1152)}.items():
        theirs = run_molmo2(ref, np.zeros((h, w, 3), dtype=np.uint8))
        ours = MolmoImageProcessor()(np.zeros((h, w, 3), dtype=np.uint8))
        assert int(theirs["image_num_crops"][0]) == ours.num_crops == n_crops
        assert theirs["image_token_pooling"].shape[0] == ours.pooled_patches_idx.shape[0] == n_features


def test_token_layout_has_one_patch_token_per_pooled_feature():
    out = MolmoImageProcessor()(np.zeros((480, 640, 3), dtype=np.uint8))
    assert out.tokens.count(IM_PATCH) == out.pooled_patches_idx.shape[0] == out.geometry.num_image_features
    assert out.tokens.count(IM_START) == out.tokens.count(IM_END) == 2
    assert out.tokens.count(IM_COL) == 12 + 20  # one per pooled row of the global image and of the crops
    first_row = out.tokens[1:14]
    assert first_row == [IM_PATCH] * 12 + [IM_COL]
    assert image_token_layout((1, 2), (1, 1)) == [IM_START, IM_PATCH, IM_PATCH, IM_COL, IM_END,
                                                  IM_START, IM_PATCH, IM_COL, IM_END]


def test_resize_mode_is_the_overview_alone():
    """crop_mode "resize" (Molmo's single-crop mode) keeps the overview of the default mode and drops the crops: the
    same pixels, pooling windows and first block of tokens (158 for 336 px), one crop, 144 features; the 224 px image
    that the default mode sends as overview plus its one crop (316 tokens, the spec's worked example) takes half."""
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    both, alone = MolmoImageProcessor()(image), MolmoImageProcessor(crop_mode="resize")(image)
    assert both.num_image_tokens == 316 and alone.num_image_tokens == alone.geometry.num_image_tokens == 158
    assert alone.crops.shape == (1, 3, 336, 336) and torch.equal(alone.crops[0], both.crops[0])
    assert torch.equal(alone.pooled_patches_idx, both.pooled_patches_idx[:144])
    assert torch.equal(alone.patch_pad_fraction, both.patch_pad_fraction[:1])
    assert alone.tokens == both.tokens[:158] and alone.tokens.count(IM_START) == 1
    assert alone.geometry.num_crops == 1 and alone.geometry.num_image_features == 144
    with pytest.raises(ValueError, match="crop_mode"):
        MolmoImageProcessor(crop_mode="crops-only")


# ---------------------------------------------------------------------------------------------- Molmo 1 vs Molmo2


def test_molmo1_pads_the_global_image_where_molmo2_stretches_it():
    """The pinned design difference: Molmo (pad) keeps the aspect ratio and pads; Molmo2 (stretch) does not."""
    image = random_image(np.random.default_rng(4), 480, 640)
    padded, stretched = MolmoImageProcessor()(image), MolmoImageProcessor(resize="stretch")(image)
    # 480x640 -> global 251x336 (float32: 480 * 0.525 = 251.99998 -> 251, as in Molmo), 42 pad rows on top
    frac = padded.patch_pad_fraction[0].reshape(24, 24)
    assert torch.all(frac[:3] == 0) and torch.all(frac[-3:] == 0) and torch.all(frac[3:20] == 1)
    assert torch.allclose(frac[20], torch.tensor(13 / 14))  # rows 42 + 251 = 293: the last real patch row is 13/14
    pad_value = -torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD)
    assert torch.allclose(padded.crops[0, :, :42, :], pad_value.view(3, 1, 1).expand(3, 42, 336))
    assert torch.all(stretched.patch_pad_fraction == 1)
    assert not torch.allclose(padded.crops[0], stretched.crops[0])
    # ... while the geometry (tiling, pooled indices, tokens) does not depend on how the image is resized
    assert padded.tiling == stretched.tiling and padded.tokens == stretched.tokens
    assert torch.equal(padded.pooled_patches_idx, stretched.pooled_patches_idx)


def test_pad_fractions_follow_the_crops_not_crop_zero():
    """Molmo's released code gave the global image crop 0's mask (a quirk); here every crop has its own mask."""
    image = random_image(np.random.default_rng(5), 300, 1200)
    out = MolmoImageProcessor()(image)
    canvas, mask = resize_and_pad(torch.rand(3, 300, 1200), out.geometry.canvas_size)
    assert out.patch_pad_fraction.shape == (out.num_crops, 576)
    # global image of a 1:4 image: only 84 of 336 rows are real
    assert out.patch_pad_fraction[0].mean().item() == pytest.approx(84 / 336, abs=1e-6)
    # the high-res crops see the canvas mask cut the same way
    assert out.patch_pad_fraction[1:].mean().item() < 1.0
    assert mask.float().mean().item() < 1.0


def test_resize_and_pad_matches_molmo_rules():
    image = torch.rand(3, 480, 640)
    canvas, mask = resize_and_pad(image, (336, 336))
    assert canvas.shape == (3, 336, 336) and mask.shape == (336, 336)
    rows = mask.any(dim=1).nonzero().flatten()
    # scale = min(336/480, 336/640) = 0.525 in float32; int(480 * 0.525) = 251 (not 252), top = (336 - 251) // 2
    assert (rows[0].item(), rows[-1].item() + 1) == (42, 42 + 251)
    assert torch.all(canvas[:, ~mask] == 0)
    assert canvas.min() >= 0 and canvas.max() <= 1


def test_stitched_index_drops_margins_and_covers_each_kept_patch_once():
    idx = stitched_patch_index(2, 3, 24, (4, 4))
    assert idx.shape == (2 * 16 + 8, 3 * 16 + 8)
    assert len(np.unique(idx)) == idx.size
    # first crop keeps its top-left margin; crop (0, 1) starts after its left margin of 4 patches
    assert idx[0, 0] == 0 and idx[0, 20] == 1 * 576 + 4
    pooled = arange_for_pooling(idx, 2, 2)
    assert pooled.shape == (20 * 28, 4) and (pooled >= 0).all()


def test_patchify_orders_each_patch_dy_dx_channel():
    images = torch.arange(2 * 3 * 28 * 28, dtype=torch.float32).reshape(2, 3, 28, 28)
    patches = patchify(images, 14)
    assert patches.shape == (2, 4, 588)
    # patch 1 (row 0, col 1), pixel (dy=0, dx=1), channel 2
    assert patches[0, 1, (0 * 14 + 1) * 3 + 2] == images[0, 2, 0, 15]


def test_select_tiling_prefers_least_upscaling_and_least_downscaling():
    assert select_tiling(368, 528, 224, 12) == (2, 3)  # 480x640 minus the 112 px margins
    assert select_tiling(100, 100, 224, 12) == (1, 1)  # small image: least upscaling
    assert select_tiling(10_000, 10_000, 224, 12) == (3, 3)  # huge: least downscaling among <= 12 tiles
    assert select_tiling(-111, 4888, 224, 12) == (1, 1)  # a 1x5000 image: negative after the margins


def test_tiny_preset_runs_fast_with_small_crops():
    out = MolmoImageProcessor.from_config("tiny")(np.zeros((90, 120, 3), dtype=np.uint8))
    assert out.crops.shape[1:] == (3, 56, 56)
    assert out.pooled_patches_idx.shape[1] == 4
    assert out.num_crops <= 1 + 4


@pytest.mark.parametrize("start_token, overview_cols", [(True, False), (True, True), (False, False)])
def test_molmo2_token_layout_equals_molmo2_processor(start_token, overview_cols):
    """PreprocessorConfig.low_res_start / low_res_cols write the overview as transformers' Molmo2Processor does
    (Molmo2-8B: <low_res_im_start>, no <im_col>); num_image_tokens counts the same tokens."""
    from types import SimpleNamespace

    from transformers.models.molmo2.processing_molmo2 import Molmo2Processor

    from molmo_lite.config import LOW_RES_IM_START

    layout = SimpleNamespace(image_use_col_tokens=True, use_single_crop_col_tokens=overview_cols,
                             use_single_crop_start_token=start_token)
    start = LOW_RES_IM_START if start_token else "<im_start>"
    ours_proc = MolmoImageProcessor(resize="stretch", antialias=False, low_res_start=start,
                                    low_res_cols=overview_cols)
    ref = molmo2_processor()
    rng = np.random.default_rng(4)
    for h, w, _ in parity_cases(8, seed=5):
        image = random_image(rng, min(h, 700), min(w, 700))
        ours, theirs = ours_proc(image), run_molmo2(ref, image)
        assert "".join(ours.tokens) == Molmo2Processor.replace_image_token(layout, theirs, 0)
        assert ours.geometry.num_image_tokens == len(ours.tokens)

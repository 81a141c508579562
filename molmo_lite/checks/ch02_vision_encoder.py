"""Chapter 02 exercise checks: the vision encoder, compared with molmo_lite.vision.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from molmo_lite.grading import (
    _compare_on_cases,
    _float_array_mismatch,
    _student_function,
    _torch_generator,
    _with_hint,
    check,
)


@check("02_vision_encoder", "patchify")
def check_patchify(namespace: dict) -> None:
    """patchify(images, patch_size) equals molmo_lite.vision.patchify_images on 30 random batches (square and not,
    1 or 3 channels, patch sizes 1 to 14)."""
    import torch

    from molmo_lite import vision

    rng, gen = random.Random(21), _torch_generator(21)
    cases = []
    for _ in range(30):
        p = rng.choice((1, 2, 3, 4, 7, 14))
        gh, gw = rng.randint(1, 4), rng.randint(1, 4)
        shape = (rng.randint(1, 3), rng.choice((1, 3)), gh * p, gw * p)
        cases.append((torch.randn(shape, generator=gen), p))

    def reference(images: Any, patch_size: int) -> tuple:
        b, c, h, w = images.shape
        channels_first = images.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # [B,C,gh,gw,P,P]
        channels_first = channels_first.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * patch_size**2)
        return vision.patchify_images(images, patch_size), {"each patch is in (c, dy, dx) order": channels_first}

    student = _student_function(namespace, "patchify")
    _compare_on_cases(
        "patchify", ("images", "patch_size"), student, reference, cases, _with_hint(_float_array_mismatch)
    )


def _package_patch_embedding(conv_weight: Any) -> Any:
    """The linear patch-embedding weight molmo_lite makes of an open_clip ``conv1.weight`` when it loads CLIP."""
    import torch

    from molmo_lite import config, vision

    width, channels, p, _ = conv_weight.shape
    state = {
        "conv1.weight": conv_weight, "class_embedding": torch.zeros(width),
        "positional_embedding": torch.zeros(2, width), "ln_pre.weight": torch.ones(width),
        "ln_pre.bias": torch.zeros(width),
    }
    cfg = config.VisionConfig(image_size=p, patch_size=p, width=width, layers=0, num_layers_used=None,
                              output_dim=None)
    return vision.state_from_open_clip(state, cfg)["patch_embedding.weight"]


@check("02_vision_encoder", "conv_to_linear")
def check_conv_to_linear(namespace: dict) -> None:
    """conv_to_linear(conv_weight) equals the patch-embedding weight molmo_lite's open_clip loader makes, on 20 random
    conv weights (so that patches in (dy, dx, c) order times its transpose reproduce the convolution)."""
    import torch

    rng, gen = random.Random(22), _torch_generator(22)
    shapes = [(rng.choice((1, 4, 8, 32)), rng.choice((1, 3)), p, p) for p in (rng.choice((1, 2, 3, 5, 14))
                                                                             for _ in range(20))]
    cases = [(torch.randn(shape, generator=gen),) for shape in shapes]

    def reference(conv_weight: Any) -> tuple:
        plain = conv_weight.reshape(conv_weight.shape[0], -1)
        return _package_patch_embedding(conv_weight), {"a plain reshape, whose columns are in (c, dy, dx) order": plain}

    student = _student_function(namespace, "conv_to_linear")
    _compare_on_cases("conv_to_linear", ("conv_weight",), student, reference, cases, _with_hint(_float_array_mismatch))


@check("02_vision_encoder", "interpolate_positions")
def check_interpolate_positions(namespace: dict) -> None:
    """interpolate_positions(pos, grid) equals molmo_lite.vision.interpolate_position_embeddings on 24 random tables
    (up- and downsampling, rectangular grids, the unchanged grid)."""
    import torch

    from molmo_lite import vision

    rng, gen = random.Random(23), _torch_generator(23)
    cases = []
    for k in range(24):
        g = rng.choice((2, 3, 4, 6, 24))
        grid = (g, g) if k % 6 == 0 else (rng.randint(1, 2 * g), rng.randint(1, 2 * g))
        cases.append((torch.randn(1 + g * g, rng.choice((1, 4, 8)), generator=gen), grid))

    def reference(pos: Any, grid: tuple) -> Any:
        return vision.interpolate_position_embeddings(pos, grid)

    student = _student_function(namespace, "interpolate_positions")
    _compare_on_cases("interpolate_positions", ("pos", "grid"), student, reference, cases, _float_array_mismatch)


def _cls_hint(mismatch: Callable[[Any, Any], str | None]) -> Callable[[Any, Any], str | None]:
    """Add "did you drop CLS?" to a shape mismatch with one token too many."""

    def compare(got: Any, expected: Any) -> str | None:
        problem = mismatch(got, expected)
        shape = tuple(getattr(got, "shape", ()))
        if problem and len(shape) == 3 and shape[1] == expected.shape[1] + 1:
            problem += " (the CLS token, position 0 of every block output, must be dropped)"
        return problem

    return compare


@check("02_vision_encoder", "select_features")
def check_select_features(namespace: dict) -> None:
    """select_features(hidden_states, layers) equals molmo_lite's VisionTransformer.features on a small random ViT of
    6 blocks, for 10 layer selections (negative, positive, repeated, unsorted)."""
    import torch

    from molmo_lite import config, vision

    torch_state = torch.random.get_rng_state()  # the ViT's init must not move the notebook's random state
    try:
        torch.manual_seed(24)
        runs = []
        for image_size, batch in ((28, 2), (42, 1)):
            cfg = config.VisionConfig(image_size=image_size, patch_size=14, width=16, layers=6, heads=2, mlp_width=32,
                                      act="gelu", num_layers_used=None, feature_layers=(-1,), output_dim=None)
            vit = vision.VisionTransformer(cfg).eval()
            images = torch.randn(batch, 3, image_size, image_size)
            with torch.no_grad():
                runs.append((vit, images, vit(images)))
    finally:
        torch.random.set_rng_state(torch_state)
    selections = [(-1,), (-2, -5), (0, 3), (-6,), (5, 0, -3), (1, 1), (-1, -2, -3, -4), (2,), (-3, 4), (-5, -2)]
    features_of = {id(hidden): (vit, images) for vit, images, hidden in runs}  # a case's hidden states -> its run
    cases = [(runs[k % 2][2], layers) for k, layers in enumerate(selections)]

    def reference(hidden: list, layers: tuple) -> Any:
        vit, images = features_of[id(hidden)]
        with torch.no_grad():
            return vit.features(images, layers)

    student = _student_function(namespace, "select_features")
    _compare_on_cases(
        "select_features", ("hidden_states", "layers"), student, reference, cases, _cls_hint(_float_array_mismatch)
    )

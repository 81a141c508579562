"""Chapter 02 exercise checks: the vision encoder, compared with molmo_lite.vision.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading_core).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from molmo_lite.grading_core import (
    _compare_on_cases,
    _float_array_mismatch,
    _int_mismatch,
    _student_function,
    _torch_generator,
    _with_hint,
    check,
)


def _conv_by_probing(weight: Any, patch_size: int) -> Any:
    """The conv kernel [D, C, P, P] whose convolution equals ``patchify(images) @ weight.T``, found by feeding the
    linear map one-pixel images: kernel[:, c, dy, dx] is its output for a single 1 at channel c, pixel (dy, dx)."""
    import torch

    from molmo_lite import vision

    d, n = weight.shape
    channels = n // patch_size**2
    kernel = torch.zeros(d, channels, patch_size, patch_size, dtype=weight.dtype)
    for c in range(channels):
        for dy in range(patch_size):
            for dx in range(patch_size):
                pixel = torch.zeros(1, channels, patch_size, patch_size, dtype=weight.dtype)
                pixel[0, c, dy, dx] = 1.0
                kernel[:, c, dy, dx] = (vision.patchify_images(pixel, patch_size) @ weight.T)[0, 0]
    return kernel


@check("02_vision_encoder", "linear_to_conv")
def check_linear_to_conv(namespace: dict) -> None:
    """linear_to_conv(weight, patch_size) is the conv kernel whose stride-P convolution reproduces the linear patch
    embedding on molmo_lite's (dy, dx, c) patches, found by probing the linear map with one-pixel images, on 20
    random weights (1 or 3 channels, patch sizes 1 to 7, widths 1 to 32)."""
    import torch

    rng, gen = random.Random(21), _torch_generator(21)
    cases = []
    for _ in range(20):
        p, c, d = rng.choice((1, 2, 3, 5, 7)), rng.choice((1, 3)), rng.choice((1, 4, 8, 32))
        cases.append((torch.randn(d, p * p * c, generator=gen), p))

    def reference(weight: Any, patch_size: int) -> tuple:
        d, n = weight.shape
        c = n // patch_size**2
        wrong = {
            "a plain reshape to [D, C, P, P]: the columns are in (dy, dx, c) order, so reshape to [D, P, P, C] and "
            "move the channels": weight.reshape(d, c, patch_size, patch_size),
            "dy and dx swapped (the kernel transposed)": weight.reshape(d, patch_size, patch_size, c).permute(
                0, 3, 2, 1),
        }
        return _conv_by_probing(weight, patch_size), wrong

    student = _student_function(namespace, "linear_to_conv")
    _compare_on_cases("linear_to_conv", ("weight", "patch_size"), student, reference, cases,
                      _with_hint(_float_array_mismatch))


def _vit_configs() -> list[Any]:
    """Molmo's ViT-L with and without CLIP's head and with all 24 blocks, the course's presets, random small ones."""
    from dataclasses import replace

    from molmo_lite import config

    molmo = config.VISION_PRESETS["molmo"]
    configs = [molmo, replace(molmo, output_dim=None), replace(molmo, num_layers_used=None, output_dim=None),
               config.VISION_PRESETS["tiny"], config.VISION_PRESETS["small"]]
    rng = random.Random(22)
    for _ in range(15):
        p, grid, width = rng.choice((2, 7, 14, 16)), rng.randint(1, 6), rng.choice((8, 16, 48))
        layers = rng.randint(1, 6)
        configs.append(config.VisionConfig(
            image_size=p * grid, patch_size=p, width=width, layers=layers, heads=rng.choice((1, 2, 4)),
            mlp_width=rng.choice((width, 4 * width, 24)), act="gelu",
            num_layers_used=rng.choice((None, max(1, layers - 1))), feature_layers=(-1,),
            output_dim=rng.choice((None, 4, 32))))
    return configs


@check("02_vision_encoder", "vit_num_params")
def check_vit_num_params(namespace: dict) -> None:
    """vit_num_params(config) equals the number of parameters of molmo_lite.vision.VisionTransformer(config), built
    on PyTorch's meta device (shapes only), for Molmo's ViT-L (with and without CLIP's head, with 23 or 24 blocks),
    the tiny and small presets and 15 random small configurations."""
    import torch

    from molmo_lite import vision

    cases = [(cfg,) for cfg in _vit_configs()]

    def reference(cfg: Any) -> tuple:
        with torch.device("meta"):
            model = vision.VisionTransformer(cfg)
        count = sum(p.numel() for p in model.parameters())
        w, m = cfg.width, cfg.mlp_width
        block = 4 * w * w + 2 * w * m + 9 * w + m
        head = 0 if cfg.output_dim is None else 2 * w + w * cfg.output_dim
        wrong = {
            "`layers` blocks counted: molmo_lite builds only the blocks it uses, `config.blocks_used` (Molmo: 23 of "
            "CLIP's 24)": count + (cfg.layers - cfg.blocks_used) * block,
            "CLIP's head left out: with output_dim set the model has post_ln and proj [width, output_dim] too":
                count - head,
            "one position embedding short: there is one per patch plus one for CLS": count - w,
        }
        return count, {hint: n for hint, n in wrong.items() if n != count}

    student = _student_function(namespace, "vit_num_params")
    _compare_on_cases("vit_num_params", ("config",), student, reference, cases, _with_hint(_int_mismatch))


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

"""Molmo's image preprocessing: one low-resolution overview plus overlapping high-resolution crops.

The steps, in the order chapter 01 builds them (Molmo: allenai/molmo, olmo/data/model_preprocessor.py):

1. ``load_image``        any PIL image / array / file -> float RGB tensor [3, H, W] in [0, 1] (bad input -> ValueError).
2. ``select_tiling``     how many rows x cols of crops fit the image best, at most ``max_crops`` of them.
3. ``resize_and_pad``    resize keeping the aspect ratio, pad to the canvas, and say which pixels are real.
4. overlapping crops     ``crop_size`` windows every ``window`` pixels, so neighbours share ``overlap_margins``.
5. ``stitched_patch_index`` / ``arange_for_pooling``
                         which crop patch each position of the stitched high-res grid comes from (overlap margins
                         dropped), grouped into 2x2 pooling windows: ``pooled_patches_idx`` (-1 = padding).
6. ``image_token_layout`` the text tokens that stand for the image: <im_start> rows of <im_patch> ending in <im_col>.

The global image goes first: its crop is index 0, its pooled tokens come first, and every high-res crop index is
offset by the global image's patches. ``MolmoImageProcessor`` runs all of it on one image.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import IM_COL, IM_END, IM_PATCH, IM_START, PreprocessorConfig, preprocessor_preset

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor, str, Path, bytes]

# --------------------------------------------------------------------------------------------------------------------
# 1. Loading: everything becomes a float RGB tensor [3, H, W] in [0, 1], or a ValueError that names the problem.
# --------------------------------------------------------------------------------------------------------------------


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend float [H, W, 3] colours over a white background with float [H, W] alpha (all in [0, 1])."""
    return rgb * alpha[..., None] + (1.0 - alpha[..., None])


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image of any mode -> [H, W, 3] array: uint8 for ordinary images, float32 in [0, 1] where transparency
    was composited on white or the image has more than 8 bits."""
    try:
        img = ImageOps.exif_transpose(img) or img  # EXIF-rotated photos -> upright
        img.load()
    except Exception as err:  # truncated files, broken EXIF, unsupported compression ...
        raise ValueError(f"could not decode the image: {err}") from None
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _array_to_float_rgb(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite_on_white(rgba[..., :3], rgba[..., 3])
    return np.asarray(img.convert("RGB"))  # L, 1, P, CMYK, YCbCr, ... as uint8 RGB


def _array_to_float_rgb(arr: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 1|2|3|4] array -> [H, W, 3]; uint8 RGB passes through, everything else becomes float32 in [0, 1].

    Integers: uint8 (and bool) are read as 0..255, uint16 as 0..65535, any other integer type must hold 0..255 or
    0..65535 values. Floats must be finite and in [0, 1]. Channels: 1 = gray, 2 = gray + alpha, 3 = RGB, 4 = RGBA.
    """
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4):
        hint = " (channels-first? pass [H, W, C])" if arr.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"image array must be [H, W] or [H, W, C] with C in 1..4, got shape {arr.shape}{hint}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"image array must be [H, W] or [H, W, C], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image has zero area: shape {arr.shape}")
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3:
        return arr  # the common case, converted to float on the torch side
    if arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        scale = 65535.0 if arr.dtype == np.uint16 or hi > 255 else 255.0
        if lo < 0 or hi > scale:
            raise ValueError(f"integer image values must lie in 0..255 or 0..65535, got {lo}..{hi}")
        out = arr.astype(np.float32) / scale
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("image contains non-finite values (nan or inf)")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float images must lie in [0, 1], got {lo:g}..{hi:g} (divide uint8 data by 255)")
        out = arr.astype(np.float32)
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}")
    if out.ndim == 2:
        out = out[..., None]
    channels = out.shape[-1]
    if channels == 1:
        return np.repeat(out, 3, axis=-1)
    if channels == 2:
        return _composite_on_white(np.repeat(out[..., :1], 3, axis=-1), out[..., 1])
    if channels == 4:
        return _composite_on_white(out[..., :3], out[..., 3])
    return out


def load_image(image: ImageLike) -> torch.Tensor:
    """Any image -> float32 RGB tensor [3, H, W] with values in [0, 1].

    Accepts a PIL image (any mode), a numpy array [H, W] or [H, W, C], a torch tensor [C, H, W] or [H, W] (so its own
    output too), a file path or the raw bytes of an image file. Documented repairs: grayscale, palette, CMYK and 16-bit images become RGB; transparent
    images (RGBA, LA, palette with transparency) are composited on white; EXIF-rotated photos are turned upright.
    Anything else (undecodable bytes, zero area, non-finite values, wrong shape) raises ValueError.
    """
    if isinstance(image, (str, Path, bytes, bytearray)):
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
        try:
            image = Image.open(source)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"not a readable image: {err}") from None
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image has zero area: {image.width}x{image.height}")
        arr = _pil_to_array(image)
    elif isinstance(image, torch.Tensor):  # torch convention: channels first, as load_image itself returns
        if image.ndim == 3 and image.shape[0] not in (1, 2, 3, 4):
            raise ValueError(f"image tensors must be [C, H, W] with C in 1..4 or [H, W], got shape {tuple(image.shape)}")
        tensor = image.detach().cpu()
        arr = _array_to_float_rgb((tensor.permute(1, 2, 0) if tensor.ndim == 3 else tensor).numpy())
    elif isinstance(image, np.ndarray):
        arr = _array_to_float_rgb(image)
    else:
        raise ValueError(f"expected a PIL image, an array, a path or bytes, got {type(image).__name__}")
    if not arr.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory even though we only read
        arr = arr.copy()
    pixels = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    # channels-first float in one pass: the antialiased resize is fastest on this layout
    pixels = pixels.to(torch.float32, memory_format=torch.contiguous_format)
    return pixels.div_(255.0) if arr.dtype == np.uint8 else pixels


# --------------------------------------------------------------------------------------------------------------------
# 2-3. Tiling and resizing.
# --------------------------------------------------------------------------------------------------------------------


def select_tiling(height: int, width: int, window: int, max_crops: int) -> tuple[int, int]:
    """Pick (rows, cols) of ``window``-sized tiles for an image of ``height`` x ``width`` pixels.

    Candidates are all (rows, cols) with rows * cols <= max_crops, in order of (rows * cols, rows). The scale each
    needs is min(rows * window / height, cols * window / width). If every candidate must shrink the image (scale
    < 1), take the one that shrinks it least; otherwise the one that enlarges it least (first wins on ties).
    Computed in float32 as Molmo does. Height or width <= 0 (tiny images, after removing the margins) are allowed:
    every scale is then negative and the answer is (1, 1).
    """
    tilings = [(i, j) for i in range(1, max_crops + 1) for j in range(1, max_crops + 1) if i * j <= max_crops]
    tilings.sort(key=lambda t: (t[0] * t[1], t[0]))
    sizes = np.array(tilings, dtype=np.float32) * np.float32(window)  # [n, 2] (rows, cols) in pixels
    with np.errstate(divide="ignore"):  # a side of exactly 0 gives an infinite scale, as in Molmo
        scales = (sizes / np.array([height, width], dtype=np.float32)).min(axis=1)
    if np.all(scales < 1):
        return tilings[int(np.argmax(scales))]
    return tilings[int(np.argmin(np.where(scales < 1, np.float32(1e10), scales)))]


def _resize_into_canvas(
    image: torch.Tensor, size: tuple[int, int], antialias: bool, pad: bool
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The work of ``resize_and_pad``; returns the canvas and the real pixels' box (top, left, height, width)."""
    height, width = size
    h, w = image.shape[-2:]
    if pad:
        scale = min(np.float32(height) / np.float32(h), np.float32(width) / np.float32(w))
        sh, sw = max(1, int(np.float32(h) * scale)), max(1, int(np.float32(w) * scale))
    else:
        sh, sw = height, width
    if (sh, sw) == (h, w):
        resized = image
    else:
        resized = F.interpolate(image[None], size=(sh, sw), mode="bilinear", align_corners=False, antialias=antialias)
        resized = resized[0].clamp_(0.0, 1.0)
    if (sh, sw) == (height, width):
        return resized, (0, 0, height, width)
    top, left = (height - sh) // 2, (width - sw) // 2
    canvas = image.new_zeros(3, height, width)
    canvas[:, top : top + sh, left : left + sw] = resized
    return canvas, (top, left, sh, sw)


def resize_and_pad(
    image: torch.Tensor, size: tuple[int, int], antialias: bool = True, pad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize float [3, h, w] into a [3, H, W] canvas; returns (canvas, mask [H, W] bool, True = real pixel).

    pad=True (Molmo): scale = min(H/h, W/w) in float32, new size int(h*scale) x int(w*scale) (at least 1 pixel),
    bilinear, clipped to [0, 1], centred on a zero canvas (top = (H - sh) // 2, left = (W - sw) // 2).
    pad=False (Molmo2): stretch to exactly H x W, no padding.
    """
    canvas, (top, left, sh, sw) = _resize_into_canvas(image, size, antialias, pad)
    mask = torch.zeros(size, dtype=torch.bool)
    mask[top : top + sh, left : left + sw] = True
    return canvas, mask


def _patch_real_fraction(box: tuple[int, int, int, int], size: tuple[int, int], patch: int) -> torch.Tensor:
    """Fraction of real pixels in every patch of a canvas whose real pixels are the rectangle ``box``: [H/P, W/P].

    The mask is a rectangle, so the fraction is (rows covered / P) x (columns covered / P), one outer product.
    """
    top, left, sh, sw = box

    def covered(start: int, length: int, n: int) -> torch.Tensor:
        real = torch.zeros(n)
        real[start : start + length] = 1.0
        return real.reshape(-1, patch).mean(dim=1)

    return covered(top, sh, size[0])[:, None] * covered(left, sw, size[1])[None, :]


def normalize(
    image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], out: torch.Tensor | None = None
) -> torch.Tensor:
    """(image - mean) / std per channel, for [..., 3, H, W]; padding (0) becomes -mean/std, as in Molmo.

    One fused pass, image * (1 / std) + (-mean / std), written into ``out`` when given (any view of the right shape).
    """
    scale = 1.0 / torch.tensor(std, dtype=torch.float64)
    shift = -torch.tensor(mean, dtype=torch.float64) * scale
    shift, scale = shift.to(image.dtype).view(3, 1, 1), scale.to(image.dtype).view(3, 1, 1)
    if out is None:
        return torch.addcmul(shift, image, scale)
    return torch.addcmul(shift, image, scale, out=out)


# --------------------------------------------------------------------------------------------------------------------
# 4-5. Crops, patches and the pooled-patch indices.
# --------------------------------------------------------------------------------------------------------------------


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[n, C, S, S] -> [n, (S/P)^2, P*P*C]: patches in raster order, each flattened in (dy, dx, c) order."""
    n, c, h, w = images.shape
    hp, wp = h // patch_size, w // patch_size
    x = images.reshape(n, c, hp, patch_size, wp, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, hp * wp, patch_size * patch_size * c)


def _kept_positions(n_tiles: int, crop_patches: int, margins: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis of the stitched grid: (tile index, patch index inside the tile) of every kept patch.

    Tile t keeps patches [m0, crop_patches - m1), except that the first tile also keeps its leading margin and the
    last tile its trailing margin. Length: n_tiles * (crop_patches - m0 - m1) + m0 + m1.
    """
    m0, m1 = margins
    tiles, inside = [], []
    for t in range(n_tiles):
        start = 0 if t == 0 else m0
        stop = crop_patches if t == n_tiles - 1 else crop_patches - m1
        tiles.append(np.full(stop - start, t))
        inside.append(np.arange(start, stop))
    return np.concatenate(tiles), np.concatenate(inside)


def stitched_patch_index(rows: int, cols: int, crop_patches: int, overlap_margins: tuple[int, int]) -> np.ndarray:
    """For each patch of the stitched high-res grid, its flat index among all crops' patches.

    Crop k = i * cols + j owns indices k * crop_patches**2 + r * crop_patches + c. Overlap margins are dropped so
    every image region appears once. Returns int64 [rows * w + m0 + m1, cols * w + m0 + m1], w = crop_patches - m0 - m1.
    """
    row_tile, row_in = _kept_positions(rows, crop_patches, overlap_margins)
    col_tile, col_in = _kept_positions(cols, crop_patches, overlap_margins)
    crop = row_tile[:, None] * cols + col_tile[None, :]
    return (crop * crop_patches**2 + row_in[:, None] * crop_patches + col_in[None, :]).astype(np.int64)


def arange_for_pooling(index_grid: np.ndarray, pool_h: int, pool_w: int) -> np.ndarray:
    """Group an [H, W] grid of patch indices into pool_h x pool_w windows -> [ceil(H/ph) * ceil(W/pw), ph * pw].

    A grid that does not divide evenly is padded with -1, half before and the rest after (for 2x2 pooling: one row
    or column at the bottom / right, as Molmo pads). Windows are in raster order, their members in raster order too.
    """
    h, w = index_grid.shape
    pad_h, pad_w = (-h) % pool_h, (-w) % pool_w
    grid = np.pad(index_grid, [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)], constant_values=-1)
    gh, gw = grid.shape[0] // pool_h, grid.shape[1] // pool_w
    return grid.reshape(gh, pool_h, gw, pool_w).transpose(0, 2, 1, 3).reshape(gh * gw, pool_h * pool_w)


# --------------------------------------------------------------------------------------------------------------------
# 6. The image tokens.
# --------------------------------------------------------------------------------------------------------------------


def image_token_layout(global_grid: tuple[int, int], crop_grid: tuple[int, int], low_res_start: str = IM_START,
                       low_res_cols: bool = True) -> list[str]:
    """The token strings that stand for one image: the global image's block, then the stitched crops' block (none
    when crop_grid is (0, 0): crop_mode "resize").

    Each block is <im_start>, then per pooled row (width x <im_patch>, <im_col>), then <im_end>.
    Molmo's 336 px geometry: global 12 x 12 -> 158 tokens; crops (8r+4) x (8c+4) -> (8r+4)(8c+5) + 2 tokens.
    Molmo2 writes the global block differently (PreprocessorConfig.low_res_start / low_res_cols): it opens with
    <low_res_im_start> and has no <im_col>.
    """
    tokens: list[str] = []
    for block, (h, w) in enumerate((global_grid, crop_grid)):
        if block and h * w == 0:  # crop_mode "resize": the overview alone
            break
        cols = [IM_COL] if block or low_res_cols else []
        tokens.append(low_res_start if block == 0 else IM_START)
        tokens.extend(([IM_PATCH] * w + cols) * h)
        tokens.append(IM_END)
    return tokens


@dataclass(frozen=True)
class CropGeometry:
    """Everything about an image's crops that depends only on its size (no pixels needed)."""

    tiling: tuple[int, int]  # (rows, cols) of high-res crops
    canvas_size: tuple[int, int]  # (H', W') pixels the image is resized+padded to before cropping
    global_grid: tuple[int, int]  # pooled (rows, cols) of the global image
    crop_grid: tuple[int, int]  # pooled (rows, cols) of the stitched crops, margins dropped
    low_res_cols: bool = True  # the global image's rows end with <im_col> (Molmo 1), or not (Molmo2)

    @property
    def num_crops(self) -> int:
        return 1 + self.tiling[0] * self.tiling[1]

    @property
    def num_image_features(self) -> int:
        return self.global_grid[0] * self.global_grid[1] + self.crop_grid[0] * self.crop_grid[1]

    @property
    def num_image_tokens(self) -> int:
        (gh, gw), (h, w) = self.global_grid, self.crop_grid
        return (gh * (gw + int(self.low_res_cols)) + 2) + (h * (w + 1) + 2 if h * w else 0)


def crop_geometry(height: int, width: int, config: PreprocessorConfig) -> CropGeometry:
    """Tiling, canvas and pooled grids for an image of ``height`` x ``width`` pixels under ``config``
    (crop_mode "resize": no crops, tiling (0, 0), the canvas the overview's)."""
    m0, m1 = config.overlap_margins
    crop_patches = config.crop_size // config.patch_size
    ph, pw = config.pooling

    def pooled(n_patches: int, pool: int) -> int:
        return math.ceil(n_patches / pool)

    global_grid = (pooled(crop_patches, ph), pooled(crop_patches, pw))
    if config.crop_mode == "resize":
        return CropGeometry(tiling=(0, 0), canvas_size=(config.crop_size, config.crop_size), global_grid=global_grid,
                            crop_grid=(0, 0), low_res_cols=config.low_res_cols)
    window = (crop_patches - m0 - m1) * config.patch_size  # pixels between neighbouring crops
    margin = (m0 + m1) * config.patch_size
    rows, cols = select_tiling(height - margin, width - margin, window, config.max_crops)
    canvas = (rows * window + margin, cols * window + margin)

    return CropGeometry(
        tiling=(rows, cols),
        canvas_size=canvas,
        global_grid=global_grid,
        crop_grid=(pooled(canvas[0] // config.patch_size, ph), pooled(canvas[1] // config.patch_size, pw)),
        low_res_cols=config.low_res_cols,
    )


def num_image_tokens(
    height: int,
    width: int,
    *,
    crop_size: int = 336,
    patch_size: int = 14,
    max_crops: int = 12,
    overlap_margins: tuple[int, int] = (4, 4),
    pooling: tuple[int, int] = (2, 2),
) -> int:
    """How many tokens an image of ``height`` x ``width`` takes in the prompt (e.g. 480x640 -> 740)."""
    config = PreprocessorConfig(crop_size, patch_size, max_crops, tuple(overlap_margins), tuple(pooling))
    return crop_geometry(height, width, config).num_image_tokens


# --------------------------------------------------------------------------------------------------------------------
# The processor.
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ImageInputs:
    """What the model needs to see one image (shapes for n = 1 + rows * cols crops, S = crop size, P = patch size).

    crops:              float [n, 3, S, S], CLIP-normalised; crops[0] is the global image.
    patch_pad_fraction: float [n, (S/P)^2], fraction of real (non-padding) pixels in each patch.
    pooled_patches_idx: long [n_image_features, pool_h * pool_w], indices into the n * (S/P)^2 flattened patches
                        that each image token pools; -1 marks a padding slot.
    tiling:             (rows, cols) of the high-res crops.
    tokens:             the image's token strings (<im_start>, <im_patch>, <im_col>, <im_end>).
    """

    crops: torch.Tensor
    patch_pad_fraction: torch.Tensor
    pooled_patches_idx: torch.Tensor
    tiling: tuple[int, int]
    tokens: list[str]
    geometry: CropGeometry
    original_size: tuple[int, int]
    patch_size: int

    @property
    def num_image_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_crops(self) -> int:
        return self.crops.shape[0]

    @property
    def patches(self) -> torch.Tensor:
        """The crops as flattened patches [n, (S/P)^2, P*P*3], Molmo's ViT input layout."""
        return patchify(self.crops, self.patch_size)


class MolmoImageProcessor:
    """Molmo's overlap-and-resize preprocessing of one image (see chapter 01).

    >>> processor = MolmoImageProcessor()                        # the released models' geometry
    >>> out = processor(np.zeros((480, 640, 3), dtype=np.uint8))
    >>> out.tiling, out.num_crops, out.num_image_tokens
    ((2, 3), 7, 740)
    """

    def __init__(
        self,
        crop_size: int = 336,
        patch_size: int = 14,
        max_crops: int = 12,
        overlap_margins: tuple[int, int] = (4, 4),
        pooling: tuple[int, int] = (2, 2),
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        resize: str = "pad",
        antialias: bool = True,
        low_res_start: str = IM_START,
        low_res_cols: bool = True,
        crop_mode: str = "overlap-and-resize",
    ):
        defaults = PreprocessorConfig()
        self.config = PreprocessorConfig(
            crop_size=crop_size,
            patch_size=patch_size,
            max_crops=max_crops,
            overlap_margins=tuple(overlap_margins),
            pooling=tuple(pooling),
            image_mean=tuple(image_mean or defaults.image_mean),
            image_std=tuple(image_std or defaults.image_std),
            resize=resize,
            antialias=antialias,
            low_res_start=low_res_start,
            low_res_cols=low_res_cols,
            crop_mode=crop_mode,
        )
        _validate(self.config)

    @classmethod
    def from_config(cls, config: PreprocessorConfig | str) -> "MolmoImageProcessor":
        """Build from a PreprocessorConfig or a preset name ("molmo", "tiny", ...)."""
        config = preprocessor_preset(config) if isinstance(config, str) else config
        return cls(**config.to_dict())

    def __repr__(self) -> str:
        return f"MolmoImageProcessor({self.config})"

    def geometry(self, height: int, width: int) -> CropGeometry:
        return crop_geometry(height, width, self.config)

    def __call__(self, image: ImageLike) -> ImageInputs:
        cfg = self.config
        pixels = load_image(image)
        height, width = pixels.shape[-2:]
        geo = self.geometry(height, width)
        size, patch, pad = cfg.crop_size, cfg.patch_size, cfg.resize == "pad"
        crop_patches = size // patch
        window = (crop_patches - sum(cfg.overlap_margins)) * patch

        # The global image and the canvas the crops are cut from, CLIP-normalised (padding 0 -> -mean/std).
        global_image, global_box = _resize_into_canvas(pixels, (size, size), cfg.antialias, pad)
        rows, cols = geo.tiling
        ph, pw = cfg.pooling
        n_patches = crop_patches * crop_patches
        global_idx = arange_for_pooling(np.arange(n_patches).reshape(crop_patches, crop_patches), ph, pw)
        global_frac = _patch_real_fraction(global_box, (size, size), patch)
        if rows * cols == 0:  # crop_mode "resize": the overview alone
            crops = normalize(global_image, cfg.image_mean, cfg.image_std)[None]
            pad_fraction, pooled = global_frac[None], global_idx
        else:
            canvas, canvas_box = _resize_into_canvas(pixels, geo.canvas_size, cfg.antialias, pad)
            crops = torch.empty(1 + rows * cols, 3, size, size)
            normalize(global_image, cfg.image_mean, cfg.image_std, out=crops[0])
            windows = canvas.unfold(1, size, window).unfold(2, size, window).permute(1, 2, 0, 3, 4)  # [r, c, 3, S, S]
            normalize(windows, cfg.image_mean, cfg.image_std, out=crops[1:].view(rows, cols, 3, size, size))
            # the same windows over the per-patch real-pixel fractions (crops start on patch boundaries)
            canvas_frac = _patch_real_fraction(canvas_box, geo.canvas_size, patch)
            crop_frac = canvas_frac.unfold(0, crop_patches, window // patch).unfold(1, crop_patches, window // patch)
            pad_fraction = torch.cat([global_frac[None], crop_frac.reshape(rows * cols, crop_patches, crop_patches)])
            crop_idx = arange_for_pooling(stitched_patch_index(rows, cols, crop_patches, cfg.overlap_margins), ph, pw)
            crop_idx = np.where(crop_idx >= 0, crop_idx + n_patches, -1)  # the global image's patches come first
            pooled = np.concatenate([global_idx, crop_idx])
        return ImageInputs(
            crops=crops,
            patch_pad_fraction=pad_fraction.reshape(-1, n_patches),
            pooled_patches_idx=torch.from_numpy(pooled).long(),
            tiling=geo.tiling,
            tokens=image_token_layout(geo.global_grid, geo.crop_grid, cfg.low_res_start, cfg.low_res_cols),
            geometry=geo,
            original_size=(int(height), int(width)),
            patch_size=patch,
        )


def _validate(cfg: PreprocessorConfig) -> None:
    """ValueError for a geometry the crops cannot be built with."""
    if cfg.patch_size <= 0 or cfg.crop_size <= 0 or cfg.crop_size % cfg.patch_size:
        raise ValueError(f"crop_size ({cfg.crop_size}) must be a positive multiple of patch_size ({cfg.patch_size})")
    crop_patches = cfg.crop_size // cfg.patch_size
    if len(cfg.overlap_margins) != 2 or min(cfg.overlap_margins) < 0 or sum(cfg.overlap_margins) >= crop_patches:
        raise ValueError(
            f"overlap_margins {cfg.overlap_margins} must be two non-negative patch counts whose sum is below the "
            f"{crop_patches} patches of a crop"
        )
    if cfg.max_crops < 1:
        raise ValueError(f"max_crops must be at least 1, got {cfg.max_crops}")
    if len(cfg.pooling) != 2 or min(cfg.pooling) < 1:
        raise ValueError(f"pooling must be two positive sizes, got {cfg.pooling}")
    if cfg.resize not in ("pad", "stretch"):
        raise ValueError(f"resize must be 'pad' (Molmo) or 'stretch' (Molmo2), got {cfg.resize!r}")
    if cfg.crop_mode not in ("overlap-and-resize", "resize"):
        raise ValueError(f"crop_mode must be 'overlap-and-resize' or 'resize' (the overview alone), "
                         f"got {cfg.crop_mode!r}")


def batch_images(images: Sequence[ImageInputs]) -> dict[str, torch.Tensor]:
    """Several images' inputs -> one batch for the model (images may differ in size and number of crops).

    crops [sum n_crops, 3, S, S] and patch_pad_fraction [sum n_crops, (S/P)^2] are concatenated image after image;
    pooled_patches_idx [sum n_image_features, k] is shifted so that it indexes the flattened patches of ALL crops
    (-1 stays -1). The features come out in the same order, image after image, as the <im_patch> tokens of a batch
    whose rows hold the images in this order.
    """
    if not images:
        raise ValueError("batch_images needs at least one ImageInputs")
    idx, offset = [], 0
    for inputs in images:
        pooled = inputs.pooled_patches_idx
        idx.append(torch.where(pooled >= 0, pooled + offset, pooled))
        offset += inputs.patch_pad_fraction.numel()
    return {
        "crops": torch.cat([inputs.crops for inputs in images]),
        "patch_pad_fraction": torch.cat([inputs.patch_pad_fraction for inputs in images]),
        "pooled_patches_idx": torch.cat(idx),
    }

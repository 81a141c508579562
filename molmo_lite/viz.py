"""Figures for the chapters: crops drawn on the image, the crops themselves, the image-token layout.

Every function draws on a matplotlib Axes (made if not given) and returns it, so notebooks can compose figures.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from .config import IM_COL, IM_END, IM_PATCH, IM_START, PreprocessorConfig
from .preprocessing import ImageInputs, ImageLike, crop_geometry, load_image, resize_and_pad

CROP_COLOURS = plt.get_cmap("tab10").colors


def denormalize(crops: torch.Tensor, config: PreprocessorConfig) -> np.ndarray:
    """CLIP-normalised [n, 3, S, S] -> displayable float [n, S, S, 3] in [0, 1]."""
    mean = torch.tensor(config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std).view(1, 3, 1, 1)
    return (crops * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _axes(ax, figsize=(6, 5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_crop_layout(image: ImageLike, config: PreprocessorConfig, ax=None, show_patches: bool = False):
    """The resized + padded canvas with every crop window drawn on it.

    Each crop is outlined in its colour; the part of it that survives (overlap margins dropped) is tinted, so the
    overlapping strips that two crops share but only one of them contributes show as untinted bands.
    """
    ax = _axes(ax)
    pixels = load_image(image)
    geo = crop_geometry(pixels.shape[-2], pixels.shape[-1], config)
    canvas, mask = resize_and_pad(pixels, geo.canvas_size, config.antialias, config.resize == "pad")
    ax.imshow(canvas.permute(1, 2, 0).numpy())
    ax.imshow(np.ma.masked_where(mask.numpy(), np.ones(mask.shape)), cmap="Greys", alpha=0.35, vmin=0, vmax=1)
    rows, cols = geo.tiling
    size, patch = config.crop_size, config.patch_size
    m0, m1 = (m * patch for m in config.overlap_margins)
    window = size - m0 - m1
    for i in range(rows):
        for j in range(cols):
            colour = CROP_COLOURS[(i * cols + j) % len(CROP_COLOURS)]
            y0, x0 = i * window, j * window
            ax.add_patch(Rectangle((x0, y0), size, size, fill=False, lw=2, ec=colour))
            top, left = (0 if i == 0 else m0), (0 if j == 0 else m0)
            bottom, right = (size if i == rows - 1 else size - m1), (size if j == cols - 1 else size - m1)
            ax.add_patch(Rectangle((x0 + left, y0 + top), right - left, bottom - top, color=colour, alpha=0.18, lw=0))
            ax.text(x0 + 6, y0 + 6, f"{i},{j}", color="white", va="top", fontsize=9,
                    bbox=dict(facecolor=colour, alpha=0.8, lw=0, pad=1))
    if show_patches:
        for y in range(0, geo.canvas_size[0] + 1, patch):
            ax.axhline(y - 0.5, color="white", lw=0.3, alpha=0.5)
        for x in range(0, geo.canvas_size[1] + 1, patch):
            ax.axvline(x - 0.5, color="white", lw=0.3, alpha=0.5)
    ax.set_title(f"{pixels.shape[-2]}x{pixels.shape[-1]} -> canvas {geo.canvas_size[0]}x{geo.canvas_size[1]}, "
                 f"tiling {rows}x{cols}")
    ax.set_axis_off()
    return ax


def plot_crops(inputs: ImageInputs, config: PreprocessorConfig, max_cols: int = 7, size: float = 1.8):
    """All crops as the ViT sees them (denormalised), the global image first; padded patches shaded red."""
    images = denormalize(inputs.crops, config)
    n = len(images)
    ncols = min(n, max_cols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    grid = config.crop_size // config.patch_size
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(images[k])
        pad = 1.0 - inputs.patch_pad_fraction[k].reshape(grid, grid).numpy()
        if pad.any():
            overlay = np.zeros((grid, grid, 4))
            overlay[..., 0], overlay[..., 3] = 1.0, 0.45 * pad
            ax.imshow(overlay, extent=(-0.5, config.crop_size - 0.5, config.crop_size - 0.5, -0.5))
        rows, cols = inputs.tiling
        ax.set_title("global" if k == 0 else f"crop {(k - 1) // cols},{(k - 1) % cols}", fontsize=9)
    fig.tight_layout()
    return fig


TOKEN_COLOURS = {IM_START: "tab:green", IM_END: "tab:red", IM_PATCH: "tab:blue", IM_COL: "tab:orange"}


def plot_token_layout(tokens: Sequence[str], ax=None, title: str | None = None):
    """Draw the image tokens as coloured cells, one row per <im_col>, one block per <im_start> ... <im_end>."""
    rows: list[list[str]] = [[]]
    for tok in tokens:
        rows[-1].append(tok)
        if tok in (IM_START, IM_COL, IM_END):  # each of these ends a drawn row
            rows.append([])
    rows = [r for r in rows if r]
    width = max(len(r) for r in rows)
    ax = _axes(ax, figsize=(min(12, 0.12 * width + 1), min(10, 0.12 * len(rows) + 1)))
    for y, row in enumerate(rows):
        for x, tok in enumerate(row):
            ax.add_patch(Rectangle((x, -y), 0.9, 0.9, color=TOKEN_COLOURS.get(tok, "grey")))
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(-len(rows), 1.5)
    ax.set_aspect("equal")
    ax.set_axis_off()
    handles = [Rectangle((0, 0), 1, 1, color=c, label=t) for t, c in TOKEN_COLOURS.items()]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title or f"{len(tokens)} image tokens", pad=40)
    return ax


def plot_max_crops_sweep(image: ImageLike, config: PreprocessorConfig, values: Sequence[int] = (1, 2, 4, 12, 36)):
    """Small multiples: the crop layout of one image for several ``max_crops`` (the static twin of the explorer)."""
    fig, axes = plt.subplots(1, len(values), figsize=(3.2 * len(values), 3.4))
    for ax, value in zip(np.atleast_1d(axes), values):
        cfg = PreprocessorConfig(**{**config.to_dict(), "max_crops": value})
        plot_crop_layout(image, cfg, ax=ax)
        geo = crop_geometry(*load_image(image).shape[-2:], cfg)
        ax.set_title(f"max_crops={value}: {geo.tiling[0]}x{geo.tiling[1]}, {geo.num_image_tokens} tokens", fontsize=9)
    fig.tight_layout()
    return fig


def crop_explorer(image: ImageLike, config: PreprocessorConfig, max_value: int = 36):
    """A slider over ``max_crops`` that redraws the crop layout of ``image``.

    The figure is an ordinary output (it shows on GitHub, in nbconvert and wherever widgets do not run); in a widget
    frontend such as JupyterLab, moving the slider replaces it. Without ipywidgets only the figure is shown and None
    is returned; otherwise the slider.
    """
    from IPython.display import display

    pixels = load_image(image)  # decode once, redraw on every slider move

    def figure_for(max_crops: int):
        fig, ax = plt.subplots(figsize=(6, 5))
        plot_crop_layout(pixels, PreprocessorConfig(**{**config.to_dict(), "max_crops": max_crops}), ax=ax)
        plt.close(fig)  # displayed explicitly below, not again by the inline backend
        return fig

    try:
        import ipywidgets as widgets
    except ImportError:
        display(figure_for(config.max_crops))
        return None
    slider = widgets.IntSlider(value=config.max_crops, min=1, max=max_value, description="max_crops")
    display(slider)
    handle = display(figure_for(config.max_crops), display_id=True)
    slider.observe(lambda change: handle.update(figure_for(change["new"])), names="value")
    return slider

"""Figures for the chapters: crops drawn on the image, the crops themselves, the image-token layout.

Every function draws on a matplotlib Axes (made if not given) and returns it, so notebooks can compose figures.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

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


# --------------------------------------------------------------------------------------------------------------------
# Chapter 00: the map of the course.
# --------------------------------------------------------------------------------------------------------------------

_MAP_PARTS = {  # colour of each part: (fill, edge)
    "pre": ("#dbe9f6", "#2f6ea5"), "vit": ("#e2f0da", "#3f8a33"), "con": ("#fde8cf", "#cc7722"),
    "llm": ("#ebe1f5", "#74529e"), "tok": ("#f7e0ea", "#a8466f"), "out": ("#fff3c4", "#a68a00"),
    "run": ("#efefef", "#666666"),
}


def _map_box(ax, x, y, w, h, part, title, chapter, detail="", dashed=False):
    """A rounded box with a bold title, detail lines and its chapter number as a tag on the top-left corner."""
    fill, edge = _MAP_PARTS[part]
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.12", fc=fill, ec=edge,
                                lw=1.6, ls="--" if dashed else "-"))
    ax.text(x + w / 2, y + h - 0.27, title, ha="center", va="center", fontsize=12, weight="bold", color="#222")
    ax.text(x + w / 2, y + h - 0.5, detail, ha="center", va="top", fontsize=9.5, color="#333", linespacing=1.35)
    if chapter:
        ax.text(x + 0.12, y + h, chapter, ha="left", va="center", fontsize=9.5, weight="bold", color="white",
                bbox=dict(boxstyle="round,pad=0.22,rounding_size=0.15", fc=edge, ec="none"))


def _map_arrow(ax, start, end, ls="-"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=15, lw=1.5, color="#444", ls=ls,
                                 shrinkA=1, shrinkB=1))


def _map_tensor_label(ax, x, y, name, shape):
    """What travels along an arrow: its name, and its shape in a white tag."""
    ax.text(x, y, shape, ha="center", va="bottom", fontsize=9.5, family="monospace", color="#111",
            bbox=dict(boxstyle="round,pad=0.22", fc="white", ec="#aaaaaa", lw=0.7))
    ax.text(x, y + 0.3, name, ha="center", va="bottom", fontsize=9, color="#555", style="italic")


def plot_course_map(shapes: dict[str, str], cfg, backbones: dict[str, str]):
    """Chapter 00's map: Molmo's four parts as boxes labelled with the chapter that builds each, the tensors between
    them (``shapes``: name -> shape text, for "image", "crops", "patch features", "image features", "next-token
    logits" and "token ids"), the tokenizer feeding the LLM, and the training / scaling chapters below.
    cfg: a MolmoConfig; backbones: BACKBONES[name] (names of the ViT and LLM). Returns the figure."""
    p, v, c, l = cfg.preprocessor, cfg.vision, cfg.connector, cfg.llm
    vit_name, llm_name = backbones["vision"].split("/")[0], backbones["llm"].split("/")[-1]
    fig = plt.figure(figsize=(13, 5.3))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 5.3)
    ax.set_axis_off()
    y, h = 2.75, 1.4                                 # the model's row: x and width of each box
    xs = {"img": (0.1, 0.95), "pre": (1.75, 1.7), "vit": (4.15, 1.7), "con": (6.55, 1.7), "llm": (8.95, 1.7),
          "out": (11.35, 1.55)}
    _map_box(ax, *xs["img"][:1], y, xs["img"][1], h, "run", "image", "", "any size,\nany format")
    _map_box(ax, xs["pre"][0], y, xs["pre"][1], h, "pre", "preprocessor", "01",
        f"overview + up to {p.max_crops}\noverlapping crops\nof {p.crop_size} px")
    _map_box(ax, xs["vit"][0], y, xs["vit"][1], h, "vit", "CLIP ViT", "02",
        f"{vit_name}, {v.blocks_used} blocks\nreads layers {' and '.join(map(str, v.feature_layers))}\nconcatenated")
    _map_box(ax, xs["con"][0], y, xs["con"][1], h, "con", "connector", "03",
        f"{p.pooling[0]}x{p.pooling[1]} attention pool\n-> {c.pool_dim}, then\nSwiGLU MLP -> {c.llm_dim}")
    _map_box(ax, xs["llm"][0], y, xs["llm"][1], h, "llm", "LLM", "04",
        f"{llm_name}\n{l.layers} layers, d {l.hidden}\nreads image + text")
    _map_box(ax, xs["out"][0], y, xs["out"][1], h, "out", "answer", "06",
        "text with points\nand counts:\n<point x=.. y=..>")
    edges = [("img", "pre", "image"), ("pre", "vit", "crops"), ("vit", "con", "patch features"),
             ("con", "llm", "image features"), ("llm", "out", "next-token logits")]
    for a, b, name in edges:
        x0, x1 = xs[a][0] + xs[a][1], xs[b][0]
        _map_arrow(ax, (x0, y + h / 2), (x1, y + h / 2))
        _map_tensor_label(ax, (x0 + x1) / 2, y + h + 0.12, name, shapes[name])
    # the text side: the tokenizer lays out image tokens and prompt; the LLM embeds them and adds the image features
    tx, tw, ty, th = 6.4, 3.8, 1.5, 1.0
    _map_box(ax, tx, ty, tw, th, "tok", "tokenizer + prompt", "05",
        "<im_start> <im_patch> ... <im_col> ... <im_end>\n+ \" User: point to the eyes Assistant:\"")
    lx = xs["llm"][0] + xs["llm"][1] / 2
    _map_arrow(ax, (lx, ty + th), (lx, y))
    ax.text(lx + 0.1, (ty + th + y) / 2, shapes["token ids"], ha="left", va="center", fontsize=9.5,
            family="monospace", bbox=dict(boxstyle="round,pad=0.22", fc="white", ec="#aaaaaa", lw=0.7))
    gx = (xs["con"][0] + xs["con"][1] + xs["llm"][0]) / 2
    ax.text(gx, y + h / 2 - 0.12, "ADDED at\n<im_patch>", fontsize=7.5, color="#555", ha="center", va="top",
            style="italic")
    # training and scaling: the whole model, end to end
    ax.add_patch(FancyBboxPatch((0.1, 0.08), 12.8, 1.22, boxstyle="round,pad=0,rounding_size=0.12", fc="#fafafa",
                                ec="#cccccc", lw=1))
    ax.text(0.25, 1.2, "training and scaling the whole model (nothing is frozen); dashed: the same model, scaled",
            fontsize=9, color="#555", va="top", style="italic")
    steps = [("PixMo data", "07", "9 datasets + synthetic"), ("stage 1", "08", "dense captions"),
             ("stage 2", "09", "SFT mixture"), ("evaluation", "10", "pointing F1, counting"),
             ("quantized", "11", "4-bit LLM, QLoRA"), ("multi-GPU", "12", "DDP, FSDP2")]
    bw, gap = 1.8, 0.28
    for k, (title, chapter, detail) in enumerate(steps):
        bx = 0.3 + k * (bw + gap) + (0.3 if k >= 4 else 0)
        _map_box(ax, bx, 0.2, bw, 0.8, "run", title, chapter, detail, dashed=k >= 4)
        if k in (1, 2, 3):
            _map_arrow(ax, (bx - gap, 0.6), (bx, 0.6))
    ax.text(6.5, 5.2, f"Molmo-7B-D on a {shapes['image'][1:-4].replace(', ', ' x ')} image: "
            "the four parts, the chapters that build them, the tensors between them",
            ha="center", va="top", fontsize=12.5, color="#222")
    return fig

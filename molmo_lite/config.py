"""Configuration as data: dataclasses and named presets.

Every other module of molmo_lite imports its numbers from here, so a preset changes the scale of the whole course
(``tiny`` on a laptop CPU, ``molmo`` for the released geometry) without touching code. Later chapters add the vision,
connector, LLM and training configs beside these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The special tokens Molmo adds to the LLM's vocabulary for the image (allenai/molmo, olmo/data/model_preprocessor.py).
IM_START = "<im_start>"
IM_END = "<im_end>"
IM_PATCH = "<im_patch>"
IM_COL = "<im_col>"
IMAGE_PROMPT = "<|image|>"
IMAGE_TOKENS = (IM_START, IM_END, IM_PATCH, IM_COL, IMAGE_PROMPT)

# OpenAI CLIP's normalisation, which Molmo uses ("openai" in its code).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessorConfig:
    """Geometry of Molmo's overlap-and-resize preprocessing (as allenai/molmo does it).

    crop_size: side of every crop and of the global image, in pixels.
    patch_size: ViT patch side in pixels; crop_size must be a multiple of it.
    max_crops: largest number of high-resolution crops (the global image is extra).
    overlap_margins: (left/top, right/bottom) margins in patches that neighbouring crops share.
    pooling: (pool_h, pool_w) patches merged into one image token by the connector.
    resize: "pad" keeps the aspect ratio and pads (Molmo 1); "stretch" resizes to the exact target (Molmo2).
    antialias: antialiased bilinear resizing (Molmo 1 resizes float images with antialias=True).
    """

    crop_size: int = 336
    patch_size: int = 14
    max_crops: int = 12
    overlap_margins: tuple[int, int] = (4, 4)
    pooling: tuple[int, int] = (2, 2)
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    resize: str = "pad"
    antialias: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


PREPROCESSOR_PRESETS: dict[str, PreprocessorConfig] = {
    # The released Molmo models (MolmoE-1B, Molmo-7B-O/D, 72B): 336 px crops of 24x24 patches.
    "molmo": PreprocessorConfig(),
    # High-resolution evaluation setting of the paper.
    "molmo-hires": PreprocessorConfig(max_crops=36),
    # CPU-sized: 56 px crops of 4x4 patches, one patch of overlap per side, up to 4 crops.
    "tiny": PreprocessorConfig(crop_size=56, patch_size=14, max_crops=4, overlap_margins=(1, 1)),
    # One GPU from scratch: 112 px crops of 8x8 patches.
    "small": PreprocessorConfig(crop_size=112, patch_size=14, max_crops=6, overlap_margins=(2, 2)),
}


def preprocessor_preset(name: str) -> PreprocessorConfig:
    """The named preprocessing geometry; ValueError lists the known names."""
    try:
        return PREPROCESSOR_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PREPROCESSOR_PRESETS)}") from None

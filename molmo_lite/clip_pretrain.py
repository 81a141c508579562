"""Contrastive (CLIP) pre-training of the tiny ViT on synthetic image-caption pairs (chapter 02).

Molmo starts from a pretrained CLIP encoder; the course does the same at tiny scale: our ViT and a small text tower
learn to match scenes with captions that name each shape's colour, kind and position, with open_clip's ``ClipLoss``
(symmetric cross-entropy over the batch's image-text similarities). The trained encoder is saved as safetensors +
JSON config, and ``tiny_encoder()`` gives later chapters that encoder, training it first if it is missing.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_weights, read_config, save_checkpoint
from .config import CHECKPOINT_DIR, CLIP_MEAN, CLIP_STD, VISION_PRESETS, VisionConfig
from .data.synthetic import COLOURS, COLS, ROWS, SHAPES, caption_scenes
from .preprocessing import normalize
from .vision import VisionTransformer

PAD = 0


class WordTokenizer:
    """Whole-word ids for the synthetic captions' small vocabulary (chapter 04 builds a real BPE tokenizer)."""

    def __init__(self, words: list[str], max_len: int = 32):
        self.words = ["<pad>", "<unk>"] + sorted(set(words))
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.max_len = max_len

    @classmethod
    def for_scenes(cls) -> "WordTokenizer":
        grammar = "a an at the and".split() + list(COLOURS) + list(SHAPES) + list(ROWS) + list(COLS)
        return cls(grammar)

    def __len__(self) -> int:
        return len(self.words)

    @staticmethod
    def words_of(caption: str) -> list[str]:
        return re.findall(r"[a-z]+", caption.lower())

    def __call__(self, captions: list[str]) -> torch.Tensor:
        """captions -> ids [n, max_len], padded with 0 (words past max_len are cut)."""
        out = torch.full((len(captions), self.max_len), PAD, dtype=torch.long)
        for row, caption in enumerate(captions):
            ids = [self.ids.get(w, 1) for w in self.words_of(caption)][: self.max_len]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class TextTower(nn.Module):
    """Word embeddings + positions -> a few pre-norm transformer layers -> mean over words -> projection."""

    def __init__(self, vocab_size: int, width: int = 64, layers: int = 2, heads: int = 4, output_dim: int = 64,
                 max_len: int = 32):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, output_dim, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [n, L] -> text embeddings [n, output_dim]."""
        pad = ids == PAD
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        x = self.ln(self.transformer(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).float()
        return self.proj((x * keep).sum(1) / keep.sum(1).clamp(min=1))


class TinyCLIP(nn.Module):
    """Our ViT's CLIP head and a text tower, compared by cosine similarity times a learned temperature."""

    def __init__(self, vision: VisionTransformer, tokenizer: WordTokenizer):
        super().__init__()
        self.vision, self.tokenizer = vision, tokenizer
        self.text = TextTower(len(tokenizer), output_dim=vision.config.output_dim, max_len=tokenizer.max_len)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images: torch.Tensor, ids: torch.Tensor):
        """-> (image features [n, d], text features [n, d], both unit length; temperature scale)."""
        image = F.normalize(self.vision.clip_embedding(images), dim=-1)
        text = F.normalize(self.text(ids), dim=-1)
        return image, text, self.logit_scale.exp().clamp(max=100)


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [n, S, S, 3] -> CLIP-normalised float [n, 3, S, S]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return normalize(x, CLIP_MEAN, CLIP_STD)


@torch.no_grad()
def retrieval_accuracy(model: TinyCLIP, images: torch.Tensor, captions: list[str]) -> float:
    """Image -> text top-1 accuracy: each image picks the most similar of all ``len(captions)`` captions; right when
    the picked caption's text is its own (identical captions count as the same). Chance: about 1 / len(captions)."""
    model.eval()
    image, text, _ = model(images, model.tokenizer(captions))
    picked = (image @ text.T).argmax(dim=1).tolist()
    return float(np.mean([captions[j] == captions[i] for i, j in enumerate(picked)]))


def train_clip(model: TinyCLIP, images: torch.Tensor, captions: list[str], steps: int = 600, batch_size: int = 128,
               lr: float = 2e-3, seed: int = 0, log_every: int = 50) -> list[dict]:
    """AdamW with linear warmup and cosine decay on random batches; returns the loss history."""
    from open_clip.loss import ClipLoss

    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(seed)
    ids = model.tokenizer(captions)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    history, start = [], time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        batch = torch.randint(len(images), (batch_size,), generator=gen)
        loss = loss_fn(*model(images[batch], ids[batch]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            history.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - start})
    model.eval()
    return history


# --------------------------------------------------------------------------------------------------- save and load


def save_encoder(vit: VisionTransformer, directory: Path, extra: dict | None = None) -> Path:
    """safetensors weights + config.json (and any ``extra`` facts, e.g. retrieval accuracy); never pickle."""
    return save_checkpoint(vit, directory, "vision", extra)


def load_encoder(directory: Path) -> VisionTransformer:
    return load_weights(VisionTransformer(read_config(directory, "vision", VisionConfig)), directory)


# The pre-training images of the tiny ViT. "simple": chapter 02's (1-3 solid shapes of radius 7-13% of the side);
# "crowded": half of them those, half 4-8 textured shapes of radius 4-8%, the objects of chapter 07's crowded
# pointing scenes (radius 4-6% above ten objects), still one per 3x3 region so that a caption names each one.
ENCODER_SCENES = {"simple": [{}], "crowded": [{}, dict(min_objects=4, max_objects=8, radius=(4, 8), textured=True)]}


def scene_pairs(n: int, seed: int, size: int, scenes: str = "simple") -> tuple[np.ndarray, list[str]]:
    """n (image, caption) pairs, an equal share from each kind of ``ENCODER_SCENES[scenes]`` (seeded per kind)."""
    kinds = ENCODER_SCENES[scenes]
    parts = [caption_scenes(n // len(kinds) + (i < n % len(kinds)), seed=seed + 1000 * i, size=size, **kind)
             for i, kind in enumerate(kinds)]
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]


def pretrain_tiny_encoder(steps: int = 600, n_train: int = 6000, n_heldout: int = 256, seed: int = 0,
                          config: VisionConfig | None = None, scenes: str = "simple") -> tuple[TinyCLIP, dict]:
    """Train the tiny ViT as a CLIP on seeded synthetic pairs; returns the model and a report (accuracies, losses).
    scenes: a name of ``ENCODER_SCENES``."""
    torch.manual_seed(seed)
    config = config or VISION_PRESETS["tiny"]
    train_images, train_captions = scene_pairs(n_train, seed, config.image_size, scenes)
    test_images, test_captions = scene_pairs(n_heldout, seed + 10_000, config.image_size, scenes)
    train_x, test_x = to_model_input(train_images), to_model_input(test_images)
    tokenizer = WordTokenizer.for_scenes()
    longest = max(len(tokenizer.words_of(c)) for c in train_captions + test_captions)
    tokenizer.max_len = max(tokenizer.max_len, longest)
    model = TinyCLIP(VisionTransformer(config), tokenizer)
    before = retrieval_accuracy(model, test_x, test_captions)
    history = train_clip(model, train_x, train_captions, steps=steps, seed=seed)
    after = retrieval_accuracy(model, test_x, test_captions)
    report = {"heldout_pairs": n_heldout, "chance": 1 / n_heldout, "accuracy_before": before,
              "accuracy_after": after, "steps": steps, "scenes": scenes, "history": history}
    return model, report


def tiny_encoder(directory: Path | None = None, steps: int = 600, scenes: str = "simple") -> VisionTransformer:
    """The tiny pretrained ViT of chapter 02: loaded from ``directory`` (default checkpoints/tiny_vit, or
    checkpoints/tiny_vit_crowded_1200steps for scenes="crowded", steps=1200), or trained and saved there first if it is missing (a few
    minutes on a laptop CPU)."""
    name = "tiny_vit" + ("" if scenes == "simple" else f"_{scenes}") + ("" if steps == 600 else f"_{steps}steps")
    directory = Path(directory or CHECKPOINT_DIR / name)
    if not (directory / "model.safetensors").exists():
        from .config import shown_path

        print(f"{shown_path(directory)} is missing: pre-training the tiny CLIP ({steps} steps, chapter 02; about a "
              "minute per 300 steps on 2 cores), once", flush=True)
        model, report = pretrain_tiny_encoder(steps=steps, scenes=scenes)
        report.pop("history")
        save_encoder(model.vision, directory, extra={"clip_pretraining": report})
        print(f"saved to {shown_path(directory)}: held-out retrieval {report['accuracy_after']:.2f}", flush=True)
    return load_encoder(directory)

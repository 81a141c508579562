"""Molmo's eyes: a CLIP vision transformer written from scratch, read at two inner layers (chapter 02).

    patches [B, n, 3*P*P] --patch_embedding--> [B, n, W]     (or images [B, 3, S, S], patchified first)
    prepend CLS, add position embeddings, pre_ln               [B, 1 + n, W]
    blocks: x += attention(attention_norm(x)); x += feed_forward(ffn_norm(x))    -- every block's output is kept
    features(): block outputs at ``feature_layers`` (Molmo: [-2, -9]), CLS dropped, concatenated  [B, n, 2W]

Molmo keeps 23 of OpenAI CLIP ViT-L/14-336's 24 blocks and never uses CLIP's final LayerNorm and projection; those
(``post_ln``, ``proj``) exist here only for the contrastive pre-training of chapter 02. Weights load from open_clip
(``visual.*`` keys of a model, a state dict or a local checkpoint file) through one explicit name map.

Molmo2's SigLIP-style ViT is this class with three VisionConfig switches: ``cls_token=False`` (no CLS, nothing to
drop), ``pre_ln=False`` and ``patch_bias=True``, with act "gelu_tanh" (tests/test_molmo2.py: parity with transformers'
Molmo2VisionModel).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":  # GELU's tanh approximation (SigLIP, Molmo2; transformers' "gelu_pytorch_tanh")
        return nn.GELU(approximate="tanh")
    raise ValueError(f"unknown activation {name!r}: use 'quick_gelu' (OpenAI CLIP), 'gelu' or 'gelu_tanh' (SigLIP)")


class Attention(nn.Module):
    """Multi-head self-attention over all tokens (no mask: every patch sees every patch)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, width // heads
        self.wq, self.wk, self.wv = (nn.Linear(width, width) for _ in range(3))
        self.wo = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2) for proj in (self.wq, self.wk, self.wv))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v   [b, heads, t, head_dim]
        return self.wo(out.transpose(1, 2).reshape(b, t, w))


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.w1, self.act, self.w2 = nn.Linear(width, hidden), activation(act), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then + feed_forward(LN(x))."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attention = Attention(cfg.width, cfg.heads)
        self.ffn_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.feed_forward = FeedForward(cfg.width, cfg.mlp_width, cfg.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


def interpolate_position_embeddings(pos: torch.Tensor, grid: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """[1 + g*g, W] -> [1 + gh*gw, W]: the patch positions resized bicubically (antialiased), CLS position kept
    (cls_token=False: [g*g, W] -> [gh*gw, W], a table without a CLS row)."""
    first = int(cls_token)
    cls_pos, patch_pos = pos[:first], pos[first:]
    g = math.isqrt(patch_pos.shape[0])
    if (g, g) == tuple(grid):
        return pos
    patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # [1, W, g, g]
    patch_pos = F.interpolate(patch_pos.float(), size=grid, mode="bicubic", align_corners=False, antialias=True)
    return torch.cat([cls_pos, patch_pos.to(pos.dtype).permute(0, 2, 3, 1).reshape(-1, pos.shape[-1])])


def patchify_images(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, S, S] -> [B, n_patches, P*P*C], each patch in (dy, dx, c) order (as the preprocessor's ``patches``)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch_size) * (w // patch_size), -1)


class VisionTransformer(nn.Module):
    """A CLIP ViT that returns the output of every block (see the module docstring)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.patch_embedding = nn.Linear(3 * config.patch_size**2, w, bias=config.patch_bias)
        if config.cls_token:
            self.class_embedding = nn.Parameter(torch.randn(w) * w**-0.5)
        self.n_prefix = int(config.cls_token)  # tokens before the patches: CLS, or none (Molmo2)
        self.positional_embedding = nn.Parameter(torch.randn(config.n_patches + self.n_prefix, w) * w**-0.5)
        self.pre_ln = nn.LayerNorm(w, eps=config.ln_eps) if config.pre_ln else nn.Identity()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.blocks_used))
        if config.output_dim is not None:  # CLIP's head, for contrastive pre-training only
            self.post_ln = nn.LayerNorm(w, eps=config.ln_eps)
            self.proj = nn.Parameter(torch.randn(w, config.output_dim) * w**-0.5)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] or patches [B, n, 3*P*P] -> tokens [B, 1 + n, W] (CLS first, positions added, pre-LN;
        [B, n, W] without a CLS token)."""
        if x.dim() == 4:
            x = patchify_images(x, self.config.patch_size)
        b, n, _ = x.shape
        g = math.isqrt(n)
        if g * g != n:
            raise ValueError(f"expected a square grid of patches, got {n}")
        x = self.patch_embedding(x)
        if self.config.cls_token:
            x = torch.cat([self.class_embedding.to(x.dtype).expand(b, 1, -1), x], dim=1)
        x = x + interpolate_position_embeddings(self.positional_embedding, (g, g), self.config.cls_token).to(x.dtype)
        return self.pre_ln(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images [B, 3, S, S] or patches [B, n, 3*P*P] -> the output of every block, each [B, 1 + n, W] ([B, n, W]
        without a CLS token)."""
        x = self.embed(x)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs

    def features(self, x: torch.Tensor, layers: tuple[int, ...] | None = None) -> torch.Tensor:
        """What Molmo's connector reads: the block outputs at ``layers`` (default config.feature_layers; negative =
        from the last block), CLS dropped, concatenated on channels -> [B, n, W * len(layers)]."""
        hidden = self(x)
        layers = self.config.feature_layers if layers is None else layers
        return torch.cat([hidden[i][:, self.n_prefix:] for i in layers], dim=-1)

    def clip_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP's image embedding: final block's CLS token -> post_ln -> proj, [B, output_dim] (pre-training only)."""
        if self.config.output_dim is None or not self.config.cls_token:
            raise ValueError("this VisionTransformer has no CLIP head (config.output_dim is None, or no CLS token)")
        return self.post_ln(self(x)[-1][:, 0]) @ self.proj

    # ---------------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_open_clip(
        cls, source, heads: int | None = None, act: str = "quick_gelu", num_layers_used: int | None = None,
        feature_layers: tuple[int, ...] = (-2, -9), keep_head: bool = True,
    ) -> "VisionTransformer":
        """Build from an open_clip model (``model.visual`` or the whole CLIP), a state dict (``visual.*`` keys or
        bare), or a local checkpoint path (.safetensors, or a torch file read with ``weights_only=True``).

        The shapes give width, blocks, patch size, grid and MLP size; ``heads`` (default width // 64) and ``act``
        cannot be read from weights. ``num_layers_used`` keeps only the first blocks (Molmo: 23); ``keep_head=False``
        drops CLIP's post-LN and projection.
        """
        state = open_clip_visual_state(source)
        config = vision_config_from_open_clip(state, heads=heads, act=act, num_layers_used=num_layers_used,
                                              feature_layers=feature_layers, keep_head=keep_head)
        model = cls(config)
        try:
            model.load_state_dict(state_from_open_clip(state, config))
        except RuntimeError as err:  # shape mismatches: say so plainly
            raise ValueError(f"the checkpoint does not fit {config}: {err}") from None
        return model

    @classmethod
    def from_pretrained_open_clip(cls, name: str = "ViT-L-14-336", pretrained: str = "openai", **kwargs):
        """Download an open_clip model (needs the network, e.g. Molmo's ``ViT-L-14-336`` / ``openai``) and convert it;
        Molmo's defaults: 23 blocks, features [-2, -9]. Offline this fails with a message saying what to do."""
        import open_clip

        try:
            model = open_clip.create_model(name, pretrained=pretrained)
        except Exception as err:
            raise RuntimeError(
                f"could not load open_clip {name!r} / {pretrained!r} ({type(err).__name__}: {err}). Offline? Save the "
                "checkpoint on a machine with network access and use VisionTransformer.from_open_clip(path)."
            ) from err
        kwargs.setdefault("num_layers_used", 23)
        return cls.from_open_clip(model, **kwargs)


# -------------------------------------------------------------------------------------------------- open_clip names

_BLOCK_MAP = {  # open_clip resblock name -> ours (in_proj is split into wq, wk, wv separately)
    "ln_1": "attention_norm", "attn.out_proj": "attention.wo", "ln_2": "ffn_norm",
    "mlp.c_fc": "feed_forward.w1", "mlp.c_proj": "feed_forward.w2",
}


def open_clip_visual_state(source) -> dict[str, torch.Tensor]:
    """The vision tower's state dict with bare open_clip names (``conv1.weight``, ``transformer.resblocks.0...``)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            source = load_file(path)
        else:
            source = torch.load(path, map_location="cpu", weights_only=True)
            source = source.get("state_dict", source) if isinstance(source, Mapping) else source
    if isinstance(source, nn.Module):
        source = getattr(source, "visual", source).state_dict()
    if not isinstance(source, Mapping):
        raise ValueError(f"expected an open_clip model, a state dict or a checkpoint path, got {type(source).__name__}")
    state = {k.removeprefix("module."): v for k, v in source.items()}
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if "conv1.weight" not in state:
        raise ValueError("not an open_clip vision tower: no 'conv1.weight' (or 'visual.conv1.weight') in the checkpoint")
    return state


def _n_blocks(state: Mapping[str, torch.Tensor]) -> int:
    ids = {int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks.")}
    return max(ids) + 1 if ids else 0


def vision_config_from_open_clip(
    state: Mapping[str, torch.Tensor], heads: int | None = None, act: str = "quick_gelu",
    num_layers_used: int | None = None, feature_layers: tuple[int, ...] = (-2, -9), keep_head: bool = True,
) -> VisionConfig:
    """Read a VisionConfig off an open_clip vision state dict's shapes."""
    width, _, patch, _ = state["conv1.weight"].shape
    grid = math.isqrt(state["positional_embedding"].shape[0] - 1)
    layers = _n_blocks(state)
    if num_layers_used is not None and not 1 <= num_layers_used <= layers:
        raise ValueError(f"num_layers_used={num_layers_used}, but the checkpoint has {layers} blocks")
    has_head = keep_head and "proj" in state and state["proj"] is not None
    return VisionConfig(
        image_size=grid * patch, patch_size=patch, width=width, layers=layers, heads=heads or max(1, width // 64),
        mlp_width=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0], act=act,
        num_layers_used=num_layers_used, feature_layers=tuple(feature_layers),
        output_dim=state["proj"].shape[1] if has_head else None,
    )


def _required_keys(config: VisionConfig) -> list[str]:
    keys = ["conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_pre.bias"]
    for i in range(config.blocks_used):
        keys += [f"transformer.resblocks.{i}.attn.in_proj_weight", f"transformer.resblocks.{i}.attn.in_proj_bias"]
        keys += [f"transformer.resblocks.{i}.{name}.{kind}" for name in _BLOCK_MAP for kind in ("weight", "bias")]
    if config.output_dim is not None:
        keys += ["ln_post.weight", "ln_post.bias", "proj"]
    return keys


def state_from_open_clip(state: Mapping[str, torch.Tensor], config: VisionConfig) -> dict[str, torch.Tensor]:
    """Map open_clip vision weights to ours for ``config``; ValueError naming every key that does not fit.

    Blocks beyond ``config.blocks_used`` and, without a head, ``ln_post`` / ``proj`` are dropped on purpose (Molmo).
    """
    missing = [k for k in _required_keys(config) if k not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} keys this ViT needs, e.g. {missing[:5]}")
    w = config.width
    out = {
        # conv1 [W, 3, P, P] applied to a patch == a linear map of the patch flattened in (dy, dx, c) order
        "patch_embedding.weight": state["conv1.weight"].permute(0, 2, 3, 1).reshape(w, -1),
        "class_embedding": state["class_embedding"],
        "positional_embedding": state["positional_embedding"],
        "pre_ln.weight": state["ln_pre.weight"], "pre_ln.bias": state["ln_pre.bias"],
    }
    used = {"conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_pre.bias"}
    for i in range(config.blocks_used):
        src, dst = f"transformer.resblocks.{i}.", f"blocks.{i}."
        for part, name in zip(("wq", "wk", "wv"), state[src + "attn.in_proj_weight"].chunk(3)):
            out[dst + f"attention.{part}.weight"] = name
        for part, name in zip(("wq", "wk", "wv"), state[src + "attn.in_proj_bias"].chunk(3)):
            out[dst + f"attention.{part}.bias"] = name
        used |= {src + "attn.in_proj_weight", src + "attn.in_proj_bias"}
        for theirs, ours in _BLOCK_MAP.items():
            for kind in ("weight", "bias"):
                out[dst + f"{ours}.{kind}"] = state[src + f"{theirs}.{kind}"]
                used.add(src + f"{theirs}.{kind}")
    if config.output_dim is not None:
        out.update({"post_ln.weight": state["ln_post.weight"], "post_ln.bias": state["ln_post.bias"],
                    "proj": state["proj"]})
    dropped = {k for k in state if k.startswith("transformer.resblocks.") and int(k.split(".")[2]) >= config.blocks_used}
    dropped |= {"ln_post.weight", "ln_post.bias", "proj"}
    unexpected = sorted(set(state) - used - dropped)
    if unexpected:
        raise ValueError(f"checkpoint keys molmo_lite's ViT does not have (layer scale, attention pooling?): {unexpected[:8]}")
    return out

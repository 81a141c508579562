"""The tensor names of the released Molmo checkpoints and their fused weights: what Molmo 1 and Molmo2 share (ch. 13).

Both families' hub checkpoints name the tensors as AI2's training code does, prefixed with ``model.``, and map onto
MolmoLite's modules one to one, except that the LLM block keeps q, k and v in ONE matrix (``att_proj``) and the MLP's up
and gate in another (``ff_proj``), and the token embeddings in two tables (``wte.embedding`` and ``wte.new_embedding``).
``released_plan(config, layout)`` lists every tensor with the parameters it holds; a ``Layout`` says where a family
puts the LLM block's tensors (``MOLMO1_LAYOUT``, ``MOLMO2_LAYOUT``).

``molmo_lite.released`` (Molmo 1's config.json, reading both families, writing Molmo 1) and
``molmo_lite.released_molmo2`` (Molmo2's config.json) build on this module and import nothing above it; every name here
is importable from ``molmo_lite.released`` as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .config import LLMConfig, MolmoConfig

PREFIX = "model."
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class ReleasedCheckpointError(ValueError):
    """A folder that is not a readable released Molmo checkpoint; the message names the file or tensor."""


# --------------------------------------------------------------------------------------------------------------------
# The fused weights.
# --------------------------------------------------------------------------------------------------------------------


def att_proj_rows(heads: int, kv_heads: int, head_dim: int) -> list[tuple[int, int]]:
    """The row ranges of q, k and v in att_proj: q (heads * head_dim rows) first, then k and v (kv_heads * head_dim
    each), in that order."""
    q, kv = heads * head_dim, kv_heads * head_dim
    return [(0, q), (q, q + kv), (q + kv, q + 2 * kv)]


def ff_proj_rows(rows: int) -> list[tuple[int, int]]:
    """The row ranges of up and gate in ff_proj: the first half is the up projection, the second the gate (the
    remote code chunks the output into x, gate and returns silu(gate) * x)."""
    if rows % 2:
        raise ValueError(f"ff_proj has an odd number of rows ({rows}): it must hold up and gate")
    return [(0, rows // 2), (rows // 2, rows)]


def split_att_proj(fused: torch.Tensor, heads: int, kv_heads: int, head_dim: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """att_proj (weight [out, hidden] or bias [out]) -> (q, k, v), views of ``fused`` (``att_proj_rows``)."""
    rows = att_proj_rows(heads, kv_heads, head_dim)
    if fused.shape[0] != rows[-1][1]:
        raise ValueError(f"att_proj has {fused.shape[0]} rows; {heads} heads and {kv_heads} kv heads of "
                         f"{head_dim} need {rows[-1][1]}")
    return tuple(fused[a:b] for a, b in rows)


def split_ff_proj(fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ff_proj [2 * intermediate, hidden] -> (up, gate), views of ``fused`` (``ff_proj_rows``)."""
    return tuple(fused[a:b] for a, b in ff_proj_rows(fused.shape[0]))


def fuse_att_proj(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of ``split_att_proj``."""
    return torch.cat([q, k, v], dim=0)


def fuse_ff_proj(up: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Inverse of ``split_ff_proj``."""
    return torch.cat([up, gate], dim=0)


# --------------------------------------------------------------------------------------------------------------------
# The name map.
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tensor of the released checkpoint and the MolmoLite parameters it holds.

    kind "plain": one parameter, same shape; "att_proj": (wq, wk, wv) stacked; "ff_proj": (w3 = up, w1 = gate)
    stacked. ``ours`` is in the order of the rows.
    """

    released: str
    ours: tuple[str, ...]
    kind: str = "plain"


@dataclass(frozen=True)
class Layout:
    """Where a family's hub checkpoint puts the LLM block's tensors; everything else is named alike.

    Molmo 1 keeps att_proj / attn_out / q_norm / k_norm and ff_proj / ff_out directly under ``blocks.{i}.``; Molmo2
    nests them under ``self_attn.`` and ``mlp.``, and names the untied output head ``lm_head.weight``."""

    attention: str
    mlp: str
    head: str


MOLMO1_LAYOUT = Layout("", "", PREFIX + "transformer.ff_out.weight")
MOLMO2_LAYOUT = Layout("self_attn.", "mlp.", "lm_head.weight")


def released_plan(config: MolmoConfig, layout: Layout = MOLMO1_LAYOUT) -> list[Entry]:
    """Every tensor of a released checkpoint for ``config``, in the order the checkpoint lists them by module.

    The ViT's embedding tensors follow the config: a class embedding and pre-LN for CLIP (Molmo 1), a patch bias and
    neither of the others for Molmo2's ViT; the pad embedding only where the connector has one (Molmo 1)."""
    vit, vit_ours = PREFIX + "vision_backbone.image_vit.", "vision."
    v = config.vision
    embed = ["patch_embedding.weight", *(["patch_embedding.bias"] if v.patch_bias else []),
             *(["class_embedding"] if v.cls_token else []), "positional_embedding",
             *(["pre_ln.weight", "pre_ln.bias"] if v.pre_ln else [])]
    entries = [Entry(vit + name, (vit_ours + name,)) for name in embed]
    for j in range(config.vision.blocks_used):
        for part in ("attention.wq", "attention.wk", "attention.wv", "attention.wo", "attention_norm", "ffn_norm",
                     "feed_forward.w1", "feed_forward.w2"):
            for kind in ("weight", "bias"):
                entries.append(Entry(f"{vit}transformer.resblocks.{j}.{part}.{kind}",
                                     (f"{vit_ours}blocks.{j}.{part}.{kind}",)))
    backbone = PREFIX + "vision_backbone."
    if config.connector.pad_embed:
        entries.append(Entry(backbone + "pad_embed", ("connector.pad.pad_embed",)))
    for a in "qkvo":
        for kind in ("weight", "bias"):
            entries.append(Entry(f"{backbone}image_pooling_2d.w{a}.{kind}", (f"connector.pool.w{a}.{kind}",)))
    for w in ("w1", "w2", "w3"):  # w1 gate, w3 up, w2 down: the same names as ours
        entries.append(Entry(f"{backbone}image_projector.{w}.weight", (f"connector.projector.{w}.weight",)))

    llm, lt = config.llm, PREFIX + "transformer."
    entries.append(Entry(lt + "wte.embedding", ("llm.embed.base.weight",)))
    if llm.additional_vocab:
        entries.append(Entry(lt + "wte.new_embedding", ("llm.embed.new.weight",)))
    for i in range(llm.layers):
        src, ours = f"{lt}blocks.{i}.", f"llm.blocks.{i}."
        att, mlp = src + layout.attention, src + layout.mlp
        entries.append(Entry(src + "attn_norm.weight", (ours + "attention_norm.weight",)))
        entries.append(Entry(att + "att_proj.weight", tuple(f"{ours}attention.w{x}.weight" for x in "qkv"), "att_proj"))
        if llm.qkv_bias:
            entries.append(Entry(att + "att_proj.bias", tuple(f"{ours}attention.w{x}.bias" for x in "qkv"),
                                 "att_proj"))
        if llm.qk_norm:
            entries.append(Entry(att + "q_norm.weight", (ours + "attention.q_norm.weight",)))
            entries.append(Entry(att + "k_norm.weight", (ours + "attention.k_norm.weight",)))
        entries.append(Entry(att + "attn_out.weight", (ours + "attention.wo.weight",)))
        entries.append(Entry(src + "ff_norm.weight", (ours + "ffn_norm.weight",)))
        entries.append(Entry(mlp + "ff_proj.weight", (ours + "feed_forward.w3.weight", ours + "feed_forward.w1.weight"),
                             "ff_proj"))
        entries.append(Entry(mlp + "ff_out.weight", (ours + "feed_forward.w2.weight",)))
    entries.append(Entry(lt + "ln_f.weight", ("llm.norm.weight",)))
    if not llm.tie_embeddings:
        entries.append(Entry(layout.head, ("llm.lm_head.weight",)))
    return entries


def _rows(entry: Entry, rows: int, llm: LLMConfig) -> list[tuple[int, int]]:
    """The row range of each of ``entry.ours`` in the released tensor (of ``rows`` rows)."""
    if entry.kind == "att_proj":
        return att_proj_rows(llm.heads, llm.kv_heads, llm.dim_per_head)
    if entry.kind == "ff_proj":
        return ff_proj_rows(rows)
    return [(0, rows)]


def split_entry(entry: Entry, tensor: torch.Tensor, llm: LLMConfig) -> tuple[torch.Tensor, ...]:
    """A whole released tensor -> its parts (views), in the order of ``entry.ours``."""
    if entry.kind == "att_proj":
        return split_att_proj(tensor, llm.heads, llm.kv_heads, llm.dim_per_head)
    if entry.kind == "ff_proj":
        return split_ff_proj(tensor)
    return (tensor,)


def _fuse(entry: Entry, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    if entry.kind == "att_proj":
        return fuse_att_proj(*parts)
    if entry.kind == "ff_proj":
        return fuse_ff_proj(*parts)
    return parts[0]


def _stacked_shape(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    return (sum(s[0] for s in shapes), *shapes[0][1:])

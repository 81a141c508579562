"""The connector: from ViT patch features to one LLM embedding per image token (chapter 03).

Molmo does three things between the vision encoder and the language model (allenai/molmo, olmo/model.py):

1. ``PadEmbedding``     tell the model which patches are padding: add a learned vector to every fully padded patch
                        and another one to every partially padded patch, BEFORE pooling (Molmo: "pad_and_partial_pad").
2. ``AttentionPool``    merge each 2x2 window of patches into one vector with a tiny attention whose query is the
                        mean of the window (Molmo: "attention_meanq").
3. ``SwiGLUProjector``  map the pooled vector to the LLM's embedding size with a SwiGLU MLP, no biases.

Which patches form a window comes from the preprocessor: ``pooled_patches_idx`` [n_tokens, pool_h * pool_w] holds,
for every image token, indices into the n_crops * n_patches flattened patches (global image first), and -1 for a
slot that falls outside an odd-sized grid. ``gather_windows`` turns those indices into the windows.

Shapes for one image, with C crops (global image included) of P patches, T image tokens, k = pool_h * pool_w:

    features [C, P, input_dim] --pad--> [C, P, input_dim] --flatten, gather--> windows [T, k, input_dim]
        --pool--> [T, pool_dim] --projector--> [T, llm_dim]

One option of the course is not Molmo's: ``CellDecisions`` (``ConnectorConfig.cell_decisions``) puts a frozen linear
head before step 1 and hands on its decisions (one-hots of what each patch holds) instead of the ViT's features; the
tiny pointing path of chapter 07 uses it (docs/recipes.md, e34-e38 say why).

``Connector.load_molmo2_adapter`` copies the weights of transformers' ``Molmo2Adapter``, which does steps 2 and 3
the same way; the tests check that both give the same features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConnectorConfig

# --------------------------------------------------------------------------------------------------------------------
# 1. Pad embeddings.
# --------------------------------------------------------------------------------------------------------------------


class PadEmbedding(nn.Module):
    """Learned markers for padding: ``pad_embed[0]`` for fully padded patches, ``pad_embed[1]`` for partial ones.

    The image is resized keeping its aspect ratio and padded to the crop canvas, so some patches show only padding
    and some straddle the border. The ViT cannot tell black padding from a black image; these two vectors can.
    They start at zero, so a fresh model behaves as if they were not there.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.pad_embed = nn.Parameter(torch.zeros(2, dim))

    def forward(self, features: torch.Tensor, pad_fraction: torch.Tensor) -> torch.Tensor:
        """features [n_crops, n_patches, dim], pad_fraction [n_crops, n_patches] (fraction of REAL pixels per patch,
        as ``ImageInputs.patch_pad_fraction``) -> features [n_crops, n_patches, dim] with the markers added."""
        if pad_fraction.shape != features.shape[:-1]:
            raise ValueError(
                f"pad_fraction {tuple(pad_fraction.shape)} must have the shape of features without its channels, "
                f"{tuple(features.shape[:-1])}"
            )
        fully_padded = (pad_fraction == 0).to(features.dtype)[..., None]  # [C, P, 1]
        partly_padded = ((pad_fraction > 0) & (pad_fraction < 1)).to(features.dtype)[..., None]
        return features + fully_padded * self.pad_embed[0] + partly_padded * self.pad_embed[1]


# --------------------------------------------------------------------------------------------------------------------
# 2. Gathering the pooling windows.
# --------------------------------------------------------------------------------------------------------------------


def gather_windows(flat_features: torch.Tensor, pooled_patches_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Collect the patches each image token pools.

    flat_features [N, dim] (all crops' patches, flattened in crop order), pooled_patches_idx long [T, k] with -1
    for padding slots -> windows [T, k, dim] (zeros in padding slots) and valid bool [T, k] (False = padding slot).
    """
    if flat_features.dim() != 2 or pooled_patches_idx.dim() != 2:
        raise ValueError(
            f"expected flat_features [N, dim] and pooled_patches_idx [T, k], got {tuple(flat_features.shape)} and "
            f"{tuple(pooled_patches_idx.shape)}"
        )
    if pooled_patches_idx.dtype.is_floating_point or pooled_patches_idx.dtype == torch.bool:
        raise ValueError(f"pooled_patches_idx must hold integers, got {pooled_patches_idx.dtype}")
    if pooled_patches_idx.numel() and (pooled_patches_idx.min() < -1 or pooled_patches_idx.max() >= len(flat_features)):
        raise ValueError(
            f"pooled_patches_idx must lie in [-1, {len(flat_features) - 1}] (-1 = padding, else one of the "
            f"{len(flat_features)} patches), got values in [{int(pooled_patches_idx.min())}, "
            f"{int(pooled_patches_idx.max())}]"
        )
    valid = pooled_patches_idx >= 0
    windows = flat_features[pooled_patches_idx.clamp(min=0).long()]  # -1 reads patch 0 ...
    return windows.masked_fill(~valid[..., None], 0.0), valid  # ... and is zeroed here


# --------------------------------------------------------------------------------------------------------------------
# 3. Attention pooling with a mean query.
# --------------------------------------------------------------------------------------------------------------------


class AttentionPool(nn.Module):
    """Pool each window of k patches into one vector: multi-head attention whose single query is the window's mean.

    query = mean of the window's valid members (0 for a window with none); q = wq(query), k = wk(window),
    v = wv(window), per head softmax(q k^T / sqrt(head_dim)) over the valid members only, times v, then wo.

    Molmo 1 pooled each crop's own 24 x 24 grid, so its windows never had padding slots; for odd grids it padded
    with zero vectors and still took the plain mean of all k and attended to them. Molmo2 and this module leave
    padding slots out of both the mean and the softmax. On even grids the two are identical.
    """

    def __init__(self, input_dim: int, pool_dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.wq = nn.Linear(input_dim, heads * head_dim, bias=True)
        self.wk = nn.Linear(input_dim, heads * head_dim, bias=True)
        self.wv = nn.Linear(input_dim, heads * head_dim, bias=True)
        self.wo = nn.Linear(heads * head_dim, pool_dim, bias=True)

    def forward(
        self, windows: torch.Tensor, valid: torch.Tensor | None = None, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """windows [T, k, input_dim], valid bool [T, k] (None = all valid) -> pooled [T, pool_dim].

        With ``return_weights`` also the attention weights [T, heads, k]: each row sums to 1 over the valid slots
        and is exactly 0 on padding slots (all 0 for a window without a valid slot).
        """
        n_tokens, k, _ = windows.shape
        if valid is None:
            valid = torch.ones(n_tokens, k, dtype=torch.bool, device=windows.device)
        windows = windows.masked_fill(~valid[..., None], 0.0)

        n_valid = valid.sum(-1, keepdim=True).clamp(min=1).to(windows.dtype)  # [T, 1]
        query = windows.sum(1) / n_valid  # [T, input_dim]: mean of the valid members

        q = self.wq(query).view(n_tokens, self.heads, self.head_dim)  # [T, H, D]
        keys = self.wk(windows).view(n_tokens, k, self.heads, self.head_dim)  # [T, k, H, D]
        values = self.wv(windows).view(n_tokens, k, self.heads, self.head_dim)  # [T, k, H, D]

        scores = torch.einsum("thd,tkhd->thk", q, keys) / math.sqrt(self.head_dim)  # [T, H, k]
        padding = ~valid[:, None, :]  # [T, 1, k]
        # softmax in float32 over the valid slots. The most negative float rather than -inf: a window with no valid
        # slot then gets a finite (uniform) row instead of a NaN one, and the fill below zeroes it.
        scores = scores.float().masked_fill(padding, torch.finfo(torch.float32).min)
        weights = scores.softmax(-1).masked_fill(padding, 0.0).to(windows.dtype)

        pooled = torch.einsum("thk,tkhd->thd", weights, values).reshape(n_tokens, self.heads * self.head_dim)
        pooled = self.wo(pooled)  # [T, pool_dim]
        return (pooled, weights) if return_weights else pooled


# --------------------------------------------------------------------------------------------------------------------
# 4. The SwiGLU projector.
# --------------------------------------------------------------------------------------------------------------------


class SwiGLUProjector(nn.Module):
    """x [..., pool_dim] -> w2(silu(w1 x) * w3 x) [..., llm_dim]; w1 is the gate, w3 the up, w2 the down projection."""

    def __init__(self, pool_dim: int, hidden_dim: int, llm_dim: int):
        super().__init__()
        self.w1 = nn.Linear(pool_dim, hidden_dim, bias=False)
        self.w3 = nn.Linear(pool_dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, llm_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


# --------------------------------------------------------------------------------------------------------------------
# 5. A course option for the tiny pointing path: the ViT's decisions instead of its features.
# --------------------------------------------------------------------------------------------------------------------


class CellDecisions(nn.Module):
    """features [C, grid * grid, input_dim] -> decisions [C, grid * grid, colours + shapes + 2 + 2 * grid].

    A linear head reads each patch's features as scores: colour or "empty" (colours + 1), shape, offset (x, y, in
    cells from the patch's middle), row and column. The decisions keep the largest colour's and shape's one-hots and
    the offset (clipped to one cell) where the colour is not "empty", zeros where it is; then the patch's own row and
    column as one-hots (its place in the raster, not a guess). Not in Molmo (``ConnectorConfig.cell_decisions``):
    a tiny language model given 10 minutes points at F1 0.77-0.91 from such crisp cells and at 0.47 from the same
    head's scores (docs/recipes.md, e37 against e38). The argmax passes no gradient: the head is trained
    with the ViT, before (``pointing_only.pretrain_vit_cells``), and stays frozen.
    """

    def __init__(self, input_dim: int, colours: int, shapes: int, grid: int):
        super().__init__()
        self.colours, self.shapes, self.grid = colours, shapes, grid
        self.head = nn.Linear(input_dim, colours + 1 + shapes + 2 + 2 * grid)
        rows = torch.arange(grid).repeat_interleave(grid)
        position = torch.cat([F.one_hot(rows, grid), F.one_hot(torch.arange(grid).repeat(grid), grid)], 1).float()
        self.register_buffer("position", position, persistent=False)  # [grid * grid, 2 * grid], raster order

    @property
    def out_dim(self) -> int:
        return self.colours + self.shapes + 2 + 2 * self.grid

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-2] != self.grid**2:
            raise ValueError(f"cell decisions need {self.grid ** 2} patches per crop, got {features.shape[-2]}")
        k = self.colours + 1
        scores = self.head(features)
        colour = scores[..., :k].argmax(-1)
        occupied = (colour < self.colours).to(scores.dtype)[..., None]
        content = torch.cat([F.one_hot(colour.clamp(max=self.colours - 1), self.colours).to(scores.dtype),
                             F.one_hot(scores[..., k:k + self.shapes].argmax(-1), self.shapes).to(scores.dtype),
                             scores[..., k + self.shapes:k + self.shapes + 2].clamp(-1, 1)], -1) * occupied
        return torch.cat([content, self.position.to(scores.dtype).expand(*content.shape[:-1], -1)], -1)


# --------------------------------------------------------------------------------------------------------------------
# 6. The whole connector.
# --------------------------------------------------------------------------------------------------------------------


class Connector(nn.Module):
    """Pad embeddings -> gather 2x2 windows -> attention pooling -> SwiGLU projector, for one image.

    >>> cfg = ConnectorConfig(input_dim=16, pool_dim=8, heads=2, head_dim=4, hidden_dim=32, llm_dim=12)
    >>> Connector(cfg)(torch.randn(2, 16, 16), torch.tensor([[0, 1, 4, 5], [16, 17, -1, -1]])).shape
    torch.Size([2, 12])
    """

    def __init__(self, config: ConnectorConfig | None = None):
        super().__init__()
        self.config = config = config or ConnectorConfig()
        self.decide = CellDecisions(config.input_dim, *config.cell_decisions) if config.cell_decisions else None
        dim = config.input_dim
        if self.decide is not None:
            kept = config.decision_features_dim or config.input_dim
            dim = self.decide.out_dim + (kept if config.decision_features else 0)
        elif config.decision_features:
            raise ValueError("decision_features hands the features on beside the cell decisions: set cell_decisions")
        if config.decision_features and config.decision_features_dim:  # fixed directions, saved with the model
            self.register_buffer("feature_basis", torch.zeros(config.input_dim, config.decision_features_dim))
        self.pad = PadEmbedding(dim) if config.pad_embed else None
        self.pool = AttentionPool(dim, config.pool_dim, config.heads, config.head_dim)
        self.projector = SwiGLUProjector(config.pool_dim, config.hidden_dim, config.llm_dim)
        if config.init_scale != 1.0:
            with torch.no_grad():
                for linear in (self.projector.w1, self.projector.w3, self.projector.w2):
                    linear.weight.mul_(config.init_scale)

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """config.feature_norm > 0: each of that many channel groups (one per ViT feature layer) to zero mean and unit
        variance, without parameters; otherwise the features unchanged (Molmo)."""
        groups = self.config.feature_norm
        if groups <= 0:
            return features
        split = features.reshape(*features.shape[:-1], groups, features.shape[-1] // groups)
        return F.layer_norm(split, split.shape[-1:]).reshape(features.shape)

    def pool_features(
        self,
        features: torch.Tensor,
        pooled_patches_idx: torch.Tensor,
        pad_fraction: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-3: features [n_crops, n_patches, input_dim] -> pooled [n_tokens, pool_dim]
        (and the attention weights [n_tokens, heads, k] with ``return_weights``, to draw them)."""
        if features.dim() != 3 or features.shape[-1] != self.config.input_dim:
            raise ValueError(
                f"features must be [n_crops, n_patches, {self.config.input_dim}] for one image, "
                f"got {tuple(features.shape)}"
            )
        features = self.normalize(features)
        if self.decide is not None and self.config.decision_features:  # the decisions, then the features
            scaled = F.layer_norm(features, features.shape[-1:])
            if self.config.decision_features_dim:
                scaled = scaled @ self.feature_basis
            scaled = scaled * self.config.decision_features
            features = torch.cat([self.decide(features), scaled], -1)
        elif self.decide is not None:
            features = self.decide(features)
        if self.pad is not None and pad_fraction is not None:
            features = self.pad(features, pad_fraction)
        windows, valid = gather_windows(features.reshape(-1, features.shape[-1]), pooled_patches_idx)
        return self.pool(windows, valid, return_weights=return_weights)

    def forward(
        self, features: torch.Tensor, pooled_patches_idx: torch.Tensor, pad_fraction: torch.Tensor | None = None
    ) -> torch.Tensor:
        """features [n_crops, n_patches, input_dim], pooled_patches_idx long [n_tokens, k] (-1 = padding slot),
        pad_fraction [n_crops, n_patches] or None (ignored when ``config.pad_embed`` is False)
        -> one LLM embedding per image token [n_tokens, llm_dim].

        Every row of pooled_patches_idx gives a row of output, even one with only -1 slots (Molmo2's adapter drops
        those; our preprocessor never makes them), so output row i belongs to image token i.
        """
        return self.projector(self.pool_features(features, pooled_patches_idx, pad_fraction))

    def load_molmo2_adapter(self, adapter: nn.Module | Mapping[str, torch.Tensor], prefix: str = "") -> "Connector":
        """Copy the weights of a transformers ``Molmo2Adapter`` (the module or its state dict) into this connector.

        prefix selects the adapter inside a bigger state dict, e.g. "model.multi_modal_projector." for a whole
        Molmo2 model. Molmo2 has no pad embedding, so ours is set to zero (a no-op). ValueError when keys or shapes
        do not fit this connector's config.
        """
        source = adapter.state_dict() if isinstance(adapter, nn.Module) else adapter
        state = connector_state_from_molmo2_adapter(source, self.config, prefix=prefix)
        if self.pad is not None:
            state["pad.pad_embed"] = torch.zeros_like(self.pad.pad_embed)
        self.load_state_dict(state)
        return self


# Molmo2Adapter key -> our key. Molmo 1 checkpoints name the same tensors wq/wk/wv/wo and w1/w2/w3, as we do.
MOLMO2_ADAPTER_KEYS = {
    **{f"image_pooling_2d.{a}_proj.{p}": f"pool.w{a}.{p}" for a in "qkvo" for p in ("weight", "bias")},
    "image_projector.gate_proj.weight": "projector.w1.weight",
    "image_projector.up_proj.weight": "projector.w3.weight",
    "image_projector.down_proj.weight": "projector.w2.weight",
}


def connector_state_from_molmo2_adapter(
    state_dict: Mapping[str, torch.Tensor], config: ConnectorConfig | None = None, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Rename a ``Molmo2Adapter`` state dict to our ``Connector``'s keys (without the pad embedding).

    Only the keys under ``prefix`` are read. ValueError lists missing and unexpected keys; with a config, also every
    tensor whose shape differs from what ``Connector(config)`` expects.
    """
    adapter = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    missing = sorted(set(MOLMO2_ADAPTER_KEYS) - set(adapter))
    unexpected = sorted(set(adapter) - set(MOLMO2_ADAPTER_KEYS))
    if missing or unexpected:
        raise ValueError(
            f"not a Molmo2Adapter state dict (prefix {prefix!r}): missing keys {missing}, unexpected keys {unexpected}"
        )
    state = {MOLMO2_ADAPTER_KEYS[key]: value for key, value in adapter.items()}
    if config is not None:
        with torch.device("meta"):  # shapes only: no memory, even for the 7B dimensions
            expected = {key: value.shape for key, value in Connector(config).state_dict().items()}
        wrong = [
            f"{source} {tuple(adapter[source].shape)} -> {ours} expects {tuple(expected[ours])}"
            for source, ours in MOLMO2_ADAPTER_KEYS.items()
            if adapter[source].shape != expected[ours]
        ]
        if wrong:
            raise ValueError(f"Molmo2Adapter shapes do not fit {config}: " + "; ".join(wrong))
    return state

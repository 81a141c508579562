"""The assembled Molmo (chapter 05): image -> crops -> ViT -> connector -> features ADDED to <im_patch> embeddings -> LLM.

    image --preprocessing--> crops [n, 3, S, S], pooled_patches_idx [n_tokens, 4], patch_pad_fraction [n, P]
          --vision.features--> [n, P, 2 * width]     (two inner layers, concatenated)
          --connector-------> [n_tokens, llm_dim]    (pad embeddings, 2x2 attention pooling, SwiGLU projector)
    text  --tokenizer-------> [BOS] <im_start> <im_patch> ... <im_col> ... <im_end> ... " User: ... Assistant:"
          --llm.embed-------> [B, T, llm_dim]; the i-th <im_patch> embedding += the i-th image feature
          --llm-------------> logits [B, T, vocab]

As allenai/molmo does it (olmo/model.py): the features are added to (not substituted for) the embeddings of the
<im_patch> tokens, the global image comes first, every row of pooled patches has its own <im_patch>, and the row ends
with <im_col>. The loss is on the answers only: a per-token weight (0 elsewhere; sqrt(1/N) for N packed annotations),
summed and divided by the number of tokens with loss, plus Molmo's optional z-loss. Packed sequences (several
annotations of one image, ``prompts.pack``) get the subsegment attention rule through ``subsegment_ids``.

Checkpoints: ``save_pretrained(dir)`` writes model.safetensors + config.json + the tokenizer; ``from_pretrained(dir)``
reads them back (no pickle) and says clearly what is wrong with a folder that is not such a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import IM_PATCH, IMAGE_LAYOUT_TOKENS, MOLMO2_LAYOUT_TOKENS, MolmoConfig, molmo_preset
from .connector import Connector
from .llm import LLM
from .preprocessing import ImageInputs, ImageLike, MolmoImageProcessor, batch_images
from .prompts import generation_prompt_ids, subsegment_mask
from .tokenizer import MolmoTokenizer
from .vision import VisionTransformer

CONFIG_SECTION = "molmo_lite"  # the key of config.json that marks a MolmoLite checkpoint


@dataclass
class MolmoOutput:
    """logits [B, T, vocab]; with targets: loss (scalar, z-loss included), per_token_loss [B, T] (cross-entropy,
    0 where the target is ignored), z_loss (scalar, already inside loss)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    per_token_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None


def load_tokenizer(config: MolmoConfig) -> MolmoTokenizer:
    """The tokenizer a config names: "tiny" (the course BPE) or a local tokenizer file / folder."""
    if config.tokenizer == "tiny":
        return MolmoTokenizer.tiny(pad_to=config.llm.vocab_size)
    return MolmoTokenizer.from_file(config.tokenizer, pad_to=config.llm.vocab_size)


def image_layout_ids(tokenizer: MolmoTokenizer) -> tuple[int, ...]:
    """The ids of the tokens that lay an image out in the text: <im_start>, <im_end>, <im_patch>, <im_col>, and
    Molmo2's <low_res_im_start>, <im_low>, <frame_start>, <frame_end> when the tokenizer holds them (as Molmo2's
    does). Molmo2 lets exactly these tokens see one another (MolmoConfig.image_attention)."""
    ids = [tokenizer.token_to_id(t) for t in IMAGE_LAYOUT_TOKENS]
    for token in MOLMO2_LAYOUT_TOKENS:
        try:
            ids.append(tokenizer.token_to_id(token))
        except KeyError:  # a Molmo 1 or course tokenizer: it has no such token
            pass
    return tuple(ids)


class MolmoLite(nn.Module):
    """Molmo: ViT + connector + LLM, with its preprocessor and tokenizer (see the module docstring).

    config: a MolmoConfig or a preset name ("tiny"). tokenizer: default ``load_tokenizer(config)``.
    """

    def __init__(self, config: MolmoConfig | str = "tiny", tokenizer: MolmoTokenizer | None = None):
        super().__init__()
        self.config = config = molmo_preset(config) if isinstance(config, str) else config
        self.vision = VisionTransformer(config.vision)
        self.connector = Connector(config.connector)
        self.llm = LLM(config.llm)
        self.processor = MolmoImageProcessor.from_config(config.preprocessor)
        self.tokenizer = tokenizer or load_tokenizer(config)
        rows = config.llm.vocab_size + config.llm.additional_vocab
        largest = max(self.tokenizer.image_token_ids.values())
        # The image tokens start at the base size; a tokenizer that holds them itself (Molmo-7B-O's: ids 100278-100282
        # inside its 100352 base rows) may have them below it, as the released model reads them from the base table.
        inside = (getattr(self.tokenizer, "holds_image_tokens", False)
                  and self.tokenizer.base_vocab_size < config.llm.vocab_size)
        if largest >= rows or (self.tokenizer.base_vocab_size != config.llm.vocab_size and not inside):
            raise ValueError(f"{self.tokenizer} does not fit the LLM's embedding ({config.llm.vocab_size} base rows + "
                             f"{config.llm.additional_vocab} new rows): the image tokens must start at the base size")
        self.image_patch_id = self.tokenizer.token_to_id(IM_PATCH)
        self.image_layout_ids = image_layout_ids(self.tokenizer)

    @classmethod
    def from_parts(cls, config: MolmoConfig | str = "tiny", vision: VisionTransformer | None = None,
                   llm: LLM | None = None, connector: Connector | None = None,
                   tokenizer: MolmoTokenizer | None = None) -> MolmoLite:
        """A MolmoLite whose ViT / LLM / connector start from the given (pretrained) modules, as Molmo starts from
        CLIP and Qwen2 (chapter 05 uses the tiny encoder of chapter 02 and the tiny LM of chapter 04). A ViT's CLIP
        head is dropped: Molmo never uses it. The LLM's new-token rows are kept if it has them, else fresh."""
        model = cls(config, tokenizer)
        if vision is not None:
            state = {k: v for k, v in vision.state_dict().items() if not k.startswith(("post_ln.", "proj"))}
            model.vision.load_state_dict(state)
        if llm is not None:
            model.llm.load_state_dict(llm.state_dict(), strict=llm.config.additional_vocab > 0)
        if connector is not None:
            model.connector.load_state_dict(connector.state_dict())
        return model

    @classmethod
    def from_backbones(cls, config: MolmoConfig | str = "molmo-7b-d", vision: str | Path | None = None,
                       llm: str | Path | None = None, tokenizer: str | Path | None = None) -> MolmoLite:
        """Start a Molmo as the paper does: the ViT from CLIP (open_clip), the LLM from its pretrained checkpoint, a
        fresh connector and fresh new-token rows. Defaults come from BACKBONES[config] (e.g. "ViT-L-14-336/openai" and
        "Qwen/Qwen2-7B", downloaded when online); each may instead be a local file / folder of the same format:
        vision an open_clip checkpoint (.safetensors or torch file), llm a transformers ``save_pretrained`` folder of
        a Qwen2 / OLMo 2 model, tokenizer a folder or tokenizer.json (default: the LLM's own)."""
        from .checkpoint import hub_folder
        from .config import BACKBONES

        name = config if isinstance(config, str) else None
        config = molmo_preset(config) if isinstance(config, str) else config
        defaults = BACKBONES.get(name, {})
        vision, llm = vision or defaults.get("vision"), llm or defaults.get("llm")
        if vision is None or llm is None:
            raise ValueError(f"say where the ViT and the LLM come from (vision=..., llm=...); presets with known "
                             f"backbones: {sorted(BACKBONES)}")
        used = config.vision.num_layers_used
        if Path(vision).exists():
            vit = VisionTransformer.from_open_clip(vision, heads=config.vision.heads, act=config.vision.act,
                                                   num_layers_used=used, feature_layers=config.vision.feature_layers)
        else:  # "MODEL/PRETRAINED", e.g. "ViT-L-14-336/openai"
            arch, _, tag = str(vision).partition("/")
            vit = VisionTransformer.from_pretrained_open_clip(arch, tag or "openai", num_layers_used=used,
                                                              feature_layers=config.vision.feature_layers)
        llm_dir = hub_folder(llm, allow_patterns=["*.json", "*.safetensors", "tokenizer*"])
        language = LLM.from_hf(llm_dir, additional_vocab=config.llm.additional_vocab)
        tok = MolmoTokenizer.from_file(tokenizer or llm_dir, pad_to=config.llm.vocab_size)
        return cls.from_parts(config, vision=vit, llm=language, tokenizer=tok)

    # molmo_lite.released.load_released, handed over by molmo_lite.released when it is imported: released.py imports
    # this module to build the model, so this one cannot import it back (tests/test_imports.py: no import circles).
    _released_loader: ClassVar[Callable[..., MolmoLite] | None] = None

    @classmethod
    def from_released(cls, path_or_hub_id: str | Path, dtype: torch.dtype = torch.float32, quantize: str | None = None,
                      **options) -> MolmoLite:
        """A released Molmo 1 checkpoint (allenai/Molmo-7B-D-0924 / -7B-O-0924, their remote-code layout) or Molmo2
        one: a local folder or a Hub id (downloaded when online). dtype: torch.float32 or torch.bfloat16; quantize:
        None or "nf4" (the LLM's projections, as chapter 11). ``molmo_lite.released.load_released`` does the work
        (options: its ``device``, ``tokenizer`` and ``family``); it is there once ``molmo_lite.released`` has been
        imported (``from molmo_lite import released``), which is also where the rest of chapter 13's tools are."""
        loader = MolmoLite._released_loader
        if loader is None:
            raise RuntimeError("MolmoLite.from_released is molmo_lite.released.load_released, which molmo_lite.model "
                               "cannot import (released.py imports model.py): `from molmo_lite import released` "
                               "first, or call released.load_released(...) directly")
        return loader(path_or_hub_id, dtype=dtype, quantize=quantize, **options)

    # ---------------------------------------------------------------------------------------------------- forward

    def image_features(self, crops: torch.Tensor, pooled_patches_idx: torch.Tensor,
                       patch_pad_fraction: torch.Tensor | None = None) -> torch.Tensor:
        """crops [n, 3, S, S] (of one or several images, ``batch_images``) -> one LLM embedding per image token
        [n_tokens, llm_dim]."""
        crops = crops.to(self.vision.positional_embedding.dtype)  # a bf16 model reads bf16 pixels
        features = self.vision.features(crops)  # [n, P, feature_dim]
        return self.connector(features, pooled_patches_idx, patch_pad_fraction)

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings [B, T, D] with image_features [n, D] ADDED at the <im_patch> positions, in reading
        order (row after row); ValueError when the number of features and of <im_patch> tokens differ."""
        x = self.llm.embed(input_ids)
        where = input_ids == self.image_patch_id
        n_patches, n_features = int(where.sum()), 0 if image_features is None else image_features.shape[0]
        if n_patches != n_features:
            raise ValueError(f"{n_patches} <im_patch> tokens in input_ids but {n_features} image features: the "
                             "images' token layout must be in the text (prompts.pack / generation_prompt_ids)")
        if image_features is None:
            return x
        return x.index_put(where.nonzero(as_tuple=True), image_features.to(x.dtype), accumulate=True)

    def image_attention_group(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """bool [B, T]: the image layout tokens, which see one another when config.image_attention is
        "bidirectional" (Molmo2); None when it is "causal" (Molmo 1)."""
        if self.config.image_attention == "causal":
            return None
        return torch.isin(input_ids, torch.tensor(self.image_layout_ids, device=input_ids.device))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        subsegment_ids: torch.Tensor | None = None,
        crops: torch.Tensor | None = None,
        pooled_patches_idx: torch.Tensor | None = None,
        patch_pad_fraction: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
        dropout_mask: torch.Tensor | None = None,
    ) -> MolmoOutput:
        """A batch as ``data.collate.collate`` makes it -> MolmoOutput. Without subsegment_ids the attention is
        causal plus the padding mask (and, with config.image_attention "bidirectional", the image tokens see one
        another, as Molmo2's); with them, Molmo's packing rule (``prompts.subsegment_mask``). dropout_mask:
        where the LLM's residual dropout applies (training only; see ``LLM.forward``)."""
        features = None if crops is None else self.image_features(crops, pooled_patches_idx, patch_pad_fraction)
        x = self.embed(input_ids, features)
        mask = attention_mask if subsegment_ids is None else subsegment_mask(subsegment_ids, attention_mask)
        logits = self.llm(inputs_embeds=x, attention_mask=mask, position_ids=position_ids, dropout_mask=dropout_mask,
                          bidirectional=self.image_attention_group(input_ids))
        if target_ids is None:
            return MolmoOutput(logits)
        loss, per_token, z_loss = answer_loss(logits, target_ids, loss_weights, self.config.z_loss)
        return MolmoOutput(logits, loss, per_token, z_loss)

    # -------------------------------------------------------------------------------------------------- generation

    def prepare_images(self, images: Sequence[ImageLike | ImageInputs | None]) -> list[ImageInputs | None]:
        """Run the preprocessor on whatever is not ImageInputs yet (None = no image for that row)."""
        return [None if im is None else im if isinstance(im, ImageInputs) else self.processor(im) for im in images]

    @torch.inference_mode()
    def generate_ids(self, images: Sequence[ImageLike | ImageInputs | None], prompts: Sequence[str],
                     max_new_tokens: int = 32, use_cache: bool = True) -> torch.Tensor:
        """Greedy answers as ids [B, max_new_tokens] (EOS repeated after the end). Each row: [BOS] + its image's
        tokens + its prompt (the question before the image with ``config.question_first``), left-padded; every image
        is encoded once, in one ViT call for the whole batch."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts (use None for a text-only prompt)")
        inputs = self.prepare_images(images)
        tok = self.tokenizer
        rows = [generation_prompt_ids(tok, p, () if im is None else im.tokens, self.config.question_first)
                for im, p in zip(inputs, prompts)]
        width = max(len(r) for r in rows)
        device = self.llm.embed.base.weight.device
        ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for b, row in enumerate(rows):
            ids[b, width - len(row):] = torch.tensor(row, device=device)
            mask[b, width - len(row):] = 1
        present = [im for im in inputs if im is not None]
        features = None
        if present:
            batch = {k: v.to(device) for k, v in batch_images(present).items()}
            features = self.image_features(batch["crops"], batch["pooled_patches_idx"], batch["patch_pad_fraction"])
        embeds = self.embed(ids, features)
        return self.llm.generate(ids, mask, max_new_tokens=max_new_tokens, eos_id=tok.eos_id, use_cache=use_cache,
                                 inputs_embeds=embeds, bidirectional=self.image_attention_group(ids))

    def generate(self, images: Sequence[ImageLike | ImageInputs | None] | ImageLike | None,
                 prompts: Sequence[str] | str, max_new_tokens: int = 32, use_cache: bool = True) -> list[str] | str:
        """Greedy answers as text, cut at EOS. A single prompt (a str) with a single image gives a single str."""
        single = isinstance(prompts, str)
        if single:
            images, prompts = [images], [prompts]
        out = self.generate_ids(images, prompts, max_new_tokens, use_cache)
        texts = []
        for row in out.tolist():
            row = row[: row.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in row else row
            texts.append(self.tokenizer.decode(row))
        return texts[0] if single else texts

    # ------------------------------------------------------------------------------------------------ checkpoints

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """model.safetensors (weights), config.json ({"molmo_lite": config}) and the tokenizer's files.
        state_dict: the weights to write instead of this module's own (a sharded model gathers its full state first,
        molmo_lite.distributed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict() if state_dict is None else state_dict
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps({CONFIG_SECTION: self.config.to_dict()}, indent=2))
        self.tokenizer.save(directory / "tokenizer")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MolmoLite:
        """Load what ``save_pretrained`` wrote; ValueError that names the problem for anything else."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a folder (a MolmoLite checkpoint is a folder from save_pretrained)")
        try:
            saved = json.loads((directory / "config.json").read_text())
            config = MolmoConfig.from_dict(saved[CONFIG_SECTION])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{directory} is not a MolmoLite checkpoint: config.json is missing or has no valid "
                             f"'{CONFIG_SECTION}' section ({type(err).__name__}: {err})") from None
        try:
            state = load_file(directory / "model.safetensors")
        except (OSError, SafetensorError) as err:
            raise ValueError(f"{directory}/model.safetensors is missing or not a safetensors file: {err}") from None
        tokenizer_dir = directory / "tokenizer"
        tokenizer = MolmoTokenizer.from_file(tokenizer_dir, pad_to=config.llm.vocab_size) if tokenizer_dir.exists() \
            else None
        model = cls(config, tokenizer)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(f"{directory}/model.safetensors does not fit its config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shapes {sorted(wrong)[:5]}")
        model.load_state_dict(state)
        return model.eval()


def answer_loss(logits: torch.Tensor, target_ids: torch.Tensor, loss_weights: torch.Tensor | None = None,
                z_loss: float = 0.0, normalizer: float | torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Molmo's loss: sum(cross-entropy * weight) / (number of tokens with weight > 0), plus
    z_loss * sum(logsumexp(logits)^2 * weight) / the same count.

    target_ids [B, T] (-100 = ignore); loss_weights [B, T] (default 1 on every target that is not -100).
    normalizer: divide by this instead of this batch's count (the trainer passes the count of the whole global batch,
    so that gradient accumulation gives the gradient of one big batch). -> (loss, per-token cross-entropy [B, T],
    z-loss term).
    """
    valid = target_ids != -100
    weights = valid.float() if loss_weights is None else loss_weights.float() * valid
    logits32 = logits.float()
    per_token = F.cross_entropy(logits32.flatten(0, 1), target_ids.flatten(), ignore_index=-100,
                                reduction="none").view(target_ids.shape)
    count = (weights > 0).sum().clamp(min=1) if normalizer is None else normalizer
    loss = (per_token * weights).sum() / count
    z_term = logits32.new_zeros(())
    if z_loss:
        z_term = z_loss * (logits32.logsumexp(-1).pow(2) * weights).sum() / count
    return loss + z_term, per_token, z_term

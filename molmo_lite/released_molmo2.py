"""Molmo2 (allenai/Molmo2-*) read into MolmoLite: its config.json as the course's switches (chapter 13).

Molmo2 is the same modules as Molmo 1 with other switches (``molmo2_config``: a ViT without CLS or pre-LN and with a
patch bias, per-head q/k norm, bidirectional attention among the image tokens), in the hub layout that transformers'
Molmo2ForConditionalGeneration reads: the LLM block's tensors nested under ``self_attn.`` / ``mlp.``
(``released_layout.MOLMO2_LAYOUT``). ``molmo_lite.released.load_released`` tells the two families apart by config.json
(``is_molmo2_config``) and reads both; every name here is importable from ``molmo_lite.released`` as well
(docs/released_checkpoints.md, "Molmo2").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from safetensors.torch import save_file

from .config import (
    IM_START,
    LOW_RES_IM_START,
    ConnectorConfig,
    LLMConfig,
    MolmoConfig,
    PreprocessorConfig,
    VisionConfig,
    shown_path,
)
from .released_layout import PREFIX, SINGLE_NAME, ReleasedCheckpointError

# What Molmo2's image processor uses when preprocessor_config.json does not say (transformers 5.24,
# models/molmo2/image_processing_molmo2.py, Molmo2ImageProcessor's class defaults: 378 px crops of 14 px patches, at
# most 8 crops, overlap margins [4, 4], 2x2 pooling, mean = std = 0.5 per channel, bilinear resize to the exact size).
# The overview's tokens follow Molmo2Processor's defaults (use_single_crop_start_token true: <low_res_im_start>;
# <im_col> as in the crops); a folder's processor_config.json can say otherwise (Molmo2-8B's: no <im_col> in the
# overview).
MOLMO2_PREPROCESSOR = PreprocessorConfig(crop_size=378, patch_size=14, max_crops=8, overlap_margins=(4, 4),
                                         pooling=(2, 2), image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
                                         resize="stretch", antialias=False, low_res_start=LOW_RES_IM_START,
                                         low_res_cols=True)
MOLMO2_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh", "gelu": "gelu",
                      "quick_gelu": "quick_gelu"}


def is_molmo2_config(hf: Mapping) -> bool:
    """Does this config.json describe a Molmo2 (model_type "molmo2" or a Molmo2* architecture)?"""
    archs = [str(a) for a in hf.get("architectures") or []]
    return str(hf.get("model_type", "")).startswith("molmo2") or any("Molmo2" in a for a in archs)


def _first(d: Mapping, *names, default=None):
    """The value of the first of ``names`` that ``d`` has: the hub's remote-code field names and transformers' own
    differ (image_default_input_size / image_size, vit_layers / vision_feature_layer, ...)."""
    for name in names:
        if d.get(name) is not None:
            return d[name]
    return default


def molmo2_preprocessor(pp: Mapping | None, where: str = "preprocessor_config.json",
                        processor: Mapping | None = None) -> PreprocessorConfig:
    """PreprocessorConfig from a Molmo2 preprocessor_config.json (None: MOLMO2_PREPROCESSOR). Read: size (or
    base_image_input_size), patch_size, max_crops, overlap_margins, pooling_size, image_mean, image_std; from
    processor_config.json (``processor``), how the overview's tokens are written: use_single_crop_start_token,
    use_single_crop_col_tokens (null: as image_use_col_tokens)."""
    base = MOLMO2_PREPROCESSOR
    if processor:
        cols = processor.get("use_single_crop_col_tokens")
        cols = processor.get("image_use_col_tokens", True) if cols is None else cols
        if not processor.get("image_use_col_tokens", True):
            raise ReleasedCheckpointError(f"{where}: image_use_col_tokens false (crops without <im_col>) is not "
                                          "supported")
        start = LOW_RES_IM_START if processor.get("use_single_crop_start_token", True) else IM_START
        base = replace(base, low_res_start=start, low_res_cols=bool(cols))
    if pp is None:
        return base
    size = _first(pp, "size", "base_image_input_size", default=[base.crop_size, base.crop_size])
    side = [size.get("height"), size.get("width")] if isinstance(size, Mapping) else (
        [size, size] if isinstance(size, int) else list(size))
    if side[0] != side[1]:
        raise ReleasedCheckpointError(f"{where}: crop size {side} is not square; molmo_lite's crops are")
    return replace(base, crop_size=int(side[0]), patch_size=int(_first(pp, "patch_size", "image_patch_size",
                                                                        default=base.patch_size)),
                   max_crops=int(pp.get("max_crops", base.max_crops)),
                   overlap_margins=tuple(pp.get("overlap_margins", base.overlap_margins)),
                   pooling=tuple(pp.get("pooling_size", base.pooling)),
                   image_mean=tuple(pp.get("image_mean", base.image_mean)),
                   image_std=tuple(pp.get("image_std", base.image_std)))


def molmo2_config(hf: Mapping, preprocessor: Mapping | None = None, tokenizer: str = "",
                  where: str = "config.json", processor: Mapping | None = None) -> MolmoConfig:
    """The MolmoConfig of a Molmo2 checkpoint from its config.json, as transformers' Molmo2Config reads it (both the
    hub's remote-code names and transformers' own), mapped onto the course's switches:

    vision_config / vit_config  -> VisionConfig(cls_token=False, pre_ln=False, patch_bias=True, act "gelu_tanh");
                                   hub configs list more layers than the weights hold: the ViT keeps
                                   max(vit_layers) + 1 blocks, as transformers does
    adapter_config              -> ConnectorConfig(pad_embed=False): pooling heads x head_dim, SwiGLU width
    text_config                 -> LLMConfig(qk_norm=True, qk_norm_scope "head" for qk_norm_type "qwen3", "full" for
                                   "olmo"), head_dim, additional_vocab_size, norm_after, rope theta
    and image_attention="bidirectional". What the course's modules cannot express is refused with its field named:
    grouped-query attention in the ViT or the pooling, a scaled RoPE, biases the modules lack.
    """
    vit = _first(hf, "vision_config", "vit_config")
    adapter, text = hf.get("adapter_config"), hf.get("text_config")
    for name, part in (("vision_config", vit), ("adapter_config", adapter), ("text_config", text)):
        if not isinstance(part, Mapping):
            raise ReleasedCheckpointError(f"{where} lacks the {name!r} section that a Molmo2 config.json has")

    def need(d, *names, section):
        value = _first(d, *names)
        if value is None:
            raise ReleasedCheckpointError(f"{where}: {section} lacks {names[0]!r}")
        return value

    def refuse(why):
        raise ReleasedCheckpointError(f"{where}: {why}; molmo_lite's modules cannot express it")

    width, heads = int(need(vit, "hidden_size", section="vision_config")), int(
        need(vit, "num_attention_heads", section="vision_config"))
    if int(_first(vit, "num_key_value_heads", default=heads)) != heads:
        refuse(f"vision_config has num_key_value_heads {vit['num_key_value_heads']} != {heads} heads")
    if int(_first(vit, "head_dim", default=width // heads)) * heads != width:
        refuse(f"vision_config head_dim {vit.get('head_dim')} x {heads} heads != hidden_size {width}")
    act = str(_first(vit, "hidden_act", default="gelu_pytorch_tanh"))
    if act not in MOLMO2_ACTIVATIONS:
        refuse(f"vision_config hidden_act {act!r}")
    if not _first(vit, "attention_bias", default=True):
        refuse("vision_config attention_bias false")
    size = _first(vit, "image_size", "image_default_input_size", default=[378, 378])
    size = [size, size] if isinstance(size, int) else list(size)
    patch = int(_first(vit, "patch_size", "image_patch_size", default=14))
    if size[0] != size[1]:
        refuse(f"vision_config image size {size} is not square")
    positions = _first(vit, "num_position_embeddings", "image_num_pos", default=(size[0] // patch) ** 2)
    if int(positions) != (size[0] // patch) ** 2:
        refuse(f"vision_config has {positions} position embeddings for a {size[0] // patch}^2 patch grid")
    listed = int(need(vit, "num_hidden_layers", section="vision_config"))
    layers = [int(i) for i in need(adapter, "vision_feature_layer", "vit_layers", section="adapter_config")]
    if not all(-listed <= i < listed for i in layers):
        raise ReleasedCheckpointError(f"{where}: vit layers {layers} do not index the {listed} ViT layers")
    used = listed
    if "vit_config" in hf and "vision_config" not in hf:  # the hub's config: its weights stop at the last layer read
        layers = [i % listed for i in layers]
        used = max(layers) + 1
    vision = VisionConfig(image_size=size[0], patch_size=patch, width=width, layers=listed, heads=heads,
                          mlp_width=int(need(vit, "intermediate_size", section="vision_config")),
                          act=MOLMO2_ACTIVATIONS[act], ln_eps=float(_first(vit, "layer_norm_eps", default=1e-6)),
                          num_layers_used=used if used != listed else None, feature_layers=tuple(layers),
                          output_dim=None, cls_token=False, pre_ln=False, patch_bias=True)

    pool_heads = int(need(adapter, "num_attention_heads", section="adapter_config"))
    if int(_first(adapter, "num_key_value_heads", default=pool_heads)) != pool_heads:
        refuse(f"adapter_config has num_key_value_heads {adapter['num_key_value_heads']} != {pool_heads} heads")
    if not _first(adapter, "attention_bias", default=True) or _first(adapter, "mlp_bias", default=False):
        refuse("adapter_config attention_bias false or mlp_bias true (the pooling has biases, the projector none)")
    if str(_first(adapter, "hidden_act", default="silu")) != "silu":
        refuse(f"adapter_config hidden_act {adapter['hidden_act']!r} (the projector is SwiGLU)")

    hidden, t_heads = int(need(text, "hidden_size", section="text_config")), int(
        need(text, "num_attention_heads", section="text_config"))
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        refuse(f"text_config uses a scaled RoPE (rope_type {kind!r})")
    qk = str(_first(text, "qk_norm_type", default="qwen3"))
    if qk not in ("qwen3", "olmo"):
        refuse(f"text_config qk_norm_type {qk!r}")
    if str(_first(text, "hidden_act", default="silu")) != "silu":
        refuse(f"text_config hidden_act {text['hidden_act']!r} (the MLP is SwiGLU)")
    llm = LLMConfig(
        vocab_size=int(need(text, "vocab_size", section="text_config")), hidden=hidden,
        layers=int(need(text, "num_hidden_layers", section="text_config")), heads=t_heads,
        kv_heads=int(_first(text, "num_key_value_heads", default=t_heads)),
        head_dim=int(_first(text, "head_dim", default=hidden // t_heads)),
        intermediate=int(need(text, "intermediate_size", section="text_config")),
        rope_theta=float(_first(rope, "rope_theta", default=_first(text, "rope_theta", default=10000.0))),
        rms_eps=float(_first(text, "rms_norm_eps", "layer_norm_eps", default=1e-6)),
        qkv_bias=bool(_first(text, "attention_bias", "qkv_bias", default=False)), qk_norm=True,
        qk_norm_scope="head" if qk == "qwen3" else "full", norm_after=bool(text.get("norm_after", False)),
        tie_embeddings=bool(_first(hf, "tie_word_embeddings", default=False)),
        additional_vocab=int(_first(text, "additional_vocab_size", default=128)),
    )
    connector = ConnectorConfig(
        input_dim=vision.feature_dim, pool_dim=int(need(adapter, "hidden_size", section="adapter_config")),
        heads=pool_heads, head_dim=int(_first(adapter, "head_dim", default=width // pool_heads)),
        hidden_dim=int(need(adapter, "intermediate_size", section="adapter_config")),
        llm_dim=int(_first(adapter, "text_hidden_size", default=hidden)), pad_embed=False)
    try:
        # without preprocessor_config.json: Molmo2's defaults at the ViT's own crop size (its input size)
        pre = molmo2_preprocessor(preprocessor, processor=processor)
        if preprocessor is None:
            pre = replace(pre, crop_size=vision.image_size, patch_size=vision.patch_size)
        return MolmoConfig(preprocessor=pre, vision=vision, connector=connector, llm=llm, tokenizer=tokenizer,
                           image_attention="bidirectional")
    except ValueError as err:
        raise ReleasedCheckpointError(f"{where} and preprocessor_config.json do not fit together: {err}") from None


def save_molmo2_hub_layout(model, directory: str | Path) -> Path:
    """Write a transformers ``Molmo2ForConditionalGeneration`` in the hub layout, as allenai's Molmo2 folders hold it:
    transformers' ``save_pretrained`` writes the hub's key names, but splits the embedding table into two equal halves
    where the hub keeps the vocabulary's rows in ``wte.embedding`` and the additional ones in ``wte.new_embedding``;
    this rewrites that pair. For tests and benchmarks of the Molmo2 reader (a tiny random Molmo2 -> a folder)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    model.save_pretrained(directory)
    path = directory / SINGLE_NAME
    if not path.exists():
        raise ValueError(f"{shown_path(directory)}: expected one {SINGLE_NAME} (a tiny model), got shards")
    state = load_file(path)
    table = model.model.language_model.embed_tokens.weight.detach()
    vocab = model.config.text_config.vocab_size
    prefix = PREFIX + "transformer.wte."
    state[prefix + "embedding"], state[prefix + "new_embedding"] = table[:vocab].clone(), table[vocab:].clone()
    save_file(state, path, metadata={"format": "pt"})
    return directory

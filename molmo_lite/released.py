"""The released Molmo checkpoints, read into MolmoLite (Molmo 1 written back in its own layout too; chapter 13).

allenai/Molmo-7B-D-0924 (Qwen2-7B inside) and allenai/Molmo-7B-O-0924 (OLMo-7B inside) ship as remote code
(modeling_molmo.py) plus weights whose names are those of AI2's training code, prefixed with ``model.``. Their
modules map onto ours one to one, except for three things (docs/released_checkpoints.md has the whole table):

    transformer.blocks.{i}.att_proj   q, k and v in ONE matrix, stacked on dim 0: [heads*d + 2*kv_heads*d, hidden]
    transformer.blocks.{i}.ff_proj    the MLP's up and gate in ONE matrix, up first: [2 * intermediate, hidden]
    transformer.wte                   two tables: ``embedding`` (the LLM's rows) and ``new_embedding`` (128 rows)

and config.json says nothing about the vision side: the remote code hard-codes it (``MOLMO1_FIXED`` below).

    load_released(folder_or_hub_id, dtype=torch.bfloat16)   -> MolmoLite       (MolmoLite.from_released calls it)
    write_released(model, folder, variant="7b-d")           a MolmoLite in the released layout (tiny checkpoints)
    split_att_proj / split_ff_proj                          the fused-weight convention, checked against transformers

Molmo2 (allenai/Molmo2-*, in the hub layout that transformers' Molmo2ForConditionalGeneration reads) is the same
modules with other switches (``molmo2_config``: a ViT without CLS or pre-LN and with a patch bias, per-head q/k norm,
bidirectional attention among the image tokens) and the LLM block's tensors nested under ``self_attn.`` / ``mlp.``
(``MOLMO2_LAYOUT``); ``load_released`` tells the two families apart by config.json.

Loading never holds more than the model plus the tensor being read: the model is built on PyTorch's meta device
(shapes, no memory), the shards are read one after the other, memory-mapped with ``safetensors.safe_open``, every
tensor is copied out in ``dtype`` as it is read and assigned into the model (``load_state_dict(assign=True)``), and
with ``quantize="nf4"`` each LLM projection is quantized (chapter 11's ``quantize_llm``) as soon as its weights
are in.

Three files, imported one way (released_layout <- released_molmo2 <- released; this module also imports model and,
to quantize, quantize; model.py imports none of them):

    released_layout.py   what both families share: the tensor names (``released_plan``, ``Layout``), the fused
                         weights (``split_att_proj`` ...), the file names, ``ReleasedCheckpointError``
    released_molmo2.py   Molmo2's config.json as a MolmoConfig (``molmo2_config``), its hub-layout writer
    released.py          Molmo 1's config.json, reading both families (``load_released``), writing Molmo 1; every
                         public name of the other two is importable from here too

``MolmoLite.from_released`` is ``load_released``: this module registers it with MolmoLite when it is imported
(model.py cannot import this module, which imports model.py to build the model).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import (
    IMAGE_TOKENS,
    ConnectorConfig,
    LLMConfig,
    MolmoConfig,
    PreprocessorConfig,
    VisionConfig,
    shown_path,
)
from .model import MolmoLite
from .released_layout import (  # noqa: F401  (all of them importable from here, as before the split)
    INDEX_NAME,
    MOLMO1_LAYOUT,
    MOLMO2_LAYOUT,
    PREFIX,
    SINGLE_NAME,
    Entry,
    Layout,
    ReleasedCheckpointError,
    _fuse,
    _rows,
    _stacked_shape,
    att_proj_rows,
    ff_proj_rows,
    fuse_att_proj,
    fuse_ff_proj,
    released_plan,
    split_att_proj,
    split_entry,
    split_ff_proj,
)
from .released_molmo2 import (  # noqa: F401  (all of them importable from here, as before the split)
    MOLMO2_ACTIVATIONS,
    MOLMO2_PREPROCESSOR,
    is_molmo2_config,
    molmo2_config,
    molmo2_preprocessor,
    save_molmo2_hub_layout,
)

# --------------------------------------------------------------------------------------------------------------------
# What config.json does not say.
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedGeometry:
    """The parts of a released Molmo 1 that its remote code hard-codes instead of reading them from config.json."""

    vision: VisionConfig  # the ViT: CLIP ViT-L/14 at 336 px, its first 23 blocks, features of blocks -2 and -9
    pooling_heads: int  # attention pooling ("attention-meanq"): heads x head_dim = the ViT width
    pooling_head_dim: int
    additional_vocab: int  # rows of wte.new_embedding
    preprocessor: PreprocessorConfig  # used when a folder has no preprocessor_config.json


# Source: the remote code of allenai/Molmo-7B-D-0924, read in its re-upload reubzdubz/Molmo7B_D_NF4Quant
# @ edf464b955f389104b80bd57a9ecf52ce5530552, modeling_molmo.py, MolmoForCausalLM.__init__ (the FullMolmoConfig it
# builds: vit_layers [-2, -9], image_num_layers 23, image_emb_dim 1024, image_num_heads 16, image_mlp_dim 4096,
# quick_gelu, image_norm_eps 1e-5, 336 px / patch 14, additional_vocab_size 128, attention-meanq pooling 2x2), the same
# values as vLLM's VisionBackboneConfig (vllm-project/vllm @ 0176b7b4618423cbe120a85db91ef4c9b4d28255,
# vllm/model_executor/models/molmo.py); crops from preprocessor_config.json of the same upload (max_crops 12,
# overlap_margins [4, 4]). Molmo-7B-O-0924 runs the same remote code. Summary: /work/shared/RELEASED_CHECKPOINTS.md.
MOLMO1_FIXED = FixedGeometry(
    vision=VisionConfig(image_size=336, patch_size=14, width=1024, layers=24, heads=16, mlp_width=4096,
                        act="quick_gelu", ln_eps=1e-5, num_layers_used=23, feature_layers=(-2, -9), output_dim=None),
    pooling_heads=16,
    pooling_head_dim=64,
    additional_vocab=128,
    preprocessor=PreprocessorConfig(crop_size=336, patch_size=14, max_crops=12, overlap_margins=(4, 4),
                                    pooling=(2, 2)),
)

# A course extension of config.json (ignored by the remote code): the vision / connector geometry of a checkpoint
# that is NOT the released one (the tiny checkpoints of the tests and of chapter 13). Absent = MOLMO1_FIXED.
GEOMETRY_KEY = "molmo_lite_geometry"

RELEASED_ARCHITECTURES = ("MolmoForCausalLM", "MOLMoForCausalLM")  # the second: an older revision of 7B-D
AUTO_MAP = {"AutoConfig": "config_molmo.MolmoConfig", "AutoModelForCausalLM": "modeling_molmo.MolmoForCausalLM"}
PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_preprocessing_molmo.MolmoImageProcessor",
                      "AutoProcessor": "preprocessing_molmo.MolmoProcessor"}
VARIANTS = ("7b-d", "7b-o")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "tokenizer*"]  # config, index, shards, tokenizer and processor


# --------------------------------------------------------------------------------------------------------------------
# The shapes (the name map itself, and the fused weights, are in released_layout.py).
# --------------------------------------------------------------------------------------------------------------------


def _meta_model(config: MolmoConfig, tokenizer) -> MolmoLite:
    with torch.device("meta"):  # shapes, no memory: even the 7B geometry costs nothing here
        return MolmoLite(config, tokenizer)


def released_shapes(config: MolmoConfig, tokenizer=None) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a released checkpoint for ``config`` (computed on the meta device)."""
    from .tokenizer import MolmoTokenizer

    tokenizer = tokenizer or MolmoTokenizer.tiny(pad_to=config.llm.vocab_size)
    ours = {k: tuple(v.shape) for k, v in _meta_model(config, tokenizer).state_dict().items()}
    return {e.released: _stacked_shape([ours[n] for n in e.ours]) for e in released_plan(config)}


# --------------------------------------------------------------------------------------------------------------------
# config.json / preprocessor_config.json -> MolmoConfig.
# --------------------------------------------------------------------------------------------------------------------


def _required(hf: Mapping, field: str, where: str):
    if hf.get(field) is None:
        raise ReleasedCheckpointError(f"{where} lacks the field {field!r} that a released Molmo config.json has")
    return hf[field]


def _as_tuples(d: Mapping) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def released_preprocessor(pp: Mapping | None, where: str = "preprocessor_config.json") -> PreprocessorConfig:
    """PreprocessorConfig from a released preprocessor_config.json (None: the released defaults). Read: max_crops,
    overlap_margins, base_image_input_size, image_patch_size, image_token_length_w/_h (-> the pooling window),
    image_mean, image_std. The resize itself is the course's (antialiased bilinear in torch; the remote code resizes
    with TensorFlow), so pixels differ slightly from the released processor's."""
    if pp is None:
        return MOLMO1_FIXED.preprocessor
    if pp.get("do_normalize") is False:
        raise ReleasedCheckpointError(f"{where}: do_normalize false is not supported (Molmo normalises with CLIP's "
                                      "mean and std)")
    size = pp.get("base_image_input_size", [336, 336])
    size = [size, size] if isinstance(size, int) else list(size)
    if size[0] != size[1]:
        raise ReleasedCheckpointError(f"{where}: base_image_input_size {size} is not square; molmo_lite's crops are")
    patch = int(pp.get("image_patch_size", 14))
    grid = size[0] // patch
    th, tw = int(pp.get("image_token_length_h", grid // 2)), int(pp.get("image_token_length_w", grid // 2))
    if grid % th or grid % tw:
        raise ReleasedCheckpointError(f"{where}: image_token_length {th}x{tw} does not divide the {grid}x{grid} "
                                      "patch grid of a crop")
    base = MOLMO1_FIXED.preprocessor
    return PreprocessorConfig(crop_size=size[0], patch_size=patch, max_crops=int(pp.get("max_crops", base.max_crops)),
                              overlap_margins=tuple(pp.get("overlap_margins", base.overlap_margins)),
                              pooling=(grid // th, grid // tw),
                              image_mean=tuple(pp.get("image_mean", base.image_mean)),
                              image_std=tuple(pp.get("image_std", base.image_std)))


def released_config(hf: Mapping, preprocessor: Mapping | None = None, tokenizer: str = "",
                    where: str = "config.json") -> MolmoConfig:
    """The MolmoConfig of a released checkpoint from its config.json (and preprocessor_config.json) as dicts.

    LLM: hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads (null = as many as the heads),
    intermediate_size (the FUSED width: ours is half), embedding_size (the rows of wte.embedding and of the output
    head; vocab_size when absent), rope_theta, layer_norm_eps, qkv_bias, attention_layer_norm (q/k norm),
    norm_after, weight_tying. Vision and connector: MOLMO1_FIXED, or the course's GEOMETRY_KEY when present.
    """
    check_released_config(hf, where)
    heads = int(_required(hf, "num_attention_heads", where))
    hidden = int(_required(hf, "hidden_size", where))
    fused = int(_required(hf, "intermediate_size", where))
    if fused % 2:
        raise ReleasedCheckpointError(f"{where}: intermediate_size {fused} is odd; in Molmo it is the fused up+gate "
                                      "width (2 x the MLP's hidden size)")
    if hf.get("clip_qkv") is not None:
        raise ReleasedCheckpointError(f"{where}: clip_qkv {hf['clip_qkv']} is not supported (the released models "
                                      "have null)")
    if hf.get("layer_norm_type", "rms") != "rms":
        raise ReleasedCheckpointError(f"{where}: layer_norm_type {hf['layer_norm_type']!r} is not supported "
                                      "(molmo_lite's LLM uses RMSNorm, as the released models)")
    llm = LLMConfig(
        vocab_size=int(hf.get("embedding_size") or _required(hf, "vocab_size", where)), hidden=hidden,
        layers=int(_required(hf, "num_hidden_layers", where)), heads=heads,
        kv_heads=int(hf.get("num_key_value_heads") or heads), head_dim=None, intermediate=fused // 2,
        rope_theta=float(hf.get("rope_theta", 10000.0)), rms_eps=float(hf.get("layer_norm_eps", 1e-5)),
        qkv_bias=bool(hf.get("qkv_bias", False)), qk_norm=bool(hf.get("attention_layer_norm", False)),
        norm_after=bool(hf.get("norm_after", False)), tie_embeddings=bool(hf.get("weight_tying", False)),
        additional_vocab=int(hf.get("additional_vocab_size", MOLMO1_FIXED.additional_vocab)),
    )
    if hidden % heads:
        raise ReleasedCheckpointError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    geometry = hf.get(GEOMETRY_KEY) or {}
    vision = VisionConfig(**_as_tuples(geometry["vision"])) if "vision" in geometry else MOLMO1_FIXED.vision
    conn = geometry.get("connector", {})
    connector = ConnectorConfig(
        input_dim=vision.feature_dim, pool_dim=int(conn.get("pool_dim", vision.width)),
        heads=int(conn.get("heads", MOLMO1_FIXED.pooling_heads)),
        head_dim=int(conn.get("head_dim", MOLMO1_FIXED.pooling_head_dim)),
        hidden_dim=int(conn.get("hidden_dim", llm.intermediate)), llm_dim=hidden, pad_embed=True,
        feature_norm=int(conn.get("feature_norm", 0)),
    )
    try:
        return MolmoConfig(preprocessor=released_preprocessor(preprocessor), vision=vision, connector=connector,
                           llm=llm, tokenizer=tokenizer)
    except ValueError as err:
        raise ReleasedCheckpointError(f"{where} and preprocessor_config.json do not fit together: {err}") from None


def check_released_config(hf: Mapping, where: str = "config.json") -> None:
    """ReleasedCheckpointError for a config.json that is not a Molmo 1 one: Molmo2, MolmoE (mixture of experts),
    or anything else."""
    kind = str(hf.get("model_type", ""))
    archs = [str(a) for a in hf.get("architectures") or []]
    if kind.startswith("molmo2") or any("Molmo2" in a for a in archs):
        raise ReleasedCheckpointError(_molmo2_message(where, f"model_type {kind!r}, architectures {archs}"))
    moe_fields = sorted(k for k in hf if "expert" in k.lower() or k.startswith("moe"))
    if "moe" in kind.lower() or any("moe" in a.lower() for a in archs) or moe_fields:
        raise ReleasedCheckpointError(
            f"{where} describes a mixture-of-experts Molmo (MolmoE-1B: model_type {kind!r}, architectures {archs}, "
            f"fields {moe_fields}); molmo_lite has no MoE block, so this loader reads only the dense Molmo-7B-D/O. "
            "Unsupported: the router and the per-expert MLPs (megablocks' ffn.router / ffn.experts.mlp.w1, v1, w2).")
    if kind != "molmo" and not set(archs) & set(RELEASED_ARCHITECTURES):
        raise ReleasedCheckpointError(
            f"{where} is not a released Molmo 1 config (model_type {kind!r}, architectures {archs}; expected "
            f"model_type 'molmo' / {list(RELEASED_ARCHITECTURES)}). A MolmoLite.save_pretrained folder loads with "
            "MolmoLite.from_pretrained.")


def _molmo2_message(where: str, why: str) -> str:
    return (f"{where} is a Molmo2 checkpoint ({why}), not Molmo 1, so the Molmo 1 reader (family='molmo1') "
            "refuses it: Molmo2 has other key names and another ViT. Load it with family='molmo2', or let "
            "load_released / MolmoLite.from_released tell the family from config.json (family=None).")


def is_released_folder(path: str | Path) -> bool:
    """Does ``path`` hold a config.json of a released Molmo 1 (model_type "molmo" / MolmoForCausalLM) or Molmo2?"""
    try:
        hf = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(hf, dict):
        return False
    archs = hf.get("architectures") or []
    return hf.get("model_type") == "molmo" or bool(set(archs) & set(RELEASED_ARCHITECTURES)) or is_molmo2_config(hf)


# --------------------------------------------------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReleasedCheckpointError(f"{shown_path(path)} is missing: {what}") from None
    except (OSError, ValueError) as err:
        raise ReleasedCheckpointError(f"{shown_path(path)} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ReleasedCheckpointError(f"{shown_path(path)} does not hold a JSON object")
    return data


def _open(path: Path, device: str):
    try:
        return safe_open(str(path), framework="pt", device=device)
    except FileNotFoundError:
        raise ReleasedCheckpointError(f"shard {shown_path(path)} is missing") from None
    except (SafetensorError, OSError) as err:
        raise ReleasedCheckpointError(
            f"shard {shown_path(path)} cannot be read as safetensors ({err}): the file is truncated or corrupt "
            f"({path.stat().st_size if path.exists() else 0:,} bytes). Download it again.") from None


def weight_map(folder: Path) -> dict[str, Path]:
    """Every tensor name of the checkpoint -> the shard file holding it (from the index, or the single file)."""
    index = folder / INDEX_NAME
    if index.exists():
        mapping = _read_json(index, "the shard index").get("weight_map")
        if not isinstance(mapping, dict) or not mapping:
            raise ReleasedCheckpointError(f"{shown_path(index)} has no 'weight_map'")
        shards = {name: folder / name for name in set(mapping.values())}
        absent = sorted(name for name, path in shards.items() if not path.is_file())
        if absent:
            raise ReleasedCheckpointError(f"{shown_path(index)} lists shards that are not in the folder: {absent}")
        return {key: shards[name] for key, name in mapping.items()}
    single = folder / SINGLE_NAME
    if single.is_file():
        with _open(single, "cpu") as f:
            return dict.fromkeys(f.keys(), single)
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickled:
        raise ReleasedCheckpointError(
            f"{shown_path(folder)} holds only pickled weights {pickled[:3]}: molmo_lite reads safetensors and never "
            "unpickles a downloaded file. Convert them on a trusted machine (safetensors.torch.save_file).")
    raise ReleasedCheckpointError(f"{shown_path(folder)} has no weights: expected {INDEX_NAME} with its shards, or "
                                  f"{SINGLE_NAME}")


def _patterns(keys) -> list[str]:
    """Key names with their block numbers replaced by {i}, without repeats."""
    return sorted({re.sub(r"\.\d+\.", ".{i}.", k) for k in keys})


def check_released_keys(keys, where: str) -> None:
    """ReleasedCheckpointError for Molmo2 key names, MolmoE (expert) keys or a pre-quantized checkpoint."""
    keys = list(keys)
    molmo2 = [k for k in keys if ".self_attn." in k or ".mlp.ff_proj" in k or ".mlp.ff_out" in k]
    if molmo2:
        raise ReleasedCheckpointError(_molmo2_message(where, f"Molmo2 key names, e.g. {_patterns(molmo2)[:3]}"))
    moe = [k for k in keys if ".ffn." in k or ".experts." in k or ".router." in k]
    if moe:
        raise ReleasedCheckpointError(
            f"{where} holds mixture-of-experts weights (MolmoE-1B); molmo_lite has no MoE block. Unsupported "
            f"tensors: {_patterns(moe)}")
    quantized = [k for k in keys if k.endswith((".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"))
                 or ".quant_state." in k]
    if quantized:
        raise ReleasedCheckpointError(
            f"{where} is a pre-quantized bitsandbytes checkpoint (e.g. {_patterns(quantized)[:3]}): load the "
            "full-precision release (allenai/Molmo-7B-D-0924) and pass quantize='nf4' instead.")


def _tokenizer_for(folder: Path, config: MolmoConfig):
    from .tokenizer import MolmoTokenizer

    if not ((folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists()):
        raise ReleasedCheckpointError(
            f"{shown_path(folder)} has no tokenizer (tokenizer.json / tokenizer_config.json); pass tokenizer= "
            "(a MolmoTokenizer or a folder with the released tokenizer files)")
    try:
        # Not AutoTokenizer on the folder: it would read config.json, find the remote code's auto_map and ask on the
        # terminal whether to run it. tokenizer.json (+ tokenizer_config.json for the special tokens) is enough.
        if (folder / "tokenizer.json").exists():
            from transformers import PreTrainedTokenizerFast

            base = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        else:  # vocab.json + merges.txt: the class tokenizer_config.json names, never remote code
            from transformers import AutoTokenizer

            base = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        return MolmoTokenizer(base, pad_to=config.llm.vocab_size)
    except Exception as err:  # transformers / tokenizers raise many kinds
        raise ReleasedCheckpointError(f"the tokenizer files of {shown_path(folder)} could not be read "
                                      f"({type(err).__name__}: {err})") from None


def _check_dtype(dtype: torch.dtype, quantize: str | None) -> None:
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    if quantize not in (None, "nf4"):
        raise ValueError(f"quantize must be None or 'nf4', got {quantize!r}")


def load_released(path_or_hub_id: str | Path, dtype: torch.dtype = torch.float32, quantize: str | None = None,
                  device: str | torch.device = "cpu", tokenizer=None, family: str | None = None):
    """A released Molmo 1 (or Molmo2) checkpoint as a MolmoLite (eval mode).

    family: "molmo1" (allenai/Molmo-7B-D-0924, -7B-O-0924), "molmo2" (allenai/Molmo2-*, the hub layout that
    transformers' Molmo2ForConditionalGeneration reads: ``molmo2_config`` and MOLMO2_LAYOUT), or None to tell them
    apart by config.json. The Molmo 1 reader refuses a Molmo2 folder with a message that says so.

    path_or_hub_id: a local folder in allenai's layout, or a Hub id such as "allenai/Molmo-7B-D-0924" (downloaded by
    ``checkpoint.hub_folder`` when online; offline, its clear error). Read from the folder: config.json,
    model.safetensors.index.json and its shards (or one model.safetensors), preprocessor_config.json (crop geometry,
    normalisation) and the tokenizer files (tokenizer.json through transformers' PreTrainedTokenizerFast, its special
    tokens from tokenizer_config.json; without tokenizer.json, AutoTokenizer with trust_remote_code=False; the five
    image tokens are read from them, as the released files hold them). Not read: the remote code (*.py),
    generation_config.json, the processor's text defaults (molmo_lite writes prompts with prompts.py:
    " User: ... Assistant:").

    dtype: every weight is converted to it as it is read (float32, or bfloat16 for half the memory). quantize="nf4":
    the LLM's attention and MLP projections quantized by chapter 11's ``quantize_llm`` while loading (bitsandbytes;
    compute dtype = ``dtype``); ViT, connector, embeddings, head and norms stay in ``dtype``. device: where the
    tensors go ("cuda" for a GPU). tokenizer: a MolmoTokenizer to use instead of the folder's files.
    """
    from .checkpoint import hub_folder

    _check_dtype(dtype, quantize)
    folder = hub_folder(path_or_hub_id, allow_patterns=HUB_PATTERNS)
    if not folder.is_dir():
        raise ReleasedCheckpointError(f"{shown_path(folder)} is not a folder (a released checkpoint is a folder with "
                                      "config.json and safetensors shards)")
    config_path = folder / "config.json"
    hf = _read_json(config_path, "a released checkpoint has config.json")
    if family not in (None, "molmo1", "molmo2"):
        raise ValueError(f"family must be None, 'molmo1' or 'molmo2', got {family!r}")
    family = family or ("molmo2" if is_molmo2_config(hf) else "molmo1")
    pp_path = folder / "preprocessor_config.json"
    pp = _read_json(pp_path, "") if pp_path.exists() else None
    if family == "molmo1":
        check_released_config(hf, shown_path(config_path))
        files = weight_map(folder)
        check_released_keys(files, shown_path(folder))
        config, layout = released_config(hf, pp, tokenizer=str(folder), where=shown_path(config_path)), MOLMO1_LAYOUT
    else:
        proc_path = folder / "processor_config.json"
        proc = _read_json(proc_path, "") if proc_path.exists() else None
        config = molmo2_config(hf, pp, tokenizer=str(folder), where=shown_path(config_path), processor=proc)
        layout = MOLMO2_LAYOUT
        files = weight_map(folder)
    if tokenizer is None:
        tokenizer = _tokenizer_for(folder, config)
    try:
        model = _meta_model(config, tokenizer)
    except ValueError as err:
        raise ReleasedCheckpointError(f"the tokenizer of {shown_path(folder)} does not fit its config.json: "
                                      f"{err}") from None
    plan = {e.released: e for e in released_plan(config, layout)}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in plan if k not in files]
    unexpected = sorted(k for k in files if k not in plan)
    if missing or unexpected:
        raise ReleasedCheckpointError(
            f"the weights of {shown_path(folder)} do not fit its config.json: missing {len(missing)} tensors "
            f"{missing[:12]}, unexpected {len(unexpected)} {unexpected[:12]}")

    device = str(device)
    by_shard: dict[Path, list[str]] = {}
    for key in plan:
        by_shard.setdefault(files[key], []).append(key)
    for shard in sorted(by_shard):  # every header first (names and shapes, no data touched): errors before work
        with _open(shard, device) as f:
            present = set(f.keys())
            absent = [k for k in by_shard[shard] if k not in present]
            if absent:
                raise ReleasedCheckpointError(f"shard {shown_path(shard)} lacks tensors its index puts there: "
                                              f"{absent[:12]}")
            for key in by_shard[shard]:
                want = _stacked_shape([expected[n] for n in plan[key].ours])
                found = tuple(f.get_slice(key).get_shape())
                if found != want:
                    raise ReleasedCheckpointError(
                        f"tensor {key} in {shown_path(shard)} has shape {list(found)}; config.json implies "
                        f"{list(want)}")
    for shard in sorted(by_shard):
        state = {}
        for key in by_shard[shard]:
            entry = plan[key]
            # One memory map per tensor: the pages it touched leave with it, so the peak is the model plus one
            # tensor in flight (a map held for the whole shard would keep all the shard's pages resident). A fused
            # tensor is read part by part (its q / k / v or up / gate rows), each copied out in `dtype`.
            with _open(shard, device) as f:
                try:
                    if entry.kind == "plain":
                        parts = [f.get_tensor(key).to(dtype=dtype, copy=True)]
                    else:
                        rows = f.get_slice(key)
                        parts = [rows[a:b].to(dtype=dtype, copy=True)
                                 for a, b in _rows(entry, rows.get_shape()[0], config.llm)]
                except SafetensorError as err:
                    raise ReleasedCheckpointError(f"tensor {key} in {shown_path(shard)} cannot be read: {err}") \
                        from None
            state.update(zip(entry.ours, parts))
            del parts
        model.load_state_dict(state, strict=False, assign=True)
        del state
        if quantize:  # the LLM projections this shard completed, as they arrive (chapter 11's quantize_llm)
            from .quantize import quantize_llm

            quantize_llm(model, quantize, compute_dtype=dtype)
    left = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if left:
        raise ReleasedCheckpointError(f"no tensor of {shown_path(folder)} filled {left[:12]}")
    return model.eval()


# MolmoLite.from_released is load_released. model.py cannot import this module (this one imports model.py to build
# the model: a circle), so it is handed over here, when molmo_lite.released is imported.
MolmoLite._released_loader = staticmethod(load_released)


# --------------------------------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------------------------------


def _geometry_extension(config: MolmoConfig) -> dict | None:
    """What config.json must carry beyond the released fields for this config's vision / connector (None: the
    released geometry)."""
    vision = replace(config.vision, output_dim=None)
    c = config.connector
    connector = {"pool_dim": c.pool_dim, "heads": c.heads, "head_dim": c.head_dim, "hidden_dim": c.hidden_dim,
                 "feature_norm": c.feature_norm}
    released = {"pool_dim": vision.width, "heads": MOLMO1_FIXED.pooling_heads,
                "head_dim": MOLMO1_FIXED.pooling_head_dim, "hidden_dim": config.llm.intermediate, "feature_norm": 0}
    if vision == MOLMO1_FIXED.vision and connector == released:
        return None
    return {"vision": asdict(vision), "connector": connector}


def released_config_json(model, variant: str = "7b-d", dtype: torch.dtype = torch.float32) -> dict:
    """The config.json a released checkpoint of ``model`` carries (allenai's field names)."""
    llm = model.config.llm
    if llm.head_dim not in (None, llm.hidden // llm.heads):
        raise ValueError(f"head_dim {llm.head_dim} != hidden // heads: the released config.json cannot say it")
    hf = {
        "architectures": ["MolmoForCausalLM"],
        "auto_map": AUTO_MAP,
        "model_type": "molmo",
        "hidden_size": llm.hidden,
        "num_hidden_layers": llm.layers,
        "num_attention_heads": llm.heads,
        # Molmo-7B-O writes null for "as many as the query heads" (plain multi-head attention)
        "num_key_value_heads": None if variant == "7b-o" and llm.kv_heads == llm.heads else llm.kv_heads,
        "intermediate_size": 2 * llm.intermediate,  # the fused up + gate width
        "vocab_size": model.tokenizer.base_vocab_size,
        "embedding_size": llm.vocab_size,
        "max_position_embeddings": 4096,
        "rope_theta": llm.rope_theta,
        "qkv_bias": llm.qkv_bias,
        "layer_norm_eps": llm.rms_eps,
        "layer_norm_type": "rms",
        "norm_after": llm.norm_after,
        "attention_layer_norm": llm.qk_norm,
        "clip_qkv": None,
        "use_position_ids": True,
        "weight_tying": llm.tie_embeddings,
        "tie_word_embeddings": llm.tie_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    if llm.additional_vocab != MOLMO1_FIXED.additional_vocab:  # course extension: the remote code hard-codes 128
        hf["additional_vocab_size"] = llm.additional_vocab
    extension = _geometry_extension(model.config)
    if extension is not None:
        hf[GEOMETRY_KEY] = extension
    return hf


def released_preprocessor_json(config: PreprocessorConfig) -> dict:
    """The preprocessor_config.json of a released checkpoint for this crop geometry."""
    if config.resize != "pad" or not config.antialias:
        raise ValueError(f"the released preprocessing pads and antialiases; this config has resize={config.resize!r}, "
                         f"antialias={config.antialias}")
    grid = config.crop_size // config.patch_size
    return {
        "auto_map": PROCESSOR_AUTO_MAP,
        "image_processor_type": "MolmoImageProcessor",
        "processor_class": "MolmoProcessor",
        "max_crops": config.max_crops,
        "overlap_margins": list(config.overlap_margins),
        "base_image_input_size": [config.crop_size, config.crop_size],
        "image_patch_size": config.patch_size,
        "image_token_length_w": grid // config.pooling[1],
        "image_token_length_h": grid // config.pooling[0],
        "image_padding_mask": True,
        "do_normalize": True,
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
    }


def write_released_tokenizer(tokenizer, directory: Path) -> Path:
    """The tokenizer as a released folder has it: the base vocabulary, filler tokens up to the embedding rows when
    the LLM has more rows than tokens ("|<EXTRA_TOKENS_k>|", as allenai's build_tokenizer), then the five image
    tokens as special tokens, written by transformers (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    base = tokenizer.base.tok
    backend = base.backend_tokenizer if tokenizer.base.is_hf else base
    tok = Tokenizer.from_str(backend.to_str())
    names = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    wanted = tokenizer.image_token_ids
    if not all(names.get(i) == t for t, i in wanted.items()):
        first, size = min(wanted.values()), tok.get_vocab_size(with_added_tokens=True)
        if any(t in names.values() for t in wanted) or first < size or sorted(wanted.values()) != list(
                range(first, first + len(IMAGE_TOKENS))):
            raise ValueError(f"cannot write {tokenizer}: its image tokens {wanted} do not follow its vocabulary")
        filler = [AddedToken(f"|<EXTRA_TOKENS_{k}>|", special=True, normalized=False) for k in range(first - size)]
        tok.add_special_tokens(filler + [AddedToken(t, special=True, normalized=False) for t in IMAGE_TOKENS])
        got = {t: tok.token_to_id(t) for t in IMAGE_TOKENS}
        if got != wanted:
            raise ValueError(f"the written tokenizer gives the image tokens {got}, not {wanted}")
    eos, pad = names.get(tokenizer.eos_id), names.get(tokenizer.pad_id)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad,
                                   bos_token=names.get(tokenizer.bos_id) if tokenizer.bos_id != tokenizer.eos_id
                                   else None)
    fast.save_pretrained(directory)
    return directory


def write_released(model, directory: str | Path, variant: str = "7b-d", shard_size: int = 5_000_000_000,
                   dtype: torch.dtype | None = None,
                   fill: Callable[[str, torch.Size, torch.dtype], torch.Tensor] | None = None) -> Path:
    """Write a MolmoLite in the released Molmo 1 layout: config.json (allenai's fields), the weights under their
    released names (att_proj and ff_proj fused) as safetensors shards of at most ``shard_size`` bytes plus
    model.safetensors.index.json (one model.safetensors when everything fits in one shard), preprocessor_config.json
    and the tokenizer files.

    variant: "7b-d" (pre-norm, like Qwen2-7B) or "7b-o" (norm_after and q/k norm, like OLMo-7B; plain multi-head
    attention is written as num_key_value_heads null). A vision / connector geometry other than the released one
    (a tiny model) goes into config.json's GEOMETRY_KEY, which the remote code ignores. dtype: on disk (default: the
    model's). fill(name, shape, dtype): makes the tensor of a parameter that is on the meta device (synthetic
    checkpoints, benchmarks/load.py), so that a checkpoint bigger than memory is written one shard at a time.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    llm = model.config.llm
    v = model.config.vision
    molmo2 = [name for name, on in (("no CLS token", not v.cls_token), ("no pre-LN", not v.pre_ln),
                                    ("a patch-embedding bias", v.patch_bias), ("per-head q/k norm",
                                    llm.qk_norm and llm.qk_norm_scope == "head"),
                                    ("bidirectional image attention", model.config.image_attention != "causal"),
                                    ("no pad embeddings", not model.config.connector.pad_embed)) if on]
    if molmo2:
        raise ValueError(f"the released Molmo 1 layout cannot hold a model with {', '.join(molmo2)} (Molmo2's "
                         "switches); Molmo 1's remote code would read it wrongly")
    wants_olmo = variant == "7b-o"
    if llm.norm_after != wants_olmo or llm.qk_norm != wants_olmo:
        raise ValueError(f"variant {variant!r} means norm_after={wants_olmo} and q/k norm={wants_olmo} (as "
                         f"Molmo-7B-{variant[-1].upper()}), but the model has norm_after={llm.norm_after}, "
                         f"qk_norm={llm.qk_norm}")
    state = model.state_dict()
    plan = released_plan(model.config)
    covered = {n for e in plan for n in e.ours}
    extra = sorted(k for k in state if k not in covered and not k.startswith(("vision.post_ln.", "vision.proj")))
    if extra:
        raise ValueError(f"the released layout has no place for {extra[:6]} (a quantized or LoRA model? write the "
                         "full-precision, merged model)")
    first = next(iter(state.values()))
    dtype = dtype or first.dtype
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype on disk must be float32, bfloat16 or float16, got {dtype}")

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shapes = {e.released: _stacked_shape([tuple(state[n].shape) for n in e.ours]) for e in plan}
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = {k: itemsize * torch.Size(s).numel() for k, s in shapes.items()}
    groups: list[list[Entry]] = [[]]
    used = 0
    for entry in plan:
        if groups[-1] and used + nbytes[entry.released] > shard_size:
            groups.append([])
            used = 0
        groups[-1].append(entry)
        used += nbytes[entry.released]
    names = [SINGLE_NAME] if len(groups) == 1 else [f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
                                                   for k in range(len(groups))]
    for old in [*directory.glob("model*.safetensors"), directory / INDEX_NAME]:
        old.unlink(missing_ok=True)  # a rewrite with another number of shards leaves no stale file behind

    def tensor(name: str) -> torch.Tensor:
        value = state[name]
        if value.is_meta:
            if fill is None:
                raise ValueError(f"{name} is on the meta device: pass fill= to make its values")
            return fill(name, value.shape, dtype)
        return value.detach().to("cpu", dtype)

    weight_map_out = {}
    for name, group in zip(names, groups):
        tensors = {e.released: _fuse(e, [tensor(n) for n in e.ours]).contiguous() for e in group}
        save_file(tensors, directory / name, metadata={"format": "pt"})
        weight_map_out.update(dict.fromkeys(tensors, name))
        del tensors
    if len(names) > 1:
        index = {"metadata": {"total_size": sum(nbytes.values())}, "weight_map": weight_map_out}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps(released_config_json(model, variant, dtype), indent=2) + "\n")
    (directory / "preprocessor_config.json").write_text(
        json.dumps(released_preprocessor_json(model.config.preprocessor), indent=2) + "\n")
    write_released_tokenizer(model.tokenizer, directory)
    return directory

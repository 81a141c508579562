"""Released Molmo 1 checkpoints (chapter 13): ``molmo_lite.released`` reads allenai's remote-code layout and writes it.

Oracles: the MolmoLite a tiny checkpoint was written from (same logits to 1e-5); the key names, shapes and config
fields of the released checkpoints, typed here from docs/released_checkpoints.md (which cites the index and remote code
they come from); and transformers' own loader of Molmo2, which splits the same fused att_proj / ff_proj tensors at load.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import randomize
from safetensors.torch import load_file, save_file

from molmo_lite.config import (
    IMAGE_TOKENS,
    MOLMO_PRESETS,
    ConnectorConfig,
    LLMConfig,
    MolmoConfig,
    PreprocessorConfig,
    VisionConfig,
)
from molmo_lite.model import MolmoLite
from molmo_lite.prompts import generation_prompt_ids
from molmo_lite.released import (
    load_released,
    released_config,
    released_shapes,
    split_att_proj,
    split_ff_proj,
    write_released,
)
from molmo_lite.tokenizer import TINY_BPE_PATH, MolmoTokenizer

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "data_samples" / "images" / "grace_hopper.jpg"
PROMPT = " User: Point to the eyes. Assistant:"

# Tiny geometries shaped like the releases: a ViT of 10 blocks (of 11) so that feature layer -9 exists, read at
# [-2, -9] with quick_gelu; 2x2 attention pooling; a 2-layer LLM.
PRE = PreprocessorConfig(crop_size=56, patch_size=14, max_crops=4, overlap_margins=(1, 1))
VISION = VisionConfig(image_size=56, patch_size=14, width=32, layers=11, heads=2, mlp_width=64, act="quick_gelu",
                      num_layers_used=10, feature_layers=(-2, -9), output_dim=None)
# 7B-D-like: Qwen2 (pre-norm, GQA 4 heads / 2 kv heads, q/k/v biases, untied head)
D_LLM = LLMConfig(vocab_size=512, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96, rope_theta=1e6,
                  qkv_bias=True)
# 7B-O-like: OLMo (norm after, full-width q/k norm, plain multi-head attention, no bias); 520 embedding rows for a
# tokenizer of 517 ids whose image tokens sit inside the base table, as Molmo-7B-O's (100278.. < 100352)
O_LLM = LLMConfig(vocab_size=520, hidden=64, layers=2, heads=4, kv_heads=4, intermediate=96, rope_theta=5e5,
                  qkv_bias=False, qk_norm=True, norm_after=True)


def connector(llm: LLMConfig) -> ConnectorConfig:
    return ConnectorConfig(input_dim=64, pool_dim=32, heads=2, head_dim=16, hidden_dim=llm.intermediate, llm_dim=64)


def o_tokenizer() -> MolmoTokenizer:
    from tokenizers import AddedToken, Tokenizer

    base = Tokenizer.from_file(str(TINY_BPE_PATH))
    base.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in IMAGE_TOKENS])
    return MolmoTokenizer(base)


def source_model(kind: str) -> MolmoLite:
    if kind == "7b-d":
        config = MolmoConfig(preprocessor=PRE, vision=VISION, connector=connector(D_LLM), llm=D_LLM)
        return randomize(MolmoLite(config), seed=1)
    if kind == "7b-o":
        config = MolmoConfig(preprocessor=PRE, vision=VISION, connector=connector(O_LLM), llm=O_LLM)
        return randomize(MolmoLite(config, o_tokenizer()), seed=2)
    return randomize(MolmoLite("tiny"), seed=3)  # the course's tiny preset: 4-block gelu ViT, tied embeddings


VARIANT = {"7b-d": "7b-d", "7b-o": "7b-o", "tiny": "7b-d"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """kind -> (source model, its released-layout folder), several shards each."""
    out = {}
    for kind in ("7b-d", "7b-o", "tiny"):
        model = source_model(kind)
        folder = write_released(model, tmp_path_factory.mktemp(kind), VARIANT[kind], shard_size=60_000)
        out[kind] = model, folder
    return out


def batch(model: MolmoLite, tokenizer=None):
    inputs = model.processor(IMAGE)
    ids = torch.tensor([generation_prompt_ids(tokenizer or model.tokenizer, PROMPT, inputs.tokens)])
    return {"input_ids": ids, "crops": inputs.crops, "pooled_patches_idx": inputs.pooled_patches_idx,
            "patch_pad_fraction": inputs.patch_pad_fraction}


def logits(model: MolmoLite, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.float()


def copy_folder(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def rewrite_as_one_file(folder: Path, change) -> None:
    """Read every shard, let ``change(state)`` edit the dict, write it back as one model.safetensors."""
    index = folder / "model.safetensors.index.json"
    state = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        state.update(load_file(folder / shard))
        (folder / shard).unlink()
    index.unlink()
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


# --------------------------------------------------------------------------------------------------------------------
# The layout written is the released one.
# --------------------------------------------------------------------------------------------------------------------

# The tensor names of Molmo-7B-D-0924 (its model.safetensors.index.json, block numbers as {i}); 7B-O drops
# att_proj.bias and adds q_norm / k_norm.
RELEASED_D_KEYS = {
    "model.transformer.wte.embedding", "model.transformer.wte.new_embedding", "model.transformer.ln_f.weight",
    "model.transformer.ff_out.weight",
    *(f"model.transformer.blocks.{{i}}.{n}" for n in (
        "attn_norm.weight", "att_proj.weight", "att_proj.bias", "attn_out.weight", "ff_norm.weight",
        "ff_proj.weight", "ff_out.weight")),
    *(f"model.vision_backbone.image_vit.{n}" for n in (
        "patch_embedding.weight", "class_embedding", "positional_embedding", "pre_ln.weight", "pre_ln.bias")),
    *(f"model.vision_backbone.image_vit.transformer.resblocks.{{i}}.{n}.{p}" for n in (
        "attention.wq", "attention.wk", "attention.wv", "attention.wo", "attention_norm", "ffn_norm",
        "feed_forward.w1", "feed_forward.w2") for p in ("weight", "bias")),
    *(f"model.vision_backbone.image_pooling_2d.w{a}.{p}" for a in "qkvo" for p in ("weight", "bias")),
    *(f"model.vision_backbone.image_projector.w{n}.weight" for n in "123"),
    "model.vision_backbone.pad_embed",
}
RELEASED_O_KEYS = (RELEASED_D_KEYS - {"model.transformer.blocks.{i}.att_proj.bias"}) | {
    "model.transformer.blocks.{i}.q_norm.weight", "model.transformer.blocks.{i}.k_norm.weight"}


def _read_layout(folder: Path) -> tuple[dict, dict[str, list[int]]]:
    import re

    from safetensors import safe_open

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shapes = {}
    for shard in set(index["weight_map"].values()):
        with safe_open(str(folder / shard), "pt") as f:
            shapes.update({k: list(f.get_slice(k).get_shape()) for k in f.keys()})
    assert set(shapes) == set(index["weight_map"])
    patterns = {re.sub(r"\.\d+\.", ".{i}.", k) for k in shapes}
    return {"index": index, "patterns": patterns, "config": json.loads((folder / "config.json").read_text())}, shapes


def test_the_7b_d_like_checkpoint_has_the_released_names_shapes_and_config_fields(written):
    layout, shapes = _read_layout(written["7b-d"][1])
    assert layout["patterns"] == RELEASED_D_KEYS
    assert len(set(layout["index"]["weight_map"].values())) > 3  # sharded, with an index
    assert layout["index"]["metadata"]["total_size"] == 4 * sum(torch.Size(s).numel() for s in shapes.values())
    # fused q/k/v: 4 heads x 16 + 2 x (2 kv heads x 16) rows; fused up+gate: 2 x 96; the 128 new rows
    assert shapes["model.transformer.blocks.1.att_proj.weight"] == [64 + 32 + 32, 64]
    assert shapes["model.transformer.blocks.1.att_proj.bias"] == [128]
    assert shapes["model.transformer.blocks.0.ff_proj.weight"] == [192, 64]
    assert shapes["model.transformer.blocks.0.ff_out.weight"] == [64, 96]
    assert shapes["model.transformer.wte.embedding"] == [512, 64]
    assert shapes["model.transformer.wte.new_embedding"] == [128, 64]
    assert shapes["model.transformer.ff_out.weight"] == [512, 64]
    assert shapes["model.vision_backbone.image_vit.patch_embedding.weight"] == [32, 14 * 14 * 3]
    assert shapes["model.vision_backbone.image_vit.positional_embedding"] == [1 + 16, 32]
    assert shapes["model.vision_backbone.image_pooling_2d.wq.weight"] == [32, 64]
    assert shapes["model.vision_backbone.image_projector.w1.weight"] == [96, 32]
    assert shapes["model.vision_backbone.image_projector.w2.weight"] == [64, 96]
    assert shapes["model.vision_backbone.pad_embed"] == [2, 64]
    assert max(int(k.split(".")[5]) for k in shapes if ".resblocks." in k) == 9  # 10 blocks kept of 11
    cfg = layout["config"]
    assert cfg["model_type"] == "molmo" and cfg["architectures"] == ["MolmoForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["intermediate_size"], cfg["vocab_size"], cfg["embedding_size"]) == (64, 2, 4, 2, 192, 512, 512)
    assert (cfg["qkv_bias"], cfg["norm_after"], cfg["attention_layer_norm"], cfg["weight_tying"]) == (
        True, False, False, False)
    pre = json.loads((written["7b-d"][1] / "preprocessor_config.json").read_text())
    assert (pre["base_image_input_size"], pre["image_patch_size"], pre["max_crops"], pre["overlap_margins"],
            pre["image_token_length_w"], pre["image_token_length_h"]) == ([56, 56], 14, 4, [1, 1], 2, 2)


def test_the_7b_o_like_checkpoint_has_q_k_norms_no_qkv_bias_and_null_kv_heads(written):
    layout, shapes = _read_layout(written["7b-o"][1])
    assert layout["patterns"] == RELEASED_O_KEYS
    assert shapes["model.transformer.blocks.0.att_proj.weight"] == [3 * 64, 64]
    assert shapes["model.transformer.blocks.0.q_norm.weight"] == [64]  # full width, not per head
    assert shapes["model.transformer.blocks.0.k_norm.weight"] == [64]
    assert shapes["model.transformer.wte.embedding"] == [520, 64]
    cfg = layout["config"]
    assert cfg["num_key_value_heads"] is None and cfg["norm_after"] and cfg["attention_layer_norm"]
    assert not cfg["qkv_bias"] and (cfg["vocab_size"], cfg["embedding_size"]) == (512, 520)


def test_the_released_configs_give_the_course_presets_and_the_released_shapes():
    """config.json of allenai/Molmo-7B-D-0924 and -7B-O-0924 (their fields, typed from the hub files) read into the
    same geometry as the presets of chapter 05; the shapes those imply are the ones of the released index."""
    d = {"architectures": ["MolmoForCausalLM"], "model_type": "molmo", "hidden_size": 3584,
         "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 37888,
         "vocab_size": 152064, "embedding_size": 152064, "rope_theta": 1000000.0, "qkv_bias": True,
         "layer_norm_eps": 1e-06, "layer_norm_type": "rms", "norm_after": False, "attention_layer_norm": False,
         "clip_qkv": None, "max_position_embeddings": 4096, "use_position_ids": True, "weight_tying": False,
         "tie_word_embeddings": False}
    o = {**d, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
         "intermediate_size": 22016, "vocab_size": 100278, "embedding_size": 100352, "rope_theta": 500000.0,
         "qkv_bias": False, "norm_after": True, "attention_layer_norm": True}
    pre = {"max_crops": 12, "overlap_margins": [4, 4], "base_image_input_size": [336, 336], "image_patch_size": 14,
           "image_token_length_w": 12, "image_token_length_h": 12, "image_padding_mask": True, "do_normalize": True,
           "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    for hf, preset in ((d, "molmo-7b-d"), (o, "molmo-7b-o")):
        assert released_config(hf, pre) == replace(MOLMO_PRESETS[preset], tokenizer="")
    shapes = released_shapes(released_config(d, pre))
    assert shapes["model.transformer.blocks.0.att_proj.weight"] == (4608, 3584)
    assert shapes["model.transformer.blocks.27.ff_proj.weight"] == (37888, 3584)
    assert shapes["model.transformer.blocks.27.ff_out.weight"] == (3584, 18944)
    assert shapes["model.transformer.wte.embedding"] == shapes["model.transformer.ff_out.weight"] == (152064, 3584)
    assert shapes["model.transformer.wte.new_embedding"] == (128, 3584)
    assert shapes["model.vision_backbone.image_vit.patch_embedding.weight"] == (1024, 588)
    assert shapes["model.vision_backbone.image_vit.positional_embedding"] == (577, 1024)
    assert shapes["model.vision_backbone.image_pooling_2d.wq.weight"] == (1024, 2048)
    assert shapes["model.vision_backbone.image_projector.w1.weight"] == (18944, 1024)
    assert shapes["model.vision_backbone.image_projector.w2.weight"] == (3584, 18944)
    assert shapes["model.vision_backbone.pad_embed"] == (2, 2048)
    assert sum(".resblocks." in k and k.endswith("wq.weight") for k in shapes) == 23
    shapes = released_shapes(released_config(o, pre))
    assert shapes["model.transformer.blocks.31.q_norm.weight"] == (4096,)
    assert shapes["model.transformer.wte.embedding"] == (100352, 4096)
    assert shapes["model.vision_backbone.image_projector.w3.weight"] == (11008, 1024)


# --------------------------------------------------------------------------------------------------------------------
# Loading gives back the model that was written.
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["7b-d", "7b-o", "tiny"])
def test_loaded_checkpoint_gives_the_logits_of_the_model_it_was_written_from(written, kind):
    source, folder = written[kind]
    loaded = MolmoLite.from_released(folder)
    assert loaded.tokenizer.image_token_ids == source.tokenizer.image_token_ids
    assert loaded.tokenizer.encode(PROMPT) == source.tokenizer.encode(PROMPT)
    inputs = batch(source)
    expected = logits(source, inputs)
    assert torch.allclose(logits(loaded, inputs), expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.1  # non-trivial logits


def test_bf16_load_holds_bf16_weights_and_close_logits(written):
    source, folder = written["7b-d"]
    loaded = load_released(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    inputs = batch(source)
    expected, got = logits(source, inputs), logits(loaded, inputs)
    assert (got - expected).abs().max() < 0.1 * expected.abs().max()
    assert isinstance(loaded.generate(str(IMAGE), PROMPT, max_new_tokens=2), str)  # the bf16 model also decodes


def test_nf4_load_equals_chapter_11_quantization_of_the_source(written):
    from molmo_lite.quantize import is_quantized, quantize_llm

    source, folder = written["7b-d"]
    loaded = load_released(folder, quantize="nf4")
    assert is_quantized(loaded.llm) and not is_quantized(loaded.vision) and loaded.llm.lm_head.weight.dtype == \
        torch.float32
    reference = quantize_llm(copy.deepcopy(source), "nf4")
    inputs = batch(source)
    assert torch.allclose(logits(loaded, inputs), logits(reference, inputs), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------------------------
# The fused-weight convention against a reader we did not write: transformers' Molmo2 loader.
# --------------------------------------------------------------------------------------------------------------------

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16


@pytest.fixture(scope="module")
def molmo2_hub_folder(tmp_path_factory):
    """A tiny Molmo2 checkpoint in the hub's layout (fused self_attn.att_proj and mlp.ff_proj, wte.embedding +
    wte.new_embedding), whose fused tensors are fresh random values; -> (folder, its tensors)."""
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration

    config = Molmo2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           num_key_value_heads=2, head_dim=16, image_size=[28, 28], patch_size=14),
        adapter_config=dict(vision_feature_layer=[-1, -2], hidden_size=32, num_attention_heads=2,
                            num_key_value_heads=2, head_dim=16, intermediate_size=48, text_hidden_size=64),
        text_config=dict(hidden_size=64, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                         vocab_size=100, additional_vocab_size=8, attention_bias=True, qk_norm_type="olmo",
                         num_hidden_layers=2, intermediate_size=96),
    )
    folder = tmp_path_factory.mktemp("molmo2")
    Molmo2ForConditionalGeneration(config).save_pretrained(folder)  # transformers writes the hub's key names
    state = load_file(folder / "model.safetensors")
    gen = torch.Generator().manual_seed(0)
    fused = [k for k in state if k.endswith(("att_proj.weight", "att_proj.bias", "ff_proj.weight"))]
    assert len(fused) == 6, sorted(state)  # 2 layers x (att_proj weight + bias, ff_proj)
    for key in fused:
        state[key] = torch.randn(state[key].shape, generator=gen)
    # the hub splits the table as Molmo 1 does: the vocabulary's rows, then the additional ones
    state["model.transformer.wte.embedding"] = torch.randn(100, 64, generator=gen)
    state["model.transformer.wte.new_embedding"] = torch.randn(8, 64, generator=gen)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder, state


def test_split_convention_equals_what_transformers_molmo2_loader_does(molmo2_hub_folder):
    from transformers import Molmo2ForConditionalGeneration

    folder, hub = molmo2_hub_folder
    model, info = Molmo2ForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    text = model.model.language_model
    for i, layer in enumerate(text.layers):
        src = f"model.transformer.blocks.{i}."
        q, k, v = split_att_proj(hub[src + "self_attn.att_proj.weight"], HEADS, KV_HEADS, HEAD_DIM)
        qb, kb, vb = split_att_proj(hub[src + "self_attn.att_proj.bias"], HEADS, KV_HEADS, HEAD_DIM)
        up, gate = split_ff_proj(hub[src + "mlp.ff_proj.weight"])
        attn, mlp = layer.self_attn, layer.mlp
        for ours, theirs in ((q, attn.q_proj.weight), (k, attn.k_proj.weight), (v, attn.v_proj.weight),
                             (qb, attn.q_proj.bias), (kb, attn.k_proj.bias), (vb, attn.v_proj.bias),
                             (up, mlp.up_proj.weight), (gate, mlp.gate_proj.weight)):
            assert torch.equal(ours, theirs.detach())
    table = torch.cat([hub["model.transformer.wte.embedding"], hub["model.transformer.wte.new_embedding"]])
    assert torch.equal(text.embed_tokens.weight.detach(), table)


# --------------------------------------------------------------------------------------------------------------------
# Bad inputs: clear errors that name the file or tensor.
# --------------------------------------------------------------------------------------------------------------------


def test_truncated_shard_is_named(written, tmp_path):
    folder = copy_folder(written["7b-d"][1], tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[2]
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ValueError, match=rf"{shard.name}.*truncated"):
        load_released(folder)


def test_missing_tensors_are_listed(written, tmp_path):
    folder = copy_folder(written["7b-d"][1], tmp_path)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.transformer.blocks.1.ff_proj.weight"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"missing 1 tensors \['model.transformer.blocks.1.ff_proj.weight'\]"):
        load_released(folder)
    # a tensor gone from the file itself (one-file checkpoint, no index)
    folder = copy_folder(written["7b-d"][1], tmp_path / "again")
    rewrite_as_one_file(folder, lambda state: state.pop("model.transformer.wte.new_embedding"))
    with pytest.raises(ValueError, match=r"missing 1 tensors \['model.transformer.wte.new_embedding'\]"):
        load_released(folder)


def test_absent_shard_and_pickled_weights_are_named(written, tmp_path):
    folder = copy_folder(written["7b-d"][1], tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ValueError, match=rf"lists shards that are not in the folder: \['{shard.name}'\]"):
        load_released(folder)
    for path in [*folder.glob("model*.safetensors"), folder / "model.safetensors.index.json"]:
        path.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(ValueError, match=r"only pickled weights \['pytorch_model.bin'\].*never unpickles"):
        load_released(folder)


def test_wrong_shape_names_the_tensor_the_expected_and_the_found_shape(written, tmp_path):
    folder = copy_folder(written["7b-d"][1], tmp_path)
    key = "model.vision_backbone.image_projector.w3.weight"
    rewrite_as_one_file(folder, lambda state: state.update({key: torch.zeros(95, 32)}))
    with pytest.raises(ValueError, match=rf"{key} in .*model.safetensors has shape \[95, 32\]; config.json implies "
                                         r"\[96, 32\]"):
        load_released(folder)


def test_a_molmo2_folder_given_to_the_molmo1_reader_is_named(molmo2_hub_folder, written, tmp_path):
    folder, _ = molmo2_hub_folder
    with pytest.raises(ValueError, match=r"Molmo2 checkpoint \(model_type 'molmo2'.*family='molmo2'"):
        load_released(folder, family="molmo1")
    # Molmo2's key names under a Molmo 1 config.json: also said
    folder = copy_folder(written["7b-d"][1], tmp_path)
    rewrite_as_one_file(folder, lambda state: state.update(
        {k.replace(".att_proj.", ".self_attn.att_proj."): state.pop(k) for k in list(state) if ".att_proj." in k}))
    with pytest.raises(ValueError, match=r"Molmo2 checkpoint \(Molmo2 key names.*self_attn.att_proj"):
        load_released(folder)


def test_molmoe_keys_and_configs_are_refused_with_what_is_unsupported(written, tmp_path):
    folder = copy_folder(written["7b-d"][1], tmp_path)

    def to_experts(state):  # megablocks' dMoE names, as MolmoE-1B holds them, instead of the dense MLP
        for i in range(2):
            block = f"model.transformer.blocks.{i}."
            state.pop(block + "ff_proj.weight"), state.pop(block + "ff_out.weight")
            state[block + "ffn.router.layer.weight"] = torch.zeros(4, 64)
            for w in ("w1", "v1", "w2"):
                state[block + f"ffn.experts.mlp.{w}"] = torch.zeros(4 * 24, 64)

    rewrite_as_one_file(folder, to_experts)
    with pytest.raises(ValueError, match=r"mixture-of-experts.*'model.transformer.blocks.\{i\}.ffn.experts.mlp.v1'"):
        load_released(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "molmoe", "moe_num_experts": 64}))
    with pytest.raises(ValueError, match=r"mixture-of-experts Molmo \(MolmoE-1B.*moe_num_experts"):
        load_released(folder)


def test_a_hub_id_offline_gives_the_course_message(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    with pytest.raises(RuntimeError, match=r"could not get 'allenai/Molmo-7B-D-0924'.*Offline\?.*hf download "
                                           r"allenai/Molmo-7B-D-0924"):
        MolmoLite.from_released("allenai/Molmo-7B-D-0924")


def test_write_refuses_a_variant_the_model_is_not(written, tmp_path):
    with pytest.raises(ValueError, match="variant '7b-o' means norm_after=True"):
        write_released(written["7b-d"][0], tmp_path, "7b-o")


# --------------------------------------------------------------------------------------------------------------------
# The command line.
# --------------------------------------------------------------------------------------------------------------------


def test_cli_generate_reads_a_released_folder_and_draws_the_points_of_an_answer(written, tmp_path, monkeypatch,
                                                                                 capsys):
    from PIL import Image

    from molmo_lite.__main__ import main

    source, folder = written["7b-d"]
    args = ["generate", "--model", str(folder), "--image", str(IMAGE), "--prompt", "Point to the eyes.",
            "--max-new-tokens", "4", "--points-out", str(tmp_path / "points.png")]
    assert main(args) == 0
    expected = source.generate(str(IMAGE), PROMPT, max_new_tokens=4)
    assert capsys.readouterr().out.splitlines()[0] == expected
    # an answer with points (the random tiny model writes none): drawn on the image, and the file named
    answer = '<points x1="30.0" y1="40.0" x2="60.5" y2="41.0" alt="eyes">eyes</points>'
    monkeypatch.setattr(MolmoLite, "generate", lambda self, *a, **k: answer)
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == answer and lines[1].startswith("wrote ") and "points.png (2 points)" in lines[1]
    with Image.open(tmp_path / "points.png") as drawn:
        assert min(drawn.size) > 100


def test_cli_generate_still_reads_a_save_pretrained_folder_given_as_before(written, tmp_path, capsys):
    from molmo_lite.__main__ import main

    source = written["tiny"][0]
    folder = source.save_pretrained(tmp_path / "ckpt")
    assert main(["generate", str(folder), "--image", str(IMAGE), "--prompt", "Point to the eyes.",
                 "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == source.generate(str(IMAGE), PROMPT, max_new_tokens=3)

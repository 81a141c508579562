"""Molmo2 as a configuration of the course's modules (chapter 13, last section).

Oracle: transformers' Molmo2ForConditionalGeneration (5.24) with random weights on tiny configs. Its checkpoint goes
to disk in the hub layout (transformers' save_pretrained writes the hub's key names), molmo_lite's loader reads it
(``load_released``, family "molmo2"), and the two models must give the same logits on an image + text, with the
image tokens attending to one another in both directions. The switches that make the difference (VisionConfig's
cls_token / pre_ln / patch_bias, LLMConfig.qk_norm_scope, MolmoConfig.image_attention) are each checked to matter.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import randomize

from molmo_lite.config import IM_COL, IM_END, IM_PATCH, IM_START, MolmoConfig
from molmo_lite.model import MolmoLite
from molmo_lite.released import ReleasedCheckpointError, load_released, molmo2_config, save_molmo2_hub_layout
from molmo_lite.tokenizer import MolmoTokenizer
from molmo_lite.vision import VisionTransformer

transformers = pytest.importorskip("transformers")
from transformers import Molmo2Config, Molmo2ForConditionalGeneration  # noqa: E402
from transformers.models.molmo2.image_processing_molmo2 import Molmo2ImageProcessor  # noqa: E402
from transformers.models.molmo2.processing_molmo2 import Molmo2Processor  # noqa: E402

VOCAB, EXTRA = 512, 8  # the tiny BPE's 512 ids; its image tokens 512.. sit in the additional rows, as Molmo2's
TOKENIZER = MolmoTokenizer.tiny(pad_to=VOCAB)
IDS = {t: TOKENIZER.token_to_id(t) for t in (IM_START, IM_END, IM_PATCH, IM_COL)}


def tiny_molmo2_config(qk_norm_type: str = "qwen3", norm_after: bool = False, feature_layers=(-1, -3),
                       kv_heads: int = 2) -> Molmo2Config:
    """A Molmo2Config of the Molmo2-8B kind (Qwen3 text model: per-head q/k norm, no q/k/v bias), shrunk; the
    image token ids are those of the course tokenizer (transformers' model reads only image_patch_id)."""
    return Molmo2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           num_key_value_heads=2, head_dim=16, image_size=[56, 56], patch_size=14),
        adapter_config=dict(vision_feature_layer=list(feature_layers), hidden_size=32, num_attention_heads=2,
                            num_key_value_heads=2, head_dim=16, intermediate_size=48, text_hidden_size=64),
        text_config=dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16,
                         vocab_size=VOCAB, additional_vocab_size=EXTRA, attention_bias=qk_norm_type == "olmo",
                         qk_norm_type=qk_norm_type, norm_after=norm_after, num_hidden_layers=2,
                         intermediate_size=96, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        image_start_token_id=IDS[IM_START], low_res_image_start_token_id=IDS[IM_START],
        image_end_token_id=IDS[IM_END], image_patch_id=IDS[IM_PATCH],
    )


def save_in_hub_layout(model: Molmo2ForConditionalGeneration, folder) -> None:
    """The weights and config.json in the hub layout (released.save_molmo2_hub_layout), the image processor's
    preprocessor_config.json and a processor_config.json, as transformers writes them."""
    save_molmo2_hub_layout(model, folder)
    processor().save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps(vars(LAYOUT)))


def processor() -> Molmo2ImageProcessor:
    return Molmo2ImageProcessor(size={"height": 56, "width": 56}, patch_size=14, max_crops=4, overlap_margins=[1, 1],
                                pooling_size=[2, 2])


# How Molmo2Processor writes the image's tokens (processor_config.json): the overview without <im_col>, as Molmo2-8B's;
# opened with <im_start> rather than <low_res_im_start>, which the course tokenizer does not have.
LAYOUT = SimpleNamespace(image_use_col_tokens=True, use_single_crop_col_tokens=False, use_single_crop_start_token=False)


def image_inputs(seed: int = 0):
    """A random 70 x 100 image through transformers' Molmo2ImageProcessor (56 px crops, at most 4) -> its tensors
    and the image's tokens as Molmo2Processor lays them out: the low-resolution overview, then the crops."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    out = processor()(images=[image], return_tensors="pt")
    text = Molmo2Processor.replace_image_token(LAYOUT, out, 0)  # transformers' own layout of the image's tokens
    tokens = [IDS[t] for t in re.findall(r"<[a-z_]+>", text)]
    assert "".join(re.findall(r"<[a-z_]+>", text)) == text
    return out, tokens


def prompt_ids(tokens: list[int]) -> torch.Tensor:
    before = TOKENIZER.encode("A photo:", add_bos=True)
    after = TOKENIZER.encode(" User: Point to the red dot. Assistant:")
    return torch.tensor([before + tokens + after])


def theirs_logits(model, ids, inputs) -> torch.Tensor:
    group = torch.isin(ids, torch.tensor(list(IDS.values()))).long()  # Molmo2Processor's mm_token_type_ids
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=inputs["pixel_values"], image_token_pooling=inputs[
            "image_token_pooling"], image_grids=inputs["image_grids"], image_num_crops=inputs["image_num_crops"],
            mm_token_type_ids=group).logits


def ours_logits(model: MolmoLite, ids, inputs) -> torch.Tensor:
    patches = inputs["pixel_values"].reshape(-1, *inputs["pixel_values"].shape[-2:])  # [crops, patches, 3*14*14]
    with torch.no_grad():
        return model(ids, crops=patches, pooled_patches_idx=inputs["image_token_pooling"].long()).logits


@pytest.fixture(scope="module", params=[("qwen3", False), ("olmo", True)], ids=["qwen3-per-head", "olmo-norm-after"])
def pair(request, tmp_path_factory):
    """(transformers' model, ours loaded from its hub-layout checkpoint, ids, image inputs)."""
    qk, after = request.param
    torch.manual_seed(0)
    theirs = randomize(Molmo2ForConditionalGeneration(tiny_molmo2_config(qk, after)), seed=1)
    theirs.config._attn_implementation = "eager"
    folder = tmp_path_factory.mktemp(f"molmo2-{qk}")
    save_in_hub_layout(theirs, folder)
    ours = load_released(folder, tokenizer=TOKENIZER)
    inputs, tokens = image_inputs()
    return theirs, ours, prompt_ids(tokens), inputs


def test_the_hub_checkpoint_reads_as_molmo2_switches(pair):
    _, ours, _, _ = pair
    cfg = ours.config
    assert (cfg.vision.cls_token, cfg.vision.pre_ln, cfg.vision.patch_bias, cfg.vision.act) == (
        False, False, True, "gelu_tanh")
    assert cfg.image_attention == "bidirectional" and not cfg.connector.pad_embed and cfg.llm.qk_norm
    assert cfg.llm.qk_norm_scope == ("full" if cfg.llm.norm_after else "head")
    assert not hasattr(ours.vision, "class_embedding") and isinstance(ours.vision.pre_ln, torch.nn.Identity)


def test_the_loaded_preprocessor_makes_the_crops_of_molmo2s_processor(pair):
    """preprocessor_config.json (as Molmo2ImageProcessor writes it) read by molmo2_preprocessor: the model's own
    processor gives the same pooling indices and, within half a grey level (0.5 / 255 / std 0.5), the same pixels."""
    _, ours, _, inputs = pair
    image = np.random.default_rng(0).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    mine = ours.processor(image)
    assert torch.equal(mine.pooled_patches_idx, inputs["image_token_pooling"].long())
    _, tokens = image_inputs()
    assert [TOKENIZER.token_to_id(t) for t in mine.tokens] == tokens  # the layout of processor_config.json
    theirs = inputs["pixel_values"].reshape(mine.patches.shape)
    assert (mine.patches - theirs).abs().max() <= 0.5 / 255 / 0.5 + 1e-6


def test_logits_equal_transformers_molmo2_on_image_and_text(pair):
    theirs, ours, ids, inputs = pair
    expected, got = theirs_logits(theirs, ids, inputs), ours_logits(ours, ids, inputs)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4
    assert expected.std() > 0.1  # not a trivially flat output


def test_bidirectional_image_attention_is_what_makes_them_equal(pair):
    """With Molmo 1's causal rule the image tokens cannot see the ones after them: the logits at the image and
    after it change, those of the text before it do not."""
    theirs, ours, ids, inputs = pair
    causal = MolmoLite(replace(ours.config, image_attention="causal"), TOKENIZER)
    causal.load_state_dict(ours.state_dict())
    expected, got = theirs_logits(theirs, ids, inputs), ours_logits(causal.eval(), ids, inputs)
    first_image = int(torch.isin(ids[0], torch.tensor(list(IDS.values()))).nonzero()[0])
    assert (got[:, :first_image] - expected[:, :first_image]).abs().max() < 1e-4
    assert (got[:, first_image:] - expected[:, first_image:]).abs().max() > 1e-2


def test_greedy_generation_follows_transformers_forward_and_the_cache_keeps_the_image_block(pair):
    """Our cached and uncached greedy decoding (the prefill with the image block, then causal text tokens) equal a
    greedy loop over transformers' full forward. (Not over transformers' generate: on these random tiny weights, its
    cached decoding leaves its own forward's argmax after two tokens, where the top logits are 0.005 apart.)"""
    theirs, ours, ids, inputs = pair
    group = torch.isin(ids, torch.tensor(list(IDS.values())))
    sequence = ids
    for _ in range(6):
        next_id = theirs_logits(theirs, sequence, inputs)[:, -1].argmax(-1, keepdim=True)
        sequence = torch.cat([sequence, next_id], dim=1)
    with torch.no_grad():
        patches = inputs["pixel_values"].reshape(-1, *inputs["pixel_values"].shape[-2:])
        embeds = ours.embed(ids, ours.image_features(patches, inputs["image_token_pooling"].long()))
        cached = ours.llm.generate(ids, max_new_tokens=6, inputs_embeds=embeds, bidirectional=group)
        uncached = ours.llm.generate(ids, max_new_tokens=6, inputs_embeds=embeds, bidirectional=group,
                                     use_cache=False)
    assert cached.tolist() == uncached.tolist() == sequence[:, ids.shape[1]:].tolist()


def test_vit_without_cls_and_pre_ln_equals_molmo2_vision_tower(pair):
    """Every block's output of our ViT (cls_token=False, pre_ln=False, patch_bias=True) equals the vision tower's."""
    theirs, ours, _, inputs = pair
    patches = inputs["pixel_values"].reshape(-1, *inputs["pixel_values"].shape[-2:])
    with torch.no_grad():
        hidden = theirs.model.vision_tower(patches, output_hidden_states=True).hidden_states[1:]
        mine = ours.vision(patches)
    assert len(mine) == len(hidden)
    for a, b in zip(mine, hidden):
        assert (a - b).abs().max() < 1e-5


def test_each_vision_switch_changes_the_features():
    base = molmo2_config(tiny_molmo2_config().to_dict(), processor().to_dict()).vision
    torch.manual_seed(0)
    x = torch.randn(2, base.n_patches, 3 * 14 * 14)
    reference = randomize(VisionTransformer(base), seed=3)
    for switch in ({"pre_ln": True}, {"patch_bias": False}, {"cls_token": True}):
        other = VisionTransformer(replace(base, **switch))
        state = {k: v for k, v in reference.state_dict().items() if k in other.state_dict()
                 and other.state_dict()[k].shape == v.shape}
        other.load_state_dict(state, strict=False)
        with torch.no_grad():
            assert (other.eval().features(x) - reference.features(x)).abs().max() > 1e-3, switch


def test_per_head_and_full_width_qk_norm_differ():
    cfg = molmo2_config(tiny_molmo2_config().to_dict(), processor().to_dict())
    per_head = randomize(MolmoLite(cfg, TOKENIZER), seed=5)
    full = MolmoLite(replace(cfg, llm=replace(cfg.llm, qk_norm_scope="full")), TOKENIZER)
    assert per_head.llm.blocks[0].attention.q_norm.weight.shape == (16,)  # head_dim
    assert full.llm.blocks[0].attention.q_norm.weight.shape == (64,)  # heads x head_dim
    state = {k: v for k, v in per_head.state_dict().items() if "_norm.weight" not in k or "attention." not in k}
    full.load_state_dict(state, strict=False)  # q/k norms at their fresh value 1 in both: only the scope differs
    for block in per_head.llm.blocks:
        block.attention.q_norm.weight.data.fill_(1.0), block.attention.k_norm.weight.data.fill_(1.0)
    ids = torch.tensor([TOKENIZER.encode("two words", add_bos=True)])
    with torch.no_grad():
        assert (per_head(ids).logits - full.eval()(ids).logits).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------------------------------
# config.json: the hub's remote-code names and what the modules cannot express.
# --------------------------------------------------------------------------------------------------------------------


def test_hub_config_names_and_its_trimmed_vit():
    """The hub's config.json (allenai/Molmo2-8B style) says vit_config with 27 layers and vit_layers [-3, -9]; the
    weights stop at layer 24, so the ViT keeps 25 blocks and reads blocks 24 and 18 (as transformers' Molmo2Config)."""
    hf = tiny_molmo2_config().to_dict()
    vit = hf.pop("vision_config")
    vit = {"hidden_size": vit["hidden_size"], "intermediate_size": vit["intermediate_size"], "num_hidden_layers": 27,
           "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "gelu_pytorch_tanh",
           "image_default_input_size": [56, 56], "image_patch_size": 14, "image_num_pos": 16, "layer_norm_eps": 1e-6}
    hf["vit_config"] = vit
    hf["adapter_config"]["vit_layers"] = [-3, -9]
    del hf["adapter_config"]["vision_feature_layer"]
    ours = molmo2_config(hf).vision
    theirs = Molmo2Config(**json.loads(json.dumps(hf)))
    assert ours.blocks_used == theirs.vision_config.num_hidden_layers == 25
    assert list(ours.feature_layers) == theirs.adapter_config.vision_feature_layer == [24, 18]
    assert (ours.image_size, ours.patch_size) == (56, 14)


@pytest.mark.parametrize("section, field, value, says", [
    ("text_config", "rope_parameters", {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}, "rope_type 'yarn'"),
    ("vision_config", "num_key_value_heads", 1, "vision_config has num_key_value_heads 1"),
    ("adapter_config", "mlp_bias", True, "mlp_bias true"),
    ("text_config", "qk_norm_type", "none", "qk_norm_type 'none'"),
])
def test_what_the_modules_cannot_express_is_refused_by_name(section, field, value, says):
    hf = tiny_molmo2_config().to_dict()
    hf[section][field] = value
    with pytest.raises(ReleasedCheckpointError, match=says):
        molmo2_config(hf)


def test_the_molmo1_reader_refuses_a_molmo2_folder(pair, tmp_path):
    theirs = pair[0]
    save_in_hub_layout(theirs, tmp_path)
    with pytest.raises(ValueError, match=r"Molmo2 checkpoint .*family='molmo2'"):
        load_released(tmp_path, family="molmo1", tokenizer=TOKENIZER)
    assert isinstance(load_released(tmp_path, family="molmo2", tokenizer=TOKENIZER), MolmoLite)


def test_bidirectional_needs_a_group_per_key():
    from molmo_lite.llm import build_mask

    group = torch.tensor([[False, True, True, False]])
    mask = build_mask(None, 1, 4, 0, "cpu", group)[0, 0]
    assert mask[1, 2] and not mask[0, 1] and not mask[2, 3] and mask[3].all()
    with pytest.raises(ValueError, match=r"bidirectional must be \[B, past \+ T\]"):
        build_mask(None, 1, 4, 0, "cpu", group[:, :3])
    assert MolmoConfig().image_attention == "causal"  # Molmo 1 stays the default


def test_a_folder_with_the_hub_configs_remote_code_names_loads(pair, tmp_path):
    """config.json as the hub writes it (vit_config, image_default_input_size, vit_layers, qkv_bias, layer_norm_eps,
    rope_theta), listing more ViT layers than the weights hold: molmo_lite and transformers both read it, keep the
    blocks up to the last one read, and give the logits of the original model."""
    theirs, _, ids, inputs = pair
    save_in_hub_layout(theirs, tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    vision = hf.pop("vision_config")
    hf["vit_config"] = {"hidden_size": vision["hidden_size"], "intermediate_size": vision["intermediate_size"],
                        "num_hidden_layers": 5, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16,
                        "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "image_default_input_size": [56, 56],
                        "image_patch_size": 14, "image_num_pos": 16}
    adapter = hf["adapter_config"]
    adapter["vit_layers"] = [-3, -5]  # of 5 listed: blocks 2 and 0, the ones (-1, -3) read of the 3 the weights hold
    del adapter["vision_feature_layer"]
    text = hf["text_config"]
    text["qkv_bias"], text["layer_norm_eps"] = text.pop("attention_bias"), text.pop("rms_norm_eps")
    text["rope_theta"] = text.pop("rope_parameters")["rope_theta"]
    text.pop("rope_scaling_layers", None)
    (tmp_path / "config.json").write_text(json.dumps(hf))

    ours = load_released(tmp_path, tokenizer=TOKENIZER)
    assert ours.config.vision.blocks_used == 3 and ours.config.vision.feature_layers == (2, 0)
    expected = theirs_logits(theirs, ids, inputs)
    assert (ours_logits(ours, ids, inputs) - expected).abs().max() < 1e-4
    again = Molmo2ForConditionalGeneration.from_pretrained(tmp_path).eval()  # transformers' reading of the same file
    again.config._attn_implementation = "eager"
    assert (theirs_logits(again, ids, inputs) - expected).abs().max() < 1e-4


def test_cli_generate_runs_a_molmo2_folder(pair, tmp_path, capsys):
    """`python -m molmo_lite generate --model FOLDER` on a Molmo2 folder with its tokenizer files: the answer is the
    model's own greedy answer (bidirectional image attention included)."""
    from molmo_lite.__main__ import main
    from molmo_lite.released import write_released_tokenizer

    theirs, ours, _, _ = pair
    save_in_hub_layout(theirs, tmp_path)
    write_released_tokenizer(TOKENIZER, tmp_path)  # tokenizer.json + tokenizer_config.json, image tokens included
    image = tmp_path / "noise.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 100, 3), dtype=np.uint8)).save(image)
    assert main(["generate", "--model", str(tmp_path), "--image", str(image), "--prompt", "Point to the dot.",
                 "--max-new-tokens", "4"]) == 0
    expected = ours.generate(str(image), " User: Point to the dot. Assistant:", max_new_tokens=4)
    assert capsys.readouterr().out.splitlines()[0] == expected


def test_the_molmo1_writer_refuses_a_model_with_molmo2_switches(pair, tmp_path):
    from molmo_lite.released import write_released

    with pytest.raises(ValueError, match=r"cannot hold a model with no CLS token, no pre-LN, a patch-embedding bias"):
        write_released(pair[1], tmp_path)

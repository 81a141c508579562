"""The assembled MolmoLite: image features added at <im_patch>, packing parity, checkpoints, batched generation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import randomize

from molmo_lite.config import MOLMO_PRESETS, MolmoConfig
from molmo_lite.data.collate import collate
from molmo_lite.model import MolmoLite, answer_loss
from molmo_lite.prompts import caption_prompt, pack, user_prompt


@pytest.fixture(scope="module")
def model() -> MolmoLite:
    torch.manual_seed(0)
    return randomize(MolmoLite("tiny"), seed=3)


def photo(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


ANNOTATIONS = [
    [(user_prompt("What colour is the square?"), "blue")],
    [(caption_prompt(12), "a red circle at the top left and a green square")],
    [(user_prompt("How many circles?"), "3"), (user_prompt("And squares?"), "two")],  # multi-turn
]


def test_config_round_trips_and_checks_its_parts():
    for config in MOLMO_PRESETS.values():
        assert MolmoConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    tiny = MOLMO_PRESETS["tiny"]
    with pytest.raises(ValueError, match="llm_dim"):
        MolmoConfig(preprocessor=tiny.preprocessor, vision=tiny.vision, connector=tiny.connector)


def test_image_features_are_added_at_the_patch_tokens_in_order(model):
    image = model.processor(photo(70, 150, 0))
    ids = torch.tensor([model.tokenizer.encode("".join(image.tokens) + " User: hi Assistant:", add_bos=True)])
    features = torch.randn(image.geometry.num_image_features, model.config.llm.hidden)
    with torch.no_grad():
        plain, mixed = model.llm.embed(ids), model.embed(ids, features)
    is_patch = ids[0] == model.image_patch_id
    assert int(is_patch.sum()) == features.shape[0]
    torch.testing.assert_close(mixed[0, ~is_patch], plain[0, ~is_patch], rtol=0, atol=0)
    torch.testing.assert_close(mixed[0, is_patch], plain[0, is_patch] + features)  # added, not replaced
    with pytest.raises(ValueError, match="image features"):
        model.embed(ids, features[:-1])


def test_answer_loss_by_hand():
    vocab = 8
    logits = torch.zeros(1, 3, vocab)  # uniform: cross-entropy log(8) at every position
    targets = torch.tensor([[1, 2, -100]])
    weights = torch.tensor([[1.0, 0.5, 1.0]])  # the ignored target's weight must not count
    loss, per_token, z = answer_loss(logits, targets, weights, z_loss=1e-2)
    ln8 = math.log(8)
    # CE part: (ln8 * 1 + ln8 * 0.5) / 2 tokens with loss; z part: 1e-2 * (ln8^2 * 1 + ln8^2 * 0.5) / 2
    assert per_token.tolist()[0][:2] == pytest.approx([ln8, ln8]) and per_token[0, 2] == 0
    assert z.item() == pytest.approx(1e-2 * 1.5 * ln8**2 / 2)
    assert loss.item() == pytest.approx(1.5 * ln8 / 2 + 1e-2 * 1.5 * ln8**2 / 2)


def _separate_and_packed(model, annotations):
    image = model.processor(photo(90, 120, 1))
    packed = pack(model.tokenizer, annotations, image.tokens)
    with torch.no_grad():
        out = model(**collate([(packed, image)], model.tokenizer.pad_id))
        alone = []
        for ann in annotations:
            single = pack(model.tokenizer, [ann], image.tokens, weighting="none")
            alone.append((single, model(**collate([(single, image)], model.tokenizer.pad_id))))
    return packed, out, alone


def test_packing_gives_each_annotation_its_own_loss_and_logits(model):
    packed, out, alone = _separate_and_packed(model, ANNOTATIONS)
    for k, (single, single_out) in enumerate(alone, start=1):
        in_k = packed.subsegment_ids == k
        has_loss = packed.loss_weights > 0
        packed_loss = out.per_token_loss[0, in_k & has_loss].mean()
        single_loss = single_out.per_token_loss[0, single.loss_weights > 0].mean()
        assert abs(packed_loss - single_loss) < 1e-5
        # every text position the single sequence has (its last input token; the packed one also feeds annotation
        # k's final EOS, which is no input of the single sequence)
        text = single_out.logits[0, single.subsegment_ids == 1]
        torch.testing.assert_close(out.logits[0, in_k][: len(text)], text, rtol=0, atol=1e-5)
    # the image part is the same computation too
    torch.testing.assert_close(out.logits[0, : packed.n_prefix], alone[0][1].logits[0, : packed.n_prefix],
                               rtol=0, atol=1e-5)
    # weights: sqrt(1/N) on every answer token
    assert packed.loss_weights[packed.loss_weights > 0].unique().tolist() == pytest.approx([math.sqrt(1 / 3)])


def test_changing_one_annotation_leaves_the_others_unchanged(model):
    packed, out, _ = _separate_and_packed(model, ANNOTATIONS)
    changed = [ANNOTATIONS[0], [(caption_prompt(3), "nothing at all, an empty white picture")], ANNOTATIONS[2]]
    packed2, out2, _ = _separate_and_packed(model, changed)
    for k in (1, 3):  # annotation 1 comes before the change, annotation 3 after it: neither may see it
        a, b = out.logits[0, packed.subsegment_ids == k], out2.logits[0, packed2.subsegment_ids == k]
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.allclose(out.logits[0, packed.subsegment_ids == 2][:5],
                              out2.logits[0, packed2.subsegment_ids == 2][:5], atol=1e-3)


def test_packing_is_not_the_same_as_plain_causal_attention(model):
    """Without subsegment ids the later annotations see the earlier ones: the test above can fail."""
    packed, out, _ = _separate_and_packed(model, ANNOTATIONS)
    image = model.processor(photo(90, 120, 1))
    batch = collate([(packed, image)], model.tokenizer.pad_id)
    del batch["subsegment_ids"], batch["position_ids"]
    with torch.no_grad():
        causal = model(**batch)
    in_3 = packed.subsegment_ids == 3
    assert not torch.allclose(causal.logits[0, in_3], out.logits[0, in_3], atol=1e-3)


def test_save_pretrained_round_trip_gives_identical_logits(model, tmp_path):
    image = model.processor(photo(60, 100, 2))
    batch = collate([(pack(model.tokenizer, ANNOTATIONS, image.tokens), image)], model.tokenizer.pad_id)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = MolmoLite.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    assert loaded.tokenizer.image_token_ids == model.tokenizer.image_token_ids


def test_from_pretrained_rejects_what_is_not_a_checkpoint(model, tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        MolmoLite.from_pretrained(tmp_path / "missing")
    folder = model.save_pretrained(tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        MolmoLite.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"llm": {"hidden": 8}}))  # another kind of checkpoint
    with pytest.raises(ValueError, match="not a MolmoLite checkpoint"):
        MolmoLite.from_pretrained(folder)
    (folder / "config.json").write_text("{ broken json")
    with pytest.raises(ValueError, match="not a MolmoLite checkpoint"):
        MolmoLite.from_pretrained(folder)
    other = model.save_pretrained(tmp_path / "other")  # weights of a different geometry
    config = json.loads((other / "config.json").read_text())
    config["molmo_lite"]["llm"]["intermediate"] = 256
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="wrong shapes"):
        MolmoLite.from_pretrained(other)


def test_batched_generation_equals_one_by_one_for_images_of_different_sizes(model):
    images = [photo(40, 40, 4), photo(60, 170, 5), None, photo(150, 50, 6)]  # 1, 3 (1x3), 0 and 3 (3x1) crops
    prompts = [user_prompt("What is this?"), caption_prompt(), user_prompt("Say something long, please."),
               user_prompt("Where is the dog?")]
    crops = [None if im is None else model.processor(im).tiling for im in images]
    assert len({c for c in crops if c}) == 3  # really different sizes
    batched = model.generate_ids(images, prompts, max_new_tokens=12)
    for row, (image, prompt) in enumerate(zip(images, prompts)):
        one = model.generate_ids([image], [prompt], max_new_tokens=12)
        assert torch.equal(batched[row], one[0]), row
    uncached = model.generate_ids(images, prompts, max_new_tokens=12, use_cache=False)
    assert torch.equal(batched, uncached)
    assert len(set(map(tuple, batched.tolist()))) > 1  # the rows do differ: the test can tell them apart


def test_generate_returns_text_cut_at_eos(model):
    text = model.generate(photo(50, 50, 7), user_prompt("Hi"), max_new_tokens=6)
    assert isinstance(text, str)
    ids = model.generate_ids([photo(50, 50, 7)], [user_prompt("Hi")], max_new_tokens=6)[0].tolist()
    eos = model.tokenizer.eos_id
    assert text == model.tokenizer.decode(ids[: ids.index(eos)] if eos in ids else ids)


def test_a_padded_batch_mixing_image_sizes_and_text_only_rows_equals_each_example_alone(model):
    images = [model.processor(photo(40, 120, 8)), None, model.processor(photo(160, 60, 9))]
    examples = [(pack(model.tokenizer, ANNOTATIONS[: k + 1], () if im is None else im.tokens), im)
                for k, im in enumerate(images)]
    with torch.no_grad():
        batched = model(**collate(examples, model.tokenizer.pad_id))
        for row, example in enumerate(examples):
            alone = model(**collate([example], model.tokenizer.pad_id))
            n = len(example[0])
            torch.testing.assert_close(batched.logits[row, :n], alone.logits[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(batched.per_token_loss[row, :n], alone.per_token_loss[0], rtol=0, atol=1e-5)


def test_from_backbones_starts_from_an_open_clip_vit_and_a_qwen2_checkpoint(tmp_path, monkeypatch):
    """The real presets' loading path, on local files of the real formats: an open_clip vision tower (safetensors) and
    a transformers Qwen2 folder. The parts must compute exactly what their sources compute."""
    from open_clip.transformer import VisionTransformer as OpenClipViT
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from molmo_lite.tokenizer import TINY_BPE_PATH

    torch.manual_seed(0)
    clip = OpenClipViT(image_size=56, patch_size=14, width=96, layers=4, heads=4, mlp_ratio=4.0, output_dim=64,
                       act_layer=torch.nn.GELU).eval()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, tmp_path / "clip.safetensors")
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                        rope_theta=10_000.0, rms_norm_eps=1e-6)).eval()
    qwen.save_pretrained(tmp_path / "qwen2")

    model = MolmoLite.from_backbones("tiny", vision=tmp_path / "clip.safetensors", llm=tmp_path / "qwen2",
                                     tokenizer=TINY_BPE_PATH).eval()
    images = torch.randn(2, 3, 56, 56)
    ids = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        block_outputs = []
        hooks = [b.register_forward_hook(lambda m, i, o: block_outputs.append(o)) for b in clip.transformer.resblocks]
        clip(images)
        for h in hooks:
            h.remove()
        expected = torch.cat([block_outputs[-1], block_outputs[-3]], dim=-1)[:, 1:]  # layers (-1, -3), no CLS
        torch.testing.assert_close(model.vision.features(images), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.llm(ids), qwen(ids).logits, rtol=1e-4, atol=1e-5)

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="Offline"):
        MolmoLite.from_backbones("tiny", vision=tmp_path / "clip.safetensors", llm="nobody/no-such-model")

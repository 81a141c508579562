"""Chapter 02's tiny CLIP pre-training and the synthetic scenes it learns from."""

from __future__ import annotations

import numpy as np
import torch

from molmo_lite import clip_pretrain
from molmo_lite.config import VisionConfig
from molmo_lite.data.synthetic import caption_scene, caption_scenes, random_scene, render_scene
from molmo_lite.vision import VisionTransformer

SMALL = VisionConfig(image_size=28, patch_size=14, width=32, layers=2, heads=2, mlp_width=64, act="gelu",
                     num_layers_used=None, feature_layers=(-1,), output_dim=16)


def test_scenes_are_deterministic_and_captions_name_colour_shape_and_place():
    a_images, a_captions = caption_scenes(8, seed=3, size=28)
    b_images, b_captions = caption_scenes(8, seed=3, size=28)
    assert np.array_equal(a_images, b_images) and a_captions == b_captions
    assert a_images.shape == (8, 28, 28, 3) and a_images.dtype == np.uint8
    objects = random_scene(np.random.default_rng(0), max_objects=3, min_objects=3)
    caption = caption_scene(objects)
    for obj in objects:
        assert f"{obj.colour} {obj.shape} at the {obj.region}" in caption
    assert len({o.region for o in objects}) == 3  # one object per region: captions are unambiguous


def test_rendered_shape_sits_where_its_point_says():
    rng = np.random.default_rng(1)
    (obj,) = random_scene(rng, max_objects=1)
    image = render_scene([obj], size=112, background=(128, 128, 128)).astype(int)
    differs = np.abs(image - 128).sum(-1) > 60
    ys, xs = np.nonzero(differs)
    assert abs(xs.mean() / 112 * 100 - obj.x) < 4 and abs(ys.mean() / 112 * 100 - obj.y) < 6


def test_tokenizer_pads_and_knows_the_grammar():
    tok = clip_pretrain.WordTokenizer.for_scenes()
    ids = tok(["a red circle at the top left", "an orange square"])
    assert ids.shape == (2, tok.max_len) and (ids[1, 3:] == 0).all()
    assert (ids[0, :7] > 1).all()  # every word known (1 = unknown)


def test_clip_training_lowers_the_loss_on_a_fixed_set():
    torch.manual_seed(0)
    images, captions = caption_scenes(64, seed=0, size=28)
    x = clip_pretrain.to_model_input(images)
    model = clip_pretrain.TinyCLIP(VisionTransformer(SMALL), clip_pretrain.WordTokenizer.for_scenes())
    history = clip_pretrain.train_clip(model, x, captions, steps=150, batch_size=32, lr=3e-3, log_every=10)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]  # measured: 3.4 -> 0.9
    accuracy = clip_pretrain.retrieval_accuracy(model, x, captions)
    assert 0.0 <= accuracy <= 1.0


def test_encoder_saves_as_safetensors_and_reloads_identically(tmp_path):
    vit = VisionTransformer(SMALL).eval()
    clip_pretrain.save_encoder(vit, tmp_path / "enc", extra={"note": "test"})
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json", "model.safetensors"]
    again = clip_pretrain.load_encoder(tmp_path / "enc")
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(again.features(x), vit.features(x))
    assert again.config == SMALL


def test_tiny_encoder_is_rebuilt_when_missing(tmp_path, monkeypatch):
    calls = []

    def fake_pretrain(steps, **kwargs):
        calls.append(steps)
        model = clip_pretrain.TinyCLIP(VisionTransformer(SMALL), clip_pretrain.WordTokenizer.for_scenes())
        return model, {"accuracy_after": 0.5, "history": []}

    monkeypatch.setattr(clip_pretrain, "pretrain_tiny_encoder", fake_pretrain)
    first = clip_pretrain.tiny_encoder(tmp_path / "vit", steps=7)
    second = clip_pretrain.tiny_encoder(tmp_path / "vit", steps=7)  # now loaded, not retrained
    assert calls == [7]
    assert first.config == second.config == SMALL


def test_crowded_encoder_scenes_are_half_small_textured_objects_all_named_in_the_caption():
    images, captions = clip_pretrain.scene_pairs(10, seed=0, size=28, scenes="crowded")
    simple_images, simple_captions = clip_pretrain.scene_pairs(5, seed=0, size=28, scenes="simple")
    assert images.shape == (10, 28, 28, 3)
    assert captions[:5] == simple_captions and np.array_equal(images[:5], simple_images)  # the first half: chapter 02's
    for caption in captions[5:]:
        assert 4 <= caption.count(" at the ") <= 8  # 4-8 objects, each named with its place
    objects = random_scene(np.random.default_rng(0), max_objects=8, min_objects=8, radius=(4, 8), textured=True)
    assert all(4 <= o.radius <= 8 for o in objects) and len({o.region for o in objects}) == 8
    assert len({o.texture for o in objects}) > 1

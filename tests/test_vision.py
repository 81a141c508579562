"""molmo_lite's ViT against open_clip's: same weights, same output of every block."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import QuickGELU as OpenClipQuickGELU
from open_clip.transformer import VisionTransformer as OpenClipViT

from molmo_lite.config import VisionConfig
from molmo_lite.vision import VisionTransformer, interpolate_position_embeddings, patchify_images

TINY_CONFIGS = {
    # name: (open_clip kwargs, activation name)
    "gelu_4heads": (dict(image_size=56, patch_size=14, width=64, layers=3, heads=4, mlp_ratio=4.0, output_dim=32),
                    "gelu", torch.nn.GELU),
    # quick_gelu, an odd head count (3), an odd 3x3 grid and an MLP width that is not a multiple of the width
    "quickgelu_odd": (dict(image_size=42, patch_size=14, width=48, layers=4, heads=3, mlp_ratio=2.5, output_dim=24),
                      "quick_gelu", OpenClipQuickGELU),
}


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights everywhere: LayerNorm gains around 1, every bias and embedding non-zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_ln_gain = name.endswith("weight") and p.dim() == 1
            p.copy_(1.0 + 0.1 * noise if is_ln_gain else 0.1 * noise)


def open_clip_block_outputs(model: OpenClipViT, images: torch.Tensor) -> list[torch.Tensor]:
    """Every resblock's output, captured with forward hooks, as [B, tokens, width]."""
    outputs = []
    hooks = [blk.register_forward_hook(lambda m, i, o: outputs.append(o)) for blk in model.transformer.resblocks]
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    batch_first = getattr(model.transformer, "batch_first", True)
    return [o if batch_first else o.transpose(0, 1) for o in outputs]


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_vit_matches_open_clip_block_by_block(name):
    kwargs, act, act_layer = TINY_CONFIGS[name]
    torch.manual_seed(0)
    reference = OpenClipViT(**kwargs, act_layer=act_layer).eval()
    randomize(reference, seed=1)
    ours = VisionTransformer.from_open_clip(reference, heads=kwargs["heads"], act=act).eval()
    images = torch.randn(2, 3, kwargs["image_size"], kwargs["image_size"])
    with torch.no_grad():
        theirs = open_clip_block_outputs(reference, images)
        mine = ours(images)
        clip_ref = reference(images)
        clip_ours = ours.clip_embedding(images)
    assert len(mine) == len(theirs) == kwargs["layers"]
    n_tokens = 1 + (kwargs["image_size"] // kwargs["patch_size"]) ** 2
    for k, (a, b) in enumerate(zip(mine, theirs)):
        assert a.shape == b.shape == (2, n_tokens, kwargs["width"])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"block {k}")
    torch.testing.assert_close(clip_ours, clip_ref, atol=1e-5, rtol=1e-5)  # CLIP's head too


def test_vit_accepts_molmo_flattened_patches():
    kwargs, act, act_layer = TINY_CONFIGS["gelu_4heads"]
    ours = VisionTransformer.from_open_clip(OpenClipViT(**kwargs, act_layer=act_layer), heads=4, act=act).eval()
    images = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        from_images, from_patches = ours(images), ours(patchify_images(images, 14))
    for a, b in zip(from_images, from_patches):
        torch.testing.assert_close(a, b)


def test_feature_selection_concatenates_layers_and_drops_cls():
    cfg = VisionConfig(image_size=42, patch_size=14, width=16, layers=5, heads=2, mlp_width=32, num_layers_used=4,
                       feature_layers=(-2, -4), output_dim=None)
    vit = VisionTransformer(cfg).eval()
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        hidden, feats = vit(x), vit.features(x)
    assert len(hidden) == 4 and feats.shape == (2, 9, 32)
    torch.testing.assert_close(feats[..., :16], hidden[2][:, 1:])  # -2 of 4 blocks = block index 2
    torch.testing.assert_close(feats[..., 16:], hidden[0][:, 1:])  # -4 = block index 0


def test_truncation_keeps_the_first_blocks_of_the_checkpoint():
    kwargs, act, act_layer = TINY_CONFIGS["quickgelu_odd"]
    reference = OpenClipViT(**kwargs, act_layer=act_layer).eval()
    randomize(reference, seed=2)
    full = VisionTransformer.from_open_clip(reference, heads=3, act=act).eval()
    cut = VisionTransformer.from_open_clip(reference, heads=3, act=act, num_layers_used=3, keep_head=False).eval()
    assert len(cut.blocks) == 3 and not hasattr(cut, "proj")
    x = torch.randn(1, 3, 42, 42)
    with torch.no_grad():
        for a, b in zip(cut(x), full(x)[:3]):
            torch.testing.assert_close(a, b)


def test_position_embeddings_interpolate_bicubically_for_other_grids():
    pos = torch.randn(1 + 16, 8)
    same = interpolate_position_embeddings(pos, (4, 4))
    assert same is pos
    bigger = interpolate_position_embeddings(pos, (6, 6))
    assert bigger.shape == (37, 8)
    torch.testing.assert_close(bigger[0], pos[0])  # CLS position kept
    expected = torch.nn.functional.interpolate(pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2), size=(6, 6),
                                               mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(bigger[1:], expected.permute(0, 2, 3, 1).reshape(36, 8))
    # a model trained at 4x4 patches runs on 6x6 patches (84 px with 14 px patches)
    vit = VisionTransformer(VisionConfig(image_size=56, patch_size=14, width=16, layers=1, heads=2, mlp_width=32,
                                         num_layers_used=None, feature_layers=(-1,), output_dim=None))
    assert vit.features(torch.randn(1, 3, 84, 84)).shape == (1, 36, 16)


def test_mismatching_checkpoints_raise_clear_errors():
    kwargs, act, act_layer = TINY_CONFIGS["gelu_4heads"]
    state = {f"visual.{k}": v for k, v in OpenClipViT(**kwargs, act_layer=act_layer).state_dict().items()}
    with pytest.raises(ValueError, match="not an open_clip vision tower"):
        VisionTransformer.from_open_clip({"text.weight": torch.zeros(1)})
    broken = dict(state)
    del broken["visual.transformer.resblocks.1.ln_2.weight"]
    with pytest.raises(ValueError, match="lacks 1 keys"):
        VisionTransformer.from_open_clip(broken, heads=4)
    with pytest.raises(ValueError, match="num_layers_used=9"):
        VisionTransformer.from_open_clip(state, heads=4, num_layers_used=9)
    with pytest.raises(ValueError, match="not divisible"):
        VisionTransformer.from_open_clip(state, heads=5)
    extra = dict(state, **{"visual.transformer.resblocks.0.ls_1.gamma": torch.ones(64)})
    with pytest.raises(ValueError, match="does not have"):
        VisionTransformer.from_open_clip(extra, heads=4)


def test_loads_a_local_open_clip_checkpoint_file(tmp_path):
    from safetensors.torch import save_file

    kwargs, act, act_layer = TINY_CONFIGS["gelu_4heads"]
    reference = OpenClipViT(**kwargs, act_layer=act_layer).eval()
    state = {f"visual.{k}": v.contiguous() for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "clip.pt")
    save_file(state, tmp_path / "clip.safetensors")
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        expected = open_clip_block_outputs(reference, x)[-1]
        for name in ("clip.pt", "clip.safetensors"):
            ours = VisionTransformer.from_open_clip(tmp_path / name, heads=4, act=act).eval()
            torch.testing.assert_close(ours(x)[-1], expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def vit_l_336_state():
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.create_model("ViT-L-14-336", pretrained=None)
    return {k: v for k, v in model.state_dict().items()}


def expected_molmo_vit_l_parameters() -> dict[str, tuple[int, ...]]:
    """What Molmo's ViT-L/14-336 holds: 588-dim linear patches, 577 positions, 23 blocks of width 1024, MLP 4096."""
    names = {"patch_embedding.weight": (1024, 588), "class_embedding": (1024,), "positional_embedding": (577, 1024),
             "pre_ln.weight": (1024,), "pre_ln.bias": (1024,)}
    for i in range(23):
        for norm in ("attention_norm", "ffn_norm"):
            names[f"blocks.{i}.{norm}.weight"] = names[f"blocks.{i}.{norm}.bias"] = (1024,)
        for proj in ("wq", "wk", "wv", "wo"):
            names[f"blocks.{i}.attention.{proj}.weight"] = (1024, 1024)
            names[f"blocks.{i}.attention.{proj}.bias"] = (1024,)
        names[f"blocks.{i}.feed_forward.w1.weight"], names[f"blocks.{i}.feed_forward.w1.bias"] = (4096, 1024), (4096,)
        names[f"blocks.{i}.feed_forward.w2.weight"], names[f"blocks.{i}.feed_forward.w2.bias"] = (1024, 4096), (1024,)
    return names


def test_vit_l_14_336_state_dict_maps_exactly_onto_molmo_vit(vit_l_336_state):
    vit = VisionTransformer.from_open_clip(vit_l_336_state, num_layers_used=23, keep_head=False)
    got = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    assert got == expected_molmo_vit_l_parameters()  # no missing, no unexpected, every shape right
    assert vit.config.heads == 16 and vit.config.act == "quick_gelu" and vit.config.image_size == 336
    with torch.no_grad():
        torch.testing.assert_close(
            vit.blocks[22].feed_forward.w2.weight, vit_l_336_state["visual.transformer.resblocks.22.mlp.c_proj.weight"])
        feats = vit.features(torch.randn(1, 3, 336, 336))
    assert feats.shape == (1, 576, 2048)  # Molmo's layers [-2, -9], concatenated


def test_pretrained_download_failure_says_what_to_do(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match=r"Offline\? .*from_open_clip\(path\)"):
        VisionTransformer.from_pretrained_open_clip("ViT-L-14-336", "openai")

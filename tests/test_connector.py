"""The connector (chapter 03): pad embeddings, 2x2 attention pooling with a mean query, SwiGLU projector.

Parity oracle: transformers' Molmo2Adapter with random weights, copied into our Connector.
"""

from __future__ import annotations

import doctest
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers.models.molmo2.configuration_molmo2 import Molmo2AdapterConfig
from transformers.models.molmo2.modeling_molmo2 import Molmo2Adapter

import molmo_lite.connector
from molmo_lite.config import ConnectorConfig
from molmo_lite.connector import (
    AttentionPool,
    Connector,
    PadEmbedding,
    connector_state_from_molmo2_adapter,
    gather_windows,
)
from molmo_lite.preprocessing import MolmoImageProcessor

# A tiny adapter: ViT width 8 read from two layers (input 16), 2 heads of 6 (12 != 8 catches transposed weights).
WIDTH, HEADS, HEAD_DIM, HIDDEN, LLM = 8, 2, 6, 20, 12
CONFIG = ConnectorConfig(
    input_dim=2 * WIDTH, pool_dim=WIDTH, heads=HEADS, head_dim=HEAD_DIM, hidden_dim=HIDDEN, llm_dim=LLM
)
TOL = dict(atol=1e-5, rtol=1e-5)


def molmo2_adapter(attn_implementation: str = "eager", seed: int = 0) -> Molmo2Adapter:
    """A random tiny Molmo2Adapter; every tensor (biases too) drawn from N(0, 0.5^2) so nothing is trivially zero."""
    cfg = Molmo2AdapterConfig(
        vision_feature_layer=[-1, -3],
        hidden_size=WIDTH,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=HEAD_DIM,
        intermediate_size=HIDDEN,
        text_hidden_size=LLM,
    )
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    adapter = Molmo2Adapter(cfg).eval()
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0.0, 0.5)
    return adapter


def connector_from(adapter: Molmo2Adapter) -> Connector:
    return Connector(CONFIG).load_molmo2_adapter(adapter).eval()


def processor_inputs(processor: MolmoImageProcessor, height: int, width: int, seed: int = 0):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return processor(image)


def random_features(inputs, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(*inputs.patch_pad_fraction.shape, CONFIG.input_dim)


def assert_matches_adapter(connector, adapter, features, idx, pad_fraction=None):
    """Our output equals the adapter's on every token whose window has a valid slot (the adapter drops the rest)."""
    with torch.no_grad():
        ours = connector(features, idx, pad_fraction)
        ref = adapter(features, idx).last_hidden_state
    valid_tokens = (idx >= 0).any(-1)
    assert ours.shape == (len(idx), LLM)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours[valid_tokens], ref, **TOL)


# --------------------------------------------------------------------------------------------------------------------
# Parity with transformers' Molmo2Adapter.
# --------------------------------------------------------------------------------------------------------------------


def test_connector_matches_molmo2_adapter_tiny_preset():
    inputs = processor_inputs(MolmoImageProcessor.from_config("tiny"), 70, 130)
    assert inputs.num_crops > 2
    adapter = molmo2_adapter()
    assert_matches_adapter(connector_from(adapter), adapter, random_features(inputs), inputs.pooled_patches_idx)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_connector_matches_molmo2_adapter_odd_grid_with_padding_slots(attn_implementation):
    processor = MolmoImageProcessor(crop_size=42, patch_size=14, max_crops=4, overlap_margins=(1, 1), pooling=(2, 2))
    inputs = processor_inputs(processor, 60, 100)
    idx = inputs.pooled_patches_idx
    assert inputs.patch_pad_fraction.shape[1] == 9  # 3 x 3 patches per crop
    assert (idx == -1).any() and (idx >= 0).any(-1).all()  # padding slots, but no empty window
    adapter = molmo2_adapter(attn_implementation)
    assert_matches_adapter(connector_from(adapter), adapter, random_features(inputs), idx)


def test_connector_matches_molmo2_adapter_with_an_all_padding_window():
    idx = torch.tensor([[0, 1, 4, 5], [2, -1, 6, -1], [-1, -1, -1, -1], [16, 17, 20, 21], [-1, 31, -1, -1]])
    torch.manual_seed(2)
    features = torch.randn(2, 16, CONFIG.input_dim)
    adapter = molmo2_adapter()
    assert_matches_adapter(connector_from(adapter), adapter, features, idx)


def test_load_molmo2_adapter_leaves_pad_embedding_at_zero():
    connector = Connector(CONFIG)
    with torch.no_grad():
        connector.pad.pad_embed.fill_(3.0)
    connector.load_molmo2_adapter(molmo2_adapter().state_dict())
    assert torch.equal(connector.pad.pad_embed, torch.zeros_like(connector.pad.pad_embed))


def test_load_molmo2_adapter_from_a_whole_model_state_dict_with_prefix():
    adapter = molmo2_adapter()
    prefix = "model.multi_modal_projector."
    state = {prefix + k: v for k, v in adapter.state_dict().items()}
    state["model.language_model.norm.weight"] = torch.ones(3)  # other modules' keys are not read
    connector = Connector(CONFIG).load_molmo2_adapter(state, prefix=prefix)
    torch.testing.assert_close(connector.pool.wq.bias, adapter.image_pooling_2d.q_proj.bias, atol=0, rtol=0)
    torch.testing.assert_close(connector.projector.w3.weight, adapter.image_projector.up_proj.weight, atol=0, rtol=0)


# --------------------------------------------------------------------------------------------------------------------
# Pad embeddings.
# --------------------------------------------------------------------------------------------------------------------


def test_pad_embedding_marks_fully_and_partially_padded_patches():
    pad = PadEmbedding(4)
    with torch.no_grad():
        pad.pad_embed.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]))
    features = torch.randn(2, 3, 4)
    pad_fraction = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.0, 0.01]])
    out = pad(features, pad_fraction)
    added = out - features
    for crop, patch, expected in [(0, 0, 0), (1, 1, 0), (0, 1, 1), (1, 2, 1)]:
        torch.testing.assert_close(added[crop, patch], pad.pad_embed[expected])
    assert torch.equal(out[0, 2], features[0, 2]) and torch.equal(out[1, 0], features[1, 0])


def test_pad_embedding_rejects_a_pad_fraction_of_the_wrong_shape():
    with pytest.raises(ValueError, match="pad_fraction"):
        PadEmbedding(4)(torch.randn(2, 3, 4), torch.ones(2, 4))


def test_pad_embedding_is_a_no_op_when_nothing_is_padded():
    inputs = processor_inputs(MolmoImageProcessor.from_config("tiny"), 70, 130)
    adapter = molmo2_adapter()
    connector = connector_from(adapter)
    with torch.no_grad():
        connector.pad.pad_embed.normal_()
    features = random_features(inputs)
    ones = torch.ones_like(inputs.patch_pad_fraction)
    assert_matches_adapter(connector, adapter, features, inputs.pooled_patches_idx, ones)


def test_pad_embedding_is_added_before_pooling():
    inputs = processor_inputs(MolmoImageProcessor.from_config("tiny"), 40, 130)  # wide: the global image is padded
    frac = inputs.patch_pad_fraction
    assert (frac == 0).any() and ((frac > 0) & (frac < 1)).any()
    adapter = molmo2_adapter()
    connector = connector_from(adapter)
    with torch.no_grad():
        connector.pad.pad_embed.normal_()
    features = random_features(inputs)
    marked = connector.pad(features, frac).detach()  # the adapter pools features that already carry the markers
    with torch.no_grad():
        ours = connector(features, inputs.pooled_patches_idx, frac)
        ref = adapter(marked, inputs.pooled_patches_idx).last_hidden_state
    torch.testing.assert_close(ours, ref, **TOL)


def test_pad_fraction_is_ignored_without_pad_embed():
    connector = Connector(replace(CONFIG, pad_embed=False))
    assert connector.pad is None
    features, idx = torch.randn(1, 4, CONFIG.input_dim), torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(connector(features, idx, torch.zeros(1, 4)), connector(features, idx))


# --------------------------------------------------------------------------------------------------------------------
# Attention pooling.
# --------------------------------------------------------------------------------------------------------------------


def test_attention_weights_sum_to_one_over_valid_slots_and_are_zero_on_padding():
    torch.manual_seed(3)
    pool = AttentionPool(CONFIG.input_dim, CONFIG.pool_dim, HEADS, HEAD_DIM)
    windows = torch.randn(4, 4, CONFIG.input_dim)
    valid = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        pooled, weights = pool(windows, valid, return_weights=True)
    assert pooled.shape == (4, CONFIG.pool_dim) and weights.shape == (4, HEADS, 4)
    torch.testing.assert_close(weights[:3].sum(-1), torch.ones(3, HEADS))
    assert (weights.permute(0, 2, 1)[~valid] == 0).all()  # exactly zero on padding slots
    assert torch.equal(weights[2, :, 2], torch.ones(HEADS))  # one valid slot takes all the weight
    assert (weights[3] == 0).all() and torch.isfinite(pooled).all()  # an empty window: no weight, no NaN


def test_attention_pool_ignores_what_padding_slots_hold():
    torch.manual_seed(4)
    pool = AttentionPool(CONFIG.input_dim, CONFIG.pool_dim, HEADS, HEAD_DIM)
    windows = torch.randn(3, 4, CONFIG.input_dim)
    valid = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    garbage = windows.masked_fill(~valid[..., None], 1e3)
    with torch.no_grad():
        torch.testing.assert_close(pool(garbage, valid), pool(windows, valid))


def test_attention_pool_gradients_stay_finite_with_an_empty_window():
    torch.manual_seed(5)
    pool = AttentionPool(CONFIG.input_dim, CONFIG.pool_dim, HEADS, HEAD_DIM)
    windows = torch.randn(2, 4, CONFIG.input_dim, requires_grad=True)
    valid = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    pool(windows, valid).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters()) and torch.isfinite(windows.grad).all()


def test_gather_windows_zeroes_padding_slots():
    flat = torch.arange(1.0, 7.0)[:, None].repeat(1, 2)  # patch i holds i + 1
    windows, valid = gather_windows(flat, torch.tensor([[0, 5, -1, 2]]))
    assert valid.tolist() == [[True, True, False, True]]
    assert windows[0, :, 0].tolist() == [1.0, 6.0, 0.0, 3.0]


@pytest.mark.parametrize(
    "idx, match",
    [
        (torch.tensor([[0, 6]]), r"\[-1, 5\]"),
        (torch.tensor([[0, -2]]), r"\[-1, 5\]"),
        (torch.tensor([[0.0]]), "integers"),
    ],
)
def test_gather_windows_rejects_bad_indices(idx, match):
    with pytest.raises(ValueError, match=match):
        gather_windows(torch.randn(6, 2), idx)


def test_connector_rejects_batched_or_wrong_width_features():
    connector = Connector(CONFIG)
    idx = torch.tensor([[0, 1, 2, 3]])
    with pytest.raises(ValueError, match="one image"):
        connector(torch.randn(2, 1, 4, CONFIG.input_dim), idx)
    with pytest.raises(ValueError, match="one image"):
        connector(torch.randn(1, 4, CONFIG.input_dim + 1), idx)


# --------------------------------------------------------------------------------------------------------------------
# Molmo's real dimensions, on the meta device (shapes only, no memory).
# --------------------------------------------------------------------------------------------------------------------


def test_connector_has_molmo_7b_parameter_counts():
    with torch.device("meta"):
        connector = Connector(ConnectorConfig())

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(connector.pool) == 3 * (2048 * 1024 + 1024) + (1024 * 1024 + 1024)
    assert count(connector.projector) == 1024 * 18944 * 2 + 18944 * 3584
    assert count(connector.pad) == 2 * 2048


# --------------------------------------------------------------------------------------------------------------------
# Loading errors.
# --------------------------------------------------------------------------------------------------------------------


def test_molmo2_adapter_mapping_reports_missing_and_unexpected_keys():
    state = dict(molmo2_adapter().state_dict())
    del state["image_pooling_2d.k_proj.bias"]
    state["image_projector.gate_proj.bias"] = torch.zeros(HIDDEN)
    with pytest.raises(ValueError, match=r"missing keys \['image_pooling_2d.k_proj.bias'\].*unexpected keys "):
        connector_state_from_molmo2_adapter(state, CONFIG)
    with pytest.raises(ValueError, match="missing keys"):
        Connector(CONFIG).load_molmo2_adapter(state)


def test_molmo2_adapter_mapping_reports_wrong_shapes():
    state = dict(molmo2_adapter().state_dict())
    state["image_projector.down_proj.weight"] = torch.zeros(LLM + 1, HIDDEN)
    with pytest.raises(ValueError, match=r"down_proj.weight \(13, 20\) -> projector.w2.weight expects \(12, 20\)"):
        Connector(CONFIG).load_molmo2_adapter(state)


def test_molmo2_adapter_mapping_covers_every_parameter_but_the_pad_embedding():
    state = connector_state_from_molmo2_adapter(molmo2_adapter().state_dict(), CONFIG)
    assert set(state) | {"pad.pad_embed"} == set(Connector(CONFIG).state_dict())


def test_connector_docstring_example_runs():
    assert doctest.testmod(molmo_lite.connector).failed == 0


def test_decision_features_hand_on_what_the_cell_head_does_not_decide():
    """With a head that calls every patch empty, two images differ only in their features: the connector's tokens
    are the same without ``decision_features`` and differ with it; the pooling reads decisions + features."""
    base = ConnectorConfig(input_dim=16, pool_dim=8, heads=2, head_dim=4, hidden_dim=32, llm_dim=12,
                           cell_decisions=(3, 2, 2))
    a, b = torch.randn(1, 4, 16), torch.randn(1, 4, 16)
    idx = torch.arange(4)[:, None]
    outputs = {}
    for scale in (0.0, 0.5):
        torch.manual_seed(0)
        connector = Connector(replace(base, decision_features=scale))
        with torch.no_grad():
            connector.decide.head.weight.zero_()
            connector.decide.head.bias.zero_()
            connector.decide.head.bias[3] = 5.0  # colour "empty" everywhere
            outputs[scale] = (connector(a, idx), connector(b, idx))
        assert connector.pool.wk.in_features == connector.decide.out_dim + (16 if scale else 0)
    torch.testing.assert_close(*outputs[0.0])
    assert not torch.allclose(*outputs[0.5])
    with pytest.raises(ValueError, match="cell_decisions"):
        Connector(replace(base, cell_decisions=(), decision_features=0.5))

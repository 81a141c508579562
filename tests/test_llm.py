"""molmo_lite's decoder against transformers' Qwen2 and OLMo 2: same weights, same logits, same greedy tokens."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize
from transformers import Olmo2Config, Olmo2ForCausalLM, Qwen2Config, Qwen2ForCausalLM

from molmo_lite.config import LLMConfig
from molmo_lite.llm import LLM, KVCache, build_mask, left_align, load_llm, save_llm

VOCAB = 97


def qwen2(tie: bool = False) -> Qwen2ForCausalLM:
    """GQA with a ratio of 3 (6 query heads, 2 KV heads), qkv bias, rope theta 1e6, untied head by default."""
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                      num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=tie,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e6}, attn_implementation="eager")
    return randomize(Qwen2ForCausalLM(cfg), seed=1)


def olmo2() -> Olmo2ForCausalLM:
    cfg = Olmo2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "default", "rope_theta": 5e5}, attn_implementation="eager")
    return randomize(Olmo2ForCausalLM(cfg), seed=2)


def padded_batch(seed: int = 0, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """3 prompts of lengths 9, 5 and 7, padded to 9 on one side."""
    gen = torch.Generator().manual_seed(seed)
    lengths, width = [9, 5, 7], 9
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens = torch.randint(3, VOCAB, (n,), generator=gen)
        span = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, span], mask[row, span] = tokens, 1
    return ids, mask


REFERENCES = {"qwen2": qwen2, "qwen2_tied": lambda: qwen2(tie=True), "olmo2": olmo2}


@pytest.mark.parametrize("name", list(REFERENCES))
def test_logits_match_transformers(name):
    reference = REFERENCES[name]()
    ours = LLM.from_hf(reference).eval()
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(REFERENCES))
def test_padded_batch_logits_match_transformers(name):
    reference = REFERENCES[name]()
    ours = LLM.from_hf(reference).eval()
    ids, mask = padded_batch(seed=4, side="left")
    with torch.no_grad():
        theirs = reference(ids, attention_mask=mask).logits
        mine = ours(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(mine[real], theirs[real], atol=1e-5, rtol=1e-5)  # padding positions are never used


def test_config_read_from_qwen2_has_gqa_bias_theta_and_untied_head():
    cfg = LLM.from_hf(qwen2()).config
    assert (cfg.heads, cfg.kv_heads, cfg.qkv_bias, cfg.rope_theta, cfg.tie_embeddings) == (6, 2, True, 1e6, False)
    olmo = LLM.from_hf(olmo2()).config
    assert olmo.qk_norm and olmo.norm_after and not olmo.qkv_bias


def test_loads_a_local_save_pretrained_folder(tmp_path):
    reference = qwen2()
    reference.save_pretrained(tmp_path / "tiny-qwen2")
    ours = LLM.from_hf(tmp_path / "tiny-qwen2").eval()
    ids = torch.arange(10)[None] % VOCAB
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)


def test_mismatching_checkpoints_raise_clear_errors(tmp_path):
    state = qwen2().state_dict()
    cfg = LLM.from_hf(qwen2()).config
    broken = {k: v for k, v in state.items() if "layers.1.mlp.up_proj" not in k}
    with pytest.raises(ValueError, match="missing .*layers.1.mlp.up_proj"):
        LLM.from_hf_state_dict(broken, cfg)
    with pytest.raises(ValueError, match="unexpected"):
        LLM.from_hf_state_dict({**state, "model.layers.0.extra.weight": torch.zeros(1)}, cfg)
    with pytest.raises(ValueError, match="model_type 'llama'"):
        from molmo_lite.llm import llm_config_from_hf
        llm_config_from_hf({"model_type": "llama"})
    with pytest.raises(ValueError, match="no .safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text('{"model_type": "qwen2"}')
        LLM.from_hf(tmp_path / "empty")


@pytest.mark.parametrize("name", ["qwen2", "olmo2"])
def test_kv_cache_decoding_equals_full_forward(name):
    ours = LLM.from_hf(REFERENCES[name]()).eval()
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(5))
    cache = KVCache(ours.config, batch=2, max_len=12)
    with torch.no_grad():
        full = ours(ids)
        steps = [ours(ids[:, :5], cache=cache)] + [ours(ids[:, k:k + 1], cache=cache) for k in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["qwen2", "olmo2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_greedy_generation_cached_uncached_and_transformers_agree(name, side):
    reference = REFERENCES[name]()
    ours = LLM.from_hf(reference).eval()
    ids, mask = padded_batch(seed=6, side=side)
    cached = ours.generate(ids, mask, max_new_tokens=64)
    uncached = ours.generate(ids, mask, max_new_tokens=64, use_cache=False)
    assert torch.equal(cached, uncached)
    left_ids, left_mask = left_align(ids, mask)  # transformers needs left padding for decoder-only generation
    with torch.no_grad():
        theirs = reference.generate(left_ids, attention_mask=left_mask, max_new_tokens=64, min_new_tokens=64,
                                    do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(cached, theirs[:, left_ids.shape[1]:])
    assert cached.shape == (3, 64)


def test_unpadded_generation_agrees_and_returns_an_ordinary_tensor():
    reference = qwen2()
    ours = LLM.from_hf(reference).eval()
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(8))
    cached = ours.generate(ids, max_new_tokens=16)  # no attention_mask: the decoding steps need no mask at all
    assert torch.equal(cached, ours.generate(ids, torch.ones_like(ids), max_new_tokens=16, use_cache=False))
    with torch.no_grad():
        theirs = reference.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, eos_token_id=None,
                                    pad_token_id=0)
    assert torch.equal(cached, theirs[:, ids.shape[1]:])
    assert not cached.is_inference()  # generate runs under inference_mode but hands back a tensor autograd accepts
    ours.train()(torch.cat([ids, cached], dim=1)).sum().backward()


def test_left_align_moves_padding_to_the_left_and_keeps_order():
    ids = torch.tensor([[5, 6, 0, 0], [0, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    aligned, aligned_mask = left_align(ids, mask)
    assert aligned.tolist() == [[0, 0, 5, 6], [0, 7, 8, 9]] and aligned_mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]


def test_eos_stops_a_row_and_repeats_eos():
    ours = LLM.from_hf(qwen2()).eval()
    ids, mask = padded_batch(seed=7)
    free = ours.generate(ids, mask, max_new_tokens=8)
    eos = int(free[0, 2])  # pretend the third token of row 0 is the end
    stopped = ours.generate(ids, mask, max_new_tokens=8, eos_id=eos)
    assert (stopped[0, 2:] == eos).all() and torch.equal(stopped[0, :3], free[0, :3])


def test_block_mask_restricts_attention_and_keeps_causality():
    allowed = torch.ones(1, 4, 4, dtype=torch.bool)
    allowed[0, 3, 1] = False  # token 3 may not see token 1
    mask = build_mask(allowed, 1, 4, 0, "cpu")[0, 0]
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False], [True, True, True, False],
                             [True, False, True, True]]


def test_new_token_rows_are_separate_and_used_for_ids_past_the_base_vocabulary():
    cfg = LLMConfig(vocab_size=VOCAB, hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, additional_vocab=5)
    model = LLM(cfg)
    assert model.embed.new.weight.shape == (5, 16)
    ids = torch.tensor([[0, VOCAB - 1, VOCAB, VOCAB + 4]])
    x = model.embed(ids)
    torch.testing.assert_close(x[0, 2], model.embed.new.weight[0])
    torch.testing.assert_close(x[0, 1], model.embed.base.weight[VOCAB - 1])
    assert model(ids).shape == (1, 4, VOCAB)  # the head predicts the base vocabulary only


def test_save_and_load_round_trip(tmp_path):
    ours = LLM.from_hf(olmo2()).eval()
    save_llm(ours, tmp_path / "llm")
    again = load_llm(tmp_path / "llm")
    ids = torch.arange(7)[None]
    with torch.no_grad():
        torch.testing.assert_close(again(ids), ours(ids))

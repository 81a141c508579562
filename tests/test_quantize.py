"""Chapter 11: the LLM in NF4 / int8 with bitsandbytes (checked against transformers' BitsAndBytesConfig), honest
memory figures, and QLoRA with peft (only the adapters, the connector and the new token rows train)."""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize
from torch import nn

bnb = pytest.importorskip("bitsandbytes")
pytest.importorskip("peft")

from molmo_lite import quantize as Q
from molmo_lite.config import MOLMO_PRESETS, LLMConfig
from molmo_lite.data.collate import collate
from molmo_lite.llm import LLM
from molmo_lite.model import MolmoLite
from molmo_lite.prompts import caption_prompt, pack, user_prompt

ANNOTATIONS = [[(user_prompt("What colour is the square?"), "blue")],
               [(caption_prompt(12), "a red circle at the top left and a green square")]]


@pytest.fixture(scope="module")
def model() -> MolmoLite:
    """The tiny geometry with Molmo's connector (no feature normalisation: the released models' path)."""
    from dataclasses import replace

    from molmo_lite.config import MOLMO_PRESETS

    torch.manual_seed(0)
    tiny = MOLMO_PRESETS["tiny"]
    return randomize(MolmoLite(replace(tiny, connector=replace(tiny.connector, feature_norm=0))), seed=3)


@pytest.fixture(scope="module")
def batch(model) -> dict[str, torch.Tensor]:
    """One packed example: an image (2 crops + global) and two annotations, as the trainer feeds it."""
    image = model.processor(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    return collate([(pack(model.tokenizer, ANNOTATIONS, image.tokens), image)], model.tokenizer.pad_id)


def _linears(module: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


# ---------------------------------------------------------------------------------------------- what is quantized


def test_quantize_llm_replaces_the_llm_projections_only():
    torch.manual_seed(0)
    config = LLMConfig(vocab_size=64, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                       tie_embeddings=False, additional_vocab=8)
    molmo = MolmoLite("tiny")
    untied = LLM(config)
    before = {k: v.clone() for k, v in molmo.state_dict().items()}
    Q.quantize_llm(molmo, "nf4")
    Q.quantize_llm(untied, "int8")
    quantized = {name for name, m in molmo.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(quantized) == 7 * molmo.config.llm.layers == len(_linears(molmo.llm))
    assert sum(isinstance(m, bnb.nn.Linear8bitLt) for m in untied.modules()) == 2 * 7
    assert type(untied.lm_head) is nn.Linear  # skipped by default, as transformers does
    for part in (molmo.vision, molmo.connector):  # ViT and connector stay plain fp32
        assert all(type(m) is nn.Linear and m.weight.dtype == torch.float32 for m in _linears(part).values())
    after = molmo.state_dict()
    for key, value in before.items():  # ... and so do embeddings, norms, biases and all the rest, bit for bit
        if not (key.endswith(".weight") and key.removesuffix(".weight") in quantized):
            assert torch.equal(after[key], value), key
    # Quantizing again leaves the quantized layers alone (re-quantizing uint8 codes is bnb's classic error).
    wq = molmo.llm.blocks[0].attention.wq
    assert Q.quantize_llm(molmo, "nf4").llm.blocks[0].attention.wq is wq
    with pytest.raises(ValueError, match="unknown quantization mode"):
        Q.quantize_llm(LLM(config), "fp4")


def test_a_quantized_layer_multiplies_by_its_rounded_weights():
    """y = x W'^T + b with W' = dequantize(W), exactly; W' is W rounded to the NF4 grid scaled by its block's absmax.

    No rounding moves a weight further than half the widest gap between neighbouring NF4 levels (between -1 and the
    next level), times the block's absmax. int8: half a step of row_absmax / 127, plus the fp16 rounding bnb applies
    before quantizing (at most 2^-11 relative, i.e. 127 * 2^-11 steps).
    """
    torch.manual_seed(0)
    linear = nn.Linear(128, 96)
    nn.init.normal_(linear.weight, std=0.05)
    w, x = linear.weight.detach(), torch.randn(3, 5, 128)
    levels = bnb.functional.get_4bit_type("nf4", device="cpu").sort().values
    half_gap = levels.diff().max().item() / 2
    for double_quant, slack in ((False, 1e-6), (True, 0.01)):  # the 8-bit absmax: within 1% of the true one
        layer = Q.quantize_linear(linear, "nf4", double_quant=double_quant).eval()
        dequantized = Q.dequantize_linear(layer)
        with torch.no_grad():
            assert torch.equal(layer(x), F.linear(x, dequantized, linear.bias))
        blocks, rounded = w.reshape(-1, Q.BLOCKSIZE), dequantized.reshape(-1, Q.BLOCKSIZE)
        absmax = blocks.abs().amax(dim=1, keepdim=True)
        assert ((rounded - blocks).abs() <= (half_gap + slack) * absmax).all()
        assert not torch.equal(dequantized, w)
    layer = Q.quantize_linear(linear, "int8").train()  # train mode: weights dequantized, input kept in fp32
    dequantized = Q.dequantize_linear(layer)
    torch.testing.assert_close(layer(x), F.linear(x, dequantized, linear.bias), rtol=1e-6, atol=1e-6)
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert ((dequantized - w).abs() <= (0.5 + 127 * 2**-11) * step + 1e-9).all()


@pytest.mark.skipif(not bnb.functional.has_avx512bf16(), reason="bnb's fused kernel exists on AVX512-BF16 CPUs only")
def test_bnb_fused_cpu_kernel_computes_in_bf16_and_is_off_by_default():
    torch.manual_seed(0)
    linear, x = nn.Linear(128, 96), torch.randn(3, 5, 128)
    exact = Q.quantize_linear(linear, "nf4").eval()
    fused = Q.quantize_linear(linear, "nf4", fused_cpu_kernel=True).eval()
    with torch.no_grad():
        reference = F.linear(x, Q.dequantize_linear(exact), linear.bias)
        assert torch.equal(exact(x), reference)
        out = fused(x)
    assert not torch.equal(out, reference)
    torch.testing.assert_close(out, reference, rtol=0.02, atol=0.02)  # bf16 keeps ~3 significant digits


# ------------------------------------------------------------------------------------------------------- memory


def test_nf4_weights_take_about_an_eighth_of_fp32(model):
    """First principles, per weight: 4 bits of code + an 8-bit absmax per block of 64 (double quantization) + an fp32
    scale per 256 blocks = 4 + 8/64 + 32/(64*256) = 4.127 bits, against 32 in fp32. On top, each layer holds small
    fixed tables (a 16-entry and a 256-entry fp32 code book and an fp32 offset: 1092 bytes), a visible share only in
    a model this small. A model of 7B weights in layers of millions of weights ends up at 4.127 / 32 = 0.129."""
    quantized = Q.quantize_llm(copy.deepcopy(model), "nf4")
    report = Q.quantized_linear_report(quantized)
    per_weight = (4 + 8 / 64 + 32 / (64 * 256)) / 32
    assert report["layers"] == 7 * model.config.llm.layers
    assert report["fp32_bytes"] == 4 * report["weights"]
    lower = per_weight * report["fp32_bytes"]
    upper = lower + report["layers"] * (4 + 16 * 4 + 256 * 4 + 1 + 4)  # + rounding up of the last block
    assert lower <= report["quantized_bytes"] <= upper
    assert report["ratio"] <= 0.3


def test_int8_weights_take_a_quarter_of_fp32_plus_a_scale_per_row(model):
    """First principles: 1 byte per weight + one fp32 absmax per output row: (n + 4 * rows) / (4 n)."""
    quantized = Q.quantize_llm(copy.deepcopy(model), "int8")
    report = Q.quantized_linear_report(quantized)
    layers = [m for m in quantized.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    expected = sum(m.in_features * m.out_features + 4 * m.out_features for m in layers)
    assert report["quantized_bytes"] == expected
    assert 0.25 < report["ratio"] <= 0.25 + 1 / min(m.in_features for m in layers) <= 0.27


def test_weight_memory_counts_quantized_storage_once(model):
    fp32 = copy.deepcopy(model.llm)
    quantized = Q.quantize_llm(copy.deepcopy(model.llm), "nf4")
    report = Q.quantized_linear_report(quantized)
    every_param = sum(p.numel() * p.element_size() for p in fp32.parameters())
    assert Q.weight_memory(fp32) == every_param
    # the same model, its projection weights swapped for their codes and statistics (biases, norms, embeddings kept)
    assert Q.weight_memory(quantized) == every_param - report["fp32_bytes"] + report["quantized_bytes"]


def test_footprint_formula_matches_what_bitsandbytes_allocates(model):
    """The shape-only NF4 / int8 formulas of footprint_table against the bytes measured on a quantized tiny model."""
    for mode in ("nf4", "int8"):
        rows = {r["part"]: r for r in Q.footprint_table(model.config)}
        measured = Q.quantized_linear_report(Q.quantize_llm(copy.deepcopy(model.llm), mode))["quantized_bytes"]
        biases = sum(m.bias.numel() for m in _linears(model.llm).values() if m.bias is not None)
        assert rows["LLM linear layers"][mode] == measured + 2 * biases  # biases kept in bf16


def test_footprint_table_of_molmo_7b_d_from_the_architecture():
    """Every count rewritten here from the released architecture (docs/molmo_recipe.md §2-§4 and the preset's config):
    CLIP ViT-L/14-336 cut to 23 blocks, the connector, and Qwen2-7B (28 layers of width 3584, 4 KV heads of 128,
    MLP 18944, vocabulary 152064 + 128 new rows, untied head)."""
    config = MOLMO_PRESETS["molmo-7b-d"]
    rows = {r["part"]: r for r in Q.footprint_table(config)}

    w, mlp, blocks, patches = 1024, 4096, 23, 24 * 24
    vit = 3 * 14 * 14 * w + w + (patches + 1) * w + 2 * w  # patch embedding (no bias), CLS, positions, ln_pre
    vit += blocks * (2 * 2 * w + 4 * (w * w + w) + (w * mlp + mlp) + (mlp * w + w))  # 2 LN, attention, MLP
    features, heads = 2 * w, 16 * 64
    connector = 2 * features + 3 * (features * heads + heads) + (heads * w + w)  # pad embeddings, attention pool
    connector += 2 * w * 18944 + 18944 * 3584  # SwiGLU projector, no biases
    d, kv, hidden, layers, vocab = 3584, 4 * 128, 18944, 28, 152064
    weights = [(d, d), (kv, d), (kv, d), (d, d), (hidden, d), (hidden, d), (d, hidden)] * layers  # [out, in]
    biases = layers * (d + 2 * kv)  # q, k, v
    embeddings = (vocab + 128) * d + vocab * d
    norms = layers * 2 * d + d

    assert rows["ViT"]["params"] == vit and rows["connector"]["params"] == connector
    assert rows["LLM linear layers"]["params"] == sum(o * i for o, i in weights) + biases
    assert rows["LLM embeddings + output head"]["params"] == embeddings
    assert rows["LLM norms"]["params"] == norms
    total = vit + connector + sum(o * i for o, i in weights) + biases + embeddings + norms
    assert rows["total"]["params"] == total
    assert abs(total / 8.02e9 - 1) < 0.01  # the model card's "8.02B params"
    assert rows["total"]["fp32"] == 4 * total and rows["total"]["bf16"] == 2 * total

    def nf4(o: int, i: int) -> int:  # 4-bit codes, uint8 absmax per 64, fp32 scale per 256 blocks, fixed tables
        blocks64 = math.ceil(o * i / 64)
        return o * i // 2 + blocks64 + 4 * math.ceil(blocks64 / 256) + (16 + 256 + 1) * 4

    kept_16bit = 2 * (vit + connector + embeddings + norms + biases)  # everything not quantized stays in bf16
    assert rows["total"]["nf4"] == kept_16bit + sum(nf4(o, i) for o, i in weights)
    assert rows["total"]["int8"] == kept_16bit + sum(o * i + 4 * o for o, i in weights)
    # docs/molmo_recipe.md §9: "NF4 7B needs ~12 GB" in practice: the weights are about half of it (activations of up to 13
    # crops, the KV cache, the CUDA context and non-quantized parts left in fp32 make up the rest).
    assert 5e9 < rows["total"]["nf4"] < 12e9 < rows["total"]["bf16"] < rows["total"]["fp32"]
    assert "| total |" in Q.format_footprint(list(rows.values()))


# ---------------------------------------------------------------------------------------------- logits and oracle


def test_quantized_logits_move_a_little_but_do_move(model, batch):
    """Bounded drift, and never zero (a zero drift would mean nothing was quantized). On a RANDOM model the logits
    are nearly tied (a spread of about 1 over 512 tokens), so top-1 flips happen at much smaller drifts than in a
    trained model; the bounds below leave room for that. 8 bits must drift less than 4."""
    drift = {mode: Q.logit_drift(model, Q.quantize_llm(copy.deepcopy(model), mode), batch) for mode in Q.MODES}
    for mode, d in drift.items():
        assert d["max_abs"] > 0, mode
        assert d["mean_abs"] < {"nf4": 0.3, "int8": 0.05}[mode] * d["reference_std"], (mode, d)
        assert d["top1_agreement"] >= {"nf4": 0.5, "int8": 0.85}[mode], (mode, d)
    assert drift["int8"]["mean_abs"] < drift["nf4"]["mean_abs"] / 4


@pytest.mark.parametrize("mode", Q.MODES)
def test_our_quantized_llm_matches_transformers_bitsandbytes_config(mode, tmp_path):
    """DESIGN's oracle: the same tiny Qwen2 weights quantized by transformers (BitsAndBytesConfig) and by
    quantize_llm give bit-identical codes and statistics in every layer; the logits then differ only by the
    unquantized arithmetic, which test_llm checks to 1e-5 (here it is usually exactly 0)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=97, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    randomize(Qwen2ForCausalLM(cfg), seed=1).save_pretrained(tmp_path / "qwen2")
    theirs = Q.use_fused_cpu_kernel(Q.load_hf_llm_quantized(tmp_path / "qwen2", mode), False)
    ours = Q.quantize_llm(LLM.from_hf(tmp_path / "qwen2").eval(), mode)
    assert type(theirs.lm_head) is nn.Linear and type(ours.lm_head) is nn.Linear
    pairs = [(ours.blocks[i].attention.wq, theirs.model.layers[i].self_attn.q_proj) for i in range(2)]
    pairs += [(ours.blocks[i].feed_forward.w2, theirs.model.layers[i].mlp.down_proj) for i in range(2)]
    for a, b in pairs:
        assert type(a) is type(b)
        if mode == "nf4":
            qa, qb = a.weight.quant_state, b.weight.quant_state
            assert torch.equal(a.weight.data, b.weight.data) and torch.equal(qa.absmax, qb.absmax)
            assert torch.equal(qa.state2.absmax, qb.state2.absmax) and torch.equal(qa.offset, qb.offset)
        else:
            assert torch.equal(a.weight.data, b.weight.data) and torch.equal(a.weight.SCB, b.weight.SCB)
    assert Q.quantized_linear_report(ours) == Q.quantized_linear_report(theirs)
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=1e-5, atol=1e-5)


def test_load_quantized_gives_the_model_quantized_in_memory(model, batch, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    loaded = Q.load_quantized(tmp_path / "ckpt", "nf4")
    in_memory = Q.quantize_llm(copy.deepcopy(model), "nf4")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, in_memory(**batch).logits, rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------------- QLoRA


@pytest.fixture(scope="module")
def qlora(model, batch):
    """A tiny QLoRA run: 6 AdamW steps on one batch. -> (model, trainable names, state before, losses, (logits of
    the quantized model, logits once the adapters are in, before any step))."""
    torch.manual_seed(0)
    quantized = Q.quantize_llm(copy.deepcopy(model), "nf4")
    with torch.no_grad():
        start_logits = quantized(**batch).logits
    adapted, names = Q.prepare_qlora(quantized, r=8, alpha=16)  # already quantized: kept as it is
    with torch.no_grad():
        adapted_logits = adapted(**batch).logits
    before = {name: p.detach().clone() for name, p in adapted.named_parameters()}
    for name, layer in adapted.named_modules():  # the 4-bit codes and their statistics, beside the parameters
        if isinstance(layer, bnb.nn.Linear4bit):
            before[name + "<codes>"] = layer.weight.data.clone()
            before[name + "<absmax>"] = layer.weight.quant_state.absmax.clone()
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=3e-3)
    adapted.train()
    losses = []
    for _ in range(6):
        loss = adapted(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return adapted.eval(), names, before, losses, (start_logits, adapted_logits)


def test_qlora_starts_from_the_quantized_model_and_its_loss_falls(qlora):
    adapted, _, _, losses, (quantized_logits, adapted_logits) = qlora
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    wq = adapted.llm.blocks[0].attention.wq
    assert isinstance(wq, LoraLinear4bit) and isinstance(wq.base_layer, bnb.nn.Linear4bit)  # peft's bnb-aware layer
    # LoRA's B starts at zero: before any step the adapted model computes exactly what the quantized one did
    torch.testing.assert_close(adapted_logits, quantized_logits, rtol=0, atol=0)
    assert losses[-1] < 0.8 * losses[0], losses


def test_qlora_changes_only_adapters_connector_and_new_token_rows(qlora, model):
    adapted, names, before, _, _ = qlora
    assert names and all(".lora_A." in n or ".lora_B." in n or n.startswith(("connector.", "llm.embed.new."))
                         for n in names)
    n_targets = 7 * model.config.llm.layers
    assert sum(".lora_A." in n for n in names) == sum(".lora_B." in n for n in names) == n_targets
    after = {name: p.detach() for name, p in adapted.named_parameters()}
    for name, layer in adapted.named_modules():
        if isinstance(layer, bnb.nn.Linear4bit):
            after[name + "<codes>"] = layer.weight.data
            after[name + "<absmax>"] = layer.weight.quant_state.absmax
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(names)  # every trainable tensor moved, and nothing else did
    frozen = set(before) - changed
    for prefix in ("vision.", "llm.embed.base.", "llm.norm."):
        assert any(n.startswith(prefix) for n in frozen), prefix
    assert any(n.endswith("<codes>") for n in frozen) and any("attention_norm" in n for n in frozen)
    assert any(n.endswith("base_layer.bias") for n in frozen)  # Qwen2's q/k/v biases stay as they were


def test_merged_qlora_model_is_a_plain_model_with_the_same_logits(qlora, batch, tmp_path):
    adapted = qlora[0]
    merged = Q.merge_qlora(adapted)
    assert not Q.is_quantized(merged)
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    drift = Q.logit_drift(adapted, merged, batch)
    assert drift["max_abs"] < 1e-4 and drift["top1_agreement"] == 1.0, drift  # only float rounding differs
    unmerged = Q.logit_drift(adapted, Q.merge_qlora(_without_adapters(adapted)), batch)
    assert unmerged["max_abs"] > 1e-3  # the adapters do matter: merging them is not a no-op
    reloaded = MolmoLite.from_pretrained(merged.save_pretrained(tmp_path / "merged"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, merged(**batch).logits, rtol=0, atol=0)


def _without_adapters(adapted: MolmoLite) -> MolmoLite:
    clone = copy.deepcopy(adapted)
    for name, p in clone.named_parameters():
        if ".lora_B." in name:
            p.data.zero_()
    return clone


def test_qlora_model_trains_checkpoints_and_resumes_through_the_trainer(model, tmp_path):
    """Chapter 08-09's Trainer on a QLoRA model, as chapter 11 runs it: the loss falls; the checkpoint holds the 4-bit
    codes with their statistics, and Adam moments for the trainable parameters only; a run stopped after 2 steps and
    resumed into a QLoRA model quantized from OTHER weights (loading restores codes and NF4 statistics) ends with
    exactly the state of an uninterrupted run."""
    from molmo_lite.config import TrainConfig
    from molmo_lite.data import synthetic
    from molmo_lite.train import StageData, Trainer, latest_checkpoint, read_training_state

    data = StageData({"scene_qa": synthetic.qa_examples(8, seed=0, split="train", size=56)})
    config = TrainConfig(stage="sft", steps=4, batch_size=2, lr_connector=3e-3, lr_llm=3e-3, warmup_connector=1,
                         warmup_llm=1, freeze=("vit",), log_every=1, save_every=2)

    def adapted(source: MolmoLite) -> tuple[MolmoLite, list[str]]:
        torch.manual_seed(0)  # peft draws each lora_A at random (B starts at zero)
        return Q.prepare_qlora(source, r=8, alpha=16)

    whole, names = adapted(copy.deepcopy(model))
    history = Trainer(whole, config, data, tmp_path / "whole", progress=False).fit()
    assert history[-1]["loss"] < history[0]["loss"], history
    state, optimizer, step, _ = read_training_state(latest_checkpoint(tmp_path / "whole"))
    assert step == 4 and set(optimizer["state"]) == set(names)
    assert state["llm.blocks.0.attention.wq.base_layer.weight"].dtype == torch.uint8
    assert "llm.blocks.0.attention.wq.base_layer.weight.absmax" in state

    Trainer(adapted(copy.deepcopy(model))[0], config, data, tmp_path / "sliced", progress=False).fit(
        stop_after=2)
    other = adapted(randomize(MolmoLite(model.config), seed=99))[0]
    assert not torch.equal(other.llm.blocks[0].attention.wq.base_layer.weight.quant_state.absmax,
                           whole.llm.blocks[0].attention.wq.base_layer.weight.quant_state.absmax)
    resumed = Trainer(other, config, data, tmp_path / "sliced", progress=False)
    resumed.fit(resume=True)
    assert resumed.step == 4
    expected, got = whole.state_dict(), other.state_dict()
    assert set(expected) == set(got)
    assert all(torch.equal(expected[k], got[k]) for k in expected), [k for k in expected
                                                                     if not torch.equal(expected[k], got[k])][:5]


# ------------------------------------------------------------------------------------------------------- import


def test_only_bitsandbytes_optional_kernel_warning_is_silenced():
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(logger.name, logging.WARNING, __file__, 1, message, None, None)

    assert not logger.filter(record("Failed to load CPU gemm_4bit_forward from kernels-community: no module"))
    assert logger.filter(record("Something else went wrong"))

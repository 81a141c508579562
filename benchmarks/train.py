"""Training throughput (tokens/s): molmo_lite's MolmoLite at the ``tiny`` preset vs transformers'
Molmo2ForConditionalGeneration at a matched tiny config, on the same batch.

A training step is what ``Trainer.train_step`` computes, minus its data drawing, learning-rate schedule and gradient
clipping: forward, the answer-token cross-entropy (``molmo_lite.model.answer_loss`` on both models' logits, so the
loss costs the same), backward, and one AdamW step (betas 0.9/0.95, eps 1e-6, no weight decay, lr 1e-4; torch's
defaults otherwise), fp32 on the CPU, torch's default thread count. Both models start from seeded random weights (each
library's own initialisation); before timing, the script checks that both losses are finite and that one step changes
the weights of the ViT, the connector and the LLM of both.

The batch: --batch sequences, each [BOS] + one 112 px image (seeded noise; 1 global + 2x2 crops of 56 px, 16 patches
each; 13 image features: 2x2 global + 3x3 high-res; 22 image tokens with <im_start>/<im_col>/<im_end>) + 24 random
prompt tokens + 48 random answer tokens and EOS, packed with ``prompts.pack`` and batched with ``collate`` as the
Trainer does. Molmo2 gets the same input_ids, the same crops (as patches), the same pooling indices
(``image_token_pooling``), image_grids (2, 2, 3, 3) and mm_token_type_ids = 1 on the image tokens (what its processor
marks). Tokens/s = every token of the batch (image tokens included, as the Trainer counts them) / seconds per step.
The candidates take turns (in a rotating order) so that both meet the same machine state; each one's time is the best
of --rounds tries of --steps consecutive steps.

The geometry is the same where Molmo2's config allows: ViT width 96, 4 layers, 4 heads, MLP 384, exact GELU, LayerNorm
eps 1e-5, patch 14, 56 px crops, features of the last and third-to-last blocks (2 x 96 channels); 2x2 attention
pooling with a mean query (4 heads of 24, to 96) and a SwiGLU projector (256 -> 128); a Qwen2-style LLM (hidden 128, 4
layers, 4 heads, 2 KV heads, MLP 384, qkv bias, RoPE theta 1e4, vocabulary 512 + 128 new rows). What differs, by design
of the two (the JSON records both configs and parameter counts):

- Molmo2's ViT (SigLIP layout) has no CLS token and no pre-LayerNorm and a bias on the patch embedding: 16 tokens per
  crop instead of our 17;
- Molmo2's LLM always has QK-norm (per head, Qwen3 style); Molmo 1 / Qwen2 and our tiny preset have none;
- Molmo2's image tokens attend to each other bidirectionally (its mask is built from mm_token_type_ids); Molmo 1 and
  molmo_lite are causal everywhere (with the packing rule of ``prompts.subsegment_mask``);
- Molmo2's output head is its own [512, 128] matrix (with transformers 5.24, ``tie_word_embeddings=True`` leaves it
  untied, so the config says False); our tiny preset ties it to the base embedding rows (65,536 fewer parameters);
- our connector adds Molmo 1's pad embeddings (a no-op here: these images have no padding); Molmo2 has none.

A third candidate removes those differences: the reference itself, written in the hub layout and read into
molmo_lite with ``from_released`` (family "molmo2", chapter 13), so the same architecture with the same weights; the
script checks that its logits equal the reference's (1e-4) before timing.

    python -m benchmarks.train [--rounds 20] [--steps 1] [--batch 8] [--out PATH] [--no-table]

Writes JSON (default benchmarks/results/train.json) and rewrites the table between the <!-- train-benchmark -->
markers of docs/benchmarks.md from it (tests/test_readme.py checks they agree).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import best_seconds, machine_info, publish
from molmo_lite.config import IM_COL, IM_END, IM_PATCH, IM_START, MolmoConfig
from molmo_lite.data.collate import collate
from molmo_lite.model import MolmoLite, answer_loss
from molmo_lite.preprocessing import patchify
from molmo_lite.prompts import pack

IMAGE_SIZE = 112  # px, square: 1 global + 2x2 crops at the tiny preprocessor's 56 px
PROMPT, ANSWER = 24, 48  # random text tokens per sequence: prompt (no loss), answer (loss; EOS added by pack)
LR, BETAS, EPS = 1e-4, (0.9, 0.95), 1e-6

OURS, HF = "molmo_lite MolmoLite", "transformers Molmo2ForConditionalGeneration"
OURS2 = "molmo_lite MolmoLite configured as Molmo2"
# which parameters belong to which part, by name prefix: the weight-change check wants all three to move
PARTS = {OURS: {"vit": ("vision.",), "connector": ("connector.",), "llm": ("llm.",)},
         OURS2: {"vit": ("vision.",), "connector": ("connector.",), "llm": ("llm.",)},
         HF: {"vit": ("model.vision_tower.",), "connector": ("model.multi_modal_projector.",),
              "llm": ("model.language_model.", "lm_head.")}}


class _IdsTokenizer:
    """What ``prompts.pack`` needs from a tokenizer, reading text as space-separated token ids: rows of exact lengths."""

    def __init__(self, tokenizer):
        self.bos_id, self.eos_id, self.token_to_id = tokenizer.bos_id, tokenizer.eos_id, tokenizer.token_to_id

    @staticmethod
    def encode(text: str) -> list[int]:
        return [int(word) for word in text.split()]


def image_grid(tokens: list[str]) -> tuple[int, int, int, int]:
    """Our image token layout (global image, then the high-res crops, each <im_start> rows of <im_patch>... <im_col>
    <im_end>) -> Molmo2's image_grids entry: (global rows, global cols, high-res rows, high-res cols) in tokens."""
    parts = [part.split() for part in " ".join(tokens).split(IM_END)]
    if len(parts) != 3 or parts[2] or any(words.count(IM_START) != 1 or IM_COL not in words for words in parts[:2]):
        raise ValueError(f"not a global image + high-res crops layout: {tokens}")
    (low_rows, low), (high_rows, high) = ((words.count(IM_COL), words.count(IM_PATCH)) for words in parts[:2])
    return low_rows, low // low_rows, high_rows, high // high_rows


def make_batch(model: MolmoLite, batch: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], list[tuple]]:
    """The Trainer's kind of batch (``collate`` of ``pack``ed sequences, see the module docstring) and each image's
    Molmo2 grid."""
    rng = np.random.default_rng(seed)
    tok = _IdsTokenizer(model.tokenizer)
    low = max(tok.bos_id, tok.eos_id, model.tokenizer.pad_id) + 1  # text ids: the base vocabulary minus specials
    encoded, grids = [], []
    for _ in range(batch):
        image = model.processor(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
        prompt, answer = (" ".join(map(str, rng.integers(low, model.config.llm.vocab_size, n))) for n in (PROMPT, ANSWER))
        encoded.append((pack(tok, [[(prompt, answer)]], image.tokens, weighting="none"), image))
        grids.append(image_grid(image.tokens))
    return collate(encoded, model.tokenizer.pad_id), grids


def reference_config(config: MolmoConfig, token_ids: dict[str, int]) -> dict:
    """The keyword arguments of a Molmo2Config as close to ``config`` as Molmo2 allows (see the module docstring)."""
    v, c, t = config.vision, config.connector, config.llm
    if v.blocks_used != v.layers or v.act != "gelu":
        raise ValueError("the matched config covers a ViT that uses all its blocks and exact GELU (the tiny preset)")
    return {
        "vision_config": {"hidden_size": v.width, "intermediate_size": v.mlp_width, "num_hidden_layers": v.layers,
                          "num_attention_heads": v.heads, "num_key_value_heads": v.heads, "head_dim": v.width // v.heads,
                          "hidden_act": "gelu", "layer_norm_eps": v.ln_eps, "image_size": [v.image_size] * 2,
                          "patch_size": v.patch_size},
        "adapter_config": {"vision_feature_layer": list(v.feature_layers), "hidden_size": c.pool_dim,
                           "num_attention_heads": c.heads, "num_key_value_heads": c.heads, "head_dim": c.head_dim,
                           "intermediate_size": c.hidden_dim, "text_hidden_size": c.llm_dim, "hidden_act": "silu"},
        "text_config": {"hidden_size": t.hidden, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
                        "num_key_value_heads": t.kv_heads, "head_dim": t.dim_per_head, "intermediate_size": t.intermediate,
                        "vocab_size": t.vocab_size, "additional_vocab_size": t.additional_vocab,
                        "attention_bias": t.qkv_bias, "rms_norm_eps": t.rms_eps, "max_position_embeddings": 4096,
                        "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta},
                        "tie_word_embeddings": False},
        "image_start_token_id": token_ids[IM_START], "low_res_image_start_token_id": token_ids[IM_START],
        "image_end_token_id": token_ids[IM_END], "image_patch_id": token_ids[IM_PATCH], "tie_word_embeddings": False,
    }


def reference_model(kwargs: dict, seed: int = 0):
    """A seeded random transformers Molmo2ForConditionalGeneration (its own initialisation), in training mode."""
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration

    torch.manual_seed(seed)
    return Molmo2ForConditionalGeneration(Molmo2Config(**kwargs)).train()


def reference_inputs(batch: dict[str, torch.Tensor], grids: list[tuple], image_token_ids: list[int],
                     patch_size: int) -> dict[str, torch.Tensor]:
    """The same batch as Molmo2's forward reads it."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "position_ids": batch["position_ids"], "pixel_values": patchify(batch["crops"], patch_size),
            "image_token_pooling": batch["pooled_patches_idx"], "image_grids": torch.tensor(grids),
            "mm_token_type_ids": torch.isin(batch["input_ids"], torch.tensor(image_token_ids)).long()}


def as_molmo2(reference, tokenizer) -> MolmoLite:
    """The reference's own weights and config read into molmo_lite's modules: written in the hub layout and loaded
    with ``from_released`` (family "molmo2": no CLS / pre-LN, patch bias, per-head q/k norm, bidirectional image
    attention). The same architecture, parameter for parameter."""
    import tempfile

    from molmo_lite.released import save_molmo2_hub_layout

    with tempfile.TemporaryDirectory() as tmp:
        save_molmo2_hub_layout(reference, tmp)
        processor = {"size": {"height": 56, "width": 56}, "patch_size": 14, "max_crops": 4, "overlap_margins": [1, 1],
                     "pooling_size": [2, 2]}  # the tiny crops (the batch's crops come from the tiny preprocessor)
        (Path(tmp) / "preprocessor_config.json").write_text(json.dumps(processor))
        return MolmoLite.from_released(tmp, tokenizer=tokenizer).train()


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: dict[str, torch.Tensor],
                  targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Forward, answer-token loss, backward, AdamW; returns the loss (detached)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(**inputs).logits
    loss, _, _ = answer_loss(logits, targets, weights)
    loss.backward()
    optimizer.step()
    return loss.detach()


def check_step(name: str, model: nn.Module, step: Callable[[], torch.Tensor]) -> float:
    """One step (also the warm-up): the loss must be finite and every part (ViT, connector, LLM) must change."""
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    loss = step()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{name}: the loss is {loss.item()}")
    changed = {k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])}
    for part, prefixes in PARTS[name].items():
        if not any(k.startswith(prefixes) for k in changed):
            raise AssertionError(f"{name}: one training step left every {part} weight unchanged")
    return float(loss)


def readme_table(result: dict) -> str:
    """The markdown table of docs/benchmarks.md for a benchmark result."""
    lines = ["| model | parameters | tokens/s | ms / step | vs transformers |", "|---|---|---|---|---|"]
    for name in (OURS, OURS2, HF):
        ratio = result["tokens_per_second"][name] / result["tokens_per_second"][HF]
        lines.append(f"| {name} | {result['parameters'][name]:,} | {result['tokens_per_second'][name]:.0f} "
                     f"| {1000 * result['seconds_per_step'][name]:.1f} | {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1, help="consecutive training steps per timed try")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    parser.add_argument("--no-table", "--no-readme", dest="no_readme", action="store_true",
                        help="do not rewrite its table in docs/benchmarks.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    ours = MolmoLite("tiny").train()
    image_ids = [ours.tokenizer.token_to_id(t) for t in (IM_START, IM_END, IM_PATCH, IM_COL)]
    hf_kwargs = reference_config(ours.config, dict(zip((IM_START, IM_END, IM_PATCH, IM_COL), image_ids)))
    reference = reference_model(hf_kwargs)
    ours2 = as_molmo2(reference, ours.tokenizer)

    batch, grids = make_batch(ours, args.batch)
    targets, weights = batch.pop("target_ids"), batch.pop("loss_weights")
    hf_inputs = reference_inputs(batch, grids, image_ids, ours.config.vision.patch_size)
    n_features = int((batch["input_ids"] == ours.image_patch_id).sum())
    assert n_features == len(batch["pooled_patches_idx"]) == sum(a * b + c * d for a, b, c, d in grids)

    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0)
                  for name, model in ((OURS, ours), (OURS2, ours2), (HF, reference))}
    fns = {OURS: lambda: training_step(ours, optimizers[OURS], batch, targets, weights),
           OURS2: lambda: training_step(ours2, optimizers[OURS2], batch, targets, weights),
           HF: lambda: training_step(reference, optimizers[HF], hf_inputs, targets, weights)}
    with torch.no_grad():
        logits = {OURS: ours(**batch).logits, OURS2: ours2(**batch).logits, HF: reference(**hf_inputs).logits}
    shapes = {name: x.shape for name, x in logits.items()}
    assert len(set(shapes.values())) == 1 and shapes[OURS] == (*batch["input_ids"].shape, ours.config.llm.vocab_size)
    real = batch["attention_mask"].bool()  # padding positions are never read
    same_model_gap = float((logits[OURS2] - logits[HF])[real].abs().max())
    if same_model_gap > 1e-4:  # the Molmo2-configured model must compute what transformers' does, weights and all
        raise AssertionError(f"{OURS2} and {HF} differ by {same_model_gap:.2e} on the same weights")
    models = ((OURS, ours), (OURS2, ours2), (HF, reference))
    first_loss = {name: round(check_step(name, model, fns[name]), 4) for name, model in models}

    seconds = best_seconds(fns, args.rounds, repeat=args.steps)
    tokens = int(batch["attention_mask"].sum())
    tokens_per_second = {name: tokens / s for name, s in seconds.items()}
    b, t = batch["input_ids"].shape
    result = {
        "benchmark": "train",
        "preset": "tiny",
        "step": "fp32 CPU: forward, answer_loss on the logits, backward, AdamW "
                f"(lr {LR}, betas {list(BETAS)}, eps {EPS}, no weight decay)",
        "batch": {"sequences": b, "tokens_per_sequence": t, "tokens": tokens, "loss_tokens": int((weights > 0).sum()),
                  "image_size": IMAGE_SIZE, "images_per_sequence": 1, "crops_per_image": len(batch["crops"]) // b,
                  "patches_per_crop": batch["patch_pad_fraction"].shape[1], "image_features_per_image": n_features // b,
                  "image_tokens_per_sequence": int(hf_inputs["mm_token_type_ids"].sum()) // b,
                  "prompt_tokens": PROMPT, "answer_tokens": ANSWER + 1, "image_grids": list(grids[0])},
        "configs": {OURS: ours.config.to_dict(), OURS2: ours2.config.to_dict(), HF: hf_kwargs},
        "parameters": {name: sum(p.numel() for p in model.parameters()) for name, model in models},
        "parameters_by_part": {name: {part: sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefixes))
                                      for part, prefixes in PARTS[name].items()}
                               for name, model in models},
        "max_logit_difference_same_weights": {f"{OURS2} vs {HF}": same_model_gap},
        "transformers_attention": reference.config._attn_implementation,
        "first_step_loss": first_loss,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "seconds_per_step": {k: round(v, 5) for k, v in seconds.items()},
        "tokens_per_second": {k: round(v, 1) for k, v in tokens_per_second.items()},
        "ratio_ours_vs_transformers": round(tokens_per_second[OURS] / tokens_per_second[HF], 3),
        "ratio_ours_as_molmo2_vs_transformers": round(tokens_per_second[OURS2] / tokens_per_second[HF], 3),
        "machine": machine_info(),
    }
    for name, value in tokens_per_second.items():
        print(f"{name:<46} {value:9.1f} tokens/s  ({1000 * seconds[name]:.1f} ms / step)")
    print(f"ours / transformers: {result['ratio_ours_vs_transformers']:.2f}x; configured as Molmo2 (same weights, "
          f"logits within {same_model_gap:.1e}): {result['ratio_ours_as_molmo2_vs_transformers']:.2f}x")
    publish("train", result, readme_table(result), args.out, update_page=not args.no_readme)


if __name__ == "__main__":
    main()

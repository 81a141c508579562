"""Quantized Molmo (chapter 11), measured side by side: memory, logit drift and speed of the tiny Molmo in fp32, NF4
and int8 (bitsandbytes, only the LLM's linear layers quantized, as ``molmo_lite.quantize``), plus Molmo-7B-D's weight
footprint computed from its shapes.

The model is the course's tiny Molmo with its pretrained parts (``train.tiny_model``: chapter 02's ViT, chapter 04's
LM, a fresh connector), three copies: fp32, NF4 (double quantization) and int8. The batch: --batch held-out SFT
examples (pointing scenes, clocks, charts, ... drawn with the trainer's own sampling), encoded and collated as the
trainer does. Figures:

- weight bytes of the quantized linear layers against the same weights in fp32, and of the whole model;
- logit drift against fp32 on the batch's real tokens (max / mean |difference|, top-1 agreement);
- forward time (no gradients) and training-step time (forward + backward, QLoRA: LoRA r=8 + connector trainable):
  the variants take turns in rotating order, best of --rounds each, so all meet the same machine state;
- Molmo-7B-D's weights per format, from shapes (``quantize.footprint_table``), as a ratio to bf16.

    python -m benchmarks.quantize [--rounds 10] [--batch 8] [--out PATH] [--no-table]

Writes JSON (default benchmarks/results/quantize.json) and rewrites the table between the <!-- quantize-benchmark -->
markers of docs/benchmarks.md (tests/test_readme.py checks they agree).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import best_seconds, machine_info, publish
from molmo_lite import quantize
from molmo_lite.config import MOLMO_PRESETS, TRAIN_PRESETS
from molmo_lite.data.collate import collate, encode_example
from molmo_lite.model import answer_loss
from molmo_lite.train import stage_data, tiny_model

VARIANTS = ("fp32", "nf4", "int8")


def make_batch(model, n: int) -> dict[str, torch.Tensor]:
    """n held-out SFT examples of the tiny presets' mixture, encoded and collated as the trainer does."""
    config = TRAIN_PRESETS["tiny-sft"]
    data = stage_data(config, split="heldout", n=max(8, n))
    rng = np.random.default_rng(0)
    examples = data.draw(rng, n)
    encoded = [encode_example(ex, model.processor, model.tokenizer, rng, "root_subsegments") for ex in examples]
    return collate(encoded, model.tokenizer.pad_id)


def readme_table(result: dict) -> str:
    mem, drift, fwd, step = (result[k] for k in ("memory", "drift", "forward_seconds", "train_step_seconds"))
    lines = ["| tiny Molmo | quantized linears / fp32 | whole model (MB) | logits max / mean abs diff | top-1 agreement "
             "| forward speed vs fp32 | training-step speed vs fp32 full fine-tuning |", "|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        ratio = "1.00x" if name == "fp32" else f"{mem[name]['linear_ratio']:.3f}x"
        diff = "0 / 0" if name == "fp32" else f"{drift[name]['max_abs']:.3f} / {drift[name]['mean_abs']:.4f}"
        agree = "1.000" if name == "fp32" else f"{drift[name]['top1_agreement']:.3f}"
        train = "" if name not in step else f"{step['fp32'] / step[name]:.2f}x"
        label = {"fp32": "fp32", "nf4": "NF4 + double quant (QLoRA for training)", "int8": "int8 (LLM.int8())"}[name]
        lines.append(f"| {label} | {ratio} | {mem[name]['model_bytes'] / 1e6:.2f} | {diff} | {agree} "
                     f"| {fwd['fp32'] / fwd[name]:.2f}x | {train} |")
    lines += ["", "Molmo-7B-D weights from its shapes (ViT and connector in bf16 in the int8 / NF4 columns):", "",
              "| | fp32 | bf16 | int8 | NF4 |", "|---|---|---|---|---|"]
    total = result["molmo_7b_d_bytes"]
    lines.append("| GB | " + " | ".join(f"{total[f] / 1e9:.2f}" for f in quantize.FOOTPRINT_FORMATS) + " |")
    lines.append("| vs bf16 | " + " | ".join(f"{total[f] / total['bf16']:.2f}x" for f in quantize.FOOTPRINT_FORMATS)
                 + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quantize.json")
    parser.add_argument("--no-table", "--no-readme", dest="no_readme", action="store_true",
                        help="do not rewrite its table in docs/benchmarks.md")
    args = parser.parse_args()

    base = tiny_model(0).eval()
    models = {"fp32": base, "nf4": quantize.quantize_llm(copy.deepcopy(base), "nf4"),
              "int8": quantize.quantize_llm(copy.deepcopy(base), "int8")}
    batch = make_batch(base, args.batch)
    targets, weights = batch.pop("target_ids"), batch.pop("loss_weights")
    memory = {name: {"model_bytes": quantize.weight_memory(m),
                     "linear_ratio": quantize.quantized_linear_report(m)["ratio"] if name != "fp32" else 1.0}
              for name, m in models.items()}
    drift = {name: quantize.logit_drift(base, models[name], batch) for name in ("nf4", "int8")}

    def forward(model):
        def run():
            with torch.no_grad():
                model(**batch)
        return run

    forward_seconds = best_seconds({name: forward(m) for name, m in models.items()}, args.rounds,
                                   warmup=True)

    # Training steps: fp32 full fine-tuning vs QLoRA (NF4 base, LoRA r=8 + connector), AdamW, same batch.
    full = copy.deepcopy(base).train()
    qlora, trainable = quantize.prepare_qlora(copy.deepcopy(base))
    qlora.train()

    def step(model):
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5)

        def run():
            optimizer.zero_grad(set_to_none=True)
            loss, _, _ = answer_loss(model(**batch).logits, targets, weights)
            loss.backward()
            optimizer.step()
        return run

    step_seconds = best_seconds({"fp32": step(full), "nf4": step(qlora)}, args.rounds, warmup=True)
    footprint = {r["part"]: r for r in quantize.footprint_table(MOLMO_PRESETS["molmo-7b-d"])}
    tokens = int(batch["attention_mask"].sum())
    result = {
        "benchmark": "quantize",
        "model": "tiny Molmo, pretrained parts (train.tiny_model)",
        "batch": {"sequences": int(batch["input_ids"].shape[0]), "tokens": tokens},
        "memory": memory,
        "drift": drift,
        "forward_seconds": {k: round(v, 5) for k, v in forward_seconds.items()},
        "train_step_seconds": {k: round(v, 5) for k, v in step_seconds.items()},
        "qlora_trainable_parameters": sum(p.numel() for n, p in qlora.named_parameters() if n in set(trainable)),
        "full_parameters": sum(p.numel() for p in full.parameters()),
        "molmo_7b_d_bytes": {f: footprint["total"][f] for f in quantize.FOOTPRINT_FORMATS},
        "rounds": args.rounds,
        "machine": machine_info(),
    }
    print(readme_table(result))
    publish("quantize", result, readme_table(result), args.out, update_page=not args.no_readme)


if __name__ == "__main__":
    main()

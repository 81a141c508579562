"""Minutes per chapter: executes every chapter notebook (notebooks/NN_*.ipynb) in order, as a student would run it
top to bottom in a fresh kernel, and records its wall time. The README's syllabus table is written from the JSON by
this script (its minutes column is these measurements; tests/test_readme.py checks they agree).

The notebooks run in their own folder with the repository's checkpoints/ as the chapters before them leave it (chapter
02 and 04 cache the tiny encoder and LM that later chapters load). Nothing is written back to the notebooks. With --quick
MOLMO_LITE_QUICK is set, so the training chapters run their shortened loops (what `make test` runs); by default they
run in full, as a student runs them.

    python -m benchmarks.notebooks [--quick] [--only 00 11] [--out PATH] [--no-table]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import nbformat

from benchmarks.common import machine_info, publish

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# chapter number -> (title, what you build, checked against, does a GPU help?)
SYLLABUS: dict[str, tuple[str, str, str, str]] = {
    "00": ("start here", "the environment check (also `python -m molmo_lite doctor`), a map of Molmo's four parts "
           "and of the course, how chapters, exercises and solutions fit", "—", "no"),
    "01": ("crops", "`select_tiling`, resize-and-pad, overlapping crops, pooled-patch indices, image-token layout",
           "`transformers` Molmo2ImageProcessor (500 random sizes)", "no"),
    "02": ("vision encoder", "CLIP ViT from scratch, two-layer features, loading open_clip weights, tiny CLIP "
           "pre-training", "`open_clip` (every block's output)", "a little"),
    "03": ("connector", "pad embeddings, 2x2 attention pooling, SwiGLU projector", "`transformers` Molmo2Adapter",
           "no"),
    "04": ("language model", "tokenizer with Molmo's image tokens, RMSNorm, RoPE, GQA, SwiGLU, KV cache, tiny LM "
           "pre-training", "`transformers` Qwen2 / OLMo 2 (logits, greedy tokens)", "a little"),
    "05": ("assembled model", "`MolmoLite`: image tokens, features added at `<im_patch>`, Molmo's prompt formats, "
           "multi-annotation packing, answer-only loss, batched cached generation, checkpoints",
           "each packed annotation vs the same annotation alone (losses and logits to 1e-5)", "no"),
    "06": ("pointing", "points as text, a parser that never raises, drawing, Hungarian matching and F1, counting "
           "accuracy", "Molmo's own point regex (`extract_points`) on answers in its format", "no"),
    "07": ("PixMo data", "loaders for the nine PixMo datasets (offline samples in their real schemas, robust "
           "downloads), synthetic scenes / captions / QA / clocks / charts / tables, packing, sqrt-size mixture",
           "the datasets' schemas; pixels of every synthetic answer", "no"),
    "08": ("stage 1", "the trainer: Molmo's parameter groups and learning rates, warmup + cosine, global-batch loss, "
           "exact resume; dense-caption training; LLaVA-style frozen ablation",
           "a killed-and-resumed run equals an uninterrupted one (tests)", "yes (trains on it, bf16)"),
    "09": ("stage 2", "the SFT mixture at sqrt-size rates, style rules, packed annotations weighted sqrt(1/N); "
           "packing-weight ablation", "—", "yes (trains on it, bf16)"),
    "10": ("evaluation", "pointing F1, counting, clocks, chart/table QA, captions on held-out data; predictions drawn",
           "Molmo's metric rules (docs/molmo_recipe.md §6)", "yes (faster generation)"),
    "11": ("quantized", "NF4 and int8 with bitsandbytes, memory and logit drift, QLoRA with peft through the "
           "trainer, merge-and-save; Molmo-7B-D's memory table", "`transformers` + BitsAndBytesConfig (same codes, "
           "same logits)", "yes (7B in 4 bits)"),
    "12": ("multi-GPU", "torchrun, DDP and FSDP2 with the same trainer, no redundant all-reduce under accumulation, "
           "checkpoints across world sizes, activation checkpointing", "1 process with the same global batch (equal "
           "weights)", "yes (several GPUs)"),
    "13": ("released Molmo", "`MolmoLite.from_released`: allenai's Molmo-7B-D / 7B-O layout tensor by tensor, the "
           "fused q/k/v and up/gate split, memory in fp32 / bf16 / NF4 from the shapes, prompt and pointing, clear "
           "errors for bad folders; Molmo2 as switches of the same modules (SigLIP-style ViT, per-head q/k norm, "
           "bidirectional image attention), loaded from its hub layout", "the model a tiny released-layout checkpoint "
           "was written from (logits to 1e-5); `transformers`' Molmo2 loader (same split); `transformers` "
           "Molmo2ForConditionalGeneration (logits to 1e-4)", "yes (the real 7B, after a download)"),
}


def chapter_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, timeout: float) -> float:
    """Run a notebook top to bottom in a fresh kernel in its folder; its wall seconds (the notebook is not saved)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def readme_table(result: dict) -> str:
    lines = ["| chapter | what you build | checked against | minutes (2-core CPU) | GPU helps |",
             "|---|---|---|---|---|"]
    for name, seconds in result["seconds"].items():
        number = name[:2]
        title, build, oracle, gpu = SYLLABUS[number]
        lines.append(f"| [{number} {title}](notebooks/{name}) | {build} | {oracle} | {seconds / 60:.1f} | {gpu} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="set MOLMO_LITE_QUICK=1 (what `make test` runs): the "
                        "training chapters' shortened loops")
    parser.add_argument("--only", nargs="*", default=None, help="chapter numbers to (re)measure, keeping the others")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per cell")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "notebooks.json")
    parser.add_argument("--no-table", "--no-readme", dest="no_readme", action="store_true",
                        help="do not rewrite its table in README.md's syllabus")
    args = parser.parse_args()
    if args.quick:
        os.environ["MOLMO_LITE_QUICK"] = "1"
    else:
        os.environ.pop("MOLMO_LITE_QUICK", None)
    previous = json.loads(args.out.read_text())["seconds"] if args.only and args.out.exists() else {}
    seconds = {}
    for path in chapter_notebooks():
        if path.name[:2] not in SYLLABUS:
            raise SystemExit(f"{path.name}: add its chapter to SYLLABUS in {__file__}")
        if args.only and path.name[:2] not in args.only and path.name in previous:
            seconds[path.name] = previous[path.name]
            continue
        seconds[path.name] = round(execute(path, args.timeout), 1)
        print(f"{path.name:<40} {seconds[path.name] / 60:6.1f} min", flush=True)
    mode = "quick (shortened loops, as make test)" if args.quick else "full"
    result = {"benchmark": "notebooks", "mode": mode, "seconds": seconds,
              "total_minutes": round(sum(seconds.values()) / 60, 1), "machine": machine_info()}
    publish("notebooks", result, readme_table(result), args.out, update_page=not args.no_readme)


if __name__ == "__main__":
    main()

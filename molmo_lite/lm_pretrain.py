"""Pre-training the tiny language model on the course's own text (chapter 04).

Molmo starts from a pretrained LLM (Qwen2, OLMo); the course's tiny LLM learns the language it will need -- captions,
prompts, pointing tags with coordinates, counts, clock times -- by next-token prediction on ``course_corpus()``.
Lines are tokenized, joined with EOS and cut into fixed-length windows (GPT-style packing). ``tiny_lm()`` gives later
chapters that model, training it first if it is missing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import CHECKPOINT_DIR, LLM_PRESETS, LLMConfig
from .data.corpus import EXTRA_KINDS, KINDS, course_corpus
from .llm import LLM, load_llm, save_llm
from .tokenizer import MolmoTokenizer


def pack_lines(tokenizer: MolmoTokenizer, lines: list[str], seq_len: int) -> torch.Tensor:
    """Tokenize lines, join them with EOS, and cut into windows [n, seq_len + 1] (inputs = [:-1], targets = [1:])."""
    ids: list[int] = []
    for line in lines:
        ids.extend(tokenizer.encode(line))
        ids.append(tokenizer.eos_id)
    n = len(ids) // (seq_len + 1)
    return torch.tensor(ids[: n * (seq_len + 1)], dtype=torch.long).view(n, seq_len + 1)


def lm_loss(model: LLM, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over windows [B, L + 1]."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate_loss(model: LLM, windows: torch.Tensor, batch_size: int = 64) -> float:
    model.eval()
    losses = [lm_loss(model, windows[i : i + batch_size]).item() * len(windows[i : i + batch_size])
              for i in range(0, len(windows), batch_size)]
    return sum(losses) / len(windows)


def train_lm(model: LLM, windows: torch.Tensor, steps: int = 400, batch_size: int = 16, lr: float = 3e-3,
             seed: int = 0, log_every: int = 50, print_every: int | None = None) -> list[dict]:
    """AdamW (0.9, 0.95), linear warmup then cosine to 10%, grad clipping 1.0; returns the loss history.
    print_every: also print a line (step, loss, seconds) that often, for a notebook cell that runs for minutes."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    history, start = [], time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        batch = windows[torch.randint(len(windows), (batch_size,), generator=gen)]
        loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            history.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - start})
        if print_every and (step % print_every == 0 or step == steps):
            print(f"step {step:>5}/{steps}  loss {loss.item():.3f}  {time.perf_counter() - start:.0f} s", flush=True)
    model.eval()
    return history


def complete(model: LLM, tokenizer: MolmoTokenizer, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
    """Greedy continuations of ``prompts`` (batched, left-padded), cut at EOS."""
    ids, mask = tokenizer.encode_batch(prompts, pad_side="left")
    new = model.generate(ids, mask, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id)
    texts = []
    for row in new.tolist():
        row = row[: row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row
        texts.append(tokenizer.decode(row))
    return texts


@torch.no_grad()
def scene_text_scores(model: LLM, tokenizer: MolmoTokenizer, n: int = 100, seed: int = 20_261_206,
                      max_new_tokens: int = 180) -> dict[str, float]:
    """How well an LM answers chapter 07's scenes written as text (corpus kind "scene", question first): pointing
    F1 and counting exact, with Molmo's rules, on n fresh scenes (a seed no corpus uses), greedy answers."""
    import numpy as np

    from .data.corpus import scene_prompt
    from .data.synthetic import pointing_example
    from .pointing import average_counting_metrics, average_pointing_metrics, counting_metrics, pointing_metrics
    from .prompts import format_messages

    rng = np.random.default_rng(seed)
    examples = [pointing_example(rng, render=False) for _ in range(n)]
    prompts = [scene_prompt(format_messages(ex.messages[k])[0][0], ex.meta["objects"])
               for ex in examples for k in (0, 1)]  # pointing, counting
    said = []
    for i in range(0, len(prompts), 32):
        said += complete(model, tokenizer, prompts[i:i + 32], max_new_tokens=max_new_tokens)
    pointing = average_pointing_metrics(pointing_metrics(said[2 * i], ex.meta["points"]) for i, ex in
                                        enumerate(examples))
    counting = average_counting_metrics(counting_metrics(said[2 * i + 1], ex.meta["count"]) for i, ex in
                                        enumerate(examples))
    return {"pointing_f1": pointing.f1, "counting_exact": counting.correct, "n": n}


SAMPLE_PROMPTS = [" long_caption 40:", " User: point_qa: Point to the red circle Assistant:",
                  " User: clocks: What time is it? Assistant:", " User: How many blue shapes are there? Assistant:"]


def pretrain_tiny_lm(steps: int = 400, seq_len: int = 128, n_lines: int = 20000, seed: int = 0,
                     config: LLMConfig | None = None, kinds: tuple[str, ...] = KINDS, print_every: int | None = None
                     ) -> tuple[LLM, MolmoTokenizer, dict]:
    """Train the tiny LLM on the course corpus (its line ``kinds``); returns model, tokenizer and a report (held-out
    loss before/after, samples before/after)."""
    torch.manual_seed(seed)
    tokenizer = MolmoTokenizer.tiny()
    config = config or LLM_PRESETS["tiny"]
    train = pack_lines(tokenizer, course_corpus(n_lines, seed=seed, kinds=kinds), seq_len)
    heldout = pack_lines(tokenizer, course_corpus(1000, seed=seed + 10_000, kinds=kinds), seq_len)
    model = LLM(config)
    report = {"heldout_loss_before": evaluate_loss(model, heldout),
              "samples_before": complete(model, tokenizer, SAMPLE_PROMPTS)}
    report["history"] = train_lm(model, train, steps=steps, seed=seed, print_every=print_every)
    report["heldout_loss_after"] = evaluate_loss(model, heldout)
    report["samples_after"] = complete(model, tokenizer, SAMPLE_PROMPTS)
    return model, tokenizer, report


def tiny_lm(directory: Path | None = None, steps: int = 400, kinds: tuple[str, ...] = KINDS) -> LLM:
    """The tiny pretrained LLM of chapter 04: loaded from ``directory`` (default checkpoints/tiny_lm, or
    checkpoints/tiny_lm_<kinds> for a corpus of fewer line kinds), or trained and saved there first if it is missing
    (a minute or two on a laptop CPU)."""
    kinds = tuple(k for k in KINDS + tuple(EXTRA_KINDS) if k in kinds)
    default = "tiny_lm" if kinds == KINDS else "tiny_lm_" + "-".join(kinds)
    directory = Path(directory or CHECKPOINT_DIR / default)
    if not (directory / "model.safetensors").exists():
        from .config import shown_path

        print(f"{shown_path(directory)} is missing: pre-training the tiny LM ({steps} steps, chapter 04; about a "
              "minute on 2 cores), once", flush=True)
        model, _, report = pretrain_tiny_lm(steps=steps, kinds=kinds, print_every=100)
        save_llm(model, directory)
        print(f"saved to {shown_path(directory)}: held-out loss {report['heldout_loss_before']:.2f} -> "
              f"{report['heldout_loss_after']:.2f}", flush=True)
    return load_llm(directory)


def main(argv: list[str] | None = None) -> None:
    """python -m molmo_lite.lm_pretrain [--steps N] [--kinds caption,...,scene] [--seq-len L] [--out DIR]"""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Pre-train the tiny LM on the course corpus (chapter 04).")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"line kinds, comma-separated, from {KINDS + tuple(EXTRA_KINDS)}")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--out", type=Path, required=True, help="the folder to save the LLM to")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start = time.perf_counter()
    kinds = tuple(args.kinds.split(","))
    model, _, report = pretrain_tiny_lm(steps=args.steps, seq_len=args.seq_len, n_lines=args.lines, kinds=kinds,
                                        print_every=100)
    save_llm(model, args.out)
    summary = {"steps": args.steps, "kinds": args.kinds, "seq_len": args.seq_len, "lines": args.lines,
               "minutes": (time.perf_counter() - start) / 60, "heldout_loss_before": report["heldout_loss_before"],
               "heldout_loss_after": report["heldout_loss_after"], "samples_after": report["samples_after"]}
    if "scene" in kinds:
        summary["scene_text"] = scene_text_scores(model, MolmoTokenizer.tiny())
    (args.out / "pretrain.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

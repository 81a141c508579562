"""One prepared GPU check (about 8 minutes on one GPU): the course's GPU paths run, and what they measure.

Five sections, each in its own try/except (a failing section records {"error": ...} and the others still run), each
with its wall seconds, under one time guard (--budget-s, default 450 s: a section that would start after it records
{"skipped": "time budget"}):

- ``train``: the ``small`` preset (random weights, as ``train.build_model("small")`` starts it) trained by the
  course's Trainer with the ``small-caption`` recipe (a fresh synthetic example at every draw, batch 32) for 200
  steps, ``Trainer.train_step`` each (data drawing, schedule, bf16 autocast, clipping, AdamW): tokens/s (every step
  but the first, the warm-up), the data's own seconds per step (``train.step_batches``, CPU side), peak CUDA memory,
  and the mean loss of the first and of the last 20 steps (it must fall);
- ``transformers_molmo2``: one training step (forward in bf16 autocast, ``model.answer_loss``, backward, AdamW) of
  MolmoLite ``small`` and of transformers' Molmo2ForConditionalGeneration at the matched config of
  ``benchmarks/train.py`` (``reference_config``: the same ViT, pooling, projector and LLM geometry as far as Molmo2's
  options allow), on the same batch (``benchmarks.train.make_batch``: 32 sequences, one 112 px image each); both
  steps are checked first (finite loss, every part's weights move), then timed in turns (``best_seconds``):
  tokens/s, peak memory and the ratio;
- ``quantize``: the small model's LLM in NF4 and int8 with bitsandbytes on CUDA (``quantize.quantize_llm``, NF4
  computing in bf16): weight bytes, logit drift against fp32, forward seconds; and a QLoRA step
  (``quantize.prepare_qlora``: NF4 base, LoRA r=8 + connector) against a full bf16-autocast fine-tuning step;
- ``torchrun``: ``python -m molmo_lite train --strategy ddp`` under ``torchrun --standalone --nproc-per-node 1`` on
  nccl (the small preset, 20 ``small-caption`` steps): its exit status, tokens/s, losses, bytes per rank, and whether
  NCCL's own log (NCCL_DEBUG=INFO) shows the communicator. One rank joins the nccl process group (its barrier runs at
  shutdown); the trainer wraps the model in DDP only from 2 ranks on (``DistributedTrainer.distributed``);
- ``decode``: greedy decoding of the small LLM (random weights, fp32), KV cache against no cache
  (``benchmarks.decode``'s prompts and candidates: batch 1 and 4, 32-token prompts, 128 new tokens): tokens/s, ratio,
  and the share of tokens on which the two agree.

The JSON also records machine_info(), the library versions and the device. CUDA timings synchronize before the
clock stops.

    python -m benchmarks.gpu [--budget-s 450] [--out PATH] [--only SECTION ...]
    python -m benchmarks.gpu --dry-run --out /tmp/gpu.json

Writes benchmarks/results/gpu.json (or --out), after every section, so a run cut short keeps what it measured. It
needs a CUDA GPU; ``--dry-run`` runs the same code paths on the CPU at toy sizes (the ``tiny`` preset, a few steps,
gloo instead of nccl, bitsandbytes on the CPU, one torch thread) in well under a minute: CI runs it
(tests/test_gpu_benchmark.py), so the script cannot rot before a GPU runs it. A dry run writes only to --out
(without it, it prints the JSON).
``--only`` runs some sections (the others record {"skipped": "not selected"}), e.g. to rerun one that failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import torch

from benchmarks.common import best_seconds, machine_info, publish
from molmo_lite.config import IM_COL, IM_END, IM_PATCH, IM_START, LLM_PRESETS, TRAIN_PRESETS
from molmo_lite.device import autocast_dtype, pick_device
from molmo_lite.model import MolmoLite, answer_loss

ROOT = Path(__file__).resolve().parents[1]
RESULT = Path(__file__).parent / "results" / "gpu.json"
LOSS_WINDOW = 20  # steps averaged at the start and at the end of the training run
MOLMO2_MISSING = "this transformers has no Molmo2ForConditionalGeneration"


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the GPU run, and the dry run's toy version of it."""

    preset: str  # MolmoLite / LLM preset
    train_preset: str  # TrainConfig preset
    train_steps: int
    train_batch: int
    train_cap_s: float  # the training loop stops after this many seconds even if steps remain
    step_batch: int  # sequences of the timed batch (transformers comparison)
    quant_batch: int
    rounds: int  # timed tries per candidate (best_seconds)
    warmup: bool  # one untimed call of each candidate before timing (the dry run's single round is its own warm-up)
    torchrun_steps: int
    torchrun_batch: int
    torchrun_examples: int
    torchrun_timeout_s: float
    decode_new_tokens: int
    decode_rounds: int


GPU = Sizes(preset="small", train_preset="small-caption", train_steps=200, train_batch=32, train_cap_s=180,
            step_batch=32, quant_batch=16, rounds=10, warmup=True, torchrun_steps=20, torchrun_batch=16,
            torchrun_examples=256, torchrun_timeout_s=240, decode_new_tokens=128, decode_rounds=3)
DRY = Sizes(preset="tiny", train_preset="tiny-caption", train_steps=4, train_batch=1, train_cap_s=30, step_batch=1,
            quant_batch=1, rounds=1, warmup=False, torchrun_steps=2, torchrun_batch=1, torchrun_examples=8,
            torchrun_timeout_s=120, decode_new_tokens=4, decode_rounds=1)


@dataclass
class Run:
    """Where and how big this run is, and its deadline (perf_counter seconds)."""

    device: torch.device
    sizes: Sizes
    dry_run: bool
    deadline: float

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on a GPU that has it (``device.autocast_dtype``), nothing on the CPU (as the Trainer)."""
        dtype = autocast_dtype(self.device)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def autocast_name(self) -> str | None:
        dtype = autocast_dtype(self.device)
        return None if dtype is None else str(dtype).removeprefix("torch.")

    def synced(self, fn: Callable[[], object]) -> Callable[[], object]:
        """fn, then wait for the GPU: a timer read after it counts the kernels fn queued."""
        def run():
            out = fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return out
        return run

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        """Most bytes of CUDA memory allocated since ``reset_peak`` (None on the CPU: not measured)."""
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None


def random_model(run: Run) -> MolmoLite:
    """The preset from seeded random weights (``train.build_model`` for ``small``; the dry run's tiny one is random
    too, not the pretrained tiny parts, so that it needs no checkpoints)."""
    torch.manual_seed(0)
    return MolmoLite(run.sizes.preset)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def amp_step(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: dict[str, torch.Tensor],
             targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The Trainer's step on a fixed batch: forward in autocast, answer_loss outside it, backward, AdamW."""
    optimizer.zero_grad(set_to_none=True)
    with run.autocast():
        logits = model(**inputs).logits
    loss, _, _ = answer_loss(logits, targets, weights)
    loss.backward()
    optimizer.step()
    return loss.detach()


def trainer_batch(model: MolmoLite, n: int, device: torch.device) -> tuple[dict, torch.Tensor, torch.Tensor, list]:
    """``benchmarks.train.make_batch`` on ``device``: (inputs, targets, loss weights, Molmo2 image grids)."""
    from benchmarks.train import make_batch

    batch, grids = make_batch(model, n)
    batch = to_device(batch, device)
    return batch, batch.pop("target_ids"), batch.pop("loss_weights"), grids


# --------------------------------------------------------------------------------------------------------------------
# The sections: each takes the Run and returns its figures (a dict that JSON can hold).
# --------------------------------------------------------------------------------------------------------------------


def train_section(run: Run) -> dict:
    """The small preset trained by the Trainer, one ``train_step`` at a time (no checkpoints written)."""
    from molmo_lite.train import Trainer, stage_data, step_batches

    z = run.sizes
    config = replace(TRAIN_PRESETS[z.train_preset], steps=z.train_steps, batch_size=z.train_batch, data="fresh",
                     log_every=1, save_every=z.train_steps, seed=0)
    model = random_model(run)
    data = stage_data(config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, config, data, tmp, device=run.device, progress=False)
        trainer.module.train()
        run.reset_peak()
        records, seconds = [], []
        for step in range(config.steps):
            start = time.perf_counter()
            records.append(trainer.train_step(step))  # .item() of the loss in it waits for the GPU
            seconds.append(time.perf_counter() - start)
            if sum(seconds) > z.train_cap_s or run.left() < 0:
                break
        peak = run.peak()
    # The same steps with the batches made ahead by DataLoader workers (Trainer.fit's path; none on a CPU): what
    # the GPU waits for when the CPU makes the data in the training process.
    from molmo_lite.train import loader_workers

    workers = loader_workers(run.device)
    fed_steps = min(len(records), 20)
    with tempfile.TemporaryDirectory() as tmp:
        stamps = []  # the time at the end of each step (the callback runs after the step's loss.item())
        fed = Trainer(random_model(run), replace(config, steps=fed_steps, save_every=fed_steps + 1), data, tmp,
                      device=run.device, progress=False, workers=workers,
                      callback=lambda step, record: stamps.append(time.perf_counter()))
        fed.fit()  # it saves once at the end, after the last stamp
    fed_seconds = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)  # from the end of step 1: warm-up left out
    data_seconds = []
    for step in range(min(3, len(records))):  # the data alone: drawing, rendering, encoding, collating (CPU)
        start = time.perf_counter()
        step_batches(data, model, config, step)
        data_seconds.append(time.perf_counter() - start)
    losses = [r["loss"] for r in records]
    window = min(LOSS_WINDOW, max(1, len(losses) // 2))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    timed = slice(1, None) if len(records) > 1 else slice(None)  # the first step is the warm-up
    tokens_per_second = sum(r["tokens"] for r in records[timed]) / sum(seconds[timed])
    print(f"train: {len(records)} steps, {tokens_per_second:.0f} tokens/s, loss {first:.3f} -> {last:.3f}")
    return {
        "preset": z.preset, "train_preset": z.train_preset,
        "config": {k: v for k, v in config.to_dict().items() if k in ("stage", "steps", "batch_size", "grad_accum",
                                                                       "data", "image_size", "pack_examples")},
        "autocast": run.autocast_name(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps_done": len(records),
        "tokens_per_step": sum(r["tokens"] for r in records) / len(records),
        "tokens_per_second": round(tokens_per_second, 1),
        "seconds_per_step": round(sum(seconds[timed]) / len(seconds[timed]), 5),
        "first_step_seconds": round(seconds[0], 3),
        "data_seconds_per_step": round(sum(data_seconds) / len(data_seconds), 5),
        "loader_workers": workers,
        "fed_steps": fed_steps,
        "fed_seconds_per_step": round(fed_seconds, 5),  # fit with the workers, the first step left out
        "peak_memory_bytes": peak,
        "loss_window": window,
        "loss_first_mean": round(first, 4),
        "loss_last_mean": round(last, 4),
        "loss_falling": last < first,
        "losses": [round(x, 4) for x in losses],
    }


def molmo2_available() -> bool:
    """Can this transformers build a Molmo2ForConditionalGeneration? (It came with transformers 5.)"""
    try:
        from transformers import Molmo2Config, Molmo2ForConditionalGeneration  # noqa: F401
    except ImportError:
        return False
    return True


def transformers_section(run: Run) -> dict:
    """MolmoLite vs transformers' Molmo2 at the matched config of benchmarks/train.py: one step each, timed in turns."""
    import transformers

    from benchmarks import train as bt

    if not molmo2_available():
        raise RuntimeError(f"{MOLMO2_MISSING} (transformers {transformers.__version__})")
    z = run.sizes
    ours = random_model(run).train()
    image_ids = [ours.tokenizer.token_to_id(t) for t in (IM_START, IM_END, IM_PATCH, IM_COL)]
    kwargs = bt.reference_config(ours.config, dict(zip((IM_START, IM_END, IM_PATCH, IM_COL), image_ids)))
    reference = bt.reference_model(kwargs)
    batch, targets, weights, grids = trainer_batch(ours, z.step_batch, torch.device("cpu"))
    hf_inputs = to_device(bt.reference_inputs(batch, grids, image_ids, ours.config.vision.patch_size), run.device)
    n_features = int((batch["input_ids"] == ours.image_patch_id).sum())
    assert n_features == len(batch["pooled_patches_idx"]) == sum(a * b + c * d for a, b, c, d in grids)
    batch, targets, weights = to_device(batch, run.device), targets.to(run.device), weights.to(run.device)
    models = {bt.OURS: ours.to(run.device), bt.HF: reference.to(run.device)}
    inputs = {bt.OURS: batch, bt.HF: hf_inputs}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=bt.LR, betas=bt.BETAS, eps=bt.EPS, weight_decay=0.0)
                  for name, m in models.items()}
    fns = {name: functools.partial(amp_step, run, models[name], optimizers[name], inputs[name], targets, weights)
           for name in models}
    with torch.no_grad(), run.autocast():
        shapes = {name: tuple(m(**inputs[name]).logits.shape) for name, m in models.items()}
    assert shapes[bt.OURS] == shapes[bt.HF], shapes
    first_loss, peak = {}, {}
    for name, model in models.items():  # the check is also the warm-up; the peak is that of one step
        run.reset_peak()
        first_loss[name] = round(bt.check_step(name, model, run.synced(fns[name])), 4)
        peak[name] = run.peak()
    seconds = best_seconds({name: run.synced(fn) for name, fn in fns.items()}, z.rounds)
    tokens = int(batch["attention_mask"].sum())
    tps = {name: tokens / s for name, s in seconds.items()}
    ratio = tps[bt.OURS] / tps[bt.HF]
    print(f"transformers_molmo2: ours {tps[bt.OURS]:.0f} tokens/s, Molmo2 {tps[bt.HF]:.0f} tokens/s ({ratio:.2f}x)")
    return {
        "preset": z.preset,
        "step": f"forward in autocast ({run.autocast_name() or 'off'}), answer_loss, backward, AdamW "
                f"(lr {bt.LR}, betas {list(bt.BETAS)}, eps {bt.EPS})",
        "batch": {"sequences": int(batch["input_ids"].shape[0]),
                  "tokens_per_sequence": int(batch["input_ids"].shape[1]), "tokens": tokens,
                  "loss_tokens": int((weights > 0).sum()), "image_size": bt.IMAGE_SIZE, "image_grids": list(grids[0])},
        "molmo2_config": kwargs,
        "transformers_attention": reference.config._attn_implementation,
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        "first_step_loss": first_loss,
        "peak_memory_bytes": peak,
        "rounds": z.rounds,
        "seconds_per_step": {k: round(v, 5) for k, v in seconds.items()},
        "tokens_per_second": {k: round(v, 1) for k, v in tps.items()},
        "ratio_ours_vs_transformers": round(ratio, 3),  # tokens/s ours / tokens/s Molmo2 (> 1: ours is faster)
        "step_time_ratio_ours_over_transformers": round(seconds[bt.OURS] / seconds[bt.HF], 3),
    }


def quantize_section(run: Run) -> dict:
    """NF4 and int8 (bitsandbytes) of the LLM, and a QLoRA step against full fine-tuning, on the same batch."""
    from molmo_lite import quantize

    z = run.sizes
    compute = autocast_dtype(run.device) or torch.float32  # what NF4 weights are dequantized to
    base = random_model(run).to(run.device).eval()
    batch, targets, weights, _ = trainer_batch(base, z.quant_batch, run.device)
    models = {"fp32": base, "nf4": quantize.quantize_llm(copy.deepcopy(base), "nf4", compute_dtype=compute),
              "int8": quantize.quantize_llm(copy.deepcopy(base), "int8")}
    memory = {name: {"model_bytes": quantize.weight_memory(m),
                     "linear_ratio": 1.0 if name == "fp32" else round(quantize.quantized_linear_report(m)["ratio"], 4)}
              for name, m in models.items()}
    drift = {name: {k: round(v, 5) for k, v in quantize.logit_drift(base, models[name], batch).items()}
             for name in ("nf4", "int8")}

    def forward(model):
        def call():
            with torch.no_grad():
                model(**batch)
        return run.synced(call)

    forward_seconds = best_seconds({name: forward(m) for name, m in models.items()}, z.rounds, warmup=z.warmup)

    full = copy.deepcopy(base).train()
    qlora, trainable = quantize.prepare_qlora(copy.deepcopy(base), compute_dtype=compute)
    qlora.train()
    steps, peak, first_loss = {}, {}, {}
    for name, model in (("full fine-tuning", full), ("qlora", qlora)):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        steps[name] = run.synced(functools.partial(amp_step, run, model, optimizer, batch, targets, weights))
        lora_b = {k: p.detach().clone() for k, p in model.named_parameters() if ".lora_B." in k}
        run.reset_peak()
        loss = steps[name]()  # the check is also the warm-up
        peak[name] = run.peak()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: the loss is {loss.item()}")
        if name == "qlora" and not any(not torch.equal(p.detach(), lora_b[k])
                                       for k, p in model.named_parameters() if k in lora_b):
            raise AssertionError("one QLoRA step left every LoRA B matrix at zero")
        first_loss[name] = round(float(loss), 4)
    step_seconds = best_seconds(steps, z.rounds)
    print(f"quantize: NF4 linears {memory['nf4']['linear_ratio']:.3f}x fp32, QLoRA step "
          f"{step_seconds['full fine-tuning'] / step_seconds['qlora']:.2f}x the speed of full fine-tuning")
    return {
        "preset": z.preset,
        "nf4_compute_dtype": str(compute).removeprefix("torch."),
        "batch": {"sequences": int(batch["input_ids"].shape[0]), "tokens": int(batch["attention_mask"].sum())},
        "memory": memory,
        "drift": drift,
        "forward_seconds": {k: round(v, 5) for k, v in forward_seconds.items()},
        "qlora_trainable_parameters": sum(p.numel() for n, p in qlora.named_parameters() if n in set(trainable)),
        "full_parameters": sum(p.numel() for p in full.parameters()),
        "train_step_first_loss": first_loss,
        "train_step_seconds": {k: round(v, 5) for k, v in step_seconds.items()},
        "train_step_peak_memory_bytes": peak,
        "qlora_speed_vs_full": round(step_seconds["full fine-tuning"] / step_seconds["qlora"], 3),
    }


def torchrun_section(run: Run) -> dict:
    """``python -m molmo_lite train --strategy ddp`` under a 1-process torchrun: nccl on CUDA (gloo in the dry run)."""
    z = run.sizes
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_model(run).save_pretrained(root / "init")
        args = ["-m", "molmo_lite", "train", "--stage", "caption", "--preset", z.train_preset, "--init", "INIT",
                "--out", "OUT", "--steps", str(z.torchrun_steps), "--batch-size", str(z.torchrun_batch),
                "--examples", str(z.torchrun_examples), "--log-every", "1", "--save-every", str(z.torchrun_steps),
                "--no-progress", "--device", run.device.type, "--strategy", "ddp"]
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
        paths = {"INIT": str(root / "init"), "OUT": str(root / "out")}
        cmd = [sys.executable, *launcher, *(paths.get(a, a) for a in args)]
        env = dict(os.environ)
        if run.dry_run:
            env["OMP_NUM_THREADS"] = "1"  # as the dry run's own process (main)
        if run.device.type == "cuda":
            env["NCCL_DEBUG"] = "INFO"  # NCCL logs its communicator: the proof that nccl, not gloo, carried it
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                              timeout=max(30.0, min(z.torchrun_timeout_s, run.left())))
        wall = time.perf_counter() - start
        log = done.stdout + done.stderr
        if done.returncode:
            raise RuntimeError(f"torchrun exited with {done.returncode}:\n{log[-3000:]}")
        history = json.loads((root / "out" / "history.json").read_text())
        ranks = json.loads((root / "out" / "ranks.json").read_text())
    backend = "nccl" if run.device.type == "cuda" else "gloo"  # the rule of distributed.init_distributed
    print(f"torchrun: {backend}, {len(history)} steps in {wall:.1f} s, last loss {history[-1]['loss']:.3f}")
    return {
        "command": " ".join(["python", *launcher, *args]),
        "backend": backend,
        "nccl_in_log": "NCCL INFO" in log if backend == "nccl" else None,
        "world_size": ranks[0]["world_size"],
        "steps": len(history),
        "wall_seconds": round(wall, 1),
        "tokens_per_second": round(history[-1]["tokens_per_second"], 1),
        "first_loss": round(history[0]["loss"], 4),
        "last_loss": round(history[-1]["loss"], 4),
        "ranks": ranks,
    }


def decode_section(run: Run) -> dict:
    """Greedy decoding with and without the KV cache (``benchmarks.decode``'s prompts and candidates)."""
    from benchmarks import decode as bd
    from molmo_lite.llm import LLM

    z = run.sizes
    torch.manual_seed(0)
    llm = LLM(LLM_PRESETS[z.preset]).to(run.device).eval()
    fns = {name: fn for name, fn in bd.candidates(llm, None, z.decode_new_tokens).items() if name != bd.HF}
    tps, agreement = {}, {}
    for batch in bd.BATCH_LENGTHS:
        ids, mask = (t.to(run.device) for t in bd.make_prompts(batch, llm.config.vocab_size))
        outputs = {name: fn(ids, mask) for name, fn in fns.items()}  # also the warm-up
        for name, tokens in outputs.items():
            assert tokens.shape == (batch, z.decode_new_tokens), (name, tokens.shape)
        agreement[str(batch)] = round(float((outputs[bd.CACHED] == outputs[bd.UNCACHED]).float().mean()), 4)
        seconds = best_seconds({name: run.synced(functools.partial(fn, ids, mask)) for name, fn in fns.items()},
                               z.decode_rounds)
        tps[str(batch)] = {name: batch * z.decode_new_tokens / s for name, s in seconds.items()}
    ratio = {b: round(t[bd.CACHED] / t[bd.UNCACHED], 3) for b, t in tps.items()}
    print("decode: cached / uncached " + ", ".join(f"batch {b} {r:.2f}x" for b, r in ratio.items()))
    return {
        "llm_preset": z.preset,
        "dtype": "float32",
        "prompt_tokens": bd.PROMPT,
        "new_tokens": z.decode_new_tokens,
        "rounds": z.decode_rounds,
        "tokens_per_second": {b: {k: round(v, 1) for k, v in t.items()} for b, t in tps.items()},
        "ratio_cached_vs_uncached": ratio,
        "same_tokens_fraction": agreement,
    }


SECTIONS: dict[str, Callable[[Run], dict]] = {
    "train": train_section,
    "transformers_molmo2": transformers_section,
    "quantize": quantize_section,
    "torchrun": torchrun_section,
    "decode": decode_section,
}


# --------------------------------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            **{name: version(name) for name in ("transformers", "bitsandbytes", "peft")}}


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"type": device.type, "name": platform.processor() or platform.machine()}
    props = torch.cuda.get_device_properties(device)
    return {"type": "cuda", "name": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_bytes": props.total_memory, "bf16": torch.cuda.is_bf16_supported(),
            "count": torch.cuda.device_count()}


def run_section(name: str, run: Run) -> dict:
    """One section: its figures and wall seconds, or {"error": ...} (with the traceback's end) if it raised."""
    start = time.perf_counter()
    try:
        result = SECTIONS[name](run)
    except Exception as err:  # noqa: BLE001  (one failing section must not stop the others)
        lines = traceback.format_exc().strip().splitlines()
        result = {"error": f"{type(err).__name__}: {err}", "traceback": "\n".join(lines[-12:])}
        print(f"{name}: FAILED {result['error'].splitlines()[0]}", file=sys.stderr)
    result["seconds"] = round(time.perf_counter() - start, 2)
    gc.collect()
    if run.device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run_sections(args: argparse.Namespace, out: Path | None) -> dict:
    """Every selected section in turn under the time guard; the JSON is written to ``out`` after each one."""
    device = torch.device("cpu") if args.dry_run else pick_device("cuda")
    start = time.perf_counter()
    run = Run(device=device, sizes=DRY if args.dry_run else GPU, dry_run=args.dry_run, deadline=start + args.budget_s)
    result = {"benchmark": "gpu", "dry_run": args.dry_run, "device": device_info(device), "versions": versions(),
              "machine": machine_info(), "budget_seconds": args.budget_s, "sizes": asdict(run.sizes),
              "sections": {}}
    for name in SECTIONS:
        if args.only and name not in args.only:
            result["sections"][name] = {"skipped": "not selected"}
        elif run.left() <= 0:
            result["sections"][name] = {"skipped": "time budget"}
        else:
            print(f"== {name}", flush=True)
            result["sections"][name] = run_section(name, run)
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        if out is not None:  # after every section: a run cut short keeps what it measured
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU at toy sizes")
    parser.add_argument("--budget-s", type=float, default=450, help="sections that would start later are skipped")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON (default {RESULT.relative_to(ROOT)}; a dry run writes only to --out)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=None, help="run only these sections")
    args = parser.parse_args(argv)
    if not args.dry_run and pick_device().type != "cuda":  # the course's device rule: CUDA when present
        parser.error("this benchmark needs a CUDA GPU and torch sees none; --dry-run runs the same code paths on "
                     "the CPU at toy sizes")
    out = args.out if args.out is not None or args.dry_run else RESULT
    threads = torch.get_num_threads()
    if args.dry_run:  # toy sizes gain nothing from threads, and on a busy CI machine waiting threads cost 10x
        torch.set_num_threads(1)
    try:
        result = run_sections(args, out)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (the tests)
    if out is None:
        print(json.dumps(result, indent=2))
    else:
        publish("gpu", result, "", out, update_page=False)
    return result


if __name__ == "__main__":
    main()

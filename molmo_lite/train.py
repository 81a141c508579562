"""The trainer of both stages (chapters 08-09), as Molmo trains (MOLMO_SPEC section 7; allenai/molmo olmo/train.py,
olmo/optim.py):

- every parameter is trained in both stages (nothing frozen, unlike LLaVA's projector-only first stage), in three
  groups with their own learning rates and warmups: the connector (pooling, projector, pad embeddings and the LLM's new
  token rows), the ViT, and the LLM;
- AdamW (0.9, 0.95), eps 1e-6, no weight decay; linear warmup, then cosine decay to 10% of the peak; gradient clipping
  at 1.0; gradient accumulation; bf16 autocast on a GPU, fp32 on a CPU;
- the loss is token-weighted over the global batch: sum(cross-entropy x weight) / answer tokens of ALL micro-batches of
  the step, so accumulating k micro-batches gives the gradient of one batch k times larger;
- stage 1 ("caption") trains on captions and transcripts with length hints, two annotations per image packed; stage 2
  ("sft") on a mixture of tasks sampled at sqrt-size rates, every image's annotations packed.

Exact resume. The data of step s is drawn from a generator seeded with (seed, s), so a run restarted at step s sees the
same batches as one that never stopped; the checkpoint holds the weights (safetensors), the optimizer state and torch's
RNG state (dropout), written to a fresh folder and then published by an atomic rename of ``latest.json``. On a CPU a
killed-and-resumed run ends with exactly the weights of an uninterrupted one (tests/test_train.py).

    trainer = Trainer(model, TrainConfig(stage="caption", steps=300), stage_data("caption", config), out_dir)
    history = trainer.fit()        # or fit(resume=True) to continue from out_dir/latest.json
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import TrainConfig
from .data.collate import collate, encode_example, mixture_rates
from .data.examples import Example
from .device import autocast_dtype
from .model import MolmoLite, answer_loss

GROUPS = ("connector", "vit", "llm")


# --------------------------------------------------------------------------------------------------------------------
# 1. Parameter groups and the learning-rate schedule.
# --------------------------------------------------------------------------------------------------------------------


def parameter_groups(model: MolmoLite) -> dict[str, list[torch.nn.Parameter]]:
    """Molmo's three groups: connector (+ the LLM's new-token embedding rows), vit, llm (everything else of it)."""
    connector = list(model.connector.parameters())
    new_rows = [] if model.llm.embed.new is None else list(model.llm.embed.new.parameters())
    taken = {id(p) for p in new_rows}
    return {
        "connector": connector + new_rows,
        "vit": list(model.vision.parameters()),
        "llm": [p for p in model.llm.parameters() if id(p) not in taken],
    }


def lr_factor(step: int, warmup: int, total: int, final: float = 0.1) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): linear warmup over ``warmup`` steps, then cosine
    from 1 down to ``final`` at the last step (Molmo: cosine to 10%)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: MolmoLite, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one param group per Molmo group (frozen groups left out and set to requires_grad=False)."""
    groups = []
    for name, params in parameter_groups(model).items():
        if name in config.freeze:
            for p in params:
                p.requires_grad_(False)
            continue
        groups.append({"params": params, "name": name, "lr": getattr(config, f"lr_{name}"),
                       "peak_lr": getattr(config, f"lr_{name}"), "warmup": getattr(config, f"warmup_{name}")})
    return torch.optim.AdamW(groups, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> dict[str, float]:
    """Apply the schedule of ``step`` to every group; returns {group: lr}."""
    lrs = {}
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * lr_factor(step, group["warmup"], config.steps, config.final_lr_fraction)
        lrs[group["name"]] = group["lr"]
    return lrs


# --------------------------------------------------------------------------------------------------------------------
# 2. Data: the examples of every step, drawn from (seed, step).
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class StageData:
    """The training sets of a stage and their sampling rates (sqrt of size within the groups given)."""

    datasets: dict[str, list[Example]]
    rates: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not self.rates:
            self.rates = mixture_rates({k: len(v) for k, v in self.datasets.items()})
        self._names = list(self.datasets)
        self._p = np.asarray([self.rates[n] for n in self._names], dtype=float)
        self._p /= self._p.sum()

    def draw(self, rng: np.random.Generator, n: int) -> list[Example]:
        """n examples: a dataset by its rate, then one of its examples uniformly (with replacement)."""
        names = rng.choice(len(self._names), size=n, p=self._p)
        return [self.datasets[self._names[d]][int(rng.integers(len(self.datasets[self._names[d]])))] for d in names]


def step_batches(data: StageData, model: MolmoLite, config: TrainConfig, step: int) -> list[dict[str, torch.Tensor]]:
    """The micro-batches of ``step``: batch_size x grad_accum examples drawn with rng (seed, step), each encoded
    (styles, hints, annotation order from the same rng) and collated."""
    rng = np.random.default_rng((config.seed, step))
    examples = data.draw(rng, config.batch_size * config.grad_accum)
    weighting = config.packing_weights or ("root_subsegments" if config.stage == "sft" else "none")
    encoded = [encode_example(ex, model.processor, model.tokenizer, rng, weighting) for ex in examples]
    size = config.batch_size
    return [collate(encoded[i:i + size], model.tokenizer.pad_id) for i in range(0, len(encoded), size)]


# --------------------------------------------------------------------------------------------------------------------
# 3. Checkpoints: weights, optimizer, RNG; atomic publication; exact resume.
# --------------------------------------------------------------------------------------------------------------------


def save_training_state(directory: Path, model: MolmoLite, optimizer: torch.optim.Optimizer, step: int,
                        history: list[dict], config: TrainConfig, keep: int = 2) -> Path:
    """directory/step_{step:06d}/ (model via save_pretrained, optimizer.pt, trainer.json), then latest.json -> it.
    The step folder is written under a temporary name and renamed, latest.json replaced atomically: a run killed at
    any moment leaves the previous checkpoint intact. Only the ``keep`` newest step folders are kept."""
    directory = Path(directory)
    final = directory / f"step_{step:06d}"
    tmp = directory / f".tmp_step_{step:06d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
    (tmp / "trainer.json").write_text(json.dumps({"step": step, "config": config.to_dict(), "history": history}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = directory / f".latest_{os.getpid()}.json"
    latest_tmp.write_text(json.dumps({"step": step, "path": final.name}))
    os.replace(latest_tmp, directory / "latest.json")
    for old in sorted(directory.glob("step_*"))[:-keep]:  # only after latest.json points at the new one
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The folder latest.json points to, or None."""
    pointer = Path(directory) / "latest.json"
    if not pointer.exists():
        return None
    return Path(directory) / json.loads(pointer.read_text())["path"]


def load_training_state(checkpoint: Path, model: MolmoLite, optimizer: torch.optim.Optimizer) -> tuple[int, list]:
    """Restore weights, optimizer and torch RNG from a step folder; returns (step, history)."""
    model.load_state_dict(load_file(checkpoint / "model.safetensors"))
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)  # tensors and numbers only: no pickle code
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    trainer = json.loads((checkpoint / "trainer.json").read_text())
    return trainer["step"], trainer["history"]


# --------------------------------------------------------------------------------------------------------------------
# 4. The loop.
# --------------------------------------------------------------------------------------------------------------------


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: the run stops and says at which step."""


class Trainer:
    """Trains ``model`` on ``data`` with ``config``; checkpoints and curves go to ``out_dir``.

    stop_after: leave the loop after this many steps of THIS call (to test resuming, or to train in slices from a
    notebook); the schedule still follows config.steps. callback(step, record) is called at every logged step.
    """

    def __init__(self, model: MolmoLite, config: TrainConfig, data: StageData, out_dir: str | Path,
                 device: torch.device | str | None = None, progress: bool = True,
                 callback: Callable[[int, dict], None] | None = None):
        self.model, self.config, self.data, self.out_dir = model, config, data, Path(out_dir)
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self.optimizer = build_optimizer(model, config)
        self.model.llm.residual_dropout = config.residual_dropout
        self.progress, self.callback = progress, callback
        self.step, self.history = 0, []

    def resume(self) -> bool:
        """Continue from out_dir/latest.json if there is one; True when it did."""
        checkpoint = latest_checkpoint(self.out_dir)
        if checkpoint is None:
            return False
        self.step, self.history = load_training_state(checkpoint, self.model, self.optimizer)
        return True

    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step over grad_accum micro-batches; returns loss, grad norm, lrs, tokens."""
        config, model = self.config, self.model
        lrs = set_learning_rates(self.optimizer, step, config)
        batches = step_batches(self.data, model, config, step)
        total = sum(int((b["loss_weights"] > 0).sum()) for b in batches)  # answer tokens of the global batch
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, tokens = 0.0, 0
        dtype = autocast_dtype(self.device)
        for batch in batches:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            targets, weights = batch.pop("target_ids"), batch.pop("loss_weights")
            dropout_mask = (weights > 0) if config.response_only else None
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(**batch, dropout_mask=dropout_mask).logits
            loss, _, _ = answer_loss(logits, targets, weights, model.config.z_loss, normalizer=max(total, 1))
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"the loss is {loss.item()} at step {step}: lower the learning rates, check "
                                         "the data of this step (step_batches reproduces it), or train in fp32")
            loss.backward()
            loss_sum += loss.item()
            tokens += int(batch["attention_mask"].sum())
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        self.optimizer.step()
        return {"loss": loss_sum, "grad_norm": float(grad_norm), "tokens": tokens, **{f"lr_{k}": v for k, v in lrs.items()}}

    def fit(self, resume: bool = False, stop_after: int | None = None) -> list[dict]:
        """Train until config.steps (or stop_after steps of this call); returns the history of logged steps."""
        if resume:
            self.resume()
        self.model.train()
        end = self.config.steps if stop_after is None else min(self.config.steps, self.step + stop_after)
        bar = _progress(self.step, self.config.steps, self.progress)
        start, tokens = time.perf_counter(), 0
        while self.step < end:
            record = self.train_step(self.step)
            self.step += 1
            tokens += record["tokens"]
            if self.step % self.config.log_every == 0 or self.step == end:
                record.update(step=self.step, tokens_per_second=tokens / max(time.perf_counter() - start, 1e-9))
                self.history.append(record)
                if self.callback:
                    self.callback(self.step, record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record.get('lr_llm', 0):.1e}",
                                tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}")
            if self.step % self.config.save_every == 0 or self.step == end:
                save_training_state(self.out_dir, self.model, self.optimizer, self.step, self.history, self.config)
        if bar is not None:
            bar.close()
        self.model.eval()
        return self.history


def _progress(initial: int, total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", leave=True)


def plot_history(history: Sequence[Mapping[str, float]], path: str | Path | None = None, title: str = "") -> Any:
    """Loss (and learning rates) against step; saved as PNG when path is given. Returns the figure."""
    import matplotlib

    if path is not None and matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.2))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history])
    ax.set_xlabel("step"), ax.set_ylabel("loss (answer tokens)"), ax.set_title(title or "training loss")
    ax.set_yscale("log")
    for name in GROUPS:
        if history and f"lr_{name}" in history[0]:
            ax_lr.plot(steps, [h[f"lr_{name}"] for h in history], label=name)
    ax_lr.set_xlabel("step"), ax_lr.set_ylabel("learning rate"), ax_lr.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# --------------------------------------------------------------------------------------------------------------------
# 5. The course's synthetic stages.
# --------------------------------------------------------------------------------------------------------------------

SFT_GROUPS = {  # Molmo's SFT shares (MOLMO_SPEC section 7), with the course's synthetic stand-ins in each group
    "pointing": (0.35, ["pointing"]),
    "aux": (0.50, ["clocks", "charts", "tables"]),
    "demo": (0.15, ["scene_qa", "captions"]),
}


def stage_data(config: TrainConfig, split: str = "train", n: int | None = None,
               cache_dir: str | Path | None = None) -> StageData:
    """The synthetic training sets of a stage: "caption" -> dense captions + transcripts; "sft" -> pointing and
    counting scenes, clocks, charts, tables, scene QA and some captions, at Molmo's group shares (SFT_GROUPS).
    n: examples per dataset (default config.examples; charts and tables a quarter of it: they render slowly and
    are cached in cache_dir)."""
    from .data import clocks, docs, synthetic

    n = config.examples if n is None else n
    seed, size = config.seed, config.image_size
    if config.stage == "caption":
        return StageData({"captions": synthetic.caption_examples(n, seed, split, size)})
    if config.stage != "sft":
        raise ValueError(f"stage must be 'caption' or 'sft', got {config.stage!r}")
    n_docs = max(1, n // 4)
    datasets = {
        "pointing": synthetic.pointing_examples(n, seed, split, size, max_count=10),
        "clocks": clocks.clock_examples(n, seed, split, size),
        "charts": docs.chart_examples(n_docs, seed, split, cache_dir=cache_dir),
        "tables": docs.table_examples(n_docs, seed, split, cache_dir=cache_dir),
        "scene_qa": synthetic.qa_examples(n, seed, split, size),
        "captions": synthetic.caption_examples(max(1, n // 4), seed, split, size),
    }
    sizes = {k: len(v) for k, v in datasets.items()}
    return StageData(datasets, mixture_rates(sizes, SFT_GROUPS))


# --------------------------------------------------------------------------------------------------------------------
# 6. The course's main job: `make run` = python -m molmo_lite run.
# --------------------------------------------------------------------------------------------------------------------


def tiny_model(seed: int = 0) -> MolmoLite:
    """The tiny Molmo as Molmo starts: the CLIP-pretrained tiny ViT (chapter 02) and the pretrained tiny LM
    (chapter 04), loaded from checkpoints/ or trained first if missing, and a fresh connector."""
    from .clip_pretrain import tiny_encoder
    from .lm_pretrain import tiny_lm

    vision, llm = tiny_encoder(), tiny_lm()
    torch.manual_seed(seed)
    return MolmoLite.from_parts("tiny", vision=vision, llm=llm)


def run_course(out_dir: str | Path = "runs/tiny", caption: TrainConfig | None = None, sft: TrainConfig | None = None,
               eval_examples: int = 100, resume: bool = False, progress: bool = True,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Stage 1, stage 2 and the held-out evaluation of the tiny Molmo; writes out_dir/{caption,sft}/ (checkpoints),
    report.json, loss curves and predictions.png; returns the report (metrics, timings)."""
    from .config import TRAIN_PRESETS
    from .evaluate import evaluate, headline, heldout_sets, metrics_table, plot_predictions, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    caption = caption or TRAIN_PRESETS["tiny-caption"]
    sft = sft or TRAIN_PRESETS["tiny-sft"]
    cache = out / "docs_cache"
    times: dict[str, float] = {}
    start = time.perf_counter()
    model = tiny_model(caption.seed)
    times["pretrained parts (chapters 02, 04)"] = time.perf_counter() - start
    for name, config in (("caption", caption), ("sft", sft)):
        t = time.perf_counter()
        log(f"stage {name}: {config.steps} steps of {config.batch_size} x {config.grad_accum} sequences")
        trainer = Trainer(model, config, stage_data(config, cache_dir=cache), out / name, progress=progress)
        history = trainer.fit(resume=resume)
        plot_history(history, out / f"loss_{name}.png", title=f"stage {name}")
        times[f"stage {name}"] = time.perf_counter() - t
    t = time.perf_counter()
    sets = heldout_sets(eval_examples, seed=0, size=sft.image_size, cache_dir=cache)
    report = evaluate(model, sets)
    times["evaluation"] = time.perf_counter() - t
    plot_predictions(sets, report, path=out / "predictions.png")
    model.save_pretrained(out / "final")
    times["total"] = time.perf_counter() - start
    report.update(headline=headline(report), seconds={k: round(v, 1) for k, v in times.items()},
                  configs={"caption": caption.to_dict(), "sft": sft.to_dict()})
    write_report(report, out / "report.json")
    log(metrics_table(report))
    log("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    return report

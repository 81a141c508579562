"""The trainer of both stages (chapters 08-09), as Molmo trains (docs/molmo_recipe.md §7; allenai/molmo olmo/train.py,
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
same batches as one that never stopped, with dropout masks from a torch seed of (seed, step, rank); the checkpoint
holds the full weights (safetensors) and the optimizer state keyed by parameter name, written to a fresh folder and
then published by an atomic rename of ``latest.json``. On a CPU a killed-and-resumed run ends with exactly the
weights of an uninterrupted one (tests/test_train.py), and a checkpoint written by 2 ranks resumes on 1
(tests/test_distributed.py).

    trainer = Trainer(model, TrainConfig(stage="caption", steps=300), stage_data("caption", config), out_dir)
    history = trainer.fit()        # or fit(resume=True) to continue from out_dir/latest.json
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from .config import TrainConfig
from .data.collate import collate, collate_packed, encode_example, mixture_rates
from .data.examples import Example
from .device import autocast_dtype, pick_device
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


def freeze_groups(model: MolmoLite, config: TrainConfig) -> None:
    """requires_grad=False for the groups in config.freeze (an ablation: Molmo freezes nothing)."""
    for name, params in parameter_groups(model).items():
        if name in config.freeze:
            for p in params:
                p.requires_grad_(False)


class Optimizers:
    """Several optimizers stepped as one (Muon for the hidden matrices, AdamW for the rest): ``param_groups`` lists
    theirs in order, and ``state_dict`` numbers the parameters across all of them, as one optimizer would, so that
    ``named_optimizer_state`` and exact resume work unchanged."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for opt in self.optimizers:
            saved = opt.state_dict()
            state.update({i + offset: s for i, s in saved["state"].items()})
            groups += [{**g, "params": [i + offset for i in g["params"]]} for g in saved["param_groups"]]
            offset += sum(len(g["params"]) for g in opt.param_groups)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping) -> None:
        offset, first = 0, 0
        for opt in self.optimizers:
            n, k = sum(len(g["params"]) for g in opt.param_groups), len(opt.param_groups)
            opt.load_state_dict({
                "state": {i - offset: s for i, s in state_dict["state"].items() if offset <= i < offset + n},
                "param_groups": [{**g, "params": [i - offset for i in g["params"]]}
                                 for g in state_dict["param_groups"][first:first + k]]})
            offset, first = offset + n, first + k


def build_optimizer(model: MolmoLite, config: TrainConfig) -> torch.optim.Optimizer | Optimizers:
    """AdamW with one param group per Molmo group (frozen groups left out and set to requires_grad=False); with
    ``config.optimizer == "muon"``, torch's Muon (its update's size matched to AdamW's) for each group's hidden
    matrices (``oracle.hidden_matrices``) and AdamW for the rest of it, stepped together (``Optimizers``)."""
    from .oracle import hidden_matrices

    if config.optimizer not in ("adamw", "muon"):
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {config.optimizer!r}")
    freeze_groups(model, config)
    matrices = hidden_matrices(model) if config.optimizer == "muon" else set()
    groups: dict[bool, list[dict]] = {True: [], False: []}
    for name, params in parameter_groups(model).items():
        if name in config.freeze:
            continue
        for is_matrix in (True, False):
            chosen = [p for p in params if (id(p) in matrices) == is_matrix]
            if chosen:
                groups[is_matrix].append({"params": chosen, "name": name, "lr": getattr(config, f"lr_{name}"),
                                          "peak_lr": getattr(config, f"lr_{name}"),
                                          "warmup": getattr(config, f"warmup_{name}")})
    adamw = [torch.optim.AdamW(groups[False], betas=config.betas, eps=config.eps,
                               weight_decay=config.weight_decay)] if groups[False] else []
    if not groups[True]:
        return adamw[0]
    muon = torch.optim.Muon(groups[True], lr=config.lr_llm, weight_decay=config.weight_decay,
                            adjust_lr_fn="match_rms_adamw")
    return Optimizers([muon, *adamw])


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


Source = Sequence[Example] | Callable[[np.random.Generator], Example]


@dataclass
class StageData:
    """The training sources of a stage, their sampling rates and an optional curriculum.

    A source is a pool (a list of examples, drawn uniformly with replacement) or a generator (a function of an rng
    that makes a fresh example: no example is ever seen twice). rates default to sqrt of the pools' sizes (a
    generator counts as ``nominal`` examples). curriculum: phases (until, {source: rate}); a phase's rates replace
    the base rates of the sources it names, from the end of the phase before to the fraction ``until`` of ``steps``
    (rate 0 turns a source off). After the last phase the base rates hold.
    """

    datasets: dict[str, Source]
    rates: dict[str, float] = field(default_factory=dict)
    curriculum: Sequence[tuple[float, Mapping[str, float]]] = ()
    steps: int = 1
    nominal: int = 1000

    def __post_init__(self):
        if not self.rates:
            self.rates = mixture_rates({k: self.size(k) for k in self.datasets})
        self._names = list(self.datasets)
        unknown = sorted({n for _, phase in self.curriculum for n in phase} - set(self._names)
                         | set(self.rates) - set(self._names))
        if unknown:
            raise ValueError(f"rates or curriculum name unknown sources {unknown}; sources: {self._names}")
        if any(b[0] <= a[0] for a, b in zip(self.curriculum, self.curriculum[1:])):
            raise ValueError("curriculum phases must be in increasing order of `until`")

    def size(self, name: str) -> int:
        source = self.datasets[name]
        return self.nominal if callable(source) else len(source)

    def peek(self, name: str, seed: int = 0) -> Example:
        """One example of a source, to look at: a pool's first, or a generator's example of rng(seed)."""
        source = self.datasets[name]
        return source(np.random.default_rng(seed)) if callable(source) else source[0]

    def rates_at(self, step: int) -> dict[str, float]:
        """The normalised sampling rate of every source at ``step`` (0-based) of ``steps``."""
        rates = {n: float(self.rates.get(n, 0.0)) for n in self._names}
        for until, phase in self.curriculum:
            if step < until * self.steps:
                rates.update({n: float(r) for n, r in phase.items()})
                break
        total = sum(rates.values())
        if total <= 0:
            raise ValueError(f"no source has a positive rate at step {step}")
        return {n: r / total for n, r in rates.items()}

    def draw(self, rng: np.random.Generator, n: int, step: int = 0) -> list[Example]:
        """n examples: a source by its rate at ``step``, then one of its examples (uniform in a pool, fresh from a
        generator, both with ``rng``)."""
        rates = self.rates_at(step)
        picks = rng.choice(len(self._names), size=n, p=[rates[name] for name in self._names])
        out = []
        for d in picks:
            source = self.datasets[self._names[d]]
            out.append(source(rng) if callable(source) else source[int(rng.integers(len(source)))])
        return out


def step_examples(data: StageData, model: MolmoLite, config: TrainConfig, step: int, rank: int = 0,
                  world_size: int = 1) -> list:
    """This rank's share of the global batch of ``step``, encoded (styles, hints, annotation order).

    The global batch is batch_size x grad_accum x world_size examples drawn with rng (seed, step); example i is encoded
    with its own rng (seed, step, i), and rank r takes examples [r * n, (r + 1) * n) with n = batch_size x grad_accum.
    So the union over ranks is exactly the batch one process draws with the same global batch size (grad_accum x
    world_size micro-batches): that is what makes 2 ranks train like 1 (molmo_lite.distributed)."""
    rng = np.random.default_rng((config.seed, step))
    local = config.batch_size * config.grad_accum
    examples = data.draw(rng, local * world_size, step=step)
    weighting = config.packing_weights or ("root_subsegments" if config.stage == "sft" else "none")
    if config.rows not in ("packed", "one"):
        raise ValueError(f"config.rows must be 'packed' or 'one', got {config.rows!r}")
    return [encode_example(examples[i], model.processor, model.tokenizer, np.random.default_rng((config.seed, step, i)),
                           weighting, one=config.rows == "one", question_first=model.config.question_first)
            for i in range(rank * local, (rank + 1) * local)]


def step_batches(data: StageData, model: MolmoLite, config: TrainConfig, step: int, rank: int = 0,
                 world_size: int = 1) -> list[dict[str, torch.Tensor]]:
    """The grad_accum micro-batches of this rank at ``step`` (``step_examples`` collated batch_size at a time)."""
    encoded = step_examples(data, model, config, step, rank, world_size)
    if config.sort_by_length:  # fewer padding tokens per micro-batch; the step's gradient is the same
        encoded = sorted(encoded, key=lambda e: len(e[0].input_ids))
    size = config.batch_size
    join = collate_packed if config.pack_examples else collate  # packed: the same gradient, fewer padding tokens
    return [join(encoded[i:i + size], model.tokenizer.pad_id) for i in range(0, len(encoded), size)]


class StepBatches(torch.utils.data.Dataset):
    """Item i is ``step_batches(...)`` of step ``steps[i]``: the micro-batches of one step. They are a function of
    (seed, step, rank) only, so DataLoader workers can make them ahead, in any order, and a run resumed at any step
    reads the same batches as an uninterrupted one."""

    def __init__(self, data: StageData, model: MolmoLite, config: TrainConfig, steps: range, rank: int = 0,
                 world_size: int = 1):
        # The workers need the processor and the tokenizer, not the weights (which may live on a GPU).
        self.encoders = _Encoders(model.processor, model.tokenizer, model.config)
        self.data, self.config, self.steps, self.rank, self.world_size = data, config, steps, rank, world_size

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> list[dict[str, torch.Tensor]]:
        return step_batches(self.data, self.encoders, self.config, self.steps[i], self.rank, self.world_size)


@dataclass
class _Encoders:
    processor: Any
    tokenizer: Any
    config: Any


def loader_workers(device: torch.device, requested: int | None = None) -> int:
    """How many processes make the batches while the model trains. On the CPU none (0): the cores that would make
    them are the ones training. On a GPU the CPU is otherwise idle, and one process makes the tiny preset's pointing
    scenes at about 380 a second, fewer than a GPU step eats, so up to 4 workers (one core left for the main
    process). ``requested`` (Trainer(workers=...)) overrides the rule."""
    if requested is not None:
        return max(0, int(requested))
    if torch.device(device).type != "cuda":
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def batch_stream(data: StageData, model: MolmoLite, config: TrainConfig, steps: range, rank: int = 0,
                 world_size: int = 1, workers: int = 0, pin_memory: bool = False):
    """The micro-batches of each step of ``steps``, in order: made here (workers=0), or ahead by ``workers``
    DataLoader processes (two steps each in flight), with the same tensors either way."""
    if workers == 0:
        for step in steps:
            yield step_batches(data, model, config, step, rank, world_size)
        return
    import multiprocessing

    # fork: the workers inherit the data sources (generators may be closures, which spawn could not pickle).
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(StepBatches(data, model, config, steps, rank, world_size), batch_size=None,
                                         shuffle=False, num_workers=workers, pin_memory=pin_memory,
                                         prefetch_factor=2, multiprocessing_context=context)
    yield from loader


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The torch seed of (seed, step, rank): dropout masks are a function of the step (and differ between ranks), so
    resuming needs no RNG state and a checkpoint resumes on any number of ranks."""
    return int(np.random.SeedSequence((seed, step, rank)).generate_state(1)[0])


def embedding_norms(model: MolmoLite, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The diagnostic of chapter 08: mean L2 norm of the image features the connector adds at the <im_patch>
    positions, and of the text token embeddings (every real token that is not an image token). When the first is far
    below the second, the LLM barely sees the image; far above, each image position's residual stream is its raw
    feature in every layer (pre-norm blocks)."""
    with torch.no_grad():
        features = model.image_features(batch["crops"], batch["pooled_patches_idx"], batch.get("patch_pad_fraction"))
        tokens = model.llm.embed(batch["input_ids"])
    image_ids = torch.tensor(sorted(model.tokenizer.image_token_ids.values()))
    text = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], image_ids)
    return {"image": float(features.norm(dim=-1).mean()), "text": float(tokens[text].norm(dim=-1).mean())}


# --------------------------------------------------------------------------------------------------------------------
# 3. Checkpoints: weights, optimizer, RNG; atomic publication; exact resume.
# --------------------------------------------------------------------------------------------------------------------


def named_optimizer_state(optimizer: torch.optim.Optimizer, names: Mapping[int, str],
                          full: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict:
    """optimizer.state_dict() keyed by parameter NAME instead of position (names: id(param) -> name), each tensor
    passed through ``full`` (a sharded run gathers its shards there). The same file then loads into any layout."""
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved = optimizer.state_dict()
    state = {order[i]: {k: full(v) if torch.is_tensor(v) else v for k, v in s.items()}
             for i, s in saved["state"].items()}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [order[i] for i in g["params"]]}
              for g in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_named_optimizer_state(optimizer: torch.optim.Optimizer, named: Mapping, names: Mapping[int, str],
                               local: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda t, p: t) -> None:
    """Inverse of ``named_optimizer_state``; local(tensor, param) cuts a full tensor to this rank's shard."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    index = {names[id(p)]: i for i, p in enumerate(params)}
    unknown = sorted(set(named["state"]) - set(index))
    if unknown:
        raise ValueError(f"the optimizer state names parameters this model lacks: {unknown[:5]}")
    state = {index[n]: {k: local(v, params[index[n]]) if torch.is_tensor(v) and v.dim() > 0 else v
                        for k, v in s.items()} for n, s in named["state"].items()}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_training_state(directory: Path, model: MolmoLite, model_state: Mapping[str, torch.Tensor],
                        optimizer_state: Mapping, step: int, history: list[dict], config: TrainConfig,
                        keep: int = 2) -> Path:
    """directory/step_{step:06d}/ (model via save_pretrained, optimizer.pt, trainer.json), then latest.json -> it.
    The states are full (unsharded) and the optimizer's is keyed by parameter name, so any number of ranks can
    resume from it. The step folder is written under a temporary name and renamed, latest.json replaced
    atomically: a run killed at any moment leaves the previous checkpoint intact. Only the ``keep`` newest step
    folders are kept."""
    directory = Path(directory)
    final = directory / f"step_{step:06d}"
    tmp = directory / f".tmp_step_{step:06d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=dict(model_state))
    torch.save({"optimizer": optimizer_state}, tmp / "optimizer.pt")
    (tmp / "trainer.json").write_text(json.dumps({"step": step, "config": config.to_dict(), "history": history}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = directory / f".latest_{os.getpid()}.json"
    latest_tmp.write_text(json.dumps({"step": step, "path": final.name}))
    os.replace(latest_tmp, directory / "latest.json")
    # Only after latest.json points at the new one: drop all but the keep - 1 newest EARLIER steps. Folders of later
    # steps (left by a longer run in the same folder) are not this run's: never touched.
    earlier = sorted(p for p in directory.glob("step_*") if p.name < final.name)
    for old in earlier[:max(0, len(earlier) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The folder latest.json points to, or None."""
    pointer = Path(directory) / "latest.json"
    if not pointer.exists():
        return None
    return Path(directory) / json.loads(pointer.read_text())["path"]


def read_training_state(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict, int, list]:
    """(model state, named optimizer state, step, history) of a step folder."""
    model_state = load_file(checkpoint / "model.safetensors")
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)  # tensors and numbers only: no pickle code
    trainer = json.loads((checkpoint / "trainer.json").read_text())
    return model_state, state["optimizer"], trainer["step"], trainer["history"]


# --------------------------------------------------------------------------------------------------------------------
# 4. The loop.
# --------------------------------------------------------------------------------------------------------------------


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: the run stops and says at which step."""


class Trainer:
    """Trains ``model`` on ``data`` with ``config``; checkpoints and curves go to ``out_dir``.

    stop_after: leave the loop after this many steps of THIS call (to test resuming, or to train in slices from a
    notebook); the schedule still follows config.steps. callback(step, record) is called at every logged step.

    One process. molmo_lite.distributed.DistributedTrainer is this class on several ranks: it overrides the hooks
    marked "hook" below (wrapping the model, syncing gradients, reducing figures, gathering full states).
    """

    rank, world_size = 0, 1

    def __init__(self, model: MolmoLite, config: TrainConfig, data: StageData, out_dir: str | Path,
                 device: torch.device | str | None = None, progress: bool = True,
                 callback: Callable[[int, dict], None] | None = None, workers: int | None = None):
        self.model, self.config, self.data, self.out_dir = model, config, data, Path(out_dir)
        self.device = pick_device(device)  # the one device rule: --device / $MOLMO_LITE_DEVICE / CUDA / CPU
        self.workers = loader_workers(self.device, workers)  # processes that make the batches ahead (0 on a CPU)
        self.model.to(self.device)
        self.model.llm.residual_dropout = config.residual_dropout
        freeze_groups(model, config)  # before wrapping: DDP registers only the parameters that need gradients
        self.module = self.wrap(model)
        self.optimizer = build_optimizer(model, config)
        self.progress, self.callback = progress, callback
        self.step, self.history = 0, []

    @property
    def is_main(self) -> bool:
        """The rank that logs, draws the progress bar and writes files."""
        return self.rank == 0

    # ------------------------------------------------------------------------------------------- hooks (1 process)

    def wrap(self, model: MolmoLite) -> torch.nn.Module:
        """hook: the module whose forward runs (DDP wraps it; FSDP2 shards it in place)."""
        return model

    def gradient_sync(self, enabled: bool):
        """hook: a context in which backward does (not) all-reduce gradients (skipped for all but the last
        micro-batch of a step)."""
        return contextlib.nullcontext()

    def reduce_sum(self, values: list[float]) -> list[float]:
        """hook: the sums of ``values`` over ranks."""
        return values

    def clip_gradients(self) -> float:
        """hook: clip to config.grad_clip; the total norm before clipping."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        return float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """hook: the whole model's weights (a sharded run gathers them)."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def load_model_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """hook: load full weights (a sharded run keeps its shard of each)."""
        self.model.load_state_dict(state)

    def full_optimizer_state(self) -> dict:
        return named_optimizer_state(self.optimizer, self._names())

    def load_optimizer_state(self, named: Mapping) -> None:
        load_named_optimizer_state(self.optimizer, named, self._names())

    def barrier(self) -> None:
        """hook: wait for every rank."""

    def _names(self) -> dict[int, str]:
        return {id(p): n for n, p in self.model.named_parameters()}

    # ----------------------------------------------------------------------------------------------- checkpoints

    def resume(self) -> bool:
        """Continue from out_dir/latest.json if there is one; True when it did. Every rank reads the same folder."""
        checkpoint = latest_checkpoint(self.out_dir)
        if checkpoint is None:
            return False
        model_state, optimizer_state, self.step, self.history = read_training_state(checkpoint)
        self.load_model_state(model_state)
        self.load_optimizer_state(optimizer_state)
        return True

    def save(self) -> Path | None:
        """Checkpoint the current step (every rank gathers; the main rank writes)."""
        model_state, optimizer_state = self.full_model_state(), self.full_optimizer_state()
        path = None
        if self.is_main:
            path = save_training_state(self.out_dir, self.model, model_state, optimizer_state, self.step,
                                       self.history, self.config)
        self.barrier()
        return path

    # ------------------------------------------------------------------------------------------------------ steps

    def train_step(self, step: int, batches: list[dict[str, torch.Tensor]] | None = None) -> dict[str, float]:
        """One optimizer step over grad_accum micro-batches (``batches``: this step's, made ahead by fit's workers;
        made here if None); returns loss, grad norm, lrs, tokens (global figures)."""
        config, model = self.config, self.model
        lrs = set_learning_rates(self.optimizer, step, config)
        torch.manual_seed(step_seed(config.seed, step, self.rank))  # dropout of this step and rank
        if batches is None:
            batches = step_batches(self.data, model, config, step, self.rank, self.world_size)
        local = sum(int((b["loss_weights"] > 0).sum()) for b in batches)
        total = self.reduce_sum([float(local)])[0]  # answer tokens of the global batch (all ranks)
        # Each rank's loss is its share of the global-batch loss. Data-parallel backends AVERAGE gradients over
        # ranks, so the share is multiplied by world_size to make the average the gradient of the global loss.
        scale = float(self.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, tokens = 0.0, 0
        dtype = autocast_dtype(self.device)
        for i, batch in enumerate(batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}  # pinned by the loader
            targets, weights = batch.pop("target_ids"), batch.pop("loss_weights")
            dropout_mask = (weights > 0) if config.response_only else None
            with self.gradient_sync(i == len(batches) - 1):
                with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                    logits = self.module(**batch, dropout_mask=dropout_mask).logits
                loss, _, _ = answer_loss(logits, targets, weights, model.config.z_loss, normalizer=max(total, 1.0))
                (loss * scale).backward()
            loss_sum += loss.item()
            tokens += int(batch["attention_mask"].sum())
        loss_sum, tokens = self.reduce_sum([loss_sum, float(tokens)])
        if not math.isfinite(loss_sum):  # the same reduced figure on every rank: all stop together
            raise NonFiniteLossError(f"the loss is {loss_sum} at step {step}: lower the learning rates, check the "
                                     "data of this step (step_batches reproduces it), or train in fp32")
        grad_norm = self.clip_gradients()
        self.optimizer.step()
        return {"loss": loss_sum, "grad_norm": grad_norm, "tokens": int(tokens),
                **{f"lr_{k}": v for k, v in lrs.items()}}

    def fit(self, resume: bool = False, stop_after: int | None = None) -> list[dict]:
        """Train until config.steps (or stop_after steps of this call); returns the history of logged steps."""
        if resume:
            self.resume()
        self.module.train()
        end = self.config.steps if stop_after is None else min(self.config.steps, self.step + stop_after)
        bar = _progress(self.step, self.config.steps, self.progress and self.is_main)
        start, tokens = time.perf_counter(), 0
        stream = batch_stream(self.data, self.model, self.config, range(self.step, end), self.rank, self.world_size,
                              self.workers, pin_memory=self.device.type == "cuda")
        while self.step < end:
            record = self.train_step(self.step, next(stream))
            self.step += 1
            tokens += record["tokens"]
            if self.step % self.config.log_every == 0 or self.step == end:
                record.update(step=self.step, tokens_per_second=tokens / max(time.perf_counter() - start, 1e-9))
                self.history.append(record)
                if self.callback and self.is_main:
                    self.callback(self.step, record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record.get('lr_llm', 0):.1e}",
                                tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}")
            if self.step % self.config.save_every == 0 or self.step == end:
                self.save()
        stream.close()  # stops the workers, if any
        if bar is not None:
            bar.close()
            # The summary, also after a tqdm bar (which a terminal may have cleared or cut).
            seconds = time.perf_counter() - start
            loss = f", last loss {self.history[-1]['loss']:.4f}" if self.history else ""
            print(f"trained to step {self.step} of {self.config.steps} in {seconds / 60:.1f} min{loss}, "
                  f"{tokens / max(seconds, 1e-9):,.0f} tokens/s", flush=True)
        self.module.eval()
        return self.history


class _ProgressLines:
    """Progress as about ``lines`` printed lines, for notebooks: a widget bar is saved as its first state ("0%| |
    0/130") in a notebook executed for the web, where no widget runs; plain lines read the same live and saved."""

    def __init__(self, initial: int, total: int, lines: int = 10):
        self.n, self.total, self.every = initial, total, max(1, math.ceil(total / lines))
        self.start, self.postfix = time.perf_counter(), {}

    def set_postfix(self, **values: str) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n % self.every == 0 or self.n == self.total:
            extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
            print(f"train: step {self.n}/{self.total} ({100 * self.n / self.total:.0f}%), "
                  f"{time.perf_counter() - self.start:.0f} s{extra}", flush=True)

    def close(self) -> None:
        pass


def _progress(initial: int, total: int, enabled: bool) -> Any:
    """A tqdm bar in a terminal; printed lines in a notebook (``_ProgressLines``); None when not enabled."""
    if not enabled:
        return None
    if "ipykernel" in sys.modules:
        return _ProgressLines(initial, total)
    from tqdm import tqdm

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

SFT_GROUPS = {  # Molmo's SFT shares (docs/molmo_recipe.md §7), with the course's synthetic stand-ins in each group
    "pointing": (0.35, ["pointing"]),
    "aux": (0.50, ["clocks", "charts", "tables"]),
    "demo": (0.15, ["scene_qa", "captions"]),
}


def _sources(config: TrainConfig, split: str, n: int, cache_dir: str | Path | None) -> dict[str, Source]:
    """The synthetic sources of a stage: generators (config.data "fresh", training split only) or pools of n examples
    of the split's seed stream ("pool"; captions a quarter of n in stage 2). Charts and tables are always pools of
    n // 4 (they render slowly, with matplotlib, and are cached in cache_dir)."""
    from functools import partial

    from .data import clocks, docs, synthetic
    from .data.examples import examples_of

    seed, size = config.seed, config.image_size
    if config.data not in ("pool", "fresh"):
        raise ValueError(f"config.data must be 'pool' or 'fresh', got {config.data!r}")
    if config.stage not in ("caption", "sft"):
        raise ValueError(f"stage must be 'caption' or 'sft', got {config.stage!r}")
    generators: dict[str, Callable[[np.random.Generator], Example]] = {}
    sizes: dict[str, int] = {}
    if config.stage == "caption":
        generators["captions"] = partial(synthetic.caption_example, size=size)
    else:
        generators["pointing"] = partial(synthetic.pointing_example, size=size, max_count=10)
        if config.curriculum != "none":  # the easier scenes of the curriculum's first phases
            generators["pointing_one"] = partial(synthetic.pointing_example, size=size, min_count=1, max_count=1,
                                                 max_distractors=0)
            generators["pointing_few"] = partial(synthetic.pointing_example, size=size, min_count=1, max_count=3,
                                                 max_distractors=3)
            generators["pointing_mid"] = partial(synthetic.pointing_example, size=size, min_count=1, max_count=6,
                                                 max_distractors=4)
        generators.update(clocks=partial(clocks.clock_example, size=size),
                          scene_qa=partial(synthetic.qa_example, size=size),
                          captions=partial(synthetic.caption_example, size=size))
        sizes["captions"] = max(1, n // 4)
    if config.data == "fresh" and split == "train":
        sources: dict[str, Source] = dict(generators)
    else:  # a pool per source, drawn from the split's own stream (the old pools, example for example)
        sources = {}
        for name, make in generators.items():
            sources[name] = examples_of(make, sizes.get(name, n), seed, split)
    if config.stage == "sft":
        n_docs = max(1, n // 4)
        sources.update(charts=docs.chart_examples(n_docs, seed, split, cache_dir=cache_dir),
                       tables=docs.table_examples(n_docs, seed, split, cache_dir=cache_dir))
        order = [k for k in ("pointing", "pointing_one", "pointing_few", "pointing_mid", "clocks", "charts", "tables", "scene_qa",
                             "captions") if k in sources]
        sources = {k: sources[k] for k in order}
    return sources


# Curricula of stage 2, by name (TrainConfig.curriculum): phases (until, {source: rate}) over the base rates. The
# rates of the pointing sources are shares of the pointing group (Molmo's 35%), the others absolute. "objects": the
# first half of the steps are single objects only (short sequences, so together only about a tenth of the time; one
# object is where learning to localise is known to start), then the pointing group moves to 1-3 objects among 0-3
# others, then to the held-out distribution (0-10 among 0-6), the rest of the mixture at its rates. Molmo has no
# curriculum: its SFT mixture is fixed (docs/recipes.md).
_REST = {name: 0.0 for name in ("clocks", "charts", "tables", "scene_qa", "captions")}
CURRICULA = {
    "none": (),
    "objects": ((0.5, {"pointing_one": 1.0, "pointing_few": 0.0, "pointing": 0.0, **_REST}),
                (0.75, {"pointing_one": 0.2, "pointing_few": 0.8, "pointing": 0.0}),
                (1.0, {"pointing_one": 0.0, "pointing_few": 0.3, "pointing": 0.7})),
    # "objects-mixed": the same start, shorter (a third of the steps), then the easy scenes stay in the pointing group
    # to the end, so that what the single-object phase learnt keeps being asked for.
    "objects-mixed": ((1 / 3, {"pointing_one": 1.0, "pointing_few": 0.0, "pointing": 0.0, **_REST}),
                      (2 / 3, {"pointing_one": 0.3, "pointing_few": 0.7, "pointing": 0.0}),
                      (1.0, {"pointing_one": 0.15, "pointing_few": 0.35, "pointing": 0.5})),
    # "objects-gradual": up through the held-out distribution in small steps (1 object, 1-3 among 0-3, 1-6 among 0-4,
    # then 0-10 among 0-6), each level mixed with the next, the rest of the mixture at its rates from the start
    # (clocks, documents and QA keep training), and the held-out scenes alone for the last third.
    "objects-gradual": tuple((until, dict(zip(("pointing_one", "pointing_few", "pointing_mid", "pointing"), shares)))
                             for until, shares in ((0.1, (1.0, 0.0, 0.0, 0.0)), (0.25, (0.3, 0.7, 0.0, 0.0)),
                                                   (0.45, (0.0, 0.3, 0.7, 0.0)), (2 / 3, (0.0, 0.0, 0.4, 0.6)))),
}


def curriculum_phases(name: str, rates: Mapping[str, float]) -> tuple[tuple[float, dict[str, float]], ...]:
    """CURRICULA[name] with each phase's pointing shares scaled to the pointing group's base rate in ``rates``."""
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r}; known: {sorted(CURRICULA)}")
    share = sum(r for k, r in rates.items() if k.startswith("pointing"))
    return tuple((until, {k: v * share if k.startswith("pointing") else v for k, v in phase.items()})
                 for until, phase in CURRICULA[name])


def override_rates(rates: Mapping[str, float], overrides: Mapping[str, float]) -> dict[str, float]:
    """``rates`` (summing to 1) with the sources in ``overrides`` set to those rates and every other source scaled
    by one factor so that all still sum to 1 (e.g. {"pointing": 0.6}: pointing 60% instead of Molmo's 35%, the rest
    of the mixture in its own proportions)."""
    unknown = sorted(set(overrides) - set(rates))
    if unknown:
        raise ValueError(f"rates name unknown sources {unknown}; sources: {sorted(rates)}")
    fixed = sum(overrides.values())
    if any(r < 0 for r in overrides.values()) or fixed > 1 + 1e-9:
        raise ValueError(f"override rates must be >= 0 and sum to at most 1, got {dict(overrides)}")
    rest = sum(r for k, r in rates.items() if k not in overrides)
    scale = (1 - fixed) / rest if rest > 0 else 0.0
    return {k: float(overrides[k]) if k in overrides else r * scale for k, r in rates.items()}


def stage_data(config: TrainConfig, split: str = "train", n: int | None = None,
               cache_dir: str | Path | None = None) -> StageData:
    """The synthetic training sources of a stage: "caption" -> dense captions + transcripts; "sft" -> pointing and
    counting scenes, clocks, charts, tables, scene QA and some captions, at Molmo's group shares (SFT_GROUPS).
    config.data: "pool" (n examples per dataset, default config.examples; charts, tables and captions a quarter of
    it) or "fresh" (generated at every draw from the step's rng); config.curriculum: a CURRICULA name (stage 2)."""
    n = config.examples if n is None else n
    sources = _sources(config, split, n, cache_dir)
    if config.stage == "caption":
        return StageData(sources)
    # a generator counts as the pool it replaces: n examples, captions a quarter of n
    sizes = {k: (max(1, n // 4) if k == "captions" else n) if callable(v) else len(v) for k, v in sources.items()}
    rates = mixture_rates({k: v for k, v in sizes.items() if not k.startswith("pointing_")}, SFT_GROUPS)
    rates.update({k: 0.0 for k in sources if k.startswith("pointing_")})
    rates = override_rates(rates, dict(config.rates))
    phases = curriculum_phases(config.curriculum, rates) if config.curriculum != "none" else ()
    return StageData(sources, rates, phases, steps=config.steps, nominal=n)


# --------------------------------------------------------------------------------------------------------------------
# 6. The course's main job: `make run` = python -m molmo_lite run.
# --------------------------------------------------------------------------------------------------------------------


def tiny_model(seed: int = 0, connector: Mapping[str, Any] | None = None,
               preprocessor: Mapping[str, Any] | None = None, lm_kinds: Sequence[str] | None = None,
               vit_scenes: str = "simple", vit_steps: int = 600, eyes: Mapping[str, Any] | None = None,
               lm: str = "pretrained") -> MolmoLite:
    """The tiny Molmo as Molmo starts: the CLIP-pretrained tiny ViT (chapter 02) and the pretrained tiny LM
    (chapter 04), loaded from checkpoints/ or trained first if missing, and a fresh connector. connector: fields of
    the tiny ConnectorConfig to change (e.g. {"feature_norm": 0, "init_scale": 1.0}, Molmo's own connector);
    preprocessor: fields of the tiny PreprocessorConfig to change (e.g. {"overlap_margins": (0, 0)}); lm_kinds: the
    LM pre-trained on only these kinds of corpus lines (molmo_lite.data.corpus.KINDS; default all of them);
    vit_scenes / vit_steps: the tiny CLIP's pre-training images (clip_pretrain.ENCODER_SCENES) and steps.
    eyes: instead, the image path of chapter 10's pointing harness (fields of ``pointing_only.EyesConfig``: its
    geometry, a shipped ViT under data_samples/backbones/ with its cell head, the projector's start;
    ``pointing_only.build_model``); lm: "pretrained" (chapter 04's tiny LM) or "random" (the harness's start)."""
    from dataclasses import replace

    from .clip_pretrain import tiny_encoder
    from .config import MOLMO_PRESETS
    from .lm_pretrain import tiny_lm

    if lm not in ("pretrained", "random"):
        raise ValueError(f"lm must be 'pretrained' or 'random', got {lm!r}")
    if eyes is not None:
        from .pointing_only import EyesConfig, build_model as build_eyes_model

        fields = dict(eyes)
        if fields.get("vision_init") and not Path(fields["vision_init"]).exists():  # relative to the repository
            fields["vision_init"] = str(Path(__file__).resolve().parents[1] / fields["vision_init"])
        llm = tiny_lm() if lm == "pretrained" else None  # read (or pre-trained) before the seed, as below
        torch.manual_seed(seed)
        return build_eyes_model(EyesConfig(**fields, seed=seed), llm=llm)
    config = MOLMO_PRESETS["tiny"]
    if connector:
        config = replace(config, connector=replace(config.connector, **connector))
    if preprocessor:
        config = replace(config, preprocessor=replace(config.preprocessor, **preprocessor))
    vision = tiny_encoder(steps=vit_steps, scenes=vit_scenes)  # defaults: chapter 02's checkpoints/tiny_vit
    llm = None if lm == "random" else tiny_lm() if lm_kinds is None else tiny_lm(kinds=tuple(lm_kinds))
    torch.manual_seed(seed)
    return MolmoLite.from_parts(config, vision=vision, llm=llm)


def build_model(name: str = "tiny", seed: int = 0) -> MolmoLite:
    """The starting model of a training run: "tiny" (pretrained tiny parts, CPU), "small" (random weights: one GPU,
    trained from scratch with the small-* presets), or a released geometry ("molmo-7b-d", "molmo-7b-o") started from
    its real CLIP and LLM weights (MolmoLite.from_backbones; needs the network or the Hub cache)."""
    from .config import BACKBONES, MOLMO_PRESETS

    if name == "tiny":
        return tiny_model(seed)
    if name in BACKBONES:
        torch.manual_seed(seed)
        return MolmoLite.from_backbones(name)
    if name in MOLMO_PRESETS:
        torch.manual_seed(seed)
        return MolmoLite(name)
    raise ValueError(f"unknown model {name!r}; known: {sorted(MOLMO_PRESETS)}")


def run_course(out_dir: str | Path = "runs/tiny", caption: TrainConfig | None = None, sft: TrainConfig | None = None,
               eval_examples: int = 200, resume: bool = False, progress: bool = True,
               log: Callable[[str], None] = print, device: str | None = None) -> dict[str, Any]:
    """Stage 1, stage 2 and the held-out evaluation of the tiny Molmo; writes out_dir/{caption,sft}/ (checkpoints),
    report.json, loss curves and predictions.png; returns the report (metrics, timings). device: see
    ``molmo_lite.device.pick_device`` (default CUDA when present, else CPU)."""
    from .config import TINY_RUN_MODEL, TRAIN_PRESETS
    from .evaluate import evaluate_with_controls, headline, heldout_sets, metrics_table, plot_predictions, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    caption = caption or TRAIN_PRESETS["course-caption"]
    sft = sft or TRAIN_PRESETS["course-sft"]
    cache = out / "docs_cache"
    times: dict[str, float] = {}
    start = time.perf_counter()
    model = tiny_model(caption.seed, **TINY_RUN_MODEL)
    times["model (shipped claim ViT, random LLM)"] = time.perf_counter() - start
    for name, config in (("caption", caption), ("sft", sft)):
        t = time.perf_counter()
        log(f"stage {name}: {config.steps} steps of {config.batch_size} x {config.grad_accum} sequences")
        trainer = Trainer(model, config, stage_data(config, cache_dir=cache), out / name, progress=progress,
                          device=device)
        history = trainer.fit(resume=resume)
        plot_history(history, out / f"loss_{name}.png", title=f"stage {name}")
        times[f"stage {name}"] = time.perf_counter() - t
    t = time.perf_counter()
    sets = heldout_sets(eval_examples, seed=0, size=sft.image_size, cache_dir=cache)
    report = evaluate_with_controls(model, sets)
    times["evaluation"] = time.perf_counter() - t
    plot_predictions(sets, report, path=out / "predictions.png")
    model.save_pretrained(out / "final")
    times["total"] = time.perf_counter() - start
    report.update(headline=headline(report), seconds={k: round(v, 1) for k, v in times.items()},
                  configs={"caption": caption.to_dict(), "sft": sft.to_dict(), "model": TINY_RUN_MODEL})
    write_report(report, out / "report.json")
    log(metrics_table(report))
    log("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    return report

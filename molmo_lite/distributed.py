"""Training on several processes (chapter 12): torchrun, DDP and FSDP2, with the trainer of chapters 08-09.

    torchrun --nproc-per-node 2 -m molmo_lite train --stage caption --out runs/ddp --strategy ddp
    torchrun --nproc-per-node 2 -m molmo_lite train --stage caption --out runs/fsdp --strategy fsdp

torchrun starts N copies of the program and gives each its RANK, LOCAL_RANK and WORLD_SIZE (and where rank 0
listens: MASTER_ADDR / MASTER_PORT). ``init_distributed`` reads them and joins the process group: ``gloo`` on CPU (what
this course's CI runs), ``nccl`` on CUDA GPUs, one GPU per process.

Data parallel (DDP). Every rank holds the whole model. Each step, every rank trains on ITS share of the global batch
(``train.step_examples``: the batch is drawn once from (seed, step) and cut into ranks' shares, so 2 ranks see exactly
the examples 1 process sees with twice the accumulation); backward all-reduces (averages) the gradients, so every rank
takes the same optimizer step. With gradient accumulation only the last micro-batch's backward communicates
(``no_sync`` for the others): averaging a sum once is the same as summing averages.

Sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``). Each parameter is split into N shards (dim 0),
one per rank, as a DTensor; a ViT or LLM block gathers its full weights just before its forward / backward and frees
them after, and gradients are reduce-scattered, so every rank keeps 1/N of the weights, gradients and AdamW moments.
Molmo trains with FSDP in exactly this way (one unit per block). ``memory_per_rank`` reports what every rank holds
(the train command writes it to OUT/ranks.json): a DDP rank as much as one process, an FSDP2 rank about 1/N of it.

Both give the gradient of the global batch, so the weights after k steps equal those of one process with the same
global batch, up to fp32 summation order (tests/test_distributed.py). Checkpoints hold FULL tensors (the sharded run
gathers them) with the optimizer state keyed by parameter name (``train.named_optimizer_state``), so a run saved on 2
ranks resumes on 1, or on 8.

Multi-node: the same command on every node with ``--nnodes 2 --node-rank K --rdzv-endpoint HOST:PORT``; the
checkpoint folder must then be on storage every node sees.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from .model import MolmoLite
from .train import Trainer, load_named_optimizer_state, named_optimizer_state

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among world_size, its GPU (local_rank) and device, the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: no process group (one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun (or torch.distributed.run) started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (environment variables), once; one process when not launched by it.

    device: the course's device rule (``molmo_lite.device.pick_device``: this argument, else $MOLMO_LITE_DEVICE, else
    CUDA when present, else CPU). On CUDA each rank takes GPU LOCAL_RANK and nccl; on CPU, gloo."""
    from .device import pick_device

    dev = pick_device(device)
    if not launched_by_torchrun():
        return DistInfo(device=dev)
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        dev, backend = torch.device("cuda", local), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev, backend)


def shutdown() -> None:
    """Leave the process group, all ranks together (call once at the end of a torchrun program).

    The barrier matters: without it a rank that has nothing left to write (rank 1) tears its connections down while
    rank 0 is still writing files and holds its side open, and gloo then sometimes aborts that process at exit
    ("terminate called without an active exception", SIGABRT). Every object that may hold pending collectives
    (the trainer, an FSDP2 model) should be released before the call."""
    import gc

    if dist.is_initialized():
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()


def main_first(info: DistInfo):
    """A context in which rank 0 runs first and the others wait, e.g. to build a cache (pretrained parts, rendered
    charts) that the others then read instead of all writing it at once."""

    @contextlib.contextmanager
    def context():
        if not info.is_main and dist.is_initialized():
            dist.barrier()
        yield
        if info.is_main and dist.is_initialized():
            dist.barrier()

    return context()


# --------------------------------------------------------------------------------------------------------------------
# Wrapping the model.
# --------------------------------------------------------------------------------------------------------------------


def transformer_blocks(model: MolmoLite) -> list[nn.Module]:
    """The repeated blocks: the unit of FSDP sharding and of activation checkpointing (ViT blocks, LLM blocks)."""
    return [*model.vision.blocks, *model.llm.blocks]


def checkpoint_activations(model: MolmoLite) -> MolmoLite:
    """Recompute every block's activations in backward instead of keeping them (torch.utils.checkpoint): memory for
    activations drops from one set per block to one per block boundary, for about one extra forward. Dropout masks are
    recomputed identically (the RNG state is replayed)."""
    from torch.utils.checkpoint import checkpoint

    for block in transformer_blocks(model):
        if getattr(block, "_molmo_lite_checkpointed", False):
            continue
        forward = block.forward

        @functools.wraps(forward)
        def checkpointed(*args, _forward=forward, **kwargs):
            if not torch.is_grad_enabled():
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed
        block._molmo_lite_checkpointed = True
    return model


def shard_model(model: MolmoLite, info: DistInfo) -> MolmoLite:
    """FSDP2: one fully_shard unit per ViT / LLM block, then the rest (embeddings, connector, norms) as the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def local_parameter_bytes(model: nn.Module) -> int:
    """Bytes of parameters THIS rank holds (a sharded parameter counts its local shard only)."""
    return sum(_local_bytes(p) for p in model.parameters())


def _local_bytes(t: torch.Tensor | None) -> int:
    """Bytes of the part of ``t`` this rank holds: a DTensor's local shard, a plain tensor whole, None nothing."""
    if t is None:
        return 0
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def memory_per_rank(trainer: Trainer) -> list[dict]:
    """What every rank holds, in bytes: parameters, gradients (those present now: after a step, the last step's) and
    optimizer state (AdamW: two moments per parameter and a step counter), sharded tensors counted by their local
    shard. A collective under torchrun (every rank must call it); one row per rank, the same list on every rank.
    On CUDA, ``peak_device`` is the most memory the device held (activations and gathered weights included)."""
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    state = [v for s in trainer.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    device = getattr(trainer, "device", torch.device("cpu"))
    row = {"rank": trainer.rank, "world_size": trainer.world_size,
           "strategy": getattr(trainer, "strategy", None) if trainer.world_size > 1 else None,
           "parameters": local_parameter_bytes(trainer.model), "gradients": sum(_local_bytes(p.grad) for p in params),
           "optimizer": sum(_local_bytes(v) for v in state),
           "peak_device": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}
    if trainer.world_size == 1 or not dist.is_initialized():
        return [row]
    rows: list = [None] * trainer.world_size
    dist.all_gather_object(rows, row)
    return rows


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective: every rank must call it), on CPU; plain tensors unchanged."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.detach().cpu()


def _like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Cut a full tensor to this rank's shard of ``param`` (a DTensor), or move it to param's device."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(param.device_mesh.device_type), param.device_mesh, param.placements,
                                 src_data_rank=None)  # every rank read the same file: each cuts its own shard
    return full.to(param.device)


# --------------------------------------------------------------------------------------------------------------------
# The trainer on several ranks.
# --------------------------------------------------------------------------------------------------------------------


class DistributedTrainer(Trainer):
    """``Trainer`` across the ranks of a torchrun launch; strategy "ddp" or "fsdp". config.batch_size is the
    micro-batch of ONE rank: the global batch is batch_size x grad_accum x world_size. With one process (not launched
    by torchrun) it is the plain trainer, plus activation checkpointing if asked."""

    def __init__(self, model: MolmoLite, config, data, out_dir, strategy: str = "ddp",
                 activation_checkpointing: bool = False, info: DistInfo | None = None, **kwargs):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if strategy == "fsdp" and getattr(config, "optimizer", "adamw") == "muon":
            raise ValueError("Muon orthogonalises whole matrices; FSDP shards them: use strategy 'ddp' with muon")
        self.info = info or init_distributed()
        self.rank, self.world_size, self.strategy = self.info.rank, self.info.world_size, strategy
        if activation_checkpointing:
            checkpoint_activations(model)
        kwargs.setdefault("device", self.info.device)
        super().__init__(model, config, data, out_dir, **kwargs)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def sharded(self) -> bool:
        return self.distributed and self.strategy == "fsdp"

    def wrap(self, model: MolmoLite) -> nn.Module:
        if not self.distributed:
            return model
        if self.strategy == "fsdp":
            return shard_model(model, self.info)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.info.local_rank] if self.info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def gradient_sync(self, enabled: bool):
        if not self.distributed or enabled:
            if self.sharded:
                self.module.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if self.sharded:  # FSDP2: keep the unsharded gradients, reduce-scatter once at the last micro-batch
            self.module.set_requires_gradient_sync(False)
            return contextlib.nullcontext()
        return self.module.no_sync()  # DDP: no all-reduce in this backward

    def reduce_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.info.device)
        dist.all_reduce(t)
        return t.tolist()

    def clip_gradients(self) -> float:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        return float(_full(norm)) if self.sharded else float(norm)

    def full_model_state(self) -> dict[str, torch.Tensor]:
        return {k: _full(v) for k, v in self.model.state_dict().items()}

    def load_model_state(self, state: Mapping[str, torch.Tensor]) -> None:
        own = self.model.state_dict()
        self.model.load_state_dict({k: _like(v, own[k]) for k, v in state.items()})

    def full_optimizer_state(self) -> dict:
        return named_optimizer_state(self.optimizer, self._names(), full=_full)

    def load_optimizer_state(self, named: Mapping) -> None:
        load_named_optimizer_state(self.optimizer, named, self._names(), local=_like)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

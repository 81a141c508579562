"""Chapter 12 for real: torchrun with 2 CPU processes (gloo) trains exactly like 1 process with the same global batch.

Every run here is the course's own command line, ``python -m molmo_lite train``, launched by torchrun for 2 ranks:
each rank takes micro-batches of 1 with 2 accumulation steps (so DDP's no_sync and FSDP2's deferred gradient sync are
exercised); the reference is one process with micro-batches of 2 and the same 2 accumulation steps, i.e. the same 4
examples per step. Each run also writes ranks.json, the bytes every rank holds (molmo_lite.distributed.memory_per_rank).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from molmo_lite.__main__ import main
from molmo_lite.model import MolmoLite

STEPS = 20
COMMON = ["--stage", "sft", "--steps", str(STEPS), "--examples", "8", "--log-every", "1", "--save-every", "10",
          "--no-progress", "--device", "cpu"]

pytestmark = pytest.mark.slow


def _torchrun(out, init, *extra: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "molmo_lite", "train", *COMMON, "--out", str(out), "--init", str(init), "--batch-size", "1",
           "--grad-accum", "2", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _single(out, init, *extra: str) -> None:
    assert main(["train", *COMMON, "--out", str(out), "--init", str(init), "--batch-size", "2", "--grad-accum", "2",
                 *extra]) == 0


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


def _losses(out) -> list[float]:
    return [h["loss"] for h in json.loads((out / "history.json").read_text())]


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random tiny Molmo saved as the common starting point, and 20 steps of it in ONE process."""
    root = tmp_path_factory.mktemp("dist")
    torch.manual_seed(0)
    MolmoLite("tiny").save_pretrained(root / "init")
    _single(root / "one", root / "init")
    return root


@pytest.fixture(scope="module")
def two_ranks(reference):
    """run(strategy): the 2-rank run of that strategy from the same init, made once and shared by the tests below."""
    done = set()

    def run(strategy: str):
        out = reference / strategy
        if strategy not in done:
            _torchrun(out, reference / "init", "--strategy", strategy)
            done.add(strategy)
        return out

    return run


def test_the_reference_run_moves_the_weights(reference):
    """Guards the comparisons below: 20 steps (inside the tiny preset's 30-step warmup) change the weights by far more
    than the tolerance (1e-5) they are held to."""
    moved = _max_difference(_weights(reference / "one"), load_file(reference / "init" / "model.safetensors"))
    assert moved > 1e-3


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_end_with_the_weights_of_one_process_with_the_same_global_batch(reference, two_ranks, strategy):
    out = two_ranks(strategy)
    assert _max_difference(_weights(out), _weights(reference / "one")) < 1e-5  # fp32 summation order only
    assert _losses(out) == pytest.approx(_losses(reference / "one"), rel=1e-5)


def _chunk_rows(rows: int, rank: int, world_size: int) -> int:
    """Rows of dim 0 that ``rank`` keeps when FSDP2 cuts a parameter as torch.chunk does: ceil(rows / world_size)
    each, the last ranks fewer (or none); the padding that makes the shards equal is not counted."""
    size = -(-rows // world_size)
    return max(0, min(rows, (rank + 1) * size) - rank * size)


def test_fsdp_ranks_each_hold_half_the_bytes_of_a_ddp_rank(reference, two_ranks):
    """ranks.json of the two 2-rank runs: DDP replicates parameters, gradients and AdamW moments on every rank;
    FSDP2 keeps a dim-0 shard of each parameter on each rank, so about half of them."""
    ddp = json.loads((two_ranks("ddp") / "ranks.json").read_text())
    fsdp = json.loads((two_ranks("fsdp") / "ranks.json").read_text())
    one = json.loads((reference / "one" / "ranks.json").read_text())
    params = list(MolmoLite.from_pretrained(reference / "init").parameters())
    total = sum(p.numel() * p.element_size() for p in params)
    assert [r["rank"] for r in ddp] == [r["rank"] for r in fsdp] == [0, 1]
    for row in ddp + one:  # every data-parallel rank holds what one process holds
        assert row["parameters"] == row["gradients"] == total
        assert row["optimizer"] == pytest.approx(2 * total, rel=1e-3)  # exp_avg, exp_avg_sq (+ a step counter each)
    row_bytes = [(p.numel() // p.shape[0]) * p.element_size() for p in params]  # one row of dim 0
    padding = sum(b for p, b in zip(params, row_bytes) if p.shape[0] % 2)  # an odd dim 0: rank 0 keeps one row more
    for row in fsdp:
        expected = sum(_chunk_rows(p.shape[0], row["rank"], 2) * b for p, b in zip(params, row_bytes))
        assert row["parameters"] == row["gradients"] == expected
        assert abs(row["parameters"] - total / 2) <= padding / 2
        assert row["optimizer"] == pytest.approx(ddp[row["rank"]]["optimizer"] / 2, rel=1e-3)
    assert sum(row["parameters"] for row in fsdp) == total  # the shards tile the model: nothing lost, nothing twice


def test_a_checkpoint_saved_by_two_sharded_ranks_resumes_on_one_process(reference):
    out = reference / "resumed"
    _torchrun(out, reference / "init", "--strategy", "fsdp", "--stop-after", "10")
    saved = json.loads((out / "latest.json").read_text())
    assert saved["step"] == 10
    _single(out, reference / "init", "--resume")  # 1 process: batch 2 x accumulation 2, the same global batch
    assert _max_difference(_weights(out), _weights(reference / "one")) < 1e-5
    assert _losses(out) == pytest.approx(_losses(reference / "one"), rel=1e-5)


def test_activation_checkpointing_recomputes_blocks_without_changing_the_training(tmp_path):
    """Same 3 steps (dropout on) with and without recomputation: equal weights; every block really recomputes."""
    from molmo_lite.config import TrainConfig
    from molmo_lite.distributed import DistributedTrainer, transformer_blocks
    from molmo_lite.train import stage_data

    config = TrainConfig(stage="sft", steps=3, batch_size=2, examples=8, residual_dropout=0.1, lr_connector=1e-3,
                         lr_vit=1e-4, lr_llm=1e-3, warmup_connector=1, warmup_vit=1, warmup_llm=1, save_every=100)
    data = stage_data(config)
    models = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MolmoLite("tiny")
        trainer = DistributedTrainer(model, config, data, tmp_path / str(checkpointing),
                                     activation_checkpointing=checkpointing, progress=False)
        calls = []
        inner = [next(iter(b.children())) for b in transformer_blocks(model)]  # a layer inside every block
        hooks = [m.register_forward_hook(lambda *_, c=calls: c.append(1)) for m in inner]
        trainer.fit()
        for h in hooks:
            h.remove()
        models.append((model, len(calls)))
    (plain, plain_calls), (recomputed, recomputed_calls) = models
    assert recomputed_calls == 2 * plain_calls  # every block's inside runs again during backward
    for (name, a), (_, b) in zip(plain.state_dict().items(), recomputed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)

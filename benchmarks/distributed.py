"""Multi-process training (chapter 12), measured side by side: the tiny Molmo trained by ``python -m molmo_lite train``
in 1 process, and by torchrun on 2 CPU processes (gloo) with DDP and with FSDP2, at the same global batch.

All three runs start from the same saved model (the tiny Molmo with its pretrained parts, ``train.tiny_model``), train
--steps SFT steps of 4 examples each (1 process: micro-batches of 2, 2 accumulation steps; 2 ranks: micro-batches of
1, 2 accumulation steps each) and write their history and final weights. Figures:

- tokens/s of the training loop (the trainer's own figure at the last step; start-up excluded) and wall seconds of the
  whole command (start-up, data, checkpoint included), each as a ratio to the 1-process run;
- the largest weight difference to the 1-process run (fp32 summation order only: the runs are the same computation);
- bytes held per rank, parameters and parameters + gradients + AdamW state (``distributed.memory_per_rank``, written
  to ranks.json by the train command): FSDP2 shards, DDP replicates.

On this 2-core CPU two processes share the two cores that one process would use with 2 threads, so no speed-up is
expected here: the point is that the code paths run and agree. On GPUs each rank has its own device.

    python -m benchmarks.distributed [--steps 30] [--out PATH] [--no-table]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from benchmarks.common import machine_info, publish
from molmo_lite.train import tiny_model

RUNS = ("1 process", "DDP, 2 ranks", "FSDP2, 2 ranks")


def train_command(out: Path, init: Path, steps: int, run: str) -> list[str]:
    common = ["-m", "molmo_lite", "train", "--stage", "sft", "--out", str(out), "--init", str(init), "--steps",
              str(steps), "--examples", "64", "--log-every", "5", "--save-every", str(steps), "--no-progress",
              "--device", "cpu", "--grad-accum", "2"]
    if run == "1 process":
        return [sys.executable, *common, "--batch-size", "2"]
    strategy = "ddp" if run.startswith("DDP") else "fsdp"
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *common,
            "--batch-size", "1", "--strategy", strategy]


def readme_table(result: dict) -> str:
    lines = ["| run | tokens/s | vs 1 process | wall s | max weight diff vs 1 process | parameter MB per rank "
             "| parameters + gradients + AdamW MB per rank |", "|---|---|---|---|---|---|---|"]
    base = result["tokens_per_second"]["1 process"]
    for run in RUNS:
        diff = "0" if run == "1 process" else f"{result['max_weight_difference'][run]:.1e}"
        mb = " / ".join(f"{b / 1e6:.2f}" for b in result["parameter_bytes_per_rank"][run])
        state = " / ".join(f"{b / 1e6:.2f}" for b in result["training_state_bytes_per_rank"][run])
        lines.append(f"| {run} | {result['tokens_per_second'][run]:.0f} | {result['tokens_per_second'][run] / base:.2f}x "
                     f"| {result['wall_seconds'][run]:.1f} | {diff} | {mb} | {state} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "distributed.json")
    parser.add_argument("--no-table", "--no-readme", dest="no_readme", action="store_true",
                        help="do not rewrite its table in docs/benchmarks.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny_model(0).save_pretrained(root / "init")
        wall, history, weights, ranks = {}, {}, {}, {}
        for i, run in enumerate(RUNS):
            out = root / f"run{i}"
            start = time.perf_counter()
            done = subprocess.run(train_command(out, root / "init", args.steps, run), capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1" if "2 ranks" in run else "2"},
                                  check=False)
            wall[run] = time.perf_counter() - start
            if done.returncode:
                raise SystemExit(f"{run} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            history[run] = json.loads((out / "history.json").read_text())
            weights[run] = load_file(out / "final" / "model.safetensors")
            ranks[run] = json.loads((out / "ranks.json").read_text())  # memory_per_rank, written by rank 0
    reference = weights["1 process"]
    result = {
        "benchmark": "distributed",
        "steps": args.steps,
        "global_batch": 4,
        "tokens_per_second": {run: round(history[run][-1]["tokens_per_second"], 1) for run in RUNS},
        "wall_seconds": {run: round(wall[run], 1) for run in RUNS},
        "max_weight_difference": {run: max(float((weights[run][k] - reference[k]).abs().max()) for k in reference)
                                  for run in RUNS},
        "last_loss": {run: history[run][-1]["loss"] for run in RUNS},
        "parameter_bytes_per_rank": {run: [r["parameters"] for r in ranks[run]] for run in RUNS},
        "training_state_bytes_per_rank": {run: [r["parameters"] + r["gradients"] + r["optimizer"] for r in ranks[run]]
                                          for run in RUNS},
        "ranks": ranks,
        "machine": machine_info(),
    }
    print(readme_table(result))
    publish("distributed", result, readme_table(result), args.out, update_page=not args.no_readme)


if __name__ == "__main__":
    main()

"""Padding against packing in stage 2, side by side: the steps that padding tokens cost (recipe v8).

    python -m benchmarks.packing [--steps 12] [--out PATH]

The tiny Molmo of ``make run`` (``tiny_model()``) and stage 2's configuration (``TRAIN_PRESETS["tiny-sft"]``: the
mixture, fresh data, 16 sequences per step) train for --steps steps twice, from the same weights: once with every
sequence in its own right-padded row (``collate``), once with several sequences per row, each attending only to itself
(``TrainConfig(pack_examples=True)``, ``data.collate.collate_packed``; rows as long as the step's longest sequence).
The two take turns step by step, so both meet the same machine state. Both see the same examples, so their losses
must agree (the JSON records the largest difference); what changes is the number of rows and of padding tokens.

Figures per variant: seconds per step (mean over the steps after the first), real tokens per second (tokens that are
not padding, what ``Trainer`` logs), rows per step, and the share of computed positions that are padding.
Writes benchmarks/results/packing.json. One run at a time on this 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import machine_info

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "packing.json"


def run(steps: int = 12, out: Path = OUT) -> dict:
    from molmo_lite.config import TRAIN_PRESETS
    from molmo_lite.train import Trainer, stage_data, step_batches, tiny_model

    base = replace(TRAIN_PRESETS["tiny-sft"], steps=steps, log_every=10**9, save_every=10**9)
    data = stage_data(base)
    model = tiny_model()
    trainers, stats = {}, {}
    for name, packed in (("padded", False), ("packed", True)):
        config = replace(base, pack_examples=packed)
        trainers[name] = Trainer(copy.deepcopy(model), config, data, "/nonexistent", progress=False)
        stats[name] = {"seconds": [], "losses": [], "tokens": [], "computed_tokens": 0, "rows": 0}
    for step in range(steps):
        for name in (("padded", "packed") if step % 2 == 0 else ("packed", "padded")):
            trainer, s = trainers[name], stats[name]
            for batch in step_batches(data, trainer.model, trainer.config, step):
                s["rows"] += batch["input_ids"].shape[0]
                s["computed_tokens"] += batch["input_ids"].numel()
            t = time.perf_counter()
            record = trainer.train_step(step)
            if step:  # the first step warms up
                s["seconds"].append(time.perf_counter() - t)
            s["losses"].append(record["loss"])
            s["tokens"].append(record["tokens"])  # real (not padding) tokens of the step, as the Trainer counts them
    result = {"steps": steps, "config": base.to_dict(), "machine": machine_info(), "date": time.strftime("%Y-%m-%d")}
    for name, s in stats.items():
        seconds = sum(s["seconds"])
        result[name] = {"seconds_per_step": seconds / len(s["seconds"]),
                        "real_tokens_per_second": sum(s["tokens"][1:]) / seconds,
                        "rows_per_step": s["rows"] / steps,
                        "padding_share": 1 - sum(s["tokens"]) / s["computed_tokens"],
                        "losses": s["losses"]}
    result["speedup"] = result["padded"]["seconds_per_step"] / result["packed"]["seconds_per_step"]
    result["max_loss_difference"] = max(abs(a - b) for a, b in zip(stats["padded"]["losses"],
                                                                    stats["packed"]["losses"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name in ("padded", "packed"):
        r = result[name]
        print(f"{name}: {r['seconds_per_step']:.3f} s/step, {r['real_tokens_per_second']:.0f} real tokens/s, "
              f"{r['rows_per_step']:.1f} rows/step, padding {r['padding_share']:.0%}")
    print(f"speedup {result['speedup']:.2f}x, largest loss difference {result['max_loss_difference']:.2e}; wrote {out}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    run(args.steps, args.out)


if __name__ == "__main__":
    main()

"""Data throughput: examples per second of every synthetic generator, and what multi-annotation packing saves.

1. Generators: each makes --n examples (seeded) at its default size, single process; the best of --rounds tries.
   Charts and tables are rendered with matplotlib, so they are also timed a second time from their on-disk cache.
2. Packing: --images scenes with 4 QA annotations each, one epoch of tiny-MolmoLite training steps (forward, backward,
   AdamW; batch 8) packed (one sequence per image) and unpacked (one sequence per annotation, the image repeated).
   The ViT's input is counted with a forward hook, so "images encoded" is what the model really ran.

    python -m benchmarks.data [--n 200] [--rounds 3] [--images 64] [--out PATH] [--no-table]

Writes JSON (default benchmarks/results/data.json) and the table between the <!-- data-benchmark --> markers of
docs/benchmarks.md (tests/test_readme.py checks they agree).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine_info, publish
from molmo_lite.data import clocks, docs, synthetic
from molmo_lite.data.collate import ExampleDataset, collate, unpack
from molmo_lite.model import MolmoLite


def generator_rates(n: int, rounds: int, cache_dir: Path) -> dict[str, float]:
    """examples / s of every generator (charts and tables: uncached, then from the cache filled by the first run)."""
    jobs = {
        "scenes: pointing + counting": lambda: synthetic.pointing_examples(n, seed=1),
        "scenes: captions + transcripts": lambda: synthetic.caption_examples(n, seed=1),
        "scenes: free-form QA": lambda: synthetic.qa_examples(n, seed=1),
        "clocks": lambda: clocks.clock_examples(n, seed=1),
        "charts (rendering)": lambda: docs.chart_examples(n, seed=1),
        "tables (rendering)": lambda: docs.table_examples(n, seed=1),
        "charts (from cache)": lambda: docs.chart_examples(n, seed=1, cache_dir=cache_dir),
        "tables (from cache)": lambda: docs.table_examples(n, seed=1, cache_dir=cache_dir),
    }
    docs.chart_examples(n, seed=1, cache_dir=cache_dir)  # fill the cache once
    docs.table_examples(n, seed=1, cache_dir=cache_dir)
    rates = {}
    for name, job in jobs.items():
        best = min(_seconds(job) for _ in range(rounds))
        rates[name] = n / best
        print(f"{name:<34} {rates[name]:8.0f} examples/s")
    return rates


def _seconds(job) -> float:
    start = time.perf_counter()
    job()
    return time.perf_counter() - start


def packing_epoch(examples: list, packed: bool, batch_size: int = 8, seed: int = 0) -> dict[str, float]:
    """One epoch of training steps of a fresh tiny MolmoLite; counts what the ViT encoded."""
    torch.manual_seed(seed)
    model = MolmoLite("tiny").train()
    data = ExampleDataset(examples if packed else unpack(examples), model.processor, model.tokenizer, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    seen = {"images": 0, "crops": 0, "tokens": 0, "sequences": 0}
    hook = model.vision.register_forward_hook(lambda module, args, out: seen.__setitem__(
        "crops", seen["crops"] + args[0].shape[0]))
    start = time.perf_counter()
    for first in range(0, len(data), batch_size):
        items = [data[i] for i in range(first, min(first + batch_size, len(data)))]
        batch = collate(items, model.tokenizer.pad_id)
        seen["images"] += sum(image is not None for _, image in items)
        seen["sequences"] += len(items)
        seen["tokens"] += int(batch["attention_mask"].sum())
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    hook.remove()
    return {**seen, "seconds_per_epoch": seconds}


def readme_table(result: dict) -> str:
    lines = ["| generator | examples/s (1 process) |", "|---|---|"]
    lines += [f"| {name} | {rate:.0f} |" for name, rate in result["examples_per_second"].items()]
    p, u = result["packing"]["packed"], result["packing"]["unpacked"]
    lines += ["", f"Packing {result['packing']['images']} scenes x {result['packing']['annotations_per_image']} "
              "annotations, one epoch of tiny-MolmoLite training steps:", "",
              "| | sequences | images encoded | crops through the ViT | tokens | seconds / epoch |",
              "|---|---|---|---|---|---|"]
    for name, r in (("unpacked", u), ("packed", p)):
        lines.append(f"| {name} | {r['sequences']} | {r['images']} | {r['crops']} | {r['tokens']} "
                     f"| {r['seconds_per_epoch']:.1f} |")
    lines.append(f"| unpacked / packed | | {result['packing']['images_encoded_ratio']:.2f}x | | "
                 f"| {result['packing']['time_ratio']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data.json")
    parser.add_argument("--no-table", "--no-readme", dest="no_readme", action="store_true",
                        help="do not rewrite its table in docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # "per core": one process, one thread

    with tempfile.TemporaryDirectory() as cache:
        rates = generator_rates(args.n, args.rounds, Path(cache))
    examples = synthetic.qa_examples(args.images, seed=2, questions=4)
    assert all(ex.n_annotations == 4 for ex in examples)
    packed, unpacked = packing_epoch(examples, packed=True), packing_epoch(examples, packed=False)
    result = {
        "benchmark": "data",
        "examples": args.n,
        "rounds": args.rounds,
        "examples_per_second": {k: round(v, 1) for k, v in rates.items()},
        "packing": {
            "images": args.images, "annotations_per_image": 4, "batch_size": 8,
            "packed": {k: round(v, 2) for k, v in packed.items()},
            "unpacked": {k: round(v, 2) for k, v in unpacked.items()},
            "images_encoded_ratio": round(unpacked["images"] / packed["images"], 3),
            "crops_ratio": round(unpacked["crops"] / packed["crops"], 3),
            "time_ratio": round(unpacked["seconds_per_epoch"] / packed["seconds_per_epoch"], 3),
        },
        "machine": {**machine_info(), "torch_threads": 1},
    }
    print(readme_table(result))
    publish("data", result, readme_table(result), args.out, update_page=not args.no_readme)


if __name__ == "__main__":
    main()

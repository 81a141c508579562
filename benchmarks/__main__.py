"""Every benchmark of the course in one command: ``python -m benchmarks`` (``make bench``).

Runs preprocess, decode, data, train, quantize and distributed one after the other (each in its own process, each
measuring its candidates side by side and rewriting its own table in docs/benchmarks.md), then gathers one headline
ratio per figure into benchmarks/results.json and the summary table between the <!-- summary-benchmark --> markers of
docs/benchmarks.md.

    python -m benchmarks [--only decode train ...] [--summary-only]

--summary-only rebuilds results.json and the summary from the JSON files already in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import machine_info, publish

RESULTS = Path(__file__).parent / "results"
BENCHMARKS = ("preprocess", "decode", "data", "train", "quantize", "distributed")


def headlines(name: str, r: dict) -> list[tuple[str, str, float]]:
    """(what, compared with, ratio) rows of one benchmark's JSON: the figures the course claims."""
    if name == "preprocess":
        key = next(k for k in r["ratio_vs_transformers"] if "Molmo:" in k)
        return [("images/s, Molmo's preprocessing", "transformers Molmo2ImageProcessor", r["ratio_vs_transformers"][key])]
    if name == "decode":
        return [(f"decode tokens/s, KV cache, batch {b}", f"{other} (batch {b})", r[key][b])
                for key, other in (("ratio_cached_vs_uncached", "no cache"),
                                   ("ratio_cached_vs_transformers", "transformers generate")) for b in ("1", "4")]
    if name == "data":
        return [("training epoch time, one sequence per annotation", "packed (one per image)",
                 r["packing"]["time_ratio"])]
    if name == "train":
        return [("training tokens/s, tiny MolmoLite", "transformers Molmo2 (matched tiny config)",
                 r["ratio_ours_vs_transformers"])]
    if name == "quantize":
        step = r["train_step_seconds"]
        return [("NF4 linear-layer weight bytes", "fp32", r["memory"]["nf4"]["linear_ratio"]),
                ("int8 linear-layer weight bytes", "fp32", r["memory"]["int8"]["linear_ratio"]),
                ("Molmo-7B-D weights, NF4", "bf16", r["molmo_7b_d_bytes"]["nf4"] / r["molmo_7b_d_bytes"]["bf16"]),
                ("QLoRA training-step speed, tiny", "fp32 full fine-tuning", step["fp32"] / step["nf4"])]
    if name == "distributed":
        tps, per_rank = r["tokens_per_second"], r["parameter_bytes_per_rank"]
        return [("training tokens/s, DDP on 2 CPU processes", "1 process, same global batch",
                 tps["DDP, 2 ranks"] / tps["1 process"]),
                ("training tokens/s, FSDP2 on 2 CPU processes", "1 process, same global batch",
                 tps["FSDP2, 2 ranks"] / tps["1 process"]),
                ("parameter bytes per rank, FSDP2 x2", "DDP x2", max(per_rank["FSDP2, 2 ranks"]) /
                 max(per_rank["DDP, 2 ranks"]))]
    raise ValueError(name)


def summary(results: dict[str, dict]) -> tuple[dict, str]:
    rows = [{"benchmark": name, "figure": what, "versus": other, "ratio": round(ratio, 3)}
            for name in BENCHMARKS if name in results for what, other, ratio in headlines(name, results[name])]
    table = ["| benchmark | figure | compared with | ratio |", "|---|---|---|---|"]
    table += [f"| {r['benchmark']} | {r['figure']} | {r['versus']} | {r['ratio']:.2f}x |" for r in rows]
    return {"benchmark": "summary", "rows": rows, "machine": machine_info()}, "\n".join(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=BENCHMARKS, help="run only these")
    parser.add_argument("--summary-only", action="store_true", help="run nothing; rebuild the summary")
    args = parser.parse_args()
    if not args.summary_only:
        for name in args.only or BENCHMARKS:
            print(f"== python -m benchmarks.{name}", flush=True)
            subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=True)
    results = {name: json.loads((RESULTS / f"{name}.json").read_text())
               for name in BENCHMARKS if (RESULTS / f"{name}.json").exists()}
    result, table = summary(results)
    print(table)
    publish("summary", result, table, Path(__file__).parent / "results.json")


if __name__ == "__main__":
    main()

"""Loading a released-layout checkpoint (chapter 13): peak memory of ``MolmoLite.from_released(dtype=bfloat16)``
against the bytes of the weights it ends up holding, and a naive load side by side.

A synthetic checkpoint of about 1B parameters is written first in the released Molmo 1 layout (random values, bf16 on
disk, to a temporary folder): the released ViT (23 blocks of width 1024) and connector, and a Qwen2-style LLM of
--layers blocks of width 2048 (16 heads, 4 kv heads, MLP 5632) with the course's 512-token vocabulary. It is written
shard by shard from a model on the meta device (``write_released(fill=...)``), so the writer never holds it whole.
Each candidate then loads it in a fresh process, whose peak resident memory (``ru_maxrss``, read by the parent with
``os.wait4``) is the figure:

- ``from_released bf16`` / ``fp32``: the course's loader (meta-device model, one memory-mapped shard at a time, every
  tensor converted and assigned as it is read), to bf16 and to fp32 weights;
- ``naive``: what a plain loader does (a full fp32 MolmoLite built first, every shard read into one dict, split, loaded,
  then cast to bf16).

The ratio is peak RSS / bytes of the loaded weights; the target for the course's loader is at most 1.3x. The same
ratio without the interpreter's own memory (RSS just before loading: Python, torch, transformers) is reported beside
it, and where the added memory goes: building the model on the meta device (torch loads its meta kernels on their
first use, once per process), the weights, and what is in flight at the peak. Also the seconds each load takes.

    python -m benchmarks.load [--layers 14] [--shard-mb 250] [--no-naive] [--out PATH]

Writes benchmarks/results/load.json and the table between the <!-- load-benchmark --> markers of docs/benchmarks.md
(tests/test_readme.py checks they agree).
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

import torch

from benchmarks.common import machine_info, publish

TARGET = 1.3

CHILD = r"""
import json, resource, sys, time

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024

import torch
from molmo_lite.model import MolmoLite
from molmo_lite import released
from transformers import PreTrainedTokenizerFast  # the library code the loader imports for the tokenizer
from safetensors import safe_open

folder, mode = sys.argv[1], sys.argv[2]
before = rss()
meta_model_bytes = None
build = released._meta_model


def traced_build(*args, **kwargs):  # what building the model on the meta device adds (torch's lazy meta kernels)
    global meta_model_bytes
    start_rss = rss()
    model = build(*args, **kwargs)
    meta_model_bytes = rss() - start_rss
    return model


released._meta_model = traced_build
start = time.perf_counter()
if mode in ("released", "released-fp32"):
    model = MolmoLite.from_released(folder, dtype=torch.bfloat16 if mode == "released" else torch.float32)
else:  # naive: fp32 model, the whole state dict, then the cast
    from safetensors.torch import load_file
    from pathlib import Path
    hf = json.loads((Path(folder) / "config.json").read_text())
    config = released.released_config(hf, json.loads((Path(folder) / "preprocessor_config.json").read_text()))
    tokenizer = released._tokenizer_for(Path(folder), config)
    model = MolmoLite(config, tokenizer)
    state = {}
    for shard in sorted(Path(folder).glob("model-*.safetensors")):
        state.update(load_file(shard))
    ours = {}
    for entry in released.released_plan(config):
        ours.update(zip(entry.ours, released.split_entry(entry, state[entry.released], config.llm)))
    model.load_state_dict(ours)
    model = model.to(torch.bfloat16)
    del state, ours
seconds = time.perf_counter() - start
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"seconds": seconds, "rss_before_bytes": before, "weight_bytes": weights,
                  "rss_after_bytes": rss(), "meta_model_bytes": meta_model_bytes,
                  "dtypes": sorted({str(p.dtype) for p in model.parameters()}),
                  "self_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def synthetic_config(layers: int):
    from dataclasses import replace

    from molmo_lite.config import ConnectorConfig, LLMConfig, MolmoConfig
    from molmo_lite.released import MOLMO1_FIXED

    llm = LLMConfig(vocab_size=512, hidden=2048, layers=layers, heads=16, kv_heads=4, intermediate=5632,
                    rope_theta=1e6, qkv_bias=True)
    connector = ConnectorConfig(input_dim=2048, pool_dim=1024, heads=16, head_dim=64, hidden_dim=llm.intermediate,
                                llm_dim=llm.hidden)
    return MolmoConfig(preprocessor=MOLMO1_FIXED.preprocessor, vision=replace(MOLMO1_FIXED.vision), connector=connector,
                       llm=llm)


def write_checkpoint(folder: Path, layers: int, shard_bytes: int) -> dict:
    from molmo_lite.model import MolmoLite
    from molmo_lite.released import write_released

    config = synthetic_config(layers)
    with torch.device("meta"):
        model = MolmoLite(config)
    gen = torch.Generator().manual_seed(0)

    def fill(name: str, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=dtype) * 0.02

    start = time.perf_counter()
    write_released(model, folder, "7b-d", shard_size=shard_bytes, dtype=torch.bfloat16, fill=fill)
    params = sum(p.numel() for p in model.parameters())
    shards = sorted(folder.glob("model-*.safetensors"))
    return {"parameters": params, "bf16_bytes": 2 * params, "shards": len(shards),
            "largest_shard_bytes": max(s.stat().st_size for s in shards), "shard_size_limit": shard_bytes,
            "on_disk_bytes": sum(s.stat().st_size for s in shards), "write_seconds": time.perf_counter() - start,
            "llm": {"hidden": 2048, "layers": layers, "heads": 16, "kv_heads": 4, "intermediate": 5632,
                    "vocab": 512}, "vision": "released (23 blocks, width 1024)"}


def measure(folder: Path, mode: str) -> dict:
    """Load in a fresh process; its peak RSS from os.wait4."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), mode], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"the {mode} load failed (exit {proc.returncode})")
    child = json.loads(out.strip().splitlines()[-1])
    peak = usage.ru_maxrss * 1024
    weights = child["weight_bytes"]
    out = {"seconds": round(child["seconds"], 2), "peak_rss_bytes": peak, "rss_before_load_bytes":
           child["rss_before_bytes"], "rss_after_load_bytes": child["rss_after_bytes"], "weight_bytes": weights,
           "dtypes": child["dtypes"], "ratio_peak_rss_to_weights": round(peak / weights, 3),
           "ratio_added_rss_to_weights": round((peak - child["rss_before_bytes"]) / weights, 3)}
    if child["meta_model_bytes"] is not None:
        # where the added memory goes: torch's meta-device machinery on its first use (once per process), the
        # weights, and what is in flight at the peak beyond both
        out["meta_model_bytes"] = child["meta_model_bytes"]
        out["in_flight_at_peak_bytes"] = peak - child["rss_before_bytes"] - child["meta_model_bytes"] - weights
    return out


def readme_table(result: dict) -> str:
    """The table of docs/benchmarks.md, from load.json."""
    c = result["checkpoint"]
    lines = [f"| loader ({c['parameters'] / 1e9:.2f}B parameters, {c['shards']} shards of bf16) | seconds | weights (GB) "
             "| peak RSS (GB) | peak RSS / weights | (peak RSS - RSS before loading) / weights | of which meta-device "
             "setup / in flight (GB) |", "|---|---|---|---|---|---|---|"]
    for name, r in result["candidates"].items():
        parts = (f"{r['meta_model_bytes'] / 1e9:.2f} / {r['in_flight_at_peak_bytes'] / 1e9:.2f}"
                 if "meta_model_bytes" in r else "-")
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['weight_bytes'] / 1e9:.2f} | {r['peak_rss_bytes'] / 1e9:.2f} | "
                     f"{r['ratio_peak_rss_to_weights']:.2f}x | {r['ratio_added_rss_to_weights']:.2f}x | {parts} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=14, help="LLM blocks (14: about 1B parameters in all)")
    parser.add_argument("--shard-mb", type=float, default=250, help="shard size limit in MB (10^6 bytes)")
    parser.add_argument("--no-naive", action="store_true", help="only the course's loader")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "load.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="molmo_released_") as tmp:
        folder = Path(tmp)
        checkpoint = write_checkpoint(folder, args.layers, int(args.shard_mb * 1e6))
        print(f"wrote {checkpoint['parameters'] / 1e9:.2f}B parameters in {checkpoint['shards']} shards "
              f"({checkpoint['on_disk_bytes'] / 1e9:.2f} GB) in {checkpoint['write_seconds']:.0f} s", flush=True)
        candidates = {"from_released bf16": measure(folder, "released"),
                      "from_released fp32": measure(folder, "released-fp32")}
        if not args.no_naive:
            candidates["naive (fp32 model + whole state dict, then bf16)"] = measure(folder, "naive")
    ours = candidates["from_released bf16"]
    result = {
        "benchmark": "load",
        "checkpoint": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in checkpoint.items()},
        "candidates": candidates,
        "target_ratio": TARGET,
        "meets_target": {"peak_rss": ours["ratio_peak_rss_to_weights"] <= TARGET,
                         "added_rss": ours["ratio_added_rss_to_weights"] <= TARGET,
                         "peak_rss_fp32": candidates["from_released fp32"]["ratio_peak_rss_to_weights"] <= TARGET},
        "machine": machine_info(),
    }
    for name, c in candidates.items():
        print(f"{name}: {c['seconds']:.1f} s, peak RSS {c['peak_rss_bytes'] / 1e9:.2f} GB = "
              f"{c['ratio_peak_rss_to_weights']:.2f}x the weights ({c['weight_bytes'] / 1e9:.2f} GB), "
              f"{c['ratio_added_rss_to_weights']:.2f}x without the interpreter")
    publish("load", result, readme_table(result), args.out)


if __name__ == "__main__":
    main()

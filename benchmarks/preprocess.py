"""Images per second: molmo_lite's MolmoImageProcessor vs transformers' Molmo2ImageProcessor, same geometry.

Both processors see the same 64 seeded images of mixed sizes (uint8 arrays, 100 to 2000 px a side, portrait,
landscape and extreme strips), one image per call as a data loader would, in one run, taking turns image by image
so that all meet the same machine state; each image's time is the best of --rounds tries. Writes JSON (default benchmarks/results/preprocess.json) and prints the ratio.

    python -m benchmarks.preprocess [--rounds 5] [--out PATH] [--no-table]

It also rewrites the table between the <!-- preprocess-benchmark --> markers of docs/benchmarks.md from the JSON, so
the docs never quote a figure the script did not produce (tests/test_readme.py checks they agree).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_info, publish
from molmo_lite.config import CLIP_MEAN, CLIP_STD
from molmo_lite.preprocessing import MolmoImageProcessor


def make_images(n: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(int(h), int(w)) for h, w in rng.integers(100, 2001, size=(n - 4, 2))]
    sizes += [(480, 640), (1080, 1920), (60, 1800), (1800, 60)]
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


LABELS = {
    "molmo_lite (Molmo: pad, antialias)": "molmo_lite, Molmo's resize (keep aspect, pad, antialias)",
    "molmo_lite (stretch, no antialias, as Molmo2)": "molmo_lite, Molmo2's resize (stretch, no antialias)",
    "transformers Molmo2ImageProcessor": "transformers Molmo2ImageProcessor",
}


def readme_table(result: dict) -> str:
    """The markdown table of docs/benchmarks.md for a benchmark result."""
    lines = ["| processor | images/s | vs transformers |", "|---|---|---|"]
    for name, value in result["images_per_second"].items():
        ratio = result["ratio_vs_transformers"].get(name, 1.0)
        lines.append(f"| {LABELS[name]} | {value:.2f} | {ratio:.2f}x |")
    return "\n".join(lines)



def best_seconds_per_image(candidates: dict, images: list[np.ndarray], rounds: int) -> dict[str, float]:
    """Mean over images of the best of ``rounds`` timings of each candidate on that image.

    The candidates take turns image by image (in a rotating order), so a noisy neighbour on the machine slows all of
    them alike, and the best of several tries drops the disturbed ones.
    """
    names = list(candidates)
    totals = dict.fromkeys(names, 0.0)
    for k, image in enumerate(images):
        best = dict.fromkeys(names, float("inf"))
        for r in range(rounds):
            for name in names[(k + r) % len(names):] + names[: (k + r) % len(names)]:
                start = time.perf_counter()
                candidates[name](image)
                best[name] = min(best[name], time.perf_counter() - start)
        for name in names:
            totals[name] += best[name]
    return {name: total / len(images) for name, total in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "preprocess.json")
    parser.add_argument("--no-table", "--no-readme", dest="no_readme", action="store_true",
                        help="do not rewrite its table in docs/benchmarks.md")
    args = parser.parse_args()

    from transformers.models.molmo2.image_processing_molmo2 import Molmo2ImageProcessor

    images = make_images()
    reference = Molmo2ImageProcessor(size={"height": 336, "width": 336}, patch_size=14, max_crops=12,
                                     overlap_margins=[4, 4], pooling_size=[2, 2],
                                     image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    candidates = {
        "molmo_lite (Molmo: pad, antialias)": MolmoImageProcessor(),
        "molmo_lite (stretch, no antialias, as Molmo2)": MolmoImageProcessor(resize="stretch", antialias=False),
        "transformers Molmo2ImageProcessor": lambda im: reference(im, return_tensors="pt",
                                                                  input_data_format="channels_last"),
    }
    for fn in candidates.values():  # warm-up: imports, allocator, thread pools
        fn(images[0])
    seconds = best_seconds_per_image(candidates, images, args.rounds)
    per_second = {name: 1.0 / value for name, value in seconds.items()}
    ref_name = "transformers Molmo2ImageProcessor"
    result = {
        "benchmark": "preprocess",
        "images": len(images),
        "rounds": args.rounds,
        "images_per_second": {k: round(v, 2) for k, v in per_second.items()},
        "ratio_vs_transformers": {k: round(v / per_second[ref_name], 3) for k, v in per_second.items() if k != ref_name},
        "machine": machine_info(),
    }
    for name, value in per_second.items():
        print(f"{name:<48} {value:8.1f} images/s")
    for name, ratio in result["ratio_vs_transformers"].items():
        print(f"ratio {name} / transformers: {ratio:.2f}")
    publish("preprocess", result, readme_table(result), args.out, update_page=not args.no_readme)


if __name__ == "__main__":
    main()

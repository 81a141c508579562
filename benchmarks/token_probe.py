"""What do the tiny Molmo's image tokens know about a crowded scene? A linear probe (docs/recipes.md).

    python -m benchmarks.token_probe [--model DIR] [--train 2000] [--test 500] [--grid 8 16] [--name KEY]
                                     [--no-baseline]

For held-out pointing scenes (chapter 07's distribution: 0-10 objects of the class asked about among 0-6 others),
the probe asks, for every colour and every cell of a ``grid`` x ``grid`` partition of the image, "is there an object
of this colour centred in this cell?" (an 8 x 8 grid has cells of 12.5 units on Molmo's 0-100 scale, about the
7-unit radius of a hit). A ridge regression reads the answer from three inputs in turn:

- the pixels (the upper bound: everything is there);
- each block of the ViT, every patch of every crop (which layers keep the positions: chapter 02's choice);
- the ViT's features, the two layers the connector receives, concatenated;
- with a connector that decides each cell first (``ConnectorConfig.cell_decisions``), those decisions;
- the connector's output, the 8 image embeddings the LLM reads.

The score is the mean ROC AUC over the (colour, cell) questions (1: a perfect read-out). The control is the
number of objects of each colour with no positions at all: it scores well above 0.5 (a cell is more often red in a
scene with many red objects), so an input knows where things are only by as much as it beats the control. Where the
score falls from one input to the next, that stage loses the positions. ``--model`` also probes a trained model (a
save_pretrained folder, e.g. what `make run` writes); without it the probe reads the model as stage 1 starts (the
pretrained ViT, a fresh connector). --size, --pooling and --overlap probe other geometries (a fresh connector).
Writes benchmarks/results/token_probe.json, one record per geometry ("default", "56px-pooling1x1", ...).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "token_probe.json"


def scenes(n: int, split: str, size: int = 56) -> list:
    from molmo_lite.data.synthetic import pointing_examples

    return pointing_examples(n, seed=0, split=split, size=size, max_count=10)


def occupancy(examples, grid: int) -> np.ndarray:
    """[n, colours * grid * grid] 0/1: an object of that colour has its centre in that cell."""
    from molmo_lite.data.synthetic import COLOURS

    colours = list(COLOURS)
    y = np.zeros((len(examples), len(colours), grid, grid), dtype=np.float32)
    for i, ex in enumerate(examples):
        for o in ex.meta["objects"]:
            col, row = min(int(o.x / 100 * grid), grid - 1), min(int(o.y / 100 * grid), grid - 1)
            y[i, colours.index(o.colour), row, col] = 1
    return y.reshape(len(examples), -1)


@torch.inference_mode()
def features(model, examples, batch: int = 64) -> dict[str, np.ndarray]:
    """Per example: the pixels, every ViT feature of every crop and the connector's outputs, each flattened."""
    from molmo_lite.preprocessing import batch_images

    out: dict[str, list[np.ndarray]] = {"pixels": []}
    for start in range(0, len(examples), batch):
        chunk = examples[start:start + batch]
        inputs = [model.processor(ex.image) for ex in chunk]
        b = batch_images(inputs)
        crops = [im.num_crops for im in inputs]
        n_tok = [im.pooled_patches_idx.shape[0] for im in inputs]
        blocks = model.vision(b["crops"])  # every block's output [sum crops, 1 + P, W]
        vit = model.vision.features(b["crops"])  # the layers the connector reads, concatenated [sum crops, P, F]
        tokens = model.connector(vit, b["pooled_patches_idx"], b["patch_pad_fraction"])  # [sum tokens, D]
        out["pixels"] += [ex.image.reshape(-1).astype(np.float32) / 255 for ex in chunk]
        for i, h in enumerate(blocks):
            out.setdefault(f"vit block {i}", []).extend(v[:, 1:].reshape(-1).float().numpy()
                                                        for v in torch.split(h, crops))
        out.setdefault("vit features", []).extend(v.reshape(-1).float().numpy() for v in torch.split(vit, crops))
        if getattr(model.connector, "decide", None) is not None:  # the connector's cell decisions (CellDecisions)
            decided = model.connector.decide(vit)
            out.setdefault("cell decisions", []).extend(v.reshape(-1).float().numpy()
                                                        for v in torch.split(decided, crops))
        out.setdefault("connector tokens", []).extend(t.reshape(-1).float().numpy() for t in torch.split(tokens, n_tok))
    return {k: np.stack(v) for k, v in out.items()}


def auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each column (Mann-Whitney, ties averaged); NaN where a column has one class only."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    pos = labels.sum(0)
    neg = len(labels) - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(0) - pos * (pos + 1) / 2) / (pos * neg)


def ridge_probe(x_train, y_train, x_test, y_test, lambdas=(1e-2, 1e-1, 1.0, 10.0)) -> dict[str, float]:
    """Kernel (dual) ridge regression on standardised features, its strength chosen on a fifth of the train set;
    -> the mean test AUC over the questions that have both answers in the test set."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    a, b = torch.from_numpy(a).double(), torch.from_numpy(b).double()
    ya, yb = torch.from_numpy(y_train).double(), y_test
    n_val = len(a) // 5
    fit, val = slice(n_val, None), slice(0, n_val)

    def predict(train_x, train_y, test_x, lam):
        k = train_x @ train_x.T
        scale = k.diagonal().mean()
        alpha = torch.linalg.solve(k + lam * scale * torch.eye(len(k), dtype=k.dtype), train_y - train_y.mean(0))
        return (test_x @ train_x.T @ alpha + train_y.mean(0)).numpy()

    best = max(lambdas, key=lambda lam: np.nanmean(auc(predict(a[fit], ya[fit], a[val], lam), y_train[val])))
    scores = auc(predict(a, ya, b, best), yb)
    return {"auc": float(np.nanmean(scores)), "lambda": best, "questions": int(np.isfinite(scores).sum()),
            "dims": int(a.shape[1])}


def colour_counts(examples) -> np.ndarray:
    """The control: how many objects of each colour the scene has, and nothing about where they are. Cells are more
    often occupied in scenes with more objects of that colour, so this alone scores above 0.5; an input that knows
    positions must score above it."""
    y = occupancy(examples, 1)
    return np.concatenate([y, np.stack([[sum(o.colour == c for o in ex.meta["objects"]) for c in _colours()]
                                         for ex in examples]).astype(np.float32)], axis=1)


def _colours() -> list[str]:
    from molmo_lite.data.synthetic import COLOURS

    return list(COLOURS)


def probe(model, train, test, grids: tuple[int, ...]) -> dict[str, dict[str, dict]]:
    """-> {grid: {input: ridge_probe result}}."""
    f_train, f_test = features(model, train), features(model, test)
    f_train["control: colour counts, no positions"] = colour_counts(train)
    f_test["control: colour counts, no positions"] = colour_counts(test)
    out = {}
    for grid in grids:
        y_train, y_test = occupancy(train, grid), occupancy(test, grid)
        out[str(grid)] = {k: ridge_probe(f_train[k], y_train, f_test[k], y_test) for k in f_train}
    return out


def main(argv: list[str] | None = None) -> None:
    from molmo_lite.config import shown_path
    from molmo_lite.model import MolmoLite
    from molmo_lite.train import tiny_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="a trained model's folder (repeatable)")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--grid", type=int, nargs="+", default=[8, 16], help="cells per side (8: 12.5 units)")
    parser.add_argument("--size", type=int, default=56, help="scene side in pixels (objects keep their relative size)")
    parser.add_argument("--pooling", type=int, nargs=2, default=None, help="the connector's pooling window (tiny: 2 2)")
    parser.add_argument("--overlap", type=int, nargs=2, default=None, help="crop overlap margins (tiny: 1 1)")
    parser.add_argument("--name", default=None, help="the record's key (default: from the geometry)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="probe only the --model folders, not the pretrained parts with a fresh connector")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    train, test = scenes(args.train, "train", args.size), scenes(args.test, "heldout", args.size)
    geometry = {k: tuple(v) for k, v in (("pooling", args.pooling), ("overlap_margins", args.overlap)) if v}
    results = {"grids": args.grid, "train": args.train, "test": args.test, "size": args.size,
               "preprocessor": geometry, "models": {}}
    models = {} if args.no_baseline else {"pretrained parts, fresh connector":
                                          lambda: tiny_model(preprocessor=geometry or None)}
    models.update({shown_path(m): (lambda m=m: MolmoLite.from_pretrained(m)) for m in args.model})
    for name, make in models.items():
        t = time.perf_counter()
        model = make().eval()
        results["models"][name] = probe(model, train, test, tuple(args.grid))
        for grid, scores in results["models"][name].items():
            print(f"{name}, {grid}x{grid} cells:", {k: round(v["auc"], 3) for k, v in scores.items()}, flush=True)
        print(f"({time.perf_counter() - t:.0f} s)", flush=True)
    name = args.name or ("default" if not geometry and args.size == 56 else "-".join(
        [f"{args.size}px"] + [f"{k}{'x'.join(map(str, v))}" for k, v in geometry.items()]))
    everything = json.loads(OUT.read_text()) if OUT.exists() else {}
    everything[name] = results  # one record per geometry
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(everything, indent=1) + "\n")
    print("wrote", OUT.relative_to(ROOT), "record", name)


if __name__ == "__main__":
    main()

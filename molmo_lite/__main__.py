"""Command line: ``python -m molmo_lite COMMAND`` (installed as ``molmo-lite``).

    python -m molmo_lite grade exercises/01_crops_exercises.ipynb   run a notebook and check its exercises
    python -m molmo_lite exercises [--check]                         generate exercises/ from solutions/
    python -m molmo_lite crops IMAGE_OR_DIR ... [--out DIR]          preprocess images, draw their crops and tokens

Each command is one ``add_*_command(subparsers)`` function that registers its arguments and its handler; a handler
takes the parsed arguments and returns the exit status. Later chapters add train, evaluate, generate and make-data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _grade(args: argparse.Namespace) -> int:
    """Grade one notebook; 0 when every exercise passes."""
    from molmo_lite.grading import grade_notebook, print_report

    results = grade_notebook(args.notebook, timeout=args.timeout)
    print_report(results)
    return 0 if results and all(r.passed for r in results) else 1


def add_grade_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("grade", help="run an exercise notebook and check its answers")
    parser.add_argument("notebook", help="path to the notebook, e.g. exercises/01_crops_exercises.ipynb")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per cell (default 600)")
    parser.set_defaults(handler=_grade)


def _exercises(args: argparse.Namespace) -> int:
    """Write exercises/ from solutions/, or with --check list the stale ones and fail."""
    from molmo_lite.grading import exercises_up_to_date, write_exercises

    if args.check:
        stale = exercises_up_to_date(args.solutions_dir, args.exercises_dir)
        for path in stale:
            print(f"stale: {path}")
        if stale:
            print("run `python -m molmo_lite exercises` to regenerate them", file=sys.stderr)
        return 1 if stale else 0
    for path in write_exercises(args.solutions_dir, args.exercises_dir):
        print(f"wrote {path}")
    return 0


def add_exercises_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("exercises", help="generate the student notebooks from the instructor notebooks")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if exercises/ is out of date")
    parser.add_argument("--solutions-dir", default="solutions", help="instructor notebooks (default: solutions)")
    parser.add_argument("--exercises-dir", default="exercises", help="student notebooks (default: exercises)")
    parser.set_defaults(handler=_exercises)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def _crops(args: argparse.Namespace) -> int:
    """Preprocess every image given (files or folders), write its figures and a JSON summary; 1 if one failed."""
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molmo_lite import viz
    from molmo_lite.config import preprocessor_preset
    from molmo_lite.preprocessing import MolmoImageProcessor, load_image

    config = preprocessor_preset(args.preset)
    if args.max_crops:
        config = type(config)(**{**config.to_dict(), "max_crops": args.max_crops})
    processor = MolmoImageProcessor.from_config(config)
    paths = []
    for item in map(Path, args.images):
        paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if item.is_dir() else [item]
    args.out.mkdir(parents=True, exist_ok=True)
    summary, failed = [], 0
    print(f"{'image':<28} {'size':>11} {'tiling':>7} {'crops':>5} {'tokens':>6}")
    for path in paths:
        try:
            pixels = load_image(path)
            inputs = processor(pixels)
        except ValueError as err:
            print(f"{path.name:<28} skipped: {err}")
            failed += 1
            continue
        (h, w), (rows, cols) = inputs.original_size, inputs.tiling
        print(f"{path.name:<28} {f'{h}x{w}':>11} {f'{rows}x{cols}':>7} {inputs.num_crops:>5} {inputs.num_image_tokens:>6}")
        ax = viz.plot_crop_layout(pixels, config)
        ax.figure.savefig(args.out / f"{path.stem}_layout.png", dpi=90, bbox_inches="tight")
        viz.plot_crops(inputs, config).savefig(args.out / f"{path.stem}_crops.png", dpi=90, bbox_inches="tight")
        ax = viz.plot_token_layout(inputs.tokens)
        ax.figure.savefig(args.out / f"{path.stem}_tokens.png", dpi=90, bbox_inches="tight")
        plt.close("all")
        summary.append({"image": str(path), "size": [h, w], "tiling": [rows, cols], "num_crops": inputs.num_crops,
                        "num_image_tokens": inputs.num_image_tokens,
                        "num_image_features": int(inputs.pooled_patches_idx.shape[0])})
    (args.out / "summary.json").write_text(json.dumps({"config": config.to_dict(), "images": summary}, indent=2))
    print(f"wrote {len(summary)} x 3 figures and summary.json to {args.out}")
    return 1 if failed or not paths else 0


def add_crops_command(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    parser = subparsers.add_parser("crops", help="preprocess images as Molmo does and draw their crops and tokens")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--out", type=Path, default=Path("outputs/crops"), help="folder for figures and summary.json")
    parser.add_argument("--preset", default="molmo", help="preprocessing geometry: molmo, molmo-hires, small, tiny")
    parser.add_argument("--max-crops", type=int, default=None, help="override the preset's max_crops")
    parser.set_defaults(handler=_crops)


def build_parser() -> argparse.ArgumentParser:
    """The ``molmo_lite`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(prog="python -m molmo_lite", description="molmo_lite: build Molmo from scratch.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (add_grade_command, add_exercises_command, add_crops_command):
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), run the command, return its exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m molmo_lite COMMAND`` (installed as ``molmo-lite``).

    python -m molmo_lite grade exercises/01_crops_exercises.ipynb   run a notebook and check its exercises
    python -m molmo_lite grade --batch SUBMISSIONS --out grades.csv  grade a class: one CSV row per student, exercise
    python -m molmo_lite exercises [--check]                         generate exercises/ from solutions/
    python -m molmo_lite crops IMAGE_OR_DIR ... [--out DIR]          preprocess images, draw their crops and tokens
    python -m molmo_lite run [--out runs/tiny]                       the main job: stage 1, stage 2, evaluation
    python -m molmo_lite train --stage {caption,sft} --out DIR       one training stage (--resume continues)
    torchrun --nproc-per-node 2 -m molmo_lite train ... --strategy {ddp,fsdp}   the same on 2 processes
    python -m molmo_lite evaluate CHECKPOINT [--n 100]               held-out metrics of a saved model, as JSON
    python -m molmo_lite generate CHECKPOINT --image IMG --prompt P  one answer
    python -m molmo_lite generate --model allenai/Molmo-7B-D-0924 --image IMG --prompt "Point to the eyes."
                                                                      a released Molmo; points drawn on the image
    python -m molmo_lite doctor                                      packages, device, what runs here (offline)

Each command is one ``add_*_command(subparsers)`` function that registers its arguments and its handler; a handler
takes the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _grade(args: argparse.Namespace) -> int:
    """Grade one notebook (0 when every exercise passes), or with --batch a folder of submissions into a CSV."""
    import json
    from dataclasses import asdict

    from molmo_lite.grading import grade_batch, grade_notebook, print_report

    if args.batch:
        rows = grade_batch(args.batch, args.out, time_limit=args.time_limit)
        print(f"wrote {args.out}: {len(rows)} rows, {sum(r['passed'] for r in rows)} passing")
        return 0
    if not args.notebook:
        raise SystemExit("give a notebook to grade, or --batch SUBMISSIONS_DIR")
    results = grade_notebook(args.notebook, timeout=args.timeout)
    if args.json:  # one line, read by grade --batch
        print(json.dumps([asdict(r) for r in results]))
    else:
        print_report(results)
    return 0 if results and all(r.passed for r in results) else 1


def add_grade_command(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    parser = subparsers.add_parser("grade", help="run an exercise notebook and check its answers (or a class's)")
    parser.add_argument("notebook", nargs="?", help="path to the notebook, e.g. exercises/01_crops_exercises.ipynb")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per cell (default 600)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    parser.add_argument("--batch", type=Path, default=None,
                        help="grade every notebook of this folder (one subfolder per student, see INSTRUCTORS.md)")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="with --batch: the CSV to write")
    parser.add_argument("--time-limit", type=float, default=300,
                        help="with --batch: seconds allowed per notebook in all (default 300)")
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


def _train_config(args: argparse.Namespace, stage: str):
    """The stage's preset (tiny-caption / tiny-sft, or --preset NAME), with the command line's overrides."""
    from dataclasses import replace

    from molmo_lite.config import TRAIN_PRESETS

    name = args.preset or f"tiny-{stage}"
    if name not in TRAIN_PRESETS:
        raise SystemExit(f"unknown training preset {name!r}; known: {sorted(TRAIN_PRESETS)}")
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                   ("grad_accum", args.grad_accum), ("seed", args.seed),
                                   ("examples", args.examples), ("save_every", args.save_every),
                                   ("log_every", args.log_every)) if v is not None}
    return replace(TRAIN_PRESETS[name], stage=stage, **overrides)


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu / cuda / cuda:1 / mps (default: $MOLMO_LITE_DEVICE, else "
                        "CUDA when present, else CPU: molmo_lite.device.pick_device)")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None, help="training preset (default tiny-caption / tiny-sft)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--grad-accum", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--examples", type=int, default=None, help="synthetic examples generated per dataset")
    parser.add_argument("--save-every", type=int, default=None)
    parser.add_argument("--log-every", type=int, default=None)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/latest.json")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="leave after this many steps (the schedule still spans --steps; --resume continues)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    """Stage 1, stage 2 and the evaluation of the tiny Molmo (the README's `make run`)."""
    from dataclasses import replace

    from molmo_lite.config import TRAIN_PRESETS
    from molmo_lite.train import run_course

    caption, sft = TRAIN_PRESETS["course-caption"], TRAIN_PRESETS["course-sft"]
    if args.quick:  # every code path, a few steps: for CI and a first try
        caption, sft = replace(caption, steps=4, examples=16), replace(sft, steps=4, examples=16)
    run_course(args.out, caption, sft, eval_examples=8 if args.quick else args.eval_examples, resume=args.resume,
               progress=not args.no_progress, device=args.device)
    return 0


def add_run_command(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    parser = subparsers.add_parser("run", help="the course's main job: train the tiny Molmo in two stages, evaluate")
    parser.add_argument("--out", type=Path, default=Path("runs/tiny"), help="checkpoints, report.json, figures")
    parser.add_argument("--eval-examples", type=int, default=200, help="held-out examples per task")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    parser.add_argument("--resume", action="store_true", help="continue each stage from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_device_option(parser)
    parser.set_defaults(handler=_run)


def _train(args: argparse.Namespace) -> int:
    """One stage: from --init (a save_pretrained folder) or the tiny pretrained parts. Under torchrun every rank runs
    this; rank 0 logs and writes (molmo_lite.distributed)."""
    import contextlib
    import json

    from molmo_lite.distributed import (
        DistributedTrainer,
        init_distributed,
        launched_by_torchrun,
        main_first,
        memory_per_rank,
        shutdown,
    )
    from molmo_lite.model import MolmoLite
    from molmo_lite.train import Trainer, build_model, plot_history, stage_data

    config = _train_config(args, args.stage)
    several = launched_by_torchrun() or args.strategy or args.activation_checkpointing
    info = init_distributed(args.device) if several else None
    with main_first(info) if info else contextlib.nullcontext():  # rank 0 builds the caches (pretrained parts, charts) first
        model = MolmoLite.from_pretrained(args.init) if args.init else build_model(args.model, config.seed)
        data = stage_data(config, cache_dir=args.out / "docs_cache")
    if info is None:
        trainer = Trainer(model, config, data, args.out, device=args.device, progress=not args.no_progress)
    else:
        trainer = DistributedTrainer(model, config, data, args.out, strategy=args.strategy or "ddp",
                                     activation_checkpointing=args.activation_checkpointing, info=info,
                                     progress=not args.no_progress)
    history = trainer.fit(resume=args.resume, stop_after=args.stop_after)
    ranks = memory_per_rank(trainer)  # what each rank holds at the end (a collective: all ranks call it)
    state = trainer.full_model_state()  # every rank takes part in gathering a sharded model
    if trainer.is_main:
        model.save_pretrained(args.out / "final", state_dict=state)
        (args.out / "history.json").write_text(json.dumps(history))
        (args.out / "ranks.json").write_text(json.dumps(ranks, indent=1))
        plot_history(history, args.out / "loss.png", title=f"stage {args.stage}")
        where = f" on {trainer.world_size} ranks ({trainer.strategy})" if trainer.world_size > 1 else ""
        print(f"wrote {args.out / 'final'}{where}; last loss {history[-1]['loss']:.4f}" if history else "nothing to do")
    if info is not None:
        del trainer, model  # an FSDP2 model holds communication state: released before the group goes
        shutdown()
        if info.world_size > 1:
            # Leave without the interpreter's teardown: gloo's threads can still abort a process there now and then
            # (SIGABRT at exit), after all the work is done and written.
            import os

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    return 0


def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    parser = subparsers.add_parser("train", help="train one stage (caption or sft)")
    parser.add_argument("--stage", choices=("caption", "sft"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="checkpoints and the final model")
    parser.add_argument("--init", type=Path, default=None, help="start from this save_pretrained folder")
    parser.add_argument("--model", default="tiny", help="without --init: tiny (pretrained tiny parts), small (random, "
                        "one GPU), molmo-7b-d / molmo-7b-o (CLIP + Qwen2 / OLMo weights from the Hub)")
    parser.add_argument("--strategy", choices=("ddp", "fsdp"), default=None,
                        help="under torchrun: data parallel (default) or FSDP2 sharding")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute each block's activations in backward (less memory, ~1 more forward)")
    _add_device_option(parser)
    _add_training_options(parser)
    parser.set_defaults(handler=_train)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from molmo_lite.device import pick_device
    from molmo_lite.evaluate import TASKS, evaluate, heldout_sets, metrics_table
    from molmo_lite.model import MolmoLite

    model = MolmoLite.from_pretrained(args.checkpoint).to(pick_device(args.device))
    tasks = args.tasks or list(TASKS)
    report = evaluate(model, heldout_sets(args.n, seed=args.seed), tasks=tasks)
    print(metrics_table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return 0


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    parser = subparsers.add_parser("evaluate", help="held-out metrics of a saved model")
    parser.add_argument("checkpoint", type=Path, help="a save_pretrained folder (e.g. runs/tiny/final)")
    parser.add_argument("--n", type=int, default=100, help="examples per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="*", default=None, help="subset of pointing counting clocks charts tables "
                        "captions")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    _add_device_option(parser)
    parser.set_defaults(handler=_evaluate)


def _generate(args: argparse.Namespace) -> int:
    """One answer. --model: a save_pretrained folder, a released Molmo 1 folder (config.json model_type "molmo") or
    a Hub id such as allenai/Molmo-7B-D-0924 (downloaded when online). Points in the answer are drawn on the image."""
    from pathlib import Path

    import torch

    from molmo_lite.device import pick_device
    from molmo_lite.model import MolmoLite
    from molmo_lite.prompts import Message, format_messages
    from molmo_lite.released import is_released_folder

    source = args.model or args.checkpoint
    if source is None:
        raise SystemExit("say which model: --model PATH_OR_HUB_ID (a save_pretrained folder, a released Molmo folder "
                         "or a Hub id such as allenai/Molmo-7B-D-0924)")
    device = pick_device(args.device)
    if is_released_folder(source) or not Path(source).exists():  # released layout, or a Hub id
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
        try:
            model = MolmoLite.from_released(source, dtype=dtype, quantize=args.quantize, device=str(device))
        except (RuntimeError, ValueError) as err:  # offline Hub id, a folder that is not a Molmo 1 checkpoint
            raise SystemExit(f"error: {err}") from None
    else:
        if args.quantize or args.dtype != "float32":
            raise SystemExit("--dtype / --quantize apply to released checkpoints; a save_pretrained folder loads "
                             "in fp32")
        model = MolmoLite.from_pretrained(source).to(device)
    prompt = format_messages([Message(args.prompt or None, "", args.style)])[0][0]
    answer = model.generate(args.image, prompt, max_new_tokens=args.max_new_tokens)
    print(answer)
    if args.image is not None:
        _draw_answer_points(answer, args.image, args.points_out, args.prompt)
    return 0


def _draw_answer_points(answer: str, image, out, title: str) -> None:
    """When the answer holds points: the image with them drawn (chapter 06's draw_points), written to ``out``
    (default outputs/points/IMAGE_points.png)."""
    from pathlib import Path

    from molmo_lite.config import shown_path
    from molmo_lite.pointing import draw_points, parse_points

    points = parse_points(answer)
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out) if out else Path("outputs") / "points" / f"{Path(image).stem}_points.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    ax = draw_points(str(image), points, title=title or None)
    ax.figure.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(ax.figure)
    print(f"wrote {shown_path(out)} ({len(points)} point{'s' if len(points) != 1 else ''})")


def add_generate_command(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    parser = subparsers.add_parser("generate", help="answer one prompt about one image")
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="a save_pretrained folder (e.g. runs/tiny/final); or use --model")
    parser.add_argument("--model", default=None, help="a save_pretrained folder, a released Molmo 1 folder or a Hub "
                        "id (allenai/Molmo-7B-D-0924, allenai/Molmo-7B-O-0924)")
    parser.add_argument("--image", type=Path, default=None, help="the image (none: a text-only prompt)")
    parser.add_argument("--prompt", default="", help="the question; empty: a caption")
    parser.add_argument("--style", default=None, help="a style prefix, e.g. clocks, point_count")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="released checkpoints: the weights' dtype in memory (bfloat16: half the memory)")
    parser.add_argument("--quantize", choices=("nf4",), default=None,
                        help="released checkpoints: the LLM in 4 bits (bitsandbytes NF4, chapter 11)")
    parser.add_argument("--points-out", type=Path, default=None,
                        help="where to write the image with the answer's points (default outputs/points/)")
    _add_device_option(parser)
    parser.set_defaults(handler=_generate)


def _doctor(args: argparse.Namespace) -> int:
    """Print what this machine has (packages, device, caches) and which chapters run; 1 if a package is missing."""
    from molmo_lite.doctor import diagnose, report

    findings = diagnose()
    print(report(findings))
    return 1 if any(f.state == "missing" for f in findings) else 0


def add_doctor_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="check the environment offline: packages, device, what runs here")
    parser.set_defaults(handler=_doctor)


def build_parser() -> argparse.ArgumentParser:
    """The ``molmo_lite`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(prog="python -m molmo_lite", description="molmo_lite: build Molmo from scratch.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (add_grade_command, add_exercises_command, add_crops_command, add_run_command,
                        add_train_command, add_evaluate_command, add_generate_command, add_doctor_command):
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), run the command, return its exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

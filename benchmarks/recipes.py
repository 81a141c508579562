"""Training recipes of the tiny Molmo, compared at equal wall-clock minutes (the table of chapter 10 and of
docs/benchmarks.md; docs/recipes.md tells what each measured).

    python -m benchmarks.recipes                      # list the recipes and what each changes
    python -m benchmarks.recipes NAME [--minutes 11.5] [--evals 4] [--examples 200]
    python -m benchmarks.recipes --figure             # redraw docs/figures/recipes.png from the JSON

A recipe is the tiny model's connector options plus the two stages' TrainConfig fields. Each run starts from the
same pretrained parts (chapters 02 and 04), gives stage 1 ``caption_share`` of the training minutes and stage 2 the
rest; the steps of each stage are set from the seconds per step measured on a copy of the model (the mean of
steps spread over the whole schedule, so that a curriculum's cheap and costly phases both count). During stage 2 it evaluates
``--evals`` times on held-out scenes (pointing F1, counting exact, clocks within 3 min, the shuffled-image loss
ratio); the evaluation time is not counted as training time. At the end: every held-out task on ``--examples``
examples, with the blind baseline and the shuffled-image control.

Writes benchmarks/results/recipes.json (one record per recipe: metrics against training minutes, steps/s,
tokens/s, the configs; a rerun replaces the recipe's record and keeps the earlier runs' headline figures under
"previous_runs"), docs/figures/recipes.png (held-out pointing F1 against minutes, one curve per recipe) and the table
between the <!-- recipes-benchmark --> markers of docs/benchmarks.md. One run at a time on this 2-core machine.
"""

from __future__ import annotations

import argparse
import math
import copy
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, replace_block
from molmo_lite.config import CLAIM_EYES, TRAIN_PRESETS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "recipes.json"
FIGURE = ROOT / "docs" / "figures" / "recipes.png"

# v0: Molmo's two stages at the tiny scale, unchanged: pools of 3000 examples per dataset, the connector at 3e-3, raw
# ViT features into a default-initialised projector.
V0_CAPTION = dict(stage="caption", batch_size=16, lr_connector=3e-3, lr_vit=2e-5, lr_llm=2e-4, warmup_connector=30,
                  warmup_vit=30, warmup_llm=30, examples=3000)
V0_SFT = dict(V0_CAPTION, stage="sft")
MOLMO_CONNECTOR = dict(feature_norm=0, init_scale=1.0)
COURSE_CONNECTOR = dict(feature_norm=2, init_scale=3.0)
FAST_LRS = dict(lr_connector=1e-3, lr_vit=5e-5, lr_llm=1e-3)


@dataclass(frozen=True)
class Recipe:
    lever: str  # what this recipe changes, relative to the one named in ``base`` of its description
    connector: dict = field(default_factory=dict)
    caption: dict = field(default_factory=dict)
    sft: dict = field(default_factory=dict)
    caption_share: float = 0.15
    preprocessor: dict = field(default_factory=dict)
    lm_kinds: tuple[str, ...] | None = None  # the LM pre-trained on these corpus line kinds only (default all)
    vit_scenes: str = "simple"  # the tiny CLIP's pre-training images (molmo_lite.clip_pretrain.ENCODER_SCENES)
    vit_steps: int = 600  # and its steps
    eyes: dict | None = None  # the image path of chapter 10's pointing harness (molmo_lite.train.tiny_model)
    lm: str = "pretrained"  # or "random": the LLM from a random start, as the harnesses start it


PACKED_CAPTION = dict(V0_CAPTION, data="fresh", pack_examples=True, **FAST_LRS)  # v8's stages
PACKED_SFT = dict(V0_SFT, data="fresh", pack_examples=True, **FAST_LRS)

# v18 on: the pointing harness's findings (docs/recipes.md, e51) in Molmo's two stages. The image path: CLAIM_EYES
# (the shipped claim ViT `vit_p7_claim2`, one token per 7 px cell in single-crop mode, its cell decisions in the
# connector, the projector started linear); ViT and connector frozen. The recipe: the oracle's o16 (Muon for the
# hidden matrices, the question before the image, one annotation per row, a step's rows sorted by length in two
# chunks), the LLM at 1e-3 annealed to a tenth: `make run`'s presets, their steps calibrated here.
O16_CAPTION, O16_SFT = ({k: v for k, v in TRAIN_PRESETS[f"course-{stage}"].to_dict().items() if k != "steps"}
                        for stage in ("caption", "sft"))

RECIPES: dict[str, Recipe] = {
    "v0-course": Recipe("Molmo's stages at tiny scale: pools of 3000 images, Molmo's connector as is",
                        MOLMO_CONNECTOR, V0_CAPTION, V0_SFT),
    "v1-connector": Recipe("v0 + ViT features normalised per layer, projector init x3 (image embeddings at the "
                           "scale of the text's)", COURSE_CONNECTOR, V0_CAPTION, V0_SFT),
    "v2-fresh-lr": Recipe("v1 + a fresh example at every draw, learning rates 1e-3 / 5e-5 / 1e-3 (connector / ViT "
                          "/ LLM)", COURSE_CONNECTOR, dict(V0_CAPTION, data="fresh", **FAST_LRS),
                          dict(V0_SFT, data="fresh", **FAST_LRS)),
    "v3-curriculum": Recipe("v2 + curriculum (first half of the steps single objects only, then 1-3 among 0-3, then the held-out "
                            "scenes) and "
                            "length-sorted micro-batches (8 x 2)", COURSE_CONNECTOR,
                            dict(V0_CAPTION, data="fresh", batch_size=8, grad_accum=2, sort_by_length=True,
                                 **FAST_LRS),
                            dict(V0_SFT, data="fresh", curriculum="objects", batch_size=8, grad_accum=2,
                                 sort_by_length=True, **FAST_LRS)),
    "v4-hires": Recipe("v2 + scenes and clocks rendered at 112 px, crops without overlap: 20 image tokens (a 4x4 "
                       "grid + the 2x2 overview) instead of 8", COURSE_CONNECTOR,
                       dict(V0_CAPTION, data="fresh", image_size=112, **FAST_LRS),
                       dict(V0_SFT, data="fresh", image_size=112, **FAST_LRS),
                       preprocessor=dict(overlap_margins=(0, 0))),
    "v5-pointing-share": Recipe("v2 + pointing and counting 60% of stage 2 instead of Molmo's 35% (the rest of the "
                                "mixture in its own proportions)", COURSE_CONNECTOR,
                                dict(V0_CAPTION, data="fresh", **FAST_LRS),
                                dict(V0_SFT, data="fresh", rates=(("pointing", 0.6),), **FAST_LRS)),
    "v6-lm-no-points": Recipe("v2 + an LM pre-trained without the imageless pointing and counting answers (captions, "
                              "QA and clock lines only): it meets the point format in stage 2, as Qwen2 did",
                              COURSE_CONNECTOR, dict(V0_CAPTION, data="fresh", **FAST_LRS),
                              dict(V0_SFT, data="fresh", **FAST_LRS), lm_kinds=("caption", "qa", "clock")),
    "v7-curriculum-mixed": Recipe("v2 + curriculum 'objects-mixed' (a third of the steps single objects only, a third "
                                  "1-3 among 0-3 with some single objects, then the held-out scenes with both easy "
                                  "kinds kept at half the pointing group)", COURSE_CONNECTOR,
                                  dict(V0_CAPTION, data="fresh", **FAST_LRS),
                                  dict(V0_SFT, data="fresh", curriculum="objects-mixed", **FAST_LRS)),
    "v8-packed": Recipe("v2 + several examples per row, each attending only to itself (rows as long as the "
                        "longest example): the same gradient per step with far fewer padding tokens, so more steps",
                        COURSE_CONNECTOR, PACKED_CAPTION, PACKED_SFT),
    "v9-vit-crowded": Recipe("v8 + a tiny CLIP pre-trained for 1200 steps on half chapter 02's scenes, half 4-8 small "
                             "textured objects (radius 4-8% of the side, the crowded scenes' sizes) instead of 600 steps "
                             "on 1-3 large ones", COURSE_CONNECTOR, PACKED_CAPTION, PACKED_SFT,
                             vit_scenes="crowded", vit_steps=1200),
    "v10-slow-llm": Recipe("v8 + the LLM 5x slower and the ViT 4x faster (learning rates 1e-3 / 2e-4 / 2e-4, "
                           "connector / ViT / LLM): the image path learns faster than the text prior",
                           COURSE_CONNECTOR, dict(PACKED_CAPTION, lr_vit=2e-4, lr_llm=2e-4),
                           dict(PACKED_SFT, lr_vit=2e-4, lr_llm=2e-4)),
    "v11-packed-curriculum": Recipe("v8 + v7's curriculum 'objects-mixed': the curriculum with packing's 2.4x faster "
                                    "steps", COURSE_CONNECTOR, PACKED_CAPTION,
                                    dict(PACKED_SFT, curriculum="objects-mixed")),
    "v12-fresh-data": Recipe("v1 + a fresh example at every draw, v0's learning rates kept (3e-3 / 2e-5 / 2e-4): "
                             "fresh data alone, the half of v2 not yet isolated", COURSE_CONNECTOR,
                             dict(V0_CAPTION, data="fresh"), dict(V0_SFT, data="fresh")),
    "v13-batch-8": Recipe("v8 + batch 8 instead of 16 (no accumulation): about twice the steps of half the "
                          "examples, batch size alone", COURSE_CONNECTOR, dict(PACKED_CAPTION, batch_size=8),
                          dict(PACKED_SFT, batch_size=8)),
    "v14-long-warmup": Recipe("v8 + Molmo's stage-1 warmups in proportion: the ViT and LLM warm up 10x longer than "
                              "the connector (300 steps against 30, past the end of stage 1), so the connector "
                              "learns first while the LM prior moves slowly", COURSE_CONNECTOR,
                              dict(PACKED_CAPTION, warmup_vit=300, warmup_llm=300), PACKED_SFT),
    "v15-gradual-curriculum": Recipe("v8 + curriculum 'objects-gradual': up through the held-out distribution in "
                                     "small steps (1 object, 1-3, 1-6, then 0-10 among 0-6), the rest of the "
                                     "mixture on throughout, the held-out scenes alone for the last third",
                                     COURSE_CONNECTOR, PACKED_CAPTION, dict(PACKED_SFT, curriculum="objects-gradual")),
    "v16-no-pooling": Recipe("v8 + the connector pools 1x1 instead of 2x2: every ViT patch becomes an image token "
                             "(32 image features instead of 8; a departure from Molmo, whose 2x2 window covers a "
                             "twelfth of a crop's side, not half of it: benchmarks/token_probe.py)",
                             COURSE_CONNECTOR, PACKED_CAPTION, PACKED_SFT, preprocessor=dict(pooling=(1, 1))),
    "v17-no-pooling-curriculum": Recipe("v16 + v11's curriculum 'objects-mixed': the lone object localised first, now "
                                        "with tokens that keep the positions of several objects",
                                        COURSE_CONNECTOR, PACKED_CAPTION, dict(PACKED_SFT, curriculum="objects-mixed"),
                                        preprocessor=dict(pooling=(1, 1))),
    "v18-claim-eyes-o16": Recipe("the harness's e54 in Molmo's two stages: the claim ViT's decisions (frozen, with "
                                 "the connector), an LLM from a random start trained with o16 (Muon, question "
                                 "first, one annotation per row); stage 2 pointing 60%, clocks 15%, the rest of the "
                                 "mixture 25%", caption=O16_CAPTION, sft=O16_SFT, eyes=CLAIM_EYES,
                                 lm="random"),
}


def seconds_per_step(model, config, data, at: tuple[float, ...] = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95),
                     guess: int = 1000) -> float:
    """Mean seconds of train_step on a COPY of the model at steps spread over the schedule (fractions ``at`` of a
    guessed length): the mean step cost, curriculum phases of cheap and costly steps included."""
    from molmo_lite.train import StageData, Trainer

    probe_data = StageData(data.datasets, data.rates, data.curriculum, steps=guess, nominal=data.nominal)
    trainer = Trainer(copy.deepcopy(model), replace(config, steps=guess), probe_data, "/nonexistent", progress=False)
    trainer.train_step(0)  # warm-up
    times = []
    for fraction in at:
        t = time.perf_counter()
        trainer.train_step(int(fraction * guess))
        times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def one_object_scenes(n: int = 64, size: int = 56) -> list:
    """Held-out scenes with one object and nothing else (a seed stream of their own): what the curriculum starts
    with, to see whether the model localises at all before it binds words to objects in crowded scenes."""
    import numpy as np

    from molmo_lite.data.examples import split_seed
    from molmo_lite.data.synthetic import pointing_example

    rng = np.random.default_rng(split_seed(1, "heldout"))
    return [pointing_example(rng, size, min_count=1, max_count=1, max_distractors=0) for _ in range(n)]


def quick_eval(model, sets, n: int = 100) -> dict[str, float]:
    """The curve points: pointing F1, counting exact and clocks within 3 min on n held-out examples, the
    answer-loss ratio shuffled / true images on 64 pointing scenes and 64 clocks, and pointing F1 and loss ratio on
    64 held-out one-object scenes."""
    from molmo_lite.evaluate import controls, evaluate, headline

    small = {t: sets[t][:n] for t in ("pointing", "counting", "clocks")}
    report = evaluate(model, small, tasks=tuple(small))
    out = headline(report)
    for task, loss in controls(model, sets, ("pointing", "clocks")).items():
        out[f"{task} loss ratio"] = loss["ratio"]
    one = {"pointing": one_object_scenes(size=sets["pointing"][0].image.shape[0])}
    out["one-object f1"] = evaluate(model, one, tasks=("pointing",))["metrics"]["pointing"]["f1"]
    out["one-object loss ratio"] = controls(model, one, ("pointing",))["pointing"]["ratio"]
    return out


def run(name: str, minutes: float, evals: int = 4, examples: int = 200, out_dir: Path | None = None,
        seed: int = 0) -> dict[str, Any]:
    from molmo_lite.config import TrainConfig
    from molmo_lite.evaluate import evaluate_with_controls, headline, heldout_sets, metrics_table
    from molmo_lite.train import Trainer, stage_data, tiny_model

    recipe = RECIPES[name]
    out_dir = Path(out_dir or ROOT / "runs" / "recipes" / name)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    cache = ROOT / "runs" / "recipes" / "docs_cache"
    model = tiny_model(seed, recipe.connector, recipe.preprocessor, recipe.lm_kinds, recipe.vit_scenes,
                       recipe.vit_steps, eyes=recipe.eyes, lm=recipe.lm)
    size = recipe.sft.get("image_size", 56)  # the held-out scenes at the training resolution (same relative sizes)
    sets = heldout_sets(examples, seed=0, size=size, cache_dir=cache)
    curve, stages, train_seconds = [], {}, 0.0
    for stage, share in (("caption", recipe.caption_share), ("sft", 1 - recipe.caption_share)):
        fields = dict(getattr(recipe, stage), seed=seed, log_every=10, save_every=10**9)
        config = TrainConfig(**fields, steps=1000)
        data = stage_data(config, cache_dir=cache)
        per_step = seconds_per_step(model, config, data)
        steps = max(10, int(share * minutes * 60 / per_step))
        config = replace(config, steps=steps)
        data.steps = steps  # the curriculum's phases are fractions of the stage's steps
        trainer = Trainer(model, config, data, out_dir / stage, progress=False)
        chunks = [steps] if stage == "caption" else [round(steps * (i + 1) / evals) for i in range(evals)]
        t_stage = 0.0
        for end in chunks:
            t = time.perf_counter()
            history = trainer.fit(stop_after=end - trainer.step)
            t_stage += time.perf_counter() - t
            if stage == "sft":
                point = {"minutes": (train_seconds + t_stage) / 60, "step": trainer.step,
                         **quick_eval(model, sets)}
                curve.append(point)
                print(name, {k: round(v, 3) for k, v in point.items()}, flush=True)
        tokens = sum(h["tokens"] for h in trainer.history)  # logged steps only: an estimate below
        train_seconds += t_stage
        stages[stage] = {"steps": steps, "seconds": round(t_stage, 1), "steps_per_second": steps / t_stage,
                         "tokens_per_second": history[-1]["tokens_per_second"] if history else None,
                         "final_loss": trainer.history[-1]["loss"], "probe_seconds_per_step": per_step,
                         "config": config.to_dict(), "logged_tokens": tokens}
    t = time.perf_counter()
    report = evaluate_with_controls(model, sets)
    eval_seconds = time.perf_counter() - t
    print(metrics_table(report))
    record = {"recipe": name, "lever": recipe.lever, "connector": recipe.connector,
              "preprocessor": recipe.preprocessor, "lm_kinds": recipe.lm_kinds,
              "vit_scenes": recipe.vit_scenes, "vit_steps": recipe.vit_steps, "eyes": recipe.eyes, "lm": recipe.lm,
              "image_size": size, "minutes": minutes,
              "train_minutes": train_seconds / 60, "eval_seconds": eval_seconds, "curve": curve, "stages": stages,
              "headline": headline(report), "metrics": report["metrics"], "shuffled": report["shuffled"],
              "blind": report["blind"], "blind_answers": report["blind_answers"], "losses": report["losses"],
              "n": report["n"], "machine": machine_info(), "date": time.strftime("%Y-%m-%d")}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    if name in results:  # a rerun: keep the earlier runs' headline figures, the evidence that reruns agree
        old = results[name]
        record["previous_runs"] = [{k: old.get(k) for k in ("date", "train_minutes", "headline")} |
                                   {"steps": [old["stages"][s]["steps"] for s in ("caption", "sft")],
                                    "loss_ratios": {t: old["losses"][t]["ratio"] for t in old["losses"]}}
                                   ] + old.get("previous_runs", [])
    results[name] = record
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", OUT)
    figure(results)
    update_page(results)
    return record


def update_page(results: dict[str, dict]) -> None:
    """Replace the recipes table of docs/benchmarks.md (between its markers) with ``readme_table``."""
    replace_block("recipes", readme_table(results))


def readme_table(results: dict[str, dict]) -> str:
    """The recipes table: one row per recipe, final held-out metrics with the shuffled-image loss ratios."""
    lines = ["| recipe | what it changes | train min | steps (1+2) | pointing F1 | counting exact | clocks 3 min | "
             "charts | tables | caption recall | loss ratio pointing / clocks |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        h, s, loss = r["headline"], r["stages"], r["losses"]
        lines.append(f"| {name} | {r['lever']} | {r['train_minutes']:.1f} | {s['caption']['steps']}+"
                     f"{s['sft']['steps']} | {h['pointing f1']:.2f} | {h['counting exact']:.2f} | "
                     f"{h['clocks within_3_min']:.2f} | {h['charts accuracy']:.2f} | {h['tables accuracy']:.2f} | "
                     f"{h['captions object_recall']:.2f} | {loss['pointing']['ratio']:.2f} / "
                     f"{loss['clocks']['ratio']:.2f} |")
    if results:
        any_run = next(iter(results.values()))
        b = any_run["blind"]
        lines.append(f"| blind baseline | one constant answer | - | - | {b['pointing']['f1']:.2f} | "
                     f"{b['counting']['exact']:.2f} | {b['clocks']['within_3_min']:.2f} | "
                     f"{b['charts']['accuracy']:.2f} | {b['tables']['accuracy']:.2f} | - | 1.00 / 1.00 |")
    return "\n".join(lines)


def figure(results: dict[str, dict], path: Path = FIGURE) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("pointing f1", "counting exact", "pointing loss ratio", "one-object f1")
    fig, axes = plt.subplots(1, len(keys), figsize=(17, 4.2))
    colours = plt.get_cmap("tab20").colors  # 20 colours, and a line style per ten recipes: every curve its own look
    for i, (name, r) in enumerate(results.items()):
        minutes = [p["minutes"] for p in r["curve"]]
        style = dict(color=colours[i % len(colours)], ls=("-", "--", ":")[(i // 10) % 3],
                     marker="os^"[(i // 10) % 3], ms=4)
        for ax, key in zip(axes, keys):
            if all(key in p for p in r["curve"]):
                ax.plot(minutes, [p[key] for p in r["curve"]], label=name, **style)
            ax.set_xlabel("training minutes (2-core CPU)"), ax.set_title(f"held-out {key}")
    if results:
        blind = next(iter(results.values()))["blind"]
        axes[0].axhline(blind["pointing"]["f1"], color="grey", ls="--", label="blind baseline")
        axes[1].axhline(blind["counting"]["exact"], color="grey", ls="--")
        axes[2].axhline(1.0, color="grey", ls="--")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=7, fontsize=7, frameon=False)  # below, not over a panel
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(labels) / 7), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="a recipe; none lists them")
    parser.add_argument("--minutes", type=float, default=11.5, help="training minutes, both stages (default 11.5)")
    parser.add_argument("--evals", type=int, default=4, help="held-out evaluations during stage 2")
    parser.add_argument("--examples", type=int, default=200, help="held-out examples per task at the end")
    parser.add_argument("--figure", action="store_true", help="redraw the figure and print the table from the JSON")
    args = parser.parse_args(argv)
    if args.figure:
        results = json.loads(OUT.read_text())
        print(figure(results))
        print(readme_table(results))
        update_page(results)
        return
    if args.name is None:
        measured = json.loads(OUT.read_text()) if OUT.exists() else {}
        for name, recipe in RECIPES.items():
            mark = f"measured {measured[name]['date']}" if name in measured else "not measured"
            print(f"{name:16s} {recipe.lever} ({mark})")
        return
    if args.name not in RECIPES:
        parser.error(f"unknown recipe {args.name!r}; known: {', '.join(RECIPES)}")
    run(args.name, args.minutes, args.evals, args.examples)


if __name__ == "__main__":
    main()

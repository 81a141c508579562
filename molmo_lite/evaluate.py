"""Evaluation on held-out synthetic data (chapter 10), with Molmo's metrics where Molmo defines them (pointing,
counting, clocks: docs/molmo_recipe.md §6) and the course's own for the short answers and captions:

    pointing   precision / recall / F1 per example (Hungarian matching, a hit within 5% of the image diagonal),
               averaged over examples; an empty ground truth scores 1 only when nothing is predicted
    counting   exact ("correct", Molmo's reported accuracy) and within one; the answer read with parse_count
    clocks     exact, and within 3 minutes (on the 12-hour dial) with the hour right, as Molmo's "close"
    charts /   short-answer exact match after normalising case, spaces and a final "."
    tables
    captions   length in words and object recall: the share of the scene's "colour shape" pairs the caption names

Two controls sit beside every metric (chapter 10): ``blind_baselines`` (the score of one constant answer: "There are
none." for pointing and counting, the most common training answer for clocks, charts and tables) and
``shuffled_images`` (the same held-out questions, each with another example's image): a model that reads the image
beats both, and its answer loss (``answer_loss``) with the true image is well below the loss with a shuffled one.

The held-out sets come from the generators' "heldout" split (separate seed streams from training). Every answer is
generated greedily with the KV cache, in batches; ``evaluate`` returns a JSON-able report with the metrics and the
predictions, ``plot_predictions`` draws some of them on their images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.examples import Example
from .model import MolmoLite
from .pointing import (
    average_counting_metrics,
    average_pointing_metrics,
    counting_metrics,
    draw_points,
    parse_points,
    pointing_metrics,
)
from .prompts import Message, format_messages

TASKS = ("pointing", "counting", "clocks", "charts", "tables", "captions")
MAX_NEW_TOKENS = {"pointing": 240, "counting": 260, "clocks": 10, "charts": 12, "tables": 12, "captions": 96}


def heldout_sets(n: int = 100, seed: int = 0, size: int = 56, cache_dir: str | Path | None = None
                 ) -> dict[str, list[Example]]:
    """n held-out examples per task. Pointing and counting share their scenes (0-10 instances of the class asked)."""
    from .data import clocks, docs, synthetic

    scenes = synthetic.pointing_examples(n, seed, "heldout", size, max_count=10)
    return {
        "pointing": scenes, "counting": scenes,
        "clocks": clocks.clock_examples(n, seed, "heldout", size),
        "charts": docs.chart_examples(n, seed, "heldout", cache_dir=cache_dir),
        "tables": docs.table_examples(n, seed, "heldout", cache_dir=cache_dir),
        "captions": synthetic.caption_examples(n, seed, "heldout", size),
    }


def _question(example: Example, task: str) -> Message:
    """The annotation a task asks about: pointing -> the first (pointing) one, counting -> the second; others the
    first."""
    return example.messages[1 if task == "counting" else 0][0]


def _prompt(message: Message) -> str:
    """The prompt as at inference: no rng, so demo styles carry no prefix and captions get the default hint."""
    return format_messages([message])[0][0]


def normalize_answer(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".").strip()


_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def clock_scores(answer: str, hour: int, minute: int) -> tuple[float, float]:
    """(exact, close): close = the hour right and the minutes within 3 (around the dial), as Molmo's clock eval."""
    m = _TIME.search(answer or "")
    if m is None:
        return 0.0, 0.0
    h, mm = int(m.group(1)), int(m.group(2))
    exact = float(h % 12 == hour % 12 and mm == minute)
    truth, said = (hour % 12) * 60 + minute, (h % 12) * 60 + mm
    gap = min(abs(truth - said), 720 - abs(truth - said))
    return exact, float(gap <= 3)


def clock_hour(answer: str, hour: int) -> float:
    """1.0 when the answer's time names the right hour (on a 12-hour dial), whatever its minutes."""
    m = _TIME.search(answer or "")
    return float(m is not None and int(m.group(1)) % 12 == hour % 12)


def caption_recall(caption: str, objects: Sequence[Any]) -> float:
    """Share of the scene's distinct (colour, shape) pairs named in the caption ('red circle' or 'red circles')."""
    kinds = {(o.colour, o.shape) for o in objects}
    text = caption.lower()
    return float(np.mean([f"{c} {s}" in text for c, s in kinds])) if kinds else 1.0


def generate_in_batches(model: MolmoLite, examples: Sequence[Example], prompts: Sequence[str], max_new_tokens: int,
                        batch_size: int = 16) -> list[str]:
    """``model.generate`` on each example's image with its prompt, ``batch_size`` at a time."""
    answers = []
    for i in range(0, len(examples), batch_size):
        answers += model.generate([ex.image for ex in examples[i:i + batch_size]], list(prompts[i:i + batch_size]),
                                  max_new_tokens=max_new_tokens)
    return answers


def generate_answers(model: MolmoLite, examples: Sequence[Example], task: str, batch_size: int = 16,
                     max_new_tokens: int | None = None) -> list[str]:
    return generate_in_batches(model, examples, [_prompt(_question(ex, task)) for ex in examples],
                               max_new_tokens or MAX_NEW_TOKENS[task], batch_size)


def score(task: str, examples: Sequence[Example], answers: Sequence[str]) -> dict[str, float]:
    """The task's metrics over examples (see the module docstring)."""
    if task == "pointing":
        s = average_pointing_metrics(pointing_metrics(a, ex.meta["points"]) for ex, a in zip(examples, answers))
        return {"precision": s.precision, "recall": s.recall, "f1": s.f1}
    if task == "counting":
        s = average_counting_metrics(counting_metrics(a, ex.meta["count"]) for ex, a in zip(examples, answers))
        return {"exact": s.correct, "within_1": s.close, "valid": s.valid}
    if task == "clocks":
        pairs = [clock_scores(a, ex.meta["hour"], ex.meta["minute"]) for ex, a in zip(examples, answers)]
        return {"exact": float(np.mean([p[0] for p in pairs])), "within_3_min": float(np.mean([p[1] for p in pairs])),
                "hour": float(np.mean([clock_hour(a, ex.meta["hour"]) for ex, a in zip(examples, answers)]))}
    if task in ("charts", "tables"):
        right = [normalize_answer(a) == normalize_answer(ex.messages[0][0].answer) for ex, a in zip(examples, answers)]
        return {"accuracy": float(np.mean(right))}
    if task == "captions":
        return {"words": float(np.mean([len(a.split()) for a in answers])),
                "object_recall": float(np.mean([caption_recall(a, ex.meta["objects"])
                                                for ex, a in zip(examples, answers)]))}
    raise ValueError(f"unknown task {task!r}; known: {TASKS}")


def evaluate(model: MolmoLite, sets: dict[str, list[Example]], tasks: Sequence[str] = TASKS,
             batch_size: int = 16) -> dict[str, Any]:
    """{"metrics": {task: {...}}, "predictions": {task: [answers]}, "n": {task: count}} for the tasks given."""
    model.eval()
    metrics, predictions = {}, {}
    for task in tasks:
        answers = generate_answers(model, sets[task], task, batch_size)
        metrics[task], predictions[task] = score(task, sets[task], answers), answers
    return {"metrics": metrics, "predictions": predictions, "n": {t: len(sets[t]) for t in tasks}}


def shuffled_images(examples: Sequence[Example], shift: int = 1) -> list[Example]:
    """The shuffled-image control: example i with the image of example (i + shift) mod n, its text unchanged."""
    n = len(examples)
    return [Example(examples[(i + shift) % n].image, ex.messages, ex.task, ex.meta) for i, ex in enumerate(examples)]


def answer_loss(model: MolmoLite, examples: Sequence[Example], task: str, batch_size: int = 16) -> float:
    """Mean cross-entropy per answer token of the task's question (teacher forcing, no packing, no dropout)."""
    return answer_losses(model, examples, task, batch_size)["all"]


def number_tokens(pieces: Sequence[str]) -> list[bool]:
    """Which of an answer's token strings are the digits of its values -- a point's coordinates, a count, a clock's
    time -- and not format: a point's index (the "1" of ``x1="``) is format, as are decimal points, tags, quotes and
    words."""
    out, index = [], False
    for piece in pieces:
        if piece in (" x", " y"):
            index = True  # the digits that follow number the point, up to '="'
        elif not piece.isdigit():
            index = False
        out.append(piece.isdigit() and not index)
    return out


def answer_losses(model: MolmoLite, examples: Sequence[Example], task: str, batch_size: int = 16
                  ) -> dict[str, float]:
    """The answer loss (teacher forcing) split into the tokens of the answer's values (``number_tokens``: the
    coordinates, the count, the time) and the rest (format: tags, quotes, words). -> {"all", "numbers", "format":
    mean cross-entropy per token; "number_share": the numbers' share of the summed loss; "tokens", "number_count"}.
    Of a pointing answer only the numbers can depend on the image; the format is learnt from text alone."""
    import torch

    from .data.collate import collate, encode_example
    from .model import answer_loss as loss_of

    model.eval()
    device = next(model.parameters()).device  # the batches go where the model is
    sums, counts = {"numbers": 0.0, "format": 0.0}, {"numbers": 0, "format": 0}
    for i in range(0, len(examples), batch_size):
        encoded = [encode_example(Example(ex.image, [[_question(ex, task)]], ex.task, ex.meta), model.processor,
                                  model.tokenizer, None, "none", shuffle=False,
                                  question_first=model.config.question_first) for ex in examples[i:i + batch_size]]
        batch = {k: v.to(device) for k, v in collate(encoded, model.tokenizer.pad_id).items()}
        targets, weights = batch.pop("target_ids"), batch.pop("loss_weights")
        with torch.no_grad():
            per_token = loss_of(model(**batch).logits, targets, weights)[1]
        for row in range(targets.shape[0]):
            where = (weights[row] > 0).nonzero().flatten().tolist()
            ids = targets[row, where].tolist()
            numbers = number_tokens([model.tokenizer.decode([t]) for t in ids])
            for position, is_number in zip(where, numbers):
                key = "numbers" if is_number else "format"
                sums[key] += float(per_token[row, position])
                counts[key] += 1
    total, tokens = sums["numbers"] + sums["format"], counts["numbers"] + counts["format"]
    return {"all": total / max(tokens, 1), "numbers": sums["numbers"] / max(counts["numbers"], 1),
            "format": sums["format"] / max(counts["format"], 1), "number_share": sums["numbers"] / max(total, 1e-9),
            "tokens": tokens, "number_count": counts["numbers"]}


BLIND_ANSWERS = {"pointing": "There are none.", "counting": "There are none."}


def blind_answers(seed: int = 0, size: int = 56, n: int = 500, cache_dir: str | Path | None = None) -> dict[str, str]:
    """The constant answer of each task's blind baseline: "There are none." for pointing and counting (the most
    common single answer, an eighth of the scenes); for clocks, charts and tables the most common answer of n
    TRAINING examples (ties: the first seen)."""
    from collections import Counter

    from .data import clocks, docs

    def mode(answers: Sequence[str]) -> str:
        return Counter(answers).most_common(1)[0][0]

    return {**BLIND_ANSWERS,
            "clocks": mode([ex.messages[0][0].answer for ex in clocks.clock_examples(n, seed, "train", size)]),
            "charts": mode([m[0].answer for ex in docs.chart_examples(n // 4, seed, "train", cache_dir=cache_dir)
                            for m in ex.messages]),
            "tables": mode([m[0].answer for ex in docs.table_examples(n // 4, seed, "train", cache_dir=cache_dir)
                            for m in ex.messages])}


def blind_baselines(sets: dict[str, list[Example]], answers: dict[str, str]) -> dict[str, dict[str, float]]:
    """Every task's metrics when the model gives the same answer to every example (tasks in ``answers`` only)."""
    return {task: score(task, sets[task], [answer] * len(sets[task])) for task, answer in answers.items()
            if task in sets}


def controls(model: MolmoLite, sets: dict[str, list[Example]], tasks: Sequence[str] = ("pointing", "clocks"),
             n: int = 64) -> dict[str, dict[str, float]]:
    """Answer loss with the true images and with shuffled ones, on the first n held-out examples of each task, and
    their ratio (>= 2 is the course's target of image dependence)."""
    out = {}
    for task in tasks:
        examples = list(sets[task][:n])
        true, shuffled = answer_losses(model, examples, task), answer_losses(model, shuffled_images(examples), task)
        out[task] = {"true_image_loss": true["all"], "shuffled_image_loss": shuffled["all"],
                     "ratio": shuffled["all"] / max(true["all"], 1e-9),
                     "true_number_loss": true["numbers"], "shuffled_number_loss": shuffled["numbers"],
                     "number_ratio": shuffled["numbers"] / max(true["numbers"], 1e-9),
                     "number_share": true["number_share"], "examples": len(examples)}
    return out


def headline(report: dict[str, Any]) -> dict[str, float]:
    """The course's targets, one number per task (pointing F1, counting exact, clocks within 3 min, QA accuracy)."""
    m, out = report["metrics"], {}
    for task, key in (("pointing", "f1"), ("counting", "exact"), ("clocks", "within_3_min"), ("charts", "accuracy"),
                      ("tables", "accuracy"), ("captions", "object_recall")):
        if task in m:
            out[f"{task} {key}"] = m[task][key]
    return out


def evaluate_with_controls(model: MolmoLite, sets: dict[str, list[Example]], tasks: Sequence[str] = TASKS,
                           blind: dict[str, str] | None = None, batch_size: int = 16) -> dict[str, Any]:
    """``evaluate`` plus the controls: "shuffled" (the same metrics with shuffled images), "blind" (the metrics of
    the constant answers ``blind``, default ``blind_answers()``) and "losses" (``controls``: the answer loss with true
    and shuffled images on pointing and clocks)."""
    report = evaluate(model, sets, tasks, batch_size)
    shuffled = evaluate(model, {t: shuffled_images(sets[t]) for t in tasks}, tasks, batch_size)
    blind = blind_answers() if blind is None else blind
    report.update(shuffled=shuffled["metrics"], shuffled_predictions=shuffled["predictions"],
                  blind=blind_baselines({t: sets[t] for t in tasks}, blind), blind_answers=blind,
                  losses=controls(model, sets, [t for t in ("pointing", "clocks") if t in tasks]))
    return report


def metrics_table(report: dict[str, Any]) -> str:
    """A markdown table of every metric, with the controls beside it when the report has them."""
    shuffled, blind = report.get("shuffled", {}), report.get("blind", {})
    controls_shown = bool(shuffled or blind)
    head = "| task | metric | model | shuffled images | blind | examples |" if controls_shown else \
        "| task | metric | value | examples |"
    lines = [head, "|---|---|---|---|---|---|" if controls_shown else "|---|---|---|---|"]
    for task, values in report["metrics"].items():
        for key, value in values.items():
            if controls_shown:
                cells = [f"{d[task][key]:.3f}" if key in d.get(task, {}) else "-" for d in (shuffled, blind)]
                lines.append(f"| {task} | {key} | {value:.3f} | {cells[0]} | {cells[1]} | {report['n'][task]} |")
            else:
                lines.append(f"| {task} | {key} | {value:.3f} | {report['n'][task]} |")
    for task, loss in report.get("losses", {}).items():
        lines.append(f"| {task} | answer loss (ratio {loss['ratio']:.2f}) | {loss['true_image_loss']:.3f} | "
                     f"{loss['shuffled_image_loss']:.3f} | - | {loss.get('examples', '-')} |")
        if "number_ratio" in loss:  # the values only (coordinates, counts, times): the part the image can decide
            lines.append(f"| {task} | answer loss, values only (ratio {loss['number_ratio']:.2f}, "
                         f"{loss['number_share']:.0%} of the loss) | {loss['true_number_loss']:.3f} | "
                         f"{loss['shuffled_number_loss']:.3f} | - | {loss.get('examples', '-')} |")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | Path, extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, **(extra or {})}, indent=1))
    return path


def plot_predictions(sets: dict[str, list[Example]], report: dict[str, Any], n: int = 4, path: str | Path | None = None):
    """Rows: pointing (predicted points drawn, ground truth as rings), counting, clocks; n held-out images each."""
    import matplotlib.pyplot as plt

    rows = [t for t in ("pointing", "counting", "clocks") if t in report["predictions"]]
    fig, axes = plt.subplots(len(rows), n, figsize=(3 * n, 3.2 * len(rows)), squeeze=False)
    for r, task in enumerate(rows):
        for c in range(n):
            ax, ex, answer = axes[r][c], sets[task][c], report["predictions"][task][c]
            if task in ("pointing", "counting"):
                draw_points(ex.image, [(p.x, p.y) for p in parse_points(answer)], ax=ax)
                gt = np.asarray(ex.meta["points"], float).reshape(-1, 2)
                h, w = ex.image.shape[:2]
                ax.scatter(gt[:, 0] / 100 * w, gt[:, 1] / 100 * h, s=90, facecolors="none", edgecolors="white")
                truth = ex.meta["label"] if task == "pointing" else f"{ex.meta['label']}: {ex.meta['count']}"
                said = answer if task == "counting" else f"{len(parse_points(answer))} points"
                ax.set_title(f"{truth}\n{said[-28:]}", fontsize=8)
            else:
                ax.imshow(ex.image)
                ax.set_title(f"truth {ex.messages[0][0].answer}\nsaid {answer[:20]}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig

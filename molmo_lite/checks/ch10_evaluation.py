"""Chapter 10 exercise checks: the evaluation metrics, compared with molmo_lite.evaluate."""

from __future__ import annotations

import random
from typing import Any

from molmo_lite.grading_core import _compare_on_cases, _student_function, check


def _equal(got: Any, expected: Any) -> str | None:
    if isinstance(expected, tuple):
        try:
            same = tuple(float(g) for g in got) == tuple(float(e) for e in expected)
        except (TypeError, ValueError):
            same = False
    elif isinstance(expected, float):
        try:
            same = abs(float(got) - expected) < 1e-9
        except (TypeError, ValueError):
            same = False
    else:
        same = got == expected
    return None if same else f"returned {got!r}, expected {expected!r}"


@check("10_evaluation", "clock_close")
def check_clock_close(namespace: dict) -> None:
    """clock_close(answer, hour, minute) equals molmo_lite.evaluate.clock_scores on 80 answers (exact, a few minutes
    off, across 12 o'clock, the wrong hour, seconds, no time at all)."""
    from molmo_lite.evaluate import clock_scores

    rng = random.Random(101)
    cases = []
    for _ in range(80):
        hour, minute = rng.randint(1, 12), rng.randint(0, 59)
        total = (hour % 12) * 60 + minute + rng.choice((0, 1, -2, 3, -3, 4, 7, 60, -60, 719))
        h, m = divmod(total % 720, 60)
        h = h or 12
        answer = rng.choice((f"{h}:{m:02d}", f"It is {h}:{m:02d}.", f"{h}:{m:02d}:{rng.randint(0, 59):02d}",
                             "I cannot tell", ""))
        cases.append((answer, hour, minute))
    student = _student_function(namespace, "clock_close")
    _compare_on_cases("clock_close", ("answer", "hour", "minute"), student, clock_scores, cases, _equal)


@check("10_evaluation", "normalize_answer")
def check_normalize_answer(namespace: dict) -> None:
    """normalize_answer(text) equals molmo_lite.evaluate.normalize_answer on 40 answers."""
    from molmo_lite.evaluate import normalize_answer

    words = ("Lions", "2020", " the Red bar ", "42.", "Oslo .", "  Many\n spaces  here. ", "A.B.", "")
    rng = random.Random(102)
    cases = [(rng.choice(words) + rng.choice(("", ".", " ", "\t")),) for _ in range(40)]
    student = _student_function(namespace, "normalize_answer")
    _compare_on_cases("normalize_answer", ("text",), student, normalize_answer, cases, _equal)


@check("10_evaluation", "caption_recall")
def check_caption_recall(namespace: dict) -> None:
    """caption_recall(caption, objects) equals molmo_lite.evaluate.caption_recall on 30 synthetic scenes and
    captions (the true caption, a truncated one, another scene's)."""
    from molmo_lite.data import synthetic
    from molmo_lite.evaluate import caption_recall

    examples = synthetic.caption_examples(30, seed=7, split="heldout")
    rng = random.Random(103)
    cases = []
    for i, ex in enumerate(examples):
        caption = ex.messages[0][0].answer
        caption = rng.choice((caption, caption[: len(caption) // 3], examples[(i + 1) % 30].messages[0][0].answer,
                              caption.upper()))
        cases.append((caption, ex.meta["objects"]))
    student = _student_function(namespace, "caption_recall")
    _compare_on_cases("caption_recall", ("caption", "objects"), student, caption_recall, cases, _equal)


@check("10_evaluation", "blind_scores")
def check_blind_scores(namespace: dict) -> None:
    """blind_scores(counts) equals the pointing F1 and counting exact of the constant answer "There are none."
    (molmo_lite.evaluate.blind_baselines) on 6 held-out sets of pointing scenes."""
    from molmo_lite.data import synthetic
    from molmo_lite.evaluate import BLIND_ANSWERS, blind_baselines

    student = _student_function(namespace, "blind_scores")
    for seed, n in ((0, 40), (1, 25), (2, 8), (3, 1), (4, 60), (5, 16)):
        scenes = synthetic.pointing_examples(n, seed, "heldout", 56, max_count=10)
        expected = blind_baselines({"pointing": scenes, "counting": scenes}, BLIND_ANSWERS)
        got = student([ex.meta["count"] for ex in scenes])
        want = (expected["pointing"]["f1"], expected["counting"]["exact"])
        problem = _equal(tuple(got) if isinstance(got, (tuple, list)) else got, want)
        if problem:
            raise AssertionError(f"blind_scores on {n} scenes {problem} (an empty answer on an empty scene scores 1, "
                                 "on any other scene 0)")


@check("10_evaluation", "shuffle_images")
def check_shuffle_images(namespace: dict) -> None:
    """shuffle_images(examples, shift) gives example i the image of example (i + shift) mod n and keeps its text,
    as molmo_lite.evaluate.shuffled_images, for shifts 1, 3 and n + 1."""
    from molmo_lite.data import synthetic
    from molmo_lite.evaluate import shuffled_images

    student = _student_function(namespace, "shuffle_images")
    scenes = synthetic.pointing_examples(7, 0, "heldout", 56, max_count=3)
    for shift in (1, 3, 8):
        got, expected = student(scenes, shift), shuffled_images(scenes, shift)
        if len(got) != len(expected):
            raise AssertionError(f"shift {shift}: {len(got)} examples, expected {len(expected)}")
        for i, (g, e) in enumerate(zip(got, expected)):
            if g.image is not e.image or g.messages is not scenes[i].messages:
                raise AssertionError(f"shift {shift}: example {i} should have the image of example "
                                     f"{(i + shift) % len(scenes)} and its own messages")

"""The text-scene lines of the course corpus (kind "scene"): every answer is re-derived here from the objects the line
itself lists, with our own filters, and compared with what ``molmo_lite.pointing`` reads back from the answer."""

from __future__ import annotations

import re

import numpy as np
import pytest

from molmo_lite.data.corpus import KINDS, course_corpus, scene_line, scene_text
from molmo_lite.data.synthetic import COLOURS, SHAPES, SceneObject
from molmo_lite.pointing import parse_count, parse_points

LINE = re.compile(r" User: (?:(pointing|point_count): )?(.+?) Scene: (.+?) Assistant: (.+)")
OBJECT = re.compile(r"(\w+) (\w+) (\d+\.\d) (\d+\.\d)")


def read_scene(text: str) -> list[tuple[str, str, float, float]]:
    if text == "nothing":
        return []
    objects = []
    for part in text.split("; "):
        colour, shape, x, y = OBJECT.fullmatch(part).groups()
        assert colour in COLOURS and shape in SHAPES
        objects.append((colour, shape, float(x), float(y)))
    return objects


def selects(label: str, obj: tuple[str, str, float, float]) -> bool:
    """'red circles' / 'red circle', 'circles', 'red shapes': does obj belong to the class the label names?"""
    words = label.split()
    colour = words[0] if len(words) == 2 else None
    shape = words[-1].removesuffix("s")
    return (colour is None or obj[0] == colour) and (shape == "shape" or obj[1] == shape)


def xy(points) -> list[tuple[float, float]]:
    return [(p.x, p.y) for p in points]


def test_scene_answers_agree_with_molmo_lite_pointing_on_the_objects_listed():
    kinds = set()
    for line in course_corpus(300, seed=5, kinds=("scene",)):
        _, question, scene, answer = LINE.fullmatch(line).groups()
        objects = read_scene(scene)
        cell = 100 / 8  # listed row by row of an 8 x 8 grid, then by x: the order of the image tokens
        order = [(min(7, int(o[3] // cell)), o[2]) for o in objects]
        assert order == sorted(order)
        if m := re.fullmatch(r"Point to the (\w+(?: \w+){0,2})\.", question):
            words = m.group(1).split()
            if words[0] in ("leftmost", "rightmost", "topmost", "bottommost"):
                kinds.add("extreme")
                hits = [o for o in objects if selects(" ".join(words[1:]), o)]
                axis, sign = {"leftmost": (2, 1), "rightmost": (2, -1), "topmost": (3, 1),
                              "bottommost": (3, -1)}[words[0]]
                expected = [min(hits, key=lambda o: sign * o[axis])[2:]] if hits else []
            else:
                kinds.add("point")
                expected = sorted(o[2:] for o in objects if selects(m.group(1), o))
            assert xy(parse_points(answer)) == expected, line
            assert (answer == "There are none.") == (not expected)
        elif m := re.fullmatch(r"How many (\w+(?: \w+)?) are there\?", question):
            if m.group(1) == "shapes" and not answer.startswith(("Counting", "There")):
                kinds.add("total")
                assert int(answer) == len(objects)
                continue
            kinds.add("count")
            expected = sorted(o[2:] for o in objects if selects(m.group(1), o))
            assert parse_count(answer) == len(expected) and xy(parse_points(answer)) == expected, line
        elif m := re.fullmatch(r"Which shape is nearest to (\d+\.\d) (\d+\.\d)\?", question):
            kinds.add("nearest")
            x, y = float(m.group(1)), float(m.group(2))
            near = min(objects, key=lambda o: (o[2] - x) ** 2 + (o[3] - y) ** 2)
            assert answer == f"the {near[0]} {near[1]}"
        else:
            pytest.fail(f"a question the test does not know: {question!r}")
    assert kinds == {"point", "count", "extreme", "total", "nearest"}


def test_scene_text_lists_objects_in_image_token_order_and_the_molmo_layout_puts_the_scene_first():
    objects = [SceneObject("circle", "red", 70.0, 90.0, 5), SceneObject("square", "blue", 90.0, 3.0, 5),
               SceneObject("triangle", "green", 10.0, 5.0, 5)]
    assert scene_text(objects) == " Scene: green triangle 10.0 5.0; blue square 90.0 3.0; red circle 70.0 90.0"
    assert scene_text([]) == " Scene: nothing"
    line = scene_line(np.random.default_rng(1), question_first=False)
    assert line.startswith(" Scene: ") and line.index(" User: ") < line.index(" Assistant: ")


def test_the_default_corpus_has_no_scene_lines_and_is_unchanged_by_the_extra_kind():
    assert not any(" Scene: " in line for line in course_corpus(300, seed=2))
    assert course_corpus(50, seed=2) == course_corpus(50, seed=2, kinds=KINDS)
    mixed = course_corpus(300, seed=2, kinds=KINDS + ("scene",))
    assert 50 < sum(" Scene: " in line for line in mixed) < 150  # weight 0.5 of 1.5


def test_scene_text_scores_score_perfect_answers_1_and_blind_answers_as_the_empty_scenes(monkeypatch):
    from molmo_lite import lm_pretrain
    from molmo_lite.data.synthetic import pointing_example

    rng = np.random.default_rng(7)
    examples = [pointing_example(rng, render=False) for _ in range(12)]
    truth = [ex.messages[k][0].answer for ex in examples for k in (0, 1)]  # pointing, counting, as the prompts
    monkeypatch.setattr(lm_pretrain, "complete", lambda model, tok, prompts, max_new_tokens: truth[:len(prompts)])
    perfect = lm_pretrain.scene_text_scores(None, None, n=12, seed=7)
    assert perfect["pointing_f1"] == pytest.approx(1.0) and perfect["counting_exact"] == 1.0
    monkeypatch.setattr(lm_pretrain, "complete", lambda model, tok, prompts, max_new_tokens: ["There are none."] *
                        len(prompts))
    blind = lm_pretrain.scene_text_scores(None, None, n=12, seed=7)
    empty = np.mean([ex.meta["count"] == 0 for ex in examples])
    assert blind["pointing_f1"] == pytest.approx(empty) and blind["counting_exact"] == pytest.approx(empty)

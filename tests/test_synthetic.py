"""Synthetic PixMo-like scenes: deterministic, points on the objects, counts equal to the points, answers true."""

from __future__ import annotations

import numpy as np
import pytest

from molmo_lite.data.synthetic import (
    COLOURS,
    SHAPES,
    Query,
    caption_examples,
    pointing_examples,
    qa_examples,
    render_scene,
)
from molmo_lite.pointing import parse_count, parse_points

GENERATORS = (pointing_examples, caption_examples, qa_examples)


def nearest_colour(pixel: np.ndarray, background: np.ndarray) -> str:
    """The palette colour (or 'background') closest to an RGB pixel."""
    palette = {**COLOURS, "background": tuple(int(v) for v in background)}
    return min(palette, key=lambda name: float(np.sum((np.asarray(palette[name], float) - pixel) ** 2)))


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.__name__)
def test_same_seed_same_bytes_other_seed_or_split_different(generator):
    a, b = generator(6, seed=1), generator(6, seed=1)
    assert all(x.image.tobytes() == y.image.tobytes() and x.messages == y.messages for x, y in zip(a, b))
    for other in (generator(6, seed=2), generator(6, seed=1, split="heldout")):
        assert [x.image.tobytes() for x in a] != [y.image.tobytes() for y in other]


@pytest.mark.parametrize("size", [56, 112])
def test_every_point_lands_on_its_object(size):
    for example in pointing_examples(60, seed=3, size=size):
        image = example.image.astype(float)
        background = image[0, 0]  # objects never touch the corner (they stay 1% inside)
        for obj in example.meta["objects"]:
            col = min(size - 1, int(obj.x / 100 * size))
            row = min(size - 1, int(obj.y / 100 * size))
            assert nearest_colour(image[row, col], background) == obj.colour, (obj, image[row, col])


def test_counts_equal_the_points_and_cover_zero_to_fifteen():
    examples = pointing_examples(300, seed=4)
    counts = []
    for ex in examples:
        matching = [o for o in ex.meta["objects"] if (o.x, o.y) in set(ex.meta["points"])]
        assert len(matching) == ex.meta["count"] == len(ex.meta["points"])
        point_text, count_text = ex.messages[0][0].answer, ex.messages[1][0].answer
        parsed = sorted((p.x, p.y) for p in parse_points(point_text))
        assert parsed == sorted(ex.meta["points"])  # the text says exactly the ground truth
        assert parse_count(count_text) == ex.meta["count"]
        counts.append(ex.meta["count"])
    assert min(counts) == 0 and max(counts) == 15 and len(set(counts)) == 16


def test_answers_of_scene_questions_are_true():
    for ex in qa_examples(100, seed=5):
        objects = ex.meta["objects"]
        for (message,) in ex.messages:
            q, a = message.question, message.answer
            if q.startswith("How many shapes"):
                assert str(len(objects)) in a
            elif q.startswith("Which shape is furthest to the left"):
                o = min(objects, key=lambda o: o.x)
                assert a == f"The {o.colour} {o.shape}."
            elif q.startswith("Is there anything"):
                colour = q.split()[3]
                assert all(o.colour != colour for o in objects) and a.startswith("No")
            elif q.startswith("What colour is the"):
                shape = q.split()[4]
                assert any(o.shape == shape and o.colour in a for o in objects)


def test_captions_mention_every_object_and_the_total():
    for ex in caption_examples(50, seed=6):
        caption, transcript = ex.messages[0][0].answer, ex.messages[1][0].answer
        for o in ex.meta["objects"]:
            assert o.colour in caption and o.shape in caption and o.region in transcript


def test_textures_are_drawn():
    from molmo_lite.data.synthetic import SceneObject

    size = 64
    solid, outlined, shadowed = (render_scene([SceneObject("circle", "red", 50, 50, 25, t)], size=size)
                                 for t in ("solid", "outlined", "shadowed"))
    # radius 25% of 64 = 16 px around (32, 32): column 17 is on the rim
    assert outlined[32, 17].astype(float).sum() < solid[32, 17].astype(float).sum() - 150  # a dark outline
    # the shadow: the same circle moved 4 px down-right covers (36, 50), which the circle itself does not
    assert shadowed[36, 50].astype(float).sum() < solid[36, 50].astype(float).sum() - 100


def test_the_second_renderer_draws_the_same_objects_another_way():
    """The shift check's renderer: the centre of every object shows its colour (jittered by at most 20 per channel),
    each shape covers the pixels chapter 07's renderer covers (PIL at 4x), and the background is one grey level or
    noisy; deterministic from the seed; 1-6 targets, 112 px."""
    from molmo_lite.data.synthetic import SceneObject, render_scene_shifted, shifted_pointing_examples

    examples = shifted_pointing_examples(40, seed=2)
    assert {ex.meta["background"] for ex in examples} == {"plain", "noisy"}
    assert all(1 <= ex.meta["count"] <= 6 and ex.image.shape == (112, 112, 3) for ex in examples)
    for ex in examples:
        for obj in ex.meta["objects"]:
            pixel = ex.image[int(obj.y / 100 * 112), int(obj.x / 100 * 112)].astype(int)
            assert np.abs(pixel - np.array(COLOURS[obj.colour])).max() <= 20, (obj, pixel)
        if ex.meta["background"] == "plain":  # the most frequent pixel: one grey level
            values, counts = np.unique(ex.image.reshape(-1, 3), axis=0, return_counts=True)
            r, g, b = values[counts.argmax()]
            assert r == g == b and 40 <= r <= 200
        else:
            assert ex.image[:4, :4].astype(float).std() > 10  # noise even in a corner without objects
    assert [x.image.tobytes() for x in shifted_pointing_examples(3, seed=2)] == [x.image.tobytes()
                                                                                 for x in examples[:3]]
    red = np.array(COLOURS["red"])
    for shape in ("circle", "square", "triangle"):
        obj = [SceneObject(shape, "red", 50, 50, 30)]
        ours = np.abs(render_scene_shifted(obj, 112, np.random.default_rng(0)).astype(int) - red).max(-1) <= 40
        pil = np.abs(render_scene(obj, 112, (128, 128, 128)).astype(int) - red).max(-1) <= 40
        assert (ours & pil).sum() / (ours | pil).sum() > 0.95, shape


def test_a_query_is_read_back_from_its_label():
    """Query.from_label gives back every query random_query can draw ('red circles', 'circles', 'red shapes');
    words that name no colour or shape are refused."""
    for colour in (None, *COLOURS):
        for shape in (None, *SHAPES):
            query = Query(colour, shape)
            assert Query.from_label(query.label) == query
    for bad in ("red", "pink circles", "red blue circles", "circle"):
        with pytest.raises(ValueError):
            Query.from_label(bad)

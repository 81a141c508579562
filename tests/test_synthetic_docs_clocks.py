"""PixMo-Clocks- and PixMo-Docs-like generators: the same seed gives the same bytes, the held-out split differs, the
clocks show the time their answer says (read back from the pixels), the charts draw their data (bar heights and pie
areas measured by colour), every answer is recomputed here from meta["data"], and the render cache is used."""

from __future__ import annotations

import itertools
import re
import time

import matplotlib
import numpy as np
import pytest

from molmo_lite.data import docs
from molmo_lite.data.clocks import FACES, clock_examples, hand_angles, read_clock, render_clock
from molmo_lite.data.docs import CHART_KINDS, chart_examples, table_examples

CLOCK_ANSWER = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def same_examples(a, b) -> bool:
    """Image bytes, every message and meta equal."""
    return len(a) == len(b) and all(
        x.image.dtype == y.image.dtype and x.image.tobytes() == y.image.tobytes() and x.messages == y.messages
        and x.meta == y.meta for x, y in zip(a, b))


def any_image_differs(a, b) -> bool:
    return any(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, b))


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def colour_mask(image: np.ndarray, colour, tolerance: int = 40) -> np.ndarray:
    """Pixels within ``tolerance`` of a colour on every channel: bool [H, W]."""
    return np.abs(image.astype(int) - np.asarray(colour)).max(axis=-1) <= tolerance


# ---------------------------------------------------------------------------------------------------------------------
# Clocks
# ---------------------------------------------------------------------------------------------------------------------


def test_clock_examples_are_deterministic_and_the_heldout_split_differs():
    first = clock_examples(20, seed=0)
    assert same_examples(first, clock_examples(20, seed=0))
    assert same_examples(first[:5], clock_examples(5, seed=0))
    assert all(e.image.shape == (56, 56, 3) and e.image.dtype == np.uint8 for e in first)
    for other in (clock_examples(20, seed=1), clock_examples(20, seed=0, split="heldout")):
        assert any_image_differs(first, other)
        assert [e.messages for e in first] != [e.messages for e in other]


def test_hand_angles_follow_the_clock():
    assert hand_angles(3, 0) == (90.0, 0.0, None)
    assert hand_angles(12, 30) == (15.0, 180.0, None)  # the hour hand halfway from 12 to 1
    assert hand_angles(9, 45, 30) == pytest.approx((9.75 * 30 + 30 / 3600 * 30, 45.5 * 6, 180.0))


def minutes_past_twelve(hour: int, minute: float) -> float:
    return (hour % 12) * 60 + minute


def clock_error(read: tuple[int, float], hour: int, minute: int, second: int | None) -> float:
    """How far a reading is from the true time, in minutes, around the 12-hour dial."""
    true = minutes_past_twelve(hour, minute + (second or 0) / 60)
    return abs((minutes_past_twelve(*read) - true + 360) % 720 - 360)


@pytest.mark.parametrize("hour, minute", [(3, 0), (9, 45), (12, 0), (6, 30), (11, 59), (1, 5), (7, 22)])
def test_read_clock_on_hand_picked_times(hour, minute):
    """Includes the hands on top of each other (12:00, 1:05) and nearly so (6:30, 11:59)."""
    for face in FACES:
        assert clock_error(read_clock(render_clock(hour, minute, size=224, face=face)), hour, minute, None) <= 0.5


@pytest.mark.parametrize("size, tolerance", [(224, 0.5), (56, 1.5)])
def test_clock_answers_match_the_drawn_hands(size, tolerance):
    """The answer text, parsed here, against the hands read from the pixels: within half a minute at 224 px, a
    minute and a half at 56 px (hands 2 px wide); the hour must be right either way."""
    examples = clock_examples(30, seed=11, size=size, seconds_probability=0.5)
    assert {e.meta["second"] is None for e in examples} == {True, False}
    for e in examples:
        [[message]] = e.messages
        assert message.style == "clocks" and message.question.endswith(("?", "."))
        hour, minute, second = CLOCK_ANSWER.fullmatch(message.answer).groups()
        hour, minute, second = int(hour), int(minute), None if second is None else int(second)
        assert (hour, minute, second) == (e.meta["hour"], e.meta["minute"], e.meta["second"])
        assert 1 <= hour <= 12 and 0 <= minute < 60 and not message.answer.startswith("0")
        read = read_clock(e.image, seconds=FACES[e.meta["face"]].seconds)
        assert clock_error(read, hour, minute, second) <= tolerance, (message.answer, read, e.meta["face"])


def test_read_clock_tells_times_apart():
    """The check above is not vacuous: a clock read against the answer of the next example fails."""
    examples = clock_examples(30, seed=12, size=224)
    misses = 0
    for e, other in itertools.pairwise(examples):
        read = read_clock(e.image, seconds=FACES[e.meta["face"]].seconds)
        misses += clock_error(read, other.meta["hour"], other.meta["minute"], other.meta["second"]) > 0.5
    assert misses == len(examples) - 1


def test_render_clock_rejects_bad_times():
    for bad in [(0, 10), (13, 0), (3, 60), (3, -1)]:
        with pytest.raises(ValueError):
            render_clock(*bad)
    with pytest.raises(ValueError):
        render_clock(3, 0, second=60)


# ---------------------------------------------------------------------------------------------------------------------
# Charts and tables: determinism
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [chart_examples, table_examples])
def test_docs_examples_are_deterministic_and_the_heldout_split_differs(make):
    first = make(6, seed=0)
    assert same_examples(first, make(6, seed=0))
    assert all(e.image.shape == (docs.DEFAULT_SIZE, docs.DEFAULT_SIZE, 3) and e.image.dtype == np.uint8
               for e in first)
    for other in (make(6, seed=1), make(6, seed=0, split="heldout")):
        assert any_image_differs(first, other)
        assert [e.meta for e in first] != [e.meta for e in other]


def test_docs_rendering_ignores_the_users_matplotlib_settings():
    expected = chart_examples(4, seed=3, size=112) + table_examples(2, seed=3, size=112)
    with matplotlib.rc_context({"font.size": 20, "lines.linewidth": 6, "axes.facecolor": "black",
                                "font.family": "serif", "text.hinting": "auto"}):
        again = chart_examples(4, seed=3, size=112) + table_examples(2, seed=3, size=112)
    assert same_examples(expected, again)


# ---------------------------------------------------------------------------------------------------------------------
# Charts and tables: answers recomputed from meta["data"] (not with the generator's question code)
# ---------------------------------------------------------------------------------------------------------------------


def chart_oracle(question: str, data: dict[str, int], kind: str) -> str:
    """The answer to a chart question, from the data alone."""
    top, bottom = max(data, key=data.get), min(data, key=data.get)
    fixed = {"Which category has the highest value?": top, "Which bar is the tallest?": top,
             "Which bar is the longest?": top, "Which slice is the largest?": top,
             "Where does the line reach its highest value?": top, "Which category has the lowest value?": bottom,
             "How many categories are there?": str(len(data)), "How many bars are there?": str(len(data)),
             "How many slices are there?": str(len(data)), "How many points does the line have?": str(len(data)),
             "What is the sum of all values?": str(sum(data.values()))}
    if question in fixed:
        assert not question.startswith("How many bars") or kind in ("bar", "hbar")
        assert not question.startswith("How many slices") or kind == "pie"
        return fixed[question]
    if m := re.fullmatch(r"What is the value of (.+)\?|How much is (.+)\?", question):
        return str(data[m.group(1) or m.group(2)])
    if m := re.fullmatch(r"What is the difference between (.+) and (.+)\?", question):
        return str(abs(data[m.group(1)] - data[m.group(2)]))
    if m := re.fullmatch(r"What is the total of (.+) and (.+)\?", question):
        return str(data[m.group(1)] + data[m.group(2)])
    raise AssertionError(f"unexpected chart question {question!r}")


def table_oracle(question: str, rows: dict[str, dict[str, int]], header: str) -> str:
    """The answer to a table question, from the rows alone."""
    if question == "How many rows does the table have?" or re.fullmatch(r"How many \w+ are listed\?", question):
        return str(len(rows))
    if m := re.fullmatch(r"What does the (\w+) column say for (\w+)\?|What is the value of (\w+) for (\w+)\?",
                         question):
        col, row = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        return str(rows[row][col])
    if m := re.fullmatch(r"Which (\w+) has the (highest|lowest) (\w+)\?", question):
        assert m.group(1) == header.lower()
        pick = max if m.group(2) == "highest" else min
        return pick(rows, key=lambda r: rows[r][m.group(3)])
    if m := re.fullmatch(r"What is the total (\w+)\?|What is the sum of the (\w+) column\?", question):
        col = m.group(1) or m.group(2)
        return str(sum(r[col] for r in rows.values()))
    if m := re.fullmatch(r"What is the difference in (\w+) between (\w+) and (\w+)\?", question):
        col, a, b = m.groups()
        return str(abs(rows[a][col] - rows[b][col]))
    raise AssertionError(f"unexpected table question {question!r}")


def test_chart_answers_follow_from_the_data():
    examples = [e for seed in range(4) for e in chart_examples(10, seed=seed, size=112, questions=7)]
    assert {e.meta["kind"] for e in examples} == set(CHART_KINDS)
    for e in examples:
        data = e.meta["data"]
        assert 3 <= len(data) <= 6 and len(set(data.values())) == len(data)  # distinct: one highest, one lowest
        assert all(isinstance(v, int) and v > 0 for v in data.values())
        assert e.n_annotations == 7 and all(len(a) == 1 for a in e.messages)
        assert len({a[0].question for a in e.messages}) == 7
        for (message,) in e.messages:
            assert message.style == "pixmo_docs_charts"
            assert message.answer == chart_oracle(message.question, data, e.meta["kind"]), message


def test_table_answers_follow_from_the_data():
    examples = [e for seed in range(4) for e in table_examples(8, seed=seed, size=112, questions=6)]
    for e in examples:
        rows, columns = e.meta["data"], e.meta["columns"]
        assert e.meta["kind"] == "table" and 3 <= len(rows) <= 5 and 2 <= len(columns) <= 4
        assert all(list(r) == columns for r in rows.values())
        assert all(len({r[c] for r in rows.values()}) == len(rows) for c in columns)  # distinct in each column
        assert e.n_annotations == 6
        for (message,) in e.messages:
            assert message.style == "pixmo_docs_tables"
            assert message.answer == table_oracle(message.question, rows, e.meta["row_header"]), message


def test_fewer_questions_are_distinct_kinds():
    for e in chart_examples(5, seed=9, size=112, questions=3) + table_examples(5, seed=9, size=112, questions=3):
        assert e.n_annotations == 3 and len({a[0].question for a in e.messages}) == 3


# ---------------------------------------------------------------------------------------------------------------------
# Charts: the pixels show the data
# ---------------------------------------------------------------------------------------------------------------------


def bar_lengths(mask: np.ndarray, axis: int) -> list[int]:
    """Runs of bar-coloured columns (axis=0: vertical bars, left to right) or rows (axis=1: horizontal bars, top to
    bottom), and each run's longest extent in pixels."""
    counts = mask.sum(axis=axis)
    lengths, run = [], []
    for c in list(counts) + [0]:
        if c:
            run.append(c)
        elif run:
            lengths.append(int(max(run)))
            run = []
    return lengths


@pytest.mark.parametrize("kind, axis", [("bar", 0), ("hbar", 1)])
def test_bar_lengths_in_the_pixels_match_the_data(kind, axis):
    """Measured by colour over several seeds: one bar per category in order, lengths proportional to the values
    (to 1.5 px), and the longest bar is the answer to "highest"."""
    for seed in range(5):
        for e in chart_examples(3, seed=seed, kinds=(kind,), questions=7):
            data = e.meta["data"]
            assert len(set(e.meta["colours"])) == 1
            lengths = bar_lengths(colour_mask(e.image, rgb(e.meta["colours"][0])), axis)
            assert len(lengths) == len(data), (lengths, data)
            values = np.array(list(data.values()))
            scale = max(lengths) / values.max()
            assert np.abs(np.array(lengths) - values * scale).max() <= 1.5, (lengths, data)
            tallest = list(data)[int(np.argmax(lengths))]
            highest = [a[0].answer for a in e.messages
                       if a[0].question in ("Which category has the highest value?", "Which bar is the tallest?",
                                            "Which bar is the longest?")]
            assert highest == [tallest]


def test_pie_slice_areas_match_the_data():
    for seed in range(4):
        for e in chart_examples(3, seed=seed, kinds=("pie",)):
            data = e.meta["data"]
            areas = np.array([colour_mask(e.image, rgb(c)).sum() for c in e.meta["colours"]], dtype=float)
            shares = np.array(list(data.values())) / sum(data.values())
            assert np.abs(areas / areas.sum() - shares).max() < 0.03, (areas, data)


# ---------------------------------------------------------------------------------------------------------------------
# The render cache
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, renderer", [(chart_examples, "render_chart"), (table_examples, "render_table")])
def test_cache_returns_the_same_images_without_rendering(make, renderer, tmp_path, monkeypatch):
    uncached = make(5, seed=4)
    start = time.perf_counter()
    first = make(5, seed=4, cache_dir=tmp_path)
    first_time = time.perf_counter() - start
    assert same_examples(uncached, first)
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 5

    calls = []
    real = getattr(docs, renderer)
    monkeypatch.setattr(docs, renderer, lambda *args, **kwargs: calls.append(args) or real(*args, **kwargs))
    start = time.perf_counter()
    second = make(5, seed=4, cache_dir=tmp_path)
    assert calls == [] and same_examples(uncached, second)
    assert time.perf_counter() - start < first_time

    make(5, seed=4, size=96, cache_dir=tmp_path)  # another size is another picture
    assert len(calls) == 5 and len(list(tmp_path.glob("*.png"))) == 10

    files[2].write_bytes(b"not a png")  # a damaged file is drawn again and replaced
    calls.clear()
    assert same_examples(uncached, make(5, seed=4, cache_dir=tmp_path))
    assert len(calls) == 1 and not list(tmp_path.glob("*.tmp"))
    calls.clear()
    make(5, seed=4, cache_dir=tmp_path)
    assert calls == []


def test_cache_key_changes_with_what_the_picture_shows(tmp_path):
    """Same (seed, split, index, size) but other chart kinds: other files, never a stale picture."""
    bars = chart_examples(3, seed=5, size=96, kinds=("bar",), cache_dir=tmp_path)
    pies = chart_examples(3, seed=5, size=96, kinds=("pie",), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.png"))) == 6
    assert same_examples(pies, chart_examples(3, seed=5, size=96, kinds=("pie",)))
    assert any_image_differs(bars, pies)


def test_the_clock_score_counts_the_hour_on_a_twelve_hour_dial_whatever_the_minutes():
    from molmo_lite.evaluate import score

    examples = clock_examples(4, 0, "heldout", 56)
    hours = [ex.meta["hour"] for ex in examples]
    answers = [f"{hours[0]}:{(examples[0].meta['minute'] + 30) % 60:02d}",  # hour right, minutes far off
               f"{hours[1] % 12 + 12}:{(examples[1].meta['minute'] + 1) % 60:02d}",  # the hour on a 24-hour dial
               f"{hours[2] % 12 + 1}:{examples[2].meta['minute']:02d}",     # the minutes right, the hour off
               "half past"]                                                   # no time at all
    got = score("clocks", examples, answers)
    assert got["hour"] == 0.5 and got["exact"] == 0.0

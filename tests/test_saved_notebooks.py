"""What the committed notebooks say about the exercises agrees with the grader's registry (the checks modules), so
that the lists a student reads cannot drift from what is graded."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from molmo_lite.grading import checks_for

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*_exercises.ipynb"))
COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def chapter_of(path: Path) -> str:
    return path.stem.removesuffix("_exercises")


def test_chapter_00_table_of_graded_functions_is_the_checks_registry():
    nb = nbformat.read(ROOT / "notebooks" / "00_start_here.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "checks_for" in c.source]
    assert "NBVAL_CHECK_OUTPUT" in cell.source  # nbval re-checks the saved table against a fresh run too
    text = "".join(o.get("text", "") for o in cell.outputs)
    rows = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    for path in SOLUTIONS:
        number = chapter_of(path)[:2]
        graded = ", ".join(checks_for(chapter_of(path)))
        assert rows[number].endswith(graded), f"chapter 00's saved table is stale for {number}: re-run it"


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_each_exercise_notebook_lists_the_functions_its_checks_grade(path):
    intro = nbformat.read(path, as_version=4).cells[0].source
    listed = [name for item in re.findall(r"^\s*\d+\.\s+(.*)$", intro, re.M)
              for name in re.findall(r"`(\w+)`", item.split(":")[0])]
    assert listed == list(checks_for(chapter_of(path)))
    said = re.search(r"\b(Two|Three|Four|Five|Six) (?:pieces|exercises|functions)", intro)
    if said:
        assert COUNT_WORDS[said.group(1).lower()] == len(listed), said.group(0)


BAR = re.compile(r"(\d+)%\|[^|\n]*\|\s*(\d+)/(\d+)")  # tqdm's "  0%|          | 0/130"
SAVED = sorted((ROOT / "notebooks").glob("*.ipynb")) + SOLUTIONS


def shown_text(output: dict) -> str:
    """What a reader of the saved notebook sees of one output: a widget's text/plain fallback (no widget runs on
    the web), a stream's text with each carriage return overwriting its line, as a terminal shows it."""
    if output.get("output_type") == "stream":
        return "\n".join(line.split("\r")[-1] for line in output.get("text", "").split("\n"))
    return output.get("data", {}).get("text/plain", "")


def short_bars(path: Path) -> list[str]:
    found = []
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        for output in cell.get("outputs", []):
            for m in BAR.finditer(shown_text(output)):
                if int(m.group(2)) < int(m.group(3)):
                    found.append(f"cell {i}: {m.group(0)!r}")
    return found


def test_the_bar_pattern_finds_a_widget_fallback_and_an_overwritten_stream():
    widget = {"output_type": "display_data", "data": {"text/plain": "train:   0%|          | 0/130 [00:00<?, ?it/s]"}}
    stream = {"output_type": "stream", "text": "train:  50%|##   | 65/130\rtrain: 100%|#####| 130/130\n"}
    assert BAR.search(shown_text(widget)).group(2) == "0"
    assert [m.group(2) for m in BAR.finditer(shown_text(stream))] == ["130"]


@pytest.mark.parametrize("path", SAVED, ids=[p.stem for p in SAVED])
def test_no_saved_output_shows_a_progress_bar_short_of_its_end(path):
    assert short_bars(path) == [], "re-run the notebook (make notebooks): a saved bar stopped short of its end"

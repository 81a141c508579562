"""The exercise machinery: exercises are generated from the solutions, solutions pass, blank exercises fail,
broken notebooks get failing rows instead of crashing the grader.

Every grade_notebook call starts a kernel (2-3 s), so each notebook is graded once per module (fixtures below).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from molmo_lite.grading import (
    EXERCISE_LINE,
    CheckResult,
    checks_for,
    clear_solution,
    exercises_up_to_date,
    grade_batch,
    grade_notebook,
    make_exercise,
    nbgrader_cell_metadata,
    notebook_chapter,
    write_exercises,
)

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS_DIR, EXERCISES_DIR = REPO / "solutions", REPO / "exercises"
SOLUTIONS = sorted(SOLUTIONS_DIR.glob("*_exercises.ipynb"))
GRADE_TIMEOUT = 120  # seconds per cell; chapter notebooks take a few seconds in all


def _chapter(path: Path) -> str:
    return notebook_chapter(nbformat.read(path, as_version=4), path)


def _write_notebook(path: Path, *sources: str, chapter: str = "01_crops") -> Path:
    """A notebook of code cells at ``path`` that claims to be ``chapter``'s exercises."""
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["molmo_lite"] = {"chapter": chapter}
    nbformat.write(nb, path)
    return path


def _assert_all_fail(results: list[CheckResult], chapter: str, *words: str) -> None:
    """One failing row per check of the chapter, each message containing every one of ``words``."""
    assert [r.exercise for r in results] == list(checks_for(chapter))
    for r in results:
        assert not r.passed, r
        assert all(w in r.message for w in words), r


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


def test_there_are_solution_notebooks_with_checks():
    assert SOLUTIONS, "solutions/ has no *_exercises.ipynb"
    for path in SOLUTIONS:
        assert checks_for(_chapter(path)), f"no checks registered for {path.name}"


def test_exercises_are_generated_from_the_current_solutions():
    assert exercises_up_to_date(SOLUTIONS_DIR, EXERCISES_DIR) == [], "run `python -m molmo_lite exercises`"


def test_make_exercise_replaces_marked_code_and_keeps_indentation():
    solution = new_code_cell(
        "import math\n"
        "\n"
        "def area(r):\n"
        '    """Circle area."""\n'
        "    ### BEGIN SOLUTION\n"
        "    squared = r * r\n"
        "    return math.pi * squared\n"
        "    ### END SOLUTION\n"
        "\n"
        "class Shape:\n"
        "    def sides(self):\n"
        "        ### BEGIN SOLUTION\n"
        "        return 0\n"
        "        ### END SOLUTION\n"
        "### BEGIN SOLUTION\n"
        "ANSWER = 42\n"
        "### END SOLUTION\n"
        "print(area(1.0))",
        execution_count=3,
        outputs=[nbformat.v4.new_output("stream", name="stdout", text="3.14\n")],
    )
    markdown = new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause pi.\n<!-- END SOLUTION -->\nNext.")
    nb = new_notebook(cells=[markdown, solution])

    exercise = make_exercise(nb)

    assert exercise.cells[1].source == (
        "import math\n"
        "\n"
        "def area(r):\n"
        '    """Circle area."""\n'
        f"    {EXERCISE_LINE}\n"
        "\n"
        "class Shape:\n"
        "    def sides(self):\n"
        f"        {EXERCISE_LINE}\n"
        f"{EXERCISE_LINE}\n"
        "print(area(1.0))"
    )
    compile(exercise.cells[1].source, "<exercise>", "exec")  # still valid Python
    assert exercise.cells[1].outputs == [] and exercise.cells[1].execution_count is None
    assert exercise.cells[0].source == "Why?\nNext."
    assert "BEGIN SOLUTION" in nb.cells[1].source and nb.cells[1].outputs, "the solution notebook must not change"


@pytest.mark.parametrize(
    "source",
    [
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
    ],
)
def test_unbalanced_solution_markers_are_an_error(source):
    with pytest.raises(ValueError):
        clear_solution(source)


def test_write_exercises_and_staleness(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    solved = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"
    solution, exercise = solutions / "99_demo_exercises.ipynb", exercises / "99_demo_exercises.ipynb"
    _write_notebook(solution, solved, "f()")
    assert exercises_up_to_date(solutions, exercises) == [solution, exercise]  # no nbgrader metadata; no exercise

    assert write_exercises(solutions, exercises) == [solution, exercise]  # the metadata written into the solution
    assert exercises_up_to_date(solutions, exercises) == []
    assert write_exercises(solutions, exercises) == [exercise]  # a current solution is left as it is
    marked = nbformat.read(solution, as_version=4)
    assert [c.metadata["nbgrader"]["solution"] for c in marked.cells] == [True, False]

    edited = nbformat.read(exercise, as_version=4)
    edited.cells[0].source += "\n# hand edit"
    nbformat.write(edited, exercise)
    (exercises / "98_orphan_exercises.ipynb").write_text(exercise.read_text())
    assert exercises_up_to_date(solutions, exercises) == [exercise, exercises / "98_orphan_exercises.ipynb"]

    marked.cells[1].metadata["nbgrader"]["locked"] = False  # an instructor's edit nbgrader would not match
    nbformat.write(marked, solution)
    assert solution in exercises_up_to_date(solutions, exercises)


def test_nbgrader_metadata_marks_answers_and_locks_the_rest():
    code = new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    written = new_markdown_cell("Why? *(write it here)*\n\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->")
    told, test = new_markdown_cell("## Exercise 1"), new_code_cell("assert f() == 1")
    metas = [nbgrader_cell_metadata(c) for c in (code, written, told, test)]
    assert [(m["solution"], m["grade"], m["locked"]) for m in metas] == [
        (True, False, False),  # autograded answer: the course's checks grade it
        (True, True, False),  # manually graded answer: an instructor reads it
        (False, False, True), (False, False, True)]  # read-only
    assert metas[1]["points"] == 1 and "points" not in metas[0]
    assert len({m["grade_id"] for m in metas}) == 4 and all(m["schema_version"] == 3 for m in metas)


def test_nbgrader_generate_assignment_writes_the_course_exercises(tmp_path):
    """The solutions notebooks are nbgrader source notebooks: nbgrader's own ``generate_assignment``, told the course's
    code stub and an empty text stub (INSTRUCTORS.md, "nbgrader"), writes exactly the cells of exercises/. It also
    validates the cell metadata (a solution region outside a solution cell, or a duplicate grade_id, is an error)."""
    source = tmp_path / "source" / "molmo_lite"
    source.mkdir(parents=True)
    for solution in SOLUTIONS:
        shutil.copy(solution, source)
    (tmp_path / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.ClearSolutions.code_stub = {{'python': {EXERCISE_LINE!r}}}\n"
        "c.ClearSolutions.text_stub = ''\n")
    # nbgrader runs alembic (its gradebook) as a command: this interpreter's scripts must be on the PATH
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "molmo_lite", "--force"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for solution in SOLUTIONS:
        released = nbformat.read(tmp_path / "release" / "molmo_lite" / solution.name, as_version=4)
        ours = nbformat.read(EXERCISES_DIR / solution.name, as_version=4)
        assert [(c.cell_type, c.source) for c in released.cells] == [(c.cell_type, c.source) for c in ours.cells], (
            solution.name)


def test_chapter_comes_from_metadata_then_file_name():
    nb = new_notebook()
    assert notebook_chapter(nb, "01_crops_exercises.ipynb") == "01_crops"
    assert notebook_chapter(nb, "01_crops_exercises-Copy1.ipynb") == "01_crops"
    assert notebook_chapter(nb, "07_pixmo_data_exercises.ipynb") == "07_pixmo_data"
    nb.metadata["molmo_lite"] = {"chapter": "02_vision"}
    assert notebook_chapter(nb, "01_crops_exercises.ipynb") == "02_vision"


# ---------------------------------------------------------------------------------------------------------------------
# Grading the course's notebooks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def solution_grades() -> dict[Path, list[CheckResult]]:
    return {path: grade_notebook(path, timeout=GRADE_TIMEOUT) for path in SOLUTIONS}


@pytest.fixture(scope="module")
def exercise_grades() -> dict[Path, list[CheckResult]]:
    return {path: grade_notebook(EXERCISES_DIR / path.name, timeout=GRADE_TIMEOUT) for path in SOLUTIONS}


def test_every_solution_passes_all_its_checks(solution_grades):
    for path, results in solution_grades.items():
        assert [r.exercise for r in results] == list(checks_for(_chapter(path)))
        assert all(r.passed for r in results), (path.name, [r for r in results if not r.passed])


def test_every_untouched_exercise_fails_all_its_checks(exercise_grades):
    for path, results in exercise_grades.items():
        _assert_all_fail(results, _chapter(path), "not implemented")


@pytest.mark.parametrize("which, status", [("solutions", 0), ("exercises", 1)])
def test_grade_cli_exit_status(which, status):
    notebook = REPO / which / "01_crops_exercises.ipynb"
    cmd = [sys.executable, "-m", "molmo_lite", "grade", str(notebook), "--timeout", str(GRADE_TIMEOUT)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == status, done.stdout + done.stderr
    assert ("FAIL" in done.stdout) == bool(status) and "select_tiling" in done.stdout


# ---------------------------------------------------------------------------------------------------------------------
# Broken notebooks get failing rows, never an exception
# ---------------------------------------------------------------------------------------------------------------------


def test_notebook_that_raises_in_its_first_cell_fails_every_check(tmp_path):
    path = _write_notebook(tmp_path / "01_crops_exercises.ipynb", "raise RuntimeError('broken on purpose')", "x = 1")
    _assert_all_fail(grade_notebook(path, timeout=60), "01_crops", "defines no function")


@pytest.mark.slow
def test_notebook_with_an_infinite_loop_fails_every_check_in_time(tmp_path):
    path = _write_notebook(tmp_path / "01_crops_exercises.ipynb", "x = 1", "while True:\n    pass")
    start = time.monotonic()
    results = grade_notebook(path, timeout=20)
    assert time.monotonic() - start < 60
    _assert_all_fail(results, "01_crops", "could not run", "CellTimeoutError", "cell 2 (`while True:`)")


def test_exercise_function_that_loops_fails_only_its_own_check(tmp_path):
    source = "def select_tiling(height, width, window, max_crops):\n    while True:\n        pass"
    path = _write_notebook(tmp_path / "01_crops_exercises.ipynb", source)
    results = grade_notebook(path, timeout=10)
    assert [r.passed for r in results] == [False] * len(checks_for("01_crops"))
    assert "ran longer than" in results[0].message
    assert all("defines no function" in r.message for r in results[1:])


def test_notebook_whose_kernel_dies_fails_every_check(tmp_path):
    path = _write_notebook(tmp_path / "01_crops_exercises.ipynb", "import os\nos._exit(1)")
    _assert_all_fail(grade_notebook(path, timeout=60), "01_crops", "could not run")


def test_unreadable_notebook_fails_every_check(tmp_path):
    path = tmp_path / "01_crops_exercises.ipynb"
    path.write_text("{ this is not json")
    _assert_all_fail(grade_notebook(path), "01_crops", "cannot read")


@pytest.mark.slow
def test_batch_grading_gives_the_right_csv_for_four_kinds_of_submission(tmp_path):
    """A class of four: fully solved, half solved (the first exercise only), untouched, and a notebook that loops
    forever. The CSV has one row per student and exercise with the right verdicts; the looping one is cut off at the
    per-notebook time limit and does not stop the batch."""
    import csv

    chapter = "10_evaluation"
    solved = nbformat.read(SOLUTIONS_DIR / f"{chapter}_exercises.ipynb", as_version=4)
    untouched = nbformat.read(EXERCISES_DIR / f"{chapter}_exercises.ipynb", as_version=4)
    half = copy.deepcopy(untouched)  # the student solved clock_close only
    half.cells = [s if "def clock_close" in s.source else e for s, e in zip(solved.cells, untouched.cells)]
    looping = copy.deepcopy(solved)
    looping.cells.insert(2, nbformat.v4.new_code_cell("while True:\n    pass"))
    for student, nb in (("ada", solved), ("bo", half), ("cy", untouched), ("dee", looping)):
        (tmp_path / "in" / student).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "in" / student / f"{chapter}_exercises.ipynb")

    limit = 40.0
    start = time.monotonic()
    grade_batch(tmp_path / "in", tmp_path / "grades.csv", time_limit=limit, log=None)
    elapsed = time.monotonic() - start
    with (tmp_path / "grades.csv").open() as f:
        rows = list(csv.DictReader(f))
    verdicts = {(r["student"], r["exercise"]): r["passed"] for r in rows}
    exercises = tuple(checks_for(chapter))
    assert exercises[0] == "clock_close" and len(exercises) >= 3
    assert len(rows) == 4 * len(exercises)
    assert all(verdicts["ada", e] == "1" for e in exercises)
    assert [verdicts["bo", e] for e in exercises] == ["1"] + ["0"] * (len(exercises) - 1)
    assert all(verdicts["cy", e] == "0" for e in exercises)
    assert all(verdicts["dee", e] == "0" for e in exercises)
    assert all("time limit" in r["message"] for r in rows if r["student"] == "dee")
    dee_seconds = float(next(r["seconds"] for r in rows if r["student"] == "dee"))
    assert limit <= dee_seconds < limit + 10 and elapsed < limit + 120


def test_an_instructors_hidden_checks_are_loaded_from_the_environment(tmp_path, monkeypatch):
    """Checks kept off the students' copy: a .py file named in $MOLMO_LITE_CHECKS registers more exercises."""
    hidden = tmp_path / "hidden_checks.py"
    hidden.write_text(
        "from molmo_lite.grading import check\n\n"
        "@check('10_evaluation', 'hidden_clock_edge_case')\n"
        "def hidden(namespace):\n"
        "    assert namespace['clock_close']('12:00', 12, 0) == (1.0, 1.0), 'noon is noon'\n"
    )
    from molmo_lite import grading, grading_core

    checks_for("10_evaluation")  # the package's own checks registered first
    registry = {k: dict(v) for k, v in grading_core._CHECKS.items()}
    monkeypatch.setattr(grading_core, "_CHECKS", registry)  # undone after
    monkeypatch.setattr(grading, "_extra_loaded", set())
    monkeypatch.setenv("MOLMO_LITE_CHECKS", str(hidden))
    checks = checks_for("10_evaluation")
    assert "hidden_clock_edge_case" in checks and "clock_close" in checks
    with pytest.raises(AssertionError, match="noon"):
        checks["hidden_clock_edge_case"]({"clock_close": lambda answer, hour, minute: (0.0, 0.0)})

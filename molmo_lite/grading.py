"""Exercise notebooks: made from the solutions, graded by running them.

Three pieces, used by instructors, by CI and by ``python -m molmo_lite {exercises,grade}``:

1. **Exercise generation.** An instructor notebook in ``solutions/`` marks its answers::

       def select_tiling(height, width, window, max_crops):
           ### BEGIN SOLUTION
           ...
           ### END SOLUTION

   ``make_exercise`` replaces every marked block by one ``raise NotImplementedError(...)`` line at the markers'
   indentation, drops ``<!-- BEGIN SOLUTION --> ... <!-- END SOLUTION -->`` blocks from markdown cells and clears
   outputs;
   ``write_exercises`` turns ``solutions/NN_name_exercises.ipynb`` into ``exercises/NN_name_exercises.ipynb``.

2. **Checks.** ``@check("01_crops", "select_tiling")`` registers a function ``fn(namespace) -> None`` that looks up what
   the student defined in the notebook's global namespace and raises ``AssertionError`` with a helpful message when it
   disagrees with ``molmo_lite``'s own implementation. The registry, the time limit on the student's code and the
   helpers the checks share live in ``molmo_lite.grading_core`` (re-exported here), which the checks import; this
   module imports the checks (``molmo_lite.checks``, one module per chapter) when it needs them, never the other way.

3. **Grading.** ``grade_notebook`` executes a student's notebook in a fresh kernel (errors in one cell do not stop the
   others), appends one cell that runs the chapter's checks on the notebook's ``globals()`` in that same kernel, and
   reads the results back. A notebook that cannot run at all (kernel death, timeout, unreadable file) gets a failing
   row per check, never an exception.

4. **Batch grading.** ``grade_batch`` grades a folder of students' submissions, each notebook in its own process
   with a time limit for the whole notebook, and writes one CSV row per student and exercise
   (``python -m molmo_lite grade --batch SUBMISSIONS --out grades.csv``; INSTRUCTORS.md).
"""

from __future__ import annotations

import copy
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import nbformat

from . import grading_core
from .grading_core import (  # noqa: F401  (re-exported: the checks' helpers under their old names, for instructors)
    _CHECKS,
    FLOAT_TOLERANCE,
    CheckFn,
    CheckTimeout,
    _as_comparable_arrays,
    _as_numpy,
    _compare_on_cases,
    _describe,
    _exact_array_mismatch,
    _float_array_mismatch,
    _format_call,
    _index_array_mismatch,
    _int_mismatch,
    _randomize_,
    _student_function,
    _time_limit,
    _torch_generator,
    _tuple_mismatch,
    _with_hint,
    check,
)

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
EXERCISE_LINE = 'raise NotImplementedError("Exercise: write your solution here")'
MARKDOWN_SOLUTION = re.compile(r"<!--\s*BEGIN SOLUTION\s*-->.*?<!--\s*END SOLUTION\s*-->\n?", re.DOTALL)
NOTEBOOK_GLOB = "*_exercises.ipynb"


# ---------------------------------------------------------------------------------------------------------------------
# 1. Exercise generation
# ---------------------------------------------------------------------------------------------------------------------


def clear_solution(source: str) -> str:
    """Replace each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block of a code cell by the exercise line.

    The replacement keeps the indentation of the BEGIN marker, so a solution inside a function body stays a valid body.
    Raises ValueError on unbalanced markers, which would otherwise leak a solution into the exercise.
    """
    out: list[str] = []
    indent = None  # the BEGIN marker's indentation while inside a solution block
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(SOLUTION_BEGIN):
            if indent is not None:
                raise ValueError(f"nested {SOLUTION_BEGIN!r} in cell:\n{source}")
            indent = line[: len(line) - len(line.lstrip())]
        elif stripped.startswith(SOLUTION_END):
            if indent is None:
                raise ValueError(f"{SOLUTION_END!r} without {SOLUTION_BEGIN!r} in cell:\n{source}")
            out.append(indent + EXERCISE_LINE + line[len(line.rstrip("\r\n")) :])
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise ValueError(f"{SOLUTION_BEGIN!r} without {SOLUTION_END!r} in cell:\n{source}")
    return "".join(out)


def clear_markdown_solution(source: str) -> str:
    """Drop ``<!-- BEGIN SOLUTION --> ... <!-- END SOLUTION -->`` blocks (answers to written questions)."""
    return MARKDOWN_SOLUTION.sub("", source)


def nbgrader_cell_metadata(cell: nbformat.NotebookNode) -> dict:
    """nbgrader's metadata (schema 3) for one cell of a solutions notebook, so that the notebook is also an nbgrader
    source notebook: a code cell with a ``### BEGIN SOLUTION`` region is an autograded answer (``solution``; the
    course's checks grade it, so no points here), a markdown cell with a ``<!-- BEGIN SOLUTION -->`` region a manually
    graded answer (``solution`` and ``grade``, 1 point: a written answer an instructor reads), every other cell
    read-only (``locked``). The grade_id is the cell's id, unique in its notebook."""
    code = cell.cell_type == "code" and SOLUTION_BEGIN in cell.source
    written = cell.cell_type == "markdown" and MARKDOWN_SOLUTION.search(cell.source) is not None
    meta = {"grade": written, "grade_id": f"cell-{cell.id}", "locked": not (code or written), "schema_version": 3,
            "solution": code or written, "task": False}
    if written:
        meta["points"] = 1
    return meta


def with_nbgrader_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of a solutions notebook whose every cell carries ``nbgrader_cell_metadata``."""
    marked = copy.deepcopy(nb)
    for cell in marked.cells:
        cell.metadata["nbgrader"] = nbgrader_cell_metadata(cell)
    return marked


def make_exercise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return a copy of a solutions notebook with the answers removed and every output and execution count cleared."""
    exercise = copy.deepcopy(nb)
    for cell in exercise.cells:
        cell.metadata.pop("execution", None)  # nbclient's timings
        if cell.cell_type == "code":
            cell.source = clear_solution(cell.source)
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = clear_markdown_solution(cell.source)
    return exercise


def _exercise_pairs(solutions_dir: str | Path, exercises_dir: str | Path) -> Iterator[tuple[Path, Path]]:
    """(solution notebook, exercise notebook) path pairs, sorted by chapter."""
    for solution in sorted(Path(solutions_dir).glob(NOTEBOOK_GLOB)):
        yield solution, Path(exercises_dir) / solution.name


def write_exercises(solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises") -> list[Path]:
    """Generate ``exercises_dir/NN_name_exercises.ipynb`` from each ``solutions_dir/NN_name_exercises.ipynb``, and
    write nbgrader's cell metadata into the solutions notebook where it is missing or stale.

    Returns the paths written.
    """
    Path(exercises_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for solution, exercise in _exercise_pairs(solutions_dir, exercises_dir):
        nb = nbformat.read(solution, as_version=4)
        marked = with_nbgrader_metadata(nb)
        if marked != nb:
            nbformat.write(marked, solution)
            written.append(solution)
        nbformat.write(make_exercise(marked), exercise)
        written.append(exercise)
    return written


def _cell_contents(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """What a student sees of a notebook: (cell type, source) per cell; outputs and metadata are noise here."""
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def exercises_up_to_date(
    solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises"
) -> list[Path]:
    """Exercise notebooks that differ from what ``write_exercises`` would generate now (missing ones included), and
    solutions notebooks whose nbgrader metadata is missing or stale.

    An exercise notebook without a solution notebook is stale too: exercises are generated, never hand-written.
    An empty list means up to date.
    """
    stale = []
    expected = set()
    for solution, exercise in _exercise_pairs(solutions_dir, exercises_dir):
        expected.add(exercise.name)
        nb = nbformat.read(solution, as_version=4)
        if with_nbgrader_metadata(nb) != nb:  # its nbgrader metadata missing or stale
            stale.append(solution)
        generated = make_exercise(nb)
        if not exercise.exists() or _cell_contents(nbformat.read(exercise, as_version=4)) != _cell_contents(generated):
            stale.append(exercise)
    orphans = [p for p in sorted(Path(exercises_dir).glob(NOTEBOOK_GLOB)) if p.name not in expected]
    return stale + orphans


# ---------------------------------------------------------------------------------------------------------------------
# 2. Checks registry
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckResult:
    """One row of a grade report."""

    exercise: str
    passed: bool
    message: str = ""


EXTRA_CHECKS_VARIABLE = "MOLMO_LITE_CHECKS"
_extra_loaded: set[str] = set()


def _load_chapter_checks() -> None:
    """Import molmo_lite.checks, whose modules (one per chapter) register their checks with @check, then the
    instructor's own check files named in $MOLMO_LITE_CHECKS (paths of .py files, separated by the OS path separator):
    hidden checks that live on the grader's machine only (INSTRUCTORS.md)."""
    import importlib.util
    import os

    import molmo_lite.checks  # noqa: F401  (imported for its registrations)

    for item in filter(None, os.environ.get(EXTRA_CHECKS_VARIABLE, "").split(os.pathsep)):
        path = str(Path(item).resolve())
        if path in _extra_loaded:
            continue
        spec = importlib.util.spec_from_file_location(f"molmo_lite_extra_checks_{len(_extra_loaded)}", path)
        if spec is None or spec.loader is None:
            raise ValueError(f"${EXTRA_CHECKS_VARIABLE}: {item} is not a Python file")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        _extra_loaded.add(path)


def checks_for(chapter: str) -> dict[str, CheckFn]:
    """The checks of a chapter, in registration order ({} for an unknown chapter)."""
    _load_chapter_checks()
    return dict(grading_core._CHECKS.get(chapter, {}))


def notebook_chapter(nb: nbformat.NotebookNode | None, path: str | Path) -> str:
    """A notebook's chapter id: ``metadata.molmo_lite.chapter``, else from its file name.

    ``01_crops_exercises.ipynb`` (or a student's ``01_crops_exercises-Copy1.ipynb``) -> ``"01_crops"``.
    """
    chapter = (nb.metadata.get("molmo_lite", {}).get("chapter") if nb is not None else None) or ""
    if chapter:
        return chapter
    stem = Path(path).stem
    _load_chapter_checks()
    known = [c for c in grading_core._CHECKS if stem.startswith(c)]
    return max(known, key=len) if known else stem.partition("_exercises")[0]


def _run_check(exercise: str, fn: CheckFn, namespace: dict) -> CheckResult:
    """Run one check and turn whatever it raises into a failing row."""
    try:
        fn(namespace)
    except NotImplementedError:
        return CheckResult(exercise, False, "not implemented yet: the exercise cell still raises NotImplementedError")
    except CheckTimeout as err:
        return CheckResult(exercise, False, str(err))
    except AssertionError as err:
        return CheckResult(exercise, False, str(err) or "assertion failed")
    except Exception as err:  # a check must never take the others down
        return CheckResult(exercise, False, f"{type(err).__name__}: {err}")
    return CheckResult(exercise, True, "")


def run_checks(chapter: str, namespace: dict, time_limit: float | None = None) -> list[CheckResult]:
    """Run every check of ``chapter`` on a notebook's global namespace.

    ``time_limit``: seconds each check may spend calling the student's functions (imports and reference answers do not
    count), so that one looping exercise fails alone instead of timing out the whole notebook.
    """
    with grading_core._checks_time_limit(time_limit):
        return [_run_check(name, fn, namespace) for name, fn in checks_for(chapter).items()]


def _print_check_results(chapter: str, namespace: dict, marker: str, time_limit: float | None) -> None:
    """Run inside the student's kernel by the appended cell: print the results as JSON behind ``marker``."""
    results = run_checks(chapter, namespace, time_limit)
    print(marker + json.dumps([asdict(r) for r in results]), flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Grading a notebook
# ---------------------------------------------------------------------------------------------------------------------


def _failing_rows(chapter: str, reason: str) -> list[CheckResult]:
    """One failing row per check of the chapter (or one row saying the chapter has no checks)."""
    names = list(checks_for(chapter)) or ["(notebook)"]
    return [CheckResult(name, False, reason) for name in names]


def _grading_cell(chapter: str, marker: str, time_limit: float) -> nbformat.NotebookNode:
    """The cell appended to the student's notebook; it imports the grader inside the student's kernel."""
    source = (
        "__import__('molmo_lite.grading', fromlist=['_print_check_results'])"
        f"._print_check_results({chapter!r}, globals(), {marker!r}, {time_limit!r})"
    )
    return nbformat.v4.new_code_cell(source)


def _parse_grading_output(cell: nbformat.NotebookNode, marker: str) -> list[CheckResult] | None:
    """Results printed by the grading cell, or None when it printed none."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    for line in text.splitlines():
        if line.startswith(marker):
            return [CheckResult(**row) for row in json.loads(line[len(marker) :])]
    return None


def _grading_cell_error(cell: nbformat.NotebookNode) -> str:
    """Why the grading cell printed nothing (its error, if any)."""
    errors = [f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error"]
    return "the checks could not run: " + (errors[0] if errors else "they printed no results")


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def _run_failure(err: Exception, nb: nbformat.NotebookNode, cell_index: int, seconds: float) -> str:
    """Why a notebook could not run, naming the cell that was running (counted from 1, as a reader counts)."""
    last = cell_index == len(nb.cells) - 1
    which = "the grading cell" if last else f"cell {cell_index + 1} (`{_first_line(nb.cells[cell_index].source)}`)"
    reason = f"the notebook could not run: {type(err).__name__} in {which} after {seconds:.0f} s"
    return f"{reason}: {_first_line(str(err))}" if _first_line(str(err)) else reason


def grade_notebook(path: str | Path, timeout: float = 600) -> list[CheckResult]:
    """Execute a student's exercise notebook and check it; one CheckResult per exercise of its chapter.

    The notebook runs in a fresh ``python3`` kernel with its own folder as working directory; ``timeout`` (seconds)
    applies to each cell, the appended checks cell included (each check gets a share of it for the student's code).
    A cell that raises does not stop the others. A notebook that cannot run at all gets a failing row per check with
    the reason.
    """
    from nbclient import NotebookClient  # imported here: only grading needs Jupyter's machinery

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:
        return _failing_rows(notebook_chapter(None, path), f"cannot read {path.name}: {type(err).__name__}: {err}")
    chapter = notebook_chapter(nb, path)
    if not checks_for(chapter):
        return _failing_rows(chapter, f"no checks are registered for chapter {chapter!r}")

    marker = f"@@molmo_lite-grades-{uuid.uuid4().hex}@@"
    time_limit = max(1.0, 0.5 * timeout / len(checks_for(chapter)))  # half the cell timeout for all checks
    nb.cells.append(_grading_cell(chapter, marker, time_limit))
    started: dict[str, int] = {}
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=False,
        resources={"metadata": {"path": str(path.resolve().parent)}},
        on_cell_start=lambda cell, cell_index: started.update(index=cell_index),
    )
    t0 = time.monotonic()
    try:
        client.execute(stderr=subprocess.DEVNULL)  # the kernel process's own log lines would garble the report
    except Exception as err:  # kernel death, timeout, a kernel that cannot start: report, never raise
        return _failing_rows(chapter, _run_failure(err, nb, started.get("index", 0), time.monotonic() - t0))
    results = _parse_grading_output(nb.cells[-1], marker)
    return results if results is not None else _failing_rows(chapter, _grading_cell_error(nb.cells[-1]))


def print_report(results: Sequence[CheckResult], file: TextIO | None = None) -> None:
    """Print a table: exercise | PASS/FAIL | first line of the message, then a one-line summary."""
    file = file or sys.stdout
    width = max([len("exercise")] + [len(r.exercise) for r in results])
    print(f"{'exercise':<{width}} | result | message", file=file)
    print(f"{'-' * width}-+--------+--------", file=file)
    for r in results:
        print(f"{r.exercise:<{width}} | {'PASS' if r.passed else 'FAIL':<6} | {_first_line(r.message)}", file=file)
    print(f"{sum(r.passed for r in results)}/{len(results)} exercises pass", file=file)


# ---------------------------------------------------------------------------------------------------------------------
# 4. Batch grading: a class's submissions, one CSV.
# ---------------------------------------------------------------------------------------------------------------------

GRADE_COLUMNS = ("student", "notebook", "chapter", "exercise", "passed", "message", "seconds")


def submissions(directory: str | Path) -> list[tuple[str, Path]]:
    """(student, notebook) pairs of a submissions folder, sorted.

    Layout: one folder per student holding their notebooks (``SUBMISSIONS/alice/03_connector_exercises.ipynb``, at
    any depth below it), or notebooks directly in the folder named ``STUDENT__NOTEBOOK.ipynb`` (e.g. what an LMS
    export gives: ``alice__03_connector_exercises.ipynb``). Jupyter's checkpoint copies are ignored."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of submissions")
    found = []
    for path in sorted(root.rglob("*.ipynb")):
        relative = path.relative_to(root)
        if ".ipynb_checkpoints" in relative.parts:
            continue
        student = relative.parts[0] if len(relative.parts) > 1 else path.stem.partition("__")[0]
        found.append((student, path))
    return found


def _file_chapter(path: Path) -> str:
    """The chapter of a notebook file: from its metadata, or from its name when it cannot be read."""
    try:
        return notebook_chapter(nbformat.read(path, as_version=4), path)
    except Exception:  # unreadable: grade_notebook reports it in its own rows
        return notebook_chapter(None, path)


def grade_in_subprocess(path: Path, time_limit: float, cell_timeout: float | None = None,
                        chapter: str | None = None) -> list[CheckResult]:
    """``grade_notebook`` in a separate process (and process group) that is killed, kernel included, when it takes
    longer than ``time_limit`` seconds in all: a notebook that loops forever gets failing rows, the batch goes on.
    chapter: the notebook's chapter if known (default: read from the file)."""
    import os

    chapter = chapter or _file_chapter(path)
    cmd = [sys.executable, "-m", "molmo_lite", "grade", str(path), "--json",
           "--timeout", str(cell_timeout or time_limit)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # its own process group: the kernel dies with it
    try:
        out, _ = proc.communicate(timeout=time_limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return _failing_rows(chapter, f"the notebook did not finish within the time limit of {time_limit:.0f} s")
    try:
        return [CheckResult(**row) for row in json.loads(out.strip().splitlines()[-1])]
    except (ValueError, IndexError, TypeError):
        return _failing_rows(chapter, f"the grader failed on this notebook (exit status {proc.returncode})")


def grade_batch(directory: str | Path, out_csv: str | Path, time_limit: float = 300,
                log: Callable[[str], None] | None = print) -> list[dict]:
    """Grade every submission of ``directory`` (layout: ``submissions``), each within ``time_limit`` seconds, and
    write one CSV row per student, notebook and exercise (columns GRADE_COLUMNS; passed is 1 or 0). Returns the rows.
    A notebook that crashes, cannot be read or loops gets failing rows with the reason; the batch never stops."""
    import csv

    rows = []
    for student, path in submissions(directory):
        chapter = _file_chapter(path)
        start = time.monotonic()
        results = grade_in_subprocess(path, time_limit, chapter=chapter)
        seconds = round(time.monotonic() - start, 1)
        for r in results:
            rows.append({"student": student, "notebook": path.name, "chapter": chapter, "exercise": r.exercise,
                         "passed": int(r.passed), "message": _first_line(r.message), "seconds": seconds})
        if log:
            log(f"{student:<20} {path.name:<40} {sum(r.passed for r in results)}/{len(results)} pass ({seconds:.0f} s)")
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=GRADE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows

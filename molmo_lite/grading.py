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
   disagrees with ``molmo_lite``'s own implementation.

3. **Grading.** ``grade_notebook`` executes a student's notebook in a fresh kernel (errors in one cell do not stop the
   others), appends one cell that runs the chapter's checks on the notebook's ``globals()`` in that same kernel, and
   reads the results back. A notebook that cannot run at all (kernel death, timeout, unreadable file) gets a failing
   row per check, never an exception.
"""

from __future__ import annotations

import copy
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import nbformat

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
EXERCISE_LINE = 'raise NotImplementedError("Exercise: write your solution here")'
MARKDOWN_SOLUTION = re.compile(r"<!--\s*BEGIN SOLUTION\s*-->.*?<!--\s*END SOLUTION\s*-->\n?", re.DOTALL)
NOTEBOOK_GLOB = "*_exercises.ipynb"

CheckFn = Callable[[dict], None]


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
    """Generate ``exercises_dir/NN_name_exercises.ipynb`` from each ``solutions_dir/NN_name_exercises.ipynb``.

    Returns the paths written.
    """
    Path(exercises_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for solution, exercise in _exercise_pairs(solutions_dir, exercises_dir):
        nbformat.write(make_exercise(nbformat.read(solution, as_version=4)), exercise)
        written.append(exercise)
    return written


def _cell_contents(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """What a student sees of a notebook: (cell type, source) per cell; outputs and metadata are noise here."""
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def exercises_up_to_date(
    solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises"
) -> list[Path]:
    """Exercise notebooks that differ from what ``write_exercises`` would generate now (missing ones included).

    An exercise notebook without a solution notebook is stale too: exercises are generated, never hand-written.
    An empty list means up to date.
    """
    stale = []
    expected = set()
    for solution, exercise in _exercise_pairs(solutions_dir, exercises_dir):
        expected.add(exercise.name)
        generated = make_exercise(nbformat.read(solution, as_version=4))
        if not exercise.exists() or _cell_contents(nbformat.read(exercise, as_version=4)) != _cell_contents(generated):
            stale.append(exercise)
    orphans = [p for p in sorted(Path(exercises_dir).glob(NOTEBOOK_GLOB)) if p.name not in expected]
    return stale + orphans


# ---------------------------------------------------------------------------------------------------------------------
# 2. Checks registry
# ---------------------------------------------------------------------------------------------------------------------

_CHECKS: dict[str, dict[str, CheckFn]] = {}
_student_time_limit: float | None = None  # seconds each check may spend in the student's code; set by run_checks


@dataclass(frozen=True)
class CheckResult:
    """One row of a grade report."""

    exercise: str
    passed: bool
    message: str = ""


def check(chapter: str, exercise: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn(namespace)`` as the check of ``exercise`` in ``chapter`` (e.g. ``"01_crops"``)."""

    def register(fn: CheckFn) -> CheckFn:
        _CHECKS.setdefault(chapter, {})[exercise] = fn
        return fn

    return register


def checks_for(chapter: str) -> dict[str, CheckFn]:
    """The checks of a chapter, in registration order ({} for an unknown chapter)."""
    return dict(_CHECKS.get(chapter, {}))


def notebook_chapter(nb: nbformat.NotebookNode | None, path: str | Path) -> str:
    """A notebook's chapter id: ``metadata.molmo_lite.chapter``, else from its file name.

    ``01_crops_exercises.ipynb`` (or a student's ``01_crops_exercises-Copy1.ipynb``) -> ``"01_crops"``.
    """
    chapter = (nb.metadata.get("molmo_lite", {}).get("chapter") if nb is not None else None) or ""
    if chapter:
        return chapter
    stem = Path(path).stem
    known = [c for c in _CHECKS if stem.startswith(c)]
    return max(known, key=len) if known else stem.partition("_exercises")[0]


class CheckTimeout(BaseException):
    """A check ran out of time. A BaseException, so that a check's ``except Exception`` cannot swallow it."""


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise CheckTimeout in the block after ``seconds`` (Unix main thread only; elsewhere no limit)."""
    usable = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CheckTimeout(f"the notebook's code ran longer than {seconds:.0f} s (an infinite loop?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
    global _student_time_limit
    _student_time_limit = time_limit
    try:
        return [_run_check(name, fn, namespace) for name, fn in checks_for(chapter).items()]
    finally:
        _student_time_limit = None


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
# Chapter checks. Each compares the student's function, found by name in the notebook's globals, with molmo_lite's.
# ---------------------------------------------------------------------------------------------------------------------


def _student_function(namespace: dict, name: str) -> Callable:
    """The function the notebook defined under ``name``; AssertionError if there is none."""
    fn = namespace.get(name)
    if not callable(fn):
        raise AssertionError(f"the notebook defines no function `{name}`: run the cell that defines it")
    return fn


def _describe(value: Any) -> str:
    """How an argument is shown in a failure message: tensors and layers by their shapes, the rest by repr."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a torch tensor or numpy array
        dtype = str(value.dtype).removeprefix("torch.")
        return f"<{dtype} tensor {list(value.shape)}>"
    if hasattr(value, "in_features") and hasattr(value, "out_features"):  # an nn.Linear
        bias = "" if getattr(value, "bias", None) is not None else ", no bias"
        return f"<Linear {value.in_features} -> {value.out_features}{bias}>"
    if callable(getattr(value, "parameters", None)):  # another nn.Module (a whole LLM): its config, not its layers
        config = getattr(value, "config", None)
        return f"<{type(value).__name__} {config!r}>" if config is not None else f"<{type(value).__name__}>"
    if isinstance(value, list) and value and all(hasattr(v, "shape") for v in value):
        shapes = {tuple(v.shape) for v in value}
        each = f"each {list(shapes.pop())}" if len(shapes) == 1 else "of several shapes"
        return f"<list of {len(value)} tensors, {each}>"
    return repr(value)


def _format_call(name: str, arg_names: Sequence[str], args: Sequence) -> str:
    """``name(a=1, b=2)``, how a failing case is shown (a tensor by its shape: ``x=<float32 tensor [2, 3]>``)."""
    return f"{name}({', '.join(f'{k}={_describe(v)}' for k, v in zip(arg_names, args))})"


def _compare_on_cases(
    name: str,
    arg_names: Sequence[str],
    student: Callable,
    reference: Callable,
    cases: Sequence[tuple],
    mismatch: Callable[[Any, Any], str | None],
) -> None:
    """Call ``student(*args)`` and ``reference(*args)`` on every case; AssertionError naming the first disagreement.

    ``mismatch(got, expected)`` says how an answer is wrong, or None when it is right. NotImplementedError from the
    student propagates (the exercise is still blank); any other exception counts as a wrong answer. The student's
    calls together get run_checks' time limit.
    """
    answers = [reference(*args) for args in cases]
    wrong = []
    with _time_limit(_student_time_limit):
        for args, expected in zip(cases, answers):
            try:
                got = student(*args)
            except NotImplementedError:
                raise
            except Exception as err:
                wrong.append((args, f"raised {type(err).__name__}: {err}"))
                continue
            problem = mismatch(got, expected)
            if problem is not None:
                wrong.append((args, problem))
    if wrong:
        args, problem = wrong[0]
        call = _format_call(name, arg_names, args)
        raise AssertionError(f"{call} {problem} ({len(wrong)} of {len(cases)} cases wrong)")


def _tuple_mismatch(got: Any, expected: Any) -> str | None:
    """Compare as tuples of ints (lists, numpy ints and tensors are fine)."""
    try:
        same = tuple(int(v) for v in got) == tuple(int(v) for v in expected)
    except (TypeError, ValueError):
        same = False
    return None if same else f"returned {got!r}, expected {tuple(expected)!r}"


def _int_mismatch(got: Any, expected: Any) -> str | None:
    """Compare as numbers (numpy ints and 0-d tensors are fine; 740.0 counts as 740)."""
    try:
        same = float(got) == float(expected)
    except (TypeError, ValueError):
        same = False
    return None if same else f"returned {got!r}, expected {int(expected)}"


def _as_numpy(x: Any) -> Any:
    """A numpy array from a numpy array, torch tensor or nested list."""
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _index_array_mismatch(got: Any, expected: Any) -> str | None:
    """Same shape, integer dtype, same values (numpy arrays and torch tensors alike); else where they differ."""
    import numpy as np

    try:
        got = _as_numpy(got)
    except Exception:
        return f"returned a {type(got).__name__}, expected an integer array"
    expected = _as_numpy(expected)
    if got.shape != expected.shape:
        return f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype.kind not in "iu":
        return f"returned dtype {got.dtype}, expected an integer array"
    differ = np.argwhere(got != expected)
    if len(differ) == 0:
        return None
    at = tuple(int(i) for i in differ[0])
    first = f"first at {list(at)}: {got[at]} instead of {expected[at]}"
    return f"is wrong at {len(differ)} of {got.size} positions, {first}"


def _random_sizes(rng: random.Random, n: int, low: int = 1, high: int = 4000) -> list[tuple[int, int]]:
    """(height, width) pairs: half uniform, half extreme aspect ratios (one side tiny, the other huge)."""
    sizes = []
    for k in range(n):
        if k % 2 == 0:
            sizes.append((rng.randint(low, high), rng.randint(low, high)))
        else:
            thin, long = rng.randint(low, low + 60), rng.randint(high // 2, high)
            sizes.append((thin, long) if k % 4 == 1 else (long, thin))
    return sizes


@check("01_crops", "select_tiling")
def check_select_tiling(namespace: dict) -> None:
    """select_tiling(height, width, window, max_crops) agrees with molmo_lite's on 200 seeded random cases."""
    from molmo_lite import preprocessing

    rng = random.Random(1)
    windows = (224, 336, 28)
    cases = [(h, w, rng.choice(windows), rng.randint(1, 36)) for h, w in _random_sizes(rng, 200)]
    student = _student_function(namespace, "select_tiling")
    _compare_on_cases(
        "select_tiling", ("height", "width", "window", "max_crops"), student, preprocessing.select_tiling, cases,
        _tuple_mismatch,
    )


@check("01_crops", "num_image_tokens")
def check_num_image_tokens(namespace: dict) -> None:
    """num_image_tokens(height, width, max_crops) agrees with molmo_lite's on the worked examples, tiny images and
    100 random cases."""
    from molmo_lite import preprocessing

    rng = random.Random(2)
    worked = [(480, 640, 12), (1080, 1920, 12), (336, 336, 12), (1000, 500, 12), (64, 64, 12), (30, 2000, 12)]
    cases = worked + [(h, w, rng.randint(1, 36)) for h, w in _random_sizes(rng, 100, low=120)]
    student = _student_function(namespace, "num_image_tokens")

    def reference(height: int, width: int, max_crops: int) -> int:
        return preprocessing.num_image_tokens(height, width, max_crops=max_crops)

    _compare_on_cases("num_image_tokens", ("height", "width", "max_crops"), student, reference, cases, _int_mismatch)


@check("01_crops", "stitched_patch_index")
def check_stitched_patch_index(namespace: dict) -> None:
    """stitched_patch_index(rows, cols, crop_patches, overlap_margins) equals molmo_lite's on random tilings."""
    from molmo_lite import preprocessing

    rng = random.Random(3)
    geometries = [(p, m) for p in (4, 6, 24) for m in ((1, 1), (2, 2), (4, 4), (1, 2)) if sum(m) < p]
    cases = [(rng.randint(1, 4), rng.randint(1, 4), *rng.choice(geometries)) for _ in range(40)]
    student = _student_function(namespace, "stitched_patch_index")
    _compare_on_cases(
        "stitched_patch_index", ("rows", "cols", "crop_patches", "overlap_margins"), student,
        preprocessing.stitched_patch_index, cases, _index_array_mismatch,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Float tensors: the helpers of the chapter 02+ checks.
# ---------------------------------------------------------------------------------------------------------------------

FLOAT_TOLERANCE = 1e-5  # absolute and relative, for float outputs compared with molmo_lite's


def _float_array_mismatch(got: Any, expected: Any, tolerance: float = FLOAT_TOLERANCE) -> str | None:
    """Same shape and the same values within ``tolerance`` (numpy arrays and torch tensors alike); else where not."""
    import numpy as np

    try:
        got = _as_numpy(got)
    except Exception:
        return f"returned a {type(got).__name__}, expected a tensor"
    expected = _as_numpy(expected)
    if got.shape != expected.shape:
        return f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype.kind not in "fiub":
        return f"returned dtype {got.dtype}, expected a float tensor"
    wrong = ~np.isclose(got.astype(np.float64), expected.astype(np.float64), rtol=tolerance, atol=tolerance)
    if not wrong.any():
        return None
    at = tuple(int(i) for i in np.argwhere(wrong)[0])
    first = f"first at {list(at)}: {float(got[at]):.6g} instead of {float(expected[at]):.6g}"
    nan = " (NaN: a division by zero, or a softmax over nothing but -inf?)" if np.isnan(got).any() else ""
    return f"is wrong at {wrong.sum()} of {got.size} values (tolerance {tolerance:g}), {first}{nan}"


def _with_hint(mismatch: Callable[[Any, Any], str | None]) -> Callable[[Any, tuple], str | None]:
    """Turn ``mismatch(got, expected)`` into one that takes ``(expected, {hint: plausible wrong answer})`` and, when
    the student's answer equals one of those wrong answers, says which mistake it looks like."""

    def compare(got: Any, expected_and_wrong: tuple) -> str | None:
        expected, wrong_answers = expected_and_wrong
        problem = mismatch(got, expected)
        if problem is None:
            return None
        for hint, wrong in wrong_answers.items():
            if mismatch(got, wrong) is None:
                return f"{problem}; it looks like {hint}"
        return problem

    return compare


def _torch_generator(seed: int):
    """A seeded torch generator, so that the checks never touch the notebook's global random state."""
    import torch

    return torch.Generator().manual_seed(seed)


def _randomize_(module: Any, gen: Any) -> Any:
    """Fill every parameter of ``module`` with seeded N(0, 1/fan_in) values (biases too, so that they matter)."""
    import torch

    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) / param.shape[-1] ** 0.5)
    return module


# ---------------------------------------------------------------------------------------------------------------------
# Chapter 02 checks: the vision encoder (molmo_lite.vision).
# ---------------------------------------------------------------------------------------------------------------------


@check("02_vision_encoder", "patchify")
def check_patchify(namespace: dict) -> None:
    """patchify(images, patch_size) equals molmo_lite.vision.patchify_images on 30 random batches (square and not,
    1 or 3 channels, patch sizes 1 to 14)."""
    import torch

    from molmo_lite import vision

    rng, gen = random.Random(21), _torch_generator(21)
    cases = []
    for _ in range(30):
        p = rng.choice((1, 2, 3, 4, 7, 14))
        gh, gw = rng.randint(1, 4), rng.randint(1, 4)
        shape = (rng.randint(1, 3), rng.choice((1, 3)), gh * p, gw * p)
        cases.append((torch.randn(shape, generator=gen), p))

    def reference(images: Any, patch_size: int) -> tuple:
        b, c, h, w = images.shape
        channels_first = images.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # [B,C,gh,gw,P,P]
        channels_first = channels_first.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * patch_size**2)
        return vision.patchify_images(images, patch_size), {"each patch is in (c, dy, dx) order": channels_first}

    student = _student_function(namespace, "patchify")
    _compare_on_cases(
        "patchify", ("images", "patch_size"), student, reference, cases, _with_hint(_float_array_mismatch)
    )


def _package_patch_embedding(conv_weight: Any) -> Any:
    """The linear patch-embedding weight molmo_lite makes of an open_clip ``conv1.weight`` when it loads CLIP."""
    import torch

    from molmo_lite import config, vision

    width, channels, p, _ = conv_weight.shape
    state = {
        "conv1.weight": conv_weight, "class_embedding": torch.zeros(width),
        "positional_embedding": torch.zeros(2, width), "ln_pre.weight": torch.ones(width),
        "ln_pre.bias": torch.zeros(width),
    }
    cfg = config.VisionConfig(image_size=p, patch_size=p, width=width, layers=0, num_layers_used=None,
                              output_dim=None)
    return vision.state_from_open_clip(state, cfg)["patch_embedding.weight"]


@check("02_vision_encoder", "conv_to_linear")
def check_conv_to_linear(namespace: dict) -> None:
    """conv_to_linear(conv_weight) equals the patch-embedding weight molmo_lite's open_clip loader makes, on 20 random
    conv weights (so that patches in (dy, dx, c) order times its transpose reproduce the convolution)."""
    import torch

    rng, gen = random.Random(22), _torch_generator(22)
    shapes = [(rng.choice((1, 4, 8, 32)), rng.choice((1, 3)), p, p) for p in (rng.choice((1, 2, 3, 5, 14))
                                                                             for _ in range(20))]
    cases = [(torch.randn(shape, generator=gen),) for shape in shapes]

    def reference(conv_weight: Any) -> tuple:
        plain = conv_weight.reshape(conv_weight.shape[0], -1)
        return _package_patch_embedding(conv_weight), {"a plain reshape, whose columns are in (c, dy, dx) order": plain}

    student = _student_function(namespace, "conv_to_linear")
    _compare_on_cases("conv_to_linear", ("conv_weight",), student, reference, cases, _with_hint(_float_array_mismatch))


@check("02_vision_encoder", "interpolate_positions")
def check_interpolate_positions(namespace: dict) -> None:
    """interpolate_positions(pos, grid) equals molmo_lite.vision.interpolate_position_embeddings on 24 random tables
    (up- and downsampling, rectangular grids, the unchanged grid)."""
    import torch

    from molmo_lite import vision

    rng, gen = random.Random(23), _torch_generator(23)
    cases = []
    for k in range(24):
        g = rng.choice((2, 3, 4, 6, 24))
        grid = (g, g) if k % 6 == 0 else (rng.randint(1, 2 * g), rng.randint(1, 2 * g))
        cases.append((torch.randn(1 + g * g, rng.choice((1, 4, 8)), generator=gen), grid))

    def reference(pos: Any, grid: tuple) -> Any:
        return vision.interpolate_position_embeddings(pos, grid)

    student = _student_function(namespace, "interpolate_positions")
    _compare_on_cases("interpolate_positions", ("pos", "grid"), student, reference, cases, _float_array_mismatch)


def _cls_hint(mismatch: Callable[[Any, Any], str | None]) -> Callable[[Any, Any], str | None]:
    """Add "did you drop CLS?" to a shape mismatch with one token too many."""

    def compare(got: Any, expected: Any) -> str | None:
        problem = mismatch(got, expected)
        shape = tuple(getattr(got, "shape", ()))
        if problem and len(shape) == 3 and shape[1] == expected.shape[1] + 1:
            problem += " (the CLS token, position 0 of every block output, must be dropped)"
        return problem

    return compare


@check("02_vision_encoder", "select_features")
def check_select_features(namespace: dict) -> None:
    """select_features(hidden_states, layers) equals molmo_lite's VisionTransformer.features on a small random ViT of
    6 blocks, for 10 layer selections (negative, positive, repeated, unsorted)."""
    import torch

    from molmo_lite import config, vision

    torch_state = torch.random.get_rng_state()  # the ViT's init must not move the notebook's random state
    try:
        torch.manual_seed(24)
        runs = []
        for image_size, batch in ((28, 2), (42, 1)):
            cfg = config.VisionConfig(image_size=image_size, patch_size=14, width=16, layers=6, heads=2, mlp_width=32,
                                      act="gelu", num_layers_used=None, feature_layers=(-1,), output_dim=None)
            vit = vision.VisionTransformer(cfg).eval()
            images = torch.randn(batch, 3, image_size, image_size)
            with torch.no_grad():
                runs.append((vit, images, vit(images)))
    finally:
        torch.random.set_rng_state(torch_state)
    selections = [(-1,), (-2, -5), (0, 3), (-6,), (5, 0, -3), (1, 1), (-1, -2, -3, -4), (2,), (-3, 4), (-5, -2)]
    features_of = {id(hidden): (vit, images) for vit, images, hidden in runs}  # a case's hidden states -> its run
    cases = [(runs[k % 2][2], layers) for k, layers in enumerate(selections)]

    def reference(hidden: list, layers: tuple) -> Any:
        vit, images = features_of[id(hidden)]
        with torch.no_grad():
            return vit.features(images, layers)

    student = _student_function(namespace, "select_features")
    _compare_on_cases(
        "select_features", ("hidden_states", "layers"), student, reference, cases, _cls_hint(_float_array_mismatch)
    )


# ---------------------------------------------------------------------------------------------------------------------
# Chapter 03 checks: the connector (molmo_lite.connector).
# ---------------------------------------------------------------------------------------------------------------------


def _random_pad_fraction(shape: tuple, gen: Any) -> Any:
    """Fractions of real pixels: about a third exactly 1, a third exactly 0, the rest in between (0.5 included)."""
    import torch

    kind = torch.randint(0, 3, shape, generator=gen)
    between = torch.rand(shape, generator=gen).clamp(0.01, 0.99)
    between[torch.rand(shape, generator=gen) < 0.1] = 0.5
    return torch.where(kind == 0, torch.ones(shape), torch.where(kind == 1, torch.zeros(shape), between))


def _random_windows(gen: Any, n_tokens: int, k: int, dim: int, empty_rows: bool) -> tuple:
    """windows [T, k, dim] with large junk in the padding slots (they must be ignored), valid bool [T, k] with full
    rows, partial rows and, if ``empty_rows``, rows without any valid slot."""
    import torch

    valid = torch.rand(n_tokens, k, generator=gen) < 0.6
    valid[0] = True  # a full window
    if n_tokens > 1:
        valid[1] = False
        valid[1, 0] = True  # a window of one
    if empty_rows and n_tokens > 2:
        valid[2] = False
    windows = torch.randn(n_tokens, k, dim, generator=gen)
    junk = 10 * torch.randn(n_tokens, k, dim, generator=gen)
    return torch.where(valid[..., None], windows, junk), valid


@check("03_connector", "add_pad_embeddings")
def check_add_pad_embeddings(namespace: dict) -> None:
    """add_pad_embeddings(features, pad_fraction, pad_embed) equals molmo_lite.connector.PadEmbedding on 20 random
    cases mixing real (fraction 1), fully padded (0) and partially padded patches."""
    import torch

    from molmo_lite import connector

    rng, gen = random.Random(31), _torch_generator(31)
    cases = []
    for _ in range(20):
        crops, patches, dim = rng.randint(1, 3), rng.choice((1, 4, 9, 16)), rng.choice((1, 4, 8))
        cases.append((torch.randn(crops, patches, dim, generator=gen),
                      _random_pad_fraction((crops, patches), gen), torch.randn(2, dim, generator=gen)))

    def reference(features: Any, pad_fraction: Any, pad_embed: Any) -> Any:
        module = connector.PadEmbedding(features.shape[-1])
        with torch.no_grad():
            module.pad_embed.copy_(pad_embed)
            return module(features, pad_fraction)

    student = _student_function(namespace, "add_pad_embeddings")
    _compare_on_cases(
        "add_pad_embeddings", ("features", "pad_fraction", "pad_embed"), student, reference, cases,
        _float_array_mismatch,
    )


@check("03_connector", "mean_query")
def check_mean_query(namespace: dict) -> None:
    """mean_query(windows, valid) is the mean of each window's valid members (0 without any) on 20 random cases, the
    query molmo_lite.connector.AttentionPool computes."""
    import torch

    rng, gen = random.Random(32), _torch_generator(32)
    cases = [_random_windows(gen, rng.randint(3, 8), rng.choice((1, 2, 4, 9)), rng.choice((1, 3, 8)), True)
             for _ in range(20)]

    def reference(windows: Any, valid: Any) -> tuple:
        members = windows.masked_fill(~valid[..., None], 0.0)  # as AttentionPool.forward does
        mean = members.sum(1) / valid.sum(-1, keepdim=True).clamp(min=1).to(windows.dtype)
        wrong = {"the mean over all k slots, padding included": windows.mean(1),
                 "the sum of the valid members divided by k": members.mean(1)}
        return mean, wrong

    student = _student_function(namespace, "mean_query")
    _compare_on_cases("mean_query", ("windows", "valid"), student, reference, cases, _with_hint(_float_array_mismatch))


@check("03_connector", "attention_pool")
def check_attention_pool(namespace: dict) -> None:
    """attention_pool(windows, valid, wq, wk, wv, wo, heads) equals molmo_lite.connector.AttentionPool with the same
    random layers on 20 cases (1 to 4 heads, padding slots holding junk, windows without any valid slot)."""
    import torch

    from molmo_lite import connector

    rng, gen = random.Random(33), _torch_generator(33)
    cases = []
    for k in range(20):
        dim, heads, head_dim = rng.choice((4, 8, 12)), rng.choice((1, 2, 4)), rng.choice((2, 4))
        pool_dim = rng.choice((3, 8))
        pool = _randomize_(connector.AttentionPool(dim, pool_dim, heads, head_dim), gen)
        windows, valid = _random_windows(gen, rng.randint(3, 6), rng.choice((1, 4, 9)), dim, empty_rows=k % 2 == 1)
        cases.append((windows, valid, pool.wq, pool.wk, pool.wv, pool.wo, heads))

    def reference(windows: Any, valid: Any, wq: Any, wk: Any, wv: Any, wo: Any, heads: int) -> Any:
        pool = connector.AttentionPool(wq.in_features, wo.out_features, heads, wq.out_features // heads)
        pool.wq, pool.wk, pool.wv, pool.wo = wq, wk, wv, wo
        with torch.no_grad():
            return pool(windows, valid)

    student = _student_function(namespace, "attention_pool")
    _compare_on_cases(
        "attention_pool", ("windows", "valid", "wq", "wk", "wv", "wo", "heads"), student, reference, cases,
        _float_array_mismatch,
    )


@check("03_connector", "swiglu")
def check_swiglu(namespace: dict) -> None:
    """swiglu(x, w1, w2, w3) equals molmo_lite.connector.SwiGLUProjector with the same random layers on 12 cases."""
    import torch

    from molmo_lite import connector

    rng, gen = random.Random(34), _torch_generator(34)
    cases = []
    for _ in range(12):
        dim, hidden, out = rng.choice((1, 4, 8)), rng.choice((4, 16, 32)), rng.choice((2, 8))
        projector = _randomize_(connector.SwiGLUProjector(dim, hidden, out), gen)
        shape = (rng.randint(1, 6), dim) if rng.random() < 0.5 else (2, rng.randint(1, 4), dim)
        cases.append((torch.randn(shape, generator=gen), projector.w1, projector.w2, projector.w3))

    def reference(x: Any, w1: Any, w2: Any, w3: Any) -> Any:
        projector = connector.SwiGLUProjector(w1.in_features, w1.out_features, w2.out_features)
        projector.w1, projector.w2, projector.w3 = w1, w2, w3
        with torch.no_grad():
            return projector(x)

    student = _student_function(namespace, "swiglu")
    _compare_on_cases("swiglu", ("x", "w1", "w2", "w3"), student, reference, cases, _float_array_mismatch)


# ---------------------------------------------------------------------------------------------------------------------
# Chapter 04 checks: the language model (molmo_lite.llm).
# ---------------------------------------------------------------------------------------------------------------------


def _bool_array_mismatch(got: Any, expected: Any) -> str | None:
    """Same shape, bool dtype, same values (numpy arrays and torch tensors alike); else where they differ."""
    import numpy as np

    try:
        got = _as_numpy(got)
    except Exception:
        return f"returned a {type(got).__name__}, expected a bool tensor"
    expected = _as_numpy(expected)
    if got.shape != expected.shape:
        return f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype.kind != "b":
        return f"returned dtype {got.dtype}, expected a bool tensor (True = may attend)"
    differ = np.argwhere(got != expected)
    if len(differ) == 0:
        return None
    at = tuple(int(i) for i in differ[0])
    first = f"first at {list(at)}: {bool(got[at])} instead of {bool(expected[at])}"
    return f"is wrong at {len(differ)} of {got.size} positions, {first}"


@check("04_language_model", "rms_norm")
def check_rms_norm(namespace: dict) -> None:
    """rms_norm(x, weight, eps) equals molmo_lite.llm.RMSNorm with the same weight and eps on 24 random cases (2-D and
    3-D inputs, rows with a large mean, eps from 1e-6 to 1 so that where it is added matters)."""
    import torch

    from molmo_lite import llm

    rng, gen = random.Random(41), _torch_generator(41)
    cases = []
    for _ in range(24):
        dim = rng.choice((1, 2, 8, 33, 64))
        shape = (rng.randint(1, 5), dim) if rng.random() < 0.5 else (rng.randint(1, 3), rng.randint(1, 5), dim)
        x = torch.randn(shape, generator=gen) * rng.choice((0.1, 1.0, 10.0)) + rng.choice((0.0, 0.5, 3.0))
        cases.append((x, 1 + 0.5 * torch.randn(dim, generator=gen), rng.choice((1e-6, 1e-5, 0.1, 1.0))))

    def reference(x: Any, weight: Any, eps: float) -> tuple:
        norm = llm.RMSNorm(x.shape[-1], eps)
        with torch.no_grad():
            norm.weight.copy_(weight)
            expected = norm(x)
        mean_square = x.pow(2).mean(-1, keepdim=True)
        centred = x - x.mean(-1, keepdim=True)
        wrong = {
            "a LayerNorm: RMSNorm does not subtract the mean": centred
            * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight,
            "eps added outside the square root; it goes inside: x / sqrt(mean(x^2) + eps)": x
            / (mean_square.sqrt() + eps) * weight,
            "the weight is missing: multiply the normalised x by weight": x * torch.rsqrt(mean_square + eps),
        }
        return expected, wrong

    student = _student_function(namespace, "rms_norm")
    _compare_on_cases("rms_norm", ("x", "weight", "eps"), student, reference, cases, _with_hint(_float_array_mismatch))


def _random_positions(rng: random.Random, gen: Any, b: int, t: int) -> Any:
    """positions [B, T] (int64) as the model meets them: 0..T-1, shifted by a cache, after left padding, or unsorted.
    Kept below 64: a correct float32 RoPE computed another way drifts by ~position * 1e-7."""
    import torch

    kind = rng.randrange(4)
    if kind == 0:
        return torch.arange(t).expand(b, t).clone()
    if kind == 1:
        return torch.arange(t)[None] + torch.randint(0, 40, (b, 1), generator=gen)
    if kind == 2:
        mask = torch.ones(b, t, dtype=torch.long)
        for row in range(b):
            mask[row, : rng.randint(0, t - 1)] = 0
        return (mask.cumsum(-1) - 1).clamp(min=0)
    return torch.randint(0, 64, (b, t), generator=gen)


@check("04_language_model", "rope")
def check_rope(namespace: dict) -> None:
    """rope(x, positions, theta) equals molmo_lite.llm.apply_rope(x, *rope_cos_sin(positions, d, theta)) on 24 random
    cases (head sizes 2 to 64, thetas 100 to 1e6, positions from a cache offset, left padding or unsorted)."""
    import torch

    from molmo_lite import llm

    rng, gen = random.Random(42), _torch_generator(42)
    cases = []
    for _ in range(24):
        b, h, t, d = rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 7), rng.choice((2, 4, 8, 16, 64))
        cases.append((torch.randn(b, h, t, d, generator=gen), _random_positions(rng, gen, b, t),
                      rng.choice((100.0, 10_000.0, 1_000_000.0))))

    def reference(x: Any, positions: Any, theta: float) -> tuple:
        d = x.shape[-1]
        cos, sin = llm.rope_cos_sin(positions, d, theta)
        angles = positions.double()[..., None] / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        even, odd = x[..., 0::2].double(), x[..., 1::2].double()  # pairs (x[2i], x[2i + 1])
        c, s = angles.cos()[:, None], angles.sin()[:, None]
        interleaved = torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2)
        arange = torch.arange(x.shape[2]).expand(x.shape[0], -1)
        wrong = {
            "interleaved pairs (x[2i], x[2i+1]); molmo_lite (like Qwen2 and OLMo 2) rotates the pairs "
            "(x[i], x[i + d/2]), the first half with the second": interleaved,
            "a rotation the wrong way round (the sign of sin flipped)": llm.apply_rope(x, cos, -sin),
            "positions 0..T-1: use the `positions` given": llm.apply_rope(x, *llm.rope_cos_sin(arange, d, theta)),
        }
        return llm.apply_rope(x, cos, sin), wrong

    student = _student_function(namespace, "rope")
    _compare_on_cases("rope", ("x", "positions", "theta"), student, reference, cases, _with_hint(_float_array_mismatch))


@check("04_language_model", "gqa_attention")
def check_gqa_attention(namespace: dict) -> None:
    """gqa_attention(q, k, v) equals torch's causal scaled_dot_product_attention with each key/value head shared by
    H / KV consecutive query heads (what molmo_lite.llm.Attention computes) on 24 random cases."""
    import torch
    import torch.nn.functional as F

    rng, gen = random.Random(43), _torch_generator(43)
    cases = []
    for k in range(24):
        b, kv, t, d = rng.randint(1, 2), rng.choice((1, 2, 3)), rng.randint(1, 7), rng.choice((2, 4, 8))
        heads = kv * (rng.choice((2, 4)) if k % 4 else 1)  # every fourth case plain multi-head attention
        q = torch.randn(b, heads, t, d, generator=gen)
        cases.append((q, torch.randn(b, kv, t, d, generator=gen), torch.randn(b, kv, t, d, generator=gen)))

    def reference(q: Any, k: Any, v: Any) -> tuple:
        group = q.shape[1] // k.shape[1]
        k_rep, v_rep = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        k_tiled, v_tiled = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
        wrong = {
            "`repeat` (kv heads 0, 1, 0, 1, ...): query head h shares kv head h // (H // KV), so use "
            "`repeat_interleave` (0, 0, 1, 1, ...)": F.scaled_dot_product_attention(q, k_tiled, v_tiled,
                                                                                     is_causal=True),
            "attention without the causal mask: query t must not see keys after t": F.scaled_dot_product_attention(
                q, k_rep, v_rep),
            "scores divided by d instead of sqrt(d)": F.scaled_dot_product_attention(
                q, k_rep, v_rep, is_causal=True, scale=1 / q.shape[-1]),
        }
        return F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True), wrong

    student = _student_function(namespace, "gqa_attention")
    _compare_on_cases("gqa_attention", ("q", "k", "v"), student, reference, cases, _with_hint(_float_array_mismatch))


@check("04_language_model", "causal_padding_mask")
def check_causal_padding_mask(namespace: dict) -> None:
    """causal_padding_mask(attention_mask) equals molmo_lite.llm.build_mask(attention_mask, B, T, 0, ...) on 30 random
    padding masks (none, left, right, holes, all padding; 0/1 integers and bools)."""
    import torch

    from molmo_lite import llm

    rng, gen = random.Random(44), _torch_generator(44)
    cases = []
    for k in range(30):
        b, t = rng.randint(1, 4), rng.randint(1, 8)
        mask = torch.ones(b, t, dtype=torch.long)
        for row in range(b):
            kind = (k + row) % 5
            if kind == 1:  # left padding
                mask[row, : rng.randint(1, t)] = 0
            elif kind == 2:  # right padding
                mask[row, rng.randint(0, t - 1):] = 0
            elif kind == 3:  # holes anywhere
                mask[row] = (torch.rand(t, generator=gen) < 0.6).long()
            elif kind == 4 and row == b - 1:  # a row of padding only
                mask[row] = 0
        cases.append((mask.bool() if k % 3 == 2 else mask,))

    def reference(attention_mask: Any) -> tuple:
        b, t = attention_mask.shape
        real = attention_mask.bool()
        causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]

        def attend_all_if_empty(allowed: Any) -> Any:
            return allowed | ~allowed.any(dim=-1, keepdim=True)

        wrong = {
            "rows with no key allowed were left all False (the softmax of a row of -inf is NaN): a query with no "
            "real key at or before it must attend to every key instead": causal & real[:, None, None, :],
            "the padding mask applied to the queries (rows) instead of the keys (columns)": attend_all_if_empty(
                causal & real[:, None, :, None]),
            "the causal part is missing: query i must not see keys after i": attend_all_if_empty(
                real[:, None, None, :].expand(b, 1, t, t)),
        }
        return llm.build_mask(attention_mask, b, t, 0, attention_mask.device), wrong

    student = _student_function(namespace, "causal_padding_mask")
    _compare_on_cases(
        "causal_padding_mask", ("attention_mask",), student, reference, cases, _with_hint(_bool_array_mismatch)
    )


def _tiny_llms(seed: int) -> list:
    """Two small random LLMs in eval mode: Qwen2-style (GQA, q/k/v biases) and OLMo 2-style (q/k norms, norms after)."""
    from molmo_lite import config, llm

    gen = _torch_generator(seed)
    common = dict(vocab_size=50, hidden=16, intermediate=32, rope_theta=10_000.0, additional_vocab=0)
    configs = [
        config.LLMConfig(layers=2, heads=4, kv_heads=2, qkv_bias=True, **common),
        config.LLMConfig(layers=2, heads=2, kv_heads=2, qkv_bias=False, qk_norm=True, norm_after=True,
                         tie_embeddings=True, **common),
    ]
    return [_randomize_(llm.LLM(cfg), gen).eval() for cfg in configs]


def _forbidden_generate(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("greedy_decode must not call model.generate: write the decoding loop yourself")


@contextmanager
def _count_model_tokens(model: Any) -> Iterator[list[int]]:
    """Record the number of tokens of every forward call of ``model`` (and forbid ``model.generate``) in the block."""
    seen: list[int] = []

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        tokens = args[0] if args and args[0] is not None else kwargs.get("input_ids")
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        seen.append(int(tokens.shape[1]) if tokens is not None and tokens.dim() >= 2 else -1)

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    model.generate = _forbidden_generate  # an instance attribute hides the method
    try:
        yield seen
    finally:
        handle.remove()
        del model.generate


@check("04_language_model", "greedy_decode")
def check_greedy_decode(namespace: dict) -> None:
    """greedy_decode(model, input_ids, max_new_tokens) returns the tokens molmo_lite.llm.LLM.generate picks, on 12
    random prompts for two small random LLMs (Qwen2- and OLMo 2-style), and runs the model on each token once: the
    whole prompt first, then only the newest token per step (the KV cache holds the rest)."""
    import torch

    torch_state = torch.random.get_rng_state()  # building the models must not move the notebook's random state
    try:
        models = _tiny_llms(45)
    finally:
        torch.random.set_rng_state(torch_state)
    rng, gen = random.Random(45), _torch_generator(45)
    cases = []
    for k in range(12):
        b, t = rng.randint(1, 3), rng.randint(1, 6)
        cases.append((models[k % 2], torch.randint(0, 50, (b, t), generator=gen), rng.randint(1, 8)))

    def reference(model: Any, input_ids: Any, max_new_tokens: int) -> Any:
        return model.generate(input_ids, max_new_tokens=max_new_tokens)

    student = _student_function(namespace, "greedy_decode")
    _compare_on_cases(
        "greedy_decode", ("model", "input_ids", "max_new_tokens"), student, reference, cases, _index_array_mismatch
    )
    model, input_ids, n = models[0], torch.randint(0, 50, (2, 5), generator=gen), 4
    with _count_model_tokens(model) as seen, _time_limit(_student_time_limit), torch.no_grad():
        student(model, input_ids.clone(), n)
    prompt = input_ids.shape[1]
    if not seen or seen[0] != prompt or any(s != 1 for s in seen[1:]) or len(seen) > n + 1:
        raise AssertionError(
            f"greedy_decode(model, input_ids=<int64 tensor {list(input_ids.shape)}>, max_new_tokens={n}) returned "
            f"the right tokens but ran the model on {seen} tokens per call; with a KVCache run it once on the "
            f"{prompt}-token prompt, then on the newest token alone ([{prompt}] + [1] * {n - 1})"
        )

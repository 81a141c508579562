"""What the chapter checks (molmo_lite/checks/) need from grading, below both grading and the checks.

``molmo_lite.grading`` imports the checks (``molmo_lite.checks``, one module per chapter) to run them; the checks import
this module, never grading, so that the imports run one way: grading -> checks -> grading_core (and grading ->
grading_core). It holds

- the registry: ``@check("01_crops", "select_tiling")`` registers ``fn(namespace) -> None``, which looks up what the
  student defined in the notebook's global namespace and raises ``AssertionError`` with a helpful message when it
  disagrees with ``molmo_lite``'s own implementation; ``molmo_lite.grading.checks_for`` reads it back;
- the time limit on the student's code: ``molmo_lite.grading.run_checks`` sets it for its checks
  (``_checks_time_limit``), a check spends it inside ``_student_code_time_limit()`` (``CheckTimeout`` when it runs out);
- the comparison helpers the checks share (``_compare_on_cases``, the ``*_mismatch`` functions, ``_with_hint``, ...).

``molmo_lite.grading`` re-exports all of these under their old names (``from molmo_lite.grading import check`` keeps
working, as INSTRUCTORS.md's hidden checks use it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

CheckFn = Callable[[dict], None]

# ---------------------------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------------------------

_CHECKS: dict[str, dict[str, CheckFn]] = {}


def check(chapter: str, exercise: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn(namespace)`` as the check of ``exercise`` in ``chapter`` (e.g. ``"01_crops"``)."""

    def register(fn: CheckFn) -> CheckFn:
        _CHECKS.setdefault(chapter, {})[exercise] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------------------------------------
# The time limit on the student's code
# ---------------------------------------------------------------------------------------------------------------------

_student_time_limit: float | None = None  # seconds each check may spend in the student's code; set by run_checks


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


@contextmanager
def _checks_time_limit(seconds: float | None) -> Iterator[None]:
    """Give each check run in the block ``seconds`` for the student's code (``molmo_lite.grading.run_checks``)."""
    global _student_time_limit
    previous, _student_time_limit = _student_time_limit, seconds
    try:
        yield
    finally:
        _student_time_limit = previous


def _student_code_time_limit():
    """The block runs the student's code: CheckTimeout once it takes longer than run_checks' limit (none outside
    run_checks)."""
    return _time_limit(_student_time_limit)


# ---------------------------------------------------------------------------------------------------------------------
# Helpers of the chapter checks (molmo_lite/checks/chNN_*.py). Each check compares the student's function, found by
# name in the notebook's globals, with molmo_lite's.
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
    if isinstance(value, list) and value and all(hasattr(v, "shape") and hasattr(v, "dtype") for v in value):
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
    with _student_code_time_limit():
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


def _as_comparable_arrays(got: Any, expected: Any, kinds: str, wanted: str) -> tuple[Any, Any] | str:
    """Both answers as numpy arrays, or a message when the student's has the wrong type, shape or dtype kind."""
    try:
        got = _as_numpy(got)
    except Exception:
        return f"returned a {type(got).__name__}, expected {wanted}"
    expected = _as_numpy(expected)
    if got.shape != expected.shape:
        return f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype.kind not in kinds:
        return f"returned dtype {got.dtype}, expected {wanted}"
    return got, expected


def _exact_array_mismatch(got: Any, expected: Any, kinds: str = "iu", wanted: str = "an integer array") -> str | None:
    """Same shape, a dtype of ``kinds`` (numpy kind letters), equal values (numpy arrays and torch tensors alike);
    else where they differ."""
    import numpy as np

    arrays = _as_comparable_arrays(got, expected, kinds, wanted)
    if isinstance(arrays, str):
        return arrays
    got, expected = arrays
    differ = np.argwhere(got != expected)
    if len(differ) == 0:
        return None
    at = tuple(int(i) for i in differ[0])
    first = f"first at {list(at)}: {got[at]} instead of {expected[at]}"
    return f"is wrong at {len(differ)} of {got.size} positions, {first}"


def _index_array_mismatch(got: Any, expected: Any) -> str | None:
    """Integer arrays that must be equal (e.g. patch indices)."""
    return _exact_array_mismatch(got, expected)


# ---------------------------------------------------------------------------------------------------------------------
# Float tensors: the helpers of the chapter 02+ checks.
# ---------------------------------------------------------------------------------------------------------------------

FLOAT_TOLERANCE = 1e-5  # absolute and relative, for float outputs compared with molmo_lite's


def _float_array_mismatch(got: Any, expected: Any, tolerance: float = FLOAT_TOLERANCE) -> str | None:
    """Same shape and the same values within ``tolerance`` (numpy arrays and torch tensors alike); else where not."""
    import numpy as np

    arrays = _as_comparable_arrays(got, expected, "fiub", "a float tensor")
    if isinstance(arrays, str):
        return arrays
    got, expected = arrays
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

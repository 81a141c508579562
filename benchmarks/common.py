"""What every benchmark shares: the machine it ran on, and writing its JSON and its table into the page that quotes it
(``PAGES``: the syllabus in README.md, every measured table in docs/benchmarks.md, the oracle's in docs/recipes.md)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS_PAGE = ROOT / "docs" / "benchmarks.md"
RECIPES_PAGE = ROOT / "docs" / "recipes.md"

# benchmark name -> the page that holds its table, between its <!-- NAME-benchmark --> markers
PAGES: dict[str, Path] = {
    "notebooks": README,  # the syllabus
    **dict.fromkeys(("course_run", "recipes", "preprocess", "decode", "train", "data", "quantize", "load",
                     "distributed", "summary"), BENCHMARKS_PAGE),
    "oracle": RECIPES_PAGE,
    "pointing_only": RECIPES_PAGE,
}


def page(name: str) -> Path:
    """The page that holds benchmark ``name``'s table (``PAGES``; README.md for a name it does not list)."""
    return PAGES.get(name, README)


def machine_info() -> dict:
    """The hardware and library versions a figure was measured with."""
    import transformers

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def markers(name: str) -> tuple[str, str]:
    """The HTML comments around a benchmark's table in its page."""
    return f"<!-- {name}-benchmark -->", f"<!-- /{name}-benchmark -->"


def readme_block(name: str, readme: Path | None = None) -> str:
    """The table between benchmark ``name``'s markers in the page that holds it (``page(name)``), or in ``readme``."""
    start, end = markers(name)
    return (readme or page(name)).read_text().split(start, 1)[1].split(end, 1)[0].strip()


def publish(name: str, result: dict, table: str, out: Path, update_page: bool = True) -> None:
    """Write ``result`` as JSON to ``out`` and, unless told not to, replace the table in its page with ``table``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out)
    if update_page:
        replace_block(name, table)


def replace_block(name: str, table: str, path: Path | None = None) -> None:
    """Replace the text between benchmark ``name``'s markers in ``path`` (default: ``page(name)``)."""
    path = path or page(name)
    start, end = markers(name)
    text = path.read_text()
    head, rest = text.split(start, 1)
    path.write_text(head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])
    print("updated", path)


def best_seconds(fns: dict[str, Callable[[], object]], rounds: int, repeat: int = 1,
                 warmup: bool = False) -> dict[str, float]:
    """Seconds per call of each candidate: the best of ``rounds`` timings of ``repeat`` consecutive calls, the
    candidates taking turns in a rotating order so that all of them meet the same machine state. ``warmup``: call
    each once, untimed, first."""
    names = list(fns)
    if warmup:
        for name in names:
            fns[name]()
    best = dict.fromkeys(names, float("inf"))
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            for _ in range(repeat):
                fns[name]()
            best[name] = min(best[name], (time.perf_counter() - start) / repeat)
    return best

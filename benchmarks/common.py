"""What every benchmark shares: the machine it ran on, and writing its JSON and its README table."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def machine_info() -> dict:
    """The hardware and library versions a figure was measured with."""
    import transformers

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def markers(name: str) -> tuple[str, str]:
    """The HTML comments around a benchmark's table in README.md."""
    return f"<!-- {name}-benchmark -->", f"<!-- /{name}-benchmark -->"


def readme_block(name: str, readme: Path = README) -> str:
    """The table the README (or another page: ``readme``) quotes for benchmark ``name``."""
    start, end = markers(name)
    return readme.read_text().split(start, 1)[1].split(end, 1)[0].strip()


def publish(name: str, result: dict, table: str, out: Path, update_readme: bool = True) -> None:
    """Write ``result`` as JSON to ``out`` and, unless told not to, replace the README's table with ``table``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out)
    if update_readme:
        replace_block(name, table)


def replace_block(name: str, table: str, path: Path = README) -> None:
    """Replace the text between benchmark ``name``'s markers in ``path`` (README.md, or a page of docs/)."""
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

"""What every dataset of the course yields: an ``Example`` (one image and all its annotations), real or synthetic.

As in Molmo, rows about the same image are grouped: one Example holds N annotations (each a conversation of one or
more ``prompts.Message``), so that training can pack them into one sequence and encode the image once.

    Example(image=uint8 [H, W, 3] or a local file path or None,
            messages=[[Message(None, "a red circle at ...", "long_caption")],
                      [Message("How many circles are there?", "Counting the <points ...> shows a total of 2.",
                               "point_count")]],
            task="counting", meta={"points": [(x, y), ...], "count": 2, "label": "circles"})

``meta`` keeps the ground truth the text was written from (points in 0-100, counts, the clock time, the chart data),
so that evaluation and tests never have to parse it back out of the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..prompts import Message

SPLITS = ("train", "heldout", "shift")  # separate seed streams; "shift": held-out scenes of another renderer


@dataclass
class Example:
    image: np.ndarray | str | Path | None
    messages: list[list[Message]]
    task: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_annotations(self) -> int:
        return len(self.messages)


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
    """The seed stream of a split: ``train``, ``heldout`` and ``shift`` never share random numbers for the same
    seed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split),))


def examples_of(make: Callable[[np.random.Generator], Example], n: int, seed: int = 0, split: str = "train"
                ) -> list[Example]:
    """A pool: n examples of the one-example generator ``make(rng)``, drawn in turn from the split's seed stream."""
    rng = np.random.default_rng(split_seed(seed, split))
    return [make(rng) for _ in range(n)]

"""The README tells the truth: its quick start, its chapters and the figures it quotes."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import decode
from benchmarks.preprocess import MARKERS, readme_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quick_start_has_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start


def test_benchmark_table_comes_from_the_benchmark_json():
    result = json.loads((ROOT / "benchmarks" / "results" / "preprocess.json").read_text())
    quoted = README.split(MARKERS[0], 1)[1].split(MARKERS[1], 1)[0].strip()
    assert quoted == readme_table(result), "rerun `python benchmarks/preprocess.py` to refresh the README"


def test_decode_benchmark_table_comes_from_the_benchmark_json():
    result = json.loads((ROOT / "benchmarks" / "results" / "decode.json").read_text())
    quoted = README.split(decode.MARKERS[0], 1)[1].split(decode.MARKERS[1], 1)[0].strip()
    assert quoted == decode.readme_table(result), "rerun `python benchmarks/decode.py` to refresh the README"


def test_ready_chapters_exist():
    for line in README.splitlines():
        if line.startswith("| [") and line.rstrip().endswith("| ready |"):
            link = line.split("](", 1)[1].split(")", 1)[0]
            assert (ROOT / link).exists(), link

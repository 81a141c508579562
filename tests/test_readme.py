"""The README tells the truth: its quick start, its chapters and the figures it quotes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import course_run, data, decode, distributed, load, notebooks, preprocess, quantize, recipes, train
from benchmarks.__main__ import summary
from benchmarks.common import readme_block

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quick_start_has_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start


@pytest.mark.parametrize("name, module", [("preprocess", preprocess), ("decode", decode), ("data", data),
                                                  ("course_run", course_run), ("train", train),
                                                  ("quantize", quantize), ("distributed", distributed),
                                                  ("notebooks", notebooks), ("recipes", recipes),
                                                  ("load", load)])
def test_benchmark_tables_come_from_the_benchmark_json(name, module):
    result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
    assert readme_block(name) == module.readme_table(result), f"rerun `python -m benchmarks.{name}` to refresh the README"


def test_the_summary_table_is_rebuilt_from_every_benchmark_json():
    """`python -m benchmarks` gathers one ratio per figure; README and results.json must match the JSON files."""
    results = {name: json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
               for name in ("preprocess", "decode", "data", "train", "quantize", "distributed")}
    result, table = summary(results)
    assert readme_block("summary") == table, "rerun `python -m benchmarks --summary-only`"
    saved = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    assert saved["rows"] == result["rows"]


def test_the_syllabus_lists_every_chapter_notebook_with_its_measured_minutes():
    """The syllabus is written by benchmarks/notebooks.py; its last run must have measured every chapter there is."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "notebooks.json").read_text())["seconds"]
    chapters = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(measured) == chapters, "rerun `python -m benchmarks.notebooks` (--only NN for new chapters)"
    for name in chapters:
        assert f"](notebooks/{name})" in readme_block("notebooks")

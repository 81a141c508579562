"""The README and the pages of docs/ that quote measurements tell the truth: the README's quick start, its chapters
and its headline, and every benchmark table in the page that holds it (benchmarks.common.PAGES)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import course_run, data, decode, distributed, load, notebooks, preprocess, quantize, recipes, train
from benchmarks import oracle as oracle_benchmark
from benchmarks.__main__ import summary
from benchmarks.common import PAGES, README as README_PATH, markers, page, readme_block

ROOT = Path(__file__).resolve().parents[1]
README = README_PATH.read_text()
RESULTS = ROOT / "benchmarks" / "results"


def test_quick_start_has_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start


def test_the_syllabus_table_starts_within_the_first_40_lines():
    """A newcomer sees the chapters on the first screen: the README's front matter stays short."""
    lines = README.splitlines()
    start = lines.index(markers("notebooks")[0])
    assert lines[start + 1].startswith("| chapter |"), "the syllabus table must follow its marker"
    assert start + 2 <= 40, f"the syllabus table starts at line {start + 2}; keep what comes before it short"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_benchmark_table_is_in_its_page_and_only_there(name):
    pages = [README_PATH, *sorted((ROOT / "docs").glob("*.md"))]
    start, end = markers(name)
    holding = [p.relative_to(ROOT) for p in pages if start in p.read_text() or end in p.read_text()]
    assert holding == [page(name).relative_to(ROOT)], f"{name}'s table is in {holding}, PAGES says {page(name)}"
    text = page(name).read_text()
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)


@pytest.mark.parametrize("name, module", [("preprocess", preprocess), ("decode", decode), ("data", data),
                                          ("course_run", course_run), ("train", train),
                                          ("quantize", quantize), ("distributed", distributed),
                                          ("notebooks", notebooks), ("recipes", recipes),
                                          ("load", load)])
def test_benchmark_tables_come_from_the_benchmark_json(name, module):
    result = json.loads((RESULTS / f"{name}.json").read_text())
    assert readme_block(name) == module.readme_table(result), \
        f"rerun `python -m benchmarks.{name}` to refresh its table in {page(name).relative_to(ROOT)}"


def test_the_summary_table_is_rebuilt_from_every_benchmark_json():
    """`python -m benchmarks` gathers one ratio per figure; its page and results.json must match the JSON files."""
    results = {name: json.loads((RESULTS / f"{name}.json").read_text())
               for name in ("preprocess", "decode", "data", "train", "quantize", "distributed")}
    result, table = summary(results)
    assert readme_block("summary") == table, "rerun `python -m benchmarks --summary-only`"
    saved = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    assert saved["rows"] == result["rows"]


def test_the_syllabus_lists_every_chapter_notebook_with_its_measured_minutes():
    """The syllabus is written by benchmarks/notebooks.py; its last run must have measured every chapter there is."""
    measured = json.loads((RESULTS / "notebooks.json").read_text())["seconds"]
    chapters = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(measured) == chapters, "rerun `python -m benchmarks.notebooks` (--only NN for new chapters)"
    for name in chapters:
        assert f"](notebooks/{name})" in readme_block("notebooks")


def test_the_headline_quotes_the_measured_figures():
    """The README's "Where the tiny model stands" quotes course_run.json, recipes.json and oracle.json as they are."""
    headline = " ".join(README.split("## Where the tiny model stands", 1)[1].split("\n## ", 1)[0].split())
    run = json.loads((RESULTS / "course_run.json").read_text())
    h, blind = run["headline"], run["blind"]
    assert f"in {run['seconds']['total'] / 60:.1f} minutes" in headline
    assert f"pointing F1 {h['pointing f1']:.2f} and counting exact {h['counting exact']:.2f}" in headline
    assert f"against {blind['pointing']['f1']:.2f} and {blind['counting']['exact']:.2f}" in headline
    assert f"(ratio {run['losses']['pointing']['ratio']:.2f})" in headline
    assert f"clocks within 3 minutes {h['clocks within_3_min']:.2f}" in headline
    assert f"caption object recall {h['captions object_recall']:.2f}" in headline
    measured = json.loads((RESULTS / "recipes.json").read_text())
    earlier = [r["headline"]["pointing f1"] for name, r in measured.items() if name != "v18-claim-eyes-o16"]
    assert f"the {len(earlier)} recipes before it" in headline and f"below pointing F1 {max(earlier):.2f}" in headline
    oracle = {k: r["final"] for k, r in json.loads((RESULTS / "oracle.json").read_text()).items()}
    best, seed1, adamw = (oracle[k] for k in ("o16-qf-length-chunks", "o16-qf-length-chunks-seed1", "o0-adamw"))
    assert oracle_benchmark.DEFAULT == "o16-qf-length-chunks"
    assert f"pointing F1 {best['pointing_f1']:.2f} and counting exact {best['counting_exact']:.2f} in 10" in headline
    assert f"({seed1['pointing_f1']:.2f} and {seed1['counting_exact']:.2f} with another seed)" in headline
    assert f"against F1 {adamw['pointing_f1']:.2f} in 10 minutes" in headline

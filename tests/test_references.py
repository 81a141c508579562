"""The repository stands on its own: every file or chapter the course points at is in it, and no committed output
carries the paths of the machine it ran on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("solutions/*.ipynb"), *ROOT.glob("exercises/*.ipynb")])
PROSE = sorted([ROOT / "README.md", ROOT / "INSTRUCTORS.md", *ROOT.glob("docs/*.md")])
CODE = sorted([*ROOT.glob("molmo_lite/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tests/*.py")])

# A repository path: one of the top-level folders, then a file or folder name. Templates (NN_name, *, {...}) are not
# references to one file and are skipped.
PATH = re.compile(r"(?<![\w./-])((?:docs|notebooks|solutions|exercises|benchmarks|molmo_lite|tests|scripts|"
                  r"data_samples)/[\w./-]*[\w/])")
CHAPTER = re.compile(r"\b[Cc]hapters? (\d{2})(?:\s*(?:-|–|to|and)\s*(\d{2}))?")
RECIPE_SECTION = re.compile(r"docs/molmo_recipe\.md,? (?:section|§) ?(\d+)")
# Results that only a machine this one is not can write: named by the script that writes them, which must exist.
WRITTEN_ELSEWHERE = {"benchmarks/results/gpu.json": "benchmarks/gpu.py"}
MACHINE_PATHS = re.compile(r"(?:/home/|/Users/|/work/|/root/|[A-Z]:\\\\Users)[^\s'\"<]*")


def notebook_text(path: Path, outputs: bool = False) -> str:
    """The sources of every cell (or, with outputs=True, the text of every output)."""
    nb = json.loads(path.read_text())
    if not outputs:
        return "\n".join("".join(c["source"]) for c in nb["cells"])
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts += ["".join(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(texts)


def texts() -> dict[str, str]:
    out = {str(p.relative_to(ROOT)): p.read_text() for p in PROSE + CODE}
    out.update({str(p.relative_to(ROOT)): notebook_text(p) for p in NOTEBOOKS})
    return out


def test_every_repository_path_the_course_names_exists():
    missing = []
    for name, text in texts().items():
        if name == "tests/test_references.py":  # its patterns are not references
            continue
        for match in PATH.finditer(text):
            ref = match.group(1).rstrip(".")
            if re.search(r"NN|\*|\{|<", ref) or re.match(r"molmo_lite/\d", ref):  # templates; a version string
                continue
            if ref in WRITTEN_ELSEWHERE and (ROOT / WRITTEN_ELSEWHERE[ref]).exists():
                continue
            if not (ROOT / ref).exists():
                missing.append(f"{name}: {ref}")
    assert not missing, "\n".join(sorted(set(missing)))


def test_every_chapter_named_has_its_notebook():
    chapters = {p.name[:2] for p in ROOT.glob("notebooks/[0-9][0-9]_*.ipynb")}
    missing = []
    for name, text in texts().items():
        for match in CHAPTER.finditer(text):
            for number in filter(None, match.groups()):
                if number not in chapters:
                    missing.append(f"{name}: chapter {number} ({match.group(0)!r})")
    assert not missing, "\n".join(sorted(set(missing)))


def test_citations_of_the_molmo_facts_resolve_and_none_point_outside():
    recipe = (ROOT / "docs" / "molmo_recipe.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", recipe, flags=re.M))
    assert len(sections) >= 10
    bad = []
    for name, text in texts().items():
        if name == "tests/test_references.py":
            continue
        if "MOLMO_SPEC" in text or "../shared" in text:
            bad.append(f"{name}: cites a file outside the repository")
        bad += [f"{name}: §{n} of docs/molmo_recipe.md does not exist" for n in RECIPE_SECTION.findall(text)
                if n not in sections]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_committed_output_holds_a_machine_path(path):
    text = notebook_text(path, outputs=True)
    found = sorted(set(MACHINE_PATHS.findall(text)) | ({str(ROOT)} if str(ROOT) in text else set()))
    assert not found, f"{path.name}: {found[:5]} (print paths with molmo_lite.config.shown_path)"

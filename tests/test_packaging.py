"""The environment files agree: environment.yml (conda) pins what pyproject.toml (pip) pins, and CI runs make test."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# The course card's packages: each needs a lower bound and a tested cap.
CARD = ["torch", "transformers", "open-clip-torch", "datasets", "matplotlib", "ipywidgets", "jupyterlab", "nbval",
        "bitsandbytes"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    out = {}
    for line in reqs:
        req = Requirement(line)
        if canonical(req.name) != "molmo-lite":
            out[canonical(req.name)] = req
    return out


def environment_pip_lines() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return pip


def test_card_packages_have_lower_bounds_and_caps():
    reqs = pyproject_requirements()
    for name in CARD:
        spec = reqs[name].specifier
        assert any(s.operator == ">=" for s in spec), f"{name}: no lower bound"
        assert any(s.operator in ("<", "<=") for s in spec), f"{name}: no tested cap"
        assert not any(s.operator == "==" for s in spec), f"{name}: exact pin"


def test_environment_yml_agrees_with_pyproject():
    reqs = pyproject_requirements()
    lines = environment_pip_lines()
    assert "-e .[dev]" in lines, "environment.yml must install this package with its dev extra"
    listed = {canonical(Requirement(line).name): Requirement(line) for line in lines if not line.startswith("-e")}
    for name in CARD:
        assert name in listed, f"environment.yml does not list {name}"
    for name, req in listed.items():
        assert name in reqs, f"environment.yml lists {name}, which pyproject.toml does not"
        assert req.specifier == reqs[name].specifier, f"{name}: {req.specifier} vs pyproject {reqs[name].specifier}"


def test_environment_python_satisfies_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    (python,) = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(python.split("=")[-1]) in SpecifierSet(requires)


def test_installed_versions_satisfy_the_bounds():
    """The versions this environment really runs are inside the declared bounds (the caps are tested ones)."""
    from importlib.metadata import version

    for name, req in pyproject_requirements().items():
        assert Version(version(name)) in req.specifier, f"{name} {version(name)} outside {req.specifier}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme

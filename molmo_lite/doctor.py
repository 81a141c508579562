"""``python -m molmo_lite doctor``: what this machine has, and what of the course it can run (chapter 00).

It never touches the network: package versions come from the installed metadata, the device from torch, and the
"going online" facts (Hub cache, offline switches) from the environment and the local cache folders.

    from molmo_lite.doctor import diagnose, report
    print(report(diagnose()))
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# The packages of the course (pyproject.toml), with what each is for; required = the chapters cannot run without it.
PACKAGES: dict[str, tuple[bool, str]] = {
    "torch": (True, "everything"),
    "torchvision": (True, "image transforms"),
    "numpy": (True, "everything"),
    "pillow": (True, "images"),
    "safetensors": (True, "checkpoints"),
    "matplotlib": (True, "figures"),
    "transformers": (True, "reference models (02-05, 11), real backbones"),
    "open_clip_torch": (True, "the CLIP reference (02)"),
    "tokenizers": (True, "the tokenizer (04)"),
    "datasets": (True, "PixMo loaders (07)"),
    "bitsandbytes": (False, "4-bit / 8-bit quantization (11)"),
    "peft": (False, "QLoRA (11)"),
    "jupyterlab": (False, "running the notebooks"),
    "ipywidgets": (False, "progress bars in notebooks"),
    "nbval": (False, "`make test`"),
    "pytest": (False, "`make test`"),
}

# Chapters and what they need beyond the CPU (packages of PACKAGES, space-separated, or "torch.distributed").
CHAPTERS = [
    ("00", "start here", "cpu"), ("01", "crops", "cpu"), ("02", "vision encoder", "cpu"), ("03", "connector", "cpu"),
    ("04", "language model", "cpu"), ("05", "assembling Molmo", "cpu"), ("06", "pointing", "cpu"),
    ("07", "PixMo data", "cpu"), ("08", "stage 1 captioning", "cpu"), ("09", "stage 2 SFT", "cpu"),
    ("10", "evaluation", "cpu"), ("11", "quantized + QLoRA", "bitsandbytes peft"),
    ("12", "multi-GPU", "torch.distributed"), ("13", "released Molmo", "bitsandbytes"),  # 13: NF4 loads, no QLoRA
]


@dataclass(frozen=True)
class Finding:
    """One line of the report: what, its state (ok / missing / warn / info) and details."""

    item: str
    state: str
    detail: str


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_findings() -> list[Finding]:
    """The CPU, and the accelerators torch sees (CUDA GPUs with their memory and bf16 support, Apple MPS)."""
    import torch

    found = [Finding("cpu", "ok", f"{platform.machine()}, {os.cpu_count()} cores, torch uses "
                                  f"{torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            found.append(Finding(f"cuda:{i}", "ok", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 "
                                                     f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}"))
    else:
        found.append(Finding("cuda", "info", "no CUDA GPU: chapters run on the CPU with the tiny preset; the GPU cells "
                                             "say they were skipped"))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        found.append(Finding("mps", "info", "Apple GPU found; used only when asked (MOLMO_LITE_DEVICE=mps)"))
    return found


def package_findings() -> list[Finding]:
    """Every course package: its installed version, or what is missing and what it is for."""
    found = []
    for name, (required, why) in PACKAGES.items():
        version = _version(name)
        if version:
            found.append(Finding(name, "ok", version))
        else:
            found.append(Finding(name, "missing" if required else "warn",
                                 f"not installed (needed for {why}): pip install -e '.[dev]'"))
    return found


def environment_findings() -> list[Finding]:
    """Python, the interpreter in use (is it the project's venv?), the local files the course reads, the Hub."""
    from .config import CHECKPOINT_DIR, shown_path

    root = Path(__file__).resolve().parents[1]
    found = [Finding("python", "ok", f"{platform.python_version()} at {shown_path(sys.executable)}")]
    venv = root / ".venv"
    if venv.exists() and Path(sys.prefix).resolve() != venv.resolve():
        found.append(Finding("kernel", "warn", f"this Python is not the project's venv ({shown_path(venv)}): pick the "
                                               "'molmo_lite' kernel or run `make lab`"))
    samples = root / "data_samples"
    found.append(Finding("data_samples", "ok" if samples.exists() else "warn",
                         shown_path(samples) if samples.exists() else "missing: run from a clone of the repository"))
    cached = sorted(p.name for p in Path(CHECKPOINT_DIR).glob("*") if p.is_dir()) if Path(CHECKPOINT_DIR).exists() \
        else []
    found.append(Finding("checkpoints", "info", f"{shown_path(CHECKPOINT_DIR)}: " + (", ".join(cached) if cached else
                                                "none yet (chapters 02 and 04 train and cache them)")))
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    hub = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    models = sorted(p.name.removeprefix("models--").replace("--", "/") for p in hub.glob("models--*")) \
        if hub.exists() else []
    found.append(Finding("hugging face hub", "info", ("offline mode set; " if offline else "") +
                         (f"cached: {', '.join(models)}" if models else "nothing cached: the real CLIP / Qwen2 "
                          "weights need the network once (README, 'Going online')")))
    return found


def chapter_findings(packages: list[Finding], devices: list[Finding]) -> list[Finding]:
    """Which chapters run here, and what the GPU parts need."""
    have = {f.item for f in packages if f.state == "ok"}
    gpu = any(f.item.startswith("cuda:") for f in devices)
    found = []
    for number, title, needs in CHAPTERS:
        wanted = set(needs.split()) & set(PACKAGES)  # the optional packages it names ("cpu" names none)
        if not wanted <= have:
            found.append(Finding(f"chapter {number}", "warn", f"{title}: install {' and '.join(sorted(wanted))}"))
            continue
        extra = ""
        if number in ("08", "09", "10"):
            extra = "; on a GPU it trains there, in bf16 autocast" + (" (found)" if gpu else "")
        elif number in ("11", "12"):
            extra = "; the 7B recipe and nccl need GPUs" + (" (found)" if gpu else ", skipped here")
        elif number == "13":
            extra = ("; on tiny checkpoints in the released layout: the real Molmo-7B-D is a download (hf download "
                     "allenai/Molmo-7B-D-0924) and 16 GB in bf16, 6.4 GB in NF4")
        found.append(Finding(f"chapter {number}", "ok", f"{title}: runs here{extra}"))
    return found


def diagnose() -> list[Finding]:
    """Everything above, in order: packages, devices, environment, chapters."""
    packages, devices = package_findings(), device_findings()
    return packages + devices + environment_findings() + chapter_findings(packages, devices)


def report(findings: list[Finding]) -> str:
    """The findings as an aligned text table, with a last line saying whether the course can run."""
    width = max(len(f.item) for f in findings)
    lines = [f"{f.item:<{width}}  {f.state:<7}  {f.detail}" for f in findings]
    missing = [f.item for f in findings if f.state == "missing"]
    lines.append("all required packages are installed" if not missing else f"MISSING: {', '.join(missing)}: "
                 "run `make install` (or pip install -e '.[dev]') in the project's folder")
    return "\n".join(lines)


STATE_COLOURS = {"ok": "#2e7d32", "info": "#1565c0", "warn": "#e65100", "missing": "#c62828"}


def report_html(findings: list[Finding]) -> str:
    """The findings as an HTML table for a notebook (states coloured, cells left-aligned, text escaped)."""
    import html

    rows = "".join(f"<tr><td style='text-align:left'><code>{html.escape(f.item)}</code></td>"
                   f"<td style='text-align:left;color:{STATE_COLOURS[f.state]}'><b>{f.state}</b></td>"
                   f"<td style='text-align:left'>{html.escape(f.detail)}</td></tr>" for f in findings)
    return (f"<table><tr><th style='text-align:left'>item</th><th style='text-align:left'>state</th>"
            f"<th style='text-align:left'>detail</th></tr>{rows}</table>")

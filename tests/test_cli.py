"""The command line: `crops`, and `run` (the main job, `make run`), `train`, `evaluate`, `generate`, `doctor`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from molmo_lite.__main__ import main
from molmo_lite.preprocessing import MolmoImageProcessor

ROOT = Path(__file__).resolve().parents[1]


def test_crops_command_writes_figures_and_a_summary_that_matches_the_processor(tmp_path):
    images = ROOT / "data_samples" / "images"
    done = subprocess.run([sys.executable, "-m", "molmo_lite", "crops", str(images), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["images"]) == len(list(images.glob("*.*"))) >= 2
    processor = MolmoImageProcessor()
    for row in summary["images"]:
        expected = processor(row["image"])
        assert tuple(row["tiling"]) == expected.tiling
        assert row["num_image_tokens"] == expected.num_image_tokens
        stem = Path(row["image"]).stem
        for kind in ("layout", "crops", "tokens"):
            assert (tmp_path / f"{stem}_{kind}.png").stat().st_size > 1000
    assert "grace_hopper.jpg" in done.stdout


def test_crops_command_reports_unreadable_images_and_fails(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    done = subprocess.run([sys.executable, "-m", "molmo_lite", "crops", str(bad), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "skipped: not a readable image" in done.stdout


def test_run_quick_writes_the_whole_pipeline_then_evaluate_and_generate_read_it(tmp_path, capsys):
    """`run --quick` on the course's model (the shipped claim ViT and an LLM from a random start: nothing to
    pre-train): both stages, the report, the curves and the figure; then the other commands on its final model."""
    from molmo_lite.__main__ import main

    out = tmp_path / "run"
    assert main(["run", "--quick", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["metrics"]) == {"pointing", "counting", "clocks", "charts", "tables", "captions"}
    assert report["configs"]["sft"]["steps"] == 4 and (out / "sft" / "latest.json").exists()
    for name in ("loss_caption.png", "loss_sft.png", "predictions.png"):
        assert (out / name).stat().st_size > 5000, name
    assert "| pointing | f1 |" in capsys.readouterr().out
    assert main(["evaluate", str(out / "final"), "--n", "2", "--tasks", "clocks", "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["n"] == {"clocks": 2}
    image = ROOT / "data_samples" / "images" / "grace_hopper.jpg"
    assert main(["generate", str(out / "final"), "--image", str(image), "--prompt", "What is this?",
                 "--max-new-tokens", "4"]) == 0


def test_doctor_runs_offline_and_names_the_device_and_every_package_version():
    """As a student runs it: a fresh process, the Hub switched off. Versions are read here independently."""
    from importlib import metadata

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "molmo_lite", "doctor"], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for name in ("torch", "torchvision", "transformers", "open_clip_torch", "datasets", "bitsandbytes", "peft",
                 "matplotlib", "jupyterlab", "nbval"):
        assert metadata.version(name) in lines[name], lines.get(name)
    import torch

    assert "cuda:0" in lines if torch.cuda.is_available() else "no CUDA GPU" in lines["cuda"]
    assert f"{os.cpu_count()} cores" in lines["cpu"]


def test_doctor_says_what_is_missing_and_fails(monkeypatch, capsys):
    from molmo_lite import doctor

    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: None if name == "datasets" else real(name))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "datasets" in out and "MISSING: datasets" in out

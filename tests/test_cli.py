"""`python -m molmo_lite crops`, the main job at this stage of the course (`make run`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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

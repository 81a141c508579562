"""benchmarks/gpu.py in its --dry-run: every section of the GPU check runs on the CPU at toy sizes (the tiny preset,
gloo instead of nccl, bitsandbytes on the CPU), so the script cannot rot before a GPU runs it.

The dry run must produce every section with its figures: a section that disappears, errors or is skipped fails here.
The one exception is the transformers comparison on a transformers without Molmo2 (the section then says so).
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu

pytestmark = pytest.mark.slow

# Every section of the GPU check and the figures it must report (written out here, not read from gpu.SECTIONS, so
# that a section dropped from the script fails the test).
EXPECTED = {
    "train": {"steps_done", "tokens_per_second", "seconds_per_step", "data_seconds_per_step", "peak_memory_bytes",
              "loss_first_mean", "loss_last_mean", "loss_falling", "losses", "parameters"},
    "transformers_molmo2": {"seconds_per_step", "tokens_per_second", "ratio_ours_vs_transformers",
                            "step_time_ratio_ours_over_transformers", "first_step_loss", "peak_memory_bytes",
                            "parameters", "molmo2_config"},
    "quantize": {"memory", "drift", "forward_seconds", "train_step_seconds", "qlora_trainable_parameters",
                 "qlora_speed_vs_full", "train_step_peak_memory_bytes"},
    "torchrun": {"backend", "world_size", "steps", "wall_seconds", "tokens_per_second", "last_loss", "ranks"},
    "decode": {"tokens_per_second", "ratio_cached_vs_uncached", "same_tokens_fraction", "new_tokens"},
}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    before = gpu.RESULT.stat().st_mtime_ns if gpu.RESULT.exists() else None
    returned = gpu.main(["--dry-run", "--out", str(out)])
    after = gpu.RESULT.stat().st_mtime_ns if gpu.RESULT.exists() else None
    assert before == after, "a dry run must not write benchmarks/results/gpu.json"
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(returned))
    return saved


def test_the_dry_run_says_so_and_ran_on_the_cpu(dry_run):
    assert dry_run["dry_run"] is True
    assert dry_run["device"]["type"] == "cpu"
    assert dry_run["sizes"]["preset"] == "tiny"
    assert {"torch", "transformers", "bitsandbytes", "peft"} <= set(dry_run["versions"])
    assert {"cpu", "cores", "torch"} <= set(dry_run["machine"])


def test_every_section_ran_and_reports_its_figures(dry_run):
    sections = dry_run["sections"]
    assert list(sections) == list(EXPECTED), "the GPU check's sections changed: update EXPECTED and the docstring"
    for name, keys in EXPECTED.items():
        section = sections[name]
        assert isinstance(section.get("seconds"), float | int), f"{name}: no wall seconds"
        if name == "transformers_molmo2" and not gpu.molmo2_available():
            assert section.get("error", "").startswith(f"RuntimeError: {gpu.MOLMO2_MISSING}"), section
            continue
        assert "skipped" not in section, f"{name} was skipped: {section['skipped']}"
        assert "error" not in section, f"{name} failed: {section['error']}\n{section.get('traceback', '')}"
        missing = keys - set(section)
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_the_figures_are_sane(dry_run):
    s = dry_run["sections"]
    train = s["train"]
    assert train["steps_done"] == gpu.DRY.train_steps == len(train["losses"])
    assert train["tokens_per_second"] > 0 and train["peak_memory_bytes"] is None  # no CUDA memory on the CPU
    assert all(torch.isfinite(torch.tensor(train["losses"])))  # falling is asserted only on the GPU's 200 steps
    assert train["loader_workers"] == 0 and train["fed_steps"] == gpu.DRY.train_steps  # no workers on the CPU
    assert train["fed_seconds_per_step"] > 0
    if "error" not in s["transformers_molmo2"]:
        assert s["transformers_molmo2"]["ratio_ours_vs_transformers"] > 0
    quant = s["quantize"]
    assert 0 < quant["memory"]["nf4"]["linear_ratio"] < quant["memory"]["int8"]["linear_ratio"] < 1
    assert quant["qlora_trainable_parameters"] < quant["full_parameters"]
    run = s["torchrun"]
    assert run["backend"] == "gloo" and run["world_size"] == 1 and run["steps"] == gpu.DRY.torchrun_steps
    assert set(s["decode"]["tokens_per_second"]) == {"1", "4"}


def test_without_cuda_and_without_dry_run_it_stops_and_names_the_dry_run(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        gpu.main([])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "CUDA" in err and "--dry-run" in err


def test_a_failing_section_is_recorded_and_the_others_still_run(monkeypatch, tmp_path):
    def broken(run):
        raise ValueError("boom")

    monkeypatch.setitem(gpu.SECTIONS, "train", broken)
    monkeypatch.setitem(gpu.SECTIONS, "decode", lambda run: {"fine": True})
    result = gpu.main(["--dry-run", "--only", "train", "decode", "--out", str(tmp_path / "gpu.json")])
    sections = result["sections"]
    assert sections["train"]["error"] == "ValueError: boom" and "seconds" in sections["train"]
    assert sections["decode"]["fine"] is True
    for name in ("transformers_molmo2", "quantize", "torchrun"):
        assert sections[name] == {"skipped": "not selected"}


def test_the_time_budget_skips_what_would_start_after_it(tmp_path):
    result = gpu.main(["--dry-run", "--budget-s", "0", "--out", str(tmp_path / "gpu.json")])
    assert result["sections"] == {name: {"skipped": "time budget"} for name in EXPECTED}

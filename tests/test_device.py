"""The one device/dtype/autocast/seed helper every notebook imports."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from molmo_lite.device import autocast_dtype, pick_device, seed_everything, setup


def draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_everything_repeats_python_numpy_and_torch():
    seed_everything(7)
    first = draws()
    seed_everything(7)
    assert draws() == first
    seed_everything(8)
    assert draws() != first


def test_setup_on_this_machine_is_cpu_fp32_tiny(monkeypatch):
    monkeypatch.delenv("MOLMO_LITE_DEVICE", raising=False)
    monkeypatch.delenv("MOLMO_LITE_SCALE", raising=False)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = setup(seed=3)
    assert env.device == torch.device("cpu") and env.dtype == torch.float32
    assert env.amp_dtype is None and env.scale == "tiny"
    with env.autocast():  # a no-op on CPU: matmuls stay float32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_asking_for_a_missing_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def test_environment_variables_choose_device_and_scale(monkeypatch):
    monkeypatch.setenv("MOLMO_LITE_DEVICE", "cpu")
    monkeypatch.setenv("MOLMO_LITE_SCALE", "small")
    env = setup()
    assert env.device == torch.device("cpu") and env.scale == "small"
    assert autocast_dtype(torch.device("cpu")) is None


# ---------------------------------------------------------------------------------------------------------------
# Every entry point asks pick_device: with CUDA faked present, each one picks "cuda" unless told otherwise.
# ---------------------------------------------------------------------------------------------------------------

class _Picked(Exception):
    """Raised where an entry point would start work on the device it picked (there is no GPU to run on here)."""


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda.is_available() says True and Module.to records its device instead of moving anything."""
    monkeypatch.delenv("MOLMO_LITE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    moved: list[torch.device] = []

    def record(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, (str, torch.device)):
            moved.append(torch.device(target))
        return self

    monkeypatch.setattr(torch.nn.Module, "to", record)
    return moved


def test_the_rule_prefers_the_argument_then_the_environment_then_cuda(fake_cuda, monkeypatch):
    assert pick_device() == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("MOLMO_LITE_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert setup().device == torch.device("cpu")


def _trainer_parts():
    from molmo_lite.config import TrainConfig
    from molmo_lite.data.synthetic import caption_example
    from molmo_lite.model import MolmoLite
    from molmo_lite.train import StageData

    torch.manual_seed(0)
    config = TrainConfig(stage="caption", steps=1, batch_size=1)
    return MolmoLite("tiny"), config, StageData({"captions": caption_example})


@pytest.mark.parametrize("asked, env, expected", [(None, None, "cuda"), ("cpu", None, "cpu"), (None, "cpu", "cpu")])
def test_trainer_asks_the_rule(fake_cuda, monkeypatch, tmp_path, asked, env, expected):
    from molmo_lite.train import Trainer

    if env:
        monkeypatch.setenv("MOLMO_LITE_DEVICE", env)
    trainer = Trainer(*_trainer_parts(), tmp_path, device=asked, progress=False)
    assert trainer.device.type == expected and fake_cuda[-1].type == expected
    # On a GPU, processes make the batches ahead; on the CPU they would take the training's cores.
    assert (trainer.workers >= 1) if expected == "cuda" else (trainer.workers == 0)
    assert Trainer(*_trainer_parts(), tmp_path, device=asked, progress=False, workers=0).workers == 0


def test_init_distributed_asks_the_rule(fake_cuda, monkeypatch):
    from molmo_lite.distributed import init_distributed

    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert init_distributed().device.type == "cuda"
    assert init_distributed("cpu").device.type == "cpu"


def _stop_at_fit(monkeypatch) -> list[torch.device]:
    from molmo_lite import train

    seen: list[torch.device] = []

    def fit(self, *args, **kwargs):
        seen.append(self.device)
        raise _Picked

    monkeypatch.setattr(train.Trainer, "fit", fit)
    return seen


@pytest.mark.parametrize("extra, expected", [([], "cuda"), (["--device", "cpu"], "cpu")])
def test_cli_train_and_run_ask_the_rule(fake_cuda, monkeypatch, tmp_path, extra, expected):
    from molmo_lite import train
    from molmo_lite.__main__ import main
    from molmo_lite.model import MolmoLite

    monkeypatch.setattr(train, "tiny_model", lambda seed=0, **_: MolmoLite("tiny"))  # not the pretrained parts
    seen = _stop_at_fit(monkeypatch)
    with pytest.raises(_Picked):
        main(["train", "--stage", "caption", "--out", str(tmp_path / "t"), "--steps", "1", "--no-progress", *extra])
    with pytest.raises(_Picked):
        main(["run", "--quick", "--out", str(tmp_path / "r"), "--no-progress", *extra])
    assert [d.type for d in seen] == [expected, expected]


@pytest.mark.parametrize("extra, expected", [([], "cuda"), (["--device", "cpu"], "cpu")])
def test_cli_evaluate_and_generate_ask_the_rule(fake_cuda, monkeypatch, tmp_path, extra, expected):
    from molmo_lite import evaluate
    from molmo_lite.__main__ import main
    from molmo_lite.model import MolmoLite

    torch.manual_seed(0)
    MolmoLite("tiny").save_pretrained(tmp_path / "model")

    def picked(*args, **kwargs):
        raise _Picked

    monkeypatch.setattr(evaluate, "evaluate", picked)
    monkeypatch.setattr(MolmoLite, "generate", picked)
    for command in (["evaluate", str(tmp_path / "model"), "--n", "1"],
                    ["generate", str(tmp_path / "model"), "--prompt", "Hi"]):
        fake_cuda.clear()
        with pytest.raises(_Picked):
            main(command + extra)
        assert [d.type for d in fake_cuda] == [expected], command


def test_no_module_keeps_a_device_default_of_its_own():
    """Only molmo_lite/device.py decides between CUDA and CPU (doctor only reports what it sees)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted([*(root / "molmo_lite").rglob("*.py"), *(root / "benchmarks").glob("*.py")]):
        if path.name in ("device.py", "doctor.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"cuda\.is_available\(\)|device or \"cpu\"|device=None\) *or", line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)

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

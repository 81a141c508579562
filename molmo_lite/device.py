"""One place that picks the device, the dtype, autocast and the seeds. Every notebook imports it.

    from molmo_lite.device import setup
    env = setup(seed=0)          # -> Runtime(device='cpu', dtype=torch.float32, scale='tiny', ...)
    with env.autocast():         # bf16 on a GPU that supports it, a no-op on CPU
        ...

On a laptop CPU everything is float32 and deterministic; on a CUDA GPU the heavy chapters switch to the ``small``
preset and bf16 autocast, as Molmo trains. MPS (Apple) is used only when asked for, because some ops differ there.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given ("cpu", "cuda", "cuda:1", "mps"), else $MOLMO_LITE_DEVICE, else CUDA when present, else CPU."""
    name = prefer or os.environ.get("MOLMO_LITE_DEVICE")
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} asked for, but MPS is not available")
        return device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that support it (Molmo trains in bf16 autocast), None (= plain fp32) elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def seed_everything(seed: int = 0, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch (all devices); on CPU this makes every run repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


@dataclass(frozen=True)
class Runtime:
    """The choices ``setup`` made: where to run, in which precision, at which scale."""

    device: torch.device
    dtype: torch.dtype  # parameters' dtype (float32 everywhere; autocast lowers the matmuls)
    amp_dtype: torch.dtype | None  # autocast dtype, None when autocast is off
    scale: str  # preset for heavy cells: "tiny" on CPU, "small" on one GPU
    seed: int

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``amp_dtype`` on this device, or a no-op when it is None."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        amp = str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "off"
        return f"device={self.device} dtype={str(self.dtype).removeprefix('torch.')} autocast={amp} scale={self.scale}"


def setup(seed: int = 0, device: str | None = None, threads: int | None = None) -> Runtime:
    """Seed everything and pick device, dtype, autocast and scale; the first cell of every chapter calls it."""
    seed_everything(seed)
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    scale = os.environ.get("MOLMO_LITE_SCALE") or ("small" if dev.type == "cuda" else "tiny")
    return Runtime(device=dev, dtype=torch.float32, amp_dtype=autocast_dtype(dev), scale=scale, seed=seed)

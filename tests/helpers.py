"""Helpers shared by the tests (pytest puts this folder on sys.path: ``from helpers import randomize``)."""

from __future__ import annotations

import torch


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial weights: norms around 1, biases non-zero (random init leaves some at exactly 0 or 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.08 * noise)
    return model.eval()

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


class CharTokenizer:
    """A tokenizer whose sequences can be written down by hand: one id per character (ids 10+), BOS = EOS = 1,
    padding 0, image tokens 2-5 (what ``prompts.pack`` and ``collate`` need of a tokenizer)."""

    bos_id = eos_id = 1
    pad_id = 0
    images = {"<im_start>": 2, "<im_end>": 3, "<im_patch>": 4, "<im_col>": 5}

    def encode(self, text: str) -> list[int]:
        return [10 + ord(c) % 100 for c in text]

    def token_to_id(self, token: str) -> int:
        return self.images[token]

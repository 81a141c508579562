"""Batching: examples of different lengths and images of different sizes -> one batch of tensors for ``MolmoLite``.

An example is a packed sequence (``prompts.pack``: one image, N annotations) and the image's ``ImageInputs`` (None for a
text-only example). Rows are right-padded; the images' crops are concatenated (``preprocessing.batch_images``).

    batch = collate([(packed, image_inputs), ...], pad_id=tokenizer.pad_id)
    out = model(**batch)          # out.loss, out.logits
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..preprocessing import ImageInputs, batch_images
from ..prompts import IGNORE_INDEX, PackedExample

PAD_SEGMENT = -1  # subsegment id of padding: seg[query] <= -1 never holds for a real query, so nobody attends to it


def collate(examples: Sequence[tuple[PackedExample, ImageInputs | None]], pad_id: int) -> dict[str, torch.Tensor]:
    """-> input_ids, target_ids, loss_weights, subsegment_ids, position_ids, attention_mask [B, T] (right-padded:
    pad_id, IGNORE_INDEX, 0, PAD_SEGMENT, 0, 0), plus crops, patch_pad_fraction, pooled_patches_idx when any
    example has an image."""
    if not examples:
        raise ValueError("collate needs at least one example")
    length = max(len(packed) for packed, _ in examples)
    fills = {"input_ids": pad_id, "target_ids": IGNORE_INDEX, "loss_weights": 0.0, "subsegment_ids": PAD_SEGMENT,
             "position_ids": 0}
    batch = {}
    for name, fill in fills.items():
        rows = [getattr(packed, name) for packed, _ in examples]
        out = torch.full((len(rows), length), fill, dtype=rows[0].dtype)
        for b, row in enumerate(rows):
            out[b, : len(row)] = row
        batch[name] = out
    batch["attention_mask"] = torch.zeros(len(examples), length, dtype=torch.long)
    for b, (packed, _) in enumerate(examples):
        batch["attention_mask"][b, : len(packed)] = 1
    images = [image for _, image in examples if image is not None]
    if images:
        batch.update(batch_images(images))
    return batch

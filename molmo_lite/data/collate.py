"""From ``Example``s to batches: encoding, packing, padding, and Molmo's dataset mixture.

    example --encode_example--> (PackedExample, ImageInputs)   one sequence: [BOS] image annotation 1 ... N
            --collate---------> batch of tensors, right-padded, crops of all images concatenated
            --MolmoLite(**batch)

``ExampleDataset`` wraps a list of examples for a ``torch.utils.data.DataLoader`` (workers included: everything it
holds pickles); ``MixtureSampler`` draws from several datasets at Molmo's rates (within a group proportional to
sqrt(dataset size); ``mixture_rates``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from ..preprocessing import ImageInputs, batch_images
from ..prompts import IGNORE_INDEX, IMAGE_SEGMENT, PackedExample, format_messages, pack
from .examples import Example

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


def pack_rows(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """First-fit decreasing: the indices of the sequences in each row, no row longer than ``budget`` tokens (a
    sequence longer than the budget gets a row of its own). Deterministic: ties keep the input order."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(budget - lengths[i])
    return rows


def concat_packed(parts: Sequence[PackedExample]) -> PackedExample:
    """Several examples' sequences as one row in which each example sees only itself.

    ``prompts.subsegment_mask`` lets a query attend a key when seg[query] <= seg[key] (and causality, the key not
    later). Example e's ids are renumbered into a range above all earlier examples' ids, its image (IMAGE_SEGMENT)
    becoming the top of its own range: its annotations still see their image and not each other, and no earlier key
    is visible from a later example. Positions already restart at 0 in every example; the loss and its weights are
    those of the parts, so the batch's loss and gradient do not change."""
    segments, base = [], 0
    for part in parts:
        top = part.n_annotations + 1
        segments.append(torch.where(part.subsegment_ids == IMAGE_SEGMENT, top, part.subsegment_ids) + base)
        base += top
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    return PackedExample(input_ids=cat("input_ids"), target_ids=cat("target_ids"), loss_weights=cat("loss_weights"),
                         subsegment_ids=torch.cat(segments), position_ids=cat("position_ids"),
                         n_prefix=parts[0].n_prefix, n_annotations=sum(p.n_annotations for p in parts))


def collate_packed(examples: Sequence[tuple[PackedExample, ImageInputs | None]], pad_id: int,
                   budget: int | None = None) -> dict[str, torch.Tensor]:
    """``collate`` with several examples per row (``pack_rows`` into rows of ``budget`` tokens, default the longest
    example: never longer than the padded batch). Fewer rows, far less padding, the same loss and gradient: each
    example attends only to itself (``concat_packed``) and its image features go to its own <im_patch> tokens,
    because the images are batched in reading order, row after row."""
    if not examples:
        raise ValueError("collate needs at least one example")
    lengths = [len(packed) for packed, _ in examples]
    rows = pack_rows(lengths, max(budget or 0, max(lengths)))
    batch = collate([(concat_packed([examples[i][0] for i in row]), None) for row in rows], pad_id)
    images = [examples[i][1] for row in rows for i in row if examples[i][1] is not None]
    if images:
        batch.update(batch_images(images))
    return batch


# --------------------------------------------------------------------------------------------------------------------
# Examples -> sequences.
# --------------------------------------------------------------------------------------------------------------------


def encode_example(example: Example, processor: Any, tokenizer: Any, rng: np.random.Generator | None = None,
                   weighting: str = "root_subsegments", shuffle: bool = True, one: bool = False,
                   question_first: bool = False) -> tuple[PackedExample, ImageInputs | None]:
    """Preprocess the image, format every annotation (``prompts.format_messages``: style prefixes and caption hints
    drawn from rng), shuffle their order (Molmo does in SFT) and pack them into one sequence. one: a single
    annotation, drawn with rng (the first without one), weight 1; question_first: its question before the image
    (``prompts.pack``; one annotation only)."""
    if one:
        k = 0 if rng is None else int(rng.integers(len(example.messages)))
        annotations, weighting = [format_messages(example.messages[k], rng)], "none"
    else:
        annotations = [format_messages(messages, rng) for messages in example.messages]
    if shuffle and rng is not None and not one:
        annotations = [annotations[int(i)] for i in rng.permutation(len(annotations))]
    image = None if example.image is None else processor(example.image)
    return pack(tokenizer, annotations, () if image is None else image.tokens, weighting, question_first), image


def unpack(examples: Sequence[Example]) -> list[Example]:
    """One Example per annotation (the image repeated): what training without packing sees."""
    return [Example(ex.image, [messages], ex.task, ex.meta) for ex in examples for messages in ex.messages]


class ExampleDataset(Dataset):
    """Examples encoded on the fly (in DataLoader workers when there are some). Item i of epoch e always draws its
    prompt styles, hints and annotation order from the same seed (seed, e, i): reruns are identical."""

    def __init__(self, examples: Sequence[Example], processor: Any, tokenizer: Any, seed: int = 0,
                 weighting: str = "root_subsegments"):
        self.examples, self.processor, self.tokenizer = list(examples), processor, tokenizer
        self.seed, self.weighting, self.epoch = seed, weighting, 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[PackedExample, ImageInputs | None]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        return encode_example(self.examples[i], self.processor, self.tokenizer, rng, self.weighting)


# --------------------------------------------------------------------------------------------------------------------
# Molmo's mixture.
# --------------------------------------------------------------------------------------------------------------------


def mixture_rates(sizes: Mapping[str, int], groups: Mapping[str, tuple[float, Sequence[str]]] | None = None
                  ) -> dict[str, float]:
    """Sampling rate of every dataset (they sum to 1): proportional to sqrt(size), within each group when groups are
    given as {group: (group rate, [dataset names])} (Molmo's SFT: demo 0.15, aux 0.50, pointing 0.35)."""
    if groups is None:
        groups = {"all": (1.0, list(sizes))}
    total_group = sum(rate for rate, _ in groups.values())
    rates = {}
    for rate, names in groups.values():
        roots = {name: math.sqrt(sizes[name]) for name in names}
        for name, root in roots.items():
            rates[name] = rate / total_group * root / sum(roots.values())
    missing = set(sizes) - set(rates)
    if missing:
        raise ValueError(f"datasets {sorted(missing)} are in no group")
    return rates


class MixtureSampler(Sampler):
    """Indices into ``ConcatDataset(datasets)``: each draw picks a dataset with its rate, then one of its items
    (without replacement within a dataset until it is used up, then a new permutation). Seeded; ``set_epoch``."""

    def __init__(self, sizes: Sequence[int], rates: Sequence[float], num_samples: int, seed: int = 0):
        if len(sizes) != len(rates) or min(sizes) < 1:
            raise ValueError("need one rate per dataset and no empty dataset")
        self.sizes, self.num_samples, self.seed, self.epoch = list(sizes), num_samples, seed, 0
        self.rates = np.asarray(rates, dtype=float) / float(np.sum(rates))
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        orders = [rng.permutation(n) for n in self.sizes]
        used = [0] * len(self.sizes)
        for d in rng.choice(len(self.sizes), size=self.num_samples, p=self.rates):
            if used[d] == self.sizes[d]:
                orders[d], used[d] = rng.permutation(self.sizes[d]), 0
            yield int(self.offsets[d] + orders[d][used[d]])
            used[d] += 1


def mixture_loader(datasets: Mapping[str, Dataset], rates: Mapping[str, float], batch_size: int, num_samples: int,
                   pad_id: int, seed: int = 0, num_workers: int = 0) -> DataLoader:
    """A DataLoader over several datasets at the given rates, batches made by ``collate``."""
    names = list(datasets)
    sampler = MixtureSampler([len(datasets[n]) for n in names], [rates[n] for n in names], num_samples, seed)
    return DataLoader(ConcatDataset([datasets[n] for n in names]), batch_size=batch_size, sampler=sampler,
                      collate_fn=partial(collate, pad_id=pad_id), num_workers=num_workers)

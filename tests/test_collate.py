"""Batching: padding and image offsets, encoding examples, Molmo's sqrt-size mixture, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import CharTokenizer

from molmo_lite.data.collate import (
    PAD_SEGMENT,
    ExampleDataset,
    MixtureSampler,
    collate,
    collate_packed,
    encode_example,
    mixture_loader,
    mixture_rates,
    pack_rows,
    unpack,
)
from molmo_lite.data.synthetic import qa_examples
from molmo_lite.preprocessing import MolmoImageProcessor
from molmo_lite.prompts import IGNORE_INDEX, pack
from molmo_lite.tokenizer import MolmoTokenizer


def test_collate_pads_rows_and_offsets_image_indices():
    tok = CharTokenizer()
    processor = MolmoImageProcessor.from_config("tiny")
    small, wide = processor(np.zeros((40, 40, 3), np.uint8)), processor(np.zeros((50, 160, 3), np.uint8))
    a = pack(tok, [[("Q", "a")]], small.tokens)
    b = pack(tok, [[("Q", "a much longer answer")]], wide.tokens)
    text_only = pack(tok, [[("Q", "a")]])
    batch = collate([(a, small), (text_only, None), (b, wide)], pad_id=0)
    n = len(b)
    assert batch["input_ids"].shape == (3, n)
    assert batch["attention_mask"].sum(1).tolist() == [len(a), len(text_only), len(b)]
    assert batch["target_ids"][0, len(a):].eq(IGNORE_INDEX).all()
    assert batch["subsegment_ids"][1, len(text_only):].eq(PAD_SEGMENT).all()
    assert batch["crops"].shape[0] == small.num_crops + wide.num_crops
    n_small = small.patch_pad_fraction.numel()
    idx = batch["pooled_patches_idx"]
    assert torch.equal(idx[: len(small.pooled_patches_idx)], small.pooled_patches_idx)
    tail, ref = idx[len(small.pooled_patches_idx):], wide.pooled_patches_idx
    assert torch.equal(tail, torch.where(ref >= 0, ref + n_small, ref))


def test_mixture_rates_are_proportional_to_sqrt_size_within_groups():
    sizes = {"a": 100, "b": 400, "c": 900}  # square roots 10, 20, 30
    assert mixture_rates(sizes) == pytest.approx({"a": 10 / 60, "b": 20 / 60, "c": 30 / 60})
    grouped = mixture_rates(sizes, {"demo": (0.25, ["a"]), "aux": (0.75, ["b", "c"])})
    assert grouped == pytest.approx({"a": 0.25, "b": 0.75 * 20 / 50, "c": 0.75 * 30 / 50})
    with pytest.raises(ValueError, match="no group"):
        mixture_rates(sizes, {"demo": (1.0, ["a", "b"])})


def test_mixture_sampler_draws_at_the_rates_and_uses_every_item_before_repeating():
    sizes, rates = [5, 50, 500], [0.2, 0.3, 0.5]
    draws = list(MixtureSampler(sizes, rates, num_samples=30000, seed=0))
    which = np.searchsorted(np.cumsum(sizes), draws, side="right")
    assert np.bincount(which, minlength=3) / len(draws) == pytest.approx(rates, abs=0.015)
    first_five = [d for d in draws if d < 5][:5]
    assert sorted(first_five) == [0, 1, 2, 3, 4]  # a permutation before any repeat
    assert draws == list(MixtureSampler(sizes, rates, num_samples=30000, seed=0))
    other = MixtureSampler(sizes, rates, num_samples=30000, seed=0)
    other.set_epoch(1)
    assert draws != list(other)


@pytest.fixture(scope="module")
def tiny_parts():
    return MolmoImageProcessor.from_config("tiny"), MolmoTokenizer.tiny()


def test_encode_example_is_seeded_and_shuffles_annotations(tiny_parts):
    processor, tok = tiny_parts
    example = qa_examples(1, seed=0)[0]
    a = encode_example(example, processor, tok, np.random.default_rng(0))[0]
    b = encode_example(example, processor, tok, np.random.default_rng(0))[0]
    assert torch.equal(a.input_ids, b.input_ids) and a.n_annotations == example.n_annotations
    orders = {tuple(encode_example(example, processor, tok, np.random.default_rng(s))[0].input_ids.tolist())
              for s in range(8)}
    assert len(orders) > 1  # the order of the annotations changes with the seed
    assert len(unpack([example])) == example.n_annotations


def test_loader_with_workers_gives_the_same_batches_as_without(tiny_parts):
    processor, tok = tiny_parts
    data = {"qa": ExampleDataset(qa_examples(12, seed=1), processor, tok),
            "qa2": ExampleDataset(qa_examples(7, seed=2), processor, tok)}
    rates = mixture_rates({k: len(v) for k, v in data.items()})
    batches = [list(mixture_loader(data, rates, batch_size=4, num_samples=12, pad_id=tok.pad_id, num_workers=w))
               for w in (0, 2)]
    assert len(batches[0]) == 3
    for x, y in zip(*batches):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_pack_rows_is_first_fit_decreasing_within_the_budget():
    assert pack_rows([5, 3, 4, 2], budget=7) == [[0, 3], [2, 1]]  # 5+2 and 4+3, longest first
    assert pack_rows([9, 2, 2], budget=7) == [[0], [1, 2]]  # too long for the budget: a row of its own
    lengths = [int(n) for n in np.random.default_rng(0).integers(1, 40, size=30)]
    rows = pack_rows(lengths, budget=50)
    assert sorted(i for row in rows for i in row) == list(range(30))
    assert all(sum(lengths[i] for i in row) <= 50 for row in rows)


def test_collate_packed_puts_several_examples_in_a_row_each_seeing_only_itself():
    from molmo_lite.prompts import subsegment_mask

    tok = CharTokenizer()
    processor = MolmoImageProcessor.from_config("tiny")
    small, wide = processor(np.zeros((40, 40, 3), np.uint8)), processor(np.full((50, 160, 3), 9, np.uint8))
    a = pack(tok, [[("Q", "a")], [("R", "bb")]], small.tokens)  # two annotations of one image
    b = pack(tok, [[("Q", "a much longer answer")]], wide.tokens)
    c = pack(tok, [[("Q", "a")]])  # text only
    batch = collate_packed([(a, small), (b, wide), (c, None)], pad_id=0)
    assert batch["input_ids"].shape[0] == 2 and batch["input_ids"].shape[1] == len(b)  # b alone, then a + c
    row = batch["input_ids"][1, : len(a) + len(c)]
    assert torch.equal(row, torch.cat([a.input_ids, c.input_ids]))
    # the images follow reading order: b's crops (row 0) before a's (row 1)
    assert torch.equal(batch["crops"][: wide.num_crops], collate([(b, wide)], 0)["crops"])
    allowed = subsegment_mask(batch["subsegment_ids"][1:], batch["attention_mask"][1:])[0]
    n = len(a)
    assert torch.equal(allowed[:n, :n], subsegment_mask(a.subsegment_ids[None])[0])  # a's own rule unchanged
    causal = torch.ones(len(a) + len(c), len(a) + len(c)).tril().bool()
    assert not (allowed[n:len(a) + len(c), :n] & causal[n:, :n]).any()  # c never sees a

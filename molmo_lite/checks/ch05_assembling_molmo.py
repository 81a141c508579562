"""Chapter 05 exercise checks: the assembled model and packing, compared with molmo_lite.model and molmo_lite.prompts.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading_core).
"""

from __future__ import annotations

import random
from typing import Any

from molmo_lite.grading_core import (
    _compare_on_cases,
    _exact_array_mismatch,
    _float_array_mismatch,
    _index_array_mismatch,
    _student_function,
    _torch_generator,
    _with_hint,
    check,
)

PATCH_ID = 7  # the <im_patch> id in the random cases


def _bool_array_mismatch(got: Any, expected: Any) -> str | None:
    return _exact_array_mismatch(got, expected, kinds="b", wanted="a bool tensor (True = may attend)")


class _Chars:
    """A tokenizer with one id per character (ids 20+), BOS = EOS = 1 and image tokens 2-6, for random packs."""

    bos_id = eos_id = 1
    images = {"<im_start>": 2, "<im_end>": 3, "<im_patch>": PATCH_ID, "<im_col>": 5}

    def encode(self, text: str) -> list[int]:
        return [20 + ord(c) % 50 for c in text]

    def token_to_id(self, token: str) -> int:
        return self.images[token]


def _random_pack(rng: random.Random, n_annotations: int, weighting: str = "root_subsegments") -> Any:
    from molmo_lite.prompts import pack

    image = [] if rng.random() < 0.15 else ["<im_start>"] + ["<im_patch>", "<im_col>"] * rng.randint(1, 5) + ["<im_end>"]
    words = ("red", "two", "circle", "yes", "at the top", "What is it?", "How many?")
    annotations = [[(" User: " + rng.choice(words) + " Assistant:", " ".join(rng.sample(words, rng.randint(1, 3))))
                    for _ in range(rng.randint(1, 2))] for _ in range(n_annotations)]
    return pack(_Chars(), annotations, image, weighting=weighting)


@check("05_assembling_molmo", "packing_mask")
def check_packing_mask(namespace: dict) -> None:
    """packing_mask(subsegment_ids) equals causal AND molmo_lite.prompts.subsegment_mask on 20 random packed batches
    (padding has subsegment id -1)."""
    import torch

    from molmo_lite.prompts import subsegment_mask

    rng = random.Random(52)
    cases = []
    for _ in range(20):
        rows = [_random_pack(rng, rng.randint(1, 4)).subsegment_ids for _ in range(rng.randint(1, 3))]
        seg = torch.full((len(rows), max(len(r) for r in rows)), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            seg[i, : len(row)] = row
        cases.append((seg,))

    def reference(seg: Any) -> tuple:
        causal = torch.ones(seg.shape[1], seg.shape[1], dtype=torch.bool).tril()
        wrong = {
            "the rule reversed: a query may attend a key when seg[query] <= seg[key], not >=":
                (seg[:, :, None] >= seg[:, None, :]) & causal,
            "causality is missing (a query must not see the keys after it)": subsegment_mask(seg),
            "seg[query] == seg[key]: then no annotation sees the image (its id, 10000, is larger)":
                (seg[:, :, None] == seg[:, None, :]) & causal,
        }
        return subsegment_mask(seg) & causal, wrong

    student = _student_function(namespace, "packing_mask")
    _compare_on_cases("packing_mask", ("subsegment_ids",), student, reference, cases, _with_hint(_bool_array_mismatch))


@check("05_assembling_molmo", "packed_positions")
def check_packed_positions(namespace: dict) -> None:
    """packed_positions(subsegment_ids) equals the position ids molmo_lite.prompts.pack writes, on 20 random packs."""
    import torch

    from molmo_lite.prompts import IMAGE_SEGMENT

    rng = random.Random(53)
    packs = [_random_pack(rng, rng.randint(1, 4)) for _ in range(20)]
    cases = [(p.subsegment_ids,) for p in packs]
    expected_by_id = {id(p.subsegment_ids): p.position_ids for p in packs}

    def reference(seg: Any) -> tuple:
        n_prefix = int((seg == IMAGE_SEGMENT).sum())
        annotations = sorted(set(seg.tolist()) - {IMAGE_SEGMENT})
        restart_at_zero = torch.cat([torch.arange(n_prefix)] + [torch.arange(int((seg == k).sum()))
                                                                for k in annotations])
        wrong = {
            "positions 0..T-1 straight through; every annotation restarts right after the image":
                torch.arange(len(seg)),
            "every annotation restarts at 0; it continues after the image (BOS and image keep 0..n-1)":
                restart_at_zero,
        }
        return expected_by_id[id(seg)], wrong

    student = _student_function(namespace, "packed_positions")
    _compare_on_cases("packed_positions", ("subsegment_ids",), student, reference, cases,
                      _with_hint(_index_array_mismatch))


@check("05_assembling_molmo", "masked_answer_loss")
def check_masked_answer_loss(namespace: dict) -> None:
    """masked_answer_loss(logits, targets, weights) equals molmo_lite.model.answer_loss (no z-loss) on 20 random
    batches with ignored targets (-100) and weights 0, sqrt(1/N) and 1."""
    import torch

    from molmo_lite.model import answer_loss

    rng, gen = random.Random(54), _torch_generator(54)
    cases = []
    for _ in range(20):
        b, t, v = rng.randint(1, 3), rng.randint(2, 9), rng.choice((5, 17))
        targets = torch.randint(0, v, (b, t), generator=gen)
        weights = torch.tensor([rng.choice((0.0, 0.5 ** 0.5, 1.0)) for _ in range(b * t)]).view(b, t)
        weights[0, 0] = 1.0  # at least one token with loss
        targets[weights == 0] = torch.where(torch.rand(int((weights == 0).sum()), generator=gen) < 0.5, -100,
                                            targets[weights == 0])
        cases.append((3 * torch.randn(b, t, v, generator=gen), targets, weights))

    def reference(logits: Any, targets: Any, weights: Any) -> tuple:
        import torch.nn.functional as F

        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100,
                             reduction="none").view(targets.shape)
        w = weights * (targets != -100)
        wrong = {
            "divided by the sum of the weights; Molmo divides by the NUMBER of tokens with loss":
                (ce * w).sum() / w.sum(),
            "the weights are ignored (they are 0 on prompts and sqrt(1/N) on packed answers)":
                ce[targets != -100].mean(),
            "a mean over every position; only tokens with weight > 0 count": (ce * w).sum() / ce.numel(),
        }
        return answer_loss(logits, targets, weights)[0], wrong

    student = _student_function(namespace, "masked_answer_loss")
    _compare_on_cases("masked_answer_loss", ("logits", "targets", "weights"), student, reference, cases,
                      _with_hint(_float_array_mismatch))


def _loss_weight_cases(rng: random.Random, n: int) -> tuple[list[tuple], dict[int, list]]:
    """(answer_tokens, weighting) cases made from real packs of random annotations, and the packs of each case (by
    the id of its answer_tokens list): the number of loss tokens of every annotation is read off each pack."""
    cases, packs_of = [], {}
    sizes = [(1,), (1, 1), (16, 1), (3, 2, 1, 4)]
    for k in range(n):
        per_example = sizes[k] if k < len(sizes) else tuple(rng.randint(1, 8) for _ in range(rng.randint(1, 4)))
        weighting = "none" if k % 5 == 4 else "root_subsegments"
        packs = [_random_pack(rng, n_annotations, weighting) for n_annotations in per_example]
        answer_tokens = [[int(((p.subsegment_ids == a) & (p.loss_weights > 0)).sum())
                          for a in range(1, p.n_annotations + 1)] for p in packs]
        cases.append((answer_tokens, weighting))
        packs_of[id(answer_tokens)] = packs
    return cases, packs_of


@check("05_assembling_molmo", "annotation_loss_weights")
def check_annotation_loss_weights(namespace: dict) -> None:
    """annotation_loss_weights(answer_tokens, weighting) equals, for every annotation of a batch of real packs
    (molmo_lite.prompts.pack), the sum of its tokens' loss weights divided by the batch's number of loss tokens (how
    molmo_lite.model.answer_loss normalises), on 30 random batches of 1 to 4 images with 1 to 16 annotations, with
    Molmo's sqrt(1/N) weighting and without."""
    import math

    rng = random.Random(51)
    cases, packs_of = _loss_weight_cases(rng, 30)

    def reference(answer_tokens: list, weighting: str) -> tuple:
        packs = packs_of[id(answer_tokens)]
        n_loss = sum(int((p.loss_weights > 0).sum()) for p in packs)
        expected = [[float(p.loss_weights[(p.subsegment_ids == a) & (p.loss_weights > 0)].sum()) / n_loss
                     for a in range(1, p.n_annotations + 1)] for p in packs]
        flat = [(L, len(ex)) for ex in answer_tokens for L in ex]
        root = (lambda n: math.sqrt(1 / n)) if weighting == "root_subsegments" else (lambda n: 1.0)
        total_weight = sum(L * root(n) for L, n in flat)
        wrong = {
            "divided by the sum of the weights: Molmo divides by the NUMBER of loss tokens in the batch":
                [[L * root(len(ex)) / total_weight for L in ex] for ex in answer_tokens],
            "not divided by the number of loss tokens in the batch (the loss is a token-weighted mean)":
                [[L * root(len(ex)) for L in ex] for ex in answer_tokens],
        }
        if weighting == "root_subsegments":
            wrong["each annotation weighted sqrt(N): the weight is sqrt(1/N), N = the image's annotations"] = [
                [L * math.sqrt(len(ex)) / n_loss for L in ex] for ex in answer_tokens]
            wrong["the weighting left out: with \"root_subsegments\" every token of an image with N annotations "
                  "weighs sqrt(1/N)"] = [[L / n_loss for L in ex] for ex in answer_tokens]
        return expected, wrong

    student = _student_function(namespace, "annotation_loss_weights")
    _compare_on_cases("annotation_loss_weights", ("answer_tokens", "weighting"), student, reference, cases,
                      _with_hint(_nested_float_mismatch))


def _nested_float_mismatch(got: Any, expected: list[list[float]]) -> str | None:
    """A list (one per image) of lists (one per annotation) of numbers equal to the expected (relative 1e-6: the
    packs' loss weights are float32)."""
    try:
        values = [[float(v) for v in row] for row in got]
    except (TypeError, ValueError):
        return f"returned {got!r}, expected a list of lists of floats like {expected!r}"
    if [len(row) for row in values] != [len(row) for row in expected]:
        return f"returned {values!r}, expected {expected!r} (one list per image, one number per annotation)"
    for i, (row, want) in enumerate(zip(values, expected)):
        for j, (v, e) in enumerate(zip(row, want)):
            if not abs(v - e) <= 1e-6 * abs(e) + 1e-12:
                return f"gave image {i}, annotation {j} the weight {v:.6g} instead of {e:.6g}"
    return None

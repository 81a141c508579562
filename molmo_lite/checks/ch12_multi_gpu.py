"""Chapter 12 exercise checks: a rank's share of the global batch (against train.step_batches), FSDP2's dim-0 shards
(torch.chunk, as fully_shard documents) and a ring all-reduce."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from molmo_lite.grading_core import _compare_on_cases, _float_array_mismatch, _student_function, check


def _reference_micro_batches(rank: int, world_size: int, batch_size: int, grad_accum: int) -> list[list[int]]:
    """What molmo_lite.train.step_batches gives this rank, as global-batch indices: the trainer's own code runs on
    a stand-in dataset whose examples are their indices, with encoding and collation replaced by the identity."""
    from unittest import mock

    from molmo_lite import train
    from molmo_lite.config import TrainConfig

    data = SimpleNamespace(draw=lambda rng, n, step=0: list(range(n)))
    model = SimpleNamespace(processor=None, tokenizer=SimpleNamespace(pad_id=0),
                            config=SimpleNamespace(question_first=False))
    config = TrainConfig(stage="sft", batch_size=batch_size, grad_accum=grad_accum)
    with mock.patch.object(train, "encode_example", lambda example, *args, **kwargs: example), \
            mock.patch.object(train, "collate", lambda items, pad_id: list(items)):
        return train.step_batches(data, model, config, 0, rank, world_size)


def _nested_mismatch(got: Any, expected: list[list[int]]) -> str | None:
    try:
        same = [[int(i) for i in micro] for micro in got] == expected
    except (TypeError, ValueError):
        same = False
    return None if same else f"returned {got!r}, expected {expected!r}"


@check("12_multi_gpu", "rank_micro_batches")
def check_rank_micro_batches(namespace: dict) -> None:
    """rank_micro_batches(rank, world_size, batch_size, grad_accum) equals what train.step_batches gives the rank,
    for every rank of 1 to 4 ranks, micro-batches of 1 to 3 and 1 to 3 accumulation steps."""
    cases = [(rank, world, batch, accum) for world in (1, 2, 3, 4) for rank in range(world)
             for batch in (1, 2, 3) for accum in (1, 2, 3)]
    student = _student_function(namespace, "rank_micro_batches")
    _compare_on_cases("rank_micro_batches", ("rank", "world_size", "batch_size", "grad_accum"), student,
                      _reference_micro_batches, cases, _nested_mismatch)


def _reference_shard(tensor, rank: int, world_size: int):
    """torch.chunk(tensor, world_size, dim=0)[rank]; empty (0 rows) for a rank past the last chunk. Also the answer
    of np.array_split, a plausible mistake: it gives the extra rows one each to the first ranks."""
    import numpy as np
    import torch

    chunks = torch.chunk(tensor, world_size, dim=0)
    expected = chunks[rank] if rank < len(chunks) else tensor[:0]
    array_split = torch.from_numpy(np.array_split(tensor.numpy(), world_size, axis=0)[rank])
    return expected, array_split


def _shard_mismatch(got: Any, expected_and_wrong: tuple) -> str | None:
    expected, array_split = expected_and_wrong
    problem = _float_array_mismatch(got, expected, tolerance=0.0)
    if problem is None:
        return None
    if tuple(array_split.shape) != tuple(expected.shape) and _float_array_mismatch(got, array_split, 0.0) is None:
        problem += ("; it looks like np.array_split, which spreads the extra rows over the first ranks: FSDP2 cuts "
                    "as torch.chunk does, ceil(rows / world_size) rows per rank")
    return problem


@check("12_multi_gpu", "shard_rows")
def check_shard_rows(namespace: dict) -> None:
    """shard_rows(tensor, rank, world_size) equals the dim-0 chunk FSDP2 keeps on the rank, on even and uneven
    shapes (17 rows on 2 ranks, 5 rows on 4, 1 row on 3), 1-D and 2-D."""
    import torch

    gen = torch.Generator().manual_seed(12)
    shapes = [(8, 3), (17, 4), (5, 2), (10, 3), (1, 4), (96,), (7,)]
    cases = [(torch.randn(shape, generator=gen), rank, world) for shape in shapes for world in (1, 2, 3, 4)
             for rank in range(world)]
    student = _student_function(namespace, "shard_rows")
    _compare_on_cases("shard_rows", ("tensor", "rank", "world_size"), student, _reference_shard, cases,
                      _shard_mismatch)


def _reference_ring(grads):
    """The sum on every rank, and what a ring all-reduce makes each rank send: 2 (N-1) chunks of size/N."""
    import torch

    n, size = len(grads), grads[0].numel()
    total = torch.stack(list(grads)).sum(0)
    return [total] * n, [2 * (n - 1) * size // n] * n


def _ring_mismatch(got: Any, expected: tuple) -> str | None:
    totals, sent = expected
    try:
        got_totals, got_sent = got
        got_totals, got_sent = list(got_totals), [int(s) for s in got_sent]
    except (TypeError, ValueError):
        return f"returned {type(got).__name__}, expected (a list of tensors, a list of ints)"
    if len(got_totals) != len(totals):
        return f"returned results for {len(got_totals)} ranks, expected {len(totals)}"
    for rank, (g, e) in enumerate(zip(got_totals, totals)):
        problem = _float_array_mismatch(g, e)
        if problem is not None:
            return f"rank {rank}'s result {problem}"
    if got_sent != sent:
        return (f"says the ranks sent {got_sent} numbers, expected {sent}: in a ring each rank sends one chunk "
                "(size / N numbers) per step, N-1 steps of reduce-scatter and N-1 of all-gather")
    return None


@check("12_multi_gpu", "ring_all_reduce")
def check_ring_all_reduce(namespace: dict) -> None:
    """ring_all_reduce(grads) gives every rank the sum of all ranks' gradients (to 1e-5) and counts what each rank
    sent: 2 (N-1) / N of the gradient, for 2 to 5 ranks."""
    import torch

    gen = torch.Generator().manual_seed(13)
    cases = [([torch.randn(n * chunk, generator=gen) for _ in range(n)],) for n in (2, 3, 4, 5) for chunk in (1, 3)]
    student = _student_function(namespace, "ring_all_reduce")

    def fresh(grads):  # the student gets copies: an in-place ring must not change the reference's inputs
        return student([g.clone() for g in grads])

    _compare_on_cases("ring_all_reduce", ("grads",), fresh, _reference_ring, cases, _ring_mismatch)

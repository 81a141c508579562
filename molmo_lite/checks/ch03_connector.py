"""Chapter 03 exercise checks: the connector, compared with molmo_lite.connector.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading).
"""

from __future__ import annotations

import random
from typing import Any

from molmo_lite.grading import (
    _compare_on_cases,
    _float_array_mismatch,
    _randomize_,
    _student_function,
    _torch_generator,
    _with_hint,
    check,
)


def _random_pad_fraction(shape: tuple, gen: Any) -> Any:
    """Fractions of real pixels: about a third exactly 1, a third exactly 0, the rest in between (0.5 included)."""
    import torch

    kind = torch.randint(0, 3, shape, generator=gen)
    between = torch.rand(shape, generator=gen).clamp(0.01, 0.99)
    between[torch.rand(shape, generator=gen) < 0.1] = 0.5
    return torch.where(kind == 0, torch.ones(shape), torch.where(kind == 1, torch.zeros(shape), between))


def _random_windows(gen: Any, n_tokens: int, k: int, dim: int, empty_rows: bool) -> tuple:
    """windows [T, k, dim] with large junk in the padding slots (they must be ignored), valid bool [T, k] with full
    rows, partial rows and, if ``empty_rows``, rows without any valid slot."""
    import torch

    valid = torch.rand(n_tokens, k, generator=gen) < 0.6
    valid[0] = True  # a full window
    if n_tokens > 1:
        valid[1] = False
        valid[1, 0] = True  # a window of one
    if empty_rows and n_tokens > 2:
        valid[2] = False
    windows = torch.randn(n_tokens, k, dim, generator=gen)
    junk = 10 * torch.randn(n_tokens, k, dim, generator=gen)
    return torch.where(valid[..., None], windows, junk), valid


@check("03_connector", "add_pad_embeddings")
def check_add_pad_embeddings(namespace: dict) -> None:
    """add_pad_embeddings(features, pad_fraction, pad_embed) equals molmo_lite.connector.PadEmbedding on 20 random
    cases mixing real (fraction 1), fully padded (0) and partially padded patches."""
    import torch

    from molmo_lite import connector

    rng, gen = random.Random(31), _torch_generator(31)
    cases = []
    for _ in range(20):
        crops, patches, dim = rng.randint(1, 3), rng.choice((1, 4, 9, 16)), rng.choice((1, 4, 8))
        cases.append((torch.randn(crops, patches, dim, generator=gen),
                      _random_pad_fraction((crops, patches), gen), torch.randn(2, dim, generator=gen)))

    def reference(features: Any, pad_fraction: Any, pad_embed: Any) -> Any:
        module = connector.PadEmbedding(features.shape[-1])
        with torch.no_grad():
            module.pad_embed.copy_(pad_embed)
            return module(features, pad_fraction)

    student = _student_function(namespace, "add_pad_embeddings")
    _compare_on_cases(
        "add_pad_embeddings", ("features", "pad_fraction", "pad_embed"), student, reference, cases,
        _float_array_mismatch,
    )


@check("03_connector", "mean_query")
def check_mean_query(namespace: dict) -> None:
    """mean_query(windows, valid) is the mean of each window's valid members (0 without any) on 20 random cases, the
    query molmo_lite.connector.AttentionPool computes."""

    rng, gen = random.Random(32), _torch_generator(32)
    cases = [_random_windows(gen, rng.randint(3, 8), rng.choice((1, 2, 4, 9)), rng.choice((1, 3, 8)), True)
             for _ in range(20)]

    def reference(windows: Any, valid: Any) -> tuple:
        members = windows.masked_fill(~valid[..., None], 0.0)  # as AttentionPool.forward does
        mean = members.sum(1) / valid.sum(-1, keepdim=True).clamp(min=1).to(windows.dtype)
        wrong = {"the mean over all k slots, padding included": windows.mean(1),
                 "the sum of the valid members divided by k": members.mean(1)}
        return mean, wrong

    student = _student_function(namespace, "mean_query")
    _compare_on_cases("mean_query", ("windows", "valid"), student, reference, cases, _with_hint(_float_array_mismatch))


@check("03_connector", "attention_pool")
def check_attention_pool(namespace: dict) -> None:
    """attention_pool(windows, valid, wq, wk, wv, wo, heads) equals molmo_lite.connector.AttentionPool with the same
    random layers on 20 cases (1 to 4 heads, padding slots holding junk, windows without any valid slot)."""
    import torch

    from molmo_lite import connector

    rng, gen = random.Random(33), _torch_generator(33)
    cases = []
    for k in range(20):
        dim, heads, head_dim = rng.choice((4, 8, 12)), rng.choice((1, 2, 4)), rng.choice((2, 4))
        pool_dim = rng.choice((3, 8))
        pool = _randomize_(connector.AttentionPool(dim, pool_dim, heads, head_dim), gen)
        windows, valid = _random_windows(gen, rng.randint(3, 6), rng.choice((1, 4, 9)), dim, empty_rows=k % 2 == 1)
        cases.append((windows, valid, pool.wq, pool.wk, pool.wv, pool.wo, heads))

    def reference(windows: Any, valid: Any, wq: Any, wk: Any, wv: Any, wo: Any, heads: int) -> Any:
        pool = connector.AttentionPool(wq.in_features, wo.out_features, heads, wq.out_features // heads)
        pool.wq, pool.wk, pool.wv, pool.wo = wq, wk, wv, wo
        with torch.no_grad():
            return pool(windows, valid)

    student = _student_function(namespace, "attention_pool")
    _compare_on_cases(
        "attention_pool", ("windows", "valid", "wq", "wk", "wv", "wo", "heads"), student, reference, cases,
        _float_array_mismatch,
    )


@check("03_connector", "swiglu")
def check_swiglu(namespace: dict) -> None:
    """swiglu(x, w1, w2, w3) equals molmo_lite.connector.SwiGLUProjector with the same random layers on 12 cases."""
    import torch

    from molmo_lite import connector

    rng, gen = random.Random(34), _torch_generator(34)
    cases = []
    for _ in range(12):
        dim, hidden, out = rng.choice((1, 4, 8)), rng.choice((4, 16, 32)), rng.choice((2, 8))
        projector = _randomize_(connector.SwiGLUProjector(dim, hidden, out), gen)
        shape = (rng.randint(1, 6), dim) if rng.random() < 0.5 else (2, rng.randint(1, 4), dim)
        cases.append((torch.randn(shape, generator=gen), projector.w1, projector.w2, projector.w3))

    def reference(x: Any, w1: Any, w2: Any, w3: Any) -> Any:
        projector = connector.SwiGLUProjector(w1.in_features, w1.out_features, w2.out_features)
        projector.w1, projector.w2, projector.w3 = w1, w2, w3
        with torch.no_grad():
            return projector(x)

    student = _student_function(namespace, "swiglu")
    _compare_on_cases("swiglu", ("x", "w1", "w2", "w3"), student, reference, cases, _float_array_mismatch)

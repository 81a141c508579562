"""Chapter 04 exercise checks: the language model, compared with molmo_lite.llm.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from molmo_lite import grading
from molmo_lite.grading import (
    _compare_on_cases,
    _exact_array_mismatch,
    _float_array_mismatch,
    _index_array_mismatch,
    _randomize_,
    _student_function,
    _time_limit,
    _torch_generator,
    _with_hint,
    check,
)


def _bool_array_mismatch(got: Any, expected: Any) -> str | None:
    """Boolean masks that must be equal."""
    return _exact_array_mismatch(got, expected, kinds="b", wanted="a bool tensor (True = may attend)")


@check("04_language_model", "rms_norm")
def check_rms_norm(namespace: dict) -> None:
    """rms_norm(x, weight, eps) equals molmo_lite.llm.RMSNorm with the same weight and eps on 24 random cases (2-D and
    3-D inputs, rows with a large mean, eps from 1e-6 to 1 so that where it is added matters)."""
    import torch

    from molmo_lite import llm

    rng, gen = random.Random(41), _torch_generator(41)
    cases = []
    for _ in range(24):
        dim = rng.choice((1, 2, 8, 33, 64))
        shape = (rng.randint(1, 5), dim) if rng.random() < 0.5 else (rng.randint(1, 3), rng.randint(1, 5), dim)
        x = torch.randn(shape, generator=gen) * rng.choice((0.1, 1.0, 10.0)) + rng.choice((0.0, 0.5, 3.0))
        cases.append((x, 1 + 0.5 * torch.randn(dim, generator=gen), rng.choice((1e-6, 1e-5, 0.1, 1.0))))

    def reference(x: Any, weight: Any, eps: float) -> tuple:
        norm = llm.RMSNorm(x.shape[-1], eps)
        with torch.no_grad():
            norm.weight.copy_(weight)
            expected = norm(x)
        mean_square = x.pow(2).mean(-1, keepdim=True)
        centred = x - x.mean(-1, keepdim=True)
        wrong = {
            "a LayerNorm: RMSNorm does not subtract the mean": centred
            * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight,
            "eps added outside the square root; it goes inside: x / sqrt(mean(x^2) + eps)": x
            / (mean_square.sqrt() + eps) * weight,
            "the weight is missing: multiply the normalised x by weight": x * torch.rsqrt(mean_square + eps),
        }
        return expected, wrong

    student = _student_function(namespace, "rms_norm")
    _compare_on_cases("rms_norm", ("x", "weight", "eps"), student, reference, cases, _with_hint(_float_array_mismatch))


def _random_positions(rng: random.Random, gen: Any, b: int, t: int) -> Any:
    """positions [B, T] (int64) as the model meets them: 0..T-1, shifted by a cache, after left padding, or unsorted.
    Kept below 64: a correct float32 RoPE computed another way drifts by ~position * 1e-7."""
    import torch

    kind = rng.randrange(4)
    if kind == 0:
        return torch.arange(t).expand(b, t).clone()
    if kind == 1:
        return torch.arange(t)[None] + torch.randint(0, 40, (b, 1), generator=gen)
    if kind == 2:
        mask = torch.ones(b, t, dtype=torch.long)
        for row in range(b):
            mask[row, : rng.randint(0, t - 1)] = 0
        return (mask.cumsum(-1) - 1).clamp(min=0)
    return torch.randint(0, 64, (b, t), generator=gen)


@check("04_language_model", "rope")
def check_rope(namespace: dict) -> None:
    """rope(x, positions, theta) equals molmo_lite.llm.apply_rope(x, *rope_cos_sin(positions, d, theta)) on 24 random
    cases (head sizes 2 to 64, thetas 100 to 1e6, positions from a cache offset, left padding or unsorted)."""
    import torch

    from molmo_lite import llm

    rng, gen = random.Random(42), _torch_generator(42)
    cases = []
    for _ in range(24):
        b, h, t, d = rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 7), rng.choice((2, 4, 8, 16, 64))
        cases.append((torch.randn(b, h, t, d, generator=gen), _random_positions(rng, gen, b, t),
                      rng.choice((100.0, 10_000.0, 1_000_000.0))))

    def reference(x: Any, positions: Any, theta: float) -> tuple:
        d = x.shape[-1]
        cos, sin = llm.rope_cos_sin(positions, d, theta)
        angles = positions.double()[..., None] / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        even, odd = x[..., 0::2].double(), x[..., 1::2].double()  # pairs (x[2i], x[2i + 1])
        c, s = angles.cos()[:, None], angles.sin()[:, None]
        interleaved = torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2)
        arange = torch.arange(x.shape[2]).expand(x.shape[0], -1)
        wrong = {
            "interleaved pairs (x[2i], x[2i+1]); molmo_lite (like Qwen2 and OLMo 2) rotates the pairs "
            "(x[i], x[i + d/2]), the first half with the second": interleaved,
            "a rotation the wrong way round (the sign of sin flipped)": llm.apply_rope(x, cos, -sin),
            "positions 0..T-1: use the `positions` given": llm.apply_rope(x, *llm.rope_cos_sin(arange, d, theta)),
        }
        return llm.apply_rope(x, cos, sin), wrong

    student = _student_function(namespace, "rope")
    _compare_on_cases("rope", ("x", "positions", "theta"), student, reference, cases, _with_hint(_float_array_mismatch))


@check("04_language_model", "gqa_attention")
def check_gqa_attention(namespace: dict) -> None:
    """gqa_attention(q, k, v) equals torch's causal scaled_dot_product_attention with each key/value head shared by
    H / KV consecutive query heads (what molmo_lite.llm.Attention computes) on 24 random cases."""
    import torch
    import torch.nn.functional as F

    rng, gen = random.Random(43), _torch_generator(43)
    cases = []
    for k in range(24):
        b, kv, t, d = rng.randint(1, 2), rng.choice((1, 2, 3)), rng.randint(1, 7), rng.choice((2, 4, 8))
        heads = kv * (rng.choice((2, 4)) if k % 4 else 1)  # every fourth case plain multi-head attention
        q = torch.randn(b, heads, t, d, generator=gen)
        cases.append((q, torch.randn(b, kv, t, d, generator=gen), torch.randn(b, kv, t, d, generator=gen)))

    def reference(q: Any, k: Any, v: Any) -> tuple:
        group = q.shape[1] // k.shape[1]
        k_rep, v_rep = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        k_tiled, v_tiled = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
        wrong = {
            "`repeat` (kv heads 0, 1, 0, 1, ...): query head h shares kv head h // (H // KV), so use "
            "`repeat_interleave` (0, 0, 1, 1, ...)": F.scaled_dot_product_attention(q, k_tiled, v_tiled,
                                                                                     is_causal=True),
            "attention without the causal mask: query t must not see keys after t": F.scaled_dot_product_attention(
                q, k_rep, v_rep),
            "scores divided by d instead of sqrt(d)": F.scaled_dot_product_attention(
                q, k_rep, v_rep, is_causal=True, scale=1 / q.shape[-1]),
        }
        return F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True), wrong

    student = _student_function(namespace, "gqa_attention")
    _compare_on_cases("gqa_attention", ("q", "k", "v"), student, reference, cases, _with_hint(_float_array_mismatch))


@check("04_language_model", "causal_padding_mask")
def check_causal_padding_mask(namespace: dict) -> None:
    """causal_padding_mask(attention_mask) equals molmo_lite.llm.build_mask(attention_mask, B, T, 0, ...) on 30 random
    padding masks (none, left, right, holes, all padding; 0/1 integers and bools)."""
    import torch

    from molmo_lite import llm

    rng, gen = random.Random(44), _torch_generator(44)
    cases = []
    for k in range(30):
        b, t = rng.randint(1, 4), rng.randint(1, 8)
        mask = torch.ones(b, t, dtype=torch.long)
        for row in range(b):
            kind = (k + row) % 5
            if kind == 1:  # left padding
                mask[row, : rng.randint(1, t)] = 0
            elif kind == 2:  # right padding
                mask[row, rng.randint(0, t - 1):] = 0
            elif kind == 3:  # holes anywhere
                mask[row] = (torch.rand(t, generator=gen) < 0.6).long()
            elif kind == 4 and row == b - 1:  # a row of padding only
                mask[row] = 0
        cases.append((mask.bool() if k % 3 == 2 else mask,))

    def reference(attention_mask: Any) -> tuple:
        b, t = attention_mask.shape
        real = attention_mask.bool()
        causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]

        def attend_all_if_empty(allowed: Any) -> Any:
            return allowed | ~allowed.any(dim=-1, keepdim=True)

        wrong = {
            "rows with no key allowed were left all False (the softmax of a row of -inf is NaN): a query with no "
            "real key at or before it must attend to every key instead": causal & real[:, None, None, :],
            "the padding mask applied to the queries (rows) instead of the keys (columns)": attend_all_if_empty(
                causal & real[:, None, :, None]),
            "the causal part is missing: query i must not see keys after i": attend_all_if_empty(
                real[:, None, None, :].expand(b, 1, t, t)),
        }
        return llm.build_mask(attention_mask, b, t, 0, attention_mask.device), wrong

    student = _student_function(namespace, "causal_padding_mask")
    _compare_on_cases(
        "causal_padding_mask", ("attention_mask",), student, reference, cases, _with_hint(_bool_array_mismatch)
    )


def _tiny_llms(seed: int) -> list:
    """Two small random LLMs in eval mode: Qwen2-style (GQA, q/k/v biases) and OLMo 2-style (q/k norms, norms after)."""
    from molmo_lite import config, llm

    gen = _torch_generator(seed)
    common = dict(vocab_size=50, hidden=16, intermediate=32, rope_theta=10_000.0, additional_vocab=0)
    configs = [
        config.LLMConfig(layers=2, heads=4, kv_heads=2, qkv_bias=True, **common),
        config.LLMConfig(layers=2, heads=2, kv_heads=2, qkv_bias=False, qk_norm=True, norm_after=True,
                         tie_embeddings=True, **common),
    ]
    return [_randomize_(llm.LLM(cfg), gen).eval() for cfg in configs]


def _forbidden_generate(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("greedy_decode must not call model.generate: write the decoding loop yourself")


@contextmanager
def _count_model_tokens(model: Any) -> Iterator[list[int]]:
    """Record the number of tokens of every forward call of ``model`` (and forbid ``model.generate``) in the block."""
    seen: list[int] = []

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        tokens = args[0] if args and args[0] is not None else kwargs.get("input_ids")
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        seen.append(int(tokens.shape[1]) if tokens is not None and tokens.dim() >= 2 else -1)

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    model.generate = _forbidden_generate  # an instance attribute hides the method
    try:
        yield seen
    finally:
        handle.remove()
        del model.generate


@check("04_language_model", "greedy_decode")
def check_greedy_decode(namespace: dict) -> None:
    """greedy_decode(model, input_ids, max_new_tokens) returns the tokens molmo_lite.llm.LLM.generate picks, on 12
    random prompts for two small random LLMs (Qwen2- and OLMo 2-style), and runs the model on each token once: the
    whole prompt first, then only the newest token per step (the KV cache holds the rest)."""
    import torch

    torch_state = torch.random.get_rng_state()  # building the models must not move the notebook's random state
    try:
        models = _tiny_llms(45)
    finally:
        torch.random.set_rng_state(torch_state)
    rng, gen = random.Random(45), _torch_generator(45)
    cases = []
    for k in range(12):
        b, t = rng.randint(1, 3), rng.randint(1, 6)
        cases.append((models[k % 2], torch.randint(0, 50, (b, t), generator=gen), rng.randint(1, 8)))

    def reference(model: Any, input_ids: Any, max_new_tokens: int) -> Any:
        return model.generate(input_ids, max_new_tokens=max_new_tokens)

    student = _student_function(namespace, "greedy_decode")
    _compare_on_cases(
        "greedy_decode", ("model", "input_ids", "max_new_tokens"), student, reference, cases, _index_array_mismatch
    )
    model, input_ids, n = models[0], torch.randint(0, 50, (2, 5), generator=gen), 4
    with _count_model_tokens(model) as seen, _time_limit(grading._student_time_limit), torch.no_grad():
        student(model, input_ids.clone(), n)
    prompt = input_ids.shape[1]
    if not seen or seen[0] != prompt or any(s != 1 for s in seen[1:]) or len(seen) > n + 1:
        raise AssertionError(
            f"greedy_decode(model, input_ids=<int64 tensor {list(input_ids.shape)}>, max_new_tokens={n}) returned "
            f"the right tokens but ran the model on {seen} tokens per call; with a KVCache run it once on the "
            f"{prompt}-token prompt, then on the newest token alone ([{prompt}] + [1] * {n - 1})"
        )

"""Chapter 04 exercise checks: the language model, compared with molmo_lite.llm.

Each ``@check`` function reads the student's function from the notebook's globals (see molmo_lite.grading_core).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from molmo_lite.grading_core import (
    _compare_on_cases,
    _exact_array_mismatch,
    _float_array_mismatch,
    _index_array_mismatch,
    _int_mismatch,
    _randomize_,
    _student_code_time_limit,
    _student_function,
    _torch_generator,
    _with_hint,
    check,
)


def _bool_array_mismatch(got: Any, expected: Any) -> str | None:
    """Boolean masks that must be equal."""
    return _exact_array_mismatch(got, expected, kinds="b", wanted="a bool tensor (True = may attend)")


def _llm_configs() -> list[Any]:
    """Molmo's LLMs (Qwen2-7B: 4 KV heads, OLMo-7B: 32), the course's presets, a head_dim override and random ones."""
    from dataclasses import replace

    from molmo_lite import config

    presets = config.LLM_PRESETS
    configs = [presets["qwen2-7b"], presets["olmo-7b"], presets["tiny"], presets["small"],
               replace(presets["small"], head_dim=96)]
    rng = random.Random(41)
    for _ in range(8):
        kv = rng.choice((1, 2, 4))
        heads = kv * rng.choice((1, 2, 3))
        configs.append(config.LLMConfig(vocab_size=50, hidden=heads * rng.choice((8, 16)), layers=rng.randint(1, 6),
                                        heads=heads, kv_heads=kv, head_dim=rng.choice((None, 12)), intermediate=32))
    return configs


@check("04_language_model", "kv_cache_bytes")
def check_kv_cache_bytes(namespace: dict) -> None:
    """kv_cache_bytes(config, batch, tokens, bytes_per_value) equals the memory of the buffers molmo_lite.llm.KVCache
    allocates (built on PyTorch's meta device: shapes, no memory) for Qwen2-7B, OLMo-7B, the course's presets, a
    head_dim override and random configurations, 1 to 8 sequences of 1 to 32768 tokens, in 1, 2 and 4 bytes."""
    import torch

    from molmo_lite import llm

    dtypes = {1: torch.int8, 2: torch.bfloat16, 4: torch.float32}
    rng = random.Random(42)
    cases = [(cfg, rng.choice((1, 2, 8)), rng.choice((1, 2304, 4096, 32768, rng.randint(2, 999))),
              rng.choice(tuple(dtypes))) for cfg in _llm_configs() for _ in range(3)]

    def reference(cfg: Any, batch: int, tokens: int, bytes_per_value: int) -> tuple:
        cache = llm.KVCache(cfg, batch, tokens, device="meta", dtype=dtypes[bytes_per_value])
        size = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
        per_kv_head = size // cfg.kv_heads
        wrong = {
            "one key/value head per query head (multi-head attention): with grouped-query attention only "
            "config.kv_heads heads are cached": per_kv_head * cfg.heads,
            "the keys only: the cache holds the values too": size // 2,
            "hidden // heads as the head size: use config.dim_per_head (head_dim may be set)":
                size // cfg.dim_per_head * (cfg.hidden // cfg.heads),
        }
        return size, {hint: n for hint, n in wrong.items() if n != size}

    student = _student_function(namespace, "kv_cache_bytes")
    _compare_on_cases("kv_cache_bytes", ("config", "batch", "tokens", "bytes_per_value"), student, reference, cases,
                      _with_hint(_int_mismatch))


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


@check("04_language_model", "rope_interleaved")
def check_rope_interleaved(namespace: dict) -> None:
    """rope_interleaved(x, positions, theta) equals a complex-number RoPE (each neighbouring pair (x[2i], x[2i+1]) as
    one complex number, multiplied by exp(i * position * theta^(-2i/d)), in float64) on 24 random cases (head sizes 2
    to 64, thetas 100 to 1e6, positions from a cache offset, left padding or unsorted)."""
    import torch

    from molmo_lite import llm

    rng, gen = random.Random(43), _torch_generator(43)
    cases = []
    for _ in range(24):
        b, h, t, d = rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 7), rng.choice((2, 4, 8, 16, 64))
        cases.append((torch.randn(b, h, t, d, generator=gen), _random_positions(rng, gen, b, t),
                      rng.choice((100.0, 10_000.0, 1_000_000.0))))

    def complex_rope(x: Any, positions: Any, theta: float) -> Any:
        d = x.shape[-1]
        angles = positions.double()[:, None, :, None] / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
        return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2)

    def reference(x: Any, positions: Any, theta: float) -> tuple:
        d = x.shape[-1]
        cos, sin = llm.rope_cos_sin(positions, d, theta)
        arange = torch.arange(x.shape[2]).expand(x.shape[0], -1)
        wrong = {
            "the half-split convention (x[i], x[i + d/2]) of Qwen2 and molmo_lite: this exercise rotates "
            "neighbouring channels (x[2i], x[2i+1])": llm.apply_rope(x, cos, sin),
            "a rotation the wrong way round (the sign of sin flipped)": complex_rope(x, -positions, theta),
            "positions 0..T-1: use the `positions` given": complex_rope(x, arange, theta),
        }
        return complex_rope(x, positions, theta), wrong

    student = _student_function(namespace, "rope_interleaved")
    _compare_on_cases("rope_interleaved", ("x", "positions", "theta"), student, reference, cases,
                      _with_hint(_float_array_mismatch))


@check("04_language_model", "cached_gqa_attention")
def check_cached_gqa_attention(namespace: dict) -> None:
    """cached_gqa_attention(q, k, v) equals the last Tq rows of causal grouped-query attention over the whole
    sequence (torch's scaled_dot_product_attention after putting random queries in front of q for the cached
    positions) on 30 random cases: one new token after a cache, several, none cached, GQA and plain multi-head."""
    import torch
    import torch.nn.functional as F

    rng, gen = random.Random(44), _torch_generator(44)
    cases = []
    for k in range(30):
        b, kv, d = rng.randint(1, 2), rng.choice((1, 2, 3)), rng.choice((2, 4, 8))
        heads = kv * (rng.choice((2, 4)) if k % 4 else 1)  # every fourth case plain multi-head attention
        t_k = rng.randint(1, 9)
        t_q = (1, t_k, rng.randint(1, t_k))[k % 3]          # a decoding step, no cache, a chunk after a cache
        cases.append((torch.randn(b, heads, t_q, d, generator=gen), torch.randn(b, kv, t_k, d, generator=gen),
                      torch.randn(b, kv, t_k, d, generator=gen)))
    fillers = _torch_generator(45)

    def reference(q: Any, k: Any, v: Any) -> tuple:
        group = q.shape[1] // k.shape[1]
        t_q, t_k = q.shape[2], k.shape[2]
        k_rep, v_rep = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        earlier = torch.randn(q.shape[0], q.shape[1], t_k - t_q, q.shape[3], generator=fillers)
        whole = F.scaled_dot_product_attention(torch.cat([earlier, q], dim=2), k_rep, v_rep, is_causal=True)
        wrong = {
            "the causal mask aligned to the top left (what is_causal=True does when Tq < Tk): query i is at position "
            "Tk - Tq + i, so it sees the keys up to there": F.scaled_dot_product_attention(q, k_rep, v_rep,
                                                                                            is_causal=True),
            "`repeat` (kv heads 0, 1, 0, 1, ...): query head h shares kv head h // (H // KV), so use "
            "`repeat_interleave` (0, 0, 1, 1, ...)": F.scaled_dot_product_attention(
                torch.cat([earlier, q], dim=2), k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1),
                is_causal=True)[:, :, t_k - t_q:],
        }
        if t_q < t_k:
            wrong["no mask at all: the queries of a chunk must not see the keys after them"] = (
                F.scaled_dot_product_attention(q, k_rep, v_rep))
        return whole[:, :, t_k - t_q:], wrong

    student = _student_function(namespace, "cached_gqa_attention")
    _compare_on_cases("cached_gqa_attention", ("q", "k", "v"), student, reference, cases,
                      _with_hint(_float_array_mismatch))


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
    with _count_model_tokens(model) as seen, _student_code_time_limit(), torch.no_grad():
        student(model, input_ids.clone(), n)
    prompt = input_ids.shape[1]
    if not seen or seen[0] != prompt or any(s != 1 for s in seen[1:]) or len(seen) > n + 1:
        raise AssertionError(
            f"greedy_decode(model, input_ids=<int64 tensor {list(input_ids.shape)}>, max_new_tokens={n}) returned "
            f"the right tokens but ran the model on {seen} tokens per call; with a KVCache run it once on the "
            f"{prompt}-token prompt, then on the newest token alone ([{prompt}] + [1] * {n - 1})"
        )

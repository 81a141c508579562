"""Chapter 11 exercise checks: NF4 by hand against bitsandbytes, a LoRA forward against peft, NF4 bytes against
molmo_lite.quantize."""

from __future__ import annotations

import math
from typing import Any

from molmo_lite.grading_core import (_as_comparable_arrays, _compare_on_cases, _float_array_mismatch,
                                     _int_mismatch, _student_function, _torch_generator, _with_hint, check)

CHAPTER = "11_quantized_qlora"
TIE = 1e-6  # a weight this close to the midpoint of two levels may be rounded either way


def _nf4_levels():
    from molmo_lite.quantize import bnb

    return bnb.functional.get_4bit_type("nf4", device="cpu")


def _unpack(packed, n: int):
    """bitsandbytes' packed codes (two per byte, the first in the high half) -> n codes (int64)."""
    import torch

    flat = packed.flatten()
    return torch.stack([flat >> 4, flat & 15], dim=1).flatten()[:n].long()


def _blocks(seed: int) -> list:
    """Blocks to quantize: normal weights at several scales, blocks whose largest |w| is negative, an outlier, a short
    last block, weights exactly on the grid, and a block of zeros."""
    import torch

    gen, levels = _torch_generator(seed), _nf4_levels()
    blocks = [torch.randn(64, generator=gen) * scale for scale in (0.02, 0.05, 1.0, 30.0)]
    negative = torch.randn(64, generator=gen) * 0.04
    negative[17] = -0.5  # the largest |w| is negative
    outlier = torch.randn(64, generator=gen) * 0.03
    outlier[3] = 2.0
    on_grid = levels[torch.randint(0, 16, (64,), generator=gen)] * 0.7
    on_grid[0] = 0.7
    return blocks + [negative, outlier, torch.randn(40, generator=gen) * 0.1, on_grid, torch.zeros(64)]


def _bnb_quantize_block(w, levels):
    """bitsandbytes' NF4 codes and absmax of one block, and what is needed to forgive near-ties."""
    from molmo_lite.quantize import bnb

    packed, state = bnb.functional.quantize_4bit(w.clone(), blocksize=64, quant_type="nf4")
    absmax = float(state.absmax[0])
    scaled = (w / absmax).numpy() if absmax > 0 else w.numpy() * 0
    midpoints = ((levels[1:] + levels[:-1]) / 2).numpy()
    return _unpack(packed, len(w)).numpy(), absmax, scaled, midpoints, float(w.max())


def _codes_mismatch(got: Any, expected: tuple) -> str | None:
    import numpy as np

    codes, absmax, scaled, midpoints, largest = expected
    try:
        got_codes, got_absmax = got
        got_absmax = float(got_absmax)
    except (TypeError, ValueError):
        return "should return a pair (codes, absmax), absmax a number (a float or a 0-d tensor)"
    if not math.isclose(got_absmax, absmax, rel_tol=1e-6, abs_tol=1e-30):
        hint = " (absmax is the largest ABSOLUTE value, |w|.max())" if got_absmax == largest else ""
        return f"returned absmax {got_absmax:.6g}, expected {absmax:.6g}{hint}"
    arrays = _as_comparable_arrays(got_codes, codes, "iu", "integer codes in 0-15")
    if isinstance(arrays, str):
        return "codes: " + arrays
    got_codes, codes = arrays
    near_tie = np.abs(scaled[:, None] - midpoints[None, :]).min(axis=1) < TIE
    wrong = (got_codes != codes) & ~(near_tie & (np.abs(got_codes.astype(int) - codes.astype(int)) == 1))
    if not wrong.any():
        return None
    i = int(np.argwhere(wrong)[0][0])
    return (f"codes are wrong at {int(wrong.sum())} of {len(codes)} weights, first at [{i}]: {got_codes[i]} instead of "
            f"{codes[i]} (w / absmax = {scaled[i]:.4f}; the nearest level is code {codes[i]})")


@check(CHAPTER, "nf4_quantize_block")
def check_nf4_quantize_block(namespace: dict) -> None:
    """nf4_quantize_block(w, levels) gives bitsandbytes' codes and absmax (quantize_4bit, blocksize 64, nf4) on 9
    blocks: normal weights at 4 scales, a negative extreme, an outlier, a short last block, weights on the grid,
    zeros."""
    levels = _nf4_levels()
    cases = [(w, levels) for w in _blocks(111)]
    student = _student_function(namespace, "nf4_quantize_block")
    _compare_on_cases("nf4_quantize_block", ("w", "levels"), student, _bnb_quantize_block, cases, _codes_mismatch)


def _bnb_dequantize(codes, absmax, levels):
    import torch

    from molmo_lite.quantize import bnb

    c = codes.to(torch.uint8)
    packed = ((c[0::2] << 4) | c[1::2]).unsqueeze(1)
    state = bnb.functional.QuantState(absmax=absmax.reshape(1).float(), shape=codes.shape, code=levels, blocksize=64,
                                      quant_type="nf4", dtype=torch.float32)
    return bnb.functional.dequantize_4bit(packed, state).reshape(codes.shape)  # bnb's CPU kernel returns [1, n]


@check(CHAPTER, "nf4_dequantize")
def check_nf4_dequantize(namespace: dict) -> None:
    """nf4_dequantize(codes, absmax, levels) equals bitsandbytes' dequantize_4bit on 6 blocks of codes."""
    import torch

    gen, levels = _torch_generator(112), _nf4_levels()
    cases = []
    for n, absmax in ((64, 0.05), (64, 1.5), (32, 0.003), (64, 40.0)):
        cases.append((torch.randint(0, 16, (n,), generator=gen), torch.tensor(absmax), levels))
    cases.append((torch.full((64,), 15), torch.tensor(0.2), levels))
    cases.append((torch.full((64,), 7), torch.tensor(0.0), levels))
    student = _student_function(namespace, "nf4_dequantize")
    _compare_on_cases("nf4_dequantize", ("codes", "absmax", "levels"), student, _bnb_dequantize, cases,
                      lambda got, expected: _float_array_mismatch(got, expected, 1e-6))


def _peft_lora_layer(W, A, B, alpha: int, r: int, four_bit: bool):
    """peft's LoRA layer around a linear layer of weight W (a plain one, or an NF4 one) with adapters A, B."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from torch import nn

    from molmo_lite import quantize as Q

    holder = nn.Module()
    holder.proj = nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        holder.proj.weight.copy_(W)
    if four_bit:
        holder.proj = Q.quantize_linear(holder.proj, "nf4")
        holder.is_loaded_in_4bit = True  # what peft reads to pick its bitsandbytes LoRA layer
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["proj"]), holder)
    with torch.no_grad():
        holder.proj.lora_A["default"].weight.copy_(A)
        holder.proj.lora_B["default"].weight.copy_(B)
    return holder.proj.eval()


@check(CHAPTER, "lora_forward")
def check_lora_forward(namespace: dict) -> None:
    """lora_forward(x, W, A, B, alpha, r) equals a peft LoRA layer on 6 cases: 4 around a plain linear layer, 2 around
    an NF4 one (W is then its dequantized weight), several ranks and alphas."""
    import torch

    from molmo_lite import quantize as Q

    gen = _torch_generator(113)
    cases, layers = [], {}
    for (n_in, n_out, r, alpha, four_bit) in ((16, 24, 4, 8, False), (32, 16, 8, 16, False), (24, 24, 2, 32, False),
                                              (64, 48, 16, 16, False), (64, 128, 8, 16, True), (128, 64, 4, 4, True)):
        W = torch.randn(n_out, n_in, generator=gen) / n_in ** 0.5
        A = torch.randn(r, n_in, generator=gen) / n_in ** 0.5
        B = torch.randn(n_out, r, generator=gen) * 0.1
        x = torch.randn(2, 5, n_in, generator=gen)
        layer = _peft_lora_layer(W, A, B, alpha, r, four_bit)
        if four_bit:
            W = Q.dequantize_linear(layer.base_layer)
        layers[id(W)] = layer
        cases.append((x, W, A, B, alpha, r))

    def reference(x, W, A, B, alpha, r):
        with torch.no_grad():
            expected = layers[id(W)](x)
        base, update = x @ W.T, x @ A.T @ B.T
        return expected, {"the update is not scaled (multiply it by alpha / r)": base + update,
                          "the scaling is r / alpha instead of alpha / r": base + (r / alpha) * update,
                          "the base layer's output x W^T is missing": (alpha / r) * update}

    student = _student_function(namespace, "lora_forward")
    _compare_on_cases("lora_forward", ("x", "W", "A", "B", "alpha", "r"), student, reference, cases,
                      _with_hint(_float_array_mismatch))


@check(CHAPTER, "nf4_bytes")
def check_nf4_bytes(namespace: dict) -> None:
    """nf4_bytes(out_features, in_features, double_quant) equals molmo_lite.quantize.quantized_weight_bytes(...,
    "nf4", ...) (which tests/test_quantize.py checks against what bitsandbytes allocates) on 18 shapes."""
    from molmo_lite import quantize as Q

    shapes = [(128, 128), (384, 128), (64, 64), (3, 5), (7, 9), (1, 1), (100, 33), (257, 64), (18944, 3584)]
    cases = [(o, i, dq) for o, i in shapes for dq in (False, True)]

    def reference(out_features, in_features, double_quant):
        n = out_features * in_features
        expected = Q.quantized_weight_bytes(out_features, in_features, "nf4", double_quant)
        wrong = {"the 16-entry fp32 NF4 table (64 bytes) is missing": expected - 64,
                 "the codes of an odd number of weights need ceil(n / 2) bytes": expected - math.ceil(n / 2) + n // 2}
        if double_quant:
            wrong["the offset and the 256-entry table of the 8-bit absmax (1028 bytes) are missing"] = expected - 1028
            wrong["with double quantization the absmax values take 1 byte each, not 4"] = (
                expected + 3 * math.ceil(n / 64))
        return expected, wrong

    student = _student_function(namespace, "nf4_bytes")
    _compare_on_cases("nf4_bytes", ("out_features", "in_features", "double_quant"), student, reference, cases,
                      _with_hint(_int_mismatch))

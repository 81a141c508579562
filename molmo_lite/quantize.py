"""Quantized Molmo (chapter 11): the LLM in 4 or 8 bits with bitsandbytes, QLoRA fine-tuning with peft.

A 7B language model holds about 6.5 billion weights in its linear layers: 26 GB in fp32, 13 GB in bf16. Storing them
in fewer bits is what lets Molmo-7B-D run (and be fine-tuned) on one consumer GPU. Two formats from bitsandbytes:

    nf4   QLoRA's 4-bit NormalFloat. The weights are cut into blocks of 64; each block keeps its largest |w|
          ("absmax") and every weight becomes one of 16 levels spaced like the quantiles of a normal distribution,
          times that absmax. 4 bits per weight + one absmax per 64 weights. "Double quantization" stores the absmax
          values themselves in 8 bits (blocks of 256 of them share an fp32 scale): 4.127 bits per weight in all.
    int8  LLM.int8(): every output row keeps its absmax (fp32) and its weights become integers in [-127, 127];
          8 bits per weight + 32 bits per row. (bnb rounds the weights to fp16 before quantizing them.)

A quantized layer is still a linear layer: it dequantizes its weights (to ``compute_dtype``) and multiplies as usual,
so y = x @ dequantize(W).T + b. Only the weights are stored small (int8 inference also rounds the activations: see
below). Which parts to quantize is a choice (docs/molmo_recipe.md §9): most of the drift of a 4-bit Molmo comes
from quantizing the ViT, so here only the LLM's attention and MLP projections are quantized; the ViT, the
connector, the embeddings, the norms and the output head stay in high precision. They are a small part of the bytes (``footprint_table``).

    quantize_llm(model, "nf4")                 our LLM's Linear layers -> bitsandbytes Linear4bit (or Linear8bitLt)
    load_hf_llm_quantized(folder, "nf4")       the same through transformers + BitsAndBytesConfig (the oracle)
    weight_memory, quantized_linear_report     bytes actually held, and the ratio to fp32
    footprint_table(MOLMO_PRESETS["molmo-7b-d"])   the real model's memory per part and format, from shapes alone
    logit_drift(reference, quantized, batch)   how far the quantized model's logits moved
    prepare_qlora(model) / merge_qlora(model)  QLoRA: NF4 base + trainable low-rank adapters, then merge for inference

QLoRA (Dettmers et al. 2023) fine-tunes a quantized model without ever changing its 4-bit weights: every quantized
projection W gets a trainable low-rank update, y = x W^T + (alpha / r) * x A^T B^T with A [r, in], B [out, r] (B
starts at zero, so training starts from the quantized model exactly). Gradients flow through the frozen 4-bit
layers (they dequantize on the fly) into A and B. For inference the update is merged into the dequantized weights.

Two CPU facts this module deals with (bitsandbytes 0.50):
- on CPUs with AVX512-BF16, bnb's Linear4bit switches itself, in eval mode without gradients, to a fused kernel
  that repacks the weights and computes in bfloat16 whatever ``compute_dtype`` says. ``quantize_llm`` turns that
  off by default (``fused_cpu_kernel=False``), so results are the same on every machine and in fp32 when asked;
- int8 layers compute differently in eval and train mode on CPU: eval quantizes the activations too (to int8,
  after casting them to fp16, with LLM.int8()'s fp16 path for outlier columns above ``int8_threshold``), train mode
  dequantizes the weights and multiplies in the input's dtype.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .config import MolmoConfig
from .connector import Connector
from .llm import LLM
from .model import MolmoLite
from .vision import VisionTransformer


class _DropMessages(logging.Filter):
    """Drop log records that start with one of ``prefixes``; let the first one of ``once`` through, then drop it."""

    def __init__(self, prefixes: Sequence[str] = (), once: Sequence[str] = ()):
        super().__init__()
        self.prefixes, self.once, self.seen = tuple(prefixes), tuple(once), set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(self.prefixes):
            return False
        for prefix in self.once:
            if message.startswith(prefix):
                if prefix in self.seen:
                    return False
                self.seen.add(prefix)
        return True


# bitsandbytes logs, when it is imported on an AVX512-BF16 CPU, that it could not fetch an optional fused kernel from
# the Hugging Face Hub (the `kernels` package): it then falls back to its own, and by default this module uses neither
# (see above). The record comes from the logger of bitsandbytes.backends.cpu.ops; this filter drops that message only.
# And int8 layers log at EVERY eval call that they cast their input to fp16: the first one is let through, no more.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    _DropMessages(prefixes=("Failed to load CPU gemm_4bit_forward from kernels-community",)))
logging.getLogger("bitsandbytes.autograd._functions").addFilter(
    _DropMessages(once=("MatMul8bitLt: inputs will be cast from",)))

import bitsandbytes as bnb  # after the filters: the message above is logged while bitsandbytes is imported
from bitsandbytes.nn import Int8Params, Linear4bit, Linear8bitLt, Params4bit

MODES = ("nf4", "int8")
QUANTIZED_LINEARS = (Linear4bit, Linear8bitLt)
BLOCKSIZE = 64  # weights per NF4 block (bitsandbytes' default, as QLoRA)
NESTED_BLOCKSIZE = 256  # absmax values per block of the double quantization
QLORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; choose one of {MODES}")


def _the_llm(model: MolmoLite | LLM) -> LLM:
    if isinstance(model, LLM):
        return model
    llm = getattr(model, "llm", None)
    if not isinstance(llm, LLM):
        raise TypeError(f"expected a MolmoLite or an LLM, got {type(model).__name__}")
    return llm


# --------------------------------------------------------------------------------------------------------------------
# 1. Quantizing our LLM.
# --------------------------------------------------------------------------------------------------------------------


def quantize_linear(linear: nn.Linear, mode: str = "nf4", double_quant: bool = True,
                    compute_dtype: torch.dtype = torch.float32, int8_threshold: float = 6.0,
                    fused_cpu_kernel: bool = False) -> Linear4bit | Linear8bitLt:
    """One nn.Linear -> a bitsandbytes layer holding the same weights, quantized (on the linear's device).

    bitsandbytes quantizes a weight when it is moved to a device: ``Params4bit.to(device)`` / ``Int8Params.to(device)``
    on weights that are not quantized yet (also to the CPU they are already on). So: wrap the float weight, move it.
    The bias stays unquantized: the same Parameter as the original layer's. Calling this twice on the same data would try to
    quantize uint8 codes ("Blockwise quantization only supports 16/32-bit floats"): ``quantize_llm`` skips layers
    that are quantized already.
    """
    _check_mode(mode)
    device, weight = linear.weight.device, linear.weight.detach()
    has_bias = linear.bias is not None
    if mode == "nf4":
        layer = Linear4bit(linear.in_features, linear.out_features, bias=has_bias, compute_dtype=compute_dtype,
                           compress_statistics=double_quant, quant_type="nf4", device="meta")
        layer.weight = Params4bit(weight.clone(), requires_grad=False, compress_statistics=double_quant,
                                  quant_type="nf4", blocksize=BLOCKSIZE, module=layer).to(device)  # quantized here
        layer.support_avx512bf16_for_cpu = layer.support_avx512bf16_for_cpu and fused_cpu_kernel
        layer.register_load_state_dict_pre_hook(_load_nf4_statistics)
    else:
        layer = Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias, has_fp16_weights=False,
                             threshold=int8_threshold, device="meta")
        layer.weight = Int8Params(weight.clone(), requires_grad=False, has_fp16_weights=False).to(device)  # here
    if has_bias:
        layer.bias = linear.bias
    return layer.train(linear.training)


def _load_nf4_statistics(layer: Linear4bit, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook of our Linear4bit layers: read back the statistics their state_dict holds.

    A Linear4bit saves its codes as ``weight`` and its quantization statistics beside them (``weight.absmax``,
    ``weight.quant_map``, ``weight.nested_absmax``, ...), but bitsandbytes' own ``load_state_dict`` reads only the
    codes and calls the statistics unexpected keys (transformers reads them in its loader instead). This restores them
    in place (the Parameter object stays the same, so an optimizer that lists it still finds it by name): a QLoRA
    model's training checkpoint then resumes (``Trainer.fit(resume=True)``).
    """
    start = prefix + "weight."
    statistics = {key[len(start):]: state_dict.pop(key) for key in list(state_dict) if key.startswith(start)}
    if statistics:
        state = bnb.functional.QuantState.from_dict(statistics, device=layer.weight.device)
        layer.weight.quant_state = layer.quant_state = state


def quantize_llm(model: MolmoLite | LLM, mode: str = "nf4", double_quant: bool = True,
                 compute_dtype: torch.dtype = torch.float32, skip: Iterable[str] = ("lm_head",),
                 int8_threshold: float = 6.0, fused_cpu_kernel: bool = False) -> MolmoLite | LLM:
    """Replace the LLM's nn.Linear layers (attention wq wk wv wo, MLP w1 w2 w3) by bitsandbytes ones, in place.

    model: a MolmoLite (only ``model.llm`` is touched: the ViT and connector stay as they are) or an LLM.
    mode: "nf4" (Linear4bit, quant_type nf4; double_quant = bnb's compress_statistics) or "int8" (Linear8bitLt with
    int8 weights, has_fp16_weights=False; int8_threshold: LLM.int8()'s outlier threshold, 6.0 as transformers).
    compute_dtype: what NF4 weights are dequantized to for the matmul (fp32 on CPU; bf16 on a GPU).
    skip: names of layers to keep in full precision (a layer is skipped when one of the parts of its dotted name is
    listed); the output head by default, as transformers does. Embeddings and norms are never quantized.
    fused_cpu_kernel: allow bnb's bf16 CPU kernel for NF4 inference (see the module docstring; off = exact fp32).
    Layers that are quantized already, or whose weights are still on the meta device (not loaded yet), are left
    alone, so a loader can call it after every shard. Returns ``model``.
    """
    _check_mode(mode)
    skip = set(skip)
    llm = _the_llm(model)
    for parent_name, parent in list(llm.named_modules()):
        for name, child in list(parent.named_children()):
            parts = (f"{parent_name}.{name}" if parent_name else name).split(".")
            if type(child) is not nn.Linear or skip & set(parts) or any(p.startswith("lora_") for p in parts):
                continue  # quantized already (bnb layers subclass nn.Linear), skipped, or a LoRA adapter's matrix
            if any(t.is_meta for t in child.parameters()):
                continue  # not loaded yet (a model built on the meta device, filled shard by shard: released.py)
            setattr(parent, name, quantize_linear(child, mode, double_quant, compute_dtype, int8_threshold,
                                                  fused_cpu_kernel))
    # The flags transformers sets on a quantized model; peft reads them to wrap bnb layers in its bnb-aware LoRA layers.
    llm.is_loaded_in_4bit = any(isinstance(m, Linear4bit) for m in llm.modules())
    llm.is_loaded_in_8bit = any(isinstance(m, Linear8bitLt) for m in llm.modules())
    return model


def load_quantized(directory: str | Path, mode: str = "nf4", **options) -> MolmoLite:
    """A ``MolmoLite.save_pretrained`` folder with its LLM quantized (``options``: those of ``quantize_llm``).

    The checkpoint is read in full precision first, then quantized layer by layer: the peak memory is that of the
    fp32 model. For a real 7B LLM load it with ``load_hf_llm_quantized``, which quantizes while reading.
    """
    return quantize_llm(MolmoLite.from_pretrained(directory), mode, **options)


def is_quantized(module: nn.Module) -> bool:
    """Does ``module`` hold any bitsandbytes-quantized linear layer?"""
    return any(isinstance(m, QUANTIZED_LINEARS) for m in module.modules())


def use_fused_cpu_kernel(module: nn.Module, enabled: bool) -> nn.Module:
    """Allow (or forbid) bnb's bf16 CPU kernel in every Linear4bit of ``module`` (ours or a transformers model).

    It only ever switches on for CPUs with AVX512-BF16, in eval mode for inputs without gradients, and computes in
    bfloat16. It is not lossless: its first forward repacks the weights and turns the double-quantized absmax into
    bfloat16; going back to bnb's own layout (``state_dict()`` or ``dequantize_linear`` do) quantizes the absmax
    again, so the weights come back slightly changed. Decide before the first eval forward.
    """
    for m in module.modules():
        if isinstance(m, Linear4bit):
            m.support_avx512bf16_for_cpu = enabled and bnb.functional.has_avx512bf16()
    return module


def dequantize_linear(layer: nn.Module) -> torch.Tensor:
    """The weight [out, in] a (quantized) linear layer multiplies by, in float32.

    NF4: the 4-bit codes looked up in the NF4 table, times their block's absmax (itself dequantized first when double
    quantization is on). int8: the codes times their row's absmax / 127.
    """
    if isinstance(layer, Linear4bit):
        weight = layer.weight
        if getattr(weight.quant_state, "packing_format_for_cpu", False):
            layer.state_dict()  # the fused CPU kernel repacked the weights; saving restores bnb's layout (see above)
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    if isinstance(layer, Linear8bitLt):
        codes = layer.state.CB if layer.state.CB is not None else layer.weight.data
        row_absmax = layer.state.SCB if layer.state.SCB is not None else layer.weight.SCB
        return codes.float() * (row_absmax.float()[:, None] / 127.0)
    if isinstance(layer, nn.Linear):
        return layer.weight.detach().float()
    raise TypeError(f"expected a linear layer, got {type(layer).__name__}")


# --------------------------------------------------------------------------------------------------------------------
# 2. The oracle: the same LLM quantized by transformers.
# --------------------------------------------------------------------------------------------------------------------


def hf_quantization_config(mode: str = "nf4", double_quant: bool = True,
                           compute_dtype: torch.dtype = torch.float32, int8_threshold: float = 6.0):
    """The ``transformers.BitsAndBytesConfig`` that matches ``quantize_llm(model, mode, ...)``."""
    from transformers import BitsAndBytesConfig

    _check_mode(mode)
    if mode == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=int8_threshold)


def load_hf_llm_quantized(path_or_id: str | Path, mode: str = "nf4", **options):
    """A transformers causal LM quantized while it loads: ``from_pretrained(path, quantization_config=...)``.

    transformers replaces every nn.Linear but the output head by bitsandbytes layers before the weights are read, and
    quantizes each weight as it arrives, so the full-precision model never sits in memory. ``options``: those of
    ``hf_quantization_config``. A local folder loads offline; a Hub id needs the network (or the local cache).
    """
    from transformers import AutoModelForCausalLM

    config = hf_quantization_config(mode, **options)
    try:
        return AutoModelForCausalLM.from_pretrained(str(path_or_id), quantization_config=config).eval()
    except OSError as err:
        if Path(path_or_id).is_dir():
            raise
        raise OSError(f"{path_or_id!r} is not a local folder and could not be fetched from the Hugging Face Hub "
                      f"(offline?): {err}") from None


# --------------------------------------------------------------------------------------------------------------------
# 3. Memory: what is held, and what Molmo-7B-D would need.
# --------------------------------------------------------------------------------------------------------------------


def _quant_state_tensors(state) -> Iterator[torch.Tensor]:
    """Every tensor of a bnb QuantState (absmax, code tables, offset), the nested state's included."""
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            yield value
        elif type(value).__name__ == "QuantState":
            yield from _quant_state_tensors(value)


def _layer_weight_tensors(layer: nn.Module) -> Iterator[torch.Tensor]:
    """The weight of a linear layer and everything needed to dequantize it (not the bias)."""
    weight = layer.weight
    yield weight
    state = getattr(weight, "quant_state", None)
    if state is not None:
        yield from _quant_state_tensors(state)
    for holder in (weight, getattr(layer, "state", None)):  # int8: the codes and row scales (weight or state)
        for name in ("CB", "SCB"):
            value = getattr(holder, name, None)
            if isinstance(value, torch.Tensor):
                yield value


def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a tensor seen twice, or a view, counts once)."""
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        key = (t.device, storage.data_ptr(), storage.nbytes()) if storage.data_ptr() else id(t)  # meta: no address
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def weight_memory(module: nn.Module) -> int:
    """Bytes of everything ``module`` stores: parameters and buffers (quantized ones at their packed size: a Params4bit
    holds two 4-bit codes per uint8) plus the quantization statistics bnb keeps beside them (absmax, nested absmax,
    code tables, offsets; int8 row scales). Shared storage counts once."""
    def tensors() -> Iterator[torch.Tensor]:
        yield from module.parameters()
        yield from module.buffers()
        for m in module.modules():
            if isinstance(m, QUANTIZED_LINEARS):
                yield from _layer_weight_tensors(m)
    return _unique_bytes(tensors())


def quantized_linear_report(model: nn.Module) -> dict:
    """The quantized linear layers of ``model``: their weights' bytes (codes + statistics, biases excluded) against
    the same weights in fp32.

    -> {"layers", "weights" (number of weights), "fp32_bytes", "quantized_bytes", "ratio" (quantized / fp32),
        "bits_per_weight"}.
    """
    layers = [m for m in model.modules() if isinstance(m, QUANTIZED_LINEARS)]
    n = sum(m.in_features * m.out_features for m in layers)
    quantized = sum(_unique_bytes(_layer_weight_tensors(m)) for m in layers)
    return {"layers": len(layers), "weights": n, "fp32_bytes": 4 * n, "quantized_bytes": quantized,
            "ratio": quantized / (4 * n) if n else float("nan"), "bits_per_weight": 8 * quantized / n if n else 0.0}


def quantized_weight_bytes(out_features: int, in_features: int, mode: str, double_quant: bool = True) -> int:
    """Bytes bitsandbytes holds for one [out, in] weight, from its shape (what ``weight_memory`` measures).

    nf4: n / 2 bytes of codes (two per byte) + its 16-entry fp32 NF4 table; one absmax per block of 64 weights, as
         fp32, or with double quantization as uint8 plus, per 256 blocks, one fp32 scale, an fp32 offset and the
         256-entry fp32 table of the 8-bit codes.
    int8: n bytes + one fp32 absmax per output row.
    """
    _check_mode(mode)
    n = out_features * in_features
    if mode == "int8":
        return n + 4 * out_features
    blocks = math.ceil(n / BLOCKSIZE)
    codes = math.ceil(n / 2) + 16 * 4
    if not double_quant:
        return codes + 4 * blocks
    return codes + blocks + 4 * math.ceil(blocks / NESTED_BLOCKSIZE) + 4 + 256 * 4


FOOTPRINT_FORMATS = ("fp32", "bf16", "int8", "nf4")


def footprint_table(config: MolmoConfig, double_quant: bool = True) -> list[dict]:
    """Weight memory of a Molmo geometry per part and format, from the shapes alone (nothing is allocated: the
    modules are built on PyTorch's "meta" device, which has shapes and no data).

    Formats: fp32 and bf16 (everything at 4 / 2 bytes per parameter); int8 and nf4 (the LLM's attention and MLP
    weights quantized as ``quantize_llm`` does, everything else in bf16: ViT, connector, embeddings, output head,
    norms and the linear layers' biases). Weights only: activations, the KV cache, optimizer state and the CUDA
    context come on top. Rows: ViT (the blocks Molmo keeps), connector, LLM linear layers, LLM embeddings and output
    head, LLM norms, total; each {"part", "params", "fp32", "bf16", "int8", "nf4"} with sizes in bytes.

    Users report ~12 GB for an NF4 Molmo-7B-D (docs/molmo_recipe.md §9): the weights are about half of that; the rest
    is activations (up to 13 crops through the ViT, a sequence of a thousand or more tokens), the KV cache, the CUDA
    context and allocator slack, and any part left in fp32 instead of bf16.
    """
    with torch.device("meta"):
        vision, connector, llm = VisionTransformer(config.vision), Connector(config.connector), LLM(config.llm)

    def plain(part: str, params: int) -> dict:
        return {"part": part, "params": params, "fp32": 4 * params, "bf16": 2 * params, "int8": 2 * params,
                "nf4": 2 * params}

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    linears = [m for name, m in llm.named_modules() if isinstance(m, nn.Linear) and name != "lm_head"]
    weights = sum(m.weight.numel() for m in linears)
    biases = sum(m.bias.numel() for m in linears if m.bias is not None)
    linear_row = plain("LLM linear layers", weights + biases)
    for mode in ("int8", "nf4"):
        linear_row[mode] = 2 * biases + sum(quantized_weight_bytes(m.out_features, m.in_features, mode, double_quant)
                                            for m in linears)
    embeddings = count(llm.embed) + (0 if llm.lm_head is None else count(llm.lm_head))
    norms = count(llm) - weights - biases - embeddings
    rows = [plain("ViT", count(vision)), plain("connector", count(connector)), linear_row,
            plain("LLM embeddings + output head", embeddings), plain("LLM norms", norms)]
    total = {"part": "total", **{key: sum(r[key] for r in rows) for key in ("params", *FOOTPRINT_FORMATS)}}
    return rows + [total]


def format_footprint(rows: Sequence[Mapping]) -> str:
    """``footprint_table`` as a markdown table: parameters in millions, sizes in GB (10^9 bytes)."""
    lines = ["| part | params (M) | " + " | ".join(f"{f} GB" for f in FOOTPRINT_FORMATS) + " |",
             "|---|---:|" + "---:|" * len(FOOTPRINT_FORMATS)]
    for r in rows:
        sizes = " | ".join(f"{r[f] / 1e9:.2f}" for f in FOOTPRINT_FORMATS)
        lines.append(f"| {r['part']} | {r['params'] / 1e6:,.1f} | {sizes} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# 4. How far the logits moved.
# --------------------------------------------------------------------------------------------------------------------


def _logits(model: nn.Module, batch) -> torch.Tensor:
    out = model(**batch) if isinstance(batch, Mapping) else model(batch)
    return (out.logits if hasattr(out, "logits") else out).float()


@torch.no_grad()
def logit_drift(reference: nn.Module, quantized: nn.Module, batch) -> dict[str, float]:
    """Run both models on ``batch`` and compare their logits at the real (not padding) positions.

    batch: keyword arguments (a dict, e.g. from ``collate``; its 2-D attention_mask, if any, marks the real
    tokens) or input ids [B, T]. The models may be MolmoLite, LLM or transformers models (anything whose output is
    logits or has .logits). -> {"max_abs", "mean_abs" (|difference| over positions x vocabulary), "top1_agreement"
    (share of positions whose argmax agrees), "reference_std" (spread of the reference logits, for scale)}.
    """
    ref, new = _logits(reference, batch), _logits(quantized, batch)
    if ref.shape != new.shape:
        raise ValueError(f"the models disagree on the logits' shape: {tuple(ref.shape)} vs {tuple(new.shape)}")
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    if mask is not None and mask.dim() == 2:
        ref, new = ref[mask.bool()], new[mask.bool()]
    diff = (ref - new).abs()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(),
            "top1_agreement": (ref.argmax(-1) == new.argmax(-1)).float().mean().item(),
            "reference_std": ref.std().item()}


# --------------------------------------------------------------------------------------------------------------------
# 5. QLoRA.
# --------------------------------------------------------------------------------------------------------------------


def prepare_qlora(model: MolmoLite, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                  target: Sequence[str] = QLORA_TARGETS, **quantize_options) -> tuple[MolmoLite, list[str]]:
    """Make ``model`` (in place) a QLoRA model: what is trained, and what stays frozen.

    1. the LLM is quantized to NF4 (unless it is quantized already; ``quantize_options`` go to ``quantize_llm``);
    2. peft injects LoRA adapters (rank r, scaling alpha / r, dropout on their input) into the LLM projections named
       in ``target``, in place: ``peft.inject_adapter_in_model`` on ``model.llm`` keeps our module tree, so
       ``MolmoLite.forward`` runs unchanged (``llm.blocks.0.attention.wq`` becomes a peft layer holding
       ``base_layer``, the frozen Linear4bit, and ``lora_A`` / ``lora_B``);
    3. the connector and the LLM's new-token embedding rows train in full (they are new in Molmo, and small).
    The ViT, the quantized weights, biases, norms, base embeddings and output head stay frozen.

    -> (model, names of the trainable parameters). Give the optimizer exactly those (``p.requires_grad``).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not is_quantized(model.llm):
        quantize_llm(model, "nf4", **quantize_options)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target), bias="none")
    inject_adapter_in_model(config, model.llm)
    for name, p in model.named_parameters():
        p.requires_grad_(_trains_in_qlora(name))
    return model, [name for name, p in model.named_parameters() if p.requires_grad]


def _trains_in_qlora(name: str) -> bool:
    """The LoRA matrices, the connector and the new-token rows (``prepare_qlora``, step 3)."""
    return ".lora_A." in name or ".lora_B." in name or name.startswith(("connector.", "llm.embed.new."))


def merged_linear_weight(layer: nn.Module) -> torch.Tensor:
    """W + (alpha / r) * B @ A in float32 for a peft LoRA layer (W dequantized); the plain weight otherwise."""
    from peft.tuners.lora import LoraLayer

    if not isinstance(layer, LoraLayer):
        return dequantize_linear(layer)
    weight = dequantize_linear(layer.get_base_layer())
    for adapter in layer.active_adapters:
        if adapter in layer.lora_A:
            a, b = layer.lora_A[adapter].weight.float(), layer.lora_B[adapter].weight.float()
            weight = weight + layer.scaling[adapter] * (b @ a)
    return weight


@torch.no_grad()
def merge_qlora(model: MolmoLite) -> MolmoLite:
    """A plain fp32 MolmoLite with the same function as the QLoRA model: every LLM projection becomes
    dequantize(W) + (alpha / r) B A, everything else is copied. It saves with ``save_pretrained`` and loads with
    ``MolmoLite.from_pretrained`` (merge-and-save for inference; quantize it again with ``quantize_llm`` if wanted,
    at the price of rounding the merged weights once more).

    The merged weights start from the DEQUANTIZED base weights, not the original fp32 ones: the adapters were trained
    on top of the quantized model, so that is the model they correct.
    """
    merged = MolmoLite(model.config, model.tokenizer)
    sources = dict(model.named_parameters()) | dict(model.named_buffers())
    state = {}
    for name, module in merged.llm.named_modules():
        if isinstance(module, nn.Linear):
            layer = model.llm.get_submodule(name)
            state[f"llm.{name}.weight"] = merged_linear_weight(layer)
            if module.bias is not None:
                base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
                state[f"llm.{name}.bias"] = base.bias.detach().float()
    for key in merged.state_dict():
        if key not in state:
            state[key] = sources[key].detach().float()
    merged.load_state_dict(state)
    return merged.eval()

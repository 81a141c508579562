"""The language model: a decoder-only transformer written from scratch (chapter 04).

    ids [B, T] --embed--> [B, T, D]   (or inputs_embeds: chapter 05 adds image features to <im_patch> embeddings)
    blocks: Qwen2 (pre-norm):   x += attention(norm(x));   x += mlp(norm(x))
            OLMo 2 (norm_after): x += norm(attention(x));   x += norm(mlp(x))     with q/k RMSNorm
    attention: grouped-query (kv_heads <= heads), RoPE on q and k, causal, plus any padding or block mask
    norm -> lm_head -> logits [B, T, vocab]

One class covers both families Molmo uses (Qwen2 for Molmo-7B-D/72B, OLMo 2 for Molmo-7B-O); weights load from
`transformers`' Qwen2ForCausalLM / Olmo2ForCausalLM (a model, a state dict or a ``save_pretrained`` folder) through
one explicit name map. A KV cache makes generation cost one token per step instead of the whole prefix.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_weights, read_config, save_checkpoint
from .config import LLMConfig


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * h).to(x.dtype)


@functools.lru_cache(maxsize=32)
def rope_inv_freq(head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """theta^(-2i / head_dim) for i < head_dim / 2, float32; cached, as decoding asks for it at every step."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding tables for positions [B, T] -> cos, sin [B, 1, T, head_dim] (frequencies repeated twice)."""
    inv_freq = rope_inv_freq(head_dim, float(theta), positions.device)
    angles = positions.float()[..., None] * inv_freq  # [B, T, head_dim / 2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (first half, second half) pair of x [B, H, T, d] by its position's angle."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, in preallocated buffers [B, kv_heads, max_len, d]."""

    def __init__(self, config: LLMConfig, batch: int, max_len: int, device=None, dtype=torch.float32):
        shape = (batch, config.kv_heads, max_len, config.dim_per_head)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.layers)]
        self.length = 0  # tokens stored (the same for every layer once a forward pass is done)
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, kv_heads, t, d] after the cached ones; return all keys and values so far."""
        start, stop = self.length, self.length + k.shape[2]
        if stop > self.max_len:
            raise ValueError(f"KV cache full: {stop} tokens > max_len {self.max_len}")
        self.keys[layer][:, :, start:stop] = k
        self.values[layer][:, :, start:stop] = v
        return self.keys[layer][:, :, :stop], self.values[layer][:, :, :stop]


class Attention(nn.Module):
    """Grouped-query attention: ``heads`` query heads share ``kv_heads`` key/value heads."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        d, h, kv = cfg.dim_per_head, cfg.heads, cfg.kv_heads
        if h % kv:
            raise ValueError(f"heads ({h}) must be a multiple of kv_heads ({kv})")
        self.cfg = cfg
        self.wq = nn.Linear(cfg.hidden, h * d, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.hidden, kv * d, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.hidden, kv * d, bias=cfg.qkv_bias)
        self.wo = nn.Linear(h * d, cfg.hidden, bias=False)
        self.per_head_norm = cfg.qk_norm and cfg.qk_norm_scope == "head"
        if self.per_head_norm:  # Qwen3 / Molmo2-8B: over each head's d channels, after splitting into heads
            self.q_norm, self.k_norm = RMSNorm(d, cfg.rms_eps), RMSNorm(d, cfg.rms_eps)
        elif cfg.qk_norm:  # OLMo 2: over the whole projection, before splitting into heads
            self.q_norm, self.k_norm = RMSNorm(h * d, cfg.rms_eps), RMSNorm(kv * d, cfg.rms_eps)

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        d, h, kv = self.cfg.dim_per_head, self.cfg.heads, self.cfg.kv_heads
        q, k, v = self.wq(x), self.wk(x), self.wv(x)
        if self.cfg.qk_norm and not self.per_head_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (z.view(b, t, -1, d) for z in (q, k, v))  # [B, T, heads, d]
        if self.per_head_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # [B, heads, T, d]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv != h)
        return self.wo(out.transpose(1, 2).reshape(b, t, h * d))


class MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x) (Hugging Face calls them gate, down and up)."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.w3 = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.w2 = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.norm_after = cfg.norm_after
        self.attention_norm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.feed_forward = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache=None, layer=0, dropout: float = 0.0, dropout_mask=None):
        if self.norm_after:  # OLMo 2
            x = x + _residual_dropout(self.attention_norm(self.attention(x, cos, sin, mask, cache, layer)), dropout,
                                      dropout_mask)
            return x + _residual_dropout(self.ffn_norm(self.feed_forward(x)), dropout, dropout_mask)
        x = x + _residual_dropout(self.attention(self.attention_norm(x), cos, sin, mask, cache, layer), dropout,
                                  dropout_mask)
        return x + _residual_dropout(self.feed_forward(self.ffn_norm(x)), dropout, dropout_mask)


def _residual_dropout(h: torch.Tensor, p: float, where: torch.Tensor | None) -> torch.Tensor:
    """Dropout on a block's output before it joins the residual stream (Molmo's residual_dropout); ``where`` [B, T]
    limits it to some positions (its response_residual_dropout: the answer tokens only)."""
    if p == 0.0:
        return h
    dropped = F.dropout(h, p, training=True)
    return dropped if where is None else torch.where(where[..., None], dropped, h)


class Embedding(nn.Module):
    """Molmo's token embedding: the base table plus ``additional`` rows for the new (image) tokens.

    ids < base_size read ``base``, ids >= base_size read ``new``; the two are separate parameters so that the new
    rows can train with the connector's learning rate (MOLMO: the connector group).
    """

    def __init__(self, base_size: int, dim: int, additional: int = 0):
        super().__init__()
        self.base = nn.Embedding(base_size, dim)
        self.new = nn.Embedding(additional, dim) if additional else None

    @property
    def weight(self) -> torch.Tensor:
        """The full table [base_size + additional, dim]."""
        return self.base.weight if self.new is None else torch.cat([self.base.weight, self.new.weight])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        base_size = self.base.num_embeddings
        if self.new is None:
            return self.base(ids)
        x = self.base(ids.clamp(max=base_size - 1))
        is_new = ids >= base_size
        if is_new.any():
            x = torch.where(is_new[..., None], self.new((ids - base_size).clamp(min=0)), x)
        return x


def build_mask(attention_mask: torch.Tensor | None, b: int, t: int, past: int, device,
               bidirectional: torch.Tensor | None = None) -> torch.Tensor | None:
    """Boolean [B, 1, T, past + T] mask, True = may attend: (causal OR both in the bidirectional group) AND the
    caller's mask.

    attention_mask: None; [B, past + T] padding mask (1 = real token); or a block mask [B, T, S] / [B, 1, T, S]
    (True = allowed) such as chapter 05's packing mask. bidirectional: None, or bool [B, past + T], True for the
    tokens that see one another whatever their order (Molmo2's image tokens); the caller's mask still applies, so
    packed examples do not see each other's images. Rows that may attend to nothing (queries at padding) attend to
    everything instead, which keeps them finite; their outputs are never used.
    """
    s = past + t
    if t == 1 and (attention_mask is None or attention_mask.dim() == 2):  # one new token: causality allows all keys
        if attention_mask is None:
            return None
        allowed = attention_mask.bool()[:, None, None, :]
        return allowed | ~allowed.any(dim=-1, keepdim=True)
    causal = torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=past)[None, None]
    if bidirectional is not None:
        if bidirectional.shape != (b, s):
            raise ValueError(f"bidirectional must be [B, past + T] = {[b, s]}, got {list(bidirectional.shape)}")
        group = bidirectional.bool()
        causal = causal | (group[:, None, -t:, None] & group[:, None, None, :])  # [B, 1, T, S]
    if attention_mask is None:
        return causal
    if attention_mask.dim() == 2:
        allowed = causal & attention_mask.bool()[:, None, None, :]
    else:
        block = attention_mask.bool()
        block = block[:, None] if block.dim() == 3 else block
        allowed = causal & block[..., -t:, -s:]
    return allowed | ~allowed.any(dim=-1, keepdim=True)


class LLM(nn.Module):
    """Decoder-only transformer for Qwen2- and OLMo 2-style checkpoints (see the module docstring)."""

    def __init__(self, config: LLMConfig):
        super().__init__()
        self.config = config
        self.embed = Embedding(config.vocab_size, config.hidden, config.additional_vocab)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = RMSNorm(config.hidden, config.rms_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.hidden, config.vocab_size, bias=False)
        self.residual_dropout = 0.0  # a training option (TrainConfig), not part of the architecture
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-style start for training from scratch: N(0, 0.02) weights, zero biases (so logits start near 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: KVCache | None = None,
        dropout_mask: torch.Tensor | None = None,
        bidirectional: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """-> logits [B, T, vocab_size] (the base vocabulary: Molmo never predicts its image tokens).

        bidirectional: bool [B, past + T], the tokens that also see the ones after them within their group (Molmo2's
        image tokens, ``build_mask``); None: causal only.

        position_ids default: from a 2-D attention_mask, cumsum(mask) - 1 (so left padding does not shift positions);
        otherwise 0.. T-1 after the cached tokens. In training mode ``self.residual_dropout`` (set by the trainer;
        0 by default) drops block outputs, only where dropout_mask [B, T] is True when it is given.
        """
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        b, t, _ = x.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
            else:
                position_ids = torch.arange(past, past + t, device=x.device).expand(b, t)
        cos, sin = rope_cos_sin(position_ids, self.config.dim_per_head, self.config.rope_theta)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        mask = build_mask(attention_mask, b, t, past, x.device, bidirectional)
        if mask is not None:  # True / False -> 0 / -inf once here, rather than inside every layer's attention
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        dropout = self.residual_dropout if self.training else 0.0
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, cache, i, dropout, dropout_mask)
        if cache is not None:
            cache.length += t
        return self.logits(self.norm(x))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is None:
            return hidden @ self.embed.base.weight.T
        return self.lm_head(hidden)

    # ------------------------------------------------------------------------------------------------- generation

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32,
                 eos_id: int | None = None, use_cache: bool = True,
                 inputs_embeds: torch.Tensor | None = None, bidirectional: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding -> new tokens [B, max_new_tokens] (after eos_id, a row repeats eos_id; decoding stops
        early once every row has written it).

        Prompts may be left- or right-padded (attention_mask 1 = real token): they are left-aligned first, so
        every row continues from its own last real token. inputs_embeds [B, T, D]: the prompt's embeddings when they
        are not just the token embeddings of input_ids (MolmoLite adds image features to them); input_ids must
        still be given (the uncached path re-embeds the new tokens from their ids). bidirectional [B, T]: the prompt's
        tokens that see one another (``forward``); the generated tokens are text, causal.
        """
        with torch.inference_mode():  # as no_grad, and lighter: no version counters or view tracking
            order = left_align_order(input_ids, attention_mask)
            ids = input_ids.gather(1, order)
            group = None if bidirectional is None else bidirectional.bool().gather(1, order)
            mask = torch.ones_like(ids) if attention_mask is None else attention_mask.long().gather(1, order)
            embeds = None if inputs_embeds is None else inputs_embeds.gather(
                1, order[..., None].expand(-1, -1, inputs_embeds.shape[-1]))
            b, prompt = ids.shape
            out = torch.empty(b, max_new_tokens, dtype=torch.long, device=ids.device)
            done = torch.zeros(b, dtype=torch.bool, device=ids.device)
            # The padding mask of the prompt and of every token to come, built once (each step reads a prefix of it);
            # none at all when nothing is padded, so one new token needs no mask.
            full_mask = None if bool(mask.all()) else torch.cat([mask, mask.new_ones(b, max_new_tokens)], dim=1)
            cache = KVCache(self.config, b, prompt + max_new_tokens, ids.device,
                            self.embed.base.weight.dtype) if use_cache else None
            step_ids, step_embeds = ids, embeds
            step_positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding does not shift the positions
            for step in range(max_new_tokens):
                step_mask = None if full_mask is None else full_mask[:, :prompt + step]
                if use_cache:  # only the new tokens: the cache holds the keys and values of the ones before
                    logits = self(step_ids if step_embeds is None else None, attention_mask=step_mask,
                                  position_ids=step_positions, inputs_embeds=step_embeds, cache=cache,
                                  bidirectional=group if step == 0 else None)
                else:  # the whole sequence again
                    step_group = None if group is None else torch.cat([group, group.new_zeros(b, step)], dim=1)
                    logits = self(ids if embeds is None else None, attention_mask=step_mask, inputs_embeds=embeds,
                                  bidirectional=step_group)
                token = logits[:, -1].argmax(-1)
                if eos_id is not None:
                    token = torch.where(done, torch.full_like(token, eos_id), token)
                    done |= token == eos_id
                out[:, step] = token
                if eos_id is not None and bool(done.all()):
                    out[:, step + 1:] = eos_id
                    break
                step_ids, step_embeds, step_positions = token[:, None], None, step_positions[:, -1:] + 1
                if not use_cache:
                    ids = torch.cat([ids, step_ids], dim=1)
                    if embeds is not None:
                        embeds = torch.cat([embeds, self.embed(step_ids)], dim=1)
        return out.clone()  # an ordinary tensor again: inference tensors cannot be saved for a later backward

    # ---------------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_hf(cls, source, additional_vocab: int = 0) -> "LLM":
        """From a transformers Qwen2ForCausalLM / Olmo2ForCausalLM model, or a ``save_pretrained`` folder
        (safetensors + config.json). For a bare state dict use ``from_hf_state_dict(state, config)``."""
        if isinstance(source, (str, Path)):
            folder = Path(source)
            hf_config = json.loads((folder / "config.json").read_text())
            state = _read_safetensors_folder(folder)
        elif isinstance(source, nn.Module):
            hf_config, state = source.config.to_dict(), source.state_dict()
        else:
            raise ValueError(f"expected a transformers model or a folder, got {type(source).__name__}")
        return cls.from_hf_state_dict(state, llm_config_from_hf(hf_config, additional_vocab))

    @classmethod
    def from_hf_state_dict(cls, state: Mapping[str, torch.Tensor], config: LLMConfig) -> "LLM":
        model = cls(config)
        ours = state_from_hf(state, config)
        missing, unexpected = model.load_state_dict(ours, strict=False)
        missing = [k for k in missing if not k.startswith("embed.new.")]  # Molmo's new rows are not in the base
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit: missing {missing[:6]}, unexpected {unexpected[:6]}")
        return model


def left_align_order(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The permutation [B, T] that moves every row's real tokens to the right end, keeping their order."""
    if mask is None:
        return torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.argsort(mask.long(), dim=1, stable=True)  # padding (0) first, then the real tokens in order


def left_align(ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Move every row's real tokens to the right end (left padding), keeping their order; returns (ids, mask)."""
    if mask is None:
        return ids, torch.ones_like(ids)
    order = left_align_order(ids, mask)
    return ids.gather(1, order), mask.long().gather(1, order)


def _read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no .safetensors files in {folder} (save the model with save_pretrained)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def llm_config_from_hf(hf: Mapping, additional_vocab: int = 0) -> LLMConfig:
    """LLMConfig from a transformers Qwen2 / Olmo2 config (as a dict)."""
    kind = hf.get("model_type")
    if kind not in ("qwen2", "olmo2"):
        raise ValueError(f"model_type {kind!r} is not supported: molmo_lite loads 'qwen2' and 'olmo2'")
    rope = hf.get("rope_parameters") or {}
    heads = hf["num_attention_heads"]
    return LLMConfig(
        vocab_size=hf["vocab_size"], hidden=hf["hidden_size"], layers=hf["num_hidden_layers"], heads=heads,
        kv_heads=hf.get("num_key_value_heads") or heads, head_dim=hf.get("head_dim"),
        intermediate=hf["intermediate_size"], rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        rms_eps=hf["rms_norm_eps"], qkv_bias=kind == "qwen2" or bool(hf.get("attention_bias")),
        qk_norm=kind == "olmo2", norm_after=kind == "olmo2", tie_embeddings=bool(hf.get("tie_word_embeddings")),
        additional_vocab=additional_vocab,
    )


def _hf_names(config: LLMConfig) -> dict[str, str]:
    """Our parameter name -> Hugging Face's, for this config."""
    names = {"embed.base.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(config.layers):
        ours, hf = f"blocks.{i}.", f"model.layers.{i}."
        for mine, theirs in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
            names[ours + f"attention.{mine}.weight"] = hf + f"self_attn.{theirs}.weight"
            if config.qkv_bias and mine != "wo":
                names[ours + f"attention.{mine}.bias"] = hf + f"self_attn.{theirs}.bias"
        for mine, theirs in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
            names[ours + f"feed_forward.{mine}.weight"] = hf + f"mlp.{theirs}.weight"
        if config.norm_after:  # OLMo 2: norms after attention / MLP, and over q, k
            names[ours + "attention_norm.weight"] = hf + "post_attention_layernorm.weight"
            names[ours + "ffn_norm.weight"] = hf + "post_feedforward_layernorm.weight"
        else:
            names[ours + "attention_norm.weight"] = hf + "input_layernorm.weight"
            names[ours + "ffn_norm.weight"] = hf + "post_attention_layernorm.weight"
        if config.qk_norm:
            names[ours + "attention.q_norm.weight"] = hf + "self_attn.q_norm.weight"
            names[ours + "attention.k_norm.weight"] = hf + "self_attn.k_norm.weight"
    return names


def state_from_hf(state: Mapping[str, torch.Tensor], config: LLMConfig) -> dict[str, torch.Tensor]:
    """Rename a Qwen2 / Olmo2 state dict to ours; ValueError naming missing and unexpected keys."""
    names = _hf_names(config)
    missing = [hf for hf in names.values() if hf not in state]
    ignorable = {"lm_head.weight"} if config.tie_embeddings else set()  # a tied head may be listed too
    unexpected = [k for k in state if k not in set(names.values()) | ignorable and not k.endswith("rotary_emb.inv_freq")]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit {config}: missing {missing[:6]}, unexpected {unexpected[:6]}")
    return {ours: state[hf] for ours, hf in names.items()}


def save_llm(model: LLM, directory: Path) -> Path:
    """safetensors + config.json (our own format; chapters reload it with ``load_llm``)."""
    return save_checkpoint(model, directory, "llm")


def load_llm(directory: Path) -> LLM:
    return load_weights(LLM(read_config(directory, "llm", LLMConfig)), directory)

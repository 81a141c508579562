"""Tokens per second of greedy decoding: molmo_lite's LLM.generate (KV cache / no cache) vs transformers' generate.

All three candidates run the same seeded random weights with the geometry of the ``tiny`` LLM preset (Qwen2 layout:
hidden 128, 4 layers, 4 heads, 2 KV heads, qkv bias, tied embeddings; the JSON records it): a transformers
Qwen2ForCausalLM built from an equal Qwen2Config (its default SDPA attention), and molmo_lite's LLM loaded from it with
``LLM.from_hf``. Before timing, the script checks that the three produce identical tokens. Prompts are seeded: batch
1 is one 32-token prompt, batch 4 four left-padded prompts of different lengths (32 tokens wide); every row generates
--new-tokens tokens (no early stop). The candidates take turns (in a rotating order) so that all meet the same machine
state; each one's time is the best of --rounds tries of the whole generate call, torch's default thread count.
Tokens/s = batch * new tokens / seconds. Writes JSON (default benchmarks/results/decode.json).

    python -m benchmarks.decode [--rounds 5] [--new-tokens 64] [--out PATH] [--no-table]

It also rewrites the table between the <!-- decode-benchmark --> markers of docs/benchmarks.md from the JSON, so the
docs never quote a figure the script did not produce (tests/test_readme.py checks they agree).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from benchmarks.common import best_seconds, machine_info, publish
from molmo_lite.config import LLM_PRESETS
from molmo_lite.llm import LLM

PROMPT = 32  # prompt width in tokens
BATCH_LENGTHS = {1: [32], 4: [32, 27, 21, 14]}  # real prompt lengths per row, left-padded to PROMPT

CACHED, UNCACHED, HF = "molmo_lite cached", "molmo_lite uncached", "transformers generate"



def reference_model(seed: int = 0):
    """A seeded random transformers Qwen2ForCausalLM with the geometry of LLM_PRESETS["tiny"], in eval mode.

    Weights are redrawn with non-trivial values (norms around 1, biases non-zero) so that greedy decoding does not
    collapse onto one token and every part of the network matters.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    c = LLM_PRESETS["tiny"]
    cfg = Qwen2Config(vocab_size=c.vocab_size, hidden_size=c.hidden, intermediate_size=c.intermediate,
                      num_hidden_layers=c.layers, num_attention_heads=c.heads, num_key_value_heads=c.kv_heads,
                      rms_norm_eps=c.rms_eps, tie_word_embeddings=c.tie_embeddings,
                      rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta})
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.08 * noise)
    return model.eval()


def make_prompts(batch: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts [batch, PROMPT] (pad id 0) and their attention mask (1 = real token)."""
    gen = torch.Generator().manual_seed(seed + batch)
    ids = torch.zeros(batch, PROMPT, dtype=torch.long)
    mask = torch.zeros(batch, PROMPT, dtype=torch.long)
    for row, n in enumerate(BATCH_LENGTHS[batch]):
        ids[row, PROMPT - n:] = torch.randint(3, vocab, (n,), generator=gen)
        mask[row, PROMPT - n:] = 1
    return ids, mask


def candidates(ours: LLM, reference, new_tokens: int) -> dict:
    """name -> fn(ids, mask) returning the new tokens [B, new_tokens]."""

    def hf(ids, mask):
        with torch.no_grad():
            out = reference.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True)
        return out[:, ids.shape[1]:]

    return {
        CACHED: lambda ids, mask: ours.generate(ids, mask, max_new_tokens=new_tokens, use_cache=True),
        UNCACHED: lambda ids, mask: ours.generate(ids, mask, max_new_tokens=new_tokens, use_cache=False),
        HF: hf,
    }


def readme_table(result: dict) -> str:
    """The markdown table of docs/benchmarks.md for a benchmark result."""
    lines = [f"| batch | {CACHED} (tokens/s) | {UNCACHED} (tokens/s) | {HF} (tokens/s) | cached / uncached "
             "| cached / transformers |", "|---|---|---|---|---|---|"]
    for batch, per_second in result["tokens_per_second"].items():
        lines.append(f"| {batch} | {per_second[CACHED]:.0f} | {per_second[UNCACHED]:.0f} | {per_second[HF]:.0f} "
                     f"| {result['ratio_cached_vs_uncached'][batch]:.2f}x "
                     f"| {result['ratio_cached_vs_transformers'][batch]:.2f}x |")
    return "\n".join(lines)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decode.json")
    parser.add_argument("--no-table", "--no-readme", dest="no_readme", action="store_true",
                        help="do not rewrite its table in docs/benchmarks.md")
    args = parser.parse_args()

    reference = reference_model()
    ours = LLM.from_hf(reference).eval()
    fns = candidates(ours, reference, args.new_tokens)

    tokens_per_second: dict[str, dict[str, float]] = {}
    for batch in BATCH_LENGTHS:
        ids, mask = make_prompts(batch, ours.config.vocab_size)
        outputs = {name: fn(ids, mask) for name, fn in fns.items()}  # also the warm-up
        for name, tokens in outputs.items():
            assert tokens.shape == (batch, args.new_tokens), (name, tokens.shape)
            assert torch.equal(tokens, outputs[CACHED]), f"{name} and {CACHED} generate different tokens"
        seconds = best_seconds({name: functools.partial(fn, ids, mask) for name, fn in fns.items()}, args.rounds)
        tokens_per_second[str(batch)] = {name: batch * args.new_tokens / s for name, s in seconds.items()}

    result = {
        "benchmark": "decode",
        "llm_preset": "tiny",
        "llm": {k: getattr(ours.config, k) for k in ("vocab_size", "hidden", "layers", "heads", "kv_heads",
                                                      "intermediate", "qkv_bias", "tie_embeddings")},
        "prompt_tokens": PROMPT,
        "prompt_lengths": {str(b): lengths for b, lengths in BATCH_LENGTHS.items()},
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "transformers_attention": reference.config._attn_implementation,
        "tokens_per_second": {b: {k: round(v, 1) for k, v in tps.items()} for b, tps in tokens_per_second.items()},
        "ratio_cached_vs_uncached": {b: round(tps[CACHED] / tps[UNCACHED], 3) for b, tps in tokens_per_second.items()},
        "ratio_cached_vs_transformers": {b: round(tps[CACHED] / tps[HF], 3) for b, tps in tokens_per_second.items()},
        "machine": machine_info(),
    }
    for batch, tps in tokens_per_second.items():
        for name, value in tps.items():
            print(f"batch {batch}  {name:<24} {value:9.1f} tokens/s")
        print(f"batch {batch}  cached / uncached: {result['ratio_cached_vs_uncached'][batch]:.2f}x   "
              f"cached / transformers: {result['ratio_cached_vs_transformers'][batch]:.2f}x")
    publish("decode", result, readme_table(result), args.out, update_page=not args.no_readme)


if __name__ == "__main__":
    main()

"""Chapter 13 exercise checks: the released Molmo 1 layout, compared with molmo_lite.released.

split_att_proj against the package's own (which tests/test_released.py checks against transformers' Molmo2 loader);
find_ff_halves with the activations of Molmo's remote code and of transformers' Phi-3, which stack up and gate in
opposite orders; block_state against the parameters of an LLM whose released tensors were made with the package's
name map; kv_cache_bytes against the buffers molmo_lite.llm.KVCache allocates; image_attention_mask against
molmo_lite.llm.build_mask, whose Molmo2 rule tests/test_molmo2.py checks against transformers'
Molmo2ForConditionalGeneration.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from molmo_lite.grading_core import _compare_on_cases, _describe, _student_function, _torch_generator, _with_hint, check

CHAPTER = "13_released_molmo"


def _labelled(config: Any, label: str) -> Any:
    """A copy of a config dataclass that failure messages show as ``label`` instead of its long repr."""
    cls = type(type(config).__name__, (type(config),), {"__repr__": lambda self: label})
    return cls(**{f.name: getattr(config, f.name) for f in fields(config)})


class _Tensors(dict):
    """A dict of tensors that failure messages show by its size."""

    def __repr__(self) -> str:
        return f"<{len(self)} released tensors>"


def _parts_mismatch(got: Any, expected: tuple) -> str | None:
    """A tuple (or list) of tensors equal, shape and value, to the expected parts."""
    import torch

    names = ("q", "k", "v") if len(expected) == 3 else ("up", "gate")
    try:
        got = tuple(got)
    except TypeError:
        return f"returned {_describe(got)}, expected a tuple ({', '.join(names)}) of tensors"
    if len(got) != len(expected) or not all(isinstance(g, torch.Tensor) for g in got):
        return f"returned {len(got)} values, expected a tuple of {len(expected)} tensors ({', '.join(names)})"
    for name, g, e in zip(names, got, expected):
        if tuple(g.shape) != tuple(e.shape):
            return (f"gave {name} the shape {list(g.shape)}, expected {list(e.shape)} "
                    f"(all shapes: {[list(x.shape) for x in got]}, expected {[list(x.shape) for x in expected]})")
        if not torch.equal(g, e):
            return f"gave {name} the right shape {list(e.shape)} but the wrong rows of the fused tensor"
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Exercise 1: split_att_proj
# ---------------------------------------------------------------------------------------------------------------------


@check(CHAPTER, "split_att_proj")
def check_split_att_proj(namespace: dict) -> None:
    """split_att_proj(fused, heads, kv_heads, head_dim) equals molmo_lite.released.split_att_proj on 12 fused
    tensors: weights [rows, hidden] and biases [rows], grouped-query (7B-D: 28 heads, 4 kv heads of 128), multi-head
    (7B-O), multi-query and odd sizes."""
    import torch

    from molmo_lite.released import split_att_proj

    gen = _torch_generator(131)
    cases = []
    for heads, kv_heads, head_dim in ((4, 2, 16), (8, 8, 4), (6, 1, 5), (28, 4, 128), (32, 32, 4), (3, 3, 7)):
        rows = (heads + 2 * kv_heads) * head_dim
        cases.append((torch.randn(rows, 6, generator=gen), heads, kv_heads, head_dim))
        cases.append((torch.randn(rows, generator=gen), heads, kv_heads, head_dim))  # a bias

    def reference(fused, heads, kv_heads, head_dim):
        q, kv = heads * head_dim, kv_heads * head_dim
        wrong = {"k and v in the wrong order (att_proj holds q, then k, then v)":
                 (fused[:q], fused[q + kv:], fused[q:q + kv]),
                 "three equal thirds: with grouped-query attention k and v have kv_heads * head_dim rows each, "
                 "fewer than q's heads * head_dim": tuple(fused.chunk(3, dim=0))}
        return tuple(split_att_proj(fused, heads, kv_heads, head_dim)), wrong

    student = _student_function(namespace, "split_att_proj")
    _compare_on_cases("split_att_proj", ("fused", "heads", "kv_heads", "head_dim"), student, reference, cases,
                      _with_hint(_parts_mismatch))

# ---------------------------------------------------------------------------------------------------------------------
# Exercise 2: find_ff_halves, which half is the gate, by experiment
# ---------------------------------------------------------------------------------------------------------------------


def _molmo_activation(h):
    """Molmo's remote code on its fused ff_proj output: up first, then gate."""
    import torch.nn.functional as F

    x, gate = h.chunk(2, dim=-1)
    return F.silu(gate) * x


def _phi3_activation(h):
    """transformers' Phi3MLP on its fused gate_up_proj output: gate first, then up."""
    import torch.nn.functional as F

    gate, up = h.chunk(2, dim=-1)
    return up * F.silu(gate)


class _Activation:
    """A codebase's activation that failure messages name instead of printing a function's address."""

    def __init__(self, fn, label: str):
        self.fn, self.label = fn, label

    def __call__(self, h):
        return self.fn(h)

    def __repr__(self) -> str:
        return self.label


@check(CHAPTER, "find_ff_halves")
def check_find_ff_halves(namespace: dict) -> None:
    """find_ff_halves(fused, activation) returns (up, gate) as the codebase stacks them, on 5 fused weights with
    Molmo's activation (up first: molmo_lite.released.split_ff_proj's order) and 5 with Phi-3's (gate first);
    always Molmo's order, or always the other, fails with a hint."""
    import torch

    from molmo_lite.released import split_ff_proj

    gen = _torch_generator(132)
    molmo = _Activation(_molmo_activation, "<Molmo's activation: x, gate = h.chunk(2); silu(gate) * x>")
    phi3 = _Activation(_phi3_activation, "<Phi-3's activation: gate, up = h.chunk(2); up * silu(gate)>")
    cases = [(torch.randn(2 * inner, width, generator=gen), activation)
             for inner, width in ((96, 64), (3, 5), (384, 128), (7, 11), (2, 3)) for activation in (molmo, phi3)]

    def reference(fused, activation):
        first, second = split_ff_proj(fused)  # Molmo's order: (up, gate)
        right = (first, second) if activation is molmo else (second, first)
        wrong = (second, first) if activation is molmo else (first, second)
        hint = ("the halves swapped for this codebase: find the order by comparing silu(x @ gate.T) * (x @ up.T) "
                "with activation(x @ fused.T) for some x, for each way of reading the halves")
        return right, {hint: wrong}

    student = _student_function(namespace, "find_ff_halves")
    _compare_on_cases("find_ff_halves", ("fused", "activation"), student, reference, cases,
                      _with_hint(_parts_mismatch))



# ---------------------------------------------------------------------------------------------------------------------
# Exercise 3: block_state, one LLM block of a released checkpoint -> molmo_lite's parameters
# ---------------------------------------------------------------------------------------------------------------------


def _released_llm(llm_config, seed: int) -> tuple[dict, dict]:
    """A random LLM of ``llm_config``: (its tensors under the released names, its parameters under MolmoLite's
    names ``llm.*``). The released tensors come from the package's name map (released_plan) and fusion."""
    import torch

    from molmo_lite.config import MOLMO_PRESETS
    from molmo_lite.grading_core import _randomize_
    from molmo_lite.llm import LLM
    from molmo_lite.released import fuse_att_proj, fuse_ff_proj, released_plan

    gen = _torch_generator(seed)
    llm = _randomize_(LLM(llm_config), gen)
    with torch.no_grad():  # norm scales away from 1, so that a norm read as the wrong one shows
        for name, p in llm.named_parameters():
            if "norm" in name:
                p.add_(1.0)
    ours = {f"llm.{k}": v.detach().clone() for k, v in llm.state_dict().items()}
    tiny = MOLMO_PRESETS["tiny"]
    config = replace(tiny, llm=llm_config, connector=replace(tiny.connector, llm_dim=llm_config.hidden))
    fuse = {"plain": lambda parts: parts[0], "att_proj": lambda parts: fuse_att_proj(*parts),
            "ff_proj": lambda parts: fuse_ff_proj(*parts)}
    released = _Tensors({e.released: fuse[e.kind]([ours[n] for n in e.ours]).clone() for e in released_plan(config)
                         if e.released.startswith("model.transformer.")})
    return released, ours


def _state_mismatch(got: Any, expected: tuple) -> str | None:
    import torch

    want, ours = expected
    if not isinstance(got, dict):
        return f"returned {_describe(got)}, expected a dict of molmo_lite parameter name -> tensor"
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        return (f"returned the wrong names: missing {missing[:4]}, unexpected {extra[:4]} "
                f"(expected {sorted(want)[:3]} ...)")
    for name in want:
        g = got[name]
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(want[name].shape):
            return f"returned {_describe(g)} for {name}, expected a tensor of shape {list(want[name].shape)}"
        if not torch.equal(g, want[name]):
            same_as = [n for n, v in ours.items() if n != name and v.shape == g.shape and torch.equal(v, g)]
            hint = f": that is the tensor of {same_as[0]}" if same_as else ""
            return f"returned the wrong values for {name}{hint}"
    return None


@check(CHAPTER, "block_state")
def check_block_state(namespace: dict) -> None:
    """block_state(released, i, llm) gives the molmo_lite parameters of LLM block i (names llm.blocks.{i}.*, the
    fused tensors split) for 6 blocks of 4 random LLMs shaped like 7B-D (GQA, q/k/v biases), 7B-O (multi-head
    attention, q/k norm, norm after), one with a single kv head and one with head_dim != hidden / heads."""
    from molmo_lite.config import LLMConfig

    d_like = _labelled(LLMConfig(vocab_size=64, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=48,
                                 qkv_bias=True), "<LLMConfig like 7B-D: 4 heads, 2 kv heads, q/k/v biases>")
    o_like = _labelled(LLMConfig(vocab_size=64, hidden=32, layers=3, heads=4, kv_heads=4, intermediate=40,
                                 qk_norm=True, norm_after=True),
                       "<LLMConfig like 7B-O: 4 heads = kv heads, q/k norm, norm after>")
    mqa = _labelled(LLMConfig(vocab_size=64, hidden=24, layers=2, heads=3, kv_heads=1, intermediate=20,
                              qkv_bias=True), "<LLMConfig: 3 heads, 1 kv head, q/k/v biases>")
    wide = _labelled(LLMConfig(vocab_size=64, hidden=32, layers=2, heads=2, kv_heads=1, head_dim=24,
                               intermediate=16), "<LLMConfig: hidden 32, 2 heads of 24 (dim_per_head), 1 kv head>")
    cases, answers = [], {}
    for seed, (llm, blocks) in enumerate(((d_like, (0, 1)), (o_like, (0, 2)), (mqa, (1,)), (wide, (0,))), 133):
        released, ours = _released_llm(llm, seed)
        for i in blocks:
            want = {n: v for n, v in ours.items() if n.startswith(f"llm.blocks.{i}.")}
            cases.append((released, i, llm))
            answers[(id(released), i)] = (want, ours)

    def reference(released, i, llm):
        return answers[(id(released), i)]

    student = _student_function(namespace, "block_state")
    _compare_on_cases("block_state", ("released", "i", "llm"), student, reference, cases, _state_mismatch)

# ---------------------------------------------------------------------------------------------------------------------
# Exercise 4: kv_cache_bytes, the memory generation adds
# ---------------------------------------------------------------------------------------------------------------------


@check(CHAPTER, "kv_cache_bytes")
def check_kv_cache_bytes(namespace: dict) -> None:
    """kv_cache_bytes(llm, tokens, batch, bytes_per_number) equals the bytes of the buffers molmo_lite.llm.KVCache
    allocates (on the meta device, so nothing is allocated) for 10 cases: Molmo-7B-D (grouped-query), Molmo-7B-O
    (as many key/value heads as query heads), the tiny preset and a head_dim set apart from hidden / heads, in bf16
    and fp32, batch 1 and 4. Keys only, the query heads instead of the key/value heads, or hidden instead of
    kv_heads * dim_per_head fail with hints."""
    import torch

    from molmo_lite.config import MOLMO_PRESETS, LLMConfig
    from molmo_lite.llm import KVCache

    llms = [_labelled(MOLMO_PRESETS["molmo-7b-d"].llm, "<Molmo-7B-D's LLMConfig>"),
            _labelled(MOLMO_PRESETS["molmo-7b-o"].llm, "<Molmo-7B-O's LLMConfig>"),
            _labelled(MOLMO_PRESETS["tiny"].llm, "<the tiny preset's LLMConfig>"),
            _labelled(LLMConfig(vocab_size=64, hidden=32, layers=3, heads=2, kv_heads=1, head_dim=24,
                                intermediate=16), "<LLMConfig: hidden 32, 2 heads of 24, 1 kv head, 3 layers>")]
    cases = [(llms[0], 4096, 1, 2), (llms[0], 1000, 4, 4), (llms[1], 4096, 1, 2), (llms[1], 7, 4, 4),
             (llms[2], 300, 1, 4), (llms[2], 1, 4, 2), (llms[3], 50, 1, 2), (llms[3], 33, 4, 4),
             (llms[1], 1, 1, 2), (llms[0], 1, 1, 4)]
    dtypes = {2: torch.bfloat16, 4: torch.float32}

    def reference(llm, tokens, batch, bytes_per_number):
        cache = KVCache(llm, batch, tokens, device="meta", dtype=dtypes[bytes_per_number])
        total = sum(t.nelement() * t.element_size() for t in cache.keys + cache.values)
        per = llm.layers * tokens * batch * bytes_per_number
        wrong = {"the keys alone: the cache keeps a key AND a value per head": total // 2,
                 "the query heads: keys and values exist only for the key/value heads (grouped-query attention "
                 "shares each among several query heads)": 2 * llm.heads * llm.dim_per_head * per,
                 "hidden per token: a layer keeps kv_heads * dim_per_head numbers for the keys (and as many for the "
                 "values), which is hidden only without grouped-query attention": 2 * llm.hidden * per}
        return total, {k: v for k, v in wrong.items() if v != total}

    def mismatch(got, expected):
        try:
            same = int(got) == got and int(got) == expected
        except (TypeError, ValueError):
            same = False
        return None if same else f"returned {got!r}, expected {expected:,} bytes"

    student = _student_function(namespace, "kv_cache_bytes")
    _compare_on_cases("kv_cache_bytes", ("llm", "tokens", "batch", "bytes_per_number"), student, reference, cases,
                      _with_hint(mismatch))



# ---------------------------------------------------------------------------------------------------------------------
# Exercise 5: Molmo2's attention rule
# ---------------------------------------------------------------------------------------------------------------------


class _Group(list):
    """A token row's image flags that failure messages show compactly (1 = an image layout token)."""

    def __repr__(self) -> str:
        return "[" + "".join("1" if g else "0" for g in self) + "]"


def _mask_mismatch(got: Any, expected: Any) -> str | None:
    import torch

    try:
        got = torch.as_tensor(got).bool()
    except (TypeError, ValueError, RuntimeError):
        return f"returned {_describe(got)}, expected a bool tensor [T, T]"
    if tuple(got.shape) != tuple(expected.shape):
        return f"returned a mask of shape {list(got.shape)}, expected {list(expected.shape)}"
    if torch.equal(got, expected):
        return None
    q, k = (got != expected).nonzero()[0].tolist()
    return (f"says query {q} {'may' if got[q, k] else 'may not'} attend to key {k}; expected "
            f"{'allowed' if expected[q, k] else 'not allowed'}")


@check(CHAPTER, "image_attention_mask")
def check_image_attention_mask(namespace: dict) -> None:
    """image_attention_mask(group) equals molmo_lite.llm.build_mask(None, 1, T, 0, "cpu", group)[0, 0] (causal, OR
    both tokens in the image group) on 9 rows: no image, all image, one image between text, two images (one group,
    as Molmo2's processor marks them), an image first and last; plain causal and "the text sees the images after it"
    fail with hints."""
    import torch

    from molmo_lite.llm import build_mask

    rows = ["0000", "1111", "0011110", "0110011100", "111000", "000111", "1", "0", "01010110"]
    cases = [(_Group(bool(int(c)) for c in row),) for row in rows]

    def reference(group):
        flags = torch.tensor([list(group)])
        t = flags.shape[1]
        built = build_mask(None, 1, t, 0, "cpu", flags)  # None for one token: it may attend to everything there is
        expected = torch.ones(1, 1, dtype=torch.bool) if built is None else built[0, 0]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        return expected, {"plain causal attention: image tokens must also see the image tokens after them": causal,
                          "every token seeing the image tokens after it: only image tokens see ahead, text stays "
                          "causal": causal | flags[0][None, :]}

    student = _student_function(namespace, "image_attention_mask")
    _compare_on_cases("image_attention_mask", ("group",), student, reference, cases, _with_hint(_mask_mismatch))

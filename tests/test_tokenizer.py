"""MolmoTokenizer: Molmo's image tokens on top of any Hugging Face tokenizer, and the course's tiny BPE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from molmo_lite.config import IM_COL, IM_END, IM_PATCH, IM_START, IMAGE_PROMPT, IMAGE_TOKENS
from molmo_lite.data.corpus import course_corpus
from molmo_lite.tokenizer import TINY_BPE_PATH, MolmoTokenizer

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    "",
    " long_caption 5: a red circle at the top left and an orange square at the centre",
    f"{IM_START}{IM_PATCH}{IM_PATCH}{IM_COL}{IM_PATCH}{IM_PATCH}{IM_COL}{IM_END} User: Point to the red circle",
    f"{IMAGE_PROMPT} What is this?",
    ' <point x="61.5" y="40.0" alt="red circle">red circle</point>',
    ' Counting the <points x1="10.0" y1="20.5" x2="70.3" y2="80.1" alt="circles">circles</points> shows a total of 2.',
    "   three leading spaces, trailing ones   ",
    "line one\nline two\ttabbed",
    "naïve café — 東京 😀 Ünïcödé",
    "3:45 0.0 100.0 1234567890",
    "<im_start <im_patch> im_end> <|image|",  # near-misses and one real token
    "<|endoftext|>text between specials<pad>",
]


@pytest.fixture(scope="module")
def tiny() -> MolmoTokenizer:
    return MolmoTokenizer.tiny()


@pytest.fixture(scope="module")
def hf_tiny() -> MolmoTokenizer:
    """The same tiny BPE as a transformers tokenizer object, built offline from the file."""
    from transformers import PreTrainedTokenizerFast

    base = PreTrainedTokenizerFast(tokenizer_file=str(TINY_BPE_PATH), eos_token="<|endoftext|>", pad_token="<pad>")
    return MolmoTokenizer(base)


@pytest.mark.parametrize("which", ["tiny", "hf_tiny"])
@pytest.mark.parametrize("text", TEXTS)
def test_decode_encode_round_trips(which, text, request):
    tok = request.getfixturevalue(which)
    assert tok.decode(tok.encode(text)) == text


def test_tokenizers_and_transformers_bases_give_the_same_ids(tiny, hf_tiny):
    for text in TEXTS:
        assert tiny.encode(text, add_bos=True) == hf_tiny.encode(text, add_bos=True)
    assert (tiny.vocab_size, tiny.base_vocab_size, tiny.eos_id, tiny.bos_id, tiny.pad_id) == (
        hf_tiny.vocab_size, hf_tiny.base_vocab_size, hf_tiny.eos_id, hf_tiny.bos_id, hf_tiny.pad_id)


@pytest.mark.parametrize("which", ["tiny", "hf_tiny"])
def test_image_tokens_are_single_consecutive_ids_after_the_base_vocab(which, request):
    tok = request.getfixturevalue(which)
    ids = [tok.image_token_ids[t] for t in IMAGE_TOKENS]
    assert ids == list(range(tok.base_vocab_size, tok.base_vocab_size + len(IMAGE_TOKENS)))
    assert tok.vocab_size == tok.base_vocab_size + len(IMAGE_TOKENS) == len(tok)
    for t in IMAGE_TOKENS:
        assert tok.encode(t) == [tok.image_token_ids[t]] == [tok.token_to_id(t)]
    assert len(tok.encode(f"{IM_START}{IM_PATCH}{IM_COL}{IM_END}")) == 4
    assert all(i < tok.base_vocab_size for i in tok.encode("<im_start <im_patch im_end>"))


def test_eos_is_used_as_bos_when_the_base_has_none(tiny, hf_tiny):
    for tok in (tiny, hf_tiny):
        assert tok.eos_id == tok.token_to_id("<|endoftext|>") == 0
        assert tok.bos_id == tok.eos_id
        assert tok.pad_id == tok.token_to_id("<pad>") == 1
        assert tok.encode("a red circle", add_bos=True) == [tok.eos_id] + tok.encode("a red circle")


def test_a_base_bos_is_kept():
    from transformers import PreTrainedTokenizerFast

    base = PreTrainedTokenizerFast(tokenizer_file=str(TINY_BPE_PATH), bos_token="<pad>", eos_token="<|endoftext|>")
    tok = MolmoTokenizer(base)
    assert (tok.bos_id, tok.eos_id) == (1, 0)


def test_tiny_bpe_sizes(tiny):
    assert tiny.base_vocab_size == 512
    assert tiny.vocab_size == 517


def test_digits_are_one_token_each(tiny):
    ids = tiny.encode("61.5")
    assert len(ids) == 4
    assert [tiny.decode([i]) for i in ids] == ["6", "1", ".", "5"]
    assert len(tiny.encode("1234567890")) == 10


def test_course_words_are_single_tokens(tiny):
    """The BPE learned the course's vocabulary: colours, shapes, places and chat words are one token each; the
    pre-tokenizer splits punctuation from letters, so a pointing tag is a few ('</', 'point', '>')."""
    words = [" red", " purple", " circle", " square", " triangle", " centre", " User", " Assistant", " Counting"]
    assert [len(tiny.encode(w)) for w in words] == [1] * len(words)
    assert [tiny.decode([i]) for i in tiny.encode("</point>")] == ["</", "point", ">"]


def test_pad_to_puts_image_tokens_after_the_embedding_rows(tiny):
    """Molmo's pad_tokenizer_to: an LLM with more embedding rows than tokens (Qwen2) gets the image ids after them."""
    tok = MolmoTokenizer.from_file(TINY_BPE_PATH, pad_to=640)
    assert tok.base_vocab_size == 640 and tok.image_token_ids[IM_START] == 640 and tok.vocab_size == 645
    assert MolmoTokenizer.tiny(pad_to=640).image_token_ids == tok.image_token_ids
    assert MolmoTokenizer.tiny(pad_to=100).base_vocab_size == 512  # never below the base vocabulary
    text = f"{IM_START}{IM_PATCH} a red circle{IM_END}"
    assert tok.decode(tok.encode(text)) == text
    with pytest.raises(ValueError, match="not tokens"):
        tok.decode([600])  # between the base vocabulary and pad_to: no token


def test_a_base_that_already_has_the_image_tokens_keeps_their_ids():
    """A released Molmo tokenizer already holds the five tokens: their ids must not move."""
    from tokenizers import AddedToken, Tokenizer

    base = Tokenizer.from_file(str(TINY_BPE_PATH))
    added = ["<|filler|>", *IMAGE_TOKENS]
    base.add_special_tokens([AddedToken(t, special=True) for t in added])
    tok = MolmoTokenizer(base)
    assert tok.image_token_ids == {t: base.token_to_id(t) for t in IMAGE_TOKENS}
    assert tok.base_vocab_size == 513 and tok.vocab_size == 518
    assert tok.encode(f"{IM_START} hi{IM_END}") == base.encode(f"{IM_START} hi{IM_END}").ids


def test_decode_skip_special_drops_image_and_base_specials(tiny):
    ids = tiny.encode(f"{IM_START}{IM_PATCH}{IM_END} a red circle<|endoftext|><pad>", add_bos=True)
    assert tiny.decode(ids, skip_special=True) == " a red circle"
    assert tiny.decode(torch.tensor(ids)) == f"<|endoftext|>{IM_START}{IM_PATCH}{IM_END} a red circle<|endoftext|><pad>"


def test_bad_inputs_get_clear_errors(tiny):
    with pytest.raises(ValueError, match="not tokens"):
        tiny.decode([0, 517])
    with pytest.raises(ValueError, match="not tokens"):
        tiny.decode([-1])
    with pytest.raises(TypeError, match="expects a str"):
        tiny.encode(["a list"])
    with pytest.raises(KeyError, match="not a single token"):
        tiny.token_to_id("a red circle")
    with pytest.raises(ValueError, match="pad_side"):
        tiny.encode_batch(["a"], pad_side="middle")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        MolmoTokenizer.from_file(ROOT / "no_such_tokenizer.json")
    with pytest.raises(TypeError, match="expected a transformers tokenizer"):
        MolmoTokenizer(object())


@pytest.mark.parametrize("pad_side", ["right", "left"])
def test_encode_batch_pads_and_masks(tiny, pad_side):
    texts = ["a red circle", f"{IM_START}{IM_PATCH}{IM_END} a blue square at the top left", ""]
    ids, mask = tiny.encode_batch(texts, pad_side=pad_side, add_bos=True)
    rows = [tiny.encode(t, add_bos=True) for t in texts]
    assert ids.dtype == mask.dtype == torch.long
    assert ids.shape == mask.shape == (3, max(map(len, rows)))
    for b, row in enumerate(rows):
        assert mask[b].sum() == len(row)
        real = ids[b][mask[b].bool()].tolist()
        assert real == row
        assert (ids[b][~mask[b].bool()] == tiny.pad_id).all()
        n_pad = ids.shape[1] - len(row)
        expected = [0] * n_pad + [1] * len(row) if pad_side == "left" else [1] * len(row) + [0] * n_pad
        assert mask[b].tolist() == expected


def test_encode_batch_of_nothing(tiny):
    ids, mask = tiny.encode_batch([])
    assert ids.shape == mask.shape == (0, 0)


def test_course_corpus_is_deterministic_and_in_molmo_formats():
    lines = course_corpus(n=300, seed=3)
    assert lines == course_corpus(n=300, seed=3) and lines != course_corpus(n=300, seed=4)
    assert len(lines) == 300 and not any(t in line for line in lines for t in IMAGE_TOKENS)
    assert any(line.startswith(" long_caption") for line in lines)
    assert any("<point x=" in line for line in lines) and any("<points x1=" in line for line in lines)
    assert any("shows a total of" in line for line in lines) and any("There are none." in line for line in lines)


def test_build_script_rebuilds_the_shipped_file_bit_for_bit(tmp_path):
    out = tmp_path / "tiny_bpe.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_tiny_tokenizer.py"), "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, timeout=120)
    assert out.read_bytes() == TINY_BPE_PATH.read_bytes()

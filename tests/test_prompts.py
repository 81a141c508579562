"""Molmo's text formats (docs/molmo_recipe.md §5) and the multi-annotation packing of one sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import CharTokenizer

from molmo_lite.data.collate import PAD_SEGMENT
from molmo_lite.prompts import (
    IGNORE_INDEX,
    IMAGE_SEGMENT,
    caption_length_hint,
    caption_prompt,
    multiple_choice,
    pack,
    subsegment_mask,
    user_prompt,
)


def test_caption_prompt_and_length_hint_follow_molmo():
    assert caption_prompt(83) == " long_caption 83:"
    assert caption_prompt(None) == " long_caption :"
    assert caption_prompt() == " long_caption 65:"  # Molmo's inference default
    assert caption_prompt(12, style="transcript") == " transcript 12:"
    rng = np.random.default_rng(0)
    caption = "x" * 300  # hint = (300 + int(N(0, 25))) // 15, around 20
    hints = [caption_length_hint(caption, rng) for _ in range(4000)]
    given = [h for h in hints if h is not None]
    assert 0.08 < 1 - len(given) / len(hints) < 0.12  # no hint 10% of the time
    # floor division takes (15 - 1) / 2 / 15 = 0.47 off 300 / 15 on average
    assert abs(np.mean(given) - 19.53) < 0.2 and 12 <= min(given) and max(given) <= 27  # 4 sigma: 100 characters


def test_user_prompt_style_rules():
    rng = np.random.default_rng(1)
    assert user_prompt("What time is it?", "clocks", rng) == " User: clocks: What time is it? Assistant:"
    assert user_prompt("Hi", None, rng) == " User: Hi Assistant:"
    assert user_prompt("Point to the cat", "pointing") == " User: Point to the cat Assistant:"  # no rng: never
    prefixed = [user_prompt("Point to the cat", "pointing", rng).startswith(" User: pointing:") for _ in range(4000)]
    assert 0.08 < np.mean(prefixed) < 0.12  # demo styles: 10% of the time
    assert all(user_prompt("q", "vqa2", rng).startswith(" User: vqa2: q") for _ in range(50))  # academic: always


def test_multiple_choice_format():
    text, answer = multiple_choice("Which is red?", ["sky", "apple", "grass"], 1)
    assert text == "Which is red?\nA: sky\nB: apple\nC: grass\n" and answer == "B"
    with pytest.raises(ValueError):
        multiple_choice("q", ["a"], 3)


def test_pack_writes_the_sequence_by_hand():
    tok = CharTokenizer()
    image = ["<im_start>", "<im_patch>", "<im_patch>", "<im_col>", "<im_end>"]
    packed = pack(tok, [[("Q", "a")], [("R", "bc")]], image)
    # seq: BOS, 5 image tokens | "Q", " ", "a", EOS | "R", " ", "b", "c", EOS
    q, a, r, b, c, space = (10 + ord(ch) % 100 for ch in "QaRbc ")
    seq = [1, 2, 4, 4, 5, 3, q, space, a, 1, r, space, b, c, 1]
    assert packed.input_ids.tolist() == seq[:-1]
    w = 0.5 ** 0.5  # sqrt(1/N), N = 2
    # the weight of the token each position predicts: the answers (with the space Molmo puts before them) and EOS
    # targets are seq[1:]: 5 image tokens, then Q (prompt), ' ', a, EOS, then R (prompt), ' ', b, c, EOS
    weights = [0] * 5 + [0, w, w, w] + [0, w, w, w, w]
    assert packed.loss_weights.tolist() == pytest.approx(weights)
    assert packed.target_ids.tolist() == [t if wt else IGNORE_INDEX for t, wt in zip(seq[1:], weights)]
    assert packed.subsegment_ids.tolist() == [IMAGE_SEGMENT] * 6 + [1] * 4 + [2] * 4
    assert packed.position_ids.tolist() == list(range(6)) + [6, 7, 8, 9] + [6, 7, 8, 9]  # restart after the image
    assert (packed.n_prefix, packed.n_annotations) == (6, 2)
    assert pack(tok, [[("Q", "a")], [("R", "bc")]], image, weighting="none").loss_weights.max() == 1.0


def test_pack_question_first_puts_the_question_before_the_image():
    """One annotation, its question before the image and " Assistant:" after it, as ``generation_prompt_ids`` lays
    out a prompt at inference: the training row is that prompt plus the answer and EOS, the loss on those only."""
    tok = CharTokenizer()
    image = ["<im_start>", "<im_patch>", "<im_patch>", "<im_col>", "<im_end>"]
    packed = pack(tok, [[("Q Assistant:", "a")]], image, question_first=True)
    seq = [1] + tok.encode("Q") + [2, 4, 4, 5, 3] + tok.encode(" Assistant:") + tok.encode(" a") + [1]
    assert packed.input_ids.tolist() == seq[:-1]
    n_prefix = len(seq) - 3  # BOS, question, image, " Assistant:"
    assert packed.n_prefix == n_prefix and packed.n_annotations == 1
    weights = [0.0] * (n_prefix - 1) + [1.0, 1.0, 1.0]  # " ", "a", EOS
    assert packed.loss_weights.tolist() == weights
    assert packed.target_ids.tolist() == [t if w else IGNORE_INDEX for t, w in zip(seq[1:], weights)]
    assert pack(tok, [[("Q Assistant:", "a")]], (), question_first=True).input_ids.tolist() == \
        pack(tok, [[("Q Assistant:", "a")]], ()).input_ids.tolist()  # no image: nothing to put the question before
    with pytest.raises(ValueError, match="one annotation"):
        pack(tok, [[("Q", "a")], [("R", "bc")]], image, question_first=True)


def test_pack_refuses_an_answer_without_prompt():
    with pytest.raises(ValueError, match="prompt"):
        pack(CharTokenizer(), [[("", "a caption")]])


def test_subsegment_mask_lets_each_annotation_see_the_image_and_itself():
    seg = torch.tensor([[IMAGE_SEGMENT, IMAGE_SEGMENT, 1, 1, 2, 2, PAD_SEGMENT]])
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    allowed = subsegment_mask(seg, valid)[0]
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    seen = allowed & causal
    assert seen[3].tolist() == [True, True, True, True, False, False, False]  # annotation 1: image + itself
    assert seen[5].tolist() == [True, True, False, False, True, True, False]  # annotation 2: never annotation 1
    assert seen[1].tolist() == [True, True, False, False, False, False, False]  # the image: only the image
    assert not allowed[:, 6].any()  # nobody attends to padding


def test_format_messages_applies_caption_hints_and_style_rules():
    from molmo_lite.prompts import Message, format_messages

    messages = [Message(None, "a red circle"), Message(None, "RED", "transcript"),
                Message("What time is it?", "3:45", "clocks"), Message("Hi?", "Hello.")]
    assert format_messages(messages) == [(" long_caption 65:", "a red circle"), (" transcript 65:", "RED"),
                                         (" User: clocks: What time is it? Assistant:", "3:45"),
                                         (" User: Hi? Assistant:", "Hello.")]
    rng = np.random.default_rng(3)
    prompts = {format_messages([Message(None, "x" * 150)], rng)[0][0] for _ in range(300)}
    assert " long_caption :" in prompts and len(prompts) > 4  # hints vary around 10, and 10% have none

"""Molmo's text formats and multi-annotation packing (chapter 05).

What the model reads around the image (allenai/molmo, olmo/data/data_formatter.py and olmo/data/model_preprocessor.py):

    stage 1 (captions)   [BOS] <image tokens> " long_caption 83:" " a red circle at ..." EOS
    stage 2 (SFT)        [BOS] <image tokens> " User: point_count: How many ...? Assistant:" " Counting the ..." EOS

- The length hint of a caption is ``(len(caption) + int(N(0, 25))) // 15``, left out 10% of the time
  ("long_caption :"); at inference Molmo asks for "long_caption 65:". Transcripts use the style "transcript".
- SFT questions carry their dataset's style ("vqa2: ...", "clocks: ..."): always for the academic datasets, only 10% of
  the time for the demo styles (pointing, point_count, user_qa, long_caption), so that users need not type them.
- Every message starts with a space; every assistant answer ends with EOS and is the ONLY text with loss.

Packing. Molmo trains on several annotations of one image in ONE sequence (two captions in stage 1, all the QA about an
image in SFT): the image is encoded once instead of N times. Each annotation k = 1..N gets subsegment id k, the image
(and BOS) ``IMAGE_SEGMENT`` = 10000, and a query may attend to a key only if ``seg[query] <= seg[key]`` (plus causal):
annotation k sees the image and itself, never the annotations before it. Positions restart after the image for every
annotation, so each one is computed exactly as if it were alone with the image; its loss weights are multiplied by
sqrt(1/N) ("root_subsegments") so that an image with many questions does not dominate.

Nothing here imports the tokenizer: the functions that need one take any object with ``encode``, ``token_to_id``,
``bos_id`` and ``eos_id`` (a ``MolmoTokenizer``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100  # target of a position without loss (cross-entropy skips it)
IMAGE_SEGMENT = 10000  # subsegment id of BOS and the image tokens (larger than any annotation's)
INFERENCE_CAPTION_HINT = 65  # Molmo's default length hint when asked for a caption
NO_HINT_PROBABILITY = 0.1
DEMO_STYLE_PREFIX_PROBABILITY = 0.1
ASSISTANT = " Assistant:"  # where a user turn ends and the answer begins

# Styles whose prefix is always written (the academic datasets) and styles written only 10% of the time (the demo data,
# which users will query in plain words). From Molmo's data formatter; the list is not exhaustive.
ACADEMIC_STYLES = frozenset({
    "vqa2", "chart_qa", "doc_qa", "info_qa", "text_vqa", "okvqa", "a_okvqa_mc", "a_okvqa_da", "tally_qa", "science_qa",
    "ai2_diagram", "st_qa", "dv_qa", "figure_qa", "plot_qa", "clocks", "point_qa", "pixmo_docs_charts",
    "pixmo_docs_tables", "pixmo_docs_diagrams", "pixmo_docs_other",
})
DEMO_STYLES = frozenset({"pointing", "point_count", "user_qa", "long_caption", "transcript"})


# --------------------------------------------------------------------------------------------------------------------
# 1. Prompts.
# --------------------------------------------------------------------------------------------------------------------


def caption_length_hint(caption: str, rng: np.random.Generator) -> int | None:
    """Molmo's noisy length hint for a caption: (len + int(N(0, 25))) // 15, at least 0; None 10% of the time."""
    if rng.random() < NO_HINT_PROBABILITY:
        return None
    return max(0, (len(caption) + int(rng.normal(0, 25))) // 15)


def caption_prompt(hint: int | None = INFERENCE_CAPTION_HINT, style: str = "long_caption") -> str:
    """' long_caption 83:' (or ' long_caption :' without a hint); style 'transcript' for transcripts."""
    return f" {style} {'' if hint is None else hint}:"


def style_prefixed(style: str | None, rng: np.random.Generator | None = None) -> bool:
    """Whether a question of this style is written with its 'style: ' prefix: always for academic (and unknown)
    styles, 10% of the time for demo styles (never without an rng, as at inference)."""
    if style is None:
        return False
    if style not in DEMO_STYLES:
        return True
    return rng is not None and rng.random() < DEMO_STYLE_PREFIX_PROBABILITY


def user_prompt(question: str, style: str | None = None, rng: np.random.Generator | None = None) -> str:
    """One user turn as Molmo writes it: ' User: {style}: {question} Assistant:' (the style prefix per
    ``style_prefixed``)."""
    prefix = f"{style}: " if style_prefixed(style, rng) else ""
    return f" User: {prefix}{question}{ASSISTANT}"


def multiple_choice(question: str, options: Sequence[str], answer: int) -> tuple[str, str]:
    """A multiple-choice question -> (question text 'q\\nA: opt\\nB: opt\\n', answer letter)."""
    if not 0 < len(options) <= 26 or not 0 <= answer < len(options):
        raise ValueError(f"need 1-26 options and an answer index among them, got {len(options)} and {answer}")
    letters = [chr(ord("A") + i) for i in range(len(options))]
    text = question + "\n" + "".join(f"{letter}: {option}\n" for letter, option in zip(letters, options))
    return text, letters[answer]


@dataclass(frozen=True)
class Message:
    """One question and its answer as a dataset stores them, before formatting (Molmo's data formatter turns these
    into prompts). question None: a caption or transcript, whose prompt is the style and a length hint."""

    question: str | None
    answer: str
    style: str | None = None


def format_messages(messages: Sequence[Message], rng: np.random.Generator | None = None) -> list[Turn]:
    """Messages -> turns (prompt, response) with Molmo's rules: captions and transcripts get ' {style} {hint}:'
    (a noisy hint, none 10% of the time; without an rng, as at inference, the default hint 65); questions get
    ' User: {style}: {question} Assistant:' with the style prefix per ``style_prefixed``."""
    turns = []
    for m in messages:
        if m.question is None:
            style = m.style or "long_caption"
            hint = INFERENCE_CAPTION_HINT if rng is None else caption_length_hint(m.answer, rng)
            turns.append((caption_prompt(hint, style), m.answer))
        else:
            turns.append((user_prompt(m.question, m.style, rng), m.answer))
    return turns


# An annotation is a list of turns (prompt, response): the prompt as ``user_prompt`` / ``caption_prompt`` wrote it,
# the response as plain text (it gets its leading space and EOS here). Several turns make a multi-turn conversation.
Turn = tuple[str, str]


def annotation_pieces(turns: Sequence[Turn]) -> list[tuple[str, bool]]:
    """Turns -> text pieces and whether each carries loss: [(prompt, False), (' ' + response, True), ...]
    (each response is followed by EOS, which carries loss too; ``pack`` adds it)."""
    if not turns:
        raise ValueError("an annotation needs at least one (prompt, response) turn")
    pieces = []
    for prompt, response in turns:
        if not prompt:
            raise ValueError("every turn needs a prompt (Molmo's captions have ' long_caption N:'): the first token "
                             "of an annotation must not carry loss, it is predicted from outside the annotation")
        pieces += [(prompt, False), (" " + response, True)]
    return pieces


# --------------------------------------------------------------------------------------------------------------------
# 2. Packing several annotations of one image into one sequence.
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PackedExample:
    """One training sequence, every field [T] (T = total tokens - 1: input = seq[:-1], target = seq[1:]).

    input_ids / target_ids: long (target IGNORE_INDEX where there is no loss: prompts, image, padding); loss_weights: float (0 where no loss; sqrt(1/N) or 1 on answer tokens);
    subsegment_ids: long (IMAGE_SEGMENT for BOS and image, k for annotation k); position_ids: long (restart after
    the image for every annotation); n_prefix: BOS + image tokens; n_annotations: N.
    """

    input_ids: torch.Tensor
    target_ids: torch.Tensor
    loss_weights: torch.Tensor
    subsegment_ids: torch.Tensor
    position_ids: torch.Tensor
    n_prefix: int
    n_annotations: int

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def pack(tokenizer: Any, annotations: Sequence[Sequence[Turn]], image_tokens: Sequence[str] = (),
         weighting: str = "root_subsegments", question_first: bool = False) -> PackedExample:
    """[BOS] + image tokens + annotation 1 + ... + annotation N as one sequence (see the module docstring).

    image_tokens: the image's token strings (``ImageInputs.tokens``), empty for a text-only example.
    weighting: "root_subsegments" (Molmo's SFT: answer tokens weigh sqrt(1/N)) or "none" (weight 1).
    question_first: one annotation only, its first prompt before the image as ``generation_prompt_ids`` lays it out
    (``MolmoConfig.question_first``); the prefix is then [BOS] + question + image tokens (+ " Assistant:").
    """
    if weighting not in ("root_subsegments", "none"):
        raise ValueError(f"weighting must be 'root_subsegments' or 'none', got {weighting!r}")
    if not annotations:
        raise ValueError("need at least one annotation")
    weight = math.sqrt(1 / len(annotations)) if weighting == "root_subsegments" else 1.0
    pieces = [annotation_pieces(turns) for turns in annotations]
    if question_first and image_tokens:
        if len(annotations) != 1:
            raise ValueError("question_first puts the question before the image: one annotation per sequence")
        ids = generation_prompt_ids(tokenizer, pieces[0][0][0], image_tokens, question_first=True)
        pieces[0] = pieces[0][1:]
    else:
        ids = [tokenizer.bos_id] + [tokenizer.token_to_id(t) for t in image_tokens]
    n_prefix = len(ids)
    segments, positions, weights = [IMAGE_SEGMENT] * n_prefix, list(range(n_prefix)), [0.0] * n_prefix
    for k, turns in enumerate(pieces, start=1):
        start = len(ids)
        for text, has_loss in turns:
            piece = tokenizer.encode(text) + ([tokenizer.eos_id] if has_loss else [])
            ids += piece
            weights += [weight if has_loss else 0.0] * len(piece)
        segments += [k] * (len(ids) - start)
        positions += range(n_prefix, n_prefix + len(ids) - start)
    ids_t = torch.tensor(ids, dtype=torch.long)
    weights_t = torch.tensor(weights[1:], dtype=torch.float32)  # the weight of the token being predicted
    return PackedExample(
        input_ids=ids_t[:-1], target_ids=torch.where(weights_t > 0, ids_t[1:], IGNORE_INDEX), loss_weights=weights_t,
        subsegment_ids=torch.tensor(segments[:-1], dtype=torch.long),
        position_ids=torch.tensor(positions[:-1], dtype=torch.long),
        n_prefix=n_prefix, n_annotations=len(annotations),
    )


def generation_prompt_ids(tokenizer: Any, prompt: str, image_tokens: Sequence[str] = (),
                          question_first: bool = False) -> list[int]:
    """What the model reads before it writes its answer: [BOS] + image tokens + the prompt's tokens (Molmo), or with
    ``question_first`` [BOS] + the prompt up to its last " Assistant:" + image tokens + " Assistant:" and what follows
    (the question before the image, ``MolmoConfig.question_first``); a prompt without " Assistant:" (a caption's
    " long_caption 65:") then goes whole before the image. Without image tokens both are [BOS] + prompt."""
    image = [tokenizer.token_to_id(t) for t in image_tokens]
    if question_first and image:
        user, assistant = prompt.rsplit(ASSISTANT, 1) if ASSISTANT in prompt else (prompt, None)
        after = [] if assistant is None else tokenizer.encode(ASSISTANT + assistant)
        return [tokenizer.bos_id] + tokenizer.encode(user) + image + after
    return [tokenizer.bos_id] + image + tokenizer.encode(prompt)


def subsegment_mask(subsegment_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Molmo's packing rule -> bool [B, T, T] (True = query i may attend key j): seg[i] <= seg[j] and key j is not
    padding. Causality is added by the LLM (``llm.build_mask``)."""
    allowed = subsegment_ids[:, :, None] <= subsegment_ids[:, None, :]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, :]
    return allowed

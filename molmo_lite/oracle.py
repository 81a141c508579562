"""Perfect eyes for the language model: is it the eyes or the brain? (chapter 10)

When the tiny Molmo does not learn to point, either the image path (crops -> ViT -> connector) does not deliver where
the objects are, or the language model cannot learn to read it in the time it has. This harness separates the two.
It replaces the whole image path with an **oracle**: one image token per grid cell (8 x 8 cells of 7 px for the 56 px
scenes of chapter 07, about one token per object), whose features say exactly what is there -- the colour and shape
of the object centred in the cell, its offset inside the cell, the cell's row and column -- written by
``cell_features`` from the scene's ground truth. A small MLP (the connector's place) maps them to the LLM's width and
they are ADDED to the ``<im_patch>`` embeddings, laid out as Molmo lays out a crop (``<im_start>``, a row of patches and
``<im_col>`` per row, ``<im_end>``). Then the prompt (" User: Point to the red circles. Assistant:") and Molmo's answer,
with the loss on the answer only. No pixels are drawn at all.

Nothing here is perceived, so whatever the LLM still cannot do is the brain's part: matching the question's words to
the image tokens ("binding"), ordering points by x, writing coordinates and stopping at the right count. The held-out
scenes are chapter 07's (``evaluate.heldout_sets``: 0-10 of the class asked among 0-6 others), scored with Molmo's
rules (``pointing.pointing_metrics``, ``pointing.counting_metrics``), also by the number of targets so that the crowded
scenes are not hidden behind the easy ones.

    config = OracleConfig()                                   # the LLM, the optimiser, the features, the curriculum
    record = train_oracle(config, minutes=10, heldout=200)    # curves of F1 / counting against minutes and steps

``benchmarks/oracle.py`` runs the named configurations of the course's table and writes their JSON.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import IMAGE_TOKENS, LLM_PRESETS, LLMConfig
from .data.collate import collate
from .data.examples import Example, examples_of, split_seed
from .data.synthetic import COLOURS, SHAPES, SceneObject, pointing_example
from .llm import LLM, load_llm
from .model import answer_loss
from .pointing import (
    average_counting_metrics,
    average_pointing_metrics,
    counting_metrics,
    parse_points,
    pointing_metrics,
)
from .prompts import IGNORE_INDEX, format_messages, generation_prompt_ids, pack, subsegment_mask
from .tokenizer import MolmoTokenizer

COUNT_BUCKETS = ((0, 0), (1, 3), (4, 7), (8, 10))  # F1 by the number of targets in the scene


def feature_size(grid: int) -> int:
    """Features per cell: colour one-hot, shape one-hot, offset (x, y) in the cell, row one-hot, column one-hot."""
    return len(COLOURS) + len(SHAPES) + 2 + 2 * grid


def cell_of(obj: SceneObject, grid: int) -> tuple[int, int]:
    """(row, column) of the cell that holds the object's centre."""
    return min(grid - 1, int(obj.y / 100 * grid)), min(grid - 1, int(obj.x / 100 * grid))


def match_column(objects: Sequence[SceneObject], wanted: Sequence[tuple[float, float]], grid: int = 8) -> np.ndarray:
    """The diagnostic of the harness, never an input of the course's model: float32 [grid * grid, 1], 1 where a cell
    holds an object the question asks for (its centre among ``wanted``, the answer's points)."""
    col = np.zeros((grid, grid, 1), np.float32)
    targets = {(round(x, 1), round(y, 1)) for x, y in wanted}
    for o in objects:
        if (round(o.x, 1), round(o.y, 1)) in targets:
            col[(*cell_of(o, grid), 0)] = 1
    return col.reshape(grid * grid, 1)


def _shares(u: float, grid: int, share: float) -> list[tuple[int, float]]:
    """Along one axis, a centre at u (in cells): [(index, weight)] of its own cell and, within ``share`` cells of a
    border, of the cell across it (half each at the border, all its own at ``share`` from it)."""
    k = min(grid - 1, int(u))
    f = u - k
    if share > 0 and f < share and k > 0:
        w = 0.5 - f / (2 * share)
        return [(k, 1 - w), (k - 1, w)]
    if share > 0 and 1 - f < share and k < grid - 1:
        w = 0.5 - (1 - f) / (2 * share)
        return [(k, 1 - w), (k + 1, w)]
    return [(k, 1.0)]


def add_object(f: np.ndarray, o: SceneObject, i: int, j: int, weight: float = 1.0) -> None:
    """Write ``weight`` of object o into cell (i, j) of features f [grid, grid, feature_size(grid)]: its colour's and
    shape's one-hots and its centre's offset from that cell's middle, in cells, each times ``weight`` (added)."""
    n_colour, n_shape, grid = len(COLOURS), len(SHAPES), f.shape[0]
    f[i, j, list(COLOURS).index(o.colour)] += weight
    f[i, j, n_colour + SHAPES.index(o.shape)] += weight
    f[i, j, n_colour + n_shape] += weight * (o.x / 100 * grid - j - 0.5)
    f[i, j, n_colour + n_shape + 1] += weight * (o.y / 100 * grid - i - 0.5)


def cell_objects(cells: np.ndarray | torch.Tensor, grid: int) -> list[SceneObject]:
    """The inverse of ``cell_features`` for hard cells: [grid * grid, feature_size(grid)] -> one object per cell
    whose colour one-hot is set (its largest colour and shape, its centre from the cell's middle and offset, in
    Molmo's 0-100 units, clipped to the image; radius 0: the cells do not say it), in raster order. It reads what
    ``connector.CellDecisions`` hands on too: what a perfect reader of those cells would point at."""
    cells = np.asarray(cells, dtype=np.float32).reshape(grid * grid, -1)
    n_colour, n_shape = len(COLOURS), len(SHAPES)
    objects = []
    for k in np.flatnonzero(cells[:, :n_colour].max(1) > 0.5):
        i, j = divmod(int(k), grid)
        dx, dy = cells[k, n_colour + n_shape:n_colour + n_shape + 2]
        objects.append(SceneObject(SHAPES[int(cells[k, n_colour:n_colour + n_shape].argmax())],
                                   list(COLOURS)[int(cells[k, :n_colour].argmax())],
                                   float(np.clip((j + 0.5 + dx) / grid * 100, 0, 100)),
                                   float(np.clip((i + 0.5 + dy) / grid * 100, 0, 100)), 0.0))
    return objects


def cell_features(objects: Sequence[SceneObject], grid: int = 8, share: float = 0.0) -> np.ndarray:
    """Perfect image features -> float32 [grid * grid, feature_size(grid)], cells in raster order (row by row, as
    Molmo's patches). A cell holding an object's centre has that colour's and shape's one-hots set and the centre's
    offset from the cell's middle, in cells (-0.5..0.5); every cell has its row's and column's one-hot. Two centres in
    one cell add up (rare: objects do not overlap).

    share > 0: the features without a hard border. An object whose centre lies within ``share`` cells of a border is
    shared with the cell across it, linearly from half each at the border to all its own at ``share`` from it
    (bilinearly near a corner): each cell gets the object's one-hots and its offset from that cell's middle times its
    weight, so the features change smoothly as the object moves across a border and the weights of each object sum to
    1. Real eyes cannot tell on which side of a border a centre lies to a fraction of a pixel; they can say how much
    of it is on each side."""
    n_colour, n_shape = len(COLOURS), len(SHAPES)
    f = np.zeros((grid, grid, feature_size(grid)), np.float32)
    for o in objects:
        for i, wi in _shares(o.y / 100 * grid, grid, share):
            for j, wj in _shares(o.x / 100 * grid, grid, share):
                add_object(f, o, i, j, wi * wj)
    rows = n_colour + n_shape + 2
    for k in range(grid):
        f[k, :, rows + k] = 1
        f[:, k, rows + grid + k] = 1
    return f.reshape(grid * grid, -1)


def window_features(objects: Sequence[SceneObject], grid: int = 8, pool: int = 1, share: float = 0.0) -> np.ndarray:
    """``cell_features`` of each ``pool`` x ``pool`` window of cells side by side: what one image token pooled over
    that window could say at best -> float32 [(grid / pool)^2, pool^2 * feature_size(grid)], windows and the cells
    inside each in raster order (pool 1: ``cell_features``; share: its)."""
    f = cell_features(objects, grid, share).reshape(grid // pool, pool, grid // pool, pool, -1)
    return f.transpose(0, 2, 1, 3, 4).reshape((grid // pool) ** 2, -1)


# --------------------------------------------------------------------------------------------------------------------
# Configuration, data and the model.
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OracleConfig:
    """One run of the harness. The LLM's geometry (the tiny preset's by default), its optimiser, the layout and the
    training scenes.

    lm_init: a saved LLM folder (``llm.save_llm``) to start from instead of a random start, e.g. a text pre-trained
    tiny LM of the same geometry. features "cells": ``cell_features`` through the projector; "words": a cell
    holding a red circle adds the LLM's embeddings of " red" and " circles" (the words a question uses) to the
    projected features, whose colour and shape one-hots are then zero (nothing is left to map from one-hots to
    words). mimetic: W_q W_k^T starts as a positive multiple of a projection (Trockman & Kolter 2023, "Mimetic
    initialization of self-attention layers"), so that a token attends to similar tokens from the first step.
    question_first: " User: Q" before the image tokens and " Assistant:" after
    (Molmo puts the image first). annotations: which of a scene's three (pointing, counting, pointing at another
    class, which mostly has no answer but "There are none.") training draws from. max_count, max_distractors: the
    world trained and evaluated on (chapter 07's held-out scenes: 10 and 6; a smaller one for a quick test).
    copies: the image's block of tokens that many times in a row (2: the real path's overview and one crop of a
    scene that fits one crop). curriculum: "none" (that world throughout) or "targets" (one object alone first, then
    one target among others, then a few: ``CURRICULA``).
    """

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    max_count: int = 10  # the world: at most this many targets among at most max_distractors others (chapter 07's)
    max_distractors: int = 6
    lr: float = 1e-3
    final_lr: float = 0.55  # cosine from lr to final_lr * lr over the budget
    warmup: int = 50
    batch_size: int = 16
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # or "muon": Muon for the hidden weight matrices, AdamW for the rest
    grid: int = 8
    pool: int = 1  # > 1: one token per pool x pool window of cells, its cells' features side by side
    copies: int = 1  # the image's tokens this many times in a row (2: the real path's overview + one crop of a scene)
    question_first: bool = False
    curriculum: str = "none"
    lm_init: str | None = None
    autocast: bool = False  # bf16 autocast on the CPU (faster where it has AMX)
    pack_annotations: bool = False  # one row per scene with its three annotations (Molmo's packing), else one each
    features: str = "cells"  # or "words": colour and shape as the LLM's own embeddings of the question's words
    mimetic: float = 0.0  # > 0: each layer's keys start as copies of its queries, weights N(0, mimetic)
    match_bit: bool = False  # the ceiling: each cell also says whether it holds what the question asks for
    annotations: tuple[int, ...] = (0, 1, 2)  # which of a scene's annotations training draws from (one at random)
    micro_batches: int = 1  # > 1: a step's rows sorted by length and run in this many chunks, each padded to its own
    seed: int = 0

    def __post_init__(self):
        if self.match_bit and self.pack_annotations:
            raise ValueError("the match bit depends on the question: a packed row holds three questions")
        if self.question_first and self.pack_annotations:
            raise ValueError("question_first puts each question before the image: it cannot pack three annotations")
        if (self.pool > 1 or self.copies > 1) and (self.match_bit or self.pack_annotations or self.features != "cells"):
            raise ValueError("pool > 1 and copies > 1 read the cells' features alone (no match bit, words or packing)")
        if self.micro_batches > 1 and self.pack_annotations:
            raise ValueError("micro_batches splits one-annotation rows by length; packed rows are already dense")

    def llm_config(self) -> LLMConfig:
        return replace(LLM_PRESETS["tiny"], hidden=self.hidden, layers=self.layers, heads=self.heads,
                       kv_heads=self.kv_heads, intermediate=self.intermediate)


# curriculum -> phases (until this share of the budget, max targets, max others), then the config's world
CURRICULA: dict[str, tuple[tuple[float, int, int], ...]] = {
    "none": (),
    # read one object out (nothing else there), then bind (one target among others), then order (a few targets)
    "targets": ((0.1, 1, 0), (0.25, 1, 3), (0.45, 4, 4)),
}


def training_world(config: OracleConfig, progress: float) -> dict[str, int]:
    """The training scenes' bounds at ``progress`` (0..1 of the budget): pointing_example's max_count and
    max_distractors, from the phases of ``CURRICULA[config.curriculum]`` (never beyond the config's world)."""
    if config.curriculum not in CURRICULA:
        raise ValueError(f"curriculum must be one of {sorted(CURRICULA)}, got {config.curriculum!r}")
    for until, count, others in CURRICULA[config.curriculum]:
        if progress < until:
            return {"max_count": min(count, config.max_count), "max_distractors": min(others, config.max_distractors)}
    return {"max_count": config.max_count, "max_distractors": config.max_distractors}


def heldout_scenes(n: int, seed: int = 0, max_count: int = 10, max_distractors: int = 6) -> list[Example]:
    """Held-out pointing scenes without their pixels; with the defaults, chapter 07's (those of
    ``evaluate.heldout_sets``: 0-10 of the class asked among 0-6 others)."""
    return examples_of(lambda rng: pointing_example(rng, max_count=max_count, max_distractors=max_distractors,
                                                    render=False), n, seed, "heldout")


class OracleModel(nn.Module):
    """The course's LLM reading oracle image tokens: ``proj`` (Linear-GELU-Linear, the connector's place) maps
    ``cell_features`` to the LLM's width; they are added to the ``<im_patch>`` embeddings."""

    def __init__(self, config: OracleConfig):
        super().__init__()
        self.config = config
        self.llm = load_llm(config.lm_init) if config.lm_init else LLM(config.llm_config())
        if self.llm.config.hidden != config.hidden:
            raise ValueError(f"lm_init {config.lm_init} has width {self.llm.config.hidden}, the config {config.hidden}")
        width = self.llm.config.hidden
        inputs = config.pool ** 2 * feature_size(config.grid) + int(config.match_bit)
        self.proj = nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, width))
        if config.features not in ("cells", "words"):
            raise ValueError(f"features must be 'cells' or 'words', got {config.features!r}")
        if config.mimetic:
            mimetic_init(self.llm, config.mimetic)
        tokenizer = MolmoTokenizer.tiny()  # the token of each colour and shape word as the questions write them
        self.register_buffer("word_ids", torch.tensor([tokenizer.encode(" " + w)[0] for w in list(COLOURS) + [
            s + "s" for s in SHAPES]]), persistent=False)

    def embed(self, ids: torch.Tensor, features: torch.Tensor, patch_positions: torch.Tensor) -> torch.Tensor:
        """ids [B, T], features [B, G*G, F], patch_positions [B, G*G] (the <im_patch> indices) -> [B, T, D]."""
        x = self.llm.embed(ids)
        if self.config.features == "words":  # one-hots [B, N, 11] pick the words' embeddings [11, D]
            kinds = len(COLOURS) + len(SHAPES)
            words = features[..., :kinds].to(x.dtype) @ self.llm.embed(self.word_ids)
            image = words + self.proj(torch.cat([torch.zeros_like(features[..., :kinds]), features[..., kinds:]],
                                                -1).to(x.dtype))
        else:
            image = self.proj(features.to(x.dtype))
        index = patch_positions[..., None].expand(-1, -1, x.shape[-1])
        return x.scatter_add(1, index, image.to(x.dtype))  # under bf16 autocast the projector's output is bf16

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds = self.embed(batch["input_ids"], batch["features"], batch["patch_positions"])
        return self.llm(attention_mask=batch.get("attention_mask"), position_ids=batch.get("position_ids"),
                        inputs_embeds=embeds)


@torch.no_grad()
def mimetic_init(llm: LLM, std: float) -> None:
    """Every layer's key projection becomes a copy of its query projection (for grouped heads: the query heads that
    share a key head all start as that key head), weights N(0, std): q . k = x W^T W y, similar tokens attend to each
    other from the start."""
    cfg = llm.config
    d, h, kv = cfg.dim_per_head, cfg.heads, cfg.kv_heads
    for block in llm.blocks:
        w = torch.randn(kv * d, cfg.hidden) * std
        block.attention.wk.weight.copy_(w)
        block.attention.wq.weight.copy_(w.view(kv, d, -1).repeat_interleave(h // kv, 0).reshape(h * d, -1))


def image_tokens(grid: int) -> list[str]:
    """Molmo's layout of one crop of grid x grid patches: <im_start>, per row the patches and <im_col>, <im_end>."""
    start, end, patch, col = IMAGE_TOKENS[:4]
    return [start] + ([patch] * grid + [col]) * grid + [end]


def annotation(example: Example, which: int, rng: np.random.Generator | None = None) -> tuple[str, str]:
    """(prompt, answer) of the example's annotation ``which`` (0 pointing, 1 counting, 2 pointing at another
    class), formatted as Molmo does (a style prefix 10% of the time with an rng, never without)."""
    return format_messages(example.messages[which], rng)[0]


def right_padded(rows: Sequence[list[int]], targets: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Token rows and their targets (IGNORE_INDEX where there is no loss) -> input_ids, attention_mask, targets
    [B, longest row], right-padded (pad_id, 0, IGNORE_INDEX)."""
    length = max(map(len, rows))
    batch = {"input_ids": torch.full((len(rows), length), pad_id),
             "attention_mask": torch.zeros(len(rows), length, dtype=torch.long),
             "targets": torch.full((len(rows), length), IGNORE_INDEX)}
    for b, (ids, tg) in enumerate(zip(rows, targets)):
        batch["input_ids"][b, :len(ids)] = torch.tensor(ids)
        batch["attention_mask"][b, :len(ids)] = 1
        batch["targets"][b, :len(ids)] = torch.tensor(tg)
    return batch


def build_batch(tokenizer: MolmoTokenizer, examples: Sequence[Example], which: Sequence[int], grid: int,
                question_first: bool = False, with_answer: bool = True, rng: np.random.Generator | None = None,
                match_bit: bool = False, pool: int = 1, copies: int = 1) -> dict[str, torch.Tensor]:
    """One padded batch (right-padded for training, the prompts alone when not ``with_answer``): input_ids,
    attention_mask, targets (the answer and EOS; IGNORE_INDEX elsewhere), features (with ``match_bit``, one more
    column: ``match_column``; pool > 1: one token per window, ``window_features``; copies > 1: the image's block of
    tokens and its features that many times in a row), patch_positions."""
    patch = tokenizer.token_to_id(IMAGE_TOKENS[2])
    rows, targets, positions = [], [], []
    for ex, k in zip(examples, which):
        prompt, answer = annotation(ex, k, rng)
        ids = generation_prompt_ids(tokenizer, prompt, image_tokens(grid // pool) * copies, question_first)
        answer_ids = tokenizer.encode(" " + answer) + [tokenizer.eos_id] if with_answer else []
        positions.append([i for i, t in enumerate(ids) if t == patch])
        targets.append([IGNORE_INDEX] * len(ids) + answer_ids)
        rows.append(ids + answer_ids)
    batch = right_padded(rows, targets, tokenizer.pad_id)
    features = [np.concatenate([window_features(ex.meta["objects"], grid, pool)] * copies) for ex in examples]
    if match_bit:  # the answer's points: meta["points"] for annotations 0 and 1, meta["other_points"] for 2
        features = [np.concatenate([f, match_column(ex.meta["objects"], ex.meta["other_points" if k == 2 else
                                                                                  "points"], grid)], 1)
                    for f, ex, k in zip(features, examples, which)]
    batch["features"] = torch.from_numpy(np.stack(features))
    batch["patch_positions"] = torch.tensor(positions)
    return batch


def packed_batch(tokenizer: MolmoTokenizer, examples: Sequence[Example], grid: int, rng: np.random.Generator,
                 annotations: Sequence[int] = (0, 1, 2)) -> dict[str, torch.Tensor]:
    """Molmo's multi-annotation packing (``prompts.pack``): one row per scene, its image tokens once, then its
    ``annotations``, each seeing the image and itself only, answer tokens weighted sqrt(1/N). -> input_ids,
    attention_mask (the block mask [B, T, T]), position_ids, targets (already shifted: the token at t + 1),
    loss_weights, features, patch_positions."""
    rows = [pack(tokenizer, [format_messages(ex.messages[k], rng) for k in annotations], image_tokens(grid))
            for ex in examples]
    batch = collate([(row, None) for row in rows], tokenizer.pad_id)
    patch = tokenizer.token_to_id(IMAGE_TOKENS[2])
    return {"input_ids": batch["input_ids"],
            "attention_mask": subsegment_mask(batch["subsegment_ids"], batch["attention_mask"]),
            "position_ids": batch["position_ids"], "targets": batch["target_ids"],
            "loss_weights": batch["loss_weights"],
            "features": torch.from_numpy(np.stack([cell_features(ex.meta["objects"], grid) for ex in examples])),
            "patch_positions": torch.stack([torch.nonzero(row == patch)[:, 0] for row in batch["input_ids"]])}


def loss_of(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the answer tokens, their mean (or "sum"); the logits at t predict the token at t + 1."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets[:, 1:].flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


def length_chunks(batch: dict, chunks: int) -> list[dict]:
    """A right-padded training batch (``build_batch``) -> ``chunks`` smaller ones of rows of similar length, each cut
    to its own longest row, without the padding mask: under the causal mask a real token never sees the padding
    after it, and padded positions carry no target. A step of 16 scenes is about 37% padding (answers run from
    "There are none." to ten points); four chunks of four leave about 10%."""
    lengths = batch["attention_mask"].sum(1)
    parts = []
    for rows in torch.argsort(lengths).chunk(chunks):
        longest = int(lengths[rows].max())
        part = {"input_ids": batch["input_ids"][rows, :longest], "targets": batch["targets"][rows, :longest]}
        for key, value in batch.items():  # per-row extras: the oracle's features, the real path's images
            if key not in ("input_ids", "targets", "attention_mask"):
                part[key] = value[rows] if isinstance(value, torch.Tensor) else [value[int(r)] for r in rows]
        parts.append(part)
    return parts


# --------------------------------------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def answers(model: OracleModel, tokenizer: MolmoTokenizer, examples: Sequence[Example], which: int,
            batch_size: int = 100, max_new_tokens: int = 200) -> list[str]:
    """Greedy answers (KV cache) to annotation ``which`` of each example."""
    model.eval()
    texts = []
    for k in range(0, len(examples), batch_size):
        chunk = examples[k:k + batch_size]
        batch = build_batch(tokenizer, chunk, [which] * len(chunk), model.config.grid, model.config.question_first,
                            with_answer=False, match_bit=model.config.match_bit, pool=model.config.pool,
                            copies=model.config.copies)
        embeds = model.embed(batch["input_ids"], batch["features"], batch["patch_positions"])
        out = model.llm.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens, tokenizer.eos_id,
                                 inputs_embeds=embeds)
        for row in out.tolist():
            texts.append(tokenizer.decode(row[:row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row))
    model.train()
    return [t.strip() for t in texts]


QUERY_KINDS = ("colour", "shape", "both")


def query_kind(label: str) -> str:
    """What a question's label names: "red shapes" a colour, "circles" a shape, "red circles" both."""
    words = label.split()
    return "colour" if words[-1] == "shapes" else "both" if len(words) == 2 else "shape"


def shuffled_scenes(examples: Sequence[Example]) -> list[Example]:
    """The shuffled-image control: each example keeps its question and its truth, and shows the next one's objects
    (its image tokens are those of another scene)."""
    seen = list(examples[1:]) + list(examples[:1])
    return [Example(None, ex.messages, ex.task, dict(ex.meta, objects=other.meta["objects"]))
            for ex, other in zip(examples, seen)]


def score_answers(examples: Sequence[Example], pointed: Sequence[str], counted: Sequence[str]) -> dict:
    """Pointing F1 with its precision and recall (answers to annotation 0), counting exact (annotation 1), F1 and
    counting by number of targets (COUNT_BUCKETS) with the mean number of points written against the truth, F1 by
    the kind of query (colour, shape, both), and three sample answers."""
    point_scores = [pointing_metrics(a, ex.meta["points"]) for a, ex in zip(pointed, examples)]
    count_scores = [counting_metrics(a, ex.meta["count"]) for a, ex in zip(counted, examples)]
    mean = average_pointing_metrics(point_scores)
    report = {"pointing_f1": mean.f1, "pointing_precision": mean.precision, "pointing_recall": mean.recall,
              "counting_exact": average_counting_metrics(count_scores).correct, "by_count": {}, "by_query": {}}
    for low, high in COUNT_BUCKETS:
        idx = [i for i, ex in enumerate(examples) if low <= ex.meta["count"] <= high]
        if idx:
            report["by_count"][f"{low}-{high}"] = {
                "n": len(idx), "f1": float(np.mean([point_scores[i].f1 for i in idx])),
                "counting_exact": float(np.mean([count_scores[i].correct for i in idx])),
                "points_written": float(np.mean([len(parse_points(pointed[i])) for i in idx])),
                "points_true": float(np.mean([examples[i].meta["count"] for i in idx]))}
    for kind in QUERY_KINDS:
        idx = [i for i, ex in enumerate(examples) if query_kind(ex.meta["label"]) == kind]
        if idx:
            report["by_query"][kind] = {"n": len(idx), "f1": float(np.mean([point_scores[i].f1 for i in idx]))}
    report["samples"] = [{"question": annotation(ex, 0)[0], "answer": a, "truth": annotation(ex, 0)[1]}
                         for ex, a in list(zip(examples, pointed))[:3]]
    return report


def evaluate_oracle(model: OracleModel, tokenizer: MolmoTokenizer, examples: Sequence[Example],
                    shuffled: bool = False) -> dict:
    """``score_answers`` of the model's answers to annotations 0 (pointing) and 1 (counting). shuffled: every
    example reads the next one's image tokens (a control: the scores then fall to what the question alone gives)."""
    asked = shuffled_scenes(examples) if shuffled else list(examples)
    return score_answers(examples, answers(model, tokenizer, asked, 0), answers(model, tokenizer, asked, 1))


# --------------------------------------------------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------------------------------------------------


def lr_at(config: OracleConfig, step: int, progress: float) -> float:
    """Linear warmup over ``config.warmup`` steps, then cosine from lr to final_lr * lr as progress goes 0 -> 1."""
    cosine = config.final_lr + (1 - config.final_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * min(1.0, (step + 1) / config.warmup) * cosine


def hidden_matrices(model: nn.Module) -> set[int]:
    """ids of the weight of every ``nn.Linear``: the matrices Muon is meant for (the blocks' projections, the
    connector's, the ViT's; not embeddings, norms, biases or convolutions)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}


def build_optimizer(model: nn.Module, config, lr_by_prefix: dict[str, float] | None = None
                    ) -> list[torch.optim.Optimizer]:
    """AdamW (0.9, 0.95) for every parameter, or with ``config.optimizer == "muon"``: torch's Muon (orthogonalised
    momentum, its learning rate matched to AdamW's update size) for the weight of every ``nn.Linear`` (the hidden
    matrices: the LLM's blocks, the projector, the ViT's and the connector's layers), AdamW for the rest (embeddings,
    norms, biases, convolutions; Muon is meant for hidden matrices only). lr_by_prefix: a learning rate for the
    parameters whose name starts with a prefix (e.g. {"vision.": 1e-4}), ``config.lr`` for the others; 0 freezes
    them. Each group keeps its peak rate under "base_lr" (the schedule scales it)."""
    if config.optimizer not in ("adamw", "muon"):
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {config.optimizer!r}")
    linear = hidden_matrices(model)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        lr = next((v for k, v in (lr_by_prefix or {}).items() if name.startswith(k)), config.lr)
        if lr == 0:
            p.requires_grad_(False)
            continue
        groups.setdefault((config.optimizer == "muon" and id(p) in linear, lr), []).append(p)
    muon = [{"params": ps, "lr": lr, "base_lr": lr} for (is_muon, lr), ps in groups.items() if is_muon]
    adamw = [{"params": ps, "lr": lr, "base_lr": lr} for (is_muon, lr), ps in groups.items() if not is_muon]
    optimizers = []
    if muon:
        optimizers.append(torch.optim.Muon(muon, lr=config.lr, weight_decay=config.weight_decay,
                                           adjust_lr_fn="match_rms_adamw"))
    if adamw:
        optimizers.append(torch.optim.AdamW(adamw, lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay))
    return optimizers


def set_learning_rates(optimizers: Sequence[torch.optim.Optimizer], config, step: int, progress: float) -> None:
    """Every group at its peak rate ("base_lr", ``build_optimizer``) times the schedule's factor (``lr_at``)."""
    factor = lr_at(config, step, progress) / config.lr
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor


def backward_in_chunks(batch: dict, chunks: int, logits_of: Callable[[dict], torch.Tensor]) -> torch.Tensor:
    """The backward pass of the mean cross-entropy over ALL of a step's answer tokens, run on ``length_chunks``
    (each chunk's summed loss divided by the step's answer tokens: the gradient of the whole batch); -> the loss,
    detached. logits_of: a chunk -> its logits."""
    answer_tokens = int(batch["targets"].ne(IGNORE_INDEX).sum())
    loss = torch.zeros(())
    for part in length_chunks(batch, chunks):
        part_loss = loss_of(logits_of(part), part["targets"], "sum") / answer_tokens
        part_loss.backward()
        loss += part_loss.detach()
    return loss


def track_loss(losses: list[dict], window: list[float], loss: float, step: int, trained: float,
               log: Callable[[str], None] | None) -> list[float]:
    """The training loss of the last 50 steps, averaged into ``losses`` every 50 steps (printed every 100); -> the
    window of losses still to average."""
    window = window + [loss]
    if step % 50:
        return window
    losses.append({"step": step, "minutes": round(trained / 60, 3), "loss": round(float(np.mean(window)), 4)})
    if log and step % 100 == 0:
        log(f"step {step}  {trained / 60:.1f} min  loss {losses[-1]['loss']:.3f} (mean of 50 steps)")
    return []


def curve_point(result: dict, step: int, trained: float, loss: float, log: Callable[[str], None] | None) -> dict:
    """One point of a training curve from a ``score_answers`` report (printed when ``log``)."""
    point = {"minutes": round(trained / 60, 2), "step": step, "loss": round(loss, 4),
             "pointing_f1": round(result["pointing_f1"], 4), "counting_exact": round(result["counting_exact"], 4),
             "by_count_f1": {k: round(v["f1"], 3) for k, v in result["by_count"].items()},
             "by_query_f1": {k: round(v["f1"], 3) for k, v in result["by_query"].items()}}
    if log:
        log(f"eval  step {step}  {trained / 60:.1f} min  pointing F1 {result['pointing_f1']:.3f}  counting "
            f"{result['counting_exact']:.3f}  by count {point['by_count_f1']}")
    return point


def timed_training(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], config,
                   step_fn: Callable[[float], tuple[torch.Tensor, int]], evaluate: Callable[[], dict],
                   minutes: float | None, steps: int | None, evals: int, log: Callable[[str], None] | None) -> dict:
    """The training loop of both harnesses (this one and ``pointing_only``): for ``minutes`` of training time (the
    evaluations not counted) or a number of ``steps``, set the schedule's learning rates, let ``step_fn(progress)``
    draw a batch and run its backward pass (-> the loss, the answer tokens it trained on), clip the gradient to norm
    1, step every optimiser; the loss every 50 steps and ``evaluate()`` ``evals`` times along the way (its
    ``score_answers`` report, a point of the curve). -> train_minutes, steps, steps_per_s, answer_tokens_per_s,
    curve, losses."""
    if (minutes is None) == (steps is None):
        raise ValueError("give minutes or steps, not both")
    budget = minutes * 60 if minutes is not None else float(steps)
    marks = [budget * (k + 1) / evals for k in range(evals)]
    curve, losses, window, step, trained, tokens = [], [], [], 0, 0.0, 0
    model.train()
    while (trained if minutes is not None else step) < budget:
        t0 = time.perf_counter()
        progress = (trained if minutes is not None else step) / budget
        set_learning_rates(optimizers, config, step, progress)
        model.zero_grad(set_to_none=True)
        loss, answer_tokens = step_fn(progress)
        tokens += answer_tokens
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for opt in optimizers:
            opt.step()
        trained += time.perf_counter() - t0
        step += 1
        window = track_loss(losses, window, float(loss), step, trained, log)
        if marks and (trained if minutes is not None else step) >= marks[0]:
            marks.pop(0)
            curve.append(curve_point(evaluate(), step, trained, float(loss), log))
    return {"train_minutes": round(trained / 60, 3), "steps": step, "steps_per_s": round(step / trained, 3),
            "answer_tokens_per_s": round(tokens / trained, 1), "curve": curve, "losses": losses}


def train_oracle(config: OracleConfig, minutes: float | None = None, steps: int | None = None, heldout: int = 200,
                 evals: int = 4, log: Callable[[str], None] | None = print, threads: int | None = None) -> dict:
    """Train the LLM on oracle image tokens for ``minutes`` of training time (evaluation not counted) or a number of
    ``steps``, evaluating ``evals`` times on ``heldout`` scenes; -> a JSON-able record: the config, the curve
    (minutes, step, pointing F1, counting exact, by count; on the first 100 held-out scenes), the final evaluation
    on all of them, its shuffled-image control (the first 100), steps/s and answer tokens/s, and the model under
    "model" (removed before writing JSON)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    tokenizer = MolmoTokenizer.tiny()
    model = OracleModel(config)
    optimizers = build_optimizer(model, config)
    rng = np.random.default_rng(split_seed(config.seed, "train"))
    held = heldout_scenes(heldout, max_count=config.max_count, max_distractors=config.max_distractors)
    during = held[:min(len(held), 100)]  # the curve's evaluations: the first 100 scenes (generation is slow)
    start = time.perf_counter()

    def forward(batch: dict) -> torch.Tensor:  # the logits, under bf16 autocast when the config asks for it
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.autocast):
            return model(batch)

    def step_fn(progress: float) -> tuple[torch.Tensor, int]:
        world = training_world(config, progress)
        examples = [pointing_example(rng, render=False, **world) for _ in range(config.batch_size)]
        if config.pack_annotations:
            batch = packed_batch(tokenizer, examples, config.grid, rng, config.annotations)
            loss = answer_loss(forward(batch), batch["targets"], batch["loss_weights"])[0]
            loss.backward()
            loss = loss.detach()
        else:  # the mean over all the step's answer tokens, accumulated over chunks of rows of similar length
            which = [int(k) for k in rng.choice(config.annotations, size=len(examples))]
            batch = build_batch(tokenizer, examples, which, config.grid, config.question_first, rng=rng,
                                match_bit=config.match_bit, pool=config.pool, copies=config.copies)
            loss = backward_in_chunks(batch, config.micro_batches, forward)
        return loss, int(batch["targets"].ne(IGNORE_INDEX).sum())

    trained = timed_training(model, optimizers, config, step_fn, lambda: evaluate_oracle(model, tokenizer, during),
                             minutes, steps, evals, log)
    final = evaluate_oracle(model, tokenizer, held)
    shuffled = evaluate_oracle(model, tokenizer, during, shuffled=True)
    return {"config": asdict(config)} | trained | {
        "wall_minutes": round((time.perf_counter() - start) / 60, 2), "heldout": len(held), "final": final,
        "shuffled": {k: shuffled[k] for k in ("pointing_f1", "counting_exact")}, "model": model}

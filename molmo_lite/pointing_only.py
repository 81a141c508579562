"""The eyes on the oracle's task: the real image path trained on pointing and counting only (chapter 10).

The oracle harness (``molmo_lite.oracle``) showed that the tiny LLM learns chapter 07's crowded pointing in 10 CPU
minutes when its image tokens say exactly what is where. This harness asks whether the real image path delivers
tokens that good: the scene is drawn (chapter 07's renderer), Molmo's preprocessor cuts it into crops, the tiny ViT
encodes them, the connector pools and projects, and the same LLM, with the oracle's winning recipe (Muon for the
hidden matrices, the question before the image tokens, a step's rows run in chunks of similar length), learns the
same three annotations per scene. Everything trains from the start, as in Molmo's stage 2.

    config = EyesConfig(patch_size=7)                           # the geometry of the image path, the recipe
    record = train_eyes(config, minutes=10, heldout=200)        # curves of F1 / counting against minutes

Held-out scenes are chapter 07's (0-10 of the class among 0-6 others, ``evaluate.heldout_sets``' seeds), scored with
Molmo's rules by ``oracle.evaluate_oracle``'s report (F1 by number of targets, by kind of query), with the
shuffled-image control (each question with the next scene's image). ``benchmarks/pointing_only.py`` runs the named
configurations and writes their JSON.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .clip_pretrain import load_encoder, save_encoder
from .config import MOLMO_PRESETS, MolmoConfig
from .data import clocks
from .data.corpus import scene_text
from .data.examples import Example, split_seed
from .data.synthetic import (
    COLOURS,
    SHAPES,
    SHIFT_BACKGROUNDS,
    Query,
    SceneObject,
    pointing_example,
    pointing_examples,
    shifted_pointing_examples,
)
from .evaluate import generate_in_batches, score, shuffled_images
from .connector import Connector
from .model import MolmoLite
from .oracle import (
    add_object,
    annotation,
    backward_in_chunks,
    build_optimizer,
    cell_features,
    cell_objects,
    cell_of,
    feature_size,
    loss_of,
    right_padded,
    score_answers,
    timed_training,
    window_features,
)
from .pointing import count_to_text, points_to_text
from .preprocessing import ImageInputs, MolmoImageProcessor, batch_images
from .prompts import IGNORE_INDEX, Message, format_messages, generation_prompt_ids


@dataclass(frozen=True)
class EyesConfig:
    """One run: the image path's geometry inside Molmo's design (the tiny preset's unless changed), the recipe (the
    oracle's o16 by default) and the scenes.

    scene_size: the rendered scene's side in pixels. crop_size, patch_size, max_crops, overlap_margins, pooling,
    crop_mode: the preprocessor's (the ViT's image and patch size follow). vit_width, vit_layers: the tiny ViT's.
    lr_vit, lr_connector: their learning rates (the LLM's is ``lr``); 0 freezes that part. caption_rate: the share of
    training rows that ask for a dense caption (every object, its colour, shape and position: ``scene_caption``)
    instead of one of the scene's ``annotations``; Molmo's stage 1 captions say what is where in words.
    vision_init: a ViT folder to start from (its geometry must be this config's), as Molmo starts from CLIP.
    scene_sizes: when given, each training scene is drawn at one of these sides picked at random (Molmo trains on
    images of many resolutions: a 112 px scene becomes the overview and 2 x 2 crops of 56 px); held-out scenes keep
    scene_size. scene_pool: drawing and preprocessing a scene costs about an eighth of a step, so with a pool a step
    samples its batch_size scenes from ``scene_pool`` drawn (and preprocessed) once, replacing ``fresh_scenes`` of
    them by new ones each step (each scene is then seen about batch_size / fresh_scenes times, each time with an
    annotation drawn anew); 0 draws every scene anew. cache_features (a frozen ViT, lr_vit 0): each training scene
    goes through the eyes once, when it is drawn (``CachedEyes``; with a pool, not at each of its steps).
    uniform_pooling: with the default initialisation and a pre-trained ViT's features (norm about 50 per patch) the
    attention pooling starts peaked and content-dependent (its largest weight about 0.65 of the window's four); a
    zero query projection makes it start as the window's mean, which it then learns away from. eyes: "vit", or
    "oracle" for the diagnostic that keeps everything of the real path but the ViT: each patch's features are those
    the oracle knows of its cell (``OracleEyes``), through the real connector (its pooling and projector from
    random, without the feature normalisation meant for a ViT); oracle_offset_noise: each object's offset misjudged
    by Gaussian noise of this many cells; oracle_cell_errors (missed, phantom): objects read empty, and objects seen
    again on an empty neighbouring cell, with these probabilities (``oracle_image``). cell_share: what the oracle
    knows of the cells, and what the read-outs are fitted to, without hard borders: an object within this many cells
    of a border is shared with the cell across it (``oracle.cell_features``). oracle_claim_margin: each object given to
    a cell picked at random among those within this many cells of its centre (``claimed_cells``). "readout",
    "readout-position", "readout-clean", "readout-classes" (pooling 1 x 1, readout_init scenes): that connector
    reading the frozen ViT's features through a fixed read-out of the cells (``ReadoutEyes``): linear; with the
    patch's own exact row and column; with the colour, shape and empty decisions made one-hots; with softmax
    read-outs making them. They tell which part of what the ViT knows the LLM is slow to read.
    slot_pooling (oracle eyes only): the attention pooling starts as ``slot_pooling`` sets it, each of its four
    heads taking one cell of the window whole, so that its output lists the window's four cells as o17's tokens do.
    pooling_init: a folder holding an attention pooling pre-trained together with the ViT
    (``pretrain_vit_cells(pooling=True)``), loaded into the connector (its projector still starts from random);
    lr_pool: its learning rate (None: the connector's; 0 freezes it). readout_init (pooling 1 x 1 only): before
    training, fit by least squares the linear map from the (normalised) ViT features of each patch to what the
    oracle knows of its cell (``oracle.cell_features``), on this many fresh scenes, and start the pooling (for one
    patch, the linear map wo(wv x)) as that map: the projector then starts from the cells' colour, shape and place
    as coordinates, as the oracle's projector does (``readout_pooling``; its seconds count in the minutes).
    align_scenes, align_steps: before training, the whole connector is trained for align_steps steps on this many
    scenes to give what a fresh connector reading the oracle's cells gives (``align_connector``; counted).
    cell_decisions (pooling 1 x 1, a vision_init saved with its cell head, ``CELL_HEAD_FILE``): the connector puts
    that head, frozen, before its pooling and hands on its decisions, the one-hots of the colour and shape each patch
    names (``connector.CellDecisions``, ``ConnectorConfig.cell_decisions``; the feature normalisation off): the
    oracle's form, from the ViT's own eyes, saved with the model.
    linear_projector: when > 0, the connector's SwiGLU projector starts as a linear map of the pooled vector, its
    gate the constant silu(linear_projector) (``linear_projector``), as o16's Linear-GELU-Linear starts near linear.
    questions_per_scene: a step's rows are batch_size / questions_per_scene scenes, each asked that many different
    annotations (point at one class, count it, point at another), so that the batch shows the same image answering
    different questions differently, where each row otherwise holds its own scene.
    decision_features (with cell_decisions): the ViT's features, normalised and scaled by this, handed on beside the
    decisions (``ConnectorConfig.decision_features``), for what the cell head does not decide; feature_dims: only
    their coordinates on that many main components, whitened (``fit_feature_basis``, when the model is built).
    clock_rate: that share of the training rows shows one of chapter 07's clocks (``clocks.clock_example``, the
    scene's size) and asks the time; the record then holds the held-out clocks' scores (``evaluate_clocks``) and
    their answer-loss control.
    head_init (pooling 1 x 1, a vision_init saved with its cell head): the pooling starts as that head, the linear
    map the ViT was pre-trained through (``pretrain_vit_cells``), each of its outputs standardised on this many
    fresh scenes (``head_pooling``; counted in the minutes): Molmo's connector, unchanged, starting from what the
    eyes were taught to say. The head reads the ViT's raw features, so the connector's feature normalisation is off.
    """

    scene_size: int = 56
    crop_size: int = 56
    patch_size: int = 14
    max_crops: int = 4
    overlap_margins: tuple[int, int] = (1, 1)
    pooling: tuple[int, int] = (2, 2)
    crop_mode: str = "overlap-and-resize"  # or "resize": the overview alone (Molmo's single-crop mode)
    vit_width: int = 96
    vit_layers: int = 4
    lr: float = 1e-3
    lr_vit: float = 1e-3
    lr_connector: float = 1e-3
    final_lr: float = 0.55
    warmup: int = 50
    batch_size: int = 16
    micro_batches: int = 2
    weight_decay: float = 0.0
    optimizer: str = "muon"
    question_first: bool = True
    max_count: int = 10
    max_distractors: int = 6
    annotations: tuple[int, ...] = (0, 1, 2)
    caption_rate: float = 0.0  # share of the rows that are a dense caption instead (``scene_caption``)
    vision_init: str | None = None  # a saved ViT folder to start from (e.g. ``pretrain_vit``'s)
    scene_sizes: tuple[int, ...] = ()  # training scenes at these sides, one picked per scene (empty: scene_size)
    scene_pool: int = 0  # > 0: a step samples its scenes from a pool of this many (drawn in the first step)
    oracle_offset_noise: float = 0.0  # oracle eyes: N(0, this) cells added to each object's offset
    oracle_cell_errors: tuple[float, float] = (0.0, 0.0)  # oracle eyes: objects missed, phantoms beside objects
    cell_share: float = 0.0  # the cells' features shared across borders within this many cells (cell_features)
    oracle_claim_margin: float = 0.0  # oracle eyes: each object in a random cell within this margin (claimed_cells)
    cache_features: bool = False  # frozen eyes: a training scene's features computed once, when drawn (CachedEyes)
    fresh_scenes: int = 4  # with scene_pool: scenes of the pool replaced by new ones at each step
    uniform_pooling: bool = False  # the attention pooling's query projection starts at 0: a plain mean at step 0
    eyes: str = "vit"  # "oracle": the ViT replaced by each patch's cell's oracle features (``OracleEyes``); "readout"
    # / "readout-position" / "readout-clean" / "readout-classes": the ViT's features read out into that form
    # (``ReadoutEyes``)
    slot_pooling: bool = False  # oracle eyes: the attention pooling starts as ``slot_pooling`` (each head one cell)
    pooling_init: str | None = None  # a folder with an attention pooling pre-trained with its ViT (POOLING_FILE)
    lr_pool: float | None = None  # the attention pooling's learning rate (None: lr_connector's)
    readout_init: int = 0  # > 0: the pooling starts as a least-squares read-out of the cells fitted on this many scenes
    head_init: int = 0  # > 0: the pooling starts as the ViT's own cell head, standardised on this many scenes
    cell_decisions: bool = False  # the connector decides each cell with the ViT's cell head first (CellDecisions)
    questions_per_scene: int = 1  # a step's batch holds batch_size / this scenes, each asked this many questions
    linear_projector: float = 0.0  # > 0: the SwiGLU projector starts linear, its gate silu(this) (linear_projector)
    align_scenes: int = 0  # > 0: the connector starts trained to give the oracle connector's tokens (align_connector)
    decision_features: float = 0.0  # > 0: the ViT's features beside the cell decisions (ConnectorConfig)
    feature_dims: int = 0  # > 0: only their coordinates on this many main components (fit_feature_basis)
    clock_rate: float = 0.0  # share of the training rows that are a clock to read (chapter 07's clocks)
    align_steps: int = 300
    seed: int = 0

    def molmo_config(self) -> MolmoConfig:
        """The tiny preset with this geometry: the ViT's size follows the crops, the connector's input the ViT."""
        tiny = MOLMO_PRESETS["tiny"]
        pre = replace(tiny.preprocessor, crop_size=self.crop_size, patch_size=self.patch_size,
                      max_crops=self.max_crops, overlap_margins=self.overlap_margins, pooling=self.pooling,
                      crop_mode=self.crop_mode)
        vision = replace(tiny.vision, image_size=self.crop_size, patch_size=self.patch_size, width=self.vit_width,
                         layers=self.vit_layers, mlp_width=4 * self.vit_width)
        grid = self.crop_size // self.patch_size
        connector = replace(tiny.connector, input_dim=vision.feature_dim, pool_dim=self.vit_width,
                            feature_norm=0 if self.head_init or self.cell_decisions else tiny.connector.feature_norm,
                            cell_decisions=(len(COLOURS), len(SHAPES), grid) if self.cell_decisions else (),
                            decision_features=self.decision_features, decision_features_dim=self.feature_dims)
        return replace(tiny, preprocessor=pre, vision=vision, connector=connector,
                       question_first=self.question_first)


POOLING_FILE = "pooling.safetensors"  # an attention pooling pre-trained with the ViT (``pretrain_vit_cells``)
CELL_HEAD_FILE = "cell_head.safetensors"  # the cell objective's head, saved beside its ViT (``pretrain_vit_cells``)
CAPTION = -1  # the annotation index of a dense caption in build_batch's ``which``


def scene_caption(example: Example) -> Message:
    """A dense caption of the scene: every object with its colour, shape and centre in Molmo's 0-100 units, in the
    raster order of the image tokens (``corpus.scene_text``: 'red circle 58.2 67.6; blue square 12.0 30.1'), asked
    as Molmo asks for a long caption (' long_caption N:')."""
    return Message(None, scene_text(example.meta["objects"]).removeprefix(" Scene: "), "long_caption")


def annotation_of(example: Example, which: int, rng: np.random.Generator | None = None) -> tuple[str, str]:
    """(prompt, answer) of annotation ``which`` (``oracle.annotation``), or of the dense caption for CAPTION."""
    if which == CAPTION:
        return format_messages([scene_caption(example)], rng)[0]
    return annotation(example, which, rng)


def asked(rng: np.random.Generator, scenes: int, q: int, annotations: Sequence[int]) -> list[int]:
    """Which annotation each of ``scenes * q`` rows asks, a scene's q rows side by side: one drawn at random per row
    when q is 1; q different ones per scene otherwise (repeats only when q exceeds the annotations)."""
    if q == 1:
        return [int(k) for k in rng.choice(annotations, size=scenes)]
    return [int(k) for _ in range(scenes) for k in rng.choice(annotations, size=q, replace=q > len(annotations))]


def build_batch(model: MolmoLite, examples: Sequence[Example], which: Sequence[int], images: Sequence[ImageInputs],
                rng: np.random.Generator | None = None) -> dict:
    """Right-padded training rows ([BOS], the prompt and the image tokens as ``config.question_first`` lays them
    out, the answer and EOS; the loss on the answer only) -> input_ids, attention_mask, targets, and the rows'
    ImageInputs under "images" (``length_chunks`` keeps each chunk's own)."""
    tok = model.tokenizer
    rows, targets = [], []
    for ex, k, image in zip(examples, which, images):
        prompt, answer = annotation_of(ex, k, rng)
        ids = generation_prompt_ids(tok, prompt, image.tokens, model.config.question_first)
        answer_ids = tok.encode(" " + answer) + [tok.eos_id]
        rows.append(ids + answer_ids)
        targets.append([IGNORE_INDEX] * len(ids) + answer_ids)
    return right_padded(rows, targets, tok.pad_id) | {"images": list(images)}


def forward(model: MolmoLite, part: dict) -> torch.Tensor:
    """Logits of a chunk (``length_chunks`` of ``build_batch``): its images through ViT and connector, added at its
    <im_patch> tokens; causal attention without a padding mask (the padding is after every real token)."""
    return model(part["input_ids"], **batch_images(part["images"])).logits


@torch.no_grad()
def generated(model: MolmoLite, examples: Sequence[Example], prompts: Sequence[str], max_new_tokens: int,
              batch_size: int = 50) -> list[str]:
    """Greedy answers of ``MolmoLite.generate`` (its prompt layout) to one prompt per example, in batches, stripped."""
    model.eval()
    texts = generate_in_batches(model, examples, prompts, max_new_tokens, batch_size)
    model.train()
    return [t.strip() for t in texts]


def answers(model: MolmoLite, examples: Sequence[Example], which: int, max_new_tokens: int = 200) -> list[str]:
    """Greedy answers to annotation ``which`` of each example (``generated``)."""
    return generated(model, examples, [annotation(ex, which)[0] for ex in examples], max_new_tokens)


@torch.no_grad()
def answer_loss(model: MolmoLite, examples: Sequence[Example], which: Sequence[int] = (0, 1),
                shuffled: bool = False) -> float:
    """Mean cross-entropy per answer token (teacher forcing) of annotations ``which`` of every example; shuffled:
    each example with the next one's image (its question and answer kept). A model that reads its images has a
    clearly lower loss with the true ones."""
    model.eval()
    asked = shuffled_images(examples) if shuffled else list(examples)
    images = model.prepare_images([ex.image for ex in asked])
    total, tokens = 0.0, 0
    for k in which:
        batch = build_batch(model, asked, [k] * len(asked), images)
        total += float(loss_of(forward(model, batch), batch["targets"], "sum"))
        tokens += int(batch["targets"].ne(IGNORE_INDEX).sum())
    model.train()
    return total / tokens


def evaluate_eyes(model: MolmoLite, examples: Sequence[Example], shuffled: bool = False) -> dict:
    """Pointing F1 (annotation 0) and counting exact (annotation 1), by number of targets and kind of query
    (``oracle.score_answers``); shuffled: each example shows the next one's image (the control)."""
    asked = shuffled_images(examples) if shuffled else list(examples)
    return score_answers(examples, answers(model, asked, 0), answers(model, asked, 1))


def evaluate_clocks(model: MolmoLite, examples: Sequence[Example]) -> dict:
    """Held-out clocks (``evaluate.score``: exact, within 3 minutes, hour) read by greedy generation, the same with
    shuffled images, and the answer loss with true and shuffled images (the control: the clock's image must
    matter)."""
    true = score("clocks", examples, answers(model, examples, 0, max_new_tokens=8))
    shuffled = score("clocks", examples, answers(model, shuffled_images(examples), 0, max_new_tokens=8))
    loss, control = answer_loss(model, examples, (0,)), answer_loss(model, examples, (0,), shuffled=True)
    return {k: round(v, 4) for k, v in true.items()} | {
        "shuffled": {k: round(v, 4) for k, v in shuffled.items()},
        "answer_loss": round(loss, 4), "shuffled_answer_loss": round(control, 4),
        "loss_ratio": round(control / loss, 2)}


def evaluate_shift(model: MolmoLite, examples: Sequence[Example]) -> dict:
    """The shift check: pointing F1 and counting exact on scenes of another renderer
    (``synthetic.shifted_pointing_examples``: 112 px, hard edges, plain grey or noisy backgrounds, 1-6 of the class
    among 0-4 others), overall, by number of targets and by background."""
    pointed, counted = answers(model, examples, 0), answers(model, examples, 1)
    report = score_answers(examples, pointed, counted)
    out = {k: report[k] for k in ("pointing_f1", "counting_exact", "by_count", "samples")} | {"by_background": {}}
    for background in SHIFT_BACKGROUNDS:
        idx = [i for i, ex in enumerate(examples) if ex.meta["background"] == background]
        if not idx:
            continue
        part = score_answers([examples[i] for i in idx], [pointed[i] for i in idx], [counted[i] for i in idx])
        out["by_background"][background] = {"n": len(idx), "pointing_f1": part["pointing_f1"],
                                            "counting_exact": part["counting_exact"]}
    return out


@torch.no_grad()
def decided(model: MolmoLite, example: Example) -> list[SceneObject]:
    """The objects the connector's cell decisions (``connector.CellDecisions``) hand the LLM for this scene's
    overview (``oracle.cell_objects``: colour, shape and centre of each claimed cell)."""
    decide = model.connector.decide
    if decide is None:
        raise ValueError("decided reads the connector's cell decisions: a model with cell_decisions")
    vision = model.vision.eyes if isinstance(model.vision, CachedEyes) else model.vision
    crops = model.processor(example.image).crops[:1]
    return cell_objects(decide(vision.features(crops))[0], decide.grid)


def reader_ceiling(model: MolmoLite, examples: Sequence[Example], near: float = 0.75) -> dict:
    """What a perfect reader of the cell decisions would score: pointing at every decided object of the class asked
    and counting them (``score_answers`` of those answers, Molmo's format), so the eyes' share of a miss is known
    before any LLM is trained. Per object of the scenes: "missed" (no decided object within ``near`` cells of its
    centre), "twice" (more than one), "wrong_shape" / "wrong_colour" (the nearest one's), and "phantoms" (decided
    objects near none) per scene."""
    grid = model.connector.decide.grid
    pointed, counted = [], []
    errors = {"objects": 0, "missed": 0, "twice": 0, "wrong_shape": 0, "wrong_colour": 0, "phantoms": 0}
    radius2 = (near * 100 / grid) ** 2
    for ex in examples:
        seen_objects, query, used = decided(model, ex), Query.from_label(ex.meta["label"]), set()
        points = [(o.x, o.y) for o in seen_objects if query.matches(o)]
        pointed.append(points_to_text(points, ex.meta["label"]))
        counted.append(count_to_text(points, ex.meta["label"]))
        for o in ex.meta["objects"]:
            close = [k for k, d in enumerate(seen_objects) if (d.x - o.x) ** 2 + (d.y - o.y) ** 2 < radius2]
            errors["objects"] += 1
            if not close:
                errors["missed"] += 1
                continue
            errors["twice"] += len(close) > 1
            nearest = seen_objects[min(close, key=lambda k: (seen_objects[k].x - o.x) ** 2 +
                                       (seen_objects[k].y - o.y) ** 2)]
            errors["wrong_shape"] += nearest.shape != o.shape
            errors["wrong_colour"] += nearest.colour != o.colour
            used.update(close)
        errors["phantoms"] += len(seen_objects) - len(used)
    report = score_answers(examples, pointed, counted)
    per_object = {k: round(v / max(1, errors["objects"]), 4) for k, v in errors.items() if k not in ("objects",
                                                                                                        "phantoms")}
    return {"pointing_f1": report["pointing_f1"], "counting_exact": report["counting_exact"],
            "by_count": report["by_count"], "objects": errors["objects"], "per_object": per_object,
            "phantoms_per_scene": round(errors["phantoms"] / max(1, len(examples)), 4)}


class OracleEyes(torch.nn.Module):
    """The diagnostic's stand-in for the ViT (``EyesConfig.eyes == "oracle"``): its "crops" are already each patch's
    features (``oracle_image``), which it passes on; nothing to learn."""

    def __init__(self):
        super().__init__()
        self.register_buffer("positional_embedding", torch.zeros(1), persistent=False)  # the dtype MolmoLite reads

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return crops


def claimed_cells(objects: Sequence[SceneObject], grid: int, margin: float) -> torch.Tensor:
    """``oracle.cell_features`` with each object put in a cell picked at random among those that may claim it
    (``claim_cells``: its own, or across a border within ``margin`` cells), its offset from that cell's middle:
    what perfect eyes trained by ``claim_losses`` could give. -> float [grid * grid, feature_size(grid)]."""
    cells = cell_features([], grid).reshape(grid, grid, -1)
    if objects:
        t = torch.from_numpy(claim_targets(objects, max(MAX_OBJECTS, len(objects))))[None]
        where, real = claim_cells(t, grid, margin)
        for o, options, ok in zip(objects, where[0], real[0]):
            i, j = divmod(int(options[ok][torch.randint(int(ok.sum()), ())]), grid)
            add_object(cells, o, i, j)
    return torch.from_numpy(cells.reshape(grid * grid, -1))


def oracle_image(model: MolmoLite, example: Example, offset_noise: float = 0.0,
                 cell_errors: tuple[float, float] = (0.0, 0.0), share: float = 0.0,
                 claim_margin: float = 0.0) -> ImageInputs:
    """The example's ImageInputs (layout, pooling windows) with every crop's pixels replaced by what the oracle knows
    of each patch's cell (``oracle.cell_features`` of a grid of crop_size / patch_size): float [n, P, F]. Each crop
    must show the whole scene (the overview and one crop: ``max_crops`` 1, or the overview alone: crop_mode
    "resize"), so that patch (i, j) of a grid of G x G is cell (i, j) of G x G. offset_noise: Gaussian noise of
    that standard deviation (in cells) added to each occupied cell's offset (``EyesConfig.oracle_offset_noise``).
    cell_errors (missed, phantom): each object's cell read empty with probability missed, and each empty neighbour
    (above, below, left, right) of an object given that object's colour and shape with probability phantom
    (``EyesConfig.oracle_cell_errors``). share: objects near a border shared with the cell across it
    (``oracle.cell_features``, ``EyesConfig.cell_share``). claim_margin: each object in a cell picked at random
    among those within this many cells of its centre (``claimed_cells``, ``EyesConfig.oracle_claim_margin``)."""
    inputs = model.processor(example.image)
    if inputs.tiling not in ((1, 1), (0, 0)):
        raise ValueError(f"oracle eyes need one crop showing the whole scene (max_crops=1), got {inputs.tiling}")
    grid = model.config.vision.image_size // model.config.vision.patch_size
    cells = (claimed_cells(example.meta["objects"], grid, claim_margin) if claim_margin else
             torch.from_numpy(cell_features(example.meta["objects"], grid, share)))
    if offset_noise:  # the offsets of occupied cells as eyes that misjudge them would give (N(0, offset_noise) cells)
        where = len(COLOURS) + len(SHAPES)
        occupied = cells[:, :len(COLOURS)].sum(1, keepdim=True) > 0
        cells[:, where:where + 2] += offset_noise * torch.randn(len(cells), 2) * occupied
    missed, phantom = cell_errors
    if missed or phantom:  # eyes that miss objects and see one again on a neighbouring empty cell
        content = len(COLOURS) + len(SHAPES)
        occupied = cells[:, :len(COLOURS)].sum(1) > 0
        for k in occupied.nonzero().flatten().tolist():
            i, j = divmod(k, grid)
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                n = (i + di) * grid + j + dj
                if 0 <= i + di < grid and 0 <= j + dj < grid and not occupied[n] and torch.rand(()) < phantom:
                    cells[n, :content] = cells[k, :content]
        lost = occupied & (torch.rand(len(cells)) < missed)
        cells[lost, :content + 2] = 0  # colour, shape, offset
    return replace(inputs, crops=cells.expand(inputs.num_crops, -1, -1).contiguous())


class CachedEyes(torch.nn.Module):
    """Frozen eyes whose features a training scene's ImageInputs already carry: ``features`` passes a tensor of
    features [n, P, D] on and runs the eyes it wraps on pixels [n, 3, S, S] (the held-out scenes, generation), so
    a scene drawn into the pool (``EyesConfig.scene_pool``) goes through the frozen ViT once, not at every step
    it is sampled (``EyesConfig.cache_features``)."""

    def __init__(self, eyes: torch.nn.Module):
        super().__init__()
        self.eyes = eyes
        self.positional_embedding = eyes.positional_embedding

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return crops if crops.dim() == 3 else self.eyes.features(crops)


def seen_image(model: MolmoLite, config: EyesConfig, example: Example) -> ImageInputs:
    """The example's image as the model reads it: preprocessed, or with oracle eyes ``oracle_image``; with cached
    eyes (``CachedEyes``) its crops are already the frozen eyes' features."""
    if config.eyes == "oracle":
        return oracle_image(model, example, config.oracle_offset_noise, config.oracle_cell_errors,
                            config.cell_share, config.oracle_claim_margin)
    inputs = model.processor(example.image)
    if isinstance(model.vision, CachedEyes):
        with torch.no_grad():
            return replace(inputs, crops=model.vision.eyes.features(inputs.crops))
    return inputs


def seen(model: MolmoLite, config: EyesConfig, examples: Sequence[Example]) -> list[Example]:
    """The examples as the model sees them: unchanged, or with oracle eyes their images as ``oracle_image``."""
    if config.eyes != "oracle":
        return list(examples)
    return [Example(seen_image(model, config, ex), ex.messages, ex.task, ex.meta) for ex in examples]


@torch.no_grad()
def slot_pooling(pool: torch.nn.Module, grid: int, sharpness: float = 40.0) -> None:
    """Set an attention pooling of 4 heads over 2 x 2 windows of ``oracle.cell_features`` so that head h attends to
    the window's cell at (row parity, column parity) = divmod(h, 2) alone and passes its colour, shape and offset
    (and its row one-hot for heads 0-1, column one-hot for heads 2-3): the pooled vector then lists the four cells
    side by side, as ``oracle.window_features`` does, instead of mixing them. The query is a constant (its bias),
    each key holds the cell's row and column parity (sums of the odd rows' and columns' one-hots), so head h's
    score is sharpness / sqrt(head_dim) times (+-[row odd] +- [column odd]), largest on its own cell."""
    n_colour, n_shape, d = len(COLOURS), len(SHAPES), pool.head_dim
    rows = n_colour + n_shape + 2
    content = n_colour + n_shape + 2  # colour, shape, offset
    if pool.heads != 4 or d < content + grid or pool.wo.weight.shape != (4 * d, 4 * d):
        raise ValueError("slot_pooling needs 4 heads of at least colour + shape + offset + grid channels, "
                         "pool_dim = 4 x head_dim")
    for layer in (pool.wq, pool.wk, pool.wv, pool.wo):
        layer.weight.zero_()
        layer.bias.zero_()
    odd = torch.arange(grid) % 2 == 1
    for h in range(4):
        row_odd, col_odd = divmod(h, 2)
        pool.wq.bias[h * d] = sharpness * (1 if row_odd else -1)
        pool.wq.bias[h * d + 1] = sharpness * (1 if col_odd else -1)
        pool.wk.weight[h * d, rows:rows + grid] = odd.float()
        pool.wk.weight[h * d + 1, rows + grid:rows + 2 * grid] = odd.float()
        pool.wv.weight[h * d:h * d + content, :content] = torch.eye(content)
        where = rows if h < 2 else rows + grid
        pool.wv.weight[h * d + content:h * d + content + grid, where:where + grid] = torch.eye(grid)
    pool.wo.weight.copy_(torch.eye(4 * d))


def softmax_readout(x: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.nn.Linear:
    """A linear map x [N, D] -> logits of ``classes`` fitted to ``labels`` [N] by cross-entropy (L-BFGS), frozen."""
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head.requires_grad_(False)


def fitting_scenes(model: MolmoLite, config: EyesConfig, scenes: int) -> tuple[list[Example], torch.Tensor]:
    """``scenes`` fresh scenes for fitting a read-out of the cells (a seed stream of their own, not training's) and
    their overview crops [scenes, 3, S, S], each the whole scene as the connector sees it."""
    rng = np.random.default_rng(split_seed(config.seed + 2, "train"))
    examples = [pointing_example(rng, size=config.scene_size, max_count=config.max_count,
                                 max_distractors=config.max_distractors) for _ in range(scenes)]
    return examples, torch.cat([model.processor(ex.image).crops[:1] for ex in examples])


@torch.no_grad()
def fit_readout(model: MolmoLite, config: EyesConfig, scenes: int, ridge: float = 1e-3,
                classes: bool = False) -> dict:
    """The least-squares read-out of the cells: on ``scenes`` fresh scenes (a seed stream of their own), the ViT
    features of every patch of the overview (after the connector's normalisation) are regressed on
    ``oracle.cell_features`` of its cell (ridge ``ridge``). -> "weight" [input_dim, feature_size], "bias"
    [feature_size] (float tensors) and the fit's mean squared error and colour accuracy (argmax) on occupied cells.
    classes: also fit (L-BFGS, cross-entropy) softmax read-outs of colour-or-empty and of shape (on occupied cells)
    under "heads", with their fit: cells decided right, empty cells read occupied, occupied cells read empty."""
    grid = config.crop_size // config.patch_size
    examples, crops = fitting_scenes(model, config, scenes)
    x = model.connector.normalize(model.vision.features(crops)).reshape(-1, model.connector.config.input_dim)
    y = torch.from_numpy(np.concatenate([cell_features(ex.meta["objects"], grid, config.cell_share)
                                         for ex in examples]))
    xb = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    w = torch.linalg.solve(xb.T @ xb + ridge * len(x) * torch.eye(xb.shape[1], dtype=xb.dtype), xb.T @ y.double())
    fit = (xb @ w).float()
    occupied = y[:, :len(COLOURS)].sum(1) > 0
    if classes:  # softmax read-outs of colour-or-empty and of shape, as the cell objective's head decides
        n_colour, n_shape = len(COLOURS), len(SHAPES)
        colour = torch.where(occupied, y[:, :n_colour].argmax(1), n_colour)  # class n_colour: empty
        shape = y[occupied, n_colour:n_colour + n_shape].argmax(1)
        heads = {"colour_head": softmax_readout(x, colour, n_colour + 1),
                 "shape_head": softmax_readout(x[occupied], shape, n_shape)}
        decided = heads["colour_head"](x).argmax(1)
        classes_fit = {"heads": heads, "cell_acc": round(float((decided == colour).float().mean()), 4),
                       "false_occupied": round(float((decided[~occupied] < n_colour).float().mean()), 4),
                       "missed": round(float((decided[occupied] == n_colour).float().mean()), 4)}
    else:
        classes_fit = {}
    named = fit[occupied, :len(COLOURS)].argmax(1) == y[occupied, :len(COLOURS)].argmax(1)
    return classes_fit | {"weight": w[:-1].float(), "bias": w[-1].float(), "scenes": scenes,
                          "mse": round(float(((fit - y) ** 2).mean()), 5),
                          "colour_acc": round(float(named.float().mean()), 4)}


@torch.no_grad()
def cell_mistakes(model: MolmoLite, config: EyesConfig, fit: dict, examples: Sequence[Example],
                  near: float = 0.05) -> dict:
    """Where the eyes' cell decisions go wrong, before any LLM run: the softmax read-out of colour-or-empty of
    ``fit`` (``fit_readout(classes=True)``) decides every cell of the examples' overviews. -> "missed" (objects
    whose centre's cell is read empty), "phantom" (empty cells read occupied), and how close the missed centres lie
    to a border between cells: "missed_near_border" (the share of missed objects within ``near`` cells of one)
    against "near_border" (the share of all objects there), "missed_border_distance" (their mean distance, in
    cells). Misses piled up at the borders mean the eyes cannot tell on which side of a border a centre lies."""
    grid, n_colour = config.crop_size // config.patch_size, len(COLOURS)
    head = fit["heads"]["colour_head"]
    objects = phantom = empty = 0
    distance, distance_missed = [], []
    for ex in examples:
        crops = model.processor(ex.image).crops[:1]
        x = model.connector.normalize(model.vision.features(crops)).reshape(-1, model.connector.config.input_dim)
        decided = head(x).argmax(1).reshape(grid, grid)
        occupied = torch.zeros(grid, grid, dtype=torch.bool)
        for o in ex.meta["objects"]:
            u, v = o.x / 100 * grid, o.y / 100 * grid
            i, j = cell_of(o, grid)
            occupied[i, j] = True
            d = min(u - j, j + 1 - u, v - i, i + 1 - v)
            distance.append(d)
            if decided[i, j] == n_colour:
                distance_missed.append(d)
        objects += len(ex.meta["objects"])
        phantom += int(((decided < n_colour) & ~occupied).sum())
        empty += int((~occupied).sum())
    d, dm, missed = np.array(distance), np.array(distance_missed), len(distance_missed)
    return {"objects": objects, "missed": round(missed / max(objects, 1), 4), "phantom": round(phantom / empty, 4),
            "missed_near_border": round(float((dm < near).mean()), 3) if missed else 0.0,
            "near_border": round(float((d < near).mean()), 3),
            "missed_border_distance": round(float(dm.mean()), 4) if missed else None}


@torch.no_grad()
def readout_pooling(model: MolmoLite, config: EyesConfig, scenes: int, ridge: float = 1e-3) -> dict:
    """Start a 1 x 1 attention pooling as the least-squares read-out of the cells (``fit_readout``): wv's first
    feature_size rows become that map, wo the identity, so each image token enters the projector as its cell's
    estimated colour, shape, offset, row and column (the rest zero). -> the fit's mean squared error and its colour
    accuracy (argmax) on occupied cells."""
    if config.pooling != (1, 1):
        raise ValueError("readout_pooling reads one patch per token: it needs pooling (1, 1)")
    pool, n = model.connector.pool, feature_size(config.crop_size // config.patch_size)
    if pool.wv.weight.shape[0] < n or pool.wo.weight.shape[0] != pool.wo.weight.shape[1]:
        raise ValueError("readout_pooling needs at least feature_size value channels and a square wo")
    fit = fit_readout(model, config, scenes, ridge)
    pooling_as_map(pool, fit["weight"].T, fit["bias"])
    return {k: fit[k] for k in ("scenes", "mse", "colour_acc")}


@torch.no_grad()
def pooling_as_map(pool: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """A 1 x 1 attention pooling (wo(wv x) for one patch) set to the affine map weight x + bias [n outputs] on its
    first n channels: wv's first n rows that map, wo the identity, everything else zero."""
    n = weight.shape[0]
    for layer in (pool.wv, pool.wo):
        layer.weight.zero_()
        layer.bias.zero_()
    pool.wv.weight[:n] = weight
    pool.wv.bias[:n] = bias
    pool.wo.weight.copy_(torch.eye(pool.wo.weight.shape[0]))


@torch.no_grad()
def head_pooling(model: MolmoLite, config: EyesConfig, scenes: int) -> dict:
    """Start a 1 x 1 attention pooling as the ViT's cell head (``CELL_HEAD_FILE`` beside ``config.vision_init``,
    trained with it by ``pretrain_vit_cells``): wv's first rows become the head's linear map, each output shifted and
    scaled to zero mean and unit variance over the patches of ``scenes`` fresh scenes (a seed stream of their own),
    wo the identity, the rest zero. Each image token then enters the projector as the head's scores of its cell
    (colour or empty, shape, offset, row, column): the connector is Molmo's, its start is what the eyes were taught
    to say. -> the scenes and the share of objects' cells whose colour the head names (argmax), as a check."""
    if config.pooling != (1, 1) or not config.vision_init:
        raise ValueError("head_pooling reads one patch per token through a pre-trained ViT's head: pooling (1, 1)")
    if model.connector.config.feature_norm:
        raise ValueError("the cell head reads the ViT's raw features: the connector's feature_norm must be 0")
    weights = load_file(str(Path(config.vision_init) / CELL_HEAD_FILE))
    w, b = weights["weight"], weights["bias"]
    pool, n = model.connector.pool, w.shape[0]
    if pool.wv.weight.shape[0] < n or pool.wo.weight.shape[0] != pool.wo.weight.shape[1]:
        raise ValueError("head_pooling needs as many value channels as the head has outputs and a square wo")
    grid = config.crop_size // config.patch_size
    examples, crops = fitting_scenes(model, config, scenes)
    z = model.vision.features(crops).reshape(-1, w.shape[1]) @ w.T + b
    mean, std = z.mean(0), z.std(0).clamp(min=1e-3)
    pooling_as_map(pool, w / std[:, None], (b - mean) / std)
    y = torch.from_numpy(np.concatenate([cell_features(ex.meta["objects"], grid) for ex in examples]))
    occupied = y[:, :len(COLOURS)].sum(1) > 0
    named = z[occupied, :len(COLOURS)].argmax(1) == y[occupied, :len(COLOURS)].argmax(1)
    return {"scenes": scenes, "colour_acc": round(float(named.float().mean()), 4)}


@torch.no_grad()
def fit_feature_basis(model: MolmoLite, config: EyesConfig, scenes: int = 128) -> torch.Tensor:
    """Set ``model.connector.feature_basis``: the ``config.feature_dims`` main directions of the ViT's normalised
    patch features, each divided by its RMS (whitened), fitted on ``scenes`` pointing scenes and as many clocks of
    the training distribution (a seed stream of their own; a second or two). The connector then hands on each
    patch's coordinates along them beside its cell decisions: e52 handed on all 192 channels, which a random start
    of the pooling (96 wide) mixes into the decisions. -> the share of the features' energy the basis keeps."""
    rng = np.random.default_rng(split_seed(config.seed + 1000, "train"))
    examples = [pointing_example(rng, size=config.scene_size) for _ in range(scenes)]
    examples += [clocks.clock_example(rng, size=config.scene_size) for _ in range(scenes)]
    crops = torch.cat([model.processor(ex.image).crops for ex in examples])
    dim = model.connector.config.input_dim
    x = F.layer_norm(model.vision.features(crops), (dim,)).reshape(-1, dim)
    _, s, v = torch.linalg.svd(x, full_matrices=False)
    k = config.feature_dims
    rms = s[:k] / math.sqrt(x.shape[0])
    model.connector.feature_basis.copy_(v[:k].T / rms)
    return (s[:k] ** 2).sum() / (s ** 2).sum()


@torch.no_grad()
def linear_projector(connector: Connector, gate: float = 0.5) -> None:
    """Start Molmo's SwiGLU projector, w2(silu(w1 p) * w3 p), as a linear map of the pooled vector p: the pooling's
    last value channel becomes a constant 1 (its bias) that wo passes to the last pooled channel alone, and the gate
    w1 reads only that channel, so silu(w1 p) = silu(gate) for every token and the projector starts as
    w2(silu(gate) * w3 p); training frees the gate from there. From its random start SwiGLU multiplies two linear
    maps of each cell's one-hots, so a cell's embedding mixes products of colour, shape, row and column, where a
    linear map gives the sum of one vector for each (the code o16's Linear-GELU-Linear starts near). Works for any
    pooling window: the attention weights of a window sum to 1, so the constant stays 1."""
    pool, proj = connector.pool, connector.projector
    c, j = pool.wv.weight.shape[0] - 1, pool.wo.weight.shape[0] - 1
    pool.wv.weight[c] = 0.0
    pool.wv.bias[c] = 1.0
    pool.wo.weight[:, c] = 0.0
    pool.wo.weight[j] = 0.0
    pool.wo.weight[j, c] = 1.0
    pool.wo.bias[j] = 0.0
    proj.w1.weight.zero_()
    proj.w1.weight[:, j] = gate
    proj.w3.weight[:, j] = 0.0


def cell_connector(model: MolmoLite, grid: int) -> Connector:
    """A fresh connector of the model's design reading ``oracle.cell_features`` of a grid x grid scene (their
    feature_size channels, no normalisation meant for a ViT): the oracle eyes' and the read-out eyes' connector."""
    return Connector(replace(model.config.connector, input_dim=feature_size(grid), feature_norm=0))


class ReadoutEyes(torch.nn.Module):
    """The diagnostic that keeps the real eyes' knowledge but hands it over in the oracle's form
    (``EyesConfig.eyes == "readout"`` or "readout-position"): each patch's ViT features, normalised as the
    connector would, through a fixed linear read-out of the cells (``fit_readout``) -> features shaped as
    ``oracle.cell_features``; with ``exact_position`` the row and column one-hots are replaced by the patch's own
    (known from its index, not from the scene), so only colour, shape and offset come from the ViT; with ``clean``
    > 0 ("readout-clean") a cell whose largest colour channel passes ``clean`` gets the one-hots of its largest
    colour and shape and its offset, any other cell zeros: the read-out's decisions, as sharp as the oracle's."""

    def __init__(self, vision: torch.nn.Module, connector: Connector, weight: torch.Tensor, bias: torch.Tensor,
                 grid: int, exact_position: bool, clean: float = 0.0, heads: dict | None = None):
        super().__init__()
        self.clean = clean
        self.heads = None if heads is None else torch.nn.ModuleDict(heads)
        self.vision, self.connector = vision, connector  # the ViT's own connector: its normalisation alone is used
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.positional_embedding = vision.positional_embedding
        rows = len(COLOURS) + len(SHAPES) + 2
        position = torch.from_numpy(cell_features([], grid))  # an empty scene: each cell's row and column alone
        self.register_buffer("position", position, persistent=False)
        self.register_buffer("content", (torch.arange(weight.shape[1]) < rows).float(), persistent=False)
        self.exact_position = exact_position

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.connector.normalize(self.vision.features(crops))
            read = x @ self.weight + self.bias
        if self.clean:  # one-hots of the largest colour and shape where the colours say "occupied", else zeros
            n_colour, n_shape = len(COLOURS), len(SHAPES)
            colour, shape = read[..., :n_colour], read[..., n_colour:n_colour + n_shape]
            occupied = (colour.amax(-1, keepdim=True) > self.clean).float()
            if self.heads is not None:  # the softmax read-outs decide instead
                decided = self.heads["colour_head"](x).argmax(-1)
                occupied = (decided < n_colour).float()[..., None]
                colour, shape = F.one_hot(decided.clamp(max=n_colour - 1), n_colour), self.heads["shape_head"](x)
            read = torch.cat([F.one_hot(colour.argmax(-1), n_colour) * occupied,
                              F.one_hot(shape.argmax(-1), n_shape) * occupied,
                              read[..., n_colour + n_shape:n_colour + n_shape + 2] * occupied,
                              read[..., n_colour + n_shape + 2:]], -1)
        return read * self.content + self.position if self.exact_position else read


def align_connector(model: MolmoLite, config: EyesConfig, scenes: int, steps: int, batch: int = 32,
                    lr: float = 1e-3) -> dict:
    """Start the connector (pooling and projector) as the oracle eyes' connector of e19 would start, read through
    the frozen ViT. On ``scenes`` fresh scenes (a seed stream of their own) the ViT's features are computed once;
    a fresh connector reading ``oracle.cell_features`` (pooling 1 x 1) gives each image token its target. The
    connector starts as that oracle connector after the least-squares read-out of the cells (``readout_pooling``,
    composed into its pooling's linear map), then is trained (``steps`` of AdamW on ``batch`` scenes, MSE) to give
    the targets: the SwiGLU projector can learn to send an empty cell to the empty cell's embedding where the linear
    read-out leaves small colours in it. -> the fit (mean squared error relative to the targets' variance, at the
    start on one batch and at the end on held-back scenes) and the share of held-back tokens whose nearest target
    is one of their own cell's kind (empty, or its colour and shape)."""
    if config.eyes != "vit":
        raise ValueError("align_connector reads the ViT: it needs eyes='vit'")
    grid = config.crop_size // config.patch_size
    rng = np.random.default_rng(split_seed(config.seed + 3, "train"))
    examples = [pointing_example(rng, size=config.scene_size, max_count=config.max_count,
                                 max_distractors=config.max_distractors) for _ in range(scenes)]
    images = [model.processor(ex.image) for ex in examples]
    if any(im.tiling not in ((1, 1), (0, 0)) for im in images):
        raise ValueError("align_connector needs one crop showing the whole scene (the oracle's cells)")
    torch.manual_seed(config.seed + 3)
    oracle = cell_connector(model, grid)
    with torch.no_grad():
        cells = [torch.from_numpy(cell_features(ex.meta["objects"], grid)) for ex in examples]
        vit = [model.vision.features(im.crops) for im in images]
        targets = [oracle(c.expand(im.num_crops, -1, -1), im.pooled_patches_idx, im.patch_pad_fraction)
                   for c, im in zip(cells, images)]
    held = max(1, scenes // 8)  # the last eighth: held back to judge the fit
    scale = torch.cat(targets[:-held]).var().item()
    connector = model.connector
    with torch.no_grad():  # the read-out c = w x + b, then the oracle's pooling of one patch wo(wv c)
        readout_pooling(model, config, scenes)
        n = feature_size(grid)
        w, b = connector.pool.wv.weight[:n].clone(), connector.pool.wv.bias[:n].clone()
        connector.pool.wv.weight.copy_(oracle.pool.wv.weight @ w)
        connector.pool.wv.bias.copy_(oracle.pool.wv.weight @ b + oracle.pool.wv.bias)
        connector.pool.wo.load_state_dict(oracle.pool.wo.state_dict())
        connector.projector.load_state_dict(oracle.projector.state_dict())
    opt = torch.optim.AdamW(connector.parameters(), lr=lr, weight_decay=0.0)

    def loss_on(which: Sequence[int]) -> torch.Tensor:
        b = batch_images([images[k] for k in which])
        out = connector(torch.cat([vit[k] for k in which]), b["pooled_patches_idx"], b["patch_pad_fraction"])
        return ((out - torch.cat([targets[k] for k in which])) ** 2).mean() / scale

    with torch.no_grad():
        first = float(loss_on(range(min(batch, scenes - held))))
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        loss = loss_on(rng.choice(scenes - held, size=min(batch, scenes - held), replace=False))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        rest = list(range(scenes - held, scenes))
        b = batch_images([images[k] for k in rest])
        out = connector(torch.cat([vit[k] for k in rest]), b["pooled_patches_idx"], b["patch_pad_fraction"])
        want = torch.cat([targets[k] for k in rest])
        kinds = torch.cat([c[:, :len(COLOURS) + len(SHAPES)] for c in (cells[k] for k in rest)])
        _, kind_id = torch.unique(kinds, dim=0, return_inverse=True)
        # the nearest target among the held-back tokens' own: right when it is a token of the same kind
        nearest = torch.cdist(out, want).argmin(1)
        kind_acc = float((kind_id[nearest] == kind_id).float().mean()) if len(out) == len(kind_id) else float("nan")
        heldout_mse = float(((out - want) ** 2).mean() / scale)
    return {"scenes": scenes, "steps": steps, "first_loss": round(first, 4), "heldout_relative_mse":
            round(heldout_mse, 4), "nearest_kind_acc": round(kind_acc, 4)}


EYES = ("vit", "oracle", "readout", "readout-position", "readout-clean", "readout-classes")


def use_readout_eyes(model: MolmoLite, config: EyesConfig) -> dict:
    """Replace the model's eyes by ``ReadoutEyes`` fitted on ``config.readout_init`` scenes and its connector by a
    fresh one reading cell features (as the oracle eyes'); -> the fit's summary (``fit_readout``)."""
    grid = config.crop_size // config.patch_size
    fit = fit_readout(model, config, config.readout_init, classes=config.eyes == "readout-classes")
    model.vision = ReadoutEyes(model.vision, model.connector, fit["weight"], fit["bias"], grid,
                               exact_position=config.eyes != "readout",
                               clean=0.3 * (config.eyes in ("readout-clean", "readout-classes")),
                               heads=fit.get("heads"))
    model.connector = cell_connector(model, grid)
    return {k: v for k, v in fit.items() if k not in ("weight", "bias", "heads")}


def build_model(config: EyesConfig, llm: torch.nn.Module | None = None) -> MolmoLite:
    """The tiny Molmo of ``config``: its ViT from ``vision_init`` when given, its LLM from ``llm`` when given
    (``MolmoLite.from_parts``), the rest from a random start (the attention pooling's query projection at 0 with
    ``uniform_pooling``); with oracle eyes, ``OracleEyes`` and a connector reading their features."""
    if config.eyes not in EYES:
        raise ValueError(f"eyes must be one of {EYES}, got {config.eyes!r}")
    if config.eyes.startswith("readout") and not (config.readout_init and config.pooling == (1, 1)):
        raise ValueError("read-out eyes are fitted on readout_init scenes, one patch per token: pooling (1, 1)")
    vision = load_encoder(Path(config.vision_init)) if config.vision_init else None
    model = MolmoLite.from_parts(config.molmo_config(), vision=vision, llm=llm)
    if config.pooling_init:
        model.connector.pool.load_state_dict(load_file(str(Path(config.pooling_init) / POOLING_FILE)))
    if config.cell_decisions:  # the cell objective's head, saved beside its ViT, decides each cell
        if config.pooling != (1, 1) or not config.vision_init or config.eyes != "vit":
            raise ValueError("cell_decisions read one patch per token through a pre-trained ViT's cell head")
        model.connector.decide.head.load_state_dict(load_file(str(Path(config.vision_init) / CELL_HEAD_FILE)))
    if config.eyes == "oracle":
        model.vision = OracleEyes()
        grid = config.crop_size // config.patch_size
        model.connector = cell_connector(model, grid)
        if config.slot_pooling:
            slot_pooling(model.connector.pool, grid)
    elif config.slot_pooling:
        raise ValueError("slot_pooling reads the oracle's cell features: it needs eyes='oracle'")
    if config.feature_dims:
        fit_feature_basis(model, config)
    if config.linear_projector:
        linear_projector(model.connector, config.linear_projector)
    if config.uniform_pooling:
        torch.nn.init.zeros_(model.connector.pool.wq.weight)
        torch.nn.init.zeros_(model.connector.pool.wq.bias)
    return model


def train_eyes(config: EyesConfig, minutes: float | None = None, steps: int | None = None, heldout: int = 200,
               evals: int = 5, log: Callable[[str], None] | None = print, threads: int | None = None) -> dict:
    """Train the whole tiny Molmo on pointing and counting for ``minutes`` of training time (drawing the scenes and
    preprocessing them counted; evaluations not) or a number of ``steps``; -> a JSON-able record as
    ``oracle.train_oracle``'s (config, curve on the first 100 held-out scenes, final scores on all, the shuffled
    control, steps/s), with the model under "model"."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    model = build_model(config)
    fitting = time.perf_counter()
    readout = (use_readout_eyes(model, config) if config.eyes.startswith("readout") else
               readout_pooling(model, config, config.readout_init) if config.readout_init else
               head_pooling(model, config, config.head_init) if config.head_init else None)
    if config.align_scenes:
        readout = (readout or {}) | {"align": align_connector(model, config, config.align_scenes, config.align_steps)}
        if log:
            log(f"aligned connector: {readout['align']}")
    if config.cache_features:
        if config.lr_vit != 0 or config.eyes == "oracle":
            raise ValueError("cache_features keeps the eyes' features fixed: it needs a frozen ViT (lr_vit 0)")
        model.vision = CachedEyes(model.vision)
    readout_minutes = (time.perf_counter() - fitting) / 60
    pool_lr = config.lr_connector if config.lr_pool is None else config.lr_pool
    optimizers = build_optimizer(model, config, {"vision.": config.lr_vit, "connector.decide.": 0.0,
                                                 "connector.pool.": pool_lr,
                                                 "connector.": config.lr_connector})
    rng = np.random.default_rng(split_seed(config.seed, "train"))
    held = seen(model, config, pointing_examples(heldout, 0, "heldout", config.scene_size, max_count=10))  # ch. 07's
    during = held[:min(len(held), 100)]
    start = time.perf_counter()

    pool: list[tuple[Example, ImageInputs]] = []
    drawn = [0]

    def draw() -> tuple[Example, ImageInputs]:
        drawn[0] += 1
        if config.clock_rate and rng.random() < config.clock_rate:
            ex = clocks.clock_example(rng, size=config.scene_size)
            return ex, seen_image(model, config, ex)
        ex = pointing_example(rng, size=int(rng.choice(config.scene_sizes)) if config.scene_sizes
                              else config.scene_size, max_count=config.max_count,
                              max_distractors=config.max_distractors)
        return ex, seen_image(model, config, ex)

    q = config.questions_per_scene
    if config.batch_size % q:
        raise ValueError("questions_per_scene must divide batch_size")

    def step_fn(progress: float) -> tuple[torch.Tensor, int]:
        if config.scene_pool:
            if not pool:  # drawn inside the first step, so that its minutes count
                pool.extend(draw() for _ in range(config.scene_pool))
            for k in rng.choice(len(pool), size=config.fresh_scenes, replace=False):
                pool[k] = draw()
            scenes = [pool[k] for k in rng.choice(len(pool), size=config.batch_size // q, replace=False)]
        else:
            scenes = [draw() for _ in range(config.batch_size // q)]
        scenes = [scene for scene in scenes for _ in range(q)]  # each scene asked q different questions
        examples = [ex for ex, _ in scenes]
        which = asked(rng, len(examples) // q, q, config.annotations)
        if config.caption_rate:
            which = [CAPTION if rng.random() < config.caption_rate else k for k in which]
        which = [0 if ex.task == "clocks" else k for ex, k in zip(examples, which)]  # a clock's one question
        batch = build_batch(model, examples, which, [image for _, image in scenes], rng)
        loss = backward_in_chunks(batch, config.micro_batches, lambda part: forward(model, part))
        return loss, int(batch["targets"].ne(IGNORE_INDEX).sum())

    budget = None if minutes is None else minutes - readout_minutes  # the read-out's fit counts in the minutes
    trained = timed_training(model, optimizers, config, step_fn, lambda: evaluate_eyes(model, during), budget,
                             steps, evals, log)
    if readout:
        trained |= {"readout": readout | {"minutes": round(readout_minutes, 3)},
                    "train_minutes": round(trained["train_minutes"] + readout_minutes, 3)}
    final = evaluate_eyes(model, held)
    shuffled = evaluate_eyes(model, during, shuffled=True)
    shifted = evaluate_shift(model, seen(model, config, shifted_pointing_examples(len(held), 0)))
    shifted_56 = evaluate_shift(model, seen(model, config, shifted_pointing_examples(len(held), 0, size=56)))
    if config.cell_decisions:  # how much of a miss is the eyes': a perfect reader of the same decisions
        trained["reader_ceiling"] = reader_ceiling(model, held)
    if config.clock_rate:
        trained["clocks"] = evaluate_clocks(model, clocks.clock_examples(len(held), 0, "heldout", config.scene_size))
        if log:
            log(f"clocks: {trained['clocks']}")
    return {"config": asdict(config)} | trained | {
        "wall_minutes": round((time.perf_counter() - start) / 60, 2), "scenes_drawn": drawn[0], "heldout": len(held),
        "final": final,
        "shuffled": {k: shuffled[k] for k in ("pointing_f1", "counting_exact")}, "shift": shifted,
        "shift_56px": {k: shifted_56[k] for k in ("pointing_f1", "counting_exact", "by_background")},
        "image_tokens": sum(t == "<im_patch>" for t in model.prepare_images([held[0].image])[0].tokens),
        "model": unwrapped(model)}


def unwrapped(model: MolmoLite) -> MolmoLite:
    """The model with ``CachedEyes`` taken off its ViT (the model that is saved and read back)."""
    if isinstance(model.vision, CachedEyes):
        model.vision = model.vision.eyes
    return model


_CAPTION_ENTRY = re.compile(r"([a-z]+) ([a-z]+) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?)")


def caption_scores(model: MolmoLite, examples: Sequence[Example], radius: float = 7.0) -> dict:
    """How well a model writes dense captions (``scene_caption``): each entry 'colour shape x y' it writes is
    matched greedily to an unmatched object of that colour and shape within ``radius`` (Molmo's 0-100 units, the
    pointing metric's hit distance); -> object precision, recall, F1 (an entry in the right place with a wrong
    colour or shape is a miss), and "placed": the share of objects that some entry puts within the radius, whatever
    it calls them."""
    written = generated(model, examples, [format_messages([scene_caption(ex)])[0][0] for ex in examples], 250)
    hits = placed = entries = objects = 0
    for ex, text in zip(examples, written):
        said = [(c, sh, float(x), float(y)) for c, sh, x, y in _CAPTION_ENTRY.findall(text)]
        truth = list(ex.meta["objects"])
        entries, objects = entries + len(said), objects + len(truth)
        placed += sum(any(np.hypot(x - o.x, y - o.y) <= radius for _, _, x, y in said) for o in truth)
        free = list(truth)
        for colour, shape, x, y in said:
            match = [o for o in free
                     if o.colour == colour and o.shape == shape and np.hypot(x - o.x, y - o.y) <= radius]
            if match:
                free.remove(min(match, key=lambda o: np.hypot(x - o.x, y - o.y)))
                hits += 1
    precision, recall = hits / max(entries, 1), hits / max(objects, 1)
    return {"precision": precision, "recall": recall, "placed": placed / max(objects, 1),
            "f1": 2 * precision * recall / max(precision + recall, 1e-9), "sample": written[0]}


def after_init(summary: dict, init: str | Path) -> dict:
    """What a pre-training that went on from the ViT folder ``init`` adds to its summary: that folder's summary
    under "init" and the minutes of the whole chain under "total_minutes"."""
    before = json.loads((Path(init) / "config.json").read_text())["pretrain"]
    return {"init": before, "total_minutes": round(before.get("total_minutes", before["minutes"]) + summary["minutes"],
                                                   3)}


def pretrain_vit(out: str | Path, minutes: float, config: EyesConfig = EyesConfig(patch_size=7),
                 log: Callable[[str], None] | None = print, init: str | Path | None = None) -> dict:
    """Pre-train the tiny ViT on images and captions only, as CLIP is (no pointing, no question): the whole tiny
    Molmo of ``config`` learns to write every scene's dense caption (``scene_caption``) for ``minutes``; the ViT is
    saved to ``out`` (``clip_pretrain.save_encoder``; connector and LLM are thrown away) for ``vision_init``.
    init: a ViT saved by an earlier ``pretrain_vit`` to go on from (a longer pre-training in parts; connector and
    LLM start again). -> what it did (minutes, steps, the last caption loss; ``total_minutes`` with the parts
    before, whose summary is under "init")."""
    record = train_eyes(replace(config, caption_rate=1.0, vision_init=str(init) if init else None), minutes=minutes,
                        heldout=1, evals=0, log=log)
    summary = {"minutes": record["train_minutes"], "steps": record["steps"],
               "caption_loss": record["losses"][-1]["loss"], "config": asdict(config),
               "captions": caption_scores(record["model"], pointing_examples(100, 0, "heldout", config.scene_size,
                                                                              max_count=10))}
    if init:
        summary |= after_init(summary, init)
    save_encoder(record["model"].vision, Path(out), {"pretrain": summary})
    return summary


def noisy(image: np.ndarray, rng: np.random.Generator, max_sd: float) -> np.ndarray:
    """The image with Gaussian noise of a random sd (0..max_sd grey levels) on every pixel: an augmentation."""
    noise = rng.normal(0.0, rng.uniform(0.0, max_sd), image.shape)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def cell_classes(targets: torch.Tensor, grid: int) -> dict[str, torch.Tensor]:
    """``oracle.window_features`` [B, windows, cells * F] -> per cell (flattened [B * windows * cells]): "colour"
    (its object's colour, or len(COLOURS) when empty), "shape", "offset" [., 2], "row", "column" (grid indices),
    "occupied" (with objects shared across borders, ``cell_features(share=)``: at least half an object there)."""
    n_colour, n_shape = len(COLOURS), len(SHAPES)
    t = targets.reshape(-1, feature_size(grid))
    occupied = t[:, :n_colour].sum(-1) >= 0.5
    colour = torch.where(occupied, t[:, :n_colour].argmax(-1), torch.full_like(occupied, n_colour, dtype=torch.long))
    rows = n_colour + n_shape + 2
    return {"colour": colour, "shape": t[:, n_colour:n_colour + n_shape].argmax(-1),
            "offset": t[:, n_colour + n_shape:rows], "row": t[:, rows:rows + grid].argmax(-1),
            "column": t[:, rows + grid:].argmax(-1), "occupied": occupied}


def cell_head_size(grid: int) -> int:
    """Outputs per cell of ``pretrain_vit_cells``'s head: colour or empty, shape, offset (x, y), row, column."""
    return len(COLOURS) + 1 + len(SHAPES) + 2 + 2 * grid


def cell_losses(pred: torch.Tensor, targets: torch.Tensor, grid: int) -> dict[str, torch.Tensor]:
    """The terms of ``pretrain_vit_cells``'s objective, and its held-out scores: cross-entropy of the colour (or
    empty) of every cell, of the shape and squared error of the offset where a cell holds an object, cross-entropy of
    the row and column; with the accuracies (colour, shape on occupied cells; empty cells called empty) and the mean
    offset error in cells. Targets whose objects are shared across borders (``cell_features(share=)``) are soft: a
    cell holding w of a red object wants red with probability w and empty with 1 - w, and its shape and offset count
    with weight w (with whole objects, w is 0 or 1 and these are the plain cross-entropies and squared error)."""
    c = cell_classes(targets, grid)
    n_colour, n_shape = len(COLOURS), len(SHAPES)
    t = targets.reshape(len(c["colour"]), feature_size(grid))
    p = pred.reshape(len(c["colour"]), cell_head_size(grid))
    k = n_colour + 1
    colour, shape = p[:, :k], p[:, k:k + n_shape]
    offset, rest = p[:, k + n_shape:k + n_shape + 2], p[:, k + n_shape + 2:]
    mass = t[:, :n_colour]
    weight = mass.sum(-1).clamp(max=1.0)  # how much of an object the cell holds
    present = weight > 0
    colour_target = torch.cat([mass / mass.sum(-1, keepdim=True).clamp(min=1.0), 1 - weight[:, None]], 1)
    shape_target = t[present, n_colour:n_colour + n_shape] / weight[present, None]
    offset_target = t[present, n_colour + n_shape:n_colour + n_shape + 2] / weight[present, None]
    w = weight[present] / weight[present].sum()
    occ = c["occupied"]
    with torch.no_grad():
        scores = {"colour_acc": (colour.argmax(-1) == c["colour"])[occ].float().mean(),
                  "shape_acc": (shape.argmax(-1) == c["shape"])[occ].float().mean(),
                  "empty_acc": (colour.argmax(-1) == k - 1)[~occ].float().mean(),
                  "offset_error": (offset[present] - offset_target)[weight[present] >= 0.5].abs().mean()}
    return {"colour": F.cross_entropy(colour, colour_target),
            "shape": (w * F.cross_entropy(shape[present], shape_target, reduction="none")).sum(),
            "offset": (w * ((offset[present] - offset_target) ** 2).mean(-1)).sum(),
            "position": F.cross_entropy(rest[:, :grid], c["row"]) + F.cross_entropy(rest[:, grid:], c["column"])
            } | scores


MAX_OBJECTS = 24  # ``claim_targets``' rows: more than chapter 07's scenes hold (10 of a class and 6 others)


def claim_targets(objects: Sequence[SceneObject], max_objects: int = MAX_OBJECTS) -> np.ndarray:
    """A scene's objects for ``claim_losses`` -> float32 [max_objects, 5]: present (1 / 0 for padding), colour and
    shape index, centre x and y (Molmo's 0-100 units)."""
    if len(objects) > max_objects:
        raise ValueError(f"{len(objects)} objects, more than max_objects={max_objects}")
    t = np.zeros((max_objects, 5), np.float32)
    for k, o in enumerate(objects):
        t[k] = (1, list(COLOURS).index(o.colour), SHAPES.index(o.shape), o.x, o.y)
    return t


def claim_cells(objects: torch.Tensor, grid: int, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The cells that may claim each object (``claim_losses``): those whose square, widened by ``margin`` cells on
    every side, holds its centre -> cell indices long [B, M, 4] (raster order) and which of the four are real
    bool [B, M, 4] (one cell far from any border, two near one, four near a corner)."""
    u, v = objects[..., 3] / 100 * grid, objects[..., 4] / 100 * grid
    lo_j, hi_j = ((u - margin).floor().clamp(0, grid - 1).long(), (u + margin).floor().clamp(0, grid - 1).long())
    lo_i, hi_i = ((v - margin).floor().clamp(0, grid - 1).long(), (v + margin).floor().clamp(0, grid - 1).long())
    present = objects[..., 0] > 0
    cells = torch.stack([lo_i * grid + lo_j, lo_i * grid + hi_j, hi_i * grid + lo_j, hi_i * grid + hi_j], -1)
    real = torch.stack([present, present & (hi_j != lo_j), present & (hi_i != lo_i),
                        present & (hi_i != lo_i) & (hi_j != lo_j)], -1)
    return cells, real


def claim_losses(pred: torch.Tensor, objects: torch.Tensor, grid: int, margin: float) -> dict[str, torch.Tensor]:
    """The cell objective without a border to decide (``pretrain_vit_cells(margin=)``), one cell per patch: pred
    [B, grid^2, cell_head_size] (the head's outputs per cell), objects [B, M, 5] (``claim_targets``). An object
    whose centre lies within ``margin`` cells of a border may be claimed by the cell on either side (by any of four
    near a corner): the term "claim" is -log P(exactly one of its cells says its colour), the others say anything
    else; the cell that claims it owes its shape and its offset from that cell's middle (weighted by how likely it
    is the claimer). Cells no object may claim must say "empty"; a cell that may claim says "empty" or one of its
    objects' colours ("colour"). Row and column as ``cell_losses``. Scores: the share of objects claimed exactly
    once, by none ("missed"), by two or more ("double"), and of cells claiming what none of their objects is
    ("phantom")."""
    n_colour, n_shape = len(COLOURS), len(SHAPES)
    b, cells_n, _ = pred.shape
    k = n_colour + 1
    logp = F.log_softmax(pred[..., :k], -1)  # [B, C, colours + empty]
    cells, real = claim_cells(objects, grid, margin)
    colour, shape = objects[..., 1].long(), objects[..., 2].long()
    batch = torch.arange(b)[:, None, None]
    q = logp[batch, cells, colour[..., None].expand_as(cells)].exp() * real  # P(cell says the object's colour)
    alone = torch.stack([torch.stack([1 - q[..., j] for j in range(4) if j != i], -1).prod(-1) for i in range(4)], -1)
    one = (q * alone).sum(-1)  # P(exactly one of its cells claims it)
    present = objects[..., 0] > 0
    claim = -(one[present] + 1e-6).log().mean()
    allowed = torch.zeros(b, cells_n, k, dtype=torch.bool)
    allowed[..., n_colour] = True
    flat = allowed.view(-1)
    index = (torch.arange(b)[:, None, None] * cells_n + cells) * k + colour[..., None]
    flat[index[real]] = True
    colour_term = -(logp.masked_fill(~allowed, -torch.inf).logsumexp(-1)).mean()
    responsibility = (q * alone / (one[..., None] + 1e-6)).detach() * real  # [B, M, 4]
    weight = responsibility[present] / present.sum()
    head = pred[batch, cells]  # [B, M, 4, H]
    shape_ce = F.cross_entropy(head[..., k:k + n_shape].reshape(-1, n_shape),
                               shape[..., None].expand_as(cells).reshape(-1), reduction="none").view(cells.shape)
    u, v = objects[..., 3] / 100 * grid, objects[..., 4] / 100 * grid
    target = torch.stack([u[..., None] - (cells % grid) - 0.5, v[..., None] - (cells // grid) - 0.5], -1)
    offset_se = ((head[..., k + n_shape:k + n_shape + 2] - target) ** 2).mean(-1)
    rest = pred[..., k + n_shape + 2:].reshape(-1, 2 * grid)
    position = torch.arange(cells_n).repeat(b)
    with torch.no_grad():
        said = logp.argmax(-1)  # [B, C]
        claims = ((said[batch, cells] == colour[..., None]) & real).sum(-1)[present]
        phantom = (said < n_colour) & ~allowed.gather(-1, said[..., None]).squeeze(-1)
        scores = {"claimed_once": (claims == 1).float().mean(), "missed": (claims == 0).float().mean(),
                  "double": (claims > 1).float().mean(), "phantom": phantom.float().mean()}
    return {"colour": colour_term + claim, "shape": (weight * shape_ce[present]).sum(),
            "offset": (weight * offset_se[present]).sum(),
            "position": F.cross_entropy(rest[:, :grid], position // grid) + F.cross_entropy(rest[:, grid:],
                                                                                            position % grid)
            } | scores


def pretrain_vit_cells(out: str | Path, minutes: float, config: EyesConfig = EyesConfig(patch_size=7, max_crops=1),
                       batch_size: int = 64, lr: float = 1e-3, noise: float = 0.0, init: str | Path | None = None,
                       pool_size: int = 4096, fresh: int = 16, pooling: bool = False, share: float = 0.0,
                       margin: float = 0.0, init_head: bool = False,
                       log: Callable[[str], None] | None = print) -> dict:
    """Pre-train the tiny ViT to say what is in each of its cells: the mean of its features (the two layers the
    connector reads) over each 2 x 2 window of patches, through a linear head, must give what the oracle knows of
    the window's four cells (``oracle.window_features``): the colour of the object centred there or "empty", its
    shape and offset, the cell's row and column (``cell_losses``). Molmo's connector pools those windows, so each cell's
    content has to survive the pooling: the objective asks for it directly, where a caption asks through an LLM.
    Scenes are chapter 07's (a seed stream of their own), seen as the connector sees them (``config``'s
    preprocessor's overview crop); ``noise``: Gaussian pixel noise up to that sd on half the scenes, drawn anew at
    each use. Drawing a scene costs as much as the ViT's step on it, so a step samples ``batch_size`` scenes from a
    pool of ``pool_size`` and replaces ``fresh`` of them with new ones (each scene is seen about batch_size / fresh
    times). pooling: the head reads the window through Molmo's attention pooling (the connector's feature
    normalisation and ``AttentionPool``, trained with the ViT) instead of the mean, so that the pooled vector itself
    must keep the four cells apart; the pooling is saved beside the ViT (``POOLING_FILE``, for
    ``EyesConfig.pooling_init``). init_head: the head starts as the one saved beside ``init`` (else from random, as
    most shipped ViTs' pre-trainings did). share: the cells' targets without hard borders
    (``oracle.cell_features(share=)``, soft targets in ``cell_losses``). margin (one cell per patch, pooling 1 x 1):
    no border to decide, an object within ``margin`` cells of one may be claimed by the cell on either side
    (``claim_losses``). The ViT is saved to ``out`` (``save_encoder``) and its head beside it (``CELL_HEAD_FILE``,
    for ``EyesConfig.cell_decisions``). ->
    what it did, with held-out scores per cell (and with a margin, ``reader_ceiling``: pointing and counting by a
    perfect reader of the head's decisions)."""
    torch.manual_seed(config.seed)
    cfg = config.molmo_config()
    vision = load_encoder(Path(init)) if init else MolmoLite.from_parts(cfg).vision
    processor = MolmoImageProcessor.from_config(cfg.preprocessor)
    grid, pool = config.crop_size // config.patch_size, config.pooling[0]
    if margin and (pool != 1 or pooling or share):
        raise ValueError("margin claims one cell per patch: pooling (1, 1), without --pooling or share")

    def targets_of(objects: Sequence[SceneObject]) -> np.ndarray:
        return claim_targets(objects) if margin else window_features(objects, grid, pool, share)

    def losses(pred: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return claim_losses(pred, targets, grid, margin) if margin else cell_losses(pred, targets, grid)

    width = cfg.connector.pool_dim if pooling else vision.config.width * len(vision.config.feature_layers)
    head = torch.nn.Linear(width, pool * pool * cell_head_size(grid))
    if init_head:
        head.load_state_dict(load_file(str(Path(init) / CELL_HEAD_FILE)))
    connector = Connector(cfg.connector) if pooling else None  # its normalisation and attention pooling
    params = list(vision.parameters()) + list(head.parameters()) + (list(connector.pool.parameters()) if pooling
                                                                      else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(split_seed(config.seed + 1, "train"))  # not the stream of stage 2's scenes

    def scene() -> tuple[np.ndarray, np.ndarray]:
        ex = pointing_example(rng, size=config.scene_size, max_count=config.max_count,
                              max_distractors=config.max_distractors)
        return np.asarray(ex.image), targets_of(ex.meta["objects"])

    def batch(scenes: Sequence[tuple[np.ndarray, np.ndarray]], augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images = [im if not (augment and noise and rng.random() < 0.5) else noisy(im, rng, noise) for im, _ in scenes]
        crops = torch.stack([processor(im).crops[0] for im in images])  # the overview: the whole scene at crop size
        return crops, torch.from_numpy(np.stack([t for _, t in scenes]))

    def predict(crops: torch.Tensor) -> torch.Tensor:
        f = vision.features(crops)  # [B, grid^2, 2W]
        b, _, d = f.shape
        windows = f.reshape(b, grid // pool, pool, grid // pool, pool, d).transpose(2, 3)
        if not pooling:
            return head(windows.mean((3, 4)).reshape(b, -1, d))
        pooled = connector.pool(connector.normalize(windows.reshape(-1, pool * pool, d)))  # [B * windows, pool_dim]
        return head(pooled.reshape(b, -1, pooled.shape[-1]))

    held = pointing_examples(200, 0, "heldout", config.scene_size, max_count=10)
    held_crops, held_targets = batch([(np.asarray(ex.image), targets_of(ex.meta["objects"])) for ex in held],
                                     augment=False)
    start, steps, history = time.perf_counter(), 0, []
    scenes = [scene() for _ in range(pool_size)]  # counted in the minutes
    while time.perf_counter() - start < minutes * 60:
        progress = (time.perf_counter() - start) / (minutes * 60)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (steps + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        for k in rng.choice(pool_size, size=fresh, replace=False):
            scenes[k] = scene()
        crops, targets = batch([scenes[k] for k in rng.choice(pool_size, size=batch_size, replace=False)], True)
        terms = losses(predict(crops), targets)
        loss = terms["colour"] + terms["shape"] + 10 * terms["offset"] + 0.1 * terms["position"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        history.append(loss.item())
        if log and steps % 200 == 0:
            scores = ("claimed once", "claimed_once") if margin else ("colour", "colour_acc")
            log(f"step {steps}  {(time.perf_counter() - start) / 60:.1f} min  loss {np.mean(history[-200:]):.4f}  "
                f"{scores[0]} {terms[scores[1]]:.3f}")
    with torch.no_grad():
        held_terms = losses(predict(held_crops), held_targets)
    summary = {"objective": "cells", "minutes": round((time.perf_counter() - start) / 60, 3), "steps": steps,
               "batch_size": batch_size, "lr": lr, "noise": noise, "pool_size": pool_size, "fresh": fresh,
               "scenes_drawn": pool_size + steps * fresh, "pooling": pooling,
               "loss": float(np.mean(history[-100:])) if history else None,  # None: no step in the minutes
               "share": share, "margin": margin, "init_head": init_head,
               "heldout": {k: round(float(v), 4) for k, v in held_terms.items()}, "config": asdict(config)}
    if margin:  # one claim per object: what a perfect reader of the head's decisions would score held out
        reader = MolmoLite.from_parts(replace(config, cell_decisions=True).molmo_config(), vision=vision).eval()
        reader.connector.decide.head.load_state_dict(head.state_dict())
        summary["reader_ceiling"] = {k: v for k, v in reader_ceiling(reader, held).items() if k != "by_count"}
    if log:
        log(f"pretrain_vit_cells: {summary}")
    if init:
        summary |= after_init(summary, init)
    save_encoder(vision, Path(out), {"pretrain": summary})
    save_file(head.state_dict(), str(Path(out) / CELL_HEAD_FILE))
    if pooling:
        save_file(connector.pool.state_dict(), str(Path(out) / POOLING_FILE))
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m molmo_lite.pointing_only --out DIR --minutes M [--objective caption|cells] [--patch-size 7]
    [--scene-size 56] [--max-crops 4] [--crop-mode resize] [--pool 1] [--noise SD] [--init DIR] [--pooling]
    [--share S] [--margin M] [--init-head] [--lr LR]``:
    ``pretrain_vit`` (captions) or ``pretrain_vit_cells`` (what is in each cell)."""
    import argparse

    parser = argparse.ArgumentParser(description="Pre-train the tiny ViT of the eyes harness and save it.")
    parser.add_argument("--out", required=True, help="the folder to write the ViT to")
    parser.add_argument("--minutes", type=float, default=20.0, help="training minutes (default 20)")
    parser.add_argument("--objective", choices=("caption", "cells"), default="caption",
                        help="caption: the whole tiny Molmo writes dense captions (pretrain_vit); cells: the ViT's "
                             "pooled features say what is in each cell (pretrain_vit_cells)")
    parser.add_argument("--patch-size", type=int, default=7, help="the ViT's patch size (default 7)")
    parser.add_argument("--scene-size", type=int, default=56, help="the scenes' side in pixels (default 56)")
    parser.add_argument("--max-crops", type=int, default=4, help="the preprocessor's max_crops (default 4)")
    parser.add_argument("--crop-mode", choices=("overlap-and-resize", "resize"), default="overlap-and-resize",
                        help="the preprocessor's crop_mode (resize: the overview alone)")
    parser.add_argument("--pool", type=int, default=2, help="the connector's pooling window side (default 2)")
    parser.add_argument("--noise", type=float, default=0.0, help="cells: pixel noise sd on half the scenes")
    parser.add_argument("--init", help="a ViT folder of an earlier pre-training to go on from")
    parser.add_argument("--share", type=float, default=0.0,
                        help="cells: objects within this many cells of a border shared with the cell across it")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="cells, --pool 1: an object within this many cells of a border may be claimed by the "
                             "cell on either side (claim_losses)")
    parser.add_argument("--init-head", action="store_true", help="cells: the head starts as --init's")
    parser.add_argument("--lr", type=float, default=1e-3, help="cells: the peak learning rate (default 1e-3)")
    parser.add_argument("--pooling", action="store_true",
                        help="cells: the head reads Molmo's attention pooling (trained too, saved beside the ViT)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    config = EyesConfig(patch_size=args.patch_size, scene_size=args.scene_size, max_crops=args.max_crops,
                        crop_mode=args.crop_mode, pooling=(args.pool, args.pool))
    if args.objective == "cells":
        print(pretrain_vit_cells(args.out, args.minutes, config, noise=args.noise, init=args.init, lr=args.lr,
                                 pooling=args.pooling, share=args.share, margin=args.margin,
                                 init_head=args.init_head))
    else:
        print(pretrain_vit(args.out, args.minutes, config, init=args.init))


if __name__ == "__main__":
    main()

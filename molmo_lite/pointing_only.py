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
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .clip_pretrain import load_encoder, save_encoder
from .config import MOLMO_PRESETS, MolmoConfig
from .data.corpus import scene_text
from .data.examples import Example, split_seed
from .data.synthetic import SHIFT_BACKGROUNDS, pointing_example, pointing_examples, shifted_pointing_examples
from .evaluate import generate_in_batches, shuffled_images
from .model import MolmoLite
from .oracle import (
    annotation,
    backward_in_chunks,
    build_optimizer,
    loss_of,
    right_padded,
    score_answers,
    timed_training,
)
from .preprocessing import ImageInputs, batch_images
from .prompts import IGNORE_INDEX, Message, format_messages, generation_prompt_ids


@dataclass(frozen=True)
class EyesConfig:
    """One run: the image path's geometry inside Molmo's design (the tiny preset's unless changed), the recipe (the
    oracle's o16 by default) and the scenes.

    scene_size: the rendered scene's side in pixels. crop_size, patch_size, max_crops, overlap_margins, pooling: the
    preprocessor's (the ViT's image and patch size follow). vit_width, vit_layers: the tiny ViT's. lr_vit,
    lr_connector: their learning rates (the LLM's is ``lr``); 0 freezes that part. caption_rate: the share of
    training rows that ask for a dense caption (every object, its colour, shape and position: ``scene_caption``)
    instead of one of the scene's ``annotations``; Molmo's stage 1 captions say what is where in words.
    vision_init: a ViT folder to start from (its geometry must be this config's), as Molmo starts from CLIP.
    scene_sizes: when given, each training scene is drawn at one of these sides picked at random (Molmo trains on
    images of many resolutions: a 112 px scene becomes the overview and 2 x 2 crops of 56 px); held-out scenes keep
    scene_size.
    """

    scene_size: int = 56
    crop_size: int = 56
    patch_size: int = 14
    max_crops: int = 4
    overlap_margins: tuple[int, int] = (1, 1)
    pooling: tuple[int, int] = (2, 2)
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
    seed: int = 0

    def molmo_config(self) -> MolmoConfig:
        """The tiny preset with this geometry: the ViT's size follows the crops, the connector's input the ViT."""
        tiny = MOLMO_PRESETS["tiny"]
        pre = replace(tiny.preprocessor, crop_size=self.crop_size, patch_size=self.patch_size,
                      max_crops=self.max_crops, overlap_margins=self.overlap_margins, pooling=self.pooling)
        vision = replace(tiny.vision, image_size=self.crop_size, patch_size=self.patch_size, width=self.vit_width,
                         layers=self.vit_layers, mlp_width=4 * self.vit_width)
        connector = replace(tiny.connector, input_dim=vision.feature_dim, pool_dim=self.vit_width)
        return replace(tiny, preprocessor=pre, vision=vision, connector=connector,
                       question_first=self.question_first)


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


def train_eyes(config: EyesConfig, minutes: float | None = None, steps: int | None = None, heldout: int = 200,
               evals: int = 5, log: Callable[[str], None] | None = print, threads: int | None = None) -> dict:
    """Train the whole tiny Molmo on pointing and counting for ``minutes`` of training time (drawing the scenes and
    preprocessing them counted; evaluations not) or a number of ``steps``; -> a JSON-able record as
    ``oracle.train_oracle``'s (config, curve on the first 100 held-out scenes, final scores on all, the shuffled
    control, steps/s), with the model under "model"."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    vision = load_encoder(Path(config.vision_init)) if config.vision_init else None
    model = MolmoLite.from_parts(config.molmo_config(), vision=vision)
    optimizers = build_optimizer(model, config, {"vision.": config.lr_vit, "connector.": config.lr_connector})
    rng = np.random.default_rng(split_seed(config.seed, "train"))
    held = pointing_examples(heldout, 0, "heldout", config.scene_size, max_count=10)  # chapter 07's held-out scenes
    during = held[:min(len(held), 100)]
    start = time.perf_counter()

    def step_fn(progress: float) -> tuple[torch.Tensor, int]:
        examples = [pointing_example(rng, size=int(rng.choice(config.scene_sizes)) if config.scene_sizes
                                     else config.scene_size, max_count=config.max_count,
                                     max_distractors=config.max_distractors) for _ in range(config.batch_size)]
        which = [int(k) for k in rng.choice(config.annotations, size=len(examples))]
        if config.caption_rate:
            which = [CAPTION if rng.random() < config.caption_rate else k for k in which]
        batch = build_batch(model, examples, which, model.prepare_images([ex.image for ex in examples]), rng)
        loss = backward_in_chunks(batch, config.micro_batches, lambda part: forward(model, part))
        return loss, int(batch["targets"].ne(IGNORE_INDEX).sum())

    trained = timed_training(model, optimizers, config, step_fn, lambda: evaluate_eyes(model, during), minutes,
                             steps, evals, log)
    final = evaluate_eyes(model, held)
    shuffled = evaluate_eyes(model, during, shuffled=True)
    shifted = evaluate_shift(model, shifted_pointing_examples(len(held), 0))
    shifted_56 = evaluate_shift(model, shifted_pointing_examples(len(held), 0, size=56))  # the renderer alone
    return {"config": asdict(config)} | trained | {
        "wall_minutes": round((time.perf_counter() - start) / 60, 2), "heldout": len(held), "final": final,
        "shuffled": {k: shuffled[k] for k in ("pointing_f1", "counting_exact")}, "shift": shifted,
        "shift_56px": {k: shifted_56[k] for k in ("pointing_f1", "counting_exact", "by_background")},
        "image_tokens": sum(t == "<im_patch>" for t in model.processor(held[0].image).tokens), "model": model}


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
        before = json.loads((Path(init) / "config.json").read_text())["pretrain"]
        summary |= {"init": before, "total_minutes": round(before.get("total_minutes", before["minutes"])
                                                         + summary["minutes"], 3)}
    save_encoder(record["model"].vision, Path(out), {"pretrain": summary})
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m molmo_lite.pointing_only --out DIR --minutes M [--patch-size 7] [--scene-size 56] [--init DIR]``:
    ``pretrain_vit``."""
    import argparse

    parser = argparse.ArgumentParser(description=pretrain_vit.__doc__)
    parser.add_argument("--out", required=True, help="the folder to write the ViT to")
    parser.add_argument("--minutes", type=float, default=20.0, help="training minutes (default 20)")
    parser.add_argument("--patch-size", type=int, default=7, help="the ViT's patch size (default 7)")
    parser.add_argument("--scene-size", type=int, default=56, help="the scenes' side in pixels (default 56)")
    parser.add_argument("--init", help="a ViT folder of an earlier pre-training to go on from")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print(pretrain_vit(args.out, args.minutes, EyesConfig(patch_size=args.patch_size, scene_size=args.scene_size),
                       init=args.init))


if __name__ == "__main__":
    main()

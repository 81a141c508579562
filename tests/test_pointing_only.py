"""The eyes harness (molmo_lite.pointing_only): the question-first layout through MolmoLite, the geometry of the
image path, the optimiser's groups, and a short run whose true images beat shuffled ones."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from molmo_lite.config import IMAGE_TOKENS, MOLMO_PRESETS
from molmo_lite.data.synthetic import pointing_example, pointing_examples
from molmo_lite.model import MolmoLite
from molmo_lite.oracle import build_optimizer, window_features
from molmo_lite.data.synthetic import SceneObject
from molmo_lite.data.examples import Example
from molmo_lite.pointing_only import (
    CAPTION,
    EyesConfig,
    annotation_of,
    answer_loss,
    build_batch,
    build_model,
    caption_scores,
    cell_classes,
    cell_head_size,
    cell_losses,
    cell_mistakes,
    claim_losses,
    claim_targets,
    claimed_cells,
    pretrain_vit_cells,
    train_eyes,
)
from molmo_lite.prompts import generation_prompt_ids
from molmo_lite.tokenizer import MolmoTokenizer

REPO = Path(__file__).resolve().parents[1]


def test_question_first_puts_the_image_between_question_and_answer():
    tok = MolmoTokenizer.tiny()
    image = [IMAGE_TOKENS[0], IMAGE_TOKENS[2], IMAGE_TOKENS[2], IMAGE_TOKENS[1]]
    prompt = " User: Point to the red circles. Assistant:"
    image_ids = [tok.token_to_id(t) for t in image]
    first = generation_prompt_ids(tok, prompt, image, question_first=True)
    assert first == [tok.bos_id] + tok.encode(" User: Point to the red circles.") + image_ids + tok.encode(
        " Assistant:")
    assert generation_prompt_ids(tok, prompt, image) == [tok.bos_id] + image_ids + tok.encode(prompt)  # Molmo's
    assert generation_prompt_ids(tok, prompt, (), question_first=True) == [tok.bos_id] + tok.encode(prompt)
    caption = generation_prompt_ids(tok, " long_caption 65:", image, question_first=True)  # no " Assistant:"
    assert caption == [tok.bos_id] + tok.encode(" long_caption 65:") + image_ids


def test_question_first_is_saved_with_the_model_and_used_by_generate(tmp_path):
    torch.manual_seed(0)
    model = MolmoLite(replace(MOLMO_PRESETS["tiny"], question_first=True)).eval()
    model.save_pretrained(tmp_path)
    loaded = MolmoLite.from_pretrained(tmp_path).eval()
    assert loaded.config.question_first
    scene = pointing_example(np.random.default_rng(0))
    prompt = " User: Point to the red circles. Assistant:"
    seen = []
    loaded.llm.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"]),
                                         with_kwargs=True)
    loaded.generate(scene.image, prompt, max_new_tokens=1)
    inputs = loaded.processor(scene.image)
    ids = torch.tensor([generation_prompt_ids(loaded.tokenizer, prompt, inputs.tokens, question_first=True)])
    with torch.no_grad():
        from molmo_lite.preprocessing import batch_images

        b = batch_images([inputs])
        expected = loaded.embed(ids, loaded.image_features(b["crops"], b["pooled_patches_idx"],
                                                           b["patch_pad_fraction"]))
    torch.testing.assert_close(seen[0], expected)  # generate read the question before the image tokens


def test_eyes_geometry_inside_molmos_design():
    scene = pointing_examples(1, 0, "heldout", 56, max_count=10)[0]
    for fields, tokens in (({}, 8), ({"patch_size": 7}, 32), ({"patch_size": 7, "pooling": (1, 1)}, 128)):
        config = EyesConfig(**fields).molmo_config()
        assert (config.vision.image_size, config.vision.patch_size) == (56, fields.get("patch_size", 14))
        assert config.question_first and config.connector.input_dim == config.vision.feature_dim
        model = MolmoLite(config)
        assert sum(t == IMAGE_TOKENS[2] for t in model.processor(scene.image).tokens) == tokens


def test_optimizer_groups_per_part_and_frozen_parts():
    model = MolmoLite("tiny")
    config = EyesConfig(lr=1e-3)
    optimizers = build_optimizer(model, config, {"vision.": 0.0, "connector.": 5e-4})
    muon, adamw = optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    grouped = {id(p): g["base_lr"] for opt in optimizers for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if name.startswith("vision."):
            assert not p.requires_grad and id(p) not in grouped, name  # lr 0 freezes
        else:
            assert grouped[id(p)] == (5e-4 if name.startswith("connector.") else 1e-3), name
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert {id(p) for g in muon.param_groups for p in g["params"]} == {i for i in linear if i in grouped}


def test_build_batch_puts_the_loss_on_the_answer_only():
    model = MolmoLite(EyesConfig().molmo_config())
    scenes = pointing_examples(3, 0, "heldout", 56, max_count=10)
    batch = build_batch(model, scenes, [0, 1, 2], model.prepare_images([s.image for s in scenes]))
    tok = model.tokenizer
    for b, ex in enumerate(scenes):
        targets = batch["targets"][b]
        answer = ex.messages[b][0].answer
        assert tok.decode(targets[targets >= 0].tolist()) == " " + answer + tok.decode([tok.eos_id])
        assert int((batch["input_ids"][b] == tok.token_to_id(IMAGE_TOKENS[2])).sum()) == 8


def test_dense_caption_lists_every_object_in_raster_order():
    scene = pointing_examples(1, 0, "heldout", 56, max_count=10)[0]
    scene.meta["objects"] = [SceneObject("square", "blue", 80.0, 90.0, 4.0),
                             SceneObject("circle", "red", 58.2, 67.6, 3.0),
                             SceneObject("triangle", "green", 12.0, 70.0, 3.0)]
    prompt, answer = annotation_of(scene, CAPTION)
    assert prompt.startswith(" long_caption") and prompt.endswith(":")
    # rows of 12.5 units first (67.6 and 70.0 share row 5, then by x), then row 7
    assert answer == "green triangle 12.0 70.0; red circle 58.2 67.6; blue square 80.0 90.0"
    assert annotation_of(scene, 0)[1] == scene.messages[0][0].answer  # the scene's own annotations unchanged


def test_short_run_on_a_one_object_world_reads_the_images():
    """One object or none, nothing else, asked to point at it or count it: after a short run of the default recipe
    (the shipped ViT, frozen; connector and LLM from a random start) the answer loss with the true images is clearly
    below the loss with each question shown another scene's image (0.34 against 0.66 when calibrated; from a random
    ViT, 500 steps are not enough: 0.44 against 0.49). About a minute on 2 cores."""
    config = EyesConfig(patch_size=7, max_count=1, max_distractors=0, annotations=(0, 1), lr=2e-3, lr_connector=2e-3,
                        warmup=20, lr_vit=0.0, vision_init=str(REPO / "data_samples" / "backbones" / "vit_p7_dense"))
    record = train_eyes(config, steps=300, heldout=2, evals=1, log=None, threads=2)
    model = record["model"]
    scenes = [pointing_example(np.random.default_rng(1000 + k), max_count=1, max_distractors=0) for k in range(40)]
    true, shuffled = answer_loss(model, scenes), answer_loss(model, scenes, shuffled=True)
    assert true < 0.7 * shuffled, (true, shuffled)


def test_a_saved_vit_loads_and_a_damaged_one_fails_clearly(tmp_path):
    """What vision_init reads (a shipped backbone's format): it loads back equal; a truncated file and a file of
    another geometry fail with a ValueError that names the file and the fault."""
    from molmo_lite.clip_pretrain import load_encoder, save_encoder

    vit = MolmoLite(EyesConfig(patch_size=7).molmo_config()).vision
    save_encoder(vit, tmp_path / "vit", {"pretrain": {"minutes": 0}})
    again = load_encoder(tmp_path / "vit")
    assert all(torch.equal(a, b) for a, b in zip(vit.state_dict().values(), again.state_dict().values()))
    model = MolmoLite.from_parts(EyesConfig(patch_size=7).molmo_config(), vision=again)
    assert torch.equal(model.vision.positional_embedding, vit.positional_embedding)

    weights = tmp_path / "vit" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_encoder(tmp_path / "vit")
    other = MolmoLite(EyesConfig().molmo_config()).vision  # patches of 14: other shapes
    save_encoder(other, tmp_path / "other")
    (tmp_path / "vit" / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="do not fit"):
        load_encoder(tmp_path / "vit")


def test_the_docs_table_comes_from_the_benchmark_json():
    from benchmarks import oracle as oracle_benchmark
    from benchmarks import pointing_only as bench
    from benchmarks.common import page, readme_block

    result = json.loads(bench.OUT.read_text())
    assert readme_block("pointing_only", page("pointing_only")) == oracle_benchmark.table(result, bench.CONFIGS), \
        "rerun `python -m benchmarks.pointing_only --table`"
    for key, record in result.items():  # every record is a configuration that still runs by name
        assert record["name"] in bench.CONFIGS and key.startswith(record["name"])
    assert bench.DEFAULT in bench.CONFIGS
    for folder in bench.PRETRAINED:  # a shipped backbone is in the repository, with its pre-training's summary
        shipped = json.loads((bench.ROOT / folder / "config.json").read_text())
        assert shipped["pretrain"]["minutes"] > 5 and (bench.ROOT / folder / "model.safetensors").stat().st_size < 20e6
        assert ("--pooling" in bench.PRETRAINED[folder]) == (bench.ROOT / folder / "pooling.safetensors").exists()
    shipped = sum(f.stat().st_size for f in (bench.ROOT / "data_samples" / "backbones").rglob("*.safetensors"))
    assert shipped < 20e6, shipped  # all the course's shipped weights together


class WritesGiven:
    """A stand-in model whose captions are fixed text: the scoring alone is under test."""

    def __init__(self, texts):
        self.texts = list(texts)

    def eval(self):
        pass

    def train(self):
        pass

    def generate(self, images, prompts, max_new_tokens):
        out, self.texts = self.texts[:len(prompts)], self.texts[len(prompts):]
        return out


def test_caption_scores_count_an_object_found_only_with_its_colour_shape_and_place():
    scene = [SceneObject("circle", "red", 20.0, 20.0, 5), SceneObject("square", "blue", 60.0, 60.0, 5),
             SceneObject("triangle", "green", 80.0, 30.0, 5)]
    example = Example(np.zeros((56, 56, 3), np.uint8), [], "pointing", {"objects": scene})
    # red circle: 5 units off, a hit; blue square named twice (the second is a false entry); the green triangle
    # placed right but called yellow: placed, not found; one entry far from everything
    text = "red circle 23.0 24.0; blue square 61.0 60.0; blue square 60.0 61.0; yellow triangle 80.0 30.0; " \
           "red square 5.0 95.0"
    got = caption_scores(WritesGiven([text]), [example])
    assert got["precision"] == pytest.approx(2 / 5) and got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))
    assert got["placed"] == pytest.approx(1.0)
    far = caption_scores(WritesGiven(["red circle 30.0 20.0"]), [example])  # 10 units off: beyond the radius
    assert far["recall"] == 0 and far["placed"] == 0


def test_window_features_put_each_object_in_its_window_and_cell():
    """A red circle centred in cell (row 1, column 2) of the 8 x 8 grid sits in 2 x 2 window (0, 1), bottom-left
    cell of the four; a blue triangle in cell (7, 7) in window (3, 3), bottom-right. Every other cell is empty."""
    objects = [SceneObject("circle", "red", x=2.5 / 8 * 100, y=1.5 / 8 * 100, radius=4),
               SceneObject("triangle", "blue", x=7.2 / 8 * 100, y=7.9 / 8 * 100, radius=4)]
    targets = torch.from_numpy(window_features(objects, grid=8, pool=2))[None]
    assert targets.shape[:2] == (1, 16)
    c = cell_classes(targets, grid=8)
    occupied = c["occupied"].nonzero().flatten().tolist()
    assert occupied == [1 * 4 + 2, 15 * 4 + 3]  # window 1, cell 2 (bottom-left); window 15, cell 3 (bottom-right)
    from molmo_lite.data.synthetic import COLOURS, SHAPES

    assert c["colour"][occupied].tolist() == [list(COLOURS).index("red"), list(COLOURS).index("blue")]
    assert c["shape"][occupied].tolist() == [SHAPES.index("circle"), SHAPES.index("triangle")]
    assert (c["row"][occupied].tolist(), c["column"][occupied].tolist()) == ([1, 7], [2, 7])
    assert torch.allclose(c["offset"][occupied], torch.tensor([[0.0, 0.0], [-0.3, 0.4]]), atol=1e-5)
    assert (c["colour"][~c["occupied"]] == len(COLOURS)).all()  # the "empty" class


def test_cell_losses_are_the_plain_cross_entropies_on_whole_objects_and_soft_on_shared_ones():
    """With whole objects (share 0) the colour term is torch's cross-entropy against the hard class (empty = 8),
    the shape term the cross-entropy over occupied cells, the offset term their squared error. With an object on
    a border (share 0.2, half in each of two cells) the colour term is lowest when each of the two cells says
    "red" and "empty" half-and-half, not when one of them claims it whole."""
    from molmo_lite.data.synthetic import COLOURS, SHAPES

    objects = [SceneObject("circle", "red", 25.0, 6.25, 4), SceneObject("square", "blue", 81.0, 56.0, 4)]
    torch.manual_seed(0)
    pred = torch.randn(1, 64, cell_head_size(8))
    hard = torch.from_numpy(window_features(objects, 8, 1))[None]
    got, c = cell_losses(pred, hard, 8), cell_classes(hard, 8)
    p, k, occ = pred.reshape(64, -1), len(COLOURS) + 1, c["occupied"]
    assert occ.sum() == 2
    assert torch.allclose(got["colour"], torch.nn.functional.cross_entropy(p[:, :k], c["colour"]))
    assert torch.allclose(got["shape"], torch.nn.functional.cross_entropy(p[occ, k:k + len(SHAPES)], c["shape"][occ]))
    offset = p[occ, k + len(SHAPES):k + len(SHAPES) + 2]
    assert torch.allclose(got["offset"], ((offset - c["offset"][occ]) ** 2).mean())

    shared = torch.from_numpy(window_features(objects[:1], 8, 1, share=0.2))[None]  # x = 25.0: on the border
    red, empty = list(COLOURS).index("red"), len(COLOURS)

    def colour_loss(left: float) -> float:
        logits = torch.full((64, cell_head_size(8)), -20.0)
        logits[:, empty] = 20.0
        for cell, p_red in ((1, left), (2, 1 - left)):  # row 0, columns 1 and 2
            logits[cell, red], logits[cell, empty] = np.log(p_red + 1e-9), np.log(1 - p_red + 1e-9)
        return float(cell_losses(logits[None], shared, 8)["colour"])

    assert colour_loss(0.5) < colour_loss(0.0) - 0.01 and colour_loss(0.5) < colour_loss(1.0) - 0.01


def test_cell_mistakes_count_missed_objects_phantoms_and_where_the_misses_lie():
    """Eyes that call every cell empty miss every object (so the misses lie near borders as often as the objects
    do) and see no phantom; eyes that call every cell red miss nothing and make every empty cell a phantom."""
    from molmo_lite.data.synthetic import COLOURS

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1))
    model = build_model(config)
    held = pointing_examples(6, 0, "heldout", 56, max_count=10)

    def always(colour: int) -> dict:
        head = torch.nn.Linear(model.connector.config.input_dim, len(COLOURS) + 1)
        torch.nn.init.zeros_(head.weight)
        with torch.no_grad():
            head.bias.fill_(-1.0)
            head.bias[colour] = 1.0
        return {"heads": {"colour_head": head}}

    blind = cell_mistakes(model, config, always(len(COLOURS)), held, near=0.1)
    assert blind["objects"] == sum(len(ex.meta["objects"]) for ex in held) > 10
    assert blind["missed"] == 1.0 and blind["phantom"] == 0.0
    assert blind["missed_near_border"] == blind["near_border"] > 0
    red = cell_mistakes(model, config, always(0), held)
    assert red["missed"] == 0.0 and red["phantom"] == 1.0 and red["missed_border_distance"] is None


def test_claim_losses_accept_either_side_of_a_border_but_one_claim_only():
    """A red circle 0.05 cells right of the border between columns 1 and 2 (row 0), margin 0.15: column 1 or column
    2 may claim it. Either alone is claimed once with a low loss; both claiming is "double", neither "missed", each
    costing more; a far cell saying red is a phantom. The claimer owes the offset from its own middle."""
    from molmo_lite.data.synthetic import COLOURS, SHAPES

    objects = torch.from_numpy(claim_targets([SceneObject("circle", "red", (2.05) * 12.5, 6.25, 3)]))[None]
    k, red, circle = len(COLOURS) + 1, list(COLOURS).index("red"), SHAPES.index("circle")

    def says(cells: list[int], phantom: int | None = None, offset: float = 0.0) -> dict:
        pred = torch.full((1, 64, cell_head_size(8)), -8.0)
        pred[0, :, len(COLOURS)] = 8.0  # empty
        pred[0, :, k + circle] = 8.0
        pred[0, :, k + len(SHAPES)] = offset
        pred[0, :, k + len(SHAPES) + 1] = 0.0
        for c in cells + ([phantom] if phantom is not None else []):
            pred[0, c, red], pred[0, c, len(COLOURS)] = 8.0, -8.0
        return {key: float(v) for key, v in claim_losses(pred, objects, 8, 0.15).items()}

    left, right, both, neither = says([1]), says([2]), says([1, 2]), says([])
    assert left["claimed_once"] == right["claimed_once"] == 1.0 and both["double"] == 1.0 and neither["missed"] == 1.0
    assert max(left["colour"], right["colour"]) < 0.01 < min(both["colour"], neither["colour"])
    assert says([2], phantom=40)["phantom"] == 1 / 64 and left["phantom"] == 0.0
    assert says([1], offset=0.55)["offset"] < 1e-3 < says([1], offset=-0.45)["offset"]  # column 1's middle: 0.55 left
    assert says([2], offset=-0.45)["offset"] < 1e-3


def test_claimed_cells_put_each_object_in_one_cell_that_may_claim_it():
    """A red circle 0.05 cells right of a border lands in column 1 or 2 (both happen over 40 draws), whole, with its
    offset from that cell's middle; a blue square in the middle of a cell stays there; a tiny margin gives
    ``cell_features`` exactly."""
    from molmo_lite.oracle import cell_features

    objects = [SceneObject("circle", "red", 2.05 * 12.5, 6.25, 3), SceneObject("square", "blue", 5.5 * 12.5, 56.25, 3)]
    seen = set()
    for _ in range(40):
        f = claimed_cells(objects, 8, 0.15).reshape(8, 8, -1)
        column = int(f[0, :, 0].argmax())
        seen.add(column)
        assert f[0, column, 0] == 1 and f[..., 0].sum() == 1
        assert torch.isclose(f[0, column, 11], torch.tensor(2.05 - column - 0.5))
        assert f[4, 5, 2] == 1 and f[..., 2].sum() == 1  # blue, in its own cell
    assert seen == {1, 2}
    torch.testing.assert_close(claimed_cells(objects, 8, 1e-6), torch.from_numpy(cell_features(objects, 8)))


def test_cell_decisions_give_the_oracles_form_and_are_saved_with_the_model(tmp_path):
    """cell_decisions load the head saved beside the ViT into the connector: a head that calls every cell a red
    triangle 0.2 cells right of its middle gives every patch red's and triangle's one-hots, that offset and the
    patch's own row and column, as ``cell_features`` writes them for a red triangle in every cell; a head that calls
    every cell empty gives the empty scene's features. The head is frozen in training, and a saved model reads
    images as before once loaded."""
    from safetensors.torch import save_file

    from molmo_lite.clip_pretrain import save_encoder
    from molmo_lite.data.synthetic import COLOURS, SHAPES
    from molmo_lite.oracle import cell_features
    from molmo_lite.pointing_only import CELL_HEAD_FILE

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0, cell_decisions=True,
                        vision_init=str(tmp_path / "vit"))
    vit = build_model(EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1))).vision
    save_encoder(vit, tmp_path / "vit", {})
    k = len(COLOURS) + 1
    red, triangle = list(COLOURS).index("red"), SHAPES.index("triangle")
    everywhere = [SceneObject("triangle", "red", (j + 0.7) * 12.5, (i + 0.5) * 12.5, 2)
                  for i in range(8) for j in range(8)]
    image = pointing_examples(1, 0, "heldout", 56)[0].image
    for says, want in ((red, cell_features(everywhere, 8)), (len(COLOURS), cell_features([], 8))):
        bias = torch.full((cell_head_size(8),), -5.0)
        bias[says], bias[k + triangle] = 5.0, 5.0
        bias[k + len(SHAPES):k + len(SHAPES) + 2] = torch.tensor([0.2, 0.0])
        save_file({"weight": torch.zeros(cell_head_size(8), vit.config.width * 2), "bias": bias},
                  str(tmp_path / "vit" / CELL_HEAD_FILE))
        model = build_model(config)
        with torch.no_grad():
            got = model.connector.decide(model.vision.features(model.processor(image).crops))
        assert got.shape == (1, 64, want.shape[1])
        torch.testing.assert_close(got[0], torch.from_numpy(want), atol=1e-5, rtol=0)
    build_optimizer(model, config, {"connector.decide.": 0.0})
    assert not any(p.requires_grad for p in model.connector.decide.parameters())
    model.save_pretrained(tmp_path / "model")
    loaded = MolmoLite.from_pretrained(tmp_path / "model")
    inputs = model.processor(image)
    with torch.no_grad():
        torch.testing.assert_close(loaded.image_features(inputs.crops, inputs.pooled_patches_idx),
                                   model.image_features(inputs.crops, inputs.pooled_patches_idx))


def test_reader_ceiling_scores_the_objects_the_cell_decisions_hand_on(tmp_path):
    """A head that calls every cell a red triangle at its middle decides 64 red triangles: a perfect reader asked for
    "red shapes" points at all 64 and counts 64, right for a scene whose truth is those 64 points, wrong for one
    of 3; the truth's objects are each found once, "twice" none. A head that calls every cell empty misses them
    all and counts 0."""
    from safetensors.torch import save_file

    from molmo_lite.clip_pretrain import save_encoder
    from molmo_lite.data.synthetic import COLOURS, SHAPES
    from molmo_lite.pointing_only import CELL_HEAD_FILE, reader_ceiling

    vit = build_model(EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1))).vision
    save_encoder(vit, tmp_path / "vit", {})
    scene = pointing_examples(1, 0, "heldout", 56)[0]
    image, messages = scene.image, scene.messages  # the messages only for score_answers' samples
    middles = [SceneObject("triangle", "red", (j + 0.5) * 12.5, (i + 0.5) * 12.5, 2) for i in range(8)
               for j in range(8)]
    full = Example(image, messages, "pointing", {"label": "red shapes", "points": [(o.x, o.y) for o in middles],
                                           "count": 64, "objects": middles})
    three = Example(image, messages, "pointing", {"label": "red shapes", "points": [(6.25, 6.25), (18.75, 6.25),
                                                                              (31.25, 6.25)],
                                            "count": 3, "objects": middles[:3]})
    k = len(COLOURS) + 1
    for says in (list(COLOURS).index("red"), len(COLOURS)):
        bias = torch.full((cell_head_size(8),), -5.0)
        bias[says], bias[k + SHAPES.index("triangle")] = 5.0, 5.0
        bias[k + len(SHAPES):k + len(SHAPES) + 2] = 0.0
        save_file({"weight": torch.zeros(cell_head_size(8), vit.config.width * 2), "bias": bias},
                  str(tmp_path / "vit" / CELL_HEAD_FILE))
        model = build_model(EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0,
                                       cell_decisions=True, vision_init=str(tmp_path / "vit")))
        got = reader_ceiling(model, [full, three])
        if says < len(COLOURS):
            assert got["counting_exact"] == 0.5 and got["objects"] == 67
            assert got["by_count"]["1-3"]["counting_exact"] == 0.0  # the scene of 3
            assert got["pointing_f1"] == pytest.approx((1 + 2 * 3 / 67) / 2)  # F1 1, then precision 3/64 recall 1
            assert got["per_object"] == {"missed": 0.0, "twice": 0.0, "wrong_shape": 0.0, "wrong_colour": 0.0}
            assert got["phantoms_per_scene"] == 61 / 2  # the second scene's truth has 3 of the 64 decided
        else:
            assert got["counting_exact"] == 0.0 and got["pointing_f1"] == 0.0
            assert got["per_object"]["missed"] == 1.0 and got["phantoms_per_scene"] == 0


def test_cell_pretraining_learns_from_the_pixels_and_saves_a_vit(tmp_path):
    """A minute of ``pretrain_vit_cells`` from a random ViT reads the pixels: on the held-out scenes the squared error
    of an object's offset in its cell is well below the offsets' own variance (the best guess without the image;
    0.047 against 0.083 when calibrated), the cross-entropy of each cell's colour-or-empty below the classes' own
    entropy (0.55 against 0.61 after a minute, 0.21 after 8), row and column far below 2 ln 8; the saved ViT loads
    into the harness."""
    from molmo_lite.clip_pretrain import load_encoder

    summary = pretrain_vit_cells(tmp_path / "vit", 1.0, pool_size=512, log=None)  # a small pool: more steps
    held = pointing_examples(200, 0, "heldout", 56, max_count=10)
    classes = cell_classes(torch.from_numpy(np.stack([window_features(ex.meta["objects"], 8, 2) for ex in held])), 8)
    share = torch.bincount(classes["colour"]).float() / len(classes["colour"])
    entropy = float(-(share[share > 0] * share[share > 0].log()).sum())
    variance = float(classes["offset"][classes["occupied"]].var(0).mean())
    assert summary["heldout"]["offset"] < 0.75 * variance, (summary["heldout"], variance)
    assert summary["heldout"]["colour"] < 0.95 * entropy, (summary["heldout"], entropy)
    assert summary["heldout"]["position"] < 0.5 * 2 * np.log(8), summary["heldout"]
    vit = load_encoder(tmp_path / "vit")
    MolmoLite.from_parts(EyesConfig(patch_size=7, max_crops=1).molmo_config(), vision=vit)


def test_claim_pretraining_goes_on_from_a_saved_head_and_reports_the_readers_ceiling(tmp_path):
    """With a margin (one claim per object), the summary holds what a perfect reader of the head's decisions scores
    held out; init_head starts the head as the one saved beside --init (without training, it is saved unchanged),
    and without it the head starts afresh."""
    from safetensors.torch import load_file

    from molmo_lite.pointing_only import CELL_HEAD_FILE

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1))
    first = pretrain_vit_cells(tmp_path / "a", 0.05, config, pool_size=64, margin=0.15, log=None)
    assert set(first["reader_ceiling"]) >= {"pointing_f1", "counting_exact", "per_object", "phantoms_per_scene"}
    assert 0.0 <= first["reader_ceiling"]["counting_exact"] <= 1.0
    saved = load_file(str(tmp_path / "a" / CELL_HEAD_FILE))
    pretrain_vit_cells(tmp_path / "b", 0.0, config, pool_size=64, margin=0.15, init=tmp_path / "a", init_head=True,
                       log=None)
    torch.testing.assert_close(load_file(str(tmp_path / "b" / CELL_HEAD_FILE)), saved)
    pretrain_vit_cells(tmp_path / "c", 0.0, config, pool_size=64, margin=0.15, init=tmp_path / "a", log=None)
    assert not torch.equal(load_file(str(tmp_path / "c" / CELL_HEAD_FILE))["weight"], saved["weight"])


def test_questions_per_scene_ask_each_scene_different_questions():
    """asked: with q questions per scene each scene's q rows ask q different annotations (all three for q = 3); with
    q = 1 each row draws its own, so a row of 4 scenes shows repeats within 200 draws."""
    from molmo_lite.pointing_only import asked

    rng = np.random.default_rng(0)
    which = asked(rng, 50, 3, (0, 1, 2))
    assert len(which) == 150 and all(sorted(which[i:i + 3]) == [0, 1, 2] for i in range(0, 150, 3))
    pairs = asked(rng, 50, 2, (0, 1, 2))
    assert all(a != b for a, b in zip(pairs[::2], pairs[1::2]))
    single = [asked(rng, 4, 1, (0, 1, 2)) for _ in range(200)]
    assert any(len(set(rows)) < len(rows) for rows in single) and all(len(rows) == 4 for rows in single)
    with pytest.raises(ValueError, match="divide"):
        train_eyes(EyesConfig(batch_size=16, questions_per_scene=3), steps=1, heldout=1, log=None)


def test_a_scene_pool_draws_its_scenes_once_and_a_few_new_ones_per_step():
    """scene_pool 12, fresh_scenes 3, batches of 4: three steps draw 12 + 3 x 3 scenes (without a pool: 3 x 4)."""
    config = EyesConfig(patch_size=7, max_crops=1, batch_size=4, micro_batches=1, scene_pool=12, fresh_scenes=3,
                        lr_vit=0.0)
    assert train_eyes(config, steps=3, heldout=1, evals=0, log=None)["scenes_drawn"] == 12 + 3 * 3
    assert train_eyes(replace(config, scene_pool=0), steps=3, heldout=1, evals=0, log=None)["scenes_drawn"] == 12


def test_linear_projector_starts_the_swiglu_as_a_linear_map():
    """linear_projector: the pooled vector's last channel is a constant 1 (with 1 x 1 and 2 x 2 pooling) and the
    projector is linear in the pooled vectors, g(p + q - r) = g(p) + g(q) - g(r), where the default start is not;
    with one patch per token the whole connector is then linear in its input. Training can free the gate (w1 has
    gradients)."""
    from molmo_lite.pointing_only import linear_projector

    for pooling in ((1, 1), (2, 2)):
        config = EyesConfig(patch_size=7, crop_mode="resize", pooling=pooling, eyes="oracle")
        torch.manual_seed(0)
        connector = build_model(config).connector
        k = pooling[0] * pooling[1]
        x = torch.rand(3, 3, k, connector.config.input_dim)
        valid = torch.ones(3, k, dtype=torch.bool)
        g = connector.projector

        def curvature():
            p, q, r = (connector.pool(x[i], valid) for i in range(3))
            return (g(p + q - r) - g(p) - g(q) + g(r)).abs().max().item()

        assert curvature() > 1e-3
        linear_projector(connector, 0.35)
        assert curvature() < 1e-5
        torch.testing.assert_close(connector.pool(x[0], valid)[:, -1], torch.ones(3))
        if k == 1:  # the attention over one patch is linear too
            a, b = x[0], x[1]

            def f(v):
                return g(connector.pool(v, valid))

            assert (f(a + b) - f(a) - f(b) + f(torch.zeros_like(a))).abs().max().item() < 1e-5
        g(connector.pool(x[0], valid)).sum().backward()
        assert g.w1.weight.grad.abs().sum() > 0


def test_uniform_pooling_starts_as_the_windows_mean():
    """With a pre-trained ViT the default attention pooling starts peaked (largest weight well above 1/4);
    uniform_pooling starts every window at weights 1/4, its output the pooled mean of the values."""
    from molmo_lite.connector import gather_windows
    from molmo_lite.preprocessing import batch_images

    config = EyesConfig(patch_size=7, max_crops=1,
                        vision_init=str(REPO / "data_samples" / "backbones" / "vit_p7_cells"))
    scenes = pointing_examples(4, 0, "heldout", 56, max_count=10)
    for uniform in (False, True):
        torch.manual_seed(0)
        model = build_model(replace(config, uniform_pooling=uniform))
        images = batch_images(model.prepare_images([ex.image for ex in scenes]))
        with torch.no_grad():
            features = model.vision.features(images["crops"])
            windows, valid = gather_windows(features.reshape(-1, features.shape[-1]), images["pooled_patches_idx"])
            _, weights = model.connector.pool(windows, valid, return_weights=True)
        largest = float(weights.max(-1).values.mean())
        assert (abs(largest - 0.25) < 1e-6) if uniform else largest > 0.4, (uniform, largest)


def test_oracle_eyes_give_each_patch_its_cells_features_through_the_real_connector():
    """eyes="oracle": the connector reads, at every patch of the overview and of the crop, what the oracle knows of
    that patch's cell (patch (i, j) of 8 x 8 is cell (i, j)); a run trains and evaluates on them, the shift check
    included; more than one crop is refused (patch and cell would no longer coincide)."""
    from molmo_lite.oracle import cell_features
    from molmo_lite.pointing_only import OracleEyes, oracle_image

    config = EyesConfig(patch_size=7, max_crops=1, eyes="oracle", batch_size=4, micro_batches=1)
    model = build_model(config)
    assert isinstance(model.vision, OracleEyes)
    ex = pointing_examples(1, 0, "heldout", 56, max_count=10)[0]
    image = oracle_image(model, ex)
    cells = torch.from_numpy(cell_features(ex.meta["objects"], 8))
    assert image.crops.shape == (2, 64, cells.shape[1]) and torch.equal(image.crops[0], cells)
    assert torch.equal(image.crops[1], cells)
    out = model.image_features(image.crops, image.pooled_patches_idx, image.patch_pad_fraction)
    assert out.shape == (32, model.config.llm.hidden)
    record = train_eyes(config, steps=2, heldout=4, evals=0, log=None)
    assert record["image_tokens"] == 32 and 0 <= record["shift"]["pointing_f1"] <= 1
    with pytest.raises(ValueError, match="max_crops=1"):
        oracle_image(build_model(replace(config, max_crops=4)), pointing_examples(1, 0, "heldout", 112)[0])
    alone = oracle_image(build_model(replace(config, crop_mode="resize", pooling=(1, 1))), ex)  # e19's layout
    assert alone.crops.shape == (1, 64, cells.shape[1]) and torch.equal(alone.crops[0], cells)
    assert alone.tokens.count("<im_patch>") == 64 and alone.tokens.count("<im_start>") == 1


def test_slot_pooling_lists_the_windows_four_cells_side_by_side():
    """slot_pooling: head h takes the cell at (row parity, column parity) = divmod(h, 2) of each 2 x 2 window, with
    weight above 0.99, and passes its colour, shape and offset unchanged: the first 13 channels of head h's quarter
    of the pooled vector are those of the window's cell h in ``oracle.window_features`` (hand-placed objects)."""
    from molmo_lite.oracle import feature_size
    from molmo_lite.pointing_only import oracle_image

    model = build_model(EyesConfig(patch_size=7, max_crops=1, eyes="oracle", slot_pooling=True))
    objects = [SceneObject("circle", "red", 10.0, 10.0, 3.0), SceneObject("square", "blue", 20.0, 20.0, 3.0),
               SceneObject("triangle", "green", 80.0, 30.0, 3.0)]
    ex = Example(pointing_examples(1, 0, "heldout", 56)[0].image, [], "pointing", {"objects": objects})
    image = oracle_image(model, ex)
    pooled, weights = model.connector.pool_features(image.crops, image.pooled_patches_idx, return_weights=True)
    assert (weights.diagonal(dim1=1, dim2=2) > 0.99).all()
    windows = torch.from_numpy(window_features(objects, 8, 2))
    size, content, d = feature_size(8), 13, model.connector.pool.head_dim
    for h in range(4):
        assert torch.allclose(pooled[:16, h * d:h * d + content], windows[:, h * size:h * size + content], atol=1e-3)
    from molmo_lite.data.synthetic import COLOURS, SHAPES

    red, blue, square = list(COLOURS).index("red"), list(COLOURS).index("blue"), len(COLOURS) + SHAPES.index("square")
    assert pooled[0, red] > 0.99 and pooled[0, 3 * d + blue] > 0.99 and pooled[0, 3 * d + square] > 0.99
    assert pooled[0, blue] < 0.01 and pooled[0, 3 * d + red] < 0.01  # the two objects of window 0 kept apart
    with pytest.raises(ValueError, match="eyes='oracle'"):
        build_model(EyesConfig(patch_size=7, max_crops=1, slot_pooling=True))


def test_pooling_pretrained_with_the_vit_is_saved_and_loaded(tmp_path):
    """pretrain_vit_cells(pooling=True) saves its attention pooling beside the ViT; pooling_init loads it into the
    connector (equal weights) and lr_pool 0 freezes it while the projector trains."""
    from molmo_lite.pointing_only import POOLING_FILE
    from safetensors.torch import load_file

    summary = pretrain_vit_cells(tmp_path / "vit", 0.1, pool_size=64, fresh=8, batch_size=8, pooling=True, log=None)
    assert summary["pooling"] and summary["steps"] >= 1 and (tmp_path / "vit" / POOLING_FILE).exists()
    config = EyesConfig(patch_size=7, max_crops=1, vision_init=str(tmp_path / "vit"),
                        pooling_init=str(tmp_path / "vit"), lr_vit=0.0, lr_pool=0.0)
    model = build_model(config)
    saved = load_file(str(tmp_path / "vit" / POOLING_FILE))
    assert all(torch.equal(saved[k], v) for k, v in model.connector.pool.state_dict().items())
    groups = build_optimizer(model, config, {"vision.": 0.0, "connector.pool.": 0.0, "connector.": 1e-3})
    trained = {id(p) for opt in groups for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in trained for p in model.connector.pool.parameters())
    assert all(id(p) in trained for p in model.connector.projector.parameters())


def test_readout_pooling_starts_each_token_as_its_cells_estimated_description():
    """readout_pooling (one patch per token) fits, on fresh scenes, the linear map from the shipped per-cell ViT's
    features to ``oracle.cell_features``: on held-out scenes the pooled vector's colour channels name the colour of
    the object in the patch's cell for most occupied cells (chance 1/8), its channels past the cell features are 0;
    2 x 2 pooling is refused."""
    from molmo_lite.data.synthetic import COLOURS
    from molmo_lite.oracle import cell_features
    from molmo_lite.pointing_only import readout_pooling

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0,
                        vision_init=str(REPO / "data_samples" / "backbones" / "vit_p7_cell1"))
    model = build_model(config)
    assert readout_pooling(model, config, 64)["colour_acc"] > 0.8
    held = pointing_examples(20, 0, "heldout", 56, max_count=10)
    images = model.prepare_images([ex.image for ex in held])
    with torch.no_grad():
        pooled = torch.stack([model.connector.pool_features(model.vision.features(im.crops), im.pooled_patches_idx)
                              for im in images])  # [20, 64, pool_dim]
    truth = torch.from_numpy(np.stack([cell_features(ex.meta["objects"], 8) for ex in held]))
    occupied = truth[..., :len(COLOURS)].sum(-1) > 0
    named = pooled[..., :len(COLOURS)].argmax(-1) == truth[..., :len(COLOURS)].argmax(-1)
    assert named[occupied].float().mean() > 0.8
    assert pooled[..., truth.shape[-1]:].abs().max() < 1e-6
    with pytest.raises(ValueError, match="pooling"):
        readout_pooling(build_model(EyesConfig(patch_size=7)), EyesConfig(patch_size=7), 4)


def test_head_pooling_starts_each_token_as_the_vits_own_head_standardised():
    """head_pooling starts the 1 x 1 pooling as the cell head saved beside the shipped claim ViT: on held-out scenes
    each of the pooled vector's first channels is an increasing affine function of the head's output (applied here
    to the ViT's features directly), near zero mean and unit variance, the channels past the head's are 0. The
    head reads raw features: head_init turns the connector's feature normalisation off, and a connector that
    normalises is refused."""
    from safetensors.torch import load_file

    from molmo_lite.pointing_only import CELL_HEAD_FILE, head_pooling

    folder = REPO / "data_samples" / "backbones" / "vit_p7_claim"
    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0, vision_init=str(folder),
                        head_init=64)
    model = build_model(config)
    assert model.connector.config.feature_norm == 0
    head_pooling(model, config, 64)
    weights = load_file(str(folder / CELL_HEAD_FILE))
    n = weights["weight"].shape[0]
    held = pointing_examples(20, 0, "heldout", 56, max_count=10)
    images = model.prepare_images([ex.image for ex in held])
    with torch.no_grad():
        features = torch.cat([model.vision.features(im.crops) for im in images])  # [20, 64, input_dim]
        pooled = torch.cat([model.connector.pool_features(f[None], im.pooled_patches_idx)
                            for f, im in zip(features, images)])
    z = features.reshape(-1, features.shape[-1]) @ weights["weight"].T + weights["bias"]
    for c in range(n):
        slope, intercept = np.polyfit(z[:, c].numpy(), pooled[:, c].numpy(), 1)
        assert slope > 0
        np.testing.assert_allclose(pooled[:, c].numpy(), slope * z[:, c].numpy() + intercept, atol=1e-3)
    assert pooled[:, :n].mean(0).abs().max() < 0.3 and ((pooled[:, :n].std(0) - 1).abs() < 0.3).all()
    assert pooled[:, n:].abs().max() < 1e-6
    with pytest.raises(ValueError, match="feature_norm"):
        head_pooling(build_model(replace(config, head_init=0)), config, 4)


def test_align_connector_fits_the_oracle_connectors_tokens():
    """align_connector starts the connector as the read-out of the cells composed with a fresh oracle connector,
    then trains it toward that connector's tokens: the held-back fit ends below the start's, most held-back tokens
    sit nearest a target of their own cell's kind (chance: about the share of empty cells, which is far lower than
    what a token of a given colour and shape must reach), and oracle eyes are refused."""
    from molmo_lite.pointing_only import align_connector

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0,
                        vision_init=str(REPO / "data_samples" / "backbones" / "vit_p7_cell1"))
    fit = align_connector(build_model(config), config, scenes=128, steps=150)
    assert fit["heldout_relative_mse"] < fit["first_loss"]
    assert fit["nearest_kind_acc"] > 0.85
    oracle = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), eyes="oracle")
    with pytest.raises(ValueError, match="eyes='vit'"):
        align_connector(build_model(oracle), oracle, scenes=4, steps=1)


def test_readout_eyes_hand_over_the_vits_cells_in_the_oracles_form():
    """ReadoutEyes (eyes "readout-position") give each patch of a held-out scene a vector shaped as
    ``oracle.cell_features``: its colour channels name the colour in the patch's cell for most occupied cells
    (chance 1/8), its row and column channels are exactly the patch's own; with eyes "readout" they are the ViT's
    estimate (right for most patches, not exact). The connector then reads cell features, and read-out eyes need
    readout_init scenes."""
    from molmo_lite.data.synthetic import COLOURS, SHAPES
    from molmo_lite.oracle import cell_features, feature_size
    from molmo_lite.pointing_only import ReadoutEyes, use_readout_eyes

    held = pointing_examples(10, 0, "heldout", 56, max_count=10)
    truth = torch.from_numpy(np.stack([cell_features(ex.meta["objects"], 8) for ex in held]))
    occupied = truth[..., :len(COLOURS)].sum(-1) > 0
    rows = len(COLOURS) + len(SHAPES) + 2
    for eyes in ("readout-position", "readout"):
        config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0, eyes=eyes,
                            readout_init=64, vision_init=str(REPO / "data_samples" / "backbones" / "vit_p7_cell1"))
        model = build_model(config)
        assert use_readout_eyes(model, config)["colour_acc"] > 0.8
        assert isinstance(model.vision, ReadoutEyes) and model.connector.config.input_dim == feature_size(8)
        with torch.no_grad():
            seen_ = torch.stack([model.vision.features(im.crops)[0] for im in model.prepare_images(
                [ex.image for ex in held])])  # [10, 64, F]
        named = seen_[..., :len(COLOURS)].argmax(-1) == truth[..., :len(COLOURS)].argmax(-1)
        assert named[occupied].float().mean() > 0.8
        place = seen_[..., rows:]
        if eyes == "readout-position":
            assert torch.equal(place, truth[..., rows:])
        else:
            assert not torch.equal(place, truth[..., rows:])
            assert (place[..., :8].argmax(-1) == truth[..., rows:rows + 8].argmax(-1)).float().mean() > 0.8
    with pytest.raises(ValueError, match="readout_init"):
        build_model(EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), eyes="readout"))


def test_cached_eyes_give_the_logits_of_the_pixels_and_are_taken_off_the_saved_model():
    """With cache_features a training scene carries the frozen ViT's features in place of its pixels (CachedEyes
    passes them on): the model's logits on a batch are those it gives the same scenes as pixels; the model a run
    returns has its own ViT back; a ViT that learns cannot be cached."""
    from molmo_lite.pointing_only import CachedEyes, forward, seen_image

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0, cache_features=True)
    model = build_model(config)
    examples = [pointing_example(np.random.default_rng(k), size=56) for k in range(3)]
    pixels = [model.processor(ex.image) for ex in examples]
    model.vision = CachedEyes(model.vision)
    cached = [seen_image(model, config, ex) for ex in examples]
    assert cached[0].crops.dim() == 3 and pixels[0].crops.dim() == 4
    rng = np.random.default_rng(0)
    batch = build_batch(model, examples, [0, 1, 2], cached, rng)
    with torch.no_grad():
        from_cache = forward(model, batch)
        from_pixels = forward(model, batch | {"images": pixels})
    assert torch.allclose(from_cache, from_pixels, atol=1e-5)
    trained = train_eyes(replace(config, scene_pool=8, fresh_scenes=2, batch_size=4, micro_batches=1), steps=2,
                         heldout=2, evals=0, log=None)["model"]
    assert not isinstance(trained.vision, CachedEyes)
    with pytest.raises(ValueError, match="frozen ViT"):
        train_eyes(replace(config, lr_vit=1e-3), steps=1, heldout=1, evals=0, log=None)


def test_oracle_offset_noise_moves_only_the_offsets_of_occupied_cells():
    """oracle_image with offset_noise: the occupied cells' two offset channels move, every other channel (and every
    channel of an empty cell) is the oracle's exact one."""
    from molmo_lite.data.synthetic import COLOURS, SHAPES
    from molmo_lite.pointing_only import oracle_image

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), eyes="oracle")
    model = build_model(config)
    example = pointing_example(np.random.default_rng(3), size=56)
    exact, noisy = oracle_image(model, example).crops[0], oracle_image(model, example, offset_noise=0.2).crops[0]
    occupied = exact[:, :len(COLOURS)].sum(1) > 0
    where = len(COLOURS) + len(SHAPES)
    moved = (noisy != exact).any(0).nonzero().flatten().tolist()
    assert occupied.any() and moved == [where, where + 1]
    assert torch.equal(noisy[~occupied], exact[~occupied])
    assert (noisy[occupied, where:where + 2] != exact[occupied, where:where + 2]).all()


def test_oracle_cell_errors_miss_objects_and_copy_them_beside():
    """oracle_image with cell_errors (1, 0) empties every object's cell (colour, shape and offset; row and column
    stay); with (0, 1) every empty cell beside an object takes that object's colour and shape, objects stay."""
    from molmo_lite.data.synthetic import COLOURS, SHAPES
    from molmo_lite.pointing_only import oracle_image

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), eyes="oracle")
    model = build_model(config)
    example = pointing_example(np.random.default_rng(5), size=56)
    exact = oracle_image(model, example).crops[0]
    content = len(COLOURS) + len(SHAPES)
    occupied = exact[:, :len(COLOURS)].sum(1) > 0
    gone = oracle_image(model, example, cell_errors=(1.0, 0.0)).crops[0]
    assert occupied.any() and gone[:, :content + 2].abs().sum() == 0
    assert torch.equal(gone[:, content + 2:], exact[:, content + 2:])
    doubled = oracle_image(model, example, cell_errors=(0.0, 1.0)).crops[0]
    assert torch.equal(doubled[occupied], exact[occupied])
    beside = []
    for k in occupied.nonzero().flatten().tolist():
        row, col = divmod(k, 8)
        beside += [i * 8 + j for i, j in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1))
                   if 0 <= i < 8 and 0 <= j < 8]
    empty_beside = [n for n in set(beside) if not occupied[n]]
    assert empty_beside and all(doubled[n, :len(COLOURS)].sum() == 1 for n in empty_beside)
    far = [n for n in range(64) if not occupied[n] and n not in beside]
    assert torch.equal(doubled[far], exact[far])


def test_softmax_readouts_decide_colour_or_empty_for_most_cells():
    """fit_readout(classes=True) adds frozen softmax read-outs of colour-or-empty (9 classes) and shape (3): on the
    fitted scenes most cells are decided right (all-empty would score about 0.85), with their error counts."""
    from molmo_lite.pointing_only import fit_readout

    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0,
                        vision_init=str(REPO / "data_samples" / "backbones" / "vit_p7_cell1"))
    fit = fit_readout(build_model(config), config, 48, classes=True)
    heads = fit["heads"]
    assert heads["colour_head"].out_features == 9 and heads["shape_head"].out_features == 3
    assert not any(p.requires_grad for h in heads.values() for p in h.parameters())
    assert fit["cell_acc"] > 0.93 and fit["false_occupied"] < 0.05 and 0 <= fit["missed"] < 0.3


def test_the_feature_basis_whitens_the_fitted_features_and_is_saved_with_the_model(tmp_path):
    """feature_dims: the connector keeps each patch's coordinates on the features' main directions, whitened (unit
    RMS, uncorrelated on the features it was fitted on, the largest first), beside the cell decisions; the basis is
    a buffer of the model, read back by from_pretrained."""
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from molmo_lite.clip_pretrain import save_encoder
    from molmo_lite.data import clocks
    from molmo_lite.data.examples import split_seed
    from molmo_lite.pointing_only import CELL_HEAD_FILE, fit_feature_basis

    vit = build_model(EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1))).vision
    save_encoder(vit, tmp_path / "vit", {})
    save_file({"weight": torch.randn(cell_head_size(8), 192) * 0.1, "bias": torch.zeros(cell_head_size(8))},
              str(tmp_path / "vit" / CELL_HEAD_FILE))
    config = EyesConfig(patch_size=7, crop_mode="resize", pooling=(1, 1), lr_vit=0.0, cell_decisions=True,
                        vision_init=str(tmp_path / "vit"), decision_features=0.5, feature_dims=6)
    model = build_model(config)
    assert model.connector.pool.wk.in_features == model.connector.decide.out_dim + 6
    kept = fit_feature_basis(model, config, scenes=8)  # refitted on 8 scenes and 8 clocks, checked on them below
    assert 0 < float(kept) < 1
    rng = np.random.default_rng(split_seed(config.seed + 1000, "train"))
    examples = [pointing_example(rng, size=56) for _ in range(8)] + [clocks.clock_example(rng, 56) for _ in range(8)]
    with torch.no_grad():
        x = F.layer_norm(model.vision.features(torch.cat([model.processor(e.image).crops for e in examples])), (192,))
        coords = x.reshape(-1, 192) @ model.connector.feature_basis
    torch.testing.assert_close(coords.T @ coords / coords.shape[0], torch.eye(6), atol=1e-3, rtol=0)
    model.save_pretrained(tmp_path / "model")
    loaded = MolmoLite.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(loaded.connector.feature_basis, model.connector.feature_basis)

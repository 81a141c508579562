"""The oracle harness (molmo_lite.oracle): perfect image features for the LLM alone (chapter 10)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmarks import oracle as oracle_benchmark
from benchmarks.common import readme_block
from molmo_lite.config import IMAGE_TOKENS
from molmo_lite.data.synthetic import SceneObject, pointing_example
from molmo_lite.evaluate import heldout_sets
from molmo_lite.oracle import (
    OracleConfig,
    OracleModel,
    build_batch,
    build_optimizer,
    cell_features,
    cell_objects,
    cell_of,
    feature_size,
    heldout_scenes,
    length_chunks,
    loss_of,
    match_column,
    shuffled_scenes,
    train_oracle,
    training_world,
)
from molmo_lite.tokenizer import MolmoTokenizer


def test_cell_features_hand_checked():
    """A red circle at (10, 10) sits in cell (0, 0), 0.3 cells right of and below its middle; a blue triangle at
    (60, 95) in row 7, column 4 (60 / 12.5 = 4.8, 95 / 12.5 = 7.6). Layout per cell: 8 colours (red 0, green 1,
    blue 2, ...), 3 shapes (circle, square, triangle), offset x, y, 8 row and 8 column one-hots."""
    objects = [SceneObject("circle", "red", 10.0, 10.0, 5.0), SceneObject("triangle", "blue", 60.0, 95.0, 5.0)]
    f = cell_features(objects, grid=8).reshape(8, 8, -1)
    assert f.shape == (8, 8, feature_size(8)) == (8, 8, 29)
    red = np.zeros(29, np.float32)
    red[[0, 8]] = 1  # red, circle
    red[11:13] = [0.3, 0.3]
    red[13 + 0] = red[21 + 0] = 1  # row 0, column 0
    np.testing.assert_allclose(f[0, 0], red, atol=1e-6)
    blue = np.zeros(29, np.float32)
    blue[[2, 10]] = 1  # blue, triangle
    blue[11:13] = [0.3, 0.1]
    blue[13 + 7] = blue[21 + 4] = 1
    np.testing.assert_allclose(f[7, 4], blue, atol=1e-6)
    empty = np.zeros(29, np.float32)
    empty[13 + 3] = empty[21 + 5] = 1
    np.testing.assert_allclose(f[3, 5], empty)  # nothing there: only where the cell is
    assert f[..., :11].sum() == 4  # two colours and two shapes in the whole grid


def test_cell_features_shared_across_a_border_hand_checked():
    """share=0.2: a red circle at (25.6, 6.25) sits 0.048 cells right of the border between columns 1 and 2
    (25.6 / 12.5 = 2.048), in the middle of row 0: column 1 gets 0.5 - 0.048 / 0.4 = 0.38 of it and column 2 the
    rest, each with the centre's offset from its own middle (+0.548 and -0.452 cells in x) times its weight. A blue
    square at (50, 50) lies on the corner of four cells: a quarter each."""
    objects = [SceneObject("circle", "red", 25.6, 6.25, 5.0), SceneObject("square", "blue", 50.0, 50.0, 5.0)]
    hard = cell_features(objects, grid=8).reshape(8, 8, -1)
    f = cell_features(objects, grid=8, share=0.2).reshape(8, 8, -1)
    np.testing.assert_allclose(f[0, 2, 0], 0.62, atol=1e-6)  # red in its own cell
    np.testing.assert_allclose(f[0, 1, 0], 0.38, atol=1e-6)  # and across the border
    np.testing.assert_allclose(f[0, 1, 11], 0.38 * 0.548, atol=1e-5)  # offset from column 1's middle, weighted
    np.testing.assert_allclose(f[0, 2, 11], 0.62 * -0.452, atol=1e-5)
    assert f[1, :, 0].sum() == 0 and f[0, 3, 0] == 0  # not near any other border
    for i, j in ((3, 3), (3, 4), (4, 3), (4, 4)):
        np.testing.assert_allclose(f[i, j, [2, 9]], [0.25, 0.25], atol=1e-6)  # blue, square
    np.testing.assert_allclose(f[..., :11].sum(), hard[..., :11].sum(), atol=1e-5)  # each object's weights sum to 1
    np.testing.assert_array_equal(f[..., 13:], hard[..., 13:])  # rows and columns as ever
    np.testing.assert_array_equal(cell_features(objects, grid=8, share=0.0).reshape(8, 8, -1), hard)


def test_cell_objects_read_hard_cells_back_into_objects():
    """cell_objects inverts cell_features where each cell holds at most one centre: the hand-checked red circle at
    (10, 10) and blue triangle at (60, 95) come back with their colours, shapes and centres, in raster order; on 50
    held-out scenes every object whose cell it has alone comes back at its centre; an empty grid gives none."""
    objects = [SceneObject("triangle", "blue", 60.0, 95.0, 5.0), SceneObject("circle", "red", 10.0, 10.0, 5.0)]
    back = cell_objects(cell_features(objects, grid=8), 8)
    assert [(o.colour, o.shape) for o in back] == [("red", "circle"), ("blue", "triangle")]
    np.testing.assert_allclose([(o.x, o.y) for o in back], [(10.0, 10.0), (60.0, 95.0)], atol=1e-4)
    assert cell_objects(cell_features([], grid=8), 8) == []
    for ex in heldout_scenes(50):
        objs = ex.meta["objects"]
        cells = [cell_of(o, 8) for o in objs]
        alone = sorted((c, o.x, o.y, o.colour, o.shape) for c, o in zip(cells, objs) if cells.count(c) == 1)
        got = {cell_of(o, 8): o for o in cell_objects(cell_features(objs, grid=8), 8)}
        for c, x, y, colour, shape in alone:
            assert (got[c].colour, got[c].shape) == (colour, shape)
            np.testing.assert_allclose((got[c].x, got[c].y), (x, y), atol=1e-4)


def test_heldout_scenes_are_chapter_07s():
    """The harness scores the very scenes chapter 10 evaluates, read from their ground truth without pixels."""
    ours = heldout_scenes(5)
    theirs = heldout_sets(5)["pointing"]
    assert all(a.image is None for a in ours)
    assert [a.meta["objects"] for a in ours] == [b.meta["objects"] for b in theirs]
    assert [a.messages for a in ours] == [b.messages for b in theirs]


def test_build_batch_lays_out_image_prompt_and_answer():
    tok = MolmoTokenizer.tiny()
    examples = [pointing_example(np.random.default_rng(s), render=False) for s in range(3)]
    batch = build_batch(tok, examples, [0, 1, 2], grid=8)
    patch, start, end = (tok.token_to_id(t) for t in (IMAGE_TOKENS[2], IMAGE_TOKENS[0], IMAGE_TOKENS[1]))
    for b, ex in enumerate(examples):
        ids, tg = batch["input_ids"][b], batch["targets"][b]
        assert ids[0] == tok.eos_id and ids[1] == start
        assert (ids[batch["patch_positions"][b]] == patch).all() and int((ids == patch).sum()) == 64
        answer = ex.messages[b][0].answer
        assert tok.decode(tg[tg >= 0].tolist()) == " " + answer + tok.decode([tok.eos_id])  # loss on the answer only
    first = build_batch(tok, examples[:1], [0], grid=8, question_first=True)["input_ids"][0].tolist()
    assert tok.decode(first[1:first.index(start)]).startswith(" User:")  # the question, then the image
    assert tok.decode(first[first.index(end) + 1:]).startswith(" Assistant:")


def test_pooled_oracle_tokens_list_their_four_cells():
    """pool 2: 16 image tokens, each the four cells of its 2 x 2 window side by side (the first token: cells (0, 0),
    (0, 1), (1, 0), (1, 1)); a model of that config reads them, and the pooled oracle cannot take the match bit."""
    tok = MolmoTokenizer.tiny()
    examples = [pointing_example(np.random.default_rng(s), render=False) for s in range(2)]
    batch = build_batch(tok, examples, [0, 1], grid=8, question_first=True, pool=2)
    assert batch["patch_positions"].shape == (2, 16)
    cells = cell_features(examples[0].meta["objects"], 8).reshape(8, 8, -1)
    size = feature_size(8)
    first = batch["features"][0, 0].reshape(4, size).numpy()
    assert np.array_equal(first, np.stack([cells[0, 0], cells[0, 1], cells[1, 0], cells[1, 1]]))
    last = batch["features"][0, 15].reshape(4, size).numpy()
    assert np.array_equal(last, np.stack([cells[6, 6], cells[6, 7], cells[7, 6], cells[7, 7]]))
    config = OracleConfig(pool=2, question_first=True)
    assert OracleModel(config)(batch).shape[:2] == batch["input_ids"].shape
    with pytest.raises(ValueError):
        OracleConfig(pool=2, match_bit=True)


def test_length_chunks_give_the_gradient_of_the_whole_padded_batch():
    """A step split into chunks of rows of similar length, each cut to its own longest row and run without the
    padding mask, sums to the loss and the gradients of the padded batch with its mask (o16's speed lever)."""
    tok = MolmoTokenizer.tiny()
    rng = np.random.default_rng(3)
    examples = [pointing_example(rng, render=False) for _ in range(6)]
    batch = build_batch(tok, examples, [0, 1, 2, 0, 1, 2], grid=8, question_first=True)
    torch.manual_seed(0)
    model = OracleModel(OracleConfig(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, question_first=True))
    whole = loss_of(model(batch), batch["targets"])
    whole.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    parts = length_chunks(batch, 3)
    lengths = batch["attention_mask"].sum(1)
    assert sorted(len(p["input_ids"]) for p in parts) == [2, 2, 2]
    assert sorted(int(p["input_ids"].shape[1]) for p in parts) == sorted(
        int(lengths.sort().values[k]) for k in (1, 3, 5))  # each chunk as long as its longest row
    assert all("attention_mask" not in p for p in parts)
    answer_tokens, total = int(batch["targets"].ne(-100).sum()), 0.0
    for part in parts:
        loss = loss_of(model(part), part["targets"], "sum") / answer_tokens
        loss.backward()
        total += float(loss.detach())
    assert total == pytest.approx(whole.item(), rel=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_training_world_curriculum():
    cfg = OracleConfig(curriculum="targets")
    assert training_world(cfg, 0.0) == {"max_count": 1, "max_distractors": 0}  # one object alone
    assert training_world(cfg, 0.2) == {"max_count": 1, "max_distractors": 3}  # one target among others
    assert training_world(cfg, 0.3) == {"max_count": 4, "max_distractors": 4}
    assert training_world(cfg, 0.5) == {"max_count": 10, "max_distractors": 6}  # chapter 07's world
    assert training_world(replace(cfg, max_count=2, max_distractors=1), 0.3) == {"max_count": 2, "max_distractors": 1}
    assert training_world(OracleConfig(), 0.0) == {"max_count": 10, "max_distractors": 6}
    with pytest.raises(ValueError, match="curriculum"):
        training_world(OracleConfig(curriculum="bogus"), 0.0)


def test_shuffled_control_keeps_questions_and_moves_the_objects():
    held = heldout_scenes(4)
    shuffled = shuffled_scenes(held)
    for k, ex in enumerate(shuffled):
        assert ex.messages == held[k].messages and ex.meta["points"] == held[k].meta["points"]
        assert ex.meta["objects"] == held[(k + 1) % 4].meta["objects"]
    tok = MolmoTokenizer.tiny()
    batch = build_batch(tok, shuffled, [0] * 4, grid=8)
    np.testing.assert_array_equal(batch["features"][0].numpy(), cell_features(held[1].meta["objects"]))


def test_short_run_learns_a_one_object_world():
    """One object or none, nothing else, asked to point at it or count it: a short run of a small LLM (2 x 64) learns
    to point at it, far above the blind 0.12 of "There are none.", and only with the true image tokens (the shuffled
    control stays near 0). About a minute on 2 cores."""
    cfg = OracleConfig(max_count=1, max_distractors=0, annotations=(0, 1), hidden=64, layers=2, heads=2, kv_heads=1,
                       intermediate=192, optimizer="muon", lr=2e-3, warmup=20)
    record = train_oracle(cfg, steps=1000, heldout=100, evals=1, log=None)
    assert record["final"]["pointing_f1"] > 0.5
    assert record["shuffled"]["pointing_f1"] < record["final"]["pointing_f1"] - 0.3


def test_match_column_marks_the_cells_the_question_asks_for():
    objects = [SceneObject("circle", "red", 10.0, 10.0, 5.0), SceneObject("square", "red", 60.0, 95.0, 5.0)]
    col = match_column(objects, [(60.0, 95.0)], grid=8).reshape(8, 8)
    assert col[7, 4] == 1 and col.sum() == 1  # the square is asked for, the circle is not


def test_word_features_are_the_question_words_embeddings():
    """features="words": a red circle's cell adds the LLM's own embeddings of " red" and " circles" to the projected
    position (its colour and shape one-hots zeroed), so the image token and the question share those vectors."""
    torch.manual_seed(0)
    tok = MolmoTokenizer.tiny()
    model = OracleModel(OracleConfig(features="words"))
    ex = pointing_example(np.random.default_rng(0), render=False)
    batch = build_batch(tok, [ex], [0], grid=8)
    embeds = model.embed(batch["input_ids"], batch["features"], batch["patch_positions"])
    obj = ex.meta["objects"][0]
    i, j = cell_of(obj, 8)
    cell = batch["features"][0, i * 8 + j].clone()
    cell[:11] = 0
    words = model.llm.embed(torch.tensor([tok.encode(" " + obj.colour)[0], tok.encode(" " + obj.shape + "s")[0]]))
    position = batch["patch_positions"][0, i * 8 + j]
    expected = model.llm.embed(batch["input_ids"][0, position]) + words.sum(0) + model.proj(cell)
    torch.testing.assert_close(embeds[0, position], expected)


def test_the_docs_table_comes_from_the_benchmark_json():
    result = json.loads(oracle_benchmark.OUT.read_text())
    assert readme_block("oracle", oracle_benchmark.PAGE) == oracle_benchmark.table(result), \
        "rerun `python -m benchmarks.oracle --table`"
    for key, record in result.items():  # every record is a configuration that still runs by name
        assert record["name"] in oracle_benchmark.CONFIGS and key.startswith(record["name"])


def test_muon_trains_the_hidden_matrices_and_adamw_the_rest():
    model = OracleModel(OracleConfig(optimizer="muon"))
    muon, adamw = build_optimizer(model, model.config)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert not in_muon & in_adamw and in_muon | in_adamw == {id(p) for p in model.parameters()}
    assert id(model.llm.embed.base.weight) in in_adamw  # the (tied) embedding is not a hidden matrix
    assert id(model.llm.blocks[0].attention.wq.weight) in in_muon and id(model.proj[0].weight) in in_muon
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(model, OracleConfig(optimizer="sgd"))

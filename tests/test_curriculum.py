"""Stage data (pools, fresh generators, the curriculum), the connector's course options, the controls of chapter 10,
and the image path: a short training on a few images must read them (true-image loss well below shuffled)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from molmo_lite.config import MOLMO_PRESETS, TrainConfig
from molmo_lite.connector import Connector
from molmo_lite.data import synthetic
from molmo_lite.data.examples import Example
from molmo_lite.evaluate import answer_loss, blind_baselines, shuffled_images
from molmo_lite.model import MolmoLite
from molmo_lite.prompts import Message
from molmo_lite.train import CURRICULA, StageData, Trainer, stage_data, step_batches


def _example(tag: str) -> Example:
    return Example(None, [[Message("q", tag, "user_qa")]], tag)


def test_rates_follow_the_curriculum_phases_then_the_base_rates():
    data = StageData({"a": [_example("a")], "b": [_example("b")], "c": [_example("c")]},
                     rates={"a": 0.5, "b": 0.5, "c": 0.0},
                     curriculum=((0.25, {"a": 0.0, "c": 0.5}), (0.5, {"b": 0.25, "c": 0.75})), steps=100)
    assert data.rates_at(0) == {"a": 0.0, "b": 0.5, "c": 0.5}
    assert data.rates_at(24) == data.rates_at(0)
    assert data.rates_at(25) == {"a": 0.5 / 1.5, "b": 0.25 / 1.5, "c": 0.75 / 1.5}  # a keeps its base rate
    assert data.rates_at(50) == data.rates_at(99) == {"a": 0.5, "b": 0.5, "c": 0.0}
    drawn = [e.task for e in data.draw(np.random.default_rng(0), 400, step=10)]
    assert "a" not in drawn and 150 < drawn.count("c") < 250
    assert "c" not in [e.task for e in data.draw(np.random.default_rng(0), 200, step=80)]


def test_stage_data_rejects_unknown_sources_and_unordered_phases():
    pool = {"a": [_example("a")]}
    with pytest.raises(ValueError, match="unknown sources"):
        StageData(pool, curriculum=((0.5, {"z": 1.0}),))
    with pytest.raises(ValueError, match="increasing"):
        StageData({**pool, "b": [_example("b")]}, curriculum=((0.5, {"a": 1.0}), (0.2, {"b": 1.0})))


def test_fresh_sources_draw_new_examples_that_are_a_function_of_the_rng():
    data = StageData({"one": lambda rng: synthetic.pointing_example(rng, min_count=1, max_count=1,
                                                                     max_distractors=0)})
    a, b = (data.draw(np.random.default_rng((0, 7)), 4, step=7) for _ in range(2))
    assert [e.meta["points"] for e in a] == [e.meta["points"] for e in b]  # same (seed, step): same examples
    c = data.draw(np.random.default_rng((0, 8)), 4, step=8)
    assert [e.meta["points"] for e in a] != [e.meta["points"] for e in c]
    assert all(e.meta["count"] == 1 and len(e.meta["objects"]) == 1 for e in a + c)


def test_pools_draw_exactly_as_before_fresh_data_existed():
    """The rng consumption of a pool draw is unchanged (resume and the committed runs depend on it)."""
    pool = [_example(str(i)) for i in range(10)]
    rng = np.random.default_rng(3)
    names = rng.choice(1, size=5, p=[1.0])
    expected = [pool[int(rng.integers(10))].task for _ in names]
    assert [e.task for e in StageData({"p": pool}).draw(np.random.default_rng(3), 5)] == expected


def test_the_split_generators_match_their_single_example_functions():
    from molmo_lite.data import clocks
    from molmo_lite.data.examples import split_seed

    rng = np.random.default_rng(split_seed(0, "heldout"))
    one = [synthetic.pointing_example(rng, 56, 10, 6) for _ in range(3)]
    listed = synthetic.pointing_examples(3, 0, "heldout", 56, max_count=10)
    assert [e.meta["points"] for e in one] == [e.meta["points"] for e in listed]
    rng = np.random.default_rng(split_seed(0, "train"))
    assert [clocks.clock_example(rng).meta for _ in range(3)] == [e.meta for e in clocks.clock_examples(3)]


def test_sft_curriculum_moves_the_pointing_share_from_one_object_to_crowded_scenes():
    config = TrainConfig(stage="sft", steps=100, data="fresh", curriculum="objects", examples=8)
    data = stage_data(config)
    share = lambda r: sum(v for k, v in r.items() if k.startswith("pointing"))  # noqa: E731
    start, middle, end = data.rates_at(0), data.rates_at(60), data.rates_at(99)
    assert start["pointing_one"] == pytest.approx(1.0)  # single objects only: nothing else at first
    assert share(middle) == pytest.approx(0.35) and share(end) == pytest.approx(0.35)  # Molmo's pointing group
    assert middle["pointing_few"] > middle["pointing_one"] > 0 and middle["pointing"] == 0
    assert end["pointing"] > end["pointing_few"] > 0 and end["pointing_one"] == 0
    assert callable(data.datasets["clocks"]) and isinstance(data.datasets["charts"], list)
    assert set(CURRICULA) >= {"none", "objects"}
    with pytest.raises(ValueError, match="unknown curriculum"):
        stage_data(replace(config, curriculum="nope"))


def test_length_sorting_keeps_the_step_examples_and_cuts_padding():
    config = TrainConfig(stage="sft", steps=4, batch_size=4, grad_accum=4, examples=16)
    data, model = stage_data(config), MolmoLite("tiny")
    plain = step_batches(data, model, config, 2)
    sorted_ = step_batches(data, model, replace(config, sort_by_length=True), 2)
    tokens = lambda bs: sorted(int(n) for b in bs for n in b["attention_mask"].sum(-1))  # noqa: E731
    assert tokens(plain) == tokens(sorted_)
    assert sum(b["input_ids"].numel() for b in sorted_) < sum(b["input_ids"].numel() for b in plain)


def test_connector_feature_norm_normalises_each_layer_group_and_init_scale_scales_the_projector():
    config = MOLMO_PRESETS["tiny"].connector
    torch.manual_seed(0)
    plain = Connector(replace(config, feature_norm=0, init_scale=1.0))
    torch.manual_seed(0)
    scaled = Connector(replace(config, feature_norm=2, init_scale=3.0))
    torch.testing.assert_close(scaled.projector.w2.weight, 3 * plain.projector.w2.weight)
    features = torch.randn(2, 16, config.input_dim) * torch.tensor([100.0] * 96 + [0.1] * 96)
    normed = scaled.normalize(features)
    for group in normed.split(96, dim=-1):
        torch.testing.assert_close(group.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
        torch.testing.assert_close(group.std(-1, unbiased=False), torch.ones(2, 16), atol=1e-3, rtol=0)
    assert torch.equal(plain.normalize(features), features)  # Molmo's connector: off


def test_blind_baseline_and_shuffled_images():
    scenes = synthetic.pointing_examples(40, 0, "heldout", 56, max_count=10)
    blind = blind_baselines({"pointing": scenes, "counting": scenes}, {"pointing": "There are none.",
                                                                       "counting": "There are none."})
    empty = np.mean([e.meta["count"] == 0 for e in scenes])
    assert blind["pointing"]["f1"] == pytest.approx(empty) and blind["counting"]["exact"] == pytest.approx(empty)
    shuffled = shuffled_images(scenes[:3])
    assert shuffled[0].image is scenes[1].image and shuffled[2].image is scenes[0].image
    assert shuffled[0].messages is scenes[0].messages


def test_a_short_training_on_a_few_images_reads_them(tmp_path):
    """The image path end to end: 8 single-object scenes, 80 steps. Each answer can only be told from its image,
    so the answer loss with the true images must fall clearly below the loss with shuffled images; a broken image
    path (features not added, connector detached, wrong image) leaves the two equal."""
    rng = np.random.default_rng(0)
    scenes = [synthetic.pointing_example(rng, min_count=1, max_count=1, max_distractors=0) for _ in range(8)]
    scenes = [Example(e.image, e.messages[:1], e.task, e.meta) for e in scenes]  # the pointing answer only
    config = TrainConfig(stage="sft", steps=80, batch_size=8, lr_connector=3e-3, lr_vit=3e-4, lr_llm=3e-3,
                         warmup_connector=5, warmup_vit=5, warmup_llm=5, log_every=10, save_every=1000)
    torch.manual_seed(0)
    model = MolmoLite("tiny")
    Trainer(model, config, StageData({"scenes": scenes}), tmp_path, progress=False).fit()
    true, shuffled = answer_loss(model, scenes, "pointing"), answer_loss(model, shuffled_images(scenes), "pointing")
    assert shuffled > 2 * true, (true, shuffled)


def test_every_recipe_builds_its_model_options_and_stage_configs(capsys):
    from benchmarks import recipes
    from molmo_lite.clip_pretrain import ENCODER_SCENES
    from molmo_lite.config import ConnectorConfig, PreprocessorConfig

    for name, recipe in recipes.RECIPES.items():
        replace(ConnectorConfig(), **recipe.connector)
        replace(PreprocessorConfig(), **recipe.preprocessor)
        for stage in ("caption", "sft"):
            config = TrainConfig(**getattr(recipe, stage), steps=10)
            assert config.stage == stage, name
        assert 0 < recipe.caption_share < 1
        assert recipe.vit_scenes in ENCODER_SCENES, name
    recipes.main([])
    listed = capsys.readouterr().out
    assert all(name in listed for name in recipes.RECIPES)


def test_rate_overrides_set_their_sources_and_keep_the_rest_in_proportion():
    from molmo_lite.train import override_rates

    base = {"pointing": 0.35, "clocks": 0.25, "charts": 0.4}
    rates = override_rates(base, {"pointing": 0.6})
    assert rates["pointing"] == pytest.approx(0.6) and sum(rates.values()) == pytest.approx(1.0)
    assert rates["clocks"] / rates["charts"] == pytest.approx(0.25 / 0.4)
    assert override_rates(base, {}) == base
    with pytest.raises(ValueError, match="unknown sources"):
        override_rates(base, {"nope": 0.1})
    with pytest.raises(ValueError, match="sum to at most 1"):
        override_rates(base, {"pointing": 0.7, "clocks": 0.5})
    config = TrainConfig(stage="sft", steps=100, data="fresh", examples=8, rates=(("pointing", 0.6),))
    assert stage_data(config).rates_at(0)["pointing"] == pytest.approx(0.6)
    curriculum = stage_data(replace(config, curriculum="objects"))  # the curriculum moves the overridden share
    assert sum(v for k, v in curriculum.rates_at(99).items() if k.startswith("pointing")) == pytest.approx(0.6)


def test_number_tokens_are_the_values_of_an_answer_not_its_format():
    from molmo_lite.evaluate import number_tokens

    pieces = ['<', 'points', ' x', '1', '="', '1', '8', '.', '3', '"', ' y', '1', '="', '6', '8', '"', ' x', '1', '0',
              '="', '5', '"', ' alt', '="', 'red', '">', 'red', '</', 'points', '>', ' shows', ' a', ' total', ' of',
              ' ', '5', '.', ' ', '3', ':', '2', '8']
    flags = number_tokens(pieces)
    values = [p for p, f in zip(pieces, flags) if f]
    assert values == ['1', '8', '3', '6', '8', '5', '5', '3', '2', '8']  # the digits of 18.3, 68, 5, 5, 3:28
    assert not flags[3] and not flags[17] and not flags[18]  # the indices of x1 and x10


def test_answer_losses_split_the_answer_loss_into_values_and_format():
    from molmo_lite.evaluate import answer_loss, answer_losses

    torch.manual_seed(0)
    model = MolmoLite("tiny")
    scenes = synthetic.pointing_examples(6, 0, "heldout", 56, max_count=4)
    parts = answer_losses(model, scenes, "pointing", batch_size=4)
    from molmo_lite.data.collate import collate, encode_example
    from molmo_lite.evaluate import _question
    from molmo_lite.model import answer_loss as loss_of

    total = count = 0.0  # the reference: Molmo's scalar loss of each example alone, weighted by its answer tokens
    for ex in scenes:
        encoded = encode_example(Example(ex.image, [[_question(ex, "pointing")]], ex.task, ex.meta), model.processor,
                                 model.tokenizer, None, "none", shuffle=False)
        batch = collate([encoded], model.tokenizer.pad_id)
        targets, weights = batch.pop("target_ids"), batch.pop("loss_weights")
        with torch.no_grad():
            total += float(loss_of(model(**batch).logits, targets, weights)[0]) * int((weights > 0).sum())
        count += int((weights > 0).sum())
    assert parts["all"] == pytest.approx(total / count, rel=1e-4)
    assert answer_loss(model, scenes, "pointing") == pytest.approx(parts["all"], rel=1e-5)  # batching changes nothing
    n, k = parts["tokens"], parts["number_count"]
    assert 0 < k < n
    assert parts["all"] * n == pytest.approx(parts["numbers"] * k + parts["format"] * (n - k), rel=1e-5)
    assert parts["number_share"] == pytest.approx(parts["numbers"] * k / (parts["all"] * n), rel=1e-5)


def test_the_mixed_curriculum_keeps_the_easy_scenes_to_the_end():
    config = TrainConfig(stage="sft", steps=90, data="fresh", curriculum="objects-mixed", examples=8)
    data = stage_data(config)
    start, middle, end = data.rates_at(0), data.rates_at(45), data.rates_at(89)
    assert start["pointing_one"] == pytest.approx(1.0)
    assert middle["pointing_few"] > middle["pointing_one"] > 0 and middle["pointing"] == 0
    assert end["pointing"] > end["pointing_few"] > end["pointing_one"] > 0
    assert sum(v for k, v in end.items() if k.startswith("pointing")) == pytest.approx(0.35)


def test_the_gradual_curriculum_climbs_to_the_heldout_scenes_with_the_rest_of_the_mixture_on():
    config = TrainConfig(stage="sft", steps=100, data="fresh", curriculum="objects-gradual", examples=8)
    data = stage_data(config)
    levels = ("pointing_one", "pointing_few", "pointing_mid", "pointing")
    hardest = []
    for step in (0, 20, 40, 60, 99):
        rates = data.rates_at(step)
        assert rates["clocks"] > 0 and rates["charts"] > 0  # never switched off
        assert sum(rates[k] for k in levels) == pytest.approx(sum(data.rates[k] for k in levels))
        hardest.append(max(i for i, k in enumerate(levels) if rates[k] > 0))
    assert hardest == [0, 1, 2, 3, 3] and data.rates_at(99)["pointing_mid"] == 0
    mid = data.datasets["pointing_mid"](np.random.default_rng(0))
    assert 1 <= mid.meta["count"] <= 6

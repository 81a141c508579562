"""The trainer: Molmo's groups and schedule, exact resume, a short run whose loss falls, evaluation end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from molmo_lite.config import TrainConfig
from molmo_lite.evaluate import evaluate, heldout_sets, metrics_table
from molmo_lite.model import MolmoLite, answer_loss
from molmo_lite.train import (
    NonFiniteLossError,
    Optimizers,
    StageData,
    Trainer,
    build_optimizer,
    latest_checkpoint,
    lr_factor,
    parameter_groups,
    batch_stream,
    stage_data,
    step_batches,
    step_examples,
)


def test_parameter_groups_cover_every_parameter_once_and_put_new_token_rows_with_the_connector():
    model = MolmoLite("tiny")
    groups = parameter_groups(model)
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert any(p is model.llm.embed.new.weight for p in groups["connector"])
    assert all(any(p is q for q in groups["vit"]) for p in model.vision.parameters())


def test_lr_schedule_warms_up_linearly_then_cosine_to_ten_percent():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert lr_factor(100, 10, 100) == pytest.approx(0.1) and lr_factor(0, 0, 100) == pytest.approx(1.0)


def _config(**kw) -> TrainConfig:
    base = dict(stage="sft", steps=6, batch_size=2, grad_accum=2, lr_connector=1e-3, lr_vit=1e-4, lr_llm=1e-3,
                warmup_connector=2, warmup_vit=2, warmup_llm=2, residual_dropout=0.1, log_every=1, save_every=3,
                examples=8, image_size=56)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_data() -> StageData:
    return stage_data(_config())


def _fresh_model(seed: int) -> MolmoLite:
    torch.manual_seed(seed)
    return MolmoLite("tiny")


def test_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_data):
    config = _config()
    torch.manual_seed(123)
    whole = Trainer(_fresh_model(0), config, tiny_data, tmp_path / "whole", progress=False)
    whole.fit()
    torch.manual_seed(123)
    first = Trainer(_fresh_model(0), config, tiny_data, tmp_path / "split", progress=False)
    first.fit(stop_after=3)  # "killed" after 3 steps: only the checkpoint on disk survives
    assert latest_checkpoint(tmp_path / "split").name == "step_000003"
    torch.manual_seed(999)  # a different process state, and a different initial model: all must come from disk
    second = Trainer(_fresh_model(1), config, tiny_data, tmp_path / "split", progress=False)
    second.fit(resume=True)
    assert second.step == config.steps
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in second.history]


def test_gradient_accumulation_equals_one_big_batch(tiny_data):
    """2 micro-batches of 2 give the gradient of 1 batch of 4 (the loss is normalised over the global batch)."""
    grads = []
    for batch_size, accum in ((4, 1), (2, 2)):
        config = _config(batch_size=batch_size, grad_accum=accum, residual_dropout=0.0)
        trainer = Trainer(_fresh_model(0), config, tiny_data, "/nonexistent", progress=False)
        trainer.model.train()
        for group in trainer.optimizer.param_groups:
            group["peak_lr"] = 0.0  # look at the gradients only
        trainer.train_step(0)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_packed_rows_give_the_padded_batch_loss_and_gradient_with_fewer_padding_tokens(tiny_data):
    """Several examples per row (pack_examples): the loss and the gradient are those of the padded batch, in fewer
    rows (attention leaking from one example to the next would change both)."""
    model = _fresh_model(0)
    padded, packed = (step_batches(tiny_data, model, _config(batch_size=8, grad_accum=1, pack_examples=p), 1)[0]
                      for p in (False, True))
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert packed["attention_mask"].sum() == padded["attention_mask"].sum()
    results = []
    for batch in (padded, packed):
        model.zero_grad(set_to_none=True)
        batch = dict(batch)
        targets, weights = batch.pop("target_ids"), batch.pop("loss_weights")
        logits = model(**batch).logits
        loss = answer_loss(logits, targets, weights, model.config.z_loss)[0]
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()
                                                  if p.grad is not None])))
    (loss_a, grad_a), (loss_b, grad_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)  # a leak across examples would change it
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-6)


def test_step_batches_are_a_function_of_the_step(tiny_data):
    model, config = _fresh_model(0), _config()
    a, b, c = (step_batches(tiny_data, model, config, s) for s in (4, 4, 5))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert any(x["input_ids"].shape != y["input_ids"].shape or not torch.equal(x["input_ids"], y["input_ids"])
               for x, y in zip(a, c))


@pytest.mark.parametrize("data", ["pool", "fresh"])
def test_batches_made_ahead_by_loader_workers_are_the_batches_of_their_steps(tiny_data, data):
    """The GPU path's DataLoader workers (forked processes, steps in flight out of order) give each step the very
    tensors that step_batches makes for it in this process: the (seed, step) determinism holds."""
    config = _config(data=data)
    source = tiny_data if data == "pool" else stage_data(config)
    model = _fresh_model(0)
    ahead = list(batch_stream(source, model, config, range(2, 7), workers=2))
    here = [step_batches(source, model, config, s) for s in range(2, 7)]
    assert len(ahead) == len(here) == 5
    for step_a, step_b in zip(ahead, here):
        assert len(step_a) == len(step_b) == config.grad_accum
        for a, b in zip(step_a, step_b):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_resumed_with_loader_workers_ends_with_the_weights_of_one_without(tmp_path, tiny_data):
    config = _config()
    whole = Trainer(_fresh_model(0), config, tiny_data, tmp_path / "whole", progress=False, workers=0)
    whole.fit()
    first = Trainer(_fresh_model(0), config, tiny_data, tmp_path / "split", progress=False, workers=2)
    first.fit(stop_after=3)
    second = Trainer(_fresh_model(1), config, tiny_data, tmp_path / "split", progress=False, workers=2)
    second.fit(resume=True)
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_non_finite_loss_stops_the_run_naming_the_step(tiny_data, tmp_path):
    model = _fresh_model(0)
    with torch.no_grad():
        model.llm.norm.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 0"):
        Trainer(model, _config(), tiny_data, tmp_path, progress=False).fit()


def test_a_short_run_learns_and_the_evaluation_runs_on_it(tmp_path):
    config = _config(steps=60, batch_size=8, grad_accum=1, residual_dropout=0.0, lr_connector=3e-3, lr_vit=1e-3,
                     lr_llm=3e-3, warmup_connector=5, warmup_vit=5, warmup_llm=5, log_every=5, save_every=60,
                     examples=64)
    trainer = Trainer(_fresh_model(0), config, stage_data(config), tmp_path, progress=False)
    history = trainer.fit()
    first, last = history[0]["loss"], history[-1]["loss"]
    assert math.isfinite(last) and last < 0.6 * first, (first, last)
    sets = {task: examples[:3] for task, examples in heldout_sets(3, size=56).items()}
    report = evaluate(trainer.model, sets, batch_size=3)
    assert set(report["metrics"]) == set(sets) and all(len(report["predictions"][t]) == 3 for t in sets)
    assert json.loads(json.dumps(report))["metrics"]["pointing"]["f1"] >= 0.0
    assert "| pointing | f1 |" in metrics_table(report)


def test_the_small_preset_builds_and_takes_a_training_step(tmp_path):
    """The one-GPU preset, on CPU: 112 px crops, a model ~10x the tiny one; one step of its SFT preset runs."""
    from dataclasses import replace

    from molmo_lite.config import TRAIN_PRESETS
    from molmo_lite.train import build_model

    model = build_model("small")
    tiny = sum(p.numel() for p in MolmoLite("tiny").parameters())
    assert sum(p.numel() for p in model.parameters()) > 10 * tiny
    config = replace(TRAIN_PRESETS["small-sft"], steps=1, batch_size=2, examples=4, save_every=10)
    history = Trainer(model, config, stage_data(config), tmp_path, progress=False).fit()
    assert math.isfinite(history[-1]["loss"])


def test_saving_never_deletes_the_checkpoint_it_just_wrote(tmp_path):
    """A shorter run written into a folder left by a longer one: step 3 must survive although 'later' folders exist."""
    from molmo_lite.train import read_training_state, save_training_state

    model = _fresh_model(0)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    optimizer = {"state": {}, "param_groups": []}
    for step in (100, 200):  # the earlier, longer run
        save_training_state(tmp_path, model, state, optimizer, step, [], _config())
    for step in (1, 2, 3):
        save_training_state(tmp_path, model, state, optimizer, step, [], _config())
        assert latest_checkpoint(tmp_path).exists()
    assert read_training_state(latest_checkpoint(tmp_path))[2] == 3
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000002", "step_000003", "step_000100",
                                                             "step_000200"]


def _question_first_model(seed: int) -> MolmoLite:
    from dataclasses import replace

    from molmo_lite.config import MOLMO_PRESETS

    torch.manual_seed(seed)
    return MolmoLite(replace(MOLMO_PRESETS["tiny"], question_first=True))


def test_a_muon_run_of_one_annotation_per_row_resumes_exactly(tmp_path, tiny_data):
    """The oracle's recipe in the trainer (Muon for the hidden matrices, AdamW for the rest; one annotation per row,
    its question before the image): killed after 3 steps and resumed, it ends with the weights of a run that never
    stopped, the Muon momentum and the AdamW moments both read back by parameter name."""
    config = _config(optimizer="muon", rows="one", residual_dropout=0.0)
    whole = Trainer(_question_first_model(0), config, tiny_data, tmp_path / "whole", progress=False)
    assert isinstance(whole.optimizer, Optimizers)
    whole.fit()
    Trainer(_question_first_model(0), config, tiny_data, tmp_path / "split", progress=False).fit(stop_after=3)
    second = Trainer(_question_first_model(1), config, tiny_data, tmp_path / "split", progress=False)
    second.fit(resume=True)
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in second.history]


def test_muon_takes_exactly_the_linear_weights_of_the_groups_that_train():
    model = MolmoLite("tiny")
    optimizer = build_optimizer(model, _config(optimizer="muon", freeze=("vit",)))
    muon, adamw = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    linear = {id(m.weight) for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and not name.startswith("vision.")}
    assert in_muon == linear and not in_muon & in_adamw
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_muon | in_adamw == trainable and not any(p.requires_grad for p in model.vision.parameters())
    assert {g["name"] for g in muon.param_groups} == {"connector", "llm"}
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(model, _config(optimizer="sgd"))


def test_one_annotation_rows_draw_one_of_the_examples_annotations(tiny_data):
    model = _question_first_model(0)
    config = _config(rows="one")
    for step in range(3):
        for packed, _ in step_examples(tiny_data, model, config, step):
            assert packed.n_annotations == 1 and set(packed.loss_weights[packed.loss_weights > 0].tolist()) == {1.0}


def test_the_image_path_cannot_silently_break(tmp_path):
    """The course's image path (CLAIM_EYES: the shipped claim ViT, frozen, its cell decisions in the connector) and
    the trainer's o16 rows (Muon, the question first, one annotation per row) on scenes of one object or none, asked
    to point at it or count it: after 600 steps the answer loss of held-out scenes with their own images is clearly
    below the loss with each question asked of another scene's image (0.47 against 0.68 when calibrated; equal at
    300 steps). If the image stopped reaching the LLM (a broken preprocessor, connector or token layout) the two
    would stay equal. The connector trains here (2e-3), which starts the reading sooner than `make run`'s frozen one.
    About 100 seconds on 2 cores."""
    from molmo_lite.config import CLAIM_EYES
    from molmo_lite.data.examples import Example, examples_of
    from molmo_lite.data.synthetic import pointing_example
    from molmo_lite.evaluate import answer_loss, shuffled_images
    from molmo_lite.train import tiny_model

    def scene(rng):  # its pointing and counting annotations (the third asks for a class never there)
        ex = pointing_example(rng, size=56, max_count=1, max_distractors=0)
        return Example(ex.image, ex.messages[:2], ex.task, ex.meta)

    model = tiny_model(0, eyes=CLAIM_EYES, lm="random")
    config = TrainConfig(stage="sft", steps=600, batch_size=8, grad_accum=2, optimizer="muon", rows="one",
                         freeze=("vit",), lr_llm=2e-3, lr_connector=2e-3, warmup_llm=20, warmup_connector=20,
                         sort_by_length=True, log_every=50, save_every=10**6)
    Trainer(model, config, StageData({"pointing": scene}), tmp_path, progress=False).fit()
    held = examples_of(scene, 48, 0, "heldout")
    true, shuffled = answer_loss(model, held, "pointing"), answer_loss(model, shuffled_images(held), "pointing")
    assert true < 0.85 * shuffled, (true, shuffled)

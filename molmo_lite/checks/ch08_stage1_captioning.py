"""Chapter 08 exercise checks: the trainer's pieces, compared with molmo_lite.train and molmo_lite.model."""

from __future__ import annotations

import random
from typing import Any

from molmo_lite.grading_core import (
    _compare_on_cases,
    _float_array_mismatch,
    _student_function,
    _torch_generator,
    _with_hint,
    check,
)


@check("08_stage1_captioning", "lr_at")
def check_lr_at(namespace: dict) -> None:
    """lr_at(step, peak, warmup, total, final) equals peak * molmo_lite.train.lr_factor(step, warmup, total, final)
    on 60 cases (during warmup, at its end, through the cosine, at the last step, no warmup)."""
    from molmo_lite.train import lr_factor

    rng = random.Random(81)
    cases = []
    for _ in range(60):
        total = rng.choice((10, 100, 2000))
        warmup = rng.choice((0, 1, total // 10, total // 2))
        cases.append((rng.choice((0, warmup - 1 if warmup else 0, warmup, rng.randrange(total), total)),
                      rng.choice((1e-3, 2e-4)), warmup, total, rng.choice((0.1, 0.0))))

    def reference(step: int, peak: float, warmup: int, total: int, final: float) -> tuple:
        import math

        expected = peak * lr_factor(step, warmup, total, final)
        progress = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        wrong = {"the warmup counts from 0: step s of the warmup gives (s + 1) / warmup of the peak":
                 peak * (step / warmup if warmup and step < warmup else lr_factor(step, warmup, total, final) / 1),
                 "cosine down to 0; Molmo stops at final (10%) of the peak":
                 peak * (lr_factor(step, warmup, total, final) if step < warmup else
                         0.5 * (1 + math.cos(math.pi * progress)))}
        return expected, wrong

    student = _student_function(namespace, "lr_at")
    _compare_on_cases("lr_at", ("step", "peak", "warmup", "total", "final"), student, reference, cases,
                      _with_hint(lambda got, exp: _float_array_mismatch(got, exp, tolerance=1e-9)))


@check("08_stage1_captioning", "molmo_groups")
def check_molmo_groups(namespace: dict) -> None:
    """molmo_groups(model) puts every parameter name of a tiny MolmoLite in the group molmo_lite.train.parameter_groups
    puts it in (connector with the new token rows, vit, llm)."""
    import torch

    from molmo_lite.model import MolmoLite
    from molmo_lite.train import parameter_groups

    torch.manual_seed(0)
    model = MolmoLite("tiny")
    ids = {id(p): name for name, p in model.named_parameters()}
    expected = {group: sorted(ids[id(p)] for p in params) for group, params in parameter_groups(model).items()}
    got = _student_function(namespace, "molmo_groups")(model)
    if not isinstance(got, dict) or set(got) != set(expected):
        raise AssertionError(f"molmo_groups(model) returned {type(got).__name__} with keys "
                             f"{sorted(got) if isinstance(got, dict) else '-'}, expected keys {sorted(expected)}")
    for group in expected:
        mine = sorted(got[group])
        if mine != expected[group]:
            extra, missing = sorted(set(mine) - set(expected[group])), sorted(set(expected[group]) - set(mine))
            hint = " (the new token rows, llm.embed.new, train with the connector)" if any(
                "embed.new" in n for n in extra + missing) else ""
            raise AssertionError(f"group {group!r}: {len(extra)} names too many (e.g. {extra[:2]}), {len(missing)} "
                                 f"missing (e.g. {missing[:2]}){hint}")


@check("08_stage1_captioning", "global_batch_loss")
def check_global_batch_loss(namespace: dict) -> None:
    """global_batch_loss(per_token, weights) equals the sum over micro-batches of molmo_lite.model.answer_loss with
    the global count as normaliser, on 20 random accumulations of 1-4 micro-batches."""
    import torch

    rng, gen = random.Random(82), _torch_generator(82)
    cases = []
    for _ in range(20):
        micro = rng.randint(1, 4)
        ce = [torch.rand(rng.randint(1, 3), rng.randint(2, 7), generator=gen) * 5 for _ in range(micro)]
        w = [torch.where(torch.rand(c.shape, generator=gen) < 0.6, torch.tensor(rng.choice((1.0, 0.5 ** 0.5))),
                         torch.tensor(0.0)) for c in ce]
        w[0].view(-1)[0] = 1.0
        cases.append((ce, w))

    def reference(per_token: list, weights: list) -> tuple:
        total = sum(int((w > 0).sum()) for w in weights)
        expected = sum((c * w).sum() for c, w in zip(per_token, weights)) / total
        per_micro = sum((c * w).sum() / (w > 0).sum().clamp(min=1) for c, w in zip(per_token, weights)) / len(weights)
        return expected, {"a mean of the micro-batches' own losses; divide the total by the tokens of ALL of them":
                          per_micro}

    student = _student_function(namespace, "global_batch_loss")
    _compare_on_cases("global_batch_loss", ("per_token", "weights"), student, reference, cases,
                      _with_hint(_float_array_mismatch))


@check("08_stage1_captioning", "embedding_norms")
def check_embedding_norms(namespace: dict) -> None:
    """embedding_norms(model, batch) equals molmo_lite.train.embedding_norms (mean norm of the image features added
    at <im_patch> and of the text token embeddings) on two tiny models: Molmo's connector and the course's."""
    import math
    from dataclasses import replace

    import torch

    from molmo_lite.config import MOLMO_PRESETS, TrainConfig
    from molmo_lite.model import MolmoLite
    from molmo_lite.train import embedding_norms, stage_data, step_batches

    student = _student_function(namespace, "embedding_norms")
    config = TrainConfig(stage="sft", steps=1, batch_size=4, examples=8)
    for options in ({"feature_norm": 0, "init_scale": 1.0}, {"feature_norm": 2, "init_scale": 3.0}):
        torch.manual_seed(0)
        preset = MOLMO_PRESETS["tiny"]
        model = MolmoLite(replace(preset, connector=replace(preset.connector, **options)))
        batch = step_batches(stage_data(config), model, config, 0)[0]
        expected, got = embedding_norms(model, batch), student(model, batch)
        if not isinstance(got, dict) or set(got) != {"image", "text"}:
            raise AssertionError(f"embedding_norms returned {got!r}; expected a dict with keys 'image' and 'text'")
        for key in ("image", "text"):
            if not math.isclose(float(got[key]), expected[key], rel_tol=1e-4):
                hint = (" (only real tokens: attention_mask 1, and none of the image tokens)" if key == "text" else
                        " (the connector's output for the batch's crops: one row per <im_patch>)")
                raise AssertionError(f"connector {options}: {key} norm {float(got[key]):.4f}, expected "
                                     f"{expected[key]:.4f}{hint}")

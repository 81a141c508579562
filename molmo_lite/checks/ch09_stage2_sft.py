"""Chapter 09 exercise checks: the SFT mixture's pieces, compared with molmo_lite.prompts and molmo_lite.train."""

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


class _Draw:
    """An rng whose random() returns a fixed number: user_prompt's style rule with a known draw."""

    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


def _str_mismatch(got: Any, expected: Any) -> str | None:
    return None if got == expected else f"returned {got!r}, expected {expected!r}"


@check("09_stage2_sft", "style_prompt")
def check_style_prompt(namespace: dict) -> None:
    """style_prompt(question, style, draw) equals molmo_lite.prompts.user_prompt(question, style, rng) for an rng whose
    random() is draw, on 60 cases (academic, demo and no styles; draws below and above 0.1)."""
    from molmo_lite.prompts import user_prompt

    rng = random.Random(91)
    styles = (None, "vqa2", "clocks", "pixmo_docs_charts", "point_qa", "pointing", "point_count", "user_qa")
    cases = [(rng.choice(("How many?", "What time is it?", "Point to the cat")), rng.choice(styles),
              rng.choice((0.0, 0.05, 0.0999, 0.1, 0.5, 0.99))) for _ in range(60)]

    def reference(question: str, style: str | None, draw: float) -> tuple:
        expected = user_prompt(question, style, _Draw(draw))
        wrong = {"every style prefixed: demo styles (pointing, point_count, user_qa, long_caption) only when the "
                 "draw is below 0.1": f" User: {style}: {question} Assistant:" if style else expected,
                 "no style prefix at all: academic styles (vqa2, clocks, ...) always carry it":
                 f" User: {question} Assistant:"}
        return expected, wrong

    student = _student_function(namespace, "style_prompt")
    _compare_on_cases("style_prompt", ("question", "style", "draw"), student, reference, cases,
                      _with_hint(_str_mismatch))


@check("09_stage2_sft", "annotation_losses")
def check_annotation_losses(namespace: dict) -> None:
    """annotation_losses(per_token, subsegment_ids, weights) gives, per annotation k, the mean cross-entropy of its
    tokens with weight > 0, on 20 random packed rows (checked against a direct computation)."""
    import torch

    rng, gen = random.Random(92), _torch_generator(92)
    cases = []
    for _ in range(20):
        n = rng.randint(1, 4)
        seg = torch.tensor([10000] * rng.randint(1, 5) + [k for k in range(1, n + 1) for _ in range(rng.randint(2, 6))])
        weights = (torch.rand(len(seg), generator=gen) < 0.6).float() * (1 / n) ** 0.5
        weights[seg == 10000] = 0.0
        for k in range(1, n + 1):
            weights[(seg == k).nonzero()[-1]] = (1 / n) ** 0.5  # every annotation has a loss token
        cases.append((torch.rand(len(seg), generator=gen) * 4, seg, weights))

    def reference(per_token: Any, seg: Any, weights: Any) -> tuple:
        keys = sorted(int(k) for k in seg.unique() if k != 10000)
        expected = [float(per_token[(seg == k) & (weights > 0)].mean()) for k in keys]
        weighted = [float((per_token * weights)[(seg == k)].sum() / ((seg == k) & (weights > 0)).sum()) for k in keys]
        return expected, {"weighted by sqrt(1/N): the per-annotation loss is a plain mean over its answer tokens":
                          weighted}

    student = _student_function(namespace, "annotation_losses")

    def as_list(per_token: Any, seg: Any, weights: Any) -> list:
        got = student(per_token, seg, weights)
        return [float(got[k]) for k in sorted(got)]

    _compare_on_cases("annotation_losses", ("per_token", "subsegment_ids", "weights"), as_list, reference, cases,
                      _with_hint(_float_array_mismatch))


@check("09_stage2_sft", "pick_datasets")
def check_pick_datasets(namespace: dict) -> None:
    """pick_datasets(rates, draws) maps uniform draws in [0, 1) to dataset names by the cumulative rates (in the
    dict's order), as numpy's Generator.choice does, on 20 random mixtures."""
    import numpy as np

    rng = random.Random(93)
    cases = []
    for _ in range(20):
        names = [f"set{i}" for i in range(rng.randint(1, 6))]
        raw = [rng.random() + 0.01 for _ in names]
        rates = {n: r / sum(raw) for n, r in zip(names, raw)}
        cases.append((rates, [rng.random() for _ in range(rng.randint(1, 30))]))

    def reference(rates: dict, draws: list) -> list:
        edges = np.cumsum(list(rates.values()))
        edges /= edges[-1]
        return [list(rates)[int(np.searchsorted(edges, u, side="right"))] for u in draws]

    student = _student_function(namespace, "pick_datasets")
    _compare_on_cases("pick_datasets", ("rates", "draws"), student, reference, cases,
                      lambda got, exp: None if list(got) == exp else f"returned {list(got)[:6]}..., expected "
                      f"{exp[:6]}...")


@check("09_stage2_sft", "untrained_groups")
def check_untrained_groups(namespace: dict) -> None:
    """untrained_groups(model, before, after) names the Molmo groups none of whose parameters changed between the
    two state dicts: checked on 2 real training steps with each group frozen in turn, and with none frozen."""
    import copy

    import torch

    from molmo_lite.config import TrainConfig
    from molmo_lite.model import MolmoLite
    from molmo_lite.train import Trainer, stage_data

    student = _student_function(namespace, "untrained_groups")
    base = dict(stage="sft", steps=2, batch_size=2, examples=4, warmup_connector=1, warmup_vit=1, warmup_llm=1,
                save_every=10**6, log_every=1)
    data = stage_data(TrainConfig(**base))
    for frozen in ((), ("connector",), ("vit",), ("llm", "vit")):
        torch.manual_seed(0)
        model = MolmoLite("tiny")
        before = copy.deepcopy(model.state_dict())
        Trainer(model, TrainConfig(**base, freeze=frozen), data, "/nonexistent", progress=False).train_step(0)
        got = student(model, before, model.state_dict())
        if sorted(got) != sorted(frozen):
            raise AssertionError(f"with {list(frozen) or 'nothing'} frozen, untrained_groups returned {sorted(got)}"
                                 " (a group is untrained when NONE of its parameters moved; the new token rows "
                                 "llm.embed.new belong to the connector)")

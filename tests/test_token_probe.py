"""The linear probe of benchmarks/token_probe.py (docs/recipes.md: where the positions of crowded scenes are lost)."""

from __future__ import annotations

import numpy as np

from benchmarks.token_probe import auc, colour_counts, occupancy, ridge_probe, scenes


def test_auc_ranks_like_the_definition():
    labels = np.array([[0, 1], [0, 0], [1, 1], [1, 0]], dtype=float)
    scores = np.array([[0.1, 0.9], [0.2, 0.1], [0.8, 0.7], [0.3, 0.2]])
    # column 0: both positives above both negatives -> 1; column 1: pairs (0.9, 0.7) vs (0.1, 0.2): 1 as well
    assert np.allclose(auc(scores, labels), [1.0, 1.0])
    assert np.allclose(auc(-scores, labels), [0.0, 0.0])
    ties = auc(np.zeros((4, 1)), labels[:, :1])
    assert np.allclose(ties, [0.5])


def test_the_probe_reads_what_is_linearly_there_and_nothing_else():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 20))
    y = (x[:, :3] > 0).astype(np.float32)  # three questions answered by three of the features
    informed = ridge_probe(x[:500], y[:500], x[500:], y[500:])
    blind = ridge_probe(rng.normal(size=(500, 20)), y[:500], rng.normal(size=(100, 20)), y[500:])
    assert informed["auc"] > 0.9 and abs(blind["auc"] - 0.5) < 0.1


def test_occupancy_and_the_control_describe_the_scene():
    examples = scenes(5, "heldout")
    grid = occupancy(examples, 4)
    assert grid.shape == (5, 8 * 16)
    for ex, row in zip(examples, grid):
        assert row.sum() <= len(ex.meta["objects"]) and row.sum() >= 1 - (len(ex.meta["objects"]) == 0)
    counts = colour_counts(examples)
    assert counts[:, 8:].sum() == sum(len(ex.meta["objects"]) for ex in examples)

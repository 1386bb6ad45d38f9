"""Shapley values (docs/methods.md §6) on toy value functions whose answers are known."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from brats_cggm.core.shapley import all_subsets, mask_modalities, shapley_values


def test_additive_game_gives_the_weights():
    weights = {"a": 0.1, "b": 0.5, "c": -0.2, "d": 0.3}
    phi, values = shapley_values(lambda s: sum(weights[m] for m in s), list(weights))
    assert phi == pytest.approx(weights)
    assert len(values) == 16


def test_unanimity_game_splits_equally():
    phi, _ = shapley_values(lambda s: float({"a", "b"} <= set(s)), ["a", "b", "c"])
    assert phi == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})


def test_hand_computed_two_player_game():
    table = {(): 0.0, ("x",): 0.6, ("y",): 0.2, ("x", "y"): 1.0}
    phi, _ = shapley_values(lambda s: table[tuple(s)], ["x", "y"])
    # φ_x = ½(0.6 − 0) + ½(1.0 − 0.2) = 0.7, φ_y = ½(0.2) + ½(0.4) = 0.3
    assert phi == pytest.approx({"x": 0.7, "y": 0.3})


def test_efficiency_vector_values_and_one_call_per_subset():
    rng = random.Random(0)
    table = {frozenset(s): torch.tensor([rng.random(), rng.random(), rng.random()]) for s in all_subsets("abcd")}
    calls = []

    def value(s):
        calls.append(s)
        return table[frozenset(s)]

    phi, _ = shapley_values(value, "abcd")
    assert len(calls) == 16 and len(set(calls)) == 16
    torch.testing.assert_close(sum(phi.values()), table[frozenset("abcd")] - table[frozenset()])


def test_symmetric_players_get_equal_values():
    phi, _ = shapley_values(lambda s: len(s) ** 2, range(4))
    assert all(v == pytest.approx(4.0) for v in phi.values())  # 16 / 4


def test_mask_modalities_zeroes_the_others():
    x = torch.ones(2, 4, 3)
    masked = mask_modalities(x, [1, 3])
    assert masked[:, [1, 3]].eq(1).all() and masked[:, [0, 2]].eq(0).all()
    assert mask_modalities(x, []).eq(0).all()
    assert len(list(itertools.chain(all_subsets(range(4))))) == 16

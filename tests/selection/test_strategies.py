"""Selection rules on toy embeddings whose answer is known (docs/methods.md §8.3, §8.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brats_cggm.selection.strategies import (
    STRATEGIES,
    concatenated_features,
    probcover_delta,
    select,
    select_kmeans,
    select_mmcsal,
    select_probcover,
    select_random,
    select_typiclust,
    typicality,
)

pytest.importorskip("sklearn")


def _clusters(sizes=(6, 4), spread=0.01, seed=0) -> np.ndarray:
    """Tight 2-D clusters around far apart centres (as features: rows, no modality axis)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    rows = [centres[c] + spread * rng.standard_normal((n, 2)) for c, n in enumerate(sizes)]
    return np.concatenate(rows)


def _multimodal(features: np.ndarray, modalities: int = 2) -> torch.Tensor:
    """(N, M, d) embeddings with every modality equal to the (normalised) features."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    return torch.tensor(np.repeat(unit[:, None, :], modalities, axis=1))


def _cluster_of(index: int, sizes=(6, 4)) -> int:
    return int(np.searchsorted(np.cumsum(sizes), index, side="right"))


def test_typicality_by_hand():
    features = np.array([[0.0], [1.0], [3.0]])
    # squared distances to the nearest other: 1, 1, 4 -> 1 / (d + 1e-5)
    assert typicality(features, 1) == pytest.approx([1 / (1 + 1e-5), 1 / (1 + 1e-5), 1 / (4 + 1e-5)])
    # two neighbours: (1 + 9) / 2, (1 + 4) / 2, (9 + 4) / 2
    assert typicality(features, 2) == pytest.approx([1 / 5.00001, 1 / 2.50001, 1 / 6.50001])


def test_probcover_takes_one_case_per_tight_cluster_largest_first():
    features = _clusters()
    chosen = select_probcover(features, 2, seed=0)
    assert [_cluster_of(i) for i in chosen.indices] == [0, 1]
    # the purity rule's delta covers each cluster and nothing across: full coverage, 6 then 4 new cases
    assert chosen.scores == [6.0, 4.0]
    assert chosen.details["coverage"] == 1.0


def test_probcover_delta_stays_below_the_distance_between_clusters():
    features = _clusters()
    delta = probcover_delta(features, 2)
    within = np.linalg.norm(features[:6, None] - features[None, :6], axis=-1).max()
    between = np.linalg.norm(features[:6, None] - features[None, 6:], axis=-1).min()
    # the largest pure radius: every within-cluster pair inside a ball, the nearest cross pair not (d < delta)
    assert within < delta == pytest.approx(between)


def test_probcover_falls_back_to_the_seeded_order_once_all_is_covered():
    features = _clusters()
    chosen = select_probcover(features, 4, seed=3, delta=0.5)
    assert len(set(chosen.indices)) == 4
    assert chosen.scores == [6.0, 4.0, 0.0, 0.0]
    rest = [i for i in np.random.default_rng(3).permutation(10) if i not in chosen.indices[:2]]
    assert chosen.indices[2:] == [int(i) for i in rest[:2]]


def test_typiclust_picks_the_most_typical_case_of_each_cluster():
    # cluster a on a line: with k = 6 // 2 = 3 neighbours, x = 0.32 (index 3) has the smallest mean squared
    # distance ((1 + 4 + 4) / 3 * 1e-4, against 11/3 for 0.31 and 7 for 0.30)
    a = np.array([[x, 0.0] for x in (0.0, 0.30, 0.31, 0.32, 0.34, 0.6)])
    b = a + np.array([0.0, 5.0])
    b[[0, 3]] = b[[3, 0]]  # its most typical case at index 6
    features = np.concatenate([a, b])
    chosen = select_typiclust(features, 2, seed=0)
    assert sorted(chosen.indices) == [3, 6]
    assert chosen.scores[chosen.indices.index(3)] == pytest.approx(1 / (3e-4 + 1e-5))
    assert chosen.details["size_filter"] is True


def test_typiclust_drops_the_size_filter_on_a_tiny_pool():
    chosen = select_typiclust(_clusters((3, 2)), 2, seed=0)
    assert sorted(_cluster_of(i, (3, 2)) for i in chosen.indices) == [0, 1]
    assert chosen.details["size_filter"] is False


def test_kmeans_takes_the_case_nearest_each_centroid():
    features = _clusters((5, 3))
    chosen = select_kmeans(features, 2, seed=0)
    assert [_cluster_of(i, (5, 3)) for i in chosen.indices] == [0, 1]
    for i, score in zip(chosen.indices, chosen.scores):
        members = features[:5] if i < 5 else features[5:]
        assert -score == pytest.approx(np.linalg.norm(features[i] - members.mean(axis=0)))
        assert -score == pytest.approx(np.linalg.norm(members - members.mean(axis=0), axis=1).min())


def test_mmcsal_covers_both_clusters_and_prefers_aligned_cases():
    features = _clusters((6, 4))
    emb = _multimodal(features)
    chosen = select_mmcsal(emb, 2, seed=0)
    assert sorted(_cluster_of(i) for i in chosen.indices) == [0, 1]
    # a case whose second modality points elsewhere is passed over for its aligned neighbours
    bad = emb.clone()
    bad[0, 1] = torch.tensor([0.0, -1.0], dtype=bad.dtype)
    for seed in range(3):
        assert 0 not in select_mmcsal(bad, 2, seed=seed, lambda_align=1.0).indices


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_is_deterministic_per_seed_and_returns_distinct_cases(strategy: str):
    emb = _multimodal(_clusters((6, 4, 5), spread=0.2))
    first = select(strategy, emb, 4, seed=7)
    again = select(strategy, emb, 4, seed=7)
    assert first.indices == again.indices and first.scores == again.scores
    assert len(set(first.indices)) == 4 and len(first.scores) == 4


def test_random_draws_differ_between_seeds():
    draws = {tuple(select_random(30, 5, seed=s).indices) for s in range(5)}
    assert len(draws) == 5


@pytest.mark.parametrize("budget", [0, 11])
def test_budget_outside_the_pool_is_an_error_naming_the_numbers(budget: int):
    emb = _multimodal(_clusters())
    with pytest.raises(ValueError, match=str(budget)):
        select("kmeans", emb, budget)


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="coreset"):
        select("coreset", _multimodal(_clusters()), 2)


def test_concatenated_features_are_unit_rows():
    rows = concatenated_features(torch.randn(5, 3, 4))
    assert rows.shape == (5, 12)
    assert np.linalg.norm(rows, axis=1) == pytest.approx(np.ones(5))

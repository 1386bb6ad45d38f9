"""Cold-start selection strategies on per-case embeddings (docs/methods.md §8.3, §8.4).

``select_mmcsal`` is the reconstructed MMCSAL stage 2; ``select_random``, ``select_kmeans``,
``select_typiclust`` and ``select_probcover`` are the baselines, following the official TypiClust/ProbCover
code (``deep-al/pycls/al/typiclust.py``, ``prob_cover.py``) where it defines them. Every function returns a
:class:`Selection` of pool indices with one score each; every one is deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from brats_cggm.selection.losses import misalignment, multimodal_similarity, selection_objective

__all__ = [
    "STRATEGIES",
    "Selection",
    "check_budget",
    "concatenated_features",
    "probcover_delta",
    "select",
    "select_kmeans",
    "select_mmcsal",
    "select_probcover",
    "select_random",
    "select_typiclust",
    "typicality",
]


@dataclass
class Selection:
    """Chosen pool indices, in the order chosen, with one score each (its meaning depends on the strategy).

    Attributes:
        strategy: the strategy's name.
        indices: pool indices.
        scores: one float per index.
        details: strategy settings worth recording (e.g. ProbCover's ``delta``).
    """

    strategy: str
    indices: list[int]
    scores: list[float]
    details: dict[str, Any] = field(default_factory=dict)


def check_budget(budget: int, pool_size: int) -> None:
    """Raise ``ValueError`` naming both numbers unless ``1 <= budget <= pool_size``."""
    if budget < 1:
        raise ValueError(f"the budget must be at least 1, got {budget}.")
    if budget > pool_size:
        raise ValueError(f"the budget ({budget}) is larger than the pool ({pool_size} cases).")


def concatenated_features(embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
    """The baselines' features: the modalities' embeddings concatenated and L2-normalised, (N, M*d) float64."""
    array = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


def _kmeans(features: np.ndarray, num_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.cluster import KMeans
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "k-means, TypiClust and ProbCover need scikit-learn: pip install 'brats-cggm[selection]'."
        ) from exc
    km = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(features)
    return km.labels_.astype(int), km.cluster_centers_


def select_random(pool_size: int, budget: int, seed: int = 0) -> Selection:
    """``budget`` cases drawn without replacement by ``numpy.random.default_rng(seed)``; scores 0."""
    check_budget(budget, pool_size)
    chosen = np.random.default_rng(seed).choice(pool_size, size=budget, replace=False)
    return Selection("random", [int(i) for i in chosen], [0.0] * budget)


def select_kmeans(features: np.ndarray, budget: int, seed: int = 0) -> Selection:
    """The case nearest to each of ``budget`` k-means centroids; clusters by decreasing size.

    Args:
        features: (N, D) features.
        budget: number of cases (= clusters).
        seed: k-means' ``random_state``.

    Returns:
        Scores: minus the distance of the chosen case to its centroid.
    """
    check_budget(budget, len(features))
    labels, centres = _kmeans(features, budget, seed)
    sizes = np.bincount(labels, minlength=budget)
    indices, scores = [], []
    for c in sorted(range(budget), key=lambda c: (-sizes[c], c)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        dist = np.linalg.norm(features[members] - centres[c], axis=1)
        indices.append(int(members[dist.argmin()]))
        scores.append(-float(dist.min()))
    return Selection("kmeans", indices, scores)


def typicality(features: np.ndarray, num_neighbors: int) -> np.ndarray:
    """TypiClust's typicality, ``1 / (mean squared L2 distance to the k nearest others + 1e-5)``.

    As the official ``calculate_typicality`` (faiss ``IndexFlatL2`` returns squared distances).

    Args:
        features: (n, D).
        num_neighbors: ``k``; 0 gives ``1e5`` for every row (no neighbour to measure).

    Returns:
        (n,) typicality.
    """
    if num_neighbors <= 0:
        return np.full(len(features), 1e5)
    sq = ((features[:, None, :] - features[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(sq, np.inf)
    nearest = np.sort(sq, axis=1)[:, :num_neighbors]
    return 1.0 / (nearest.mean(axis=1) + 1e-5)


def select_typiclust(
    features: np.ndarray,
    budget: int,
    seed: int = 0,
    min_cluster_size: int = 5,
    k_nn: int = 20,
    max_clusters: int = 500,
) -> Selection:
    """TypiClust (§8.4): the most typical remaining case of clusters taken by decreasing size, cyclically.

    Args:
        features: (N, D) features.
        budget: number of cases.
        seed: k-means' ``random_state``.
        min_cluster_size: clusters of this size or smaller are dropped (official ``MIN_CLUSTER_SIZE``); if
            that drops every cluster, none is dropped (ours).
        k_nn: ``K_NN``; per cluster ``min(k_nn, n_c // 2)`` neighbours.
        max_clusters: ``MAX_NUM_CLUSTERS``.

    Returns:
        Scores: the typicality of each chosen case in its cluster.
    """
    check_budget(budget, len(features))
    num_clusters = min(budget, max_clusters)
    labels, _ = _kmeans(features, num_clusters, seed)
    ids, sizes = np.unique(labels, return_counts=True)
    order = [int(c) for c, s in sorted(zip(ids, sizes), key=lambda t: (-t[1], t[0])) if s > min_cluster_size]
    filtered = bool(order)
    if not order:
        order = [int(c) for c, s in sorted(zip(ids, sizes), key=lambda t: (-t[1], t[0]))]
    labels = labels.copy()
    indices, scores = [], []
    for t in range(budget):
        cluster = order[t % len(order)]
        members = np.flatnonzero(labels == cluster)
        if len(members) == 0:  # a cluster used up (tiny pools): take the next one with cases left
            remaining = [c for c in order if np.any(labels == c)]
            cluster = remaining[0]
            members = np.flatnonzero(labels == cluster)
        typ = typicality(features[members], min(k_nn, len(members) // 2))
        best = int(typ.argmax())
        indices.append(int(members[best]))
        scores.append(float(typ[best]))
        labels[members[best]] = -1
    return Selection("typiclust", indices, scores, {"clusters": num_clusters, "size_filter": filtered})


def _pairwise_distances(features: np.ndarray) -> np.ndarray:
    sq = ((features[:, None, :] - features[None, :, :]) ** 2).sum(axis=-1)
    return np.sqrt(np.maximum(sq, 0.0))


def probcover_delta(features: np.ndarray, num_clusters: int, alpha: float = 0.95, seed: int = 0) -> float:
    """ProbCover's ball radius: the largest ``delta`` whose balls are pure for at least ``alpha`` of the cases.

    A case's ball ``{y: ||x - y|| < delta}`` is pure when every case in it has the case's k-means label
    (``num_clusters`` clusters). The candidates are the distinct pairwise distances (ours).

    Args:
        features: (N, D).
        num_clusters: k-means clusters for the pseudo-labels.
        alpha: the purity threshold.
        seed: k-means' ``random_state``.

    Returns:
        ``delta``.
    """
    labels, _ = _kmeans(features, num_clusters, seed)
    dist = _pairwise_distances(features)
    same = labels[:, None] == labels[None, :]
    candidates = np.unique(dist[dist > 0])
    best = float(candidates[0]) if len(candidates) else 1.0
    for delta in candidates:
        pure = np.all(same | (dist >= delta), axis=1).mean()
        if pure >= alpha:
            best = float(delta)
        else:
            break
    return best


def select_probcover(
    features: np.ndarray, budget: int, seed: int = 0, delta: float | None = None, alpha: float = 0.95
) -> Selection:
    """ProbCover's greedy max coverage (§8.4) on the graph ``x -> y iff ||f_x - f_y|| < delta``.

    Args:
        features: (N, D) features.
        budget: number of cases.
        seed: seeds k-means (for ``delta``) and the order of the cases taken once everything is covered.
        delta: the ball radius; None picks it with :func:`probcover_delta` (``budget`` clusters).
        alpha: the purity threshold for ``delta``.

    Returns:
        Scores: the number of cases each choice newly covered.
    """
    check_budget(budget, len(features))
    if delta is None:
        delta = probcover_delta(features, max(budget, 2) if len(features) > 1 else 1, alpha, seed)
    edges = _pairwise_distances(features) < delta  # edges[x, y]: x covers y
    covered = np.zeros(len(features), dtype=bool)
    chosen: list[int] = []
    scores: list[float] = []
    fallback = [int(i) for i in np.random.default_rng(seed).permutation(len(features))]
    for _ in range(budget):
        degrees = (edges & ~covered[None, :]).sum(axis=1)
        degrees[chosen] = -1
        if degrees.max() > 0:
            cur = int(degrees.argmax())
        else:
            cur = next(i for i in fallback if i not in chosen)
        new = edges[cur] & ~covered
        scores.append(float(new.sum()))
        covered |= new
        chosen.append(cur)
    return Selection("probcover", chosen, scores, {"delta": float(delta), "coverage": float(covered.mean())})


def _kmeans_plus_plus(embeddings: torch.Tensor, budget: int, seed: int) -> list[int]:
    # k-means++ seeding (D^2 sampling) with the distance 1 - s(i, j): ActiveFT starts from random cases, whose
    # centres cannot travel across a small pool's clusters within its few small steps
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(embeddings.shape[0]))]
    for _ in range(budget - 1):
        sim = multimodal_similarity(embeddings, embeddings[chosen]).max(dim=1).values
        weight = (1.0 - sim).clamp_min(0.0).numpy() ** 2
        weight[chosen] = 0.0
        if weight.sum() <= 0:
            weight = np.ones(len(weight))
            weight[chosen] = 0.0
        chosen.append(int(rng.choice(len(weight), p=weight / weight.sum())))
    return chosen


def select_mmcsal(
    embeddings: torch.Tensor,
    budget: int,
    seed: int = 0,
    temperature: float = 0.07,
    lambda_align: float = 0.5,
    steps: int = 300,
    learning_rate: float = 1e-3,
) -> Selection:
    """MMCSAL stage 2, reconstructed (§8.3): optimise ``L_sel`` over continuous centres, then match cases.

    Args:
        embeddings: (N, M, d) per-case embeddings, unit vectors per modality.
        budget: number of cases ``K``.
        seed: seeds the centres' initialisation (``K`` distinct cases by k-means++ seeding).
        temperature: ``tau_s``.
        lambda_align: weight of the alignment term (in the objective and in the matching).
        steps: Adam steps.
        learning_rate: Adam learning rate.

    Returns:
        Scores: ``s(i, j) - lambda_align * a_i`` of each chosen case ``i`` for its centre ``j``.
    """
    emb = torch.as_tensor(embeddings, dtype=torch.float64)
    if emb.ndim != 3:
        raise ValueError(f"MMCSAL needs (N, M, d) embeddings, got shape {tuple(emb.shape)}.")
    emb = F.normalize(emb, dim=-1)
    check_budget(budget, emb.shape[0])
    start = _kmeans_plus_plus(emb, budget, seed)
    centres = emb[start].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([centres], lr=learning_rate)
    for _ in range(steps):
        loss = selection_objective(emb, centres, temperature, lambda_align)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        match = multimodal_similarity(emb, F.normalize(centres, dim=-1)) - lambda_align * misalignment(emb)[:, None]
    taken = torch.zeros(emb.shape[0], dtype=torch.bool)
    indices, scores = [], []
    for j in range(budget):
        column = match[:, j].masked_fill(taken, float("-inf"))
        i = int(column.argmax())
        taken[i] = True
        indices.append(i)
        scores.append(float(column[i]))
    return Selection(
        "mmcsal",
        indices,
        scores,
        {"temperature": temperature, "lambda_align": lambda_align, "final_loss": float(loss.detach())},
    )


#: The strategies of :func:`select`, by name.
STRATEGIES: dict[str, Callable[..., Selection]] = {
    "mmcsal": select_mmcsal,
    "random": select_random,
    "kmeans": select_kmeans,
    "typiclust": select_typiclust,
    "probcover": select_probcover,
}


def select(strategy: str, embeddings: torch.Tensor, budget: int, seed: int = 0, **options: Any) -> Selection:
    """Run one strategy on (N, M, d) case embeddings.

    Args:
        strategy: a key of :data:`STRATEGIES`.
        embeddings: the pool's embeddings.
        budget: number of cases.
        seed: the strategy's seed.
        options: passed to the strategy.

    Returns:
        The selection.

    Raises:
        ValueError: an unknown strategy, or a budget outside ``[1, N]``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; available: {sorted(STRATEGIES)}.")
    if strategy == "mmcsal":
        return select_mmcsal(embeddings, budget, seed, **options)
    if strategy == "random":
        return select_random(len(embeddings), budget, seed)
    return STRATEGIES[strategy](concatenated_features(embeddings), budget, seed, **options)

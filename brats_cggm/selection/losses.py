"""Pure loss and distance functions of the MMCSAL reconstruction (docs/methods.md §8.2, §8.3).

Every function takes L2-normalised embeddings; none has state. Equation names refer to docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "cross_modal_info_nce",
    "misalignment",
    "modality_gap",
    "multimodal_similarity",
    "prototype_assignments",
    "prototype_loss",
    "selection_objective",
]


def _check_views(embeddings: Sequence[torch.Tensor]) -> None:
    if len(embeddings) < 2:
        raise ValueError(f"at least two modalities are needed, got {len(embeddings)}.")
    shapes = {tuple(e.shape) for e in embeddings}
    if len(shapes) != 1 or embeddings[0].ndim != 2:
        raise ValueError(f"expected one (B, d) tensor per modality, all of one shape; got {sorted(shapes)}.")


def cross_modal_info_nce(embeddings: Sequence[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """Symmetric cross-modal InfoNCE over every pair of modalities, :math:`\\mathcal L_{cm}` (§8.2).

    ``L = 1/(M(M-1)) sum_{m != m'} mean_b CE(z_b^m Z^{m'T} / tau, b)``: row ``b`` of modality ``m`` must find its
    own case among the batch's cases of modality ``m'``; the ordered pairs give CLIP's two directions.

    Args:
        embeddings: one (B, d) tensor of L2-normalised embeddings per modality, rows in the same case order.
        temperature: the softmax temperature ``tau``.

    Returns:
        The scalar loss.

    Raises:
        ValueError: fewer than two modalities, or tensors of different shapes.
    """
    _check_views(embeddings)
    targets = torch.arange(embeddings[0].shape[0], device=embeddings[0].device)
    losses = [
        F.cross_entropy(a @ b.T / temperature, targets)
        for i, a in enumerate(embeddings)
        for j, b in enumerate(embeddings)
        if i != j
    ]
    return torch.stack(losses).mean()


def prototype_assignments(embeddings: torch.Tensor, prototypes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Soft assignment of embeddings to prototypes, ``q_b = softmax_k(<z_b, c_k> / tau_p)`` (§8.2).

    Args:
        embeddings: (B, d) L2-normalised embeddings.
        prototypes: (P, d) prototype vectors (normalised here).
        temperature: ``tau_p``.

    Returns:
        (B, P) rows summing to 1.
    """
    return torch.softmax(embeddings @ F.normalize(prototypes, dim=1).T / temperature, dim=1)


def _entropy(q: torch.Tensor) -> torch.Tensor:
    return -(q * torch.log(q.clamp_min(1e-12))).sum(dim=-1)


def prototype_loss(
    embeddings: Sequence[torch.Tensor], prototypes: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Uni-modal prototype loss, :math:`\\mathcal L_{proto}` (§8.2).

    ``L = 1/M sum_m [ mean_b H(q_b^m) - H(mean_b q_b^m) ]`` with prototypes shared by the modalities: each
    modality commits each view to one prototype and spreads its views over all of them, so the modalities'
    embedding distributions are drawn to the same anchors (which closes the gap between their centroids).

    Args:
        embeddings: one (B, d) tensor of L2-normalised embeddings per modality.
        prototypes: (P, d) shared prototypes.
        temperature: ``tau_p``.

    Returns:
        The scalar loss, in ``[-log P, log P]``.
    """
    terms = []
    for z in embeddings:
        q = prototype_assignments(z, prototypes, temperature)
        terms.append(_entropy(q).mean() - _entropy(q.mean(dim=0)))
    return torch.stack(terms).mean()


def modality_gap(embeddings: Sequence[torch.Tensor]) -> float:
    """Mean distance between the modalities' embedding centroids (§8.2, "modality gap").

    ``gap = 2/(M(M-1)) sum_{m<m'} || mu^m - mu^{m'} ||_2`` with ``mu^m`` the mean of modality ``m``'s rows.

    Args:
        embeddings: one (N, d) tensor of embeddings per modality.

    Returns:
        The gap, a float.
    """
    _check_views(embeddings)
    centroids = [e.double().mean(dim=0) for e in embeddings]
    gaps = [
        torch.linalg.vector_norm(centroids[i] - centroids[j])
        for i in range(len(centroids))
        for j in range(i + 1, len(centroids))
    ]
    return float(torch.stack(gaps).mean())


def multimodal_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Uni- and cross-modal similarity of multimodal embeddings, ``s(i,j) = 1/M^2 sum_{m,m'} <a_i^m, b_j^{m'}>``.

    Args:
        a: (N, M, d) embeddings (unit vectors per modality).
        b: (K, M, d) embeddings.

    Returns:
        (N, K) similarities.
    """
    # sum over m, m' of <a^m, b^m'> equals <sum_m a^m, sum_m' b^m'>
    return a.sum(dim=1) @ b.sum(dim=1).T / (a.shape[1] * b.shape[1])


def misalignment(embeddings: torch.Tensor) -> torch.Tensor:
    """Cross-modal misalignment of each multimodal embedding, ``a = 1/(M(M-1)) sum_{m != m'} (1 - <e^m, e^{m'}>)``.

    Args:
        embeddings: (N, M, d) unit vectors per modality, ``M >= 2``.

    Returns:
        (N,) values in ``[0, 2]``.
    """
    num = embeddings.shape[1]
    gram = embeddings @ embeddings.transpose(1, 2)
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return 1.0 - off_diagonal / (num * (num - 1))


def selection_objective(
    case_embeddings: torch.Tensor, centres: torch.Tensor, temperature: float = 0.07, lambda_align: float = 0.5
) -> torch.Tensor:
    """The ActiveFT-style selection loss with the cross-modal alignment term, :math:`\\mathcal L_{sel}` (§8.3).

    ``-mean_i max_j s(i,j)/tau + mean_j log sum_{k != j} exp(s(j,k)/tau) + lambda_align mean_j a(p_j)``.

    Args:
        case_embeddings: (N, M, d) the pool's embeddings, unit vectors per modality.
        centres: (K, M, d) the continuous selection centres ``p_j`` (normalised here), ``K >= 2``.
        temperature: ``tau_s``.
        lambda_align: weight of the alignment term.

    Returns:
        The scalar loss.
    """
    p = F.normalize(centres, dim=-1)
    distribution = -(multimodal_similarity(case_embeddings, p).max(dim=1).values / temperature).mean()
    pair = multimodal_similarity(p, p) / temperature
    k = p.shape[0]
    off = pair.masked_fill(torch.eye(k, dtype=torch.bool, device=p.device), float("-inf"))
    diversity = torch.logsumexp(off, dim=1).mean() if k > 1 else pair.new_zeros(())
    return distribution + diversity + lambda_align * misalignment(p).mean()

"""The BraTS lesion-wise Dice of a run's validation cases (the official evaluator's penalised score)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from brats_cggm.brats.analysis.runs import REGIONS, LoadedRun, as_tensor

__all__ = [
    "case_lesionwise_dice",
    "lesionwise_dice",
]


def case_lesionwise_dice(
    predicted: torch.Tensor, reference: torch.Tensor, spacing: Sequence[float], convention: str
) -> list[float]:
    """The BraTS lesion-wise Dice of TC, WT and ET of one case.

    The official BraTS evaluator's penalised score (:func:`brats_cggm.brats.metrics.case_scores.challenge_row`, column
    ``lesionwise_penalised_dsc_<region>``): lesions are 26-connected components matched one to one, and every
    unmatched reference or predicted lesion scores 0.

    Args:
        predicted: ``(3, X, Y, Z)`` region masks (TC, WT, ET), values above 0.5 inside.
        reference: the reference's region masks, same shape.
        spacing: voxel size (mm).
        convention: the label convention the regions are turned into labels with.

    Returns:
        The TC, WT and ET scores.
    """
    from brats_cggm.brats.data.labels import regions_to_labels
    from brats_cggm.brats.metrics.case_scores import challenge_row

    row = challenge_row(
        regions_to_labels(predicted.cpu(), convention)[0].numpy(),
        regions_to_labels(reference.cpu(), convention)[0].numpy(),
        spacing,
        convention,
    )
    return [row[f"lesionwise_penalised_dsc_{region.lower()}"] for region in REGIONS[:-1]]


@torch.no_grad()
def lesionwise_dice(run: LoadedRun, device: Any) -> dict[str, float]:
    """The BraTS lesion-wise Dice (:func:`case_lesionwise_dice`) of each region, averaged over the run's validation
    cases.

    Predictions are the sigmoid thresholded at 0.5, as in the validation Dice, on the network's grid (the
    preprocessed volume, with its voxel size).

    Args:
        run: the loaded run.
        device: where the network runs.

    Returns:
        ``TC``, ``WT``, ``ET`` and their ``mean``.
    """
    from brats_cggm.brats.data.transforms import val_transforms

    transform, convention = val_transforms(**run.options), run.options["label_convention"]
    rows = []
    for item in run.val_cases:
        data = transform(dict(item))
        logits = run.inferer(as_tensor(data["image"]).unsqueeze(0).to(device), run.network)[0]
        spacing = [float(s) for s in getattr(data["image"], "pixdim", (1.0, 1.0, 1.0))]
        rows.append(case_lesionwise_dice(torch.sigmoid(logits) >= 0.5, as_tensor(data["label"]), spacing, convention))
    means = np.mean(rows, axis=0)
    return {**dict(zip(REGIONS, means.tolist())), "mean": float(means.mean())}

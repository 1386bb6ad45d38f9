"""Modality valuation of a trained BraTS network: Shapley contribution of each MRI modality.

``brats-cggm-valuate --bundle DIR --checkpoint FILE --dataset-dir DIR --output-dir DIR`` (:mod:`brats_cggm.cli.valuate`)

The value of a subset S of the modalities is the Dice (TC, WT, ET) of the prediction made with only the
modalities of S present. What "absent" means is ``absent``
(:data:`~brats_cggm.brats.analysis.absence.ABSENCE_MODES`, ``--absent``):

- ``"mask"`` (the default): the network's own definition (:mod:`brats_cggm.core.availability`), the one it
  was trained with and ``brats-cggm-infer --missing-modality drop`` uses: the prediction is
  ``forward_features(x, available=mask_of_S)``, an absent modality's encoder does not run and the fusion
  rescales the present ones. Every encoder runs once per sliding window on its own channel and only fusion
  and decoder run per subset (``fuse_and_decode`` of the present features with
  :func:`~brats_cggm.core.availability.fusion_weights`), which is exactly that prediction. A network cannot
  predict from no modality: the value of the empty subset is the Dice of the empty prediction (1 for a
  region absent from the reference, else 0).
- ``"zero-input"``: the absent modalities' **inputs zeroed** (after intensity normalisation, i.e. a flat
  volume at the mean intensity, which the network never saw in training), the definition of the figures
  before 0.2. Each encoder then sees either its real or a zero channel, so both features are computed once
  per window and only fusion and decoder run per subset; a network without ``encode`` is run on the masked
  input once per subset. The empty subset is the network's prediction from an all-zero input.

With four modalities that is 16 subsets per case; the Shapley values come from
:func:`brats_cggm.core.shapley.shapley_from_values`. Every report records the definition it used
(``absent``), so that numbers of the two are never mixed silently.

The network and its sliding-window settings are loaded as ``brats-cggm-infer`` loads them
(:func:`brats_cggm.brats.inference.segmenter.load_model`): ``--bundle`` is a bundle folder or a training
``output_dir`` (its ``configs/inference.json``), ``--checkpoint`` a plain state dict (``models/model.pt``,
the default) or a training checkpoint (``models/checkpoint.pt``, key ``network``). Cases come from
:func:`brats_cggm.brats.data.discovery.discover_dataset` (labels required), preprocessed by
:func:`brats_cggm.brats.data.transforms.val_transforms` with the training preprocessing options, predicted with
a ``SlidingWindowInferer``.

Outputs in ``--output-dir``: ``shapley_per_case.csv`` (case, modality, TC, WT, ET, mean),
``subset_dice_per_case.csv`` (case, subset, Dice), ``shapley.json`` (means, standard deviations,
subset Dice averaged over cases, ``absent``) and ``shapley.md`` (a markdown table naming the definition).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from brats_cggm.brats.analysis.absence import ABSENCE_DEFINITIONS, LEGACY_ABSENCE, absence_of, check_absence
from brats_cggm.brats.analysis.runs import dice_row
from brats_cggm.core import tables
from brats_cggm.core.availability import availability_of, fusion_weights
from brats_cggm.core.files import refuse_existing
from brats_cggm.core.shapley import all_subsets, mask_modalities, shapley_from_values, subset_key

__all__ = [
    "REPORT_FILES",
    "SubsetPredictor",
    "markdown_table",
    "summarize",
    "valuate_bundle",
    "valuate_cases",
    "write_reports",
]

logger = logging.getLogger(__name__)

REGION_NAMES = ("TC", "WT", "ET")
COLUMNS = (*REGION_NAMES, "mean")
#: What ``write_reports`` writes into the output folder.
REPORT_FILES = ("shapley_per_case.csv", "subset_dice_per_case.csv", "shapley.json", "shapley.md")


class SubsetPredictor(nn.Module):
    """Predicts with every subset of the modalities present, in one pass (the module docstring's definitions).

    Under ``"mask"`` the network must encode each modality separately (``encode``, ``fuse_and_decode``,
    ``output_layer``, as :class:`~brats_cggm.brats.model.MultiEncoderUNet`): its encoders run once on every
    modality and the fusion and decoder once per subset, with the absent modalities' features left out and
    the present ones rescaled, which is ``forward_features(x, available=mask_of_subset)``. Under
    ``"zero-input"`` the features of the real and of the zeroed inputs are computed once and mixed per
    subset; any other network is run on the masked input once per subset.

    Args:
        network: the trained network; ``forward(x)`` returns region logits.
        subsets: tuples of modality (input channel) indices; under ``"mask"`` none may be empty.
        modalities: names of the input channels; the output keys are ``subset_key`` of the names.
        absent: the definition of an absent modality, one of :data:`~brats_cggm.brats.analysis.absence.ABSENCE_MODES`.

    Raises:
        ValueError: an unknown ``absent``; under ``"mask"``, an empty subset or a network without
            ``encode``/``fuse_and_decode``/``output_layer``.
    """

    def __init__(
        self,
        network: nn.Module,
        subsets: Sequence[Sequence[int]],
        modalities: Sequence[str],
        absent: str = "mask",
    ) -> None:
        super().__init__()
        self.network = network
        self.absent = check_absence(absent)
        self.subsets = [tuple(s) for s in subsets]
        self.keys = [subset_key([modalities[i] for i in s]) for s in self.subsets]
        self.shared_encoders = all(hasattr(network, a) for a in ("encode", "fuse_and_decode", "output_layer"))
        if absent == "mask":
            if not self.shared_encoders:
                # Zeroing its inputs instead would silently report the other definition.
                raise ValueError(
                    f"absent='mask' needs a network with an availability mask (encode, fuse_and_decode, "
                    f"output_layer); {type(network).__name__} has none: use absent='zero-input'"
                )
            if any(not s for s in self.subsets):
                raise ValueError("absent='mask': the empty subset has no prediction (a sample needs a modality)")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Region logits per subset key, each of shape (B, out_channels, *spatial)."""
        net: Any = self.network  # a MultiEncoderUNet, or any network mapping (B, M, ...) to region logits
        if self.absent == "mask":
            return self._masked(net, x)
        if not self.shared_encoders:
            return {key: net(mask_modalities(x, subset)) for key, subset in zip(self.keys, self.subsets)}
        real = net.encode(x)
        zero = net.encode(torch.zeros_like(x))
        out = {}
        for key, subset in zip(self.keys, self.subsets):
            mixed = [real[i] if i in subset else zero[i] for i in range(len(real))]
            out[key] = net.output_layer(net.fuse_and_decode(mixed))
        return out

    def _masked(self, net: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every subset's logits under the availability mask, the encoders run once."""
        features = net.encode(x)
        out = {}
        for key, subset in zip(self.keys, self.subsets):
            available = availability_of(subset, x.shape[0], len(features), x.device)
            present = [level if i in subset else None for i, level in enumerate(features)]
            out[key] = net.output_layer(net.fuse_and_decode(present, fusion_weights(available)))
        return out


@torch.no_grad()
def valuate_cases(
    network: nn.Module,
    cases: Sequence[dict],
    transform: Any,
    inferer: Any,
    device: str | torch.device = "cpu",
    modalities: Sequence[str] | None = None,
    absent: str = "mask",
) -> list[dict[str, Any]]:
    """Subset Dice and Shapley values for every case.

    Args:
        network: the trained network (one input channel per modality).
        cases: datalist items (``case_id``, ``image``, ``label``).
        transform: the validation preprocessing (returns ``image`` (M, *S) and region ``label`` (3, *S)).
        inferer: a sliding-window inferer (dict outputs supported).
        device: where to predict.
        modalities: the input channels' names; default ``network.modalities``.
        absent: the definition of an absent modality (:data:`~brats_cggm.brats.analysis.absence.ABSENCE_MODES`,
            the module docstring).

    Returns:
        One dict per case: ``case_id``, ``values`` (subset key → Dice array TC, WT, ET, mean), ``shapley``
        (modality → array TC, WT, ET, mean) and ``absent``.
    """
    check_absence(absent)
    modalities = tuple(modalities if modalities is not None else cast(Sequence[str], network.modalities))
    index_subsets = all_subsets(range(len(modalities)))
    # Under the mask no network runs without a modality: the empty subset predicts nothing (below).
    predicted = [s for s in index_subsets if s or absent == "zero-input"]
    predictor = SubsetPredictor(network, predicted, modalities, absent).to(device).eval()
    results: list[dict[str, Any]] = []
    for item in cases:
        data = transform(dict(item))
        image = data["image"].as_tensor() if hasattr(data["image"], "as_tensor") else data["image"]
        label = data["label"].as_tensor() if hasattr(data["label"], "as_tensor") else data["label"]
        preds = inferer(image.unsqueeze(0).to(device), predictor)
        label = label.unsqueeze(0).to(device)
        if absent == "mask":
            preds = {subset_key(()): torch.full_like(label, float("-inf"), dtype=torch.float32), **preds}
        table = {}
        values = {}
        for subset in index_subsets:
            key = subset_key([modalities[i] for i in subset])
            dice = dice_row(preds[key], label)
            values[key] = dice
            table[frozenset(modalities[i] for i in subset)] = dice
        shapley = shapley_from_values(table, modalities)
        case_id = str(item.get("case_id", len(results)))
        results.append({"case_id": case_id, "values": values, "shapley": shapley, "absent": absent})
        logger.info(f"{results[-1]['case_id']}: " + ", ".join(f"{m} {shapley[m][-1]:+.3f}" for m in modalities))
    return results


def summarize(results: Sequence[dict], modalities: Sequence[str]) -> dict[str, Any]:
    """Means and standard deviations over cases of the Shapley values and the subset Dice.

    Args:
        results: :func:`valuate_cases`'s output, all with the same definition of an absent modality.
        modalities: the modality names.

    Returns:
        ``modalities``, ``regions``, ``num_cases``, ``absent`` and its ``absent_definition``, ``shapley`` and
        ``shapley_std`` (modality → region → value) and ``subset_dice`` (subset → region → mean).

    Raises:
        ValueError: no case, or the results mix definitions.
    """
    if not results:
        raise ValueError("no case was valuated")
    absent = absence_of(results)
    summary: dict[str, Any] = {
        "modalities": list(modalities),
        "regions": list(COLUMNS),
        "num_cases": len(results),
        "absent": absent,
        "absent_definition": ABSENCE_DEFINITIONS[absent],
    }
    for key, stat in (("shapley", np.mean), ("shapley_std", np.std)):
        summary[key] = {
            m: dict(zip(COLUMNS, stat([r["shapley"][m] for r in results], axis=0).round(6).tolist()))
            for m in modalities
        }
    subsets = list(results[0]["values"])
    summary["subset_dice"] = {
        s: dict(zip(COLUMNS, np.mean([r["values"][s] for r in results], axis=0).round(6).tolist())) for s in subsets
    }
    return summary


def markdown_table(summary: dict[str, Any]) -> str:
    """Mean ± std Shapley contribution per modality and region, plus the all/none Dice rows.

    Args:
        summary: :func:`summarize`'s summary.

    Returns:
        The markdown table, ending with a newline.
    """
    rows = []
    for m in summary["modalities"]:
        mean, std = summary["shapley"][m], summary["shapley_std"][m]
        rows.append([m, *(f"{mean[c]:+.3f} ± {std[c]:.3f}" for c in COLUMNS)])
    full = subset_key(summary["modalities"])
    none = "Dice, none" if summary.get("absent", LEGACY_ABSENCE) == "zero-input" else "Dice, none (nothing predicted)"
    for label, key in (("Dice, all modalities", full), (none, "none")):
        rows.append([label, *(f"{summary['subset_dice'][key][c]:.3f}" for c in COLUMNS)])
    header = ["modality", *(f"φ {c}" for c in COLUMNS)]
    return tables.markdown_table(header, rows, ["left"] + ["right"] * len(COLUMNS)) + "\n"


def check_output(output: str | Path, overwrite: bool = False) -> Path:
    """Refuse an output folder that already holds reports, unless ``overwrite``.

    Raises:
        FileExistsError: naming the first report that exists.
        NotADirectoryError: if ``output`` is a file.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output-dir {output} is a file, not a folder")
    refuse_existing((output / name for name in REPORT_FILES), overwrite, "to replace the reports")
    return output


def write_reports(
    results: Sequence[dict],
    modalities: Sequence[str],
    output: str | Path,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the CSV, JSON and markdown reports into ``output`` (each atomically); returns the summary.

    Args:
        results: :func:`valuate_cases`'s output; ``shapley.json`` and ``shapley.md`` name its definition of an
            absent modality.
        modalities: the modality names.
        output: the folder (created if needed).
        overwrite: replace existing reports.
        extra: more entries for ``shapley.json`` (e.g. the checkpoint).

    Raises:
        FileExistsError: if a report exists and not ``overwrite``.
    """
    from brats_cggm.core.files import atomic_write_text

    output = check_output(output, overwrite)
    summary = {**summarize(results, modalities), **(extra or {})}
    per_case = [[r["case_id"], m, *[f"{v:.6f}" for v in r["shapley"][m]]] for r in results for m in modalities]
    subsets = [[r["case_id"], s, *[f"{x:.6f}" for x in v]] for r in results for s, v in r["values"].items()]
    texts = {
        "shapley_per_case.csv": tables.csv_text(["case_id", "modality", *COLUMNS], per_case),
        "subset_dice_per_case.csv": tables.csv_text(["case_id", "subset", *COLUMNS], subsets),
        "shapley.json": json.dumps(summary, indent=2) + "\n",
        "shapley.md": f"Shapley contribution of each modality to Dice (mean ± std over {summary['num_cases']} cases; "
        f"value of a subset = Dice with the other modalities absent; absent = {summary['absent']}: "
        f"{summary['absent_definition']}).\n\n" + markdown_table(summary),
    }
    for name in REPORT_FILES:
        atomic_write_text(output / name, texts[name])
    return summary


def valuate_bundle(
    bundle: str | Path,
    dataset_dir: str | Path,
    output: str | Path,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    max_cases: int | None = None,
    case_ids: Sequence[str] | None = None,
    roi_size: Sequence[int] | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    overwrite: bool = False,
    absent: str = "mask",
) -> dict[str, Any]:
    """Load the bundle's network, valuate the labelled cases of ``dataset_dir``, write the reports.

    Args:
        bundle: a bundle folder or a training ``output_dir``.
        dataset_dir: a BraTS-layout or MSD Task01 folder with labels.
        output: the report folder.
        checkpoint: the weights (default ``bundle/models/model.pt``).
        device: where to predict.
        max_cases: valuate only the first N cases (sorted by case id).
        case_ids: valuate only these cases (e.g. a run's validation split).
        roi_size: sliding window (default: the training patch from the bundle).
        overlap: sliding-window overlap (default: the bundle's).
        sw_batch_size: windows per forward pass (default: the bundle's).
        overwrite: replace existing reports.
        absent: the definition of an absent modality (:data:`~brats_cggm.brats.analysis.absence.ABSENCE_MODES`).

    Returns:
        The summary written to ``shapley.json``.
    """
    from monai.inferers import SlidingWindowInferer

    from brats_cggm.brats.data.discovery import discover_dataset
    from brats_cggm.brats.data.transforms import val_transforms
    from brats_cggm.brats.inference.segmenter import load_model

    check_absence(absent)
    check_output(output, overwrite)  # fail before the expensive part
    network, settings = load_model(bundle, checkpoint, device=device)
    modalities = tuple(settings.modalities)
    spec = discover_dataset(dataset_dir, modalities)
    cases = list(spec.items)
    if case_ids is not None:
        wanted = {str(c) for c in case_ids}
        cases = [item for item in cases if str(item["case_id"]) in wanted]
        missing = wanted - {str(item["case_id"]) for item in cases}
        if missing:
            raise ValueError(f"{dataset_dir}: no case {sorted(missing)}")
    cases = cases[:max_cases] if max_cases else cases
    roi = roi_size or settings.roi_size
    if roi is None:
        raise ValueError(f"{settings.source}: no patch_size to use as sliding window; pass --roi")
    transform = val_transforms(
        label_convention=spec.label_convention, channel_order=spec.channel_order, **settings.preprocessing
    )
    inferer = SlidingWindowInferer(
        roi_size=list(roi),
        sw_batch_size=int(sw_batch_size or settings.sw_batch_size),
        overlap=float(settings.overlap if overlap is None else overlap),
        mode="gaussian",
    )
    results = valuate_cases(network, cases, transform, inferer, device, modalities, absent)
    extra = {"bundle": str(bundle), "checkpoint": str(checkpoint or Path(bundle) / "models" / "model.pt")}
    return write_reports(results, modalities, output, overwrite, extra)

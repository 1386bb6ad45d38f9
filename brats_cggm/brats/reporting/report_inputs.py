"""What a case's report needs from its input images, taken while they are in memory, and its record written.

``brats-cggm-infer`` reads and checks a case's files before segmenting it (in a loader worker when a folder runs
as a pipeline); :func:`report_inputs` takes from those images, once, what the report needs later (the grid, each
sequence's intensity summary, the displayed sequences as 8-bit volumes), as plain data that crosses process
boundaries. :func:`build_report` then computes the report of the finished labels and renders the overlay picture
in memory; the caller writes the picture (:func:`~brats_cggm.brats.reporting.overlay.save_overlay`) and the record.
:func:`model_description` identifies the weights by their SHA-256, once per run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brats_cggm.brats.data.cache.fingerprint import file_sha256
from brats_cggm.brats.data.nifti_checks import load_nifti
from brats_cggm.brats.reporting.case_report import case_report, input_grid, intensity_summary
from brats_cggm.brats.reporting.overlay import DISPLAY_SEQUENCES, display_volume, encode_png, render_overlay

__all__ = [
    "CaseReport",
    "ReportInputs",
    "build_report",
    "inputs_from_files",
    "model_description",
    "read_sequences",
    "report_inputs",
]


@dataclass
class ReportInputs:
    """What a case's report needs from its inputs.

    Attributes:
        affine: the reference input's voxel-to-world affine.
        grid: its :func:`~brats_cggm.brats.reporting.case_report.input_grid`.
        intensities: :func:`~brats_cggm.brats.reporting.case_report.intensity_summary` of each sequence present.
        display: the sequences of :data:`~brats_cggm.brats.reporting.overlay.DISPLAY_SEQUENCES` the case has, as
            ``uint8`` volumes (:func:`~brats_cggm.brats.reporting.overlay.display_volume`).
    """

    affine: np.ndarray
    grid: dict[str, Any]
    intensities: dict[str, dict[str, float]] = field(default_factory=dict)
    display: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class CaseReport:
    """A case's report, ready to write.

    Attributes:
        fields: the keys added to its JSON record (see :func:`~brats_cggm.brats.reporting.case_report.case_report`).
        png: the overlay picture, PNG bytes.
    """

    fields: dict[str, Any]
    png: bytes


def read_sequences(
    images: Mapping[str, nib.Nifti1Image],
    modalities: Sequence[str],
    files: Sequence[str | None] | str,
    channel_order: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Each present sequence's volume, by modality name.

    Args:
        images: the images read, by path (those not there are read from disk).
        modalities: the network's modalities, in order.
        files: each modality's file (None where missing), or the path of one 4-D file.
        channel_order: for a 4-D file, its channel of each modality (identity when None).

    Returns:
        Modality to ``(X, Y, Z)`` array.
    """

    def image(path: str) -> nib.Nifti1Image:
        found = images.get(path)
        return load_nifti(path) if found is None else found

    if isinstance(files, str):
        data = np.asanyarray(image(files).dataobj)
        order = list(channel_order) if channel_order is not None else list(range(len(modalities)))
        return {m: data[..., c] for m, c in zip(modalities, order, strict=True)}
    out = {}
    for m, path in zip(modalities, files, strict=True):
        if path is not None:
            volume = np.asanyarray(image(path).dataobj)
            out[m] = volume.reshape(volume.shape[:3])
    return out


def report_inputs(
    reference: nib.Nifti1Image,
    sequences: Mapping[str, np.ndarray],
    model_spacing: Sequence[float] | None = None,
    model_orientation: str | None = None,
) -> ReportInputs:
    """Take from a case's images what its report needs.

    Args:
        reference: the image whose grid the segmentation is written in.
        sequences: each present sequence's volume (see :func:`read_sequences`).
        model_spacing: the spacing the preprocessing resamples to (its ``pixdim``), None when it keeps the input's.
        model_orientation: the orientation it brings cases to (its ``axcodes``).

    Returns:
        The inputs of :func:`build_report`.
    """
    zooms = reference.header.get_zooms()[:3]
    grid = input_grid(reference.affine, reference.shape[:3], zooms, model_spacing, model_orientation)
    return ReportInputs(
        affine=np.asarray(reference.affine, dtype=np.float64),
        grid=grid,
        intensities={m: intensity_summary(v) for m, v in sequences.items()},
        display={m: display_volume(sequences[m]) for m in DISPLAY_SEQUENCES if m in sequences},
    )


def inputs_from_files(
    reference: str | os.PathLike,
    record: Mapping[str, Any],
    modalities: Sequence[str],
    channel_order: Sequence[int] | None = None,
    model_spacing: Sequence[float] | None = None,
    model_orientation: str | None = "RAS",
) -> ReportInputs:
    """:func:`report_inputs` of a case whose images are no longer in memory: its files read again.

    For the bundle's writer, which gets the case's files only through its record.

    Args:
        reference: the file whose grid the segmentation is in (a 4-D file holds every modality).
        record: the case's JSON record: its ``inputs`` (the files present, in network order) and
            ``modalities_missing``.
        modalities: the network's modalities, in order.
        channel_order: for a 4-D file, its channel of each modality.
        model_spacing: the spacing the preprocessing resamples to.
        model_orientation: the orientation it brings cases to.

    Returns:
        The inputs of :func:`build_report`.
    """
    image = load_nifti(reference)
    inputs = [str(p) for p in record["inputs"]]
    files: list[str | None] | str
    if len(image.shape) == 4:
        files = inputs[0]  # one 4-D file, a channel per modality
    else:
        present = iter(inputs)
        files = [None if m in record["modalities_missing"] else next(present) for m in modalities]
    sequences = read_sequences({str(reference): image}, modalities, files, channel_order)
    return report_inputs(image, sequences, model_spacing, model_orientation)


def build_report(
    labels: np.ndarray,
    inputs: ReportInputs,
    convention: str,
    case_id: str,
    overlay_name: str,
    missing: Sequence[str] = (),
    missing_modality: str = "error",
    model: Mapping[str, Any] | None = None,
) -> CaseReport:
    """A case's report fields and overlay picture, in memory (nothing is written).

    Args:
        labels: the final segmentation, ``(X, Y, Z)`` in the input's grid.
        inputs: from :func:`report_inputs`.
        convention: the labels' convention.
        case_id: for the picture's title.
        overlay_name: the picture's file name, for the record's ``overlay``.
        missing: the sequences the case lacked.
        missing_modality: the mode that stood in for them.
        model: the record's ``model_details`` (see :func:`model_description`).

    Returns:
        The report.

    Raises:
        ImportError: Pillow is missing.
    """
    picture = render_overlay(
        labels,
        inputs.affine,
        inputs.grid["spacing_mm"],
        {m: inputs.display.get(m) for m in DISPLAY_SEQUENCES},
        convention,
        title=case_id,
    )
    fields = case_report(
        labels, convention, inputs.grid, inputs.intensities, missing, missing_modality, model, Path(overlay_name).name
    )
    return CaseReport(fields, encode_png(picture))


def model_description(
    weights: str | os.PathLike | None,
    bundle: str | os.PathLike | None = None,
    config: str | None = None,
    postprocessing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record's ``model_details``: what made the segmentations, the weights identified by their content.

    Args:
        weights: the weights file (``model.pt``, a checkpoint, or a TorchScript file); None when unknown.
        bundle: the bundle folder or training output_dir, if one was given.
        config: where the settings were read.
        postprocessing: the post-processing rules applied (their config entry), None when none were.

    Returns:
        ``bundle``, ``weights``, ``weights_sha256`` (hex digest of the file, None without one), ``config`` and
        ``postprocessing``.
    """
    digest = file_sha256(weights) if weights is not None and Path(weights).is_file() else None
    return {
        "bundle": None if bundle is None else str(bundle),
        "weights": None if weights is None else str(weights),
        "weights_sha256": digest,
        "config": config,
        "postprocessing": None if postprocessing is None else dict(postprocessing),
    }

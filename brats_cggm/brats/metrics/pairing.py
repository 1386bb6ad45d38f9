"""Finding the prediction and reference label files of an evaluation, by case id, and pairing two folders."""

from __future__ import annotations

import os
from pathlib import Path

from brats_cggm.brats.data.discovery import PATTERN_PRESETS, check_unique_case_ids
from brats_cggm.brats.data.nifti_checks import AFFINE_TOLERANCE, strip_nifti_extension
from brats_cggm.brats.metrics.case_scores import ChallengeOptions
from brats_cggm.brats.metrics.evaluation import EvaluationResult, evaluate_cases

__all__ = [
    "evaluate_folders",
    "find_predictions",
    "find_references",
]


_SEG_SUFFIXES = tuple(sorted({p["seg"] for p in PATTERN_PRESETS.values()}))


def _case_key(name: str) -> str:
    stem = strip_nifti_extension(name)
    for suffix in _SEG_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _nifti_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith((".nii.gz", ".nii"))
    )


def find_predictions(pred_dir: str | os.PathLike) -> dict[str, str]:
    """Prediction files of a folder, by case id (the file name without ``.nii.gz``).

    Raises:
        FileNotFoundError: if the folder does not exist.
        DuplicateCaseError: if two files give one case id (``x.nii`` and ``x.nii.gz``), naming both.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: prediction folder does not exist")
    found = [
        (strip_nifti_extension(p.name), str(p)) for p in _nifti_in(root) if not p.name.endswith("_probabilities.nii.gz")
    ]
    check_unique_case_ids(found, root)
    return dict(found)


def find_references(ref_dir: str | os.PathLike) -> dict[str, str]:
    """Reference label files, by case id.

    Reads a folder of label files (``<case>.nii.gz`` or ``<case>_seg.nii.gz``, e.g. MSD ``labelsTr``), an MSD
    folder (its ``labelsTr``), or a BraTS folder of case folders (``<case>/<case>_seg.nii.gz`` or ``-seg``).

    Raises:
        FileNotFoundError: if the folder does not exist or holds no reference.
        DuplicateCaseError: if two references give one case id (``x.nii.gz`` and ``x_seg.nii.gz``, or a file and
            a case folder ``x/``), naming both.
    """
    root = Path(ref_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: reference folder does not exist")
    if (root / "labelsTr").is_dir():
        root = root / "labelsTr"
    found = [(_case_key(p.name), str(p)) for p in _nifti_in(root)]
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        segs = [p for p in _nifti_in(sub) if strip_nifti_extension(p.name).endswith(_SEG_SUFFIXES)]
        exact = [p for p in segs if _case_key(p.name) == sub.name]
        if exact or len(segs) == 1:
            found.append((sub.name, str((exact or segs)[0])))
    check_unique_case_ids(found, root)
    refs = dict(found)
    if not refs:
        raise FileNotFoundError(f"{root}: no reference label files (<case>.nii.gz, or <case>/<case>_seg.nii.gz)")
    return refs


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    convention: str = "brats2021",
    ref_convention: str | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
    options: ChallengeOptions | None = None,
) -> EvaluationResult:
    """Evaluate every prediction of ``pred_dir`` against ``ref_dir`` (see :func:`find_references`).

    Cases on one side only are kept, with status ``missing_prediction`` or ``missing_reference``. The other
    arguments are those of :func:`evaluate_cases`.
    """
    preds, refs = find_predictions(pred_dir), find_references(ref_dir)
    pairs = {c: (preds.get(c), refs.get(c)) for c in set(preds) | set(refs)}
    return evaluate_cases(pairs, convention, ref_convention, affine_tolerance, options)

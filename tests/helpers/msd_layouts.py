"""MSD Task01 folders with faulty ``dataset.json`` lists, made from the ``msd_dataset`` fixture's real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["msd_with_duplicate_ids", "msd_with_outside_entry", "rewrite_training"]


def rewrite_training(root: Path, training: list[dict], test: list[str] | None = None) -> Path:
    """Replace the ``training`` (and ``test``) lists of ``root/dataset.json``; returns the file."""
    path = root / "dataset.json"
    meta = json.loads(path.read_text())
    meta["training"], meta["numTraining"] = training, len(training)
    if test is not None:
        meta["test"], meta["numTest"] = test, len(test)
    path.write_text(json.dumps(meta, indent=2))
    return path


def msd_with_duplicate_ids(msd_dataset: Path, out: Path) -> tuple[Path, Path, Path]:
    """A copy of ``msd_dataset`` whose two training cases are ``imagesTr/a/BRATS_001.nii.gz`` and
    ``imagesTr/b/BRATS_001.nii.gz`` (different scans, same file name), plus ``BRATS_003``.

    Returns:
        The folder and the two clashing images.
    """
    root = Path(shutil.copytree(msd_dataset, out))
    training = []
    for sub, source in (("a", "BRATS_001"), ("b", "BRATS_002")):
        for kind in ("imagesTr", "labelsTr"):
            (root / kind / sub).mkdir()
            shutil.move(root / kind / f"{source}.nii.gz", root / kind / sub / "BRATS_001.nii.gz")
        training.append({"image": f"./imagesTr/{sub}/BRATS_001.nii.gz", "label": f"./labelsTr/{sub}/BRATS_001.nii.gz"})
    training.append({"image": "./imagesTr/BRATS_003.nii.gz", "label": "./labelsTr/BRATS_003.nii.gz"})
    rewrite_training(root, training)
    return root, root / "imagesTr" / "a" / "BRATS_001.nii.gz", root / "imagesTr" / "b" / "BRATS_001.nii.gz"


def msd_with_outside_entry(msd_dataset: Path, out: Path) -> tuple[Path, Path]:
    """A copy of ``msd_dataset`` in ``out/msd`` whose ``BRATS_003`` entry is ``../outside/BRATS_003.nii.gz``.

    Returns:
        The folder and the outside image.
    """
    root = Path(shutil.copytree(msd_dataset, out / "msd"))
    for kind in ("imagesTr", "labelsTr"):
        (out / "outside" / kind).mkdir(parents=True)
        shutil.move(root / kind / "BRATS_003.nii.gz", out / "outside" / kind / "BRATS_003.nii.gz")
    meta = json.loads((root / "dataset.json").read_text())
    training = [e for e in meta["training"] if "BRATS_003" not in e["image"]]
    training.append({"image": "../outside/imagesTr/BRATS_003.nii.gz", "label": "../outside/labelsTr/BRATS_003.nii.gz"})
    rewrite_training(root, training)
    return root, out / "outside" / "imagesTr" / "BRATS_003.nii.gz"

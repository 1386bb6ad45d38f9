"""Shared pytest fixtures. Keep them small: the test machine is shared and has few cores."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brats_cggm.brats.phantoms.geometric import brats_affine, generate_phantom_case, write_phantom_dataset
from tests.helpers.bundle_runs import train_tiny_run

# Intra-op threads beyond two only add contention on the small shared test machine.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def _disk_cache_in_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The bundle's disk cache (cache: disk) of every test run goes to a temporary folder, not ~/.cache."""
    import os

    os.environ["BRATS_CGGM_CACHE"] = str(tmp_path_factory.mktemp("brats_cggm_cache"))


#: Side of the phantom volumes used by the shared fixtures.
PHANTOM_SIDE = 32


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BraTS 2021-layout folder with 4 phantom cases of 32^3 (seeds 0-3). Read-only: copy to modify."""
    root = tmp_path_factory.mktemp("phantoms") / "brats"
    write_phantom_dataset(root, n=4, shape=(PHANTOM_SIDE,) * 3, seed=0)
    return root


@pytest.fixture(scope="session")
def msd_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MSD Task01_BrainTumour-layout folder with 3 phantom cases of 32^3 (seeds 0-2). Read-only.

    Images are 4-D ``(X, Y, Z, 4)`` with channels FLAIR, T1w, t1gd, T2w as in the real ``dataset.json``;
    labels use the MSD convention (1 edema, 2 non-enhancing tumour, 3 enhancing tumour).
    """
    root = tmp_path_factory.mktemp("msd") / "Task01_BrainTumour"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    shape = (PHANTOM_SIDE,) * 3
    affine = brats_affine(shape)
    brats_to_msd = np.array([0, 2, 1, 0, 3], dtype=np.uint8)  # NCR 1 -> 2, ED 2 -> 1, ET 4 -> 3
    training = []
    for i in range(3):
        case = generate_phantom_case(shape, seed=i)
        name = f"BRATS_{i + 1:03d}.nii.gz"
        image = np.stack([case[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / name))
        nib.save(nib.Nifti1Image(brats_to_msd[case["seg"]], affine), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "BRATS",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": len(training),
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory, phantom_dataset: Path) -> Path:
    """The ``output_dir`` of a real, tiny training run of ``train.yaml`` (one epoch on the phantoms). Read-only.

    Holds ``configs/inference.json``, ``models/model.pt`` (the best weights) and ``models/checkpoint.pt``
    (the training checkpoint: network, heads, optimizers, RNG states, ...), as every training run writes
    them. The network has widths :data:`tests.helpers.bundle_runs.TINY_FEATURES`; sliding window 32^3.
    """
    return train_tiny_run(tmp_path_factory.mktemp("run"), phantom_dataset)

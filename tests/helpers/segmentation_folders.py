"""Label files of predictions and references, for the evaluation tests (the API's and the command's)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from brats_cggm.brats.metrics.case_scores import HD95_EMPTY_MM

SHAPE = (10, 10, 10)
AFFINE = np.diag([-1.0, -1.0, 2.5, 1.0])  # LPS, anisotropic


def save_labels(path: Path, labels: np.ndarray, dtype=np.uint8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(dtype), AFFINE), str(path))


def write_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Predictions and BraTS-layout references: A perfect, B off by one voxel, C with a false ET; D and E unpaired."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    a = np.zeros(SHAPE, np.uint8)
    a[2:6, 2:6, 2:6] = 2
    a[3:5, 3:5, 3:5] = 1
    a[3, 3, 3] = 4
    save_labels(pred / "A.nii.gz", a)
    save_labels(ref / "A" / "A_seg.nii.gz", a, np.int16)
    b_ref = np.zeros(SHAPE, np.uint8)
    b_ref[2, 2, 2] = 2
    b_pred = b_ref.copy()
    b_pred[2, 2, 6] = 2
    save_labels(pred / "B.nii.gz", b_pred)
    save_labels(ref / "B" / "B_seg.nii.gz", b_ref)
    c_ref = np.zeros(SHAPE, np.uint8)
    c_ref[1, 1, 1] = 2
    save_labels(pred / "C.nii.gz", np.where(c_ref > 0, 4, 0))
    save_labels(ref / "C" / "C_seg.nii.gz", c_ref)
    save_labels(pred / "D.nii.gz", a)  # no reference
    save_labels(ref / "E" / "E_seg.nii.gz", a)  # no prediction
    return pred, ref


def by_hand() -> dict[str, dict[str, float]]:
    hd_b = 0.95 * 4 * 2.5
    return {
        "A": dict.fromkeys(("dice_et", "dice_tc", "dice_wt"), 1.0)
        | dict.fromkeys(("hd95_et", "hd95_tc", "hd95_wt"), 0.0),
        "B": {"dice_et": 1.0, "dice_tc": 1.0, "dice_wt": 2 / 3, "hd95_et": 0.0, "hd95_tc": 0.0, "hd95_wt": hd_b},
        "C": {"dice_et": 0.0, "dice_tc": 0.0, "dice_wt": 1.0}
        | {"hd95_et": HD95_EMPTY_MM, "hd95_tc": HD95_EMPTY_MM, "hd95_wt": 0.0},
    }
